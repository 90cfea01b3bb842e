//! Public operational routes: service info, liveness, readiness, metrics and the OpenAPI
//! document. None of them carries tenant data.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::http::{ApiError, AppState, ErrorCode, Problem};

/// What this service is and where its documentation lives.
#[derive(Serialize, ToSchema)]
pub struct ServiceInfo {
    /// Always `poblysh-connectors`.
    service: &'static str,
    /// The running version.
    version: &'static str,
    /// Swagger UI.
    docs: &'static str,
    /// The OpenAPI 3.1 document.
    openapi: &'static str,
}

/// Service name, version and links to the API documentation.
#[utoipa::path(get, path = "/", tag = "operations", responses((status = 200, body = ServiceInfo)))]
pub async fn root() -> Json<ServiceInfo> {
    Json(ServiceInfo {
        service: "poblysh-connectors",
        version: env!("CARGO_PKG_VERSION"),
        docs: "/docs",
        openapi: "/openapi.json",
    })
}

/// Liveness.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves requests.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is up. Does not touch the database.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness and the outcome of each check.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// Each check and its outcome: `database` and `migrations` are `ok`.
    #[schema(value_type = Object, example = json!({"database": "ok", "migrations": "ok"}))]
    checks: serde_json::Value,
}

/// The database is reachable and fully migrated, and the process is not shutting down.
/// Otherwise `503 SERVICE_UNAVAILABLE` with `details.checks` naming what failed.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, body = Readiness),
        (status = 503, description = "Not ready; `details.checks` names each failing check.",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let readiness = state.store.readiness().await;
    let database = if readiness.reachable {
        "ok"
    } else {
        "unreachable"
    };
    let migrations = match (readiness.reachable, readiness.migrated) {
        (true, true) => "ok",
        (true, false) => "pending",
        (false, _) => "unknown",
    };
    let shutdown = if state.is_shutting_down() {
        "in_progress"
    } else {
        "ok"
    };
    let checks = json!({ "database": database, "migrations": migrations, "shutdown": shutdown });
    if database == "ok" && migrations == "ok" && shutdown == "ok" {
        Ok(Json(Readiness {
            status: "ready",
            checks,
        }))
    } else {
        Err(
            ApiError::new(ErrorCode::ServiceUnavailable, "the service is not ready")
                .with_details(json!({ "checks": checks }))
                .with_retry_after(5),
        )
    }
}

/// Prometheus metrics in the text exposition format. When `POBLYSH_METRICS_BIND_ADDR` is set,
/// they are served only on that address.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 404, description = "Metrics are served on a separate address.",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if state.config.metrics_bind_addr.is_some() {
        return ApiError::new(
            ErrorCode::NotFound,
            "metrics are served on a separate address",
        )
        .into_response();
    }
    render_metrics(&state).await
}

/// The metrics page, for the API address or the separate metrics address. The push backlog
/// gauge is read from the store as the page is rendered; without the store the page goes
/// out without it.
pub async fn render_metrics(state: &AppState) -> Response {
    let mut page = state.metrics.render();
    match crate::push::backlog::render(state.store.as_ref()).await {
        Ok(backlog) => page.push_str(&backlog),
        Err(e) => tracing::warn!(error = %e, "the push backlog could not be read for /metrics"),
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        page,
    )
        .into_response()
}

/// This API's OpenAPI 3.1 document (also browsable at `/docs`).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
        .into_response()
}
