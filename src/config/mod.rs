//! Configuration: `POBLYSH_*` variables layered over dotenv files ([`Source`]), parsed once
//! into a typed [`Config`]. A malformed value stops start-up with a [`ConfigError`] naming the
//! variable; nothing falls back silently.

mod local_secrets;
mod parse;
mod providers;
mod push;
mod return_to;
mod sections;
mod source;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use crate::connector::ProviderSettings;
use crate::crypto::{CryptoKey, Secret};

pub use local_secrets::StartupNote;
pub use push::{AddressRange, PushSettings};
pub(crate) use return_to::allowed_return_to;
pub use source::Source;
pub use stream::StreamSettings;

/// Sync jobs one instance runs at once unless `POBLYSH_SYNC_CONCURRENCY` says otherwise. A job
/// mostly waits for its provider, so several share a core; each provider's own limit on
/// concurrent calls per connection still applies.
pub const DEFAULT_SYNC_CONCURRENCY: usize = 8;

/// A variable that could not be used, and why. Displays as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The variable (or file) at fault.
    pub variable: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(variable: &str, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.to_string(),
            problem: problem.into(),
        }
    }
}

/// The deployment profile: defaults and how strict start-up is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A developer's machine: generates missing secrets, enables the sandbox provider; listens
    /// on a loopback address only.
    Local,
    /// Automated tests: missing secrets are generated in memory only.
    Test,
    /// Production: every secret must be given.
    Prod,
}

impl Profile {
    const ALL: &'static [&'static str] = &["local", "test", "prod"];

    /// The profile's name.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Profile::Local => "local",
            Profile::Test => "test",
            Profile::Prod => "prod",
        }
    }
}

impl FromStr for Profile {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "local" => Ok(Profile::Local),
            "test" => Ok(Profile::Test),
            "prod" => Ok(Profile::Prod),
            _ => Err(()),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err(()),
        }
    }
}

/// Which variable the operator tokens came from, for the config summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `POBLYSH_OPERATOR_TOKENS`.
    List,
    /// `POBLYSH_OPERATOR_TOKEN`.
    Single,
    /// Generated into the data directory (local profile) or memory (test profile).
    Generated,
}

/// What this process does (`POBLYSH_ROLES`): serve the API, run background work, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// Serves the HTTP API.
    pub api: bool,
    /// Runs the inbox worker, the sync scheduler and workers, and the token refresher.
    pub worker: bool,
}

/// The service's whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub profile: Profile,
    pub bind_addr: SocketAddr,
    /// When set, `/metrics` is served on this address instead of the API address.
    pub metrics_bind_addr: Option<SocketAddr>,
    pub public_base_url: Url,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub db_max_connections: u32,
    pub operator_tokens: Vec<Secret>,
    pub operator_token_source: TokenSource,
    pub crypto_key: CryptoKey,
    /// Keys that still open values sealed before a rotation (`POBLYSH_CRYPTO_PREVIOUS_KEYS`).
    pub previous_crypto_keys: Vec<CryptoKey>,
    /// How long a minted OAuth state stays valid.
    pub oauth_state_ttl: Duration,
    /// Tokens expiring within this lead time are refreshed ahead of use.
    pub token_refresh_lead: Duration,
    /// How often the refresher looks for expiring tokens (shorter than the lead time).
    pub token_refresh_interval: Duration,
    /// Time limit of one call to a provider.
    pub provider_timeout: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Webhook bodies being received at once, in bytes, across all deliveries; past it a
    /// delivery is answered `503` with `Retry-After` (providers redeliver).
    pub max_webhook_bytes_in_flight: usize,
    /// Time a client has to send a complete request head (`POBLYSH_HEADER_READ_TIMEOUT_SECS`).
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with nothing in flight (`POBLYSH_IDLE_TIMEOUT_SECS`).
    pub idle_timeout: Duration,
    /// Open connections served at once; more are answered `503` (`POBLYSH_MAX_CONNECTIONS`).
    pub max_connections: usize,
    pub allowed_return_urls: Vec<Url>,
    pub allowed_redirect_uris: Vec<Url>,
    /// Where the browser is sent, with `status=error&code=...`, when a connect's state is
    /// missing or unknown and its `return_to` cannot be known
    /// (`POBLYSH_CONNECT_FALLBACK_RETURN_URL`).
    pub connect_fallback_return_url: Option<Url>,
    pub sandbox_enabled: bool,
    pub roles: Roles,
    /// How often idle workers look for due events and jobs when nothing wakes them
    /// (`POBLYSH_WORKER_POLL_INTERVAL_MS`).
    pub worker_poll_interval: Duration,
    /// How long processed, ignored and unmatched deliveries are kept
    /// (`POBLYSH_WEBHOOK_RETENTION_DAYS`).
    pub webhook_retention: Duration,
    /// Sync jobs one process runs at once (`POBLYSH_SYNC_CONCURRENCY`).
    pub sync_concurrency: usize,
    /// How often each connection is synced, unless its provider sets its own interval.
    pub sync_interval: Duration,
    /// Per-provider sync intervals (`POBLYSH_<SLUG>_SYNC_INTERVAL_SECS`).
    pub provider_sync_intervals: Vec<(&'static str, Duration)>,
    pub providers: Vec<ProviderSettings>,
    /// Push delivery to Core.
    pub push: PushSettings,
    /// Size of the body `GET /bench/floor` answers; `None` (the default) leaves the route out
    /// (`POBLYSH_BENCH_FLOOR_BYTES`, for benchmarks only).
    pub bench_floor_bytes: Option<usize>,
    /// The live signal stream (`GET /signals/stream`).
    pub stream: StreamSettings,
    /// What start-up did on the operator's behalf (generated secrets), to log once.
    pub startup_notes: Vec<StartupNote>,
}

impl Config {
    /// Loads from the dotenv files in the working directory and the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let dir = std::env::current_dir()
            .map_err(|e| ConfigError::new("working directory", e.to_string()))?;
        Self::from_source(&Source::load(&dir)?)
    }

    /// Parses a [`Source`]. In the `local` profile this may write generated secrets into the
    /// data directory.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let profile = parse::optional(source, "POBLYSH_PROFILE", parse::one_of(Profile::ALL))?
            .unwrap_or(Profile::Local);
        let (bind_addr, metrics_bind_addr, public_base_url) = sections::listen(source, profile)?;
        let data_dir = PathBuf::from(source.get("POBLYSH_DATA_DIR").unwrap_or("./data"));
        let (database_url, db_max_connections) = sections::database(source, &data_dir)?;
        let (log_level, log_format) = sections::logging(source, profile)?;
        let requests = sections::requests(source)?;
        let connections = sections::connections(source)?;
        let work = sections::work(source)?;
        let timings = sections::timings(source)?;
        let mut startup_notes = Vec::new();
        let (operator_tokens, operator_token_source) =
            local_secrets::operator_tokens(source, profile, &data_dir, &mut startup_notes)?;
        let crypto_key = local_secrets::crypto_key(source, profile, &data_dir, &mut startup_notes)?;
        let stream = stream::settings(source, connections.idle_timeout)?;
        Ok(Config {
            profile,
            bind_addr,
            metrics_bind_addr,
            public_base_url,
            data_dir,
            database_url,
            db_max_connections,
            operator_tokens,
            operator_token_source,
            crypto_key,
            previous_crypto_keys: sections::previous_keys(source)?,
            oauth_state_ttl: timings.oauth_state_ttl,
            token_refresh_lead: timings.token_refresh_lead,
            token_refresh_interval: timings.token_refresh_interval,
            provider_timeout: timings.provider_timeout,
            log_level,
            log_format,
            request_timeout: requests.timeout,
            max_body_bytes: requests.max_body_bytes,
            max_webhook_bytes_in_flight: requests.max_webhook_bytes_in_flight,
            header_read_timeout: connections.header_read_timeout,
            idle_timeout: connections.idle_timeout,
            max_connections: connections.max_connections,
            allowed_return_urls: requests.allowed_return_urls,
            allowed_redirect_uris: requests.allowed_redirect_uris,
            connect_fallback_return_url: requests.connect_fallback_return_url,
            sandbox_enabled: parse::optional(source, "POBLYSH_SANDBOX_ENABLED", parse::boolean)?
                .unwrap_or(profile == Profile::Local),
            roles: work.roles,
            webhook_retention: work.webhook_retention,
            worker_poll_interval: work.poll_interval,
            sync_concurrency: work.sync_concurrency,
            sync_interval: work.sync_interval,
            provider_sync_intervals: providers::sync_intervals(source)?,
            providers: providers::load(source)?,
            push: push::settings(source)?,
            bench_floor_bytes: sections::bench_floor_bytes(source)?,
            stream,
            startup_notes,
        })
    }

    /// How often connections to this provider are synced.
    pub fn sync_interval(&self, slug: &str) -> Duration {
        self.provider_sync_intervals
            .iter()
            .find(|(s, _)| *s == slug)
            .map_or(self.sync_interval, |(_, interval)| *interval)
    }

    /// The settings of one provider, by slug.
    pub fn provider(&self, slug: &str) -> Option<&ProviderSettings> {
        self.providers.iter().find(|p| p.slug == slug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_source(extra: &[(&str, &str)]) -> Source {
        let mut pairs = vec![("POBLYSH_PROFILE", "test")];
        pairs.extend_from_slice(extra);
        Source::from_pairs(pairs)
    }

    #[test]
    fn malformed_values_name_their_variable() {
        for (name, value) in [
            ("POBLYSH_API_BIND_ADDR", "localhost"),
            ("POBLYSH_DB_MAX_CONNECTIONS", "many"),
            ("POBLYSH_LOG_FORMAT", "xml"),
            ("POBLYSH_PUBLIC_BASE_URL", "not a url"),
            ("POBLYSH_CRYPTO_KEY", "short"),
            ("POBLYSH_OPERATOR_TOKENS", "tiny"),
            ("POBLYSH_PROFILE", "staging"),
            ("POBLYSH_DATABASE_URL", "mysql://x"),
            ("POBLYSH_SYNC_CONCURRENCY", "0"),
            ("POBLYSH_SYNC_CONCURRENCY", "1000"),
            ("POBLYSH_WORKER_POLL_INTERVAL_MS", "5"),
            ("POBLYSH_HEADER_READ_TIMEOUT_SECS", "soon"),
            ("POBLYSH_HEADER_READ_TIMEOUT_SECS", "0"),
            ("POBLYSH_IDLE_TIMEOUT_SECS", "-1"),
            ("POBLYSH_MAX_CONNECTIONS", "0"),
            ("POBLYSH_MAX_CONNECTIONS", "65537"),
            ("POBLYSH_BENCH_FLOOR_BYTES", "11"),
            ("POBLYSH_BENCH_FLOOR_BYTES", "big"),
        ] {
            let err = Config::from_source(&test_source(&[(name, value)])).expect_err(name);
            assert_eq!(err.variable, name, "{err}");
        }
    }

    #[test]
    fn the_connect_fallback_must_be_an_allowed_return_url() {
        let allowed = (
            "POBLYSH_ALLOWED_RETURN_URLS",
            "https://app.poblysh.com/connectors",
        );
        for (extra, bad) in [
            (None, "https://app.poblysh.com/connectors/failed"),
            (Some(allowed), "https://evil.example.com/connectors/failed"),
            (Some(allowed), "https://app.poblysh.com/admin"),
            (
                Some(allowed),
                "https://user:pass@app.poblysh.com/connectors/x",
            ),
            (Some(allowed), "/connectors/failed"),
        ] {
            let mut pairs = vec![("POBLYSH_CONNECT_FALLBACK_RETURN_URL", bad)];
            pairs.extend(extra);
            let err = Config::from_source(&test_source(&pairs)).expect_err(bad);
            assert_eq!(err.variable, "POBLYSH_CONNECT_FALLBACK_RETURN_URL", "{err}");
        }
    }

    #[test]
    fn the_local_profile_refuses_a_non_loopback_bind_address() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let data = data_dir.to_str().expect("utf-8 path");
        for (profile, addr) in [
            (None, "0.0.0.0:8080"),
            (Some("local"), "0.0.0.0:8080"),
            (None, "[::]:8080"),
            (None, "192.168.1.10:8080"),
        ] {
            let mut pairs = vec![("POBLYSH_DATA_DIR", data), ("POBLYSH_API_BIND_ADDR", addr)];
            pairs.extend(profile.map(|p| ("POBLYSH_PROFILE", p)));
            let err = Config::from_source(&Source::from_pairs(pairs)).expect_err(addr);
            assert_eq!(err.variable, "POBLYSH_API_BIND_ADDR", "{err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
        // Refused before any secret was generated or written.
        assert!(!data_dir.exists());
        for addr in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:0"] {
            let source =
                Source::from_pairs([("POBLYSH_DATA_DIR", data), ("POBLYSH_API_BIND_ADDR", addr)]);
            let config = Config::from_source(&source).expect(addr);
            assert_eq!(config.profile, Profile::Local);
        }
        let anywhere = test_source(&[("POBLYSH_API_BIND_ADDR", "0.0.0.0:8080")]);
        assert!(
            Config::from_source(&anywhere).is_ok(),
            "the test profile may listen anywhere"
        );
    }

    #[test]
    fn connection_limits_have_defaults_and_can_be_set() {
        let default = Config::from_source(&test_source(&[])).expect("valid");
        assert_eq!(default.header_read_timeout, Duration::from_secs(10));
        assert_eq!(default.idle_timeout, Duration::from_secs(60));
        assert_eq!(default.max_connections, 1024);
        let set = Config::from_source(&test_source(&[
            ("POBLYSH_HEADER_READ_TIMEOUT_SECS", "3"),
            ("POBLYSH_IDLE_TIMEOUT_SECS", "120"),
            ("POBLYSH_MAX_CONNECTIONS", "65536"),
        ]))
        .expect("valid");
        assert_eq!(set.header_read_timeout, Duration::from_secs(3));
        assert_eq!(set.idle_timeout, Duration::from_secs(120));
        assert_eq!(set.max_connections, 65536);
    }

    #[test]
    fn sync_concurrency_has_a_default_and_can_be_set() {
        let default = Config::from_source(&test_source(&[])).expect("valid");
        assert_eq!(default.sync_concurrency, DEFAULT_SYNC_CONCURRENCY);
        let set = Config::from_source(&test_source(&[("POBLYSH_SYNC_CONCURRENCY", "32")]))
            .expect("valid");
        assert_eq!(set.sync_concurrency, 32);
    }

    #[test]
    fn token_list_takes_precedence_over_single_token() {
        let config = Config::from_source(&test_source(&[
            (
                "POBLYSH_OPERATOR_TOKENS",
                "aaaaaaaaaaaaaaaa1, bbbbbbbbbbbbbbbb2",
            ),
            ("POBLYSH_OPERATOR_TOKEN", "cccccccccccccccc3"),
        ]))
        .expect("valid");
        let tokens: Vec<&str> = config.operator_tokens.iter().map(Secret::expose).collect();
        assert_eq!(tokens, ["aaaaaaaaaaaaaaaa1", "bbbbbbbbbbbbbbbb2"]);
        assert_eq!(config.operator_token_source, TokenSource::List);
    }

    #[test]
    fn prod_requires_every_secret() {
        let err = Config::from_source(&Source::from_pairs([
            ("POBLYSH_PROFILE", "prod"),
            ("POBLYSH_PUBLIC_BASE_URL", "https://connectors.example.com"),
        ]))
        .expect_err("no token");
        assert_eq!(err.variable, "POBLYSH_OPERATOR_TOKENS");
    }
}
