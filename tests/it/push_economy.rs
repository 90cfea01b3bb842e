//! What push delivery spends: connections kept open to a consumer, fan-out written in batches,
//! a replay's cap applied while reading, and a backlog gauge only for endpoints that exist.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use connectors::domain::{now, EndpointId, TenantId};
use connectors::store::{PageRequest, ReplayFrom};
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;
use wiremock::{MockServer, ResponseTemplate};

use crate::helpers::{signal, tenant, TestApp};
use crate::push_support::{answering, app, dispatcher, endpoint_to, register};

/// A consumer on 127.0.0.1 that answers `204` and remembers the peer address of each request.
async fn counting_consumer() -> (String, Arc<Mutex<Vec<SocketAddr>>>) {
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    let router = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("peers").push(peer);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (format!("http://{addr}/hooks"), peers)
}

fn endpoint_id(endpoint: &Value) -> EndpointId {
    EndpointId(
        endpoint["id"]
            .as_str()
            .and_then(|id| id.parse::<Uuid>().ok())
            .expect("an endpoint id"),
    )
}

async fn deliveries(app: &TestApp, endpoint: EndpointId) -> Vec<connectors::domain::Delivery> {
    app.store()
        .list_deliveries(
            endpoint,
            PageRequest {
                after: None,
                fetch: 1000,
            },
        )
        .await
        .expect("deliveries")
}

async fn metrics(app: &TestApp) -> String {
    app.anonymous(Method::GET, "/metrics")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text")
}

#[tokio::test]
async fn attempts_to_one_consumer_reuse_one_connection() {
    let app = app().await;
    let (url, peers) = counting_consumer().await;
    let t = tenant();
    register(&app, Some(t), json!({ "url": url })).await;
    let connection = app.connection(t, "github").await;
    app.signals(vec![
        signal(&connection, "pr_opened", 3),
        signal(&connection, "pr_merged", 2),
        signal(&connection, "pr_closed", 1),
    ])
    .await;
    let (dispatcher, _) = dispatcher(&app);

    // One connection's events go one at a time: three passes, three attempts.
    let pass = dispatcher.drain(10).await.expect("drained");

    assert_eq!(pass.delivered, 3);
    let peers = peers.lock().expect("peers").clone();
    assert_eq!(peers.len(), 3);
    let distinct: BTreeSet<SocketAddr> = peers.into_iter().collect();
    assert_eq!(
        distinct.len(),
        1,
        "every attempt went over the connection the first one opened: {distinct:?}"
    );
}

#[tokio::test]
async fn a_fan_out_larger_than_a_pass_gives_every_endpoint_each_event_once() {
    let app = app().await;
    let receiver = MockServer::start().await;
    let t = tenant();
    let own = endpoint_id(&endpoint_to(&app, Some(t), &receiver).await);
    let wide = endpoint_id(&endpoint_to(&app, None, &receiver).await);
    let connection = app.connection(t, "github").await;
    let stored = app
        .signals(
            (0..70)
                .map(|n| signal(&connection, "pr_opened", 100 - n))
                .collect(),
        )
        .await;

    let store = app.store();
    let first = store.sequence_and_fan_out(64, now()).await.expect("fanned");
    let second = store.sequence_and_fan_out(64, now()).await.expect("fanned");

    assert_eq!(first, (64, 128), "64 events to two endpoints");
    assert_eq!(second, (6, 12));
    for endpoint in [own, wide] {
        let rows = deliveries(&app, endpoint).await;
        let events: BTreeSet<_> = rows.iter().map(|d| d.event_id).collect();
        let seqs: BTreeSet<_> = rows.iter().map(|d| d.seq).collect();
        assert_eq!(rows.len(), stored.len(), "one delivery per event");
        assert_eq!(events.len(), stored.len(), "no event twice");
        assert_eq!(seqs.len(), stored.len(), "each carries its event's seq");
        assert!(rows
            .iter()
            .all(|d| d.tenant_id == t && d.connection_id == connection.id && d.attempts == 0));
    }
}

#[tokio::test]
async fn a_capped_replay_sends_the_first_events_the_endpoint_receives() {
    let app = app().await;
    let receiver = MockServer::start().await;
    let t = tenant();
    let created = register(
        &app,
        Some(t),
        json!({ "url": format!("{}/hooks", receiver.uri()), "filter": { "kinds": ["pr_opened"] } }),
    )
    .await;
    let id = endpoint_id(&created);
    let connection = app.connection(t, "github").await;
    let other = app.connection(TenantId(Uuid::new_v4()), "github").await;
    let stored = app
        .signals(vec![
            signal(&connection, "pr_merged", 6),
            signal(&other, "pr_opened", 5),
            signal(&connection, "pr_opened", 4),
            signal(&connection, "pr_merged", 3),
            signal(&connection, "pr_opened", 2),
            signal(&connection, "pr_opened", 1),
        ])
        .await;
    let store = app.store();
    store.sequence_and_fan_out(64, now()).await.expect("fanned");
    let mut fanned = deliveries(&app, id).await;
    fanned.sort_by_key(|d| d.seq);
    assert_eq!(fanned.len(), 3, "this tenant's three pr_opened signals");
    let endpoint = store
        .get_endpoint(t, id)
        .await
        .expect("read")
        .expect("found");

    let since = now() - chrono::Duration::hours(1);
    let replayed = store
        .replay(&endpoint, &ReplayFrom::Since(since), 2, now())
        .await
        .expect("replayed");

    assert_eq!(replayed, Some(2));
    let first: BTreeSet<_> = fanned.iter().map(|d| d.id).collect();
    let again: Vec<_> = deliveries(&app, id)
        .await
        .into_iter()
        .filter(|d| !first.contains(&d.id))
        .map(|d| d.event_id)
        .collect();
    let earliest: Vec<_> = fanned.iter().take(2).map(|d| d.event_id).collect();
    assert_eq!(again.len(), 2);
    assert!(
        earliest.iter().all(|e| again.contains(e)),
        "the two earliest events it receives, not another tenant's nor a merge: {stored:?}"
    );
}

#[tokio::test]
async fn the_backlog_gauge_counts_pending_deliveries_and_forgets_a_deleted_endpoint() {
    let app = app().await;
    let receiver = answering(ResponseTemplate::new(500)).await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let id = endpoint["id"].as_str().expect("id").to_string();
    let connection = app.connection(t, "github").await;
    app.signals(vec![
        signal(&connection, "pr_opened", 2),
        signal(&connection, "pr_merged", 1),
    ])
    .await;
    dispatcher(&app).0.run_once().await.expect("one pass");

    let text = metrics(&app).await;
    assert!(
        text.contains(&format!("push_endpoint_backlog{{endpoint=\"{id}\"}} 2")),
        "{text}"
    );

    let deleted = app
        .operator(Method::DELETE, &format!("/endpoints/{id}"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(deleted.status(), 204);
    let text = metrics(&app).await;
    assert!(
        !text.contains(&id),
        "no series for a deleted endpoint: {text}"
    );
}

#[tokio::test]
async fn the_outbox_gauge_counts_events_until_fan_out_passes_them() {
    let app = app().await;
    let receiver = answering(ResponseTemplate::new(204)).await;
    let t = tenant();
    endpoint_to(&app, Some(t), &receiver).await;
    let connection = app.connection(t, "github").await;
    let text = metrics(&app).await;
    assert!(text.contains("\npush_outbox_waiting 0\n"), "{text}");
    app.signals(vec![
        signal(&connection, "pr_opened", 2),
        signal(&connection, "pr_merged", 1),
    ])
    .await;

    // Recorded, not yet numbered (PostgreSQL) or not yet fanned out (both).
    let text = metrics(&app).await;
    assert!(text.contains("\npush_outbox_waiting 2\n"), "{text}");

    dispatcher(&app).0.run_once().await.expect("one pass");
    let text = metrics(&app).await;
    assert!(text.contains("\npush_outbox_waiting 0\n"), "{text}");
}
