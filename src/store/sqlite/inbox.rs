//! The webhook inbox on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use super::connections::{decode as decode_connection, COLUMNS as CONNECTION_COLUMNS};
use super::{opt_time, signals, time, SqliteStore};
use crate::domain::{
    to_micros, Connection, ConnectionId, NewSignal, NewWebhookEvent, StoredWebhookEvent, TenantId,
    Timestamp,
};
use crate::store::{EventCompletion, Inbox, StoreError};

const COLUMNS: &str = "id, tenant_id, provider, connection_id, dedupe_key, event_type, headers, \
     body, status, attempts, last_error, received_at, processed_at";

#[async_trait]
impl Inbox for SqliteStore {
    async fn insert_webhook_event(
        &self,
        new: &NewWebhookEvent,
    ) -> Result<(Uuid, bool), StoreError> {
        let headers =
            serde_json::to_string(&new.headers).map_err(|e| StoreError::corrupt("headers", e))?;
        let received = to_micros(&new.received_at);
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO webhook_events (id, tenant_id, provider, connection_id, dedupe_key, \
             event_type, headers, body, status, next_attempt_at, received_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?) \
             ON CONFLICT (tenant_id, provider, dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(new.id)
        .bind(new.tenant_id.0)
        .bind(&new.provider)
        .bind(new.connection_id.map(|c| c.0))
        .bind(&new.dedupe_key)
        .bind(&new.event_type)
        .bind(headers)
        .bind(&new.body)
        .bind(received)
        .bind(received)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(id) = inserted {
            return Ok((id, false));
        }
        let existing: Uuid = sqlx::query_scalar(
            "SELECT id FROM webhook_events WHERE tenant_id = ? AND provider = ? AND dedupe_key = ?",
        )
        .bind(new.tenant_id.0)
        .bind(&new.provider)
        .bind(&new.dedupe_key)
        .fetch_one(&self.pool)
        .await?;
        Ok((existing, true))
    }

    async fn claim_webhook_events(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredWebhookEvent>, StoreError> {
        let now = to_micros(&now);
        let sql = format!(
            "UPDATE webhook_events SET lease_expires_at = ?, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM webhook_events WHERE status = 'pending' \
             AND next_attempt_at <= ? AND (lease_expires_at IS NULL OR lease_expires_at < ?) \
             ORDER BY next_attempt_at LIMIT ?) RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(&sql)
            .bind(to_micros(&lease_until))
            .bind(now)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn complete_webhook_events(
        &self,
        completions: &[EventCompletion],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        // One transaction for the whole batch: the signals and every outcome land together.
        let signals: Vec<NewSignal> = completions
            .iter()
            .flat_map(|c| c.signals.iter().cloned())
            .collect();
        let mut tx = self.pool.begin().await?;
        if !signals.is_empty() {
            signals::insert_in(&mut tx, &signals).await?;
        }
        for c in completions {
            sqlx::query(
                "UPDATE webhook_events SET status = ?, connection_id = COALESCE(?, connection_id), \
                 last_error = ?, processed_at = ?, lease_expires_at = NULL WHERE id = ?",
            )
            .bind(c.outcome.as_str())
            .bind(c.connection_id.map(|id| id.0))
            .bind(&c.error)
            .bind(to_micros(&now))
            .bind(c.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn retry_webhook_event(
        &self,
        id: Uuid,
        error: &str,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_events SET last_error = ?, next_attempt_at = ?, lease_expires_at = NULL \
             WHERE id = ?",
        )
        .bind(error)
        .bind(to_micros(&next_attempt_at))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_webhook_event(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<Option<StoredWebhookEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_events WHERE tenant_id = ? AND id = ?");
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
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE provider = ? \
             AND external_account_id = ? AND status = 'active' ORDER BY created_at, id"
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
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant_id = ? AND provider = ? \
             AND status = 'active' ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(tenant.0)
            .bind(provider)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_connection).collect()
    }
}

fn decode(row: &SqliteRow) -> Result<StoredWebhookEvent, StoreError> {
    let headers: String = row.try_get("headers")?;
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
        headers: serde_json::from_str(&headers).map_err(|e| StoreError::corrupt("headers", e))?,
        body: row.try_get("body")?,
        status: status
            .parse()
            .map_err(|e| StoreError::corrupt("status", e))?,
        attempts: row.try_get("attempts")?,
        last_error: row.try_get("last_error")?,
        received_at: time("received_at", row.try_get("received_at")?)?,
        processed_at: opt_time("processed_at", row.try_get("processed_at")?)?,
    })
}
