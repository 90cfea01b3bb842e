//! The provider-side subscriptions part of the storage interface: the rows the engine keeps
//! per connection and watched resource, and the writes a subscription job makes under its
//! lease.

use async_trait::async_trait;

use super::{Lease, StoreError};
use crate::domain::{
    Connection, ConnectionId, OpenedSubscription, Subscription, SubscriptionId, SubscriptionStatus,
    TenantId, Timestamp,
};

/// What recording an opened subscription did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Stored: the subscription is `active`.
    Stored,
    /// The job's lease was no longer ours: nothing was written.
    LeaseLost,
    /// The subscription was closed, or its connection stopped being `active`, meanwhile:
    /// nothing was written, and what was opened must be closed at the provider.
    Closed,
}

/// Keeping provider-side subscriptions.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// Records that `connection` needs a subscription on each of `resources`: a `pending` row,
    /// due at `now`, for each resource it has no row for or only a `closed` one (a reconnect).
    /// Returns how many became pending.
    async fn ensure_subscriptions(
        &self,
        connection: &Connection,
        resources: &[String],
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// The connection's subscriptions, oldest first.
    async fn connection_subscriptions(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
    ) -> Result<Vec<Subscription>, StoreError>;

    /// The tenant's subscription to `provider` that the provider knows as `external_id` (a
    /// channel id), unless it is `closed`.
    async fn live_subscription(
        &self,
        tenant: TenantId,
        provider: &str,
        external_id: &str,
    ) -> Result<Option<Subscription>, StoreError>;

    /// The connection's subscriptions with something to do at `now`: `pending`, `active` or
    /// `failed` with `renew_at` at or before `now`.
    async fn subscriptions_due(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<Vec<Subscription>, StoreError>;

    /// Active connections with a subscription due at `now`, for the scheduler.
    async fn connections_with_subscriptions_due(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Connection>, StoreError>;

    /// Records a subscription opened or renewed at the provider, only while `lease` is still
    /// held, the subscription not `closed` and its connection `active`.
    async fn record_subscription_opened(
        &self,
        lease: Lease<'_>,
        id: SubscriptionId,
        opened: &OpenedSubscription,
        now: Timestamp,
    ) -> Result<Recorded, StoreError>;

    /// Notes a failed attempt's error on a subscription that is not `closed`; its status stays.
    async fn note_subscription_error(
        &self,
        id: SubscriptionId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Marks a subscription that is not `closed` as `failed`, to be tried again at `retry_at`.
    async fn fail_subscription(
        &self,
        id: SubscriptionId,
        error: &str,
        retry_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Marks every subscription of the connection that is not `closed` as `closed`, and
    /// returns them (to close at the provider).
    async fn close_subscriptions(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<Vec<Subscription>, StoreError>;

    /// How many subscriptions there are by provider and status (for metrics).
    async fn count_subscriptions(
        &self,
    ) -> Result<Vec<(String, SubscriptionStatus, u64)>, StoreError>;
}
