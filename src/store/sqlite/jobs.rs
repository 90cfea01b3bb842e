//! Sync job rows on SQLite.

use sqlx::query_builder::Separated;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::{opt_time, time};
use crate::domain::{to_micros, ConnectionId, Job, JobId, NewJob, TenantId};
use crate::store::shared::queue::JOB_INSERT_COLUMNS;
use crate::store::{JobFilter, PageRequest, StoreError};

const COLUMNS: &str = "id, tenant_id, connection_id, provider, job_type, status, attempts, \
     max_attempts, scheduled_at, started_at, finished_at, error, follow_up, created_at, updated_at";

pub(super) async fn insert(pool: &SqlitePool, new: &NewJob) -> Result<Job, StoreError> {
    let mut q =
        QueryBuilder::<Sqlite>::new(format!("INSERT INTO sync_jobs ({JOB_INSERT_COLUMNS}) "));
    q.push_values([new], bind_job);
    q.push(format!(" RETURNING {COLUMNS}"));
    let row = q.build().fetch_one(pool).await?;
    decode(&row)
}

/// Binds `new`'s values in the order of [`JOB_INSERT_COLUMNS`].
pub(super) fn bind_job<'args>(
    mut b: Separated<'_, 'args, Sqlite, &'static str>,
    new: &'args NewJob,
) {
    let created = to_micros(&new.created_at);
    b.push_bind(new.id.0)
        .push_bind(new.tenant_id.0)
        .push_bind(new.connection_id.0)
        .push_bind(&new.provider)
        .push_bind(new.job_type.as_str())
        .push_bind(new.status.as_str())
        .push_bind(new.attempts)
        .push_bind(new.max_attempts)
        .push_bind(to_micros(&new.scheduled_at))
        .push_bind(new.started_at.as_ref().map(to_micros))
        .push_bind(new.finished_at.as_ref().map(to_micros))
        .push_bind(&new.error)
        .push_bind(created)
        .push_bind(created)
        .push_bind(new.job_type.lane());
}

pub(super) async fn get(
    pool: &SqlitePool,
    tenant: TenantId,
    id: JobId,
) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM sync_jobs WHERE tenant_id = ? AND id = ?");
    let row = sqlx::query(&sql)
        .bind(tenant.0)
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn list(
    pool: &SqlitePool,
    tenant: TenantId,
    filter: &JobFilter,
    page: PageRequest,
) -> Result<Vec<Job>, StoreError> {
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {COLUMNS} FROM sync_jobs WHERE tenant_id = "
    ));
    q.push_bind(tenant.0);
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(provider) = &filter.provider {
        q.push(" AND provider = ").push_bind(provider.clone());
    }
    if let Some(connection) = filter.connection_id {
        q.push(" AND connection_id = ").push_bind(connection.0);
    }
    if let Some(job_type) = filter.job_type {
        q.push(" AND job_type = ").push_bind(job_type.as_str());
    }
    if let Some(started) = &filter.started_after {
        q.push(" AND started_at >= ").push_bind(to_micros(started));
    }
    if let Some(finished) = &filter.finished_after {
        q.push(" AND finished_at >= ")
            .push_bind(to_micros(finished));
    }
    if let Some(key) = page.after {
        let at = to_micros(&key.at);
        q.push(" AND created_at <= ").push_bind(at);
        q.push(" AND (created_at < ").push_bind(at);
        q.push(" OR id < ").push_bind(key.id).push(")");
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(page.fetch));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(decode).collect()
}

fn decode(row: &SqliteRow) -> Result<Job, StoreError> {
    let job_type: String = row.try_get("job_type")?;
    let status: String = row.try_get("status")?;
    Ok(Job {
        id: JobId(row.try_get::<Uuid, _>("id")?),
        tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
        connection_id: ConnectionId(row.try_get::<Uuid, _>("connection_id")?),
        provider: row.try_get("provider")?,
        job_type: job_type
            .parse()
            .map_err(|e| StoreError::corrupt("job_type", e))?,
        status: status
            .parse()
            .map_err(|e| StoreError::corrupt("status", e))?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        scheduled_at: time("scheduled_at", row.try_get("scheduled_at")?)?,
        started_at: opt_time("started_at", row.try_get("started_at")?)?,
        finished_at: opt_time("finished_at", row.try_get("finished_at")?)?,
        error: row.try_get("error")?,
        follow_up: row
            .try_get::<Option<String>, _>("follow_up")?
            .map(|t| t.parse())
            .transpose()
            .map_err(|e| StoreError::corrupt("follow_up", e))?,
        created_at: time("created_at", row.try_get("created_at")?)?,
        updated_at: time("updated_at", row.try_get("updated_at")?)?,
    })
}
