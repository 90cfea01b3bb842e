//! The connect journey: `start` mints a single-use state (and PKCE verifier) and builds the
//! provider's authorize URL; `complete` consumes the state once, exchanges the code, asks the
//! provider who the account is, seals the tokens and provider secrets, upserts the connection
//! and queues the opening of its provider-side subscriptions. Failures are [`FlowError`]s, turned
//! into HTTP answers once, at the edge.

use chrono::Duration;
use serde_json::{json, Map};
use url::Url;

use super::binding::{self, BindingCookie};
use super::error::FlowError;
use crate::config::allowed_return_to;
use crate::config::Profile;
use crate::connector::pkce;
use crate::connector::{callback_url, CodeExchange, ExternalAccount, OAuthEndpoints, TokenSet};
use crate::crypto::hex;
use crate::crypto::{Aad, Secret};
use crate::domain::{
    merge_metadata, now, Connection, ConnectionId, ConnectionUpsert, NewOAuthState, OAuthState,
    ProviderSlug, SealedField, StateConsumption, TenantId, Timestamp,
};
use crate::services::{RegistryEntry, Services};
use crate::tokens::{seal_secrets, seal_tokens};

/// At most this many scopes may be asked for.
const MAX_SCOPES: usize = 50;

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
    /// The service's authorize hop (service callback) or the provider's page (Core's
    /// callback).
    pub authorize_url: Url,
    pub state_expires_at: Timestamp,
    /// With Core's own `redirect_uri`: the value Core keeps in the user's session and forwards
    /// with `code` and `state`.
    pub binding: Option<String>,
}

/// The authorize hop's outcome: the provider's page, and the cookie that binds the connect to
/// this browser.
#[derive(Debug)]
pub struct Opened {
    pub authorize_url: Url,
    pub cookie: BindingCookie,
    pub max_age_secs: i64,
}

/// The query of the provider's redirect.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// Every other parameter, as sent (untrusted; connectors read what they document).
    pub extra: Vec<(String, String)>,
    /// The `binding` Core forwarded (Core's callback).
    pub binding: Option<String>,
    /// The request's `Cookie` header (the service's callback).
    pub cookies: Option<String>,
}

/// Where the browser goes once the service is done with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnTo {
    /// The `return_to` the connect named.
    Url(Url),
    /// The connect named none: the outcome is answered as JSON.
    Json,
    /// No connect could be identified (its state missing, unknown or unreadable), so its
    /// `return_to` cannot be known: the deployment's fallback, when it has one.
    Unidentified,
}

impl ReturnTo {
    fn saved(raw: Option<String>) -> Self {
        raw.and_then(|r| Url::parse(&r).ok())
            .map_or(ReturnTo::Json, ReturnTo::Url)
    }
}

/// How a callback ended, and where the user goes next.
pub struct Completed {
    pub result: Result<Connection, FlowError>,
    pub return_to: ReturnTo,
    /// A binding cookie the browser sent, to be removed now that the state is used.
    pub spent_cookie: Option<BindingCookie>,
}

/// A checked connect request.
struct Checked {
    return_to: Option<Url>,
    redirect_uri: Url,
    /// Whether `redirect_uri` is the service's own callback.
    own_callback: bool,
    scopes: Vec<String>,
}

/// The enabled provider `slug`, configured for OAuth, with its endpoints.
fn oauth_provider(
    services: &Services,
    slug: ProviderSlug,
) -> Result<(&RegistryEntry, OAuthEndpoints), FlowError> {
    let entry = services
        .registry
        .entry(slug)
        .ok_or_else(|| FlowError::UnknownProvider(slug.to_string()))?;
    let not_configured = || FlowError::NotConfigured(entry.descriptor().slug);
    if !entry.configured {
        return Err(not_configured());
    }
    let endpoints = entry
        .connector
        .oauth(&entry.settings, &services.config.public_base_url)
        .ok_or_else(not_configured)?;
    Ok((entry, endpoints))
}

/// Starts connecting `tenant` to `slug`.
pub async fn start(
    services: &Services,
    tenant: TenantId,
    slug: ProviderSlug,
    params: ConnectParams,
) -> Result<Started, FlowError> {
    let (entry, endpoints) = oauth_provider(services, slug)?;
    let slug = slug.as_str();
    let checked = check(services, entry, params)?;
    let state_token = pkce::new_state();
    let state_hash = pkce::state_hash(state_token.expose());
    let verifier = endpoints.pkce.then(pkce::new_verifier);
    let aad = verifier_aad(tenant, slug, &state_hash);
    let created_at = now();
    let ttl = Duration::from_std(services.config.oauth_state_ttl).unwrap_or(Duration::minutes(10));
    let expires_at = created_at + ttl;
    services
        .store
        .insert_oauth_state(&NewOAuthState {
            state_hash,
            tenant_id: tenant,
            provider: slug.to_string(),
            pkce_verifier_sealed: verifier.as_ref().map(|v| services.vault.seal_str(v, &aad)),
            scopes: checked.scopes.clone(),
            redirect_uri: checked.redirect_uri.to_string(),
            return_to: checked.return_to.as_ref().map(Url::to_string),
            created_at,
            expires_at,
        })
        .await?;
    if checked.own_callback {
        // The browser passes through the service first, which binds the connect to it.
        let mut hop = services.config.public_base_url.clone();
        hop.set_query(None);
        hop.set_fragment(None);
        let base = hop.path().trim_end_matches('/').to_string();
        hop.set_path(&format!("{base}/connect/{slug}/authorize"));
        hop.query_pairs_mut()
            .append_pair("state", state_token.expose());
        return Ok(Started {
            authorize_url: hop,
            state_expires_at: expires_at,
            binding: None,
        });
    }
    let client_id = entry.settings.client_id.as_deref().unwrap_or(slug);
    Ok(Started {
        authorize_url: authorize_url(
            &endpoints,
            client_id,
            checked.redirect_uri.as_str(),
            &checked.scopes,
            &state_token,
            verifier.as_ref(),
        ),
        state_expires_at: expires_at,
        binding: Some(binding::core_value(
            &services.config.crypto_key,
            &pkce::state_hash(state_token.expose()),
        )),
    })
}

/// The authorize hop of a service-callback connect: marks the state's single pass, and
/// answers the provider's page with the cookie that binds the connect to this browser.
pub async fn open(
    services: &Services,
    slug: &str,
    state: Option<&str>,
) -> Result<Opened, (FlowError, ReturnTo)> {
    let Some(raw_state) = state.filter(|s| !s.is_empty()) else {
        return Err((
            FlowError::invalid("state", "is required"),
            ReturnTo::Unidentified,
        ));
    };
    let Some(parsed) = services.registry.parse(slug) else {
        return Err((
            FlowError::UnknownProvider(slug.to_string()),
            ReturnTo::Unidentified,
        ));
    };
    let state_hash = pkce::state_hash(raw_state);
    let opened = services
        .store
        .open_oauth_state(&state_hash, now())
        .await
        .map_err(|e| (e.into(), ReturnTo::Unidentified))?;
    let saved = match opened {
        StateConsumption::Consumed(saved) => saved,
        other => return Err(state_refusal(other)),
    };
    let return_to = ReturnTo::saved(saved.return_to.clone());
    if saved.provider != slug {
        return Err((FlowError::state_invalid("provider_mismatch"), return_to));
    }
    if !own_callback(services, slug, &saved.redirect_uri) {
        // Core's callback binds through Core's session; its states never pass the hop.
        return Err((FlowError::state_invalid("unknown"), return_to));
    }
    let built = (|| {
        let (entry, endpoints) = oauth_provider(services, parsed)?;
        let verifier = open_verifier(services, &saved)?;
        let client_id = entry.settings.client_id.as_deref().unwrap_or(slug);
        Ok::<_, FlowError>(authorize_url(
            &endpoints,
            client_id,
            &saved.redirect_uri,
            &saved.scopes,
            &Secret::new(raw_state),
            verifier.as_ref(),
        ))
    })();
    let authorize_url = built.map_err(|e| (e, return_to))?;
    Ok(Opened {
        authorize_url,
        cookie: binding::cookie(
            &services.config.crypto_key,
            &state_hash,
            services.config.public_base_url.scheme() == "https",
        ),
        max_age_secs: (saved.expires_at - now()).num_seconds(),
    })
}

/// Whether `redirect_uri` is the service's own callback for `slug`.
fn own_callback(services: &Services, slug: &str, redirect_uri: &str) -> bool {
    callback_url(&services.config.public_base_url, slug).as_str() == redirect_uri
}

/// Checks what Core asked for against the allow-lists; every problem is named at once.
fn check(
    services: &Services,
    entry: &RegistryEntry,
    params: ConnectParams,
) -> Result<Checked, FlowError> {
    let config = &services.config;
    let mut problems = Map::new();
    // A control character (NUL above all, which PostgreSQL refuses in text) is never part of
    // a URL or a scope Core means; it is refused by name before anything is stored.
    const CONTROL: &str = "must not contain control characters";
    let has_control = |s: &str| s.contains(char::is_control);
    let return_to = params.return_to.as_deref().and_then(|raw| {
        if has_control(raw) {
            problems.insert("return_to".into(), json!(CONTROL));
            return None;
        }
        allowed_return_to(raw, &config.allowed_return_urls)
            .map_err(|problem| problems.insert("return_to".into(), json!(problem)))
            .ok()
    });
    let own_callback = params.redirect_uri.is_none();
    let redirect_uri = match params.redirect_uri.as_deref() {
        None => Some(callback_url(
            &config.public_base_url,
            entry.descriptor().slug,
        )),
        Some(raw) if has_control(raw) => {
            problems.insert("redirect_uri".into(), json!(CONTROL));
            None
        }
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
    let bad_scope = |s: &String| s.is_empty() || s.len() > 200 || s.contains(char::is_whitespace);
    if scopes.iter().any(|s| has_control(s)) {
        problems.insert("scopes".into(), json!(CONTROL));
    } else if scopes.len() > MAX_SCOPES || scopes.iter().any(bad_scope) {
        problems.insert(
            "scopes".into(),
            json!("must be at most 50 non-empty scopes without spaces"),
        );
    }
    match redirect_uri {
        Some(redirect_uri) if problems.is_empty() => Ok(Checked {
            return_to,
            redirect_uri,
            own_callback,
            scopes,
        }),
        _ => Err(FlowError::Invalid(problems)),
    }
}

/// The provider's authorize URL for a minted state.
fn authorize_url(
    endpoints: &OAuthEndpoints,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    state: &Secret,
    verifier: Option<&Secret>,
) -> Url {
    let mut url = endpoints.authorize_url.clone();
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair(
                endpoints.scope_param,
                &scopes.join(endpoints.scope_separator),
            )
            .append_pair("state", state.expose());
        if let Some(verifier) = verifier {
            query
                .append_pair("code_challenge", &pkce::challenge(verifier))
                .append_pair("code_challenge_method", "S256");
        }
        for (name, value) in &endpoints.extra_authorize_params {
            query.append_pair(name, value);
        }
    }
    url
}

/// Completes a callback for `slug`. The state is consumed whatever happens next.
pub async fn complete(services: &Services, slug: &str, params: CallbackParams) -> Completed {
    let saved = match consume(services, slug, &params).await {
        Ok(saved) => saved,
        Err((error, return_to)) => {
            return Completed {
                result: Err(error),
                return_to,
                spent_cookie: None,
            }
        }
    };
    let return_to = ReturnTo::saved(saved.return_to.clone());
    let (bound, spent_cookie) = check_binding(services, slug, &saved, &params);
    let result = match (params.error, params.code.filter(|c| !c.is_empty())) {
        _ if !bound => Err(FlowError::state_invalid("browser_mismatch")),
        (Some(error), _) => Err(FlowError::Denied {
            error,
            description: params.error_description,
        }),
        (None, None) => Err(FlowError::invalid("code", "is required")),
        (None, Some(code)) => match services.registry.parse(slug) {
            Some(slug) => connect(services, slug, &saved, &code, &params.extra).await,
            None => Err(FlowError::UnknownProvider(slug.to_string())),
        },
    };
    Completed {
        result,
        return_to,
        spent_cookie,
    }
}

/// Whether the callback comes from the user agent that started the connect (its cookie, or
/// the binding Core forwarded), and the binding cookie it presented, if any. Outside the
/// `local` profile the proof is required; in `local` a callback without one is let through
/// (a wrong one never is).
fn check_binding(
    services: &Services,
    slug: &str,
    saved: &OAuthState,
    params: &CallbackParams,
) -> (bool, Option<BindingCookie>) {
    let key = &services.config.crypto_key;
    let required = services.config.profile != Profile::Local;
    let (presented, expected, cookie) = if own_callback(services, slug, &saved.redirect_uri) {
        let secure = services.config.public_base_url.scheme() == "https";
        let cookie = binding::cookie(key, &saved.state_hash, secure);
        let presented = params
            .cookies
            .as_deref()
            .and_then(|header| binding::read_cookie(header, &cookie.name))
            .map(str::to_string);
        let expected = cookie.value.clone();
        let spent = presented.is_some().then_some(cookie);
        (presented, expected, spent)
    } else {
        let expected = binding::core_value(key, &saved.state_hash);
        (params.binding.clone(), expected, None)
    };
    let bound = match presented {
        Some(value) => binding::matches(&value, &expected),
        None => !required,
    };
    (bound, cookie)
}

/// Consumes the callback's state: the saved connect, or why not (with where to send the user).
async fn consume(
    services: &Services,
    slug: &str,
    params: &CallbackParams,
) -> Result<OAuthState, (FlowError, ReturnTo)> {
    let Some(raw_state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
        return Err((
            FlowError::invalid("state", "is required"),
            ReturnTo::Unidentified,
        ));
    };
    if services.registry.parse(slug).is_none() {
        return Err((
            FlowError::UnknownProvider(slug.to_string()),
            ReturnTo::Unidentified,
        ));
    }
    let consumed = services
        .store
        .consume_oauth_state(&pkce::state_hash(raw_state), now())
        .await
        .map_err(|e| (e.into(), ReturnTo::Unidentified))?;
    let saved = match consumed {
        StateConsumption::Consumed(saved) => saved,
        other => return Err(state_refusal(other)),
    };
    if saved.provider != slug {
        let return_to = ReturnTo::saved(saved.return_to.clone());
        return Err((FlowError::state_invalid("provider_mismatch"), return_to));
    }
    Ok(saved)
}

/// Why a state could not be used, and where to send the user.
fn state_refusal(found: StateConsumption) -> (FlowError, ReturnTo) {
    let invalid = FlowError::state_invalid;
    match found {
        StateConsumption::Consumed(saved) => {
            (invalid("already_used"), ReturnTo::saved(saved.return_to))
        }
        StateConsumption::Unknown => (invalid("unknown"), ReturnTo::Unidentified),
        StateConsumption::Expired { return_to } => (invalid("expired"), ReturnTo::saved(return_to)),
        StateConsumption::AlreadyUsed { return_to } => {
            (invalid("already_used"), ReturnTo::saved(return_to))
        }
    }
}

async fn connect(
    services: &Services,
    slug: ProviderSlug,
    saved: &OAuthState,
    code: &str,
    extra: &[(String, String)],
) -> Result<Connection, FlowError> {
    let (entry, endpoints) = oauth_provider(services, slug)?;
    let slug = slug.as_str();
    let ctx = services.provider_context(entry);
    let verifier = open_verifier(services, saved)?;
    if let Err((field, problem)) = entry.connector.check_callback(&entry.settings, extra) {
        return Err(FlowError::invalid(&field, &problem));
    }
    let exchange = CodeExchange {
        code,
        redirect_uri: &saved.redirect_uri,
        verifier: verifier.as_ref(),
        params: extra,
    };
    let provider_error = |source| FlowError::Provider {
        provider: slug.to_string(),
        source,
    };
    let tokens = entry
        .connector
        .exchange_code(ctx, &endpoints, exchange)
        .await
        .map_err(provider_error)?;
    let account = entry
        .connector
        .identify(ctx, &tokens)
        .await
        .map_err(provider_error)?;
    if entry.connector.revokes_replaced_grant() {
        revoke_replaced_grant(services, saved.tenant_id, slug, &account, &tokens).await?;
    }
    let scopes = tokens
        .scopes
        .clone()
        .unwrap_or_else(|| saved.scopes.clone());
    let connection =
        store_connection(services, saved.tenant_id, slug, &account, &tokens, scopes).await?;
    crate::subscriptions::request_opening(services, &connection).await?;
    Ok(connection)
}

/// Revokes, best effort, the grant an existing connection of the same account holds when the
/// new grant brought another refresh token (see `Connector::revokes_replaced_grant`).
async fn revoke_replaced_grant(
    services: &Services,
    tenant: TenantId,
    slug: &str,
    account: &ExternalAccount,
    tokens: &TokenSet,
) -> Result<(), FlowError> {
    let Some(new_refresh) = tokens.refresh_token.as_ref() else {
        return Ok(());
    };
    let existing = match services
        .store
        .find_connection_id(tenant, slug, &account.id)
        .await?
    {
        Some(id) => services.store.get_connection(tenant, id).await?,
        None => None,
    };
    let Some(existing) = existing else {
        return Ok(());
    };
    let Ok(old) = crate::tokens::open_tokens(services, &existing).await else {
        return Ok(());
    };
    if old
        .refresh_token
        .as_ref()
        .is_some_and(|r| r.expose() != new_refresh.expose())
    {
        crate::tokens::revoke::revoke_at_provider(services, &existing).await;
    }
    Ok(())
}

/// Seals the tokens and provider secrets for the row they will live in and upserts it;
/// retried when a concurrent first connect of the same account created the row under another
/// id.
async fn store_connection(
    services: &Services,
    tenant: TenantId,
    slug: &str,
    account: &ExternalAccount,
    tokens: &TokenSet,
    scopes: Vec<String>,
) -> Result<Connection, FlowError> {
    for _ in 0..3 {
        let existing = match services
            .store
            .find_connection_id(tenant, slug, &account.id)
            .await?
        {
            Some(id) => services.store.get_connection(tenant, id).await?,
            None => None,
        };
        let id = existing
            .as_ref()
            .map_or_else(ConnectionId::generate, |c| c.id);
        // What sync and subscription steps recorded stays; what the provider says now wins.
        let mut metadata = existing.map(|c| c.metadata).unwrap_or_default();
        merge_metadata(&mut metadata, account.metadata.clone());
        let sealed = seal_tokens(
            services,
            tenant,
            slug,
            id,
            &tokens.access_token,
            tokens.refresh_token.as_ref(),
            tokens.expires_at,
        );
        let secrets = (!account.secrets.is_empty())
            .then(|| seal_secrets(services, tenant, slug, id, account.secrets.expose()))
            .transpose()
            .map_err(anyhow::Error::from)?;
        let upsert = ConnectionUpsert {
            id,
            tenant_id: tenant,
            provider: slug.to_string(),
            external_account_id: account.id.clone(),
            external_account_name: account.display_name.clone(),
            scopes: scopes.clone(),
            tokens: sealed,
            metadata,
            secrets_sealed: secrets,
            now: now(),
        };
        if let Some(connection) = services.store.upsert_connection(&upsert).await? {
            tracing::info!(provider = slug, connection_id = %connection.id, "connection stored");
            return Ok(connection);
        }
    }
    Err(FlowError::Internal(anyhow::anyhow!(
        "connection upsert kept conflicting"
    )))
}

/// The state's PKCE verifier, if it has one.
fn open_verifier(services: &Services, saved: &OAuthState) -> Result<Option<Secret>, FlowError> {
    let aad = verifier_aad(saved.tenant_id, &saved.provider, &saved.state_hash);
    saved
        .pkce_verifier_sealed
        .as_ref()
        .map(|sealed| services.vault.open_str(sealed, &aad))
        .transpose()
        .map_err(|e| FlowError::Internal(e.into()))
}

/// The AAD binding a PKCE verifier to its state.
fn verifier_aad(tenant: TenantId, slug: &str, state_hash: &[u8]) -> Aad {
    Aad::new(
        tenant,
        slug,
        &hex(state_hash),
        SealedField::PkceVerifier.aad_name(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_must_share_origin_and_whole_path_segments() {
        let allowed = [Url::parse("https://app.poblysh.com/connectors").expect("url")];
        for good in [
            "https://app.poblysh.com/connectors",
            "https://app.poblysh.com/connectors/",
            "https://app.poblysh.com/connectors/done?x=1#top",
            "https://app.poblysh.com/connectors/a/b",
        ] {
            assert!(allowed_return_to(good, &allowed).is_ok(), "{good}");
        }
        for bad in [
            "https://app.poblysh.com/elsewhere",
            "https://app.poblysh.com.evil.com/connectors",
            "http://app.poblysh.com/connectors",
            "https://user@app.poblysh.com/connectors",
            "https://:pw@app.poblysh.com/connectors",
            "https://app.poblysh.com/connectors-evil/steal",
            "https://app.poblysh.com/connectorsXYZ",
            "https://app.poblysh.com/connectors/..%2fadmin",
            "https://app.poblysh.com/connectors/%2e%2e/admin",
            "https://app.poblysh.com/connectors/../admin",
            "https://app.poblysh.com/connectors%5c..%5cadmin",
            "/connectors",
        ] {
            assert!(allowed_return_to(bad, &allowed).is_err(), "{bad}");
        }
        // A prefix with a trailing slash, and the root, match by whole segments too.
        let slash = [Url::parse("https://app.poblysh.com/connectors/").expect("url")];
        assert!(allowed_return_to("https://app.poblysh.com/connectors/x", &slash).is_ok());
        assert!(allowed_return_to("https://app.poblysh.com/connectorsx", &slash).is_err());
        let root = [Url::parse("https://app.poblysh.com/").expect("url")];
        assert!(allowed_return_to("https://app.poblysh.com/any/where", &root).is_ok());
    }

    proptest::proptest! {
        /// Whatever is asked for, nothing outside the allowed origin and path is accepted,
        /// and nothing panics.
        #[test]
        fn return_to_never_leaves_the_allowed_prefix(raw in ".{0,200}", tail in "[a-zA-Z0-9._~%/-]{0,40}") {
            let allowed = [Url::parse("https://app.poblysh.com/connectors").expect("url")];
            for candidate in [raw.clone(), format!("https://app.poblysh.com/connectors{tail}")] {
                if let Ok(url) = allowed_return_to(&candidate, &allowed) {
                    proptest::prop_assert_eq!(url.origin(), allowed[0].origin());
                    let path = url.path();
                    proptest::prop_assert!(path == "/connectors" || path.starts_with("/connectors/"), "{}", path);
                    proptest::prop_assert!(url.username().is_empty() && url.password().is_none());
                }
            }
        }
    }

    #[test]
    fn the_default_redirect_uri_keeps_a_base_path() {
        let base = Url::parse("https://api.example.com/connectors/").expect("url");
        assert_eq!(
            callback_url(&base, "github").as_str(),
            "https://api.example.com/connectors/connect/github/callback"
        );
    }
}
