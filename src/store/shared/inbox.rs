//! The inbox's rules, once for both databases: a batch of outcomes lands in one transaction
//! with its signals, and an outcome is recorded only under the lease its claim set.
//! [`InboxDialect`] is the SQL each store runs for the steps.

use async_trait::async_trait;
use uuid::Uuid;

use super::{Conn, Dialect};
use crate::domain::{NewSignal, Timestamp};
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
    let mut tx = store.pool().begin().await?;
    let recorded = store
        .record_outcomes(&mut tx, completions, lease, now)
        .await?;
    let signals: Vec<NewSignal> = completions
        .iter()
        .filter(|c| recorded.contains(&c.id))
        .flat_map(|c| c.signals.iter().cloned())
        .collect();
    if !signals.is_empty() {
        store.insert_signals(&mut tx, &signals).await?;
    }
    tx.commit().await?;
    Ok(())
}
