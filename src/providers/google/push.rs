//! Google's push notification channels, as Google Drive and Google Calendar send them
//! (<https://developers.google.com/drive/api/guides/push>,
//! <https://developers.google.com/calendar/api/guides/push>).
//!
//! - **Proof.** Google does not sign notifications. A channel is opened with a `token` of our
//!   choosing, which Google echoes in `X-Goog-Channel-Token` on every message; that token is the
//!   provider's webhook secret (`POBLYSH_<SLUG>_WEBHOOK_SECRET`), compared in constant time and
//!   never stored with the event.
//! - **Handshake.** The first message of every channel has `X-Goog-Resource-State: sync` and
//!   announces the channel, not a change; it is answered `200` and not stored. Google takes any
//!   of 200, 201, 202, 204 or 102 as received.
//! - **Changes.** Every other state (Drive: `add`, `remove`, `update`, `trash`, `untrash`,
//!   `change`; Calendar: `exists`, `not_exists`) says that the watched resource changed, not
//!   how: the body is empty. Such a notification requests a sync of its connection, which yields
//!   the signals.
//! - **Identity.** `X-Goog-Channel-ID` with `X-Goog-Message-Number` names one message; Google's
//!   retries of it repeat both.

use axum::http::HeaderMap;

use crate::connector::signature::{header, token_matches};
use crate::connector::ProviderSettings;
use crate::connector::{Normalized, Verified, WebhookEvent, WebhookRejection};

/// The header carrying the channel token: a secret, never stored.
pub(in crate::providers) const SECRET_HEADERS: &[&str] = &["x-goog-channel-token"];

/// The resource state of a channel's first message.
const SYNC_STATE: &str = "sync";

/// A header's value, unless absent or empty.
fn present<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    header(headers, name).filter(|v| !v.is_empty())
}

/// Checks the channel token, answers the `sync` handshake, and names any other message by its
/// channel and number, typed by its resource state.
pub(in crate::providers) fn verify(
    settings: &ProviderSettings,
    headers: &HeaderMap,
) -> Result<Verified, WebhookRejection> {
    let secret = settings
        .webhook_secret
        .as_ref()
        .ok_or(WebhookRejection::NotConfigured)?;
    let token = present(headers, "x-goog-channel-token").ok_or_else(|| {
        WebhookRejection::InvalidSignature("the X-Goog-Channel-Token header is missing".into())
    })?;
    if !token_matches(secret, token) {
        return Err(WebhookRejection::InvalidSignature(
            "the channel token is not the one this service opened channels with".into(),
        ));
    }
    let required = |name: &str| {
        present(headers, name)
            .ok_or_else(|| WebhookRejection::Malformed(format!("the {name} header is missing")))
    };
    let channel = required("x-goog-channel-id")?;
    let state = required("x-goog-resource-state")?;
    if state == SYNC_STATE {
        return Ok(Verified::Handshake {
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
        });
    }
    let number = required("x-goog-message-number")?;
    if number.parse::<u64>().is_err() {
        return Err(WebhookRejection::Malformed(
            "X-Goog-Message-Number must be a number".into(),
        ));
    }
    Ok(Verified::Event {
        dedupe_key: format!("{channel}:{number}"),
        event_type: Some(state.to_string()),
    })
}

/// A stored notification: always a request to sync, since it never says what changed.
pub(in crate::providers) fn normalize(_event: &WebhookEvent) -> Result<Normalized, String> {
    Ok(Normalized::SyncRequested)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::crypto::Secret;

    fn settings(secret: Option<&str>) -> ProviderSettings {
        ProviderSettings {
            webhook_secret: secret.map(Secret::new),
            ..ProviderSettings::bare("google_calendar")
        }
    }

    /// A notification as Google sends one, per the push guides' example.
    fn notification(state: &str, number: &str, token: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: &str| {
            headers.insert(name, HeaderValue::from_str(value).expect("header value"));
        };
        set("x-goog-channel-id", "4ba78bf0-6a47-11e2-bcfd-0800200c9a66");
        set("x-goog-channel-expiration", "Tue, 19 Nov 2013 01:13:52 GMT");
        set("x-goog-resource-state", state);
        set("x-goog-message-number", number);
        set("x-goog-resource-id", "ret08u3rv24htgh289g");
        set(
            "x-goog-resource-uri",
            "https://www.googleapis.com/calendar/v3/calendars/primary/events",
        );
        if let Some(token) = token {
            set("x-goog-channel-token", token);
        }
        headers
    }

    const TOKEN: &str = "channel-token-for-tests-0001";

    #[test]
    fn the_sync_message_is_a_handshake_and_changes_are_events() {
        let verdict = verify(
            &settings(Some(TOKEN)),
            &notification("sync", "1", Some(TOKEN)),
        );
        assert!(matches!(verdict, Ok(Verified::Handshake { ref body, .. }) if body.is_empty()));

        let verdict = verify(
            &settings(Some(TOKEN)),
            &notification("exists", "7", Some(TOKEN)),
        );
        assert_eq!(
            verdict,
            Ok(Verified::Event {
                dedupe_key: "4ba78bf0-6a47-11e2-bcfd-0800200c9a66:7".into(),
                event_type: Some("exists".into()),
            })
        );
    }

    #[test]
    fn a_missing_or_wrong_token_or_no_secret_is_refused() {
        for token in [None, Some("not-the-token"), Some("")] {
            let verdict = verify(&settings(Some(TOKEN)), &notification("exists", "2", token));
            assert!(
                matches!(verdict, Err(WebhookRejection::InvalidSignature(_))),
                "{token:?}: {verdict:?}"
            );
        }
        let verdict = verify(&settings(None), &notification("exists", "2", Some(TOKEN)));
        assert_eq!(verdict, Err(WebhookRejection::NotConfigured));
        // The handshake proves itself like any other message.
        let verdict = verify(
            &settings(Some(TOKEN)),
            &notification("sync", "1", Some("nope")),
        );
        assert!(matches!(
            verdict,
            Err(WebhookRejection::InvalidSignature(_))
        ));
    }

    #[test]
    fn a_message_without_its_channel_state_or_number_is_malformed() {
        for missing in [
            "x-goog-channel-id",
            "x-goog-resource-state",
            "x-goog-message-number",
        ] {
            let mut headers = notification("update", "3", Some(TOKEN));
            headers.remove(missing);
            let verdict = verify(&settings(Some(TOKEN)), &headers);
            assert!(
                matches!(verdict, Err(WebhookRejection::Malformed(_))),
                "{missing}: {verdict:?}"
            );
        }
        let verdict = verify(
            &settings(Some(TOKEN)),
            &notification("update", "three", Some(TOKEN)),
        );
        assert!(matches!(verdict, Err(WebhookRejection::Malformed(_))));
    }
}
