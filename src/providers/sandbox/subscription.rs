//! The sandbox's provider-side subscription: one per connection, on `events`, so the whole
//! subscription lifecycle (opened after connect, renewed before it expires, closed on
//! disconnect) runs without credentials. Its lifetime is `POBLYSH_SANDBOX_SUBSCRIPTION_TTL_SECS`
//! (default one hour).
//!
//! In process (no `POBLYSH_SANDBOX_API_BASE_URL`) opening mints an id and renewing extends it.
//! Against the HTTP API, as a provider's own would be called:
//!
//! ```text
//! POST   {base}/v1/subscriptions               {"resource", "callback_url", "ttl_secs"}
//!                                               → 2xx {"id": "...", "expires_at": RFC 3339,
//!                                                      "account_details": {...}?}
//! POST   {base}/v1/subscriptions/{id}/renew    {"ttl_secs"} → 2xx {"id", "expires_at"}
//! DELETE {base}/v1/subscriptions/{id}          → 2xx
//! Authorization: Bearer <the connection's access token>
//! ```
//!
//! A renewal may answer another `id`: the engine then closes the old one. `account_details`,
//! when present, sets those members of the connection's metadata (as a provider's watch may
//! reveal where the account stands). Statuses are read as
//! in sync (`401` refused token, `429` rate limit, `5xx` unavailable, other `4xx` rejected); a
//! `2xx` whose body lacks `id` or a readable `expires_at` is rejected, and the subscription
//! shows why.

use chrono::Duration;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::api::check_status;
use crate::connector::{
    join_path, transport, Metadata, Opened, ProviderCallError, SubscriptionContext,
};
use crate::connector::{read_body, MAX_BODY_BYTES};
use crate::domain::{now, parse_rfc3339};

/// The resource the sandbox watches.
pub(super) const RESOURCE: &str = "events";
/// The setting naming the subscription lifetime.
pub(super) const TTL_SETTING: &str = "SUBSCRIPTION_TTL_SECS";
/// The lifetime when the setting is absent.
const DEFAULT_TTL_SECS: u64 = 3600;
/// The longest lifetime the setting accepts (thirty days, as Jira's webhooks).
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;

/// Checks `POBLYSH_SANDBOX_SUBSCRIPTION_TTL_SECS` at start-up.
pub(super) fn check_ttl(text: &str) -> Result<(), String> {
    parse_ttl(text).map(|_| ())
}

fn parse_ttl(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(secs @ 1..=MAX_TTL_SECS) => Ok(secs),
        _ => Err(format!(
            "must be a whole number of seconds from 1 to {MAX_TTL_SECS}"
        )),
    }
}

fn ttl(ctx: &SubscriptionContext<'_>) -> u64 {
    ctx.provider
        .settings
        .extra(TTL_SETTING)
        .and_then(|t| parse_ttl(t).ok())
        .unwrap_or(DEFAULT_TTL_SECS)
}

/// A `2xx` answer of the API.
#[derive(Deserialize)]
struct Answer {
    id: String,
    expires_at: String,
    /// Facts about the account the watch revealed, kept in the connection's metadata.
    #[serde(default)]
    account_details: Option<Metadata>,
}

/// Opens the subscription.
pub(super) async fn open(ctx: SubscriptionContext<'_>) -> Result<Opened, ProviderCallError> {
    let ttl_secs = ttl(&ctx);
    let Some(base) = &ctx.provider.settings.api_base_url else {
        return Ok(in_process(
            format!("sandbox-sub-{}", uuid::Uuid::new_v4().simple()),
            ttl_secs,
        ));
    };
    let body = json!({
        "resource": ctx.subscription.resource,
        "callback_url": ctx.webhook_url.as_str(),
        "ttl_secs": ttl_secs,
    });
    call(&ctx, join_path(base, "/v1/subscriptions"), Some(body)).await
}

/// Renews the subscription (the API may answer a new id).
pub(super) async fn renew(ctx: SubscriptionContext<'_>) -> Result<Opened, ProviderCallError> {
    let ttl_secs = ttl(&ctx);
    let id = current_id(&ctx)?;
    let Some(base) = &ctx.provider.settings.api_base_url else {
        return Ok(in_process(id.to_string(), ttl_secs));
    };
    let url = subscription_url(base, id, "/renew");
    call(&ctx, url, Some(json!({ "ttl_secs": ttl_secs }))).await
}

/// Closes the subscription.
pub(super) async fn close(ctx: SubscriptionContext<'_>) -> Result<(), ProviderCallError> {
    let id = current_id(&ctx)?;
    let Some(base) = &ctx.provider.settings.api_base_url else {
        return Ok(());
    };
    let response = ctx
        .provider
        .http
        .delete(subscription_url(base, id, ""))
        .bearer_auth(ctx.access_token.expose())
        .send()
        .await
        .map_err(transport)?;
    check_status(response.status().as_u16(), response.headers())
}

fn current_id<'a>(ctx: &'a SubscriptionContext<'_>) -> Result<&'a str, ProviderCallError> {
    ctx.subscription
        .external_id
        .as_deref()
        .ok_or_else(|| ProviderCallError::Rejected("the subscription was never opened".into()))
}

/// `{base}/v1/subscriptions/{id}{suffix}`, the id as one path segment.
fn subscription_url(base: &Url, id: &str, suffix: &str) -> Url {
    let mut url = join_path(base, "/v1/subscriptions");
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.push(id);
    }
    let path = format!("{}{suffix}", url.path());
    url.set_path(&path);
    url
}

fn in_process(id: String, ttl_secs: u64) -> Opened {
    let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
    Opened {
        external_id: id,
        expires_at: Some(now() + Duration::seconds(ttl)),
        state: Metadata::new(),
        metadata: None,
    }
}

async fn call(
    ctx: &SubscriptionContext<'_>,
    url: Url,
    body: Option<serde_json::Value>,
) -> Result<Opened, ProviderCallError> {
    let mut request = ctx
        .provider
        .http
        .post(url)
        .bearer_auth(ctx.access_token.expose())
        .header(ACCEPT, "application/json");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(transport)?;
    check_status(response.status().as_u16(), response.headers())?;
    let bytes = read_body(response, MAX_BODY_BYTES).await?;
    read_answer(&bytes)
}

fn read_answer(body: &[u8]) -> Result<Opened, ProviderCallError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|_| {
        ProviderCallError::Rejected(
            "the sandbox API answered a subscription without an id and an expires_at".into(),
        )
    })?;
    if answer.id.is_empty() {
        return Err(ProviderCallError::Rejected(
            "the sandbox API answered an empty subscription id".into(),
        ));
    }
    let expires_at = parse_rfc3339(&answer.expires_at).map_err(|_| {
        ProviderCallError::Rejected(
            "the sandbox API answered an expires_at that is not an RFC 3339 instant".into(),
        )
    })?;
    Ok(Opened {
        external_id: answer.id,
        expires_at: Some(expires_at),
        state: Metadata::new(),
        metadata: answer.account_details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifetime_must_be_a_sensible_number_of_seconds() {
        assert_eq!(parse_ttl("60"), Ok(60));
        for bad in ["0", "-1", "soon", "", "2592001"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_answer_without_a_readable_expiry_is_rejected_with_a_reason() {
        let opened =
            read_answer(br#"{"id":"s1","expires_at":"2026-12-06T10:00:00Z"}"#).expect("read");
        assert_eq!(opened.external_id, "s1");
        for bad in [
            &b"<html>"[..],
            br#"{"id":"s1"}"#,
            br#"{"id":"","expires_at":"2026-12-06T10:00:00Z"}"#,
            br#"{"id":"s1","expires_at":"tomorrow"}"#,
        ] {
            let err = read_answer(bad).expect_err("rejected");
            assert!(matches!(err, ProviderCallError::Rejected(_)), "{err:?}");
        }
    }

    #[test]
    fn ids_are_one_path_segment() {
        let base = Url::parse("http://127.0.0.1:9/api").expect("url");
        assert_eq!(
            subscription_url(&base, "a/b?c", "/renew").as_str(),
            "http://127.0.0.1:9/api/v1/subscriptions/a%2Fb%3Fc/renew"
        );
    }
}
