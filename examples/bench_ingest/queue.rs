//! The sync queue as a measurement wants it: every queued job due now, and no job the
//! scheduler would add while the workers run.

use anyhow::{bail, Context, Result};
use connectors::domain::{now, JobType};
use connectors::store::{Finished, JobFinish, Lease, StoreOptions};

/// Works through the store while no worker runs: claims every queued job, puts each back in
/// the queue due now and moves its connection's next scheduled sync a day ahead, so the
/// scheduler adds no job during the measurement. Returns how many of the jobs are syncs (the
/// rest open subscriptions; they go back to the queue too).
pub async fn requeue_due_now(database_url: &str) -> Result<usize> {
    let store = connectors::store::connect(database_url, &StoreOptions { max_connections: 2 })
        .await
        .context("opening the store")?;
    let owner = "bench-setup";
    let at = now();
    let lease_until = at + chrono::Duration::minutes(30);
    let mut claimed = Vec::new();
    // Everything is claimed before anything is released, so each claim is a different job.
    while let Some(job) = store.claim_sync_job(owner, at, lease_until).await? {
        claimed.push(job);
    }
    let syncs = claimed
        .iter()
        .filter(|j| j.job_type != JobType::Subscription)
        .count();
    for job in &claimed {
        let lease = Lease { job: job.id, owner };
        let next = at + chrono::Duration::days(1);
        store.advance_next_sync(job.connection_id, at, next).await?;
        let due_now = JobFinish::Defer {
            at: now(),
            note: None,
        };
        let released = store.finish_sync_job(lease, due_now, now()).await?;
        if released != Finished::Done {
            bail!("could not put job {} back in the queue", job.id);
        }
    }
    store.close().await;
    Ok(syncs)
}
