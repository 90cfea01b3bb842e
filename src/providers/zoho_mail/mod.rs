//! Zoho Mail: messages received and sent.
//!
//! Rate limit: a conservative default; Zoho throttles per user and per API
//! (https://www.zoho.com/mail/help/api/).
//!
//! OAuth: Zoho Accounts, shared with the other Zoho provider (`super::zoho`); the connected account is the user's mailbox.

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

/// The Zoho Mail provider.
pub struct ZohoMailConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "zoho_mail",
    display_name: "Zoho Mail",
    auth_type: AuthType::Oauth2,
    default_scopes: &["ZohoMail.accounts.READ", "ZohoMail.messages.READ"],
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
impl Connector for ZohoMailConnector {
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

    /// The mailbox behind the token: `GET {api}/api/accounts`
    /// (https://www.zoho.com/mail/help/api/get-all-users-accounts.html) lists the user's mail
    /// accounts in `data`; we take the first (the user's own Zoho mailbox, `sequence` 1 in the
    /// docs' sample) and read `accountId` (needed by every Mail API call) and
    /// `primaryEmailAddress` (https://www.zoho.com/mail/help/api/get-user-account-details.html),
    /// falling back to `mailboxAddress`.
    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        let api = zoho::api_base(ctx.settings, "mail");
        let url = join_path(&api, "/api/accounts");
        let body = zoho::get_json(ctx, url, &tokens.access_token, "Zoho Mail accounts").await?;
        let account = body
            .get("data")
            .and_then(Value::as_array)
            .and_then(|accounts| accounts.first())
            .ok_or_else(|| ProviderCallError::Rejected("Zoho Mail lists no account".into()))?;
        let id = zoho::id_text(account.get("accountId")).ok_or_else(|| {
            ProviderCallError::Rejected("Zoho Mail account has no accountId".into())
        })?;
        let display_name = ["primaryEmailAddress", "mailboxAddress"]
            .iter()
            .find_map(|k| {
                account
                    .get(*k)
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
