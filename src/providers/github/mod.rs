//! GitHub: issues, pull requests, reviews, pushes and releases.
//!
//! The [`Connector`] implementation only delegates: `oauth` (OAuth App, account lookup),
//! `webhook` (signature and routing), `normalize` (payloads to signals, dedupe keys), `sync`
//! (incremental listing, cursor), `history` (comments and reviews read by sync), `pushes`
//! (pushes read by sync) and `wire`
//! (GitHub's JSON). Operator guide:
//! `docs/providers/github.md`.
//!
//! Rate limit: 5,000 requests an hour for a user token, and requests for one user sent one at
//! a time (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api).

mod history;
mod normalize;
mod oauth;
mod pushes;
mod sync;
mod webhook;
mod wire;

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::Value;
use url::Url;

use crate::connector::{
    AuthType, Connector, Descriptor, RateLimitPolicy, SyncContext, TenantWebhook,
};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::connector::{
    Normalized, SyncPage, Verified, WebhookEvent, WebhookRejection, WebhookRequest,
};
use crate::connector::{ProviderSettings, WebhookUrl};
use crate::domain::{Connection, ConnectionId, TenantId};

pub use sync::INITIAL_LOOKBACK_DAYS;

/// The GitHub provider.
pub struct GithubConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "github",
    display_name: "GitHub",
    auth_type: AuthType::Oauth2,
    default_scopes: &["repo", "read:org", "read:user"],
    kinds: &[
        "issue_created",
        "issue_updated",
        "issue_closed",
        "issue_reopened",
        "issue_commented",
        "pr_opened",
        "pr_updated",
        "pr_merged",
        "pr_closed",
        "pr_reopened",
        "pr_reviewed",
        "code_pushed",
        "release_published",
    ],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 5000,
        window_secs: 3600,
        burst: 100,
        max_concurrency: 1,
    },
    settings: &[],
};

#[async_trait]
impl Connector for GithubConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }

    fn webhook_secret_headers(&self) -> &'static [&'static str] {
        webhook::SIGNATURE_HEADERS
    }

    fn oauth(&self, settings: &ProviderSettings, _public_base_url: &Url) -> Option<OAuthEndpoints> {
        Some(oauth::endpoints(settings))
    }

    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        oauth::identify(ctx, &tokens.access_token).await
    }

    async fn revoke(
        &self,
        ctx: ProviderContext<'_>,
        _endpoints: &OAuthEndpoints,
        _connection: &Connection,
        tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        oauth::revoke_grant(ctx, &tokens.access_token).await
    }

    fn precheck_webhook(
        &self,
        settings: &ProviderSettings,
        url: WebhookUrl,
        headers: &HeaderMap,
    ) -> Result<(), WebhookRejection> {
        webhook::precheck(settings, url, headers).map(|_| ())
    }

    async fn verify_webhook(
        &self,
        request: WebhookRequest<'_>,
    ) -> Result<Verified, WebhookRejection> {
        webhook::verify(request.settings, request.url, request.headers, request.body)
    }

    fn tenant_webhook(
        &self,
        settings: &ProviderSettings,
        tenant: TenantId,
    ) -> Option<TenantWebhook> {
        Some(webhook::tenant_webhook(settings, tenant))
    }

    fn webhook_account(&self, headers: &HeaderMap, body: &[u8]) -> Option<String> {
        webhook::app_account(headers, body)
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

    async fn sync_page(
        &self,
        ctx: SyncContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<SyncPage, ProviderCallError> {
        sync::sync_page(ctx, cursor).await
    }
}
