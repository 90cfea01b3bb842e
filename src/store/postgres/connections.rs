//! Connection rows on PostgreSQL.

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::domain::{Connection, ConnectionId, NewConnection, TenantId};
use crate::store::{ConnectionFilter, PageRequest, StoreError};

pub(super) const COLUMNS: &str =
    "id, tenant_id, provider, external_account_id, external_account_name, \
     status, scopes, token_expires_at, last_synced_at, last_error, metadata, created_at, \
     updated_at";

pub(super) async fn insert(pool: &PgPool, new: &NewConnection) -> Result<Connection, StoreError> {
    let sql = format!(
        "INSERT INTO connections (id, tenant_id, provider, external_account_id, \
         external_account_name, status, scopes, token_expires_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(new.id.0)
        .bind(new.tenant_id.0)
        .bind(&new.provider)
        .bind(&new.external_account_id)
        .bind(&new.external_account_name)
        .bind(new.status.as_str())
        .bind(Json(&new.scopes))
        .bind(new.token_expires_at)
        .bind(new.created_at)
        .fetch_one(pool)
        .await?;
    decode(&row)
}

pub(super) async fn get(
    pool: &PgPool,
    tenant: TenantId,
    id: ConnectionId,
) -> Result<Option<Connection>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM connections WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(&sql)
        .bind(tenant.0)
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &ConnectionFilter,
    page: PageRequest,
) -> Result<Vec<Connection>, StoreError> {
    let mut q = QueryBuilder::<Postgres>::new(format!(
        "SELECT {COLUMNS} FROM connections WHERE tenant_id = "
    ));
    q.push_bind(tenant.0);
    if let Some(provider) = &filter.provider {
        q.push(" AND provider = ").push_bind(provider.clone());
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(key) = page.after {
        q.push(" AND (created_at, id) > (")
            .push_bind(key.at)
            .push(", ")
            .push_bind(key.id)
            .push(")");
    }
    q.push(" ORDER BY created_at ASC, id ASC LIMIT ")
        .push_bind(i64::from(page.fetch));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter().map(decode).collect()
}

pub(super) fn decode(row: &PgRow) -> Result<Connection, StoreError> {
    let status: String = row.try_get("status")?;
    let Json(scopes): Json<Vec<String>> = row.try_get("scopes")?;
    let Json(metadata): Json<serde_json::Map<String, serde_json::Value>> =
        row.try_get("metadata")?;
    Ok(Connection {
        id: ConnectionId(row.try_get::<Uuid, _>("id")?),
        tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
        provider: row.try_get("provider")?,
        external_account_id: row.try_get("external_account_id")?,
        external_account_name: row.try_get("external_account_name")?,
        status: status
            .parse()
            .map_err(|e| StoreError::corrupt("status", e))?,
        scopes,
        token_expires_at: row.try_get("token_expires_at")?,
        last_synced_at: row.try_get("last_synced_at")?,
        last_error: row.try_get("last_error")?,
        metadata,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}
