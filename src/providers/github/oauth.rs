//! GitHub OAuth App endpoints and account lookup.
//!
//! - Authorize and token: <https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps>.
//!   The token endpoint answers form-encoded unless asked for JSON, and reports errors such as
//!   `bad_verification_code` with status 200; the shared token reader handles both.
//! - The account: `GET /user` (<https://docs.github.com/en/rest/users/users#get-the-authenticated-user>).
//! - Revocation: `DELETE /applications/{client_id}/grant` with the client's Basic credentials
//!   (<https://docs.github.com/en/rest/apps/oauth-applications#delete-an-app-authorization>).

use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use url::Url;

use crate::connector::{check_status, rate_limited, transport};
use crate::connector::{join_path, ProviderSettings};
use crate::connector::{read_body, MAX_BODY_BYTES};
use crate::connector::{
    ClientAuth, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext,
};
use crate::crypto::Secret;

const AUTH_BASE: &str = "https://github.com";
const API_BASE: &str = "https://api.github.com";
/// The REST API version asked for (<https://docs.github.com/en/rest/about-the-rest-api/api-versions>).
pub(super) const API_VERSION: &str = "2022-11-28";

/// The API base URL (`POBLYSH_GITHUB_API_BASE_URL`).
pub(super) fn api_base(settings: &ProviderSettings) -> Url {
    settings.api_base(API_BASE)
}

pub(super) fn endpoints(settings: &ProviderSettings) -> OAuthEndpoints {
    let auth = settings.auth_base(AUTH_BASE);
    OAuthEndpoints {
        authorize_url: join_path(&auth, "/login/oauth/authorize"),
        token_url: join_path(&auth, "/login/oauth/access_token"),
        revoke_url: None,
        pkce: true,
        // GitHub skips its page for an app the user already authorized; `prompt=select_account`
        // always shows the account picker, so no connect completes unseen
        // (https://github.blog/changelog/2024-06-07-account-picker-updates-for-oauth-and-github-app-sign-in/).
        extra_authorize_params: vec![("prompt", "select_account")],
        scope_separator: " ",
        scope_param: "scope",
        client_auth: ClientAuth::RequestBody,
    }
}

#[derive(Deserialize)]
struct User {
    id: u64,
    login: String,
}

pub(super) async fn identify(
    ctx: ProviderContext<'_>,
    token: &Secret,
) -> Result<ExternalAccount, ProviderCallError> {
    let response = ctx
        .http
        .get(join_path(&api_base(ctx.settings), "/user"))
        .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
        .header(ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION)
        .send()
        .await
        .map_err(transport)?;
    if response.status().as_u16() == 429 {
        return Err(rate_limited(&response));
    }
    check_status(response.status().as_u16(), "GitHub /user")?;
    let body = read_body(response, MAX_BODY_BYTES).await?;
    let user: User = serde_json::from_slice(&body).map_err(|_| {
        ProviderCallError::Rejected("GitHub /user answered an unexpected body".into())
    })?;
    Ok(ExternalAccount::new(user.id.to_string(), Some(user.login)))
}

pub(super) async fn revoke_grant(
    ctx: ProviderContext<'_>,
    token: &Secret,
) -> Result<(), ProviderCallError> {
    let (Some(client_id), Some(secret)) = (&ctx.settings.client_id, &ctx.settings.client_secret)
    else {
        return Err(ProviderCallError::Rejected(
            "client credentials are not configured".into(),
        ));
    };
    let response = ctx
        .http
        .delete(join_path(
            &api_base(ctx.settings),
            &format!("/applications/{client_id}/grant"),
        ))
        .basic_auth(client_id, Some(secret.expose()))
        .header(ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION)
        .json(&serde_json::json!({ "access_token": token.expose() }))
        .send()
        .await
        .map_err(transport)?;
    check_status(response.status().as_u16(), "GitHub grant revocation")
}
