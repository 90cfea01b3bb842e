//! Zoho Mail: messages received (Inbox) and sent (Sent), headers only.
//!
//! Rate limit: Zoho Mail throttles per user and API but publishes neither the numbers nor the
//! lock period in the API reference (https://www.zoho.com/mail/help/api/overview.html); a
//! throttled call answers `429` or an error body whose `status.code` is 429
//! (https://www.zoho.com/mail/help/api/response-codes.html). We stay at 30 requests a minute per
//! connection, one request per sync page, and back off for Zoho's `Retry-After` or five
//! minutes.
//!
//! Push: Zoho Mail's outgoing webhooks are set up by hand per mailbox in the mail settings
//! (https://www.zoho.com/mail/help/dev-platform/webhook.html) and Zoho documents no signature or
//! secret to verify a delivery by, so none is accepted: Zoho Mail is sync-only.
//!
//! OAuth: Zoho Accounts, shared with the other Zoho provider (`super::zoho`); the connected
//! account is the user's mailbox, named by its `accountId`.

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

/// The Zoho Mail provider.
pub struct ZohoMailConnector;

/// A throttled Zoho Mail call without a `Retry-After` waits this long: Zoho Mail does not
/// publish its lock period.
const THROTTLE: zoho::Throttle = zoho::Throttle { lockout_secs: 300 };

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "zoho_mail",
    display_name: "Zoho Mail",
    auth_type: AuthType::Oauth2,
    // Accounts (identity), folders (the Inbox and Sent ids) and messages (the listings)
    // (https://www.zoho.com/mail/help/api/get-all-users-accounts.html,
    // https://www.zoho.com/mail/help/api/get-all-folder-details.html,
    // https://www.zoho.com/mail/help/api/get-emails-list.html).
    default_scopes: &[
        "ZohoMail.accounts.READ",
        "ZohoMail.folders.READ",
        "ZohoMail.messages.READ",
    ],
    kinds: &["email_received", "email_sent"],
    webhooks: false,
    sync: true,
    // See the module documentation: one request per page, 30 a minute, one at a time.
    rate_limit: RateLimitPolicy {
        requests: 30,
        window_secs: 60,
        burst: 5,
        max_concurrency: 1,
    },
    settings: &[],
};

/// A mail account's address: `primaryEmailAddress`
/// (https://www.zoho.com/mail/help/api/get-user-account-details.html), else the `emailAddress`
/// entry marked `isPrimary` (a boolean, or `"true"` in the older sample; the current sample of
/// https://www.zoho.com/mail/help/api/get-all-users-accounts.html lists its addresses there),
/// else `mailboxAddress`.
fn primary_address(account: &Value) -> Option<String> {
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let flagged = |entry: &&Value| {
        matches!(entry.get("isPrimary"), Some(Value::Bool(true)))
            || entry.get("isPrimary").and_then(Value::as_str) == Some("true")
    };
    text(account.get("primaryEmailAddress"))
        .or_else(|| {
            account
                .get("emailAddress")
                .and_then(Value::as_array)
                .and_then(|list| list.iter().find(flagged))
                .and_then(|entry| text(entry.get("mailId")))
        })
        .or_else(|| text(account.get("mailboxAddress")))
}

#[async_trait]
impl Connector for ZohoMailConnector {
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

    /// The mailbox behind the token: `GET {api}/api/accounts`
    /// (https://www.zoho.com/mail/help/api/get-all-users-accounts.html) lists the user's mail
    /// accounts in `data`; we take the first (the user's own Zoho mailbox, `sequence` 1 in the
    /// docs' samples) and read `accountId` (needed by every Mail API call, a string or a number
    /// in Zoho's samples) and its address (see `primary_address`). The API host is that of the
    /// account's data centre.
    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        let api = zoho::api_base_for_tokens(ctx.settings, tokens, "mail");
        let url = join_path(&api, "/api/accounts");
        let body = zoho::get_json(
            ctx,
            url,
            &tokens.access_token,
            "Zoho Mail accounts",
            THROTTLE,
        )
        .await?;
        let account = body
            .get("data")
            .and_then(Value::as_array)
            .and_then(|accounts| accounts.first())
            .ok_or_else(|| ProviderCallError::Rejected("Zoho Mail lists no account".into()))?;
        let id = zoho::id_text(account.get("accountId"))
            .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ProviderCallError::Rejected("Zoho Mail account has no numeric accountId".into())
            })?;
        let address = primary_address(account);
        let mut metadata = zoho::dc_metadata(tokens);
        metadata.insert("account_id".into(), Value::String(id.clone()));
        if let Some(address) = &address {
            metadata.insert("primary_address".into(), Value::String(address.clone()));
        }
        Ok(ExternalAccount::new(id, address).with_metadata(metadata))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::primary_address;

    #[test]
    fn the_address_is_the_primary_one_whichever_sample_shape_zoho_answers() {
        // The older sample: `primaryEmailAddress`, its other addresses not primary.
        let path = format!(
            "{}/tests/zoho/mail_accounts.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let sample: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
        assert_eq!(
            primary_address(&sample["data"][0]).as_deref(),
            Some("michael.jackson@vtv.com")
        );
        // The current sample's members: addresses only under `emailAddress`.
        let current = json!({
            "incomingUserName": "rebecca@zylker.com",
            "emailAddress": [
                {"isAlias": true, "isPrimary": false, "mailId": "sales@zylker.com", "isConfirmed": true},
                {"isAlias": false, "isPrimary": true, "mailId": "rebecca@zylker.com", "isConfirmed": true}
            ]
        });
        assert_eq!(
            primary_address(&current).as_deref(),
            Some("rebecca@zylker.com")
        );
        assert_eq!(
            primary_address(&json!({"mailboxAddress": "m@zylker.com"})).as_deref(),
            Some("m@zylker.com")
        );
        assert_eq!(primary_address(&json!({"emailAddress": []})), None);
    }
}
