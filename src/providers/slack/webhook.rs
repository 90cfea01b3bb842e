//! Slack Events API deliveries: verification, handshakes and routing to a connection.
//!
//! - **Signature** (<https://api.slack.com/authentication/verifying-requests-from-slack>):
//!   `X-Slack-Signature: v0=<hex>` is the HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw
//!   body}` under the app's signing secret (`POBLYSH_SLACK_WEBHOOK_SECRET`), compared in
//!   constant time; the timestamp must be within five minutes of now.
//! - **Handshakes**, answered and not stored: `url_verification` with its `challenge`
//!   (<https://api.slack.com/events/url_verification>), and `app_rate_limited`, acknowledged.
//! - **Events** (`event_callback`): the dedupe key is the envelope's `event_id`, which Slack's
//!   retries (`X-Slack-Retry-Num`, up to three) repeat
//!   (<https://api.slack.com/apis/events-api>, "Retries");
//!   the event type is the inner `event.type`, with its subtype after a dot
//!   (`message.message_changed`).
//! - **Account**: the workspace (or, for an org-wide install, the Enterprise Grid organization)
//!   the app is installed in, as the OAuth install stored it in `external_account_id`; see
//!   [`installation`].

use axum::http::HeaderMap;
use serde_json::{json, Value};

use super::wire::Envelope;
use crate::connector::signature::{check_replay_window, header, hmac_sha256_hex_matches};
use crate::connector::ProviderSettings;
use crate::connector::{Verified, WebhookEvent, WebhookRejection};
use crate::domain::{Connection, ConnectionId};

/// The headers carrying Slack's signature: never stored with the event, which a
/// database reader could otherwise replay.
pub(super) const SIGNATURE_HEADERS: &[&str] = &["x-slack-signature"];

/// Slack's replay window: requests signed more than five minutes away from now are refused
/// (<https://api.slack.com/authentication/verifying-requests-from-slack>).
const REPLAY_WINDOW_SECS: i64 = 300;

/// What the headers alone can settle, before the body is read: the signing secret is
/// configured, the signature is `v0=` and 64 hex digits, the timestamp inside the replay
/// window. Returns the secret, the signature's hex and the timestamp.
pub(super) fn precheck<'a>(
    settings: &'a ProviderSettings,
    headers: &'a HeaderMap,
) -> Result<(&'a crate::crypto::Secret, &'a str, &'a str), WebhookRejection> {
    let secret = settings
        .webhook_secret
        .as_ref()
        .ok_or(WebhookRejection::NotConfigured)?;
    let invalid = |why: &str| WebhookRejection::InvalidSignature(why.to_string());
    let signature = header(headers, "x-slack-signature")
        .ok_or_else(|| invalid("the X-Slack-Signature header is missing"))?;
    let timestamp = header(headers, "x-slack-request-timestamp")
        .ok_or_else(|| invalid("the X-Slack-Request-Timestamp header is missing"))?;
    let hex = signature
        .strip_prefix("v0=")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| invalid("X-Slack-Signature must be v0= and 64 hex digits"))?;
    check_replay_window(timestamp, REPLAY_WINDOW_SECS)?;
    Ok((secret, hex, timestamp))
}

pub(super) fn verify(
    settings: &ProviderSettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, WebhookRejection> {
    let (secret, hex, timestamp) = precheck(settings, headers)?;
    let signed: [&[u8]; 4] = [b"v0:", timestamp.as_bytes(), b":", body];
    if !hmac_sha256_hex_matches(secret, &signed, hex) {
        return Err(WebhookRejection::InvalidSignature(
            "the signature does not match the body".into(),
        ));
    }
    classify(body)
}

/// What a verified body is: a handshake to answer or an event to store.
fn classify(body: &[u8]) -> Result<Verified, WebhookRejection> {
    let malformed = |why: &str| WebhookRejection::Malformed(why.to_string());
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|_| malformed("the body is not a Slack Events API payload (JSON)"))?;
    match envelope.kind.as_deref() {
        // Answered with the challenge as JSON, one of the three answers Slack accepts
        // (https://api.slack.com/events/url_verification).
        Some("url_verification") => {
            let challenge = envelope
                .challenge
                .filter(|c| !c.is_empty())
                .ok_or_else(|| malformed("the url_verification names no challenge"))?;
            Ok(Verified::Handshake {
                content_type: "application/json",
                body: json!({ "challenge": challenge }).to_string().into_bytes(),
            })
        }
        // A notice, not activity: Slack stops sending a workspace's events for the rest of the
        // minute once the app passes 30,000 in an hour, and says so here
        // (https://api.slack.com/apis/events-api#rate_limiting). It names nothing to turn into
        // a signal and carries no event_id, so it is acknowledged (a 200 keeps the
        // subscription healthy) and logged for operators rather than stored.
        Some("app_rate_limited") => {
            tracing::warn!(
                team_id = envelope.team_id.as_deref().unwrap_or_default(),
                minute_rate_limited = envelope.minute_rate_limited.unwrap_or_default(),
                "Slack is rate limiting this app's events from a workspace; \
                 the events of that minute are not delivered"
            );
            Ok(Verified::Handshake {
                content_type: "text/plain",
                body: Vec::new(),
            })
        }
        kind => {
            let event_id = envelope
                .event_id
                .as_deref()
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| malformed("the Slack event has no event_id"))?;
            let event_type = match kind {
                Some("event_callback") => envelope.event.as_ref().and_then(inner_type),
                other => other.map(str::to_string),
            };
            Ok(Verified::Event {
                dedupe_key: event_id.to_string(),
                event_type,
            })
        }
    }
}

/// `event.type`, with `.subtype` appended when there is one (`message.message_changed`).
fn inner_type(event: &Value) -> Option<String> {
    let kind = event.get("type")?.as_str()?;
    Some(match event.get("subtype").and_then(Value::as_str) {
        Some(subtype) => format!("{kind}.{subtype}"),
        None => kind.to_string(),
    })
}

/// The account an app-level delivery (`POST /webhooks/slack`) belongs to: the installation
/// (see [`installation`]), else the envelope's `team_id`.
pub(super) fn app_account(body: &[u8]) -> Option<String> {
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    installation(&envelope).or(envelope.team_id.filter(|t| !t.is_empty()))
}

/// The installation of the app the event is delivered for, in the form the OAuth install
/// stores as `external_account_id`: the workspace (`team.id`), or the organization for an
/// org-wide install on Enterprise Grid (`enterprise.id`; see [`super::oauth`]).
///
/// Slack names it in `authorizations[0]`. The envelope's `team_id` is "the workspace where
/// the event occurred" (<https://api.slack.com/types/event>), which in a Slack Connect
/// channel can be another organization's workspace, and for an org-wide install is one
/// workspace of the organization, not the installation; `context_team_id` likewise names the
/// conversation's workspace. Slack's own Bolt frameworks read `authorizations[0]` first for
/// this reason ("to make Events API handling functioning also for shared channels",
/// `slack_bolt/request/internals.py` in slackapi/bolt-python). `authorizations` holds at
/// most one installation
/// (<https://api.slack.com/changelog/2020-09-15-events-api-truncate-authed-users>): an event
/// visible to several installations (a channel shared by two workspaces that both installed
/// the app) reaches the connections of the one Slack names.
fn installation(envelope: &Envelope) -> Option<String> {
    let first = envelope.authorizations.as_ref()?.first()?;
    let id = if first.is_enterprise_install == Some(true) {
        first.enterprise_id.as_ref()
    } else {
        first.team_id.as_ref()
    };
    id.filter(|id| !id.is_empty()).cloned()
}

/// For the tenant's URL (`POST /webhooks/slack/{tenant_id}`): the tenant's connection to the
/// installation the event names, else to the workspace or organization it names in any other
/// field; an event that names no account at all goes to the tenant's only Slack connection.
/// An event naming only workspaces the tenant has not connected stays unmatched, so a
/// workspace the tenant never connected is never reported as one it did.
pub(super) fn route(event: &WebhookEvent, connections: &[Connection]) -> Option<ConnectionId> {
    let envelope: Envelope = serde_json::from_slice(&event.body).unwrap_or_default();
    let named: Vec<String> = [
        installation(&envelope),
        envelope.team_id,
        envelope.context_team_id,
        envelope.enterprise_id,
    ]
    .into_iter()
    .flatten()
    .filter(|id| !id.is_empty())
    .collect();
    if named.is_empty() {
        return match connections {
            [only] => Some(only.id),
            _ => None,
        };
    }
    named.iter().find_map(|id| {
        connections
            .iter()
            .find(|c| &c.external_account_id == id)
            .map(|c| c.id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::signature::hmac_sha256_hex;
    use crate::crypto::Secret;
    use crate::domain::{now, TenantId};

    const SECRET: &str = "slack-signing-secret";

    fn settings(secret: Option<&str>) -> ProviderSettings {
        ProviderSettings {
            webhook_secret: secret.map(Secret::new),
            ..ProviderSettings::bare("slack")
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        crate::connector::signature::header_map(pairs)
    }

    /// Headers Slack would send for `body` at `timestamp`, signed with `secret`.
    fn signed(secret: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
        let timestamp = timestamp.to_string();
        let hex = hmac_sha256_hex(
            &Secret::new(secret),
            &[b"v0:", timestamp.as_bytes(), b":", body],
        );
        headers(&[
            ("x-slack-request-timestamp", &timestamp),
            ("x-slack-signature", &format!("v0={hex}")),
        ])
    }

    fn verify_now(body: &[u8]) -> Result<Verified, WebhookRejection> {
        let at = now().timestamp();
        verify(&settings(Some(SECRET)), &signed(SECRET, at, body), body)
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/slack/{name}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn slacks_documented_signature_matches_and_its_old_timestamp_is_refused() {
        // The walk-through of https://api.slack.com/authentication/verifying-requests-from-slack
        let body = concat!(
            "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&",
            "team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&",
            "user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&",
            "text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F",
            "397700885554%2F96rGlfmibIGlgcZRskXaIFfN&",
            "trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
        )
        .as_bytes();
        let expected = "a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        assert_eq!(
            hmac_sha256_hex(&Secret::new(secret), &[b"v0:1531420618:", body]),
            expected
        );
        // Signed in 2018: the signature passes, the replay window does not.
        let verdict = verify(
            &settings(Some(secret)),
            &headers(&[
                ("x-slack-request-timestamp", "1531420618"),
                ("x-slack-signature", &format!("v0={expected}")),
            ]),
            body,
        );
        assert_eq!(
            verdict,
            Err(WebhookRejection::InvalidSignature(
                "the signed timestamp is outside the replay window".into()
            ))
        );
    }

    #[test]
    fn a_correctly_signed_event_is_stored_under_its_event_id() {
        assert_eq!(
            verify_now(&fixture("message")),
            Ok(Verified::Event {
                dedupe_key: "Ev123ABC456".into(),
                event_type: Some("message".into()),
            })
        );
        assert_eq!(
            verify_now(&fixture("message_changed")),
            Ok(Verified::Event {
                dedupe_key: "Ev123ABC456".into(),
                event_type: Some("message.message_changed".into()),
            })
        );
        assert_eq!(
            verify_now(&fixture("reaction_added")),
            Ok(Verified::Event {
                dedupe_key: "Ev123ABC456".into(),
                event_type: Some("reaction_added".into()),
            })
        );
    }

    #[test]
    fn wrong_old_and_missing_signatures_are_refused() {
        let body = fixture("message");
        let at = now().timestamp();
        let invalid = |h: HeaderMap| {
            matches!(
                verify(&settings(Some(SECRET)), &h, &body),
                Err(WebhookRejection::InvalidSignature(_))
            )
        };
        assert!(invalid(signed("someone-else", at, &body)), "wrong secret");
        assert!(invalid(signed(SECRET, at - 301, &body)), "too old");
        assert!(invalid(signed(SECRET, at + 301, &body)), "from the future");
        let good = signed(SECRET, at, &body);
        for missing in ["x-slack-signature", "x-slack-request-timestamp"] {
            let mut h = good.clone();
            h.remove(missing);
            assert!(invalid(h), "without {missing}");
        }
        let hex = good["x-slack-signature"]
            .to_str()
            .expect("ascii")
            .trim_start_matches("v0=")
            .to_string();
        for bad in [
            hex.clone(),
            format!("v1={hex}"),
            format!("V0={hex}"),
            format!("v0={}", &hex[..40]),
            "v0=zz".into(),
            format!("v0={}", "0".repeat(64)),
        ] {
            let mut h = good.clone();
            h.insert("x-slack-signature", bad.parse().expect("value"));
            assert!(invalid(h), "{bad}");
        }
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert!(matches!(
            verify(&settings(Some(SECRET)), &good, &tampered),
            Err(WebhookRejection::InvalidSignature(_))
        ));
        assert_eq!(
            verify(&settings(None), &good, &body),
            Err(WebhookRejection::NotConfigured)
        );
    }

    #[test]
    fn url_verification_is_answered_with_its_challenge() {
        let verdict = verify_now(&fixture("url_verification")).expect("verified");
        let Verified::Handshake { content_type, body } = verdict else {
            panic!("a handshake, got {verdict:?}");
        };
        assert_eq!(content_type, "application/json");
        let answer: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            answer,
            json!({ "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" })
        );
        assert!(matches!(
            verify_now(br#"{"type":"url_verification","token":"t"}"#),
            Err(WebhookRejection::Malformed(_))
        ));
    }

    #[test]
    fn app_rate_limited_is_acknowledged_without_being_stored() {
        assert_eq!(
            verify_now(&fixture("app_rate_limited")),
            Ok(Verified::Handshake {
                content_type: "text/plain",
                body: Vec::new(),
            })
        );
    }

    #[test]
    fn a_verified_body_that_is_not_json_or_has_no_event_id_is_malformed() {
        for body in [
            &b"token=abc&team_id=T1"[..],
            b"",
            br#"{"type":"event_callback","event":{"type":"message"}}"#,
            br#"{"type":"event_callback","event_id":"  ","event":{"type":"message"}}"#,
        ] {
            assert!(
                matches!(verify_now(body), Err(WebhookRejection::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_account_is_the_installation_slack_names() {
        assert_eq!(app_account(&fixture("message")), Some("T123ABC456".into()));
        // Slack Connect: the event occurred in another workspace; the installation is ours.
        let shared = json!({
            "type": "event_callback", "event_id": "Ev1", "team_id": "T0THEIRS",
            "context_team_id": "T0THEIRS",
            "authorizations": [{
                "enterprise_id": null, "team_id": "T0OURS", "is_enterprise_install": false
            }]
        });
        assert_eq!(
            app_account(shared.to_string().as_bytes()),
            Some("T0OURS".into())
        );
        // An org-wide install is identified by its organization, as the OAuth install stores it.
        let org = json!({
            "type": "event_callback", "event_id": "Ev2", "team_id": "T0WORKSPACE",
            "enterprise_id": "E12345678",
            "authorizations": [{
                "enterprise_id": "E12345678", "team_id": null, "is_enterprise_install": true
            }]
        });
        assert_eq!(
            app_account(org.to_string().as_bytes()),
            Some("E12345678".into())
        );
        // Without authorizations (older payloads), the envelope's team_id.
        let old = json!({
            "type": "event_callback", "event_id": "Ev3", "team_id": "T0OLD",
            "authed_users": ["U1"]
        });
        assert_eq!(
            app_account(old.to_string().as_bytes()),
            Some("T0OLD".into())
        );
        assert_eq!(app_account(b"{}"), None);
        assert_eq!(app_account(b"not json"), None);
    }

    fn connection(account: &str) -> Connection {
        Connection::active_for_tests("slack", account)
    }

    fn event(body: &[u8]) -> WebhookEvent {
        WebhookEvent {
            tenant_id: TenantId(uuid::Uuid::nil()),
            provider: "slack".into(),
            event_type: Some("message".into()),
            headers: Default::default(),
            body: body.to_vec(),
            received_at: now(),
        }
    }

    #[test]
    fn routing_finds_the_named_workspace_and_never_guesses_another() {
        let (ours, other) = (connection("T123ABC456"), connection("T0OTHER"));
        let message = event(&fixture("message"));
        assert_eq!(
            route(&message, &[other.clone(), ours.clone()]),
            Some(ours.id)
        );
        assert_eq!(route(&message, std::slice::from_ref(&other)), None);
        let shared = json!({
            "type": "event_callback", "event_id": "Ev1", "team_id": "T0THEIRS",
            "authorizations": [{ "team_id": "T0OURS", "is_enterprise_install": false }]
        });
        let theirs = connection("T0THEIRS");
        let ours_too = connection("T0OURS");
        assert_eq!(
            route(
                &event(shared.to_string().as_bytes()),
                &[theirs, ours_too.clone()]
            ),
            Some(ours_too.id),
            "the installation first"
        );
        let anonymous = event(br#"{"type":"event_callback","event_id":"Ev9"}"#);
        assert_eq!(
            route(&anonymous, std::slice::from_ref(&other)),
            Some(other.id)
        );
        assert_eq!(route(&anonymous, &[other, ours]), None);
    }

    proptest::proptest! {
        /// Arbitrary deliveries never verify; a signed one stops verifying when any byte of its
        /// body changes; the normalizer answers any body without panicking.
        #[test]
        fn arbitrary_or_altered_deliveries_never_verify(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            signature in "[ -~]{0,80}",
            timestamp in "[ -~]{0,24}",
            flip in proptest::prelude::any::<usize>(),
        ) {
            let forged = headers(&[
                ("x-slack-request-timestamp", &timestamp),
                ("x-slack-signature", &signature),
            ]);
            proptest::prop_assert!(verify(&settings(Some(SECRET)), &forged, &body).is_err());
            if !body.is_empty() {
                let signed = signed(SECRET, now().timestamp(), &body);
                let mut altered = body.clone();
                let at = flip % altered.len();
                altered[at] ^= 0x01;
                proptest::prop_assert!(verify(&settings(Some(SECRET)), &signed, &altered).is_err());
            }
            let stored = WebhookEvent {
                tenant_id: TenantId(uuid::Uuid::new_v4()),
                provider: "slack".into(),
                event_type: None,
                headers: serde_json::Map::new(),
                body,
                received_at: now(),
            };
            let _ = super::super::normalize::normalize(&stored);
        }
    }
}
