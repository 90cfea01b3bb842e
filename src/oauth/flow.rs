//! The connect journey: `start` mints a single-use state (and PKCE verifier) and builds the
//! provider's authorize URL; `complete` consumes the state once, exchanges the code, asks the
//! provider who the account is, seals the tokens and upserts the connection.

use chrono::Duration;
use serde_json::json;
use url::Url;

use super::pkce;
use super::{ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet};
use crate::crypto::{Aad, Secret};
use crate::domain::{
    now, Connection, ConnectionId, ConnectionUpsert, NewOAuthState, SealedField, SealedTokens,
    StateConsumption, TenantId, Timestamp,
};
use crate::http::{ApiError, AppState, ErrorCode};
use crate::providers::RegistryEntry;

/// What Core may ask for when starting a connection.
#[derive(Debug, Default)]
pub struct ConnectParams {
    pub return_to: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub redirect_uri: Option<String>,
}

/// Where to send the user, and until when the state is valid.
#[derive(Debug)]
pub struct Started {
    pub authorize_url: Url,
    pub state_expires_at: Timestamp,
}

/// The query of the provider's redirect.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// How a callback ended, and where the user goes next when Core gave a `return_to`.
pub struct Completed {
    pub result: Result<Connection, ApiError>,
    pub return_to: Option<Url>,
}

/// The enabled provider `slug`, configured for OAuth, with its endpoints.
fn oauth_provider<'a>(
    state: &'a AppState,
    slug: &str,
) -> Result<(&'a RegistryEntry, OAuthEndpoints), ApiError> {
    let entry = state
        .registry
        .get(slug)
        .ok_or_else(|| ApiError::unknown_provider(slug))?;
    let not_configured = || {
        ApiError::new(
            ErrorCode::ProviderNotConfigured,
            format!("the {slug} provider has no client credentials configured"),
        )
    };
    let settings = state.config.provider(slug).ok_or_else(not_configured)?;
    if !entry.configured {
        return Err(not_configured());
    }
    let endpoints = entry
        .connector
        .oauth(settings, &state.config.public_base_url)
        .ok_or_else(not_configured)?;
    Ok((entry, endpoints))
}

/// Starts connecting `tenant` to `slug`.
pub async fn start(
    state: &AppState,
    tenant: TenantId,
    slug: &str,
    params: ConnectParams,
) -> Result<Started, ApiError> {
    let (entry, endpoints) = oauth_provider(state, slug)?;
    let config = &state.config;
    let mut problems = serde_json::Map::new();
    let return_to = params.return_to.as_deref().and_then(|raw| {
        match allowed_return_to(raw, &config.allowed_return_urls) {
            Ok(url) => Some(url),
            Err(problem) => {
                problems.insert("return_to".into(), json!(problem));
                None
            }
        }
    });
    let redirect_uri = match params.redirect_uri.as_deref() {
        None => Some(default_redirect_uri(&config.public_base_url, slug)),
        Some(raw) => match Url::parse(raw) {
            Ok(url) if config.allowed_redirect_uris.contains(&url) => Some(url),
            _ => {
                problems.insert(
                    "redirect_uri".into(),
                    json!("must be one of POBLYSH_ALLOWED_REDIRECT_URIS"),
                );
                None
            }
        },
    };
    let scopes = params.scopes.unwrap_or_else(|| entry.scopes.clone());
    if scopes.len() > 50
        || scopes
            .iter()
            .any(|s| s.is_empty() || s.len() > 200 || s.contains(char::is_whitespace))
    {
        problems.insert(
            "scopes".into(),
            json!("must be at most 50 non-empty scopes without spaces"),
        );
    }
    let (Some(redirect_uri), true) = (redirect_uri, problems.is_empty()) else {
        return Err(ApiError::validation(problems));
    };

    let state_token = pkce::new_state();
    let state_hash = pkce::state_hash(state_token.expose());
    let verifier = endpoints.pkce.then(pkce::new_verifier);
    let aad = Aad::new(
        tenant,
        slug,
        &hex(&state_hash),
        SealedField::PkceVerifier.aad_name(),
    );
    let created_at = now();
    let expires_at =
        created_at + Duration::from_std(config.oauth_state_ttl).unwrap_or(Duration::minutes(10));
    state
        .store
        .insert_oauth_state(&NewOAuthState {
            state_hash,
            tenant_id: tenant,
            provider: slug.to_string(),
            pkce_verifier_sealed: verifier.as_ref().map(|v| state.vault.seal_str(v, &aad)),
            scopes: scopes.clone(),
            redirect_uri: redirect_uri.to_string(),
            return_to: return_to.map(|u| u.to_string()),
            created_at,
            expires_at,
        })
        .await?;

    let mut url = endpoints.authorize_url.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair(
                "client_id",
                state
                    .config
                    .provider(slug)
                    .and_then(|p| p.client_id.as_deref())
                    .unwrap_or(slug),
            )
            .append_pair("redirect_uri", redirect_uri.as_str())
            .append_pair(
                endpoints.scope_param,
                &scopes.join(endpoints.scope_separator),
            )
            .append_pair("state", state_token.expose());
        if let Some(verifier) = &verifier {
            query
                .append_pair("code_challenge", &pkce::challenge(verifier))
                .append_pair("code_challenge_method", "S256");
        }
        for (name, value) in &endpoints.extra_authorize_params {
            query.append_pair(name, value);
        }
    }
    Ok(Started {
        authorize_url: url,
        state_expires_at: expires_at,
    })
}

/// Our callback URL for a provider.
pub fn default_redirect_uri(public_base_url: &Url, slug: &str) -> Url {
    crate::config::join_path(public_base_url, &format!("/connect/{slug}/callback"))
}

/// `raw` if it is an absolute URL under one of the allowed prefixes (same origin, path prefix).
fn allowed_return_to(raw: &str, allowed: &[Url]) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|_| "must be an absolute URL".to_string())?;
    let ok = allowed.iter().any(|prefix| {
        url.origin() == prefix.origin()
            && url.path().starts_with(prefix.path())
            && url.username().is_empty()
    });
    if ok {
        Ok(url)
    } else {
        Err("must start with one of POBLYSH_ALLOWED_RETURN_URLS".into())
    }
}

fn state_invalid(reason: &str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::OauthStateInvalid, message).with_details(json!({ "reason": reason }))
}

fn provider_error(slug: &str, err: &ProviderCallError) -> ApiError {
    tracing::warn!(provider = slug, error = %err, "provider call failed during connect");
    ApiError::new(
        ErrorCode::ProviderError,
        format!("the {slug} provider did not complete the connection"),
    )
    .with_details(json!({ "provider": slug, "provider_error": err.to_string() }))
}

/// Completes a callback for `slug`. The state is consumed whatever happens next.
pub async fn complete(state: &AppState, slug: &str, params: CallbackParams) -> Completed {
    let Some(raw_state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return failed(ApiError::invalid_field("state", "is required"), None);
    };
    if state.registry.get(slug).is_none() {
        return failed(ApiError::unknown_provider(slug), None);
    }
    let consumed = match state
        .store
        .consume_oauth_state(&pkce::state_hash(raw_state), now())
        .await
    {
        Ok(consumed) => consumed,
        Err(err) => return failed(err.into(), None),
    };
    let saved = match consumed {
        StateConsumption::Consumed(saved) => saved,
        StateConsumption::Unknown => {
            return failed(state_invalid("unknown", "the state is unknown"), None)
        }
        StateConsumption::Expired { return_to } => {
            return failed(
                state_invalid("expired", "the state has expired; start again"),
                parse_url(return_to),
            )
        }
        StateConsumption::AlreadyUsed { return_to } => {
            return failed(
                state_invalid("already_used", "the state was already used"),
                parse_url(return_to),
            )
        }
    };
    let return_to = parse_url(saved.return_to.clone());
    if saved.provider != slug {
        return failed(
            state_invalid(
                "provider_mismatch",
                "the state was issued for another provider",
            ),
            return_to,
        );
    }
    if let Some(error) = params.error {
        let err = ApiError::new(ErrorCode::OauthDenied, "the user or the provider declined the authorization")
            .with_details(json!({ "provider_error": error, "provider_error_description": params.error_description }));
        return failed(err, return_to);
    }
    let Some(code) = params.code.filter(|c| !c.is_empty()) else {
        return failed(ApiError::invalid_field("code", "is required"), return_to);
    };
    let result = connect(state, slug, &saved, &code).await;
    Completed { result, return_to }
}

async fn connect(
    state: &AppState,
    slug: &str,
    saved: &crate::domain::OAuthState,
    code: &str,
) -> Result<Connection, ApiError> {
    let (entry, endpoints) = oauth_provider(state, slug)?;
    let settings = state
        .config
        .provider(slug)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("settings of {slug}")))?;
    let ctx = ProviderContext {
        http: &state.http,
        settings,
    };
    let verifier = match &saved.pkce_verifier_sealed {
        Some(sealed) => {
            let aad = Aad::new(
                saved.tenant_id,
                slug,
                &hex(&saved.state_hash),
                SealedField::PkceVerifier.aad_name(),
            );
            Some(
                state
                    .vault
                    .open_str(sealed, &aad)
                    .map_err(ApiError::internal)?,
            )
        }
        None => None,
    };
    let tokens = entry
        .connector
        .exchange_code(
            ctx,
            &endpoints,
            code,
            &saved.redirect_uri,
            verifier.as_ref(),
        )
        .await
        .map_err(|e| provider_error(slug, &e))?;
    let account = entry
        .connector
        .identify(ctx, &tokens)
        .await
        .map_err(|e| provider_error(slug, &e))?;
    let scopes = tokens
        .scopes
        .clone()
        .unwrap_or_else(|| saved.scopes.clone());
    store_connection(state, saved.tenant_id, slug, &account, &tokens, scopes).await
}

/// Seals the tokens for the row they will live in and upserts it; retried when a concurrent
/// first connect of the same account created the row under another id.
async fn store_connection(
    state: &AppState,
    tenant: TenantId,
    slug: &str,
    account: &ExternalAccount,
    tokens: &TokenSet,
    scopes: Vec<String>,
) -> Result<Connection, ApiError> {
    for _ in 0..3 {
        let id = state
            .store
            .find_connection_id(tenant, slug, &account.id)
            .await?
            .unwrap_or_else(ConnectionId::generate);
        let sealed = seal_tokens(
            state,
            tenant,
            slug,
            id,
            &tokens.access_token,
            tokens.refresh_token.as_ref(),
            tokens.expires_at,
        );
        let upsert = ConnectionUpsert {
            id,
            tenant_id: tenant,
            provider: slug.to_string(),
            external_account_id: account.id.clone(),
            external_account_name: account.display_name.clone(),
            scopes: scopes.clone(),
            tokens: sealed,
            now: now(),
        };
        if let Some(connection) = state.store.upsert_connection(&upsert).await? {
            tracing::info!(provider = slug, connection_id = %connection.id, "connection stored");
            return Ok(connection);
        }
    }
    Err(ApiError::internal(anyhow::anyhow!(
        "connection upsert kept conflicting"
    )))
}

/// Seals a token pair for connection `id`.
pub fn seal_tokens(
    state: &AppState,
    tenant: TenantId,
    slug: &str,
    id: ConnectionId,
    access: &Secret,
    refresh: Option<&Secret>,
    expires_at: Option<Timestamp>,
) -> SealedTokens {
    let row = id.to_string();
    let aad = |field: SealedField| Aad::new(tenant, slug, &row, field.aad_name());
    SealedTokens {
        access_token: Some(state.vault.seal_str(access, &aad(SealedField::AccessToken))),
        refresh_token: refresh.map(|r| state.vault.seal_str(r, &aad(SealedField::RefreshToken))),
        expires_at,
    }
}

fn failed(error: ApiError, return_to: Option<Url>) -> Completed {
    Completed {
        result: Err(error),
        return_to,
    }
}

fn parse_url(raw: Option<String>) -> Option<Url> {
    raw.and_then(|r| Url::parse(&r).ok())
}

/// Lower-case hex, for binding a state hash into an AAD.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_must_share_origin_and_path_prefix() {
        let allowed = [Url::parse("https://app.poblysh.com/connectors").expect("url")];
        assert!(allowed_return_to("https://app.poblysh.com/connectors/done?x=1", &allowed).is_ok());
        for bad in [
            "https://app.poblysh.com/elsewhere",
            "https://app.poblysh.com.evil.com/connectors",
            "http://app.poblysh.com/connectors",
            "https://user@app.poblysh.com/connectors",
            "/connectors",
        ] {
            assert!(allowed_return_to(bad, &allowed).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_redirect_uri_keeps_a_base_path() {
        let base = Url::parse("https://api.example.com/connectors/").expect("url");
        assert_eq!(
            default_redirect_uri(&base, "github").as_str(),
            "https://api.example.com/connectors/connect/github/callback"
        );
    }
}
