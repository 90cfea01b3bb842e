//! Slack: messages and reactions in channels the app can read.
//!
//! Rate limit: the Tier 3 budget of `conversations.history`, about 50 calls a minute
//! (https://api.slack.com/apis/rate-limits).
//!
//! OAuth: Slack's v2 install flow; the connected account is the workspace. See [`oauth`].

mod oauth;

use async_trait::async_trait;
use serde_json::{Map, Value};
use url::Url;

use crate::config::ProviderSettings;
use crate::oauth::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::providers::{AuthType, Connector, Descriptor, RateLimitPolicy};

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
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 50,
        window_secs: 60,
        burst: 10,
        max_concurrency: 2,
    },
};

#[async_trait]
impl Connector for SlackConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
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
        tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        oauth::revoke(ctx, &tokens.access_token).await
    }
}
