//! `GET /endpoints/{id}/deliveries` (what was sent to an endpoint and how it answered) and
//! `POST /endpoints/{id}/replay` (send everything since an instant or after a signal cursor
//! again, with the same `webhook-id`s).

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::endpoints::{parse_body, Scope, ScopeHeader};
use super::errors::ItemErrors;
use crate::domain::{
    parse_rfc3339, ConnectionId, Delivery, DeliveryId, DeliveryStatus, EndpointId, EventId,
};
use crate::http::cursor::{self, CursorScope};
use crate::http::query::QueryParams;
use crate::http::{ApiError, AppState, ErrorCode, IdPath};
use crate::store::{PageKey, ReplayFrom};

/// The most deliveries one replay creates.
const MAX_REPLAY: u32 = 10_000;

/// One delivery of an event to the endpoint.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    #[schema(value_type = uuid::Uuid)]
    id: DeliveryId,
    /// The event's id, sent as `webhook-id` on every attempt and replay.
    #[schema(value_type = uuid::Uuid)]
    event_id: EventId,
    #[schema(example = "signal.created")]
    event_type: String,
    #[schema(value_type = uuid::Uuid)]
    connection_id: ConnectionId,
    status: DeliveryStatus,
    /// Attempts made so far (the schedule allows 8).
    attempt: u32,
    /// When the next attempt is due, while `pending`.
    next_attempt_at: Option<DateTime<Utc>>,
    /// The status the endpoint answered last.
    status_code: Option<u16>,
    /// How long the last attempt took.
    latency_ms: Option<u64>,
    /// What went wrong last without an answer (`timed out`, `could not connect`).
    error: Option<String>,
    /// The start of the last answer's body, at most 4 KB.
    response_body: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type.as_str().to_string(),
            connection_id: d.connection_id,
            status: d.status,
            attempt: d.attempts,
            next_attempt_at: d.next_attempt_at,
            status_code: d.last_status_code,
            latency_ms: d.last_latency_ms,
            error: d.last_error,
            response_body: d.last_response_body,
            created_at: d.created_at,
            updated_at: d.updated_at,
            completed_at: d.completed_at,
        }
    }
}

/// A page of deliveries, newest first.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Query parameters of `GET /endpoints/{id}/deliveries`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DeliveriesQuery {
    /// Page size, 1 to 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// What to send again: give exactly one of `since` and `after_signal_cursor`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Every event the endpoint receives created at or after this instant (RFC 3339).
    #[schema(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// A cursor as `GET /signals` returns it: the `signal.created` events of the signals
    /// after the position it names (later `occurred_at`, then higher id), that is the signals
    /// a reader of the list has not reached. The cursor's signal must be one of the endpoint's
    /// tenant and still in the outbox; otherwise `400 INVALID_CURSOR`.
    after_signal_cursor: Option<String>,
}

/// How many deliveries a replay created.
#[derive(Serialize, ToSchema)]
pub struct ReplayAccepted {
    /// New deliveries queued (at most 10,000 per replay).
    replayed: u64,
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}

/// The endpoint's deliveries, newest first, with each one's last attempt.
#[utoipa::path(
    get,
    path = "/endpoints/{id}/deliveries",
    tag = "endpoints",
    params(("id" = uuid::Uuid, Path, description = "Endpoint id"), ScopeHeader, DeliveriesQuery),
    security(("operator_token" = [])),
    responses((status = 200, body = DeliveryList), ItemErrors)
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Scope(scope): Scope,
    IdPath(id): IdPath<EndpointId>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DeliveryList>, ApiError> {
    let mut q = QueryParams::parse::<DeliveriesQuery>(raw.as_deref());
    let cursor_scope = CursorScope::new("deliveries", scope, &[("endpoint", Some(id.to_string()))]);
    let paging = q.paging(&state.cursors, &cursor_scope)?;
    state
        .store
        .get_endpoint(scope, id)
        .await?
        .ok_or_else(not_found)?;
    let rows = state.store.list_deliveries(id, paging.request()).await?;
    let key = |d: &Delivery| PageKey {
        at: d.created_at,
        id: d.id.0,
    };
    let (rows, next_cursor) = paging.finish(rows, key, &state.cursors, &cursor_scope);
    Ok(Json(DeliveryList {
        deliveries: rows.into_iter().map(DeliveryView::from).collect(),
        next_cursor,
    }))
}

/// Sends again every event the endpoint receives since `since`, or the `signal.created` events
/// of the signals after `after_signal_cursor`: new deliveries of the same events, with the
/// same `webhook-id`s, in order per connection.
#[utoipa::path(
    post,
    path = "/endpoints/{id}/replay",
    tag = "endpoints",
    params(("id" = uuid::Uuid, Path, description = "Endpoint id"), ScopeHeader),
    request_body(content = ReplayRequest, content_type = "application/json"),
    security(("operator_token" = [])),
    responses((status = 202, body = ReplayAccepted), ItemErrors)
)]
pub async fn replay(
    State(state): State<AppState>,
    Scope(scope): Scope,
    IdPath(id): IdPath<EndpointId>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<ReplayAccepted>), ApiError> {
    let request: ReplayRequest = parse_body(&body)?;
    let from = replay_from(&state, &request)?;
    let endpoint = state
        .store
        .get_endpoint(scope, id)
        .await?
        .ok_or_else(not_found)?;
    let replayed = state
        .store
        .replay(&endpoint, &from, MAX_REPLAY, crate::domain::now())
        .await?
        .ok_or_else(|| {
            cursor::invalid("names no signal of this endpoint's tenant in the outbox")
        })?;
    Ok((StatusCode::ACCEPTED, Json(ReplayAccepted { replayed })))
}

/// Where the request asks the replay to start.
fn replay_from(state: &AppState, request: &ReplayRequest) -> Result<ReplayFrom, ApiError> {
    match (&request.since, &request.after_signal_cursor) {
        (Some(since), None) => parse_rfc3339(since)
            .map(ReplayFrom::Since)
            .map_err(|p| ApiError::invalid_field("since", p)),
        (None, Some(c)) => state
            .cursors
            .decode_unscoped(c)
            .map(ReplayFrom::AfterSignal),
        _ => Err(ApiError::invalid_field(
            "since",
            "give exactly one of since and after_signal_cursor",
        )),
    }
}
