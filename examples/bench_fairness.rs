//! Benchmark of fairness between tenants: how long a tenant with one piece of work waits while
//! another tenant's backlog drains, at the job queue and at the webhook inbox.
//!
//! This is a harness to run by hand, not a test. It drives the store itself (the library's
//! `Store` on a fresh SQLite file or PostgreSQL database), so the claims, leases and commits
//! measured are the real ones; the provider's part of a job is a fixed sleep. Run it once on
//! the build to measure and once on an earlier build for comparison (the harness uses only
//! store methods both have):
//!
//! ```text
//! cargo run --release --example bench_fairness -- --db sqlite
//! cargo run --release --example bench_fairness -- --db postgres --postgres-url postgres://127.0.0.1:5432/test
//! ```
//!
//! * `jobs`: a big tenant's `--big-connections` connections each have a sync job queued, all
//!   older than the one job of a small tenant; `--workers` workers claim jobs, hold each for
//!   `--pages` × `--page-ms` (the provider's latency), commit one page of signals and finish.
//! * `inbox`: a big tenant has `--big-events` pending deliveries, all older than the small
//!   tenant's one; one worker claims batches of 128 (the inbox worker's batch) and completes
//!   each as processed with one signal per event.
//!
//! Each reports the small tenant's time to its first signal and the time the big backlog took
//! to drain, from the moment the workers start.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use connectors::domain::{
    now, Connection, ConnectionId, ConnectionStatus, EventStatus, JobType, NewConnection, NewJob,
    NewSignal, NewWebhookEvent, SignalId, TenantId, Timestamp,
};
use connectors::store::{
    EventCompletion, IfRunning, JobFinish, Lease, Store, StoreOptions, SyncCommit,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Parser)]
#[command(name = "bench_fairness")]
struct Args {
    #[arg(long, value_enum)]
    db: DbKind,
    /// Server to create the throw-away PostgreSQL database on (`--db postgres`).
    #[arg(long, default_value = "postgres://127.0.0.1:5432/test")]
    postgres_url: String,
    /// Connections of the big tenant, one queued sync job each.
    #[arg(long, default_value_t = 5_000)]
    big_connections: usize,
    /// Pending deliveries of the big tenant.
    #[arg(long, default_value_t = 50_000)]
    big_events: usize,
    /// Sync workers (the service's default `POBLYSH_SYNC_CONCURRENCY`).
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Pages per job, each held for `--page-ms`.
    #[arg(long, default_value_t = 5)]
    pages: u32,
    #[arg(long, default_value_t = 20)]
    page_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench_fairness: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a work directory")?;
    println!("| queue | backlog | small tenant's first signal | backlog drained |");
    println!("|---|---|---|---|");
    let (store, drop_db) = fresh_store(&args, dir.path(), "jobs").await?;
    let (small, all) = jobs(&args, &store).await?;
    println!(
        "| jobs | {} connections × {} pages × {} ms, {} workers | {:.2} s | {:.2} s |",
        args.big_connections,
        args.pages,
        args.page_ms,
        args.workers,
        small.as_secs_f64(),
        all.as_secs_f64()
    );
    drop(store);
    drop_db.await?;
    let (store, drop_db) = fresh_store(&args, dir.path(), "inbox").await?;
    let (small, all) = inbox(&args, &store).await?;
    println!(
        "| inbox | {} deliveries, batches of 128 | {:.3} s | {:.2} s |",
        args.big_events,
        small.as_secs_f64(),
        all.as_secs_f64()
    );
    drop(store);
    drop_db.await?;
    Ok(())
}

/// A migrated store on a fresh database, and what removes the database afterwards.
async fn fresh_store(
    args: &Args,
    dir: &std::path::Path,
    name: &str,
) -> Result<(
    Arc<dyn Store>,
    impl std::future::Future<Output = Result<()>>,
)> {
    let options = StoreOptions {
        max_connections: 16,
    };
    let (url, admin) = match args.db {
        DbKind::Sqlite => (format!("sqlite://{}/{name}.db", dir.display()), None),
        DbKind::Postgres => {
            let db = format!("bench_fairness_{name}_{}", std::process::id());
            let admin = sqlx::PgPool::connect(&args.postgres_url).await?;
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&admin)
                .await?;
            let mut url = reqwest::Url::parse(&args.postgres_url)?;
            url.set_path(&db);
            (url.to_string(), Some((admin, db)))
        }
    };
    let store = connectors::store::connect(&url, &options).await?;
    store.migrate().await?;
    let cleanup = async move {
        if let Some((admin, db)) = admin {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&admin)
                .await?;
        }
        Ok(())
    };
    Ok((store, cleanup))
}

async fn connection(store: &Arc<dyn Store>, tenant: TenantId) -> Result<Connection> {
    Ok(store
        .insert_connection(&NewConnection {
            id: ConnectionId::generate(),
            tenant_id: tenant,
            provider: "sandbox".into(),
            external_account_id: Uuid::new_v4().to_string(),
            external_account_name: None,
            status: ConnectionStatus::Active,
            scopes: Vec::new(),
            token_expires_at: None,
            created_at: now(),
        })
        .await?)
}

fn signal(connection: &Connection, key: &str) -> NewSignal {
    let at = now();
    NewSignal {
        id: SignalId::generate(),
        tenant_id: connection.tenant_id,
        connection_id: connection.id,
        provider: "sandbox".into(),
        kind: "event_created".into(),
        occurred_at: at,
        received_at: at,
        actor: None,
        title: Some(format!("Event {key}")),
        url: None,
        external_id: Some(key.into()),
        dedupe_key: key.into(),
        payload: json!({}),
    }
}

/// The job queue: returns (small tenant's first signal, backlog drained).
async fn jobs(args: &Args, store: &Arc<dyn Store>) -> Result<(Duration, Duration)> {
    let (big, small) = (TenantId(Uuid::new_v4()), TenantId(Uuid::new_v4()));
    let old = now() - chrono::Duration::minutes(10);
    let made: Vec<Connection> = stream::iter(0..args.big_connections)
        .map(|_| async move {
            let c = connection(store, big).await?;
            let job = NewJob::queued(&c, JobType::Incremental, old);
            store.enqueue_sync(&job, IfRunning::Join).await?;
            Ok::<_, anyhow::Error>(c)
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let mut connections: std::collections::HashMap<_, _> =
        made.into_iter().map(|c| (c.id, c)).collect();
    let c = connection(store, small).await?;
    store
        .enqueue_sync(
            &NewJob::queued(&c, JobType::Incremental, now()),
            IfRunning::Join,
        )
        .await?;
    connections.insert(c.id, c);
    let connections = Arc::new(connections);

    let started = Instant::now();
    let small_at: Arc<Mutex<Option<Duration>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..args.workers {
        let (store, connections, small_at) = (store.clone(), connections.clone(), small_at.clone());
        let hold = Duration::from_millis(args.page_ms * u64::from(args.pages));
        workers.push(tokio::spawn(async move {
            let owner = format!("bench-{w}");
            loop {
                let lease_until = now() + chrono::Duration::minutes(5);
                let Some(job) = store.claim_sync_job(&owner, now(), lease_until).await? else {
                    return Ok::<_, anyhow::Error>(());
                };
                tokio::time::sleep(hold).await;
                let conn = &connections[&job.connection_id];
                let lease = Lease {
                    job: job.id,
                    owner: &owner,
                };
                let signals = [signal(conn, &job.id.0.to_string())];
                let commit = SyncCommit {
                    signals: &signals,
                    cursor: &Value::Null,
                    metadata: None,
                };
                store
                    .commit_sync_page(lease, conn.id, &commit, lease_until, now())
                    .await?;
                if job.tenant_id == small {
                    small_at.lock().await.get_or_insert(started.elapsed());
                }
                store
                    .finish_sync_job(lease, JobFinish::Succeeded, now())
                    .await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let all = started.elapsed();
    let small = small_at
        .lock()
        .await
        .context("the small tenant's job never ran")?;
    Ok((small, all))
}

/// The inbox: returns (small tenant's first signal, backlog drained).
async fn inbox(args: &Args, store: &Arc<dyn Store>) -> Result<(Duration, Duration)> {
    let (big, small) = (TenantId(Uuid::new_v4()), TenantId(Uuid::new_v4()));
    let big_conn = connection(store, big).await?;
    let small_conn = connection(store, small).await?;
    let old: Timestamp = now() - chrono::Duration::minutes(10);
    stream::iter(0..args.big_events)
        .map(|i| async move {
            store
                .insert_webhook_event(&delivery(big, &format!("big-{i}"), old))
                .await
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    store
        .insert_webhook_event(&delivery(small, "small-1", now()))
        .await?;

    let started = Instant::now();
    let mut small_at = None;
    let mut done = 0;
    while done < args.big_events + 1 {
        let lease = now() + chrono::Duration::minutes(1);
        let batch = store.claim_webhook_events(now(), lease, 128).await?;
        if batch.is_empty() {
            bail!("the inbox ran dry after {done} events");
        }
        let completions: Vec<EventCompletion> = batch
            .iter()
            .map(|e| {
                let conn = if e.tenant_id == small {
                    &small_conn
                } else {
                    &big_conn
                };
                EventCompletion {
                    id: e.id,
                    outcome: EventStatus::Processed,
                    connection_id: Some(conn.id),
                    signals: vec![signal(conn, &e.dedupe_key)],
                    error: None,
                }
            })
            .collect();
        store
            .complete_webhook_events(&completions, lease, now())
            .await?;
        if batch.iter().any(|e| e.tenant_id == small) {
            small_at.get_or_insert(started.elapsed());
        }
        done += batch.len();
    }
    let all = started.elapsed();
    Ok((small_at.context("the small tenant's event never ran")?, all))
}

fn delivery(tenant: TenantId, key: &str, at: Timestamp) -> NewWebhookEvent {
    NewWebhookEvent {
        id: Uuid::now_v7(),
        tenant_id: tenant,
        provider: "sandbox".into(),
        connection_id: None,
        dedupe_key: key.into(),
        event_type: Some("event.created".into()),
        headers: Map::new(),
        body: br#"{"id":"bench"}"#.to_vec(),
        received_at: at,
    }
}
