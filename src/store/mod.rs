//! The storage interface: one trait, [`Store`], with a SQLite and a PostgreSQL implementation,
//! chosen once at start-up from the database URL. Every method that touches tenant data takes
//! the [`TenantId`] first, so no query can reach another tenant's rows.

mod error;
mod inbox;
mod lock;
mod migrations;
mod pool;
mod postgres;
mod push;
mod queue;
mod shared;
mod sqlite;
mod subscriptions;
pub mod wake;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{
    Connection, ConnectionId, ConnectionStatus, ConnectionUpsert, Job, JobId, JobStatus, JobType,
    NewConnection, NewJob, NewOAuthState, NewSignal, SealedField, SealedTokens, SealedValue,
    Signal, SignalId, StateConsumption, TenantId, Timestamp,
};

pub use error::StoreError;
pub use inbox::{EventCompletion, Inbox};
pub use lock::ConnectionLock;
pub use postgres::PostgresStore;
pub use push::{
    AttemptRecord, ClaimRequest, DispatchStep, HealthChange, NextStep, PushStore, ReplayFrom,
};
pub use queue::{
    Enqueued, Finished, IfRunning, JobFinish, Lease, PageCommit, SyncCommit, SyncQueue,
};
pub use sqlite::SqliteStore;
pub use subscriptions::{Recorded, SubscriptionStore};
pub use wake::{WakeUp, WakeUps};

/// Which pass over an OAuth state a store records.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pass {
    /// The authorize hop bound the connect to a browser.
    Open,
    /// The callback used the state up.
    Consume,
}

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Lower-case name for logs and the config summary.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The sort key of the last row of a page; the next page starts strictly after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageKey {
    /// The row's sort timestamp (`occurred_at` for signals, `created_at` otherwise).
    pub at: Timestamp,
    /// The row's id, breaking ties between equal timestamps.
    pub id: Uuid,
}

/// One page request: rows strictly after `after` (in the list's order), at most `fetch` rows.
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub after: Option<PageKey>,
    pub fetch: u32,
}

/// What erasing a tenant removed, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantErasure {
    pub connections: u64,
    pub subscriptions: u64,
    pub signals: u64,
    pub jobs: u64,
    pub webhook_events: u64,
    pub oauth_states: u64,
    pub push_endpoints: u64,
    pub push_deliveries: u64,
    pub push_events: u64,
}

/// The tables a tenant's rows live in, children first, with the member of
/// [`TenantErasure`] each count goes to.
pub(crate) const TENANT_TABLES: [&str; 9] = [
    "push_deliveries",
    "push_events",
    "push_endpoints",
    "signals",
    "sync_jobs",
    "subscriptions",
    "webhook_events",
    "oauth_states",
    "connections",
];

/// The statement deleting a tenant's rows from `table`, one of [`TENANT_TABLES`], the tenant
/// bound as `param` (`$1` or `?`). Deliveries go by their events' tenant, through
/// `push_deliveries_by_event`: `push_deliveries` has no index on its own `tenant_id`.
pub(crate) fn erase_tenant_sql(table: &str, param: &str) -> String {
    match table {
        "push_deliveries" => format!(
            "DELETE FROM push_deliveries WHERE event_id IN \
             (SELECT id FROM push_events WHERE tenant_id = {param})"
        ),
        _ => format!("DELETE FROM {table} WHERE tenant_id = {param}"),
    }
}

impl TenantErasure {
    /// Records `count` rows deleted from `table`.
    pub(crate) fn record(&mut self, table: &str, count: u64) {
        let slot = match table {
            "signals" => &mut self.signals,
            "sync_jobs" => &mut self.jobs,
            "subscriptions" => &mut self.subscriptions,
            "webhook_events" => &mut self.webhook_events,
            "oauth_states" => &mut self.oauth_states,
            "push_deliveries" => &mut self.push_deliveries,
            "push_events" => &mut self.push_events,
            "push_endpoints" => &mut self.push_endpoints,
            _ => &mut self.connections,
        };
        *slot = slot.saturating_add(count);
    }
}

/// Filters of `GET /connections`.
#[derive(Clone, Debug, Default)]
pub struct ConnectionFilter {
    pub provider: Option<String>,
    pub status: Option<ConnectionStatus>,
}

/// Filters of `GET /signals`; bounds are inclusive.
#[derive(Clone, Debug, Default)]
pub struct SignalFilter {
    pub provider: Option<String>,
    pub connection_id: Option<ConnectionId>,
    pub kind: Option<String>,
    pub occurred_after: Option<Timestamp>,
    pub occurred_before: Option<Timestamp>,
    pub include_payload: bool,
}

/// Filters of `GET /jobs`; bounds are inclusive.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub provider: Option<String>,
    pub connection_id: Option<ConnectionId>,
    pub job_type: Option<JobType>,
    pub started_after: Option<Timestamp>,
    pub finished_after: Option<Timestamp>,
}

/// Whether the database answers and carries every migration this build knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub reachable: bool,
    pub migrated: bool,
}

/// The storage interface. Lists are keyset-paginated: connections ascend by
/// `(created_at, id)`, signals and jobs descend by `(occurred_at, id)` and `(created_at, id)`.
#[async_trait]
pub trait Store: Inbox + SyncQueue + SubscriptionStore + PushStore + Send + Sync + 'static {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Probes the database for `/readyz`.
    async fn readiness(&self) -> Readiness;

    /// Closes every pooled connection; later calls fail as unavailable.
    async fn close(&self);

    /// Wake-ups announced by every instance sharing the database (this one included) as they
    /// commit new work, over a connection of their own; `None` where the database cannot
    /// announce (SQLite: one process, woken in-process). Each call opens its own listener.
    fn wake_ups(&self) -> Option<WakeUps> {
        None
    }

    /// Creates a connection.
    async fn insert_connection(&self, new: &NewConnection) -> Result<Connection, StoreError>;

    /// One connection of this tenant.
    async fn get_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<Connection>, StoreError>;

    /// A page of this tenant's connections.
    async fn list_connections(
        &self,
        tenant: TenantId,
        filter: &ConnectionFilter,
        page: PageRequest,
    ) -> Result<Vec<Connection>, StoreError>;

    /// Stores signals, skipping any whose `(connection_id, dedupe_key)` exists; returns how
    /// many were new.
    async fn insert_signals(&self, signals: &[NewSignal]) -> Result<u64, StoreError>;

    /// One signal of this tenant, with its payload.
    async fn get_signal(
        &self,
        tenant: TenantId,
        id: SignalId,
    ) -> Result<Option<Signal>, StoreError>;

    /// A page of this tenant's signals.
    async fn list_signals(
        &self,
        tenant: TenantId,
        filter: &SignalFilter,
        page: PageRequest,
    ) -> Result<Vec<Signal>, StoreError>;

    /// Creates a job.
    async fn insert_job(&self, new: &NewJob) -> Result<Job, StoreError>;

    /// One job of this tenant.
    async fn get_job(&self, tenant: TenantId, id: JobId) -> Result<Option<Job>, StoreError>;

    /// A page of this tenant's jobs.
    async fn list_jobs(
        &self,
        tenant: TenantId,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<Vec<Job>, StoreError>;

    /// Stores a minted OAuth state.
    async fn insert_oauth_state(&self, new: &NewOAuthState) -> Result<(), StoreError>;

    /// Consumes a state atomically: it is valid for exactly one caller, once, before it expires.
    async fn consume_oauth_state(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> Result<StateConsumption, StoreError>;

    /// Marks a state's pass through the authorize hop: it succeeds once, for a state neither
    /// opened nor consumed before it expires (`AlreadyUsed` otherwise).
    async fn open_oauth_state(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> Result<StateConsumption, StoreError>;

    /// Deletes states that expired before `before`; returns how many.
    async fn purge_oauth_states(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Deletes everything the service keeps for `tenant` (its connections with their tokens and
    /// subscriptions, signals, jobs, stored deliveries and pending connects) in one transaction;
    /// says how many of each.
    async fn erase_tenant(&self, tenant: TenantId) -> Result<TenantErasure, StoreError>;

    /// The id of the tenant's connection to this provider account, if there is one.
    async fn find_connection_id(
        &self,
        tenant: TenantId,
        provider: &str,
        external_account_id: &str,
    ) -> Result<Option<ConnectionId>, StoreError>;

    /// Creates the connection, or updates the one with the same account (tokens, scopes, name;
    /// back to `active`). `None` when the account's row exists under another id than
    /// `upsert.id` (a concurrent first connect): find its id, re-seal and call again.
    async fn upsert_connection(
        &self,
        upsert: &ConnectionUpsert,
    ) -> Result<Option<Connection>, StoreError>;

    /// The sealed tokens of one of the tenant's connections.
    async fn connection_tokens(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<SealedTokens>, StoreError>;

    /// The sealed provider secrets of one of the tenant's connections, if it has any.
    async fn connection_secrets(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies a metadata patch to one of the tenant's connections
    /// ([`crate::domain::merge_metadata`]); `false` when it has no such connection.
    async fn patch_connection_metadata(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        patch: &serde_json::Map<String, serde_json::Value>,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Replaces a connection's sealed tokens (after a refresh).
    async fn replace_tokens(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        tokens: &SealedTokens,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Sets a connection's status and last error.
    async fn set_connection_status(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        status: ConnectionStatus,
        last_error: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Connection>, StoreError>;

    /// Marks a connection `revoked` and erases its sealed tokens.
    async fn revoke_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        now: Timestamp,
    ) -> Result<Option<Connection>, StoreError>;

    /// Deletes a connection with its signals and jobs; `false` when there was none.
    async fn delete_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<bool, StoreError>;

    /// Active connections with a refresh token whose access token expires before
    /// `expiring_before`, soonest first.
    async fn connections_needing_refresh(
        &self,
        expiring_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<Connection>, StoreError>;

    /// Serializes work on one connection across every instance sharing the database (an
    /// advisory lock on PostgreSQL, an expiring lease row on SQLite). Released when dropped.
    async fn lock_connection(&self, id: ConnectionId) -> Result<ConnectionLock, StoreError>;

    /// A page of sealed values of one column, by row key, for key rotation.
    async fn sealed_values(
        &self,
        field: SealedField,
        after_row: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<SealedValue>, StoreError>;

    /// Replaces a sealed value if it is still `value.sealed` (so a concurrent refresh wins);
    /// returns whether it was replaced.
    async fn replace_sealed(
        &self,
        value: &SealedValue,
        resealed: &[u8],
    ) -> Result<bool, StoreError>;
}

/// Options for opening a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub max_connections: u32,
}

/// Opens the store named by `url` (`sqlite://...` or `postgres://...`) without migrating.
pub async fn connect(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url, options).await?))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

/// Where a sealed column lives: `(table, key column, value column)`.
pub(crate) const fn sealed_location(
    field: SealedField,
) -> (&'static str, &'static str, &'static str) {
    match field {
        SealedField::AccessToken => ("connections", "id", "access_token_sealed"),
        SealedField::RefreshToken => ("connections", "id", "refresh_token_sealed"),
        SealedField::PkceVerifier => ("oauth_states", "state_hash", "pkce_verifier_sealed"),
        SealedField::ProviderSecrets => ("connections", "id", "secrets_sealed"),
    }
}
