//! Provider-side subscriptions, with the sandbox's: opened after connect, renewed before they
//! expire (once, however many instances try), closed on disconnect (also when a renewal is in
//! flight), and `failed` with a readable error when the provider answers garbage, while the
//! connection keeps syncing. The fake API answers as `docs/providers/sandbox.md` specifies.

use std::time::Duration;

use chrono::DateTime;
use connectors::domain::{now, JobType, TenantId, Timestamp};
use connectors::ingest::sync::{JobOutcome, JobResult, SyncWorker};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::connect::{connect_sandbox, sandbox_redirect};
use crate::helpers::{json, tenant, TestApp};

/// Subscription lifetime in these tests: short, so renewals come due within a test.
const TTL_SECS: i64 = 30;

/// A service whose sandbox subscribes (and syncs) through `api`.
async fn spawn(api: &MockServer) -> TestApp {
    TestApp::spawn_with(&[
        ("POBLYSH_SANDBOX_API_BASE_URL", &api.uri()),
        (
            "POBLYSH_SANDBOX_SUBSCRIPTION_TTL_SECS",
            &TTL_SECS.to_string(),
        ),
        ("POBLYSH_PROVIDER_TIMEOUT_SECS", "5"),
    ])
    .await
}

/// A `2xx` subscription answer with a fresh id (`prefix-N`) lasting [`TTL_SECS`], telling where
/// the account's watch stands.
fn opened(prefix: &'static str) -> impl Fn(&Request) -> ResponseTemplate {
    let n = std::sync::atomic::AtomicUsize::new(0);
    move |_: &Request| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ResponseTemplate::new(201).set_body_json(json!({
            "id": format!("{prefix}-{i}"),
            "expires_at": connectors::domain::format_time(
                &(now() + chrono::Duration::seconds(TTL_SECS))
            ),
            "account_details": { "watched_by": format!("{prefix}-{i}") },
        }))
    }
}

async fn mount_open(api: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/v1/subscriptions"))
        .respond_with(opened("sub"))
        .mount(api)
        .await;
}

async fn mount_renew(api: &MockServer, delay: Duration) {
    let answer = opened("renewed");
    Mock::given(method("POST"))
        .and(path_regex("^/v1/subscriptions/[^/]+/renew$"))
        .respond_with(move |r: &Request| answer(r).set_delay(delay))
        .mount(api)
        .await;
}

async fn mount_close(api: &MockServer) {
    Mock::given(method("DELETE"))
        .and(path_regex("^/v1/subscriptions/[^/]+$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(api)
        .await;
}

/// Every call of `method` the fake API received on a path starting with `prefix`.
async fn calls(api: &MockServer, verb: &str, prefix: &str) -> Vec<String> {
    api.received_requests()
        .await
        .expect("recording")
        .iter()
        .filter(|r| r.method.as_str() == verb && r.url.path().starts_with(prefix))
        .map(|r| r.url.path().to_string())
        .collect()
}

async fn detail(app: &TestApp, t: TenantId, id: &str) -> Value {
    let (status, body) = app.get_json(t, &format!("/connections/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn subscription(detail: &Value) -> Value {
    let subscriptions = detail["subscriptions"].as_array().expect("subscriptions");
    assert_eq!(subscriptions.len(), 1, "{detail}");
    subscriptions[0].clone()
}

fn time(value: &Value) -> Timestamp {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .to_utc()
}

/// Drains every due job with a fresh worker, as one instance would.
async fn drain(app: &TestApp) -> Vec<JobOutcome> {
    SyncWorker::new().drain(&app.state).await.expect("drain")
}

/// The moment the subscription is due for renewal: four fifths into its lifetime.
fn renewal_time(sub: &Value) -> Timestamp {
    time(&sub["expires_at"]) - chrono::Duration::seconds(TTL_SECS / 5)
}

/// Queues the subscription jobs due at `at`, as the scheduler's tick does; how many.
async fn schedule(app: &TestApp, at: Timestamp) -> usize {
    connectors::subscriptions::schedule_due(&app.state, at)
        .await
        .expect("scheduled")
}

/// Moves every subscription's renewal to the past, as the clock would.
async fn make_due(app: &TestApp) {
    app.execute_sql(
        "UPDATE subscriptions SET renew_at = 0",
        "UPDATE subscriptions SET renew_at = now() - interval '1 second'",
    )
    .await;
}

#[tokio::test]
async fn connecting_opens_the_subscription_and_the_connection_shows_it() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let connection = connect_sandbox(&app, t).await;
    let id = connection["id"].as_str().expect("id");
    assert_eq!(
        connection["account_details"],
        json!({ "workspace": "Sandbox Workspace" })
    );
    let shown = detail(&app, t, id).await;
    let sub = subscription(&shown);
    assert_eq!(sub["resource"], "events");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["last_error"], Value::Null);
    // In process, it lasts the default hour.
    let lasts = time(&sub["expires_at"]) - now();
    assert!(
        lasts > chrono::Duration::minutes(59) && lasts <= chrono::Duration::minutes(60),
        "{sub}"
    );
    let (_, jobs) = app
        .get_json(
            t,
            &format!("/jobs?connection_id={id}&job_type=subscription"),
        )
        .await;
    assert_eq!(jobs["jobs"][0]["status"], "succeeded", "{jobs}");

    // The list shows account details, not subscriptions; another tenant sees nothing.
    let (_, list) = app.get_json(t, "/connections").await;
    assert!(
        list["connections"][0].get("subscriptions").is_none(),
        "{list}"
    );
    assert_eq!(
        list["connections"][0]["account_details"]["workspace"],
        "Sandbox Workspace"
    );
    let (status, _) = app.get_json(tenant(), &format!("/connections/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_subscription_is_renewed_before_it_expires_and_the_replaced_one_is_closed() {
    let api = MockServer::start().await;
    mount_open(&api).await;
    mount_renew(&api, Duration::ZERO).await;
    mount_close(&api).await;
    let app = spawn(&api).await;
    let t = tenant();
    let id = connect_sandbox(&app, t).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let before = subscription(&detail(&app, t, &id).await);
    let opens = calls(&api, "POST", "/v1/subscriptions").await;
    assert_eq!(opens, ["/v1/subscriptions"]);
    let open_body: Value =
        serde_json::from_slice(&api.received_requests().await.expect("recording")[0].body)
            .expect("json body");
    assert_eq!(open_body["resource"], "events");
    assert_eq!(open_body["ttl_secs"], TTL_SECS);
    assert!(open_body["callback_url"]
        .as_str()
        .expect("callback")
        .ends_with(&format!("/webhooks/sandbox/{t}")));

    // Not due yet: nothing is queued; due at four fifths of its lifetime.
    assert_eq!(schedule(&app, now()).await, 0);
    assert_eq!(
        schedule(&app, renewal_time(&before) - chrono::Duration::seconds(2)).await,
        0
    );
    make_due(&app).await;
    assert_eq!(schedule(&app, now()).await, 1);
    let ran = drain(&app).await;
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(ran[0].job_type, JobType::Subscription);
    assert_eq!(ran[0].result, JobResult::Succeeded);

    let shown = detail(&app, t, &id).await;
    let after = subscription(&shown);
    assert_eq!(after["status"], "active");
    // What the renewal said of the account replaced what the opening said; the rest stays.
    assert_eq!(
        shown["account_details"],
        json!({ "workspace": "Sandbox Workspace", "watched_by": "renewed-0" })
    );
    assert!(time(&after["expires_at"]) >= time(&before["expires_at"]));
    assert_eq!(
        calls(&api, "POST", "/v1/subscriptions/sub-0/renew")
            .await
            .len(),
        1
    );
    // The API answered a new id: the old one is closed, the new one kept.
    assert_eq!(
        calls(&api, "DELETE", "/v1/subscriptions").await,
        ["/v1/subscriptions/sub-0"]
    );
    let metrics = app
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("subscription_steps_total")
                && l.contains("step=\"renewed\"")
                && l.contains("outcome=\"ok\"")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("subscriptions{")),
        "{metrics}"
    );
}

#[tokio::test]
async fn disconnecting_closes_the_subscription_at_the_provider() {
    let api = MockServer::start().await;
    mount_open(&api).await;
    mount_close(&api).await;
    let app = spawn(&api).await;
    let t = tenant();
    let id = connect_sandbox(&app, t).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let response = app
        .operator(Method::DELETE, &format!("/connections/{id}"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        calls(&api, "DELETE", "/v1/subscriptions").await,
        ["/v1/subscriptions/sub-0"]
    );
    let sub = subscription(&detail(&app, t, &id).await);
    assert_eq!(sub["status"], "closed");
    // A closed subscription is never renewed.
    let far = now() + chrono::Duration::days(1);
    assert_eq!(schedule(&app, far).await, 0);
}

#[tokio::test]
async fn garbage_from_the_provider_fails_the_subscription_readably_and_syncing_goes_on() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/subscriptions"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>oops</html>"))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "events": [], "has_more": false })),
        )
        .mount(&api)
        .await;
    let app = spawn(&api).await;
    let t = tenant();
    let callback = sandbox_redirect(&app, t, None).await;
    let (status, body) = json(app.client.get(callback).send().await.expect("sent")).await;
    assert_eq!(status, 200, "{body}");
    let id = body["connection"]["id"].as_str().expect("id").to_string();

    // Each attempt fails and is retried; the fifth gives up.
    let worker = SyncWorker::new();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let at = now() + chrono::Duration::hours(1);
        let lease = chrono::Duration::minutes(2);
        let job = app
            .store()
            .claim_sync_job(worker.owner(), at, at + lease)
            .await
            .expect("claim")
            .expect("the subscription job, due again");
        let connector = app.state.registry.get("sandbox").map(|e| e.connector);
        let outcome = worker
            .run_job(&app.state, connector, job)
            .await
            .expect("recorded");
        let sub = subscription(&detail(&app, t, &id).await);
        assert!(
            sub["last_error"]
                .as_str()
                .expect("an error")
                .contains("without an id and an expires_at"),
            "{sub}"
        );
        outcomes.push(outcome.result);
    }
    assert!(
        matches!(outcomes[3], JobResult::Retrying { .. }),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[4], JobResult::Failed { .. }),
        "{outcomes:?}"
    );
    let sub = subscription(&detail(&app, t, &id).await);
    assert_eq!(sub["status"], "failed", "{sub}");

    // The connection is unharmed: it syncs, and its own last_error stays clear.
    let response = app
        .operator(Method::POST, &format!("/connections/{id}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let ran = drain(&app).await;
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(ran[0].result, JobResult::Succeeded);
    let shown = detail(&app, t, &id).await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["last_error"], Value::Null);
    assert!(shown["last_synced_at"].is_string());

    // It is tried again later, not at once.
    assert_eq!(schedule(&app, now()).await, 0);
    let later = now() + chrono::Duration::minutes(61);
    assert_eq!(schedule(&app, later).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_renewing_the_same_subscription_renew_it_once() {
    let api = MockServer::start().await;
    mount_open(&api).await;
    mount_renew(&api, Duration::from_millis(200)).await;
    mount_close(&api).await;
    let app = spawn(&api).await;
    let sibling = app
        .sibling(&[
            ("POBLYSH_SANDBOX_API_BASE_URL", &api.uri()),
            (
                "POBLYSH_SANDBOX_SUBSCRIPTION_TTL_SECS",
                &TTL_SECS.to_string(),
            ),
        ])
        .await;
    let t = tenant();
    let id = connect_sandbox(&app, t).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    make_due(&app).await;

    // Both instances schedule and work at once.
    let at = now();
    let (a, b) = tokio::join!(schedule(&app, at), schedule(&sibling, at));
    assert_eq!(a + b, 1, "one job is queued");
    let (ran_a, ran_b) = tokio::join!(drain(&app), drain(&sibling));
    let renewals: Vec<_> = ran_a
        .iter()
        .chain(&ran_b)
        .filter(|o| o.job_type == JobType::Subscription)
        .collect();
    assert_eq!(renewals.len(), 1, "a: {ran_a:?}, b: {ran_b:?}");
    assert_eq!(renewals[0].result, JobResult::Succeeded);
    assert_eq!(
        calls(&api, "POST", "/v1/subscriptions/sub-0/renew")
            .await
            .len(),
        1
    );
    let sub = subscription(&detail(&app, t, &id).await);
    assert_eq!(sub["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disconnect_during_a_renewal_ends_with_everything_closed() {
    let api = MockServer::start().await;
    mount_open(&api).await;
    mount_renew(&api, Duration::from_millis(1500)).await;
    mount_close(&api).await;
    let app = spawn(&api).await;
    let t = tenant();
    let id = connect_sandbox(&app, t).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    make_due(&app).await;
    assert_eq!(schedule(&app, now()).await, 1);

    // The renewal is at the provider when the tenant disconnects.
    let state = app.state.clone();
    let renewing = tokio::spawn(async move { SyncWorker::new().drain(&state).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while calls(&api, "POST", "/v1/subscriptions/sub-0/renew")
        .await
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewal never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let response = app
        .operator(Method::DELETE, &format!("/connections/{id}"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let ran = renewing.await.expect("joined").expect("drain");
    assert_eq!(ran.len(), 1, "{ran:?}");

    // The old one was closed by the disconnect, the one the renewal opened by the renewal.
    let mut closed = calls(&api, "DELETE", "/v1/subscriptions").await;
    closed.sort();
    assert_eq!(
        closed,
        ["/v1/subscriptions/renewed-0", "/v1/subscriptions/sub-0"]
    );
    let sub = subscription(&detail(&app, t, &id).await);
    assert_eq!(sub["status"], "closed", "{sub}");
}

#[tokio::test]
async fn a_malformed_subscription_lifetime_stops_start_up_naming_the_variable() {
    use connectors::config::{Config, Source};
    let err = Config::from_source(&Source::from_pairs([
        ("POBLYSH_PROFILE", "test"),
        ("POBLYSH_SANDBOX_SUBSCRIPTION_TTL_SECS", "soon"),
    ]))
    .expect_err("refused");
    assert_eq!(err.variable, "POBLYSH_SANDBOX_SUBSCRIPTION_TTL_SECS");
}
