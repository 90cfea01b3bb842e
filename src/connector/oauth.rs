//! What a connector tells the OAuth engine: its endpoints and conventions, who an account is,
//! and the tokens of a connection.

use serde_json::{Map, Value};
use url::Url;

use crate::crypto::Secret;
use crate::domain::Timestamp;

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

/// What the provider's redirect brought back, for the code exchange.
#[derive(Clone, Copy, Debug)]
pub struct CodeExchange<'a> {
    pub code: &'a str,
    /// The redirect URI the authorize request named (RFC 6749 §4.1.3).
    pub redirect_uri: &'a str,
    /// The PKCE verifier, when a challenge was sent.
    pub verifier: Option<&'a Secret>,
    /// The redirect's query parameters other than `code`, `state` and `error*` (Zoho's
    /// `accounts-server` and `location`), as sent: untrusted input.
    pub params: &'a [(String, String)],
}

/// Provider state that is not a token and not a secret, kept with a connection (Zoho's data
/// centre, Jira's site, the mailbox address) and shown to Core as `account_details`.
pub type Metadata = Map<String, Value>;

/// Provider state that is secret, sealed with the connection like its tokens and never shown.
#[derive(Clone, Default, PartialEq)]
pub struct ProviderSecrets(Map<String, Value>);

impl ProviderSecrets {
    /// Wraps a map of secret values.
    pub fn new(values: Map<String, Value>) -> Self {
        Self(values)
    }

    /// One value as text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// Whether there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values, for sealing.
    pub fn expose(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl std::fmt::Debug for ProviderSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProviderSecrets({} [redacted])", self.0.len())
    }
}

/// Who the connected account is at the provider, and what to keep about it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalAccount {
    /// Stable id (user id, workspace id, site id).
    pub id: String,
    /// Human-readable name, when the provider gives one.
    pub display_name: Option<String>,
    /// Non-secret provider state to keep with the connection.
    pub metadata: Metadata,
    /// Secret provider state to seal with the connection.
    pub secrets: ProviderSecrets,
}

impl ExternalAccount {
    /// An account with nothing more to keep.
    pub fn new(id: impl Into<String>, display_name: Option<String>) -> Self {
        Self {
            id: id.into(),
            display_name,
            metadata: Metadata::new(),
            secrets: ProviderSecrets::default(),
        }
    }

    /// The account with `metadata` kept beside it.
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// The tokens of a connection, opened from the vault for a provider call.
#[derive(Clone, Debug)]
pub struct ConnectionTokens {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: Option<Timestamp>,
}
