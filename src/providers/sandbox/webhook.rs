//! The sandbox's webhooks, shaped like the common "timestamp + HMAC" schemes: headers
//! `X-Sandbox-Delivery` (dedupe key), `X-Sandbox-Event` (`event.created` or `event.updated`),
//! `X-Sandbox-Timestamp` (Unix seconds) and `X-Sandbox-Signature: v1=<hex>`, the HMAC-SHA256
//! of `"{timestamp}." + body` under `POBLYSH_SANDBOX_WEBHOOK_SECRET`, accepted within five
//! minutes of its timestamp. The body:
//! `{"id": "...", "title": "...", "occurred_at": "<RFC 3339>", "actor": {"id": "...", "name": "..."}}`.

use axum::http::HeaderMap;
use serde::Deserialize;

use crate::config::ProviderSettings;
use crate::domain::{parse_rfc3339, Actor};
use crate::ingest::signature::{check_replay_window, hmac_sha256_hex_matches};
use crate::ingest::{Normalized, SignalDraft, Verified, WebhookEvent, WebhookRejection};

const REPLAY_WINDOW_SECS: i64 = 300;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn verify(
    settings: &ProviderSettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, WebhookRejection> {
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
        .ok_or_else(|| invalid("the signature must start with v1="))?;
    if !hmac_sha256_hex_matches(secret, &[timestamp.as_bytes(), b".", body], hex) {
        return Err(invalid("the signature does not match the body"));
    }
    check_replay_window(timestamp, REPLAY_WINDOW_SECS)?;
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

#[derive(Deserialize)]
struct Payload {
    id: String,
    title: Option<String>,
    occurred_at: String,
    actor: Option<Actor>,
}

pub(super) fn normalize(event: &WebhookEvent) -> Result<Normalized, String> {
    let kind = match event.event_type.as_deref() {
        Some("event.created") => "sandbox_event_created",
        Some("event.updated") => "sandbox_event_updated",
        _ => return Ok(Normalized::Ignored),
    };
    let payload: Payload = serde_json::from_slice(&event.body)
        .map_err(|e| format!("the body is not a sandbox event: {e}"))?;
    let occurred_at =
        parse_rfc3339(&payload.occurred_at).map_err(|e| format!("occurred_at {e}"))?;
    Ok(Normalized::Signals(vec![SignalDraft {
        kind: kind.to_string(),
        occurred_at,
        actor: payload.actor,
        title: payload.title,
        url: None,
        external_id: Some(payload.id.clone()),
        // The change, not the delivery: the same change synced later is the same signal.
        dedupe_key: format!("{kind}:{}:{}", payload.id, payload.occurred_at),
        // The normalized fields only: the raw delivery stays in the inbox.
        payload: serde_json::json!({
            "id": payload.id,
            "event": event.event_type,
            "occurred_at": payload.occurred_at,
        }),
    }]))
}

/// The account an app-level delivery names (`account` in the body).
pub(super) fn account(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("account")?.as_str().map(str::to_string)
}
