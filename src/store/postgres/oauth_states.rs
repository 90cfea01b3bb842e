//! OAuth state rows on PostgreSQL.

use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::domain::{NewOAuthState, OAuthState, StateConsumption, TenantId, Timestamp};
use crate::store::{Pass, StoreError};

pub(super) async fn insert(pool: &PgPool, new: &NewOAuthState) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO oauth_states (state_hash, tenant_id, provider, pkce_verifier_sealed, scopes, \
         redirect_uri, return_to, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&new.state_hash)
    .bind(new.tenant_id.0)
    .bind(&new.provider)
    .bind(&new.pkce_verifier_sealed)
    .bind(Json(&new.scopes))
    .bind(&new.redirect_uri)
    .bind(&new.return_to)
    .bind(new.created_at)
    .bind(new.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn consume(
    pool: &PgPool,
    state_hash: &[u8],
    now: Timestamp,
) -> Result<StateConsumption, StoreError> {
    take(pool, state_hash, now, Pass::Consume).await
}

pub(super) async fn open(
    pool: &PgPool,
    state_hash: &[u8],
    now: Timestamp,
) -> Result<StateConsumption, StoreError> {
    take(pool, state_hash, now, Pass::Open).await
}

/// Marks one pass over a live state (the authorize hop, or the callback) in one statement: of
/// any number of concurrent requests, exactly one gets the row.
async fn take(
    pool: &PgPool,
    state_hash: &[u8],
    now: Timestamp,
    pass: Pass,
) -> Result<StateConsumption, StoreError> {
    let (column, unused) = match pass {
        Pass::Open => ("opened_at", "opened_at IS NULL AND consumed_at IS NULL"),
        Pass::Consume => ("consumed_at", "consumed_at IS NULL"),
    };
    let row = sqlx::query(&format!(
        "UPDATE oauth_states SET {column} = $1 \
         WHERE state_hash = $2 AND {unused} AND expires_at > $1 \
         RETURNING tenant_id, provider, pkce_verifier_sealed, scopes, redirect_uri, return_to, expires_at"
    ))
    .bind(now)
    .bind(state_hash)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = row {
        let Json(scopes): Json<Vec<String>> = row.try_get("scopes")?;
        return Ok(StateConsumption::Consumed(OAuthState {
            state_hash: state_hash.to_vec(),
            tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
            provider: row.try_get("provider")?,
            pkce_verifier_sealed: row.try_get("pkce_verifier_sealed")?,
            scopes,
            redirect_uri: row.try_get("redirect_uri")?,
            return_to: row.try_get("return_to")?,
            expires_at: row.try_get("expires_at")?,
        }));
    }
    let row = sqlx::query(&format!(
        "SELECT return_to, ({unused}) AS unused FROM oauth_states WHERE state_hash = $1"
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

pub(super) async fn purge(pool: &PgPool, before: Timestamp) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
