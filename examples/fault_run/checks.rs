//! What the shared database says after (and during) the run: the migration table, the jobs a
//! killed instance held and who took them over, whether every job ended, and whether every
//! acknowledged delivery became exactly one signal.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::Ack;

pub async fn pool(url: &str) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .context("connecting to the run's database")
}

/// The migration table against the migrations the binary carries.
pub struct Migrations {
    pub expected: Vec<i64>,
    /// `(version, success)` rows, in version order.
    pub rows: Vec<(i64, bool)>,
}

impl Migrations {
    pub fn ok(&self) -> bool {
        let versions: Vec<i64> = self.rows.iter().map(|r| r.0).collect();
        versions == self.expected && self.rows.iter().all(|r| r.1)
    }
}

pub async fn migrations(pool: &PgPool) -> Result<Migrations> {
    let expected = expected_versions()?;
    let rows = sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .context("reading _sqlx_migrations")?;
    Ok(Migrations { expected, rows })
}

/// The versions of `migrations/postgres/NNNN_*.sql`, the files the binary embeds.
fn expected_versions() -> Result<Vec<i64>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(number) = name.strip_suffix(".sql").and_then(|n| n.split('_').next()) {
            versions.push(
                number
                    .parse()
                    .with_context(|| format!("migration {name}"))?,
            );
        }
    }
    versions.sort_unstable();
    Ok(versions)
}

/// The lease owner prefix of the workers of process `pid` (`worker-<pid>-<uuid>`).
fn owner_prefix(pid: u32) -> String {
    format!("worker-{pid}-")
}

/// The jobs `pid`'s workers hold now.
pub async fn held_by(pool: &PgPool, pid: u32) -> Result<Vec<Uuid>> {
    let ids = sqlx::query_scalar(
        "SELECT id FROM sync_jobs WHERE status = 'running' AND starts_with(lease_owner, $1)",
    )
    .bind(owner_prefix(pid))
    .fetch_all(pool)
    .await
    .context("reading the jobs an instance holds")?;
    Ok(ids)
}

/// How the jobs a killed instance held were taken over.
pub struct Takeovers {
    pub held: usize,
    /// From the kill to each job's claim by another worker.
    pub delays: Vec<Duration>,
    /// Jobs still under the dead instance's lease.
    pub not_taken: Vec<Uuid>,
}

/// Reads each job `pid` held when it was killed at `killed_at`: a claim by another worker
/// stamps the row's `started_at` and replaces its `lease_owner`.
pub async fn takeovers(
    pool: &PgPool,
    pid: u32,
    held: &[Uuid],
    killed_at: DateTime<Utc>,
) -> Result<Takeovers> {
    let rows: Vec<(Uuid, Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT id, lease_owner, started_at FROM sync_jobs WHERE id = ANY($1) ORDER BY id",
    )
    .bind(held)
    .fetch_all(pool)
    .await
    .context("reading the killed instance's jobs")?;
    let prefix = owner_prefix(pid);
    let mut result = Takeovers {
        held: held.len(),
        delays: Vec::new(),
        not_taken: Vec::new(),
    };
    for (id, owner, started) in rows {
        let still_dead = owner.as_deref().is_some_and(|o| o.starts_with(&prefix));
        match started {
            Some(at) if !still_dead && at > killed_at => {
                result
                    .delays
                    .push((at - killed_at).to_std().unwrap_or_default());
            }
            _ => result.not_taken.push(id),
        }
    }
    Ok(result)
}

/// Sync jobs by state.
#[derive(Debug, Default)]
pub struct JobStates {
    pub succeeded: i64,
    pub failed: i64,
    pub running: i64,
    /// Queued and due.
    pub queued_due: i64,
    /// Queued for later (a retry's backoff).
    pub queued_later: i64,
}

impl JobStates {
    pub fn ended(&self) -> bool {
        self.running == 0 && self.queued_due == 0 && self.queued_later == 0
    }
}

pub async fn job_states(pool: &PgPool) -> Result<JobStates> {
    let rows: Vec<(String, bool, i64)> = sqlx::query_as(
        "SELECT status, scheduled_at <= now(), count(*) FROM sync_jobs \
         WHERE job_type IN ('full', 'incremental') GROUP BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .context("counting jobs")?;
    let mut states = JobStates::default();
    for (status, due, n) in rows {
        match (status.as_str(), due) {
            ("succeeded", _) => states.succeeded += n,
            ("failed", _) => states.failed += n,
            ("running", _) => states.running += n,
            ("queued", true) => states.queued_due += n,
            _ => states.queued_later += n,
        }
    }
    Ok(states)
}

/// Stops the scheduler adding syncs: every connection's next sync moves a day ahead (the
/// instances keep running, and finish what is queued).
pub async fn hold_schedule(pool: &PgPool) -> Result<()> {
    sqlx::query("UPDATE connections SET next_sync_at = now() + interval '1 day'")
        .execute(pool)
        .await
        .context("moving the next syncs ahead")?;
    Ok(())
}

/// Polls until every sync job has ended or `timeout` passes; the last counts.
pub async fn wait_jobs_ended(pool: &PgPool, timeout: Duration) -> Result<JobStates> {
    let deadline = Instant::now() + timeout;
    loop {
        let states = job_states(pool).await?;
        if states.ended() || Instant::now() > deadline {
            return Ok(states);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Acknowledged deliveries whose signal count is not one: `(external id, count)`.
pub async fn not_exactly_once(pool: &PgPool, acks: &[Ack]) -> Result<Vec<(String, i64)>> {
    let tenants: Vec<Uuid> = acks.iter().map(|a| a.tenant.0).collect();
    let ids: Vec<String> = acks.iter().map(|a| a.id.clone()).collect();
    let rows = sqlx::query_as(
        "SELECT a.id, count(s.id) FROM unnest($1::uuid[], $2::text[]) AS a(tenant, id) \
         LEFT JOIN signals s ON s.tenant_id = a.tenant AND s.external_id = a.id \
         GROUP BY a.tenant, a.id HAVING count(s.id) <> 1",
    )
    .bind(tenants)
    .bind(ids)
    .fetch_all(pool)
    .await
    .context("matching deliveries to signals")?;
    Ok(rows)
}

/// Polls until every acknowledged delivery has its signal (or `timeout`); what is still wrong.
pub async fn wait_delivered(
    pool: &PgPool,
    acks: &[Ack],
    timeout: Duration,
) -> Result<Vec<(String, i64)>> {
    let deadline = Instant::now() + timeout;
    loop {
        let wrong = not_exactly_once(pool, acks).await?;
        let missing = wrong.iter().any(|w| w.1 == 0);
        if !missing || Instant::now() > deadline {
            return Ok(wrong);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Signals stored (`received_at`) between `from` and `to`.
pub async fn signals_between(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM signals WHERE received_at >= $1 AND received_at < $2")
        .bind(from)
        .bind(to)
        .fetch_one(pool)
        .await
        .context("counting signals")
}
