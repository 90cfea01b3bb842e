//! `POST /webhooks/{provider}/{tenant_id}` and `POST /webhooks/{provider}`: webhook ingest.
//! The provider's connector verifies the raw body (or Core's operator token vouches for a
//! relayed event); the delivery is stored in the inbox and only then acknowledged.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use sha2::{Digest, Sha256};

use crate::connector::{Verified, WebhookRejection, WebhookRequest, WebhookUrl};
use crate::domain::{now, ConnectionId, NewWebhookEvent, TenantId};
use crate::http::auth::{bearer_token, tenant_header};
use crate::http::body::{self, HeldBody};
use crate::http::{ApiError, AppState, ErrorCode, Problem};
use crate::services::RegistryEntry;

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
        (status = 400, description = "A tenant id that is not a UUID, or a verified delivery that lacks what the provider always sends, such as its delivery id, or whose delivery id or event type holds a control character (`VALIDATION_FAILED`, `details.delivery` says what); the nil UUID, which belongs to no tenant (`INVALID_TENANT_ID`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Signature missing, malformed, wrong (made with another tenant's secret, too), outside the replay window, signed with the app-wide secret (Slack) for an account the tenant did not connect, sent on a subscription (a Google channel) the tenant does not have open, or no webhook secret configured (`INVALID_SIGNATURE`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown provider (`PROVIDER_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit (`PAYLOAD_TOO_LARGE`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unreachable (`SERVICE_UNAVAILABLE`); the provider should redeliver", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path((provider, tenant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant: TenantId = tenant
        .parse()
        .map_err(|_| ApiError::invalid_field("tenant_id", "must be a UUID"))?;
    if tenant == TenantId::NONE {
        // The nil UUID belongs to no tenant.
        return Err(ApiError::new(
            ErrorCode::InvalidTenantId,
            "tenant_id must not be the nil UUID",
        )
        .with_details(serde_json::json!({ "tenant_id": "must not be the nil UUID" })));
    }
    let url = WebhookUrl::Tenant(tenant);
    let body = checked_body(&state, &provider, url, &headers, body).await?;
    let body = &body.bytes;
    let (dedupe_key, event_type) = match verify(&state, &provider, url, &headers, body).await? {
        Ok(delivery) => delivery,
        Err(handshake) => return Ok(handshake),
    };
    belongs_to_tenant(&state, &provider, tenant, &headers, body).await?;
    let connection = opened_through(&state, &provider, tenant, &headers).await?;
    let stored = store(
        &state, tenant, &provider, connection, dedupe_key, event_type, &headers, body,
    )
    .await?;
    Ok(accepted(stored.0, stored.1))
}

/// Receives a webhook without a tenant in the path, from two kinds of caller.
///
/// - **Poblysh Core relaying an event** (operator token, `X-Tenant-Id`, optional
///   `X-Connection-Id`): stored for that tenant. `Idempotency-Key` names the delivery
///   (default: the SHA-256 of the body); `X-Event-Type` its type.
/// - **A provider with one webhook URL per app** (no `Authorization`; a Slack app's Events
///   API, a GitHub App): the provider's signature is verified, and the event is stored for
///   every tenant with an active connection to the account it names, and for no one else.
///   An event naming no connected account is kept as `unmatched`. Gmail's Pub/Sub pushes
///   carry their own `Authorization: Bearer` token (Google's OIDC token): there, a bearer
///   token that is not an operator token is the provider's, and verified as such.
#[utoipa::path(
    post,
    path = "/webhooks/{provider}",
    tag = "webhooks",
    params(
        ("provider" = String, Path, description = "Provider slug"),
        ("X-Tenant-Id" = Option<uuid::Uuid>, Header, description = "With an operator token: the tenant the relayed event belongs to"),
        ("X-Connection-Id" = Option<uuid::Uuid>, Header, description = "With an operator token: the connection it belongs to"),
        ("Idempotency-Key" = Option<String>, Header, description = "With an operator token: the delivery's identity; redeliveries share it"),
        ("X-Event-Type" = Option<String>, Header, description = "With an operator token: the provider's event type"),
    ),
    request_body(content = Vec<u8>, description = "The provider's payload, exactly as sent", content_type = "application/json"),
    security((), ("operator_token" = [])),
    responses(
        (status = 202, body = WebhookAccepted),
        (status = 200, description = "A provider handshake, answered as the provider requires"),
        (status = 400, description = "Bad headers, or a delivery id or event type holding a control character (`VALIDATION_FAILED`, `TENANT_HEADER_REQUIRED`, `INVALID_TENANT_ID`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong operator token (`UNAUTHORIZED`) or bad signature (`INVALID_SIGNATURE`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown provider (`PROVIDER_NOT_FOUND`) or connection (`CONNECTION_NOT_FOUND`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit (`PAYLOAD_TOO_LARGE`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unreachable (`SERVICE_UNAVAILABLE`)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn receive_app(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        // A provider that signs its deliveries with a bearer token (Pub/Sub push) sends one
        // too: only an operator token makes the delivery a relay then.
        let provider_bearer = state
            .registry
            .get(&provider)
            .is_some_and(|e| e.connector.app_webhook_bearer());
        let operator = bearer_token(&headers).is_some_and(|t| state.operators.verify(t));
        if !provider_bearer || operator {
            return relay(&state, &provider, &headers, body).await;
        }
    }
    let body = checked_body(&state, &provider, WebhookUrl::App, &headers, body).await?;
    let body = &body.bytes;
    let (dedupe_key, event_type) =
        match verify(&state, &provider, WebhookUrl::App, &headers, body).await? {
            Ok(delivery) => delivery,
            Err(handshake) => return Ok(handshake),
        };
    let connector = provider_entry(&state, &provider)?.connector;
    let connections = match connector.webhook_account(&headers, body) {
        Some(account) => {
            state
                .store
                .connections_for_account(&provider, &account)
                .await?
        }
        None => Vec::new(),
    };
    // One event per tenant that connected the account; the nil tenant keeps what no one owns.
    let mut targets: Vec<(TenantId, Option<ConnectionId>)> = Vec::new();
    for c in &connections {
        match targets.iter_mut().find(|(t, _)| *t == c.tenant_id) {
            Some(target) => target.1 = None,
            None => targets.push((c.tenant_id, Some(c.id))),
        }
    }
    if targets.is_empty() {
        // Kept, outside every tenant, and never routed (the inbox marks it `unmatched`).
        targets.push((TenantId::NONE, None));
    }
    let mut first = None;
    let mut all_duplicates = true;
    for (tenant, connection) in targets {
        let (id, duplicate) = store(
            &state,
            tenant,
            &provider,
            connection,
            dedupe_key.clone(),
            event_type.clone(),
            &headers,
            body,
        )
        .await?;
        first.get_or_insert(id);
        all_duplicates &= duplicate;
    }
    Ok(accepted(first.unwrap_or_default(), all_duplicates))
}

/// Refuses a delivery signed with an app-wide secret at a tenant's URL unless the account it
/// names is one that tenant connected: the signature says who sent it, not for whom.
async fn belongs_to_tenant(
    state: &AppState,
    provider: &str,
    tenant: TenantId,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let connector = provider_entry(state, provider)?.connector;
    if !connector.app_wide_secret() {
        return Ok(());
    }
    let owned = match connector.webhook_account(headers, body) {
        Some(account) => state
            .store
            .connections_for_account(provider, &account)
            .await?
            .iter()
            .any(|c| c.tenant_id == tenant),
        None => false,
    };
    if owned {
        return Ok(());
    }
    count_verification(
        provider,
        Err(&WebhookRejection::InvalidSignature(String::new())),
    );
    Err(ApiError::new(
        ErrorCode::InvalidSignature,
        format!(
            "this {provider} delivery is signed with the app's secret for an account this tenant did not connect; the app's URL is /webhooks/{provider}"
        ),
    ))
}

/// For a provider whose deliveries come only on subscriptions this service opened (a push
/// channel): the connection that opened the one a delivery claims, which the tenant must have
/// open with the same id and state; refused otherwise, as a channel token proves only that the
/// channel id was once ours. `None` for a provider whose deliveries claim no subscription.
async fn opened_through(
    state: &AppState,
    provider: &str,
    tenant: TenantId,
    headers: &HeaderMap,
) -> Result<Option<ConnectionId>, ApiError> {
    let connector = provider_entry(state, provider)?.connector;
    let Some(claim) = connector.claimed_subscription(headers) else {
        return Ok(None);
    };
    match crate::subscriptions::claimed(state, tenant, provider, &claim).await? {
        Some(subscription) => Ok(Some(subscription.connection_id)),
        None => {
            count_verification(
                provider,
                Err(&WebhookRejection::InvalidSignature(String::new())),
            );
            Err(ApiError::new(
                ErrorCode::InvalidSignature,
                format!(
                    "this {provider} delivery names a subscription this tenant does not have open"
                ),
            ))
        }
    }
}

/// An event relayed by Core with its operator token.
async fn relay(
    state: &AppState,
    provider: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let token = bearer_token(headers).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "an operator token is required: Authorization: Bearer <token>",
        )
    })?;
    if !state.operators.verify(token) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the operator token is not valid",
        ));
    }
    provider_entry(state, provider)?;
    let tenant = tenant_header(headers)?;
    let connection = match headers.get("x-connection-id") {
        None => None,
        Some(value) => {
            let id: ConnectionId = value
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ApiError::invalid_field("X-Connection-Id", "must be a UUID"))?;
            let found = state.store.get_connection(tenant, id).await?;
            match found {
                Some(c) if c.provider == provider => Some(c.id),
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::ConnectionNotFound,
                        "no such connection",
                    ))
                }
            }
        }
    };
    let body = read_body(state, body).await?;
    let body = &body.bytes[..];
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let dedupe_key = text("idempotency-key")
        .filter(|k| !k.is_empty() && k.len() <= 200)
        .unwrap_or_else(|| format!("sha256:{}", crate::crypto::hex(&Sha256::digest(body))));
    let event_type = text("x-event-type");
    printable_delivery(&dedupe_key, event_type.as_deref())?;
    let (id, duplicate) = store(
        state, tenant, provider, connection, dedupe_key, event_type, headers, body,
    )
    .await?;
    Ok(accepted(id, duplicate))
}

fn provider_entry<'a>(state: &'a AppState, provider: &str) -> Result<&'a RegistryEntry, ApiError> {
    state
        .registry
        .get(provider)
        .ok_or_else(|| ApiError::unknown_provider(provider))
}

/// The body of a delivery to `url`, read only once the provider is known and its headers pass
/// the provider's precheck (its secret configured, its signature headers present and well
/// formed), within the body limit and the budget of bytes in flight.
async fn checked_body(
    state: &AppState,
    provider: &str,
    url: WebhookUrl,
    headers: &HeaderMap,
    body: Body,
) -> Result<HeldBody, ApiError> {
    let entry = provider_entry(state, provider)?;
    if let Err(rejection) = entry
        .connector
        .precheck_webhook(&entry.settings, url, headers)
    {
        count_verification(provider, Err(&rejection));
        return Err(rejection_error(provider, rejection));
    }
    read_body(state, body).await
}

async fn read_body(state: &AppState, body: Body) -> Result<HeldBody, ApiError> {
    body::read(body, state.config.max_body_bytes, &state.webhook_bodies).await
}

fn count_verification(provider: &str, verdict: Result<(), &WebhookRejection>) {
    let outcome = match verdict {
        Ok(()) => "verified",
        Err(WebhookRejection::NotConfigured) => "not_configured",
        Err(WebhookRejection::InvalidSignature(_)) => "invalid_signature",
        Err(WebhookRejection::Malformed(_)) => "malformed",
    };
    metrics::counter!("webhook_verifications_total", "provider" => provider.to_string(), "outcome" => outcome).increment(1);
}

/// The answer to a rejected delivery.
fn rejection_error(provider: &str, rejection: WebhookRejection) -> ApiError {
    match rejection {
        WebhookRejection::NotConfigured => ApiError::new(
            ErrorCode::InvalidSignature,
            format!(
                "no webhook secret is configured for {provider}; the delivery cannot be verified"
            ),
        ),
        WebhookRejection::InvalidSignature(why) => ApiError::new(ErrorCode::InvalidSignature, why),
        WebhookRejection::Malformed(why) => ApiError::invalid_field("delivery", why),
    }
}

/// Runs the provider's verification of a delivery to `url`: its dedupe key and type, or the
/// handshake answer to send back as is.
async fn verify(
    state: &AppState,
    provider: &str,
    url: WebhookUrl,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Result<(String, Option<String>), Response>, ApiError> {
    let entry = provider_entry(state, provider)?;
    let request = WebhookRequest {
        settings: &entry.settings,
        url,
        headers,
        body,
        keys: &state.keys,
        public_base_url: &state.config.public_base_url,
    };
    let verdict = entry.connector.verify_webhook(request).await;
    count_verification(provider, verdict.as_ref().map(|_| ()));
    match verdict {
        Ok(Verified::Event {
            dedupe_key,
            event_type,
        }) => {
            printable_delivery(&dedupe_key, event_type.as_deref())?;
            Ok(Ok((dedupe_key, event_type)))
        }
        Ok(Verified::Handshake { content_type, body }) => Ok(Err((
            StatusCode::OK,
            [(header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response())),
        Err(rejection) => Err(rejection_error(provider, rejection)),
    }
}

/// Refuses a delivery whose identity or type holds a control character, whichever provider
/// (or relay) named it: they are stored as text, and PostgreSQL refuses a NUL in text (a `500`
/// otherwise). The same malformed-delivery answer as a provider's own checks.
fn printable_delivery(dedupe_key: &str, event_type: Option<&str>) -> Result<(), ApiError> {
    if dedupe_key.contains(char::is_control) {
        return Err(ApiError::invalid_field(
            "delivery",
            "the delivery id must not contain control characters",
        ));
    }
    if event_type.is_some_and(|t| t.contains(char::is_control)) {
        return Err(ApiError::invalid_field(
            "delivery",
            "the event type must not contain control characters",
        ));
    }
    Ok(())
}

/// Stores a delivery in the inbox and wakes the worker; durable when it returns.
#[allow(clippy::too_many_arguments)]
async fn store(
    state: &AppState,
    tenant: TenantId,
    provider: &str,
    connection_id: Option<ConnectionId>,
    dedupe_key: String,
    event_type: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(uuid::Uuid, bool), ApiError> {
    let provider_secrets = state
        .registry
        .get(provider)
        .map_or(&[][..], |entry| entry.connector.webhook_secret_headers());
    let event = NewWebhookEvent {
        id: uuid::Uuid::now_v7(),
        tenant_id: tenant,
        provider: provider.to_string(),
        connection_id,
        dedupe_key,
        event_type,
        headers: stored_headers(headers, provider_secrets),
        body: body.to_vec(),
        received_at: now(),
    };
    let (id, duplicate) = state.store.insert_webhook_event(&event).await?;
    if !duplicate {
        state.inbox.notify();
    }
    Ok((id, duplicate))
}

fn accepted(event_id: uuid::Uuid, duplicate: bool) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(WebhookAccepted {
            status: "accepted",
            event_id,
            duplicate,
        }),
    )
        .into_response()
}

/// The headers kept with an event: lower-case names, text values, no credentials and none of
/// the provider's secret headers.
fn stored_headers(headers: &HeaderMap, provider_secrets: &[&str]) -> Map<String, Value> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !SECRET_HEADERS.contains(&name) && !provider_secrets.contains(&name)
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), Value::from(value.to_str().ok()?)))
        })
        .collect()
}
