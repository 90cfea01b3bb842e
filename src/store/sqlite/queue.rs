//! The sync job queue's statements on SQLite (the rules are in `store::shared::queue`).
//! Writers are serialized by the database, so claiming is one
//! `UPDATE ... WHERE id = (SELECT ...) RETURNING`: the choice and the lease happen atomically.
//! Timestamps are INTEGER microseconds.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::connections::{decode as decode_connection, COLUMNS as CONNECTION_COLUMNS};
use super::{jobs, pages, SqliteStore};
use crate::domain::{
    to_micros, Connection, ConnectionId, Job, JobId, JobType, NewJob, TenantId, Timestamp,
};
use crate::store::shared::queue::{
    self, EndedJob, JobEnd, JobKey, JobPick, QueueDialect, JOB_INSERT_COLUMNS, UNLESS_LANE_TAKEN,
};
use crate::store::shared::turns::walk_tenants;
use crate::store::{
    Enqueued, Finished, IfRunning, JobFinish, Lease, PageCommit, StoreError, SyncCommit, SyncQueue,
};

/// The tenants with a queued job due, after `?3` when `anchored`: a walk over
/// `sync_jobs_queued_by_tenant` (migration 0007), each step one probe for the next tenant.
fn queued_tenants_sql(anchored: bool) -> String {
    walk_tenants(
        "sync_jobs",
        Some("sync_jobs_queued_by_tenant"),
        "status = 'queued' AND scheduled_at <= ?1",
        anchored,
        "?2",
        "?3",
    )
}

#[async_trait]
impl SyncQueue for SqliteStore {
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
        let _turn = self.gate.lock().await;
        let done = sqlx::query(
            "UPDATE sync_jobs SET lease_expires_at = ?, updated_at = ? \
             WHERE id = ? AND lease_owner = ? AND status = 'running'",
        )
        .bind(to_micros(&lease_until))
        .bind(to_micros(&now))
        .bind(lease.job.0)
        .bind(lease.owner)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn sync_cursor(&self, connection: ConnectionId) -> Result<Option<Value>, StoreError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT cursor FROM sync_cursors WHERE connection_id = ?")
                .bind(connection.0)
                .fetch_optional(&self.pool)
                .await?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::corrupt("cursor", e)))
            .transpose()
    }

    async fn commit_sync_page(
        &self,
        lease: Lease<'_>,
        connection: ConnectionId,
        page: &SyncCommit<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<PageCommit, StoreError> {
        // Encoded here, by the job, and committed with the pages of other jobs waiting meanwhile.
        let page = pages::Page::encode(lease, connection, page, lease_until, now)?;
        self.pages.commit(page).await
    }

    async fn finish_sync_job(
        &self,
        lease: Lease<'_>,
        finish: JobFinish<'_>,
        now: Timestamp,
    ) -> Result<Finished, StoreError> {
        let _turn = self.gate.lock().await;
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
        // One range on the expression of the index `connections_due` (migration
        // 0008), in its order: an unset next sync is 0, due before any other.
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE status = 'active' \
             AND coalesce(next_sync_at, 0) <= "
        ));
        q.push_bind(to_micros(&now)).push(" AND provider IN (");
        let mut list = q.separated(", ");
        for provider in providers {
            list.push_bind(provider.to_string());
        }
        q.push(") ORDER BY coalesce(next_sync_at, 0), id LIMIT ")
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
            "UPDATE connections SET next_sync_at = ? WHERE id = ? \
             AND (next_sync_at IS NULL OR next_sync_at <= ?)",
        )
        .bind(to_micros(&next))
        .bind(connection.0)
        .bind(to_micros(&now))
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
        let mut q = QueryBuilder::<Sqlite>::new("WITH v(id, next) AS (");
        q.push_values(due, |mut b, (id, next)| {
            b.push_bind(id.0).push_bind(to_micros(next));
        });
        q.push(
            ") UPDATE connections SET next_sync_at = v.next FROM v \
             WHERE connections.id = v.id \
             AND (connections.next_sync_at IS NULL OR connections.next_sync_at <= ",
        )
        .push_bind(to_micros(&now))
        .push(") RETURNING connections.id");
        let _turn = self.gate.lock().await;
        let moved: Vec<Uuid> = q.build_query_scalar().fetch_all(&self.writer).await?;
        Ok(moved.into_iter().map(ConnectionId).collect())
    }

    async fn enqueue_syncs(&self, jobs: &[NewJob]) -> Result<u64, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO sync_jobs ({JOB_INSERT_COLUMNS}) "));
        q.push_values(jobs, jobs::bind_job);
        q.push(UNLESS_LANE_TAKEN);
        let _turn = self.gate.lock().await;
        let done = q.build().execute(&self.writer).await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl QueueDialect for SqliteStore {
    async fn job(&self, key: JobKey) -> Result<Option<Job>, StoreError> {
        jobs::get(&self.pool, key.tenant, key.id).await
    }

    async fn insert_unless_active(&self, new: &NewJob) -> Result<Option<JobKey>, StoreError> {
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO sync_jobs ({JOB_INSERT_COLUMNS}) "));
        q.push_values([new], jobs::bind_job);
        q.push(UNLESS_LANE_TAKEN).push(" RETURNING id, tenant_id");
        let inserted: Option<(Uuid, Uuid)> = q.build_query_as().fetch_optional(&self.pool).await?;
        Ok(inserted.map(JobKey::from))
    }

    async fn request_follow_up(
        &self,
        connection: ConnectionId,
        job_type: JobType,
    ) -> Result<Option<JobKey>, StoreError> {
        let marked: Option<(Uuid, Uuid)> = sqlx::query_as(
            "UPDATE sync_jobs SET follow_up = COALESCE(follow_up, ?) \
             WHERE connection_id = ? AND lane = ? AND status = 'running' \
             RETURNING id, tenant_id",
        )
        .bind(job_type.as_str())
        .bind(connection.0)
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
            "SELECT id, tenant_id FROM sync_jobs WHERE connection_id = ? \
             AND lane = ? AND status IN ('queued', 'running')",
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
        let (which, tenant) = pick.condition('?');
        let sql = format!(
            "UPDATE sync_jobs SET status = 'running', lease_owner = ?1, lease_expires_at = ?2, \
             attempts = attempts + 1, started_at = ?3, updated_at = ?3 \
             WHERE id = (SELECT id FROM sync_jobs WHERE {which} \
               ORDER BY scheduled_at, id LIMIT 1) \
             RETURNING id, tenant_id"
        );
        let mut query = sqlx::query_as(&sql)
            .bind(owner)
            .bind(to_micros(&lease_until))
            .bind(to_micros(&now));
        if let Some(tenant) = tenant {
            query = query.bind(tenant);
        }
        // A write (even when it leases nothing): its turn on the writer's connection, after
        // the commit holding SQLite's lock, instead of sleeping in SQLite's busy handler.
        let _turn = self.gate.lock().await;
        let leased: Option<(Uuid, Uuid)> = query.fetch_optional(&self.writer).await?;
        Ok(leased.map(JobKey::from))
    }

    async fn queued_tenants(
        &self,
        now: Timestamp,
        after: Option<Uuid>,
        max: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        let sql = queued_tenants_sql(after.is_some());
        let mut query = sqlx::query_scalar(&sql)
            .bind(to_micros(&now))
            .bind(i64::from(max));
        if let Some(after) = after {
            query = query.bind(after);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn connection_metadata(
        &self,
        conn: &mut SqliteConnection,
        connection: ConnectionId,
    ) -> Result<Map<String, Value>, StoreError> {
        connection_metadata(conn, connection.0).await
    }

    async fn touch_connection(
        &self,
        conn: &mut SqliteConnection,
        tenant: TenantId,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let touched =
            sqlx::query("UPDATE connections SET updated_at = ? WHERE tenant_id = ? AND id = ?")
                .bind(to_micros(&now))
                .bind(tenant.0)
                .bind(connection.0)
                .execute(conn)
                .await?
                .rows_affected();
        Ok(touched == 1)
    }

    async fn set_connection_metadata(
        &self,
        conn: &mut SqliteConnection,
        connection: ConnectionId,
        metadata: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        set_connection_metadata(conn, connection.0, metadata, to_micros(&now)).await
    }

    async fn end_job(
        &self,
        conn: &mut SqliteConnection,
        lease: Lease<'_>,
        end: &JobEnd<'_>,
        now: Timestamp,
    ) -> Result<Option<EndedJob>, StoreError> {
        let row = sqlx::query(
            "UPDATE sync_jobs SET status = ?1, lease_owner = NULL, lease_expires_at = NULL, \
             updated_at = ?2, finished_at = COALESCE(?3, finished_at), \
             scheduled_at = COALESCE(?4, scheduled_at), \
             error = CASE WHEN ?6 THEN COALESCE(?5, error) ELSE ?5 END, \
             attempts = CASE WHEN ?7 THEN MAX(attempts - 1, 0) ELSE attempts END, \
             follow_up = CASE WHEN ?8 THEN NULL ELSE follow_up END \
             WHERE id = ?9 AND lease_owner = ?10 AND status = 'running' \
             RETURNING connection_id, follow_up, lane",
        )
        .bind(end.status.as_str())
        .bind(to_micros(&now))
        .bind(end.finished_at.as_ref().map(to_micros))
        .bind(end.scheduled_at.as_ref().map(to_micros))
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
        conn: &mut SqliteConnection,
        after: JobId,
        id: JobId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let queued = sqlx::query(&format!(
            "INSERT INTO sync_jobs (id, tenant_id, connection_id, provider, job_type, \
             status, attempts, max_attempts, scheduled_at, created_at, updated_at, lane) \
             SELECT ?1, tenant_id, connection_id, provider, follow_up, 'queued', 0, \
             max_attempts, ?2, ?2, ?2, lane FROM sync_jobs WHERE id = ?3 AND EXISTS (SELECT 1 \
             FROM connections c WHERE c.id = sync_jobs.connection_id AND c.status = 'active')\
             {UNLESS_LANE_TAKEN}"
        ))
        .bind(id.0)
        .bind(to_micros(&now))
        .bind(after.0)
        .execute(conn)
        .await?;
        Ok(queued.rows_affected() == 1)
    }

    async fn record_sync_success(
        &self,
        conn: &mut SqliteConnection,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET last_synced_at = ?1, last_error = NULL, updated_at = ?1 \
             WHERE id = ?2",
        )
        .bind(to_micros(&now))
        .bind(connection.0)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn record_sync_failure(
        &self,
        conn: &mut SqliteConnection,
        connection: ConnectionId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE connections SET last_error = ?, updated_at = ? WHERE id = ?")
            .bind(error)
            .bind(to_micros(&now))
            .bind(connection.0)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Whether `owner` still holds the lease on the running job `job`.
pub(super) async fn lease_held(
    conn: &mut SqliteConnection,
    job: Uuid,
    owner: &str,
) -> Result<bool, StoreError> {
    let held = sqlx::query(
        "SELECT 1 FROM sync_jobs WHERE id = ? AND lease_owner = ? AND status = 'running'",
    )
    .bind(job)
    .bind(owner)
    .fetch_optional(conn)
    .await?;
    Ok(held.is_some())
}

/// The metadata of `connection`, read inside a write transaction (which holds the write
/// lock: nothing changes the row meanwhile).
pub(super) async fn connection_metadata(
    conn: &mut SqliteConnection,
    connection: Uuid,
) -> Result<Map<String, Value>, StoreError> {
    let text: String = sqlx::query_scalar("SELECT metadata FROM connections WHERE id = ?")
        .bind(connection)
        .fetch_one(conn)
        .await?;
    serde_json::from_str(&text).map_err(|e| StoreError::corrupt("metadata", e))
}

pub(super) async fn set_connection_metadata(
    conn: &mut SqliteConnection,
    connection: Uuid,
    metadata: &Map<String, Value>,
    now: i64,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(metadata).map_err(|e| StoreError::corrupt("metadata", e))?;
    sqlx::query("UPDATE connections SET metadata = ?, updated_at = ? WHERE id = ?")
        .bind(text)
        .bind(now)
        .bind(connection)
        .execute(conn)
        .await?;
    Ok(())
}

/// Sets each connection's sync cursor (JSON text) as of its instant, in one statement.
pub(super) async fn store_cursors(
    conn: &mut SqliteConnection,
    cursors: &[(Uuid, &str, i64)],
) -> Result<(), StoreError> {
    if cursors.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO sync_cursors (connection_id, cursor, updated_at) ",
    );
    q.push_values(cursors, |mut b, (connection, cursor, at)| {
        b.push_bind(*connection).push_bind(*cursor).push_bind(*at);
    });
    q.push(
        " ON CONFLICT (connection_id) DO UPDATE SET cursor = excluded.cursor, \
         updated_at = excluded.updated_at",
    );
    q.build().execute(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::queued_tenants_sql;
    use crate::store::sqlite::plans::assert_walks_through;

    #[tokio::test]
    async fn the_tenants_with_queued_jobs_are_walked_through_their_index_without_a_sort() {
        assert_walks_through(queued_tenants_sql, "sync_jobs_queued_by_tenant").await;
    }
}
