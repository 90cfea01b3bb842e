//! GitHub OAuth App endpoints and account lookup.
//!
//! - Authorize and token: <https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps>.
//!   The token endpoint answers form-encoded unless asked for JSON, and reports errors such as
//!   `bad_verification_code` with status 200; the shared token reader handles both.
//! - The account: `GET /user` (<https://docs.github.com/en/rest/users/users#get-the-authenticated-user>),
//!   and its organizations, `GET /user/orgs`
//!   (<https://docs.github.com/en/rest/orgs/orgs#list-organizations-for-the-authenticated-user>),
//!   kept as owners the connection is known to see (`webhook::KNOWN_OWNERS`), so that an
//!   organization's deliveries reach it before its first sync.
//! - Revocation: `DELETE /applications/{client_id}/grant` with the client's Basic credentials
//!   (<https://docs.github.com/en/rest/apps/oauth-applications#delete-an-app-authorization>).

use reqwest::header::{ACCEPT, AUTHORIZATION};
use serde::Deserialize;
use url::Url;

use super::webhook::known_owners_patch;
use crate::connector::{check_status, rate_limited, transport};
use crate::connector::{join_path, ProviderSettings};
use crate::connector::{read_body, Metadata, MAX_BODY_BYTES};
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
    let account = ExternalAccount::new(user.id.to_string(), Some(user.login));
    let orgs = organizations(ctx, token).await;
    Ok(match known_owners_patch(&Metadata::new(), orgs) {
        Some(metadata) => account.with_metadata(metadata),
        None => account,
    })
}

#[derive(Deserialize)]
struct Organization {
    id: u64,
}

/// The ids of the first 100 organizations the account belongs to; none when GitHub does not
/// answer them (an optional refinement of routing, never a reason to refuse a connect).
async fn organizations(ctx: ProviderContext<'_>, token: &Secret) -> Vec<u64> {
    let mut url = join_path(&api_base(ctx.settings), "/user/orgs");
    url.query_pairs_mut().append_pair("per_page", "100");
    let sent = ctx
        .http
        .get(url)
        .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
        .header(ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION)
        .send()
        .await;
    let Ok(response) = sent.inspect_err(|e| tracing::debug!(error = %e, "GitHub /user/orgs"))
    else {
        return Vec::new();
    };
    if response.status().as_u16() != 200 {
        tracing::debug!(status = response.status().as_u16(), "GitHub /user/orgs");
        return Vec::new();
    }
    let Ok(body) = read_body(response, MAX_BODY_BYTES).await else {
        return Vec::new();
    };
    serde_json::from_slice::<Vec<Organization>>(&body)
        .map(|orgs| orgs.into_iter().map(|o| o.id).collect())
        .unwrap_or_default()
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
