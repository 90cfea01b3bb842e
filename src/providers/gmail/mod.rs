//! Gmail: messages received and sent, from the mailbox's history feed, synced as soon as
//! Gmail says the mailbox changed.
//!
//! - **Connect.** `users.getProfile` names the mailbox: its address is the account (lower
//!   case, the `external_account_id` pushes are routed by), kept as `email` with the mailbox's
//!   current `history_id` in the connection's metadata.
//! - **Sync** ([`sync`]): the history feed from that id; `email_received` and `email_sent`.
//! - **Watch** ([`watch`]): `users.watch` on `POBLYSH_GMAIL_PUBSUB_TOPIC`, a subscription
//!   renewed about daily, `users.stop` on disconnect.
//! - **Webhooks** ([`push`]): Cloud Pub/Sub pushes to `POST /webhooks/gmail`, verified by
//!   their OIDC token; each starts a sync of the mailbox it names.
//!
//! Quota (<https://developers.google.com/gmail/api/reference/quota>): 15,000 quota units per
//! user per minute (`userRateLimitExceeded`) and 1,200,000 per project per minute
//! (`rateLimitExceeded`). Costs: `getProfile` 1, `history.list` 2, `messages.list` 5,
//! `messages.get` 5, `watch` 100, `stop` 50. A sync page makes one listing and at most 50
//! message reads (at most 255 units), so 50 pages a minute per connection (12,750 units) stay
//! inside the per-user limit.
//!
//! OAuth: Google's web server flow, shared with the other Google providers (`super::google`);
//! the default scope is `gmail.metadata`, which reads history, labels and headers but never a
//! body (<https://developers.google.com/gmail/api/auth/scopes>).

mod api;
mod push;
mod sync;
mod watch;

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use url::Url;

use super::google;
use crate::connector::{
    AuthType, Connector, Descriptor, Metadata, Normalized, Opened, RateLimitPolicy, Setting,
    SubscriptionContext, SyncContext, SyncPage, Verified, WebhookEvent, WebhookRejection,
    WebhookRequest,
};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::connector::{ProviderSettings, WebhookUrl};
use crate::domain::{Connection, ConnectionId};

/// The Gmail provider.
pub struct GmailConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "gmail",
    display_name: "Gmail",
    auth_type: AuthType::Oauth2,
    default_scopes: &["https://www.googleapis.com/auth/gmail.metadata"],
    kinds: &["email_received", "email_sent"],
    webhooks: true,
    sync: true,
    // Sync pages, each at most 255 of the 15,000 quota units a user has a minute (see the
    // module docs).
    rate_limit: RateLimitPolicy {
        requests: 50,
        window_secs: 60,
        burst: 5,
        max_concurrency: 1,
    },
    settings: &[
        Setting {
            name: push::AUDIENCE,
            check: push::check_audience,
        },
        Setting {
            name: push::JWKS_URL,
            check: push::check_jwks_url,
        },
        Setting {
            name: push::SERVICE_ACCOUNT,
            check: push::check_service_account,
        },
        Setting {
            name: watch::TOPIC,
            check: watch::check_topic,
        },
    ],
};

#[async_trait]
impl Connector for GmailConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }

    fn oauth(&self, settings: &ProviderSettings, _public_base_url: &Url) -> Option<OAuthEndpoints> {
        Some(google::endpoints(settings))
    }

    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        let profile = api::Gmail::new(ctx, &tokens.access_token).profile().await?;
        let mut metadata = Metadata::new();
        metadata.insert("email".into(), json!(profile.email_address));
        metadata.insert(sync::HISTORY_ID.into(), json!(profile.history_id));
        Ok(ExternalAccount::new(
            profile.email_address.to_ascii_lowercase(),
            Some(profile.email_address),
        )
        .with_metadata(metadata))
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

    fn precheck_webhook(
        &self,
        settings: &ProviderSettings,
        _url: WebhookUrl,
        headers: &HeaderMap,
    ) -> Result<(), WebhookRejection> {
        push::precheck(settings, headers)
    }

    async fn verify_webhook(
        &self,
        request: WebhookRequest<'_>,
    ) -> Result<Verified, WebhookRejection> {
        push::verify(request).await
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

    fn app_webhook_bearer(&self) -> bool {
        true
    }

    fn webhook_account(&self, _headers: &axum::http::HeaderMap, body: &[u8]) -> Option<String> {
        push::account(body)
    }

    async fn sync_page(
        &self,
        ctx: SyncContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<SyncPage, ProviderCallError> {
        sync::page(ctx, cursor).await
    }

    fn subscriptions(&self, _connection: &Connection) -> Vec<String> {
        vec![watch::RESOURCE.to_string()]
    }

    async fn open_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<Opened, ProviderCallError> {
        watch::open(ctx).await
    }

    async fn close_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<(), ProviderCallError> {
        watch::close(ctx).await
    }
}
