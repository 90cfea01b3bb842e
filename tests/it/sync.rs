//! The sync engine through the API: `POST /connections/{id}/sync`, workers draining the queue
//! (tests call `drain`, they never wait for the background loop, except the one test that
//! checks it runs), the scheduler's ticks, the sandbox's trickle of signals, client-side rate
//! limits, and two instances sharing one database. Provider failures over HTTP (`429`, `5xx`,
//! time-outs, malformed answers, refused tokens) are in `sync_faults.rs`, through the sandbox's
//! API mode; lease takeover is covered by the engine's own tests in `src/ingest/sync/tests.rs`.

use std::collections::HashSet;
use std::time::Duration;

use chrono::DateTime;
use connectors::domain::{now, ConnectionId, ConnectionStatus, JobId, TenantId};
use connectors::ingest::sync::{JobResult, Scheduler, SyncWorker};
use connectors::store::{Finished, JobFinish, Lease, PageCommit, SyncCommit};
use reqwest::Method;
use serde_json::{json, Value};

use crate::connect::connect_sandbox;
use crate::helpers::{assert_problem, json, tenant, TestApp};

/// `POST /connections/{id}/sync` for `t`.
async fn post_sync(app: &TestApp, t: TenantId, id: &str) -> reqwest::Response {
    app.operator(Method::POST, &format!("/connections/{id}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent")
}

/// Enqueues a sync and returns the job (asserting `202`).
async fn sync_now(app: &TestApp, t: TenantId, id: &str) -> Value {
    let (status, job) = json(post_sync(app, t, id).await).await;
    assert_eq!(status, 202, "{job}");
    job
}

/// The connection's signals (up to 100).
async fn signals(app: &TestApp, t: TenantId, id: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(t, &format!("/signals?connection_id={id}&limit=100"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["signals"].as_array().expect("signals").clone()
}

async fn job(app: &TestApp, t: TenantId, id: &Value) -> Value {
    let (status, body) = app
        .get_json(t, &format!("/jobs/{}", id.as_str().expect("id")))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn id(connection: &Value) -> String {
    connection["id"].as_str().expect("id").to_string()
}

fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .to_utc()
}

/// Stores `cursor` for the connection through a job claimed for the purpose, then puts the job
/// back in the queue, due now: as if an earlier sync had stopped there.
async fn set_cursor(app: &TestApp, t: TenantId, connection: &str, cursor: Value) -> Value {
    let queued = sync_now(app, t, connection).await;
    let store = app.store();
    let at = now();
    let lease_until = at + chrono::Duration::seconds(60);
    let claimed = store
        .claim_sync_job("test-setup", at, lease_until)
        .await
        .expect("claim")
        .expect("the queued job");
    assert_eq!(claimed.id.to_string(), queued["id"].as_str().expect("id"));
    let lease = Lease {
        job: claimed.id,
        owner: "test-setup",
    };
    let connection_id: ConnectionId = connection.parse().expect("uuid");
    let committed = store
        .commit_sync_page(
            lease,
            connection_id,
            &SyncCommit {
                signals: &[],
                cursor: &cursor,
                metadata: None,
            },
            lease_until,
            at,
        )
        .await
        .expect("commit");
    assert_eq!(committed, PageCommit::Stored(0));
    let requeued = store
        .finish_sync_job(
            lease,
            JobFinish::Defer {
                at: now(),
                note: None,
            },
            now(),
        )
        .await
        .expect("finish");
    assert_eq!(requeued, Finished::Done);
    queued
}

#[tokio::test]
async fn a_manual_sync_of_the_sandbox_stores_signals_and_marks_the_connection_synced() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let connection = connect_sandbox(&app, t).await;
    let cid = id(&connection);
    assert!(connection["last_synced_at"].is_null());

    let queued = sync_now(&app, t, &cid).await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["job_type"], "incremental");
    assert_eq!(queued["provider"], "sandbox");
    assert_eq!(queued["connection_id"], cid.as_str());
    assert_eq!(queued["attempts"], 0);
    assert_eq!(queued["max_attempts"], 5);

    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].result, JobResult::Succeeded);
    assert_eq!(
        outcomes[0].job_id.to_string(),
        queued["id"].as_str().expect("id")
    );

    let done = job(&app, t, &queued["id"]).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 1);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert!(done["error"].is_null());

    let first = signals(&app, t, &cid).await;
    assert_eq!(
        first.len(),
        5,
        "a first sync emits a handful of recent signals"
    );
    for s in &first {
        let kind = s["kind"].as_str().expect("kind");
        assert!(kind.starts_with("sandbox_event_"), "{kind}");
        assert_eq!(s["provider"], "sandbox");
    }

    let (_, connection) = app.get_json(t, &format!("/connections/{cid}")).await;
    assert!(connection["last_synced_at"].is_string(), "{connection}");
    assert!(connection["last_error"].is_null());

    // Syncing again right away adds nothing, and duplicates nothing.
    let again = sync_now(&app, t, &cid).await;
    assert_ne!(again["id"], queued["id"], "a finished job is not reused");
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].result, JobResult::Succeeded);
    assert_eq!(outcomes[0].new_signals, 0);
    assert_eq!(signals(&app, t, &cid).await.len(), 5);
    assert_eq!(job(&app, t, &again["id"]).await["status"], "succeeded");
}

#[tokio::test]
async fn a_connection_has_one_active_job_and_other_tenants_cannot_sync_it() {
    let app = TestApp::spawn().await;
    let (t, stranger) = (tenant(), tenant());
    let cid = id(&connect_sandbox(&app, t).await);

    let first = sync_now(&app, t, &cid).await;
    let second = sync_now(&app, t, &cid).await;
    assert_eq!(
        first["id"], second["id"],
        "the queued job is answered as is"
    );
    let (_, jobs) = app
        .get_json(
            t,
            &format!("/jobs?connection_id={cid}&job_type=incremental"),
        )
        .await;
    assert_eq!(jobs["jobs"].as_array().expect("jobs").len(), 1);

    // Running counts as active too.
    let worker = SyncWorker::new();
    let claimed = worker.claim(&app.state).await.expect("claim").expect("job");
    let third = sync_now(&app, t, &cid).await;
    assert_eq!(third["id"], first["id"]);
    assert_eq!(third["status"], "running");
    worker
        .run_job(
            &app.state,
            app.state.registry.get("sandbox").map(|e| e.connector),
            claimed,
        )
        .await
        .expect("run");

    let response = post_sync(&app, stranger, &cid).await;
    assert_problem(response, 404, "CONNECTION_NOT_FOUND").await;
    let response = post_sync(&app, t, &uuid::Uuid::new_v4().to_string()).await;
    assert_problem(response, 404, "CONNECTION_NOT_FOUND").await;
    let response = post_sync(&app, t, "not-a-uuid").await;
    assert_problem(response, 400, "VALIDATION_FAILED").await;
    let response = app
        .anonymous(Method::POST, &format!("/connections/{cid}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

/// The incremental jobs of `connection`.
async fn incremental_jobs(app: &TestApp, connection: &connectors::domain::Connection) -> usize {
    let filter = connectors::store::JobFilter {
        connection_id: Some(connection.id),
        job_type: Some(connectors::domain::JobType::Incremental),
        ..Default::default()
    };
    let page = connectors::store::PageRequest {
        after: None,
        fetch: 10,
    };
    app.store()
        .list_jobs(connection.tenant_id, &filter, page)
        .await
        .expect("jobs")
        .len()
}

#[tokio::test]
async fn the_scheduler_enqueues_every_due_connection_batch_after_batch() {
    let app = TestApp::spawn().await;
    let mut connections = Vec::new();
    for _ in 0..450 {
        connections.push(app.connection(tenant(), "github").await);
    }

    let start = now();
    let created = Scheduler.tick(&app.state, start).await.expect("tick");
    let again = Scheduler.tick(&app.state, start).await.expect("tick");

    assert_eq!(created, 450, "three batches, the last one short");
    assert_eq!(again, 0);
    for connection in [&connections[0], &connections[249], &connections[449]] {
        assert_eq!(incremental_jobs(&app, connection).await, 1);
    }
}

#[tokio::test]
async fn a_due_connection_whose_job_cannot_be_queued_fails_alone() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let fine = app.connection(t, "github").await;
    let refused = app.connection(t, "github").await;
    let also_fine = app.connection(tenant(), "github").await;
    // The database refuses one connection's job, as it does one whose connection was deleted
    // after the scheduler found it due: the batch's statement fails, and each is tried alone.
    let hex = refused.id.0.simple().to_string();
    app.execute_sql(
        &format!(
            "CREATE TRIGGER refuse_job BEFORE INSERT ON sync_jobs \
             WHEN NEW.connection_id = X'{hex}' BEGIN SELECT RAISE(ABORT, 'job refused'); END"
        ),
        &format!(
            "CREATE FUNCTION refuse_job() RETURNS trigger AS $$ BEGIN \
               IF NEW.connection_id = '{}' THEN RAISE EXCEPTION 'job refused'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_job BEFORE INSERT ON sync_jobs \
               FOR EACH ROW EXECUTE FUNCTION refuse_job()",
            refused.id
        ),
    )
    .await;

    let created = Scheduler.tick(&app.state, now()).await.expect("tick");

    assert_eq!(created, 2);
    assert_eq!(incremental_jobs(&app, &fine).await, 1);
    assert_eq!(incremental_jobs(&app, &also_fine).await, 1);
    assert_eq!(incremental_jobs(&app, &refused).await, 0);
}

#[tokio::test]
async fn the_scheduler_enqueues_a_due_connection_once_and_again_only_when_due() {
    let app = TestApp::spawn_with(&[("POBLYSH_SANDBOX_SYNC_INTERVAL_SECS", "600")]).await;
    let t = tenant();
    let cid = id(&connect_sandbox(&app, t).await);
    let revoked = tenant();
    let gone = id(&connect_sandbox(&app, revoked).await);
    let response = app
        .operator(Method::DELETE, &format!("/connections/{gone}"))
        .header("X-Tenant-Id", revoked.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let start = now();
    let scheduler = Scheduler;
    assert_eq!(scheduler.tick(&app.state, start).await.expect("tick"), 1);
    assert_eq!(scheduler.tick(&app.state, start).await.expect("tick"), 0);
    let (_, jobs) = app
        .get_json(
            t,
            &format!("/jobs?connection_id={cid}&job_type=incremental"),
        )
        .await;
    let jobs = jobs["jobs"].as_array().expect("jobs").clone();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job_type"], "incremental");
    assert_eq!(jobs[0]["status"], "queued");
    let (_, none) = app.get_json(revoked, "/jobs?job_type=incremental").await;
    assert_eq!(
        none["jobs"],
        json!([]),
        "a revoked connection is not scheduled"
    );

    SyncWorker::new().drain(&app.state).await.expect("drain");
    // The next run is one interval ± 10 % away.
    let minutes = chrono::Duration::minutes;
    assert_eq!(
        scheduler
            .tick(&app.state, start + minutes(8))
            .await
            .expect("tick"),
        0
    );
    assert_eq!(
        scheduler
            .tick(&app.state, start + minutes(12))
            .await
            .expect("tick"),
        1
    );
    assert_eq!(
        scheduler
            .tick(&app.state, start + minutes(12))
            .await
            .expect("tick"),
        0
    );
    let (_, jobs) = app
        .get_json(
            t,
            &format!("/jobs?connection_id={cid}&job_type=incremental"),
        )
        .await;
    assert_eq!(jobs["jobs"].as_array().expect("jobs").len(), 2);
}

#[tokio::test]
async fn a_backlog_is_synced_in_pages_and_replaying_pages_stores_nothing_twice() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let cid = id(&connect_sandbox(&app, t).await);
    // As if the last sync had been 45 minutes ago.
    let back = connectors::domain::format_time(&(now() - chrono::Duration::minutes(45)));
    let cursor = json!({ "seq": 0, "at": back });
    let queued = set_cursor(&app, t, &cid, cursor.clone()).await;

    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].result, JobResult::Succeeded);
    assert_eq!((outcomes[0].pages, outcomes[0].new_signals), (3, 45));
    assert_eq!(
        outcomes[0].job_id.to_string(),
        queued["id"].as_str().expect("id")
    );
    let listed = signals(&app, t, &cid).await;
    assert_eq!(listed.len(), 45);

    // The same pages again (as after a crash between fetching and committing): no duplicates.
    set_cursor(&app, t, &cid, cursor).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes[0].result, JobResult::Succeeded);
    assert_eq!(outcomes[0].new_signals, 0);
    let relisted = signals(&app, t, &cid).await;
    assert_eq!(relisted.len(), 45);
    let ids: HashSet<_> = relisted.iter().map(|s| s["id"].clone()).collect();
    let before: HashSet<_> = listed.iter().map(|s| s["id"].clone()).collect();
    assert_eq!(ids, before, "the stored signals are the same ones");
}

/// The connection's jobs, newest first.
async fn jobs_of(app: &TestApp, t: TenantId, id: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(t, &format!("/jobs?connection_id={id}&job_type=incremental"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["jobs"].as_array().expect("jobs").clone()
}

/// Sets the connection's status through the store, as the engine and the refresher do.
async fn set_status(app: &TestApp, t: TenantId, id: &str, status: ConnectionStatus, error: &str) {
    let id: ConnectionId = id.parse().expect("uuid");
    app.store()
        .set_connection_status(t, id, status, Some(error), now())
        .await
        .expect("set status")
        .expect("the connection");
}

/// Asserts that syncing answers `409 CONNECTION_NOT_ACTIVE` for `status`; returns the detail.
async fn refused(app: &TestApp, t: TenantId, id: &str, status: &str) -> String {
    let problem = assert_problem(post_sync(app, t, id).await, 409, "CONNECTION_NOT_ACTIVE").await;
    assert_eq!(problem["details"]["connection_status"], status, "{problem}");
    assert_eq!(problem["details"]["provider"], "sandbox", "{problem}");
    let detail = problem["detail"].as_str().expect("detail").to_string();
    assert!(detail.contains(&format!("is {status}")), "{detail}");
    detail
}

#[tokio::test]
async fn syncing_a_revoked_connection_is_refused_at_once_and_enqueues_nothing() {
    let app = TestApp::spawn().await;
    let (t, stranger) = (tenant(), tenant());
    let cid = id(&connect_sandbox(&app, t).await);
    let response = app
        .operator(Method::DELETE, &format!("/connections/{cid}"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let detail = refused(&app, t, &cid, "revoked").await;
    assert!(detail.contains("disconnected"), "{detail}");
    assert!(jobs_of(&app, t, &cid).await.is_empty(), "nothing enqueued");
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert!(outcomes.is_empty(), "{outcomes:?}");

    // Another tenant learns nothing about the connection, not even its status.
    let response = post_sync(&app, stranger, &cid).await;
    assert_problem(response, 404, "CONNECTION_NOT_FOUND").await;
}

#[tokio::test]
async fn syncing_a_connection_that_needs_reauth_is_refused_with_how_to_reconnect() {
    let app = TestApp::spawn().await;
    let (t, stranger) = (tenant(), tenant());
    let cid = id(&connect_sandbox(&app, t).await);
    let lost = "reauthorization needed: invalid_grant";
    set_status(&app, t, &cid, ConnectionStatus::NeedsReauth, lost).await;

    let detail = refused(&app, t, &cid, "needs_reauth").await;
    assert!(detail.contains("POST /connect/sandbox"), "{detail}");
    assert!(jobs_of(&app, t, &cid).await.is_empty(), "nothing enqueued");
    let response = post_sync(&app, stranger, &cid).await;
    assert_problem(response, 404, "CONNECTION_NOT_FOUND").await;

    // Any status other than active is refused the same way.
    set_status(&app, t, &cid, ConnectionStatus::Error, "repeated failures").await;
    let detail = refused(&app, t, &cid, "error").await;
    assert!(detail.contains("POST /connect/sandbox"), "{detail}");
    assert!(jobs_of(&app, t, &cid).await.is_empty(), "nothing enqueued");

    // Connecting the account again makes it active, and it syncs.
    assert_eq!(id(&connect_sandbox(&app, t).await), cid);
    let queued = sync_now(&app, t, &cid).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    assert_eq!(job(&app, t, &queued["id"]).await["status"], "succeeded");
}

#[tokio::test]
async fn a_job_queued_before_a_disconnect_fails_with_its_error_visible() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let cid = id(&connect_sandbox(&app, t).await);
    let queued = sync_now(&app, t, &cid).await;
    let response = app
        .operator(Method::DELETE, &format!("/connections/{cid}"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);

    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert!(
        matches!(outcomes[0].result, JobResult::Failed { .. }),
        "{outcomes:?}"
    );
    let failed = job(&app, t, &queued["id"]).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 1, "not retried");
    let error = failed["error"].as_str().expect("error");
    assert!(error.contains("revoked"), "{error}");
    let (_, connection) = app.get_json(t, &format!("/connections/{cid}")).await;
    assert_eq!(connection["last_error"], error);
    assert!(signals(&app, t, &cid).await.is_empty());
}

#[tokio::test]
async fn the_client_side_rate_limit_defers_a_sync_instead_of_exceeding_it() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_SANDBOX_RATE_LIMIT_REQUESTS", "1"),
        ("POBLYSH_SANDBOX_RATE_LIMIT_WINDOW_SECS", "3600"),
        ("POBLYSH_SANDBOX_RATE_LIMIT_BURST", "1"),
    ])
    .await;
    let t = tenant();
    let cid = id(&connect_sandbox(&app, t).await);
    let worker = SyncWorker::new();
    sync_now(&app, t, &cid).await;
    let outcomes = worker.drain(&app.state).await.expect("drain");
    assert_eq!(
        outcomes[0].result,
        JobResult::Succeeded,
        "the one call allowed"
    );

    let second = sync_now(&app, t, &cid).await;
    let before = now();
    let outcomes = worker.drain(&app.state).await.expect("drain");
    assert_eq!(outcomes.len(), 1);
    let JobResult::Deferred { at } = outcomes[0].result else {
        panic!("{outcomes:?}");
    };
    // One request per hour: the next token is an hour away.
    assert!(at >= before + chrono::Duration::seconds(3590), "{at}");
    let deferred = job(&app, t, &second["id"]).await;
    assert_eq!(deferred["status"], "queued");
    assert_eq!(deferred["attempts"], 0, "waiting is not an attempt");
    assert!(time(&deferred["scheduled_at"]) >= before + chrono::Duration::seconds(3590));
    assert!(deferred["error"]
        .as_str()
        .expect("note")
        .contains("rate limit"));
    assert!(
        worker.drain(&app.state).await.expect("drain").is_empty(),
        "not due yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_draining_together_run_each_job_exactly_once() {
    let app = TestApp::spawn().await;
    let sibling = app.sibling(&[]).await;
    let mut connected = Vec::new();
    for _ in 0..6 {
        let t = tenant();
        connected.push((t, id(&connect_sandbox(&app, t).await)));
    }
    let mut expected = Vec::new();
    for (t, cid) in connected {
        let queued = sync_now(&app, t, &cid).await;
        expected.push((t, cid, queued["id"].clone()));
    }

    let (a, b) = (SyncWorker::new(), SyncWorker::new());
    let (ran_a, ran_b) = tokio::join!(a.drain(&app.state), b.drain(&sibling.state));
    let (ran_a, ran_b) = (ran_a.expect("drain a"), ran_b.expect("drain b"));
    let ran: Vec<JobId> = ran_a.iter().chain(&ran_b).map(|o| o.job_id).collect();
    assert_eq!(ran.len(), 6, "a: {ran_a:?}, b: {ran_b:?}");
    let distinct: HashSet<_> = ran.iter().collect();
    assert_eq!(distinct.len(), 6, "no job ran twice");
    assert!(ran_a
        .iter()
        .chain(&ran_b)
        .all(|o| o.result == JobResult::Succeeded));

    for (t, cid, job_id) in &expected {
        let done = job(&app, *t, job_id).await;
        assert_eq!(done["status"], "succeeded");
        assert_eq!(done["attempts"], 1);
        assert_eq!(signals(&app, *t, cid).await.len(), 5);
    }
}

#[tokio::test]
async fn the_background_workers_run_queued_jobs_and_count_them() {
    let app = TestApp::spawn_with(&[("POBLYSH_ROLES", "api,worker")]).await;
    let t = tenant();
    let cid = id(&connect_sandbox(&app, t).await);
    // The scheduler may have enqueued it already; either way this is the active job.
    let queued = sync_now(&app, t, &cid).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let current = job(&app, t, &queued["id"]).await;
        if current["status"] == "succeeded" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {current}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(signals(&app, t, &cid).await.len(), 5);

    let metrics = app
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    let line = |name: &str, labels: &[&str]| {
        metrics
            .lines()
            .any(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
    };
    assert!(
        line(
            "sync_jobs_total",
            &[
                "provider=\"sandbox\"",
                "job_type=\"incremental\"",
                "outcome=\"succeeded\""
            ]
        ),
        "{metrics}"
    );
    assert!(
        line(
            "provider_calls_total",
            &["provider=\"sandbox\"", "outcome=\"ok\""]
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_requested_sync_starts_at_once_not_at_the_next_poll() {
    // Workers poll once a minute here: only the request's own wake-up can start the job soon.
    let app = TestApp::spawn_with(&[
        ("POBLYSH_ROLES", "api,worker"),
        ("POBLYSH_WORKER_POLL_INTERVAL_MS", "60000"),
    ])
    .await;
    let t = tenant();
    let cid = id(&connect_sandbox(&app, t).await);
    for _ in 0..2 {
        // The first may be the scheduler's job for the new connection; the second is new.
        let queued = sync_now(&app, t, &cid).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let current = job(&app, t, &queued["id"]).await;
            if current["status"] == "succeeded" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "still {current}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
