//! `POST /webhooks/{provider}/{tenant_id}`: public webhook ingest. The provider's connector
//! verifies the raw body; the delivery is stored in the inbox and only then acknowledged.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::domain::{now, NewWebhookEvent, TenantId};
use crate::http::{ApiError, AppState, ErrorCode, Problem};
use crate::ingest::{Verified, WebhookRejection};

/// Headers never stored with an event: credentials of any kind.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
];

/// The delivery is stored and will be processed.
#[derive(Serialize, ToSchema)]
pub struct WebhookAccepted {
    /// Always `accepted`.
    #[schema(example = "accepted")]
    status: &'static str,
    /// The stored event (the earlier one, for a redelivery).
    event_id: uuid::Uuid,
    /// Whether this delivery was seen before; nothing new was stored.
    duplicate: bool,
}

/// Receives a provider's webhook for one tenant. Answers `202` only once the delivery is
/// durably stored; a redelivery answers `202` with `duplicate: true`. Provider handshakes
/// (such as Slack's `url_verification`) are answered as the provider requires.
#[utoipa::path(
    post,
    path = "/webhooks/{provider}/{tenant_id}",
    tag = "webhooks",
    params(
        ("provider" = String, Path, description = "Provider slug"),
        ("tenant_id" = uuid::Uuid, Path, description = "The tenant the webhook was registered for"),
    ),
    request_body(content = Vec<u8>, description = "The provider's payload, exactly as sent", content_type = "application/json"),
    responses(
        (status = 202, body = WebhookAccepted),
        (status = 200, description = "A provider handshake, answered as the provider requires"),
        (status = 400, description = "Bad tenant id or a delivery missing required headers (`VALIDATION_FAILED`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Signature missing, malformed, wrong, outside the replay window, or no webhook secret configured (`INVALID_SIGNATURE`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown provider (`PROVIDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit (`PAYLOAD_TOO_LARGE`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unreachable (`SERVICE_UNAVAILABLE`); the provider should redeliver", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path((provider, tenant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let entry = state.registry.get(&provider).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ProviderNotFound,
            format!("no provider named {provider:?}"),
        )
    })?;
    let tenant: TenantId = tenant
        .parse()
        .map_err(|_| ApiError::invalid_field("tenant_id", "must be a UUID"))?;
    let settings = state.config.provider(&provider).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ProviderNotFound,
            format!("no provider named {provider:?}"),
        )
    })?;
    let verdict = entry.connector.verify_webhook(settings, &headers, &body);
    let outcome = match &verdict {
        Ok(_) => "verified",
        Err(WebhookRejection::NotConfigured) => "not_configured",
        Err(WebhookRejection::InvalidSignature(_)) => "invalid_signature",
        Err(WebhookRejection::Malformed(_)) => "malformed",
    };
    metrics::counter!("webhook_verifications_total", "provider" => provider.clone(), "outcome" => outcome).increment(1);
    let (dedupe_key, event_type) = match verdict {
        Ok(Verified::Event {
            dedupe_key,
            event_type,
        }) => (dedupe_key, event_type),
        Ok(Verified::Handshake { content_type, body }) => {
            return Ok(
                (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response(),
            );
        }
        Err(WebhookRejection::NotConfigured) => return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            format!(
                "no webhook secret is configured for {provider}; the delivery cannot be verified"
            ),
        )),
        Err(WebhookRejection::InvalidSignature(why)) => {
            return Err(ApiError::new(ErrorCode::InvalidSignature, why));
        }
        Err(WebhookRejection::Malformed(why)) => {
            return Err(ApiError::invalid_field("headers", why))
        }
    };
    let event = NewWebhookEvent {
        id: uuid::Uuid::now_v7(),
        tenant_id: tenant,
        provider: provider.clone(),
        connection_id: None,
        dedupe_key,
        event_type,
        headers: stored_headers(&headers),
        body: body.to_vec(),
        received_at: now(),
    };
    let (event_id, duplicate) = state.store.insert_webhook_event(&event).await?;
    if !duplicate {
        state.inbox.notify();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(WebhookAccepted {
            status: "accepted",
            event_id,
            duplicate,
        }),
    )
        .into_response())
}

/// The headers kept with an event: lower-case names, text values, no credentials.
fn stored_headers(headers: &HeaderMap) -> Map<String, Value> {
    headers
        .iter()
        .filter(|(name, _)| !SECRET_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), Value::from(value.to_str().ok()?)))
        })
        .collect()
}
