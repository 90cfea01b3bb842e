//! OAuth 2.0, provider-agnostic: minting single-use states and PKCE verifiers, building
//! authorize URLs, exchanging codes, refreshing and revoking tokens. Providers describe their
//! endpoints and quirks through [`crate::providers::Connector`]; nothing here names one.

pub mod client;
pub mod flow;
pub mod pkce;
pub mod refresh;
pub mod revoke;
mod token;

use url::Url;

use crate::crypto::Secret;
use crate::domain::Timestamp;

pub use client::ProviderContext;
pub use token::{standard_token_response, TokenSet};

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body.
    RequestBody,
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    BasicAuth,
}

/// A provider's OAuth 2.0 endpoints and conventions, resolved against its configured base URLs.
#[derive(Clone, Debug)]
pub struct OAuthEndpoints {
    pub authorize_url: Url,
    pub token_url: Url,
    /// RFC 7009-style revocation endpoint, when the provider has one.
    pub revoke_url: Option<Url>,
    /// Whether to send a PKCE S256 challenge.
    pub pkce: bool,
    /// Extra authorize parameters, e.g. `access_type=offline`.
    pub extra_authorize_params: Vec<(&'static str, &'static str)>,
    /// How scopes are joined in the authorize URL (space per RFC 6749; some use commas).
    pub scope_separator: &'static str,
    /// The authorize parameter carrying scopes (`scope` per RFC 6749).
    pub scope_param: &'static str,
    pub client_auth: ClientAuth,
}

/// Who the connected account is at the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalAccount {
    /// Stable id (user id, workspace id, site id).
    pub id: String,
    /// Human-readable name, when the provider gives one.
    pub display_name: Option<String>,
}

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

/// The tokens of a connection, opened from the vault for a provider call.
#[derive(Clone, Debug)]
pub struct ConnectionTokens {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: Option<Timestamp>,
}
