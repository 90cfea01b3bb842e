//! The sync job queue on PostgreSQL. Claiming locks the chosen row with
//! `FOR UPDATE SKIP LOCKED`, so instances sharing the database never wait on, nor take, the
//! same job; a lease-bound write locks the job row first, so a takeover cannot interleave.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::connections::{decode as decode_connection, COLUMNS as CONNECTION_COLUMNS};
use super::notify::JOBS_CHANNEL;
use super::{jobs, signals, PostgresStore};
use crate::domain::{
    merge_metadata, Connection, ConnectionId, Job, JobId, NewJob, TenantId, Timestamp,
};
use crate::store::{
    Enqueued, Finished, IfRunning, JobFinish, Lease, PageCommit, StoreError, SyncCommit, SyncQueue,
};

/// Re-reads a job named by a statement's `RETURNING id, tenant_id`.
async fn reread(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<Job, StoreError> {
    jobs::get(pool, TenantId(tenant), JobId(id))
        .await?
        .ok_or_else(|| StoreError::corrupt("sync_jobs", "job vanished after being written"))
}

async fn enqueue(
    pool: &PgPool,
    new: &NewJob,
    if_running: IfRunning,
) -> Result<Enqueued, StoreError> {
    // A finished job may free the slot between the insert and the look-up: try again then.
    // A new job is announced to idle workers when its insert commits.
    let sql = format!(
        "WITH inserted AS (INSERT INTO sync_jobs (id, tenant_id, connection_id, provider, \
         job_type, status, attempts, max_attempts, scheduled_at, started_at, finished_at, error, \
         created_at, updated_at, lane) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14) \
         ON CONFLICT (connection_id, lane) WHERE status IN ('queued', 'running') DO NOTHING \
         RETURNING id, tenant_id) \
         SELECT id, tenant_id, pg_notify('{JOBS_CHANNEL}', '') FROM inserted"
    );
    for _ in 0..5 {
        let inserted = sqlx::query(&sql)
            .bind(new.id.0)
            .bind(new.tenant_id.0)
            .bind(new.connection_id.0)
            .bind(&new.provider)
            .bind(new.job_type.as_str())
            .bind(new.status.as_str())
            .bind(new.attempts)
            .bind(new.max_attempts)
            .bind(new.scheduled_at)
            .bind(new.started_at)
            .bind(new.finished_at)
            .bind(&new.error)
            .bind(new.created_at)
            .bind(new.job_type.lane())
            .fetch_optional(pool)
            .await?;
        if let Some(row) = inserted {
            let job = reread(pool, row.try_get("tenant_id")?, row.try_get("id")?).await?;
            return Ok(Enqueued { job, created: true });
        }
        let marked = match if_running {
            IfRunning::Join => None,
            IfRunning::FollowUp => {
                sqlx::query(
                    "UPDATE sync_jobs SET follow_up = COALESCE(follow_up, $2) \
                     WHERE connection_id = $1 AND lane = $3 AND status = 'running' \
                     RETURNING id, tenant_id",
                )
                .bind(new.connection_id.0)
                .bind(new.job_type.as_str())
                .bind(new.job_type.lane())
                .fetch_optional(pool)
                .await?
            }
        };
        let active = match marked {
            Some(row) => Some(row),
            None => {
                sqlx::query(
                    "SELECT id, tenant_id FROM sync_jobs WHERE connection_id = $1 \
                     AND lane = $2 AND status IN ('queued', 'running')",
                )
                .bind(new.connection_id.0)
                .bind(new.job_type.lane())
                .fetch_optional(pool)
                .await?
            }
        };
        if let Some(row) = active {
            let job = reread(pool, row.try_get("tenant_id")?, row.try_get("id")?).await?;
            return Ok(Enqueued {
                job,
                created: false,
            });
        }
    }
    Err(StoreError::Conflict {
        constraint: "sync_jobs_one_active_per_connection".into(),
    })
}

async fn claim(
    pool: &PgPool,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<Job>, StoreError> {
    let row = sqlx::query(
        "UPDATE sync_jobs SET status = 'running', lease_owner = $1, lease_expires_at = $2, \
         attempts = attempts + 1, started_at = $3, updated_at = $3 \
         WHERE id = (SELECT id FROM sync_jobs \
           WHERE (status = 'queued' AND scheduled_at <= $3) \
              OR (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < $3)) \
           ORDER BY scheduled_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING id, tenant_id",
    )
    .bind(owner)
    .bind(lease_until)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => Ok(Some(
            reread(pool, row.try_get("tenant_id")?, row.try_get("id")?).await?,
        )),
        None => Ok(None),
    }
}

const EXTEND: &str = "UPDATE sync_jobs SET lease_expires_at = $1, updated_at = $2 \
     WHERE id = $3 AND lease_owner = $4 AND status = 'running'";

/// [`EXTEND`], only while the job's connection is `active`. The connection row is not
/// locked: a disconnect committed while the page is written lands after it, and the next
/// page stops.
const EXTEND_WHILE_ACTIVE: &str = "UPDATE sync_jobs SET lease_expires_at = $1, updated_at = $2 \
     WHERE id = $3 AND lease_owner = $4 AND status = 'running' AND EXISTS (SELECT 1 FROM \
     connections c WHERE c.id = sync_jobs.connection_id AND c.status = 'active')";

/// Whether the lease is still held.
const HELD: &str =
    "SELECT 1 FROM sync_jobs WHERE id = $1 AND lease_owner = $2 AND status = 'running'";

async fn extend(
    pool: &PgPool,
    lease: Lease<'_>,
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(EXTEND)
        .bind(lease_until)
        .bind(now)
        .bind(lease.job.0)
        .bind(lease.owner)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn cursor(pool: &PgPool, connection: ConnectionId) -> Result<Option<Value>, StoreError> {
    let cursor: Option<Json<Value>> =
        sqlx::query_scalar("SELECT cursor FROM sync_cursors WHERE connection_id = $1")
            .bind(connection.0)
            .fetch_optional(pool)
            .await?;
    Ok(cursor.map(|Json(v)| v))
}

async fn commit_page(
    pool: &PgPool,
    lease: Lease<'_>,
    connection: ConnectionId,
    page: &SyncCommit<'_>,
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<PageCommit, StoreError> {
    let cursor = page.cursor;
    let mut tx = pool.begin().await?;
    // First, so the job row stays locked (no takeover) until this page is committed.
    let ours = sqlx::query(EXTEND_WHILE_ACTIVE)
        .bind(lease_until)
        .bind(now)
        .bind(lease.job.0)
        .bind(lease.owner)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if !ours {
        let held = sqlx::query(HELD)
            .bind(lease.job.0)
            .bind(lease.owner)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        tx.rollback().await?;
        return Ok(if held {
            PageCommit::ConnectionInactive
        } else {
            PageCommit::LeaseLost
        });
    }
    let inserted = signals::insert_in(&mut tx, page.signals).await?;
    if let Some(patch) = page.metadata {
        patch_metadata(&mut tx, connection, patch, now).await?;
    }
    sqlx::query(
        "INSERT INTO sync_cursors (connection_id, cursor, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (connection_id) DO UPDATE SET cursor = excluded.cursor, \
         updated_at = excluded.updated_at",
    )
    .bind(connection.0)
    .bind(Json(cursor))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(PageCommit::Stored(inserted))
}

/// Applies a metadata patch to a connection inside a page's transaction (the row is locked
/// while it is read, merged and written).
async fn patch_metadata(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    connection: ConnectionId,
    patch: &serde_json::Map<String, Value>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let Json(mut metadata): Json<serde_json::Map<String, Value>> =
        sqlx::query_scalar("SELECT metadata FROM connections WHERE id = $1 FOR UPDATE")
            .bind(connection.0)
            .fetch_one(&mut **tx)
            .await?;
    merge_metadata(&mut metadata, patch.clone());
    sqlx::query("UPDATE connections SET metadata = $1, updated_at = $2 WHERE id = $3")
        .bind(Json(&metadata))
        .bind(now)
        .bind(connection.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn finish(
    pool: &PgPool,
    lease: Lease<'_>,
    finish: JobFinish<'_>,
    now: Timestamp,
) -> Result<Finished, StoreError> {
    let mut q = QueryBuilder::<Postgres>::new("UPDATE sync_jobs SET lease_owner = NULL, ");
    q.push("lease_expires_at = NULL, updated_at = ")
        .push_bind(now);
    match finish {
        JobFinish::Succeeded => {
            q.push(", status = 'succeeded', error = NULL, finished_at = ")
                .push_bind(now);
        }
        JobFinish::Retry { at, error } => {
            q.push(", status = 'queued', follow_up = NULL, scheduled_at = ")
                .push_bind(at)
                .push(", error = ")
                .push_bind(error.to_string());
        }
        JobFinish::Defer { at, note } => {
            q.push(
                ", status = 'queued', follow_up = NULL, attempts = GREATEST(attempts - 1, 0), \
                 scheduled_at = ",
            )
            .push_bind(at)
            .push(", error = COALESCE(")
            .push_bind(note.map(str::to_string))
            .push(", error)");
        }
        JobFinish::Failed { error } => {
            q.push(", status = 'failed', finished_at = ")
                .push_bind(now)
                .push(", error = ")
                .push_bind(error.to_string());
        }
    }
    q.push(" WHERE id = ")
        .push_bind(lease.job.0)
        .push(" AND lease_owner = ")
        .push_bind(lease.owner.to_string())
        .push(" AND status = 'running' RETURNING connection_id, follow_up, lane");
    let mut tx = pool.begin().await?;
    let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
        tx.rollback().await?;
        return Ok(Finished::NotOurs);
    };
    let connection: Uuid = row.try_get("connection_id")?;
    let follow_up: Option<String> = row.try_get("follow_up")?;
    let lane: String = row.try_get("lane")?;
    let mut finished = Finished::Done;
    // Only a sync says how the connection's syncing goes; a subscription job's outcome shows
    // on its subscriptions.
    let syncs = lane == "sync";
    match finish {
        JobFinish::Succeeded if syncs => {
            if follow_up.is_some() {
                let id = JobId::generate();
                let queued = sqlx::query(&format!(
                    "WITH inserted AS (INSERT INTO sync_jobs (id, tenant_id, connection_id, \
                     provider, job_type, status, attempts, max_attempts, scheduled_at, \
                     created_at, updated_at, lane) \
                     SELECT $1, tenant_id, connection_id, provider, follow_up, 'queued', 0, \
                     max_attempts, $2, $2, $2, lane FROM sync_jobs WHERE id = $3 AND EXISTS \
                     (SELECT 1 FROM connections c WHERE c.id = sync_jobs.connection_id \
                     AND c.status = 'active') \
                     ON CONFLICT (connection_id, lane) WHERE status IN ('queued', 'running') \
                     DO NOTHING RETURNING id) \
                     SELECT id, pg_notify('{JOBS_CHANNEL}', '') FROM inserted"
                ))
                .bind(id.0)
                .bind(now)
                .bind(lease.job.0)
                .fetch_optional(&mut *tx)
                .await?;
                if queued.is_some() {
                    finished = Finished::FollowedBy(id);
                }
            }
            sqlx::query(
                "UPDATE connections SET last_synced_at = $1, last_error = NULL, updated_at = $1 \
                 WHERE id = $2",
            )
            .bind(now)
            .bind(connection)
            .execute(&mut *tx)
            .await?;
        }
        JobFinish::Failed { error } if syncs => {
            sqlx::query("UPDATE connections SET last_error = $1, updated_at = $2 WHERE id = $3")
                .bind(error)
                .bind(now)
                .bind(connection)
                .execute(&mut *tx)
                .await?;
        }
        JobFinish::Succeeded
        | JobFinish::Failed { .. }
        | JobFinish::Retry { .. }
        | JobFinish::Defer { .. } => {}
    }
    tx.commit().await?;
    Ok(finished)
}

async fn due(
    pool: &PgPool,
    providers: &[&str],
    now: Timestamp,
    limit: u32,
) -> Result<Vec<Connection>, StoreError> {
    if providers.is_empty() {
        return Ok(Vec::new());
    }
    let providers: Vec<String> = providers.iter().map(|p| p.to_string()).collect();
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {CONNECTION_COLUMNS} FROM connections WHERE status = 'active' \
         AND (next_sync_at IS NULL OR next_sync_at <= "
    ));
    q.push_bind(now)
        .push(") AND provider = ANY(")
        .push_bind(providers)
        .push(") ORDER BY next_sync_at NULLS FIRST, id LIMIT ")
        .push_bind(i64::from(limit));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(decode_connection).collect()
}

async fn advance(
    pool: &PgPool,
    connection: ConnectionId,
    now: Timestamp,
    next: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE connections SET next_sync_at = $1 WHERE id = $2 \
         AND (next_sync_at IS NULL OR next_sync_at <= $3)",
    )
    .bind(next)
    .bind(connection.0)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[async_trait]
impl SyncQueue for PostgresStore {
    async fn enqueue_sync(
        &self,
        new: &NewJob,
        if_running: IfRunning,
    ) -> Result<Enqueued, StoreError> {
        enqueue(&self.pool, new, if_running).await
    }

    async fn claim_sync_job(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Job>, StoreError> {
        claim(&self.pool, owner, now, lease_until).await
    }

    async fn extend_sync_lease(
        &self,
        lease: Lease<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        extend(&self.pool, lease, lease_until, now).await
    }

    async fn sync_cursor(&self, connection: ConnectionId) -> Result<Option<Value>, StoreError> {
        cursor(&self.pool, connection).await
    }

    async fn commit_sync_page(
        &self,
        lease: Lease<'_>,
        connection: ConnectionId,
        page: &SyncCommit<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<PageCommit, StoreError> {
        commit_page(&self.pool, lease, connection, page, lease_until, now).await
    }

    async fn finish_sync_job(
        &self,
        lease: Lease<'_>,
        finish_as: JobFinish<'_>,
        now: Timestamp,
    ) -> Result<Finished, StoreError> {
        finish(&self.pool, lease, finish_as, now).await
    }

    async fn connections_due_for_sync(
        &self,
        providers: &[&str],
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Connection>, StoreError> {
        due(&self.pool, providers, now, limit).await
    }

    async fn advance_next_sync(
        &self,
        connection: ConnectionId,
        now: Timestamp,
        next: Timestamp,
    ) -> Result<bool, StoreError> {
        advance(&self.pool, connection, now, next).await
    }
}
