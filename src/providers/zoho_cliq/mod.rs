//! Zoho Cliq: channel messages.
//!
//! Rate limit: a conservative default; Zoho throttles per user and per API
//! (https://www.zoho.com/cliq/help/restapi/v2/).
//!
//! OAuth: Zoho Accounts, shared with the other Zoho provider (`super::zoho`); the connected account is the Cliq user.

use async_trait::async_trait;
use serde_json::{Map, Value};
use url::Url;

use super::zoho;
use crate::connector::{join_path, ProviderSettings};
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::domain::Connection;

/// The Zoho Cliq provider.
pub struct ZohoCliqConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "zoho_cliq",
    display_name: "Zoho Cliq",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "ZohoCliq.Channels.READ",
        "ZohoCliq.Messages.READ",
        "ZohoCliq.Users.READ",
    ],
    kinds: &[],
    webhooks: false,
    sync: false,
    rate_limit: RateLimitPolicy {
        requests: 60,
        window_secs: 60,
        burst: 10,
        max_concurrency: 2,
    },
    settings: &[],
};

#[async_trait]
impl Connector for ZohoCliqConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }

    fn oauth(&self, settings: &ProviderSettings, _public_base_url: &Url) -> Option<OAuthEndpoints> {
        Some(zoho::endpoints(settings))
    }

    fn interpret_token_response(
        &self,
        status: u16,
        body: &Map<String, Value>,
    ) -> Result<TokenSet, ProviderCallError> {
        zoho::interpret_token_response(status, body)
    }

    /// The Cliq user behind the token: `GET {api}/api/v2/users/me`. Cliq documents "Retrieve a
    /// particular user" as `GET /api/v2/users/{user_id}` (https://www.zoho.com/cliq/help/restapi/v2/#users);
    /// `me` names the token's own user. The user object comes wrapped in `data`; we read `id`
    /// (falling back to `zuid`) and name the account by `email_id`, else `display_name`.
    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        let api = zoho::api_base(ctx.settings, "cliq");
        let url = join_path(&api, "/api/v2/users/me");
        let body = zoho::get_json(ctx, url, &tokens.access_token, "Zoho Cliq users/me").await?;
        let user = body.get("data").unwrap_or(&body);
        let id = zoho::id_text(user.get("id"))
            .or_else(|| zoho::id_text(user.get("zuid")))
            .ok_or_else(|| {
                ProviderCallError::Rejected("Zoho Cliq users/me names no user id".into())
            })?;
        let display_name = ["email_id", "display_name", "name"]
            .iter()
            .find_map(|k| {
                user.get(*k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .map(str::to_string);
        Ok(ExternalAccount::new(id, display_name))
    }

    async fn revoke(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        _connection: &Connection,
        tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        zoho::revoke(ctx, endpoints, tokens).await
    }
}
