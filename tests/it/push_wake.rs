//! The background dispatcher wakes as soon as events are stored, instead of waiting out its
//! poll interval: in-process on SQLite, by `LISTEN/NOTIFY` on PostgreSQL.

use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{signal, tenant};
use crate::push_support::{answering, app_with, get_as, received, register};

#[tokio::test]
async fn an_idle_dispatcher_delivers_a_new_signal_well_within_its_poll_interval() {
    // A minute between polls: only a wake-up can deliver within the few seconds allowed.
    let app = app_with(&[
        ("POBLYSH_ROLES", "api,worker"),
        ("POBLYSH_WORKER_POLL_INTERVAL_MS", "60000"),
    ])
    .await;
    let receiver = answering(ResponseTemplate::new(204)).await;
    let t = tenant();
    signals_endpoint(&app, t, &receiver).await;
    let connection = app.connection(t, "github").await;
    // Let the dispatcher finish its first pass and fall idle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let stored = app.signals(vec![signal(&connection, "pr_opened", 1)]).await;

    let deadline = started + Duration::from_secs(10);
    let mut messages = received(&receiver).await;
    while messages.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        messages = received(&receiver).await;
    }
    assert_eq!(messages.len(), 1, "delivered before the next poll");
    assert_eq!(messages[0].json()["data"]["id"], stored[0].id.to_string());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn an_endpoint_that_hangs_holds_back_no_other_endpoint() {
    let app = app_with(&[("POBLYSH_ROLES", "api,worker")]).await;
    // Answers only after the attempt's 15 s time-out.
    let hanging = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(30)))
        .mount(&hanging)
        .await;
    let fast = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&fast)
        .await;
    let slow_tenant = tenant();
    let other = tenant();
    for (t, receiver) in [(slow_tenant, &hanging), (other, &fast)] {
        register(
            &app,
            Some(t),
            json!({"url": format!("{}/hooks", receiver.uri()), "event_types": ["signal.created"]}),
        )
        .await;
    }
    let stuck = app.connection(slow_tenant, "github").await;
    app.signals(vec![signal(&stuck, "pr_opened", 1)]).await;
    // The hanging endpoint's attempt is under way before the other's events are stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hanging
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the hanging endpoint was never attempted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let connection = app.connection(other, "github").await;
    let started = Instant::now();
    let stored = app
        .signals(
            (1..=3)
                .map(|n| signal(&connection, "pr_opened", n))
                .collect(),
        )
        .await;
    let mut messages = received(&fast).await;
    while messages.len() < 3 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        messages = received(&fast).await;
    }
    let ids: Vec<String> = messages
        .iter()
        .map(|m| {
            m.json()["data"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = stored.iter().map(|s| s.id.to_string()).collect();
    let mut sorted = expected.clone();
    sorted.sort();
    let mut got = ids.clone();
    got.sort();
    assert_eq!(got, sorted, "every event of the other endpoint arrived");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the other endpoint waited for the hanging one's 15 s time-out"
    );
}

#[tokio::test]
async fn outcomes_a_failed_step_could_not_write_are_written_by_the_next() {
    // The dispatcher's loop is the test's own, polling often: no wake-up is needed.
    let app = app_with(&[("POBLYSH_WORKER_POLL_INTERVAL_MS", "100")]).await;
    let receiver = answering(ResponseTemplate::new(204)).await;
    let t = tenant();
    let endpoint = signals_endpoint(&app, t, &receiver).await;
    let connection = app.connection(t, "github").await;
    // Until dropped, the database refuses to mark a delivery succeeded: a step that records
    // one fails as a whole.
    app.execute_sql(
        "CREATE TRIGGER refuse_success BEFORE UPDATE OF status ON push_deliveries \
         WHEN NEW.status = 'succeeded' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        "CREATE FUNCTION refuse_success() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused'; END $$",
    )
    .await;
    app.execute_sql(
        "SELECT 1",
        "CREATE TRIGGER refuse_success BEFORE UPDATE OF status ON push_deliveries \
         FOR EACH ROW WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION refuse_success()",
    )
    .await;
    let dispatching = tokio::spawn(connectors::push::run(app.state.services.clone()));
    app.signals(vec![signal(&connection, "pr_opened", 1)]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received(&receiver).await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        received(&receiver).await.len(),
        1,
        "the first attempt is made"
    );
    // The step that came to record it failed meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page = deliveries(&app, t, &endpoint).await;
    assert_eq!(page["deliveries"][0]["status"], "pending", "{page}");

    app.execute_sql(
        "DROP TRIGGER refuse_success",
        "DROP TRIGGER refuse_success ON push_deliveries",
    )
    .await;
    // A later step writes the outcome kept, and sends a new signal's.
    app.signals(vec![signal(&connection, "pr_opened", 2)]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut page = deliveries(&app, t, &endpoint).await;
    while page["deliveries"]
        .as_array()
        .is_some_and(|all| all.len() < 2 || all.iter().any(|d| d["status"] != "succeeded"))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        page = deliveries(&app, t, &endpoint).await;
    }
    dispatching.abort();

    for delivery in page["deliveries"].as_array().expect("a list") {
        assert_eq!(delivery["status"], "succeeded", "{page}");
        assert_eq!(delivery["attempt"], 1, "sent once each: {page}");
    }
    assert_eq!(received(&receiver).await.len(), 2, "no attempt repeated");
}

/// Registers an endpoint of `t` receiving its `signal.created` events at the receiver's
/// `/hooks`; its JSON.
async fn signals_endpoint(
    app: &crate::helpers::TestApp,
    t: connectors::domain::TenantId,
    receiver: &MockServer,
) -> serde_json::Value {
    register(
        app,
        Some(t),
        json!({"url": format!("{}/hooks", receiver.uri()), "event_types": ["signal.created"]}),
    )
    .await
}

/// The endpoint's deliveries page, newest first.
async fn deliveries(
    app: &crate::helpers::TestApp,
    t: connectors::domain::TenantId,
    endpoint: &serde_json::Value,
) -> serde_json::Value {
    let path = format!(
        "/endpoints/{}/deliveries",
        endpoint["id"].as_str().expect("an id")
    );
    let (status, page) = get_as(app, Some(t), &path).await;
    assert_eq!(status, 200, "{page}");
    page
}
