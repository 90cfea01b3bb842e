//! Benchmark harness for push delivery: sandbox webhooks are ingested at a paced rate by the
//! real release server (worker running), each becomes a signal, and the signal is pushed to
//! operator-wide endpoints served by an in-process consumer that verifies every signature.
//! It reports the delivery lag (signal committed → consumer received), the push throughput,
//! and whether anything was lost; with `kill`, the server is killed with SIGKILL mid-run and
//! started again on the same database. It reuses the ingest harness's senders
//! (`examples/bench_ingest/`) and server helpers (`examples/bench_signals/`).
//!
//! ```text
//! cargo build --release
//! cargo run --release --example bench_push -- --db sqlite --scenarios lag,fanout,kill
//! cargo run --release --example bench_push -- --db postgres --scenarios kill,ingest-cost
//! ```
//!
//! Scenarios, each on a fresh database and server:
//!
//! * `lag`: one endpoint, `--rate` deliveries/s for `--duration-secs`.
//! * `fanout`: `--endpoints` endpoints, `--fanout-rate` deliveries/s.
//! * `kill`: one endpoint, `--kill-rate` deliveries/s; SIGKILL halfway, then a new server on the
//!   same database and the rest of the load; every delivery acknowledged by either server must
//!   be pushed, and duplicates must keep their `webhook-id`.
//! * `ingest-cost`: deliveries back to back (worker running) without any endpoint, then with
//!   one: what pushing costs ingest (on PostgreSQL, the outbox's `pg_notify` and the
//!   dispatcher's work).

#[allow(dead_code)]
#[path = "bench_signals/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "bench_signals/server.rs"]
mod server;

#[allow(dead_code)]
#[path = "bench_ingest/api.rs"]
mod api;
#[allow(dead_code)]
#[path = "bench_ingest/ingest.rs"]
mod ingest;
#[allow(dead_code)]
#[path = "bench_ingest/machine.rs"]
mod machine;

#[path = "bench_push/check.rs"]
mod check;
#[path = "bench_push/consumer.rs"]
mod consumer;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use connectors::crypto::{random_token, CryptoKey};
use connectors::domain::TenantId;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::Api;
use crate::check::Outcome;
use crate::consumer::Consumer;
use crate::database::DbKind;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Lag,
    Fanout,
    Kill,
    IngestCost,
}

/// Benchmark of push delivery against the release server (run `cargo build --release` first).
#[derive(Debug, Parser)]
#[command(name = "bench_push")]
struct Args {
    #[arg(long, value_enum)]
    db: DbKind,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lag,fanout,kill"
    )]
    scenarios: Vec<Scenario>,
    /// Deliveries per second of `lag`.
    #[arg(long, default_value_t = 3_000)]
    rate: u32,
    /// Deliveries per second of `fanout`.
    #[arg(long, default_value_t = 300)]
    fanout_rate: u32,
    /// Endpoints of `fanout`.
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Deliveries per second of `kill`.
    #[arg(long, default_value_t = 1_000)]
    kill_rate: u32,
    /// Seconds of load per scenario (`kill`: in all, the kill halfway).
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Seconds of load per half of `ingest-cost`.
    #[arg(long, default_value_t = 15)]
    cost_secs: u64,
    /// Concurrent senders.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Bytes of each delivery's body.
    #[arg(long, default_value_t = 2 * 1024)]
    payload_bytes: usize,
    /// Tenants the deliveries are spread over, one sandbox connection each. Pushes of one
    /// connection go one at a time, in order, so this bounds how many are in flight per endpoint.
    #[arg(long, default_value_t = 256)]
    tenants: usize,
    /// Seconds to wait after the load for every push to arrive.
    #[arg(long, default_value_t = 120)]
    drain_timeout_secs: u64,
    #[arg(long, default_value = "postgres://127.0.0.1:5432/test")]
    postgres_url: String,
    /// `POBLYSH_DB_MAX_CONNECTIONS` of the server.
    #[arg(long, default_value_t = 8)]
    db_connections: u32,
    /// Server binary; default: `connectors` in target/release.
    #[arg(long)]
    server_bin: Option<PathBuf>,
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
    server::exit_code("bench_push", run(Args::parse()).await)
}

async fn run(args: Args) -> Result<()> {
    if args.concurrency == 0 || args.tenants == 0 || args.endpoints == 0 {
        bail!("--concurrency, --tenants and --endpoints must be at least 1");
    }
    let server_bin = server::locate(args.server_bin.as_deref())?;
    let workdir = tempfile::Builder::new()
        .prefix("bench_push_")
        .tempdir()
        .context("creating the work directory")?;
    let machine = machine::Machine::detect();
    println!(
        "bench_push: {}, load average {}; commit {}",
        machine.describe(),
        machine.load_before.as_deref().unwrap_or("n/a"),
        machine::git_commit().unwrap_or_default()
    );
    let token = random_token().expose().to_string();
    let secret = random_token().expose().to_string();
    let api = Arc::new(Api::new(
        &token,
        &secret,
        args.concurrency + 8,
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
    let mut lines = Vec::new();
    for scenario in ctx.args.scenarios.clone() {
        let name = format!("{scenario:?}").to_lowercase();
        let db =
            database::prepare(ctx.args.db, &ctx.args.postgres_url, &ctx.root.join(&name)).await?;
        println!("\nscenario {name} on {}", db.describe());
        let outcome = match scenario {
            Scenario::Lag => delivery(&ctx, &db, &name, ctx.args.rate, 1).await,
            Scenario::Fanout => {
                delivery(&ctx, &db, &name, ctx.args.fanout_rate, ctx.args.endpoints).await
            }
            Scenario::Kill => kill(&ctx, &db).await,
            Scenario::IngestCost => ingest_cost(&ctx).await,
        };
        let cleanup = db.cleanup().await;
        let line = outcome?;
        cleanup?;
        println!("  {line}");
        lines.push(format!("| {} | {name} | {line} |", ctx.args.db.as_str()));
    }
    println!(
        "\nload average after: {}",
        machine::load_average().unwrap_or_default()
    );
    println!("\n{}", lines.join("\n"));
    Ok(())
}

/// Starts the release server on `database_url` with the worker and push egress to
/// 127.0.0.1 allowed, in `dir`.
async fn start_server(ctx: &Ctx, dir: &Path, database_url: &str) -> Result<server::Server> {
    std::fs::create_dir_all(dir)?;
    let env = format!(
        "POBLYSH_ROLES=api,worker\nPOBLYSH_SANDBOX_ENABLED=true\n\
         POBLYSH_SANDBOX_WEBHOOK_SECRET={}\nPOBLYSH_PUSH_ALLOW_HTTP=true\n\
         POBLYSH_PUSH_ALLOWED_ADDRESSES=127.0.0.1\n",
        ctx.secret
    );
    std::fs::write(dir.join(".env.test"), env)?;
    let mut srv = server::start(&server::Spec {
        bin: &ctx.server_bin,
        workdir: dir,
        database_url,
        token: &ctx.token,
        crypto_key: &ctx.crypto_key,
        db_connections: ctx.args.db_connections,
    })?;
    match srv
        .wait_ready(ctx.api.client(), Duration::from_secs(30))
        .await
    {
        Ok(_) => Ok(srv),
        Err(err) => Err(anyhow!("{err:#}\n{}", srv.log_tail(30))),
    }
}

/// Registers `n` operator-wide endpoints posting to the consumer and hands it their secrets.
async fn endpoints(ctx: &Ctx, base: &reqwest::Url, consumer: &Consumer, n: usize) -> Result<()> {
    for i in 0..n {
        let response = ctx
            .api
            .client()
            .post(base.join("endpoints")?)
            .bearer_auth(&ctx.token)
            .json(&json!({ "url": consumer.url(i), "event_types": ["signal.created"] }))
            .send()
            .await?;
        let status = response.status();
        let created: Value = response.json().await?;
        if status != StatusCode::CREATED {
            bail!("POST /endpoints answered {status}: {created}");
        }
        let secret = created["secret"]
            .as_str()
            .ok_or_else(|| anyhow!("no secret in {created}"))?;
        consumer.expect(i, secret)?;
    }
    Ok(())
}

fn tenants_of(n: usize) -> Vec<TenantId> {
    (0..n).map(|_| TenantId(Uuid::new_v4())).collect()
}

fn load(name: &'static str, ctx: &Ctx, rate: u32, secs: u64) -> ingest::LoadSettings {
    ingest::LoadSettings {
        name,
        roles: "api,worker",
        concurrency: ctx.args.concurrency,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(secs),
        rate: (rate > 0).then_some(f64::from(rate)),
    }
}

/// `lag` and `fanout`: paced load, then the check.
async fn delivery(
    ctx: &Ctx,
    db: &database::BenchDb,
    name: &str,
    rate: u32,
    n: usize,
) -> Result<String> {
    let consumer = Consumer::start().await?;
    let srv = start_server(ctx, &ctx.root.join(name).join("server"), &db.url).await?;
    let base = srv.base.clone();
    let tenants = tenants_of(ctx.args.tenants);
    ctx.api.connect_all(&base, &tenants, 16).await?;
    endpoints(ctx, &base, &consumer, n).await?;
    let settings = load("push", ctx, rate, ctx.args.duration_secs);
    let run = ingest::run(
        &ctx.api,
        &base,
        &Arc::new(tenants.clone()),
        &settings,
        srv.pid,
        None,
    )
    .await?;
    println!("  ingest: {}", run.one_line());
    let outcome = check::check(
        &db.url,
        &tenants,
        &run.acks,
        &consumer,
        n,
        Duration::from_secs(ctx.args.drain_timeout_secs),
    )
    .await?;
    let _ = srv.stop().await;
    Ok(summary(&run, &outcome, rate, n))
}

fn summary(run: &ingest::IngestRun, outcome: &Outcome, rate: u32, n: usize) -> String {
    format!(
        "{rate}/s paced, {n} endpoint(s) | {:.0} accepted/s, {} errors, {} started late | {} | {}",
        run.per_sec(),
        run.errors,
        run.late,
        outcome.one_line(),
        if outcome.lossless() {
            "nothing lost"
        } else {
            "NOT ALL DELIVERED by the end of the wait"
        }
    )
}

/// `kill`: the load over two servers on one database, the first killed with SIGKILL halfway.
async fn kill(ctx: &Ctx, db: &database::BenchDb) -> Result<String> {
    let consumer = Consumer::start().await?;
    let rate = ctx.args.kill_rate;
    let half = (ctx.args.duration_secs / 2).max(1);
    let tenants = tenants_of(ctx.args.tenants);
    let first = start_server(ctx, &ctx.root.join("kill").join("first"), &db.url).await?;
    let base = first.base.clone();
    ctx.api.connect_all(&base, &tenants, 16).await?;
    endpoints(ctx, &base, &consumer, 1).await?;
    let shared = Arc::new(tenants.clone());
    // The senders run a little past the kill, so it lands while deliveries are arriving.
    let settings = load("push-before-kill", ctx, rate, half + 2);
    let sending = {
        let (api, base, shared) = (ctx.api.clone(), base.clone(), shared.clone());
        let pid = first.pid;
        tokio::spawn(async move { ingest::run(&api, &base, &shared, &settings, pid, None).await })
    };
    tokio::time::sleep(Duration::from_secs(half)).await;
    let pushed_before = consumer.count();
    std::process::Command::new("kill")
        .args(["-KILL", &first.pid.to_string()])
        .status()
        .context("kill -9")?;
    let killed_at = Instant::now();
    drop(first);
    let before = sending.await.context("the senders panicked")??;
    let second = start_server(ctx, &ctx.root.join("kill").join("second"), &db.url).await?;
    println!(
        "  killed after {} pushes received; restarted in {} ms",
        pushed_before,
        killed_at.elapsed().as_millis()
    );
    // Fresh tenants after the restart: the senders number their deliveries from zero again,
    // and a repeated id on the same connection would be taken as the provider's retry.
    let later = tenants_of(ctx.args.tenants);
    ctx.api.connect_all(&second.base, &later, 16).await?;
    let settings = load("push-after-kill", ctx, rate, ctx.args.duration_secs - half);
    let after = ingest::run(
        &ctx.api,
        &second.base,
        &Arc::new(later.clone()),
        &settings,
        second.pid,
        None,
    )
    .await?;
    let tenants: Vec<TenantId> = tenants.into_iter().chain(later).collect();
    let mut acks = before.acks.clone();
    acks.extend(after.acks.iter().copied());
    let outcome = check::check(
        &db.url,
        &tenants,
        &acks,
        &consumer,
        1,
        Duration::from_secs(ctx.args.drain_timeout_secs),
    )
    .await?;
    let _ = second.stop().await;
    Ok(format!(
        "{rate}/s paced, SIGKILL at {half} s | {} + {} acknowledged, {} + {} refused around the \
         kill | {} | {}",
        before.accepted,
        after.accepted,
        before.errors,
        after.errors,
        outcome.one_line(),
        if outcome.lossless() {
            "nothing lost"
        } else {
            "NOT ALL DELIVERED by the end of the wait"
        }
    ))
}

/// `ingest-cost`: unpaced ingest with the worker, without an endpoint and then with one.
async fn ingest_cost(ctx: &Ctx) -> Result<String> {
    let mut rates = Vec::new();
    for n in [0usize, 1] {
        let dir = ctx.root.join(format!("cost_{n}"));
        let db = database::prepare(ctx.args.db, &ctx.args.postgres_url, &dir).await?;
        let result = async {
            let consumer = Consumer::start().await?;
            let srv = start_server(ctx, &dir.join("server"), &db.url).await?;
            let tenants = tenants_of(ctx.args.tenants);
            ctx.api.connect_all(&srv.base, &tenants, 16).await?;
            endpoints(ctx, &srv.base, &consumer, n).await?;
            let settings = load("cost", ctx, 0, ctx.args.cost_secs);
            let run = ingest::run(
                &ctx.api,
                &srv.base,
                &Arc::new(tenants),
                &settings,
                srv.pid,
                None,
            )
            .await?;
            println!("  {n} endpoint(s): {}", run.one_line());
            let _ = srv.stop().await;
            Ok::<_, anyhow::Error>((run.per_sec(), run.ms(0.99), consumer.count()))
        }
        .await;
        db.cleanup().await?;
        rates.push(result?);
    }
    Ok(format!(
        "unpaced, {} s each | no endpoint: {:.0} accepted/s (p99 {:.1} ms) | one endpoint: {:.0} \
         accepted/s (p99 {:.1} ms), {} pushed during the load | {:+.1} %",
        ctx.args.cost_secs,
        rates[0].0,
        rates[0].1,
        rates[1].0,
        rates[1].1,
        rates[1].2,
        (rates[1].0 / rates[0].0.max(1e-9) - 1.0) * 100.0
    ))
}
