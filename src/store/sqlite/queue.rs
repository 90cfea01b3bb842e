//! The sync job queue on SQLite. Writers are serialized by the database, so claiming is one
//! `UPDATE ... WHERE id = (SELECT ...) RETURNING`: the choice and the lease happen atomically.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::connections::{decode as decode_connection, COLUMNS as CONNECTION_COLUMNS};
use super::{jobs, signals, SqliteStore};
use crate::domain::{
    merge_metadata, to_micros, Connection, ConnectionId, Job, JobId, NewJob, TenantId, Timestamp,
};
use crate::store::{
    Enqueued, Finished, IfRunning, JobFinish, Lease, PageCommit, StoreError, SyncCommit, SyncQueue,
};

/// Re-reads a job named by a statement's `RETURNING id, tenant_id`.
async fn reread(pool: &SqlitePool, tenant: Uuid, id: Uuid) -> Result<Job, StoreError> {
    jobs::get(pool, TenantId(tenant), JobId(id))
        .await?
        .ok_or_else(|| StoreError::corrupt("sync_jobs", "job vanished after being written"))
}

async fn enqueue(
    pool: &SqlitePool,
    new: &NewJob,
    if_running: IfRunning,
) -> Result<Enqueued, StoreError> {
    let created = to_micros(&new.created_at);
    // A finished job may free the slot between the insert and the look-up: try again then.
    for _ in 0..5 {
        let inserted = sqlx::query(
            "INSERT INTO sync_jobs (id, tenant_id, connection_id, provider, job_type, status, \
             attempts, max_attempts, scheduled_at, started_at, finished_at, error, created_at, \
             updated_at, lane) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (connection_id, lane) WHERE status IN ('queued', 'running') DO NOTHING \
             RETURNING id, tenant_id",
        )
        .bind(new.id.0)
        .bind(new.tenant_id.0)
        .bind(new.connection_id.0)
        .bind(&new.provider)
        .bind(new.job_type.as_str())
        .bind(new.status.as_str())
        .bind(new.attempts)
        .bind(new.max_attempts)
        .bind(to_micros(&new.scheduled_at))
        .bind(new.started_at.as_ref().map(to_micros))
        .bind(new.finished_at.as_ref().map(to_micros))
        .bind(&new.error)
        .bind(created)
        .bind(created)
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
                    "UPDATE sync_jobs SET follow_up = COALESCE(follow_up, ?) \
                     WHERE connection_id = ? AND lane = ? AND status = 'running' \
                     RETURNING id, tenant_id",
                )
                .bind(new.job_type.as_str())
                .bind(new.connection_id.0)
                .bind(new.job_type.lane())
                .fetch_optional(pool)
                .await?
            }
        };
        let active = match marked {
            Some(row) => Some(row),
            None => {
                sqlx::query(
                    "SELECT id, tenant_id FROM sync_jobs WHERE connection_id = ? \
                     AND lane = ? AND status IN ('queued', 'running')",
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
    pool: &SqlitePool,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<Job>, StoreError> {
    let now = to_micros(&now);
    let row = sqlx::query(
        "UPDATE sync_jobs SET status = 'running', lease_owner = ?, lease_expires_at = ?, \
         attempts = attempts + 1, started_at = ?, updated_at = ? \
         WHERE id = (SELECT id FROM sync_jobs \
           WHERE (status = 'queued' AND scheduled_at <= ?) \
              OR (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < ?)) \
           ORDER BY scheduled_at, id LIMIT 1) \
         RETURNING id, tenant_id",
    )
    .bind(owner)
    .bind(to_micros(&lease_until))
    .bind(now)
    .bind(now)
    .bind(now)
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

const EXTEND: &str = "UPDATE sync_jobs SET lease_expires_at = ?, updated_at = ? \
     WHERE id = ? AND lease_owner = ? AND status = 'running'";

/// [`EXTEND`], only while the job's connection is `active`.
const EXTEND_WHILE_ACTIVE: &str = "UPDATE sync_jobs SET lease_expires_at = ?, updated_at = ? \
     WHERE id = ? AND lease_owner = ? AND status = 'running' AND EXISTS (SELECT 1 FROM \
     connections c WHERE c.id = sync_jobs.connection_id AND c.status = 'active')";

/// Whether the lease is still held.
const HELD: &str =
    "SELECT 1 FROM sync_jobs WHERE id = ? AND lease_owner = ? AND status = 'running'";

async fn extend(
    pool: &SqlitePool,
    lease: Lease<'_>,
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(EXTEND)
        .bind(to_micros(&lease_until))
        .bind(to_micros(&now))
        .bind(lease.job.0)
        .bind(lease.owner)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

async fn cursor(pool: &SqlitePool, connection: ConnectionId) -> Result<Option<Value>, StoreError> {
    let text: Option<String> =
        sqlx::query_scalar("SELECT cursor FROM sync_cursors WHERE connection_id = ?")
            .bind(connection.0)
            .fetch_optional(pool)
            .await?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::corrupt("cursor", e)))
        .transpose()
}

async fn commit_page(
    pool: &SqlitePool,
    lease: Lease<'_>,
    connection: ConnectionId,
    page: &SyncCommit<'_>,
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<PageCommit, StoreError> {
    let cursor = page.cursor;
    let cursor = serde_json::to_string(cursor).map_err(|e| StoreError::corrupt("cursor", e))?;
    let mut tx = pool.begin().await?;
    // First, so the transaction holds the write lock from its first statement on.
    let ours = sqlx::query(EXTEND_WHILE_ACTIVE)
        .bind(to_micros(&lease_until))
        .bind(to_micros(&now))
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
        "INSERT INTO sync_cursors (connection_id, cursor, updated_at) VALUES (?, ?, ?) \
         ON CONFLICT (connection_id) DO UPDATE SET cursor = excluded.cursor, \
         updated_at = excluded.updated_at",
    )
    .bind(connection.0)
    .bind(cursor)
    .bind(to_micros(&now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(PageCommit::Stored(inserted))
}

/// Applies a metadata patch to a connection inside a page's transaction.
async fn patch_metadata(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    connection: ConnectionId,
    patch: &serde_json::Map<String, Value>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let text: String = sqlx::query_scalar("SELECT metadata FROM connections WHERE id = ?")
        .bind(connection.0)
        .fetch_one(&mut **tx)
        .await?;
    let mut metadata =
        serde_json::from_str(&text).map_err(|e| StoreError::corrupt("metadata", e))?;
    merge_metadata(&mut metadata, patch.clone());
    let text = serde_json::to_string(&metadata).map_err(|e| StoreError::corrupt("metadata", e))?;
    sqlx::query("UPDATE connections SET metadata = ?, updated_at = ? WHERE id = ?")
        .bind(text)
        .bind(to_micros(&now))
        .bind(connection.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn finish(
    pool: &SqlitePool,
    lease: Lease<'_>,
    finish: JobFinish<'_>,
    now: Timestamp,
) -> Result<Finished, StoreError> {
    let now = to_micros(&now);
    let mut q = QueryBuilder::<Sqlite>::new("UPDATE sync_jobs SET lease_owner = NULL, ");
    q.push("lease_expires_at = NULL, updated_at = ")
        .push_bind(now);
    match finish {
        JobFinish::Succeeded => {
            q.push(", status = 'succeeded', error = NULL, finished_at = ")
                .push_bind(now);
        }
        JobFinish::Retry { at, error } => {
            q.push(", status = 'queued', follow_up = NULL, scheduled_at = ")
                .push_bind(to_micros(&at))
                .push(", error = ")
                .push_bind(error.to_string());
        }
        JobFinish::Defer { at, note } => {
            q.push(
                ", status = 'queued', follow_up = NULL, attempts = MAX(attempts - 1, 0), \
                 scheduled_at = ",
            )
            .push_bind(to_micros(&at))
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
                let queued = sqlx::query(
                    "INSERT INTO sync_jobs (id, tenant_id, connection_id, provider, job_type, \
                     status, attempts, max_attempts, scheduled_at, created_at, updated_at, lane) \
                     SELECT ?, tenant_id, connection_id, provider, follow_up, 'queued', 0, \
                     max_attempts, ?, ?, ?, lane FROM sync_jobs WHERE id = ? AND EXISTS (SELECT 1 \
                     FROM connections c WHERE c.id = sync_jobs.connection_id \
                     AND c.status = 'active') \
                     ON CONFLICT (connection_id, lane) WHERE status IN ('queued', 'running') \
                     DO NOTHING",
                )
                .bind(id.0)
                .bind(now)
                .bind(now)
                .bind(now)
                .bind(lease.job.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if queued == 1 {
                    finished = Finished::FollowedBy(id);
                }
            }
            sqlx::query(
                "UPDATE connections SET last_synced_at = ?, last_error = NULL, updated_at = ? \
                 WHERE id = ?",
            )
            .bind(now)
            .bind(now)
            .bind(connection)
            .execute(&mut *tx)
            .await?;
        }
        JobFinish::Failed { error } if syncs => {
            sqlx::query("UPDATE connections SET last_error = ?, updated_at = ? WHERE id = ?")
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
    pool: &SqlitePool,
    providers: &[&str],
    now: Timestamp,
    limit: u32,
) -> Result<Vec<Connection>, StoreError> {
    if providers.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {CONNECTION_COLUMNS} FROM connections WHERE status = 'active' \
         AND (next_sync_at IS NULL OR next_sync_at <= "
    ));
    q.push_bind(to_micros(&now)).push(") AND provider IN (");
    let mut list = q.separated(", ");
    for provider in providers {
        list.push_bind(provider.to_string());
    }
    q.push(") ORDER BY next_sync_at NULLS FIRST, id LIMIT ")
        .push_bind(i64::from(limit));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(decode_connection).collect()
}

async fn advance(
    pool: &SqlitePool,
    connection: ConnectionId,
    now: Timestamp,
    next: Timestamp,
) -> Result<bool, StoreError> {
    let now = to_micros(&now);
    let done = sqlx::query(
        "UPDATE connections SET next_sync_at = ? WHERE id = ? \
         AND (next_sync_at IS NULL OR next_sync_at <= ?)",
    )
    .bind(to_micros(&next))
    .bind(connection.0)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[async_trait]
impl SyncQueue for SqliteStore {
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
