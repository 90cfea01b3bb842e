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
//! name to every tenant that connected that workspace. Sync (`conversations.history`) is not
//! implemented: a sync job of a Slack connection finds nothing, so only events delivered while
//! the app is installed become signals.
//!
//! Rate limit: the Tier 3 budget of `conversations.history`, about 50 calls a minute
//! (https://api.slack.com/apis/rate-limits).

mod normalize;
mod oauth;
mod webhook;
mod wire;

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use url::Url;

use crate::connector::ProviderSettings;
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::connector::{Normalized, Verified, WebhookEvent, WebhookRejection, WebhookRequest};
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
    sync: false,
    rate_limit: RateLimitPolicy {
        requests: 50,
        window_secs: 60,
        burst: 10,
        max_concurrency: 2,
    },
    settings: &[],
};

#[async_trait]
impl Connector for SlackConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
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

    async fn verify_webhook(
        &self,
        request: WebhookRequest<'_>,
    ) -> Result<Verified, WebhookRejection> {
        webhook::verify(request.settings, request.headers, request.body)
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
