//! Google Calendar: event changes on the primary calendar and every other calendar the user
//! selected, from sync tokens, synced at once when a push channel says something changed.
//!
//! - Calendars: the primary one and the selected ones of `calendarList`, read at connect
//!   ([`calendars`]).
//! - Sync: `events.list` with `syncToken` per calendar, a bounded full sync first and after
//!   `410 Gone` ([`sync`]).
//! - Channel: one `events.watch` channel per synced calendar (resource `calendar:{id}`),
//!   opened after connect, opened anew before it expires, stopped with `channels.stop` on
//!   disconnect (`super::google::channel`). Its notifications are verified by their
//!   per-channel token and start an incremental sync (`super::google::push`).
//! - Base URLs: `POBLYSH_GOOGLE_CALENDAR_API_BASE_URL` moves the API (`/calendar/v3/...`) and
//!   the userinfo lookup, `POBLYSH_GOOGLE_CALENDAR_AUTH_BASE_URL` the OAuth endpoints.
//!
//! Rate limit: Calendar allows 600 requests a minute per user per project
//! (<https://developers.google.com/workspace/calendar/api/guides/quota>); the client-side
//! limit is half of it per connection. `429` and `403 rateLimitExceeded` back off
//! (`super::google::api`).
//!
//! OAuth: Google's web server flow, shared with the other Google providers (`super::google`).

mod calendars;
mod sync;

use async_trait::async_trait;
use serde_json::Value;
use url::Url;

use super::google;
use super::google::{api, channel, push};
use crate::connector::ProviderSettings;
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy, Setting};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::connector::{Normalized, Verified, WebhookEvent, WebhookRejection, WebhookRequest};
use crate::connector::{Opened, SubscriptionContext, SyncContext, SyncPage};
use crate::domain::{Connection, ConnectionId};

/// The Google Calendar provider.
pub struct GoogleCalendarConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "google_calendar",
    display_name: "Google Calendar",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "openid",
        "email",
        "https://www.googleapis.com/auth/calendar.readonly",
    ],
    kinds: &[
        "calendar_event_created",
        "calendar_event_updated",
        "calendar_event_deleted",
    ],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 300,
        window_secs: 60,
        burst: 30,
        max_concurrency: 4,
    },
    settings: &[
        Setting {
            name: channel::TTL_SETTING,
            check: channel::check_ttl,
        },
        Setting {
            name: sync::FIRST_SYNC_SETTING,
            check: sync::check_first_sync_days,
        },
    ],
};

#[async_trait]
impl Connector for GoogleCalendarConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }

    fn oauth(&self, settings: &ProviderSettings, _public_base_url: &Url) -> Option<OAuthEndpoints> {
        Some(google::endpoints(settings))
    }

    fn precheck_webhook(
        &self,
        settings: &ProviderSettings,
        url: crate::connector::WebhookUrl,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), WebhookRejection> {
        // A notification is proven by its headers alone (the channel token): checked in full
        // before any body is read.
        push::verify(settings, url, headers).map(|_| ())
    }

    async fn verify_webhook(
        &self,
        request: WebhookRequest<'_>,
    ) -> Result<Verified, WebhookRejection> {
        push::verify(request.settings, request.url, request.headers)
    }

    fn webhook_secret_headers(&self) -> &'static [&'static str] {
        push::SECRET_HEADERS
    }

    fn claimed_subscription(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Option<crate::connector::ClaimedSubscription> {
        Some(push::claim(headers))
    }

    fn route_webhook(
        &self,
        event: &WebhookEvent,
        connections: &[Connection],
    ) -> Option<ConnectionId> {
        push::route(event, connections)
    }

    fn normalize_webhook(&self, event: &WebhookEvent) -> Result<Normalized, String> {
        push::normalize(event)
    }

    /// The Google account, and the calendars to sync (`calendarList.list`).
    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        let mut account = google::identify(ctx, &tokens.access_token).await?;
        let ids = calendars::selected(ctx, &tokens.access_token).await?;
        account
            .metadata
            .insert(calendars::METADATA.into(), serde_json::json!(ids));
        Ok(account)
    }

    async fn revoke(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        _connection: &Connection,
        tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        google::revoke(ctx, endpoints, tokens).await
    }

    async fn sync_page(
        &self,
        ctx: SyncContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<SyncPage, ProviderCallError> {
        sync::page(ctx, cursor).await
    }

    fn subscriptions(&self, connection: &Connection) -> Vec<String> {
        calendars::of(connection)
            .iter()
            .map(|id| calendars::resource(id))
            .collect()
    }

    async fn open_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<Opened, ProviderCallError> {
        let id = calendars::from_resource(&ctx.subscription.resource)?;
        let url = calendars::url(ctx.provider.settings, id, &["events", "watch"])?;
        channel::open(&ctx, url, "Google Calendar events.watch").await
    }

    async fn close_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<(), ProviderCallError> {
        let url = api::url(ctx.provider.settings, "/calendar/v3/channels/stop");
        channel::stop(&ctx, url, "Google Calendar channels.stop").await
    }
}
