//! Revoking a connection's grant at its provider: best effort, never blocking a disconnect.

use super::open_tokens;
use crate::domain::Connection;
use crate::services::Services;

/// Asks the provider to revoke the connection's grant. Failures are logged, not returned:
/// the tenant's wish to disconnect is honoured either way.
pub async fn revoke_at_provider(services: &Services, connection: &Connection) {
    let slug = connection.provider.as_str();
    let Ok(tokens) = open_tokens(services, connection).await else {
        return;
    };
    let Some(entry) = services.registry.get(slug) else {
        return;
    };
    let Some(endpoints) = entry
        .connector
        .oauth(&entry.settings, &services.config.public_base_url)
    else {
        return;
    };
    let ctx = services.provider_context(entry);
    match entry
        .connector
        .revoke(ctx, &endpoints, connection, &tokens)
        .await
    {
        Ok(()) => {
            tracing::info!(provider = slug, connection_id = %connection.id, "grant revoked at the provider")
        }
        Err(err) => {
            tracing::warn!(provider = slug, connection_id = %connection.id, error = %err, "revocation at the provider failed")
        }
    }
}
