//! The inbox worker: turns stored webhook events into signals through their provider's
//! connector, and records each event's outcome. `run_once` and `drain` let tests process the
//! inbox deterministically; `run` is the background loop, woken by new deliveries.

use std::collections::HashMap;
use std::time::Duration;

use super::stranded::Stranded;
use crate::connector::{declared_signals, Normalized, WebhookEvent};
use crate::domain::{
    now, Connection, ConnectionStatus, EventStatus, JobType, StoredWebhookEvent, TenantId,
    Timestamp,
};
use crate::services::Services;
use crate::store::{Backend, EventCompletion, IfRunning, StoreError};

/// Attempts before a failing event is marked `failed`.
pub const MAX_ATTEMPTS: i32 = 5;
/// How long a claimed event is reserved for its worker.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// Events claimed per round.
const BATCH: u32 = 128;
/// The pause after a round that found fewer than [`BATCH`] events and before the next.
const LINGER: Duration = Duration::from_millis(20);
/// The longest pause before the next round after one failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Processes one batch of due events; returns how many. The batch's signals and outcomes are
/// written in one transaction, so throughput is bounded by batches, not by events.
pub async fn run_once(state: &Services) -> anyhow::Result<usize> {
    round(state, &Stranded::default()).await
}

/// One round: gives back stranded claims, then claims and processes one batch.
async fn round(state: &Services, stranded: &Stranded) -> anyhow::Result<usize> {
    stranded.release(state).await?;
    let lease_until = now() + LEASE;
    let claimed = match state
        .store
        .claim_webhook_events(now(), lease_until, BATCH)
        .await
    {
        Ok(claimed) => claimed,
        Err(err) => {
            if err.answer_lost() {
                // The claim may have been made without its answer getting back.
                stranded.keep_lost(lease_until);
            }
            return Err(err.into());
        }
    };
    let batch = Batch {
        state,
        stranded,
        claimed: &claimed,
        lease_until,
    };
    let (completions, failures) = batch.decide_all().await?;
    let (recorded, failures) = batch.record(completions, failures).await?;
    for completion in &recorded {
        let provider = batch.event(completion.id).map(|e| e.provider.clone());
        metrics::counter!("webhook_events_total", "provider" => provider.unwrap_or_default(), "outcome" => completion.outcome.as_str()).increment(1);
    }
    batch.retry_or_fail(&failures).await?;
    Ok(claimed.len())
}

/// One claimed batch, under the lease its claim set.
struct Batch<'a> {
    state: &'a Services,
    stranded: &'a Stranded,
    claimed: &'a [StoredWebhookEvent],
    lease_until: Timestamp,
}

/// The active connections of each tenant and provider, oldest first: where events may route.
type Candidates = HashMap<(TenantId, String), Vec<Connection>>;

/// An event whose processing failed in a way worth retrying, with why.
type Failure<'a> = (&'a StoredWebhookEvent, String);

impl<'a> Batch<'a> {
    fn event(&self, id: uuid::Uuid) -> Option<&'a StoredWebhookEvent> {
        self.claimed.iter().find(|e| e.id == id)
    }

    /// What each event comes to. Stops (keeping the claim for later) when the store is away.
    async fn decide_all(&self) -> anyhow::Result<(Vec<EventCompletion>, Vec<Failure<'a>>)> {
        let candidates = match self.candidates().await {
            Ok(candidates) => candidates,
            Err(err) => {
                if err.is_unavailable() {
                    self.stranded.keep(self.lease_until, self.claimed);
                }
                return Err(err.into());
            }
        };
        let mut completions = Vec::with_capacity(self.claimed.len());
        let mut failures = Vec::new();
        for event in self.claimed {
            match decide(self.state, event, &candidates).await {
                Ok(completion) => completions.push(completion),
                Err(err) if err.is_unavailable() => {
                    // No outcome of this batch can be recorded now.
                    self.stranded.keep(self.lease_until, self.claimed);
                    return Err(err.into());
                }
                Err(err) => failures.push((event, format!("{:#}", anyhow::Error::from(err)))),
            }
        }
        Ok((completions, failures))
    }

    /// The routing candidates of every tenant and provider in the batch, read at once: one
    /// statement per batch instead of one per tenant. Events of no tenant route nowhere.
    async fn candidates(&self) -> Result<Candidates, StoreError> {
        let mut keys: Vec<(TenantId, String)> = self
            .claimed
            .iter()
            .filter(|e| e.tenant_id != TenantId::NONE)
            .map(|e| (e.tenant_id, e.provider.clone()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut candidates: Candidates = keys.iter().cloned().map(|k| (k, Vec::new())).collect();
        for connection in self.state.store.active_connections_of(&keys).await? {
            let key = (connection.tenant_id, connection.provider.clone());
            if let Some(found) = candidates.get_mut(&key) {
                found.push(connection);
            }
        }
        Ok(candidates)
    }

    /// Records the outcomes in one transaction; when the database refuses one event's write (a
    /// signal it rejects, a connection deleted meanwhile), records each alone, so that only
    /// that event retries. Returns what was recorded and the failures, those added.
    async fn record(
        &self,
        completions: Vec<EventCompletion>,
        mut failures: Vec<Failure<'a>>,
    ) -> anyhow::Result<(Vec<EventCompletion>, Vec<Failure<'a>>)> {
        let store = &self.state.store;
        if completions.is_empty() {
            return Ok((completions, failures));
        }
        let Err(err) = store
            .complete_webhook_events(&completions, self.lease_until, now())
            .await
        else {
            return Ok((completions, failures));
        };
        if err.is_unavailable() {
            self.stranded.keep(self.lease_until, self.claimed);
            return Err(err.into());
        }
        let mut recorded = Vec::with_capacity(completions.len());
        for (n, completion) in completions.iter().enumerate() {
            match store
                .complete_webhook_events(std::slice::from_ref(completion), self.lease_until, now())
                .await
            {
                Ok(()) => recorded.push(completion.clone()),
                Err(err) if err.is_unavailable() => {
                    let unrecorded = completions[n..].iter().filter_map(|c| self.event(c.id));
                    let failed = failures.iter().map(|(e, _)| *e);
                    self.stranded
                        .keep(self.lease_until, unrecorded.chain(failed));
                    return Err(err.into());
                }
                Err(err) => {
                    if let Some(event) = self.event(completion.id) {
                        failures.push((event, format!("{:#}", anyhow::Error::from(err))));
                    }
                }
            }
        }
        Ok((recorded, failures))
    }

    /// Another attempt later for each failure, or `failed` after the last.
    async fn retry_or_fail(&self, failures: &[Failure<'a>]) -> anyhow::Result<()> {
        for (n, (event, error)) in failures.iter().enumerate() {
            metrics::counter!("webhook_events_total", "provider" => event.provider.clone(), "outcome" => "retry").increment(1);
            if let Err(err) = give_up_or_retry(self.state, event, error, self.lease_until).await {
                if err.is_unavailable() {
                    // This failure and the ones after it are recorded once the store answers.
                    self.stranded
                        .keep(self.lease_until, failures[n..].iter().map(|(e, _)| *e));
                    return Err(err.into());
                }
                // The lease expires and the event is claimed again.
                tracing::warn!(event_id = %event.id, error = %err, "could not record the event's failure");
            }
        }
        Ok(())
    }
}

/// Processes events until none is due.
pub async fn drain(state: &Services) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let n = run_once(state).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// Batches processed at once. SQLite writes one at a time, so two suffice there: one normalizes
/// while the other writes. PostgreSQL writes them side by side (claims skip each other's rows).
fn concurrent_batches(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 2,
        Backend::Postgres => 4,
    }
}

/// The background loops: each runs whenever woken, and at least every
/// `worker_poll_interval`.
pub async fn run(state: Services) {
    let stranded = Stranded::default();
    let loops = (0..concurrent_batches(state.store.backend()))
        .map(|_| run_loop(state.clone(), stranded.clone()));
    futures::future::join_all(loops).await;
}

async fn run_loop(state: Services, stranded: Stranded) {
    let poll = state.config.worker_poll_interval;
    loop {
        if state.is_shutting_down() {
            break;
        }
        let pause = loop {
            match round(&state, &stranded).await {
                Ok(0) => break poll,
                // The inbox ran dry mid-batch: let deliveries gather for a moment, so that
                // under load each round (and its commit) carries many events, not a few.
                Ok(n) if n < BATCH as usize => tokio::time::sleep(LINGER).await,
                Ok(_) => {}
                // The database may be away; try again shortly, losing nothing.
                Err(err) => {
                    tracing::warn!(error = format!("{err:#}"), "inbox round failed");
                    break poll.min(RETRY_AFTER_FAILURE);
                }
            }
        };
        let _ = tokio::time::timeout(pause, state.inbox.notified()).await;
    }
}

/// After a failure worth retrying: another attempt later, or `failed` after the last one; for
/// an event still held under `lease`.
async fn give_up_or_retry(
    state: &Services,
    stored: &StoredWebhookEvent,
    error: &str,
    lease: Timestamp,
) -> Result<(), StoreError> {
    if stored.attempts >= MAX_ATTEMPTS {
        tracing::warn!(event_id = %stored.id, error, "webhook event failed for good");
        state
            .store
            .complete_webhook_event(
                stored.id,
                EventStatus::Failed,
                None,
                &[],
                Some(error),
                lease,
                now(),
            )
            .await
    } else {
        let backoff = chrono::Duration::seconds(2_i64.pow(stored.attempts.clamp(0, 10) as u32));
        state
            .store
            .retry_webhook_event(stored.id, error, lease, now() + backoff)
            .await
    }
}

/// What one event comes to, routed among `candidates`: its outcome, connection and signals.
/// `Err` only when a sync could not be requested or a revocation recorded (worth retrying).
async fn decide(
    state: &Services,
    stored: &StoredWebhookEvent,
    candidates: &Candidates,
) -> Result<EventCompletion, StoreError> {
    let done =
        |outcome: EventStatus, connection_id, signals, error: Option<&str>| EventCompletion {
            id: stored.id,
            outcome,
            connection_id,
            signals,
            error: error.map(str::to_string),
        };
    let Some(entry) = state.registry.get(&stored.provider) else {
        return Ok(done(
            EventStatus::Failed,
            None,
            Vec::new(),
            Some("provider is not enabled"),
        ));
    };
    let event = WebhookEvent {
        tenant_id: stored.tenant_id,
        provider: stored.provider.clone(),
        event_type: stored.event_type.clone(),
        headers: stored.headers.clone(),
        body: stored.body.clone(),
        received_at: stored.received_at,
    };
    if stored.tenant_id == TenantId::NONE {
        // A delivery that named no connected account belongs to no tenant: never routed.
        return Ok(done(EventStatus::Unmatched, None, Vec::new(), None));
    }
    let normalized = match entry.connector.normalize_webhook(&event) {
        Ok(Normalized::Ignored) => return Ok(done(EventStatus::Ignored, None, Vec::new(), None)),
        Ok(normalized) => normalized,
        // An unreadable payload does not get better with retries.
        Err(problem) => return Ok(done(EventStatus::Failed, None, Vec::new(), Some(&problem))),
    };
    let key = (stored.tenant_id, stored.provider.clone());
    let candidates = candidates.get(&key).map_or(&[][..], Vec::as_slice);
    // Only this tenant's connections are candidates, whatever the connector answers.
    let chosen = match stored.connection_id {
        Some(named) => Some(named),
        None => entry.connector.route_webhook(&event, candidates),
    }
    .and_then(|id| candidates.iter().find(|c| c.id == id));
    let Some(connection) = chosen else {
        return Ok(done(EventStatus::Unmatched, None, Vec::new(), None));
    };
    let signals = match normalized {
        Normalized::Signals(drafts) => declared_signals(entry.descriptor(), drafts, connection),
        Normalized::SyncRequested if entry.descriptor().sync => {
            request_sync(state, connection).await?;
            Vec::new()
        }
        // Nothing could find out what changed.
        Normalized::SyncRequested => {
            return Ok(done(EventStatus::Ignored, None, Vec::new(), None));
        }
        Normalized::AccessRevoked { reason } => {
            revoke(state, connection, &reason).await?;
            Vec::new()
        }
        // Returned above, before routing.
        Normalized::Ignored => Vec::new(),
    };
    Ok(done(
        EventStatus::Processed,
        Some(connection.id),
        signals,
        None,
    ))
}

/// Marks `connection` `revoked` with `reason` as its last error and erases its tokens, as a
/// disconnect does, without calling the provider: the grant is already gone there. Its queued
/// and running syncs then stop, since only an active connection syncs or stores a page.
async fn revoke(state: &Services, connection: &Connection, reason: &str) -> Result<(), StoreError> {
    tracing::warn!(provider = %connection.provider, connection_id = %connection.id, reason, "the provider revoked the connection's access");
    let at = now();
    state
        .store
        .revoke_connection(connection.tenant_id, connection.id, at)
        .await?;
    state
        .store
        .set_connection_status(
            connection.tenant_id,
            connection.id,
            ConnectionStatus::Revoked,
            Some(reason),
            at,
        )
        .await?;
    Ok(())
}

/// Enqueues a `webhook` sync of `connection` (or finds the one already queued or running) and
/// wakes this process's sync workers. A sync already running may have read its last page
/// before the change: another is queued as soon as it succeeds, one however many requests
/// arrive meanwhile, so an event retried after its job started adds at most that one.
async fn request_sync(state: &Services, connection: &Connection) -> Result<(), StoreError> {
    let job = super::sync::new_job(connection, JobType::Webhook, now());
    let enqueued = state.store.enqueue_sync(&job, IfRunning::FollowUp).await?;
    tracing::debug!(connection_id = %connection.id, job_id = %enqueued.job.id, "a provider notification requested a sync");
    state.sync.notify();
    Ok(())
}
