//! The inbox worker: turns stored webhook events into signals through their provider's
//! connector, and records each event's outcome. `run_once` and `drain` let tests process the
//! inbox deterministically; `run` is the background loop, woken by new deliveries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Normalized, WebhookEvent};
use crate::domain::{now, EventStatus, StoredWebhookEvent};
use crate::http::AppState;

/// Attempts before a failing event is marked `failed`.
pub const MAX_ATTEMPTS: i32 = 5;
/// How long a claimed event is reserved for its worker.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// Events claimed per round.
const BATCH: u32 = 32;

/// Wakes the worker when a delivery is stored.
#[derive(Clone, Default)]
pub struct InboxSignal(Arc<Notify>);

impl InboxSignal {
    /// Tells the worker there is work.
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// Processes one batch of due events; returns how many.
pub async fn run_once(state: &AppState) -> anyhow::Result<usize> {
    let claimed = state
        .store
        .claim_webhook_events(now(), now() + LEASE, BATCH)
        .await?;
    for event in &claimed {
        process(state, event).await;
    }
    Ok(claimed.len())
}

/// Processes events until none is due.
pub async fn drain(state: &AppState) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let n = run_once(state).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// The background loop: runs whenever woken, and at least every second.
pub async fn run(state: AppState) {
    loop {
        if state.is_shutting_down() {
            break;
        }
        match drain(&state).await {
            Ok(_) => {}
            // The database may be away; try again shortly, losing nothing.
            Err(err) => tracing::warn!(error = format!("{err:#}"), "inbox round failed"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), state.inbox.0.notified()).await;
    }
}

async fn process(state: &AppState, stored: &StoredWebhookEvent) {
    let outcome = normalize_and_store(state, stored).await;
    let label = match &outcome {
        Ok(status) => status.as_str(),
        Err(_) => "retry",
    };
    metrics::counter!("webhook_events_total", "provider" => stored.provider.clone(), "outcome" => label).increment(1);
    if let Err(err) = outcome {
        let error = format!("{err:#}");
        let result = if stored.attempts >= MAX_ATTEMPTS {
            tracing::warn!(event_id = %stored.id, error, "webhook event failed for good");
            state
                .store
                .complete_webhook_event(
                    stored.id,
                    EventStatus::Failed,
                    None,
                    &[],
                    Some(&error),
                    now(),
                )
                .await
        } else {
            let backoff = chrono::Duration::seconds(2_i64.pow(stored.attempts.clamp(0, 10) as u32));
            state
                .store
                .retry_webhook_event(stored.id, &error, now() + backoff)
                .await
        };
        if let Err(err) = result {
            // The lease expires and the event is claimed again.
            tracing::warn!(event_id = %stored.id, error = %err, "could not record the event's failure");
        }
    }
}

/// Normalizes, routes and stores one event; `Err` for failures worth retrying.
async fn normalize_and_store(
    state: &AppState,
    stored: &StoredWebhookEvent,
) -> anyhow::Result<EventStatus> {
    let Some(entry) = state.registry.get(&stored.provider) else {
        state
            .store
            .complete_webhook_event(
                stored.id,
                EventStatus::Failed,
                None,
                &[],
                Some("provider is not enabled"),
                now(),
            )
            .await?;
        return Ok(EventStatus::Failed);
    };
    let event = WebhookEvent {
        tenant_id: stored.tenant_id,
        provider: stored.provider.clone(),
        event_type: stored.event_type.clone(),
        headers: stored.headers.clone(),
        body: stored.body.clone(),
        received_at: stored.received_at,
    };
    let drafts = match entry.connector.normalize_webhook(&event) {
        Ok(Normalized::Signals(drafts)) => drafts,
        Ok(Normalized::Ignored) => {
            state
                .store
                .complete_webhook_event(stored.id, EventStatus::Ignored, None, &[], None, now())
                .await?;
            return Ok(EventStatus::Ignored);
        }
        // An unreadable payload does not get better with retries.
        Err(problem) => {
            state
                .store
                .complete_webhook_event(
                    stored.id,
                    EventStatus::Failed,
                    None,
                    &[],
                    Some(&problem),
                    now(),
                )
                .await?;
            return Ok(EventStatus::Failed);
        }
    };
    let candidates = state
        .store
        .active_connections(stored.tenant_id, &stored.provider)
        .await?;
    // Only this tenant's connections are candidates, whatever the connector answers.
    let chosen = match stored.connection_id {
        Some(named) => Some(named),
        None => entry.connector.route_webhook(&event, &candidates),
    }
    .and_then(|id| candidates.iter().find(|c| c.id == id));
    let Some(connection) = chosen else {
        state
            .store
            .complete_webhook_event(stored.id, EventStatus::Unmatched, None, &[], None, now())
            .await?;
        return Ok(EventStatus::Unmatched);
    };
    let signals: Vec<_> = drafts
        .into_iter()
        .map(|d| d.into_signal(connection))
        .collect();
    state
        .store
        .complete_webhook_event(
            stored.id,
            EventStatus::Processed,
            Some(connection.id),
            &signals,
            None,
            now(),
        )
        .await?;
    Ok(EventStatus::Processed)
}
