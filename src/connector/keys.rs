//! Verifying RS256 JWTs against a provider's published keys (JWKS), as Google Pub/Sub push
//! OIDC tokens need: [`KeyCache`] fetches and caches each JWKS URL's keys, and
//! [`KeyCache::verify_rs256`] checks a token's algorithm, signature and claims.
//!
//! Everything here fails closed: a key server that is down, slow or answers garbage makes
//! verification fail, never pass. Keys are only ever fetched from the URL the caller configured,
//! never from anything a token names (`jku`, `x5u`, `jwk` headers are ignored).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::header::{HeaderMap, ACCEPT, AGE, CACHE_CONTROL};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

/// The claims of a verified token, as sent.
pub type Claims = serde_json::Map<String, Value>;

/// A JWKS larger than this is refused: real ones hold a handful of keys (a few KiB).
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// A token larger than this is refused before any decoding (Google's are about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// RSA keys shorter than this are not used (RFC 7518 section 3.3 requires 2048 bits).
const MIN_RSA_MODULUS_BITS: usize = 2048;

/// How long key sets are kept and how often a JWKS URL may be fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyCachePolicy {
    /// How long a key set is used when the JWKS response has no `Cache-Control: max-age`.
    pub default_ttl: Duration,
    /// The least time between two fetches of the same URL, whatever the reason (expiry, an
    /// unknown `kid`, a failed fetch): a flood of forged `kid`s cannot hammer the key server.
    /// Key sets are also kept at least this long, even when `max-age` is shorter.
    pub min_refetch_interval: Duration,
    /// The longest a key set is used, whatever `max-age` says, so a rotated-out key stops being
    /// trusted eventually.
    pub max_ttl: Duration,
    /// How long one JWKS fetch may take, connection included, before it counts as failed.
    pub fetch_timeout: Duration,
}

impl Default for KeyCachePolicy {
    /// One hour without `max-age`, at most one fetch per URL every 30 seconds, never longer than
    /// a day, and 10 seconds per fetch.
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(30),
            max_ttl: Duration::from_secs(24 * 3600),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

/// Why no key could be had for a `kid`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No usable key set: the JWKS could not be fetched (down, timed out, non-2xx, not a JWKS)
    /// and no still-valid set was cached, or a needed refetch failed. Transient: worth a retry.
    #[error("the signing keys are unavailable: {0}")]
    Unavailable(String),
    /// The key set is fresh (refetched if allowed) and has no usable RSA key with this `kid`.
    #[error("no signing key with this kid")]
    UnknownKid,
}

/// Why a token was refused. The texts name what failed, never the token or a claim's value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a compact JWS with a JSON header and JSON object payload, or too large.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not `RS256` (for example `none` or `HS256`).
    #[error("algorithm {0} is not allowed; only RS256 is")]
    AlgorithmNotAllowed(String),
    /// The header has no `kid`, so no key can be chosen.
    #[error("the token header has no kid")]
    MissingKid,
    /// The header lists `crit` extensions, which this verifier does not implement.
    #[error("the token header has critical extensions (crit), which are not supported")]
    UnsupportedCritical,
    /// No key could be had for the token's `kid`.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The signature does not match the key.
    #[error("the signature is invalid")]
    BadSignature,
    /// A claim this verifier needs is absent.
    #[error("the {0} claim is missing")]
    MissingClaim(&'static str),
    /// A claim has the wrong type (for example a string `exp`).
    #[error("the {0} claim is malformed")]
    MalformedClaim(&'static str),
    /// `exp` has passed (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// `iss` is not one of the expected issuers.
    #[error("the issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not name the expected audience.
    #[error("the audience is not accepted")]
    WrongAudience,
}

/// What a token must satisfy to be accepted by [`KeyCache::verify_rs256`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtExpectation {
    /// Where the issuer publishes its keys, e.g. `https://www.googleapis.com/oauth2/v3/certs`.
    pub jwks_url: Url,
    /// Accepted `iss` values (Google uses both `https://accounts.google.com` and
    /// `accounts.google.com`); `iss` must equal one of them.
    pub issuers: Vec<String>,
    /// The `aud` this service expects: `aud` must equal it, or be an array containing it.
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

/// A cache of JWKS key sets by URL. Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct KeyCache {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    policy: KeyCachePolicy,
    // URLs come from configuration, never from tokens, so this map stays small.
    slots: Mutex<HashMap<Url, Arc<Slot>>>,
}

/// One JWKS URL's state.
struct Slot {
    /// Held across a fetch, so concurrent callers needing one wait for a single request.
    fetch: tokio::sync::Mutex<()>,
    /// Read on every lookup without waiting for a fetch in flight.
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// The last key set fetched successfully.
    keys: Option<KeySet>,
    /// When the last fetch (successful or not) finished: the floor counts from here.
    last_attempt: Option<Instant>,
    /// Why the last fetch failed, if it did.
    last_error: Option<String>,
    /// Fetches done so far; a waiter that sees it change shares that fetch's outcome.
    attempts: u64,
}

struct KeySet {
    keys: HashMap<String, DecodingKey>,
    expires_at: Instant,
}

/// What a lookup needs.
enum Decision {
    Done(Result<DecodingKey, KeyError>),
    Fetch,
}

impl SlotState {
    fn fresh_keys(&self, now: Instant) -> Option<&KeySet> {
        self.keys.as_ref().filter(|set| set.expires_at > now)
    }

    fn recently_attempted(&self, now: Instant, floor: Duration) -> bool {
        self.last_attempt
            .is_some_and(|at| now.saturating_duration_since(at) < floor)
    }

    fn unavailable(&self) -> KeyError {
        KeyError::Unavailable(
            self.last_error
                .clone()
                .unwrap_or_else(|| "the key set has expired".to_string()),
        )
    }

    /// The answer from what is cached, or whether a fetch is both needed and allowed.
    fn decide(&self, kid: &str, now: Instant, floor: Duration) -> Decision {
        let recent = self.recently_attempted(now, floor);
        match self.fresh_keys(now) {
            Some(set) => match set.keys.get(kid) {
                Some(key) => Decision::Done(Ok(key.clone())),
                // An unknown kid may be a key rotated in since the last fetch, or a forgery:
                // refetch, but never more than once per floor.
                None if recent => Decision::Done(Err(self.outcome_error())),
                None => Decision::Fetch,
            },
            // Key sets live at least the floor, so a recent attempt with nothing fresh failed.
            None if recent => Decision::Done(Err(self.unavailable())),
            None => Decision::Fetch,
        }
    }

    /// The answer from what is cached, fetching no more (after a fetch, ours or another's).
    fn resolve(&self, kid: &str, now: Instant) -> Result<DecodingKey, KeyError> {
        match self.fresh_keys(now) {
            Some(set) => set
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| self.outcome_error()),
            // No stale set is served: an expired set whose refetch failed is not trusted.
            None => Err(self.unavailable()),
        }
    }

    /// A kid missing from a fresh set: unknown if the last fetch worked, else perhaps rotated in
    /// at a server we could not reach, which is worth a retry.
    fn outcome_error(&self) -> KeyError {
        match self.last_error {
            Some(_) => self.unavailable(),
            None => KeyError::UnknownKid,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent under a panic (every update is a plain assignment).
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyCache {
    /// A cache fetching with `http` (whose redirect and proxy settings apply) under `policy`.
    pub fn new(http: reqwest::Client, policy: KeyCachePolicy) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                policy,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The policy this cache runs under.
    pub fn policy(&self) -> &KeyCachePolicy {
        &self.inner.policy
    }

    /// The RSA signing key `kid` published at `jwks_url`.
    ///
    /// Fetches the JWKS when the URL was never fetched or its set has expired, and refetches
    /// once for an unknown `kid` (a rotation) when the last fetch is older than
    /// [`KeyCachePolicy::min_refetch_interval`]. Concurrent callers share one fetch per URL.
    /// Only keys with `kty` `RSA`, `use` absent or `sig`, `alg` absent or `RS256` and a
    /// modulus of at least 2048 bits are kept.
    ///
    /// Fails closed: an expired set is never served, even when its refetch fails, and failed
    /// fetches count against the floor too, so a down key server is asked at most once per
    /// floor while every lookup needing it gets [`KeyError::Unavailable`].
    pub async fn key(&self, jwks_url: &Url, kid: &str) -> Result<DecodingKey, KeyError> {
        let floor = self.inner.policy.min_refetch_interval;
        let slot = self.slot(jwks_url);
        let seen = {
            let state = lock(&slot.state);
            match state.decide(kid, Instant::now(), floor) {
                Decision::Done(result) => return result,
                Decision::Fetch => state.attempts,
            }
        };

        // If the caller fetching is cancelled mid-request, the lock is released with nothing
        // recorded and the next waiter fetches instead.
        let _single_flight = slot.fetch.lock().await;
        {
            let state = lock(&slot.state);
            let now = Instant::now();
            // Someone fetched while we waited: share that outcome rather than fetch again,
            // or waiters behind a dead server would each wait out their own timeout.
            if state.attempts != seen {
                return state.resolve(kid, now);
            }
            if let Decision::Done(result) = state.decide(kid, now, floor) {
                return result;
            }
        }

        let fetched = self.fetch(jwks_url).await;
        let mut state = lock(&slot.state);
        let now = Instant::now();
        state.attempts = state.attempts.saturating_add(1);
        state.last_attempt = Some(now);
        match fetched {
            Ok((keys, ttl)) => {
                metrics::counter!("jwks_fetches_total", "outcome" => "ok").increment(1);
                let ttl = ttl.clamp(floor, self.inner.policy.max_ttl.max(floor));
                state.keys = Some(KeySet {
                    keys,
                    expires_at: now.checked_add(ttl).unwrap_or(now),
                });
                state.last_error = None;
            }
            Err(error) => {
                metrics::counter!("jwks_fetches_total", "outcome" => "error").increment(1);
                // The host only: a JWKS URL's query could carry a credential.
                let host = jwks_url.host_str().unwrap_or("");
                tracing::warn!(host, %error, "JWKS fetch failed");
                // A still-fresh set stays in use; an expired one is no longer served.
                state.last_error = Some(error);
            }
        }
        state.resolve(kid, now)
    }

    /// Verifies an RS256 `token` against `expectation` and returns its claims.
    ///
    /// The header must say `alg: RS256` (anything else, `none` and `HS256` included, is refused
    /// before any key is looked at) and name a `kid`; the signature must verify with that key
    /// from [`JwtExpectation::jwks_url`]; `exp` is required and must not have passed, `nbf` and
    /// `iat` when present must not be ahead, `iss` must be one of the issuers and `aud` must
    /// name the audience, all with the leeway.
    pub async fn verify_rs256(
        &self,
        token: &str,
        expectation: &JwtExpectation,
    ) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed("the token is too large"));
        }
        let header = read_header(token)?;
        if header.alg.as_deref() != Some("RS256") {
            return Err(JwtError::AlgorithmNotAllowed(printable(
                header.alg.as_deref().unwrap_or("(absent)"),
            )));
        }
        if header.crit.is_some() {
            return Err(JwtError::UnsupportedCritical);
        }
        let kid = header
            .kid
            .filter(|kid| !kid.is_empty())
            .ok_or(JwtError::MissingKid)?;
        let key = self.key(&expectation.jwks_url, &kid).await?;

        // The library checks the signature only; the claims are checked below, with our own
        // overflow-free arithmetic and exact rules.
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| signature_error(&e))?
            .claims;
        check_claims(&claims, expectation, crate::domain::now().timestamp())?;
        Ok(claims)
    }

    fn slot(&self, url: &Url) -> Arc<Slot> {
        lock(&self.inner.slots)
            .entry(url.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    fetch: tokio::sync::Mutex::new(()),
                    state: Mutex::new(SlotState::default()),
                })
            })
            .clone()
    }

    /// One GET of the JWKS: its usable keys and how long they may be kept.
    async fn fetch(&self, url: &Url) -> Result<(HashMap<String, DecodingKey>, Duration), String> {
        let policy = &self.inner.policy;
        let mut response = self
            .inner
            .http
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .timeout(policy.fetch_timeout)
            .send()
            .await
            // Without the URL, which the caller's logs already know.
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the JWKS server answered HTTP {}", status.as_u16()));
        }
        let ttl = cache_ttl(response.headers()).unwrap_or(policy.default_ttl);
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err("the JWKS is too large".to_string());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            if body.len().saturating_add(chunk.len()) > MAX_JWKS_BYTES {
                return Err("the JWKS is too large".to_string());
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_jwks(&body)?;
        Ok((keys, ttl))
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

/// `max-age` minus `Age` from the response headers, if it gives one (`no-store` and `no-cache`
/// count as zero, which the floor then raises).
fn cache_ttl(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, argument) = directive.split_once('=').unwrap_or((directive, ""));
            let name = name.trim().to_ascii_lowercase();
            match name.as_str() {
                "no-store" | "no-cache" => return Some(Duration::ZERO),
                "max-age" => {
                    // An unparseable max-age is ignored, as RFC 9111 allows; a huge one is
                    // capped by max_ttl later.
                    if let Ok(secs) = argument.trim().trim_matches('"').parse::<u64>() {
                        max_age = Some(secs);
                    }
                }
                _ => {}
            }
        }
    }
    let age = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    max_age.map(|secs| Duration::from_secs(secs.saturating_sub(age)))
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Value>,
}

/// One JWK, leniently: a key with unexpected fields is skipped, not the whole set.
#[derive(Deserialize)]
struct RsaJwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    key_ops: Option<Vec<String>>,
    n: String,
    e: String,
}

/// The usable RSA verification keys of a JWKS document, by `kid`.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, DecodingKey>, String> {
    let jwks: Jwks =
        serde_json::from_slice(body).map_err(|_| "the response is not a JWKS".to_string())?;
    let mut keys = HashMap::new();
    for value in jwks.keys {
        let Ok(jwk) = serde_json::from_value::<RsaJwk>(value) else {
            continue;
        };
        let usable = jwk.kty == "RSA"
            && jwk.use_.as_deref().is_none_or(|u| u == "sig")
            && jwk.alg.as_deref().is_none_or(|a| a == "RS256")
            && jwk
                .key_ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|op| op == "verify"));
        let Some(kid) = jwk.kid.filter(|kid| !kid.is_empty() && usable) else {
            continue;
        };
        if modulus_bits(&jwk.n) < MIN_RSA_MODULUS_BITS {
            continue;
        }
        let Ok(key) = DecodingKey::from_rsa_components(&jwk.n, &jwk.e) else {
            continue;
        };
        // A kid listed twice is ambiguous; the first one wins, as a JWKS lists its keys in
        // order of preference.
        keys.entry(kid).or_insert(key);
    }
    Ok(keys)
}

/// The bit length of a base64url big-endian modulus (0 if it does not decode).
fn modulus_bits(n: &str) -> usize {
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(n.trim_end_matches('=')) else {
        return 0;
    };
    let Some(first) = bytes.iter().position(|&b| b != 0) else {
        return 0;
    };
    let significant = bytes.len().saturating_sub(first);
    let leading = usize::try_from(bytes[first].leading_zeros()).unwrap_or(0);
    significant.saturating_mul(8).saturating_sub(leading)
}

/// The JOSE header fields this verifier looks at.
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<Value>,
}

fn read_header(token: &str) -> Result<Header, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three dot-separated parts"));
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed("the header is not base64url"))?;
    serde_json::from_slice(&json)
        .map_err(|_| JwtError::Malformed("the header is not a JSON object"))
}

/// An attacker-chosen `alg`, made safe to show: short and printable.
fn printable(alg: &str) -> String {
    let shown: String = alg
        .chars()
        .take(16)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    format!("{shown:?}")
}

fn signature_error(error: &jsonwebtoken::errors::Error) -> JwtError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::InvalidAlgorithm => JwtError::AlgorithmNotAllowed("(mismatch)".to_string()),
        ErrorKind::Json(_) => JwtError::Malformed("the payload is not a JSON object"),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            JwtError::Malformed("a part is not base64url-encoded UTF-8")
        }
        // A key that does not parse as RSA, or a signature of the wrong length, is as good as
        // a bad signature: the token is not proven.
        _ => JwtError::BadSignature,
    }
}

/// A NumericDate claim in whole seconds (fractions are dropped, as RFC 7519 allows them).
fn numeric_date(claims: &Claims, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| {
                value
                    .as_f64()
                    .filter(|f| f.is_finite())
                    // Saturating float-to-int conversion: absurd values stay absurd, never wrap.
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or(JwtError::MalformedClaim(name)),
    }
}

/// The time and identity claims, against `now` (Unix seconds).
fn check_claims(claims: &Claims, expectation: &JwtExpectation, now: i64) -> Result<(), JwtError> {
    let leeway = i64::try_from(expectation.leeway_secs).unwrap_or(i64::MAX);
    let exp = numeric_date(claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if nbf > now.saturating_add(leeway) {
            return Err(JwtError::NotYetValid);
        }
    }
    if let Some(iat) = numeric_date(claims, "iat")? {
        if iat > now.saturating_add(leeway) {
            return Err(JwtError::IssuedInFuture);
        }
    }
    match claims.get("iss") {
        None => return Err(JwtError::MissingClaim("iss")),
        Some(Value::String(iss)) => {
            if !expectation.issuers.iter().any(|i| i == iss) {
                return Err(JwtError::WrongIssuer);
            }
        }
        Some(_) => return Err(JwtError::MalformedClaim("iss")),
    }
    let audience_matches = match claims.get("aud") {
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::String(aud)) => *aud == expectation.audience,
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|aud| aud.as_str() == Some(expectation.audience.as_str())),
        Some(_) => return Err(JwtError::MalformedClaim("aud")),
    };
    if !audience_matches {
        return Err(JwtError::WrongAudience);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::future::join_all;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header as JwtHeader};
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    const KEY_1: &str = include_str!("../../tests/keys/jwt-test-rsa-1.pem");
    const KEY_2: &str = include_str!("../../tests/keys/jwt-test-rsa-2.pem");
    const PUBLIC_1: &str = include_str!("../../tests/keys/jwt-test-rsa-1.pub.pem");
    const ISSUER: &str = "https://accounts.google.com";
    const AUDIENCE: &str = "https://connectors.example/webhooks/google";

    fn encoding_key(pem: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test key parses")
    }

    /// The public JWK of a test key, as a JWKS lists it.
    fn jwk(pem: &str, kid: &str) -> Value {
        let jwk = Jwk::from_encoding_key(&encoding_key(pem), Algorithm::RS256).expect("a JWK");
        let mut value = serde_json::to_value(jwk).expect("JWK serializes");
        value["kid"] = json!(kid);
        value["use"] = json!("sig");
        value
    }

    fn jwks(keys: &[Value]) -> Value {
        json!({ "keys": keys })
    }

    fn unix_now() -> i64 {
        crate::domain::now().timestamp()
    }

    fn claims() -> Value {
        let now = unix_now();
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "1234567890",
            "email": "pubsub@project.iam.gserviceaccount.com",
            "iat": now,
            "exp": now + 3600,
        })
    }

    fn sign(pem: &str, kid: &str, claims: &Value) -> String {
        let header = JwtHeader {
            kid: Some(kid.to_string()),
            ..JwtHeader::new(Algorithm::RS256)
        };
        jsonwebtoken::encode(&header, claims, &encoding_key(pem)).expect("token signs")
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    fn policy() -> KeyCachePolicy {
        KeyCachePolicy {
            fetch_timeout: Duration::from_secs(2),
            ..KeyCachePolicy::default()
        }
    }

    fn cache(policy: KeyCachePolicy) -> KeyCache {
        KeyCache::new(reqwest::Client::new(), policy)
    }

    fn expectation(server: &MockServer) -> JwtExpectation {
        JwtExpectation {
            jwks_url: Url::parse(&format!("{}/jwks", server.uri())).expect("a URL"),
            issuers: vec![ISSUER.to_string(), "accounts.google.com".to_string()],
            audience: AUDIENCE.to_string(),
            leeway_secs: 30,
        }
    }

    fn serve(keys: Value) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(keys)
    }

    /// A key server publishing key 1 as `k1`, next to keys that must be skipped.
    async fn key_server() -> MockServer {
        let server = MockServer::start().await;
        let mut encryption = jwk(KEY_2, "enc");
        encryption["use"] = json!("enc");
        let mut other_alg = jwk(KEY_2, "ps256");
        other_alg["alg"] = json!("PS256");
        let ec = json!({ "kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA" });
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(serve(jwks(&[jwk(KEY_1, "k1"), encryption, other_alg, ec])))
            .mount(&server)
            .await;
        server
    }

    async fn fetches(server: &MockServer) -> usize {
        server
            .received_requests()
            .await
            .expect("request recording is on")
            .len()
    }

    #[tokio::test]
    async fn a_valid_token_verifies_and_its_claims_come_back() {
        let server = key_server().await;
        let keys = cache(policy());
        let claims = keys
            .verify_rs256(&sign(KEY_1, "k1", &claims()), &expectation(&server))
            .await
            .expect("a valid token verifies");
        assert_eq!(claims["sub"], "1234567890");
        assert_eq!(claims["aud"], AUDIENCE);

        // The other accepted issuer spelling, and an audience array naming ours.
        let mut other = claims.clone();
        other.insert("iss".into(), json!("accounts.google.com"));
        other.insert("aud".into(), json!(["someone-else", AUDIENCE]));
        keys.verify_rs256(
            &sign(KEY_1, "k1", &Value::Object(other)),
            &expectation(&server),
        )
        .await
        .expect("accepted");
        assert_eq!(fetches(&server).await, 1, "the key set is cached");
    }

    #[tokio::test]
    async fn wrong_claims_are_refused() {
        let server = key_server().await;
        let keys = cache(policy());
        let expect = expectation(&server);
        let now = unix_now();
        let cases: Vec<(Value, JwtError)> = vec![
            (
                json!({ "aud": "https://evil.example" }),
                JwtError::WrongAudience,
            ),
            (json!({ "aud": ["a", "b"] }), JwtError::WrongAudience),
            (
                json!({ "iss": "https://evil.example" }),
                JwtError::WrongIssuer,
            ),
            (
                json!({ "iss": ["https://accounts.google.com"] }),
                JwtError::MalformedClaim("iss"),
            ),
            (json!({ "exp": now - 120 }), JwtError::Expired),
            (
                json!({ "exp": "tomorrow" }),
                JwtError::MalformedClaim("exp"),
            ),
            (json!({ "exp": null }), JwtError::MalformedClaim("exp")),
            (json!({ "nbf": now + 600 }), JwtError::NotYetValid),
            (json!({ "iat": now + 600 }), JwtError::IssuedInFuture),
        ];
        for (change, error) in cases {
            let mut claims = claims();
            for (name, value) in change.as_object().expect("an object") {
                claims[name] = value.clone();
            }
            let refused = keys
                .verify_rs256(&sign(KEY_1, "k1", &claims), &expect)
                .await;
            assert_eq!(refused, Err(error), "{change}");
        }
        for missing in ["exp", "iss", "aud"] {
            let mut claims = claims();
            claims.as_object_mut().expect("an object").remove(missing);
            let refused = keys
                .verify_rs256(&sign(KEY_1, "k1", &claims), &expect)
                .await;
            assert_eq!(refused, Err(JwtError::MissingClaim(missing)));
        }
        // Within the leeway is fine: expired 10 s ago with 30 s of leeway.
        let mut claims = claims();
        claims["exp"] = json!(now - 10);
        keys.verify_rs256(&sign(KEY_1, "k1", &claims), &expect)
            .await
            .expect("within the leeway");
    }

    #[tokio::test]
    async fn forged_signatures_and_algorithms_are_refused() {
        let server = key_server().await;
        let keys = cache(policy());
        let expect = expectation(&server);
        let payload = b64(&claims());

        // alg none, unsigned: refused before any key is fetched.
        let none = format!("{}.{payload}.", b64(&json!({ "alg": "none", "kid": "k1" })));
        let refused = keys.verify_rs256(&none, &expect).await;
        assert_eq!(
            refused,
            Err(JwtError::AlgorithmNotAllowed("\"none\"".into()))
        );
        let no_alg = format!("{}.{payload}.", b64(&json!({ "kid": "k1" })));
        assert!(matches!(
            keys.verify_rs256(&no_alg, &expect).await,
            Err(JwtError::AlgorithmNotAllowed(_))
        ));

        // The classic confusion: HS256 keyed with the RSA public key everyone can download.
        let header = JwtHeader {
            kid: Some("k1".into()),
            ..JwtHeader::new(Algorithm::HS256)
        };
        let hs256 = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(PUBLIC_1.as_bytes()),
        )
        .expect("HS256 signs");
        assert_eq!(
            keys.verify_rs256(&hs256, &expect).await,
            Err(JwtError::AlgorithmNotAllowed("\"HS256\"".into()))
        );
        assert_eq!(fetches(&server).await, 0, "no key was looked at");

        // Signed by another key under k1's kid.
        let impostor = sign(KEY_2, "k1", &claims());
        assert_eq!(
            keys.verify_rs256(&impostor, &expect).await,
            Err(JwtError::BadSignature)
        );
        // A genuine token with a payload changed after signing.
        let genuine = sign(KEY_1, "k1", &claims());
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let mut changed = claims();
        changed["sub"] = json!("someone-else");
        let changed = b64(&changed);
        parts[1] = &changed;
        assert_eq!(
            keys.verify_rs256(&parts.join("."), &expect).await,
            Err(JwtError::BadSignature)
        );
        // Garbage, a missing kid, critical extensions.
        assert!(matches!(
            keys.verify_rs256("not-a-token", &expect).await,
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            keys.verify_rs256("a.b.c.d", &expect).await,
            Err(JwtError::Malformed(_))
        ));
        let kidless = jsonwebtoken::encode(
            &JwtHeader::new(Algorithm::RS256),
            &claims(),
            &encoding_key(KEY_1),
        )
        .expect("signs");
        assert_eq!(
            keys.verify_rs256(&kidless, &expect).await,
            Err(JwtError::MissingKid)
        );
        let crit = format!(
            "{}.{payload}.sig",
            b64(&json!({ "alg": "RS256", "kid": "k1", "crit": ["exp"] }))
        );
        assert_eq!(
            keys.verify_rs256(&crit, &expect).await,
            Err(JwtError::UnsupportedCritical)
        );
    }

    #[tokio::test]
    async fn keys_not_for_rs256_signatures_are_skipped() {
        let server = key_server().await;
        let keys = cache(policy());
        let url = expectation(&server).jwks_url;
        assert!(keys.key(&url, "k1").await.is_ok());
        for kid in ["enc", "ps256", "ec"] {
            assert_eq!(
                keys.key(&url, kid).await.err(),
                Some(KeyError::UnknownKid),
                "{kid}"
            );
        }
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_once_and_finds_a_rotated_in_key() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(serve(jwks(&[jwk(KEY_1, "k1")])))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(serve(jwks(&[jwk(KEY_1, "k1"), jwk(KEY_2, "k2")])))
            .mount(&server)
            .await;
        let floor = Duration::from_millis(200);
        let keys = cache(KeyCachePolicy {
            min_refetch_interval: floor,
            ..policy()
        });
        let expect = expectation(&server);
        keys.verify_rs256(&sign(KEY_1, "k1", &claims()), &expect)
            .await
            .expect("k1 verifies");
        assert_eq!(fetches(&server).await, 1);

        tokio::time::sleep(floor + Duration::from_millis(50)).await;
        keys.verify_rs256(&sign(KEY_2, "k2", &claims()), &expect)
            .await
            .expect("k2 is found after one refetch");
        assert_eq!(fetches(&server).await, 2, "exactly one refetch");
        keys.verify_rs256(&sign(KEY_2, "k2", &claims()), &expect)
            .await
            .expect("k2 is cached now");
        assert_eq!(fetches(&server).await, 2);
    }

    /// A token naming `kid` with a made-up signature: enough for a kid that is never found, and
    /// cheap, so a flood is fast even in a debug build (RSA signing is not).
    fn forged(kid: &str) -> String {
        let header = b64(&json!({ "alg": "RS256", "typ": "JWT", "kid": kid }));
        format!("{header}.{}.c2lnbmF0dXJl", b64(&claims()))
    }

    #[tokio::test]
    async fn a_flood_of_forged_kids_fetches_at_most_once_per_floor() {
        let server = key_server().await;
        let keys = cache(policy());
        let expect = expectation(&server);
        keys.verify_rs256(&sign(KEY_1, "k1", &claims()), &expect)
            .await
            .expect("k1 verifies");
        for i in 0..100 {
            let refused = keys
                .verify_rs256(&forged(&format!("forged-{i}")), &expect)
                .await;
            assert_eq!(refused, Err(JwtError::Key(KeyError::UnknownKid)));
        }
        assert_eq!(
            fetches(&server).await,
            1,
            "the set is younger than the floor"
        );
    }

    #[tokio::test]
    async fn a_concurrent_flood_of_forged_kids_past_the_floor_shares_one_refetch() {
        let server = key_server().await;
        let floor = Duration::from_millis(300);
        let keys = cache(KeyCachePolicy {
            min_refetch_interval: floor,
            ..policy()
        });
        let expect = expectation(&server);
        keys.verify_rs256(&sign(KEY_1, "k1", &claims()), &expect)
            .await
            .expect("k1 verifies");
        let tokens: Vec<String> = (0..100).map(|i| forged(&format!("forged-{i}"))).collect();

        tokio::time::sleep(floor + Duration::from_millis(50)).await;
        let flood = tokens.iter().map(|token| keys.verify_rs256(token, &expect));
        for refused in join_all(flood).await {
            assert_eq!(refused, Err(JwtError::Key(KeyError::UnknownKid)));
        }
        assert_eq!(fetches(&server).await, 2, "one refetch for the whole flood");
    }

    #[tokio::test]
    async fn concurrent_callers_on_a_cold_cache_share_one_fetch() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(serve(jwks(&[jwk(KEY_1, "k1")])).set_delay(Duration::from_millis(200)))
            .mount(&server)
            .await;
        let keys = cache(policy());
        let expect = expectation(&server);
        let token = sign(KEY_1, "k1", &claims());
        let calls = (0..20).map(|_| keys.verify_rs256(&token, &expect));
        for verified in join_all(calls).await {
            verified.expect("verifies");
        }
        assert_eq!(fetches(&server).await, 1, "single flight");
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_failure_too() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(200)))
            .mount(&server)
            .await;
        let keys = cache(KeyCachePolicy {
            min_refetch_interval: Duration::ZERO,
            ..policy()
        });
        let expect = expectation(&server);
        let token = sign(KEY_1, "k1", &claims());
        let calls = (0..20).map(|_| keys.verify_rs256(&token, &expect));
        for refused in join_all(calls).await {
            assert!(
                matches!(refused, Err(JwtError::Key(KeyError::Unavailable(_)))),
                "{refused:?}"
            );
        }
        assert_eq!(fetches(&server).await, 1, "waiters share the failed fetch");
    }

    #[tokio::test]
    async fn an_unreachable_or_broken_key_server_fails_closed() {
        let token = sign(KEY_1, "k1", &claims());
        // Nothing listens: a port that was free a moment ago.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let nowhere = JwtExpectation {
            jwks_url: Url::parse(&format!("http://127.0.0.1:{port}/jwks")).expect("a URL"),
            ..expectation(&MockServer::start().await)
        };
        let refused = cache(policy()).verify_rs256(&token, &nowhere).await;
        assert!(
            matches!(refused, Err(JwtError::Key(KeyError::Unavailable(_)))),
            "{refused:?}"
        );

        let broken = [
            ResponseTemplate::new(500),
            ResponseTemplate::new(404).set_body_json(jwks(&[jwk(KEY_1, "k1")])),
            ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"),
            ResponseTemplate::new(200).set_body_json(json!({ "keys": "k1" })),
            ResponseTemplate::new(200).set_body_string("x".repeat(MAX_JWKS_BYTES + 1)),
            serve(jwks(&[jwk(KEY_1, "k1")])).set_delay(Duration::from_secs(3)),
        ];
        for response in broken {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path("/jwks"))
                .respond_with(response)
                .mount(&server)
                .await;
            let keys = cache(KeyCachePolicy {
                fetch_timeout: Duration::from_millis(300),
                ..policy()
            });
            let refused = keys.verify_rs256(&token, &expectation(&server)).await;
            let Err(JwtError::Key(KeyError::Unavailable(why))) = refused else {
                panic!("not refused as unavailable: {refused:?}");
            };
            assert!(!why.contains("127.0.0.1"), "no URL in {why:?}");
            // A failed fetch also counts against the floor: no retry storm.
            assert_eq!(
                keys.verify_rs256(&token, &expectation(&server)).await,
                Err(JwtError::Key(KeyError::Unavailable(why)))
            );
            assert_eq!(fetches(&server).await, 1);
        }
    }

    #[tokio::test]
    async fn a_fresh_set_outlives_a_failed_refetch_but_an_expired_one_does_not() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(
                serve(jwks(&[jwk(KEY_1, "k1")])).insert_header("cache-control", "max-age=3600"),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(500))
            .mount(&server)
            .await;
        // Both tokens are signed first: RSA signing in a debug build on a busy machine can take
        // longer than the set's lifetime, which starts at the first fetch.
        let token = sign(KEY_1, "k1", &claims());
        let forged = sign(KEY_2, "k9", &claims());
        // max_ttl caps the server's hour.
        let max_ttl = Duration::from_millis(1500);
        let keys = cache(KeyCachePolicy {
            min_refetch_interval: Duration::ZERO,
            max_ttl,
            ..policy()
        });
        let expect = expectation(&server);
        keys.verify_rs256(&token, &expect).await.expect("verifies");

        // The server breaks; an unknown kid's refetch fails, the fresh set still serves k1.
        assert!(matches!(
            keys.verify_rs256(&forged, &expect).await,
            Err(JwtError::Key(KeyError::Unavailable(_)))
        ));
        keys.verify_rs256(&token, &expect)
            .await
            .expect("the fresh set is still used");
        assert_eq!(fetches(&server).await, 2);

        tokio::time::sleep(max_ttl + Duration::from_millis(50)).await;
        assert!(matches!(
            keys.verify_rs256(&token, &expect).await,
            Err(JwtError::Key(KeyError::Unavailable(_)))
        ));
        assert_eq!(fetches(&server).await, 3);
    }

    #[tokio::test]
    async fn cache_control_max_age_is_honoured() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(
                serve(jwks(&[jwk(KEY_1, "k1")]))
                    .insert_header("cache-control", "public, max-age=1, must-revalidate"),
            )
            .mount(&server)
            .await;
        let keys = cache(KeyCachePolicy {
            min_refetch_interval: Duration::from_millis(100),
            ..policy()
        });
        let expect = expectation(&server);
        let token = sign(KEY_1, "k1", &claims());
        keys.verify_rs256(&token, &expect).await.expect("verifies");
        keys.verify_rs256(&token, &expect).await.expect("verifies");
        assert_eq!(fetches(&server).await, 1, "cached for max-age");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        keys.verify_rs256(&token, &expect).await.expect("verifies");
        assert_eq!(fetches(&server).await, 2, "refetched once max-age passed");
    }

    #[test]
    fn cache_control_parsing() {
        fn ttl(pairs: &[(&'static str, &str)]) -> Option<Duration> {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(
                    reqwest::header::HeaderName::from_static(name),
                    value.parse().expect("a header value"),
                );
            }
            cache_ttl(&headers)
        }
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(ttl(&[]), None);
        assert_eq!(
            ttl(&[(
                "cache-control",
                "public, max-age=21442, must-revalidate, no-transform"
            )]),
            secs(21442)
        );
        assert_eq!(ttl(&[("cache-control", "Max-Age = 60")]), secs(60));
        assert_eq!(
            ttl(&[("cache-control", "max-age=600"), ("age", "100")]),
            secs(500)
        );
        assert_eq!(
            ttl(&[("cache-control", "max-age=60"), ("age", "100")]),
            secs(0)
        );
        assert_eq!(ttl(&[("cache-control", "no-store, max-age=60")]), secs(0));
        assert_eq!(ttl(&[("cache-control", "max-age=soon")]), None);
        assert_eq!(
            ttl(&[("cache-control", "max-age=99999999999999999999")]),
            None,
            "beyond u64: ignored, so the default applies"
        );
    }

    #[test]
    fn modulus_bits_counts_significant_bits() {
        assert_eq!(modulus_bits(&URL_SAFE_NO_PAD.encode([0u8, 0x01, 0x00])), 9);
        assert_eq!(modulus_bits(&URL_SAFE_NO_PAD.encode([0x80u8; 256])), 2048);
        assert_eq!(modulus_bits(&URL_SAFE_NO_PAD.encode([0x7fu8; 256])), 2047);
        assert_eq!(modulus_bits("!!"), 0);
        assert_eq!(modulus_bits(""), 0);
    }

    #[test]
    fn short_rsa_keys_are_not_used() {
        let short = json!({ "keys": [{
            "kty": "RSA", "kid": "short", "e": "AQAB",
            "n": URL_SAFE_NO_PAD.encode([0xc5u8; 128]),
        }]});
        let keys = parse_jwks(short.to_string().as_bytes()).expect("a JWKS");
        assert!(keys.is_empty());
    }
}
