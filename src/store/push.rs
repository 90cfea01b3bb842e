//! The push delivery part of the storage interface: endpoints, the outbox's numbering and
//! fan-out, and the deliveries the dispatcher claims under a lease and records attempts of.
//! Both stores implement it with the same statements (`src/store/shared/push.rs`).

use async_trait::async_trait;
use uuid::Uuid;

use super::{PageKey, PageRequest, SignalFilter, StoreError};
use crate::domain::{
    Delivery, DeliveryId, Endpoint, EndpointId, EndpointPatch, EndpointSecrets, EventId,
    NewEndpoint, PushEvent, SignalId, TenantId, Timestamp,
};

/// The outcome of one attempt, as the dispatcher records it.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub delivery: DeliveryId,
    pub endpoint: EndpointId,
    /// The lease the attempt ran under; nothing is written once another holds it.
    pub owner: Uuid,
    pub now: Timestamp,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    /// The start of the answer's body, already capped.
    pub response_body: Option<String>,
    pub next: NextStep,
    pub health: HealthChange,
}

/// What becomes of the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Delivered.
    Succeeded,
    /// Tried again at this instant.
    RetryAt(Timestamp),
    /// The schedule is spent: the delivery failed, and the next one of its connection goes.
    GiveUp,
}

/// What the attempt says about the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthChange {
    /// It answered `2xx`: no longer failing.
    Healthy,
    /// It failed; it is disabled now with `disable` as the reason when given, or when it has
    /// been failing since `failing_cutoff` or earlier.
    Failing {
        disable: Option<String>,
        failing_cutoff: Timestamp,
    },
}

/// Where a replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Every event created at or after this instant.
    Since(Timestamp),
    /// The `signal.created` events of signals after this position of `GET /signals` (later
    /// `occurred_at`, then higher id): the signals a reader of the list had not reached.
    AfterSignal(PageKey),
}

/// A claim of deliveries ([`PushStore::claim_deliveries`]): as many as `room` says when the
/// claim is made (a dispatcher's free slots, read then rather than before the fan-out), due at
/// `now`, leased to `owner` until `lease_until`.
#[derive(Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub owner: Uuid,
    pub now: Timestamp,
    pub lease_until: Timestamp,
    pub room: &'a (dyn Fn() -> u32 + Send + Sync),
}

impl ClaimRequest<'_> {
    /// How many deliveries to claim now.
    pub fn limit(&self) -> u32 {
        (self.room)()
    }
}

/// What [`PushStore::dispatch_step`] did.
#[derive(Debug, Default)]
pub struct DispatchStep {
    /// Per record, in order: whether its outcome was written (its delivery was still leased to
    /// the attempt), as [`PushStore::record_attempts`] returns.
    pub kept: Vec<bool>,
    /// Events the fan-out watermark passed, and the deliveries created from them.
    pub fanned_out: (u64, u64),
    /// The deliveries claimed.
    pub claimed: Vec<Delivery>,
}

/// What keeps push delivery.
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Creates an endpoint.
    async fn insert_endpoint(&self, new: &NewEndpoint) -> Result<Endpoint, StoreError>;

    /// One endpoint of `scope` (a tenant, or [`TenantId::NONE`] for operator-wide ones).
    async fn get_endpoint(
        &self,
        scope: TenantId,
        id: EndpointId,
    ) -> Result<Option<Endpoint>, StoreError>;

    /// A page of `scope`'s endpoints, oldest first.
    async fn list_endpoints(
        &self,
        scope: TenantId,
        page: PageRequest,
    ) -> Result<Vec<Endpoint>, StoreError>;

    /// Applies a patch; `None` when `scope` has no such endpoint.
    async fn update_endpoint(
        &self,
        scope: TenantId,
        id: EndpointId,
        patch: &EndpointPatch,
        now: Timestamp,
    ) -> Result<Option<Endpoint>, StoreError>;

    /// Deletes an endpoint with its deliveries; `false` when there was none.
    async fn delete_endpoint(&self, scope: TenantId, id: EndpointId) -> Result<bool, StoreError>;

    /// Makes `sealed` the signing secret; the one it replaces keeps signing until
    /// `previous_until`. `false` when `scope` has no such endpoint.
    async fn rotate_endpoint_secret(
        &self,
        scope: TenantId,
        id: EndpointId,
        sealed: &[u8],
        previous_until: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Any endpoint by id with its sealed secrets, read in one statement for the dispatcher.
    async fn endpoint_for_delivery(
        &self,
        id: EndpointId,
    ) -> Result<Option<(Endpoint, EndpointSecrets)>, StoreError>;

    /// Numbers the events an instance of an earlier release left for a sequencer, if any
    /// (PostgreSQL; this release numbers events as it inserts them), then fans up to `limit` of
    /// the events past the fan-out watermark, in `seq` order, out to every active endpoint that receives them, and moves the watermark past
    /// them. With no active endpoint it reads no events and moves the watermark to the highest
    /// `seq`. Returns how many events the watermark passed (with no active endpoint, how far it
    /// moved, which counts any number whose event was deleted first) and how many deliveries
    /// that created (an event no endpoint receives creates none).
    async fn sequence_and_fan_out(
        &self,
        limit: u32,
        now: Timestamp,
    ) -> Result<(u64, u64), StoreError>;

    /// Numbers what an earlier release left unnumbered, as [`PushStore::sequence_and_fan_out`]
    /// does but without fanning out, and returns the highest `seq` given so far (0 before the
    /// first event). On SQLite the read is under the write lock, so that a writer which
    /// announced its events before committing has committed them.
    async fn sequence_events(&self) -> Result<i64, StoreError>;

    /// Up to `limit` sequenced `signal.created` events of `tenant` after `after_seq`, in `seq`
    /// order, limited to the provider, connection and kind `filter` names (its other fields
    /// are the caller's to apply).
    async fn signal_events_after(
        &self,
        tenant: TenantId,
        after_seq: i64,
        filter: &SignalFilter,
        limit: u32,
    ) -> Result<Vec<PushEvent>, StoreError>;

    /// The `seq` of the `signal.created` event of `tenant`'s signal `signal`, once it is
    /// sequenced and while the outbox keeps it.
    async fn signal_event_seq(
        &self,
        tenant: TenantId,
        signal: SignalId,
    ) -> Result<Option<i64>, StoreError>;

    /// One step of the dispatcher: [`PushStore::record_attempts`] of `records` (attempts
    /// made since the last step), [`PushStore::sequence_and_fan_out`] of up to `fan_out` events,
    /// then [`PushStore::claim_deliveries`] as `claim` asks (nothing when it has no room), in
    /// that order, so a line whose head was just recorded has its next delivery claimed in the
    /// same step. SQLite does all three in one transaction of its one writer; PostgreSQL
    /// records while it fans out, each in its own transaction, then claims outside the
    /// fan-out's lock, so instances claim while one fans out.
    async fn dispatch_step(
        &self,
        records: &[AttemptRecord],
        fan_out: u32,
        claim: &ClaimRequest<'_>,
    ) -> Result<DispatchStep, StoreError>;

    /// Leases up to `limit` due deliveries that head their (endpoint, connection) line until
    /// `lease_until`, counting the attempt.
    async fn claim_deliveries(
        &self,
        owner: Uuid,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// The events of `ids` that are in the outbox, in one read (in no particular order; an id
    /// named twice is read once).
    async fn get_events(&self, ids: &[EventId]) -> Result<Vec<PushEvent>, StoreError>;

    /// Records attempts in one transaction, the deliveries in one statement; for each, `false`
    /// (nothing written for it) when its lease was lost.
    async fn record_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<bool>, StoreError>;

    /// A page of an endpoint's deliveries, newest first.
    async fn list_deliveries(
        &self,
        endpoint: EndpointId,
        page: PageRequest,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// How many of an endpoint's deliveries are pending.
    async fn endpoint_backlog(&self, endpoint: EndpointId) -> Result<u64, StoreError>;

    /// Every endpoint with how many of its deliveries are pending (zero included), in one
    /// statement: the backlog gauge, read when metrics are scraped.
    async fn endpoint_backlogs(&self) -> Result<Vec<(EndpointId, u64)>, StoreError>;

    /// How many recorded events fan-out has yet to reach: those numbered past the fan-out
    /// watermark and, on PostgreSQL, those an instance of an earlier release left unnumbered.
    /// Read when metrics are scraped; it stays near zero while the dispatcher keeps up.
    async fn outbox_waiting(&self) -> Result<u64, StoreError>;

    /// New deliveries to `endpoint` of every event from `from` on that it receives (the same
    /// event ids), at most `limit`; returns how many, or `None` when `from` names a signal
    /// that none of the endpoint's events is about.
    async fn replay(
        &self,
        endpoint: &Endpoint,
        from: &ReplayFrom,
        limit: u32,
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError>;

    /// Deletes deliveries that ended before `before`, and events older than it that fan-out
    /// has passed and no delivery refers to any more; returns how many of each.
    async fn purge_push(&self, before: Timestamp) -> Result<(u64, u64), StoreError>;
}
