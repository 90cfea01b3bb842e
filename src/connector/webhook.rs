//! Webhooks as a connector sees them: where a delivery arrived, what verifying it may use,
//! what verification concluded, and a stored event handed back for normalization.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::keys::KeyCache;
use super::{ProviderSettings, SignalDraft};
use crate::crypto::Secret;
use crate::domain::{Connection, ConnectionId, TenantId, Timestamp};

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

    /// The stored headers as a header map (those that are no longer valid headers left out),
    /// for what reads a delivery's headers both before and after it is stored.
    pub fn header_map(&self) -> HeaderMap {
        self.headers
            .iter()
            .filter_map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                let value = HeaderValue::from_str(value.as_str()?).ok()?;
                Some((name, value))
            })
            .collect()
    }
}

/// Routes a stored event by the account its payload names: a named account goes only to a
/// connection of that account (never to another one, even the tenant's only connection); a
/// delivery naming no account goes to the only connection, if there is exactly one, since the
/// tenant-derived secret it was signed with already proves the tenant.
pub fn route_to_account(account: Option<&str>, connections: &[Connection]) -> Option<ConnectionId> {
    match (account, connections) {
        (Some(account), _) => connections
            .iter()
            .find(|c| c.external_account_id == account)
            .map(|c| c.id),
        (None, [only]) => Some(only.id),
        (None, _) => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(headers: serde_json::Map<String, Value>) -> WebhookEvent {
        WebhookEvent {
            tenant_id: TenantId(uuid::Uuid::new_v4()),
            provider: "example".into(),
            event_type: None,
            headers,
            body: Vec::new(),
            received_at: crate::domain::now(),
        }
    }

    #[test]
    fn a_named_account_is_routed_only_to_its_own_connection() {
        let ours = Connection::active_for_tests("example", "acct-1");
        let theirs = Connection::active_for_tests("example", "acct-2");
        let both = [theirs.clone(), ours.clone()];
        assert_eq!(route_to_account(Some("acct-1"), &both), Some(ours.id));
        assert_eq!(
            route_to_account(Some("acct-3"), std::slice::from_ref(&ours)),
            None,
            "an unknown account never falls back to the only connection"
        );
        assert_eq!(route_to_account(Some("acct-1"), &[]), None);
    }

    #[test]
    fn a_delivery_naming_no_account_goes_only_to_a_single_connection() {
        let only = Connection::active_for_tests("example", "acct-1");
        let other = Connection::active_for_tests("example", "acct-2");
        assert_eq!(
            route_to_account(None, std::slice::from_ref(&only)),
            Some(only.id)
        );
        assert_eq!(route_to_account(None, &[only, other]), None);
        assert_eq!(route_to_account(None, &[]), None);
    }

    #[test]
    fn stored_headers_read_back_as_a_header_map_without_invalid_ones() {
        let mut headers = serde_json::Map::new();
        headers.insert("x-example-event".into(), "event.created".into());
        headers.insert("bad name".into(), "v".into());
        headers.insert("x-number".into(), Value::from(3));
        headers.insert("x-newline".into(), "a\nb".into());
        let map = event(headers).header_map();
        assert_eq!(map.len(), 1);
        assert_eq!(
            map.get("x-example-event").and_then(|v| v.to_str().ok()),
            Some("event.created")
        );
    }
}
