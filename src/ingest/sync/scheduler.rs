//! [`Scheduler`]: enqueues an incremental sync for every connection that is due, and moves its
//! next sync one interval (±10 %) ahead.

use std::time::Duration;

use super::{backoff, new_job};
use crate::domain::{from_micros, now, to_micros, JobType, NewJob, Timestamp};
use crate::services::Services;
use crate::store::IfRunning;

/// Connections looked at per query.
const BATCH: u32 = 200;
/// The longest pause between two ticks.
const MAX_TICK: Duration = Duration::from_secs(15);

/// Queues `jobs` in one statement; when that fails for another reason than the database
/// being unavailable (a connection deleted meanwhile), one by one, so each fails alone.
async fn enqueue(state: &Services, jobs: &[NewJob]) -> anyhow::Result<usize> {
    let err = match state.store.enqueue_syncs(jobs).await {
        Ok(created) => return Ok(usize::try_from(created)?),
        Err(err) if err.is_unavailable() => return Err(err.into()),
        Err(err) => err,
    };
    tracing::debug!(error = %err, "a batch of syncs failed; queueing them one by one");
    let mut created = 0;
    for job in jobs {
        match state.store.enqueue_sync(job, IfRunning::Join).await {
            Ok(enqueued) if enqueued.created => created += 1,
            Ok(_) => {}
            Err(err) if err.is_unavailable() => return Err(err.into()),
            Err(err) => tracing::warn!(
                connection_id = %job.connection_id,
                error = %err,
                "could not enqueue a sync"
            ),
        }
    }
    Ok(created)
}

/// Finds connections due for a sync and enqueues their jobs.
#[derive(Clone, Debug, Default)]
pub struct Scheduler;

impl Scheduler {
    /// One pass at `now`: for each active connection of a syncing provider whose
    /// `next_sync_at` is unset or past, moves `next_sync_at` to `now + interval ± 10 %` and
    /// enqueues an `incremental` job (unless one is queued or running); then queues a
    /// `subscription` job for each connection with a subscription to open, renew or try again.
    /// Several instances may tick at once: each connection is scheduled by whichever moves
    /// `next_sync_at` first, and a connection's lanes hold one queued or running job each.
    /// Returns how many jobs were created.
    pub async fn tick(&self, state: &Services, now: Timestamp) -> anyhow::Result<usize> {
        let providers: Vec<&str> = state
            .registry
            .entries()
            .iter()
            .map(|e| e.descriptor())
            .filter(|d| d.sync)
            .map(|d| d.slug)
            .collect();
        let mut created = 0;
        // Every scheduled connection stops being due, so each batch is new; bounded anyway.
        for _ in 0..1_000 {
            let due = state
                .store
                .connections_due_for_sync(&providers, now, BATCH)
                .await?;
            let last_batch = due.len() < BATCH as usize;
            let mut moves = Vec::with_capacity(due.len());
            for connection in &due {
                let interval = backoff::jittered(state.config.sync_interval(&connection.provider));
                let next = now + chrono::Duration::from_std(interval)?;
                moves.push((connection.id, from_micros(to_micros(&next)).unwrap_or(next)));
            }
            // One statement moves the batch's next syncs and one queues its jobs; a
            // connection another scheduler moved first is not in `moved`.
            let moved = state.store.advance_next_syncs(&moves, now).await?;
            let jobs: Vec<NewJob> = due
                .iter()
                .filter(|c| moved.contains(&c.id))
                .map(|c| new_job(c, JobType::Incremental, now))
                .collect();
            created += enqueue(state, &jobs).await?;
            if last_batch || moved.is_empty() {
                break;
            }
        }
        created += crate::subscriptions::schedule_due(state, now).await?;
        Ok(created)
    }

    /// Ticks until the task is stopped, waking this process's workers when it enqueued
    /// something.
    pub async fn run(self, state: Services) {
        let period = state
            .config
            .provider_sync_intervals
            .iter()
            .map(|(_, interval)| *interval)
            .chain([state.config.sync_interval, MAX_TICK])
            .min()
            .unwrap_or(MAX_TICK);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if state.is_shutting_down() {
                break;
            }
            match self.tick(&state, now()).await {
                Ok(0) => {}
                Ok(created) => {
                    tracing::debug!(created, "sync jobs scheduled");
                    state.sync.notify();
                }
                Err(err) => tracing::warn!(error = format!("{err:#}"), "sync scheduling failed"),
            }
        }
    }
}
