//! Sandbox: a built-in provider that needs no credentials. Its authorize page
//! redirects straight back with a code and its sync emits a steady trickle of synthetic
//! signals, so the whole journey runs on a laptop in a minute. Enabled by default only in the
//! local profile (`POBLYSH_SANDBOX_ENABLED`). With `POBLYSH_SANDBOX_API_BASE_URL` set, its sync
//! reads an HTTP API instead (`api.rs`), which tests and benchmarks fake.

mod api;
mod event;
mod oauth;
mod subscription;
mod sync;
mod webhook;

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::Value;
use url::Url;

use crate::connector::{
    AuthType, Connector, Descriptor, Opened, RateLimitPolicy, Setting, SubscriptionContext,
    SyncContext,
};
use crate::connector::{
    CodeExchange, Normalized, ProviderPage, SyncPage, Verified, WebhookEvent, WebhookRejection,
    WebhookRequest,
};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::connector::{ProviderSettings, WebhookUrl};
use crate::crypto::Secret;
use crate::domain::Connection;

/// The Sandbox provider.
pub struct SandboxConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "sandbox",
    display_name: "Sandbox",
    auth_type: AuthType::None,
    default_scopes: &["sandbox.read"],
    kinds: &["sandbox_event_created", "sandbox_event_updated"],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 600,
        window_secs: 60,
        burst: 60,
        max_concurrency: 4,
    },
    settings: &[Setting {
        name: subscription::TTL_SETTING,
        check: subscription::check_ttl,
    }],
};

#[async_trait]
impl Connector for SandboxConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }

    fn webhook_secret_headers(&self) -> &'static [&'static str] {
        webhook::SIGNATURE_HEADERS
    }

    fn precheck_webhook(
        &self,
        settings: &ProviderSettings,
        _url: WebhookUrl,
        headers: &HeaderMap,
    ) -> Result<(), WebhookRejection> {
        webhook::precheck(settings, headers).map(|_| ())
    }

    fn oauth(&self, _settings: &ProviderSettings, public_base_url: &Url) -> Option<OAuthEndpoints> {
        Some(oauth::endpoints(public_base_url))
    }

    async fn exchange_code(
        &self,
        _ctx: ProviderContext<'_>,
        _endpoints: &OAuthEndpoints,
        exchange: CodeExchange<'_>,
    ) -> Result<TokenSet, ProviderCallError> {
        oauth::exchange(exchange.code, exchange.verifier)
    }

    async fn refresh_tokens(
        &self,
        _ctx: ProviderContext<'_>,
        _endpoints: &OAuthEndpoints,
        _connection: &Connection,
        refresh_token: &Secret,
    ) -> Result<TokenSet, ProviderCallError> {
        oauth::refresh(refresh_token)
    }

    async fn identify(
        &self,
        _ctx: ProviderContext<'_>,
        _tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        Ok(oauth::account())
    }

    async fn revoke(
        &self,
        _ctx: ProviderContext<'_>,
        _endpoints: &OAuthEndpoints,
        _connection: &Connection,
        _tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        Ok(())
    }

    async fn verify_webhook(
        &self,
        request: WebhookRequest<'_>,
    ) -> Result<Verified, WebhookRejection> {
        webhook::verify(request.settings, request.headers, request.body)
    }

    fn normalize_webhook(&self, event: &WebhookEvent) -> Result<Normalized, String> {
        webhook::normalize(event)
    }

    fn webhook_account(&self, _headers: &axum::http::HeaderMap, body: &[u8]) -> Option<String> {
        webhook::account(body)
    }

    async fn sync_page(
        &self,
        ctx: SyncContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<SyncPage, ProviderCallError> {
        match &ctx.provider.settings.api_base_url {
            Some(base) => api::page(ctx, base, cursor).await,
            None => sync::page(ctx.connection, cursor, crate::domain::now()),
        }
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

    fn pages(&self) -> &'static [ProviderPage] {
        oauth::PAGES
    }
}
