//! Provider-side subscriptions on PostgreSQL. A lease-bound write locks the job row first, so a
//! takeover cannot interleave.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::connections::{decode as decode_connection, COLUMNS as CONNECTION_COLUMNS};
use super::PostgresStore;
use crate::domain::{
    Connection, ConnectionId, OpenedSubscription, Subscription, SubscriptionId, SubscriptionStatus,
    TenantId, Timestamp,
};
use crate::store::shared::subscriptions::{Failed, Failure, SubscriptionsDialect};
use crate::store::{Lease, Recorded, StoreError, SubscriptionStore};

const COLUMNS: &str = "id, tenant_id, connection_id, provider, resource, external_id, status, \
     expires_at, renew_at, state, last_error, created_at, updated_at";

/// The statuses with something left to do.
const LIVE: &str = "('pending', 'active', 'failed')";

fn decode(row: &PgRow) -> Result<Subscription, StoreError> {
    let status: String = row.try_get("status")?;
    let Json(state): Json<serde_json::Map<String, serde_json::Value>> = row.try_get("state")?;
    Ok(Subscription {
        id: SubscriptionId(row.try_get::<Uuid, _>("id")?),
        tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
        connection_id: ConnectionId(row.try_get::<Uuid, _>("connection_id")?),
        provider: row.try_get("provider")?,
        resource: row.try_get("resource")?,
        external_id: row.try_get("external_id")?,
        status: status
            .parse()
            .map_err(|e| StoreError::corrupt("status", e))?,
        expires_at: row.try_get("expires_at")?,
        renew_at: row.try_get("renew_at")?,
        state,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

async fn ensure(
    pool: &PgPool,
    connection: &Connection,
    resources: &[String],
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let mut pending = 0;
    for resource in resources {
        pending += sqlx::query(
            "INSERT INTO subscriptions (id, tenant_id, connection_id, provider, resource, status, \
             renew_at, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, '{}', $6, $6) \
             ON CONFLICT (connection_id, resource) DO UPDATE SET status = 'pending', \
             external_id = NULL, expires_at = NULL, renew_at = excluded.renew_at, state = '{}', \
             last_error = NULL, updated_at = excluded.updated_at \
             WHERE subscriptions.status = 'closed'",
        )
        .bind(SubscriptionId::generate().0)
        .bind(connection.tenant_id.0)
        .bind(connection.id.0)
        .bind(&connection.provider)
        .bind(resource)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(pending)
}

async fn of_connection(
    pool: &PgPool,
    tenant: TenantId,
    connection: ConnectionId,
    due_at: Option<Timestamp>,
) -> Result<Vec<Subscription>, StoreError> {
    let due = if due_at.is_some() {
        format!(" AND status IN {LIVE} AND renew_at <= $3")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND connection_id = $2{due} \
         ORDER BY created_at, id"
    );
    let mut query = sqlx::query(&sql).bind(tenant.0).bind(connection.0);
    if let Some(at) = due_at {
        query = query.bind(at);
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(decode).collect()
}

async fn by_external_id(
    pool: &PgPool,
    tenant: TenantId,
    provider: &str,
    external_id: &str,
) -> Result<Option<Subscription>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND provider = $2 \
         AND external_id = $3 AND status <> 'closed' ORDER BY updated_at DESC LIMIT 1"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.0)
        .bind(provider)
        .bind(external_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode).transpose()
}

async fn connections_due(
    pool: &PgPool,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<Connection>, StoreError> {
    let sql = format!(
        "SELECT {CONNECTION_COLUMNS} FROM connections WHERE status = 'active' AND EXISTS \
         (SELECT 1 FROM subscriptions s WHERE s.connection_id = connections.id \
         AND s.status IN {LIVE} AND s.renew_at <= $1) ORDER BY id LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode_connection).collect()
}

async fn record_opened(
    pool: &PgPool,
    lease: Lease<'_>,
    id: SubscriptionId,
    opened: &OpenedSubscription,
    now: Timestamp,
) -> Result<Recorded, StoreError> {
    let mut tx = pool.begin().await?;
    let held = sqlx::query(
        "SELECT 1 FROM sync_jobs WHERE id = $1 AND lease_owner = $2 AND status = 'running' \
         FOR UPDATE",
    )
    .bind(lease.job.0)
    .bind(lease.owner)
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if !held {
        tx.rollback().await?;
        return Ok(Recorded::LeaseLost);
    }
    let stored = sqlx::query(
        "UPDATE subscriptions SET status = 'active', external_id = $1, expires_at = $2, \
         renew_at = $3, state = $4, last_error = NULL, updated_at = $5 \
         WHERE id = $6 AND status <> 'closed' AND EXISTS (SELECT 1 FROM connections c \
         WHERE c.id = subscriptions.connection_id AND c.status = 'active')",
    )
    .bind(&opened.external_id)
    .bind(opened.expires_at)
    .bind(opened.renew_at)
    .bind(Json(&opened.state))
    .bind(now)
    .bind(id.0)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(if stored == 1 {
        Recorded::Stored
    } else {
        Recorded::Closed
    })
}

#[async_trait]
impl SubscriptionsDialect for PostgresStore {
    async fn mark_failed(
        &self,
        conn: &mut sqlx::PgConnection,
        f: &Failure<'_>,
    ) -> Result<Option<Failed>, StoreError> {
        Ok(sqlx::query_as(
            "UPDATE subscriptions SET status = 'failed', last_error = $1, updated_at = $2, \
             renew_at = $3 WHERE id = $4 AND status NOT IN ('closed', 'failed') \
             RETURNING tenant_id, connection_id, provider, resource",
        )
        .bind(f.error)
        .bind(f.now)
        .bind(f.retry_at)
        .bind(f.id.0)
        .fetch_optional(&mut *conn)
        .await?)
    }

    async fn refresh_failure(
        &self,
        conn: &mut sqlx::PgConnection,
        f: &Failure<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE subscriptions SET last_error = $1, updated_at = $2, renew_at = $3 \
             WHERE id = $4 AND status = 'failed'",
        )
        .bind(f.error)
        .bind(f.now)
        .bind(f.retry_at)
        .bind(f.id.0)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

async fn note_error(
    pool: &PgPool,
    id: SubscriptionId,
    error: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE subscriptions SET last_error = $1, updated_at = $2 \
         WHERE id = $3 AND status <> 'closed'",
    )
    .bind(error)
    .bind(now)
    .bind(id.0)
    .execute(pool)
    .await?;
    Ok(())
}

async fn close(
    pool: &PgPool,
    tenant: TenantId,
    connection: ConnectionId,
    now: Timestamp,
) -> Result<Vec<Subscription>, StoreError> {
    let sql = format!(
        "UPDATE subscriptions SET status = 'closed', renew_at = NULL, updated_at = $1 \
         WHERE tenant_id = $2 AND connection_id = $3 AND status <> 'closed' RETURNING {COLUMNS}"
    );
    let rows = sqlx::query(&sql)
        .bind(now)
        .bind(tenant.0)
        .bind(connection.0)
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode).collect()
}

async fn count(pool: &PgPool) -> Result<Vec<(String, SubscriptionStatus, u64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT provider, status, COUNT(*) AS n FROM subscriptions GROUP BY provider, status",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            Ok((
                row.try_get("provider")?,
                status
                    .parse()
                    .map_err(|e| StoreError::corrupt("status", e))?,
                u64::try_from(n).unwrap_or(0),
            ))
        })
        .collect()
}

#[async_trait]
impl SubscriptionStore for PostgresStore {
    async fn ensure_subscriptions(
        &self,
        connection: &Connection,
        resources: &[String],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        ensure(&self.pool, connection, resources, now).await
    }

    async fn connection_subscriptions(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
    ) -> Result<Vec<Subscription>, StoreError> {
        of_connection(&self.pool, tenant, connection, None).await
    }

    async fn live_subscription(
        &self,
        tenant: TenantId,
        provider: &str,
        external_id: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        by_external_id(&self.pool, tenant, provider, external_id).await
    }

    async fn subscriptions_due(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<Vec<Subscription>, StoreError> {
        of_connection(&self.pool, tenant, connection, Some(now)).await
    }

    async fn connections_with_subscriptions_due(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<Connection>, StoreError> {
        connections_due(&self.pool, now, limit).await
    }

    async fn record_subscription_opened(
        &self,
        lease: Lease<'_>,
        id: SubscriptionId,
        opened: &OpenedSubscription,
        now: Timestamp,
    ) -> Result<Recorded, StoreError> {
        record_opened(&self.pool, lease, id, opened, now).await
    }

    async fn note_subscription_error(
        &self,
        id: SubscriptionId,
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        note_error(&self.pool, id, error, now).await
    }

    async fn fail_subscription(
        &self,
        id: SubscriptionId,
        error: &str,
        retry_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let failure = Failure {
            id,
            error,
            retry_at,
            now,
        };
        crate::store::shared::subscriptions::fail(self, &failure).await
    }

    async fn close_subscriptions(
        &self,
        tenant: TenantId,
        connection: ConnectionId,
        now: Timestamp,
    ) -> Result<Vec<Subscription>, StoreError> {
        close(&self.pool, tenant, connection, now).await
    }

    async fn count_subscriptions(
        &self,
    ) -> Result<Vec<(String, SubscriptionStatus, u64)>, StoreError> {
        count(&self.pool).await
    }
}
