//! Caller authentication: the operator bearer token (Poblysh Core) and the tenant header.
//! Tokens are compared as SHA-256 digests in constant time, against every configured token,
//! so neither timing nor the number of tokens tells an attacker anything.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use utoipa::IntoParams;

use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use crate::crypto::Secret;
use crate::domain::TenantId;

/// The header carrying the tenant.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// Digests of the accepted operator tokens.
#[derive(Clone)]
pub struct OperatorTokens {
    digests: Vec<[u8; 32]>,
}

impl OperatorTokens {
    /// Accepts any of `tokens`.
    pub fn new(tokens: &[Secret]) -> Self {
        Self {
            digests: tokens.iter().map(|t| digest(t.expose())).collect(),
        }
    }

    /// Whether `presented` is one of the tokens.
    pub fn verify(&self, presented: &str) -> bool {
        let presented = digest(presented);
        let mut matched = Choice::from(0);
        for known in &self.digests {
            matched |= known.ct_eq(&presented);
        }
        matched.into()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Proof that the caller presented a valid operator token.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "an operator token is required: Authorization: Bearer <token>",
            )
        })?;
        if state.operators.verify(token) {
            Ok(Operator)
        } else {
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the operator token is not valid",
            ))
        }
    }
}

/// The bearer token of an `Authorization` header, if it has one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// An operator-authenticated request on behalf of one tenant (`X-Tenant-Id`).
#[derive(Debug, Clone, Copy)]
pub struct Tenant(pub TenantId);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Authentication first: an anonymous caller learns nothing about header rules.
        Operator::from_request_parts(parts, state).await?;
        let tenant = tenant_header(&parts.headers)?;
        tracing::Span::current().record("tenant_id", tracing::field::display(tenant));
        Ok(Tenant(tenant))
    }
}

/// The tenant named by `X-Tenant-Id`: required, and a UUID.
pub fn tenant_header(headers: &HeaderMap) -> Result<TenantId, ApiError> {
    let value = headers.get(TENANT_HEADER).ok_or_else(|| {
        ApiError::new(
            ErrorCode::TenantHeaderRequired,
            "the X-Tenant-Id header is required",
        )
    })?;
    let text = value.to_str().unwrap_or_default();
    TenantId::parse_named(text).map_err(|problem| {
        ApiError::new(ErrorCode::InvalidTenantId, format!("X-Tenant-Id {problem}"))
            .with_details(serde_json::json!({ "X-Tenant-Id": problem }))
    })
}

/// The tenant header, for the OpenAPI description of tenant-scoped operations.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TenantHeader {
    /// The tenant the request acts for: a UUID chosen by Poblysh Core.
    #[serde(rename = "X-Tenant-Id")]
    #[allow(dead_code)]
    x_tenant_id: uuid::Uuid,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_token_is_accepted_and_nothing_else() {
        let tokens = OperatorTokens::new(&[
            Secret::new("first-token-0000"),
            Secret::new("second-token-000"),
        ]);
        assert!(tokens.verify("first-token-0000"));
        assert!(tokens.verify("second-token-000"));
        assert!(!tokens.verify("first-token-000"));
        assert!(!tokens.verify(""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().expect("header"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().expect("header"));
        assert_eq!(bearer_token(&headers), None);
    }
}
