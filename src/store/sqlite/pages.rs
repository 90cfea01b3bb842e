//! Storing sync pages on SQLite by group commit (`store::shared::group`). Every running job
//! commits a page after each provider call, and SQLite admits one writer at a time: committing
//! each page alone made the jobs queue for the write turn, each transaction paying its own
//! `BEGIN`, lease check, cursor, `COMMIT` and sync. One writer task instead takes every page
//! waiting and commits them together: one lease statement for the group, one insert for all
//! their signals (and one for their events), one for the cursors, one sync.
//!
//! A page is encoded (its signals' JSON, their events) by its caller before it joins a group,
//! so the write turn holds only the statements. The rules of a page commit are those of
//! PostgreSQL's, one page a transaction (`store::postgres::queue`): the lease is checked and
//! extended first, in the same
//! transaction, and a page whose lease is lost or whose connection stopped being active writes
//! nothing; the others of its group are stored all the same.

use std::collections::HashSet;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::queue;
use super::signals::SignalRow;
use super::WriteGate;
use crate::domain::{merge_metadata, now, to_micros, ConnectionId, Timestamp};
use crate::store::shared::group::{Group, GroupCommit};
use crate::store::{Lease, PageCommit, StoreError, SyncCommit};

/// The most pages one transaction holds (a group is at most one page per job running here).
const MAX_GROUP: usize = 64;

/// The handle sync runs commit their pages through.
pub(super) type Pages = Group<Page, PageCommit>;

/// Starts the writer over `pool` (the store's one write connection); it ends when the last
/// handle is dropped.
pub(super) fn start(pool: SqlitePool, gate: WriteGate) -> Pages {
    Group::start(Writer { pool, gate }, 1, MAX_GROUP)
}

/// A page ready to be committed: the lease it is committed under, its signals encoded, and the
/// cursor (and metadata) that follow them.
#[derive(Debug)]
pub(super) struct Page {
    job: Uuid,
    owner: String,
    connection: Uuid,
    rows: Vec<SignalRow>,
    cursor: String,
    metadata: Option<Map<String, Value>>,
    lease_until: i64,
    at: i64,
}

impl Page {
    /// `page` of `connection`, committed under `lease` extended to `lease_until`, at `at`.
    pub(super) fn encode(
        lease: Lease<'_>,
        connection: ConnectionId,
        page: &SyncCommit<'_>,
        lease_until: Timestamp,
        at: Timestamp,
    ) -> Result<Self, StoreError> {
        let created = now();
        let rows = page
            .signals
            .iter()
            .map(|s| SignalRow::encode(s, created))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            job: lease.job.0,
            owner: lease.owner.to_owned(),
            connection: connection.0,
            rows,
            cursor: serde_json::to_string(page.cursor)
                .map_err(|e| StoreError::corrupt("cursor", e))?,
            metadata: page.metadata.cloned(),
            lease_until: to_micros(&lease_until),
            at: to_micros(&at),
        })
    }
}

/// The SQL of the group commit, taking its turn on the gate for each transaction.
struct Writer {
    pool: SqlitePool,
    gate: WriteGate,
}

#[async_trait]
impl GroupCommit for Writer {
    type Item = Page;
    type Outcome = PageCommit;

    async fn commit_group(&self, group: &[&Page]) -> Result<Vec<PageCommit>, StoreError> {
        let _turn = self.gate.lock().await;
        commit(&self.pool, group).await
    }

    async fn commit_one(&self, page: &Page) -> Result<PageCommit, StoreError> {
        let _turn = self.gate.lock().await;
        let mut outcomes = commit(&self.pool, &[page]).await?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::corrupt("page commit", "no outcome"))
    }
}

/// Commits `group` in one transaction; each page's outcome in the order of `group`.
async fn commit(pool: &SqlitePool, group: &[&Page]) -> Result<Vec<PageCommit>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let extended = extend_leases(&mut tx, group).await?;
    // Each page's refusal, `None` for the pages whose lease was extended.
    let mut refused = Vec::with_capacity(group.len());
    for page in group {
        refused.push(if extended.contains(&page.job) {
            None
        } else if queue::lease_held(&mut tx, page.job, &page.owner).await? {
            Some(PageCommit::ConnectionInactive)
        } else {
            Some(PageCommit::LeaseLost)
        });
    }
    let kept: Vec<&Page> = group
        .iter()
        .zip(&refused)
        .filter(|(_, refused)| refused.is_none())
        .map(|(page, _)| *page)
        .collect();
    let rows: Vec<&SignalRow> = kept.iter().flat_map(|page| &page.rows).collect();
    let new = super::signals::insert_rows(&mut tx, &rows).await?;
    for page in &kept {
        if let Some(patch) = &page.metadata {
            let mut metadata = queue::connection_metadata(&mut tx, page.connection).await?;
            merge_metadata(&mut metadata, patch.clone());
            queue::set_connection_metadata(&mut tx, page.connection, &metadata, page.at).await?;
        }
    }
    let cursors: Vec<(Uuid, &str, i64)> = kept
        .iter()
        .map(|page| (page.connection, page.cursor.as_str(), page.at))
        .collect();
    queue::store_cursors(&mut tx, &cursors).await?;
    tx.commit().await?;
    Ok(group
        .iter()
        .zip(refused)
        .map(|(page, refused)| {
            refused.unwrap_or_else(|| {
                let stored = page.rows.iter().filter(|row| new.contains(&row.id)).count();
                PageCommit::Stored(u64::try_from(stored).unwrap_or(u64::MAX))
            })
        })
        .collect())
}

/// Extends the lease of every page's job that its owner still holds while its connection is
/// active, in one statement; returns the jobs extended.
async fn extend_leases(
    conn: &mut SqliteConnection,
    group: &[&Page],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut q = QueryBuilder::<Sqlite>::new("WITH v(id, owner, lease_until, at) AS (");
    q.push_values(group, |mut b, page| {
        b.push_bind(page.job)
            .push_bind(page.owner.as_str())
            .push_bind(page.lease_until)
            .push_bind(page.at);
    });
    q.push(
        ") UPDATE sync_jobs SET lease_expires_at = v.lease_until, updated_at = v.at FROM v \
         WHERE sync_jobs.id = v.id AND sync_jobs.lease_owner = v.owner \
         AND sync_jobs.status = 'running' AND EXISTS (SELECT 1 FROM connections c \
         WHERE c.id = sync_jobs.connection_id AND c.status = 'active') \
         RETURNING sync_jobs.id",
    );
    let extended: Vec<Uuid> = q.build_query_scalar().fetch_all(conn).await?;
    Ok(extended.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sqlx::Row;

    use super::super::SqliteStore;
    use super::*;
    use crate::domain::{
        Connection, ConnectionStatus, JobId, JobType, NewConnection, NewJob, NewSignal, SignalId,
        TenantId,
    };
    use crate::store::{Store, StoreOptions, SyncQueue};

    async fn open(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("pages.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions { max_connections: 2 })
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        store
    }

    /// A connection of its own tenant with a running sync job claimed by `owner`.
    async fn running(store: &SqliteStore, owner: &str) -> (Connection, JobId) {
        let connection = store
            .insert_connection(&NewConnection {
                id: ConnectionId::generate(),
                tenant_id: TenantId(Uuid::new_v4()),
                provider: "sandbox".into(),
                external_account_id: Uuid::new_v4().to_string(),
                external_account_name: None,
                status: ConnectionStatus::Active,
                scopes: Vec::new(),
                token_expires_at: None,
                created_at: now(),
            })
            .await
            .expect("connection");
        let at = now() - chrono::Duration::seconds(1);
        store
            .enqueue_syncs(&[NewJob::queued(&connection, JobType::Incremental, at)])
            .await
            .expect("queued");
        let job = store
            .claim_sync_job(owner, now(), now() + chrono::Duration::minutes(1))
            .await
            .expect("claim")
            .expect("a job");
        assert_eq!(job.connection_id, connection.id);
        (connection, job.id)
    }

    fn signal(connection: &Connection, key: &str) -> NewSignal {
        NewSignal {
            id: SignalId::generate(),
            tenant_id: connection.tenant_id,
            connection_id: connection.id,
            provider: connection.provider.clone(),
            kind: "event.created".into(),
            occurred_at: now(),
            received_at: now(),
            actor: None,
            title: Some(key.to_owned()),
            url: None,
            external_id: None,
            dedupe_key: key.to_owned(),
            payload: json!({ "key": key }),
        }
    }

    fn page(
        job: JobId,
        owner: &str,
        connection: &Connection,
        signals: &[NewSignal],
        cursor: &Value,
        metadata: Option<&Map<String, Value>>,
    ) -> Page {
        let at = now();
        Page::encode(
            Lease { job, owner },
            connection.id,
            &SyncCommit {
                signals,
                cursor,
                metadata,
            },
            at + chrono::Duration::minutes(5),
            at,
        )
        .expect("encoded")
    }

    async fn count(store: &SqliteStore, sql: &str, id: Uuid) -> i64 {
        sqlx::query(sql)
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .expect("count")
            .get(0)
    }

    #[tokio::test]
    async fn pages_of_several_jobs_commit_together_each_under_its_own_lease() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(&dir).await;
        let (a, job_a) = running(&store, "worker-a").await;
        let (b, job_b) = running(&store, "worker-b").await;
        let (c, job_c) = running(&store, "worker-c").await;
        // b's lease was taken over by another worker; c's connection was disconnected.
        sqlx::query("UPDATE sync_jobs SET lease_owner = 'worker-z' WHERE id = ?")
            .bind(job_b.0)
            .execute(&store.writer)
            .await
            .expect("taken over");
        store
            .set_connection_status(c.tenant_id, c.id, ConnectionStatus::Revoked, None, now())
            .await
            .expect("revoked");
        let before_a = store.sync_cursor(a.id).await.expect("cursor");
        assert_eq!(before_a, None);
        let stored = store
            .insert_signals(&[signal(&a, "a-1")])
            .await
            .expect("stored");
        assert_eq!(stored, 1);

        let patch: Map<String, Value> = [("team".to_owned(), json!("T1"))].into_iter().collect();
        let pages = [
            page(
                job_a,
                "worker-a",
                &a,
                &[signal(&a, "a-1"), signal(&a, "a-2"), signal(&a, "a-3")],
                &json!({ "after": "a-3" }),
                Some(&patch),
            ),
            page(
                job_b,
                "worker-b",
                &b,
                &[signal(&b, "b-1")],
                &json!({ "after": "b-1" }),
                None,
            ),
            page(
                job_c,
                "worker-c",
                &c,
                &[signal(&c, "c-1")],
                &json!({ "after": "c-1" }),
                None,
            ),
        ];
        let group: Vec<&Page> = pages.iter().collect();
        let outcomes = commit(&store.writer, &group).await.expect("committed");

        // a-1 was stored before: two new signals, each with one `signal.created` event.
        assert_eq!(
            outcomes,
            vec![
                PageCommit::Stored(2),
                PageCommit::LeaseLost,
                PageCommit::ConnectionInactive
            ]
        );
        let signals = "SELECT count(*) FROM signals WHERE connection_id = ?";
        let events = "SELECT count(*) FROM push_events WHERE connection_id = ? \
                      AND event_type = 'signal.created'";
        assert_eq!(count(&store, signals, a.id.0).await, 3);
        assert_eq!(count(&store, events, a.id.0).await, 3);
        assert_eq!(
            store.sync_cursor(a.id).await.expect("cursor"),
            Some(json!({ "after": "a-3" }))
        );
        let a_now = store
            .get_connection(a.tenant_id, a.id)
            .await
            .expect("read")
            .expect("there");
        assert_eq!(a_now.metadata.get("team"), Some(&json!("T1")));
        let lease: i64 = sqlx::query_scalar("SELECT lease_expires_at FROM sync_jobs WHERE id = ?")
            .bind(job_a.0)
            .fetch_one(&store.pool)
            .await
            .expect("lease");
        assert_eq!(lease, pages[0].lease_until, "a's lease is extended");

        // Neither refused page wrote anything, nor moved its job's lease.
        for (connection, job) in [(&b, job_b), (&c, job_c)] {
            assert_eq!(count(&store, signals, connection.id.0).await, 0);
            assert_eq!(count(&store, events, connection.id.0).await, 0);
            assert_eq!(
                store.sync_cursor(connection.id).await.expect("cursor"),
                None
            );
            let lease: i64 =
                sqlx::query_scalar("SELECT lease_expires_at FROM sync_jobs WHERE id = ?")
                    .bind(job.0)
                    .fetch_one(&store.pool)
                    .await
                    .expect("lease");
            assert_ne!(lease, pages[1].lease_until);
            assert_ne!(lease, pages[2].lease_until);
        }
        store.close().await;
    }

    #[tokio::test]
    async fn concurrent_pages_are_stored_through_the_group_writer() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(&dir).await;
        let mut jobs = Vec::new();
        for n in 0..12 {
            jobs.push((running(&store, &format!("worker-{n}")).await, n));
        }
        let commits = jobs.iter().map(|((connection, job), n)| {
            let store = store.clone();
            let owner = format!("worker-{n}");
            async move {
                let signals: Vec<NewSignal> = (0..50)
                    .map(|i| signal(connection, &format!("{n}-{i}")))
                    .collect();
                let cursor = json!({ "page": n });
                store
                    .commit_sync_page(
                        Lease {
                            job: *job,
                            owner: &owner,
                        },
                        connection.id,
                        &SyncCommit {
                            signals: &signals,
                            cursor: &cursor,
                            metadata: None,
                        },
                        now() + chrono::Duration::minutes(5),
                        now(),
                    )
                    .await
            }
        });
        let outcomes = futures::future::join_all(commits).await;
        for outcome in outcomes {
            assert_eq!(outcome.expect("committed"), PageCommit::Stored(50));
        }
        for ((connection, _), n) in &jobs {
            let signals = "SELECT count(*) FROM signals WHERE connection_id = ?";
            assert_eq!(count(&store, signals, connection.id.0).await, 50);
            assert_eq!(
                store.sync_cursor(connection.id).await.expect("cursor"),
                Some(json!({ "page": n }))
            );
        }
        // Events are numbered without gaps or repeats across the groups.
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM push_events ORDER BY seq")
            .fetch_all(&store.pool)
            .await
            .expect("seqs");
        assert_eq!(seqs, (1..=600).collect::<Vec<i64>>());
        store.close().await;
    }
}
