//! `GET /signals` and `GET /signals/{id}`: a tenant's normalized signals, newest first.

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::connections::provider_filter;
use super::errors::{ItemErrors, ListErrors};
use crate::domain::{format_time, Actor, ConnectionId, Signal, SignalId, SignalKind, TenantId};
use crate::http::cursor::CursorScope;
use crate::http::query::{self, QueryParams};
use crate::http::{ApiError, AppState, ErrorCode, IdPath, Tenant, TenantHeader};
use crate::services::Registry;
use crate::store::{PageKey, SignalFilter};

/// A normalized event from a provider.
#[derive(Serialize, ToSchema)]
pub struct SignalView {
    #[schema(value_type = uuid::Uuid)]
    id: SignalId,
    #[schema(value_type = uuid::Uuid)]
    connection_id: ConnectionId,
    /// Provider slug.
    #[schema(example = "github")]
    provider: String,
    /// What happened, e.g. `pr_merged` (see `GET /providers` for each provider's kinds).
    #[schema(example = "pr_merged")]
    kind: String,
    /// When it happened at the provider.
    occurred_at: DateTime<Utc>,
    /// When the service learned of it.
    received_at: DateTime<Utc>,
    actor: Option<Actor>,
    title: Option<String>,
    url: Option<String>,
    /// The provider's id of the thing the signal is about.
    external_id: Option<String>,
    /// Normalized fields; present on `GET /signals/{id}` and when `include_payload=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    payload: Option<serde_json::Value>,
}

impl From<Signal> for SignalView {
    fn from(s: Signal) -> Self {
        Self {
            id: s.id,
            connection_id: s.connection_id,
            provider: s.provider,
            kind: s.kind,
            occurred_at: s.occurred_at,
            received_at: s.received_at,
            actor: s.actor,
            title: s.title,
            url: s.url,
            external_id: s.external_id,
            payload: s.payload,
        }
    }
}

/// A page of signals, newest first.
#[derive(Serialize, ToSchema)]
pub struct SignalList {
    signals: Vec<SignalView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Query parameters of `GET /signals`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SignalsQuery {
    /// Only signals from this provider (a slug from `GET /providers`).
    provider: Option<String>,
    /// Only signals of this connection.
    #[param(value_type = Option<uuid::Uuid>)]
    connection_id: Option<String>,
    /// Only signals of this kind (one of the kinds `GET /providers` lists).
    kind: Option<String>,
    /// Only signals that occurred at or after this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    occurred_after: Option<String>,
    /// Only signals that occurred at or before this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    occurred_before: Option<String>,
    /// Include each signal's `payload` (default `false`).
    #[param(value_type = Option<bool>, default = false)]
    include_payload: Option<String>,
    /// Page size, 1 to 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page, with the same filters.
    cursor: Option<String>,
}

/// The tenant's signals, newest first (`occurred_at`, then id), with filters.
#[utoipa::path(
    get,
    path = "/signals",
    tag = "signals",
    params(TenantHeader, SignalsQuery),
    security(("operator_token" = [])),
    responses((status = 200, body = SignalList), ListErrors)
)]
pub async fn list_signals(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RawQuery(raw): RawQuery,
) -> Result<Json<SignalList>, ApiError> {
    let mut q = QueryParams::parse::<SignalsQuery>(raw.as_deref());
    let (filter, scope) = read_filters(&mut q, &state.registry, tenant);
    let paging = q.paging(&state.cursors, &scope)?;
    check_bounds(&filter)?;
    let rows = state
        .store
        .list_signals(tenant, &filter, paging.request())
        .await?;
    let key = |s: &Signal| PageKey {
        at: s.occurred_at,
        id: s.id.0,
    };
    let (rows, next_cursor) = paging.finish(rows, key, &state.cursors, &scope);
    Ok(Json(SignalList {
        signals: rows.into_iter().map(SignalView::from).collect(),
        next_cursor,
    }))
}

/// The filters of `GET /signals` (shared by `GET /signals/stream`) taken from `q`, problems
/// recorded there, and the cursor scope they define: a cursor works only with the filters it
/// was issued for.
pub(super) fn read_filters(
    q: &mut QueryParams,
    registry: &Registry,
    tenant: TenantId,
) -> (SignalFilter, CursorScope) {
    let filter = SignalFilter {
        provider: q.take("provider", provider_filter(registry)),
        connection_id: q.take("connection_id", query::uuid::<ConnectionId>),
        kind: q.take("kind", |k| {
            let kind = SignalKind::parse(k)?;
            if registry.knows_kind(&kind) {
                Ok(kind.to_string())
            } else {
                Err("unknown signal kind; GET /providers lists each provider's kinds".into())
            }
        }),
        occurred_after: q.take("occurred_after", query::timestamp),
        occurred_before: q.take("occurred_before", query::timestamp),
        include_payload: q.take("include_payload", query::boolean).unwrap_or(false),
    };
    let scope = CursorScope::new(
        "signals",
        tenant,
        &[
            ("provider", filter.provider.clone()),
            ("connection_id", filter.connection_id.map(|c| c.to_string())),
            ("kind", filter.kind.clone()),
            (
                "occurred_after",
                filter.occurred_after.as_ref().map(format_time),
            ),
            (
                "occurred_before",
                filter.occurred_before.as_ref().map(format_time),
            ),
        ],
    );
    (filter, scope)
}

/// `400` when the time bounds exclude every instant.
pub(super) fn check_bounds(filter: &SignalFilter) -> Result<(), ApiError> {
    if let (Some(after), Some(before)) = (filter.occurred_after, filter.occurred_before) {
        if after > before {
            return Err(ApiError::invalid_field(
                "occurred_after",
                "must not be later than occurred_before",
            ));
        }
    }
    Ok(())
}

/// One signal of the tenant, with its payload.
#[utoipa::path(
    get,
    path = "/signals/{id}",
    tag = "signals",
    params(("id" = uuid::Uuid, Path, description = "Signal id"), TenantHeader),
    security(("operator_token" = [])),
    responses((status = 200, body = SignalView), ItemErrors)
)]
pub async fn get_signal(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath<SignalId>,
) -> Result<Json<SignalView>, ApiError> {
    let signal = state
        .store
        .get_signal(tenant, id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such signal"))?;
    Ok(Json(signal.into()))
}
