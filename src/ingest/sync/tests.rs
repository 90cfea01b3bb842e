//! Engine tests with a scripted connector: failures the sandbox never produces (outages,
//! `Retry-After`, refused tokens, lost grants), lease takeover, and the cursor staying at the
//! last committed page. SQLite by default, PostgreSQL when `POBLYSH_TEST_DATABASE_URL` is set.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{backoff, new_job, JobOutcome, JobResult, Scheduler, SyncWorker};
use crate::config::{Config, Source};
use crate::connector::ProviderCallError;
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy, SyncContext};
use crate::connector::{SignalDraft, SyncPage};
use crate::crypto::Secret;
use crate::domain::{
    now, Connection, ConnectionId, ConnectionStatus, ConnectionUpsert, Job, JobStatus, JobType,
    SignalKind, TenantId, Timestamp,
};
use crate::services::Services;
use crate::store::{Lease, PageRequest, SignalFilter, StoreOptions, SyncCommit};
use crate::tokens::open_tokens;
use crate::tokens::seal_tokens;

#[path = "../../../tests/support/database.rs"]
mod database;

use database::TestDatabase;

struct Harness {
    state: Services,
    connection: Connection,
    _db: TestDatabase,
}

const FIRST_TOKEN: &str = "sandbox-access.first";

async fn harness() -> Harness {
    harness_with(&[]).await
}

/// A state over a fresh database with one active sandbox connection whose tokens the sandbox
/// can refresh.
async fn harness_with(extra: &[(&str, &str)]) -> Harness {
    let db = TestDatabase::create().await;
    let url = db.url.clone();
    let mut pairs = vec![
        ("POBLYSH_PROFILE".to_string(), "test".to_string()),
        ("POBLYSH_DATABASE_URL".to_string(), url.clone()),
        ("POBLYSH_SANDBOX_ENABLED".to_string(), "true".to_string()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_source(&Source::from_pairs(pairs)).expect("config");
    let store = crate::store::connect(&url, &StoreOptions { max_connections: 4 })
        .await
        .expect("store");
    store.migrate().await.expect("migrated");
    let state = Services::new(Arc::new(config), store);
    let connection = sandbox_connection(&state).await;
    Harness {
        state,
        connection,
        _db: db,
    }
}

async fn sandbox_connection(state: &Services) -> Connection {
    let id = ConnectionId::generate();
    let tenant = TenantId(Uuid::new_v4());
    let tokens = seal_tokens(
        state,
        tenant,
        "sandbox",
        id,
        &Secret::new(FIRST_TOKEN),
        Some(&Secret::new("sandbox-refresh.first")),
        Some(now() + chrono::Duration::hours(1)),
    );
    state
        .store
        .upsert_connection(&ConnectionUpsert {
            id,
            tenant_id: tenant,
            provider: "sandbox".into(),
            external_account_id: Uuid::new_v4().to_string(),
            external_account_name: None,
            scopes: vec![],
            tokens,
            metadata: Default::default(),
            secrets_sealed: None,
            now: now(),
        })
        .await
        .expect("upsert")
        .expect("created")
}

static SCRIPTED: Descriptor = Descriptor {
    slug: "sandbox",
    display_name: "Scripted",
    auth_type: AuthType::None,
    default_scopes: &[],
    kinds: &["scripted_event"],
    webhooks: false,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 1000,
        window_secs: 1,
        burst: 1000,
        max_concurrency: 4,
    },
    settings: &[],
};

/// One scripted answer of `sync_page`.
enum Step {
    /// `count` signals after the cursor, `more` or not.
    Page(u64, bool),
    Unauthorized,
    Unavailable,
    RateLimited(Option<u64>),
    InvalidGrant,
    /// The connection is disconnected (through `Scripted::store`) while the page is read.
    DisconnectedThenPage(u64, bool),
    /// A page that also sets members of the connection's metadata.
    PageWithMetadata(u64, bool, Value),
}

/// What `sync_page` was called with.
#[derive(Debug, Clone)]
struct Call {
    cursor: Option<Value>,
    token: String,
    /// The connection's metadata as the step saw it.
    metadata: serde_json::Map<String, Value>,
}

/// A connector answering from a script; cursors are `{"n": <signals so far>}`. An exhausted
/// script answers an empty last page.
#[derive(Default)]
struct Scripted {
    steps: Mutex<VecDeque<Step>>,
    calls: Mutex<Vec<Call>>,
    /// Where `Step::DisconnectedThenPage` disconnects.
    store: Option<Arc<dyn crate::store::Store>>,
}

impl Scripted {
    fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: Mutex::new(steps.into_iter().collect()),
            calls: Mutex::default(),
            store: None,
        }
    }

    /// Disconnects through `h`'s store when the script says so.
    fn disconnecting(mut self, h: &Harness) -> Self {
        self.store = Some(h.state.store.clone());
        self
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
}

#[async_trait]
impl Connector for Scripted {
    fn descriptor(&self) -> &'static Descriptor {
        &SCRIPTED
    }

    async fn sync_page(
        &self,
        ctx: SyncContext<'_>,
        cursor: Option<&Value>,
    ) -> Result<SyncPage, ProviderCallError> {
        self.calls.lock().expect("lock").push(Call {
            cursor: cursor.cloned(),
            token: ctx.access_token.expose().to_string(),
            metadata: ctx.connection.metadata.clone(),
        });
        let step = self.steps.lock().expect("lock").pop_front();
        let from = cursor.and_then(|c| c["n"].as_u64()).unwrap_or(0);
        let mut metadata = None;
        let (count, more) = match step {
            None => (0, false),
            Some(Step::Page(count, more)) => (count, more),
            Some(Step::PageWithMetadata(count, more, patch)) => {
                metadata = patch.as_object().cloned();
                (count, more)
            }
            Some(Step::Unauthorized) => return Err(ProviderCallError::Unauthorized),
            Some(Step::Unavailable) => {
                return Err(ProviderCallError::Unavailable(
                    "upstream answered 503".into(),
                ))
            }
            Some(Step::RateLimited(retry_after)) => {
                return Err(ProviderCallError::RateLimited { retry_after })
            }
            Some(Step::InvalidGrant) => {
                return Err(ProviderCallError::InvalidGrant("invalid_grant".into()))
            }
            Some(Step::DisconnectedThenPage(count, more)) => {
                let store = self.store.as_ref().expect("a store to disconnect through");
                let connection = ctx.connection;
                // This call runs while the page before is stored (pages are read one ahead):
                // the disconnect comes once that page is, as if it came during this call.
                let mut waited = 0;
                while store
                    .sync_cursor(connection.id)
                    .await
                    .expect("cursor")
                    .as_ref()
                    != cursor
                {
                    waited += 1;
                    assert!(waited < 500, "the page before this call was never stored");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                store
                    .revoke_connection(connection.tenant_id, connection.id, now())
                    .await
                    .expect("revoke")
                    .expect("revoked");
                (count, more)
            }
        };
        let signals = (from + 1..=from + count)
            .map(|n| SignalDraft {
                kind: SignalKind::of("scripted_event"),
                occurred_at: now(),
                actor: None,
                title: Some(format!("event {n}")),
                url: None,
                external_id: Some(n.to_string()),
                dedupe_key: format!("scripted:{n}"),
                payload: json!({ "n": n }),
            })
            .collect();
        Ok(SyncPage {
            signals,
            cursor: json!({ "n": from + count }),
            more,
            metadata,
        })
    }
}

impl Harness {
    async fn enqueue(&self, max_attempts: i32) -> Job {
        self.enqueue_at(max_attempts, now()).await
    }

    /// Queues a job due at `at`.
    async fn enqueue_at(&self, max_attempts: i32, at: Timestamp) -> Job {
        let mut job = new_job(&self.connection, JobType::Incremental, at);
        job.max_attempts = max_attempts;
        self.state
            .store
            .enqueue_sync(&job, crate::store::IfRunning::Join)
            .await
            .expect("enqueue")
            .job
    }

    /// Claims as `worker` as if it were `at`.
    async fn claim_at(&self, worker: &SyncWorker, at: Timestamp) -> Option<Job> {
        let lease = chrono::Duration::from_std(SyncWorker::lease(&self.state)).expect("lease");
        self.state
            .store
            .claim_sync_job(worker.owner(), at, at + lease)
            .await
            .expect("claim")
    }

    async fn run(&self, worker: &SyncWorker, connector: &Scripted, at: Timestamp) -> JobOutcome {
        let job = self.claim_at(worker, at).await.expect("a due job");
        worker
            .run_job(&self.state, Some(connector), job)
            .await
            .expect("recorded")
    }

    async fn job(&self, job: &Job) -> Job {
        self.state
            .store
            .get_job(job.tenant_id, job.id)
            .await
            .expect("get")
            .expect("exists")
    }

    async fn connection(&self) -> Connection {
        self.state
            .store
            .get_connection(self.connection.tenant_id, self.connection.id)
            .await
            .expect("get")
            .expect("exists")
    }

    async fn dedupe_keys(&self) -> Vec<String> {
        let filter = SignalFilter {
            connection_id: Some(self.connection.id),
            ..Default::default()
        };
        let page = PageRequest {
            after: None,
            fetch: 100,
        };
        let mut keys: Vec<String> = self
            .state
            .store
            .list_signals(self.connection.tenant_id, &filter, page)
            .await
            .expect("list")
            .into_iter()
            .map(|s| s.dedupe_key)
            .collect();
        keys.sort_by_key(|k| {
            k.trim_start_matches("scripted:")
                .parse::<u64>()
                .unwrap_or(0)
        });
        keys
    }

    async fn cursor(&self) -> Option<Value> {
        self.state
            .store
            .sync_cursor(self.connection.id)
            .await
            .expect("cursor")
    }
}

fn keys(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|n| format!("scripted:{n}")).collect()
}

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

#[tokio::test]
async fn pages_are_committed_with_their_cursor_until_the_last() {
    let h = harness().await;
    let job = h.enqueue(5).await;
    let worker = SyncWorker::new();
    let connector = Scripted::new([Step::Page(2, true), Step::Page(3, false)]);
    let outcome = h.run(&worker, &connector, now()).await;
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!((outcome.pages, outcome.new_signals), (2, 5));
    let cursors: Vec<_> = connector.calls().into_iter().map(|c| c.cursor).collect();
    assert_eq!(cursors, [None, Some(json!({ "n": 2 }))]);
    assert_eq!(h.cursor().await, Some(json!({ "n": 5 })));
    assert_eq!(h.dedupe_keys().await, keys(1..=5));
    let stored = h.job(&job).await;
    assert_eq!(stored.status, JobStatus::Succeeded);
    assert_eq!(stored.attempts, 1);
    assert!(stored.finished_at.is_some() && stored.error.is_none());
    assert!(h.connection().await.last_synced_at.is_some());
}

#[tokio::test]
async fn a_page_updates_the_connection_metadata_with_its_cursor_and_the_next_page_sees_it() {
    let h = harness().await;
    h.enqueue(5).await;
    let worker = SyncWorker::new();
    let connector = Scripted::new([
        Step::PageWithMetadata(
            1,
            true,
            json!({ "history_id": "10", "mailbox": "a@example.com" }),
        ),
        Step::PageWithMetadata(1, false, json!({ "history_id": "11", "mailbox": null })),
    ]);
    let outcome = h.run(&worker, &connector, now()).await;
    assert_eq!(outcome.result, JobResult::Succeeded);
    let calls = connector.calls();
    assert_eq!(calls[0].metadata, serde_json::Map::new());
    assert_eq!(
        Value::Object(calls[1].metadata.clone()),
        json!({ "history_id": "10", "mailbox": "a@example.com" })
    );
    // Set member by member; `null` removes one.
    assert_eq!(
        Value::Object(h.connection().await.metadata),
        json!({ "history_id": "11" })
    );
}

#[tokio::test]
async fn an_outage_is_retried_with_backoff_and_the_cursor_stays_at_the_last_committed_page() {
    let h = harness().await;
    let job = h.enqueue(5).await;
    let worker = SyncWorker::new();
    let before = now();
    let connector = Scripted::new([Step::Page(3, true), Step::Unavailable]);
    let outcome = h.run(&worker, &connector, now()).await;
    let JobResult::Retrying { at, error } = &outcome.result else {
        panic!("{outcome:?}");
    };
    assert!(error.contains("503"), "{error}");
    // First retry: full jitter below 1 s × 2^1.
    let ceiling = chrono::Duration::from_std(backoff::ceiling(1)).expect("ceiling");
    assert!(*at >= before && *at <= now() + ceiling, "{at}");
    let stored = h.job(&job).await;
    assert_eq!(stored.status, JobStatus::Queued);
    assert_eq!(stored.scheduled_at, *at);
    assert_eq!(stored.error.as_deref(), Some(error.as_str()));
    assert_eq!(stored.attempts, 1);
    // The first page stands; the failed one left no trace.
    assert_eq!(h.cursor().await, Some(json!({ "n": 3 })));
    assert_eq!(h.dedupe_keys().await, keys(1..=3));
    assert!(h.connection().await.last_error.is_none(), "not failed yet");

    // The retry resumes after the committed page.
    let retry = Scripted::new([Step::Page(2, false)]);
    let outcome = h.run(&worker, &retry, now() + hours(1)).await;
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!(outcome.attempt, 2);
    assert_eq!(retry.calls()[0].cursor, Some(json!({ "n": 3 })));
    assert_eq!(h.dedupe_keys().await, keys(1..=5));
    assert!(h.job(&job).await.error.is_none());
}

#[tokio::test]
async fn retry_after_is_a_floor_for_the_next_attempt() {
    let h = harness().await;
    let job = h.enqueue(5).await;
    let before = now();
    let connector = Scripted::new([Step::RateLimited(Some(600))]);
    let outcome = h.run(&SyncWorker::new(), &connector, now()).await;
    let JobResult::Retrying { at, .. } = outcome.result else {
        panic!("{outcome:?}");
    };
    assert!(at >= before + chrono::Duration::seconds(600), "{at}");
    assert_eq!(h.job(&job).await.scheduled_at, at);
    // Not due before then.
    assert!(h
        .claim_at(&SyncWorker::new(), at - chrono::Duration::seconds(1))
        .await
        .is_none());
    assert!(h.claim_at(&SyncWorker::new(), at).await.is_some());
}

#[tokio::test]
async fn an_absurd_retry_after_is_clamped_and_stored() {
    let h = harness().await;
    let job = h.enqueue(5).await;
    let connector = Scripted::new([Step::RateLimited(Some(u64::MAX))]);
    let outcome = h.run(&SyncWorker::new(), &connector, now()).await;
    let JobResult::Retrying { at, .. } = outcome.result else {
        panic!("{outcome:?}");
    };
    let max = chrono::Duration::from_std(backoff::MAX_RETRY_AFTER).expect("an hour");
    assert!(at <= now() + max, "{at}");
    assert!(at >= now() + max - chrono::Duration::seconds(60), "{at}");
    assert_eq!(h.job(&job).await.scheduled_at, at);
}

#[test]
fn later_never_panics_and_adds_at_most_a_year() {
    let at = now();
    let year = chrono::Duration::days(365);
    for d in [
        std::time::Duration::from_secs(u64::MAX),
        std::time::Duration::MAX,
        std::time::Duration::from_secs(10_000_000_000_000),
    ] {
        assert!(super::worker::later(at, d) <= at + year, "{d:?}");
    }
    let end = chrono::DateTime::<chrono::Utc>::MAX_UTC;
    assert!(super::worker::later(end, std::time::Duration::from_secs(60)) <= end);
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_page_retried() {
    let h = harness().await;
    h.enqueue(5).await;
    let connector = Scripted::new([Step::Unauthorized, Step::Page(1, false)]);
    let outcome = h.run(&SyncWorker::new(), &connector, now()).await;
    assert_eq!(outcome.result, JobResult::Succeeded);
    let calls = connector.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].token, FIRST_TOKEN);
    assert_ne!(
        calls[1].token, FIRST_TOKEN,
        "the page is retried with a new token"
    );
    assert_eq!(calls[1].cursor, None, "the same page");
    let stored = open_tokens(&h.state, &h.connection).await.expect("tokens");
    assert_eq!(stored.access_token.expose(), calls[1].token);
    assert_eq!(h.dedupe_keys().await, keys(1..=1));
}

#[tokio::test]
async fn a_token_refused_twice_is_not_refreshed_again() {
    let h = harness().await;
    h.enqueue(5).await;
    let connector = Scripted::new([Step::Unauthorized, Step::Unauthorized, Step::Page(1, false)]);
    let outcome = h.run(&SyncWorker::new(), &connector, now()).await;
    assert!(
        matches!(outcome.result, JobResult::Retrying { .. }),
        "{outcome:?}"
    );
    assert_eq!(connector.calls().len(), 2);
}

#[tokio::test]
async fn a_lost_grant_fails_at_once_and_the_connection_needs_reauth() {
    let h = harness().await;
    let job = h.enqueue(5).await;
    let connector = Scripted::new([Step::InvalidGrant]);
    let outcome = h.run(&SyncWorker::new(), &connector, now()).await;
    assert!(
        matches!(outcome.result, JobResult::Failed { .. }),
        "{outcome:?}"
    );
    let stored = h.job(&job).await;
    assert_eq!((stored.status, stored.attempts), (JobStatus::Failed, 1));
    let connection = h.connection().await;
    assert_eq!(connection.status, ConnectionStatus::NeedsReauth);
    assert!(connection
        .last_error
        .expect("error")
        .contains("reauthorization"));
}

#[tokio::test]
async fn a_job_fails_after_max_attempts_and_the_next_scheduled_sync_still_happens() {
    let h = harness().await;
    let job = h.enqueue(3).await;
    let worker = SyncWorker::new();
    let connector = Scripted::new([Step::Unavailable, Step::Unavailable, Step::Unavailable]);
    let mut at = now();
    for attempt in 1..=3 {
        let outcome = h.run(&worker, &connector, at).await;
        assert_eq!(outcome.attempt, attempt);
        if attempt < 3 {
            assert!(
                matches!(outcome.result, JobResult::Retrying { .. }),
                "{outcome:?}"
            );
        } else {
            assert!(
                matches!(outcome.result, JobResult::Failed { .. }),
                "{outcome:?}"
            );
        }
        at += hours(1);
    }
    let stored = h.job(&job).await;
    assert_eq!((stored.status, stored.attempts), (JobStatus::Failed, 3));
    let error = stored.error.expect("error visible");
    assert!(error.contains("503"), "{error}");
    assert_eq!(h.connection().await.last_error, Some(error));
    assert!(
        h.claim_at(&worker, at + hours(24)).await.is_none(),
        "failed is final"
    );

    // The scheduler enqueues the next run as usual.
    assert_eq!(Scheduler.tick(&h.state, now()).await.expect("tick"), 1);
    let outcome = h
        .run(&worker, &Scripted::new([Step::Page(1, false)]), now())
        .await;
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert!(
        h.connection().await.last_error.is_none(),
        "a success clears the error"
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_first_worker_writes_nothing_more() {
    let h = harness().await;
    // Set just over a minute ago, so that B's takeover (once A's lease expired) has happened by
    // now and A, resuming now, has stalled past a quarter of its lease, as any worker whose job
    // was taken over has: the claim alone no longer vouches for its lease.
    let start = now() - chrono::Duration::seconds(65);
    let job = h.enqueue_at(5, start).await;
    let (a, b) = (SyncWorker::new(), SyncWorker::new());
    let claimed = h.claim_at(&a, start).await.expect("claimed by a");
    let lease_a = Lease {
        job: claimed.id,
        owner: a.owner(),
    };
    // A commits its first page, then stalls.
    let page: Vec<_> = (1..=2)
        .map(|n| {
            SignalDraft {
                kind: SignalKind::of("scripted_event"),
                occurred_at: now(),
                actor: None,
                title: None,
                url: None,
                external_id: None,
                dedupe_key: format!("scripted:{n}"),
                payload: json!({}),
            }
            .into_signal(&h.connection)
        })
        .collect();
    let committed = h
        .state
        .store
        .commit_sync_page(
            lease_a,
            h.connection.id,
            &SyncCommit {
                signals: &page,
                cursor: &json!({ "n": 2 }),
                metadata: None,
            },
            start + chrono::Duration::seconds(60),
            start,
        )
        .await
        .expect("commit");
    assert_eq!(committed, crate::store::PageCommit::Stored(2));

    // While A's lease holds, nobody else gets the job.
    assert!(h
        .claim_at(&b, start + chrono::Duration::seconds(30))
        .await
        .is_none());
    // Once it expired, B takes over and counts an attempt.
    let taken = h
        .claim_at(&b, start + chrono::Duration::seconds(61))
        .await
        .expect("taken over");
    assert_eq!((taken.id, taken.attempts), (job.id, 2));

    // A wakes up: its next page and its finish change nothing.
    let late: Vec<_> = page
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.id = crate::domain::SignalId::generate();
            s.dedupe_key = s.dedupe_key.replace("scripted:", "late:");
            s
        })
        .collect();
    let committed = h
        .state
        .store
        .commit_sync_page(
            lease_a,
            h.connection.id,
            &SyncCommit {
                signals: &late,
                cursor: &json!({ "n": 99 }),
                metadata: None,
            },
            now(),
            now(),
        )
        .await
        .expect("commit");
    assert_eq!(committed, crate::store::PageCommit::LeaseLost);
    let finished = h
        .state
        .store
        .finish_sync_job(lease_a, crate::store::JobFinish::Succeeded, now())
        .await
        .expect("finish");
    assert_eq!(finished, crate::store::Finished::NotOurs);
    assert_eq!(h.cursor().await, Some(json!({ "n": 2 })));

    // B resumes from A's committed page; nothing is lost or doubled.
    let connector = Scripted::new([Step::Page(2, false)]);
    let outcome = b
        .run_job(&h.state, Some(&connector), taken)
        .await
        .expect("run");
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!(connector.calls()[0].cursor, Some(json!({ "n": 2 })));
    assert_eq!(h.dedupe_keys().await, keys(1..=4));

    // A's run, had it gone on, stops at its next page.
    let connector = Scripted::new([Step::Page(1, false)]);
    let outcome = a
        .run_job(&h.state, Some(&connector), claimed)
        .await
        .expect("run");
    assert_eq!(outcome.result, JobResult::LeaseLost);
    assert!(connector.calls().is_empty());
}

#[tokio::test]
async fn a_job_whose_workers_keep_dying_is_abandoned() {
    let h = harness().await;
    let job = h.enqueue(1).await;
    let (a, b) = (SyncWorker::new(), SyncWorker::new());
    let start = now();
    h.claim_at(&a, start).await.expect("claimed");
    let taken = h.claim_at(&b, start + hours(1)).await.expect("taken over");
    assert_eq!(taken.attempts, 2);
    let connector = Scripted::new([Step::Page(1, false)]);
    let outcome = b
        .run_job(&h.state, Some(&connector), taken)
        .await
        .expect("run");
    assert!(
        matches!(outcome.result, JobResult::Failed { .. }),
        "{outcome:?}"
    );
    assert!(connector.calls().is_empty());
    assert_eq!(h.job(&job).await.status, JobStatus::Failed);
}

#[tokio::test]
async fn a_far_away_rate_limit_token_defers_the_job_without_counting_an_attempt() {
    let h = harness_with(&[
        ("POBLYSH_SANDBOX_RATE_LIMIT_REQUESTS", "1"),
        ("POBLYSH_SANDBOX_RATE_LIMIT_WINDOW_SECS", "3600"),
        ("POBLYSH_SANDBOX_RATE_LIMIT_BURST", "1"),
    ])
    .await;
    let job = h.enqueue(5).await;
    let before = now();
    let connector = Scripted::new([Step::Page(1, true), Step::Page(1, false)]);
    let outcome = h.run(&SyncWorker::new(), &connector, now()).await;
    let JobResult::Deferred { at } = outcome.result else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        connector.calls().len(),
        1,
        "the second call waits for a token"
    );
    assert!(at >= before + chrono::Duration::seconds(3590), "{at}");
    let stored = h.job(&job).await;
    assert_eq!((stored.status, stored.attempts), (JobStatus::Queued, 0));
    assert!(stored.error.expect("note").contains("rate limit"));
    assert_eq!(h.cursor().await, Some(json!({ "n": 1 })));
}

#[tokio::test]
async fn a_connection_that_is_not_active_fails_its_job_without_calling_the_provider() {
    let h = harness().await;
    let job = h.enqueue(5).await;
    h.state
        .store
        .revoke_connection(h.connection.tenant_id, h.connection.id, now())
        .await
        .expect("revoke");
    let connector = Scripted::new([Step::Page(1, false)]);
    let outcome = h.run(&SyncWorker::new(), &connector, now()).await;
    assert!(
        matches!(outcome.result, JobResult::Failed { .. }),
        "{outcome:?}"
    );
    assert!(connector.calls().is_empty());
    assert_eq!(h.job(&job).await.attempts, 1);
}

#[tokio::test]
async fn a_page_read_after_a_disconnect_is_not_stored_and_the_job_ends() {
    let h = harness().await;
    let connector =
        Scripted::new([Step::Page(3, true), Step::DisconnectedThenPage(2, true)]).disconnecting(&h);
    let job = h.enqueue(5).await;
    let worker = SyncWorker::new();
    let outcome = h.run(&worker, &connector, now()).await;
    match &outcome.result {
        JobResult::Failed { error } => assert!(error.contains("stopped being active"), "{error}"),
        other => panic!("expected the job to end, got {other:?}"),
    }
    assert_eq!(outcome.pages, 1);
    assert_eq!(h.dedupe_keys().await, keys(1..=3));
    assert_eq!(h.cursor().await, Some(json!({ "n": 3 })));
    assert_eq!(h.job(&job).await.status, JobStatus::Failed);
    assert_eq!(h.connection().await.status, ConnectionStatus::Revoked);
    // The page after the disconnected one was read while that one's commit found the
    // connection inactive (pages are read one ahead of their commits); nothing of it is stored
    // and no call follows.
    let calls = connector.calls();
    assert_eq!(
        calls.len(),
        3,
        "one read ahead, then no call after the disconnect"
    );
    assert_eq!(calls[2].cursor, Some(json!({ "n": 5 })));
}

#[tokio::test]
async fn a_follow_up_is_not_queued_for_a_connection_disconnected_meanwhile() {
    let h = harness().await;
    let job = h.enqueue(5).await;
    let worker = SyncWorker::new();
    let claimed = h.claim_at(&worker, now()).await.expect("the job");
    assert_eq!(claimed.id, job.id);
    let requested = h
        .state
        .store
        .enqueue_sync(
            &new_job(&h.connection, JobType::Incremental, now()),
            crate::store::IfRunning::FollowUp,
        )
        .await
        .expect("enqueue");
    assert!(!requested.created);
    assert_eq!(requested.job.id, job.id);
    h.state
        .store
        .revoke_connection(h.connection.tenant_id, h.connection.id, now())
        .await
        .expect("revoke")
        .expect("revoked");
    let lease = Lease {
        job: job.id,
        owner: worker.owner(),
    };
    let finished = h
        .state
        .store
        .finish_sync_job(lease, crate::store::JobFinish::Succeeded, now())
        .await
        .expect("finish");
    assert_eq!(finished, crate::store::Finished::Done);
    assert!(h.claim_at(&worker, now()).await.is_none(), "nothing queued");
}

#[test]
fn a_workers_lease_owner_names_its_process_and_differs_from_another_workers() {
    let (a, b) = (SyncWorker::new(), SyncWorker::new());
    let prefix = format!("worker-{}-", std::process::id());
    assert!(a.owner().starts_with(&prefix), "{}", a.owner());
    assert!(b.owner().starts_with(&prefix), "{}", b.owner());
    assert_ne!(a.owner(), b.owner());
}

#[tokio::test]
async fn a_lease_set_less_than_a_quarter_of_a_lease_ago_is_not_extended_before_a_page() {
    let h = harness().await;
    let worker = SyncWorker::new();
    let lease = chrono::Duration::from_std(SyncWorker::lease(&h.state)).expect("a lease");
    let at = now();
    let second = chrono::Duration::seconds(1);
    // A lease set at an unknown time is checked (extended) before the call.
    assert!(worker.lease_needs_extending(&h.state, None, at));
    assert!(!worker.lease_needs_extending(&h.state, Some(at), at));
    assert!(!worker.lease_needs_extending(&h.state, Some(at - lease / 4 + second), at));
    assert!(worker.lease_needs_extending(&h.state, Some(at - lease / 4), at));
}

#[tokio::test]
async fn a_run_started_right_after_its_claim_calls_the_provider_before_any_write() {
    let h = harness().await;
    h.enqueue(5).await;
    let (a, b) = (SyncWorker::new(), SyncWorker::new());
    let start = now();
    let claimed = h.claim_at(&a, start).await.expect("claimed by a");
    assert_eq!(claimed.started_at, Some(start));
    // B takes the job over behind A's back (as if A's lease had expired). A, running at once,
    // trusts the lease its claim set a moment ago: it reads the first page without a write
    // first (an extension would have found the lease gone and called nobody), and its commit,
    // which checks the lease, writes nothing.
    h.claim_at(&b, start + chrono::Duration::hours(1))
        .await
        .expect("taken over");
    let connector = Scripted::new([Step::Page(2, false)]);
    let outcome = a
        .run_job(&h.state, Some(&connector), claimed)
        .await
        .expect("run");
    assert_eq!(connector.calls().len(), 1);
    assert_eq!(outcome.result, JobResult::LeaseLost);
    assert!(h.dedupe_keys().await.is_empty());
}
