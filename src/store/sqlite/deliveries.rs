//! Storing webhook deliveries on SQLite by group commit. SQLite admits one writer at a time,
//! so concurrent deliveries committing one by one queue on its lock and starve every other
//! writer (the inbox worker above all). Instead, one writer task takes every delivery waiting
//! at that moment, inserts them in one transaction and answers each caller after the commit:
//! a delivery is still durable before it is acknowledged, and the cost of a commit is shared.

use std::collections::HashSet;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::WriteGate;
use crate::domain::{to_micros, NewWebhookEvent};
use crate::store::StoreError;

/// The most deliveries one transaction holds (ten parameters each, well under SQLite's limit).
const MAX_GROUP: usize = 256;
/// Deliveries that may wait for the writer before senders wait for room.
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<(Uuid, bool), StoreError>>;

/// The handle callers store deliveries through.
#[derive(Clone, Debug)]
pub(super) struct Deliveries {
    queue: mpsc::Sender<(NewWebhookEvent, Reply)>,
}

impl Deliveries {
    /// Starts the writer task over `pool`; it ends when the last handle is dropped.
    pub(super) fn start(pool: SqlitePool, gate: WriteGate) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(write(pool, gate, waiting));
        Self { queue }
    }

    /// Stores `new` unless its dedupe key is there; answers once the insert has committed.
    pub(super) async fn insert(&self, new: &NewWebhookEvent) -> Result<(Uuid, bool), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((new.clone(), reply))
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

/// The same "unavailable" for each caller of a failed group.
fn unavailable(err: &StoreError) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(error_chain(err))))
}

fn error_chain(err: &StoreError) -> String {
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

async fn write(
    pool: SqlitePool,
    gate: WriteGate,
    mut waiting: mpsc::Receiver<(NewWebhookEvent, Reply)>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while waiting.recv_many(&mut group, MAX_GROUP).await > 0 {
        let committed = {
            let _turn = gate.lock().await;
            commit_group(&pool, &group).await
        };
        match committed {
            Ok(outcomes) => {
                for ((_, reply), outcome) in group.drain(..).zip(outcomes) {
                    // A caller that gave up still has its delivery stored; a redelivery is a
                    // duplicate.
                    let _ = reply.send(Ok(outcome));
                }
            }
            // The database is away: every caller hears so, and its provider redelivers.
            Err(err) if err.is_unavailable() => {
                tracing::warn!(error = %error_chain(&err), deliveries = group.len(), "could not store deliveries");
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(unavailable(&err)));
                }
            }
            // One delivery's failure must not fail the others: each goes again on its own.
            Err(_) => {
                for (new, reply) in group.drain(..) {
                    let outcome = {
                        let _turn = gate.lock().await;
                        commit_one(&pool, &new).await
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

async fn commit_group(
    pool: &SqlitePool,
    group: &[(NewWebhookEvent, Reply)],
) -> Result<Vec<(Uuid, bool)>, StoreError> {
    let mut headers = Vec::with_capacity(group.len());
    for (new, _) in group {
        headers.push(
            serde_json::to_string(&new.headers).map_err(|e| StoreError::corrupt("headers", e))?,
        );
    }
    let mut tx = pool.begin().await?;
    // One statement for the group; a redelivery of a key stored before, or earlier in the
    // same statement, is skipped and then found below.
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO webhook_events (id, tenant_id, provider, connection_id, dedupe_key, \
         event_type, headers, body, status, next_attempt_at, received_at) ",
    );
    q.push_values(
        group.iter().zip(&headers),
        |mut row, ((new, _), headers)| {
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
        },
    );
    q.push(" ON CONFLICT (tenant_id, provider, dedupe_key) DO NOTHING RETURNING id");
    let inserted: HashSet<Uuid> = q
        .build_query_scalar::<Uuid>()
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let mut outcomes = Vec::with_capacity(group.len());
    for (new, _) in group {
        if inserted.contains(&new.id) {
            outcomes.push((new.id, false));
        } else {
            outcomes.push((existing(&mut tx, new).await?, true));
        }
    }
    tx.commit().await?;
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
        None => Ok((existing(conn, new).await?, true)),
    }
}

/// The id of the stored delivery with `new`'s dedupe key.
async fn existing(conn: &mut SqliteConnection, new: &NewWebhookEvent) -> Result<Uuid, StoreError> {
    let id = sqlx::query_scalar(
        "SELECT id FROM webhook_events WHERE tenant_id = ? AND provider = ? AND dedupe_key = ?",
    )
    .bind(new.tenant_id.0)
    .bind(&new.provider)
    .bind(&new.dedupe_key)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection as _, SqliteConnection};

    use super::super::SqliteStore;
    use crate::domain::{now, ConnectionId, NewWebhookEvent, TenantId};
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_bad_delivery_in_a_group_fails_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, _) = store(&dir).await;
        let tenant = TenantId(uuid::Uuid::new_v4());
        // A connection that does not exist breaks the foreign key of this one delivery only.
        let mut bad = delivery(tenant, "bad");
        bad.connection_id = Some(ConnectionId::generate());
        let goods: Vec<NewWebhookEvent> = (0..20)
            .map(|i| delivery(tenant, &format!("good-{i}")))
            .collect();
        let (bad_result, good_results) = tokio::join!(
            store.insert_webhook_event(&bad),
            futures::future::join_all(goods.iter().map(|d| store.insert_webhook_event(d)))
        );
        assert!(bad_result.is_err(), "the bad delivery is refused");
        for (good, result) in goods.iter().zip(good_results) {
            assert_eq!(result.expect("stored"), (good.id, false));
            let stored = store
                .get_webhook_event(tenant, good.id)
                .await
                .expect("read");
            assert!(stored.is_some(), "{} is stored", good.dedupe_key);
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
