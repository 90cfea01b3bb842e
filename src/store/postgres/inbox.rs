//! The webhook inbox on PostgreSQL (the batch rules are in `store::shared::inbox`). Claims
//! skip rows other instances hold locked; deliveries are stored by group commit
//! (`super::deliveries`).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::connections::{decode as decode_connection, COLUMNS as CONNECTION_COLUMNS};
use super::PostgresStore;
use crate::domain::{
    Connection, ConnectionId, NewWebhookEvent, StoredWebhookEvent, TenantId, Timestamp,
};
use crate::store::shared::inbox::{self, InboxDialect};
use crate::store::shared::turns::walk_tenants;
use crate::store::{EventCompletion, Inbox, StoreError};

/// An event a claim may take at `$1`: pending, due, and not leased by a live claim.
const READY: &str = "status = 'pending' AND next_attempt_at <= $1 \
     AND (lease_expires_at IS NULL OR lease_expires_at < $1)";

const COLUMNS: &str = "id, tenant_id, provider, connection_id, dedupe_key, event_type, headers, \
     body, status, attempts, last_error, received_at, processed_at";

#[async_trait]
impl Inbox for PostgresStore {
    async fn insert_webhook_event(
        &self,
        new: &NewWebhookEvent,
    ) -> Result<(Uuid, bool), StoreError> {
        self.deliveries.commit(new.clone()).await
    }

    async fn claim_webhook_events(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredWebhookEvent>, StoreError> {
        inbox::claim(self, now, lease_until, limit).await
    }

    async fn complete_webhook_events(
        &self,
        completions: &[EventCompletion],
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        inbox::complete(self, completions, lease, now).await
    }

    async fn retry_webhook_event(
        &self,
        id: Uuid,
        error: &str,
        lease: Timestamp,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_events SET last_error = $1, next_attempt_at = $2, lease_expires_at = NULL \
             WHERE id = $3 AND status = 'pending' AND lease_expires_at = $4",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(id)
        .bind(lease)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_webhook_events(
        &self,
        lease: Timestamp,
        ids: Option<&[Uuid]>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_events SET lease_expires_at = NULL, next_attempt_at = $1, \
             attempts = GREATEST(attempts - 1, 0) \
             WHERE status = 'pending' AND lease_expires_at = $2 \
             AND ($3::uuid[] IS NULL OR id = ANY($3))",
        )
        .bind(now)
        .bind(lease)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_webhook_events(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_events WHERE status IN ('processed', 'ignored', 'unmatched') \
             AND received_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn get_webhook_event(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<StoredWebhookEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_events WHERE tenant_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(tenant.0)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn connections_for_account(
        &self,
        provider: &str,
        external_account_id: &str,
    ) -> Result<Vec<Connection>, StoreError> {
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE provider = $1 \
             AND external_account_id = $2 AND status = 'active' ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(provider)
            .bind(external_account_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_connection).collect()
    }

    async fn active_connections(
        &self,
        tenant: TenantId,
        provider: &str,
    ) -> Result<Vec<Connection>, StoreError> {
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant_id = $1 AND provider = $2 \
             AND status = 'active' ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.0)
            .bind(provider)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_connection).collect()
    }

    async fn active_connections_of(
        &self,
        keys: &[(TenantId, String)],
    ) -> Result<Vec<Connection>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let tenants: Vec<Uuid> = keys.iter().map(|(tenant, _)| tenant.0).collect();
        let providers: Vec<&str> = keys.iter().map(|(_, provider)| provider.as_str()).collect();
        // Each pair read from `connections_by_tenant_provider`, in its order.
        let sql = format!(
            "SELECT c.* FROM UNNEST($1::uuid[], $2::text[]) AS k (tenant_id, provider) \
             CROSS JOIN LATERAL (SELECT {CONNECTION_COLUMNS} FROM connections \
             WHERE tenant_id = k.tenant_id AND provider = k.provider AND status = 'active' \
             ORDER BY created_at, id) AS c"
        );
        let rows = sqlx::query(&sql)
            .bind(&tenants)
            .bind(&providers)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_connection).collect()
    }
}

#[async_trait]
impl InboxDialect for PostgresStore {
    async fn pending_tenants(
        &self,
        now: Timestamp,
        after: Option<Uuid>,
        max: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        let sql = walk_tenants("webhook_events", None, READY, after.is_some(), "$2", "$3");
        let mut query = sqlx::query_scalar(&sql).bind(now).bind(i64::from(max));
        if let Some(after) = after {
            query = query.bind(after);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn lease_claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
        tenants: &[Uuid],
    ) -> Result<Vec<StoredWebhookEvent>, StoreError> {
        // The whole claim in one statement, its own transaction: every tenant's share, each
        // read from the tenant's end of the pending index, then the oldest of anyone's in the
        // room the shares left (the same snapshot sees the shares' rows ready, so they are
        // left out by id). One round trip instead of a transaction of two leases.
        let (tenants, share) = crate::store::shared::turns::shares(limit, tenants);
        let sql = format!(
            "WITH shares AS (UPDATE webhook_events SET lease_expires_at = $2, \
               attempts = attempts + 1 \
               WHERE id IN (SELECT l.id FROM UNNEST($4::uuid[]) AS t (tenant_id) \
               CROSS JOIN LATERAL (SELECT id FROM webhook_events WHERE {READY} \
               AND tenant_id = t.tenant_id ORDER BY next_attempt_at LIMIT $3 \
               FOR UPDATE SKIP LOCKED) AS l) RETURNING {COLUMNS}), \
             rest AS (UPDATE webhook_events SET lease_expires_at = $2, \
               attempts = attempts + 1 \
               WHERE id IN (SELECT id FROM webhook_events WHERE {READY} \
               AND id NOT IN (SELECT id FROM shares) ORDER BY next_attempt_at \
               LIMIT GREATEST($5 - (SELECT COUNT(*) FROM shares), 0) \
               FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}) \
             SELECT {COLUMNS} FROM shares UNION ALL SELECT {COLUMNS} FROM rest"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(lease_until)
            .bind(i64::from(share))
            .bind(tenants)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn record_outcomes(
        &self,
        conn: &mut PgConnection,
        completions: &[EventCompletion],
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<Uuid>, StoreError> {
        // Every outcome in one statement: one round trip however large the batch.
        let ids: Vec<Uuid> = completions.iter().map(|c| c.id).collect();
        let outcomes: Vec<&str> = completions.iter().map(|c| c.outcome.as_str()).collect();
        let connections: Vec<Option<Uuid>> = completions
            .iter()
            .map(|c| c.connection_id.map(|id| id.0))
            .collect();
        let errors: Vec<Option<&str>> = completions.iter().map(|c| c.error.as_deref()).collect();
        let recorded = sqlx::query_scalar(
            "UPDATE webhook_events AS e SET status = o.status, \
             connection_id = COALESCE(o.connection_id, e.connection_id), \
             last_error = o.last_error, processed_at = $5, lease_expires_at = NULL \
             FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[]) \
             AS o (id, status, connection_id, last_error) WHERE e.id = o.id \
             AND e.status = 'pending' AND e.lease_expires_at = $6 RETURNING e.id",
        )
        .bind(&ids)
        .bind(&outcomes)
        .bind(&connections)
        .bind(&errors)
        .bind(now)
        .bind(lease)
        .fetch_all(conn)
        .await?;
        Ok(recorded)
    }
}

fn decode(row: &PgRow) -> Result<StoredWebhookEvent, StoreError> {
    let Json(headers): Json<serde_json::Map<String, serde_json::Value>> = row.try_get("headers")?;
    let status: String = row.try_get("status")?;
    Ok(StoredWebhookEvent {
        id: row.try_get("id")?,
        tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
        provider: row.try_get("provider")?,
        connection_id: row
            .try_get::<Option<Uuid>, _>("connection_id")?
            .map(ConnectionId),
        dedupe_key: row.try_get("dedupe_key")?,
        event_type: row.try_get("event_type")?,
        headers,
        body: row.try_get("body")?,
        status: status
            .parse()
            .map_err(|e| StoreError::corrupt("status", e))?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        received_at: row.try_get("received_at")?,
        processed_at: row.try_get("processed_at")?,
    })
}
