//! Connection credentials and lifecycle on SQLite: upsert from the OAuth callback, sealed
//! tokens, status changes, deletion, refresh candidates and key rotation.

use async_trait::async_trait;
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::connections::{decode, COLUMNS};
use super::{opt_time, SqliteStore};
use crate::domain::{
    to_micros, Connection, ConnectionId, ConnectionStatus, ConnectionUpsert, SealedField,
    SealedTokens, SealedValue, TenantId, Timestamp,
};
use crate::store::shared::credentials::{parse_status, CredentialsDialect, StatusWrite};
use crate::store::{sealed_location, ConnectionLock, StoreError};

pub(super) async fn find_id(
    pool: &SqlitePool,
    tenant: TenantId,
    provider: &str,
    external_account_id: &str,
) -> Result<Option<ConnectionId>, StoreError> {
    let id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM connections WHERE tenant_id = ? AND provider = ? AND external_account_id = ?",
    )
    .bind(tenant.0)
    .bind(provider)
    .bind(external_account_id)
    .fetch_optional(pool)
    .await?;
    Ok(id.map(ConnectionId))
}

pub(super) async fn tokens(
    pool: &SqlitePool,
    tenant: TenantId,
    id: ConnectionId,
) -> Result<Option<SealedTokens>, StoreError> {
    let row = sqlx::query(
        "SELECT access_token_sealed, refresh_token_sealed, token_expires_at FROM connections \
         WHERE tenant_id = ? AND id = ?",
    )
    .bind(tenant.0)
    .bind(id.0)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(SealedTokens {
            access_token: row.try_get("access_token_sealed")?,
            refresh_token: row.try_get("refresh_token_sealed")?,
            expires_at: opt_time("token_expires_at", row.try_get("token_expires_at")?)?,
        })
    })
    .transpose()
}

pub(super) async fn secrets(
    pool: &SqlitePool,
    tenant: TenantId,
    id: ConnectionId,
) -> Result<Option<Vec<u8>>, StoreError> {
    let sealed: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT secrets_sealed FROM connections WHERE tenant_id = ? AND id = ?")
            .bind(tenant.0)
            .bind(id.0)
            .fetch_optional(pool)
            .await?;
    Ok(sealed.flatten())
}

pub(super) async fn replace_tokens(
    pool: &SqlitePool,
    tenant: TenantId,
    id: ConnectionId,
    tokens: &SealedTokens,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE connections SET access_token_sealed = ?, \
         refresh_token_sealed = COALESCE(?, refresh_token_sealed), token_expires_at = ?, \
         last_error = NULL, updated_at = ? WHERE tenant_id = ? AND id = ?",
    )
    .bind(&tokens.access_token)
    .bind(&tokens.refresh_token)
    .bind(tokens.expires_at.as_ref().map(to_micros))
    .bind(to_micros(&now))
    .bind(tenant.0)
    .bind(id.0)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn delete(
    pool: &SqlitePool,
    tenant: TenantId,
    id: ConnectionId,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // The raw deliveries routed to it first (deleting the connection would unlink them), so
    // a purge keeps none of the tenant's provider data; then the connection, with its signals
    // and jobs.
    // Its push events too, with their deliveries: nothing about it is sent after a purge.
    sqlx::query("DELETE FROM push_events WHERE tenant_id = ? AND connection_id = ?")
        .bind(tenant.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM webhook_events WHERE tenant_id = ? AND connection_id = ?")
        .bind(tenant.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM connections WHERE tenant_id = ? AND id = ?")
        .bind(tenant.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn erase_tenant(
    pool: &SqlitePool,
    tenant: TenantId,
) -> Result<crate::store::TenantErasure, StoreError> {
    let mut tx = pool.begin().await?;
    let mut erased = crate::store::TenantErasure::default();
    // Children first, so each count is what that table held, not what a cascade took.
    for table in crate::store::TENANT_TABLES {
        let done = sqlx::query(&crate::store::erase_tenant_sql(table, "?"))
            .bind(tenant.0)
            .execute(&mut *tx)
            .await?;
        erased.record(table, done.rows_affected());
    }
    tx.commit().await?;
    Ok(erased)
}

pub(super) async fn needing_refresh(
    pool: &SqlitePool,
    expiring_before: Timestamp,
    limit: u32,
) -> Result<Vec<Connection>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM connections WHERE status = 'active' \
         AND refresh_token_sealed IS NOT NULL AND token_expires_at < ? \
         ORDER BY token_expires_at LIMIT ?"
    );
    let rows = sqlx::query(&sql)
        .bind(to_micros(&expiring_before))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode).collect()
}

pub(super) async fn sealed_values(
    pool: &SqlitePool,
    field: SealedField,
    after_row: Option<&[u8]>,
    limit: u32,
) -> Result<Vec<SealedValue>, StoreError> {
    let (table, key, column) = sealed_location(field);
    let sql = format!(
        "SELECT {key} AS row_key, tenant_id, provider, {column} AS sealed FROM {table} \
         WHERE {column} IS NOT NULL AND {key} > ? ORDER BY {key} LIMIT ?"
    );
    let rows = sqlx::query(&sql)
        .bind(after_row.unwrap_or(&[]))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
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
    pool: &SqlitePool,
    value: &SealedValue,
    resealed: &[u8],
) -> Result<bool, StoreError> {
    let (table, key, column) = sealed_location(value.field);
    let sql = format!("UPDATE {table} SET {column} = ? WHERE {key} = ? AND {column} = ?");
    let done = sqlx::query(&sql)
        .bind(resealed)
        .bind(&value.row)
        .bind(&value.sealed)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// How long a lease lasts if its holder dies without releasing it.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// How long to wait for a lease before giving up.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A lease row keyed by the connection, taken over only once expired.
pub(super) async fn lock(
    pool: &SqlitePool,
    id: ConnectionId,
) -> Result<ConnectionLock, StoreError> {
    let owner = Uuid::new_v4();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = crate::domain::now();
        let taken = sqlx::query(
            "INSERT INTO connection_locks (connection_id, owner, lease_expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (connection_id) DO UPDATE SET owner = excluded.owner, \
             lease_expires_at = excluded.lease_expires_at \
             WHERE connection_locks.lease_expires_at < ?",
        )
        .bind(id.0)
        .bind(owner)
        .bind(to_micros(&(now + LEASE)))
        .bind(to_micros(&now))
        .execute(pool)
        .await?
        .rows_affected()
            == 1;
        if taken {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pool = pool.clone();
    Ok(ConnectionLock::with_release(move || {
        let release = async move {
            let _ =
                sqlx::query("DELETE FROM connection_locks WHERE connection_id = ? AND owner = ?")
                    .bind(id.0)
                    .bind(owner)
                    .execute(&pool)
                    .await;
        };
        // Without a runtime the lease simply expires.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(release);
        }
    }))
}

#[async_trait]
impl CredentialsDialect for SqliteStore {
    async fn account_status(
        &self,
        conn: &mut sqlx::SqliteConnection,
        u: &ConnectionUpsert,
    ) -> Result<Option<ConnectionStatus>, StoreError> {
        let status: Option<String> = sqlx::query_scalar(
            "SELECT status FROM connections WHERE tenant_id = ? AND provider = ? \
             AND external_account_id = ?",
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
        conn: &mut sqlx::SqliteConnection,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<ConnectionStatus>, StoreError> {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM connections WHERE tenant_id = ? AND id = ?")
                .bind(tenant.0)
                .bind(id.0)
                .fetch_optional(&mut *conn)
                .await?;
        parse_status(status)
    }

    async fn upsert_row(
        &self,
        conn: &mut sqlx::SqliteConnection,
        u: &ConnectionUpsert,
    ) -> Result<Option<Connection>, StoreError> {
        let scopes =
            serde_json::to_string(&u.scopes).map_err(|e| StoreError::corrupt("scopes", e))?;
        let metadata =
            serde_json::to_string(&u.metadata).map_err(|e| StoreError::corrupt("metadata", e))?;
        let now = to_micros(&u.now);
        // A provider that sends no new refresh token on reconnect keeps the one we hold.
        let sql = format!(
            "INSERT INTO connections (id, tenant_id, provider, external_account_id, \
             external_account_name, status, scopes, access_token_sealed, refresh_token_sealed, \
             token_expires_at, metadata, secrets_sealed, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?, ?, ?, ?) \
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
            .bind(scopes)
            .bind(&u.tokens.access_token)
            .bind(&u.tokens.refresh_token)
            .bind(u.tokens.expires_at.as_ref().map(to_micros))
            .bind(metadata)
            .bind(&u.secrets_sealed)
            .bind(now)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn write_status(
        &self,
        conn: &mut sqlx::SqliteConnection,
        tenant: TenantId,
        id: ConnectionId,
        write: StatusWrite<'_>,
        now: Timestamp,
    ) -> Result<Option<Connection>, StoreError> {
        let row = match write {
            StatusWrite::Set { status, last_error } => {
                let sql = format!(
                    "UPDATE connections SET status = ?, last_error = ?, updated_at = ? \
                     WHERE tenant_id = ? AND id = ? RETURNING {COLUMNS}"
                );
                sqlx::query(&sql)
                    .bind(status.as_str())
                    .bind(last_error)
                    .bind(to_micros(&now))
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
                     updated_at = ? WHERE tenant_id = ? AND id = ? RETURNING {COLUMNS}"
                );
                sqlx::query(&sql)
                    .bind(to_micros(&now))
                    .bind(tenant.0)
                    .bind(id.0)
                    .fetch_optional(&mut *conn)
                    .await?
            }
        };
        row.as_ref().map(decode).transpose()
    }
}
