//! The sync job queue's statements on PostgreSQL (the rules are in `store::shared::queue`).
//! Claiming locks the chosen row with `FOR UPDATE SKIP LOCKED`, so instances sharing the
//! database never wait on, nor take, the same job; a lease-bound write locks the job row first,
//! so a takeover cannot interleave. A queued job is announced on [`JOBS_CHANNEL`] as it commits.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::connections::{decode as decode_connection, COLUMNS as CONNECTION_COLUMNS};
use super::notify::JOBS_CHANNEL;
use super::{jobs, PostgresStore};
use crate::domain::{
    merge_metadata, Connection, ConnectionId, Job, JobId, JobType, NewJob, TenantId, Timestamp,
};
use crate::store::shared::queue::{
    self, EndedJob, JobEnd, JobKey, JobPick, QueueDialect, JOB_INSERT_COLUMNS, UNLESS_LANE_TAKEN,
};
use crate::store::shared::turns::walk_tenants;
use crate::store::shared::Dialect;
use crate::store::{
    Enqueued, Finished, IfRunning, JobFinish, Lease, PageCommit, StoreError, SyncCommit, SyncQueue,
};

#[async_trait]
impl SyncQueue for PostgresStore {
    async fn enqueue_sync(
        &self,
        new: &NewJob,
        if_running: IfRunning,
    ) -> Result<Enqueued, StoreError> {
        queue::enqueue(self, new, if_running).await
    }

    async fn claim_sync_job(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Job>, StoreError> {
        queue::claim(self, owner, now, lease_until).await
    }

    async fn extend_sync_lease(
        &self,
        lease: Lease<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sync_jobs SET lease_expires_at = $1, updated_at = $2 \
             WHERE id = $3 AND lease_owner = $4 AND status = 'running'",
        )
        .bind(lease_until)
        .bind(now)
        .bind(lease.job.0)
        .bind(lease.owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn sync_cursor(&self, connection: ConnectionId) -> Result<Option<Value>, StoreError> {
        let cursor: Option<Json<Value>> =
            sqlx::query_scalar("SELECT cursor FROM sync_cursors WHERE connection_id = $1")
                .bind(connection.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(cursor.map(|Json(v)| v))
    }

    async fn commit_sync_page(
        &self,
        lease: Lease<'_>,
        connection: ConnectionId,
        page: &SyncCommit<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<PageCommit, StoreError> {
        commit_page(self, lease, connection, page, lease_until, now).await
    }

    async fn finish_sync_job(
        &self,
        lease: Lease<'_>,
        finish: JobFinish<'_>,
        now: Timestamp,
    ) -> Result<Finished, StoreError> {
        queue::finish(self, lease, finish, now).await
    }

    async fn connections_due_for_sync(
        &self,
        providers: &[&str],
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Connection>, StoreError> {
        if providers.is_empty() {
            return Ok(Vec::new());
        }
        let providers: Vec<String> = providers.iter().map(|p| p.to_string()).collect();
        // One range on the expression of the index `connections_due` (migration
        // 0008), in its order: an unset next sync is `-infinity`, due before any other.
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE status = 'active' \
             AND COALESCE(next_sync_at, '-infinity'::timestamptz) <= "
        ));
        q.push_bind(now)
            .push(" AND provider = ANY(")
            .push_bind(providers)
            .push(
                ") ORDER BY COALESCE(next_sync_at, '-infinity'::timestamptz), id \
                 LIMIT ",
            )
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(decode_connection).collect()
    }

    async fn advance_next_sync(
        &self,
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn advance_next_syncs(
        &self,
        due: &[(ConnectionId, Timestamp)],
        now: Timestamp,
    ) -> Result<Vec<ConnectionId>, StoreError> {
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, nexts): (Vec<Uuid>, Vec<Timestamp>) =
            due.iter().map(|(id, next)| (id.0, *next)).unzip();
        // Rows are locked in id order and a locked one is skipped: two schedulers, or a
        // transaction holding one of these connections, never wait on each other.
        let moved: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE connections c SET next_sync_at = v.next \
             FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, next) \
             WHERE c.id = v.id AND c.id IN (SELECT id FROM connections WHERE id = ANY($1) \
             AND (next_sync_at IS NULL OR next_sync_at <= $3) \
             ORDER BY id FOR NO KEY UPDATE SKIP LOCKED) RETURNING c.id",
        )
        .bind(ids)
        .bind(nexts)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(moved.into_iter().map(ConnectionId).collect())
    }

    async fn enqueue_syncs(&self, jobs: &[NewJob]) -> Result<u64, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "WITH inserted AS (INSERT INTO sync_jobs ({JOB_INSERT_COLUMNS}) "
        ));
        q.push_values(jobs, jobs::bind_job);
        q.push(UNLESS_LANE_TAKEN).push(format!(
            " RETURNING 1) SELECT n, CASE WHEN n > 0 THEN pg_notify('{JOBS_CHANNEL}', '') END \
             FROM (SELECT count(*) AS n FROM inserted) AS counted"
        ));
        let inserted: i64 = q.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(u64::try_from(inserted).unwrap_or(0))
    }
}

#[async_trait]
impl QueueDialect for PostgresStore {
    async fn job(&self, key: JobKey) -> Result<Option<Job>, StoreError> {
        jobs::get(&self.pool, key.tenant, key.id).await
    }

    async fn insert_unless_active(&self, new: &NewJob) -> Result<Option<JobKey>, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "WITH inserted AS (INSERT INTO sync_jobs ({JOB_INSERT_COLUMNS}) "
        ));
        q.push_values([new], jobs::bind_job);
        q.push(UNLESS_LANE_TAKEN).push(format!(
            " RETURNING id, tenant_id) \
             SELECT id, tenant_id, pg_notify('{JOBS_CHANNEL}', '') FROM inserted"
        ));
        let inserted = q.build().fetch_optional(&self.pool).await?;
        inserted.map(|row| key(&row)).transpose()
    }

    async fn request_follow_up(
        &self,
        connection: ConnectionId,
        job_type: JobType,
    ) -> Result<Option<JobKey>, StoreError> {
        let marked: Option<(Uuid, Uuid)> = sqlx::query_as(
            "UPDATE sync_jobs SET follow_up = COALESCE(follow_up, $2) \
             WHERE connection_id = $1 AND lane = $3 AND status = 'running' \
             RETURNING id, tenant_id",
        )
        .bind(connection.0)
        .bind(job_type.as_str())
        .bind(job_type.lane())
        .fetch_optional(&self.pool)
        .await?;
        Ok(marked.map(JobKey::from))
    }

    async fn active_job(
        &self,
        connection: ConnectionId,
        lane: &str,
    ) -> Result<Option<JobKey>, StoreError> {
        let active: Option<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT id, tenant_id FROM sync_jobs WHERE connection_id = $1 \
             AND lane = $2 AND status IN ('queued', 'running')",
        )
        .bind(connection.0)
        .bind(lane)
        .fetch_optional(&self.pool)
        .await?;
        Ok(active.map(JobKey::from))
    }

    async fn lease_job(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        pick: JobPick,
    ) -> Result<Option<JobKey>, StoreError> {
        let (which, tenant) = pick.condition('$');
        let sql = format!(
            "UPDATE sync_jobs SET status = 'running', lease_owner = $1, lease_expires_at = $2, \
             attempts = attempts + 1, started_at = $3, updated_at = $3 \
             WHERE id = (SELECT id FROM sync_jobs WHERE {which} \
               ORDER BY scheduled_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING id, tenant_id"
        );
        let mut query = sqlx::query_as(&sql).bind(owner).bind(lease_until).bind(now);
        if let Some(tenant) = tenant {
            query = query.bind(tenant);
        }
        let leased: Option<(Uuid, Uuid)> = query.fetch_optional(&self.pool).await?;
        Ok(leased.map(JobKey::from))
    }

    async fn queued_tenants(
        &self,
        now: Timestamp,
        after: Option<Uuid>,
        max: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        // A walk over `sync_jobs_queued_by_tenant`: each step is one probe for the next tenant.
        let ready = "status = 'queued' AND scheduled_at <= $1";
        let sql = walk_tenants("sync_jobs", None, ready, after.is_some(), "$2", "$3");
        let mut query = sqlx::query_scalar(&sql).bind(now).bind(i64::from(max));
        if let Some(after) = after {
            query = query.bind(after);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn connection_metadata(
        &self,
        conn: &mut PgConnection,
        connection: ConnectionId,
    ) -> Result<Map<String, Value>, StoreError> {
        // Locked until the transaction ends, so a concurrent patch cannot be lost.
        let Json(metadata): Json<Map<String, Value>> =
            sqlx::query_scalar("SELECT metadata FROM connections WHERE id = $1 FOR UPDATE")
                .bind(connection.0)
                .fetch_one(conn)
                .await?;
        Ok(metadata)
    }

    async fn touch_connection(
        &self,
        conn: &mut PgConnection,
        tenant: TenantId,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let touched =
            sqlx::query("UPDATE connections SET updated_at = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(now)
                .bind(tenant.0)
                .bind(connection.0)
                .execute(conn)
                .await?
                .rows_affected();
        Ok(touched == 1)
    }

    async fn set_connection_metadata(
        &self,
        conn: &mut PgConnection,
        connection: ConnectionId,
        metadata: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE connections SET metadata = $1, updated_at = $2 WHERE id = $3")
            .bind(Json(metadata))
            .bind(now)
            .bind(connection.0)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn end_job(
        &self,
        conn: &mut PgConnection,
        lease: Lease<'_>,
        end: &JobEnd<'_>,
        now: Timestamp,
    ) -> Result<Option<EndedJob>, StoreError> {
        let row = sqlx::query(
            "UPDATE sync_jobs SET status = $1, lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = $2, finished_at = COALESCE($3, finished_at), \
             scheduled_at = COALESCE($4, scheduled_at), \
             error = CASE WHEN $6 THEN COALESCE($5, error) ELSE $5 END, \
             attempts = CASE WHEN $7 THEN GREATEST(attempts - 1, 0) ELSE attempts END, \
             follow_up = CASE WHEN $8 THEN NULL ELSE follow_up END \
             WHERE id = $9 AND lease_owner = $10 AND status = 'running' \
             RETURNING connection_id, follow_up, lane",
        )
        .bind(end.status.as_str())
        .bind(now)
        .bind(end.finished_at)
        .bind(end.scheduled_at)
        .bind(end.error)
        .bind(end.keep_error)
        .bind(end.uncount_attempt)
        .bind(end.drop_follow_up)
        .bind(lease.job.0)
        .bind(lease.owner)
        .fetch_optional(conn)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(EndedJob {
            connection: ConnectionId(row.try_get("connection_id")?),
            follow_up: row.try_get::<Option<String>, _>("follow_up")?.is_some(),
            lane: row.try_get("lane")?,
        }))
    }

    async fn queue_follow_up(
        &self,
        conn: &mut PgConnection,
        after: JobId,
        id: JobId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let queued = sqlx::query(&format!(
            "WITH inserted AS (INSERT INTO sync_jobs (id, tenant_id, connection_id, \
             provider, job_type, status, attempts, max_attempts, scheduled_at, \
             created_at, updated_at, lane) \
             SELECT $1, tenant_id, connection_id, provider, follow_up, 'queued', 0, \
             max_attempts, $2, $2, $2, lane FROM sync_jobs WHERE id = $3 AND EXISTS \
             (SELECT 1 FROM connections c WHERE c.id = sync_jobs.connection_id \
             AND c.status = 'active'){UNLESS_LANE_TAKEN} RETURNING id) \
             SELECT id, pg_notify('{JOBS_CHANNEL}', '') FROM inserted"
        ))
        .bind(id.0)
        .bind(now)
        .bind(after.0)
        .fetch_optional(conn)
        .await?;
        Ok(queued.is_some())
    }

    async fn record_sync_success(
        &self,
        conn: &mut PgConnection,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET last_synced_at = $1, last_error = NULL, updated_at = $1 \
             WHERE id = $2",
        )
        .bind(now)
        .bind(connection.0)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn record_sync_failure(
        &self,
        conn: &mut PgConnection,
        connection: ConnectionId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE connections SET last_error = $1, updated_at = $2 WHERE id = $3")
            .bind(error)
            .bind(now)
            .bind(connection.0)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// The job a statement's `RETURNING id, tenant_id` named (read by name: the statement may
/// return more columns).
fn key(row: &sqlx::postgres::PgRow) -> Result<JobKey, StoreError> {
    Ok(JobKey::from((
        row.try_get("id")?,
        row.try_get("tenant_id")?,
    )))
}

/// [`SyncQueue::commit_sync_page`]: the page in a transaction of its own. The job row first: it
/// stays locked, so no takeover interleaves, until the page is committed.
async fn commit_page(
    store: &PostgresStore,
    lease: Lease<'_>,
    connection: ConnectionId,
    page: &SyncCommit<'_>,
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<PageCommit, StoreError> {
    let mut tx = store.pool.begin().await?;
    if !extend_lease_while_active(&mut tx, lease, lease_until, now).await? {
        let held = lease_held(&mut tx, lease).await?;
        tx.rollback().await?;
        return Ok(if held {
            PageCommit::ConnectionInactive
        } else {
            PageCommit::LeaseLost
        });
    }
    if let Some(patch) = page.metadata {
        let mut metadata = store.connection_metadata(&mut tx, connection).await?;
        merge_metadata(&mut metadata, patch.clone());
        store
            .set_connection_metadata(&mut tx, connection, &metadata, now)
            .await?;
    }
    store_cursor(&mut tx, connection, page.cursor, now).await?;
    // Last: the signals' events hold the outbox lock until the commit.
    let inserted = store.insert_signals(&mut tx, page.signals).await?;
    tx.commit().await?;
    if inserted > 0 {
        store.push_events_committed();
    }
    Ok(PageCommit::Stored(inserted))
}

/// Extends the lease while it is ours and the job's connection is `active`; `false`
/// otherwise. A write to the job row, so it locks it.
async fn extend_lease_while_active(
    conn: &mut PgConnection,
    lease: Lease<'_>,
    lease_until: Timestamp,
    now: Timestamp,
) -> Result<bool, StoreError> {
    // The connection row is not locked: a disconnect committed while the page is written
    // lands after it, and the next page stops.
    let done = sqlx::query(
        "UPDATE sync_jobs SET lease_expires_at = $1, updated_at = $2 \
         WHERE id = $3 AND lease_owner = $4 AND status = 'running' AND EXISTS (SELECT 1 FROM \
         connections c WHERE c.id = sync_jobs.connection_id AND c.status = 'active')",
    )
    .bind(lease_until)
    .bind(now)
    .bind(lease.job.0)
    .bind(lease.owner)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether the lease is still ours.
async fn lease_held(conn: &mut PgConnection, lease: Lease<'_>) -> Result<bool, StoreError> {
    let held = sqlx::query(
        "SELECT 1 FROM sync_jobs WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
    )
    .bind(lease.job.0)
    .bind(lease.owner)
    .fetch_optional(conn)
    .await?;
    Ok(held.is_some())
}

/// Stores a connection's sync cursor.
async fn store_cursor(
    conn: &mut PgConnection,
    connection: ConnectionId,
    cursor: &Value,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sync_cursors (connection_id, cursor, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (connection_id) DO UPDATE SET cursor = excluded.cursor, \
         updated_at = excluded.updated_at",
    )
    .bind(connection.0)
    .bind(Json(cursor))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
