//! Replay by signal cursor: the events of the signals after a position of `GET /signals` are
//! sent again with their ids, and a cursor that is not the endpoint tenant's is refused.

use chrono::Duration;
use connectors::domain::TenantId;
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{signal, tenant, TestApp};
use crate::push_support::{app, dispatcher, endpoint_to, get_as, received};

async fn accepting() -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    receiver
}

async fn replay(app: &TestApp, tenant: TenantId, endpoint: &Value, body: Value) -> (u16, Value) {
    let path = format!("/endpoints/{}/replay", endpoint["id"].as_str().expect("id"));
    let response = app
        .operator(Method::POST, &path)
        .header("X-Tenant-Id", tenant.to_string())
        .json(&body)
        .send()
        .await
        .expect("sent");
    let (status, body) = crate::helpers::json(response).await;
    (status.as_u16(), body)
}

/// The cursor after the first `limit` signals of `tenant`, newest first.
async fn cursor_after(app: &TestApp, tenant: TenantId, limit: u32) -> String {
    let (status, page) = get_as(app, Some(tenant), &format!("/signals?limit={limit}")).await;
    assert_eq!(status, 200, "{page}");
    page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string()
}

#[tokio::test]
async fn a_replay_after_a_signal_cursor_sends_the_later_signals_again_with_their_ids() {
    let app = app().await;
    let receiver = accepting().await;
    let t = tenant();
    let endpoint = endpoint_to(&app, Some(t), &receiver).await;
    let connection = app.connection(t, "github").await;
    let stored = app
        .signals(vec![
            signal(&connection, "pr_opened", 3),
            signal(&connection, "pr_merged", 2),
            signal(&connection, "pr_closed", 1),
        ])
        .await;
    let (dispatcher, clock) = dispatcher(&app);
    dispatcher.drain(10).await.expect("drained");
    let first: Vec<_> = received(&receiver).await;
    assert_eq!(first.len(), 3);
    // Newest first: the first page holds the two latest; its cursor names the middle one.
    let cursor = cursor_after(&app, t, 2).await;

    let (status, body) = replay(&app, t, &endpoint, json!({ "after_signal_cursor": cursor })).await;

    assert_eq!(status, 202, "{body}");
    assert_eq!(body["replayed"], 1, "only the signal after the middle one");
    clock.advance(Duration::seconds(5));
    dispatcher.drain(10).await.expect("drained");
    let all = received(&receiver).await;
    assert_eq!(all.len(), 4);
    let again = all[3].json();
    assert_eq!(again["data"]["id"], stored[2].id.to_string());
    let original = first
        .iter()
        .find(|m| m.json()["data"]["id"] == stored[2].id.to_string())
        .expect("delivered before");
    assert_eq!(all[3].id, original.id, "the same webhook-id");
}

#[tokio::test]
async fn a_cursor_of_another_tenant_or_not_issued_here_is_refused() {
    let app = app().await;
    let receiver = accepting().await;
    let (mine, theirs) = (tenant(), tenant());
    let endpoint = endpoint_to(&app, Some(mine), &receiver).await;
    for t in [mine, theirs] {
        let connection = app.connection(t, "github").await;
        app.signals(vec![
            signal(&connection, "pr_opened", 2),
            signal(&connection, "pr_merged", 1),
        ])
        .await;
    }
    dispatcher(&app).0.drain(10).await.expect("drained");
    let foreign = cursor_after(&app, theirs, 1).await;

    for cursor in [foreign.as_str(), "not-a-cursor"] {
        let (status, body) = replay(
            &app,
            mine,
            &endpoint,
            json!({ "after_signal_cursor": cursor }),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "INVALID_CURSOR", "{body}");
    }
    let own = cursor_after(&app, mine, 1).await;
    let (status, body) = replay(
        &app,
        mine,
        &endpoint,
        json!({ "after_signal_cursor": own, "since": "2026-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(status, 400, "both starts at once: {body}");
    assert_eq!(body["code"], "VALIDATION_FAILED", "{body}");
}

#[tokio::test]
async fn an_operator_wide_endpoint_replays_after_a_cursor_of_any_tenant() {
    let app = app().await;
    let receiver = accepting().await;
    let t = tenant();
    let endpoint = endpoint_to(&app, None, &receiver).await;
    let connection = app.connection(t, "github").await;
    let stored = app
        .signals(vec![
            signal(&connection, "pr_opened", 3),
            signal(&connection, "pr_merged", 2),
            signal(&connection, "pr_closed", 1),
        ])
        .await;
    let (dispatcher, clock) = dispatcher(&app);
    dispatcher.drain(10).await.expect("drained");
    let cursor = cursor_after(&app, t, 2).await;

    let path = format!("/endpoints/{}/replay", endpoint["id"].as_str().expect("id"));
    let response = app
        .operator(Method::POST, &path)
        .json(&json!({ "after_signal_cursor": cursor }))
        .send()
        .await
        .expect("sent");
    let (status, body) = crate::helpers::json(response).await;

    assert_eq!(status, 202, "{body}");
    assert_eq!(body["replayed"], 1);
    clock.advance(Duration::seconds(5));
    dispatcher.drain(10).await.expect("drained");
    let all = received(&receiver).await;
    let last = all.last().expect("a replayed message").json();
    assert_eq!(last["data"]["id"], stored[2].id.to_string());
}
