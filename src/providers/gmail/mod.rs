//! Gmail: messages received and sent, from Pub/Sub push and the history feed.
//!
//! Rate limit: 250 quota units a second per user, a message read costing 5
//! (https://developers.google.com/gmail/api/reference/quota).
//!
//! OAuth: Google's web server flow, shared with the other Google providers (`super::google`).

use async_trait::async_trait;
use url::Url;

use super::google;
use crate::connector::ProviderSettings;
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::domain::Connection;

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
    settings: &[],
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
}
