//! `GET /providers`: the catalogue of providers this deployment offers.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::connector::AuthType;
use crate::http::AppState;

/// One provider a tenant can connect.
#[derive(Serialize, ToSchema)]
pub struct ProviderView {
    /// Stable identifier, used in routes and filters.
    #[schema(example = "github")]
    slug: &'static str,
    /// Human-readable name.
    #[schema(example = "GitHub")]
    display_name: &'static str,
    auth_type: AuthType,
    /// Scopes requested by default.
    scopes: Vec<String>,
    /// Signal kinds this provider emits today (empty while it emits none).
    kinds: Vec<&'static str>,
    /// Whether its webhook deliveries become signals (or syncs that yield them).
    webhooks: bool,
    /// Whether the sync engine polls it.
    sync: bool,
    /// Whether it has the credentials needed to connect; `POST /connect/{provider}` answers
    /// `409 PROVIDER_NOT_CONFIGURED` otherwise.
    configured: bool,
}

/// The provider catalogue.
#[derive(Serialize, ToSchema)]
pub struct ProviderList {
    providers: Vec<ProviderView>,
}

/// Every provider of this deployment, configured or not, with the signal kinds each emits.
#[utoipa::path(get, path = "/providers", tag = "providers", responses((status = 200, body = ProviderList)))]
pub async fn list_providers(State(state): State<AppState>) -> Json<ProviderList> {
    let providers = state
        .registry
        .entries()
        .iter()
        .map(|entry| {
            let d = entry.descriptor();
            ProviderView {
                slug: d.slug,
                display_name: d.display_name,
                auth_type: d.auth_type,
                scopes: entry.scopes.clone(),
                kinds: d.kinds.to_vec(),
                webhooks: d.webhooks,
                sync: d.sync,
                configured: entry.configured,
            }
        })
        .collect();
    Json(ProviderList { providers })
}
