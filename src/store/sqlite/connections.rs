//! Connection rows on SQLite.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::{opt_time, time};
use crate::domain::{to_micros, Connection, ConnectionId, NewConnection, TenantId};
use crate::store::{ConnectionFilter, PageRequest, StoreError};

pub(super) const COLUMNS: &str =
    "id, tenant_id, provider, external_account_id, external_account_name, \
     status, scopes, token_expires_at, last_synced_at, last_error, metadata, created_at, \
     updated_at";

pub(super) async fn insert(
    pool: &SqlitePool,
    new: &NewConnection,
) -> Result<Connection, StoreError> {
    let scopes =
        serde_json::to_string(&new.scopes).map_err(|e| StoreError::corrupt("scopes", e))?;
    let created = to_micros(&new.created_at);
    let sql = format!(
        "INSERT INTO connections (id, tenant_id, provider, external_account_id, \
         external_account_name, status, scopes, token_expires_at, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(new.id.0)
        .bind(new.tenant_id.0)
        .bind(&new.provider)
        .bind(&new.external_account_id)
        .bind(&new.external_account_name)
        .bind(new.status.as_str())
        .bind(scopes)
        .bind(new.token_expires_at.as_ref().map(to_micros))
        .bind(created)
        .bind(created)
        .fetch_one(pool)
        .await?;
    decode(&row)
}

pub(super) async fn get(
    pool: &SqlitePool,
    tenant: TenantId,
    id: ConnectionId,
) -> Result<Option<Connection>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM connections WHERE tenant_id = ? AND id = ?");
    let row = sqlx::query(&sql)
        .bind(tenant.0)
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn list(
    pool: &SqlitePool,
    tenant: TenantId,
    filter: &ConnectionFilter,
    page: PageRequest,
) -> Result<Vec<Connection>, StoreError> {
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {COLUMNS} FROM connections WHERE tenant_id = "
    ));
    q.push_bind(tenant.0);
    if let Some(provider) = &filter.provider {
        q.push(" AND provider = ").push_bind(provider.clone());
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(after) = page.after {
        let at = to_micros(&after.at);
        q.push(" AND created_at >= ").push_bind(at);
        q.push(" AND (created_at > ").push_bind(at);
        q.push(" OR id > ").push_bind(after.id).push(")");
    }
    q.push(" ORDER BY created_at ASC, id ASC LIMIT ")
        .push_bind(i64::from(page.fetch));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(decode).collect()
}

pub(super) fn decode(row: &SqliteRow) -> Result<Connection, StoreError> {
    let status: String = row.try_get("status")?;
    let scopes: String = row.try_get("scopes")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(Connection {
        id: ConnectionId(row.try_get::<Uuid, _>("id")?),
        tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
        provider: row.try_get("provider")?,
        external_account_id: row.try_get("external_account_id")?,
        external_account_name: row.try_get("external_account_name")?,
        status: status
            .parse()
            .map_err(|e| StoreError::corrupt("status", e))?,
        scopes: serde_json::from_str(&scopes).map_err(|e| StoreError::corrupt("scopes", e))?,
        token_expires_at: opt_time("token_expires_at", row.try_get("token_expires_at")?)?,
        last_synced_at: opt_time("last_synced_at", row.try_get("last_synced_at")?)?,
        last_error: row.try_get("last_error")?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::corrupt("metadata", e))?,
        created_at: time("created_at", row.try_get("created_at")?)?,
        updated_at: time("updated_at", row.try_get("updated_at")?)?,
    })
}
