//! Webhooks as a connector sees them: where a delivery arrived, what verifying it may use,
//! what verification concluded, and a stored event handed back for normalization.

use axum::http::HeaderMap;
use serde_json::Value;

use super::keys::KeyCache;
use super::{ProviderSettings, SignalDraft};
use crate::crypto::Secret;
use crate::domain::{TenantId, Timestamp};

/// The URL a webhook delivery arrived at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookUrl {
    /// `/webhooks/{provider}/{tenant_id}`: registered for one tenant.
    Tenant(TenantId),
    /// `/webhooks/{provider}`: one URL for the whole provider app.
    App,
}

/// A delivery to verify, with what verification may use.
#[derive(Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub settings: &'a ProviderSettings,
    pub url: WebhookUrl,
    pub headers: &'a HeaderMap,
    /// The body exactly as received.
    pub body: &'a [u8],
    /// Published keys (JWKS) for schemes that sign with them (Pub/Sub push's OIDC token).
    pub keys: &'a KeyCache,
    /// This service's public base URL (`POBLYSH_PUBLIC_BASE_URL`): with `url`, the address the
    /// provider posted to, which schemes may use as their default audience.
    pub public_base_url: &'a url::Url,
}

/// What an operator registers at the provider so that one tenant's deliveries reach
/// `/webhooks/{provider}/{tenant_id}`.
#[derive(Debug)]
pub struct TenantWebhook {
    /// The secret the provider signs those deliveries with; `None` while the provider's
    /// webhook secret is not configured.
    pub secret: Option<Secret>,
    /// The content type to choose.
    pub content_type: &'static str,
    /// The provider's event types to subscribe to.
    pub events: &'static [&'static str],
}

/// A webhook delivery the provider's signature scheme vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Store it: `dedupe_key` identifies the delivery (redeliveries share it).
    Event {
        dedupe_key: String,
        event_type: Option<String>,
    },
    /// A protocol handshake to answer directly (e.g. Slack's `url_verification`), not stored.
    Handshake {
        content_type: &'static str,
        body: Vec<u8>,
    },
}

/// Why a delivery was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    /// No webhook secret is configured for the provider.
    #[error("no webhook secret is configured for this provider")]
    NotConfigured,
    /// The signature is missing, malformed, wrong, or outside the replay window.
    #[error("{0}")]
    InvalidSignature(String),
    /// The delivery lacks what the provider always sends (e.g. its delivery id).
    #[error("{0}")]
    Malformed(String),
}

/// A stored webhook event, as the normalizer sees it.
#[derive(Clone, Debug)]
pub struct WebhookEvent {
    pub tenant_id: TenantId,
    pub provider: String,
    pub event_type: Option<String>,
    /// Headers as received, minus secrets, lower-case names.
    pub headers: serde_json::Map<String, Value>,
    pub body: Vec<u8>,
    pub received_at: Timestamp,
}

impl WebhookEvent {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }
}

/// What a stored event means.
#[derive(Clone, Debug)]
pub enum Normalized {
    /// Zero or more signals (zero: understood but nothing to report).
    Signals(Vec<SignalDraft>),
    /// An event type this provider does not map.
    Ignored,
    /// The provider says something changed without saying what (Google's push channels):
    /// the connection is synced now, and the sync yields the signals.
    SyncRequested,
    /// The provider says the connection's grant is gone (Slack's `tokens_revoked` of the bot
    /// token, `app_uninstalled`): the routed connection is marked `revoked` with this reason,
    /// its tokens erased, and it syncs no more.
    AccessRevoked { reason: String },
}
