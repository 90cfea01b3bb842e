//! Jira: issues and comments in Jira Cloud (or Data Center by base URL).
//!
//! Rate limit: a conservative share of Jira Cloud's cost-based budget
//! (https://developer.atlassian.com/cloud/jira/platform/rate-limiting/).
//!
//! OAuth: Atlassian OAuth 2.0 (3LO); the connected account is a Jira Cloud site. See [`oauth`].

mod api;
mod normalize;
mod oauth;
mod subscription;
mod sync;
mod time;
mod webhook;

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::Value;
use url::Url;

use crate::connector::ProviderSettings;
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy, Setting};
use crate::connector::{
    CodeExchange, ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError,
    ProviderContext, TokenSet,
};
use crate::connector::{
    Normalized, Verified, WebhookEvent, WebhookRejection, WebhookRequest, WebhookUrl,
};
use crate::connector::{Opened, SubscriptionContext, SyncContext, SyncPage, TenantWebhook};
use crate::crypto::Secret;
use crate::domain::{Connection, ConnectionId, TenantId};

/// The Jira provider.
pub struct JiraConnector;

pub use sync::{INITIAL_LOOKBACK_DAYS, OVERLAP_MS};

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "jira",
    display_name: "Jira",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "read:jira-work",
        "read:jira-user",
        "manage:jira-webhook",
        "offline_access",
    ],
    kinds: &[
        "issue_created",
        "issue_updated",
        "issue_resolved",
        "issue_deleted",
        "issue_commented",
    ],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 100,
        window_secs: 60,
        burst: 20,
        max_concurrency: 2,
    },
    settings: &[Setting {
        name: subscription::JQL_SETTING,
        check: subscription::check_jql,
    }],
};

#[async_trait]
impl Connector for JiraConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }

    fn oauth(&self, settings: &ProviderSettings, _public_base_url: &Url) -> Option<OAuthEndpoints> {
        Some(oauth::endpoints(settings))
    }

    async fn exchange_code(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        exchange: CodeExchange<'_>,
    ) -> Result<TokenSet, ProviderCallError> {
        let fields = [
            ("grant_type", "authorization_code"),
            ("code", exchange.code),
            ("redirect_uri", exchange.redirect_uri),
        ];
        let (status, body) = oauth::token_request(ctx, endpoints, &fields).await?;
        self.interpret_token_response(status, &body)
    }

    async fn refresh_tokens(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        _connection: &Connection,
        refresh_token: &Secret,
    ) -> Result<TokenSet, ProviderCallError> {
        let fields = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let (status, body) = oauth::token_request(ctx, endpoints, &fields).await?;
        self.interpret_token_response(status, &body)
    }

    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        oauth::identify(ctx, &tokens.access_token).await
    }

    /// 3LO has no revocation endpoint; best effort is nothing (see [`oauth`]).
    async fn revoke(
        &self,
        _ctx: ProviderContext<'_>,
        _endpoints: &OAuthEndpoints,
        _connection: &Connection,
        _tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        Ok(())
    }

    async fn sync_page(
        &self,
        ctx: SyncContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<SyncPage, ProviderCallError> {
        sync::sync_page(ctx, cursor).await
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

    fn webhook_secret_headers(&self) -> &'static [&'static str] {
        webhook::SECRET_HEADERS
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

    fn subscriptions(&self, _connection: &Connection) -> Vec<String> {
        vec![subscription::RESOURCE.to_string()]
    }

    async fn open_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<Opened, ProviderCallError> {
        subscription::open(ctx).await
    }

    async fn renew_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<Opened, ProviderCallError> {
        subscription::renew(ctx).await
    }

    async fn close_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<(), ProviderCallError> {
        subscription::close(ctx).await
    }
}
