//! What connectors hand to the ingest engine, and what it hands them.

use serde_json::Value;

use crate::domain::{now, Actor, Connection, NewSignal, SignalId, TenantId, Timestamp};

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
}

/// A signal as a connector describes it; the engine adds ids, tenant and connection.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalDraft {
    pub kind: String,
    pub occurred_at: Timestamp,
    pub actor: Option<Actor>,
    pub title: Option<String>,
    pub url: Option<String>,
    pub external_id: Option<String>,
    /// Same change, same key, whether it came by webhook or by sync.
    pub dedupe_key: String,
    pub payload: Value,
}

impl SignalDraft {
    /// The signal to store for `connection`.
    pub fn into_signal(self, connection: &Connection) -> NewSignal {
        NewSignal {
            id: SignalId::generate(),
            tenant_id: connection.tenant_id,
            connection_id: connection.id,
            provider: connection.provider.clone(),
            kind: self.kind,
            occurred_at: self.occurred_at,
            received_at: now(),
            actor: self.actor,
            title: self.title,
            url: self.url,
            external_id: self.external_id,
            dedupe_key: self.dedupe_key,
            payload: self.payload,
        }
    }
}

/// One page of an incremental sync.
#[derive(Clone, Debug)]
pub struct SyncPage {
    pub signals: Vec<SignalDraft>,
    /// The cursor to resume from; stored together with this page's signals.
    pub cursor: Value,
    /// Whether another page follows right away.
    pub more: bool,
}
