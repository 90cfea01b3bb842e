//! What the SQLite and PostgreSQL stores share: the rules of the job queue and of the inbox,
//! written once as generic functions over a small dialect trait per concern. Each store
//! implements the traits with primitives that run one statement (or one step of the caller's
//! transaction) in its own SQL: placeholders, timestamp encoding and locking clauses stay with
//! the database they belong to, and the control flow that strings the statements together is
//! here.

pub(crate) mod credentials;
pub(crate) mod deliveries;
pub(crate) mod group;
pub(crate) mod inbox;
pub(crate) mod outbox;
pub(crate) mod push;
pub(crate) mod push_rows;
pub(crate) mod queue;
pub(crate) mod replay;
pub(crate) mod subscriptions;
pub(crate) mod turns;

use async_trait::async_trait;
use sqlx::{Database, Pool, Transaction};

use super::StoreError;
use crate::domain::{NewPushEvent, NewSignal};

/// A database connection of dialect `D`, as a transaction's steps receive it.
pub(crate) type Conn<D> = <<D as Dialect>::Db as Database>::Connection;

/// What every shared operation needs from a store: a pool to open its write transactions on.
#[async_trait]
pub(crate) trait Dialect: Send + Sync {
    type Db: Database;

    /// Where the shared operations write: PostgreSQL's one pool; on SQLite the one connection
    /// kept for writes, so the pages being written stay in its cache.
    fn write_pool(&self) -> &Pool<Self::Db>;

    /// Opens a transaction that is going to write (SQLite takes its write lock at once).
    async fn begin_write(&self) -> Result<Transaction<'_, Self::Db>, StoreError> {
        Ok(self.write_pool().begin().await?)
    }

    /// Waits for this process's turn to write, held until the guard drops: on SQLite, whose
    /// one writer at a time would otherwise be chosen by its busy handler, the store's gate;
    /// `None` on PostgreSQL, whose writers do not queue for one lock.
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        None
    }

    /// Where this process's claims stand in their round-robin between tenants.
    fn turns(&self) -> &turns::Turns;

    /// Stores signals inside the caller's transaction, skipping any whose
    /// `(connection_id, dedupe_key)` exists; returns how many were new.
    async fn insert_signals(
        &self,
        conn: &mut Conn<Self>,
        signals: &[NewSignal],
    ) -> Result<u64, StoreError>;

    /// Writes push events into the outbox inside the caller's transaction.
    async fn insert_push_events(
        &self,
        conn: &mut Conn<Self>,
        events: &[NewPushEvent],
    ) -> Result<(), StoreError>;

    /// Called once a transaction that wrote push events (directly or with signals) has
    /// committed: PostgreSQL announces them to every instance then. SQLite needs nothing: its
    /// writer woke this process's readers as it wrote, and they wait for its write lock.
    fn push_events_committed(&self) {}
}
