//! Benchmark harness for growth: whether `GET /signals` (first and deep pages), webhook ingest
//! and the sync scheduler cost the same per request as the data grows. One database, three
//! stages measured with the same release server:
//!
//! 1. `--signals` (1M) signals and `--connections` (1,000) connections;
//! 2. the signals grown to `--grown-signals` (10M) in the same database;
//! 3. the connections grown to `--grown-connections` (100,000).
//!
//! Stage 2 against stage 1 says whether the signal routes stay flat as signals grow; stage 3
//! against stage 2 whether the scheduler and ingest routing stay flat as connections grow.
//!
//! This is a harness to run by hand, not a test. Build the server first, then run:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_growth -- --db sqlite
//! cargo run --release --example bench_growth -- --db postgres --postgres-url postgres://127.0.0.1:5432/test
//! ```
//!
//! The first million signals are loaded through `Store::insert_signals` (the data set of
//! `bench_signals`); growth is done in SQL inside the database (each original signal copied
//! into earlier years with a fresh id and dedupe key; connections from `generate_series` or a
//! recursive CTE), then PostgreSQL gets `VACUUM ANALYZE`, as autovacuum would after a bulk
//! load. At each stage, after a warm-up that is not recorded:
//!
//! * `healthz`: `GET /healthz`, the floor every HTTP figure is also read against;
//! * `first_page`, `deep_page`: `GET /signals?limit=50` without and with a cursor 70–90 % deep
//!   into a tenant's history (collected by following `next_cursor`);
//! * `ingest`: signed 7 KB sandbox deliveries from `--concurrency` senders, back to back
//!   (`POBLYSH_ROLES=api`: each delivery is routed to its connection and stored);
//! * the scheduler, in this process over the store (`Scheduler::tick`): a pass with nothing
//!   due, a pass with `--due` connections due, and a pass with every connection due.

// Shared with bench_signals and bench_ingest; not every helper is used here.
#[allow(dead_code)]
#[path = "bench_ingest/api.rs"]
mod api;
#[allow(dead_code)]
#[path = "bench_signals/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "bench_signals/dataset.rs"]
mod dataset;
#[allow(dead_code)]
#[path = "bench_signals/drive.rs"]
mod drive;
#[allow(dead_code)]
#[path = "bench_ingest/ingest.rs"]
mod ingest;
#[allow(dead_code)]
#[path = "bench_ingest/machine.rs"]
mod machine;
#[allow(dead_code)]
#[path = "bench_signals/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "bench_signals/server.rs"]
mod server;

#[path = "bench_growth/bulk.rs"]
mod bulk;
#[path = "bench_growth/scheduler.rs"]
mod scheduler;
#[path = "bench_growth/table.rs"]
mod table;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use connectors::crypto::{random_token, CryptoKey};
use connectors::domain::TenantId;
use uuid::Uuid;

use crate::database::DbKind;
use crate::report::thousands;

/// Growth benchmark of `GET /signals`, webhook ingest and the scheduler against the release
/// server (run `cargo build --release` first).
#[derive(Debug, Parser)]
#[command(name = "bench_growth")]
struct Args {
    /// Database to benchmark.
    #[arg(long, value_enum)]
    db: DbKind,
    /// Signals of the first stage, loaded through the store.
    #[arg(long, default_value_t = 1_000_000)]
    signals: u64,
    /// Signals of the later stages: a whole multiple of `--signals`.
    #[arg(long, default_value_t = 10_000_000)]
    grown_signals: u64,
    /// Tenants holding the signals, each with one GitHub connection.
    #[arg(long, default_value_t = 100)]
    tenants: u32,
    /// Connections of the first two stages.
    #[arg(long, default_value_t = 1_000)]
    connections: u64,
    /// Connections of the last stage.
    #[arg(long, default_value_t = 100_000)]
    grown_connections: u64,
    /// Concurrent client tasks (keep-alive connections) for the HTTP scenarios.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Recorded seconds per HTTP scenario.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Unrecorded warm-up seconds before each HTTP scenario.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Tenants the deliveries of one stage are spread over, each with one sandbox connection
    /// (fresh tenants at every stage, so no delivery id repeats).
    #[arg(long, default_value_t = 8)]
    ingest_tenants: usize,
    /// Bytes of each delivery's body.
    #[arg(long, default_value_t = 7 * 1024)]
    payload_bytes: usize,
    /// Connections made due for the scheduler's partial passes.
    #[arg(long, default_value_t = 200)]
    due: u64,
    /// Partial passes (and passes with nothing due) per stage.
    #[arg(long, default_value_t = 20)]
    passes: u32,
    /// Tenants whose history is walked to collect deep cursors.
    #[arg(long, default_value_t = 5)]
    deep_tenants: u32,
    /// Signals per `insert_signals` call while loading the first stage.
    #[arg(long, default_value_t = 5_000)]
    batch_size: usize,
    /// Server to create the throw-away PostgreSQL database on (`--db postgres`).
    #[arg(long, default_value = "postgres://127.0.0.1:5432/test")]
    postgres_url: String,
    /// Directory for the SQLite file and the server log (a fresh subdirectory is created and
    /// removed at the end); default: the system temp directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `POBLYSH_DB_MAX_CONNECTIONS` of the server.
    #[arg(long, default_value_t = 8)]
    db_connections: u32,
    /// Server binary; default: `connectors` next to this example's directory (target/release).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Seconds to wait for `/readyz` to answer 200.
    #[arg(long, default_value_t = 60)]
    ready_timeout_secs: u64,
}

impl Args {
    fn validate(&self) -> Result<()> {
        if self.tenants == 0 || self.concurrency == 0 || self.duration_secs == 0 {
            bail!("--tenants, --concurrency and --duration-secs must be at least 1");
        }
        if self.ingest_tenants == 0 || self.due == 0 || self.passes == 0 {
            bail!("--ingest-tenants, --due and --passes must be at least 1");
        }
        if self.batch_size == 0 || self.deep_tenants == 0 || self.db_connections == 0 {
            bail!("--batch-size, --deep-tenants and --db-connections must be at least 1");
        }
        if self.signals == 0 || self.grown_signals % self.signals != 0 {
            bail!("--grown-signals must be a whole multiple of --signals");
        }
        if self.grown_signals < self.signals {
            bail!("--grown-signals must be at least --signals");
        }
        let fixed = u64::from(self.tenants) + 3 * self.ingest_tenants as u64;
        if self.connections < fixed.max(self.due) || self.grown_connections < self.connections {
            bail!(
                "--connections must be at least {} (the tenants' and the ingest tenants' \
                 connections, and --due), --grown-connections at least --connections",
                fixed.max(self.due)
            );
        }
        let per_tenant = self.signals / u64::from(self.tenants);
        if per_tenant < 10 * drive::PAGE_SIZE {
            bail!("--signals over --tenants leaves fewer than ten pages per tenant");
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    server::exit_code("bench_growth", run(args).await)
}

async fn run(args: Args) -> Result<()> {
    args.validate()?;
    let machine = report::Machine::detect_with_memory();
    let lines = [machine.headline("bench_growth")];
    let (server_bin, workdir) =
        server::setup("bench_growth", &args.server_bin, &args.data_dir, &lines)?;

    let db = database::prepare(args.db, &args.postgres_url, workdir.path()).await?;
    println!("database: {}", db.describe());
    let outcome = tokio::select! {
        result = bench(&args, &server_bin, workdir.path(), &db) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let stages = db.dropping("bench_growth", outcome).await?;
    let summary = table::Summary {
        backend: args.db,
        concurrency: args.concurrency,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        db_connections: args.db_connections,
        stages,
        machine,
        load_after: report::load_average(),
        commit: report::git_commit(),
        finished_at: chrono::Utc::now(),
    };
    println!("\n{}", table::markdown(&summary));
    Ok(())
}

/// What every stage shares: the running server, the clients and the database.
struct Bench<'a> {
    args: &'a Args,
    srv: server::Server,
    signals_api: Arc<drive::Api>,
    ingest_api: Arc<api::Api>,
    bulk: bulk::Bulk,
    sched: scheduler::Harness,
    /// Fresh sandbox tenants for each stage's deliveries.
    ingest_sets: Vec<Vec<TenantId>>,
}

async fn bench(
    args: &Args,
    server_bin: &Path,
    workdir: &Path,
    db: &database::BenchDb,
) -> Result<Vec<table::Stage>> {
    println!(
        "\nloading {} signals for {} tenants through the store",
        thousands(args.signals),
        args.tenants
    );
    let loaded = dataset::load(&db.url, args.signals, args.tenants, args.batch_size).await?;
    println!(
        "loaded {} signals in {:.1} s ({} rows/s)",
        thousands(loaded.rows),
        loaded.elapsed.as_secs_f64(),
        thousands(loaded.rows_per_sec() as u64)
    );
    let bulk = bulk::Bulk::open(args.db, &db.url).await?;
    bulk.settle().await?;

    let token = random_token().expose().to_string();
    let secret = random_token().expose().to_string();
    let crypto_key = CryptoKey::generate().to_base64().to_string();
    let server_dir = workdir.join("server");
    std::fs::create_dir_all(&server_dir).context("creating the server directory")?;
    // `server.rs` clears every inherited `POBLYSH_*` variable; the rest of the settings go
    // into `.env.test`, which the service reads for the `test` profile.
    std::fs::write(
        server_dir.join(".env.test"),
        format!(
            "POBLYSH_ROLES=api\nPOBLYSH_SANDBOX_ENABLED=true\n\
             POBLYSH_SANDBOX_WEBHOOK_SECRET={secret}\n"
        ),
    )
    .context("writing the server's .env.test")?;
    let mut srv = server::start(&server::Spec {
        bin: server_bin,
        workdir: &server_dir,
        database_url: &db.url,
        token: &token,
        crypto_key: &crypto_key,
        db_connections: args.db_connections,
    })?;
    println!("\nstarted the server (pid {}) on {}", srv.pid, srv.base);
    let signals_api = Arc::new(drive::Api::new(srv.base.clone(), &token, args.concurrency)?);
    let ingest_api = Arc::new(api::Api::new(
        &token,
        &secret,
        args.concurrency + 8,
        args.payload_bytes,
    )?);
    let ready = srv
        .wait_ready(
            signals_api.client(),
            Duration::from_secs(args.ready_timeout_secs),
        )
        .await;
    if let Err(err) = ready {
        return Err(anyhow!("{err:#}\nserver log:\n{}", srv.log_tail(30)));
    }
    let sched = scheduler::Harness::open(&db.url, &token, &secret, &crypto_key).await?;
    let mut bench = Bench {
        args,
        srv,
        signals_api,
        ingest_api,
        bulk,
        sched,
        ingest_sets: Vec::new(),
    };
    let outcome = stages(&mut bench, &loaded).await;
    let Bench { srv, sched, .. } = bench;
    sched.close().await;
    match outcome {
        Ok(stages) => {
            let status = srv.stop().await?;
            if !status.success() {
                eprintln!("warning: the server exited with {status} after SIGTERM");
            }
            Ok(stages)
        }
        Err(err) => {
            let tail = srv.log_tail(30);
            let _ = srv.stop().await;
            Err(anyhow!("{err:#}\nlast lines of the server log:\n{tail}"))
        }
    }
}

/// Sets up the ingest tenants and runs the three stages.
async fn stages(b: &mut Bench<'_>, loaded: &dataset::Loaded) -> Result<Vec<table::Stage>> {
    let base = b.srv.base.clone();
    for _ in 0..3 {
        let tenants: Vec<TenantId> = (0..b.args.ingest_tenants)
            .map(|_| TenantId(Uuid::new_v4()))
            .collect();
        b.ingest_api.connect_all(&base, &tenants, 8).await?;
        b.ingest_sets.push(tenants);
    }
    let have = b.bulk.count("connections").await?;
    b.bulk
        .add_connections(b.args.connections.saturating_sub(have))
        .await?;
    b.bulk.settle().await?;

    let mut out = Vec::new();
    let tenants = loaded.tenants.clone();
    out.push(measure(b, 0, &tenants).await?);

    let factor = b.args.grown_signals / b.args.signals;
    let grown: Vec<dataset::TenantData> = tenants
        .iter()
        .map(|t| dataset::TenantData {
            id: t.id,
            signals: t.signals * factor,
        })
        .collect();
    if factor > 1 {
        b.bulk.grow_signals(factor - 1).await?;
        b.bulk.settle().await?;
    }
    out.push(measure(b, 1, &grown).await?);

    let have = b.bulk.count("connections").await?;
    b.bulk
        .add_connections(b.args.grown_connections.saturating_sub(have))
        .await?;
    b.bulk.settle().await?;
    out.push(measure(b, 2, &grown).await?);

    b.bulk.explain(&grown, &b.sched.providers()).await?;
    Ok(out)
}

/// Every scenario of one stage.
async fn measure(
    b: &mut Bench<'_>,
    index: usize,
    tenants: &[dataset::TenantData],
) -> Result<table::Stage> {
    let signals = b.bulk.count("signals").await?;
    let connections = b.bulk.count("connections").await?;
    println!(
        "\n== stage {}: {} signals, {} connections",
        index + 1,
        thousands(signals),
        thousands(connections)
    );
    let api = &b.signals_api;
    let deep = drive::deep_cursors(api, tenants, b.args.deep_tenants).await?;
    println!(
        "collected {} deep cursors by walking {} pages in {:.1} s ({})",
        deep.targets.len(),
        deep.pages_walked,
        deep.elapsed.as_secs_f64(),
        deep.describe()
    );
    let load = drive::LoadSettings {
        concurrency: b.args.concurrency,
        warmup: Duration::from_secs(b.args.warmup_secs),
        duration: Duration::from_secs(b.args.duration_secs),
    };
    let mut http = Vec::new();
    for (name, targets) in [
        (report::FLOOR, vec![api.healthz_target()?]),
        ("first_page", drive::first_page_targets(api, tenants)?),
        ("deep_page", deep.targets.clone()),
    ] {
        let scenario = drive::run_scenario(api, name, Arc::new(targets), &load, b.srv.pid).await?;
        println!("  {name}: {}", scenario.one_line());
        if scenario.errors > 0 {
            bail!(
                "{name}: {} errors, e.g. {:?}",
                scenario.errors,
                scenario.error_samples
            );
        }
        http.push(scenario);
    }

    let set = Arc::new(
        b.ingest_sets
            .get(index)
            .cloned()
            .context("no ingest tenants left for this stage")?,
    );
    let ingest_load = ingest::LoadSettings {
        name: "ingest",
        roles: "api",
        concurrency: b.args.concurrency,
        warmup: Duration::from_secs(b.args.warmup_secs),
        duration: Duration::from_secs(b.args.duration_secs),
        rate: None,
    };
    let ingest = ingest::run(
        &b.ingest_api,
        &b.srv.base,
        &set,
        &ingest_load,
        b.srv.pid,
        None,
    )
    .await?;
    println!("  ingest: {}", ingest.one_line());
    if ingest.errors > 0 || ingest.accepted == 0 {
        bail!(
            "ingest: {} accepted, {} errors, e.g. {:?}",
            ingest.accepted,
            ingest.errors,
            ingest.error_samples
        );
    }

    let sched = scheduler::measure(&b.sched, &b.bulk, b.args.due, b.args.passes).await?;
    println!("  scheduler: {}", sched.one_line());

    Ok(table::Stage {
        signals,
        connections,
        deep_skip: (deep.min_skip, deep.max_skip),
        per_tenant: deep.per_tenant,
        http,
        ingest,
        sched,
    })
}
