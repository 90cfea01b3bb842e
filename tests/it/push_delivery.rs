//! Delivery of the outbox: signatures the reference verifier accepts, order per connection,
//! fan-out to wide endpoints, events of connection changes and replay.

use chrono::Duration;
use connectors::domain::{now, ConnectionStatus};
use reqwest::Method;
use serde_json::json;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{signal, tenant};
use crate::push_support::{app, app_with, dispatcher, endpoint_to, received, verify};

async fn accepting() -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    receiver
}

#[tokio::test]
async fn a_new_signal_is_delivered_signed_so_the_reference_verifier_accepts_it() {
    let app = app().await;
    let receiver = accepting().await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let secret = endpoint["secret"].as_str().expect("secret");
    let connection = app.connection(t, "github").await;
    let stored = app.signals(vec![signal(&connection, "pr_merged", 1)]).await;
    let (dispatcher, _) = dispatcher(&app);

    let pass = dispatcher.drain(10).await.expect("drained");

    assert_eq!(pass.delivered, 1);
    let messages = received(&receiver).await;
    assert_eq!(messages.len(), 1);
    let payload = verify(secret, &messages[0]).expect("the reference verifier accepts it");
    assert_eq!(payload["type"], "signal.created");
    assert_eq!(payload["data"]["id"], stored[0].id.to_string());
    assert_eq!(payload["data"]["tenant_id"], t.to_string());
    assert_eq!(payload["data"]["kind"], "pr_merged");
    assert_eq!(payload["data"]["payload"]["number"], 1);
    let wrong = connectors::push::SigningSecret::generate().reveal();
    assert!(
        verify(wrong.expose(), &messages[0]).is_err(),
        "another secret does not verify"
    );
    let (_, shown) = crate::push_support::get_as(
        &app,
        Some(t),
        &format!("/endpoints/{}", endpoint["id"].as_str().expect("id")),
    )
    .await;
    assert!(shown["last_success_at"].is_string(), "{shown}");
    assert_eq!(shown["backlog"], 0);
}

#[tokio::test]
async fn without_include_payload_the_signal_arrives_without_its_payload() {
    let app = app().await;
    let receiver = accepting().await;
    let t = tenant();
    crate::push_support::register(
        &app,
        Some(t),
        json!({ "url": format!("{}/hooks", receiver.uri()) }),
    )
    .await;
    let connection = app.connection(t, "github").await;
    app.signals(vec![signal(&connection, "pr_opened", 1)]).await;
    dispatcher(&app).0.drain(10).await.expect("drained");
    let body = received(&receiver).await[0].json();
    assert_eq!(body["data"]["kind"], "pr_opened");
    assert!(body["data"].get("payload").is_none(), "{body}");
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_until_the_overlap_ends() {
    let app = app_with(&[("POBLYSH_PUSH_SECRET_OVERLAP_SECS", "1")]).await;
    let receiver = accepting().await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let old = endpoint["secret"].as_str().expect("secret").to_string();
    let id = endpoint["id"].as_str().expect("id");
    let rotated = app
        .operator(Method::POST, &format!("/endpoints/{id}/secret/rotate"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    let new = crate::helpers::json(rotated).await.1["secret"]
        .as_str()
        .expect("new secret")
        .to_string();
    let connection = app.connection(t, "github").await;
    // On the system clock: the overlap is measured in real time by both sides.
    let dispatcher = connectors::push::Dispatcher::new(app.state.services.clone());

    app.signals(vec![signal(&connection, "pr_opened", 2)]).await;
    dispatcher.drain(10).await.expect("drained");
    let during = &received(&receiver).await[0];
    assert_eq!(
        during.signature.split(' ').count(),
        2,
        "{}",
        during.signature
    );
    verify(&old, during).expect("the old secret still verifies");
    verify(&new, during).expect("the new secret verifies");

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.signals(vec![signal(&connection, "pr_merged", 1)]).await;
    dispatcher.drain(10).await.expect("drained");
    let after = &received(&receiver).await[1];
    assert_eq!(after.signature.split(' ').count(), 1, "{}", after.signature);
    verify(&new, after).expect("the new secret verifies");
    assert!(
        verify(&old, after).is_err(),
        "the old secret no longer signs"
    );
}

#[tokio::test]
async fn a_failing_head_holds_back_its_own_connection_only() {
    let app = app().await;
    let receiver = MockServer::start().await;
    let t = tenant();
    endpoint_to(&app, Some(t), &receiver).await;
    let (first, second) = (
        app.connection(t, "github").await,
        app.connection(t, "github").await,
    );
    let [a1, a2, b1] = [
        signal(&first, "pr_opened", 3),
        signal(&first, "pr_merged", 2),
        signal(&second, "pr_opened", 1),
    ];
    Mock::given(body_string_contains(a1.id.to_string()))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&receiver)
        .await;
    app.signals(vec![a1.clone(), a2.clone(), b1.clone()]).await;
    let (dispatcher, clock) = dispatcher(&app);

    dispatcher.drain(10).await.expect("drained");
    let ids = |messages: Vec<crate::push_support::Received>| -> Vec<String> {
        messages
            .iter()
            .map(|m| m.json()["data"]["id"].as_str().expect("id").to_string())
            .collect()
    };
    let sent = ids(received(&receiver).await);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.contains(&a1.id.to_string()) && sent.contains(&b1.id.to_string()));
    assert!(
        !sent.contains(&a2.id.to_string()),
        "the second of the failing connection waits"
    );

    clock.advance(Duration::seconds(10));
    dispatcher.drain(10).await.expect("drained");
    let first_line: Vec<String> = ids(received(&receiver).await)
        .into_iter()
        .filter(|id| *id != b1.id.to_string())
        .collect();
    assert_eq!(
        first_line,
        [a1.id.to_string(), a1.id.to_string(), a2.id.to_string()]
    );
}

#[tokio::test]
async fn a_wide_endpoint_receives_every_tenants_events_and_a_tenants_only_its_own() {
    let app = app().await;
    let (wide, own) = (accepting().await, accepting().await);
    let (t1, t2) = (tenant(), tenant());
    endpoint_to(&app, None, &wide).await;
    endpoint_to(&app, Some(t1), &own).await;
    let (c1, c2) = (
        app.connection(t1, "github").await,
        app.connection(t2, "github").await,
    );
    app.signals(vec![
        signal(&c1, "pr_opened", 2),
        signal(&c2, "pr_opened", 1),
    ])
    .await;

    dispatcher(&app).0.drain(10).await.expect("drained");

    let tenants = |messages: Vec<crate::push_support::Received>| -> Vec<String> {
        let mut t: Vec<String> = messages
            .iter()
            .map(|m| {
                m.json()["data"]["tenant_id"]
                    .as_str()
                    .expect("tenant")
                    .to_string()
            })
            .collect();
        t.sort();
        t
    };
    let mut both = vec![t1.to_string(), t2.to_string()];
    both.sort();
    assert_eq!(tenants(received(&wide).await), both);
    assert_eq!(tenants(received(&own).await), vec![t1.to_string()]);
}

#[tokio::test]
async fn connection_status_changes_are_delivered_with_the_previous_status() {
    let app = app().await;
    let receiver = accepting().await;
    let t = tenant();
    endpoint_to(&app, Some(t), &receiver).await;
    let connection = app.connection(t, "github").await;
    let store = app.store();
    store
        .set_connection_status(
            t,
            connection.id,
            ConnectionStatus::NeedsReauth,
            Some("invalid_grant"),
            now(),
        )
        .await
        .expect("status set");
    // The same status again is no change, and is not reported.
    store
        .set_connection_status(
            t,
            connection.id,
            ConnectionStatus::NeedsReauth,
            Some("invalid_grant"),
            now(),
        )
        .await
        .expect("status set");
    store
        .revoke_connection(t, connection.id, now())
        .await
        .expect("revoked");

    dispatcher(&app).0.drain(10).await.expect("drained");

    let bodies: Vec<serde_json::Value> =
        received(&receiver).await.iter().map(|m| m.json()).collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0]["type"], "connection.status_changed");
    assert_eq!(bodies[0]["data"]["status"], "needs_reauth");
    assert_eq!(bodies[0]["data"]["previous_status"], "active");
    assert_eq!(bodies[1]["data"]["status"], "revoked");
    assert_eq!(bodies[1]["data"]["previous_status"], "needs_reauth");
}

#[tokio::test]
async fn a_replay_sends_the_same_events_again_with_the_same_ids() {
    let app = app().await;
    let receiver = accepting().await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let since = now() - Duration::minutes(1);
    let connection = app.connection(t, "github").await;
    app.signals(vec![
        signal(&connection, "pr_opened", 2),
        signal(&connection, "pr_merged", 1),
    ])
    .await;
    let (dispatcher, clock) = dispatcher(&app);
    dispatcher.drain(10).await.expect("drained");

    let response = app
        .operator(
            Method::POST,
            &format!("/endpoints/{}/replay", endpoint["id"].as_str().expect("id")),
        )
        .header("X-Tenant-Id", t.to_string())
        .json(&json!({ "since": since.to_rfc3339() }))
        .send()
        .await
        .expect("sent");
    let (status, body) = crate::helpers::json(response).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["replayed"], 2);
    // The replay was queued by the API at the real time, a moment after the test's clock.
    clock.advance(Duration::seconds(5));
    dispatcher.drain(10).await.expect("drained");

    let ids: Vec<String> = received(&receiver)
        .await
        .iter()
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(
        ids[..2],
        ids[2..],
        "the replay carries the same webhook-ids, in order"
    );
}

#[tokio::test]
async fn a_new_connection_and_a_failing_subscription_are_delivered_once_each() {
    let app = app().await;
    let receiver = accepting().await;
    let t = tenant();
    crate::push_support::register(
        &app,
        Some(t),
        json!({
            "url": format!("{}/hooks", receiver.uri()),
            "event_types": ["connection.created", "subscription.failed"],
        }),
    )
    .await;
    let connected = crate::connect::connect_sandbox(&app, t).await;
    let connection = app
        .store()
        .get_connection(
            t,
            connected["id"].as_str().expect("id").parse().expect("uuid"),
        )
        .await
        .expect("read")
        .expect("stored");
    let store = app.store();
    store
        .ensure_subscriptions(&connection, &["feed".to_string()], now())
        .await
        .expect("ensured");
    let subscription = store
        .connection_subscriptions(t, connection.id)
        .await
        .expect("listed")
        .into_iter()
        .find(|s| s.resource == "feed")
        .expect("the subscription");
    for _ in 0..2 {
        store
            .fail_subscription(subscription.id, "the provider refused", now(), now())
            .await
            .expect("failed");
    }

    dispatcher(&app).0.drain(10).await.expect("drained");

    let bodies: Vec<serde_json::Value> =
        received(&receiver).await.iter().map(|m| m.json()).collect();
    let types: Vec<&str> = bodies
        .iter()
        .map(|b| b["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        ["connection.created", "subscription.failed"],
        "{bodies:?}"
    );
    assert_eq!(bodies[0]["data"]["connection_id"], connected["id"]);
    assert_eq!(bodies[1]["data"]["resource"], "feed");
    assert_eq!(bodies[1]["data"]["error"], "the provider refused");
}

#[tokio::test]
async fn deliveries_are_counted_in_the_metrics() {
    let app = app().await;
    let receiver = accepting().await;
    let t = tenant();
    endpoint_to(&app, Some(t), &receiver).await;
    let connection = app.connection(t, "github").await;
    app.signals(vec![signal(&connection, "pr_opened", 1)]).await;
    dispatcher(&app).0.drain(10).await.expect("drained");

    let text = app
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("push_deliveries_total{outcome=\"succeeded\"}"),
        "{text}"
    );
    assert!(text.contains("push_delivery_lag_seconds_bucket"));
    assert!(text.contains("push_endpoint_backlog{endpoint="));
}

/// Writes a `connection.status_changed` event marked `late` for `connection` on `conn`, its
/// `seq` the SQL expression `seq` (what a writer of the database's kind gives it at insert).
async fn insert_marker<'c, E>(conn: E, connection: &connectors::domain::Connection, seq: &str)
where
    E: sqlx::Executor<'c>,
    for<'q> <E::Database as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, E::Database>,
    uuid::Uuid: for<'q> sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    String: for<'q> sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    i64: for<'q> sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
{
    let sql = format!(
        "INSERT INTO push_events (seq, id, tenant_id, connection_id, provider, event_type, data, \
         created_at) VALUES ({seq}, $1, $2, $3, $4, 'connection.status_changed', $5, $6)"
    );
    sqlx::query(&sql)
        .bind(uuid::Uuid::new_v4())
        .bind(connection.tenant_id.0)
        .bind(connection.id.0)
        .bind(connection.provider.clone())
        .bind(json!({ "marker": "late" }).to_string())
        .bind(now().timestamp_micros())
        .execute(conn)
        .await
        .expect("event inserted");
}

#[tokio::test]
async fn an_event_committed_late_is_delivered_after_those_committed_before_it() {
    let app = app().await;
    let receiver = accepting().await;
    let t = tenant();
    endpoint_to(&app, Some(t), &receiver).await;
    let connection = app.connection(t, "github").await;
    let earlier = signal(&connection, "pr_opened", 1);
    let (dispatcher, clock) = dispatcher(&app);

    if app.database_url.starts_with("postgres") {
        // Another instance's transaction inserts first (its row is older) but commits last,
        // after the sequencer has numbered what was committed.
        use sqlx::Connection as _;
        let mut other = sqlx::PgConnection::connect(&app.database_url)
            .await
            .expect("connected");
        let mut tx = other.begin().await.expect("begun");
        insert_marker(&mut *tx, &connection, "NULL").await;
        app.signals(vec![earlier.clone()]).await;
        app.store()
            .sequence_and_fan_out(100, now())
            .await
            .expect("sequenced");
        tx.commit().await.expect("committed");
    } else {
        // SQLite has one writer at a time: a later commit is always a later insert, numbered
        // as it is inserted after every event committed before it.
        app.signals(vec![earlier.clone()]).await;
        let mut other = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .expect("connected");
        use sqlx::Connection as _;
        let next = "(SELECT COALESCE(MAX(seq), 0) + 1 FROM push_events)";
        insert_marker(&mut other, &connection, next).await;
    }
    // What was fanned out above is due at the real time, a moment after the test's clock.
    clock.advance(Duration::seconds(5));
    dispatcher.drain(10).await.expect("drained");

    let bodies: Vec<serde_json::Value> =
        received(&receiver).await.iter().map(|m| m.json()).collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(
        bodies[0]["data"]["id"],
        earlier.id.to_string(),
        "commit order first"
    );
    assert_eq!(bodies[1]["data"]["marker"], "late");
}

#[tokio::test]
async fn events_no_endpoint_receives_do_not_hold_back_the_ones_behind_them() {
    let app = app().await;
    let receiver = accepting().await;
    let (watched, unwatched) = (tenant(), tenant());
    endpoint_to(&app, Some(watched), &receiver).await;
    let quiet = app.connection(unwatched, "github").await;
    // More than one pass's batch of events that no endpoint receives, committed first.
    app.signals((0..150).map(|n| signal(&quiet, "pr_opened", n)).collect())
        .await;
    let connection = app.connection(watched, "github").await;
    app.signals(vec![signal(&connection, "pr_merged", 1)]).await;

    let pass = dispatcher(&app).0.drain(10).await.expect("drained");

    assert_eq!(pass.events, 151);
    assert_eq!(
        pass.delivered, 1,
        "the watched tenant's signal is delivered"
    );
    assert_eq!(received(&receiver).await.len(), 1);
}
