//! The API's resources, one module each with its DTOs, handlers and routes. Routes are
//! registered through `utoipa_axum`, so the router and the OpenAPI document come from the
//! same code and cannot drift.

mod bench_floor;
mod config;
mod connect;
mod connections;
mod endpoint_input;
mod endpoints;
mod errors;
mod jobs;
mod meta;
mod providers;
mod push_deliveries;
mod signal_stream;
mod signals;
mod tenant_webhooks;
mod tenants;
mod webhooks;

pub use meta::render_metrics;

/// The benchmark floor route, when `POBLYSH_BENCH_FLOOR_BYTES` turns it on (never documented).
pub fn bench_floor(bytes: usize) -> axum::Router<AppState> {
    bench_floor::router(bytes)
}

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::AppState;

/// The operational routes a worker-only instance serves: health, readiness, metrics.
pub fn operations_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(meta::healthz))
        .routes(routes!(meta::readyz))
        .routes(routes!(meta::metrics))
}

/// Every documented route.
pub fn routes() -> OpenApiRouter<AppState> {
    operations_routes()
        .routes(routes!(meta::root))
        .routes(routes!(meta::openapi_json))
        .routes(routes!(providers::list_providers))
        .routes(routes!(tenant_webhooks::tenant_webhook))
        .routes(routes!(connect::start_connect))
        .routes(routes!(connect::authorize))
        .routes(routes!(connect::callback))
        .routes(routes!(connections::list_connections))
        .routes(routes!(
            connections::get_connection,
            connections::delete_connection
        ))
        .routes(routes!(connections::sync_connection))
        .routes(routes!(signals::list_signals))
        .routes(routes!(signal_stream::stream_signals))
        .routes(routes!(signals::get_signal))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::get_job))
        .routes(routes!(webhooks::receive))
        .routes(routes!(webhooks::receive_app))
        .routes(routes!(config::summary))
        .routes(routes!(config::rate_limit_policy))
        .routes(routes!(tenants::erase_tenant))
        .routes(routes!(
            endpoints::create_endpoint,
            endpoints::list_endpoints
        ))
        .routes(routes!(
            endpoints::get_endpoint,
            endpoints::update_endpoint,
            endpoints::delete_endpoint
        ))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(push_deliveries::list_deliveries))
        .routes(routes!(push_deliveries::replay))
}
