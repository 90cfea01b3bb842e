//! Retention: what the service no longer needs is deleted on a schedule. OAuth states go once
//! they have expired (used or not); deliveries that ended `processed`, `ignored` or `unmatched`
//! go once older than `POBLYSH_WEBHOOK_RETENTION_DAYS` (the signals they became stay). Pending
//! and failed deliveries stay for the operator to see. Push deliveries that ended, and push
//! events no delivery needs any more, go after the same time (replays reach back that far).

use std::time::Duration;

use crate::domain::{now, Timestamp};
use crate::services::Services;
use crate::store::StoreError;

/// How often the retention pass runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// What one pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub oauth_states: u64,
    pub webhook_events: u64,
    pub push_deliveries: u64,
    pub push_events: u64,
}

/// One pass at `at`.
pub async fn run_once(services: &Services, at: Timestamp) -> Result<Purged, StoreError> {
    let keep = chrono::Duration::from_std(services.config.webhook_retention)
        .unwrap_or(chrono::Duration::days(7));
    let (push_deliveries, push_events) = services.store.purge_push(at - keep).await?;
    let purged = Purged {
        oauth_states: services.store.purge_oauth_states(at).await?,
        webhook_events: services.store.purge_webhook_events(at - keep).await?,
        push_deliveries,
        push_events,
    };
    if purged != Purged::default() {
        tracing::info!(
            oauth_states = purged.oauth_states,
            webhook_events = purged.webhook_events,
            push_deliveries = purged.push_deliveries,
            push_events = purged.push_events,
            "retention pass"
        );
    }
    Ok(purged)
}

/// Runs a pass every [`INTERVAL`] until shutdown begins.
pub async fn run(services: Services) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if services.is_shutting_down() {
            break;
        }
        if let Err(err) = run_once(&services, now()).await {
            tracing::warn!(error = %err, "retention pass failed");
        }
    }
}
