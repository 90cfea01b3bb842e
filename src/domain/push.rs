//! Push delivery records: endpoints Core registers, the events of the outbox and their
//! deliveries. Events are written by the stores in the same transaction as the change they
//! report; the constructors here decide what each event carries, once for both databases.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde_json::{json, Value};

use super::{
    Actor, Connection, ConnectionId, ConnectionStatus, DeliveryId, DeliveryStatus, EndpointId,
    EndpointStatus, EventId, NewSignal, ParseEnumError, TenantId, Timestamp,
};

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A new signal was stored.
    SignalCreated,
    /// A tenant connected an account.
    ConnectionCreated,
    /// A connection moved to `needs_reauth`, `revoked`, `error`, or back to `active`.
    ConnectionStatusChanged,
    /// A provider-side subscription could not be opened or renewed.
    SubscriptionFailed,
}

impl EventType {
    /// Every spelling, in declaration order.
    pub const ALL: &'static [&'static str] = &[
        "signal.created",
        "connection.created",
        "connection.status_changed",
        "subscription.failed",
    ];

    /// The spelling in the body's `type` and in `event_types` filters.
    pub const fn as_str(&self) -> &'static str {
        match self {
            EventType::SignalCreated => "signal.created",
            EventType::ConnectionCreated => "connection.created",
            EventType::ConnectionStatusChanged => "connection.status_changed",
            EventType::SubscriptionFailed => "subscription.failed",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "signal.created" => Ok(EventType::SignalCreated),
            "connection.created" => Ok(EventType::ConnectionCreated),
            "connection.status_changed" => Ok(EventType::ConnectionStatusChanged),
            "subscription.failed" => Ok(EventType::SubscriptionFailed),
            _ => Err(ParseEnumError {
                expected: Self::ALL,
            }),
        }
    }
}

/// An event on its way into the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPushEvent {
    pub id: EventId,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub provider: String,
    /// The signal's kind, for `signal.created`; endpoints filter on it.
    pub kind: Option<String>,
    pub event_type: EventType,
    /// The body's `data`.
    pub data: Value,
    pub created_at: Timestamp,
}

/// A signal as `GET /signals/{id}` shows it, with its tenant.
#[derive(Serialize)]
struct SignalData<'a> {
    id: String,
    tenant_id: String,
    connection_id: String,
    provider: &'a str,
    kind: &'a str,
    occurred_at: Timestamp,
    received_at: Timestamp,
    actor: &'a Option<Actor>,
    title: &'a Option<String>,
    url: &'a Option<String>,
    external_id: &'a Option<String>,
    payload: &'a Value,
}

impl NewPushEvent {
    /// `signal.created` for a newly stored signal. The payload is kept; endpoints that do
    /// not ask for it receive the data without it.
    pub fn signal_created(signal: &NewSignal, now: Timestamp) -> Self {
        let data = SignalData {
            id: signal.id.to_string(),
            tenant_id: signal.tenant_id.to_string(),
            connection_id: signal.connection_id.to_string(),
            provider: &signal.provider,
            kind: &signal.kind,
            occurred_at: signal.occurred_at,
            received_at: signal.received_at,
            actor: &signal.actor,
            title: &signal.title,
            url: &signal.url,
            external_id: &signal.external_id,
            payload: &signal.payload,
        };
        Self {
            id: EventId::generate(),
            tenant_id: signal.tenant_id,
            connection_id: signal.connection_id,
            provider: signal.provider.clone(),
            kind: Some(signal.kind.clone()),
            event_type: EventType::SignalCreated,
            data: serde_json::to_value(data).unwrap_or(Value::Null),
            created_at: now,
        }
    }

    /// `connection.created` for a connection just made.
    pub fn connection_created(connection: &Connection) -> Self {
        Self::about_connection(
            connection,
            EventType::ConnectionCreated,
            connection_data(connection, None),
        )
    }

    /// `connection.status_changed` from `previous` to the connection's status now.
    pub fn connection_status_changed(connection: &Connection, previous: ConnectionStatus) -> Self {
        Self::about_connection(
            connection,
            EventType::ConnectionStatusChanged,
            connection_data(connection, Some(previous)),
        )
    }

    /// `subscription.failed`: `resource` of the connection could not be opened or renewed.
    pub fn subscription_failed(
        tenant: TenantId,
        connection: ConnectionId,
        provider: &str,
        resource: &str,
        error: &str,
        now: Timestamp,
    ) -> Self {
        Self {
            id: EventId::generate(),
            tenant_id: tenant,
            connection_id: connection,
            provider: provider.to_string(),
            kind: None,
            event_type: EventType::SubscriptionFailed,
            data: json!({
                "tenant_id": tenant.to_string(),
                "connection_id": connection.to_string(),
                "provider": provider,
                "resource": resource,
                "error": error,
            }),
            created_at: now,
        }
    }

    fn about_connection(connection: &Connection, event_type: EventType, data: Value) -> Self {
        Self {
            id: EventId::generate(),
            tenant_id: connection.tenant_id,
            connection_id: connection.id,
            provider: connection.provider.clone(),
            kind: None,
            event_type,
            data,
            created_at: connection.updated_at,
        }
    }
}

fn connection_data(c: &Connection, previous: Option<ConnectionStatus>) -> Value {
    let mut data = json!({
        "tenant_id": c.tenant_id.to_string(),
        "connection_id": c.id.to_string(),
        "provider": c.provider,
        "status": c.status.as_str(),
        "external_account": { "id": c.external_account_id, "display_name": c.external_account_name },
        "last_error": c.last_error,
    });
    if let (Some(previous), Some(map)) = (previous, data.as_object_mut()) {
        map.insert("previous_status".into(), Value::from(previous.as_str()));
    }
    data
}

/// An event of the outbox once sequenced.
#[derive(Clone, Debug, PartialEq)]
pub struct PushEvent {
    pub id: EventId,
    pub seq: i64,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub provider: String,
    pub kind: Option<String>,
    pub event_type: EventType,
    pub data: Value,
    pub created_at: Timestamp,
}

/// What an endpoint receives: event types, providers and signal kinds (each `None`: all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointFilter {
    pub event_types: Option<Vec<EventType>>,
    pub providers: Option<Vec<String>>,
    pub kinds: Option<Vec<String>>,
}

impl EndpointFilter {
    /// Whether an event passes: its type listed (or no list), its provider listed, and for a
    /// signal its kind listed. Kinds filter signals only; other events pass them.
    pub fn admits(&self, event: &PushEvent) -> bool {
        let type_ok = self
            .event_types
            .as_ref()
            .is_none_or(|types| types.contains(&event.event_type));
        let provider_ok = self
            .providers
            .as_ref()
            .is_none_or(|p| p.contains(&event.provider));
        let kind_ok = match (&self.kinds, &event.kind) {
            (Some(kinds), Some(kind)) => kinds.iter().any(|k| k == kind),
            _ => true,
        };
        type_ok && provider_ok && kind_ok
    }
}

/// A push endpoint registered by Core.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub id: EndpointId,
    /// [`TenantId::NONE`] for an operator-wide endpoint (every tenant's events).
    pub tenant_id: TenantId,
    pub url: String,
    pub description: Option<String>,
    pub filter: EndpointFilter,
    pub include_payload: bool,
    pub status: EndpointStatus,
    pub disabled_reason: Option<String>,
    /// Since when every attempt has failed (`None` after a success).
    pub failing_since: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    pub last_failure: Option<DeliveryFailure>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Endpoint {
    /// Whether the endpoint receives `event`: its tenant's (or any, when wide) and admitted
    /// by its filter.
    pub fn receives(&self, event: &PushEvent) -> bool {
        (self.tenant_id == TenantId::NONE || self.tenant_id == event.tenant_id)
            && self.filter.admits(event)
    }
}

/// The last failed attempt to an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryFailure {
    pub at: Timestamp,
    /// The HTTP status answered, if one was.
    pub status_code: Option<u16>,
    /// What went wrong otherwise (timeout, refused address, connection closed).
    pub error: Option<String>,
}

/// An endpoint to create.
#[derive(Clone, Debug)]
pub struct NewEndpoint {
    pub id: EndpointId,
    pub tenant_id: TenantId,
    pub url: String,
    pub description: Option<String>,
    pub filter: EndpointFilter,
    pub include_payload: bool,
    /// The signing secret, sealed for this endpoint's row.
    pub secret_sealed: Vec<u8>,
    pub created_at: Timestamp,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub filter: Option<EndpointFilter>,
    pub include_payload: Option<bool>,
    /// `Some(Active)` enables a disabled endpoint again (and forgets its failures).
    pub status: Option<EndpointStatus>,
}

/// An endpoint's sealed signing secrets.
#[derive(Clone, Debug)]
pub struct EndpointSecrets {
    pub current: Vec<u8>,
    /// The secret before the last rotation and until when it keeps signing.
    pub previous: Option<(Vec<u8>, Timestamp)>,
}

/// One delivery of an event to an endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub endpoint_id: EndpointId,
    pub event_id: EventId,
    pub event_type: EventType,
    pub tenant_id: TenantId,
    pub connection_id: ConnectionId,
    pub seq: i64,
    pub status: DeliveryStatus,
    /// Attempts made (or started) so far.
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<u64>,
    pub last_response_body: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: EventType, provider: &str, kind: Option<&str>) -> PushEvent {
        PushEvent {
            id: EventId::generate(),
            seq: 1,
            tenant_id: TenantId(uuid::Uuid::new_v4()),
            connection_id: ConnectionId::generate(),
            provider: provider.into(),
            kind: kind.map(Into::into),
            event_type,
            data: Value::Null,
            created_at: super::super::now(),
        }
    }

    #[test]
    fn event_types_round_trip() {
        for s in EventType::ALL {
            assert_eq!(s.parse::<EventType>().expect("known").as_str(), *s);
        }
        assert!("signal.deleted".parse::<EventType>().is_err());
    }

    #[test]
    fn filters_admit_listed_types_providers_and_kinds_only() {
        let filter = EndpointFilter {
            event_types: Some(vec![EventType::SignalCreated]),
            providers: Some(vec!["github".into()]),
            kinds: Some(vec!["pr_merged".into()]),
        };
        assert!(filter.admits(&event(
            EventType::SignalCreated,
            "github",
            Some("pr_merged")
        )));
        assert!(!filter.admits(&event(
            EventType::SignalCreated,
            "github",
            Some("pr_opened")
        )));
        assert!(!filter.admits(&event(EventType::SignalCreated, "slack", Some("pr_merged"))));
        assert!(!filter.admits(&event(EventType::ConnectionCreated, "github", None)));
        assert!(EndpointFilter::default().admits(&event(
            EventType::SubscriptionFailed,
            "jira",
            None
        )));
    }
}
