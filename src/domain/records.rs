//! Rows as the rest of the service sees them, independent of the database behind the store.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    ConnectionId, ConnectionStatus, EventStatus, JobId, JobStatus, JobType, SignalId,
    SubscriptionId, SubscriptionStatus, TenantId, Timestamp,
};

/// Who did the thing a signal reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Actor {
    /// The provider's id of the person or bot.
    pub id: String,
    /// Display name or login, when the provider gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail address, when the provider gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Applies a metadata patch: each member of `patch` replaces the one in `target`, and a member
/// set to `null` removes it.
pub fn merge_metadata(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (name, value) in patch {
        if value.is_null() {
            target.remove(&name);
        } else {
            target.insert(name, value);
        }
    }
}

/// A tenant's link to one account at one provider.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: String,
    pub external_account_id: String,
    pub external_account_name: Option<String>,
    pub status: ConnectionStatus,
    pub scopes: Vec<String>,
    pub token_expires_at: Option<Timestamp>,
    pub last_synced_at: Option<Timestamp>,
    pub last_error: Option<String>,
    /// Non-secret provider state (data centre, site, account address), shown to Core as
    /// `account_details`.
    pub metadata: Map<String, Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[cfg(test)]
impl Connection {
    /// An active connection of the nil tenant to `provider` for `account`, for unit tests.
    pub(crate) fn active_for_tests(provider: &str, account: &str) -> Self {
        let at = super::now();
        Self {
            id: ConnectionId::generate(),
            tenant_id: TenantId(uuid::Uuid::nil()),
            provider: provider.into(),
            external_account_id: account.into(),
            external_account_name: None,
            status: super::ConnectionStatus::Active,
            scopes: vec![],
            token_expires_at: None,
            last_synced_at: None,
            last_error: None,
            metadata: Map::new(),
            created_at: at,
            updated_at: at,
        }
    }
}

/// What is needed to create a connection.
#[derive(Clone, Debug)]
pub struct NewConnection {
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: String,
    pub external_account_id: String,
    pub external_account_name: Option<String>,
    pub status: ConnectionStatus,
    pub scopes: Vec<String>,
    pub token_expires_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

/// A normalized event from a provider.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub id: SignalId,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub provider: String,
    pub kind: String,
    pub occurred_at: Timestamp,
    pub received_at: Timestamp,
    pub actor: Option<Actor>,
    pub title: Option<String>,
    pub url: Option<String>,
    pub external_id: Option<String>,
    pub dedupe_key: String,
    /// `None` when the caller asked for signals without payloads.
    pub payload: Option<Value>,
}

/// A signal to store; ignored when `(connection_id, dedupe_key)` already exists.
#[derive(Clone, Debug)]
pub struct NewSignal {
    pub id: SignalId,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub provider: String,
    pub kind: String,
    pub occurred_at: Timestamp,
    pub received_at: Timestamp,
    pub actor: Option<Actor>,
    pub title: Option<String>,
    pub url: Option<String>,
    pub external_id: Option<String>,
    pub dedupe_key: String,
    pub payload: Value,
}

/// A sync job.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub provider: String,
    pub job_type: JobType,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub scheduled_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub error: Option<String>,
    /// The type of the job to queue when this one succeeds: a sync was requested while it ran.
    pub follow_up: Option<JobType>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A job to enqueue (or, in tests, a job in any state).
#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub provider: String,
    pub job_type: JobType,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub scheduled_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub error: Option<String>,
    pub created_at: Timestamp,
}

impl NewJob {
    /// Attempts a job may make before it fails.
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

    /// A queued job of `job_type` for `connection`, due at `at`.
    pub fn queued(connection: &Connection, job_type: JobType, at: Timestamp) -> Self {
        Self {
            id: JobId::generate(),
            tenant_id: connection.tenant_id,
            connection_id: connection.id,
            provider: connection.provider.clone(),
            job_type,
            status: JobStatus::Queued,
            attempts: 0,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            scheduled_at: at,
            started_at: None,
            finished_at: None,
            error: None,
            created_at: at,
        }
    }
}

/// A minted OAuth state, stored by its hash until the callback consumes it.
#[derive(Clone, Debug)]
pub struct NewOAuthState {
    pub state_hash: Vec<u8>,
    pub tenant_id: TenantId,
    pub provider: String,
    pub pkce_verifier_sealed: Option<Vec<u8>>,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    pub return_to: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A state the callback consumed.
#[derive(Clone, Debug)]
pub struct OAuthState {
    pub state_hash: Vec<u8>,
    pub tenant_id: TenantId,
    pub provider: String,
    pub pkce_verifier_sealed: Option<Vec<u8>>,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    pub return_to: Option<String>,
    pub expires_at: Timestamp,
}

/// What consuming a state found.
#[derive(Clone, Debug)]
pub enum StateConsumption {
    /// The state was valid and is now used up.
    Consumed(OAuthState),
    /// No such state.
    Unknown,
    /// The state expired before it was used; `return_to` lets the caller send the user back.
    Expired { return_to: Option<String> },
    /// The state was used before.
    AlreadyUsed { return_to: Option<String> },
}

/// Sealed token columns of a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealedTokens {
    pub access_token: Option<Vec<u8>>,
    pub refresh_token: Option<Vec<u8>>,
    pub expires_at: Option<Timestamp>,
}

/// A connection created or refreshed by the OAuth callback, keyed by
/// `(tenant_id, provider, external_account_id)`.
#[derive(Clone, Debug)]
pub struct ConnectionUpsert {
    /// The id the row has, or gets if it is new; the tokens are sealed for this id.
    pub id: ConnectionId,
    pub tenant_id: TenantId,
    pub provider: String,
    pub external_account_id: String,
    pub external_account_name: Option<String>,
    pub scopes: Vec<String>,
    pub tokens: SealedTokens,
    /// The connection's metadata from now on (the caller merges what it had).
    pub metadata: Map<String, Value>,
    /// Sealed provider secrets; `None` keeps those the connection has.
    pub secrets_sealed: Option<Vec<u8>>,
    pub now: Timestamp,
}

/// A sealed value somewhere in the database, for key rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedValue {
    /// Which column holds it.
    pub field: SealedField,
    /// The row's key: the connection id, or the state hash.
    pub row: Vec<u8>,
    pub tenant_id: TenantId,
    pub provider: String,
    pub sealed: Vec<u8>,
}

/// The columns that hold sealed values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SealedField {
    AccessToken,
    RefreshToken,
    PkceVerifier,
    /// A connection's provider secrets (a sealed JSON object).
    ProviderSecrets,
}

impl SealedField {
    /// Every sealed column.
    pub const ALL: [SealedField; 4] = [
        SealedField::AccessToken,
        SealedField::RefreshToken,
        SealedField::PkceVerifier,
        SealedField::ProviderSecrets,
    ];

    /// The name bound into the value's AAD.
    pub const fn aad_name(&self) -> &'static str {
        match self {
            SealedField::AccessToken => "access_token",
            SealedField::RefreshToken => "refresh_token",
            SealedField::PkceVerifier => "pkce_verifier",
            SealedField::ProviderSecrets => "provider_secrets",
        }
    }
}

/// A verified webhook delivery to store in the inbox.
#[derive(Clone, Debug)]
pub struct NewWebhookEvent {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub provider: String,
    /// Set when the sender named the connection (Core relaying an event).
    pub connection_id: Option<ConnectionId>,
    pub dedupe_key: String,
    pub event_type: Option<String>,
    /// Headers as received, minus credentials.
    pub headers: serde_json::Map<String, Value>,
    pub body: Vec<u8>,
    pub received_at: Timestamp,
}

/// A webhook event in the inbox.
#[derive(Clone, Debug)]
pub struct StoredWebhookEvent {
    pub id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub provider: String,
    pub connection_id: Option<ConnectionId>,
    pub dedupe_key: String,
    pub event_type: Option<String>,
    pub headers: serde_json::Map<String, Value>,
    pub body: Vec<u8>,
    pub status: EventStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub received_at: Timestamp,
    pub processed_at: Option<Timestamp>,
}

/// A provider-side subscription of a connection: a watch channel, a dynamic webhook, a mailbox
/// watch. One per connection and watched resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub id: SubscriptionId,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub provider: String,
    /// What it watches, in the provider's terms (e.g. `changes`, `calendar:primary`).
    pub resource: String,
    /// The provider's id of it (channel id, webhook id), once opened.
    pub external_id: Option<String>,
    pub status: SubscriptionStatus,
    pub expires_at: Option<Timestamp>,
    /// When the engine renews it (or, `failed`, tries again); `None`: nothing to do.
    pub renew_at: Option<Timestamp>,
    /// The provider's non-secret data about it (a channel's resource id).
    pub state: Map<String, Value>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A subscription opened (or renewed) at the provider, to record.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenedSubscription {
    pub external_id: String,
    pub expires_at: Option<Timestamp>,
    pub renew_at: Option<Timestamp>,
    pub state: Map<String, Value>,
}
