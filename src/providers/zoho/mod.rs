//! Zoho Accounts OAuth 2.0, shared by Zoho Cliq and Zoho Mail
//! (<https://www.zoho.com/accounts/protocol/oauth/web-server-applications.html>).
//!
//! - Authorize at `{accounts}/oauth/v2/auth` with `access_type=offline` and `prompt=consent`;
//!   token at `{accounts}/oauth/v2/token`; revocation by `POST {accounts}/oauth/v2/token/revoke?token=`.
//! - Data centres (https://www.zoho.com/accounts/protocol/oauth/multi-dc.html): each DC has its
//!   own accounts server and holds only its users. The accounts server is
//!   `POBLYSH_<SLUG>_AUTH_BASE_URL`, default `https://accounts.zoho.com` (US); the others are
//!   `https://accounts.zoho.eu`, `.in`, `.com.au`, `.jp`, `.sa`, `.uk`, `https://accounts.zoho.com.cn`
//!   (China, a separate deployment) and, for Canada, `https://accounts.zohocloud.ca` (the docs
//!   name `zohocloud.ca`, not `zoho.ca`).
//! - Product APIs live on the same DC: unless `POBLYSH_<SLUG>_API_BASE_URL` says otherwise, the
//!   API host is derived from the accounts host (`accounts.zoho.eu` → `mail.zoho.eu`,
//!   `cliq.zoho.eu`).
//! - Product API calls authenticate with `Authorization: Zoho-oauthtoken <token>`
//!   (https://www.zoho.com/mail/help/api/getting-started-with-api.html).
//!
//! Not supported: with Multi-DC enabled on the client, Zoho redirects back with `location` and
//! `accounts-server` and expects the code exchange at that server. The callback reads only
//! `code` and `state`, so one deployment serves the DC of its configured accounts server.

use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::{Map, Value};
use url::Url;

use crate::connector::{check_status, rate_limited, transport};
use crate::connector::{join_path, ProviderSettings};
use crate::connector::{read_body, MAX_BODY_BYTES};
use crate::connector::{
    standard_token_response, ClientAuth, ConnectionTokens, OAuthEndpoints, ProviderCallError,
    ProviderContext, TokenSet,
};
use crate::crypto::Secret;

const ACCOUNTS_BASE: &str = "https://accounts.zoho.com";

pub(super) fn endpoints(settings: &ProviderSettings) -> OAuthEndpoints {
    let accounts = settings.auth_base(ACCOUNTS_BASE);
    OAuthEndpoints {
        authorize_url: join_path(&accounts, "/oauth/v2/auth"),
        token_url: join_path(&accounts, "/oauth/v2/token"),
        // Called with the token in the query by `revoke` below, as Zoho documents it
        // (https://www.zoho.com/crm/developer/docs/api/revoke-tokens.html).
        revoke_url: Some(join_path(&accounts, "/oauth/v2/token/revoke")),
        // The server-based flow authenticates with the client secret; PKCE is not part of it.
        pkce: false,
        // `access_type=offline` yields a refresh token, only on first consent unless
        // `prompt=consent` asks again
        // (https://www.zoho.com/accounts/protocol/oauth/web-apps/authorization.html).
        extra_authorize_params: vec![("access_type", "offline"), ("prompt", "consent")],
        // "Multiple scopes can be given which has to be separated by commas"
        // (https://www.zoho.com/invoice/api/v3/oauth/).
        scope_separator: ",",
        scope_param: "scope",
        // The token request carries `client_id` and `client_secret` as parameters
        // (https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token.html); we send them in
        // the POST form body rather than the query so the secret stays out of URLs and logs.
        client_auth: ClientAuth::RequestBody,
    }
}

/// Reads Zoho's token response. Zoho answers a bad, expired or reused code (and an unusable
/// refresh token) with HTTP 200 and `{"error": "invalid_code"}` (the Accounts docs list no
/// error codes; see Zoho's troubleshooting post,
/// https://help.zoho.com/portal/en/community/topic/kaizen-4-troubleshooting-oauth2-0), which
/// means the user must authorize again; other errors fall to the RFC 6749 reading. A
/// successful response (https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token.html)
/// carries `api_domain`, the DC's API host
/// (https://www.zoho.com/accounts/protocol/oauth/multi-dc/client-authorization.html); it stays in
/// `TokenSet.extra`.
pub(super) fn interpret_token_response(
    status: u16,
    body: &Map<String, Value>,
) -> Result<TokenSet, ProviderCallError> {
    if body.get("error").and_then(Value::as_str) == Some("invalid_code") {
        return Err(ProviderCallError::InvalidGrant(
            "Zoho answered invalid_code".into(),
        ));
    }
    standard_token_response(status, body)
}

/// The API base of a Zoho product (`mail`, `cliq`): the configured one, else the product host
/// on the accounts server's DC domain, else the US host.
pub(super) fn api_base(settings: &ProviderSettings, product: &str) -> Url {
    if let Some(base) = &settings.api_base_url {
        return base.clone();
    }
    let derived = settings
        .auth_base_url
        .as_ref()
        .and_then(Url::host_str)
        .and_then(|host| host.strip_prefix("accounts."))
        .filter(|domain| domain.starts_with("zoho.") || domain.starts_with("zohocloud."))
        .map(|domain| format!("https://{product}.{domain}"));
    let text = derived.unwrap_or_else(|| format!("https://{product}.zoho.com"));
    Url::parse(&text).expect("a Zoho host is a valid URL")
}

/// GETs a Zoho product API with the `Zoho-oauthtoken` scheme and returns its JSON body.
pub(super) async fn get_json(
    ctx: ProviderContext<'_>,
    url: Url,
    token: &Secret,
    what: &str,
) -> Result<Value, ProviderCallError> {
    let response = ctx
        .http
        .get(url)
        .header(AUTHORIZATION, format!("Zoho-oauthtoken {}", token.expose()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    if response.status().as_u16() == 429 {
        return Err(rate_limited(&response));
    }
    check_status(response.status().as_u16(), what)?;
    let body = read_body(response, MAX_BODY_BYTES).await?;
    serde_json::from_slice(&body)
        .map_err(|_| ProviderCallError::Rejected(format!("{what} answered an unexpected body")))
}

/// A JSON id that Zoho sends as a string or a number.
pub(super) fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Revokes the refresh token, which also revokes the access tokens minted from it: `POST
/// {accounts}/oauth/v2/token/revoke?token=...` (https://www.zoho.com/crm/developer/docs/api/revoke-tokens.html).
pub(super) async fn revoke(
    ctx: ProviderContext<'_>,
    endpoints: &OAuthEndpoints,
    tokens: &ConnectionTokens,
) -> Result<(), ProviderCallError> {
    let Some(url) = &endpoints.revoke_url else {
        return Ok(());
    };
    let token = tokens
        .refresh_token
        .as_ref()
        .unwrap_or(&tokens.access_token);
    let mut url = url.clone();
    url.query_pairs_mut().append_pair("token", token.expose());
    let response = ctx.http.post(url).send().await.map_err(transport)?;
    check_status(response.status().as_u16(), "Zoho token revocation")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(auth: Option<&str>, api: Option<&str>) -> ProviderSettings {
        ProviderSettings {
            api_base_url: api.map(|u| Url::parse(u).expect("url")),
            auth_base_url: auth.map(|u| Url::parse(u).expect("url")),
            ..ProviderSettings::bare("zoho_mail")
        }
    }

    #[test]
    fn the_api_host_follows_the_accounts_server_data_centre() {
        let api = |auth, api| api_base(&settings(auth, api), "mail").to_string();
        assert_eq!(api(None, None), "https://mail.zoho.com/");
        assert_eq!(
            api(Some("https://accounts.zoho.eu"), None),
            "https://mail.zoho.eu/"
        );
        assert_eq!(
            api(Some("https://accounts.zoho.com.au"), None),
            "https://mail.zoho.com.au/"
        );
        assert_eq!(
            api(Some("https://accounts.zohocloud.ca"), None),
            "https://mail.zohocloud.ca/"
        );
        assert_eq!(
            api(Some("http://127.0.0.1:9"), None),
            "https://mail.zoho.com/"
        );
        let explicit = api(
            Some("https://accounts.zoho.eu"),
            Some("http://127.0.0.1:9/x"),
        );
        assert_eq!(explicit, "http://127.0.0.1:9/x");
        let e = endpoints(&settings(Some("https://accounts.zoho.in"), None));
        assert_eq!(
            e.token_url.as_str(),
            "https://accounts.zoho.in/oauth/v2/token"
        );
    }

    #[test]
    fn invalid_code_is_an_invalid_grant_and_api_domain_stays_in_extra() {
        let body = |v: Value| v.as_object().expect("object").clone();
        let err =
            interpret_token_response(200, &body(serde_json::json!({"error": "invalid_code"})));
        assert!(matches!(err, Err(ProviderCallError::InvalidGrant(_))));
        let err =
            interpret_token_response(200, &body(serde_json::json!({"error": "invalid_client"})));
        assert!(matches!(err, Err(ProviderCallError::Rejected(_))));
        let tokens = interpret_token_response(
            200,
            &body(serde_json::json!({"access_token": "a", "api_domain": "https://www.zohoapis.eu", "expires_in": 3600})),
        )
        .expect("tokens");
        assert_eq!(tokens.extra["api_domain"], "https://www.zohoapis.eu");
    }
}
