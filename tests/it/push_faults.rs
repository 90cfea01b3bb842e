//! Delivery when the receiver misbehaves: `410 Gone`, `Retry-After`, refused addresses, a
//! dispatcher stopped mid-attempt, and a schedule that runs out.

use std::time::Duration as StdDuration;

use chrono::Duration;
use connectors::push::Dispatcher;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{signal, tenant};
use crate::push_support::{answering, app, dispatcher, endpoint_to, get_as, received};

#[tokio::test]
async fn gone_disables_the_endpoint_and_keeps_its_delivery_waiting() {
    let app = app().await;
    let receiver = answering(ResponseTemplate::new(410)).await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let path = format!("/endpoints/{}", endpoint["id"].as_str().expect("id"));
    let connection = app.connection(t, "github").await;
    app.signals(vec![signal(&connection, "pr_opened", 1)]).await;
    let (dispatcher, clock) = dispatcher(&app);

    dispatcher.drain(10).await.expect("drained");
    clock.advance(Duration::hours(1));
    let later = dispatcher.drain(10).await.expect("drained");

    assert_eq!(later.attempted, 0, "a disabled endpoint gets nothing");
    assert_eq!(received(&receiver).await.len(), 1);
    let (_, shown) = get_as(&app, Some(t), &path).await;
    assert_eq!(shown["status"], "disabled", "{shown}");
    assert!(shown["disabled_reason"]
        .as_str()
        .is_some_and(|r| r.contains("410")));
    assert_eq!(shown["last_failure"]["status_code"], 410);
    assert_eq!(shown["backlog"], 1);
    let (_, deliveries) = get_as(&app, Some(t), &format!("{path}/deliveries")).await;
    assert_eq!(deliveries["deliveries"][0]["status"], "pending");
    assert_eq!(deliveries["deliveries"][0]["status_code"], 410);
    assert_eq!(deliveries["deliveries"][0]["attempt"], 1);

    // Enabled again once the receiver is back, it resumes where it stopped.
    receiver.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let enabled = app
        .operator(reqwest::Method::PATCH, &path)
        .header("X-Tenant-Id", t.to_string())
        .json(&json!({ "status": "active" }))
        .send()
        .await
        .expect("sent");
    let (status, body) = crate::helpers::json(enabled).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["disabled_reason"], serde_json::Value::Null);
    assert_eq!(dispatcher.drain(10).await.expect("drained").delivered, 1);
}

#[tokio::test]
async fn purging_a_connection_drops_what_would_still_be_sent_about_it() {
    let app = app().await;
    let receiver = answering(ResponseTemplate::new(410)).await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let path = format!("/endpoints/{}", endpoint["id"].as_str().expect("id"));
    let connection = app.connection(t, "github").await;
    app.signals(vec![signal(&connection, "pr_opened", 1)]).await;
    dispatcher(&app).0.drain(10).await.expect("drained");
    assert_eq!(get_as(&app, Some(t), &path).await.1["backlog"], 1);

    app.store()
        .delete_connection(t, connection.id)
        .await
        .expect("purged");

    assert_eq!(get_as(&app, Some(t), &path).await.1["backlog"], 0);
}

#[tokio::test]
async fn retry_after_is_honoured_before_the_next_attempt() {
    let app = app().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "120")
                .set_body_string("busy"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&receiver)
        .await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let connection = app.connection(t, "github").await;
    app.signals(vec![signal(&connection, "pr_opened", 1)]).await;
    let (dispatcher, clock) = dispatcher(&app);

    dispatcher.drain(10).await.expect("drained");
    let deliveries_path = format!(
        "/endpoints/{}/deliveries",
        endpoint["id"].as_str().expect("id")
    );
    let (_, first) = get_as(&app, Some(t), &deliveries_path).await;
    assert_eq!(first["deliveries"][0]["status_code"], 503);
    assert_eq!(first["deliveries"][0]["response_body"], "busy");
    clock.advance(Duration::seconds(60));
    assert_eq!(
        dispatcher.drain(10).await.expect("drained").attempted,
        0,
        "not before 120 s"
    );
    clock.advance(Duration::seconds(61));
    assert_eq!(dispatcher.drain(10).await.expect("drained").delivered, 1);
    let (_, done) = get_as(&app, Some(t), &deliveries_path).await;
    assert_eq!(done["deliveries"][0]["status"], "succeeded", "{done}");
    assert_eq!(done["deliveries"][0]["attempt"], 2);
}

#[tokio::test]
async fn an_address_outside_the_allowed_ranges_is_refused_at_delivery() {
    let app = app().await;
    let receiver = answering(ResponseTemplate::new(200)).await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let connection = app.connection(t, "github").await;
    app.signals(vec![signal(&connection, "pr_opened", 1)]).await;
    // An instance of the same deployment whose rules no longer allow loopback.
    let strict = app.sibling(&[("POBLYSH_PUSH_ALLOW_HTTP", "true")]).await;

    Dispatcher::new(strict.state.services.clone())
        .drain(10)
        .await
        .expect("drained");

    assert!(
        received(&receiver).await.is_empty(),
        "nothing reached the receiver"
    );
    let (_, shown) = get_as(
        &app,
        Some(t),
        &format!("/endpoints/{}", endpoint["id"].as_str().expect("id")),
    )
    .await;
    let error = shown["last_failure"]["error"].as_str().expect("an error");
    assert!(error.contains("may not reach"), "{error}");
    assert_eq!(shown["backlog"], 1);
}

#[tokio::test]
async fn a_dispatcher_stopped_mid_attempt_loses_nothing_and_the_retry_keeps_the_id() {
    let app = app().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(StdDuration::from_secs(30)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&receiver)
        .await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let connection = app.connection(t, "github").await;
    app.signals(vec![signal(&connection, "pr_opened", 1)]).await;

    let first = Dispatcher::new(app.state.services.clone());
    let running = tokio::spawn(async move { first.run_once().await });
    for _ in 0..200 {
        if !received(&receiver).await.is_empty() {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(25)).await;
    }
    assert_eq!(
        received(&receiver).await.len(),
        1,
        "the first attempt reached the receiver"
    );
    running.abort();
    let _ = running.await;

    let (second, clock) = dispatcher(&app);
    assert_eq!(
        second.drain(10).await.expect("drained").attempted,
        0,
        "the lease still holds"
    );
    clock.advance(Duration::seconds(61));
    assert_eq!(second.drain(10).await.expect("drained").delivered, 1);

    let ids: Vec<String> = received(&receiver)
        .await
        .iter()
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1], "the retry carries the same webhook-id");
    let (_, deliveries) = get_as(
        &app,
        Some(t),
        &format!(
            "/endpoints/{}/deliveries",
            endpoint["id"].as_str().expect("id")
        ),
    )
    .await;
    assert_eq!(deliveries["deliveries"][0]["status"], "succeeded");
}

#[tokio::test]
async fn a_delivery_fails_after_the_last_attempt_and_the_next_one_goes() {
    let app = app().await;
    let receiver = answering(ResponseTemplate::new(500)).await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let connection = app.connection(t, "github").await;
    app.signals(vec![
        signal(&connection, "pr_opened", 2),
        signal(&connection, "pr_merged", 1),
    ])
    .await;
    let (dispatcher, clock) = dispatcher(&app);

    for _ in 0..8 {
        dispatcher.drain(10).await.expect("drained");
        clock.advance(Duration::hours(11));
    }

    let kinds: Vec<String> = received(&receiver)
        .await
        .iter()
        .map(|m| m.json()["data"]["kind"].as_str().expect("kind").to_string())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "pr_opened").count(),
        8,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"pr_merged".to_string()),
        "the next one went after the give-up"
    );
    let (_, deliveries) = get_as(
        &app,
        Some(t),
        &format!(
            "/endpoints/{}/deliveries",
            endpoint["id"].as_str().expect("id")
        ),
    )
    .await;
    let statuses: Vec<serde_json::Value> = deliveries["deliveries"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| json!([d["status"], d["attempt"]]))
        .collect();
    assert!(statuses.contains(&json!(["failed", 8])), "{statuses:?}");
}

#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled() {
    let app = app().await;
    let receiver = answering(ResponseTemplate::new(500)).await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let path = format!("/endpoints/{}", endpoint["id"].as_str().expect("id"));
    let connection = app.connection(t, "github").await;
    let (dispatcher, clock) = dispatcher(&app);
    app.signals(vec![signal(&connection, "pr_opened", 1)]).await;
    dispatcher.drain(10).await.expect("drained");
    clock.advance(Duration::days(4));
    dispatcher.drain(10).await.expect("drained");
    assert_eq!(
        get_as(&app, Some(t), &path).await.1["status"],
        "active",
        "four days"
    );

    clock.advance(Duration::days(1) + Duration::minutes(1));
    dispatcher.drain(10).await.expect("drained");

    let (_, shown) = get_as(&app, Some(t), &path).await;
    assert_eq!(shown["status"], "disabled", "{shown}");
    assert!(shown["disabled_reason"]
        .as_str()
        .is_some_and(|r| r.contains("5 days")));
}

#[tokio::test]
async fn retention_removes_ended_deliveries_and_their_events_and_keeps_what_waits() {
    let app = app().await;
    let (ok, gone) = (
        answering(ResponseTemplate::new(200)).await,
        answering(ResponseTemplate::new(410)).await,
    );
    let (t, u) = (tenant(), tenant());
    endpoint_to(&app, Some(t), &ok).await;
    endpoint_to(&app, Some(u), &gone).await;
    let (delivered, waiting) = (
        app.connection(t, "github").await,
        app.connection(u, "github").await,
    );
    app.signals(vec![
        signal(&delivered, "pr_opened", 2),
        signal(&waiting, "pr_opened", 1),
    ])
    .await;
    dispatcher(&app).0.drain(10).await.expect("drained");

    let later = connectors::domain::now() + Duration::days(8);
    let purged = connectors::ingest::retention::run_once(&app.state, later)
        .await
        .expect("retention");

    assert_eq!(purged.push_deliveries, 1, "{purged:?}");
    assert_eq!(purged.push_events, 1, "{purged:?}");
    let backlog = app
        .store()
        .list_endpoints(
            u,
            connectors::store::PageRequest {
                after: None,
                fetch: 10,
            },
        )
        .await
        .expect("listed");
    assert_eq!(
        app.store()
            .endpoint_backlog(backlog[0].id)
            .await
            .expect("backlog"),
        1,
        "the delivery waiting for a disabled endpoint stays"
    );
}
