//! OAuth state rows on SQLite.

use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::time;
use crate::domain::{to_micros, NewOAuthState, OAuthState, StateConsumption, TenantId, Timestamp};
use crate::store::{Pass, StoreError};

pub(super) async fn insert(pool: &SqlitePool, new: &NewOAuthState) -> Result<(), StoreError> {
    let scopes =
        serde_json::to_string(&new.scopes).map_err(|e| StoreError::corrupt("scopes", e))?;
    sqlx::query(
        "INSERT INTO oauth_states (state_hash, tenant_id, provider, pkce_verifier_sealed, scopes, \
         redirect_uri, return_to, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&new.state_hash)
    .bind(new.tenant_id.0)
    .bind(&new.provider)
    .bind(&new.pkce_verifier_sealed)
    .bind(scopes)
    .bind(&new.redirect_uri)
    .bind(&new.return_to)
    .bind(to_micros(&new.created_at))
    .bind(to_micros(&new.expires_at))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn consume(
    pool: &SqlitePool,
    state_hash: &[u8],
    now: Timestamp,
) -> Result<StateConsumption, StoreError> {
    take(pool, state_hash, now, Pass::Consume).await
}

pub(super) async fn open(
    pool: &SqlitePool,
    state_hash: &[u8],
    now: Timestamp,
) -> Result<StateConsumption, StoreError> {
    take(pool, state_hash, now, Pass::Open).await
}

/// Marks one pass over a live state (the authorize hop, or the callback) in one statement: of
/// any number of concurrent requests, exactly one gets the row.
async fn take(
    pool: &SqlitePool,
    state_hash: &[u8],
    now: Timestamp,
    pass: Pass,
) -> Result<StateConsumption, StoreError> {
    let now = to_micros(&now);
    let (column, unused) = match pass {
        Pass::Open => ("opened_at", "opened_at IS NULL AND consumed_at IS NULL"),
        Pass::Consume => ("consumed_at", "consumed_at IS NULL"),
    };
    let row = sqlx::query(&format!(
        "UPDATE oauth_states SET {column} = ? \
         WHERE state_hash = ? AND {unused} AND expires_at > ? \
         RETURNING tenant_id, provider, pkce_verifier_sealed, scopes, redirect_uri, return_to, expires_at"
    ))
    .bind(now)
    .bind(state_hash)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = row {
        let scopes: String = row.try_get("scopes")?;
        return Ok(StateConsumption::Consumed(OAuthState {
            state_hash: state_hash.to_vec(),
            tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
            provider: row.try_get("provider")?,
            pkce_verifier_sealed: row.try_get("pkce_verifier_sealed")?,
            scopes: serde_json::from_str(&scopes).map_err(|e| StoreError::corrupt("scopes", e))?,
            redirect_uri: row.try_get("redirect_uri")?,
            return_to: row.try_get("return_to")?,
            expires_at: time("expires_at", row.try_get("expires_at")?)?,
        }));
    }
    let row = sqlx::query(&format!(
        "SELECT return_to, ({unused}) AS unused FROM oauth_states WHERE state_hash = ?"
    ))
    .bind(state_hash)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        None => StateConsumption::Unknown,
        Some(row) => {
            let return_to = row.try_get("return_to")?;
            if !row.try_get::<bool, _>("unused")? {
                StateConsumption::AlreadyUsed { return_to }
            } else {
                StateConsumption::Expired { return_to }
            }
        }
    })
}

pub(super) async fn purge(pool: &SqlitePool, before: Timestamp) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM oauth_states WHERE expires_at < ?")
        .bind(to_micros(&before))
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
