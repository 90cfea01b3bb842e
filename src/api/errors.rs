//! The error responses operations share, for the OpenAPI document.

use utoipa::IntoResponses;

use crate::http::Problem;

/// Errors of tenant-scoped list operations.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ListErrors {
    /// A query parameter, the tenant header or the cursor is invalid (`VALIDATION_FAILED`,
    /// `TENANT_HEADER_REQUIRED`, `INVALID_TENANT_ID`, `INVALID_CURSOR`).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// The operator token is missing or wrong (`UNAUTHORIZED`).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Unexpected failure (`INTERNAL_ERROR`).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// The database is unreachable (`SERVICE_UNAVAILABLE`), with `Retry-After`.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Errors of the live signal stream.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum StreamErrors {
    /// A query parameter, the tenant header, `Last-Event-ID` or the cursor is invalid
    /// (`VALIDATION_FAILED`, `TENANT_HEADER_REQUIRED`, `INVALID_TENANT_ID`, `INVALID_CURSOR`).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// The operator token is missing or wrong (`UNAUTHORIZED`).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Unexpected failure (`INTERNAL_ERROR`).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// Every live stream slot of this instance is taken, or the database is unreachable
    /// (`SERVICE_UNAVAILABLE`), with `Retry-After`.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Errors of tenant-scoped operations on one resource by id.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ItemErrors {
    /// The id is not a UUID, or the tenant header is missing or invalid (`VALIDATION_FAILED`,
    /// `TENANT_HEADER_REQUIRED`, `INVALID_TENANT_ID`).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// The operator token is missing or wrong (`UNAUTHORIZED`).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// No such resource for this tenant (`NOT_FOUND`, `CONNECTION_NOT_FOUND`).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Unexpected failure (`INTERNAL_ERROR`).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
    /// The database is unreachable (`SERVICE_UNAVAILABLE`), with `Retry-After`.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Errors of operator-only operations.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum OperatorErrors {
    /// The operator token is missing or wrong (`UNAUTHORIZED`).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Unexpected failure (`INTERNAL_ERROR`).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
}
