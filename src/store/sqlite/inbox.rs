//! The webhook inbox on SQLite.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
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
        self.deliveries.insert(new).await
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
        let _turn = self.gate.lock().await;
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
        let _turn = self.gate.lock().await;
        let mut tx = self.pool.begin().await?;
        if !signals.is_empty() {
            signals::insert_in(&mut tx, &signals).await?;
        }
        // One statement per distinct outcome: a batch is mostly alike, so a handful at most.
        let mut alike: Vec<(&EventCompletion, Vec<Uuid>)> = Vec::new();
        for c in completions {
            let same = |(first, _): &&mut (&EventCompletion, Vec<Uuid>)| {
                first.outcome == c.outcome
                    && first.connection_id == c.connection_id
                    && first.error == c.error
            };
            match alike.iter_mut().find(same) {
                Some((_, ids)) => ids.push(c.id),
                None => alike.push((c, vec![c.id])),
            }
        }
        for (c, ids) in alike {
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE webhook_events SET status = ");
            q.push_bind(c.outcome.as_str())
                .push(", connection_id = COALESCE(")
                .push_bind(c.connection_id.map(|id| id.0))
                .push(", connection_id), last_error = ")
                .push_bind(c.error.as_deref())
                .push(", processed_at = ")
                .push_bind(to_micros(&now))
                .push(", lease_expires_at = NULL WHERE id IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
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
        let _turn = self.gate.lock().await;
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
