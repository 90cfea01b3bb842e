//! Zoho Accounts OAuth 2.0 and the API plumbing shared by Zoho Cliq and Zoho Mail
//! (<https://www.zoho.com/accounts/protocol/oauth/web-server-applications.html>).
//!
//! - Authorize at `{accounts}/oauth/v2/auth` with `access_type=offline` and `prompt=consent`;
//!   token at `{accounts}/oauth/v2/token`; revocation by `POST {accounts}/oauth/v2/token/revoke?token=`.
//! - Data centres (https://www.zoho.com/accounts/protocol/oauth/multi-dc.html): each DC has its
//!   own accounts server and holds only its users. The authorize request goes to
//!   `POBLYSH_<SLUG>_AUTH_BASE_URL` (default `https://accounts.zoho.com`). With Multi-DC enabled
//!   on the client, Zoho redirects back with `location` and `accounts-server`
//!   (https://www.zoho.com/accounts/protocol/oauth/multi-dc/client-authorization.html): the code is
//!   exchanged at that server, but only if it is one of Zoho's published accounts servers
//!   ([`DATA_CENTRES`]) or the configured one; anything else is refused before any exchange.
//! - The connection keeps `data_centre`, `accounts_server` and the token response's
//!   `api_domain` as metadata. Refresh and revocation go to that accounts server; product API
//!   calls go to the product host of its DC (`accounts.zoho.eu` → `mail.zoho.eu`,
//!   `cliq.zoho.eu`), unless `POBLYSH_<SLUG>_API_BASE_URL` names one for every connection.
//! - Zoho's refresh tokens do not rotate (a refresh answers only an access token,
//!   https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token-expiry.html) and Zoho
//!   keeps at most 20 refresh tokens per user and client, silently dropping the oldest
//!   (https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token.html): connecting an
//!   account again revokes the refresh token the connection held before.
//! - Product API calls authenticate with `Authorization: Zoho-oauthtoken <token>`
//!   (https://www.zoho.com/accounts/protocol/oauth/use-access-token.html).

use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde_json::{Map, Value};
use url::Url;

use crate::connector::{check_status, retry_after_header, transport};
use crate::connector::{join_path, ProviderSettings};
use crate::connector::{read_body, MAX_BODY_BYTES};
use crate::connector::{
    standard_token_response, ClientAuth, CodeExchange, ConnectionTokens, Metadata, OAuthEndpoints,
    ProviderCallError, ProviderContext, TokenSet,
};
use crate::crypto::Secret;
use crate::domain::Connection;

const ACCOUNTS_BASE: &str = "https://accounts.zoho.com";

/// Zoho's data centres as Zoho publishes them: `location` as the redirect names it, the
/// accounts server's host, and the domain its product hosts live under
/// (https://www.zoho.com/accounts/protocol/oauth/multi-dc.html; Mail's hosts per DC:
/// https://www.zoho.com/mail/help/api/getting-started-with-api.html). Canada's accounts server
/// is `accounts.zohocloud.ca`, not `zoho.ca`.
pub(super) const DATA_CENTRES: &[(&str, &str, &str)] = &[
    ("us", "accounts.zoho.com", "zoho.com"),
    ("eu", "accounts.zoho.eu", "zoho.eu"),
    ("in", "accounts.zoho.in", "zoho.in"),
    ("au", "accounts.zoho.com.au", "zoho.com.au"),
    ("jp", "accounts.zoho.jp", "zoho.jp"),
    ("ca", "accounts.zohocloud.ca", "zohocloud.ca"),
    ("sa", "accounts.zoho.sa", "zoho.sa"),
    ("uk", "accounts.zoho.uk", "zoho.uk"),
    ("cn", "accounts.zoho.com.cn", "zoho.com.cn"),
];

/// Metadata members a Zoho connection keeps.
pub(super) const META_DATA_CENTRE: &str = "data_centre";
pub(super) const META_ACCOUNTS_SERVER: &str = "accounts_server";
pub(super) const META_API_DOMAIN: &str = "api_domain";

/// The OAuth endpoints at the configured accounts server (the authorize request always starts
/// there; Zoho sends the user on to their DC).
pub(super) fn endpoints(settings: &ProviderSettings) -> OAuthEndpoints {
    endpoints_at(&settings.auth_base(ACCOUNTS_BASE))
}

/// The OAuth endpoints at one accounts server.
fn endpoints_at(accounts: &Url) -> OAuthEndpoints {
    OAuthEndpoints {
        authorize_url: join_path(accounts, "/oauth/v2/auth"),
        token_url: join_path(accounts, "/oauth/v2/token"),
        // Called with the token in the query by `revoke` below, as Zoho documents it
        // (https://www.zoho.com/crm/developer/docs/api/revoke-tokens.html).
        revoke_url: Some(join_path(accounts, "/oauth/v2/token/revoke")),
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

/// The first value of a callback parameter.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The accounts server a callback's `accounts-server` names, if it is one Zoho publishes or the
/// configured one; `Ok(None)` when the callback names none (Multi-DC off: the configured
/// server). Never an arbitrary URL: the host must match exactly, over HTTPS, with no port,
/// path, query or credentials.
pub(super) fn accounts_server(
    settings: &ProviderSettings,
    params: &[(String, String)],
) -> Result<Option<Url>, String> {
    let Some(raw) = param(params, "accounts-server") else {
        return Ok(None);
    };
    let refused = || "is not one of Zoho's accounts servers".to_string();
    let url = Url::parse(raw.trim()).map_err(|_| refused())?;
    if let Some(configured) = &settings.auth_base_url {
        let same_path = url.path().trim_end_matches('/') == configured.path().trim_end_matches('/');
        if url.origin() == configured.origin()
            && same_path
            && url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none()
        {
            return Ok(Some(configured.clone()));
        }
    }
    let plain = url.scheme() == "https"
        && url.port().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.fragment().is_none();
    let host = url.host_str().unwrap_or_default();
    match DATA_CENTRES.iter().find(|(_, h, _)| *h == host) {
        Some((_, h, _)) if plain => Url::parse(&format!("https://{h}"))
            .map(Some)
            .map_err(|_| refused()),
        _ => Err(refused()),
    }
}

/// The callback's `location`, when it names one in the shape Zoho sends (a short lower-case code).
fn location(params: &[(String, String)]) -> Result<Option<String>, String> {
    match param(params, "location") {
        None => Ok(None),
        Some(l) if (1..=8).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase()) => {
            Ok(Some(l.to_string()))
        }
        Some(_) => Err("is not a Zoho data centre".into()),
    }
}

/// Refuses a callback whose `accounts-server` or `location` cannot be used (see
/// `Connector::check_callback`).
pub(super) fn check_callback(
    settings: &ProviderSettings,
    params: &[(String, String)],
) -> Result<(), (String, String)> {
    accounts_server(settings, params).map_err(|p| ("accounts-server".to_string(), p))?;
    location(params).map_err(|p| ("location".to_string(), p))?;
    Ok(())
}

/// The data centre of an accounts server of the list.
fn data_centre_of(accounts: &Url) -> Option<&'static str> {
    let host = accounts.host_str()?;
    DATA_CENTRES
        .iter()
        .find(|(_, h, _)| *h == host)
        .map(|(dc, _, _)| *dc)
}

/// Exchanges the code at the accounts server the callback named (checked again here) and keeps
/// that server and the data centre in the token set's `extra`, for `identify` to store.
pub(super) async fn exchange_code(
    ctx: ProviderContext<'_>,
    exchange: CodeExchange<'_>,
) -> Result<TokenSet, ProviderCallError> {
    let named = accounts_server(ctx.settings, exchange.params)
        .map_err(|p| ProviderCallError::Rejected(format!("accounts-server {p}")))?;
    let accounts = named.unwrap_or_else(|| ctx.settings.auth_base(ACCOUNTS_BASE));
    let location = location(exchange.params).map_err(ProviderCallError::Rejected)?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", exchange.code),
        ("redirect_uri", exchange.redirect_uri),
    ];
    let (status, body) = ctx.token_request(&endpoints_at(&accounts), &form).await?;
    let mut tokens = interpret_token_response(status, &body)?;
    // Zoho's own accounts servers name their DC; `location` only names that of the configured one.
    let data_centre = data_centre_of(&accounts).map(str::to_string).or(location);
    tokens.extra.insert(
        META_ACCOUNTS_SERVER.into(),
        Value::String(accounts.as_str().trim_end_matches('/').to_string()),
    );
    if let Some(dc) = data_centre {
        tokens
            .extra
            .insert(META_DATA_CENTRE.into(), Value::String(dc));
    }
    Ok(tokens)
}

/// What a Zoho connection keeps of its token response: data centre, accounts server and
/// `api_domain`.
pub(super) fn dc_metadata(tokens: &TokenSet) -> Metadata {
    [META_DATA_CENTRE, META_ACCOUNTS_SERVER, META_API_DOMAIN]
        .iter()
        .filter_map(|k| {
            tokens
                .extra
                .get(*k)
                .filter(|v| v.is_string())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect()
}

/// The accounts server of a connection (its metadata, written after the check at connect
/// time), else the configured one.
fn connection_accounts(settings: &ProviderSettings, metadata: &Metadata) -> Url {
    metadata
        .get(META_ACCOUNTS_SERVER)
        .and_then(Value::as_str)
        .and_then(|s| Url::parse(s).ok())
        .unwrap_or_else(|| settings.auth_base(ACCOUNTS_BASE))
}

/// Refreshes at the connection's accounts server. Zoho answers an access token only; the
/// refresh token stays as it is.
pub(super) async fn refresh_tokens(
    ctx: ProviderContext<'_>,
    connection: &Connection,
    refresh_token: &Secret,
) -> Result<TokenSet, ProviderCallError> {
    let accounts = connection_accounts(ctx.settings, &connection.metadata);
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.expose()),
    ];
    let (status, body) = ctx.token_request(&endpoints_at(&accounts), &form).await?;
    interpret_token_response(status, &body)
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

/// The product host of the DC an accounts server belongs to (`cliq`, `mail`), if it is one of
/// Zoho's.
fn product_host(accounts: &Url, product: &str) -> Option<Url> {
    let host = accounts.host_str()?;
    let (_, _, domain) = DATA_CENTRES.iter().find(|(_, h, _)| *h == host)?;
    Url::parse(&format!("https://{product}.{domain}")).ok()
}

/// The US host of a product.
fn us_host(product: &str) -> Url {
    Url::parse(&format!("https://{product}.zoho.com"))
        .unwrap_or_else(|_| Url::parse("https://zoho.com").expect("a constant URL parses"))
}

/// The API base of a product for an account on `accounts`: the configured one, else the
/// product host of that DC, else that of the configured accounts server's DC, else the US host.
pub(super) fn api_base_at(
    settings: &ProviderSettings,
    accounts: Option<&Url>,
    product: &str,
) -> Url {
    if let Some(base) = &settings.api_base_url {
        return base.clone();
    }
    accounts
        .and_then(|a| product_host(a, product))
        .or_else(|| {
            settings
                .auth_base_url
                .as_ref()
                .and_then(|a| product_host(a, product))
        })
        .unwrap_or_else(|| us_host(product))
}

/// The API base of a product for an existing connection (its accounts server's DC).
pub(super) fn api_base(settings: &ProviderSettings, connection: &Connection, product: &str) -> Url {
    let accounts = connection
        .metadata
        .get(META_ACCOUNTS_SERVER)
        .and_then(Value::as_str)
        .and_then(|s| Url::parse(s).ok());
    api_base_at(settings, accounts.as_ref(), product)
}

/// The API base of a product for fresh tokens (their `extra` names the accounts server).
pub(super) fn api_base_for_tokens(
    settings: &ProviderSettings,
    tokens: &TokenSet,
    product: &str,
) -> Url {
    let accounts = tokens
        .extra
        .get(META_ACCOUNTS_SERVER)
        .and_then(Value::as_str)
        .and_then(|s| Url::parse(s).ok());
    api_base_at(settings, accounts.as_ref(), product)
}

/// The accounts server of fresh tokens.
pub(super) fn accounts_for_tokens(settings: &ProviderSettings, tokens: &TokenSet) -> Url {
    tokens
        .extra
        .get(META_ACCOUNTS_SERVER)
        .and_then(Value::as_str)
        .and_then(|s| Url::parse(s).ok())
        .unwrap_or_else(|| settings.auth_base(ACCOUNTS_BASE))
}

/// How a Zoho product says "slow down", beyond HTTP 429.
#[derive(Clone, Copy, Debug)]
pub(super) struct Throttle {
    /// The wait after a lockout when the answer names none, in seconds (the product's
    /// documented lock period).
    pub lockout_secs: u64,
}

/// What a Zoho answer means: `Ok` for a success, else the failure. Zoho reports errors in the
/// body, sometimes under HTTP 200 and throttling under 400:
/// - Cliq: `{"code": "request_limit_exceeded", "message": "You have exceeded the URL throttle
///   limits."}` (seen with 400, https://help.zoho.com/portal/en/community/topic/zoho-cliq-api-rate-limit),
///   other errors `{"code": ..., "message": ...}` or `{"error": {"code", "message"}}`
///   (Cliq's OpenAPI documents, https://www.zoho.com/cliq/help/restapi/v2/errors/);
/// - Mail: `{"status": {"code": 400, "description": ...}, "data": {...}}`, the `status.code`
///   being the real outcome (https://www.zoho.com/mail/help/api/response-codes.html).
pub(super) fn classify(
    status: u16,
    retry_after: Option<u64>,
    body: Option<&Value>,
    throttle: Throttle,
    what: &str,
) -> Result<(), ProviderCallError> {
    let limited = ProviderCallError::RateLimited {
        retry_after: Some(retry_after.unwrap_or(throttle.lockout_secs)),
    };
    if status == 429 {
        return Err(limited);
    }
    if let Some(body) = body {
        let code = body
            .get("code")
            .or_else(|| body.get("error").and_then(|e| e.get("code")))
            .and_then(Value::as_str);
        if code.is_some_and(is_throttle_code) {
            return Err(limited);
        }
        // A number in most samples, a string ("200") in others
        // (https://www.zoho.com/mail/help/api/get-user-account-details.html).
        if let Some(inner) = body
            .get("status")
            .and_then(|s| s.get("code"))
            .and_then(|c| integer(Some(c)))
        {
            if inner == 429 {
                return Err(limited);
            }
            if !(200..300).contains(&inner) {
                let description = body
                    .get("status")
                    .and_then(|s| s.get("description"))
                    .and_then(Value::as_str)
                    .unwrap_or("an error");
                let code = u16::try_from(inner).unwrap_or(400);
                return check_status(code, what).map_err(|err| match err {
                    ProviderCallError::Rejected(_) => ProviderCallError::Rejected(format!(
                        "{what} answered {inner}: {description}"
                    )),
                    other => other,
                });
            }
        }
        if (200..300).contains(&status) {
            if let Some(code) = code {
                return Err(ProviderCallError::Rejected(format!(
                    "{what} answered the error {code}"
                )));
            }
        }
    }
    check_status(status, what)
}

/// Whether an error code is one of Zoho's throttling codes.
fn is_throttle_code(code: &str) -> bool {
    let code = code.to_ascii_lowercase();
    code == "request_limit_exceeded" || code.contains("throttl") || code == "too_many_requests"
}

/// GETs a Zoho product API with the `Zoho-oauthtoken` scheme and returns its JSON body, a Zoho
/// error body (whatever its status) being a failure.
pub(super) async fn get_json(
    ctx: ProviderContext<'_>,
    url: Url,
    token: &Secret,
    what: &str,
    throttle: Throttle,
) -> Result<Value, ProviderCallError> {
    let response = ctx
        .http
        .get(url)
        .header(AUTHORIZATION, format!("Zoho-oauthtoken {}", token.expose()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = retry_after_header(response.headers());
    let body = read_body(response, MAX_BODY_BYTES).await?;
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    classify(status, retry_after, parsed.as_ref(), throttle, what)?;
    parsed.ok_or_else(|| ProviderCallError::Rejected(format!("{what} answered an unexpected body")))
}

/// A JSON id that Zoho sends as a string or a number.
pub(super) fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-negative integer that Zoho sends as a number or a numeric string.
pub(super) fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .filter(|n| *n >= 0)
}

/// Epoch milliseconds that Zoho sends as a number or a numeric string.
pub(super) fn millis(value: Option<&Value>) -> Option<i64> {
    integer(value)
}

/// Revokes the refresh token at the connection's accounts server, which also revokes the
/// access tokens minted from it: `POST {accounts}/oauth/v2/token/revoke?token=...`
/// (https://www.zoho.com/crm/developer/docs/api/revoke-tokens.html).
pub(super) async fn revoke(
    ctx: ProviderContext<'_>,
    connection: &Connection,
    tokens: &ConnectionTokens,
) -> Result<(), ProviderCallError> {
    let accounts = connection_accounts(ctx.settings, &connection.metadata);
    let Some(mut url) = endpoints_at(&accounts).revoke_url else {
        return Ok(());
    };
    let token = tokens
        .refresh_token
        .as_ref()
        .unwrap_or(&tokens.access_token);
    url.query_pairs_mut().append_pair("token", token.expose());
    let response = ctx.http.post(url).send().await.map_err(transport)?;
    check_status(response.status().as_u16(), "Zoho token revocation")
}

#[cfg(test)]
mod tests;
