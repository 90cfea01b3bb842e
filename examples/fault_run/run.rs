//! The run from start to end: database, fake provider, instances, setup, load with the kill,
//! drain, checks, report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use connectors::crypto::{random_token, CryptoKey};
use connectors::domain::TenantId;
use reqwest::Url;
use sqlx::PgPool;
use uuid::Uuid;

use crate::api::Api;
use crate::checks;
use crate::database::{self, DbKind};
use crate::fake::{FakeApi, FakeSettings};
use crate::fleet::{self, FleetSpec, Instance};
use crate::load::{Load, Recorded, Targets};
use crate::report::{self, thousands, Check};
use crate::{server, verdict, Args};

/// `POBLYSH_PROVIDER_TIMEOUT_SECS` of the instances; their lease is three of it, at least 60 s.
pub const PROVIDER_TIMEOUT_SECS: u64 = 20;
/// How long after a lease expires a claim may come: idle workers look again every second
/// (`POBLYSH_WORKER_POLL_INTERVAL_MS`), later on a machine this loaded.
pub const CLAIM_SLACK: Duration = Duration::from_secs(10);

/// An instant on both clocks: the harness's monotonic one and the database's wall clock.
#[derive(Clone, Copy)]
pub struct Mark {
    pub at: Instant,
    pub utc: DateTime<Utc>,
}

fn mark() -> Mark {
    Mark {
        at: Instant::now(),
        utc: Utc::now(),
    }
}

/// When the load started, the instance was killed and back, and the load ended.
pub struct Timeline {
    pub start: Mark,
    pub kill: Mark,
    pub back: Mark,
    pub end: Mark,
}

/// What the kill left behind.
pub struct Kill {
    pub pid: u32,
    pub held: Vec<Uuid>,
}

pub async fn run(args: Args) -> Result<bool> {
    validate(&args)?;
    let bin = server::locate(args.server_bin.as_deref())?;
    // The instances run in directories of their own.
    let bin = std::fs::canonicalize(&bin).with_context(|| format!("{}", bin.display()))?;
    let workdir = workdir(&args)?;
    println!("fault_run: server {}", bin.display());
    println!("work directory: {}", workdir.path().display());
    let db = database::prepare(DbKind::Postgres, &args.postgres_url, workdir.path()).await?;
    println!("database: {}", db.describe());
    let outcome = run_on(&args, bin, workdir.path(), &db.url).await;
    let cleanup = db.cleanup().await;
    if args.keep {
        let kept = workdir.keep();
        println!("kept the work directory {}", kept.display());
    }
    let passed = outcome?;
    cleanup?;
    Ok(passed)
}

fn validate(args: &Args) -> Result<()> {
    if args.duration_secs < 6 || args.rate == 0 || args.tenants == 0 || args.connections == 0 {
        bail!("--duration-secs must be at least 6; --rate, --tenants, --connections at least 1");
    }
    if args.restart_after_secs * 3 >= args.duration_secs * 2 {
        bail!("--restart-after-secs must leave time after the restart (under 2/3 of the run)");
    }
    if !(0.0..=1.0).contains(&args.fault_rate) {
        bail!("--fault-rate must be between 0 and 1");
    }
    Ok(())
}

fn workdir(args: &Args) -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("fault_run_");
    match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            builder.tempdir_in(dir)
        }
        None => builder.tempdir(),
    }
    .context("creating the work directory")
}

async fn run_on(
    args: &Args,
    bin: std::path::PathBuf,
    root: &std::path::Path,
    url: &str,
) -> Result<bool> {
    let fake = FakeApi::start(FakeSettings {
        latency: Duration::from_millis(args.provider_latency_ms),
        fault_rate: args.fault_rate,
        initial_events: 20,
        events_per_sec: args.provider_events_per_sec,
    })
    .await?;
    let token = random_token().expose().to_string();
    let secret = random_token().expose().to_string();
    let api = Arc::new(Api::new(&token, &secret, 300, 1024)?);
    let spec = FleetSpec {
        bin,
        root: root.to_path_buf(),
        database_url: url.to_string(),
        token,
        crypto_key: CryptoKey::generate().to_base64().to_string(),
        env: instance_env(args, &secret, &fake.base),
        db_connections: args.db_connections,
        ready_timeout: Duration::from_secs(args.ready_timeout_secs),
    };
    let mut fleet = vec![
        Instance::new("api-worker-1", "api,worker"),
        Instance::new("api-worker-2", "api,worker"),
        Instance::new("worker", "worker"),
    ];
    let outcome = drive(args, &spec, &mut fleet, &api, &fake).await;
    for instance in &mut fleet {
        if let Err(err) = instance.stop().await {
            eprintln!("warning: stopping {}: {err:#}", instance.name);
        }
    }
    outcome
}

fn instance_env(args: &Args, secret: &str, fake: &Url) -> Vec<(String, String)> {
    [
        ("POBLYSH_SANDBOX_ENABLED", "true".to_string()),
        ("POBLYSH_SANDBOX_WEBHOOK_SECRET", secret.to_string()),
        ("POBLYSH_SANDBOX_API_BASE_URL", fake.to_string()),
        (
            "POBLYSH_SANDBOX_SYNC_INTERVAL_SECS",
            args.sync_interval_secs.to_string(),
        ),
        (
            "POBLYSH_SYNC_CONCURRENCY",
            args.sync_concurrency.to_string(),
        ),
        (
            "POBLYSH_PROVIDER_TIMEOUT_SECS",
            PROVIDER_TIMEOUT_SECS.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn drive(
    args: &Args,
    spec: &FleetSpec,
    fleet: &mut [Instance],
    api: &Arc<Api>,
    fake: &FakeApi,
) -> Result<bool> {
    let ready = fleet::start_all(fleet, spec, api.client()).await?;
    let pool = checks::pool(&spec.database_url).await?;
    let migrations = checks::migrations(&pool).await?;
    let bases = fleet::api_bases(fleet);
    let (load_tenants, sync_tenants) = setup(args, api, &bases).await?;
    let targets: Targets = Arc::new(RwLock::new(bases));
    let load = Load {
        api: api.clone(),
        targets: targets.clone(),
        tenants: Arc::new(load_tenants),
        rate: args.rate,
        readers: args.readers,
        stop: Arc::new(AtomicBool::new(false)),
        recorded: Arc::new(Mutex::new(Recorded::default())),
    };
    let (_, faulted) = tokio::join!(load.run(), faults(args, spec, fleet, &pool, &load));
    let (timeline, kill) = faulted?;
    let recorded = std::mem::take(&mut *load.recorded.lock().map_err(|_| anyhow!("poisoned"))?);
    println!(
        "load over: {} deliveries accepted, {} rerouted, {} reads; {} sync tenants",
        thousands(recorded.acks.len() as u64),
        recorded.rerouted,
        thousands(recorded.reads.len() as u64),
        thousands(sync_tenants as u64)
    );
    let mut checks = vec![start_check(&ready, &migrations)];
    checks.extend(verdict::drain_checks(args, &pool, &recorded, &kill, &timeline).await?);
    checks.push(verdict::overlap_check(fake));
    let phases = verdict::phase_lines(&pool, &recorded, &timeline).await?;
    let summary = verdict::summary(args, checks, phases, &recorded, &timeline);
    println!("\n{}", report::markdown(&summary));
    Ok(summary.checks.iter().all(|c| c.passed))
}

/// Connects the ingest tenants and the sync connections (one tenant each), journeys spread
/// over the API instances; returns the ingest tenants and how many sync tenants there are.
async fn setup(args: &Args, api: &Api, bases: &[Url]) -> Result<(Vec<TenantId>, usize)> {
    let started = Instant::now();
    let tenants: Vec<TenantId> = (0..args.tenants + args.connections)
        .map(|_| TenantId(Uuid::new_v4()))
        .collect();
    let per_base = tenants.len().div_ceil(bases.len().max(1));
    let journeys = tenants
        .chunks(per_base)
        .zip(bases)
        .map(|(chunk, base)| api.connect_all(base, chunk, args.setup_concurrency / 2 + 1));
    futures::future::try_join_all(journeys).await?;
    println!(
        "connected {} tenants to the sandbox in {:.1} s",
        thousands(tenants.len() as u64),
        started.elapsed().as_secs_f64()
    );
    Ok((tenants[..args.tenants].to_vec(), args.connections))
}

/// While the load runs: waits a third of it, kills the first instance, starts it again after
/// `--restart-after-secs`, waits for the end of the load and stops it.
async fn faults(
    args: &Args,
    spec: &FleetSpec,
    fleet: &mut [Instance],
    pool: &PgPool,
    load: &Load,
) -> Result<(Timeline, Kill)> {
    let outcome = faults_inner(args, spec, fleet, pool, load).await;
    load.stop.store(true, Ordering::Relaxed);
    outcome
}

async fn faults_inner(
    args: &Args,
    spec: &FleetSpec,
    fleet: &mut [Instance],
    pool: &PgPool,
    load: &Load,
) -> Result<(Timeline, Kill)> {
    let start = mark();
    let duration = Duration::from_secs(args.duration_secs);
    tokio::time::sleep(duration / 3).await;
    let victim = &mut fleet[0];
    let pid = victim
        .pid()
        .ok_or_else(|| anyhow!("{} is not running", victim.name))?;
    // A kill while the instance holds jobs, so that there is something to take over. Every
    // connection is scheduled again within its interval plus one scheduler tick (15 s at the
    // most), so a round of syncs starts within that wait.
    let wait_until = Instant::now() + Duration::from_secs(args.sync_interval_secs + 15);
    while checks::held_by(pool, pid).await?.is_empty() && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = mark();
    let pid = victim.kill9()?;
    // The process is gone: its jobs' rows cannot change any more, except by a takeover.
    let held = checks::held_by(pool, pid).await?;
    println!(
        "kill -9 {} (pid {pid}) at {:.1} s; it held {} sync jobs",
        victim.name,
        (kill.at - start.at).as_secs_f64(),
        held.len()
    );
    tokio::time::sleep(Duration::from_secs(args.restart_after_secs)).await;
    victim.spawn(spec)?;
    let took = victim
        .wait_ready(load.api.client(), spec.ready_timeout)
        .await?;
    let back = mark();
    if let (Some(base), Ok(mut targets)) = (victim.base(), load.targets.write()) {
        targets[0] = base;
    }
    println!(
        "started {} again (pid {}): ready in {} ms, at {:.1} s",
        victim.name,
        victim.pid().unwrap_or_default(),
        took.as_millis(),
        (back.at - start.at).as_secs_f64()
    );
    tokio::time::sleep_until((start.at + duration).into()).await;
    let end = mark();
    let timeline = Timeline {
        start,
        kill,
        back,
        end,
    };
    Ok((timeline, Kill { pid, held }))
}

fn start_check(ready: &[Duration], migrations: &checks::Migrations) -> Check {
    let versions: Vec<String> = migrations
        .rows
        .iter()
        .map(|(v, ok)| format!("{v}{}", if *ok { "" } else { " (failed)" }))
        .collect();
    let slowest = ready.iter().max().copied().unwrap_or_default();
    Check {
        name: "three instances started at once on the empty database",
        passed: ready.len() == 3 && migrations.ok(),
        detail: format!(
            "{} ready, the slowest in {} ms; `_sqlx_migrations` holds versions {} \
             (expected {:?})",
            ready.len(),
            slowest.as_millis(),
            versions.join(", "),
            migrations.expected
        ),
    }
}
