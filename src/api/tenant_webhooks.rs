//! `GET /providers/{provider}/webhook`: what to register at a provider so that one tenant's
//! deliveries reach `POST /webhooks/{provider}/{tenant_id}`, secret included.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::connector::join_path;
use crate::http::{ApiError, AppState, ErrorCode, Problem, Tenant, TenantHeader};

/// A tenant's webhook, as it is registered at the provider.
#[derive(Serialize, ToSchema)]
pub struct TenantWebhookView {
    /// The provider slug.
    #[schema(example = "github")]
    provider: &'static str,
    /// The payload URL: `POST /webhooks/{provider}/{tenant_id}` under the service's public
    /// base URL.
    #[schema(
        example = "https://connectors.example.com/webhooks/github/7b0c9c1e-4c1e-4d0a-9a55-1c2f3e4d5a6b"
    )]
    url: String,
    /// The secret the provider signs this tenant's deliveries with. It verifies on this
    /// tenant's URL only; keep it with whoever registers the webhook.
    #[schema(example = "be3bdb1a4382d0ff3b925c9db1fdaa84105cd786d68339dcd9c5159f2632f7d7")]
    secret: String,
    /// The content type to choose.
    #[schema(example = "application/json")]
    content_type: &'static str,
    /// The provider's event types to subscribe to: those that become signals.
    #[schema(example = json!(["issues", "issue_comment", "pull_request", "pull_request_review", "push", "release"]))]
    events: Vec<&'static str>,
}

/// What to register at the provider for this tenant's webhook: the payload URL, its secret
/// (which verifies on this tenant's URL only) and the events to subscribe to. Offered by
/// providers whose webhooks are registered per repository or organization (GitHub); answered
/// `no-store`, since it holds a secret.
#[utoipa::path(
    get,
    path = "/providers/{provider}/webhook",
    tag = "providers",
    params(("provider" = String, Path, description = "Provider slug"), TenantHeader),
    security(("operator_token" = [])),
    responses(
        (status = 200, body = TenantWebhookView),
        (status = 400, description = "The tenant header is missing or invalid (`TENANT_HEADER_REQUIRED`, `INVALID_TENANT_ID`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The operator token is missing or wrong (`UNAUTHORIZED`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown provider (`PROVIDER_NOT_FOUND`), or one whose webhooks are not registered per tenant (`NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The provider's webhook secret is not configured (`PROVIDER_NOT_CONFIGURED`)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Unexpected failure (`INTERNAL_ERROR`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The service is overloaded or shutting down (`SERVICE_UNAVAILABLE`), with `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn tenant_webhook(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let (entry, settings) = state
        .registry
        .get(&provider)
        .zip(state.config.provider(&provider))
        .ok_or_else(|| ApiError::unknown_provider(&provider))?;
    let slug = entry.descriptor().slug;
    let registration = entry
        .connector
        .tenant_webhook(settings, tenant)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "{slug} webhooks are not registered per tenant; see the provider's guide for where they are set up"
                ),
            )
        })?;
    let secret = registration.secret.ok_or_else(|| {
        ApiError::new(
            ErrorCode::ProviderNotConfigured,
            format!("POBLYSH_{}_WEBHOOK_SECRET is not set", slug.to_uppercase()),
        )
    })?;
    let view = TenantWebhookView {
        provider: slug,
        url: join_path(
            &state.config.public_base_url,
            &format!("/webhooks/{slug}/{tenant}"),
        )
        .to_string(),
        secret: secret.expose().to_string(),
        content_type: registration.content_type,
        events: registration.events.to_vec(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response())
}
