//! The database's own limit, measured in the same run as ingest on the same machine: how many
//! single-row `INSERT` commits per second it takes, each its own transaction, with a row the
//! size of a delivery's body.
//!
//! - **PostgreSQL**: `pgbench` (the binaries of the server's major version under
//!   `/usr/lib/postgresql/<major>/bin/`, else `PATH`) with `--concurrency` clients running
//!   `INSERT INTO commit_floor (body) VALUES (repeat('x', <payload>))` for `--commit-secs` in a
//!   scratch database; and `pg_test_fsync`'s "one 8kB write" figure for the server's
//!   `wal_sync_method`, with its test file in the work directory (whether that is on the
//!   device of PostgreSQL's data directory is printed).
//! - **SQLite**: a tight loop of the same inserts in a scratch file beside the service's, with
//!   the pragmas the service opens its database with (`src/store/sqlite/mod.rs`: WAL journal,
//!   `synchronous=FULL`, 5 s busy timeout), through one pool of `--db-connections` connections,
//!   from `--concurrency` tasks and from a single writer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, PgPool, Row, SqlitePool};

use crate::database::DbKind;
use crate::database::{self, BenchDb};
use crate::report::thousands;

/// What the database alone sustained.
pub struct CommitLimit {
    pub clients: usize,
    /// Single-row insert commits per second from `clients` clients.
    pub commits_per_sec: f64,
    /// SQLite: the same from one writer.
    pub single_writer_per_sec: Option<f64>,
    /// PostgreSQL: `pg_test_fsync`'s syncs per second for one 8 kB write with the server's
    /// `wal_sync_method` (named).
    pub fsync: Option<(String, f64)>,
    /// How it was measured, for the report.
    pub how: String,
}

impl CommitLimit {
    /// `per_sec` as a fraction of the commit rate.
    pub fn fraction(&self, per_sec: f64) -> f64 {
        per_sec / self.commits_per_sec.max(1e-9)
    }

    pub fn one_line(&self) -> String {
        let mut line = format!(
            "{} single-row commits/s from {} clients",
            thousands(self.commits_per_sec.round() as u64),
            self.clients
        );
        if let Some(single) = self.single_writer_per_sec {
            line.push_str(&format!(
                ", {} from one writer",
                thousands(single.round() as u64)
            ));
        }
        if let Some((method, ops)) = &self.fsync {
            line.push_str(&format!(
                "; pg_test_fsync {method}: {} syncs/s",
                thousands(ops.round() as u64)
            ));
        }
        line
    }
}

/// Settings of the measurement.
pub struct Settings<'a> {
    pub clients: usize,
    pub window: Duration,
    pub row_bytes: usize,
    /// SQLite's pool size, as the service's (`POBLYSH_DB_MAX_CONNECTIONS`).
    pub pool_size: u32,
    /// Seconds per `pg_test_fsync` test.
    pub fsync_secs: u64,
    /// Where scratch files go.
    pub workdir: &'a Path,
}

/// Measures `kind` in a scratch database of its own (PostgreSQL: created on the server of
/// `postgres_url` and dropped after; SQLite: a file in the work directory).
pub async fn measure(
    kind: DbKind,
    postgres_url: &str,
    settings: &Settings<'_>,
) -> Result<CommitLimit> {
    match kind {
        DbKind::Sqlite => sqlite(settings).await,
        DbKind::Postgres => {
            let db = database::prepare(kind, postgres_url, settings.workdir).await?;
            let outcome = postgres(&db, settings).await;
            db.cleanup().await?;
            outcome
        }
    }
}

async fn sqlite(settings: &Settings<'_>) -> Result<CommitLimit> {
    let path = settings.workdir.join("commit_floor.db");
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(settings.pool_size)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    pool.execute("CREATE TABLE commit_floor (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .await
        .context("creating commit_floor")?;
    let row = pool.fetch_one("PRAGMA journal_mode").await?;
    let journal: String = row.try_get(0)?;
    let row = pool.fetch_one("PRAGMA synchronous").await?;
    let synchronous = match row.try_get::<i64, _>(0)? {
        0 => "OFF".to_string(),
        1 => "NORMAL".to_string(),
        2 => "FULL".to_string(),
        3 => "EXTRA".to_string(),
        other => other.to_string(),
    };
    let concurrent = sqlite_loop(&pool, settings.clients, settings).await?;
    let single = sqlite_loop(&pool, 1, settings).await?;
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(PathBuf::from(format!("{}{suffix}", path.display())));
    }
    Ok(CommitLimit {
        clients: settings.clients,
        commits_per_sec: concurrent,
        single_writer_per_sec: Some(single),
        fsync: None,
        how: format!(
            "a tight loop of `INSERT INTO commit_floor (body) VALUES (?)` ({} B body), each its \
             own transaction, in a scratch file beside the service's, opened as the service \
             opens its database (journal_mode={journal}, synchronous={synchronous}, \
             busy_timeout 5 s), through one pool of {} connections, from {} tasks and from one \
             writer, {} s each",
            settings.row_bytes,
            settings.pool_size,
            settings.clients,
            settings.window.as_secs()
        ),
    })
}

/// `tasks` tasks insert back to back for the window; commits per second.
async fn sqlite_loop(pool: &SqlitePool, tasks: usize, settings: &Settings<'_>) -> Result<f64> {
    let body = Arc::new("x".repeat(settings.row_bytes));
    let end = Instant::now() + settings.window;
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (pool, body) = (pool.clone(), body.clone());
            tokio::spawn(async move {
                let mut commits = 0u64;
                while Instant::now() < end {
                    sqlx::query("INSERT INTO commit_floor (body) VALUES (?)")
                        .bind(body.as_str())
                        .execute(&pool)
                        .await?;
                    commits += 1;
                }
                Ok::<_, sqlx::Error>(commits)
            })
        })
        .collect();
    let started = Instant::now();
    let mut commits = 0;
    for handle in handles {
        commits += handle.await.context("an insert task panicked")??;
    }
    Ok(commits as f64 / started.elapsed().as_secs_f64())
}

async fn postgres(db: &BenchDb, settings: &Settings<'_>) -> Result<CommitLimit> {
    let pool = PgPool::connect(&db.url)
        .await
        .context("connecting to the scratch database")?;
    pool.execute("CREATE TABLE commit_floor (id bigserial PRIMARY KEY, body text NOT NULL)")
        .await
        .context("creating commit_floor")?;
    let row = pool
        .fetch_one(
            "SELECT current_setting('server_version_num')::int / 10000, \
             current_setting('wal_sync_method'), current_setting('synchronous_commit'), \
             current_setting('data_directory')",
        )
        .await
        .context("reading the server's settings")?;
    let major: i32 = row.try_get(0)?;
    let sync_method: String = row.try_get(1)?;
    let synchronous_commit: String = row.try_get(2)?;
    let data_directory: String = row.try_get(3)?;
    pool.close().await;

    let bin = pg_bin_dir(major);
    let script = settings.workdir.join("commit_floor.sql");
    std::fs::write(
        &script,
        format!(
            "INSERT INTO commit_floor (body) VALUES (repeat('x', {}));\n",
            settings.row_bytes
        ),
    )?;
    let pgbench = tool(bin.as_deref(), "pgbench");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let args = [
        "-n".to_string(),
        "-c".to_string(),
        settings.clients.to_string(),
        "-j".to_string(),
        threads.min(settings.clients).to_string(),
        "-T".to_string(),
        settings.window.as_secs().to_string(),
        "-f".to_string(),
        script.display().to_string(),
        db.url.clone(),
    ];
    let out = run_tool(&pgbench, &args).await?;
    let tps = out
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no `tps = ` line in pgbench's output:\n{out}"))?;

    let fsync_file = settings.workdir.join("pg_test_fsync.out");
    let fsync_out = run_tool(
        &tool(bin.as_deref(), "pg_test_fsync"),
        &[
            "-s".to_string(),
            settings.fsync_secs.to_string(),
            "-f".to_string(),
            fsync_file.display().to_string(),
        ],
    )
    .await?;
    let _ = std::fs::remove_file(&fsync_file);
    let fsync = one_write_ops(&fsync_out, &sync_method).ok_or_else(|| {
        anyhow!("no {sync_method} figure in pg_test_fsync's output:\n{fsync_out}")
    })?;
    let device = same_device(settings.workdir, Path::new(&data_directory));
    Ok(CommitLimit {
        clients: settings.clients,
        commits_per_sec: tps,
        single_writer_per_sec: None,
        fsync: Some((sync_method.clone(), fsync)),
        how: format!(
            "`{} -n -c {} -j {} -T {} -f commit_floor.sql <scratch database>` with \
             `INSERT INTO commit_floor (body) VALUES (repeat('x', {}))` (synchronous_commit={}), \
             and `{} -s {} -f <work dir>/pg_test_fsync.out`, its one-8kB-write figure for \
             wal_sync_method={} ({})",
            pgbench.display(),
            settings.clients,
            threads.min(settings.clients),
            settings.window.as_secs(),
            settings.row_bytes,
            synchronous_commit,
            tool(bin.as_deref(), "pg_test_fsync").display(),
            settings.fsync_secs,
            sync_method,
            match device {
                Some(true) => "its file on the device of PostgreSQL's data directory",
                Some(false) => "its file NOT on the device of PostgreSQL's data directory",
                None => "PostgreSQL's data directory is not readable here to compare devices",
            }
        ),
    })
}

/// `/usr/lib/postgresql/<major>/bin` when it exists (Debian's layout), else nothing (`PATH`).
fn pg_bin_dir(major: i32) -> Option<PathBuf> {
    let dir = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    dir.is_dir().then_some(dir)
}

fn tool(dir: Option<&Path>, name: &str) -> PathBuf {
    dir.map_or_else(|| PathBuf::from(name), |d| d.join(name))
}

/// Runs `program` to completion off the async threads; its stdout, or an error with stderr.
async fn run_tool(program: &Path, args: &[String]) -> Result<String> {
    let (program, args) = (program.to_path_buf(), args.to_vec());
    let shown = program.display().to_string();
    let out = tokio::task::spawn_blocking(move || Command::new(&program).args(&args).output())
        .await
        .context("the tool's thread panicked")?
        .with_context(|| format!("running {shown} (is PostgreSQL's client package installed?)"))?;
    if !out.status.success() {
        bail!(
            "{shown} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The ops/sec of `method` in `pg_test_fsync`'s "one 8kB write" section.
fn one_write_ops(output: &str, method: &str) -> Option<f64> {
    let section = output.split("using one 8kB write").nth(1)?;
    let section = section.split("\n\n").next()?;
    section
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut words| {
            (words.next() == Some(method))
                .then(|| words.next()?.parse::<f64>().ok())
                .flatten()
        })
}

/// Whether `a` and `b` are on the same device; `None` when either cannot be read.
fn same_device(a: &Path, b: &Path) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    Some(std::fs::metadata(a).ok()?.dev() == std::fs::metadata(b).ok()?.dev())
}
