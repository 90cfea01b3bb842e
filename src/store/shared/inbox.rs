//! The inbox's rules, once for both databases: a batch of outcomes lands in one transaction
//! with its signals, and an outcome is recorded only under the lease its claim set.
//! [`InboxDialect`] is the SQL each store runs for the steps.

use async_trait::async_trait;
use uuid::Uuid;

use super::{turns, Conn, Dialect};
use crate::domain::{NewSignal, StoredWebhookEvent, Timestamp};
use crate::store::{EventCompletion, StoreError};

/// The statements of the inbox, in one store's SQL.
#[async_trait]
pub(crate) trait InboxDialect: Dialect {
    /// Inside the caller's transaction, records each completion's outcome (with its connection,
    /// when it names one, and its error) on its event and drops the event's lease, only while
    /// the event is still `pending` under `lease`; returns the ids of the events recorded.
    async fn record_outcomes(
        &self,
        conn: &mut Conn<Self>,
        completions: &[EventCompletion],
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// Up to `max` tenants with a pending event ready at `now` (due and not leased), in
    /// tenant-id order, after `after` (from the lowest with `None`).
    async fn pending_tenants(
        &self,
        now: Timestamp,
        after: Option<Uuid>,
        max: u32,
    ) -> Result<Vec<Uuid>, StoreError>;

    /// Leases until `lease_until`, in one statement that is its own transaction, a claim of up
    /// to `limit` ready events, counting an attempt on each: an equal share of the oldest of
    /// each of `tenants` when it holds more than one ([`turns::shares`]), then the oldest of
    /// anyone's in the room the shares left, none twice.
    async fn lease_claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        tenants: &[Uuid],
    ) -> Result<Vec<StoredWebhookEvent>, StoreError>;
}

/// [`crate::store::Inbox::claim_webhook_events`]: a batch shared between the tenants with
/// events ready, in turn (`store::shared::turns`): each gets an equal share of its oldest, and
/// the oldest of anyone's fill what the shares leave.
pub(crate) async fn claim<S: InboxDialect>(
    store: &S,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<StoredWebhookEvent>, StoreError> {
    let turn = &store.turns().inbox;
    let tenants = turns::in_turn(turn.last(), limit, |after, max| {
        store.pending_tenants(now, after, max)
    })
    .await?;
    // Only the lease takes this process's turn to write: finding the tenants is a read.
    let mut claimed = {
        let _turn = store.write_turn().await;
        store.lease_claim(now, lease_until, limit, &tenants).await?
    };
    if let Some(last) = tenants.last() {
        turn.served(*last);
    }
    // In the order the events arrived, whatever order the statement returned them in: the
    // batch's signals are written in this order.
    claimed.sort_by_key(|e| (e.received_at, e.id));
    Ok(claimed)
}

/// [`crate::store::Inbox::complete_webhook_events`].
pub(crate) async fn complete<S: InboxDialect>(
    store: &S,
    completions: &[EventCompletion],
    lease: Timestamp,
    now: Timestamp,
) -> Result<(), StoreError> {
    // One transaction for the whole batch: every outcome and its signals land together. The
    // outcomes go first (on SQLite the first statement takes the write lock), and only the
    // signals of events still under this lease follow: a worker that outlived its lease writes
    // nothing, whatever the worker that took its events over decided.
    let mut tx = store.write_pool().begin().await?;
    let recorded = store
        .record_outcomes(&mut tx, completions, lease, now)
        .await?;
    let signals: Vec<NewSignal> = completions
        .iter()
        .filter(|c| recorded.contains(&c.id))
        .flat_map(|c| c.signals.iter().cloned())
        .collect();
    let inserted = if signals.is_empty() {
        0
    } else {
        store.insert_signals(&mut tx, &signals).await?
    };
    tx.commit().await?;
    if inserted > 0 {
        store.push_events_committed();
    }
    Ok(())
}
