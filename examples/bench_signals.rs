//! Benchmark harness for `GET /signals`: loads a fresh database through the library's storage
//! interface, starts the real release server as a separate process and drives it over HTTP
//! with concurrent keep-alive clients, then prints a Markdown table for `docs/benchmarks.md`.
//!
//! This is a harness to run by hand, not a test. Build the server first, then run:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_signals -- --db sqlite
//! cargo run --release --example bench_signals -- --db postgres --postgres-url postgres://127.0.0.1:5432/test
//! ```
//!
//! Scenarios, each after a warm-up that is not recorded:
//!
//! * `healthz`: `GET /healthz`, the floor: what the same server answers when a request does
//!   no work; every other figure is also printed as a fraction of it;
//! * `first_page`: `GET /signals?limit=50` for a random tenant per request;
//! * `deep_page`: `GET /signals?limit=50&cursor=...` with cursors 70–90 % deep into a tenant's
//!   history, collected beforehand by following `next_cursor` page by page.
//!
//! The client runs on the same machine as the server and competes with it for CPU; the report
//! says so and shows both processes' CPU use.

#[path = "bench_signals/database.rs"]
mod database;
#[path = "bench_signals/dataset.rs"]
mod dataset;
#[path = "bench_signals/drive.rs"]
mod drive;
#[path = "bench_ingest/machine.rs"]
mod machine;
#[path = "bench_signals/report.rs"]
mod report;
// Shared with the other harnesses; not every helper is used here.
#[allow(dead_code)]
#[path = "bench_signals/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use connectors::crypto::{random_token, CryptoKey};

use crate::database::DbKind;

/// Benchmark of `GET /signals` against the release server (run `cargo build --release` first).
#[derive(Debug, Parser)]
#[command(name = "bench_signals")]
struct Args {
    /// Database to benchmark.
    #[arg(long, value_enum)]
    db: DbKind,
    /// Signals to load, spread evenly over the tenants.
    #[arg(long, default_value_t = 1_000_000)]
    signals: u64,
    /// Tenants, each with one GitHub connection.
    #[arg(long, default_value_t = 100)]
    tenants: u32,
    /// Concurrent client tasks (keep-alive connections).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Recorded seconds per scenario.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Unrecorded warm-up seconds before each scenario.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
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
    /// Signals per `insert_signals` call while loading.
    #[arg(long, default_value_t = 5_000)]
    batch_size: usize,
    /// Tenants whose history is walked to collect deep cursors.
    #[arg(long, default_value_t = 10)]
    deep_tenants: u32,
    /// Server binary; default: `connectors` next to this example's directory (target/release).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Seconds to wait for `/readyz` to answer 200.
    #[arg(long, default_value_t = 30)]
    ready_timeout_secs: u64,
}

impl Args {
    fn validate(&self) -> Result<()> {
        if self.tenants == 0 || self.concurrency == 0 || self.duration_secs == 0 {
            bail!("--tenants, --concurrency and --duration-secs must be at least 1");
        }
        if self.batch_size == 0 || self.deep_tenants == 0 || self.db_connections == 0 {
            bail!("--batch-size, --deep-tenants and --db-connections must be at least 1");
        }
        let per_tenant = self.signals / u64::from(self.tenants);
        if per_tenant < 10 * drive::PAGE_SIZE {
            bail!(
                "--signals {} over --tenants {} gives {per_tenant} signals per tenant; deep pages \
                 need at least {} (ten pages) per tenant",
                self.signals,
                self.tenants,
                10 * drive::PAGE_SIZE
            );
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    server::exit_code("bench_signals", run(args).await)
}

async fn run(args: Args) -> Result<()> {
    args.validate()?;
    let machine = report::Machine::detect_with_memory();
    let note = format!(
        "note: client and server share this machine's {} CPU(s); the client's CPU use is shown \
         next to the server's",
        machine.cpus
    );
    let lines = [machine.headline("bench_signals"), note];
    let (server_bin, workdir) =
        server::setup("bench_signals", &args.server_bin, &args.data_dir, &lines)?;

    let db = database::prepare(args.db, &args.postgres_url, workdir.path()).await?;
    println!("database: {}", db.describe());

    let outcome = tokio::select! {
        result = bench(&args, &server_bin, workdir.path(), &db, &machine) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let summary = db.dropping("bench_signals", outcome).await?;
    println!("\n{}", report::markdown(&summary));
    Ok(())
}

/// Loads the data, runs the server and every scenario, and stops the server.
async fn bench(
    args: &Args,
    server_bin: &Path,
    workdir: &Path,
    db: &database::BenchDb,
    machine: &report::Machine,
) -> Result<report::Summary> {
    println!(
        "\nloading {} signals for {} tenants (batches of {})",
        report::thousands(args.signals),
        args.tenants,
        report::thousands(args.batch_size as u64)
    );
    let loaded = dataset::load(&db.url, args.signals, args.tenants, args.batch_size).await?;
    println!(
        "loaded {} signals in {:.1} s ({} rows/s), payload ≈ {} bytes",
        report::thousands(loaded.rows),
        loaded.elapsed.as_secs_f64(),
        report::thousands(loaded.rows_per_sec() as u64),
        loaded.payload_bytes
    );
    let analyzed = db.analyze().await?;
    if analyzed {
        println!("ran ANALYZE (as autovacuum would after a bulk load)");
    }

    let token = random_token().expose().to_string();
    let crypto_key = CryptoKey::generate().to_base64().to_string();
    let spec = server::Spec {
        bin: server_bin,
        workdir,
        database_url: &db.url,
        token: &token,
        crypto_key: &crypto_key,
        db_connections: args.db_connections,
    };
    let ready_timeout = Duration::from_secs(args.ready_timeout_secs);

    // A first server hands out the deep cursors and sizes the pages; the measured server is
    // started next with the fixed-body floor of that size, through `.env.test` in its working
    // directory (which the `test` profile reads). The cursors hold across the restart: both
    // servers sign them with the same key.
    let mut srv = server::start(&spec)?;
    println!(
        "\nstarted the sizing server (pid {}) on {}",
        srv.pid, srv.base
    );
    let api = drive::Api::new(srv.base.clone(), &token, args.concurrency)?;
    let outcome = match srv.wait_ready(api.client(), ready_timeout).await {
        Ok(_) => prepare(args, &api, &loaded).await,
        Err(err) => Err(err),
    }
    .map_err(|err| with_log(&srv, err));
    stop(srv).await?;
    let prepared = outcome?;
    std::fs::write(
        workdir.join(".env.test"),
        format!("POBLYSH_BENCH_FLOOR_BYTES={}\n", prepared.page_bytes),
    )
    .context("writing the server's .env.test")?;

    let mut srv = server::start(&spec)?;
    println!(
        "\nstarted the measured server (pid {}) on {} with POBLYSH_BENCH_FLOOR_BYTES={}",
        srv.pid, srv.base, prepared.page_bytes
    );
    let api = Arc::new(drive::Api::new(srv.base.clone(), &token, args.concurrency)?);
    let outcome = match srv.wait_ready(api.client(), ready_timeout).await {
        Ok(ready_in) => measure(args, &srv, &api, &prepared, &loaded, ready_in).await,
        Err(err) => Err(err),
    }
    .map_err(|err| with_log(&srv, err));
    stop(srv).await?;
    let measured = outcome?;

    Ok(report::Summary {
        backend: args.db,
        signals: args.signals,
        tenants: args.tenants,
        batch_size: args.batch_size,
        loaded,
        analyzed,
        concurrency: args.concurrency,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        db_connections: args.db_connections,
        ready_in: measured.ready_in,
        idle_rss_kb: measured.idle_rss_kb,
        deep: prepared.deep,
        page_bytes: prepared.page_bytes,
        sized_pages: prepared.sized_pages,
        scenarios: measured.scenarios,
        machine: machine.clone(),
        load_after: report::load_average(),
        commit: report::git_commit(),
        finished_at: chrono::Utc::now(),
    })
}

/// What the sizing server handed out.
struct Prepared {
    deep: drive::DeepCursors,
    /// Mean body size of the pages requested once each (every first page and every deep
    /// cursor), in bytes.
    page_bytes: usize,
    sized_pages: usize,
}

struct Measured {
    ready_in: Duration,
    idle_rss_kb: u64,
    scenarios: Vec<drive::Scenario>,
}

/// `err` with the last lines of `srv`'s log.
fn with_log(srv: &server::Server, err: anyhow::Error) -> anyhow::Error {
    anyhow!(
        "{err:#}\nlast lines of the server log {}:\n{}",
        srv.log_path.display(),
        srv.log_tail(30)
    )
}

/// Stops `srv` with SIGTERM; a non-zero exit is only a warning.
async fn stop(srv: server::Server) -> Result<()> {
    let status = srv.stop().await?;
    if !status.success() {
        eprintln!("warning: the server exited with {status} after SIGTERM");
    }
    Ok(())
}

/// On the sizing server: the deep cursors, and the mean size of a page.
async fn prepare(args: &Args, api: &drive::Api, loaded: &dataset::Loaded) -> Result<Prepared> {
    let deep = drive::deep_cursors(api, &loaded.tenants, args.deep_tenants).await?;
    println!(
        "collected {} deep cursors from {} tenants by walking {} pages in {:.1} s ({})",
        deep.targets.len(),
        deep.tenants,
        deep.pages_walked,
        deep.elapsed.as_secs_f64(),
        deep.describe()
    );
    let mut pages = drive::first_page_targets(api, &loaded.tenants)?;
    pages.extend(deep.targets.iter().cloned());
    let page_bytes = api.mean_body_bytes(&pages).await?;
    println!(
        "a page is {page_bytes} bytes on average over {} pages (first pages and deep cursors)",
        pages.len()
    );
    Ok(Prepared {
        deep,
        page_bytes,
        sized_pages: pages.len(),
    })
}

/// On the measured server: every scenario, each also printed against the floors.
async fn measure(
    args: &Args,
    srv: &server::Server,
    api: &Arc<drive::Api>,
    prepared: &Prepared,
    loaded: &dataset::Loaded,
    ready_in: Duration,
) -> Result<Measured> {
    println!("ready in {} ms; settling for 2 s", ready_in.as_millis());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_kb = server::rss_kb(srv.pid).context("reading the server's VmRSS")?;
    println!("idle RSS: {:.1} MB", report::mb(idle_rss_kb));

    let load = drive::LoadSettings {
        concurrency: args.concurrency,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
    };
    let healthz = vec![api.healthz_target()?];
    let fixed = loaded
        .tenants
        .iter()
        .map(|t| api.fixed_body_target(t.id))
        .collect::<Result<Vec<_>>>()?;
    let first = drive::first_page_targets(api, &loaded.tenants)?;
    let deep = prepared
        .deep
        .targets
        .iter()
        .map(|t| t.rebased(api.base()))
        .collect::<Result<Vec<_>>>()?;
    let mut scenarios: Vec<drive::Scenario> = Vec::new();
    for (name, targets) in [
        (report::FLOOR, healthz),
        (report::FIXED_FLOOR, fixed),
        ("first_page", first),
        ("deep_page", deep),
    ] {
        println!(
            "\nscenario {name}: {} clients, {} s warm-up + {} s",
            load.concurrency,
            load.warmup.as_secs(),
            load.duration.as_secs()
        );
        let scenario = drive::run_scenario(api, name, Arc::new(targets), &load, srv.pid).await?;
        println!("  {}", scenario.one_line());
        for line in report::against_floors(&scenario, &scenarios) {
            println!("  {line}");
        }
        if scenario.errors > 0 {
            eprintln!(
                "  {} errors; samples: {:?}\n  last lines of the server log:\n{}",
                scenario.errors,
                scenario.error_samples,
                srv.log_tail(20)
            );
        }
        scenarios.push(scenario);
    }
    Ok(Measured {
        ready_in,
        idle_rss_kb,
        scenarios,
    })
}
