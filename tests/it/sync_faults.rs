//! Sync against a provider that misbehaves at the HTTP level: the sandbox in remote API mode
//! (`POBLYSH_SANDBOX_API_BASE_URL`) with a wiremock server playing its API. Rate limits,
//! outages, time-outs and malformed answers are backed off and recovered from, a failed page
//! stores nothing and leaves the cursor where it was, a change that also arrived by webhook
//! is one signal, and a notification that names no change syncs its connection at once, or
//! again after the sync that is running when it arrives. Tests run the worker themselves; a
//! backed-off job is made due by claiming it as of its retry time, never by sleeping.

use std::collections::HashMap;

use chrono::DateTime;
use connectors::connector::signature::hmac_sha256_hex;
use connectors::crypto::Secret;
use connectors::domain::{now, ConnectionId, Job, TenantId, Timestamp};
use connectors::ingest::inbox;
use connectors::ingest::sync::{JobOutcome, JobResult, SyncWorker};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{header_regex, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::connect::connect_sandbox;
use crate::helpers::{json, mount_sandbox_subscriptions, tenant, webhook_jobs, TestApp};

const SECRET: &str = "sync-faults-sandbox-webhook-secret";

/// A service whose sandbox syncs from `api`, with a one-second provider time-out.
async fn spawn(api: &MockServer) -> TestApp {
    mount_sandbox_subscriptions(api).await;
    TestApp::spawn_with(&[
        ("POBLYSH_SANDBOX_API_BASE_URL", &api.uri()),
        ("POBLYSH_SANDBOX_WEBHOOK_SECRET", SECRET),
        ("POBLYSH_PROVIDER_TIMEOUT_SECS", "1"),
    ])
    .await
}

/// A tenant with a sandbox connection, connected over HTTP.
async fn connected(app: &TestApp) -> (TenantId, String) {
    let t = tenant();
    let connection = connect_sandbox(app, t).await;
    (t, connection["id"].as_str().expect("id").to_string())
}

/// Event `seq` of the fake API: item `seq` created at second `seq`.
fn event(seq: u64) -> Value {
    json!({
        "seq": seq,
        "type": "event.created",
        "id": format!("item-{seq}"),
        "title": format!("Item {seq} created"),
        "occurred_at": format!("2026-11-25T10:00:{seq:02}Z"),
        "actor": { "id": "u1", "name": "Ada" }
    })
}

/// A `200` listing the events `seqs`.
fn page(seqs: std::ops::RangeInclusive<u64>, has_more: bool) -> ResponseTemplate {
    let events: Vec<Value> = seqs.map(event).collect();
    ResponseTemplate::new(200).set_body_json(json!({ "events": events, "has_more": has_more }))
}

/// The listing after `after`, as the service asks for it with a sandbox access token.
fn events_after(after: u64) -> wiremock::MockBuilder {
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param("after", after.to_string()))
        .and(query_param("limit", "100"))
        .and(header_regex("authorization", r"^Bearer sandbox-access\."))
}

/// Answers `after` once with `response`, before any mock mounted later.
async fn once(api: &MockServer, after: u64, response: ResponseTemplate) {
    events_after(after)
        .respond_with(response)
        .up_to_n_times(1)
        .mount(api)
        .await;
}

/// Answers `after` with `response` from now on (after any earlier one-time answers).
async fn always(api: &MockServer, after: u64, response: ResponseTemplate) {
    events_after(after).respond_with(response).mount(api).await;
}

/// The event listings the fake API received (not its subscription calls), in order.
async fn listings(api: &MockServer) -> Vec<wiremock::Request> {
    api.received_requests()
        .await
        .expect("recording")
        .into_iter()
        .filter(|r| r.url.path() == "/v1/events")
        .collect()
}

/// The `after` of every listing the fake API received, in order.
async fn afters(api: &MockServer) -> Vec<u64> {
    listings(api)
        .await
        .iter()
        .map(|r| {
            let query: HashMap<_, _> = r.url.query_pairs().collect();
            query["after"].parse().expect("a number")
        })
        .collect()
}

/// Enqueues a sync over HTTP; returns the job's id.
async fn sync_now(app: &TestApp, t: TenantId, connection: &str) -> String {
    let response = app
        .operator(Method::POST, &format!("/connections/{connection}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    let (status, job) = json(response).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().expect("id").to_string()
}

/// Runs the job that is due now.
async fn run_now(app: &TestApp) -> JobOutcome {
    SyncWorker::new()
        .run_once(&app.state)
        .await
        .expect("recorded")
        .expect("a due job")
}

/// Runs the job that is due at `at` (a retry's time), as a worker would once it is.
async fn run_at(app: &TestApp, at: Timestamp) -> Option<JobOutcome> {
    let worker = SyncWorker::new();
    let lease = chrono::Duration::from_std(SyncWorker::lease(&app.state)).expect("lease");
    let job = app
        .store()
        .claim_sync_job(worker.owner(), at, at + lease)
        .await
        .expect("claim")?;
    Some(run_claimed(app, &worker, job).await)
}

/// Runs a job `worker` claimed to its end (or its next retry).
async fn run_claimed(app: &TestApp, worker: &SyncWorker, job: Job) -> JobOutcome {
    let connector = app.state.registry.get(&job.provider).map(|e| e.connector);
    worker
        .run_job(&app.state, connector, job)
        .await
        .expect("recorded")
}

/// The job a `sync.requested` notification queued for `t`, claimed by the returned worker,
/// and a second notification that arrived while that job ran.
async fn notified_while_running(app: &TestApp, t: TenantId) -> (SyncWorker, Job) {
    deliver_as(app, t, "note-1", "sync.requested", b"{}".to_vec()).await;
    let worker = SyncWorker::new();
    let running = worker
        .claim(&app.state)
        .await
        .expect("claim")
        .expect("the queued job");
    deliver_as(app, t, "note-2", "sync.requested", b"{}".to_vec()).await;
    (worker, running)
}

/// The retry time and error of an outcome that must be a retry.
fn retrying(outcome: &JobOutcome) -> (Timestamp, String) {
    match &outcome.result {
        JobResult::Retrying { at, error } => (*at, error.clone()),
        other => panic!("expected a retry, got {other:?}"),
    }
}

async fn job(app: &TestApp, t: TenantId, id: &str) -> Value {
    let (status, body) = app.get_json(t, &format!("/jobs/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The `external_id`s of the connection's signals, sorted.
async fn items(app: &TestApp, t: TenantId, connection: &str) -> Vec<String> {
    let (status, body) = app
        .get_json(t, &format!("/signals?connection_id={connection}&limit=100"))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut items: Vec<String> = body["signals"]
        .as_array()
        .expect("signals")
        .iter()
        .map(|s| s["external_id"].as_str().expect("external_id").to_string())
        .collect();
    items.sort_by_key(|i| i.trim_start_matches("item-").parse::<u64>().unwrap_or(0));
    items
}

fn item_ids(seqs: std::ops::RangeInclusive<u64>) -> Vec<String> {
    seqs.map(|n| format!("item-{n}")).collect()
}

/// The cursor stored for the connection.
async fn cursor(app: &TestApp, connection: &str) -> Option<Value> {
    let id: ConnectionId = connection.parse().expect("uuid");
    app.store().sync_cursor(id).await.expect("cursor")
}

fn time(value: &Value) -> Timestamp {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .to_utc()
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after_and_stores_nothing_until_then() {
    let api = MockServer::start().await;
    once(
        &api,
        0,
        ResponseTemplate::new(429).insert_header("Retry-After", "120"),
    )
    .await;
    always(&api, 0, page(1..=3, false)).await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;
    let id = sync_now(&app, t, &cid).await;

    let before = now();
    let outcome = run_now(&app).await;
    let (at, error) = retrying(&outcome);
    assert!(at >= before + chrono::Duration::seconds(120), "{at}");
    assert!(error.contains("rate limited"), "{error}");
    let queued = job(&app, t, &id).await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["attempts"], 1);
    assert_eq!(time(&queued["scheduled_at"]), at);
    assert_eq!(queued["error"], error.as_str());
    assert!(items(&app, t, &cid).await.is_empty());
    assert_eq!(cursor(&app, &cid).await, None);

    // Not due a second before the provider's time, due at it.
    assert!(SyncWorker::new()
        .run_once(&app.state)
        .await
        .expect("ran")
        .is_none());
    assert!(run_at(&app, at - chrono::Duration::seconds(1))
        .await
        .is_none());
    let outcome = run_at(&app, at).await.expect("due");
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!((outcome.attempt, outcome.new_signals), (2, 3));
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=3));
    assert_eq!(cursor(&app, &cid).await, Some(json!({ "after": 3 })));
    let done = job(&app, t, &id).await;
    assert_eq!(done["status"], "succeeded");
    assert!(done["error"].is_null(), "{done}");
    assert_eq!(afters(&api).await, [0, 0]);
}

#[tokio::test]
async fn a_500_on_page_two_keeps_page_one_and_the_retry_resumes_after_it() {
    let api = MockServer::start().await;
    always(&api, 0, page(1..=3, true)).await;
    once(&api, 3, ResponseTemplate::new(500)).await;
    always(&api, 3, page(4..=5, false)).await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;
    let id = sync_now(&app, t, &cid).await;

    let outcome = run_now(&app).await;
    let (at, error) = retrying(&outcome);
    assert!(error.contains("500"), "{error}");
    assert_eq!((outcome.pages, outcome.new_signals), (1, 3));
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=3));
    assert_eq!(cursor(&app, &cid).await, Some(json!({ "after": 3 })));
    assert_eq!(job(&app, t, &id).await["status"], "queued");

    let outcome = run_at(&app, at).await.expect("due");
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!(outcome.new_signals, 2);
    assert_eq!(afters(&api).await, [0, 3, 3]);
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=5));
    assert_eq!(cursor(&app, &cid).await, Some(json!({ "after": 5 })));
    assert_eq!(job(&app, t, &id).await["status"], "succeeded");
}

#[tokio::test]
async fn a_timed_out_page_is_retried_and_nothing_is_lost_or_doubled() {
    let api = MockServer::start().await;
    always(&api, 0, page(1..=2, true)).await;
    // Longer than the one-second provider time-out.
    once(
        &api,
        2,
        page(3..=4, false).set_delay(std::time::Duration::from_secs(3)),
    )
    .await;
    always(&api, 2, page(3..=4, false)).await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;
    sync_now(&app, t, &cid).await;

    let outcome = run_now(&app).await;
    let (at, error) = retrying(&outcome);
    assert!(error.contains("timed out"), "{error}");
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=2));
    assert_eq!(cursor(&app, &cid).await, Some(json!({ "after": 2 })));

    let outcome = run_at(&app, at).await.expect("due");
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!(outcome.new_signals, 2);
    assert_eq!(afters(&api).await, [0, 2, 2]);
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=4));
}

#[tokio::test]
async fn malformed_answers_are_retried_and_never_move_the_cursor() {
    let api = MockServer::start().await;
    always(&api, 0, page(1..=2, true)).await;
    let whole =
        serde_json::to_vec(&json!({ "events": [event(3)], "has_more": false })).expect("json");
    let truncated = whole[..whole.len() / 2].to_vec();
    once(
        &api,
        2,
        ResponseTemplate::new(200).set_body_raw(truncated, "application/json"),
    )
    .await;
    once(
        &api,
        2,
        ResponseTemplate::new(200).set_body_json(json!({ "items": [event(3)] })),
    )
    .await;
    always(&api, 2, page(3..=3, false)).await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;
    let id = sync_now(&app, t, &cid).await;

    // A truncated body.
    let outcome = run_now(&app).await;
    let (at, error) = retrying(&outcome);
    assert!(error.contains("not an event list"), "{error}");
    assert_eq!(cursor(&app, &cid).await, Some(json!({ "after": 2 })));
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=2));

    // Valid JSON of the wrong shape.
    let outcome = run_at(&app, at).await.expect("due");
    let (at, _) = retrying(&outcome);
    assert_eq!(outcome.attempt, 2);
    assert_eq!(outcome.pages, 0);
    assert_eq!(cursor(&app, &cid).await, Some(json!({ "after": 2 })));
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=2));
    assert_eq!(job(&app, t, &id).await["status"], "queued");

    let outcome = run_at(&app, at).await.expect("due");
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!(outcome.attempt, 3);
    assert_eq!(afters(&api).await, [0, 2, 2, 2]);
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=3));
    assert_eq!(cursor(&app, &cid).await, Some(json!({ "after": 3 })));
}

#[tokio::test]
async fn a_job_whose_every_attempt_fails_ends_failed_with_its_error_and_no_secrets() {
    let api = MockServer::start().await;
    always(
        &api,
        0,
        ResponseTemplate::new(500).set_body_string("stack trace: db password hunter2"),
    )
    .await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;
    let id = sync_now(&app, t, &cid).await;

    let mut outcome = run_now(&app).await;
    while let JobResult::Retrying { at, .. } = outcome.result {
        outcome = run_at(&app, at).await.expect("due");
    }
    let JobResult::Failed { error } = &outcome.result else {
        panic!("{outcome:?}");
    };
    assert_eq!(outcome.attempt, 5, "max_attempts");
    assert!(error.contains("500"), "{error}");

    let response = app
        .get(t, &format!("/jobs/{id}"))
        .send()
        .await
        .expect("sent");
    let text = response.text().await.expect("text");
    let failed: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 5);
    assert_eq!(failed["max_attempts"], 5);
    assert_eq!(failed["error"], error.as_str());
    let (_, connection) = app.get_json(t, &format!("/connections/{cid}")).await;
    assert_eq!(connection["last_error"], error.as_str());

    let requests = listings(&api).await;
    assert_eq!(requests.len(), 5, "one request per attempt");
    let token = requests[0].headers["authorization"]
        .to_str()
        .expect("ascii")
        .trim_start_matches("Bearer ")
        .to_string();
    for secret in [token.as_str(), "Bearer", "hunter2", "stack trace"] {
        assert!(!text.contains(secret), "{secret} in {text}");
        assert!(
            !connection.to_string().contains(secret),
            "{secret} in {connection}"
        );
    }
    assert!(items(&app, t, &cid).await.is_empty());
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_the_page_asked_again() {
    let api = MockServer::start().await;
    once(&api, 0, ResponseTemplate::new(401)).await;
    always(&api, 0, page(1..=1, false)).await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;
    sync_now(&app, t, &cid).await;

    let outcome = run_now(&app).await;
    assert_eq!(outcome.result, JobResult::Succeeded);
    let requests = listings(&api).await;
    let tokens: Vec<_> = requests
        .iter()
        .map(|r| r.headers["authorization"].clone())
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1], "asked again with a fresh token");
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=1));
}

/// Posts event `seq` as a signed webhook delivery for `t`.
async fn deliver(app: &TestApp, t: TenantId, seq: u64) {
    let mut change = event(seq);
    let object = change.as_object_mut().expect("object");
    object.remove("seq");
    object.remove("type");
    let body = serde_json::to_vec(&change).expect("json");
    deliver_as(app, t, &format!("delivery-{seq}"), "event.created", body).await;
}

/// Posts a signed sandbox delivery of `event_type` and lets the inbox worker process it.
async fn deliver_as(app: &TestApp, t: TenantId, delivery: &str, event_type: &str, body: Vec<u8>) {
    let timestamp = now().timestamp().to_string();
    let signature = hmac_sha256_hex(&Secret::new(SECRET), &[timestamp.as_bytes(), b".", &body]);
    let response = app
        .anonymous(Method::POST, &format!("/webhooks/sandbox/{t}"))
        .header("X-Sandbox-Delivery", delivery)
        .header("X-Sandbox-Event", event_type)
        .header("X-Sandbox-Timestamp", timestamp)
        .header("X-Sandbox-Signature", format!("v1={signature}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    inbox::drain(&app.state).await.expect("inbox");
}

#[tokio::test]
async fn a_notification_that_names_no_change_syncs_its_connection_at_once() {
    let api = MockServer::start().await;
    always(&api, 0, page(1..=3, false)).await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;
    let (other, other_cid) = connected(&app).await;

    // Two notifications before the worker runs: one job, which the second joins.
    deliver_as(&app, t, "note-1", "sync.requested", b"{}".to_vec()).await;
    deliver_as(&app, t, "note-2", "sync.requested", b"{}".to_vec()).await;
    let jobs = webhook_jobs(&app, t, &cid).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["status"], "queued");
    assert!(webhook_jobs(&app, other, &other_cid).await.is_empty());

    let outcome = run_now(&app).await;
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!(outcome.new_signals, 3);
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=3));
    assert!(items(&app, other, &other_cid).await.is_empty());
    assert!(
        SyncWorker::new()
            .run_once(&app.state)
            .await
            .expect("recorded")
            .is_none(),
        "nothing else was queued"
    );
    assert_eq!(webhook_jobs(&app, t, &cid).await[0]["status"], "succeeded");
}

#[tokio::test]
async fn a_sync_requested_while_one_runs_is_queued_again_when_it_succeeds() {
    let api = MockServer::start().await;
    // The running job's read, which the change it is told about came too late for.
    once(&api, 0, page(1..=3, false)).await;
    always(&api, 3, page(4..=4, false)).await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;
    let (other, other_cid) = connected(&app).await;

    // While the job runs: a notification, and a caller asking for a sync, both answered by it.
    let (worker, running) = notified_while_running(&app, t).await;
    let asked = sync_now(&app, t, &cid).await;
    assert_eq!(asked, running.id.to_string());
    let answered = job(&app, t, &asked).await;
    assert_eq!(answered["status"], "running");
    assert_eq!(answered["follow_up_requested"], true);
    assert_eq!(webhook_jobs(&app, t, &cid).await.len(), 1);

    let outcome = run_claimed(&app, &worker, running).await;
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=3));
    let jobs = webhook_jobs(&app, t, &cid).await;
    assert_eq!(jobs.len(), 2, "one follow-up for both requests: {jobs:?}");
    assert_eq!(jobs[0]["status"], "queued");
    assert_eq!(jobs[0]["attempts"], 0);
    assert_eq!(jobs[0]["follow_up_requested"], false);
    assert_eq!(jobs[1]["id"], asked.as_str());
    assert_eq!(jobs[1]["status"], "succeeded");

    let outcome = run_now(&app).await;
    assert_eq!(
        outcome.job_id.to_string(),
        jobs[0]["id"].as_str().expect("id")
    );
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=4));
    assert_eq!(afters(&api).await, vec![0, 3]);
    assert!(
        worker.run_once(&app.state).await.expect("run").is_none(),
        "the follow-up asked for no other"
    );
    assert!(webhook_jobs(&app, other, &other_cid).await.is_empty());
}

#[tokio::test]
async fn a_sync_requested_while_one_runs_is_answered_by_its_retry() {
    let api = MockServer::start().await;
    once(&api, 0, ResponseTemplate::new(500)).await;
    always(&api, 0, page(1..=3, false)).await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;

    let (worker, running) = notified_while_running(&app, t).await;
    let id = running.id;
    let (at, _) = retrying(&run_claimed(&app, &worker, running).await);

    // The retry starts after the notification, so it reads what the notification announced.
    let retried = run_at(&app, at).await.expect("the retry");
    assert_eq!(retried.job_id, id);
    assert_eq!(retried.result, JobResult::Succeeded);
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=3));
    assert!(
        run_at(&app, at).await.is_none(),
        "no follow-up after a retry"
    );
    let jobs = webhook_jobs(&app, t, &cid).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0]["follow_up_requested"], false,
        "the retry dropped the request"
    );
}

#[tokio::test]
async fn a_change_delivered_by_webhook_and_synced_from_the_api_is_one_signal() {
    let api = MockServer::start().await;
    always(&api, 0, page(1..=2, false)).await;
    let app = spawn(&api).await;
    let (t, cid) = connected(&app).await;

    // Item 1 by webhook first, then by sync; item 2 by sync first, then by webhook.
    deliver(&app, t, 1).await;
    let (_, by_webhook) = app
        .get_json(
            t,
            &format!("/signals?connection_id={cid}&include_payload=true"),
        )
        .await;
    let by_webhook = by_webhook["signals"][0].clone();
    sync_now(&app, t, &cid).await;
    let outcome = run_now(&app).await;
    assert_eq!(outcome.result, JobResult::Succeeded);
    assert_eq!(outcome.new_signals, 1, "item 1 was stored already");
    deliver(&app, t, 2).await;
    assert_eq!(items(&app, t, &cid).await, item_ids(1..=2));

    let (_, listed) = app
        .get_json(
            t,
            &format!("/signals?connection_id={cid}&include_payload=true"),
        )
        .await;
    let item1 = listed["signals"]
        .as_array()
        .expect("signals")
        .iter()
        .find(|s| s["external_id"] == "item-1")
        .expect("item 1")
        .clone();
    assert_eq!(
        item1, by_webhook,
        "the webhook's signal, untouched by the sync"
    );
    let item2 = &listed["signals"][0];
    assert_eq!(item2["external_id"], "item-2");
    assert_eq!(item2["kind"], "sandbox_event_created");
    assert_eq!(item2["title"], "Item 2 created");
    assert_eq!(item2["occurred_at"], "2026-11-25T10:00:02Z");
    assert_eq!(item2["actor"]["name"], "Ada");
}
