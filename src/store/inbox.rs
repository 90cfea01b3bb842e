//! The webhook inbox part of the storage interface.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreError;
use crate::domain::{
    Connection, ConnectionId, EventStatus, NewSignal, NewWebhookEvent, StoredWebhookEvent,
    TenantId, Timestamp,
};

/// The outcome of one processed event.
#[derive(Clone, Debug)]
pub struct EventCompletion {
    pub id: Uuid,
    pub outcome: EventStatus,
    /// The connection the event was routed to, if any.
    pub connection_id: Option<ConnectionId>,
    pub signals: Vec<NewSignal>,
    pub error: Option<String>,
}

/// Storing verified webhook deliveries and handing them to the inbox worker.
#[async_trait]
pub trait Inbox: Send + Sync {
    /// Stores a delivery unless one with the same `(tenant, provider, dedupe key)` is there;
    /// returns the stored event's id and whether the delivery was a duplicate. Durable when
    /// it returns.
    async fn insert_webhook_event(&self, new: &NewWebhookEvent)
        -> Result<(Uuid, bool), StoreError>;

    /// Leases up to `limit` pending events that are due, until `lease_until`; counts an
    /// attempt for each. An event whose lease expired (its worker died) is due again.
    async fn claim_webhook_events(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredWebhookEvent>, StoreError>;

    /// Records the outcomes of a batch of events (`processed`, `ignored`, `unmatched` or
    /// `failed`) together with their signals, in one transaction. An outcome is recorded only
    /// on an event still `pending` under `lease`, the lease its claim set, and only such an
    /// event's signals are stored: a worker that outlived its lease writes nothing, whatever the
    /// worker that took the event over recorded.
    async fn complete_webhook_events(
        &self,
        completions: &[EventCompletion],
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Records one event's outcome with its signals, as [`Inbox::complete_webhook_events`].
    #[allow(clippy::too_many_arguments)]
    async fn complete_webhook_event(
        &self,
        id: Uuid,
        outcome: EventStatus,
        connection_id: Option<ConnectionId>,
        signals: &[NewSignal],
        error: Option<&str>,
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let completion = EventCompletion {
            id,
            outcome,
            connection_id,
            signals: signals.to_vec(),
            error: error.map(str::to_string),
        };
        self.complete_webhook_events(std::slice::from_ref(&completion), lease, now)
            .await
    }

    /// Releases an event for another attempt at `next_attempt_at`, keeping the error; only
    /// while it is still `pending` under `lease`, the lease its claim set.
    async fn retry_webhook_event(
        &self,
        id: Uuid,
        error: &str,
        lease: Timestamp,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError>;

    /// Gives back a claim whose outcomes could not be recorded: the events of the claim that set
    /// `lease` (those of `ids`, or every one when the claim's answer was lost) that are still
    /// `pending` under that very lease are due again at `now`, without counting the interrupted
    /// attempt. An event finished, retried or claimed again since is left alone. Returns how
    /// many were released.
    async fn release_webhook_events(
        &self,
        lease: Timestamp,
        ids: Option<&[Uuid]>,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Deletes events that ended (`processed`, `ignored` or `unmatched`) and were received
    /// before `before`; pending and failed ones stay. Returns how many.
    async fn purge_webhook_events(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// One of the tenant's stored events.
    async fn get_webhook_event(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<StoredWebhookEvent>, StoreError>;

    /// Every active connection, in any tenant, to the provider account `external_account_id`
    /// (routing an app-level webhook to each tenant that connected the account).
    async fn connections_for_account(
        &self,
        provider: &str,
        external_account_id: &str,
    ) -> Result<Vec<Connection>, StoreError>;

    /// The tenant's active connections to a provider, oldest first (routing candidates).
    async fn active_connections(
        &self,
        tenant: TenantId,
        provider: &str,
    ) -> Result<Vec<Connection>, StoreError>;

    /// The active connections of every `(tenant, provider)` of `keys`: the routing candidates
    /// of a whole batch of events, read at once (one statement on PostgreSQL, whatever the
    /// number of tenants). Each pair's connections come oldest first, as
    /// [`Inbox::active_connections`] lists them.
    async fn active_connections_of(
        &self,
        keys: &[(TenantId, String)],
    ) -> Result<Vec<Connection>, StoreError> {
        let mut found = Vec::new();
        for (tenant, provider) in keys {
            found.extend(self.active_connections(*tenant, provider).await?);
        }
        Ok(found)
    }
}
