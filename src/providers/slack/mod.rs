//! Slack: messages and reactions in channels the app can read, from Slack's Events API.
//!
//! The [`Connector`] implementation only delegates: `oauth` (the v2 install flow; the connected
//! account is the workspace, or the organization for an org-wide Enterprise Grid install),
//! `webhook` (signature, `url_verification` and `app_rate_limited` handshakes, dedupe key,
//! account and routing), `normalize` (events to `message_posted`, `message_updated`,
//! `message_deleted` and `reaction_added` signals) and `wire` (Slack's JSON). Operator guide:
//! `docs/providers/slack.md`.
//!
//! Events arrive at the app's one Request URL, `POST /webhooks/slack`, signed with the app's
//! signing secret (`POBLYSH_SLACK_WEBHOOK_SECRET`), and are routed by the installation they
//! name to every tenant that connected that workspace. `sync` reads the history of the
//! channels the app is a member of (`users.conversations`, `conversations.history`,
//! `conversations.replies`) into the same signals under the same dedupe keys.
//!
//! Rate limits follow the app's class (`POBLYSH_SLACK_APP_CLASS`, [`class`]): 1 request a
//! minute and 15 messages a page for a commercially distributed app outside the Marketplace
//! (the default), Tier 3 otherwise (https://api.slack.com/apis/rate-limits).

mod class;
mod normalize;
mod oauth;
mod sync;
mod webhook;
mod wire;

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use url::Url;

use crate::connector::ProviderSettings;
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy, Setting};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::connector::{
    Normalized, Verified, WebhookEvent, WebhookRejection, WebhookRequest, WebhookUrl,
};
use crate::connector::{SyncContext, SyncPage};
use crate::domain::{Connection, ConnectionId};

/// The Slack provider.
pub struct SlackConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "slack",
    display_name: "Slack",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "channels:history",
        "channels:read",
        "groups:history",
        "groups:read",
        "reactions:read",
        "team:read",
        "users:read",
    ],
    kinds: &[
        "message_posted",
        "message_updated",
        "message_deleted",
        "reaction_added",
    ],
    webhooks: true,
    sync: true,
    // The commercial class's limit; `default_rate_limit` follows the configured class.
    rate_limit: RateLimitPolicy {
        requests: 1,
        window_secs: 60,
        burst: 1,
        max_concurrency: 1,
    },
    settings: &[
        Setting {
            name: class::SETTING,
            check: class::check,
        },
        Setting {
            name: sync::INITIAL_DAYS_SETTING,
            check: sync::check_initial_days,
        },
    ],
};

#[async_trait]
impl Connector for SlackConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }

    fn default_rate_limit(&self, extra: &[(&'static str, String)]) -> RateLimitPolicy {
        class::AppClass::of(extra).rate_limit()
    }

    async fn sync_page(
        &self,
        ctx: SyncContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<SyncPage, ProviderCallError> {
        sync::sync_page(ctx, cursor).await
    }

    fn webhook_secret_headers(&self) -> &'static [&'static str] {
        webhook::SIGNATURE_HEADERS
    }

    fn oauth(&self, settings: &ProviderSettings, _public_base_url: &Url) -> Option<OAuthEndpoints> {
        Some(oauth::endpoints(settings))
    }

    fn interpret_token_response(
        &self,
        status: u16,
        body: &Map<String, Value>,
    ) -> Result<TokenSet, ProviderCallError> {
        oauth::interpret_token_response(status, body)
    }

    async fn identify(
        &self,
        _ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        oauth::identify(tokens)
    }

    /// Revokes the bot token: `auth.revoke` revokes the token it is called with
    /// (https://api.slack.com/methods/auth.revoke). It does not uninstall the app.
    async fn revoke(
        &self,
        ctx: ProviderContext<'_>,
        _endpoints: &OAuthEndpoints,
        _connection: &Connection,
        tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        oauth::revoke(ctx, &tokens.access_token).await
    }

    fn precheck_webhook(
        &self,
        settings: &ProviderSettings,
        _url: WebhookUrl,
        headers: &HeaderMap,
    ) -> Result<(), WebhookRejection> {
        webhook::precheck(settings, headers).map(|_| ())
    }

    async fn verify_webhook(
        &self,
        request: WebhookRequest<'_>,
    ) -> Result<Verified, WebhookRejection> {
        webhook::verify(request.settings, request.headers, request.body)
    }

    fn app_wide_secret(&self) -> bool {
        true
    }

    fn webhook_account(&self, _headers: &HeaderMap, body: &[u8]) -> Option<String> {
        webhook::app_account(body)
    }

    fn route_webhook(
        &self,
        event: &WebhookEvent,
        connections: &[Connection],
    ) -> Option<ConnectionId> {
        webhook::route(event, connections)
    }

    fn normalize_webhook(&self, event: &WebhookEvent) -> Result<Normalized, String> {
        normalize::normalize(event)
    }
}
