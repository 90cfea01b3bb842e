//! Revoking a connection's grant at its provider: best effort, never blocking a disconnect.

use super::refresh::open_tokens;
use super::ProviderContext;
use crate::domain::Connection;
use crate::http::AppState;

/// Asks the provider to revoke the connection's grant. Failures are logged, not returned:
/// the tenant's wish to disconnect is honoured either way.
pub async fn revoke_at_provider(state: &AppState, connection: &Connection) {
    let slug = connection.provider.as_str();
    let Ok(tokens) = open_tokens(state, connection).await else {
        return;
    };
    let (Some(entry), Some(settings)) = (state.registry.get(slug), state.config.provider(slug))
    else {
        return;
    };
    let Some(endpoints) = entry
        .connector
        .oauth(settings, &state.config.public_base_url)
    else {
        return;
    };
    let ctx = ProviderContext {
        http: &state.http,
        settings,
    };
    match entry.connector.revoke(ctx, &endpoints, &tokens).await {
        Ok(()) => {
            tracing::info!(provider = slug, connection_id = %connection.id, "grant revoked at the provider")
        }
        Err(err) => {
            tracing::warn!(provider = slug, connection_id = %connection.id, error = %err, "revocation at the provider failed")
        }
    }
}
