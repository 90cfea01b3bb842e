//! Benchmark of Google Drive sync over many connections: the release server in its own
//! process (with the helpers of `examples/bench_signals/`), a fake Google served by the harness
//! (`bench_google_drive/fake_google.rs`) answering every request after a fixed latency, and
//! signals per second from the first sync job's start to the last one's end. Markdown for
//! `docs/benchmarks.md` is printed at the end.
//!
//! This is a harness to run by hand, not a test. Build the server first, then run:
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_google_drive -- --db sqlite
//! cargo run --release --example bench_google_drive -- --db postgres --postgres-url postgres://127.0.0.1:5432/test
//! ```
//!
//! 1. A server with `POBLYSH_ROLES=api,worker` and every Google Drive URL on the fake:
//!    `--connections` tenants connect through the OAuth journey (authorize URL, callback, code
//!    exchange, userinfo, and the start page token taken at connect), then each opens its
//!    `changes.watch` channel. That server is stopped.
//! 2. A server with `POBLYSH_ROLES=api` queues one `POST /connections/{id}/sync` per
//!    connection and is stopped; the harness moves every connection's next scheduled sync a
//!    day ahead through the store, so only those jobs run.
//! 3. A server with `POBLYSH_ROLES=api,worker` (`--sync-concurrency` jobs at a time) runs them:
//!    each reads `--pages` pages of `--page-size` changes from `changes.list`, every request
//!    answered after `--provider-latency-ms`. The harness polls `sync_jobs_total` until every
//!    job has ended and counts the signals stored.

// Shared with bench_signals; not every helper is used here.
#[allow(dead_code)]
#[path = "bench_signals/database.rs"]
mod database;
#[path = "bench_google_drive/fake_google.rs"]
mod fake_google;
#[path = "bench_ingest/queue.rs"]
mod queue;
// Shared with bench_signals; not every helper is used here.
#[allow(dead_code)]
#[path = "bench_signals/server.rs"]
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use connectors::crypto::{random_token, CryptoKey};
use connectors::domain::TenantId;
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::{Client, Method, StatusCode, Url};
use serde_json::Value;
use uuid::Uuid;

use crate::database::DbKind;
use crate::server::ok_json;

/// Google Drive sync over many connections against a fake Google.
#[derive(Debug, Parser)]
#[command(name = "bench_google_drive")]
struct Args {
    #[arg(long, value_enum)]
    db: DbKind,
    #[arg(long, default_value = "postgres://127.0.0.1:5432/test")]
    postgres_url: String,
    /// Connections, one tenant each.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// `changes.list` pages per connection in the measured sync.
    #[arg(long, default_value_t = 5)]
    pages: u64,
    /// Changes per page.
    #[arg(long, default_value_t = 100)]
    page_size: u64,
    /// Latency of every fake Google answer, ms.
    #[arg(long, default_value_t = 20)]
    provider_latency_ms: u64,
    /// `POBLYSH_SYNC_CONCURRENCY` of the measuring server.
    #[arg(long, default_value_t = 8)]
    sync_concurrency: usize,
    /// Requests in flight while setting up.
    #[arg(long, default_value_t = 16)]
    setup_concurrency: usize,
    #[arg(long, default_value_t = 8)]
    db_connections: u32,
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

struct Ctx {
    args: Args,
    bin: PathBuf,
    token: String,
    crypto_key: String,
    client: Client,
    fake: fake_google::FakeGoogle,
    root: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let bin = server::locate(args.server_bin.as_deref())?;
    let root = std::env::temp_dir().join(format!("bench_google_drive_{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&root)?;
    let fake = fake_google::FakeGoogle::start(fake_google::Settings {
        latency: Duration::from_millis(args.provider_latency_ms),
        pages: args.pages,
        page_size: args.page_size,
    })
    .await?;
    let client = Client::builder()
        .pool_max_idle_per_host(64)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()?;
    let ctx = Ctx {
        token: random_token().expose().to_string(),
        crypto_key: CryptoKey::generate().to_base64().to_string(),
        bin,
        client,
        fake,
        root,
        args,
    };
    let db = database::prepare(ctx.args.db, &ctx.args.postgres_url, &ctx.root).await?;
    println!(
        "database {}; fake Google on {}",
        db.describe(),
        ctx.fake.base
    );
    let outcome = measure(&ctx, &db.url).await;
    let cleaned = db.cleanup().await;
    let _ = std::fs::remove_dir_all(&ctx.root);
    let report = outcome?;
    cleaned?;
    println!("\n{report}");
    Ok(())
}

async fn measure(ctx: &Ctx, database_url: &str) -> Result<String> {
    let n = ctx.args.connections;
    // 1. Connect (each takes its start page token); the subscription jobs go back to the
    // queue with every connection's scheduled sync a day ahead, then run (channels).
    let srv = start(ctx, "connect", database_url, "api", 8).await?;
    let base = srv.base.clone();
    let started = Instant::now();
    let connections = guarded(srv, async {
        let tenants: Vec<TenantId> = (0..n).map(|_| TenantId(Uuid::new_v4())).collect();
        let connections: Vec<(TenantId, String)> = stream::iter(tenants)
            .map(|t| {
                let base = base.clone();
                async move { connect(ctx, &base, t).await.map(|c| (t, c)) }
            })
            .buffered(ctx.args.setup_concurrency)
            .try_collect()
            .await?;
        println!(
            "connected {n} tenants in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(connections)
    })
    .await?;
    let queued = queue::requeue_due_now(database_url).await?;
    if queued != 0 {
        bail!("{queued} sync jobs queued before the measurement, expected none");
    }
    let srv = start(ctx, "channels", database_url, "api,worker", 8).await?;
    guarded(srv, async {
        let started = Instant::now();
        wait_watches(ctx, n, started).await?;
        println!(
            "channels opened in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
    .await?;
    let early = ctx.fake.stats().pages;
    if early != 0 {
        bail!("{early} pages were read before the measurement");
    }
    let watches = ctx.fake.watches();
    if watches < n as u64 {
        bail!("only {watches} of {n} channels were opened");
    }
    // 2. Queue the measured syncs.
    let srv = start(ctx, "queue", database_url, "api", 8).await?;
    let base = srv.base.clone();
    guarded(srv, enqueue(ctx, &base, &connections)).await?;
    let queued = queue::requeue_due_now(database_url).await?;
    if queued != n {
        bail!("{queued} sync jobs queued, expected {n}");
    }
    // 3. Run them.
    ctx.fake.reset();
    let srv = start(
        ctx,
        "measure",
        database_url,
        "api,worker",
        ctx.args.sync_concurrency,
    )
    .await?;
    let base = srv.base.clone();
    let (took, signals) = guarded(srv, async {
        let started = Instant::now();
        let took = wait_jobs(ctx, &base, n, started).await?;
        let counts: Vec<u64> = stream::iter(&connections)
            .map(|(t, id)| count_signals(ctx, &base, *t, id))
            .buffer_unordered(ctx.args.setup_concurrency)
            .try_collect()
            .await?;
        Ok((took, counts.iter().sum::<u64>()))
    })
    .await?;
    let expected = n as u64 * ctx.args.pages * ctx.args.page_size;
    let stats = ctx.fake.stats();
    let secs = took.as_secs_f64();
    let rate = expected as f64 / secs;
    Ok(format!(
        "#### Google Drive sync over {n} connections, fake Google: {} pages of {} changes, {} ms each ({})\n\n\
         | Backend | jobs | pages read | signals expected | signals counted | window | signals/s | jobs/s |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n\
         | {} | {n} | {} | {expected} | {} | {secs:.1} s | {rate:.0} | {:.1} |\n\n\
         `POBLYSH_SYNC_CONCURRENCY={}`, release build at {}, {}.",
        ctx.args.pages,
        ctx.args.page_size,
        ctx.args.provider_latency_ms,
        ctx.args.db.as_str(),
        ctx.args.db.as_str(),
        stats.pages,
        signals,
        n as f64 / secs,
        ctx.args.sync_concurrency,
        git_commit().unwrap_or_else(|| "unknown".into()),
        load_average(),
    ))
}

/// The Drive connect journey for tenant `t`: the connection id.
async fn connect(ctx: &Ctx, base: &Url, t: TenantId) -> Result<String> {
    let response = ctx
        .client
        .request(Method::POST, base.join("connect/google_drive")?)
        .bearer_auth(&ctx.token)
        .header("x-tenant-id", t.to_string())
        .send()
        .await?;
    let started: Value = ok_json(response, StatusCode::OK, "POST /connect").await?;
    let authorize = Url::parse(started["authorize_url"].as_str().context("authorize_url")?)?;
    let state = authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .context("state")?;
    let mut callback = base.join("connect/google_drive/callback")?;
    callback
        .query_pairs_mut()
        .append_pair("code", "4/bench-code")
        .append_pair("state", &state);
    let response = ctx.client.get(callback).send().await?;
    let body: Value = ok_json(response, StatusCode::OK, "the callback").await?;
    body["connection"]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no connection id in {body}"))
}

async fn enqueue(ctx: &Ctx, base: &Url, connections: &[(TenantId, String)]) -> Result<()> {
    stream::iter(connections)
        .map(|(t, id)| async move {
            let response = ctx
                .client
                .request(Method::POST, base.join(&format!("connections/{id}/sync"))?)
                .bearer_auth(&ctx.token)
                .header("x-tenant-id", t.to_string())
                .send()
                .await?;
            ok_json(
                response,
                StatusCode::ACCEPTED,
                "POST /connections/{id}/sync",
            )
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .buffer_unordered(ctx.args.setup_concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Waits until the fake has opened `n` channels.
async fn wait_watches(ctx: &Ctx, n: usize, started: Instant) -> Result<()> {
    let timeout = Duration::from_secs(ctx.args.timeout_secs);
    while ctx.fake.watches() < n as u64 {
        if started.elapsed() > timeout {
            bail!(
                "after {} s only {} of {n} channels were opened",
                timeout.as_secs(),
                ctx.fake.watches()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits until `jobs` Google Drive sync jobs have ended on this server.
async fn wait_jobs(ctx: &Ctx, base: &Url, jobs: usize, started: Instant) -> Result<Duration> {
    let timeout = Duration::from_secs(ctx.args.timeout_secs);
    loop {
        let text = ctx
            .client
            .get(base.join("metrics")?)
            .send()
            .await?
            .text()
            .await?;
        let ended: u64 = text
            .lines()
            .filter(|l| {
                l.starts_with("sync_jobs_total{")
                    && l.contains("provider=\"google_drive\"")
                    && l.contains("job_type=\"incremental\"")
                    && (l.contains("outcome=\"succeeded\"") || l.contains("outcome=\"failed\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum();
        if ended as usize >= jobs {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!(
                "after {} s only {ended} of {jobs} jobs ended",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The signals listed for a connection, page by page.
async fn count_signals(ctx: &Ctx, base: &Url, t: TenantId, id: &str) -> Result<u64> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = base.join("signals")?;
        url.query_pairs_mut()
            .append_pair("limit", "100")
            .append_pair("connection_id", id);
        if let Some(c) = &cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let response = ctx
            .client
            .get(url)
            .bearer_auth(&ctx.token)
            .header("x-tenant-id", t.to_string())
            .send()
            .await?;
        let page = ok_json(response, StatusCode::OK, "GET /signals").await?;
        count += page["signals"].as_array().map_or(0, Vec::len) as u64;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(count),
        }
    }
}

async fn start(
    ctx: &Ctx,
    name: &str,
    database_url: &str,
    roles: &str,
    sync_concurrency: usize,
) -> Result<server::Server> {
    let dir = ctx.root.join(name);
    std::fs::create_dir_all(&dir)?;
    let fake = ctx.fake.base.as_str().trim_end_matches('/');
    let env = format!(
        "POBLYSH_ROLES={roles}\nPOBLYSH_SYNC_CONCURRENCY={sync_concurrency}\n\
         POBLYSH_PUBLIC_BASE_URL=https://connectors.example.com\n\
         POBLYSH_GOOGLE_DRIVE_CLIENT_ID=bench-client\nPOBLYSH_GOOGLE_DRIVE_CLIENT_SECRET=bench-secret\n\
         POBLYSH_GOOGLE_DRIVE_WEBHOOK_SECRET=bench-webhook-secret-0123456789\n\
         POBLYSH_GOOGLE_DRIVE_AUTH_BASE_URL={fake}\nPOBLYSH_GOOGLE_DRIVE_API_BASE_URL={fake}\n"
    );
    std::fs::write(dir.join(".env.test"), env)?;
    let mut srv = server::start(&server::Spec {
        bin: &ctx.bin,
        workdir: &dir,
        database_url,
        token: &ctx.token,
        crypto_key: &ctx.crypto_key,
        db_connections: ctx.args.db_connections,
    })?;
    match srv.wait_ready(&ctx.client, Duration::from_secs(30)).await {
        Ok(_) => Ok(srv),
        Err(err) => Err(anyhow!("{err:#}\n{}", srv.log_tail(30))),
    }
}

/// Runs `work` and stops the server, with its log's tail on failure.
async fn guarded<T>(
    srv: server::Server,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let result = work.await;
    let tail = srv.log_tail(30);
    let _ = srv.stop().await;
    result.map_err(|err| anyhow!("{err:#}\nlast lines of the server log:\n{tail}"))
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            format!(
                "load average {}",
                l.split(' ').take(3).collect::<Vec<_>>().join(" ")
            )
        })
        .unwrap_or_default()
}
