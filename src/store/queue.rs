//! The sync job queue part of the storage interface: enqueuing (one active job per
//! connection), claiming with an expiring lease, committing each page's signals together with
//! the advanced cursor, finishing, and the scheduler's view of which connections are due.
//!
//! Every write a worker makes after claiming is conditional on its lease: once another worker
//! has taken an expired lease over, the first one's commits and finishes change nothing.

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::StoreError;
use crate::domain::{Connection, ConnectionId, Job, JobId, NewJob, NewSignal, Timestamp};

/// What enqueuing found.
#[derive(Clone, Debug, PartialEq)]
pub struct Enqueued {
    /// The new job, or the connection's queued or running job.
    pub job: Job,
    /// Whether `job` was created by this call.
    pub created: bool,
}

/// What an enqueue does when the connection's job is already running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfRunning {
    /// The running job answers for the request (the scheduler's due syncs).
    Join,
    /// The running job answers for the request, and a job like the requested one is queued
    /// when it succeeds: it may have read its last page before the change that prompted the
    /// request (a provider notification, a caller's sync request).
    FollowUp,
}

/// What finishing a leased job did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// The lease was no longer ours: nothing was written.
    NotOurs,
    /// The job ended, or went back to the queue.
    Done,
    /// The job succeeded and the follow-up requested while it ran was queued.
    FollowedBy(JobId),
}

/// What committing a page did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCommit {
    /// Stored, with how many of the page's signals were new.
    Stored(u64),
    /// The lease was no longer ours: nothing was written.
    LeaseLost,
    /// The connection stopped being `active` (disconnected) while the job ran: nothing was
    /// written, and the job should end.
    ConnectionInactive,
}

/// What one committed page stores: its signals, the cursor after them and, when the page
/// changed it, the connection's metadata.
#[derive(Clone, Copy, Debug)]
pub struct SyncCommit<'a> {
    pub signals: &'a [NewSignal],
    pub cursor: &'a Value,
    /// Members to set in the connection's metadata (`null` removes one).
    pub metadata: Option<&'a Map<String, Value>>,
}

/// A claimed job's lease: who holds it. Every lease-bound write names it.
#[derive(Clone, Copy, Debug)]
pub struct Lease<'a> {
    pub job: JobId,
    pub owner: &'a str,
}

/// How a leased job ends (or goes back to the queue).
#[derive(Clone, Copy, Debug)]
pub enum JobFinish<'a> {
    /// Done: for a sync, the connection's `last_synced_at` becomes now and its `last_error` is
    /// cleared; a follow-up requested while the job ran is queued in its lane.
    Succeeded,
    /// Back to `queued`, due at `at`, with this attempt's error.
    Retry { at: Timestamp, error: &'a str },
    /// Back to `queued`, due at `at`, without counting the attempt (client-side rate limit,
    /// shutdown); `note` replaces the job's error when given.
    Defer {
        at: Timestamp,
        note: Option<&'a str>,
    },
    /// Given up: the job ends `failed`; for a sync, the connection's `last_error` shows why (a
    /// subscription job's failure shows on its subscriptions instead).
    Failed { error: &'a str },
}

/// Enqueuing, leasing and finishing sync jobs, and committing each page with its cursor.
#[async_trait]
pub trait SyncQueue: Send + Sync {
    /// Enqueues `new` unless the connection has a queued or running job, which is returned
    /// instead (`created: false`); a running one is marked for a follow-up of `new`'s type
    /// when `if_running` asks for it.
    async fn enqueue_sync(
        &self,
        new: &NewJob,
        if_running: IfRunning,
    ) -> Result<Enqueued, StoreError>;

    /// Claims the next due job for `owner` until `lease_until`: a queued job scheduled at or
    /// before `now`, or a running job whose lease expired before `now` (its worker died).
    /// Claiming sets `running`, `started_at = now` and counts an attempt.
    async fn claim_sync_job(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Job>, StoreError>;

    /// Extends a lease; `false` when it is no longer ours.
    async fn extend_sync_lease(
        &self,
        lease: Lease<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// A connection's stored sync cursor.
    async fn sync_cursor(&self, connection: ConnectionId) -> Result<Option<Value>, StoreError>;

    /// In one transaction, while the lease is still ours and the connection still `active`:
    /// stores the page's signals (skipping known `(connection_id, dedupe_key)`s), stores the
    /// cursor, applies the metadata patch ([`crate::domain::merge_metadata`]) and extends the
    /// lease.
    async fn commit_sync_page(
        &self,
        lease: Lease<'_>,
        connection: ConnectionId,
        page: &SyncCommit<'_>,
        lease_until: Timestamp,
        now: Timestamp,
    ) -> Result<PageCommit, StoreError>;

    /// Ends or requeues a leased job. A job that succeeds with a follow-up requested queues
    /// that follow-up in the same transaction; a job that goes back to the queue drops its
    /// request, since its next attempt starts after it.
    async fn finish_sync_job(
        &self,
        lease: Lease<'_>,
        finish: JobFinish<'_>,
        now: Timestamp,
    ) -> Result<Finished, StoreError>;

    /// Active connections of these providers whose next sync is due (`next_sync_at` unset or
    /// at or before `now`), longest waiting first.
    async fn connections_due_for_sync(
        &self,
        providers: &[&str],
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Connection>, StoreError>;

    /// Moves a connection's `next_sync_at` to `next` if it is still due at `now`; `false` when
    /// another scheduler did so first.
    async fn advance_next_sync(
        &self,
        connection: ConnectionId,
        now: Timestamp,
        next: Timestamp,
    ) -> Result<bool, StoreError>;

    /// [`SyncQueue::advance_next_sync`] for a batch of connections in one statement: each
    /// still due at `now` moves to its own next sync. Returns the connections moved. On
    /// PostgreSQL a connection another transaction holds locked is skipped, not waited for:
    /// it stays due for the next pass.
    async fn advance_next_syncs(
        &self,
        due: &[(ConnectionId, Timestamp)],
        now: Timestamp,
    ) -> Result<Vec<ConnectionId>, StoreError>;

    /// [`SyncQueue::enqueue_sync`] with [`IfRunning::Join`] for a batch of jobs in one
    /// statement: each is queued unless its connection has a queued or running job in that
    /// lane. Returns how many were queued. The statement fails as a whole (a connection
    /// deleted meanwhile, say); enqueue one by one then.
    async fn enqueue_syncs(&self, jobs: &[NewJob]) -> Result<u64, StoreError>;
}
