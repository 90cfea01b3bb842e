//! `GET /jobs` and `GET /jobs/{id}`: a tenant's sync jobs, newest first.

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::connections::provider_filter;
use super::errors::{ItemErrors, ListErrors};
use crate::domain::{format_time, ConnectionId, Job, JobId, JobStatus, JobType};
use crate::http::cursor::CursorScope;
use crate::http::query::{self, QueryParams};
use crate::http::{ApiError, AppState, ErrorCode, IdPath, Tenant, TenantHeader};
use crate::store::{JobFilter, PageKey};

/// A sync job.
#[derive(Serialize, ToSchema)]
pub struct JobView {
    #[schema(value_type = uuid::Uuid)]
    id: JobId,
    #[schema(value_type = uuid::Uuid)]
    connection_id: ConnectionId,
    /// Provider slug.
    provider: String,
    job_type: JobType,
    status: JobStatus,
    /// Attempts made so far.
    attempts: i32,
    /// Attempts allowed before the job fails.
    max_attempts: i32,
    /// When the job may run next.
    scheduled_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    /// The last attempt's error.
    error: Option<String>,
    /// A sync of the connection was asked for (`POST /connections/{id}/sync`, or a provider
    /// notification) while this job was running, after it may have read its last page: when
    /// it succeeds, another job of the connection is queued (`GET /jobs?connection_id=...`).
    /// A job that fails queues none; the connection's next scheduled sync follows.
    follow_up_requested: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        Self {
            id: j.id,
            connection_id: j.connection_id,
            provider: j.provider,
            job_type: j.job_type,
            status: j.status,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            scheduled_at: j.scheduled_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            error: j.error,
            follow_up_requested: j.follow_up.is_some(),
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

/// A page of jobs, newest first.
#[derive(Serialize, ToSchema)]
pub struct JobList {
    jobs: Vec<JobView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Query parameters of `GET /jobs`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct JobsQuery {
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs of this provider.
    provider: Option<String>,
    /// Only jobs of this connection.
    #[param(value_type = Option<uuid::Uuid>)]
    connection_id: Option<String>,
    /// Only jobs of this type.
    #[param(value_type = Option<JobType>)]
    job_type: Option<String>,
    /// Only jobs started at or after this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    started_after: Option<String>,
    /// Only jobs finished at or after this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    finished_after: Option<String>,
    /// Page size, 1 to 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page, with the same filters.
    cursor: Option<String>,
}

/// The tenant's sync jobs, newest first (`created_at`, then id), with filters.
#[utoipa::path(
    get,
    path = "/jobs",
    tag = "jobs",
    params(TenantHeader, JobsQuery),
    security(("operator_token" = [])),
    responses((status = 200, body = JobList), ListErrors)
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RawQuery(raw): RawQuery,
) -> Result<Json<JobList>, ApiError> {
    let mut q = QueryParams::parse::<JobsQuery>(raw.as_deref());
    let filter = JobFilter {
        status: q.take("status", query::one_of::<JobStatus>),
        provider: q.take("provider", provider_filter(&state.registry)),
        connection_id: q.take("connection_id", query::uuid::<ConnectionId>),
        job_type: q.take("job_type", query::one_of::<JobType>),
        started_after: q.take("started_after", query::timestamp),
        finished_after: q.take("finished_after", query::timestamp),
    };
    let scope = CursorScope::new(
        "jobs",
        tenant,
        &[
            ("status", filter.status.map(|s| s.to_string())),
            ("provider", filter.provider.clone()),
            ("connection_id", filter.connection_id.map(|c| c.to_string())),
            ("job_type", filter.job_type.map(|t| t.to_string())),
            (
                "started_after",
                filter.started_after.as_ref().map(format_time),
            ),
            (
                "finished_after",
                filter.finished_after.as_ref().map(format_time),
            ),
        ],
    );
    let paging = q.paging(&state.cursors, &scope)?;
    let rows = state
        .store
        .list_jobs(tenant, &filter, paging.request())
        .await?;
    let key = |j: &Job| PageKey {
        at: j.created_at,
        id: j.id.0,
    };
    let (rows, next_cursor) = paging.finish(rows, key, &state.cursors, &scope);
    Ok(Json(JobList {
        jobs: rows.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

/// One sync job of the tenant.
#[utoipa::path(
    get,
    path = "/jobs/{id}",
    tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "Job id"), TenantHeader),
    security(("operator_token" = [])),
    responses((status = 200, body = JobView), ItemErrors)
)]
pub async fn get_job(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath<JobId>,
) -> Result<Json<JobView>, ApiError> {
    let job = state
        .store
        .get_job(tenant, id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such job"))?;
    Ok(Json(job.into()))
}
