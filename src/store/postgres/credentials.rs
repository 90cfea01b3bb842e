//! Connection credentials and lifecycle on PostgreSQL: upsert from the OAuth callback, sealed
//! tokens, status changes, deletion, refresh candidates, per-connection advisory locks and key
//! rotation.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::connections::{decode, COLUMNS};
use super::PostgresStore;
use crate::domain::{
    Connection, ConnectionId, ConnectionStatus, ConnectionUpsert, SealedField, SealedTokens,
    SealedValue, TenantId, Timestamp,
};
use crate::store::shared::credentials::{parse_status, CredentialsDialect, StatusWrite};
use crate::store::{sealed_location, ConnectionLock, StoreError};

pub(super) async fn find_id(
    pool: &PgPool,
    tenant: TenantId,
    provider: &str,
    external_account_id: &str,
) -> Result<Option<ConnectionId>, StoreError> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM connections WHERE tenant_id = $1 AND provider = $2 AND external_account_id = $3",
    )
    .bind(tenant.0)
    .bind(provider)
    .bind(external_account_id)
    .fetch_optional(pool)
    .await?;
    Ok(id.map(ConnectionId))
}

pub(super) async fn tokens(
    pool: &PgPool,
    tenant: TenantId,
    id: ConnectionId,
) -> Result<Option<SealedTokens>, StoreError> {
    let row = sqlx::query(
        "SELECT access_token_sealed, refresh_token_sealed, token_expires_at FROM connections \
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(SealedTokens {
            access_token: row.try_get("access_token_sealed")?,
            refresh_token: row.try_get("refresh_token_sealed")?,
            expires_at: row.try_get("token_expires_at")?,
        })
    })
    .transpose()
}

pub(super) async fn secrets(
    pool: &PgPool,
    tenant: TenantId,
    id: ConnectionId,
) -> Result<Option<Vec<u8>>, StoreError> {
    let sealed: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "SELECT secrets_sealed FROM connections WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(pool)
    .await?;
    Ok(sealed.flatten())
}

pub(super) async fn replace_tokens(
    pool: &PgPool,
    tenant: TenantId,
    id: ConnectionId,
    tokens: &SealedTokens,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET access_token_sealed = $1, \
         refresh_token_sealed = COALESCE($2, refresh_token_sealed), token_expires_at = $3, \
         last_error = NULL, updated_at = $4 WHERE tenant_id = $5 AND id = $6",
    )
    .bind(&tokens.access_token)
    .bind(&tokens.refresh_token)
    .bind(tokens.expires_at)
    .bind(now)
    .bind(tenant.0)
    .bind(id.0)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn delete(
    pool: &PgPool,
    tenant: TenantId,
    id: ConnectionId,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // The raw deliveries routed to it first (deleting the connection would unlink them), so
    // a purge keeps none of the tenant's provider data; then the connection, with its signals
    // and jobs.
    // Its push events too, with their deliveries: nothing about it is sent after a purge.
    sqlx::query("DELETE FROM push_events WHERE tenant_id = $1 AND connection_id = $2")
        .bind(tenant.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM webhook_events WHERE tenant_id = $1 AND connection_id = $2")
        .bind(tenant.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM connections WHERE tenant_id = $1 AND id = $2")
        .bind(tenant.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn erase_tenant(
    pool: &PgPool,
    tenant: TenantId,
) -> Result<crate::store::TenantErasure, StoreError> {
    let mut tx = pool.begin().await?;
    let mut erased = crate::store::TenantErasure::default();
    // Children first, so each count is what that table held, not what a cascade took.
    for table in crate::store::TENANT_TABLES {
        let done = sqlx::query(&crate::store::erase_tenant_sql(table, "$1"))
            .bind(tenant.0)
            .execute(&mut *tx)
            .await?;
        erased.record(table, done.rows_affected());
    }
    tx.commit().await?;
    Ok(erased)
}

pub(super) async fn needing_refresh(
    pool: &PgPool,
    expiring_before: Timestamp,
    limit: u32,
) -> Result<Vec<Connection>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM connections WHERE status = 'active' \
         AND refresh_token_sealed IS NOT NULL AND token_expires_at < $1 \
         ORDER BY token_expires_at LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(expiring_before)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode).collect()
}

/// A session advisory lock keyed by the connection, held on a dedicated pooled connection.
pub(super) async fn lock(pool: &PgPool, id: ConnectionId) -> Result<ConnectionLock, StoreError> {
    let digest = Sha256::digest(id.0.as_bytes());
    let key = i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(ConnectionLock::with_release(move || {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(key)
                        .execute(&mut *conn)
                        .await;
                    if unlocked.is_err() {
                        // Closing the session releases its locks.
                        drop(conn.detach());
                    }
                });
            }
            // No runtime to unlock on: close the session, which releases the lock.
            Err(_) => drop(conn.detach()),
        }
    }))
}

pub(super) async fn sealed_values(
    pool: &PgPool,
    field: SealedField,
    after_row: Option<&[u8]>,
    limit: u32,
) -> Result<Vec<SealedValue>, StoreError> {
    let (table, key, column) = sealed_location(field);
    let after = after_row.unwrap_or(&[]);
    // Connection ids are UUIDs, state hashes bytes: compare each in its own type.
    let rows = if key == "id" {
        let after = Uuid::from_slice(after).unwrap_or(Uuid::nil());
        let sql = format!(
            "SELECT uuid_send(id) AS row_key, tenant_id, provider, {column} AS sealed FROM {table} \
             WHERE {column} IS NOT NULL AND id > $1 ORDER BY id LIMIT $2"
        );
        sqlx::query(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
    } else {
        let sql = format!(
            "SELECT {key} AS row_key, tenant_id, provider, {column} AS sealed FROM {table} \
             WHERE {column} IS NOT NULL AND {key} > $1 ORDER BY {key} LIMIT $2"
        );
        sqlx::query(&sql)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
    };
    rows.iter()
        .map(|row| {
            Ok(SealedValue {
                field,
                row: row.try_get("row_key")?,
                tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
                provider: row.try_get("provider")?,
                sealed: row.try_get("sealed")?,
            })
        })
        .collect()
}

pub(super) async fn replace_sealed(
    pool: &PgPool,
    value: &SealedValue,
    resealed: &[u8],
) -> Result<bool, StoreError> {
    let (table, key, column) = sealed_location(value.field);
    let sql = format!("UPDATE {table} SET {column} = $1 WHERE {key} = $2 AND {column} = $3");
    let query = sqlx::query(&sql).bind(resealed);
    let query = if key == "id" {
        let id = Uuid::from_slice(&value.row).map_err(|e| StoreError::corrupt("id", e))?;
        query.bind(id)
    } else {
        query.bind(&value.row)
    };
    let done = query.bind(&value.sealed).execute(pool).await?;
    Ok(done.rows_affected() > 0)
}

#[async_trait]
impl CredentialsDialect for PostgresStore {
    async fn account_status(
        &self,
        conn: &mut sqlx::PgConnection,
        u: &ConnectionUpsert,
    ) -> Result<Option<ConnectionStatus>, StoreError> {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM connections WHERE tenant_id = $1 AND provider = $2 \
             AND external_account_id = $3 FOR UPDATE",
        )
        .bind(u.tenant_id.0)
        .bind(&u.provider)
        .bind(&u.external_account_id)
        .fetch_optional(&mut *conn)
        .await?;
        parse_status(status)
    }

    async fn status_of(
        &self,
        conn: &mut sqlx::PgConnection,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<ConnectionStatus>, StoreError> {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM connections WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant.0)
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?;
        parse_status(status)
    }

    async fn upsert_row(
        &self,
        conn: &mut sqlx::PgConnection,
        u: &ConnectionUpsert,
    ) -> Result<Option<Connection>, StoreError> {
        // A provider that sends no new refresh token on reconnect keeps the one we hold.
        let sql = format!(
            "INSERT INTO connections (id, tenant_id, provider, external_account_id, \
             external_account_name, status, scopes, access_token_sealed, refresh_token_sealed, \
             token_expires_at, metadata, secrets_sealed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, $11, $12, $10, $10) \
             ON CONFLICT (tenant_id, provider, external_account_id) DO UPDATE SET \
             external_account_name = excluded.external_account_name, status = 'active', \
             scopes = excluded.scopes, access_token_sealed = excluded.access_token_sealed, \
             refresh_token_sealed = COALESCE(excluded.refresh_token_sealed, connections.refresh_token_sealed), \
             token_expires_at = excluded.token_expires_at, last_error = NULL, \
             metadata = excluded.metadata, \
             secrets_sealed = COALESCE(excluded.secrets_sealed, connections.secrets_sealed), \
             updated_at = excluded.updated_at \
             WHERE connections.id = excluded.id \
             RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(u.id.0)
            .bind(u.tenant_id.0)
            .bind(&u.provider)
            .bind(&u.external_account_id)
            .bind(&u.external_account_name)
            .bind(Json(&u.scopes))
            .bind(&u.tokens.access_token)
            .bind(&u.tokens.refresh_token)
            .bind(u.tokens.expires_at)
            .bind(u.now)
            .bind(Json(&u.metadata))
            .bind(&u.secrets_sealed)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn write_status(
        &self,
        conn: &mut sqlx::PgConnection,
        tenant: TenantId,
        id: ConnectionId,
        write: StatusWrite<'_>,
        now: Timestamp,
    ) -> Result<Option<Connection>, StoreError> {
        let row = match write {
            StatusWrite::Set { status, last_error } => {
                let sql = format!(
                    "UPDATE connections SET status = $1, last_error = $2, updated_at = $3 \
                     WHERE tenant_id = $4 AND id = $5 RETURNING {COLUMNS}"
                );
                sqlx::query(&sql)
                    .bind(status.as_str())
                    .bind(last_error)
                    .bind(now)
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_optional(&mut *conn)
                    .await?
            }
            StatusWrite::Revoke => {
                let sql = format!(
                    "UPDATE connections SET status = 'revoked', access_token_sealed = NULL, \
                     refresh_token_sealed = NULL, secrets_sealed = NULL, token_expires_at = NULL, \
                     next_sync_at = NULL, \
                     updated_at = $1 WHERE tenant_id = $2 AND id = $3 RETURNING {COLUMNS}"
                );
                sqlx::query(&sql)
                    .bind(now)
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_optional(&mut *conn)
                    .await?
            }
        };
        row.as_ref().map(decode).transpose()
    }
}
