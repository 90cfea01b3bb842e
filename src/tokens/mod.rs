//! A connection's tokens and sealed provider secrets: sealing them for their row, opening them
//! for a provider call, and keeping tokens fresh.
//!
//! Refresh: ahead of expiry by a background task ([`run`]), and once on a `401` through
//! [`refresh_after_unauthorized`]. One refresh per connection at a time: an in-process lock per
//! connection ([`Services::refresh_locks`]) plus the store's cross-instance lock. A rotated refresh
//! token is stored before the new access token is handed out; `invalid_grant` moves the
//! connection to `needs_reauth`; an outage leaves it as it is.

use std::time::Duration;

pub mod revoke;

use serde_json::{Map, Value};

use crate::connector::{ConnectionTokens, ProviderCallError, ProviderSecrets, TokenSet};
use crate::crypto::{Aad, Secret};
use crate::domain::{
    now, Connection, ConnectionId, ConnectionStatus, SealedField, SealedTokens, TenantId, Timestamp,
};
use crate::services::Services;

/// Why no usable token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The connection has no tokens (revoked) or does not exist.
    #[error("the connection has no tokens")]
    Missing,
    /// The provider rejected the refresh token; the tenant must connect again.
    #[error("the connection needs to be authorized again")]
    NeedsReauth,
    /// The provider could not refresh now; try later.
    #[error("token refresh failed: {0}")]
    Provider(#[from] ProviderCallError),
    /// Storage or vault failure.
    #[error("token storage failed: {0}")]
    Internal(#[from] anyhow::Error),
}

/// What a caller needs refreshed.
enum Need<'a> {
    /// A token valid beyond the lead time.
    Fresh,
    /// A token other than the one the provider just refused.
    Replacing(&'a Secret),
}

/// An access token valid beyond the refresh lead time, refreshing first if needed.
pub async fn access_token(state: &Services, connection: &Connection) -> Result<Secret, TokenError> {
    let current = open_tokens(state, connection).await?;
    if !expires_within(current.expires_at, lead(state)) || current.refresh_token.is_none() {
        return Ok(current.access_token);
    }
    refresh(state, connection, Need::Fresh).await
}

/// After the provider refused `rejected`, a replacement: refreshed once, or the one another
/// task refreshed meanwhile.
pub async fn refresh_after_unauthorized(
    state: &Services,
    connection: &Connection,
    rejected: &Secret,
) -> Result<Secret, TokenError> {
    refresh(state, connection, Need::Replacing(rejected)).await
}

async fn refresh(
    state: &Services,
    connection: &Connection,
    need: Need<'_>,
) -> Result<Secret, TokenError> {
    let work = async {
        let _shared = state
            .store
            .lock_connection(connection.id)
            .await
            .map_err(anyhow::Error::from)?;
        refresh_locked(state, connection, need).await
    };
    state.refresh_locks.with(&connection.id, work).await
}

async fn refresh_locked(
    state: &Services,
    connection: &Connection,
    need: Need<'_>,
) -> Result<Secret, TokenError> {
    // Re-read under the lock: whoever held it before may have refreshed already.
    let current = open_tokens(state, connection).await?;
    let done_by_other = match need {
        Need::Fresh => !expires_within(current.expires_at, lead(state)),
        Need::Replacing(rejected) => current.access_token != *rejected,
    };
    if done_by_other {
        return Ok(current.access_token);
    }
    let Some(refresh_token) = current.refresh_token.as_ref() else {
        return Err(needs_reauth(
            state,
            connection,
            "the provider refused the token and there is no refresh token",
        )
        .await);
    };
    let slug = connection.provider.as_str();
    let entry = state.registry.get(slug).ok_or(TokenError::Missing)?;
    let endpoints = entry
        .connector
        .oauth(&entry.settings, &state.config.public_base_url)
        .ok_or(TokenError::Missing)?;
    let outcome = entry
        .connector
        .refresh_tokens(
            state.provider_context(entry),
            &endpoints,
            connection,
            refresh_token,
        )
        .await;
    metrics::counter!("token_refresh_total", "provider" => slug.to_string(), "outcome" => outcome_label(&outcome)).increment(1);
    match outcome {
        Ok(tokens) => {
            // Stored before use: a crash after this line loses nothing, and a rotated
            // refresh token is never held only in memory.
            let sealed = seal_tokens(
                state,
                connection.tenant_id,
                slug,
                connection.id,
                &tokens.access_token,
                tokens.refresh_token.as_ref(),
                tokens.expires_at,
            );
            state
                .store
                .replace_tokens(connection.tenant_id, connection.id, &sealed, now())
                .await
                .map_err(anyhow::Error::from)?;
            tracing::info!(provider = slug, connection_id = %connection.id, "token refreshed");
            Ok(tokens.access_token)
        }
        Err(ProviderCallError::InvalidGrant(why)) => {
            Err(needs_reauth(state, connection, &why).await)
        }
        Err(err) => {
            tracing::warn!(provider = slug, connection_id = %connection.id, error = %err, "token refresh failed");
            Err(TokenError::Provider(err))
        }
    }
}

async fn needs_reauth(state: &Services, connection: &Connection, why: &str) -> TokenError {
    match mark_needs_reauth(state, connection, why).await {
        Ok(_) => TokenError::NeedsReauth,
        Err(err) => TokenError::Internal(err.into()),
    }
}

/// Moves a connection whose grant the provider no longer accepts to `needs_reauth`, with
/// `why` in its `last_error`; returns that message.
pub async fn mark_needs_reauth(
    state: &Services,
    connection: &Connection,
    why: &str,
) -> Result<String, crate::store::StoreError> {
    tracing::warn!(provider = %connection.provider, connection_id = %connection.id, "connection needs reauthorization");
    let message = format!("reauthorization needed: {why}");
    state
        .store
        .set_connection_status(
            connection.tenant_id,
            connection.id,
            ConnectionStatus::NeedsReauth,
            Some(&message),
            now(),
        )
        .await?;
    Ok(message)
}

/// One scan: refreshes every active connection whose token expires within the lead time.
/// Returns how many were refreshed.
pub async fn refresh_due(state: &Services) -> anyhow::Result<usize> {
    let horizon = now() + chrono::Duration::from_std(lead(state))?;
    let due = state
        .store
        .connections_needing_refresh(horizon, 100)
        .await?;
    let mut refreshed = 0;
    for connection in due {
        let id = connection.id;
        // A task of its own, so a panic on one connection's answer is that connection's
        // failure, not the end of the scan for the connections after it.
        let state = state.clone();
        let task =
            tokio::spawn(async move { refresh(&state, &connection, Need::Fresh).await.is_ok() });
        match task.await {
            Ok(true) => refreshed += 1,
            Ok(false) => tracing::debug!(connection_id = %id, "not refreshed"),
            Err(err) => {
                tracing::error!(connection_id = %id, panicked = err.is_panic(), "refreshing a connection failed unexpectedly")
            }
        }
    }
    Ok(refreshed)
}

/// Scans every `POBLYSH_TOKEN_REFRESH_INTERVAL_SECS` until the process stops.
pub async fn run(state: Services) {
    let mut tick = tokio::time::interval(state.config.token_refresh_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state.is_shutting_down() {
            break;
        }
        if let Err(err) = refresh_due(&state).await {
            tracing::warn!(error = format!("{err:#}"), "token refresh scan failed");
        }
    }
}

fn lead(state: &Services) -> Duration {
    state.config.token_refresh_lead
}

fn expires_within(expires_at: Option<Timestamp>, lead: Duration) -> bool {
    let lead = chrono::Duration::from_std(lead).unwrap_or_else(|_| chrono::Duration::minutes(10));
    expires_at.is_some_and(|at| at <= now() + lead)
}

fn outcome_label(outcome: &Result<TokenSet, ProviderCallError>) -> &'static str {
    match outcome {
        Ok(_) => "refreshed",
        Err(ProviderCallError::InvalidGrant(_)) => "invalid_grant",
        Err(ProviderCallError::Unavailable(_) | ProviderCallError::RateLimited { .. }) => {
            "unavailable"
        }
        Err(_) => "rejected",
    }
}

/// Opens a connection's current tokens from the vault.
pub async fn open_tokens(
    state: &Services,
    connection: &Connection,
) -> Result<ConnectionTokens, TokenError> {
    let sealed = state
        .store
        .connection_tokens(connection.tenant_id, connection.id)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or(TokenError::Missing)?;
    let row = connection.id.to_string();
    let aad = |field: SealedField| {
        Aad::new(
            connection.tenant_id,
            &connection.provider,
            &row,
            field.aad_name(),
        )
    };
    let access = sealed.access_token.ok_or(TokenError::Missing)?;
    let access_token = state
        .vault
        .open_str(&access, &aad(SealedField::AccessToken))
        .map_err(|e| TokenError::Internal(e.into()))?;
    let refresh_token = sealed
        .refresh_token
        .map(|r| state.vault.open_str(&r, &aad(SealedField::RefreshToken)))
        .transpose()
        .map_err(|e| TokenError::Internal(e.into()))?;
    Ok(ConnectionTokens {
        access_token,
        refresh_token,
        expires_at: sealed.expires_at,
    })
}

/// Opens a connection's sealed provider secrets (empty when it has none).
pub async fn open_secrets(
    state: &Services,
    connection: &Connection,
) -> Result<ProviderSecrets, TokenError> {
    let Some(sealed) = state
        .store
        .connection_secrets(connection.tenant_id, connection.id)
        .await
        .map_err(anyhow::Error::from)?
    else {
        return Ok(ProviderSecrets::default());
    };
    let aad = Aad::new(
        connection.tenant_id,
        &connection.provider,
        &connection.id.to_string(),
        SealedField::ProviderSecrets.aad_name(),
    );
    let text = state
        .vault
        .open_str(&sealed, &aad)
        .map_err(|e| TokenError::Internal(e.into()))?;
    let values = serde_json::from_str(text.expose())
        .map_err(|e| TokenError::Internal(anyhow::anyhow!("sealed provider secrets: {e}")))?;
    Ok(ProviderSecrets::new(values))
}

/// Seals a token pair for connection `id`.
pub fn seal_tokens(
    services: &Services,
    tenant: TenantId,
    slug: &str,
    id: ConnectionId,
    access: &Secret,
    refresh: Option<&Secret>,
    expires_at: Option<Timestamp>,
) -> SealedTokens {
    let row = id.to_string();
    let aad = |field: SealedField| Aad::new(tenant, slug, &row, field.aad_name());
    SealedTokens {
        access_token: Some(
            services
                .vault
                .seal_str(access, &aad(SealedField::AccessToken)),
        ),
        refresh_token: refresh.map(|r| services.vault.seal_str(r, &aad(SealedField::RefreshToken))),
        expires_at,
    }
}

/// Seals a connection's provider secrets for connection `id`.
pub fn seal_secrets(
    services: &Services,
    tenant: TenantId,
    slug: &str,
    id: ConnectionId,
    secrets: &Map<String, Value>,
) -> Result<Vec<u8>, serde_json::Error> {
    let text = Secret::new(serde_json::to_string(secrets)?);
    let aad = Aad::new(
        tenant,
        slug,
        &id.to_string(),
        SealedField::ProviderSecrets.aad_name(),
    );
    Ok(services.vault.seal_str(&text, &aad))
}
