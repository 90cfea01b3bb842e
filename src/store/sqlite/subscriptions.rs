//! Provider-side subscriptions on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::connections::{decode as decode_connection, COLUMNS as CONNECTION_COLUMNS};
use super::{opt_time, time, SqliteStore};
use crate::domain::{
    to_micros, Connection, ConnectionId, OpenedSubscription, Subscription, SubscriptionId,
    SubscriptionStatus, TenantId, Timestamp,
};
use crate::store::shared::subscriptions::{Failed, Failure, SubscriptionsDialect};
use crate::store::{Lease, Recorded, StoreError, SubscriptionStore};

const COLUMNS: &str = "id, tenant_id, connection_id, provider, resource, external_id, status, \
     expires_at, renew_at, state, last_error, created_at, updated_at";

/// The statuses with something left to do.
const LIVE: &str = "('pending', 'active', 'failed')";

fn decode(row: &SqliteRow) -> Result<Subscription, StoreError> {
    let status: String = row.try_get("status")?;
    let state: String = row.try_get("state")?;
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
        expires_at: opt_time("expires_at", row.try_get("expires_at")?)?,
        renew_at: opt_time("renew_at", row.try_get("renew_at")?)?,
        state: serde_json::from_str(&state).map_err(|e| StoreError::corrupt("state", e))?,
        last_error: row.try_get("last_error")?,
        created_at: time("created_at", row.try_get("created_at")?)?,
        updated_at: time("updated_at", row.try_get("updated_at")?)?,
    })
}

async fn ensure(
    pool: &SqlitePool,
    connection: &Connection,
    resources: &[String],
    now: Timestamp,
) -> Result<u64, StoreError> {
    let now = to_micros(&now);
    let mut tx = pool.begin().await?;
    let mut pending = 0;
    for resource in resources {
        pending += sqlx::query(
            "INSERT INTO subscriptions (id, tenant_id, connection_id, provider, resource, status, \
             renew_at, state, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, 'pending', ?, '{}', ?, ?) \
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
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    tx.commit().await?;
    Ok(pending)
}

async fn of_connection(
    pool: &SqlitePool,
    tenant: TenantId,
    connection: ConnectionId,
    due_at: Option<Timestamp>,
) -> Result<Vec<Subscription>, StoreError> {
    let due = if due_at.is_some() {
        format!(" AND status IN {LIVE} AND renew_at <= ?")
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = ? AND connection_id = ?{due} \
         ORDER BY created_at, id"
    );
    let mut query = sqlx::query(&sql).bind(tenant.0).bind(connection.0);
    if let Some(at) = due_at {
        query = query.bind(to_micros(&at));
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(decode).collect()
}

async fn by_external_id(
    pool: &SqlitePool,
    tenant: TenantId,
    provider: &str,
    external_id: &str,
) -> Result<Option<Subscription>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM subscriptions WHERE tenant_id = ? AND provider = ? \
         AND external_id = ? AND status <> 'closed' ORDER BY updated_at DESC LIMIT 1"
    );
    let row = sqlx::query(&sql)
        .bind(tenant.0)
        .bind(provider)
        .bind(external_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Active connections with a live subscription due, driven by `subscriptions_due`: the due
/// subscriptions' connections, looked up by id in id order. `+status` keeps the planner off
/// `connections_due`, which would walk every active connection to test each one.
fn connections_due_sql() -> String {
    format!(
        "SELECT {CONNECTION_COLUMNS} FROM connections WHERE +status = 'active' AND id IN \
         (SELECT connection_id FROM subscriptions WHERE status IN {LIVE} AND renew_at <= ?) \
         ORDER BY id LIMIT ?"
    )
}

async fn connections_due(
    pool: &SqlitePool,
    now: Timestamp,
    limit: u32,
) -> Result<Vec<Connection>, StoreError> {
    let rows = sqlx::query(&connections_due_sql())
        .bind(to_micros(&now))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode_connection).collect()
}

async fn record_opened(
    pool: &SqlitePool,
    lease: Lease<'_>,
    id: SubscriptionId,
    opened: &OpenedSubscription,
    now: Timestamp,
) -> Result<Recorded, StoreError> {
    let state =
        serde_json::to_string(&opened.state).map_err(|e| StoreError::corrupt("state", e))?;
    // One statement, so it takes the write lock at once and checks the lease in the same
    // instant it writes.
    let stored = sqlx::query(
        "UPDATE subscriptions SET status = 'active', external_id = ?, expires_at = ?, \
         renew_at = ?, state = ?, last_error = NULL, updated_at = ? \
         WHERE id = ? AND status <> 'closed' \
         AND EXISTS (SELECT 1 FROM connections c WHERE c.id = subscriptions.connection_id \
         AND c.status = 'active') \
         AND EXISTS (SELECT 1 FROM sync_jobs j WHERE j.id = ? AND j.lease_owner = ? \
         AND j.status = 'running')",
    )
    .bind(&opened.external_id)
    .bind(opened.expires_at.as_ref().map(to_micros))
    .bind(opened.renew_at.as_ref().map(to_micros))
    .bind(state)
    .bind(to_micros(&now))
    .bind(id.0)
    .bind(lease.job.0)
    .bind(lease.owner)
    .execute(pool)
    .await?
    .rows_affected();
    if stored == 1 {
        return Ok(Recorded::Stored);
    }
    let held: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sync_jobs WHERE id = ? AND lease_owner = ? \
         AND status = 'running')",
    )
    .bind(lease.job.0)
    .bind(lease.owner)
    .fetch_one(pool)
    .await?;
    Ok(if held {
        Recorded::Closed
    } else {
        Recorded::LeaseLost
    })
}

#[async_trait]
impl SubscriptionsDialect for SqliteStore {
    async fn mark_failed(
        &self,
        conn: &mut sqlx::SqliteConnection,
        f: &Failure<'_>,
    ) -> Result<Option<Failed>, StoreError> {
        Ok(sqlx::query_as(
            "UPDATE subscriptions SET status = 'failed', last_error = ?, updated_at = ?, \
             renew_at = ? WHERE id = ? AND status NOT IN ('closed', 'failed') \
             RETURNING tenant_id, connection_id, provider, resource",
        )
        .bind(f.error)
        .bind(to_micros(&f.now))
        .bind(to_micros(&f.retry_at))
        .bind(f.id.0)
        .fetch_optional(&mut *conn)
        .await?)
    }

    async fn refresh_failure(
        &self,
        conn: &mut sqlx::SqliteConnection,
        f: &Failure<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE subscriptions SET last_error = ?, updated_at = ?, renew_at = ? \
             WHERE id = ? AND status = 'failed'",
        )
        .bind(f.error)
        .bind(to_micros(&f.now))
        .bind(to_micros(&f.retry_at))
        .bind(f.id.0)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

async fn note_error(
    pool: &SqlitePool,
    id: SubscriptionId,
    error: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE subscriptions SET last_error = ?, updated_at = ? \
         WHERE id = ? AND status <> 'closed'",
    )
    .bind(error)
    .bind(to_micros(&now))
    .bind(id.0)
    .execute(pool)
    .await?;
    Ok(())
}

async fn close(
    pool: &SqlitePool,
    tenant: TenantId,
    connection: ConnectionId,
    now: Timestamp,
) -> Result<Vec<Subscription>, StoreError> {
    let sql = format!(
        "UPDATE subscriptions SET status = 'closed', renew_at = NULL, updated_at = ? \
         WHERE tenant_id = ? AND connection_id = ? AND status <> 'closed' RETURNING {COLUMNS}"
    );
    let rows = sqlx::query(&sql)
        .bind(to_micros(&now))
        .bind(tenant.0)
        .bind(connection.0)
        .fetch_all(pool)
        .await?;
    rows.iter().map(decode).collect()
}

async fn count(pool: &SqlitePool) -> Result<Vec<(String, SubscriptionStatus, u64)>, StoreError> {
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
impl SubscriptionStore for SqliteStore {
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
        // A write on the sync path: its turn on the writer's connection, not SQLite's busy
        // handler.
        let _turn = self.gate.lock().await;
        record_opened(&self.writer, lease, id, opened, now).await
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

#[cfg(test)]
mod tests {
    use crate::store::sqlite::plans::plan_of;

    #[tokio::test]
    async fn due_subscriptions_are_found_through_their_index_not_by_walking_connections() {
        let plan = plan_of(&super::connections_due_sql(), None).await;
        assert!(
            plan.contains("SEARCH subscriptions USING INDEX subscriptions_due"),
            "{plan}"
        );
        assert!(plan.contains("SEARCH connections USING INDEX"), "{plan}");
        assert!(!plan.contains("connections_due "), "{plan}");
        assert!(!plan.contains("SCAN"), "{plan}");
    }
}
