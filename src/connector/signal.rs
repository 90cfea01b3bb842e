//! A signal as a connector describes it, and how the engine makes a stored signal of it.

use serde_json::Value;

use super::Descriptor;
use crate::domain::{now, Actor, Connection, NewSignal, SignalId, SignalKind, Timestamp};

/// A signal as a connector describes it; the engine adds ids, tenant and connection.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalDraft {
    /// One of the kinds the connector's descriptor lists.
    pub kind: SignalKind,
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
    /// The signal to store for `connection`. Text that a provider's data carried a NUL
    /// character in (valid JSON, `\u0000`) keeps a U+FFFD in its place: PostgreSQL's text and
    /// `jsonb` refuse NUL, and both backends store the same signal.
    pub fn into_signal(self, connection: &Connection) -> NewSignal {
        let text = |s: Option<String>| s.map(without_nul);
        NewSignal {
            id: SignalId::generate(),
            tenant_id: connection.tenant_id,
            connection_id: connection.id,
            provider: connection.provider.clone(),
            kind: self.kind.into(),
            occurred_at: self.occurred_at,
            received_at: now(),
            actor: self.actor.map(|a| Actor {
                id: without_nul(a.id),
                name: text(a.name),
                email: text(a.email),
            }),
            title: text(self.title),
            url: text(self.url),
            external_id: text(self.external_id),
            dedupe_key: without_nul(self.dedupe_key),
            payload: json_without_nul(self.payload),
        }
    }
}

/// The signals to store of the drafts a connector with `descriptor` produced for
/// `connection`: those of a kind its descriptor lists. Any other is dropped and logged, so
/// Core never receives a kind the catalogue does not announce.
pub fn declared_signals(
    descriptor: &Descriptor,
    drafts: Vec<SignalDraft>,
    connection: &Connection,
) -> Vec<NewSignal> {
    drafts
        .into_iter()
        .filter(|draft| {
            let declared = descriptor.kinds.contains(&draft.kind.as_str());
            if !declared {
                tracing::warn!(provider = descriptor.slug, kind = %draft.kind, "a signal of a kind the catalogue does not list was dropped");
                metrics::counter!("signals_undeclared_total", "provider" => descriptor.slug).increment(1);
            }
            declared
        })
        .map(|draft| draft.into_signal(connection))
        .collect()
}

/// `s` with each NUL character replaced by U+FFFD.
fn without_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

/// `value` with [`without_nul`] applied to every string and key in it, in place: a payload
/// without NUL (nearly all) is walked, not copied.
fn json_without_nul(mut value: Value) -> Value {
    fn scrub(value: &mut Value) {
        match value {
            Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
            Value::Array(items) => items.iter_mut().for_each(scrub),
            Value::Object(fields) => {
                if fields.keys().any(|k| k.contains('\0')) {
                    *fields = std::mem::take(fields)
                        .into_iter()
                        .map(|(k, v)| (without_nul(k), v))
                        .collect();
                }
                fields.values_mut().for_each(scrub);
            }
            _ => {}
        }
    }
    scrub(&mut value);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_become_replacement_characters_everywhere_in_a_signal() {
        let draft = SignalDraft {
            kind: SignalKind::of("issue_created"),
            occurred_at: now(),
            actor: Some(Actor {
                id: "1\0".into(),
                name: Some("Ada\0".into()),
                email: None,
            }),
            title: Some("a\0b".into()),
            url: Some("https://example.com/\0".into()),
            external_id: Some("x\0".into()),
            dedupe_key: "k\0".into(),
            payload: serde_json::json!({
                "clean": "kept as is",
                "na\0me": ["v\0", { "deep": "\0" }, 7, null],
            }),
        };
        let connection = Connection::active_for_tests("github", "1");
        let signal = draft.into_signal(&connection);
        assert_eq!(signal.connection_id, connection.id);
        assert_eq!(signal.title.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(signal.url.as_deref(), Some("https://example.com/\u{FFFD}"));
        assert_eq!(signal.external_id.as_deref(), Some("x\u{FFFD}"));
        assert_eq!(signal.dedupe_key, "k\u{FFFD}");
        let actor = signal.actor.expect("actor");
        assert_eq!(
            (actor.id.as_str(), actor.name.as_deref()),
            ("1\u{FFFD}", Some("Ada\u{FFFD}"))
        );
        assert_eq!(
            signal.payload,
            serde_json::json!({
                "clean": "kept as is",
                "na\u{FFFD}me": ["v\u{FFFD}", { "deep": "\u{FFFD}" }, 7, null],
            })
        );
        assert!(!signal.payload.to_string().contains("\\u0000"));
    }

    #[test]
    fn only_kinds_the_catalogue_lists_are_stored() {
        use crate::connector::{AuthType, RateLimitPolicy};
        static DESCRIPTOR: Descriptor = Descriptor {
            slug: "github",
            display_name: "GitHub",
            auth_type: AuthType::Oauth2,
            default_scopes: &[],
            kinds: &["issue_created"],
            webhooks: true,
            sync: true,
            rate_limit: RateLimitPolicy {
                requests: 1,
                window_secs: 1,
                burst: 1,
                max_concurrency: 1,
            },
            settings: &[],
        };
        let draft = |kind: &'static str| SignalDraft {
            kind: SignalKind::of(kind),
            occurred_at: now(),
            actor: None,
            title: None,
            url: None,
            external_id: None,
            dedupe_key: kind.to_string(),
            payload: serde_json::json!({}),
        };
        let connection = Connection::active_for_tests("github", "1");
        let stored = declared_signals(
            &DESCRIPTOR,
            vec![draft("issue_created"), draft("issue_teleported")],
            &connection,
        );
        let kinds: Vec<_> = stored.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds, ["issue_created"]);
    }
}
