//! `GET /connections` and `GET /connections/{id}`: a tenant's connections, never with tokens;
//! `DELETE /connections/{id}` disconnects; `POST /connections/{id}/sync` enqueues a sync.

use axum::extract::{RawQuery, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::errors::{ItemErrors, ListErrors};
use super::jobs::JobView;
use crate::domain::{
    Connection, ConnectionId, ConnectionStatus, JobType, Subscription, SubscriptionId,
    SubscriptionStatus,
};
use crate::http::cursor::CursorScope;
use crate::http::query::{self, QueryParams};
use crate::http::{ApiError, AppState, ErrorCode, IdPath, Problem, Tenant, TenantHeader};
use crate::services::Registry;
use crate::store::{ConnectionFilter, IfRunning, PageKey};

/// The account at the provider a connection is for.
#[derive(Serialize, ToSchema)]
pub struct ExternalAccount {
    /// The provider's id of the account (user, workspace, site).
    id: String,
    /// The account's name at the provider, when known.
    display_name: Option<String>,
}

/// A tenant's connection to one provider account.
#[derive(Serialize, ToSchema)]
pub struct ConnectionView {
    #[schema(value_type = uuid::Uuid)]
    pub(super) id: ConnectionId,
    /// Provider slug.
    #[schema(example = "github")]
    provider: String,
    status: ConnectionStatus,
    /// Scopes granted.
    scopes: Vec<String>,
    external_account: ExternalAccount,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// When the access token expires, if it does.
    token_expires_at: Option<DateTime<Utc>>,
    /// When the last sync finished successfully.
    last_synced_at: Option<DateTime<Utc>>,
    /// The last sync or refresh error, cleared by the next success.
    last_error: Option<String>,
    /// What the service keeps about the account at the provider, beside its tokens: the
    /// provider's own facts (a Jira site's URL, a mailbox address, a Zoho data centre). Never
    /// secret; its members depend on the provider.
    #[schema(value_type = Object, example = json!({ "site_url": "https://your-domain.atlassian.net", "site_name": "your-domain" }))]
    account_details: serde_json::Map<String, serde_json::Value>,
    /// What the service keeps open at the provider for it (watch channels, dynamic webhooks);
    /// empty for providers that need nothing opened. Shown by `GET /connections/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions: Option<Vec<SubscriptionView>>,
}

impl From<Connection> for ConnectionView {
    fn from(c: Connection) -> Self {
        Self {
            id: c.id,
            provider: c.provider,
            status: c.status,
            scopes: c.scopes,
            external_account: ExternalAccount {
                id: c.external_account_id,
                display_name: c.external_account_name,
            },
            created_at: c.created_at,
            updated_at: c.updated_at,
            token_expires_at: c.token_expires_at,
            last_synced_at: c.last_synced_at,
            last_error: c.last_error,
            account_details: c.metadata,
            subscriptions: None,
        }
    }
}

/// A subscription the service keeps open at the provider for a connection (a watch channel,
/// a dynamic webhook): opened after connect, renewed before it expires, closed on disconnect.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionView {
    #[schema(value_type = uuid::Uuid)]
    id: SubscriptionId,
    /// What it watches at the provider.
    #[schema(example = "events")]
    resource: String,
    status: SubscriptionStatus,
    /// When the provider lets it lapse, if it does; renewed well before.
    expires_at: Option<DateTime<Utc>>,
    /// Why the last attempt to open or renew it failed; cleared by the next success. A
    /// `failed` subscription is tried again later; the connection keeps syncing meanwhile.
    last_error: Option<String>,
}

impl From<Subscription> for SubscriptionView {
    fn from(s: Subscription) -> Self {
        Self {
            id: s.id,
            resource: s.resource,
            status: s.status,
            expires_at: s.expires_at,
            last_error: s.last_error,
        }
    }
}

/// A page of connections, oldest first.
#[derive(Serialize, ToSchema)]
pub struct ConnectionList {
    connections: Vec<ConnectionView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// Query parameters of `GET /connections`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ConnectionsQuery {
    /// Only connections to this provider (a slug from `GET /providers`).
    provider: Option<String>,
    /// Only connections in this status.
    #[param(value_type = Option<ConnectionStatus>)]
    status: Option<String>,
    /// Page size, 1 to 100.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page, with the same filters.
    cursor: Option<String>,
}

/// Parses a provider filter against the registry.
pub(super) fn provider_filter(registry: &Registry) -> impl Fn(&str) -> Result<String, String> + '_ {
    move |slug| match registry.parse(slug) {
        Some(slug) => Ok(slug.to_string()),
        None => Err(format!(
            "unknown provider; known: {}",
            registry.slugs().join(", ")
        )),
    }
}

/// The tenant's connections, oldest first, filtered by provider and status.
#[utoipa::path(
    get,
    path = "/connections",
    tag = "connections",
    params(TenantHeader, ConnectionsQuery),
    security(("operator_token" = [])),
    responses((status = 200, body = ConnectionList), ListErrors)
)]
pub async fn list_connections(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RawQuery(raw): RawQuery,
) -> Result<Json<ConnectionList>, ApiError> {
    let mut q = QueryParams::parse::<ConnectionsQuery>(raw.as_deref());
    let filter = ConnectionFilter {
        provider: q.take("provider", provider_filter(&state.registry)),
        status: q.take("status", query::one_of::<ConnectionStatus>),
    };
    let scope = CursorScope::new(
        "connections",
        tenant,
        &[
            ("provider", filter.provider.clone()),
            ("status", filter.status.map(|s| s.to_string())),
        ],
    );
    let paging = q.paging(&state.cursors, &scope)?;
    let rows = state
        .store
        .list_connections(tenant, &filter, paging.request())
        .await?;
    let key = |c: &Connection| PageKey {
        at: c.created_at,
        id: c.id.0,
    };
    let (rows, next_cursor) = paging.finish(rows, key, &state.cursors, &scope);
    Ok(Json(ConnectionList {
        connections: rows.into_iter().map(ConnectionView::from).collect(),
        next_cursor,
    }))
}

/// One connection of the tenant, with its health, last sync and provider-side subscriptions.
#[utoipa::path(
    get,
    path = "/connections/{id}",
    tag = "connections",
    params(("id" = uuid::Uuid, Path, description = "Connection id"), TenantHeader),
    security(("operator_token" = [])),
    responses((status = 200, body = ConnectionView), ItemErrors)
)]
pub async fn get_connection(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath<ConnectionId>,
) -> Result<Json<ConnectionView>, ApiError> {
    let connection = state
        .store
        .get_connection(tenant, id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::ConnectionNotFound, "no such connection"))?;
    let subscriptions = state.store.connection_subscriptions(tenant, id).await?;
    let mut view = ConnectionView::from(connection);
    view.subscriptions = Some(subscriptions.into_iter().map(Into::into).collect());
    Ok(Json(view))
}

/// Query parameters of `DELETE /connections/{id}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DeleteQuery {
    /// Also delete the connection's signals and jobs (default `false`).
    #[param(value_type = Option<bool>, default = false)]
    purge: Option<String>,
}

/// Disconnects: closes the connection's provider-side subscriptions and revokes the grant at
/// the provider where it supports that (both best effort), erases the sealed tokens and
/// provider secrets, and stops syncing. The connection stays listed as `revoked` with its
/// signals, unless `purge=true` deletes it with its signals and jobs (`204`).
#[utoipa::path(
    delete,
    path = "/connections/{id}",
    tag = "connections",
    params(("id" = uuid::Uuid, Path, description = "Connection id"), TenantHeader, DeleteQuery),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "Revoked", body = ConnectionView),
        (status = 204, description = "Purged"),
        ItemErrors
    )
)]
pub async fn delete_connection(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath<ConnectionId>,
    RawQuery(raw): RawQuery,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let mut q = QueryParams::parse::<DeleteQuery>(raw.as_deref());
    let purge = q.take("purge", query::boolean).unwrap_or(false);
    q.check()?;
    let not_found = || ApiError::new(ErrorCode::ConnectionNotFound, "no such connection");
    let connection = state
        .store
        .get_connection(tenant, id)
        .await?
        .ok_or_else(not_found)?;
    // Subscriptions first: the provider refuses calls once the grant is revoked.
    crate::subscriptions::close_all(&state, &connection).await;
    crate::tokens::revoke::revoke_at_provider(&state, &connection).await;
    if purge {
        state.store.delete_connection(tenant, id).await?;
        return Ok(axum::http::StatusCode::NO_CONTENT.into_response());
    }
    let revoked = state
        .store
        .revoke_connection(tenant, id, crate::domain::now())
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(ConnectionView::from(revoked)).into_response())
}

/// Enqueues an incremental sync of the connection now. A connection syncs at most once at a
/// time: when a job is already queued or running (or waiting to retry), that job is answered
/// instead of a new one. A running job may have read its last page before this request, so
/// another sync is queued as soon as it succeeds. Follow the job with `GET /jobs/{id}`.
///
/// Only an `active` connection syncs: any other status answers `409 CONNECTION_NOT_ACTIVE`
/// and enqueues nothing.
#[utoipa::path(
    post,
    path = "/connections/{id}/sync",
    tag = "connections",
    params(("id" = uuid::Uuid, Path, description = "Connection id"), TenantHeader),
    security(("operator_token" = [])),
    responses(
        (status = 202, description = "The queued or running job", body = JobView),
        (status = 409, description = "The connection is not `active` (`CONNECTION_NOT_ACTIVE`); `details.connection_status` says why: `needs_reauth` or `error` (connect again through `POST /connect/{provider}`) or `revoked` (disconnected)", body = Problem, content_type = "application/problem+json"),
        ItemErrors
    )
)]
pub async fn sync_connection(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    IdPath(id): IdPath<ConnectionId>,
) -> Result<(axum::http::StatusCode, Json<JobView>), ApiError> {
    let connection = state
        .store
        .get_connection(tenant, id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::ConnectionNotFound, "no such connection"))?;
    if connection.status != ConnectionStatus::Active {
        return Err(not_active(&connection));
    }
    let job = crate::ingest::sync::new_job(&connection, JobType::Incremental, crate::domain::now());
    let enqueued = state.store.enqueue_sync(&job, IfRunning::FollowUp).await?;
    // This process's workers, if it runs any, start now rather than at their next poll.
    state.sync.notify();
    Ok((axum::http::StatusCode::ACCEPTED, Json(enqueued.job.into())))
}

/// `409 CONNECTION_NOT_ACTIVE`: the connection's status and what the caller does about it. A
/// job enqueued anyway would only fail, so the caller hears it now.
fn not_active(connection: &Connection) -> ApiError {
    let (status, provider) = (connection.status, &connection.provider);
    let reconnect = format!("connect again through POST /connect/{provider}");
    let what_to_do = match status {
        ConnectionStatus::NeedsReauth => {
            format!("the provider no longer accepts its authorization; {reconnect}")
        }
        ConnectionStatus::Revoked => {
            format!("it was disconnected; to sync this account again, {reconnect}")
        }
        ConnectionStatus::Error | ConnectionStatus::Active => {
            format!("see its last_error; {reconnect}")
        }
    };
    ApiError::new(
        ErrorCode::ConnectionNotActive,
        format!("the connection's status is {status}, not active: {what_to_do}"),
    )
    .with_details(serde_json::json!({
        "connection_status": status,
        "provider": provider,
    }))
}
