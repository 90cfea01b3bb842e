//! [`FlowError`]: how the connect journey fails. The HTTP edge maps it to problem+json once
//! (`crate::http::error`); nothing here knows status codes.

use serde_json::{json, Map, Value};

use crate::connector::ProviderCallError;
use crate::store::StoreError;

/// How starting or completing a connect failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// No enabled provider has this slug.
    #[error("no provider named {0:?}")]
    UnknownProvider(String),
    /// The provider lacks client credentials.
    #[error("the {0} provider has no client credentials configured")]
    NotConfigured(&'static str),
    /// Input that cannot be used: each field with its problem.
    #[error("invalid request: {}", .0.keys().cloned().collect::<Vec<_>>().join(", "))]
    Invalid(Map<String, Value>),
    /// The callback's state is unknown, expired, used or for another provider.
    #[error("{}", state_message(.0))]
    StateInvalid(&'static str),
    /// The provider redirected back with `error=`.
    #[error("the user or the provider declined the authorization")]
    Denied {
        error: String,
        description: Option<String>,
    },
    /// The provider failed the exchange or the account lookup.
    #[error("the {provider} provider did not complete the connection")]
    Provider {
        provider: String,
        source: ProviderCallError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else (the vault, an impossible conflict).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl FlowError {
    /// One invalid field.
    pub fn invalid(field: &str, problem: &str) -> Self {
        let mut fields = Map::new();
        fields.insert(field.to_string(), json!(problem));
        FlowError::Invalid(fields)
    }

    /// An invalid state, for `reason` (`unknown`, `expired`, `already_used`,
    /// `provider_mismatch`, `browser_mismatch`).
    pub fn state_invalid(reason: &'static str) -> Self {
        FlowError::StateInvalid(reason)
    }
}

fn state_message(reason: &str) -> &'static str {
    match reason {
        "expired" => "the state has expired; start again",
        "already_used" => "the state was already used",
        "provider_mismatch" => "the state was issued for another provider",
        "browser_mismatch" => {
            "the connect was not started in this browser (or Core did not forward its binding); start again"
        }
        _ => "the state is unknown",
    }
}
