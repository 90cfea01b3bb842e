//! The OpenAPI 3.1 document, generated from the routes in [`crate::api`].

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::http::{AppState, ErrorCode, Problem};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Poblysh Connectors API",
        description = "Connect a tenant's SaaS tools and read what happens there as normalized signals.\n\n\
Tenant-scoped operations need `Authorization: Bearer <operator token>` and `X-Tenant-Id: <uuid>`. \
Lists are keyset-paginated: pass `next_cursor` back as `cursor` with the same filters until it is `null`. \
Every error is `application/problem+json` with a stable `code`.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&SecuritySchemes),
    components(schemas(Problem, ErrorCode)),
    tags(
        (name = "operations", description = "Health, readiness, metrics and this document. Public."),
        (name = "providers", description = "The catalogue of providers (public), and what to register at a provider for a tenant's webhook (operator)."),
        (name = "connect", description = "The OAuth journey that creates connections."),
        (name = "connections", description = "A tenant's connections to provider accounts."),
        (name = "signals", description = "Normalized events from connected providers."),
        (name = "jobs", description = "Sync jobs and their outcomes."),
        (name = "webhooks", description = "Provider webhooks, verified by the provider's signature. Public."),
        (name = "configuration", description = "Effective configuration, secrets redacted. Operator only."),
        (name = "endpoints", description = "Push delivery to Core: endpoints that receive events as they happen, signed per Standard Webhooks, with their deliveries. Operator, with `X-Tenant-Id` for a tenant's endpoint."),
        (name = "tenants", description = "A tenant as a whole: erasing everything kept for it. Operator only."),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "An operator token from POBLYSH_OPERATOR_TOKENS (or POBLYSH_OPERATOR_TOKEN), held by Poblysh Core."
                .to_string(),
        );
        components.add_security_scheme("operator_token", SecurityScheme::Http(bearer));
    }
}

/// The documented routes together with the document describing them.
pub fn router() -> (axum::Router<AppState>, OpenApiDoc) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::api::routes())
        .split_for_parts()
}

/// The OpenAPI document.
pub fn spec() -> OpenApiDoc {
    router().1
}

/// The OpenAPI document as pretty JSON with a trailing newline, as committed in
/// `openapi.json` and served at `/openapi.json`.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut text =
            serde_json::to_string_pretty(&spec()).expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}
