//! Google Drive: file changes, from the changes feed, synced at once when a push channel says
//! something changed.
//!
//! - Sync: `changes.list` from a `changes.getStartPageToken` taken at connect, kept in the
//!   connection's metadata until the first sync starts from it ([`sync`]).
//! - Channel: one `changes.watch` channel per connection (resource `changes`), opened after
//!   connect, opened anew before it expires, stopped with `channels.stop` on disconnect
//!   (`super::google::channel`). Its notifications are verified by their per-channel token
//!   and start an incremental sync of the connection (`super::google::push`).
//! - Base URLs: `POBLYSH_GOOGLE_DRIVE_API_BASE_URL` moves the API (`/drive/v3/...`) and the
//!   userinfo lookup, `POBLYSH_GOOGLE_DRIVE_AUTH_BASE_URL` the OAuth endpoints.
//!
//! Rate limit: Drive allows 12,000 queries per 60 seconds per user
//! (<https://developers.google.com/workspace/drive/api/guides/limits>); the client-side limit
//! stays far inside it, 600 a minute per connection. `429` and `403 userRateLimitExceeded`
//! back off (`super::google::api`).
//!
//! OAuth: Google's web server flow, shared with the other Google providers (`super::google`).

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

/// The Google Drive provider.
pub struct GoogleDriveConnector;

/// The resource the channel watches.
const RESOURCE: &str = "changes";

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "google_drive",
    display_name: "Google Drive",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "openid",
        "email",
        "https://www.googleapis.com/auth/drive.metadata.readonly",
    ],
    kinds: &["file_created", "file_updated", "file_deleted"],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 600,
        window_secs: 60,
        burst: 50,
        max_concurrency: 4,
    },
    settings: &[Setting {
        name: channel::TTL_SETTING,
        check: channel::check_ttl,
    }],
};

#[async_trait]
impl Connector for GoogleDriveConnector {
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

    /// The Google account, and the changes feed's start page token taken now, so the first
    /// sync reports every change made after connect.
    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        let mut account = google::identify(ctx, &tokens.access_token).await?;
        let start = sync::start_at_connect(ctx, &tokens.access_token).await?;
        account.metadata.extend(start);
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

    fn subscriptions(&self, _connection: &Connection) -> Vec<String> {
        vec![RESOURCE.to_string()]
    }

    /// `changes.watch` from a fresh start page token: a channel notifies of every change
    /// after it, whatever token the sync stands at.
    async fn open_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<Opened, ProviderCallError> {
        let token = sync::start_page_token(ctx.provider, ctx.access_token).await?;
        let mut url = api::url(ctx.provider.settings, "/drive/v3/changes/watch");
        url.query_pairs_mut()
            .append_pair("pageToken", &token)
            .append_pair("includeRemoved", "true")
            .append_pair("includeItemsFromAllDrives", "true")
            .append_pair("supportsAllDrives", "true")
            .append_pair("spaces", "drive");
        channel::open(&ctx, url, "Google Drive changes.watch").await
    }

    async fn close_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<(), ProviderCallError> {
        let url = api::url(ctx.provider.settings, "/drive/v3/channels/stop");
        channel::stop(&ctx, url, "Google Drive channels.stop").await
    }
}
