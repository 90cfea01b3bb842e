//! The error model: every error is an RFC 9457 `application/problem+json` body with the
//! Poblysh members `code`, `message`, `details`, `retry_after` and `trace_id`. Handlers return
//! [`ApiError`]; this is the only place that turns errors into status codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::trace;
use crate::oauth::FlowError;
use crate::store::StoreError;

/// Base of the stable `type` URIs.
const TYPE_BASE: &str = "https://docs.poblysh.com/errors/";

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

macro_rules! error_codes {
    ($($variant:ident => ($status:ident, $code:literal, $slug:literal, $title:literal)),+ $(,)?) => {
        /// Every error code the API answers with.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ErrorCode {
            $($variant),+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The HTTP status this code is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status),+
                }
            }

            /// The SCREAMING_SNAKE_CASE spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code),+
                }
            }

            /// The stable `type` URI.
            pub fn type_uri(self) -> String {
                let slug = match self {
                    $(ErrorCode::$variant => $slug),+
                };
                format!("{TYPE_BASE}{slug}")
            }

            /// A short, fixed summary.
            pub const fn title(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $title),+
                }
            }
        }
    };
}

error_codes! {
    ValidationFailed => (BAD_REQUEST, "VALIDATION_FAILED", "validation-failed", "Validation failed"),
    TenantHeaderRequired => (BAD_REQUEST, "TENANT_HEADER_REQUIRED", "tenant-header-required", "Tenant header required"),
    InvalidTenantId => (BAD_REQUEST, "INVALID_TENANT_ID", "invalid-tenant-id", "Invalid tenant id"),
    InvalidCursor => (BAD_REQUEST, "INVALID_CURSOR", "invalid-cursor", "Invalid cursor"),
    OauthStateInvalid => (BAD_REQUEST, "OAUTH_STATE_INVALID", "oauth-state-invalid", "OAuth state invalid"),
    OauthDenied => (BAD_REQUEST, "OAUTH_DENIED", "oauth-denied", "OAuth authorization denied"),
    Unauthorized => (UNAUTHORIZED, "UNAUTHORIZED", "unauthorized", "Unauthorized"),
    InvalidSignature => (UNAUTHORIZED, "INVALID_SIGNATURE", "invalid-signature", "Invalid webhook signature"),
    ProviderNotFound => (NOT_FOUND, "PROVIDER_NOT_FOUND", "provider-not-found", "Provider not found"),
    ConnectionNotFound => (NOT_FOUND, "CONNECTION_NOT_FOUND", "connection-not-found", "Connection not found"),
    NotFound => (NOT_FOUND, "NOT_FOUND", "not-found", "Not found"),
    MethodNotAllowed => (METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "method-not-allowed", "Method not allowed"),
    ProviderNotConfigured => (CONFLICT, "PROVIDER_NOT_CONFIGURED", "provider-not-configured", "Provider not configured"),
    ConnectionNotActive => (CONFLICT, "CONNECTION_NOT_ACTIVE", "connection-not-active", "Connection not active"),
    PayloadTooLarge => (PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "payload-too-large", "Payload too large"),
    UriTooLong => (URI_TOO_LONG, "URI_TOO_LONG", "uri-too-long", "URI too long"),
    HeadersTooLarge => (REQUEST_HEADER_FIELDS_TOO_LARGE, "HEADERS_TOO_LARGE", "headers-too-large", "Request headers too large"),
    RateLimited => (TOO_MANY_REQUESTS, "RATE_LIMITED", "rate-limited", "Rate limited"),
    InternalError => (INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal-error", "Internal error"),
    ProviderError => (BAD_GATEWAY, "PROVIDER_ERROR", "provider-error", "Provider error"),
    ServiceUnavailable => (SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", "service-unavailable", "Service unavailable"),
}

impl ErrorCode {
    /// The code a bare status (from a layer or the router) stands for.
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::URI_TOO_LONG => ErrorCode::UriTooLong,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
                ErrorCode::ServiceUnavailable
            }
            s if s.is_client_error() => ErrorCode::ValidationFailed,
            _ => ErrorCode::InternalError,
        }
    }
}

/// The `application/problem+json` body of every error.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct Problem {
    /// A stable URI naming the kind of error.
    #[serde(rename = "type")]
    #[schema(example = "https://docs.poblysh.com/errors/invalid-cursor")]
    pub type_uri: String,
    /// Short summary of the kind of error.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence.
    pub detail: String,
    /// Machine-readable error code.
    pub code: ErrorCode,
    /// Same text as `detail`.
    pub message: String,
    /// Structured context; for validation errors, keyed by field name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The request id, also in the `x-request-id` header and every log line of the request.
    pub trace_id: String,
}

/// An error on its way to the caller.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    details: Option<Value>,
    retry_after: Option<u64>,
    /// The cause, logged for 5xx answers and never shown to the caller.
    source: Option<anyhow::Error>,
}

impl ApiError {
    /// An error with a code and a message for the caller.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
            source: None,
        }
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Asks the caller to wait.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// `400 VALIDATION_FAILED` naming each field and what is wrong with it.
    pub fn validation(fields: Map<String, Value>) -> Self {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let message = format!("invalid request: {}", names.join(", "));
        Self::new(ErrorCode::ValidationFailed, message).with_details(Value::Object(fields))
    }

    /// `400 VALIDATION_FAILED` for one field.
    pub fn invalid_field(field: &str, problem: impl Into<String>) -> Self {
        let mut fields = Map::new();
        fields.insert(field.to_string(), Value::String(problem.into()));
        Self::validation(fields)
    }

    /// `404 PROVIDER_NOT_FOUND` for a slug no provider of this deployment has.
    pub fn unknown_provider(slug: &str) -> Self {
        Self::new(
            ErrorCode::ProviderNotFound,
            format!("no provider named {slug:?}"),
        )
    }

    /// `500 INTERNAL_ERROR`; the cause is logged, not returned.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let mut err = Self::new(ErrorCode::InternalError, "an internal error occurred");
        err.source = Some(cause.into());
        err
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    fn into_problem(self) -> Problem {
        let status = self.code.status();
        Problem {
            type_uri: self.code.type_uri(),
            title: self.code.title().to_string(),
            status: status.as_u16(),
            detail: self.message.clone(),
            code: self.code,
            message: self.message,
            details: self.details,
            retry_after: self.retry_after,
            trace_id: trace::current().unwrap_or_default(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            let mut api = ApiError::new(
                ErrorCode::ServiceUnavailable,
                "the database is unavailable; retry shortly",
            )
            .with_retry_after(5);
            api.source = Some(err.into());
            api
        } else {
            ApiError::internal(err)
        }
    }
}

impl From<FlowError> for ApiError {
    fn from(err: FlowError) -> Self {
        match err {
            FlowError::UnknownProvider(slug) => ApiError::unknown_provider(&slug),
            FlowError::NotConfigured(_) => {
                ApiError::new(ErrorCode::ProviderNotConfigured, err.to_string())
            }
            FlowError::Invalid(fields) => ApiError::validation(fields),
            FlowError::StateInvalid(reason) => {
                ApiError::new(ErrorCode::OauthStateInvalid, err.to_string())
                    .with_details(json!({ "reason": reason }))
            }
            FlowError::Denied {
                ref error,
                ref description,
            } => ApiError::new(ErrorCode::OauthDenied, err.to_string()).with_details(json!({
                "provider_error": error,
                "provider_error_description": description,
            })),
            FlowError::Provider {
                ref provider,
                ref source,
            } => {
                tracing::warn!(provider = %provider, error = %source, "provider call failed during connect");
                ApiError::new(ErrorCode::ProviderError, err.to_string()).with_details(json!({
                    "provider": provider,
                    "provider_error": source.to_string(),
                }))
            }
            FlowError::Store(store) => store.into(),
            FlowError::Internal(cause) => ApiError::internal(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        let status = self.code.status();
        if let Some(cause) = self.source.take() {
            if status.is_server_error() {
                tracing::error!(
                    code = self.code.as_str(),
                    error = format!("{cause:#}"),
                    "request failed"
                );
            }
        }
        let problem = self.into_problem();
        let retry_after = problem.retry_after;
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_screaming_snake_case_and_types_are_stable_uris() {
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(s.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{s}");
            assert_eq!(
                serde_json::to_value(code).expect("serializes"),
                Value::from(s)
            );
            assert!(code.type_uri().starts_with(TYPE_BASE));
        }
    }
}
