//! The parts of [`super::Config`], each parsed from its own variables: where the service
//! listens, its database, logging, request limits, background work, time limits and older
//! keys. Every malformed value is an error naming its variable.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use url::Url;

use super::allowed_return_to;
use super::{parse, ConfigError, LogFormat, Profile, Roles, Source, DEFAULT_SYNC_CONCURRENCY};
use crate::crypto::CryptoKey;

/// The API address, the separate metrics address, and the public base URL. The `local`
/// profile listens on loopback addresses only.
pub(super) fn listen(
    source: &Source,
    profile: Profile,
) -> Result<(SocketAddr, Option<SocketAddr>, Url), ConfigError> {
    let bind_addr = parse::optional(source, "POBLYSH_API_BIND_ADDR", parse::socket_addr)?
        .unwrap_or_else(|| match profile {
            Profile::Prod => SocketAddr::from(([0, 0, 0, 0], 8080)),
            _ => SocketAddr::from(([127, 0, 0, 1], 8080)),
        });
    // The local profile generates an operator token, prints it and enables the sandbox: safe
    // on a developer's machine, not on an address others can reach. Fail closed rather than
    // expose that because `POBLYSH_PROFILE` was left unset on a server.
    if profile == Profile::Local && !bind_addr.ip().is_loopback() {
        return Err(ConfigError::new(
            "POBLYSH_API_BIND_ADDR",
            format!(
                "{bind_addr} is not a loopback address, which the local profile requires; \
                 set POBLYSH_PROFILE=prod to listen on it"
            ),
        ));
    }
    let metrics_bind_addr =
        parse::optional(source, "POBLYSH_METRICS_BIND_ADDR", parse::socket_addr)?;
    let public_base_url = match parse::optional(source, "POBLYSH_PUBLIC_BASE_URL", parse::http_url)?
    {
        Some(url) => url,
        None if profile == Profile::Prod => {
            return Err(ConfigError::new(
                "POBLYSH_PUBLIC_BASE_URL",
                "is required in the prod profile (providers redirect to it)",
            ))
        }
        None => parse::http_url(&format!("http://{bind_addr}"))
            .map_err(|p| ConfigError::new("POBLYSH_API_BIND_ADDR", p))?,
    };
    Ok((bind_addr, metrics_bind_addr, public_base_url))
}

/// The database URL (SQLite in the data directory by default) and the pool size.
pub(super) fn database(source: &Source, data_dir: &Path) -> Result<(String, u32), ConfigError> {
    let database_url = match source.get("POBLYSH_DATABASE_URL") {
        Some(url)
            if url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://") =>
        {
            url.to_string()
        }
        Some(_) => {
            return Err(ConfigError::new(
                "POBLYSH_DATABASE_URL",
                "must start with sqlite:, postgres:// or postgresql://",
            ))
        }
        None => format!("sqlite://{}", data_dir.join("connectors.db").display()),
    };
    let max_connections = parse::optional(
        source,
        "POBLYSH_DB_MAX_CONNECTIONS",
        parse::bounded(1u32, 1000),
    )?
    .unwrap_or(10);
    Ok((database_url, max_connections))
}

/// The tracing filter and the line format.
pub(super) fn logging(
    source: &Source,
    profile: Profile,
) -> Result<(String, LogFormat), ConfigError> {
    let level = match source.get("POBLYSH_LOG_LEVEL") {
        Some(level) => {
            tracing_subscriber::EnvFilter::try_new(level).map_err(|e| {
                ConfigError::new("POBLYSH_LOG_LEVEL", format!("is not a valid filter: {e}"))
            })?;
            level.to_string()
        }
        None => "info".to_string(),
    };
    let format = parse::optional(
        source,
        "POBLYSH_LOG_FORMAT",
        parse::one_of(&["json", "pretty"]),
    )?
    .unwrap_or(match profile {
        Profile::Local => LogFormat::Pretty,
        _ => LogFormat::Json,
    });
    Ok((level, format))
}

/// Limits on requests, and the URLs Core may send users back to.
pub(super) struct Requests {
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub max_webhook_bytes_in_flight: usize,
    pub allowed_return_urls: Vec<Url>,
    pub allowed_redirect_uris: Vec<Url>,
    pub connect_fallback_return_url: Option<Url>,
}

pub(super) fn requests(source: &Source) -> Result<Requests, ConfigError> {
    let allowed_return_urls: Vec<Url> =
        parse::optional(source, "POBLYSH_ALLOWED_RETURN_URLS", parse::url_list)?
            .unwrap_or_default();
    // Where a browser goes when its connect cannot be identified: held to the same rule as
    // every `return_to`, so it is never an open redirect.
    let connect_fallback_return_url =
        parse::optional(source, "POBLYSH_CONNECT_FALLBACK_RETURN_URL", |text| {
            let url = parse::http_url(text)?;
            allowed_return_to(url.as_str(), &allowed_return_urls)
                .map_err(|problem| format!("{problem} (POBLYSH_ALLOWED_RETURN_URLS), got {text:?}"))
        })?;
    Ok(Requests {
        timeout: parse::optional(
            source,
            "POBLYSH_REQUEST_TIMEOUT_SECS",
            parse::bounded(1u64, 3600),
        )?
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30)),
        max_body_bytes: parse::optional(
            source,
            "POBLYSH_MAX_BODY_BYTES",
            parse::bounded(1024usize, 64 * 1024 * 1024),
        )?
        .unwrap_or(1024 * 1024),
        max_webhook_bytes_in_flight: parse::optional(
            source,
            "POBLYSH_WEBHOOK_BYTES_IN_FLIGHT",
            parse::bounded(64 * 1024usize, 4 * 1024 * 1024 * 1024),
        )?
        .unwrap_or(64 * 1024 * 1024),
        allowed_return_urls,
        connect_fallback_return_url,
        allowed_redirect_uris: parse::optional(
            source,
            "POBLYSH_ALLOWED_REDIRECT_URIS",
            parse::url_list,
        )?
        .unwrap_or_default(),
    })
}

/// Limits on connections: how long a client may take to send a request head, how long an
/// idle connection stays open, and how many are served at once.
pub(super) struct Connections {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

pub(super) fn connections(source: &Source) -> Result<Connections, ConfigError> {
    let secs = |name: &str, default: u64, max: u64| {
        parse::optional(source, name, parse::bounded(1u64, max))
            .map(|v| Duration::from_secs(v.unwrap_or(default)))
    };
    Ok(Connections {
        header_read_timeout: secs("POBLYSH_HEADER_READ_TIMEOUT_SECS", 10, 3600)?,
        idle_timeout: secs("POBLYSH_IDLE_TIMEOUT_SECS", 60, 86_400)?,
        max_connections: parse::optional(
            source,
            "POBLYSH_MAX_CONNECTIONS",
            parse::bounded(1usize, 65_536),
        )?
        .unwrap_or(1024),
    })
}

/// The body size of the benchmark floor route (`GET /bench/floor`), when it is on. The body is
/// a JSON object, so it needs at least the 12 bytes of `{"floor":""}`.
pub(super) fn bench_floor_bytes(source: &Source) -> Result<Option<usize>, ConfigError> {
    parse::optional(
        source,
        "POBLYSH_BENCH_FLOOR_BYTES",
        parse::bounded(12usize, 16 * 1024 * 1024),
    )
}

/// What runs in the background, and how often.
pub(super) struct Work {
    pub roles: Roles,
    pub webhook_retention: Duration,
    pub poll_interval: Duration,
    pub sync_concurrency: usize,
    pub sync_interval: Duration,
}

pub(super) fn work(source: &Source) -> Result<Work, ConfigError> {
    let roles = parse::optional(source, "POBLYSH_ROLES", |text| {
        let words = parse::word_list(text)?;
        if let Some(bad) = words
            .iter()
            .find(|w| !matches!(w.as_str(), "api" | "worker"))
        {
            return Err(format!("must list api and/or worker, got {bad:?}"));
        }
        Ok(Roles {
            api: words.iter().any(|w| w == "api"),
            worker: words.iter().any(|w| w == "worker"),
        })
    })?
    .unwrap_or(Roles {
        api: true,
        worker: true,
    });
    Ok(Work {
        roles,
        webhook_retention: parse::optional(
            source,
            "POBLYSH_WEBHOOK_RETENTION_DAYS",
            parse::bounded(1u64, 3650),
        )?
        .map(|days| Duration::from_secs(days * 86_400))
        .unwrap_or(Duration::from_secs(7 * 86_400)),
        poll_interval: parse::optional(
            source,
            "POBLYSH_WORKER_POLL_INTERVAL_MS",
            parse::bounded(10u64, 3_600_000),
        )?
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(1)),
        sync_concurrency: parse::optional(
            source,
            "POBLYSH_SYNC_CONCURRENCY",
            parse::bounded(1usize, 256),
        )?
        .unwrap_or(DEFAULT_SYNC_CONCURRENCY),
        sync_interval: parse::optional(
            source,
            "POBLYSH_SYNC_INTERVAL_SECS",
            parse::bounded(1u64, 604_800),
        )?
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(15 * 60)),
    })
}

/// How long states live, when tokens are refreshed, how long a provider call may take.
pub(super) struct Timings {
    pub oauth_state_ttl: Duration,
    pub token_refresh_lead: Duration,
    pub token_refresh_interval: Duration,
    pub provider_timeout: Duration,
}

pub(super) fn timings(source: &Source) -> Result<Timings, ConfigError> {
    let secs = |name: &str, default: u64, max: u64| {
        parse::optional(source, name, parse::bounded(1u64, max))
            .map(|v| Duration::from_secs(v.unwrap_or(default)))
    };
    let timings = Timings {
        oauth_state_ttl: secs("POBLYSH_OAUTH_STATE_TTL_SECS", 600, 3600)?,
        token_refresh_lead: secs("POBLYSH_TOKEN_REFRESH_LEAD_SECS", 600, 86_400)?,
        token_refresh_interval: secs("POBLYSH_TOKEN_REFRESH_INTERVAL_SECS", 60, 86_400)?,
        provider_timeout: secs("POBLYSH_PROVIDER_TIMEOUT_SECS", 20, 300)?,
    };
    if timings.token_refresh_interval >= timings.token_refresh_lead {
        return Err(ConfigError::new(
            "POBLYSH_TOKEN_REFRESH_INTERVAL_SECS",
            "must be shorter than POBLYSH_TOKEN_REFRESH_LEAD_SECS, or tokens could expire between scans",
        ));
    }
    Ok(timings)
}

/// Keys that still open values sealed before a rotation.
pub(super) fn previous_keys(source: &Source) -> Result<Vec<CryptoKey>, ConfigError> {
    Ok(
        parse::optional(source, "POBLYSH_CRYPTO_PREVIOUS_KEYS", |text| {
            text.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| CryptoKey::from_base64(k).map_err(|p| format!("each key {p}")))
                .collect::<Result<Vec<_>, _>>()
        })?
        .unwrap_or_default(),
    )
}
