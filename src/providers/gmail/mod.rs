//! Gmail: messages received and sent, from Pub/Sub push and the history feed.
//!
//! Webhooks: Cloud Pub/Sub pushes of the mailbox's change notifications, verified by the OIDC
//! token Google signs them with ([`push`]); each asks for a sync of the connection whose
//! address it names. The sync (the history feed) and opening the mailbox watch are not built
//! yet: until they are, a notification ends `ignored` and the catalogue lists no kinds.
//!
//! Rate limit: 250 quota units a second per user, a message read costing 5
//! (https://developers.google.com/gmail/api/reference/quota).
//!
//! OAuth: Google's web server flow, shared with the other Google providers (`super::google`).

mod push;

use async_trait::async_trait;
use url::Url;

use super::google;
use crate::connector::ProviderSettings;
use crate::connector::{
    AuthType, Connector, Descriptor, Normalized, RateLimitPolicy, Setting, Verified, WebhookEvent,
    WebhookRejection, WebhookRequest,
};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::domain::{Connection, ConnectionId};

/// The Gmail provider.
pub struct GmailConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "gmail",
    display_name: "Gmail",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "openid",
        "email",
        "https://www.googleapis.com/auth/gmail.readonly",
    ],
    kinds: &[],
    webhooks: false,
    sync: false,
    rate_limit: RateLimitPolicy {
        requests: 3000,
        window_secs: 60,
        burst: 100,
        max_concurrency: 4,
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
        google::identify(ctx, &tokens.access_token).await
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
}
