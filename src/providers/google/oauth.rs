//! Google OAuth 2.0 for web server applications, shared by Google Drive, Google Calendar and
//! Gmail (<https://developers.google.com/identity/protocols/oauth2/web-server>).
//!
//! - Authorize at `https://accounts.google.com/o/oauth2/v2/auth` with `access_type=offline`,
//!   `prompt=consent` and `include_granted_scopes=true`; PKCE S256.
//! - Token at `https://oauth2.googleapis.com/token`, revocation at
//!   `https://oauth2.googleapis.com/revoke`.
//! - The account: OpenID Connect userinfo, `https://openidconnect.googleapis.com/v1/userinfo`
//!   (`sub`, `email`; https://developers.google.com/identity/openid-connect/openid-connect#obtaininguserprofileinformation).
//!
//! Base URLs: Google spreads these over two hosts (`accounts.google.com` and
//! `oauth2.googleapis.com`). One override, `POBLYSH_<SLUG>_AUTH_BASE_URL`, moves both together:
//! when set, the authorize, token and revoke paths (`/o/oauth2/v2/auth`, `/token`, `/revoke`,
//! all distinct) are joined onto it, so a single stand-in server can play Google. Userinfo
//! follows `POBLYSH_<SLUG>_API_BASE_URL` (default `https://openidconnect.googleapis.com`).

use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use url::Url;

use crate::connector::{check_status, rate_limited, transport};
use crate::connector::{join_path, Metadata, ProviderSettings};
use crate::connector::{read_body, MAX_BODY_BYTES};
use crate::connector::{
    ClientAuth, ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError,
    ProviderContext,
};
use crate::crypto::Secret;

const AUTHORIZE_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
const TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
const REVOKE_URL: &str = "https://oauth2.googleapis.com/revoke";
const API_BASE: &str = "https://openidconnect.googleapis.com";

fn url(text: &str) -> Url {
    Url::parse(text).expect("default URL is valid")
}

/// Google's endpoints under `settings` (see the module docs for the base URL override).
pub(in crate::providers) fn endpoints(settings: &ProviderSettings) -> OAuthEndpoints {
    let (authorize_url, token_url, revoke_url) = match &settings.auth_base_url {
        Some(base) => (
            join_path(base, "/o/oauth2/v2/auth"),
            join_path(base, "/token"),
            join_path(base, "/revoke"),
        ),
        None => (url(AUTHORIZE_URL), url(TOKEN_URL), url(REVOKE_URL)),
    };
    OAuthEndpoints {
        authorize_url,
        token_url,
        revoke_url: Some(revoke_url),
        // Google supports PKCE with S256 for web server apps too
        // (https://developers.google.com/identity/protocols/oauth2/web-server#creatingclient, `code_challenge`).
        pkce: true,
        // `access_type=offline` is what yields a refresh token; Google issues it only on the
        // first consent unless `prompt=consent` asks again; `include_granted_scopes=true`
        // enables incremental authorization
        // (https://developers.google.com/identity/protocols/oauth2/web-server#creatingclient).
        extra_authorize_params: vec![
            ("access_type", "offline"),
            ("prompt", "consent"),
            ("include_granted_scopes", "true"),
        ],
        scope_separator: " ",
        scope_param: "scope",
        // The docs' exchange sends `client_id` and `client_secret` in the form body
        // (https://developers.google.com/identity/protocols/oauth2/web-server#exchange-authorization-code).
        client_auth: ClientAuth::RequestBody,
    }
}

/// The userinfo claims we use.
#[derive(Deserialize)]
struct UserInfo {
    sub: String,
    email: Option<String>,
    name: Option<String>,
}

/// The Google account: `sub` is its stable id; `email` names it (the default scopes ask for
/// `openid email`), falling back to `name`.
pub(in crate::providers) async fn identify(
    ctx: ProviderContext<'_>,
    token: &Secret,
) -> Result<ExternalAccount, ProviderCallError> {
    let api = ctx
        .settings
        .api_base_url
        .clone()
        .unwrap_or_else(|| url(API_BASE));
    let response = ctx
        .http
        .get(join_path(&api, "/v1/userinfo"))
        .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    if response.status().as_u16() == 429 {
        return Err(rate_limited(&response));
    }
    check_status(response.status().as_u16(), "Google userinfo")?;
    let body = read_body(response, MAX_BODY_BYTES).await?;
    let info: UserInfo = serde_json::from_slice(&body).map_err(|_| {
        ProviderCallError::Rejected("Google userinfo answered an unexpected body".into())
    })?;
    let mut metadata = Metadata::new();
    if let Some(email) = &info.email {
        metadata.insert("email".into(), email.clone().into());
    }
    Ok(ExternalAccount::new(info.sub, info.email.or(info.name)).with_metadata(metadata))
}

/// Revokes the grant: a form POST of `token=` with no client authentication
/// (https://developers.google.com/identity/protocols/oauth2/web-server#tokenrevoke). Revoking
/// the refresh token ends the whole grant, its access tokens included.
pub(in crate::providers) async fn revoke(
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
    let response = ctx
        .http
        .post(url.clone())
        .form(&[("token", token.expose())])
        .send()
        .await
        .map_err(transport)?;
    check_status(response.status().as_u16(), "Google revocation endpoint")
}
