//! The webhook inbox on SQLite (the batch rules are in `store::shared::inbox`). This process's
//! inbox writers take turns on the store's gate; timestamps are INTEGER microseconds.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use uuid::Uuid;

use super::connections::{decode as decode_connection, COLUMNS as CONNECTION_COLUMNS};
use super::{opt_time, time, SqliteStore};
use crate::domain::{
    to_micros, Connection, ConnectionId, NewWebhookEvent, StoredWebhookEvent, TenantId, Timestamp,
};
use crate::store::shared::inbox::{self, InboxDialect};
use crate::store::shared::turns::walk_tenants;
use crate::store::{EventCompletion, Inbox, StoreError};

/// An event a claim may take at `?1`: pending, due, and not leased by a live claim.
const READY: &str = "status = 'pending' AND next_attempt_at <= ?1 \
     AND (lease_expires_at IS NULL OR lease_expires_at < ?1)";

/// An event's columns, its headers and body from `webhook_event_bodies` (inline in rows stored
/// before `0011_webhook_event_bodies`), for a `SELECT` from `webhook_events` or an update's
/// `RETURNING`.
const COLUMNS: &str = "id, tenant_id, provider, connection_id, dedupe_key, event_type, \
     coalesce((SELECT b.headers FROM webhook_event_bodies AS b WHERE b.id = webhook_events.id), \
     headers) AS headers, \
     coalesce((SELECT b.body FROM webhook_event_bodies AS b WHERE b.id = webhook_events.id), \
     body) AS body, \
     status, attempts, last_error, received_at, processed_at";

#[async_trait]
impl Inbox for SqliteStore {
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
        let _turn = self.gate.lock().await;
        inbox::complete(self, completions, lease, now).await
    }

    async fn retry_webhook_event(
        &self,
        id: Uuid,
        error: &str,
        lease: Timestamp,
        next_attempt_at: Timestamp,
    ) -> Result<(), StoreError> {
        let _turn = self.gate.lock().await;
        sqlx::query(
            "UPDATE webhook_events SET last_error = ?, next_attempt_at = ?, lease_expires_at = NULL \
             WHERE id = ? AND status = 'pending' AND lease_expires_at = ?",
        )
        .bind(error)
        .bind(to_micros(&next_attempt_at))
        .bind(id)
        .bind(to_micros(&lease))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn release_webhook_events(
        &self,
        lease: Timestamp,
        ids: Option<&[Uuid]>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE webhook_events SET lease_expires_at = NULL, attempts = MAX(attempts - 1, 0), \
             next_attempt_at = ",
        );
        q.push_bind(to_micros(&now))
            .push(" WHERE status = 'pending' AND lease_expires_at = ")
            .push_bind(to_micros(&lease));
        if let Some(ids) = ids {
            if ids.is_empty() {
                return Ok(0);
            }
            q.push(" AND id IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(")");
        }
        let _turn = self.gate.lock().await;
        let done = q.build().execute(&self.writer).await?;
        Ok(done.rows_affected())
    }

    async fn purge_webhook_events(&self, before: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_events WHERE status IN ('processed', 'ignored', 'unmatched') \
             AND received_at < ?",
        )
        .bind(to_micros(&before))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
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

/// The tenants with a delivery ready, after `?3` when `anchored`: a walk over
/// `webhook_events_pending_by_tenant` (migration 0007), each step one probe for the next tenant.
fn pending_tenants_sql(anchored: bool) -> String {
    walk_tenants(
        "webhook_events",
        Some("webhook_events_pending_by_tenant"),
        READY,
        anchored,
        "?2",
        "?3",
    )
}

#[async_trait]
impl InboxDialect for SqliteStore {
    async fn pending_tenants(
        &self,
        now: Timestamp,
        after: Option<Uuid>,
        max: u32,
    ) -> Result<Vec<Uuid>, StoreError> {
        let sql = pending_tenants_sql(after.is_some());
        let mut query = sqlx::query_scalar(&sql)
            .bind(to_micros(&now))
            .bind(i64::from(max));
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
        // The whole claim in one statement, its own transaction: every tenant's share (one
        // probe of `webhook_events_pending_by_tenant` each), then the oldest of anyone's in the
        // room the shares left. One step on the connection's thread instead of one per tenant.
        let (tenants, share) = crate::store::shared::turns::shares(limit, tenants);
        let mut sql = String::from("WITH shares(id) AS MATERIALIZED (");
        if tenants.is_empty() {
            sql.push_str("SELECT NULL WHERE 0");
        }
        for n in 0..tenants.len() {
            if n > 0 {
                sql.push_str(" UNION ALL ");
            }
            // Parameters 1 to 4 are the times and sizes below; the tenants follow.
            let tenant = n.saturating_add(5);
            sql.push_str(&format!(
                "SELECT id FROM (SELECT id FROM webhook_events WHERE {READY} \
                 AND tenant_id = ?{tenant} ORDER BY next_attempt_at LIMIT ?3)"
            ));
        }
        sql.push_str(&format!(
            "), rest(id) AS MATERIALIZED (SELECT id FROM webhook_events WHERE {READY} \
             AND id NOT IN (SELECT id FROM shares) ORDER BY next_attempt_at \
             LIMIT max(?4 - (SELECT count(*) FROM shares), 0)) \
             UPDATE webhook_events SET lease_expires_at = ?2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM shares UNION ALL SELECT id FROM rest) \
             RETURNING {COLUMNS}"
        ));
        let mut query = sqlx::query(&sql)
            .bind(to_micros(&now))
            .bind(to_micros(&lease_until))
            .bind(i64::from(share))
            .bind(i64::from(limit));
        for tenant in tenants {
            query = query.bind(*tenant);
        }
        let rows = query.fetch_all(&self.writer).await?;
        rows.iter().map(decode).collect()
    }

    async fn record_outcomes(
        &self,
        conn: &mut SqliteConnection,
        completions: &[EventCompletion],
        lease: Timestamp,
        now: Timestamp,
    ) -> Result<Vec<Uuid>, StoreError> {
        // Every outcome in one statement, from a list of values: one step however many
        // connections the batch's events belong to.
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let mut q =
            QueryBuilder::<Sqlite>::new("WITH o(id, status, connection_id, last_error) AS (");
        q.push_values(completions, |mut b, c| {
            b.push_bind(c.id)
                .push_bind(c.outcome.as_str())
                .push_bind(c.connection_id.map(|id| id.0))
                .push_bind(c.error.as_deref());
        });
        q.push(
            ") UPDATE webhook_events SET status = o.status, \
             connection_id = COALESCE(o.connection_id, webhook_events.connection_id), \
             last_error = o.last_error, processed_at = ",
        )
        .push_bind(to_micros(&now))
        .push(
            ", lease_expires_at = NULL FROM o WHERE webhook_events.id = o.id \
             AND webhook_events.status = 'pending' AND webhook_events.lease_expires_at = ",
        )
        .push_bind(to_micros(&lease))
        .push(" RETURNING webhook_events.id");
        Ok(q.build_query_scalar().fetch_all(&mut *conn).await?)
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

#[cfg(test)]
mod tests {
    use super::{pending_tenants_sql, SqliteStore};
    use crate::domain::{now, EventStatus, NewWebhookEvent, TenantId};
    use crate::store::sqlite::plans::assert_walks_through;
    use crate::store::{Inbox, Store, StoreOptions};

    #[tokio::test]
    async fn the_tenants_with_deliveries_ready_are_walked_through_their_index_without_a_sort() {
        assert_walks_through(pending_tenants_sql, "webhook_events_pending_by_tenant").await;
    }

    fn delivery(tenant: TenantId, key: &str) -> NewWebhookEvent {
        NewWebhookEvent {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant,
            provider: "sandbox".into(),
            connection_id: None,
            dedupe_key: key.into(),
            event_type: None,
            headers: serde_json::Map::new(),
            body: b"{}".to_vec(),
            received_at: now(),
        }
    }

    async fn open(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions { max_connections: 2 })
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        store
    }

    /// The headers and body stored in `webhook_events` and in `webhook_event_bodies` for `id`.
    async fn stored(
        store: &SqliteStore,
        id: uuid::Uuid,
    ) -> ((String, Vec<u8>), Option<(String, Vec<u8>)>) {
        let row = sqlx::query_as("SELECT headers, body FROM webhook_events WHERE id = ?")
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .expect("row");
        let apart = sqlx::query_as("SELECT headers, body FROM webhook_event_bodies WHERE id = ?")
            .bind(id)
            .fetch_optional(&store.pool)
            .await
            .expect("body");
        (row, apart)
    }

    fn with_body(tenant: TenantId, key: &str, body: &[u8]) -> NewWebhookEvent {
        let mut new = delivery(tenant, key);
        new.headers.insert("webhook-id".into(), key.into());
        new.body = body.to_vec();
        new
    }

    #[tokio::test]
    async fn a_body_is_kept_apart_from_the_row_the_inbox_updates() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(&dir).await;
        let tenant = TenantId(uuid::Uuid::new_v4());
        let body = vec![b'x'; 7168];
        let new = with_body(tenant, "a", &body);
        store.insert_webhook_event(&new).await.expect("stored");
        // A redelivery is skipped: no second body.
        let again = with_body(tenant, "a", b"other");
        let (id, duplicate) = store.insert_webhook_event(&again).await.expect("again");
        assert_eq!((id, duplicate), (new.id, true));
        assert_eq!(bodies(&store).await, 1);

        let (row, apart) = stored(&store, new.id).await;
        assert_eq!(row, ("{}".to_string(), Vec::new()));
        let headers = serde_json::to_string(&new.headers).expect("headers");
        assert_eq!(apart, Some((headers, body.clone())));

        // Claims and reads return them whole.
        let lease = reads_and_claims_whole(&store, &new).await;

        // The body goes with its delivery.
        store
            .complete_webhook_event(new.id, EventStatus::Ignored, None, &[], None, lease, now())
            .await
            .expect("complete");
        let purged = store
            .purge_webhook_events(now() + chrono::Duration::seconds(1))
            .await
            .expect("purge");
        assert_eq!(purged, 1);
        assert_eq!(bodies(&store).await, 0);
        // And with its tenant.
        store
            .insert_webhook_event(&with_body(tenant, "b", &body))
            .await
            .expect("stored");
        assert_eq!(bodies(&store).await, 1);
        store.erase_tenant(tenant).await.expect("erased");
        assert_eq!(bodies(&store).await, 0);
    }

    /// Reads `new` back and claims it (it must be the only ready delivery), checking both
    /// return its headers and body whole; the claim's lease.
    async fn reads_and_claims_whole(
        store: &SqliteStore,
        new: &NewWebhookEvent,
    ) -> crate::domain::Timestamp {
        let read = store
            .get_webhook_event(new.tenant_id, new.id)
            .await
            .expect("read")
            .expect("there");
        assert_eq!((&read.headers, &read.body), (&new.headers, &new.body));
        let lease = now() + chrono::Duration::seconds(60);
        let claimed = store
            .claim_webhook_events(now(), lease, 10)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (&claimed[0].headers, &claimed[0].body),
            (&new.headers, &new.body)
        );
        lease
    }

    async fn bodies(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM webhook_event_bodies")
            .fetch_one(&store.pool)
            .await
            .expect("count")
    }

    #[tokio::test]
    async fn a_delivery_stored_with_its_body_inline_reads_and_claims_whole() {
        // As a row stored before `0011_webhook_event_bodies` is.
        let dir = tempfile::tempdir().expect("dir");
        let store = open(&dir).await;
        let tenant = TenantId(uuid::Uuid::new_v4());
        let new = with_body(tenant, "inline", b"{\"inline\":true}");
        store.insert_webhook_event(&new).await.expect("stored");
        let headers = serde_json::to_string(&new.headers).expect("headers");
        sqlx::query("UPDATE webhook_events SET headers = ?, body = ? WHERE id = ?")
            .bind(&headers)
            .bind(&new.body)
            .bind(new.id)
            .execute(&store.pool)
            .await
            .expect("inline");
        sqlx::query("DELETE FROM webhook_event_bodies WHERE id = ?")
            .bind(new.id)
            .execute(&store.pool)
            .await
            .expect("no body apart");
        assert_eq!(stored(&store, new.id).await.1, None);

        reads_and_claims_whole(&store, &new).await;
    }

    #[tokio::test]
    async fn a_claim_is_given_back_only_under_its_own_lease() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(&dir).await;
        let tenant = TenantId(uuid::Uuid::new_v4());
        let (a, b) = (delivery(tenant, "a"), delivery(tenant, "b"));
        store.insert_webhook_event(&a).await.expect("a");
        store.insert_webhook_event(&b).await.expect("b");
        let lease = now() + chrono::Duration::seconds(60);
        let claimed = store
            .claim_webhook_events(now(), lease, 10)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 2);

        // Another lease, or a finished event, is left alone.
        let other = lease + chrono::Duration::microseconds(1);
        let released = store.release_webhook_events(other, None, now()).await;
        assert_eq!(released.expect("release"), 0);
        store
            .complete_webhook_event(b.id, EventStatus::Ignored, None, &[], None, lease, now())
            .await
            .expect("complete");
        let released = store
            .release_webhook_events(lease, Some(&[a.id, b.id]), now())
            .await;
        assert_eq!(released.expect("release"), 1);

        // Due again at once, the interrupted attempt not counted.
        let again = store
            .claim_webhook_events(now(), now() + chrono::Duration::seconds(60), 10)
            .await
            .expect("claim again");
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].id, again[0].attempts), (a.id, 1));
    }
}
