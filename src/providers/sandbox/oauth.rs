//! The sandbox's stand-in for a provider's OAuth: an authorize page that approves at once and
//! redirects back with a code, and tokens minted in-process. The code carries the PKCE
//! challenge, so the exchange checks the verifier exactly as a real provider would.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Duration;
use url::Url;

use crate::connector::pkce::challenge;
use crate::connector::{
    callback_url, ClientAuth, ExternalAccount, Metadata, OAuthEndpoints, PageRequest, PageResponse,
    ProviderCallError, ProviderPage, TokenSet,
};
use crate::crypto::{random_token, Secret};
use crate::domain::now;

const AUTHORIZE_PATH: &str = "/sandbox/authorize";
const CODE_PREFIX: &str = "sandbox-code.";
const REFRESH_PREFIX: &str = "sandbox-refresh.";
const SLUG: &str = "sandbox";

pub(super) fn endpoints(public_base_url: &Url) -> OAuthEndpoints {
    let authorize_url = crate::connector::join_path(public_base_url, AUTHORIZE_PATH);
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

/// The sandbox's authorize page.
pub(super) static PAGES: &[ProviderPage] = &[ProviderPage {
    path: AUTHORIZE_PATH,
    handle: authorize,
}];

/// Approves at once. Redirects only to this service's own callback or an allow-listed
/// redirect URI, so the page cannot be used as an open redirect.
fn authorize(request: &PageRequest<'_>) -> PageResponse {
    let invalid = |field, problem: &str| PageResponse::Invalid {
        field,
        problem: problem.to_string(),
    };
    let Some(raw) = request.param("redirect_uri") else {
        return invalid("redirect_uri", "is required");
    };
    let Some(state) = request.param("state") else {
        return invalid("state", "is required");
    };
    let Ok(mut target) = Url::parse(raw) else {
        return invalid("redirect_uri", "must be an absolute URL");
    };
    let ours = callback_url(request.public_base_url, SLUG);
    if target != ours && !request.allowed_redirect_uris.contains(&target) {
        return invalid("redirect_uri", "is not registered for the sandbox");
    }
    let code = format!(
        "{CODE_PREFIX}{}.{}",
        random_token().expose(),
        request.param("code_challenge").unwrap_or_default()
    );
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", state);
    PageResponse::Redirect(target)
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
    let mut metadata = Metadata::new();
    metadata.insert("workspace".into(), "Sandbox Workspace".into());
    ExternalAccount::new("sandbox-user", Some("Sandbox User".into())).with_metadata(metadata)
}
