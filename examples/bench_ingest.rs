//! Benchmark harness for ingest: webhook deliveries accepted per second and their latency to
//! `202`, the inbox lag from `202` to the signal, and sync throughput over many connections.
//! It starts the real release server as a separate process (with the helpers of
//! `examples/bench_signals/`), drives it over HTTP and prints Markdown for
//! `docs/benchmarks.md`.
//!
//! This is a harness to run by hand, not a test. Build the server first, then run:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_ingest -- --db sqlite
//! cargo run --release --example bench_ingest -- --db postgres --postgres-url postgres://127.0.0.1:5432/test
//! ```
//!
//! Scenarios (`--scenarios`, default all three), each on a fresh database and server:
//!
//! * `ingest`: `POBLYSH_ROLES=api`; `--concurrency` senders post signed 7 KB sandbox
//!   deliveries back to back; accepted/s and latency to `202`. Before the deliveries, as many
//!   clients drive `GET /healthz` on the same server for as long, the floor that accepted/s
//!   is printed against (as a fraction of its throughput).
//! * `ingest-worker`: the same with `POBLYSH_ROLES=api,worker`, so deliveries are normalized
//!   into signals while they arrive; adds the inbox lag (from `202` to the signal), measured
//!   from the stored events' `processed_at` for a sample of the load and by a probe polling
//!   `GET /signals`.
//! * `sync`: `--connections` sandbox connections made through the connect journey, one
//!   `POST /connections/{id}/sync` each, then a server with workers runs every job against a
//!   fake sandbox API served by the harness (`--pages-per-connection` pages of `--page-size`
//!   events, `--provider-latency-ms` per request); signals per second.
//!
//! The senders run on the same machine as the server (and the database) and compete with them
//! for CPU; the report shows the harness's CPU use next to the server's.

// Shared with bench_signals; not every helper is used here.
#[allow(dead_code)]
#[path = "bench_signals/database.rs"]
mod database;
#[path = "bench_signals/server.rs"]
mod server;

#[path = "bench_ingest/api.rs"]
mod api;
#[path = "bench_ingest/commit_limit.rs"]
mod commit_limit;
#[path = "bench_ingest/fake_api.rs"]
mod fake_api;
#[path = "bench_ingest/floor.rs"]
mod floor;
#[path = "bench_ingest/ingest.rs"]
mod ingest;
// Shared with bench_signals; not every helper is used here.
#[allow(dead_code)]
#[path = "bench_ingest/machine.rs"]
mod machine;
#[path = "bench_ingest/queue.rs"]
mod queue;
#[path = "bench_ingest/report.rs"]
mod report;
#[path = "bench_ingest/sync.rs"]
mod sync;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use connectors::connector::Connector;
use connectors::crypto::{random_token, CryptoKey};
use connectors::domain::TenantId;
use connectors::providers::sandbox::SandboxConnector;
use uuid::Uuid;

use crate::api::Api;
use crate::database::DbKind;
use crate::fake_api::{FakeApi, FakeSettings};
use crate::report::{thousands, IngestReport};

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Webhook ingest with `POBLYSH_ROLES=api`.
    Ingest,
    /// Webhook ingest with `POBLYSH_ROLES=api,worker`, and the inbox lag.
    IngestWorker,
    /// Sync jobs over many sandbox connections.
    Sync,
}

/// Benchmark of webhook ingest, inbox lag and sync against the release server (run
/// `cargo build --release` first).
#[derive(Debug, Parser)]
#[command(name = "bench_ingest")]
struct Args {
    /// Database to benchmark.
    #[arg(long, value_enum)]
    db: DbKind,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ingest,ingest-worker,sync"
    )]
    scenarios: Vec<Scenario>,
    /// Concurrent senders (keep-alive connections).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Recorded seconds per ingest scenario.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Unrecorded warm-up seconds before each ingest scenario.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Deliveries per second over all senders (paced); 0: each sender sends back to back.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Bytes of each delivery's body.
    #[arg(long, default_value_t = 7 * 1024)]
    payload_bytes: usize,
    /// Tenants the deliveries are spread over, each with one sandbox connection.
    #[arg(long, default_value_t = 8)]
    tenants: usize,
    /// Deliveries of the recorded window whose lag is read from the store.
    #[arg(long, default_value_t = 2_000)]
    lag_samples: usize,
    /// Seconds to wait after the load for the sampled deliveries to be processed.
    #[arg(long, default_value_t = 300)]
    drain_timeout_secs: u64,
    /// Seconds of each commit-rate measurement of the database alone (pgbench; SQLite's loops).
    #[arg(long, default_value_t = 10)]
    commit_secs: u64,
    /// Seconds per `pg_test_fsync` test (it runs 18 of them).
    #[arg(long, default_value_t = 2)]
    fsync_secs: u64,
    /// Sandbox connections (one tenant each) for the sync scenario.
    #[arg(long, default_value_t = 1_000)]
    connections: usize,
    /// Milliseconds the fake sandbox API waits before answering each page (sync scenario).
    #[arg(long, default_value_t = 20)]
    provider_latency_ms: u64,
    /// Events per page of the fake sandbox API (1–100, the sandbox asks for 100).
    #[arg(long, default_value_t = 100)]
    page_size: u64,
    /// Pages the fake sandbox API holds for each connection.
    #[arg(long, default_value_t = 5)]
    pages_per_connection: u64,
    /// Sync jobs the measured server runs at once (`POBLYSH_SYNC_CONCURRENCY`).
    #[arg(long, default_value_t = 8)]
    sync_concurrency: usize,
    /// Seconds to wait for every sync job to end.
    #[arg(long, default_value_t = 900)]
    sync_timeout_secs: u64,
    /// Concurrent requests while setting up (connect journeys, sync requests, read-back).
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
    /// Server to create the throw-away PostgreSQL databases on (`--db postgres`).
    #[arg(long, default_value = "postgres://127.0.0.1:5432/test")]
    postgres_url: String,
    /// Directory for SQLite files and server logs (a fresh subdirectory is created and
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
    #[arg(long, default_value_t = 30)]
    ready_timeout_secs: u64,
}

impl Args {
    fn validate(&self) -> Result<()> {
        if self.concurrency == 0 || self.duration_secs == 0 || self.tenants == 0 {
            bail!("--concurrency, --duration-secs and --tenants must be at least 1");
        }
        if self.connections == 0 || self.lag_samples == 0 || self.db_connections == 0 {
            bail!("--connections, --lag-samples and --db-connections must be at least 1");
        }
        if !(1..=100).contains(&self.page_size) || self.pages_per_connection == 0 {
            bail!("--page-size must be between 1 and 100, --pages-per-connection at least 1");
        }
        if self.commit_secs == 0 || self.fsync_secs == 0 {
            bail!("--commit-secs and --fsync-secs must be at least 1");
        }
        if self.scenarios.is_empty() {
            bail!("--scenarios names nothing to run");
        }
        Ok(())
    }
}

/// What every scenario shares.
struct Ctx {
    args: Args,
    server_bin: PathBuf,
    root: PathBuf,
    token: String,
    crypto_key: String,
    secret: String,
    api: Arc<Api>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    server::exit_code("bench_ingest", run(args).await)
}

async fn run(args: Args) -> Result<()> {
    args.validate()?;
    let machine = report::Machine::detect();
    let note = format!(
        "note: senders and server share this machine's {} CPU(s); the harness's CPU use is \
         shown next to the server's",
        machine.cpus
    );
    let lines = [machine.headline("bench_ingest"), note];
    let (server_bin, workdir) =
        server::setup("bench_ingest", &args.server_bin, &args.data_dir, &lines)?;

    let token = random_token().expose().to_string();
    let secret = random_token().expose().to_string();
    let api = Arc::new(Api::new(
        &token,
        &secret,
        args.concurrency.max(args.setup_concurrency),
        args.payload_bytes,
    )?);
    let ctx = Ctx {
        server_bin,
        root: workdir.path().to_path_buf(),
        token,
        crypto_key: CryptoKey::generate().to_base64().to_string(),
        secret,
        api,
        args,
    };

    let commit_limit = if ctx
        .args
        .scenarios
        .iter()
        .any(|s| matches!(s, Scenario::Ingest | Scenario::IngestWorker))
    {
        Some(interruptible(measure_commit_limit(&ctx)).await?)
    } else {
        None
    };
    let mut ingest_reports = Vec::new();
    let mut sync_outcome = None;
    for scenario in ctx.args.scenarios.clone() {
        let dir = match scenario {
            Scenario::Ingest => "ingest",
            Scenario::IngestWorker => "ingest_worker",
            Scenario::Sync => "sync",
        };
        let db = fresh_database(&ctx, dir).await?;
        match scenario {
            Scenario::Ingest => {
                let outcome = interruptible(ingest_scenario(&ctx, &db, false)).await;
                ingest_reports.push(db.dropping("bench_ingest", outcome).await?);
            }
            Scenario::IngestWorker => {
                let outcome = interruptible(ingest_scenario(&ctx, &db, true)).await;
                ingest_reports.push(db.dropping("bench_ingest", outcome).await?);
            }
            Scenario::Sync => {
                let outcome = interruptible(sync_scenario(&ctx, &db)).await;
                sync_outcome = Some(db.dropping("bench_ingest", outcome).await?);
            }
        }
    }
    let summary = report::Summary {
        backend: ctx.args.db,
        concurrency: ctx.args.concurrency,
        rate: ctx.args.rate,
        payload_bytes: ctx.args.payload_bytes,
        tenants: ctx.args.tenants,
        warmup: Duration::from_secs(ctx.args.warmup_secs),
        duration: Duration::from_secs(ctx.args.duration_secs),
        db_connections: ctx.args.db_connections,
        ingest: ingest_reports,
        commit_limit,
        sync: sync_outcome,
        machine,
        load_after: report::load_average(),
        commit: report::git_commit(),
        finished_at: chrono::Utc::now(),
    };
    println!("\n{}", report::markdown(&summary));
    Ok(())
}

/// The database's own commit rate, in a scratch database of its own, before the scenarios.
async fn measure_commit_limit(ctx: &Ctx) -> Result<commit_limit::CommitLimit> {
    let dir = ctx.root.join("commit_limit");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!(
        "\nthe database's own limit: single-row insert commits ({} B rows), {} clients, {} s",
        ctx.args.payload_bytes, ctx.args.concurrency, ctx.args.commit_secs
    );
    let settings = commit_limit::Settings {
        clients: ctx.args.concurrency,
        window: Duration::from_secs(ctx.args.commit_secs),
        row_bytes: ctx.args.payload_bytes,
        pool_size: ctx.args.db_connections,
        fsync_secs: ctx.args.fsync_secs,
        workdir: &dir,
    };
    let limit = commit_limit::measure(ctx.args.db, &ctx.args.postgres_url, &settings).await?;
    println!("  {}", limit.one_line());
    Ok(limit)
}

/// The scenario directory `name` with a fresh database.
async fn fresh_database(ctx: &Ctx, name: &str) -> Result<database::BenchDb> {
    let dir = ctx.root.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = database::prepare(ctx.args.db, &ctx.args.postgres_url, &dir).await?;
    println!("\nscenario {name}: database {}", db.describe());
    Ok(db)
}

/// `work`, or an error on Ctrl-C (the servers are killed when dropped).
async fn interruptible<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    }
}

/// Starts the release server in `dir` over `database_url` with `roles` and waits until ready.
///
/// `server.rs` clears every inherited `POBLYSH_*` variable and sets the essentials (profile
/// `test`, address, token, key, pool size, log level); the rest of this harness's settings go
/// into `.env.test` in the server's working directory, which the service reads for the `test`
/// profile.
async fn start_server(
    ctx: &Ctx,
    dir: &Path,
    database_url: &str,
    roles: &str,
    extra: &[(&str, String)],
) -> Result<server::Server> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut env = format!(
        "POBLYSH_ROLES={roles}\nPOBLYSH_SANDBOX_ENABLED=true\n\
         POBLYSH_SANDBOX_WEBHOOK_SECRET={}\n",
        ctx.secret
    );
    for (name, value) in extra {
        env.push_str(&format!("{name}={value}\n"));
    }
    std::fs::write(dir.join(".env.test"), env).context("writing the server's .env.test")?;
    let mut srv = server::start(&server::Spec {
        bin: &ctx.server_bin,
        workdir: dir,
        database_url,
        token: &ctx.token,
        crypto_key: &ctx.crypto_key,
        db_connections: ctx.args.db_connections,
    })?;
    let ready = srv
        .wait_ready(
            ctx.api.client(),
            Duration::from_secs(ctx.args.ready_timeout_secs),
        )
        .await;
    match ready {
        Ok(took) => {
            println!(
                "started the server (pid {}, POBLYSH_ROLES={roles}) on {}; ready in {} ms",
                srv.pid,
                srv.base,
                took.as_millis()
            );
            Ok(srv)
        }
        Err(err) => Err(anyhow!(
            "{err:#}\nlast lines of the server log:\n{}",
            srv.log_tail(30)
        )),
    }
}

/// Runs `work` against a started server, then stops it; a failure carries the log's tail.
async fn with_server<T>(srv: server::Server, work: impl Future<Output = Result<T>>) -> Result<T> {
    match work.await {
        Ok(value) => {
            let status = srv.stop().await?;
            if !status.success() {
                eprintln!("warning: the server exited with {status} after SIGTERM");
            }
            Ok(value)
        }
        Err(err) => {
            let tail = srv.log_tail(30);
            let log = srv.log_path.display().to_string();
            let _ = srv.stop().await;
            Err(anyhow!(
                "{err:#}\nlast lines of the server log {log}:\n{tail}"
            ))
        }
    }
}

fn fresh_tenants(n: usize) -> Vec<TenantId> {
    (0..n).map(|_| TenantId(Uuid::new_v4())).collect()
}

/// `ingest` (`with_worker: false`) or `ingest+worker`.
async fn ingest_scenario(
    ctx: &Ctx,
    db: &database::BenchDb,
    with_worker: bool,
) -> Result<IngestReport> {
    let (name, roles) = if with_worker {
        ("ingest+worker", "api,worker")
    } else {
        ("ingest", "api")
    };
    let dir = ctx.root.join(if with_worker {
        "ingest_worker"
    } else {
        "ingest"
    });
    let api = &ctx.api;
    let tenants = fresh_tenants(ctx.args.tenants);
    let probe = with_worker.then(|| TenantId(Uuid::new_v4()));
    // A first server connects the tenants and answers one delivery, whose `202` sizes the
    // fixed-body floor of the measured server started next over the same database.
    let setup = start_server(ctx, &dir.join("setup"), &db.url, "api", &[]).await?;
    let setup_base = setup.base.clone();
    let answer_bytes = with_server(setup, async {
        api.connect_all(&setup_base, &tenants, ctx.args.setup_concurrency)
            .await?;
        if let Some(probe) = probe {
            api.connect_sandbox(&setup_base, probe).await?;
        }
        let answer = api
            .delivery_answer(&setup_base, tenants[0], &Uuid::new_v4().to_string())
            .await
            .map_err(|e| anyhow!("sizing delivery: {e}"))?;
        Ok(answer.len())
    })
    .await?;
    let floor_bytes = [("POBLYSH_BENCH_FLOOR_BYTES", answer_bytes.to_string())];
    let srv = start_server(ctx, &dir.join("server"), &db.url, roles, &floor_bytes).await?;
    let base = srv.base.clone();
    let pid = srv.pid;
    with_server(srv, async {
        println!(
            "connected {} tenants{}; {} senders, {} B payload, {} s warm-up + {} s",
            tenants.len(),
            if probe.is_some() {
                " and the probe's"
            } else {
                ""
            },
            ctx.args.concurrency,
            ctx.args.payload_bytes,
            ctx.args.warmup_secs,
            ctx.args.duration_secs
        );
        let floor = floor::healthz(
            api.client(),
            &base,
            ctx.args.concurrency,
            Duration::from_secs(ctx.args.warmup_secs),
            Duration::from_secs(ctx.args.duration_secs),
        )
        .await?;
        println!(
            "  floor: GET /healthz {} req/s, p99 {:.2} ms, {} errors",
            thousands(floor.per_sec().round() as u64),
            floor.ms(0.99),
            floor.errors
        );
        let fixed = floor::fixed_body(
            api.client(),
            &base,
            (api.auth(), tenants[0]),
            ctx.args.concurrency,
            Duration::from_secs(ctx.args.warmup_secs),
            Duration::from_secs(ctx.args.duration_secs),
        )
        .await?;
        println!(
            "  floor: GET /bench/floor ({answer_bytes} B, the size of a 202) {} req/s, p99 \
             {:.2} ms, {} errors",
            thousands(fixed.per_sec().round() as u64),
            fixed.ms(0.99),
            fixed.errors
        );
        let load = ingest::LoadSettings {
            name,
            roles,
            concurrency: ctx.args.concurrency,
            warmup: Duration::from_secs(ctx.args.warmup_secs),
            duration: Duration::from_secs(ctx.args.duration_secs),
            rate: (ctx.args.rate > 0).then_some(f64::from(ctx.args.rate)),
        };
        let run = ingest::run(api, &base, &Arc::new(tenants), &load, pid, probe).await?;
        println!("  {}", run.one_line());
        println!(
            "  accepted/s is {:.2} of /healthz's throughput and {:.2} of the fixed body's; p99 \
             to 202 is {:.1}× /healthz's",
            floor.fraction(run.per_sec()),
            fixed.fraction(run.per_sec()),
            run.ms(0.99) / floor.ms(0.99).max(1e-9)
        );
        if run.errors > 0 {
            eprintln!("  {} errors; samples: {:?}", run.errors, run.error_samples);
        }
        if run.accepted == 0 {
            bail!("no delivery was accepted");
        }
        let lag = if with_worker {
            println!(
                "  waiting for the inbox to drain (up to {} s), then reading the lag of {} \
                 sampled deliveries",
                ctx.args.drain_timeout_secs,
                thousands(ctx.args.lag_samples.min(run.acks.len()) as u64)
            );
            let lag = ingest::store_lag(
                &db.url,
                &run,
                ctx.args.lag_samples,
                Duration::from_secs(ctx.args.drain_timeout_secs),
            )
            .await?;
            let q = |x: f64| lag.lag.value_at_quantile(x) as f64 / 1000.0;
            println!(
                "  inbox lag by processed_at: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} \
                 ms; drained {}",
                lag.lag.len(),
                q(0.5),
                q(0.99),
                lag.lag.max() as f64 / 1000.0,
                match (lag.drained_in, lag.worker_rate) {
                    (Some(d), Some(rate)) => format!(
                        "{:.1} s after the load ({:.0} deliveries/s normalized over the run)",
                        d.as_secs_f64(),
                        rate
                    ),
                    _ => format!("NOT within the timeout ({} pending)", lag.pending),
                }
            );
            if !lag.other.is_empty() {
                eprintln!("  sampled events not processed: {:?}", lag.other);
            }
            if let Some(probe) = &run.probe {
                println!(
                    "  inbox lag by the probe: {} samples, p50 {:.1} ms, p99 {:.1} ms, {} not \
                     listed within 30 s",
                    probe.lag.len(),
                    probe.lag.value_at_quantile(0.5) as f64 / 1000.0,
                    probe.lag.value_at_quantile(0.99) as f64 / 1000.0,
                    probe.not_listed
                );
            }
            Some(lag)
        } else {
            None
        };
        Ok(IngestReport {
            run,
            lag,
            floor,
            fixed,
            fixed_bytes: answer_bytes,
        })
    })
    .await
}

/// Connects `--connections` tenants and enqueues one sync each, then runs every job on a
/// server with workers whose sandbox reads the harness's fake API.
async fn sync_scenario(ctx: &Ctx, db: &database::BenchDb) -> Result<sync::SyncOutcome> {
    let dir = ctx.root.join("sync");
    let api = &ctx.api;
    let setup = start_server(ctx, &dir.join("setup"), &db.url, "api", &[]).await?;
    let base = setup.base.clone();
    let queued = with_server(setup, async {
        let tenants = fresh_tenants(ctx.args.connections);
        let started = Instant::now();
        let connections = api
            .connect_all(&base, &tenants, ctx.args.setup_concurrency)
            .await?;
        println!(
            "connected {} tenants to the sandbox in {:.1} s",
            thousands(connections.len() as u64),
            started.elapsed().as_secs_f64()
        );
        let queued = sync::enqueue_all(
            api,
            &base,
            tenants.into_iter().zip(connections).collect(),
            ctx.args.setup_concurrency,
        )
        .await?;
        println!("enqueued {} sync jobs", thousands(queued.len() as u64));
        Ok(queued)
    })
    .await?;
    sync::prepare(&db.url, &queued).await?;

    let settings = FakeSettings {
        latency: Duration::from_millis(ctx.args.provider_latency_ms),
        page_size: ctx.args.page_size,
        pages: ctx.args.pages_per_connection,
    };
    let fake = FakeApi::start(settings).await?;
    println!(
        "fake sandbox API on {}: {} pages of {} events per connection, {} ms per request",
        fake.base,
        settings.pages,
        settings.page_size,
        settings.latency.as_millis()
    );
    let mut extra = vec![
        ("POBLYSH_SANDBOX_API_BASE_URL", fake.base.to_string()),
        (
            "POBLYSH_SYNC_CONCURRENCY",
            ctx.args.sync_concurrency.to_string(),
        ),
    ];
    // A job's pages are asked back to back: a burst as large as the job keeps the client-side
    // limiter from pacing them.
    let burst = SandboxConnector.descriptor().rate_limit.burst;
    if settings.pages > u64::from(burst) {
        extra.push((
            "POBLYSH_SANDBOX_RATE_LIMIT_BURST",
            settings.pages.to_string(),
        ));
    }
    let started = Instant::now();
    let srv = start_server(ctx, &dir.join("run"), &db.url, "api,worker", &extra).await?;
    let base = srv.base.clone();
    with_server(srv, async {
        let wall = sync::wait_finished(
            api,
            &base,
            queued.len(),
            started,
            Duration::from_secs(ctx.args.sync_timeout_secs),
        )
        .await?;
        let outcome = sync::collect(
            api,
            &base,
            &queued,
            wall,
            ctx.args.setup_concurrency,
            (settings, fake.stats()),
            ctx.args.sync_concurrency,
        )
        .await?;
        println!("  {}", outcome.one_line());
        if outcome.signals != outcome.expected_signals {
            eprintln!(
                "  {} signals listed, {} expected",
                outcome.signals, outcome.expected_signals
            );
        }
        Ok(outcome)
    })
    .await
}
