//! Domain types parsed once at the edge: typed ids, statuses, timestamps and records.

mod ids;
mod names;
mod push;
mod records;
mod status;
mod time;

pub use ids::{
    ConnectionId, DeliveryId, EndpointId, EventId, JobId, SignalId, SubscriptionId, TenantId,
};
pub use names::{ProviderSlug, SignalKind};
pub use push::{
    Delivery, DeliveryFailure, Endpoint, EndpointFilter, EndpointPatch, EndpointSecrets, EventType,
    NewEndpoint, NewPushEvent, PushEvent,
};
pub use records::{
    merge_metadata, Actor, Connection, ConnectionUpsert, Job, NewConnection, NewJob, NewOAuthState,
    NewSignal, NewWebhookEvent, OAuthState, OpenedSubscription, SealedField, SealedTokens,
    SealedValue, Signal, StateConsumption, StoredWebhookEvent, Subscription,
};
pub use status::{
    ConnectionStatus, DeliveryStatus, EndpointStatus, EventStatus, JobStatus, JobType,
    ParseEnumError, SubscriptionStatus,
};
pub use time::{format as format_time, from_micros, now, parse_rfc3339, to_micros, Timestamp};
