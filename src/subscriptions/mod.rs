//! Provider-side subscriptions (watch channels, dynamic webhooks, mailbox watches), provider
//! agnostic. After connect, each resource the connector names becomes a `pending` row and a
//! `subscription` job opens it ([`request_opening`]). The job runs in the sync job queue, in a
//! lane of its own: leased, retried with backoff, never twice at once for a connection across
//! instances ([`step`]). The scheduler queues the same job when a subscription is due for
//! renewal, at [`RENEW_AT`] of its lifetime ([`schedule_due`]). A subscription the job gives up
//! on is `failed`, shown on the connection, and tried again after [`RETRY_FAILED_AFTER`]; the
//! connection keeps syncing meanwhile. A disconnect closes every subscription ([`close_all`]),
//! best effort at the provider, before the grant is revoked. A delivery that claims to come
//! through a subscription is checked against the one the tenant has open ([`claimed`]).

mod close;
mod step;

use std::time::Duration;

use crate::connector::ClaimedSubscription;
use crate::domain::{now, Connection, JobType, NewJob, Subscription, TenantId, Timestamp};
use crate::services::Services;
use crate::store::{IfRunning, StoreError};

pub use close::close_all;
pub use step::{give_up, run, StepError};

/// The share of a subscription's lifetime after which it is renewed.
pub const RENEW_AT: f64 = 0.8;
/// How long a `failed` subscription waits before it is tried again.
pub const RETRY_FAILED_AFTER: Duration = Duration::from_secs(3600);
/// Connections looked at per scheduling query.
const BATCH: u32 = 200;

/// The longest lifetime believed when scheduling renewal: an expiry is a provider's word, and
/// one in the year 9999 would mean never renewing. A longer-lived subscription is renewed early.
pub const MAX_LIFETIME: chrono::Duration = chrono::Duration::days(366);

/// When to renew a subscription opened at `opened_at` that expires at `expires_at`: after
/// [`RENEW_AT`] of its lifetime (at most [`MAX_LIFETIME`]); `None` when it does not expire.
pub fn renew_at(opened_at: Timestamp, expires_at: Option<Timestamp>) -> Option<Timestamp> {
    let expires_at = expires_at?;
    let lifetime = expires_at
        .signed_duration_since(opened_at)
        .clamp(chrono::Duration::zero(), MAX_LIFETIME)
        .num_milliseconds();
    // Lifetimes are clamped far below 2^52 ms, so the float is exact enough; the cast rounds
    // down and stays in range.
    let lead = chrono::Duration::milliseconds((lifetime as f64 * RENEW_AT) as i64);
    // The lead is at most the lifetime, which ends at `expires_at`, a valid instant; the
    // fallback is only for safety.
    Some(opened_at.checked_add_signed(lead).unwrap_or(expires_at))
}

/// Queues the opening of `connection`'s subscriptions, if its provider has any: a `pending`
/// row per resource, and a `subscription` job unless one is queued or running.
pub async fn request_opening(
    services: &Services,
    connection: &Connection,
) -> Result<(), StoreError> {
    let Some(entry) = services.registry.get(&connection.provider) else {
        return Ok(());
    };
    let resources = entry.connector.subscriptions(connection);
    if resources.is_empty() {
        return Ok(());
    }
    services
        .store
        .ensure_subscriptions(connection, &resources, now())
        .await?;
    enqueue(services, connection, now()).await
}

/// Queues a `subscription` job for every active connection with a subscription due at `now`
/// (to open, renew, or try again); returns how many were queued.
pub async fn schedule_due(services: &Services, at: Timestamp) -> Result<usize, StoreError> {
    let due = services
        .store
        .connections_with_subscriptions_due(at, BATCH)
        .await?;
    let mut queued = 0;
    for connection in &due {
        let job = NewJob::queued(connection, JobType::Subscription, at);
        if services
            .store
            .enqueue_sync(&job, IfRunning::Join)
            .await?
            .created
        {
            queued += 1;
        }
    }
    record_gauges(services).await;
    Ok(queued)
}

/// The subscription `tenant` has open at `provider` that a delivery claims to come through:
/// the one the provider knows by the claimed id, not `closed`, whose state holds what the
/// delivery names; `None` when the tenant has no such subscription open (one never opened,
/// one replaced by its renewal, one closed on disconnect, or one watching something else).
pub async fn claimed(
    services: &Services,
    tenant: TenantId,
    provider: &str,
    claim: &ClaimedSubscription,
) -> Result<Option<Subscription>, StoreError> {
    let found = services
        .store
        .live_subscription(tenant, provider, &claim.external_id)
        .await?;
    Ok(found.filter(|s| claim.matches(s)))
}

async fn enqueue(
    services: &Services,
    connection: &Connection,
    at: Timestamp,
) -> Result<(), StoreError> {
    let job = NewJob::queued(connection, JobType::Subscription, at);
    services.store.enqueue_sync(&job, IfRunning::Join).await?;
    services.sync.notify();
    Ok(())
}

/// `subscriptions{provider, status}`: how many subscriptions there are.
async fn record_gauges(services: &Services) {
    match services.store.count_subscriptions().await {
        Ok(counts) => {
            for (provider, status, n) in counts {
                // Counts stay far below 2^52, exact as a float.
                metrics::gauge!("subscriptions", "provider" => provider, "status" => status.as_str())
                    .set(n as f64);
            }
        }
        Err(err) => tracing::debug!(error = %err, "could not count subscriptions"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_is_renewed_after_four_fifths_of_its_lifetime() {
        let opened = now();
        let expires = opened + chrono::Duration::days(30);
        let at = renew_at(opened, Some(expires)).expect("expires");
        assert_eq!((at - opened).num_days(), 24);
        assert_eq!(renew_at(opened, None), None);
        // An expiry in the past is renewed at once.
        let past = opened - chrono::Duration::hours(1);
        assert_eq!(renew_at(opened, Some(past)), Some(opened));
    }

    #[test]
    fn an_absurd_expiry_is_renewed_within_the_longest_lifetime() {
        let opened = now();
        let lead = chrono::Duration::milliseconds(
            (MAX_LIFETIME.num_milliseconds() as f64 * RENEW_AT) as i64,
        );
        let end = chrono::DateTime::<chrono::Utc>::MAX_UTC;
        let year_9999 = crate::domain::parse_rfc3339("9999-12-31T23:59:59Z").expect("time");
        for expires in [end, year_9999] {
            assert_eq!(renew_at(opened, Some(expires)), Some(opened + lead));
        }
        let start = chrono::DateTime::<chrono::Utc>::MIN_UTC;
        assert_eq!(renew_at(opened, Some(start)), Some(opened));
        assert_eq!(renew_at(end, Some(end)), Some(end));
    }
}
