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

    /// Inside the caller's transaction, leases until `lease_until` up to `limit` of the oldest
    /// ready events (of `tenant` only, when given), counting an attempt on each.
    async fn lease_events(
        &self,
        conn: &mut Conn<Self>,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        tenant: Option<Uuid>,
    ) -> Result<Vec<StoredWebhookEvent>, StoreError>;

    /// Leases a claim of up to `limit` ready events in one transaction: when `tenants` holds
    /// more than one, an equal share of each one's oldest first (one
    /// [`InboxDialect::lease_events`] per tenant), then the oldest of anyone's in what the
    /// shares left. A store may do it all in one statement (PostgreSQL does).
    async fn lease_claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        tenants: &[Uuid],
    ) -> Result<Vec<StoredWebhookEvent>, StoreError> {
        let mut tx = self.write_pool().begin().await?;
        let mut claimed = Vec::new();
        if tenants.len() > 1 {
            // `in_turn` lists at most `limit` tenants, so the shares fit in the batch.
            let share = turns::share(limit, tenants.len());
            for tenant in tenants {
                let mine = self
                    .lease_events(&mut tx, now, lease_until, share, Some(*tenant))
                    .await?;
                claimed.extend(mine);
            }
        }
        let room = limit.saturating_sub(count(&claimed));
        if room > 0 {
            let rest = self
                .lease_events(&mut tx, now, lease_until, room, None)
                .await?;
            claimed.extend(rest);
        }
        tx.commit().await?;
        Ok(claimed)
    }
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

fn count(events: &[StoredWebhookEvent]) -> u32 {
    u32::try_from(events.len()).unwrap_or(u32::MAX)
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

/// The clause narrowing a lease to one tenant's events when `tenant` names one, in a dialect
/// whose numbered placeholders start with `mark` (`?` or `$`): the tenant is parameter 4.
pub(crate) fn of_tenant(tenant: Option<Uuid>, mark: char) -> String {
    match tenant {
        Some(_) => format!(" AND tenant_id = {mark}4"),
        None => String::new(),
    }
}
