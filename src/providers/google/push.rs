//! Google's push notifications, as Google Drive and Google Calendar deliver them on the
//! channels [`super::channel`] opens
//! (<https://developers.google.com/workspace/drive/api/guides/push#receive-notifications>,
//! <https://developers.google.com/workspace/calendar/api/guides/push#receiving-notifications>).
//!
//! - **Proof.** Google does not sign notifications. It echoes the channel's token in
//!   `X-Goog-Channel-Token`: derived per channel and tenant ([`super::channel::token`]), it is
//!   checked against the channel id and the tenant of the URL, in constant time, and never
//!   stored with the event. A wrong or missing token, or one for another channel or tenant, is
//!   refused (`401`).
//! - **Handshake.** The first message of every channel has `X-Goog-Resource-State: sync` and
//!   announces the channel, not a change; it is answered `200` and not stored. Google takes any
//!   of 200, 201, 202, 204 or 102 as received.
//! - **Changes.** Every other state (Drive: `add`, `remove`, `update`, `trash`, `untrash`,
//!   `change`; Calendar: `exists`, `not_exists`) says that the watched resource changed, not
//!   how: the body is empty. Such a notification requests a sync of the connection whose open
//!   channel it names.
//! - **Open channel.** A token proves only that this service once opened the channel id for
//!   the tenant. A change notification is stored only when the tenant has that channel open
//!   now, with the `X-Goog-Resource-ID` Google answered the watch with ([`claim`], checked by
//!   the engine against the subscription); one for a channel never opened, replaced by its
//!   renewal, stopped on disconnect, or watching another resource is refused (`401`), since
//!   Google stops sending to an address that refuses it only once the channel expires.
//! - **Identity.** `X-Goog-Channel-ID` with `X-Goog-Message-Number` names one message; Google's
//!   retries of it repeat both.

use axum::http::HeaderMap;
use serde_json::Value;

use super::channel::METADATA_PREFIX;
use crate::connector::derive::derived_secret_matches;
use crate::connector::signature::header;
use crate::connector::{ClaimedSubscription, ProviderSettings};
use crate::connector::{Normalized, Verified, WebhookEvent, WebhookRejection, WebhookUrl};
use crate::domain::{Connection, ConnectionId};

/// The header carrying the channel token: a secret, never stored.
pub(in crate::providers) const SECRET_HEADERS: &[&str] = &["x-goog-channel-token"];

/// A header's value, unless absent or empty.
fn present<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    header(headers, name).filter(|v| !v.is_empty())
}

/// Verifies a notification to `url`: its token must be the one derived for its channel id and
/// the tenant of the URL. The `sync` message opening each channel is answered and not
/// stored; any other is named by its channel and message number, typed by its state.
pub(in crate::providers) fn verify(
    settings: &ProviderSettings,
    url: WebhookUrl,
    headers: &HeaderMap,
) -> Result<Verified, WebhookRejection> {
    let secret = settings
        .webhook_secret
        .as_ref()
        .ok_or(WebhookRejection::NotConfigured)?;
    let WebhookUrl::Tenant(tenant) = url else {
        return Err(WebhookRejection::InvalidSignature(
            "Google channels deliver to a tenant's webhook URL".into(),
        ));
    };
    let presented = present(headers, "x-goog-channel-token").ok_or_else(|| {
        WebhookRejection::InvalidSignature("the X-Goog-Channel-Token header is missing".into())
    })?;
    let channel = present(headers, "x-goog-channel-id").ok_or_else(|| {
        WebhookRejection::InvalidSignature("the X-Goog-Channel-ID header is missing".into())
    })?;
    let purpose = format!("{}-channel", settings.slug);
    if !derived_secret_matches(secret, &purpose, &[&tenant.to_string(), channel], presented) {
        return Err(WebhookRejection::InvalidSignature(
            "the channel token is not the one this service opened that channel with".into(),
        ));
    }
    let required = |name: &str| {
        present(headers, name)
            .ok_or_else(|| WebhookRejection::Malformed(format!("the {name} header is missing")))
    };
    let state = required("x-goog-resource-state")?;
    required("x-goog-resource-id")?;
    if state == "sync" {
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

/// The channel a notification claims: its id (the subscription's external id) and the
/// resource id Google gave it (kept in the subscription's state as `resource_id`). Missing
/// headers claim nothing any subscription holds.
pub(in crate::providers) fn claim(headers: &HeaderMap) -> ClaimedSubscription {
    let text = |name: &str| present(headers, name).unwrap_or_default().to_string();
    ClaimedSubscription {
        external_id: text("x-goog-channel-id"),
        state: vec![("resource_id", text("x-goog-resource-id"))],
    }
}

/// The connection whose open channel the notification names (channel id and resource id
/// both); `None` for a channel no connection has open.
pub(in crate::providers) fn route(
    event: &WebhookEvent,
    connections: &[Connection],
) -> Option<ConnectionId> {
    let channel = event.header("x-goog-channel-id")?;
    let resource = event.header("x-goog-resource-id")?;
    connections
        .iter()
        .find(|c| {
            c.metadata.iter().any(|(key, value)| {
                key.starts_with(METADATA_PREFIX)
                    && value.get("id").and_then(Value::as_str) == Some(channel)
                    && value.get("resource_id").and_then(Value::as_str) == Some(resource)
            })
        })
        .map(|c| c.id)
}

/// A stored notification: always a request to sync, since it never says what changed.
pub(in crate::providers) fn normalize(_event: &WebhookEvent) -> Result<Normalized, String> {
    Ok(Normalized::SyncRequested)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::super::channel::token;
    use super::*;
    use crate::crypto::Secret;
    use crate::domain::TenantId;

    const SECRET: &str = "google-webhook-secret-for-tests";

    fn settings(secret: Option<&str>) -> ProviderSettings {
        ProviderSettings {
            webhook_secret: secret.map(Secret::new),
            ..ProviderSettings::bare("google_drive")
        }
    }

    /// A notification as the push guides show one.
    fn notification(
        tenant: TenantId,
        state: &str,
        number: &str,
        token_text: Option<&str>,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: &str| {
            headers.insert(name, HeaderValue::from_str(value).expect("header value"));
        };
        let channel = "4ba78bf0-6a47-11e2-bcfd-0800200c9a66";
        set("x-goog-channel-id", channel);
        set("x-goog-channel-expiration", "Tue, 19 Nov 2013 01:13:52 GMT");
        set("x-goog-resource-state", state);
        set("x-goog-message-number", number);
        set("x-goog-resource-id", "ret08u3rv24htgh289g");
        let derived = token(&Secret::new(SECRET), "google_drive", tenant, channel);
        set(
            "x-goog-channel-token",
            token_text.unwrap_or_else(|| derived.expose()),
        );
        headers
    }

    fn tenant() -> TenantId {
        TenantId(uuid::Uuid::new_v4())
    }

    #[test]
    fn the_derived_token_proves_the_channel_and_the_tenant() {
        let t = tenant();
        let url = WebhookUrl::Tenant(t);
        let s = settings(Some(SECRET));
        let verdict = verify(&s, url, &notification(t, "update", "7", None));
        assert_eq!(
            verdict,
            Ok(Verified::Event {
                dedupe_key: "4ba78bf0-6a47-11e2-bcfd-0800200c9a66:7".into(),
                event_type: Some("update".into()),
            })
        );
        assert!(matches!(
            verify(&s, url, &notification(t, "sync", "1", None)),
            Ok(Verified::Handshake { .. })
        ));
        // Another tenant's URL, a token for another channel, no token, no secret.
        let other = WebhookUrl::Tenant(tenant());
        assert!(matches!(
            verify(&s, other, &notification(t, "update", "7", None)),
            Err(WebhookRejection::InvalidSignature(_))
        ));
        let mut moved = notification(t, "update", "7", None);
        moved.insert("x-goog-channel-id", HeaderValue::from_static("another"));
        assert!(matches!(
            verify(&s, url, &moved),
            Err(WebhookRejection::InvalidSignature(_))
        ));
        for token in ["", "not-the-token"] {
            assert!(matches!(
                verify(&s, url, &notification(t, "sync", "1", Some(token))),
                Err(WebhookRejection::InvalidSignature(_))
            ));
        }
        assert_eq!(
            verify(&settings(None), url, &notification(t, "update", "7", None)),
            Err(WebhookRejection::NotConfigured)
        );
        assert!(matches!(
            verify(&s, WebhookUrl::App, &notification(t, "update", "7", None)),
            Err(WebhookRejection::InvalidSignature(_))
        ));
    }

    #[test]
    fn a_message_without_its_state_resource_or_number_is_malformed() {
        let t = tenant();
        for missing in [
            "x-goog-resource-state",
            "x-goog-resource-id",
            "x-goog-message-number",
        ] {
            let mut headers = notification(t, "update", "3", None);
            headers.remove(missing);
            let verdict = verify(&settings(Some(SECRET)), WebhookUrl::Tenant(t), &headers);
            assert!(
                matches!(verdict, Err(WebhookRejection::Malformed(_))),
                "{missing}: {verdict:?}"
            );
        }
        let verdict = verify(
            &settings(Some(SECRET)),
            WebhookUrl::Tenant(t),
            &notification(t, "update", "three", None),
        );
        assert!(matches!(verdict, Err(WebhookRejection::Malformed(_))));
    }

    proptest! {
        /// Any channel id and tenant: the derived token verifies, and no other token does.
        #[test]
        fn tokens_verify_only_for_their_channel(channel in "[A-Za-z0-9_=+/-]{1,64}", other in "[a-f0-9]{64}") {
            let t = tenant();
            let mut headers = notification(t, "change", "2", None);
            headers.insert("x-goog-channel-id", HeaderValue::from_str(&channel).expect("value"));
            let good = token(&Secret::new(SECRET), "google_drive", t, &channel);
            headers.insert("x-goog-channel-token", HeaderValue::from_str(good.expose()).expect("value"));
            prop_assert!(verify(&settings(Some(SECRET)), WebhookUrl::Tenant(t), &headers).is_ok());
            prop_assume!(other != good.expose());
            headers.insert("x-goog-channel-token", HeaderValue::from_str(&other).expect("value"));
            prop_assert!(verify(&settings(Some(SECRET)), WebhookUrl::Tenant(t), &headers).is_err());
        }
    }
}
