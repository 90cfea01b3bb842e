//! Zoho Cliq: messages posted in the chats the user belongs to.
//!
//! Rate limit: Cliq's Get Messages allows 15 requests a minute per user and locks the user out
//! for 10 minutes past that; Retrieve all chats allows 20 a minute with the same lock
//! (https://www.zoho.com/cliq/help/restapi/v2/, "Get Messages" and "Retrieve all direct
//! chats"). Every sync page is
//! one request and the client-side limit is 12 a minute per connection, so the sync never
//! reaches the lowest threshold; a lockout (`400 {"code": "request_limit_exceeded"}`) waits
//! the full 10 minutes.
//!
//! Push: Cliq's bot and extension handlers run inside Zoho (Deluge functions) or call out to
//! a developer's server with no signature Zoho documents for verifying the call, so none is
//! accepted: Zoho Cliq is sync-only.
//!
//! OAuth: Zoho Accounts, shared with the other Zoho provider (`super::zoho`); the connected
//! account is the Zoho user, named by the Accounts user-info endpoint.

mod sync;

use async_trait::async_trait;
use serde_json::{Map, Value};
use url::Url;

use super::zoho;
use crate::connector::{join_path, ProviderSettings, SyncContext, SyncPage};
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy};
use crate::connector::{
    CodeExchange, ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError,
    ProviderContext, TokenSet,
};
use crate::crypto::Secret;
use crate::domain::Connection;

/// The Zoho Cliq provider.
pub struct ZohoCliqConnector;

/// Cliq's documented lock period after a user passes a threshold: 10 minutes.
const THROTTLE: zoho::Throttle = zoho::Throttle { lockout_secs: 600 };

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "zoho_cliq",
    display_name: "Zoho Cliq",
    auth_type: AuthType::Oauth2,
    // Chats and messages to read; the Accounts profile scope for who the user is
    // (https://www.zoho.com/accounts/protocol/oauth/use-access-token.html).
    default_scopes: &[
        "ZohoCliq.Chats.READ",
        "ZohoCliq.Messages.READ",
        "AaaServer.profile.READ",
    ],
    kinds: &["message_posted"],
    webhooks: false,
    sync: true,
    // Below Cliq's 15 message requests a minute per user (see the module documentation).
    rate_limit: RateLimitPolicy {
        requests: 12,
        window_secs: 60,
        burst: 1,
        max_concurrency: 1,
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

    fn check_callback(
        &self,
        settings: &ProviderSettings,
        params: &[(String, String)],
    ) -> Result<(), (String, String)> {
        zoho::check_callback(settings, params)
    }

    fn revokes_replaced_grant(&self) -> bool {
        true
    }

    fn interpret_token_response(
        &self,
        status: u16,
        body: &Map<String, Value>,
    ) -> Result<TokenSet, ProviderCallError> {
        zoho::interpret_token_response(status, body)
    }

    async fn exchange_code(
        &self,
        ctx: ProviderContext<'_>,
        _endpoints: &OAuthEndpoints,
        exchange: CodeExchange<'_>,
    ) -> Result<TokenSet, ProviderCallError> {
        zoho::exchange_code(ctx, exchange).await
    }

    async fn refresh_tokens(
        &self,
        ctx: ProviderContext<'_>,
        _endpoints: &OAuthEndpoints,
        connection: &Connection,
        refresh_token: &Secret,
    ) -> Result<TokenSet, ProviderCallError> {
        zoho::refresh_tokens(ctx, connection, refresh_token).await
    }

    /// The Zoho user behind the token: `GET {accounts}/oauth/user/info` at the user's accounts
    /// server (https://www.zoho.com/accounts/protocol/oauth/use-access-token.html), which
    /// answers `ZUID`, `Email` and `Display_Name`.
    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        let accounts = zoho::accounts_for_tokens(ctx.settings, tokens);
        let url = join_path(&accounts, "/oauth/user/info");
        let user =
            zoho::get_json(ctx, url, &tokens.access_token, "Zoho user info", THROTTLE).await?;
        let id = zoho::id_text(user.get("ZUID"))
            .ok_or_else(|| ProviderCallError::Rejected("Zoho user info names no ZUID".into()))?;
        let display_name = ["Email", "Display_Name"]
            .iter()
            .find_map(|k| {
                user.get(*k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            })
            .map(str::to_string);
        Ok(ExternalAccount::new(id, display_name).with_metadata(zoho::dc_metadata(tokens)))
    }

    async fn revoke(
        &self,
        ctx: ProviderContext<'_>,
        _endpoints: &OAuthEndpoints,
        connection: &Connection,
        tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        zoho::revoke(ctx, connection, tokens).await
    }

    async fn sync_page(
        &self,
        ctx: SyncContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<SyncPage, ProviderCallError> {
        sync::page(ctx, cursor).await
    }
}
