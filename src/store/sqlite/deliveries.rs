//! Storing webhook deliveries on SQLite by group commit (`store::shared::deliveries`,
//! `store::shared::group`). SQLite admits one writer at a time, so concurrent deliveries
//! committing one by one would queue on its lock and starve every other writer (the inbox
//! worker above all): one writer task takes every delivery waiting, in turn with this process's
//! other inbox writers on the store's gate.

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::WriteGate;
use crate::domain::{to_micros, NewWebhookEvent};
use crate::store::shared::deliveries::{Deliveries, Stored};
use crate::store::shared::group::GroupCommit;
use crate::store::StoreError;

/// The most deliveries one transaction holds (ten parameters each, well under SQLite's limit).
const MAX_GROUP: usize = 256;

/// Starts the writer over `pool` (the store's one write connection); it ends when the last
/// handle is dropped.
pub(super) fn start(pool: SqlitePool, gate: WriteGate) -> Deliveries {
    Deliveries::start(Writer { pool, gate }, 1, MAX_GROUP)
}

/// The SQL of the group commit, taking its turn on the gate for each transaction.
struct Writer {
    pool: SqlitePool,
    gate: WriteGate,
}

#[async_trait]
impl GroupCommit for Writer {
    type Item = NewWebhookEvent;
    type Outcome = Stored;

    async fn commit_group(&self, group: &[&NewWebhookEvent]) -> Result<Vec<Stored>, StoreError> {
        let _turn = self.gate.lock().await;
        commit_group(&self.pool, group).await
    }

    async fn commit_one(&self, new: &NewWebhookEvent) -> Result<Stored, StoreError> {
        let _turn = self.gate.lock().await;
        commit_one(&self.pool, new).await
    }
}

async fn commit_group(
    pool: &SqlitePool,
    group: &[&NewWebhookEvent],
) -> Result<Vec<Stored>, StoreError> {
    let mut headers = Vec::with_capacity(group.len());
    for new in group {
        headers.push(
            serde_json::to_string(&new.headers).map_err(|e| StoreError::corrupt("headers", e))?,
        );
    }
    // One statement for the group, its own transaction: one step of the connection's thread
    // (a transaction around it would add two, its `BEGIN` and `COMMIT`). A redelivery of a key
    // stored before, or earlier in the same statement, is skipped and then found below.
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO webhook_events (id, tenant_id, provider, connection_id, dedupe_key, \
         event_type, headers, body, status, next_attempt_at, received_at) ",
    );
    q.push_values(group.iter().zip(&headers), |mut row, (new, headers)| {
        let received = to_micros(&new.received_at);
        row.push_bind(new.id)
            .push_bind(new.tenant_id.0)
            .push_bind(new.provider.as_str())
            .push_bind(new.connection_id.map(|c| c.0))
            .push_bind(new.dedupe_key.as_str())
            .push_bind(new.event_type.as_deref())
            .push_bind(headers.as_str())
            .push_bind(new.body.as_slice())
            .push("'pending'")
            .push_bind(received)
            .push_bind(received);
    });
    q.push(" ON CONFLICT (tenant_id, provider, dedupe_key) DO NOTHING RETURNING id");
    let inserted: HashSet<Uuid> = q
        .build_query_scalar::<Uuid>()
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    let mut outcomes = Vec::with_capacity(group.len());
    for new in group {
        if inserted.contains(&new.id) {
            outcomes.push((new.id, false));
            continue;
        }
        let mut conn = pool.acquire().await?;
        match existing(&mut conn, new).await? {
            Some(id) => outcomes.push((id, true)),
            // The delivery it repeated was purged since: stored now.
            None => outcomes.push(insert(&mut conn, new).await?),
        }
    }
    Ok(outcomes)
}

async fn commit_one(pool: &SqlitePool, new: &NewWebhookEvent) -> Result<(Uuid, bool), StoreError> {
    let mut tx = pool.begin().await?;
    let outcome = insert(&mut tx, new).await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn insert(
    conn: &mut SqliteConnection,
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
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(id) => Ok((id, false)),
        None => match existing(conn, new).await? {
            Some(id) => Ok((id, true)),
            None => Err(sqlx::Error::RowNotFound.into()),
        },
    }
}

/// The id of the stored delivery with `new`'s dedupe key, if one is stored.
async fn existing(
    conn: &mut SqliteConnection,
    new: &NewWebhookEvent,
) -> Result<Option<Uuid>, StoreError> {
    let id = sqlx::query_scalar(
        "SELECT id FROM webhook_events WHERE tenant_id = ? AND provider = ? AND dedupe_key = ?",
    )
    .bind(new.tenant_id.0)
    .bind(&new.provider)
    .bind(&new.dedupe_key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection as _, SqliteConnection};

    use super::super::SqliteStore;
    use crate::domain::{now, NewWebhookEvent, TenantId};
    use crate::store::{Inbox, Store, StoreError, StoreOptions};

    async fn store(dir: &tempfile::TempDir) -> (SqliteStore, String) {
        let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions { max_connections: 4 })
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        (store, url)
    }

    fn delivery(tenant: TenantId, key: &str) -> NewWebhookEvent {
        NewWebhookEvent {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant,
            provider: "sandbox".into(),
            connection_id: None,
            dedupe_key: key.into(),
            event_type: Some("event.created".into()),
            headers: serde_json::Map::new(),
            body: b"{}".to_vec(),
            received_at: now(),
        }
    }

    #[tokio::test]
    async fn a_database_locked_by_another_process_is_unavailable_not_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, url) = store(&dir).await;
        let mut other = SqliteConnection::connect(&url)
            .await
            .expect("second connection");
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut other)
            .await
            .expect("lock");
        let result = store
            .insert_webhook_event(&delivery(TenantId(uuid::Uuid::new_v4()), "locked"))
            .await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        sqlx::query("ROLLBACK")
            .execute(&mut other)
            .await
            .expect("unlock");
        let tenant = TenantId(uuid::Uuid::new_v4());
        let again = delivery(tenant, "locked");
        assert_eq!(
            store.insert_webhook_event(&again).await.expect("stored"),
            (again.id, false)
        );
    }
}
