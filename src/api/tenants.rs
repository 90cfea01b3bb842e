//! `DELETE /tenant`: erases everything the service keeps for one tenant.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::errors::ListErrors;
use crate::domain::ConnectionStatus;
use crate::http::{ApiError, AppState, Tenant, TenantHeader};
use crate::store::{ConnectionFilter, PageKey, PageRequest, TenantErasure};

/// Connections visited per page while closing them at their providers.
const PAGE: u32 = 100;

/// What erasing the tenant removed, by kind.
#[derive(Serialize, ToSchema)]
pub struct TenantErased {
    /// Connections, each first closed at its provider (subscriptions closed, grant revoked).
    connections: u64,
    /// Provider-side subscriptions (watch channels, dynamic webhooks).
    subscriptions: u64,
    signals: u64,
    jobs: u64,
    /// Stored webhook deliveries, raw bodies included.
    webhook_events: u64,
    /// Connects started and not finished.
    oauth_states: u64,
    /// The tenant's push endpoints.
    push_endpoints: u64,
    /// Deliveries of the tenant's events, to its own and to operator-wide endpoints.
    push_deliveries: u64,
    /// The tenant's events in the push outbox.
    push_events: u64,
}

impl From<TenantErasure> for TenantErased {
    fn from(e: TenantErasure) -> Self {
        Self {
            connections: e.connections,
            subscriptions: e.subscriptions,
            signals: e.signals,
            jobs: e.jobs,
            webhook_events: e.webhook_events,
            oauth_states: e.oauth_states,
            push_endpoints: e.push_endpoints,
            push_deliveries: e.push_deliveries,
            push_events: e.push_events,
        }
    }
}

/// Erases the tenant: every connection not yet revoked has its provider-side subscriptions
/// closed and its grant revoked at the provider (best effort, as on disconnect), then its
/// connections with their tokens and provider secrets, signals, jobs, stored webhook deliveries,
/// unfinished connects, push endpoints and the tenant's push events and deliveries are deleted
/// in one transaction. Answers what was removed; erasing a tenant the service knows nothing of
/// removes nothing. Irreversible.
#[utoipa::path(
    delete,
    path = "/tenant",
    tag = "tenants",
    params(TenantHeader),
    security(("operator_token" = [])),
    responses((status = 200, body = TenantErased), ListErrors)
)]
pub async fn erase_tenant(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<Json<TenantErased>, ApiError> {
    let mut after: Option<PageKey> = None;
    loop {
        let page = state
            .store
            .list_connections(
                tenant,
                &ConnectionFilter::default(),
                PageRequest { after, fetch: PAGE },
            )
            .await?;
        for connection in page
            .iter()
            .filter(|c| c.status != ConnectionStatus::Revoked)
        {
            // Subscriptions first: the provider refuses calls once the grant is revoked.
            crate::subscriptions::close_all(&state, connection).await;
            crate::tokens::revoke::revoke_at_provider(&state, connection).await;
        }
        match page.last() {
            Some(last) if page.len() >= PAGE as usize => {
                after = Some(PageKey {
                    at: last.created_at,
                    id: last.id.0,
                });
            }
            _ => break,
        }
    }
    let erased = state.store.erase_tenant(tenant).await?;
    tracing::info!(
        tenant_id = %tenant,
        connections = erased.connections,
        signals = erased.signals,
        "tenant erased"
    );
    Ok(Json(erased.into()))
}
