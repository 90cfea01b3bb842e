//! Calling a provider: the HTTP client, how a call fails ([`ProviderCallError`]), and the
//! OAuth token and revocation requests every connector may use.

use std::time::Duration;

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
        let body = response.bytes().await.map_err(transport)?;
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
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        value
            .parse::<u64>()
            .map_or(MAX_RETRY_AFTER_SECS, |s| s.min(MAX_RETRY_AFTER_SECS)),
    )
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
