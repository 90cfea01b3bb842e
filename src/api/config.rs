//! `GET /config/summary` and `GET /config/rate-limit-policy`: the effective configuration, with
//! every secret reduced to whether it is set.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::errors::OperatorErrors;
use crate::config::{Config, LogFormat, TokenSource};
use crate::connector::RateLimitPolicy;
use crate::http::{AppState, Operator};

/// Database settings; any password in the URL is replaced by `***`.
#[derive(Serialize, ToSchema)]
pub struct DatabaseSummary {
    /// `sqlite` or `postgres`.
    backend: &'static str,
    url: String,
    max_connections: u32,
}

/// One provider's settings; secrets appear only as whether they are set.
#[derive(Serialize, ToSchema)]
pub struct ProviderSummary {
    slug: &'static str,
    /// Whether the provider is offered (the sandbox can be disabled).
    enabled: bool,
    client_id: Option<String>,
    client_secret_set: bool,
    webhook_secret_set: bool,
    api_base_url: Option<String>,
    auth_base_url: Option<String>,
    scopes: Option<Vec<String>>,
}

/// Push delivery's rules.
#[derive(Serialize, ToSchema)]
pub struct PushSummary {
    /// Plain `http` endpoint URLs are accepted (`POBLYSH_PUSH_ALLOW_HTTP`).
    allow_http: bool,
    /// Non-global addresses and ranges deliveries may reach (`POBLYSH_PUSH_ALLOWED_ADDRESSES`).
    allowed_addresses: Vec<String>,
    /// How long a rotated-out secret keeps signing (`POBLYSH_PUSH_SECRET_OVERLAP_SECS`).
    secret_overlap_secs: u64,
}

/// The effective configuration.
#[derive(Serialize, ToSchema)]
pub struct ConfigSummary {
    /// `local`, `test` or `prod`.
    profile: &'static str,
    api_bind_addr: String,
    metrics_bind_addr: Option<String>,
    public_base_url: String,
    data_dir: String,
    database: DatabaseSummary,
    /// How many operator tokens are accepted.
    operator_token_count: usize,
    /// `POBLYSH_OPERATOR_TOKENS`, `POBLYSH_OPERATOR_TOKEN` or `generated`.
    operator_token_source: &'static str,
    /// Public fingerprint of the crypto key (not the key).
    crypto_key_id: String,
    log_level: String,
    /// `json` or `pretty`.
    log_format: &'static str,
    request_timeout_secs: u64,
    max_body_bytes: usize,
    allowed_return_urls: Vec<String>,
    allowed_redirect_uris: Vec<String>,
    sandbox_enabled: bool,
    providers: Vec<ProviderSummary>,
    push: PushSummary,
}

/// The effective configuration, secrets redacted.
#[utoipa::path(
    get,
    path = "/config/summary",
    tag = "configuration",
    security(("operator_token" = [])),
    responses((status = 200, body = ConfigSummary), OperatorErrors)
)]
pub async fn summary(State(state): State<AppState>, _: Operator) -> Json<ConfigSummary> {
    Json(summarize(&state))
}

fn summarize(state: &AppState) -> ConfigSummary {
    let c: &Config = &state.config;
    let urls = |list: &[url::Url]| list.iter().map(url::Url::to_string).collect();
    ConfigSummary {
        profile: c.profile.as_str(),
        api_bind_addr: c.bind_addr.to_string(),
        metrics_bind_addr: c.metrics_bind_addr.map(|a| a.to_string()),
        public_base_url: c.public_base_url.to_string(),
        data_dir: c.data_dir.display().to_string(),
        database: DatabaseSummary {
            backend: state.store.backend().as_str(),
            url: redact_url(&c.database_url),
            max_connections: c.db_max_connections,
        },
        operator_token_count: c.operator_tokens.len(),
        operator_token_source: match c.operator_token_source {
            TokenSource::List => "POBLYSH_OPERATOR_TOKENS",
            TokenSource::Single => "POBLYSH_OPERATOR_TOKEN",
            TokenSource::Generated => "generated",
        },
        crypto_key_id: format!("{:08x}", c.crypto_key.key_id()),
        log_level: c.log_level.clone(),
        log_format: match c.log_format {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        },
        request_timeout_secs: c.request_timeout.as_secs(),
        max_body_bytes: c.max_body_bytes,
        allowed_return_urls: urls(&c.allowed_return_urls),
        allowed_redirect_uris: urls(&c.allowed_redirect_uris),
        sandbox_enabled: c.sandbox_enabled,
        providers: c
            .providers
            .iter()
            .map(|p| ProviderSummary {
                slug: p.slug,
                enabled: state.registry.get(p.slug).is_some(),
                client_id: p.client_id.clone(),
                client_secret_set: p.client_secret.is_some(),
                webhook_secret_set: p.webhook_secret.is_some(),
                api_base_url: p.api_base_url.as_ref().map(|u| u.to_string()),
                auth_base_url: p.auth_base_url.as_ref().map(|u| u.to_string()),
                scopes: p.scopes.clone(),
            })
            .collect(),
        push: PushSummary {
            allow_http: c.push.allow_http,
            allowed_addresses: c
                .push
                .allowed_addresses
                .iter()
                .map(|r| format!("{}/{}", r.base, r.prefix))
                .collect(),
            secret_overlap_secs: c.push.secret_overlap.as_secs(),
        },
    }
}

/// A database URL with its password (and any query, which may carry one) hidden.
fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.scheme().starts_with("postgres") => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            if url.query().is_some() {
                url.set_query(Some("***"));
            }
            url.to_string()
        }
        Ok(_) => raw.to_string(),
        Err(_) => "***".to_string(),
    }
}

/// One provider's client-side rate limits.
#[derive(Serialize, ToSchema)]
pub struct ProviderRateLimit {
    slug: &'static str,
    policy: RateLimitPolicy,
}

/// Client-side rate limits, per provider and per connection.
#[derive(Serialize, ToSchema)]
pub struct RateLimitPolicies {
    providers: Vec<ProviderRateLimit>,
}

/// The rate limits the sync engine applies to each enabled provider before sending requests.
#[utoipa::path(
    get,
    path = "/config/rate-limit-policy",
    tag = "configuration",
    security(("operator_token" = [])),
    responses((status = 200, body = RateLimitPolicies), OperatorErrors)
)]
pub async fn rate_limit_policy(
    State(state): State<AppState>,
    _: Operator,
) -> Json<RateLimitPolicies> {
    Json(RateLimitPolicies {
        providers: state
            .registry
            .entries()
            .iter()
            .map(|e| ProviderRateLimit {
                slug: e.descriptor().slug,
                policy: e.rate_limit,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn database_passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/connectors"),
            "postgres://app:***@db:5432/connectors"
        );
        assert_eq!(
            redact_url("postgres://db/connectors?password=s3cret"),
            "postgres://db/connectors?***"
        );
        assert_eq!(
            redact_url("sqlite://data/connectors.db"),
            "sqlite://data/connectors.db"
        );
    }
}
