//! Closing a connection's subscriptions on disconnect: marked `closed` first (so a renewal
//! running at the same moment closes what it opens instead of recording it), then closed at
//! the provider, best effort, while the grant still works.

use url::Url;

use crate::connector::{join_path, SubscriptionContext};
use crate::domain::{now, Connection};
use crate::services::Services;
use crate::tokens;

/// Closes every subscription of `connection`. Failures at the provider are logged, not
/// returned: the tenant's wish to disconnect is honoured either way.
pub async fn close_all(services: &Services, connection: &Connection) {
    let closed = match services
        .store
        .close_subscriptions(connection.tenant_id, connection.id, now())
        .await
    {
        Ok(closed) => closed,
        Err(err) => {
            tracing::warn!(connection_id = %connection.id, error = %err, "could not close the connection's subscriptions");
            return;
        }
    };
    let open: Vec<_> = closed.iter().filter(|s| s.external_id.is_some()).collect();
    let Some(entry) = services.registry.get(&connection.provider) else {
        return;
    };
    if open.is_empty() {
        return;
    }
    let (token, secrets) = match (
        tokens::access_token(services, connection).await,
        tokens::open_secrets(services, connection).await,
    ) {
        (Ok(token), Ok(secrets)) => (token, secrets),
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(connection_id = %connection.id, error = %err, "subscriptions not closed at the provider: no usable token");
            return;
        }
    };
    let webhook_url: Url = join_path(
        &services.config.public_base_url,
        &format!("/webhooks/{}/{}", connection.provider, connection.tenant_id),
    );
    for subscription in open {
        let ctx = SubscriptionContext {
            provider: services.provider_context(entry),
            connection,
            secrets: &secrets,
            access_token: &token,
            subscription,
            webhook_url: &webhook_url,
        };
        let outcome = entry.connector.close_subscription(ctx).await;
        let label = outcome.as_ref().map_or_else(|e| e.label(), |_| "ok");
        metrics::counter!("subscription_steps_total", "provider" => connection.provider.clone(), "step" => "closed", "outcome" => label).increment(1);
        if let Err(err) = outcome {
            tracing::warn!(provider = %connection.provider, subscription_id = %subscription.id, error = %err, "closing a subscription at the provider failed");
        }
    }
}
