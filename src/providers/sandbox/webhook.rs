//! The sandbox's webhooks, shaped like the common "timestamp + HMAC" schemes: headers
//! `X-Sandbox-Delivery` (dedupe key), `X-Sandbox-Event` (`event.created`, `event.updated`, or
//! `sync.requested`: something changed, sync to find out what),
//! `X-Sandbox-Timestamp` (Unix seconds) and `X-Sandbox-Signature: v1=<hex>`, the HMAC-SHA256
//! of `"{timestamp}." + body` under `POBLYSH_SANDBOX_WEBHOOK_SECRET`, accepted within five
//! minutes of its timestamp. The body:
//! `{"id": "...", "title": "...", "occurred_at": "<RFC 3339>", "actor": {"id": "...", "name": "..."}}`,
//! mapped by [`super::event`] exactly as the same change listed by the remote API.

use axum::http::HeaderMap;

use super::event::{kind, Change};
use crate::connector::signature::{check_replay_window, header, hmac_sha256_hex_matches};
use crate::connector::ProviderSettings;
use crate::connector::{Normalized, Verified, WebhookEvent, WebhookRejection};

/// The headers carrying the sandbox's signature: never stored with the event, which a
/// database reader could otherwise replay.
pub(super) const SIGNATURE_HEADERS: &[&str] = &["x-sandbox-signature"];

const REPLAY_WINDOW_SECS: i64 = 300;
/// The event type of a notification that names no change (as Google's push channels send
/// them): it requests a sync of the connection.
const SYNC_REQUESTED: &str = "sync.requested";

/// What can be checked before the body is read: the secret is configured, the signature is
/// `v1=` and 64 hex digits, the timestamp within the replay window. Returns the secret, the
/// signature's hex and the timestamp.
pub(super) fn precheck<'a>(
    settings: &'a ProviderSettings,
    headers: &'a HeaderMap,
) -> Result<(&'a crate::crypto::Secret, &'a str, &'a str), WebhookRejection> {
    let secret = settings
        .webhook_secret
        .as_ref()
        .ok_or(WebhookRejection::NotConfigured)?;
    let invalid = |why: &str| WebhookRejection::InvalidSignature(why.to_string());
    let signature = header(headers, "x-sandbox-signature")
        .ok_or_else(|| invalid("the X-Sandbox-Signature header is missing"))?;
    let timestamp = header(headers, "x-sandbox-timestamp")
        .ok_or_else(|| invalid("the X-Sandbox-Timestamp header is missing"))?;
    let hex = signature
        .strip_prefix("v1=")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| invalid("the signature must be v1= and 64 hex digits"))?;
    check_replay_window(timestamp, REPLAY_WINDOW_SECS)?;
    Ok((secret, hex, timestamp))
}

pub(super) fn verify(
    settings: &ProviderSettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, WebhookRejection> {
    let (secret, hex, timestamp) = precheck(settings, headers)?;
    if !hmac_sha256_hex_matches(secret, &[timestamp.as_bytes(), b".", body], hex) {
        return Err(WebhookRejection::InvalidSignature(
            "the signature does not match the body".into(),
        ));
    }
    let delivery = header(headers, "x-sandbox-delivery")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            WebhookRejection::Malformed("the X-Sandbox-Delivery header is missing".into())
        })?;
    Ok(Verified::Event {
        dedupe_key: delivery.to_string(),
        event_type: header(headers, "x-sandbox-event").map(str::to_string),
    })
}

pub(super) fn normalize(event: &WebhookEvent) -> Result<Normalized, String> {
    if event.event_type.as_deref() == Some(SYNC_REQUESTED) {
        return Ok(Normalized::SyncRequested);
    }
    let Some(event_type) = event.event_type.as_deref().filter(|t| kind(t).is_some()) else {
        return Ok(Normalized::Ignored);
    };
    let change: Change = serde_json::from_slice(&event.body)
        .map_err(|e| format!("the body is not a sandbox event: {e}"))?;
    Ok(match change.signal(event_type)? {
        Some(draft) => Normalized::Signals(vec![draft]),
        None => Normalized::Ignored,
    })
}

/// The account an app-level delivery names (`account` in the body).
pub(super) fn account(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("account")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::signature::{header_map, hmac_sha256_hex};
    use crate::crypto::Secret;
    use crate::domain::{now, TenantId};

    const SECRET: &str = "sandbox-webhook-secret";

    fn settings() -> ProviderSettings {
        ProviderSettings {
            webhook_secret: Some(Secret::new(SECRET)),
            ..ProviderSettings::bare("sandbox")
        }
    }

    proptest::proptest! {
        /// Arbitrary deliveries never verify; a signed one stops verifying when any byte of its
        /// body changes; the normalizer answers any body without panicking.
        #[test]
        fn arbitrary_or_altered_deliveries_never_verify(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            signature in "[ -~]{0,80}",
            timestamp in "[ -~]{0,24}",
            event in "(event\\.created|event\\.updated|sync\\.requested|[a-z.]{0,16})",
            flip in proptest::prelude::any::<usize>(),
        ) {
            let forged = header_map(&[
                ("x-sandbox-timestamp", &timestamp),
                ("x-sandbox-signature", &signature),
                ("x-sandbox-delivery", "d"),
            ]);
            proptest::prop_assert!(verify(&settings(), &forged, &body).is_err());
            if !body.is_empty() {
                let at = now().timestamp().to_string();
                let hex = hmac_sha256_hex(&Secret::new(SECRET), &[at.as_bytes(), b".", &body]);
                let signed = header_map(&[
                    ("x-sandbox-timestamp", &at),
                    ("x-sandbox-signature", &format!("v1={hex}")),
                    ("x-sandbox-delivery", "d"),
                ]);
                proptest::prop_assert!(verify(&settings(), &signed, &body).is_ok());
                let mut altered = body.clone();
                let i = flip % altered.len();
                altered[i] ^= 0x01;
                proptest::prop_assert!(verify(&settings(), &signed, &altered).is_err());
            }
            let stored = WebhookEvent {
                tenant_id: TenantId(uuid::Uuid::new_v4()),
                provider: "sandbox".into(),
                event_type: Some(event),
                headers: serde_json::Map::new(),
                body,
                received_at: now(),
            };
            let _ = normalize(&stored);
        }
    }
}
