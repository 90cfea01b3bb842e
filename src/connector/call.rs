//! Calling a provider: the HTTP client, how a call fails ([`ProviderCallError`]), and the
//! OAuth token and revocation requests every connector may use.

use std::time::Duration;

use axum::body::Bytes;
use reqwest::header::{ACCEPT, RETRY_AFTER};
use serde_json::{Map, Value};

use super::token::body_to_map;
use super::{ClientAuth, OAuthEndpoints, ProviderSettings};
use crate::crypto::Secret;

/// How a call to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderCallError {
    /// The grant (code or refresh token) is invalid, expired or revoked: the user must connect again.
    #[error("the provider rejected the grant: {0}")]
    InvalidGrant(String),
    /// The access token was refused.
    #[error("the provider refused the access token")]
    Unauthorized,
    /// The provider asked us to slow down.
    #[error("rate limited by the provider")]
    RateLimited { retry_after: Option<u64> },
    /// The provider answered in a way we cannot use (4xx, error body, malformed response).
    #[error("the provider answered badly: {0}")]
    Rejected(String),
    /// The provider could not be reached or failed (network, timeout, 5xx); worth retrying.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// What the connection is for no longer exists at the provider (a deleted site): retrying
    /// cannot help, so the connection moves to `error` with this message.
    #[error("{0}")]
    Gone(String),
}

impl ProviderCallError {
    /// The label of this outcome in metrics (`provider_calls_total`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            ProviderCallError::InvalidGrant(_) => "invalid_grant",
            ProviderCallError::Unauthorized => "unauthorized",
            ProviderCallError::RateLimited { .. } => "rate_limited",
            ProviderCallError::Rejected(_) => "rejected",
            ProviderCallError::Unavailable(_) => "unavailable",
            ProviderCallError::Gone(_) => "gone",
        }
    }
}

/// Everything a connector needs to call its provider.
#[derive(Clone, Copy)]
pub struct ProviderContext<'a> {
    pub http: &'a reqwest::Client,
    pub settings: &'a ProviderSettings,
}

/// The HTTP client for provider calls: bounded time, no redirects to unexpected hosts.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("poblysh-connectors/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is valid")
}

impl ProviderContext<'_> {
    fn client_credentials(&self) -> Result<(&str, &Secret), ProviderCallError> {
        match (&self.settings.client_id, &self.settings.client_secret) {
            (Some(id), Some(secret)) => Ok((id.as_str(), secret)),
            _ => Err(ProviderCallError::Rejected(
                "client credentials are not configured".into(),
            )),
        }
    }

    /// POSTs `form` to the token endpoint, authenticating the client, and returns the status
    /// and the body read as JSON or form.
    pub async fn token_request(
        &self,
        endpoints: &OAuthEndpoints,
        form: &[(&str, &str)],
    ) -> Result<(u16, Map<String, Value>), ProviderCallError> {
        let (client_id, secret) = self.client_credentials()?;
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        let mut request = self
            .http
            .post(endpoints.token_url.clone())
            .header(ACCEPT, "application/json");
        match endpoints.client_auth {
            ClientAuth::RequestBody => {
                fields.push(("client_id", client_id));
                fields.push(("client_secret", secret.expose()));
            }
            ClientAuth::BasicAuth => {
                request = request.basic_auth(client_id, Some(secret.expose()));
            }
        }
        let response = request.form(&fields).send().await.map_err(transport)?;
        let status = response.status().as_u16();
        if status == 429 {
            return Err(rate_limited(&response));
        }
        let body = read_body(response, MAX_BODY_BYTES).await?;
        match body_to_map(&body) {
            Ok(map) => Ok((status, map)),
            Err(_) if status >= 500 => Err(ProviderCallError::Unavailable(format!(
                "token endpoint answered {status}"
            ))),
            Err(err) => Err(err),
        }
    }

    /// Revokes `token` at an RFC 7009 endpoint.
    pub async fn revoke_token(
        &self,
        endpoints: &OAuthEndpoints,
        token: &Secret,
    ) -> Result<(), ProviderCallError> {
        let Some(url) = &endpoints.revoke_url else {
            return Ok(());
        };
        let (client_id, secret) = self.client_credentials()?;
        let response = self
            .http
            .post(url.clone())
            .basic_auth(client_id, Some(secret.expose()))
            .form(&[("token", token.expose())])
            .send()
            .await
            .map_err(transport)?;
        check_status(response.status().as_u16(), "revocation endpoint")
    }
}

/// The most of a provider's answer read into memory: far above any page or token answer.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Reads `response`'s body chunk by chunk, refusing (as `Rejected`) an answer larger than
/// `limit` bytes: one announced by `Content-Length` before reading anything, any other as
/// soon as what arrived passes the limit. Every provider body is read through this, so a
/// provider (or whoever answers in its place) cannot make the service hold an unbounded body.
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, ProviderCallError> {
    let too_large = || {
        ProviderCallError::Rejected(format!(
            "the provider's answer is larger than {limit} bytes"
        ))
    };
    let announced = response.content_length();
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let capacity = announced.map_or(0, |n| usize::try_from(n).unwrap_or(limit));
    let mut body = Vec::with_capacity(capacity.min(limit));
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if chunk.len() > limit - body.len() {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// A transport failure: the provider was not reached or did not answer in time.
pub fn transport(err: reqwest::Error) -> ProviderCallError {
    ProviderCallError::Unavailable(if err.is_timeout() {
        "timed out".to_string()
    } else {
        "could not reach the provider".to_string()
    })
}

/// The longest wait a provider may ask for, in seconds (GitHub's rate-limit window is an
/// hour). A `Retry-After` is a number from the network; anything longer is clamped to this so
/// no later clock arithmetic on it can overflow, and a job is never parked for years.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// A `Retry-After` in seconds, clamped to [`MAX_RETRY_AFTER_SECS`]. Digits too many for a
/// `u64` still mean "a long time"; anything else (an HTTP date, a sign, a fraction) is `None`.
pub fn retry_after_secs(value: &str) -> Option<u64> {
    retry_after_secs_within(value, MAX_RETRY_AFTER_SECS)
}

/// [`retry_after_secs`] with another bound, for a caller that honours longer waits (push
/// delivery to Core waits up to a day).
pub fn retry_after_secs_within(value: &str, max: u64) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().map_or(max, |s| s.min(max)))
}

/// The `Retry-After` header of `headers`, per [`retry_after_secs`].
pub fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after_secs)
}

/// A `429` with its `Retry-After`, if it gave one in seconds.
pub fn rate_limited(response: &reqwest::Response) -> ProviderCallError {
    ProviderCallError::RateLimited {
        retry_after: retry_after_header(response.headers()),
    }
}

/// Maps a status to success or the matching failure.
pub fn check_status(status: u16, what: &str) -> Result<(), ProviderCallError> {
    match status {
        200..=299 => Ok(()),
        401 => Err(ProviderCallError::Unauthorized),
        429 => Err(ProviderCallError::RateLimited { retry_after: None }),
        500..=599 => Err(ProviderCallError::Unavailable(format!(
            "{what} answered {status}"
        ))),
        _ => Err(ProviderCallError::Rejected(format!(
            "{what} answered {status}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    async fn get(url: &str) -> reqwest::Response {
        http_client(Duration::from_secs(5))
            .get(url)
            .send()
            .await
            .expect("answered")
    }

    fn refused(result: Result<Bytes, ProviderCallError>) -> String {
        match result {
            Err(ProviderCallError::Rejected(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_and_larger_ones_refused() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 1000]))
            .mount(&server)
            .await;
        let body = read_body(get(&server.uri()).await, 1000)
            .await
            .expect("read");
        assert_eq!(body.len(), 1000);
        // The Content-Length announces 1000: refused before reading.
        let response = get(&server.uri()).await;
        assert_eq!(response.content_length(), Some(1000));
        assert_eq!(
            refused(read_body(response, 999).await),
            "the provider's answer is larger than 999 bytes"
        );
    }

    /// An answer without `Content-Length` (delimited by the connection closing) is refused as
    /// soon as what arrived passes the limit.
    #[tokio::test]
    async fn a_body_without_content_length_is_refused_past_the_limit() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                for _ in 0..64 {
                    if stream.write_all(&[b'y'; 1024]).is_err() {
                        break;
                    }
                }
            }
        });
        let url = format!("http://{address}/");
        let response = get(&url).await;
        assert_eq!(response.content_length(), None);
        assert_eq!(
            refused(read_body(response, 10_000).await),
            "the provider's answer is larger than 10000 bytes"
        );
        let body = read_body(get(&url).await, 64 * 1024).await.expect("read");
        assert_eq!(body.len(), 64 * 1024);
        server.join().expect("server");
    }

    #[test]
    fn retry_after_is_clamped_and_never_panics() {
        assert_eq!(retry_after_secs("17"), Some(17));
        assert_eq!(retry_after_secs(" 0 "), Some(0));
        assert_eq!(retry_after_secs("3600"), Some(MAX_RETRY_AFTER_SECS));
        for huge in [
            "3601",
            "10000000000000",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999999999999999",
        ] {
            assert_eq!(retry_after_secs(huge), Some(MAX_RETRY_AFTER_SECS), "{huge}");
        }
        for junk in [
            "",
            "-1",
            "+5",
            "1e13",
            "1.5",
            "soon",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(retry_after_secs(junk), None, "{junk}");
        }
    }
}
