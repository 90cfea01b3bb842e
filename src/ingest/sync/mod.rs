//! The sync engine. A [`Scheduler`] enqueues an `incremental` job for each connection whose
//! interval has passed; [`SyncWorker`]s claim due jobs with an expiring lease (a dead
//! instance's jobs are taken over once its lease expires) and call the provider's connector
//! page by page. Each page's signals are committed together with the cursor that follows them,
//! in one transaction and only while the lease is still held, so a crash at any point neither
//! loses nor duplicates signals (dedupe keys catch a page that is fetched twice).
//!
//! Failures: a refused access token is refreshed once and the page retried; rate limiting,
//! outages and other provider errors are retried with exponential backoff and full jitter,
//! never sooner than the provider's `Retry-After`, until `max_attempts`; a grant that is gone
//! fails the job at once. Calls are paced by client-side limits per connection first.

mod backoff;
mod limiter;
mod run;
mod scheduler;
mod worker;

#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::domain::{Connection, JobType, NewJob, Timestamp};
use crate::services::{supervise, Services};

pub use backoff::{
    ceiling as backoff_ceiling, retry_delay, BASE as BACKOFF_BASE, CAP as BACKOFF_CAP,
};
pub use limiter::{CallPermit, RateLimiters, TokenBucket};
pub use run::MAX_PAGES_PER_JOB;
pub use scheduler::Scheduler;
pub use worker::{JobOutcome, JobResult, SyncWorker};

/// How long stopping waits for jobs in flight to reach a page boundary.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A queued job for `connection`, due at `at`.
pub fn new_job(connection: &Connection, job_type: JobType, at: Timestamp) -> NewJob {
    NewJob::queued(connection, job_type, at)
}

/// The scheduler and worker loops of one process.
pub struct SyncTasks {
    scheduler: Option<JoinHandle<()>>,
    workers: Option<JoinHandle<()>>,
}

/// Starts the scheduler and the workers in a process with the `worker` role
/// (`POBLYSH_ROLES`), each restarted after a panic ([`supervise`]).
pub fn spawn(state: &Services) -> SyncTasks {
    if !state.config.roles.worker {
        return SyncTasks {
            scheduler: None,
            workers: None,
        };
    }
    // Supervised: a panic must not stop syncing for every tenant until the process restarts.
    let s = state.clone();
    let scheduler = supervise(state, "sync_scheduler", move || Scheduler.run(s.clone()));
    let s = state.clone();
    let worker = SyncWorker::new();
    let workers = supervise(state, "sync_workers", move || {
        worker.clone().run(s.clone(), s.config.sync_concurrency)
    });
    SyncTasks {
        scheduler: Some(scheduler),
        workers: Some(workers),
    }
}

impl SyncTasks {
    /// Stops scheduling, and lets jobs in flight stop at their next page boundary (their jobs
    /// go back to the queue); after a grace period the rest is aborted and their leases expire.
    /// Call once shutdown has begun.
    pub async fn stop(self) {
        if let Some(scheduler) = self.scheduler {
            scheduler.abort();
        }
        if let Some(mut workers) = self.workers {
            if tokio::time::timeout(STOP_GRACE, &mut workers)
                .await
                .is_err()
            {
                workers.abort();
            }
        }
    }
}
