//! The sandbox's stand-in for a provider's OAuth: an authorize page that approves at once and
//! redirects back with a code, and tokens minted in-process. The code carries the PKCE
//! challenge, so the exchange checks the verifier exactly as a real provider would.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Duration;
use serde::Deserialize;
use url::Url;

use crate::crypto::{random_token, Secret};
use crate::domain::now;
use crate::http::{ApiError, AppState, ErrorCode};
use crate::oauth::flow::default_redirect_uri;
use crate::oauth::pkce::challenge;
use crate::oauth::{ClientAuth, ExternalAccount, OAuthEndpoints, ProviderCallError, TokenSet};

const AUTHORIZE_PATH: &str = "/sandbox/authorize";
const CODE_PREFIX: &str = "sandbox-code.";
const REFRESH_PREFIX: &str = "sandbox-refresh.";
const SLUG: &str = "sandbox";

pub(super) fn endpoints(public_base_url: &Url) -> OAuthEndpoints {
    let authorize_url = crate::config::join_path(public_base_url, AUTHORIZE_PATH);
    OAuthEndpoints {
        token_url: authorize_url.clone(),
        authorize_url,
        revoke_url: None,
        pkce: true,
        extra_authorize_params: Vec::new(),
        scope_separator: " ",
        scope_param: "scope",
        client_auth: ClientAuth::RequestBody,
    }
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    redirect_uri: String,
    state: String,
    code_challenge: Option<String>,
}

pub(super) fn routes() -> Router<AppState> {
    Router::new().route(AUTHORIZE_PATH, get(authorize))
}

/// Approves at once. Redirects only to this service's own callback or an allow-listed
/// redirect URI, so the page cannot be used as an open redirect.
async fn authorize(State(state): State<AppState>, Query(query): Query<AuthorizeQuery>) -> Response {
    let Ok(mut target) = Url::parse(&query.redirect_uri) else {
        return ApiError::invalid_field("redirect_uri", "must be an absolute URL").into_response();
    };
    let ours = default_redirect_uri(&state.config.public_base_url, SLUG);
    if target != ours && !state.config.allowed_redirect_uris.contains(&target) {
        return ApiError::new(
            ErrorCode::ValidationFailed,
            "redirect_uri is not registered for the sandbox",
        )
        .with_details(serde_json::json!({ "redirect_uri": "not registered" }))
        .into_response();
    }
    let code = format!(
        "{CODE_PREFIX}{}.{}",
        random_token().expose(),
        query.code_challenge.unwrap_or_default()
    );
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &query.state);
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, target.to_string())],
    )
        .into_response()
}

fn tokens() -> TokenSet {
    TokenSet {
        access_token: Secret::new(format!("sandbox-access.{}", random_token().expose())),
        refresh_token: Some(Secret::new(format!(
            "{REFRESH_PREFIX}{}",
            random_token().expose()
        ))),
        expires_at: Some(now() + Duration::hours(1)),
        scopes: Some(vec!["sandbox.read".into()]),
        extra: Default::default(),
    }
}

pub(super) fn exchange(
    code: &str,
    verifier: Option<&Secret>,
) -> Result<TokenSet, ProviderCallError> {
    let invalid = || ProviderCallError::InvalidGrant("invalid_grant: unknown code".into());
    let rest = code.strip_prefix(CODE_PREFIX).ok_or_else(invalid)?;
    let (_, expected_challenge) = rest.split_once('.').ok_or_else(invalid)?;
    let verified = match verifier {
        Some(v) => challenge(v) == expected_challenge,
        None => expected_challenge.is_empty(),
    };
    if !verified || URL_SAFE_NO_PAD.decode(expected_challenge).is_err() {
        return Err(ProviderCallError::InvalidGrant(
            "invalid_grant: PKCE verification failed".into(),
        ));
    }
    Ok(tokens())
}

pub(super) fn refresh(refresh_token: &Secret) -> Result<TokenSet, ProviderCallError> {
    if refresh_token.expose().starts_with(REFRESH_PREFIX) {
        Ok(tokens())
    } else {
        Err(ProviderCallError::InvalidGrant(
            "invalid_grant: unknown refresh token".into(),
        ))
    }
}

pub(super) fn account() -> ExternalAccount {
    ExternalAccount {
        id: "sandbox-user".into(),
        display_name: Some("Sandbox User".into()),
    }
}
