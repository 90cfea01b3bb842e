//! Google's push notification channels as Google Drive (`changes.watch`) and Google Calendar
//! (`events.watch`) open them, shared: one channel per watched resource, its own id, its own
//! token, an expiry, and `channels.stop`
//! (<https://developers.google.com/workspace/drive/api/guides/push>,
//! <https://developers.google.com/workspace/calendar/api/guides/push>).
//!
//! - **Opening.** `POST {watch}` with `{"id", "type": "web_hook", "address", "token",
//!   "expiration"}`: `id` a fresh UUID (Google: a unique string of at most 64 characters),
//!   `address` this tenant's webhook URL, `expiration` Unix milliseconds
//!   (`POBLYSH_<SLUG>_CHANNEL_TTL_SECS` from now, default one day, at most a week: Drive's
//!   limit for the changes resource). Google answers the channel with its `resourceId` and
//!   the `expiration` it granted (an int64 as a string), kept with the subscription; the
//!   channel id and resource id are also set in the connection's metadata under
//!   `google_channel:{resource}`, so notifications route to the connection that opened it.
//! - **Token.** Each channel's token is derived (HKDF, [`derive_secret`]) from
//!   `POBLYSH_<SLUG>_WEBHOOK_SECRET`, the purpose `{slug}-channel`, the tenant id and the
//!   channel id: never stored, and a token proves the channel id it came with was opened by
//!   this service for this tenant. Google echoes it in `X-Goog-Channel-Token`.
//! - **Renewal.** Google channels are not renewed in place: a new channel is opened and the
//!   engine stops the old one.
//! - **Stopping.** `POST {service}/channels/stop` with `{"id", "resourceId"}`; a channel
//!   Google no longer knows (`404`) is already stopped.

use serde::Deserialize;
use serde_json::{json, Value};
use url::Url;

use super::api;
use crate::connector::derive::derive_secret;
use crate::connector::{read_body, retry_after_header, MAX_BODY_BYTES};
use crate::connector::{
    transport, Metadata, Opened, ProviderCallError, ProviderSettings, SubscriptionContext,
};
use crate::crypto::Secret;
use crate::domain::{TenantId, Timestamp};

/// The setting naming a channel's requested lifetime.
pub(in crate::providers) const TTL_SETTING: &str = "CHANNEL_TTL_SECS";
/// The lifetime asked for when the setting is absent: one day.
const DEFAULT_TTL_SECS: u64 = 24 * 3600;
/// The longest lifetime the setting accepts: one week, the most Drive grants a changes
/// channel (<https://developers.google.com/workspace/drive/api/guides/push#optional-properties>).
const MAX_TTL_SECS: u64 = 7 * 24 * 3600;

/// The prefix of the connection metadata members naming its open channels.
pub(super) const METADATA_PREFIX: &str = "google_channel:";

/// Checks `POBLYSH_<SLUG>_CHANNEL_TTL_SECS` at start-up.
pub(in crate::providers) fn check_ttl(text: &str) -> Result<(), String> {
    parse_ttl(text).map(|_| ())
}

fn parse_ttl(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(secs @ 60..=MAX_TTL_SECS) => Ok(secs),
        _ => Err(format!(
            "must be a whole number of seconds from 60 to {MAX_TTL_SECS}"
        )),
    }
}

fn ttl_secs(settings: &ProviderSettings) -> u64 {
    settings
        .extra(TTL_SETTING)
        .and_then(|t| parse_ttl(t).ok())
        .unwrap_or(DEFAULT_TTL_SECS)
}

/// The token of channel `channel` of `tenant`'s connection to `settings.slug`.
pub(in crate::providers) fn token(
    secret: &Secret,
    slug: &str,
    tenant: TenantId,
    channel: &str,
) -> Secret {
    derive_secret(
        secret,
        &format!("{slug}-channel"),
        &[&tenant.to_string(), channel],
    )
}

/// A channel as Google answers it (the `Channel` schema of the discovery documents).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Channel {
    id: String,
    resource_id: String,
    #[serde(default)]
    resource_uri: Option<String>,
    /// Unix milliseconds, an int64 sent as a string.
    #[serde(default)]
    expiration: Option<String>,
}

/// Opens a channel on `watch_url` (the watch method's URL, its query included) for the
/// subscription's resource.
pub(in crate::providers) async fn open(
    ctx: &SubscriptionContext<'_>,
    watch_url: Url,
    what: &str,
) -> Result<Opened, ProviderCallError> {
    let settings = ctx.provider.settings;
    let secret = settings.webhook_secret.as_ref().ok_or_else(|| {
        ProviderCallError::Rejected(format!(
            "POBLYSH_{}_WEBHOOK_SECRET is not set: channel tokens cannot be made",
            settings.slug.to_ascii_uppercase()
        ))
    })?;
    let id = uuid::Uuid::new_v4().to_string();
    let token = token(secret, settings.slug, ctx.connection.tenant_id, &id);
    let ttl = i64::try_from(ttl_secs(settings)).unwrap_or(i64::MAX);
    let requested = crate::domain::now() + chrono::Duration::seconds(ttl);
    let body = json!({
        "id": id,
        "type": "web_hook",
        "address": ctx.webhook_url.as_str(),
        "token": token.expose(),
        "expiration": requested.timestamp_millis().to_string(),
    });
    let request = ctx
        .provider
        .http
        .post(watch_url)
        .bearer_auth(ctx.access_token.expose())
        .json(&body);
    let channel: Channel = api::json(request, what).await?;
    opened(channel, &id, &ctx.subscription.resource, requested)
}

/// What Google's answer to a watch comes to.
fn opened(
    channel: Channel,
    id: &str,
    resource: &str,
    requested: Timestamp,
) -> Result<Opened, ProviderCallError> {
    if channel.id != id {
        return Err(ProviderCallError::Rejected(
            "Google answered a channel other than the one asked for".into(),
        ));
    }
    if channel.resource_id.is_empty() {
        return Err(ProviderCallError::Rejected(
            "Google answered a channel without a resourceId".into(),
        ));
    }
    let expires_at = match channel.expiration.as_deref() {
        None => requested,
        Some(ms) => ms
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .ok_or_else(|| {
                ProviderCallError::Rejected(
                    "Google answered a channel expiration that is not Unix milliseconds".into(),
                )
            })?,
    };
    let mut state = Metadata::new();
    state.insert("resource_id".into(), channel.resource_id.clone().into());
    if let Some(uri) = channel.resource_uri {
        state.insert("resource_uri".into(), uri.into());
    }
    let mut metadata = Metadata::new();
    metadata.insert(
        format!("{METADATA_PREFIX}{resource}"),
        json!({ "id": channel.id, "resource_id": channel.resource_id }),
    );
    Ok(Opened {
        external_id: channel.id,
        expires_at: Some(expires_at),
        state,
        metadata: Some(metadata),
    })
}

/// Stops the subscription's channel with `channels.stop` at `stop_url`.
pub(in crate::providers) async fn stop(
    ctx: &SubscriptionContext<'_>,
    stop_url: Url,
    what: &str,
) -> Result<(), ProviderCallError> {
    let sub = ctx.subscription;
    let id = sub
        .external_id
        .as_deref()
        .ok_or_else(|| ProviderCallError::Rejected("the channel was never opened".into()))?;
    let resource_id = sub
        .state
        .get("resource_id")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderCallError::Rejected("the channel has no resource id".into()))?;
    let response = ctx
        .provider
        .http
        .post(stop_url)
        .bearer_auth(ctx.access_token.expose())
        .json(&json!({ "id": id, "resourceId": resource_id }))
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = retry_after_header(response.headers());
    let body = read_body(response, MAX_BODY_BYTES).await?;
    match status {
        // Already stopped, or expired.
        200..=299 | 404 => Ok(()),
        _ => Err(api::error(status, retry_after, &body, what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str, expiration: Option<&str>) -> Channel {
        Channel {
            id: id.into(),
            resource_id: "o3hgv1538sdjfh".into(),
            resource_uri: Some("https://www.googleapis.com/drive/v3/changes".into()),
            expiration: expiration.map(str::to_string),
        }
    }

    #[test]
    fn an_answered_channel_keeps_its_resource_id_and_granted_expiry() {
        let requested = crate::domain::now();
        let answer = opened(
            channel("c1", Some("1426325213000")),
            "c1",
            "changes",
            requested,
        )
        .expect("opened");
        assert_eq!(answer.external_id, "c1");
        assert_eq!(
            answer.expires_at.map(|t| t.timestamp_millis()),
            Some(1_426_325_213_000)
        );
        assert_eq!(answer.state["resource_id"], "o3hgv1538sdjfh");
        let metadata = answer.metadata.expect("metadata");
        assert_eq!(
            metadata["google_channel:changes"],
            json!({"id": "c1", "resource_id": "o3hgv1538sdjfh"})
        );
        let fallback = opened_expiry(channel("c1", None), requested);
        assert_eq!(fallback, Some(requested));
        for bad in [
            opened(channel("c2", None), "c1", "changes", requested),
            opened(channel("c1", Some("soon")), "c1", "changes", requested),
            opened(
                channel("c1", Some("99999999999999999999")),
                "c1",
                "changes",
                requested,
            ),
        ] {
            assert!(matches!(bad, Err(ProviderCallError::Rejected(_))));
        }
    }

    fn opened_expiry(c: Channel, requested: Timestamp) -> Option<Timestamp> {
        opened(c, "c1", "changes", requested).ok()?.expires_at
    }

    #[test]
    fn the_lifetime_must_be_a_minute_to_a_week() {
        assert_eq!(parse_ttl("86400"), Ok(86400));
        for bad in ["0", "59", "604801", "soon", ""] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
