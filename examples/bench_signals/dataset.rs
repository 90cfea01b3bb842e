//! Loads the data set through the library's storage interface: one GitHub connection per
//! tenant and the tenant's share of the signals, spread over the last 365 days.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use connectors::connector::Connector;
use connectors::domain::{
    from_micros, now, to_micros, Actor, ConnectionId, ConnectionStatus, NewConnection, NewSignal,
    SignalId, TenantId, Timestamp,
};
use connectors::providers::github::GithubConnector;
use connectors::store::{connect, StoreOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

const YEAR_US: i64 = 365 * 24 * 3600 * 1_000_000;

const TITLES: &[&str] = &[
    "Tighten retry policy of the sync worker",
    "Fix pagination edge case on empty pages",
    "Add tenant isolation tests for the store",
    "Bump dependencies and refresh lockfile",
    "Document the webhook signature check",
    "Crash when the provider returns a 429",
    "Speed up the signals listing query",
    "Handle expired refresh tokens gracefully",
];

/// A tenant and how many signals it holds.
#[derive(Clone, Debug)]
pub struct TenantData {
    pub id: TenantId,
    pub signals: u64,
}

/// What the load produced.
#[derive(Debug)]
pub struct Loaded {
    pub tenants: Vec<TenantData>,
    pub rows: u64,
    /// Connections and signals, from the first insert to the last commit (migrations excluded).
    pub elapsed: Duration,
    /// Mean serialized payload size of the first batch.
    pub payload_bytes: usize,
}

impl Loaded {
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Plan {
    tenant: TenantId,
    connection: ConnectionId,
    index: u64,
    count: u64,
}

/// Migrates the database at `url` and loads `total` signals over `tenants` tenants.
pub async fn load(url: &str, total: u64, tenants: u32, batch: usize) -> Result<Loaded> {
    let store = connect(url, &StoreOptions { max_connections: 4 })
        .await
        .context("opening the store")?;
    store.migrate().await.context("migrating the database")?;

    let started = Instant::now();
    let now = now();
    let mut plan = Vec::with_capacity(tenants as usize);
    for index in 0..u64::from(tenants) {
        let tenant = TenantId::from_uuid(Uuid::new_v4());
        let connection = store
            .insert_connection(&NewConnection {
                id: ConnectionId::generate(),
                tenant_id: tenant,
                provider: "github".to_string(),
                external_account_id: format!("acme-{index}"),
                external_account_name: Some(format!("Acme {index}")),
                status: ConnectionStatus::Active,
                scopes: vec!["repo".to_string(), "read:org".to_string()],
                token_expires_at: None,
                created_at: now,
            })
            .await
            .context("inserting a connection")?;
        let count = total / u64::from(tenants) + u64::from(index < total % u64::from(tenants));
        plan.push(Plan {
            tenant,
            connection: connection.id,
            index,
            count,
        });
    }
    let tenants: Vec<TenantData> = plan
        .iter()
        .map(|p| TenantData {
            id: p.tenant,
            signals: p.count,
        })
        .collect();

    // Signals are generated on a blocking thread while the previous batch is being inserted.
    let (tx, mut rx) = mpsc::channel::<Vec<NewSignal>>(2);
    let generator = tokio::task::spawn_blocking(move || generate(&plan, batch, now, &tx));
    let mut rows = 0u64;
    let mut payload_bytes = 0usize;
    let mut last_report = Instant::now();
    while let Some(signals) = rx.recv().await {
        if payload_bytes == 0 {
            let bytes: usize = signals
                .iter()
                .map(|s| serde_json::to_string(&s.payload).map_or(0, |p| p.len()))
                .sum();
            payload_bytes = bytes / signals.len().max(1);
        }
        rows += store
            .insert_signals(&signals)
            .await
            .context("inserting signals")?;
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            println!(
                "  {rows} / {total} rows ({:.0} rows/s)",
                rows as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    generator.await.context("the signal generator panicked")?;
    let elapsed = started.elapsed();
    // Each signal also wrote its `signal.created` event to the push outbox. The server's
    // dispatcher would number and fan out a million of them as it starts, beside the
    // measurement; they are done here, as they would be long done in a running service.
    store
        .sequence_events()
        .await
        .context("numbering the outbox")?;
    store
        .sequence_and_fan_out(u32::MAX, now)
        .await
        .context("fanning out the outbox")?;
    store.close().await;
    if rows != total {
        bail!("inserted {rows} signals, expected {total} (dedupe keys collided?)");
    }
    Ok(Loaded {
        tenants,
        rows,
        elapsed,
        payload_bytes,
    })
}

/// Sends every signal of `plan` in batches of `batch`; stops early if the receiver is gone.
fn generate(plan: &[Plan], batch: usize, now: Timestamp, tx: &mpsc::Sender<Vec<NewSignal>>) {
    let kinds = GithubConnector.descriptor().kinds;
    // A fixed seed: the same sizes give the same data (apart from ids and the current time).
    let mut rng = StdRng::seed_from_u64(0x5167_4e41);
    let now_us = to_micros(&now);
    let mut buf = Vec::with_capacity(batch);
    for p in plan {
        let spacing = (YEAR_US / p.count.max(1) as i64).max(1);
        for i in 0..p.count {
            buf.push(signal(&mut rng, p, i, spacing, now_us, kinds));
            if buf.len() == batch {
                let full = std::mem::replace(&mut buf, Vec::with_capacity(batch));
                if tx.blocking_send(full).is_err() {
                    return;
                }
            }
        }
    }
    if !buf.is_empty() {
        let _ = tx.blocking_send(buf);
    }
}

/// Signal `i` of a tenant: evenly spaced over the year, jittered within its slot.
fn signal(
    rng: &mut StdRng,
    p: &Plan,
    i: u64,
    spacing: i64,
    now_us: i64,
    kinds: &[&'static str],
) -> NewSignal {
    let occurred_us =
        (now_us - YEAR_US + i as i64 * spacing + rng.gen_range(0..spacing)).min(now_us);
    let received_us = (occurred_us + rng.gen_range(1_000_000..120_000_000)).min(now_us);
    let kind = kinds[rng.gen_range(0..kinds.len())];
    let repo = format!("acme-{}/repo-{}", p.index, rng.gen_range(0..20));
    let number = i + 1;
    let user = rng.gen_range(0..50u32);
    let (path, noun) = match kind.split('_').next() {
        Some("pr") => ("pull", "PR"),
        Some("issue") => ("issues", "Issue"),
        Some("code") => ("commit", "Push"),
        _ => ("releases/tag", "Release"),
    };
    let title = TITLES[rng.gen_range(0..TITLES.len())];
    NewSignal {
        id: SignalId::generate(),
        tenant_id: p.tenant,
        connection_id: p.connection,
        provider: "github".to_string(),
        kind: kind.to_string(),
        occurred_at: from_micros(occurred_us).expect("within the last year"),
        received_at: from_micros(received_us).expect("within the last year"),
        actor: Some(Actor {
            id: (100_000 + user).to_string(),
            name: Some(format!("dev-{user}")),
            email: None,
        }),
        title: Some(format!("{noun} #{number}: {title}")),
        url: Some(format!("https://github.com/{repo}/{path}/{number}")),
        external_id: Some(format!("{repo}#{number}")),
        dedupe_key: format!("{kind}:{repo}#{number}:{i}"),
        payload: payload(rng, &repo, number, kind),
    }
}

/// About 300 bytes of JSON, shaped like a normalized GitHub event.
fn payload(rng: &mut StdRng, repo: &str, number: u64, kind: &str) -> Value {
    json!({
        "repository": repo,
        "number": number,
        "action": kind.rsplit('_').next(),
        "state": if rng.gen_bool(0.7) { "open" } else { "closed" },
        "labels": ["backend", "needs-review"],
        "additions": rng.gen_range(1..500),
        "deletions": rng.gen_range(0..200),
        "changed_files": rng.gen_range(1..30),
        "base_ref": "main",
        "head_ref": format!("feature/change-{number}"),
        "body_excerpt": "This change tightens the retry policy of the sync worker and adds \
                         tests for the pagination edge cases.",
    })
}
