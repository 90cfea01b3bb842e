//! [`SyncWorker`]: claims due jobs with an expiring lease and runs them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::limiter::RateLimiters;
use super::run::{retry_delay, Progress, Stop};
use crate::connector::Connector;
use crate::domain::{from_micros, now, to_micros, ConnectionId, Job, JobId, JobType, Timestamp};
use crate::services::Services;
use crate::store::{Finished, JobFinish, Lease, StoreError};

/// The shortest lease; longer when provider calls may take longer (three time-outs).
const MIN_LEASE: Duration = Duration::from_secs(60);
/// The longest pause before claiming again after a claim failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// How a job run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum JobResult {
    /// Every page is in; the job is `succeeded`.
    Succeeded,
    /// The attempt failed; the job is `queued` again, due at `at`.
    Retrying { at: Timestamp, error: String },
    /// Not an attempt (client-side rate limit, shutdown): `queued` again, due at `at`.
    Deferred { at: Timestamp },
    /// Given up; the job is `failed` and the connection shows the error.
    Failed { error: String },
    /// Another worker took the job over; this one wrote nothing more.
    LeaseLost,
}

impl JobResult {
    /// The `outcome` label of `sync_jobs_total`.
    pub fn label(&self) -> &'static str {
        match self {
            JobResult::Succeeded => "succeeded",
            JobResult::Retrying { .. } => "retried",
            JobResult::Deferred { .. } => "deferred",
            JobResult::Failed { .. } => "failed",
            JobResult::LeaseLost => "lease_lost",
        }
    }
}

/// What one run of one job did.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOutcome {
    pub job_id: JobId,
    pub connection_id: ConnectionId,
    pub provider: String,
    pub job_type: JobType,
    /// The attempt this run was (1 for the first).
    pub attempt: i32,
    pub result: JobResult,
    /// Pages committed.
    pub pages: u32,
    /// Signals stored by those pages that were not stored before.
    pub new_signals: u64,
}

/// Claims and runs sync jobs. Clones share the owner id and the rate limiters.
#[derive(Clone)]
pub struct SyncWorker {
    owner: Arc<str>,
    limiters: RateLimiters,
}

impl Default for SyncWorker {
    fn default() -> Self {
        Self::new()
    }
}

/// The longest delay [`later`] adds; delays come from provider answers (`Retry-After`, rate
/// limit resets) and are bounded before here, this is the last line of defence.
const MAX_DELAY: chrono::Duration = chrono::Duration::days(365);

/// `at` plus `d` (at most [`MAX_DELAY`]), truncated to microseconds like every stored instant.
/// Never panics: an instant past the end of time stays `at` plus the longest delay there is.
pub(super) fn later(at: Timestamp, d: Duration) -> Timestamp {
    let d = chrono::Duration::from_std(d)
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY);
    let t = at.checked_add_signed(d).unwrap_or(at);
    from_micros(to_micros(&t)).unwrap_or(t)
}

impl SyncWorker {
    /// A worker with a fresh owner id and its own rate limiters. The id names the process
    /// (`worker-<pid>-<uuid>`), so an operator reading `sync_jobs.lease_owner` can tell which
    /// instance holds a lease.
    pub fn new() -> Self {
        Self {
            owner: format!("worker-{}-{}", std::process::id(), Uuid::new_v4().simple()).into(),
            limiters: RateLimiters::default(),
        }
    }

    /// The id this worker's leases carry.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub(super) fn limiters(&self) -> &RateLimiters {
        &self.limiters
    }

    /// How long a lease lasts without being extended: long enough for a limiter wait, a
    /// provider call and a commit.
    pub fn lease(state: &Services) -> Duration {
        MIN_LEASE.max(state.config.provider_timeout * 3)
    }

    pub(super) fn lease_chrono(&self, state: &Services) -> chrono::Duration {
        chrono::Duration::from_std(Self::lease(state)).unwrap_or(chrono::Duration::minutes(1))
    }

    /// Whether a lease set at `leased_at` (`None`: unknown) must be extended at `at` before a
    /// limiter wait and a provider call. A lease lasts at least three provider time-outs and a
    /// limiter wait is at most a quarter of it, so one set less than a quarter of a lease ago
    /// still covers both; older, it is extended.
    pub(super) fn lease_needs_extending(
        &self,
        state: &Services,
        leased_at: Option<Timestamp>,
        at: Timestamp,
    ) -> bool {
        let fresh = self.lease_chrono(state) / 4;
        leased_at.is_none_or(|set| at - set >= fresh)
    }

    /// A token further away than this is not waited for: the job is deferred instead.
    pub(super) fn max_limiter_wait(&self, state: &Services) -> Duration {
        Self::lease(state) / 4
    }

    /// Claims the next due job, if any.
    pub async fn claim(&self, state: &Services) -> Result<Option<Job>, StoreError> {
        let at = now();
        state
            .store
            .claim_sync_job(&self.owner, at, later(at, Self::lease(state)))
            .await
    }

    /// Claims one due job and runs it to its end (or its next retry); `None` when no job is due.
    pub async fn run_once(&self, state: &Services) -> anyhow::Result<Option<JobOutcome>> {
        let Some(job) = self.claim(state).await? else {
            return Ok(None);
        };
        let connector = state.registry.get(&job.provider).map(|e| e.connector);
        self.run_job(state, connector, job).await.map(Some)
    }

    /// Runs jobs until none is due (a retry scheduled in the future is not waited for).
    pub async fn drain(&self, state: &Services) -> anyhow::Result<Vec<JobOutcome>> {
        let mut outcomes = Vec::new();
        while !state.is_shutting_down() {
            match self.run_once(state).await? {
                Some(outcome) => outcomes.push(outcome),
                None => break,
            }
        }
        Ok(outcomes)
    }

    /// Runs a job this worker claimed, with `connector` (`None`: the provider is not enabled),
    /// and records how it ended.
    pub async fn run_job(
        &self,
        state: &Services,
        connector: Option<&dyn Connector>,
        job: Job,
    ) -> anyhow::Result<JobOutcome> {
        let span = tracing::info_span!(
            "sync_job",
            job_id = %job.id,
            provider = %job.provider,
            connection_id = %job.connection_id,
            attempt = job.attempts,
        );
        self.run_job_inner(state, connector, job)
            .instrument(span)
            .await
    }

    async fn run_job_inner(
        &self,
        state: &Services,
        connector: Option<&dyn Connector>,
        job: Job,
    ) -> anyhow::Result<JobOutcome> {
        let mut progress = Progress::default();
        let stopped = self.execute(state, connector, &job, &mut progress).await;
        let result = self.record(state, &job, &stopped).await?;
        if let (JobType::Subscription, JobResult::Failed { error }) = (job.job_type, &result) {
            // The subscriptions it could not open or renew show why, and are tried again later.
            if let Err(err) = crate::subscriptions::give_up(state, &job, error).await {
                tracing::warn!(error = %err, "could not mark the subscriptions failed");
            }
        }
        metrics::counter!(
            "sync_jobs_total",
            "provider" => job.provider.clone(),
            "job_type" => job.job_type.as_str(),
            "outcome" => result.label()
        )
        .increment(1);
        log(&result, progress);
        Ok(JobOutcome {
            job_id: job.id,
            connection_id: job.connection_id,
            provider: job.provider,
            job_type: job.job_type,
            attempt: job.attempts,
            result,
            pages: progress.pages,
            new_signals: progress.new_signals,
        })
    }

    /// Records how a run of `job` stopped: succeeded, back in the queue, or failed.
    async fn record(
        &self,
        state: &Services,
        job: &Job,
        stopped: &Result<(), Stop>,
    ) -> anyhow::Result<JobResult> {
        let lease = Lease {
            job: job.id,
            owner: self.owner(),
        };
        let at = now();
        let (result, finish) = outcome(job, stopped, at);
        let Some(finish) = finish else {
            return Ok(result);
        };
        Ok(
            match state.store.finish_sync_job(lease, finish, at).await? {
                Finished::NotOurs => JobResult::LeaseLost,
                Finished::Done => result,
                Finished::FollowedBy(follow_up) => {
                    tracing::info!(follow_up = %follow_up, "a sync requested while this one ran is queued");
                    // This process's idle workers start it now rather than at their next poll.
                    state.sync.notify();
                    result
                }
            },
        )
    }

    /// Claims and runs jobs, up to `concurrency` at once, until shutdown begins; then lets the
    /// jobs in flight stop at their next page boundary. Idle, it looks again when woken
    /// (`Services::sync`) and at least every `worker_poll_interval`.
    pub async fn run(self, state: Services, concurrency: usize) {
        let poll = state.config.worker_poll_interval;
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut running = JoinSet::new();
        while !state.is_shutting_down() {
            while running.try_join_next().is_some() {}
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            if state.is_shutting_down() {
                break;
            }
            match self.claim(&state).await {
                Ok(Some(job)) => {
                    let worker = self.clone();
                    let state = state.clone();
                    running.spawn(async move {
                        let connector = state.registry.get(&job.provider).map(|e| e.connector);
                        if let Err(err) = worker.run_job(&state, connector, job).await {
                            tracing::warn!(
                                error = format!("{err:#}"),
                                "sync job could not be recorded"
                            );
                        }
                        drop(slot);
                    });
                }
                Ok(None) => {
                    drop(slot);
                    tokio::select! {
                        _ = state.sync.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                Err(err) => {
                    drop(slot);
                    tracing::warn!(error = %err, "claiming a sync job failed");
                    tokio::time::sleep(poll.min(RETRY_AFTER_FAILURE)).await;
                }
            }
        }
        while running.join_next().await.is_some() {}
    }
}

/// What a run that stopped as `stopped` comes to, and how to finish its job (`None`: the
/// lease is no longer ours, write nothing).
fn outcome<'a>(
    job: &Job,
    stopped: &'a Result<(), Stop>,
    at: Timestamp,
) -> (JobResult, Option<JobFinish<'a>>) {
    match stopped {
        Ok(()) => (JobResult::Succeeded, Some(JobFinish::Succeeded)),
        Err(Stop::LeaseLost) => (JobResult::LeaseLost, None),
        Err(Stop::Defer { wait, note }) => {
            let until = later(at, *wait);
            (
                JobResult::Deferred { at: until },
                Some(JobFinish::Defer {
                    at: until,
                    note: *note,
                }),
            )
        }
        Err(Stop::Failed(failure)) => match &failure.retry {
            Some(retry) if job.attempts < job.max_attempts => {
                let until = later(at, retry_delay(job.attempts, retry));
                (
                    JobResult::Retrying {
                        at: until,
                        error: failure.error.clone(),
                    },
                    Some(JobFinish::Retry {
                        at: until,
                        error: &failure.error,
                    }),
                )
            }
            _ => (
                JobResult::Failed {
                    error: failure.error.clone(),
                },
                Some(JobFinish::Failed {
                    error: &failure.error,
                }),
            ),
        },
    }
}

/// One log line for a finished run.
fn log(result: &JobResult, progress: Progress) {
    match &result {
        JobResult::Succeeded => tracing::info!(
            pages = progress.pages,
            new_signals = progress.new_signals,
            "sync job succeeded"
        ),
        JobResult::Retrying { at, error } => tracing::warn!(
            pages = progress.pages,
            retry_at = %crate::domain::format_time(at),
            error = %error,
            "sync attempt failed; will retry"
        ),
        JobResult::Deferred { at } => tracing::info!(
            pages = progress.pages,
            resume_at = %crate::domain::format_time(at),
            "sync job deferred"
        ),
        JobResult::Failed { error } => {
            tracing::warn!(pages = progress.pages, error = %error, "sync job failed")
        }
        JobResult::LeaseLost => {
            tracing::warn!(
                pages = progress.pages,
                "sync job taken over by another worker"
            )
        }
    }
}
