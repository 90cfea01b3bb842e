//! Jira: issues and comments in Jira Cloud (or Data Center by base URL).
//!
//! Rate limit: a conservative share of Jira Cloud's cost-based budget
//! (https://developer.atlassian.com/cloud/jira/platform/rate-limiting/).
//!
//! OAuth: Atlassian OAuth 2.0 (3LO); the connected account is a Jira Cloud site. See [`oauth`].

mod oauth;

use async_trait::async_trait;
use url::Url;

use crate::connector::ProviderSettings;
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy};
use crate::connector::{
    CodeExchange, ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError,
    ProviderContext, TokenSet,
};
use crate::crypto::Secret;
use crate::domain::Connection;

/// The Jira provider.
pub struct JiraConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "jira",
    display_name: "Jira",
    auth_type: AuthType::Oauth2,
    default_scopes: &["read:jira-work", "read:jira-user", "offline_access"],
    kinds: &[],
    webhooks: false,
    sync: false,
    rate_limit: RateLimitPolicy {
        requests: 100,
        window_secs: 60,
        burst: 20,
        max_concurrency: 2,
    },
    settings: &[],
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
}
