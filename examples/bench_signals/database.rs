//! The throw-away database: a SQLite file in the work directory, or a fresh PostgreSQL
//! database created on the `--postgres-url` server and dropped at the end.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::ValueEnum;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use url::Url;
use uuid::Uuid;

/// Which database the benchmark runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl DbKind {
    pub const fn as_str(&self) -> &'static str {
        match self {
            DbKind::Sqlite => "sqlite",
            DbKind::Postgres => "postgres",
        }
    }
}

/// The database one run uses.
pub struct BenchDb {
    /// What the store and the server connect to.
    pub url: String,
    described: String,
    postgres: Option<PgBench>,
}

/// A database created for this run, to drop at the end.
struct PgBench {
    admin_url: String,
    name: String,
}

/// Creates the run's database (SQLite: only decides the file name; the store creates it).
pub async fn prepare(kind: DbKind, postgres_url: &str, workdir: &Path) -> Result<BenchDb> {
    match kind {
        DbKind::Sqlite => {
            let path = workdir.join("bench_signals.db");
            Ok(BenchDb {
                url: format!("sqlite://{}", path.display()),
                described: format!("SQLite file {}", path.display()),
                postgres: None,
            })
        }
        DbKind::Postgres => {
            let admin_url = Url::parse(postgres_url)
                .with_context(|| format!("--postgres-url {postgres_url:?} is not a URL"))?;
            let name = format!(
                "bench_signals_{}",
                &Uuid::new_v4().simple().to_string()[..12]
            );
            let admin = admin_pool(postgres_url).await.with_context(|| {
                format!(
                    "cannot connect to {} (is PostgreSQL running? e.g. \
                     pg_ctlcluster --skip-systemctl-redirect <version> main start)",
                    redacted(&admin_url)
                )
            })?;
            admin
                .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                .await
                .with_context(|| format!("CREATE DATABASE {name}"))?;
            admin.close().await;
            let mut url = admin_url.clone();
            url.set_path(&format!("/{name}"));
            Ok(BenchDb {
                described: format!("PostgreSQL database {}", redacted(&url)),
                url: url.to_string(),
                postgres: Some(PgBench {
                    admin_url: postgres_url.to_string(),
                    name,
                }),
            })
        }
    }
}

impl BenchDb {
    /// For the console, without any password.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// PostgreSQL only: refreshes planner statistics after the bulk load, as autovacuum would
    /// shortly after; returns whether it ran. SQLite is left as the service leaves it.
    pub async fn analyze(&self) -> Result<bool> {
        if self.postgres.is_none() {
            return Ok(false);
        }
        let pool = admin_pool(&self.url)
            .await
            .context("connecting to ANALYZE")?;
        pool.execute("ANALYZE").await.context("ANALYZE")?;
        pool.close().await;
        Ok(true)
    }

    /// `outcome`, once the database is dropped (see [`BenchDb::cleanup`]); a failed drop is
    /// the error when the run itself went well, and is reported on stderr, as `harness`'s,
    /// when the run failed too.
    pub async fn dropping<T>(&self, harness: &str, outcome: Result<T>) -> Result<T> {
        match (outcome, self.cleanup().await) {
            (Ok(value), Ok(())) => Ok(value),
            (Err(err), Ok(())) => Err(err),
            (Ok(_), Err(err)) => Err(err),
            (Err(err), Err(cleanup_err)) => {
                eprintln!("{harness}: cleanup also failed: {cleanup_err:#}");
                Err(err)
            }
        }
    }

    /// PostgreSQL only: drops the run's database (the SQLite file goes with the work directory).
    pub async fn cleanup(&self) -> Result<()> {
        let Some(pg) = &self.postgres else {
            return Ok(());
        };
        let admin = admin_pool(&pg.admin_url)
            .await
            .with_context(|| format!("connecting to drop database {}", pg.name))?;
        admin
            .execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", pg.name).as_str())
            .await
            .with_context(|| format!("DROP DATABASE {}", pg.name))?;
        admin.close().await;
        println!("dropped database {}", pg.name);
        Ok(())
    }
}

async fn admin_pool(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}

fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}
