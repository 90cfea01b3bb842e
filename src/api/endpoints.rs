//! `/endpoints`: where Core receives events by push. With `X-Tenant-Id` an endpoint receives
//! that tenant's events and is managed with that header; without it, an operator-wide endpoint
//! receives every tenant's events and is managed without it. Each side sees only its own.

use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Map;
use utoipa::{IntoParams, ToSchema};

pub(super) use super::endpoint_input::parse_body;
use super::endpoint_input::{check_description, check_url, finish, parse_filter};
use super::errors::{ItemErrors, ListErrors};
use crate::domain::{Endpoint, EndpointId, EndpointPatch, EndpointStatus, NewEndpoint, TenantId};
use crate::http::auth::{tenant_header, TENANT_HEADER};
use crate::http::cursor::CursorScope;
use crate::http::query::QueryParams;
use crate::http::{ApiError, AppState, ErrorCode, IdPath, Operator};
use crate::push::{EgressPolicy, SigningSecret};
use crate::store::PageKey;

/// Who manages an endpoint: a tenant (`X-Tenant-Id`), or the operator for every tenant
/// ([`TenantId::NONE`]).
#[derive(Clone, Copy, Debug)]
pub struct Scope(pub TenantId);

impl FromRequestParts<AppState> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Operator::from_request_parts(parts, state).await?;
        if parts.headers.contains_key(TENANT_HEADER) {
            Ok(Scope(tenant_header(&parts.headers)?))
        } else {
            Ok(Scope(TenantId::NONE))
        }
    }
}

/// The optional tenant header of endpoint operations.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ScopeHeader {
    /// The tenant whose endpoint this is; omit it for operator-wide endpoints, which receive
    /// every tenant's events.
    #[serde(rename = "X-Tenant-Id")]
    x_tenant_id: Option<uuid::Uuid>,
}

/// Which events an endpoint receives beyond its tenant and event types.
#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct FilterBody {
    /// Only events of these providers (slugs from `GET /providers`).
    pub(super) providers: Option<Vec<String>>,
    /// Only signals of these kinds (kinds from `GET /providers`); other events pass.
    pub(super) kinds: Option<Vec<String>>,
}

/// A new endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointRequest {
    /// Where events are posted: an `https` URL that resolves to a public address.
    #[schema(example = "https://core.example.com/hooks/poblysh")]
    url: String,
    description: Option<String>,
    /// Event types to receive (default: all): `signal.created`, `connection.created`,
    /// `connection.status_changed`, `subscription.failed`.
    event_types: Option<Vec<String>>,
    filter: Option<FilterBody>,
    /// Include each signal's `payload` in `signal.created` (default `false`).
    include_payload: Option<bool>,
}

/// Changes to an endpoint; members left out stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    url: Option<String>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    /// `null` receives every event type again.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    event_types: Option<Option<Vec<String>>>,
    filter: Option<FilterBody>,
    include_payload: Option<bool>,
    /// `active` enables a disabled endpoint again; `disabled` stops deliveries to it.
    status: Option<EndpointStatus>,
}

/// A member that was given, `null` included.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The last failed attempt.
#[derive(Serialize, ToSchema)]
pub struct FailureView {
    at: DateTime<Utc>,
    /// The HTTP status the endpoint answered, if it answered.
    status_code: Option<u16>,
    /// What went wrong otherwise (`timed out`, `could not connect`, a refused address).
    error: Option<String>,
}

/// A push endpoint.
#[derive(Serialize, ToSchema)]
pub struct EndpointView {
    #[schema(value_type = uuid::Uuid)]
    id: EndpointId,
    /// The tenant whose events it receives; `null` for an operator-wide endpoint.
    tenant_id: Option<uuid::Uuid>,
    url: String,
    description: Option<String>,
    /// `null`: every event type.
    event_types: Option<Vec<String>>,
    filter: FilterBody,
    include_payload: bool,
    status: EndpointStatus,
    /// Why it is disabled (`410 Gone`, five days of failures, or by request).
    disabled_reason: Option<String>,
    last_success_at: Option<DateTime<Utc>>,
    last_failure: Option<FailureView>,
    /// Deliveries waiting; shown by `GET /endpoints/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    backlog: Option<u64>,
    /// The signing secret (`whsec_...`); shown once, when the endpoint is created.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<Endpoint> for EndpointView {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            tenant_id: (e.tenant_id != TenantId::NONE).then_some(e.tenant_id.0),
            url: e.url,
            description: e.description,
            event_types: e
                .filter
                .event_types
                .map(|t| t.iter().map(|t| t.as_str().to_string()).collect()),
            filter: FilterBody {
                providers: e.filter.providers,
                kinds: e.filter.kinds,
            },
            include_payload: e.include_payload,
            status: e.status,
            disabled_reason: e.disabled_reason,
            last_success_at: e.last_success_at,
            last_failure: e.last_failure.map(|f| FailureView {
                at: f.at,
                status_code: f.status_code,
                error: f.error,
            }),
            backlog: None,
            secret: None,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// A page of endpoints, oldest first.
#[derive(Serialize, ToSchema)]
pub struct EndpointList {
    endpoints: Vec<EndpointView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Query parameters of `GET /endpoints`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct EndpointsQuery {
    /// Page size, 1 to 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The secret that signs from now on.
#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    /// The new signing secret (`whsec_...`), shown once.
    secret: String,
    /// Until when the previous secret keeps signing beside it.
    previous_secret_expires_at: DateTime<Utc>,
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// Registers an endpoint and answers its signing secret, once. With `X-Tenant-Id` it receives
/// that tenant's events; without, every tenant's.
#[utoipa::path(
    post,
    path = "/endpoints",
    tag = "endpoints",
    params(ScopeHeader),
    request_body(content = EndpointRequest, content_type = "application/json"),
    security(("operator_token" = [])),
    responses((status = 201, description = "Created; `secret` is shown only now", body = EndpointView), ListErrors)
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    Scope(scope): Scope,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<EndpointView>), ApiError> {
    let request: EndpointRequest = parse_body(&body)?;
    let mut errors = Map::new();
    let policy = EgressPolicy::new(&state.config.push);
    check_url(&policy, &request.url, &mut errors).await;
    check_description(&request.description, &mut errors);
    let filter = parse_filter(&state, request.event_types, request.filter, &mut errors);
    finish(errors)?;
    let id = EndpointId::generate();
    let secret = SigningSecret::generate();
    let new = NewEndpoint {
        id,
        tenant_id: scope,
        url: request.url,
        description: request.description,
        filter,
        include_payload: request.include_payload.unwrap_or(false),
        secret_sealed: secret.seal(&state.vault, scope, id),
        created_at: crate::domain::now(),
    };
    let endpoint = state.store.insert_endpoint(&new).await?;
    let mut view = EndpointView::from(endpoint);
    view.secret = Some(secret.reveal().expose().to_string());
    Ok((StatusCode::CREATED, Json(view)))
}

/// The scope's endpoints, oldest first.
#[utoipa::path(
    get,
    path = "/endpoints",
    tag = "endpoints",
    params(ScopeHeader, EndpointsQuery),
    security(("operator_token" = [])),
    responses((status = 200, body = EndpointList), ListErrors)
)]
pub async fn list_endpoints(
    State(state): State<AppState>,
    Scope(scope): Scope,
    RawQuery(raw): RawQuery,
) -> Result<Json<EndpointList>, ApiError> {
    let mut q = QueryParams::parse::<EndpointsQuery>(raw.as_deref());
    let cursor_scope = CursorScope::new("endpoints", scope, &[]);
    let paging = q.paging(&state.cursors, &cursor_scope)?;
    let rows = state.store.list_endpoints(scope, paging.request()).await?;
    let key = |e: &Endpoint| PageKey {
        at: e.created_at,
        id: e.id.0,
    };
    let (rows, next_cursor) = paging.finish(rows, key, &state.cursors, &cursor_scope);
    Ok(Json(EndpointList {
        endpoints: rows.into_iter().map(EndpointView::from).collect(),
        next_cursor,
    }))
}

/// One endpoint with its health: status, last success, last failure and backlog.
#[utoipa::path(
    get,
    path = "/endpoints/{id}",
    tag = "endpoints",
    params(("id" = uuid::Uuid, Path, description = "Endpoint id"), ScopeHeader),
    security(("operator_token" = [])),
    responses((status = 200, body = EndpointView), ItemErrors)
)]
pub async fn get_endpoint(
    State(state): State<AppState>,
    Scope(scope): Scope,
    IdPath(id): IdPath<EndpointId>,
) -> Result<Json<EndpointView>, ApiError> {
    let endpoint = state
        .store
        .get_endpoint(scope, id)
        .await?
        .ok_or_else(not_found)?;
    let backlog = state.store.endpoint_backlog(id).await?;
    let mut view = EndpointView::from(endpoint);
    view.backlog = Some(backlog);
    Ok(Json(view))
}

/// Changes an endpoint; `status: active` enables a disabled one again.
#[utoipa::path(
    patch,
    path = "/endpoints/{id}",
    tag = "endpoints",
    params(("id" = uuid::Uuid, Path, description = "Endpoint id"), ScopeHeader),
    request_body(content = EndpointUpdate, content_type = "application/json"),
    security(("operator_token" = [])),
    responses((status = 200, body = EndpointView), ItemErrors)
)]
pub async fn update_endpoint(
    State(state): State<AppState>,
    Scope(scope): Scope,
    IdPath(id): IdPath<EndpointId>,
    body: axum::body::Bytes,
) -> Result<Json<EndpointView>, ApiError> {
    let request: EndpointUpdate = parse_body(&body)?;
    let current = state
        .store
        .get_endpoint(scope, id)
        .await?
        .ok_or_else(not_found)?;
    let mut errors = Map::new();
    if let Some(url) = &request.url {
        check_url(&EgressPolicy::new(&state.config.push), url, &mut errors).await;
    }
    if let Some(description) = &request.description {
        check_description(description, &mut errors);
    }
    let filter = if request.event_types.is_some() || request.filter.is_some() {
        let types = match request.event_types {
            Some(types) => types,
            None => current
                .filter
                .event_types
                .map(|t| t.iter().map(|t| t.as_str().to_string()).collect()),
        };
        let body = request.filter.unwrap_or(FilterBody {
            providers: current.filter.providers,
            kinds: current.filter.kinds,
        });
        Some(parse_filter(&state, types, Some(body), &mut errors))
    } else {
        None
    };
    finish(errors)?;
    let patch = EndpointPatch {
        url: request.url,
        description: request.description,
        filter,
        include_payload: request.include_payload,
        status: request.status,
    };
    let updated = state
        .store
        .update_endpoint(scope, id, &patch, crate::domain::now())
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(updated.into()))
}

/// Deletes an endpoint with its deliveries.
#[utoipa::path(
    delete,
    path = "/endpoints/{id}",
    tag = "endpoints",
    params(("id" = uuid::Uuid, Path, description = "Endpoint id"), ScopeHeader),
    security(("operator_token" = [])),
    responses((status = 204, description = "Deleted"), ItemErrors)
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    Scope(scope): Scope,
    IdPath(id): IdPath<EndpointId>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_endpoint(scope, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

/// Replaces the signing secret. The previous one keeps signing beside the new one (both
/// signatures in `webhook-signature`) for `POBLYSH_PUSH_SECRET_OVERLAP_SECS` (default 24 h), so
/// Core can switch without losing a message.
#[utoipa::path(
    post,
    path = "/endpoints/{id}/secret/rotate",
    tag = "endpoints",
    params(("id" = uuid::Uuid, Path, description = "Endpoint id"), ScopeHeader),
    security(("operator_token" = [])),
    responses((status = 200, body = RotatedSecret), ItemErrors)
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Scope(scope): Scope,
    IdPath(id): IdPath<EndpointId>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let now = crate::domain::now();
    let overlap =
        chrono::Duration::from_std(state.config.push.secret_overlap).map_err(ApiError::internal)?;
    let until = now + overlap;
    let secret = SigningSecret::generate();
    let sealed = secret.seal(&state.vault, scope, id);
    if !state
        .store
        .rotate_endpoint_secret(scope, id, &sealed, until, now)
        .await?
    {
        return Err(not_found());
    }
    Ok(Json(RotatedSecret {
        secret: secret.reveal().expose().to_string(),
        previous_secret_expires_at: until,
    }))
}
