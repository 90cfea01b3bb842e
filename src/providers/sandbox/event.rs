//! A change to a sandbox item and the signal it becomes. Webhook deliveries
//! ([`super::webhook`]) and the remote API's event listing ([`super::api`]) carry the same
//! fields and go through [`Change::signal`], so a change that arrives both ways is one signal.

use serde::Deserialize;
use serde_json::json;

use crate::connector::SignalDraft;
use crate::domain::{parse_rfc3339, Actor, SignalKind};

/// The signal kind of a sandbox event type; `None` for types the sandbox does not map.
pub(super) fn kind(event_type: &str) -> Option<&'static str> {
    match event_type {
        "event.created" => Some("sandbox_event_created"),
        "event.updated" => Some("sandbox_event_updated"),
        _ => None,
    }
}

/// What changed: `{"id", "title", "occurred_at", "actor"}`.
#[derive(Clone, Debug, Deserialize)]
pub(super) struct Change {
    pub id: String,
    #[serde(default)]
    pub title: Option<String>,
    pub occurred_at: String,
    #[serde(default)]
    pub actor: Option<Actor>,
}

impl Change {
    /// The signal of this change as an `event_type` event: `Ok(None)` for a type the sandbox
    /// does not map, `Err` when `occurred_at` is not an RFC 3339 time.
    pub(super) fn signal(self, event_type: &str) -> Result<Option<SignalDraft>, String> {
        let Some(kind) = kind(event_type) else {
            return Ok(None);
        };
        let occurred_at =
            parse_rfc3339(&self.occurred_at).map_err(|e| format!("occurred_at {e}"))?;
        Ok(Some(SignalDraft {
            kind: SignalKind::of(kind),
            occurred_at,
            // The change, not the delivery: the same change synced later is the same signal.
            dedupe_key: format!("{kind}:{}:{}", self.id, self.occurred_at),
            // The normalized fields only: a raw delivery stays in the inbox.
            payload: json!({
                "id": self.id,
                "event": event_type,
                "occurred_at": self.occurred_at,
            }),
            actor: self.actor,
            title: self.title,
            url: None,
            external_id: Some(self.id),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> Change {
        serde_json::from_value(json!({
            "id": "item-21",
            "title": "Item 21 created",
            "occurred_at": "2026-11-25T10:00:00Z",
            "actor": { "id": "u1", "name": "Ada" }
        }))
        .expect("a change")
    }

    #[test]
    fn a_change_becomes_a_signal_keyed_by_kind_item_and_time() {
        let draft = change()
            .signal("event.created")
            .expect("readable")
            .expect("mapped");
        assert_eq!(draft.kind, "sandbox_event_created");
        assert_eq!(
            draft.dedupe_key,
            "sandbox_event_created:item-21:2026-11-25T10:00:00Z"
        );
        assert_eq!(draft.external_id.as_deref(), Some("item-21"));
        assert_eq!(draft.title.as_deref(), Some("Item 21 created"));
        assert_eq!(draft.actor.as_ref().map(|a| a.id.as_str()), Some("u1"));
        assert_eq!(
            draft.payload,
            json!({ "id": "item-21", "event": "event.created", "occurred_at": "2026-11-25T10:00:00Z" })
        );
        let updated = change().signal("event.updated").expect("readable");
        assert_eq!(
            updated.map(|d| d.kind),
            Some(SignalKind::of("sandbox_event_updated"))
        );
    }

    #[test]
    fn other_types_are_not_signals_and_bad_times_are_errors() {
        assert!(change()
            .signal("event.deleted")
            .expect("readable")
            .is_none());
        let mut bad = change();
        bad.occurred_at = "yesterday".into();
        assert!(bad.signal("event.created").is_err());
    }
}
