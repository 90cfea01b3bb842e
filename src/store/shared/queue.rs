//! The sync job queue's rules, once for both databases: enqueuing (insert the job or find the
//! connection's active one in its lane, asking a running one for a follow-up), claiming, and
//! what finishing a job does to the job, its follow-up and its connection. [`QueueDialect`] is
//! the SQL each store runs for the steps. Committing a page under its lease is each store's
//! own (PostgreSQL one page a transaction, SQLite the pages waiting together).

use async_trait::async_trait;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{turns, Conn, Dialect};
use crate::domain::{
    merge_metadata, ConnectionId, Job, JobId, JobStatus, JobType, NewJob, TenantId, Timestamp,
};
use crate::store::{Enqueued, Finished, IfRunning, JobFinish, Lease, StoreError};

/// A job named by a statement's `RETURNING id, tenant_id`, to be read whole afterwards.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobKey {
    pub id: JobId,
    pub tenant: TenantId,
}

impl From<(Uuid, Uuid)> for JobKey {
    /// From the `(id, tenant_id)` a statement returned.
    fn from((id, tenant): (Uuid, Uuid)) -> Self {
        Self {
            id: JobId(id),
            tenant: TenantId(tenant),
        }
    }
}

/// Which jobs a claim may lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobPick {
    /// A `running` job whose lease ran out: its worker died or stalled.
    Abandoned,
    /// A `queued` job of this tenant that is due.
    OfTenant(TenantId),
    /// Any due `queued` job, or an abandoned one.
    Any,
}

impl JobPick {
    /// The where-clause choosing the jobs this pick may lease, in a dialect whose numbered
    /// placeholders start with `mark` (`?` or `$`): parameter 3 is the time now and 4 the
    /// tenant, returned with it when the clause binds one.
    pub(crate) fn condition(self, mark: char) -> (String, Option<Uuid>) {
        let abandoned = format!(
            "status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < {mark}3)"
        );
        match self {
            JobPick::Abandoned => (abandoned, None),
            JobPick::OfTenant(t) => (
                format!("status = 'queued' AND scheduled_at <= {mark}3 AND tenant_id = {mark}4"),
                Some(t.0),
            ),
            JobPick::Any => (
                format!("(status = 'queued' AND scheduled_at <= {mark}3) OR ({abandoned})"),
                None,
            ),
        }
    }
}

/// How many tenants one claim tries in turn before it takes any tenant's job: more than one,
/// because instances sharing the database may take a tenant's last ready job meanwhile.
const TENANTS_PER_CLAIM: u32 = 4;

/// The columns a job is inserted with, in the order both dialects bind them.
pub(crate) const JOB_INSERT_COLUMNS: &str = "id, tenant_id, connection_id, provider, job_type, \
     status, attempts, max_attempts, scheduled_at, started_at, finished_at, error, created_at, \
     updated_at, lane";

/// What a job insert appends so that a connection keeps one queued or running job per lane:
/// the insert of a job whose lane is taken does nothing.
pub(crate) const UNLESS_LANE_TAKEN: &str =
    " ON CONFLICT (connection_id, lane) WHERE status IN ('queued', 'running') DO NOTHING";

/// What ending (or requeuing) a leased job left on its row.
#[derive(Clone, Debug)]
pub(crate) struct EndedJob {
    pub connection: ConnectionId,
    /// Whether a follow-up was requested while the job ran.
    pub follow_up: bool,
    pub lane: String,
}

/// The row a [`JobFinish`] leaves: what each way of finishing means, spelled out for the
/// dialects' one `UPDATE` (which also drops the lease, and matches only a job still `running`
/// under it).
#[derive(Clone, Copy, Debug)]
pub(crate) struct JobEnd<'a> {
    pub status: JobStatus,
    /// Set for a job that ended; a requeued one keeps its `finished_at`.
    pub finished_at: Option<Timestamp>,
    /// When a requeued job is due again; an ended one keeps its `scheduled_at`.
    pub scheduled_at: Option<Timestamp>,
    /// The job's error from now on (`None` clears it, unless `keep_error`).
    pub error: Option<&'a str>,
    /// Keep the job's error when `error` is `None`.
    pub keep_error: bool,
    /// Give back the attempt the claim counted.
    pub uncount_attempt: bool,
    /// Drop a requested follow-up: a requeued job's next attempt starts after the request.
    pub drop_follow_up: bool,
}

impl<'a> JobEnd<'a> {
    pub(crate) fn of(finish: JobFinish<'a>, now: Timestamp) -> Self {
        let requeued = |at, error, keep_error, uncount_attempt| JobEnd {
            status: JobStatus::Queued,
            finished_at: None,
            scheduled_at: Some(at),
            error,
            keep_error,
            uncount_attempt,
            drop_follow_up: true,
        };
        let ended = |status, error| JobEnd {
            status,
            finished_at: Some(now),
            scheduled_at: None,
            error,
            keep_error: false,
            uncount_attempt: false,
            drop_follow_up: false,
        };
        match finish {
            JobFinish::Succeeded => ended(JobStatus::Succeeded, None),
            JobFinish::Retry { at, error } => requeued(at, Some(error), false, false),
            // A deferral is no attempt: it is given back, and the error stays unless noted.
            JobFinish::Defer { at, note } => requeued(at, note, true, true),
            JobFinish::Failed { error } => ended(JobStatus::Failed, Some(error)),
        }
    }
}

/// The statements of the sync job queue, in one store's SQL. Each runs one statement; those
/// taking `conn` run inside the caller's transaction.
#[async_trait]
pub(crate) trait QueueDialect: Dialect {
    /// A job of this tenant.
    async fn job(&self, key: JobKey) -> Result<Option<Job>, StoreError>;

    /// Inserts `new` unless its connection has a queued or running job in the same lane;
    /// names the new job. Idle workers hear of it once it commits (PostgreSQL).
    async fn insert_unless_active(&self, new: &NewJob) -> Result<Option<JobKey>, StoreError>;

    /// Asks the connection's running job in `job_type`'s lane for a follow-up of `job_type`,
    /// unless it has been asked for one already; names that job.
    async fn request_follow_up(
        &self,
        connection: ConnectionId,
        job_type: JobType,
    ) -> Result<Option<JobKey>, StoreError>;

    /// The connection's queued or running job in `lane`.
    async fn active_job(
        &self,
        connection: ConnectionId,
        lane: &str,
    ) -> Result<Option<JobKey>, StoreError>;

    /// Leases the oldest job that `pick` allows, in one statement so that choosing it and
    /// leasing it are atomic.
    async fn lease_job(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        pick: JobPick,
    ) -> Result<Option<JobKey>, StoreError>;

    /// Up to `max` tenants with a queued job due at `now`, in tenant-id order, after `after`
    /// (from the lowest with `None`).
    async fn queued_tenants(
        &self,
        now: Timestamp,
        after: Option<Uuid>,
        max: u32,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// A connection's metadata, read to be written back in the same transaction (locking the
    /// row where the database can).
    async fn connection_metadata(
        &self,
        conn: &mut Conn<Self>,
        connection: ConnectionId,
    ) -> Result<Map<String, Value>, StoreError>;

    /// Touches one of the tenant's connections (its `updated_at`) as the first statement of a
    /// transaction that goes on to change it, so the transaction holds the row (and, on
    /// SQLite, the write lock) from the start; `false` when the tenant has no such connection.
    async fn touch_connection(
        &self,
        conn: &mut Conn<Self>,
        tenant: TenantId,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Replaces a connection's metadata.
    async fn set_connection_metadata(
        &self,
        conn: &mut Conn<Self>,
        connection: ConnectionId,
        metadata: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Writes `end` on the job and drops its lease, if it is still `running` under `lease`;
    /// `None` when it is not.
    async fn end_job(
        &self,
        conn: &mut Conn<Self>,
        lease: Lease<'_>,
        end: &JobEnd<'_>,
        now: Timestamp,
    ) -> Result<Option<EndedJob>, StoreError>;

    /// Queues job `id`, due now, of the follow-up type requested of job `after`, in its lane, if
    /// the connection is still `active` and the lane free; `false` when nothing was queued.
    /// Idle workers hear of it once it commits (PostgreSQL).
    async fn queue_follow_up(
        &self,
        conn: &mut Conn<Self>,
        after: JobId,
        id: JobId,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// The connection synced: `last_synced_at` becomes `now`, `last_error` is cleared.
    async fn record_sync_success(
        &self,
        conn: &mut Conn<Self>,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// The connection's sync gave up: `last_error` shows why.
    async fn record_sync_failure(
        &self,
        conn: &mut Conn<Self>,
        connection: ConnectionId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;
}

/// Reads a job a statement just named.
async fn reread<S: QueueDialect>(store: &S, key: JobKey) -> Result<Job, StoreError> {
    store
        .job(key)
        .await?
        .ok_or_else(|| StoreError::corrupt("sync_jobs", "job vanished after being written"))
}

/// [`crate::store::SyncQueue::enqueue_sync`].
pub(crate) async fn enqueue<S: QueueDialect>(
    store: &S,
    new: &NewJob,
    if_running: IfRunning,
) -> Result<Enqueued, StoreError> {
    // A finished job may free the slot between the insert and the look-up: try again then.
    for _ in 0..5 {
        if let Some(key) = store.insert_unless_active(new).await? {
            let job = reread(store, key).await?;
            return Ok(Enqueued { job, created: true });
        }
        let marked = match if_running {
            IfRunning::Join => None,
            IfRunning::FollowUp => {
                store
                    .request_follow_up(new.connection_id, new.job_type)
                    .await?
            }
        };
        let active = match marked {
            Some(key) => Some(key),
            None => {
                store
                    .active_job(new.connection_id, new.job_type.lane())
                    .await?
            }
        };
        if let Some(key) = active {
            let job = reread(store, key).await?;
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

/// [`crate::store::SyncQueue::claim_sync_job`].
pub(crate) async fn claim<S: QueueDialect>(
    store: &S,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<Job>, StoreError> {
    // A job whose worker died goes first: it has waited its whole lease already.
    if let Some(key) = store
        .lease_job(owner, now, lease_until, JobPick::Abandoned)
        .await?
    {
        return Ok(Some(reread(store, key).await?));
    }
    // Then tenants take turns (`store::shared::turns`), so no backlog starves anyone.
    let turn = &store.turns().jobs;
    let tenants = turns::in_turn(turn.last(), TENANTS_PER_CLAIM, |after, max| {
        store.queued_tenants(now, after, max)
    })
    .await?;
    for tenant in tenants {
        turn.served(tenant);
        let pick = JobPick::OfTenant(TenantId(tenant));
        if let Some(key) = store.lease_job(owner, now, lease_until, pick).await? {
            return Ok(Some(reread(store, key).await?));
        }
    }
    // Other instances took those tenants' due jobs meanwhile: the oldest of anyone's.
    match store
        .lease_job(owner, now, lease_until, JobPick::Any)
        .await?
    {
        Some(key) => Ok(Some(reread(store, key).await?)),
        None => Ok(None),
    }
}

/// [`crate::store::Store::patch_connection_metadata`].
pub(crate) async fn patch_metadata<S: QueueDialect>(
    store: &S,
    tenant: TenantId,
    connection: ConnectionId,
    patch: &Map<String, Value>,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let mut tx = store.write_pool().begin().await?;
    if !store
        .touch_connection(&mut tx, tenant, connection, now)
        .await?
    {
        tx.rollback().await?;
        return Ok(false);
    }
    let mut metadata = store.connection_metadata(&mut tx, connection).await?;
    merge_metadata(&mut metadata, patch.clone());
    store
        .set_connection_metadata(&mut tx, connection, &metadata, now)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// [`crate::store::SyncQueue::finish_sync_job`].
pub(crate) async fn finish<S: QueueDialect>(
    store: &S,
    lease: Lease<'_>,
    finish: JobFinish<'_>,
    now: Timestamp,
) -> Result<Finished, StoreError> {
    let mut tx = store.write_pool().begin().await?;
    // The job row first, as in a page commit: on SQLite the transaction takes the write lock
    // with its first statement, on PostgreSQL the row stays locked until the commit.
    let end = JobEnd::of(finish, now);
    let Some(ended) = store.end_job(&mut tx, lease, &end, now).await? else {
        tx.rollback().await?;
        return Ok(Finished::NotOurs);
    };
    let mut finished = Finished::Done;
    if matches!(finish, JobFinish::Succeeded) && ended.follow_up {
        let id = JobId::generate();
        if store.queue_follow_up(&mut tx, lease.job, id, now).await? {
            finished = Finished::FollowedBy(id);
        }
    }
    // Only a sync says how the connection's syncing goes; a subscription job's outcome shows
    // on its subscriptions.
    let syncs = ended.lane == "sync";
    match finish {
        JobFinish::Succeeded if syncs => {
            store
                .record_sync_success(&mut tx, ended.connection, now)
                .await?;
        }
        JobFinish::Failed { error } if syncs => {
            store
                .record_sync_failure(&mut tx, ended.connection, error, now)
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

#[cfg(test)]
mod tests {
    use super::JobEnd;
    use crate::domain::{now, JobStatus};
    use crate::store::JobFinish;

    #[test]
    fn each_finish_spells_out_the_row_it_leaves() {
        let (at, done) = (now(), now());
        let ok = JobEnd::of(JobFinish::Succeeded, done);
        assert_eq!(ok.status, JobStatus::Succeeded);
        assert_eq!(
            (ok.finished_at, ok.scheduled_at, ok.error),
            (Some(done), None, None)
        );
        assert!(!ok.keep_error && !ok.uncount_attempt && !ok.drop_follow_up);

        let retry = JobEnd::of(JobFinish::Retry { at, error: "e" }, done);
        assert_eq!(retry.status, JobStatus::Queued);
        assert_eq!((retry.finished_at, retry.scheduled_at), (None, Some(at)));
        assert_eq!(retry.error, Some("e"));
        assert!(!retry.keep_error && !retry.uncount_attempt && retry.drop_follow_up);

        // A deferral is no attempt, and keeps the error it had unless it notes another.
        let defer = JobEnd::of(JobFinish::Defer { at, note: None }, done);
        assert_eq!(defer.status, JobStatus::Queued);
        assert_eq!((defer.scheduled_at, defer.error), (Some(at), None));
        assert!(defer.keep_error && defer.uncount_attempt && defer.drop_follow_up);

        let failed = JobEnd::of(JobFinish::Failed { error: "e" }, done);
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!((failed.finished_at, failed.error), (Some(done), Some("e")));
        assert!(!failed.keep_error && !failed.uncount_attempt && !failed.drop_follow_up);
    }
}
