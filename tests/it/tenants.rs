//! `DELETE /tenant` erases everything kept for one tenant, and nothing of another.

use connectors::connector::signature::hmac_sha256_hex;
use connectors::crypto::Secret;
use connectors::domain::TenantId;
use connectors::ingest::sync::SyncWorker;
use reqwest::Method;
use serde_json::{json, Value};

use crate::connect::{connect_sandbox, start};
use crate::helpers::{accepted, assert_problem, json, post_delivery, tenant, TestApp};

const SECRET: &str = "sandbox-webhook-secret-value";

/// A connected, synced tenant with a stored delivery and an unfinished connect.
async fn populate(app: &TestApp, t: TenantId) -> String {
    let connection = connect_sandbox(app, t).await;
    let id = connection["id"].as_str().expect("id").to_string();
    let queued = app
        .operator(Method::POST, &format!("/connections/{id}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(queued.status(), 202);
    SyncWorker::new().drain(&app.state).await.expect("drain");
    let body = serde_json::to_vec(&json!({
        "id": "e1", "title": "t", "occurred_at": "2026-11-20T10:00:00Z",
        "actor": { "id": "u1", "name": "Ada" }
    }))
    .expect("json");
    let timestamp = connectors::domain::now().timestamp().to_string();
    let signature = hmac_sha256_hex(&Secret::new(SECRET), &[timestamp.as_bytes(), b".", &body]);
    accepted(
        post_delivery(
            app,
            &format!("/webhooks/sandbox/{t}"),
            vec![
                ("X-Sandbox-Delivery", "d-1".to_string()),
                ("X-Sandbox-Event", "event.created".to_string()),
                ("X-Sandbox-Timestamp", timestamp),
                ("X-Sandbox-Signature", format!("v1={signature}")),
                ("Content-Type", "application/json".to_string()),
            ],
            &body,
        )
        .await,
    )
    .await;
    assert_eq!(start(app, t, "sandbox", None).await.status(), 200);
    // A push endpoint, with deliveries of the tenant's events fanned out to it.
    let endpoint = app
        .operator(Method::POST, "/endpoints")
        .header("X-Tenant-Id", t.to_string())
        .json(&json!({ "url": "https://8.8.8.8/hooks" }))
        .send()
        .await
        .expect("sent");
    assert_eq!(endpoint.status(), 201);
    app.store()
        .sequence_and_fan_out(10_000, connectors::domain::now())
        .await
        .expect("fanned out");
    id
}

async fn erase(app: &TestApp, t: TenantId) -> Value {
    let (status, body) = json(
        app.operator(Method::DELETE, "/tenant")
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn count(app: &TestApp, t: TenantId, path: &str, member: &str) -> usize {
    let (status, body) = app.get_json(t, path).await;
    assert_eq!(status, 200, "{body}");
    body[member].as_array().expect(member).len()
}

#[tokio::test]
async fn erasing_a_tenant_removes_all_it_kept_and_reports_it_leaving_others_whole() {
    let app = TestApp::spawn_with(&[("POBLYSH_SANDBOX_WEBHOOK_SECRET", SECRET)]).await;
    let (a, b) = (tenant(), tenant());
    populate(&app, a).await;
    let kept = populate(&app, b).await;
    let signals_of_b = count(&app, b, "/signals", "signals").await;
    assert!(signals_of_b > 0, "the sync yields signals");
    let (_, endpoints_of_b) = app.get_json(b, "/endpoints").await;
    let endpoint_of_b = endpoints_of_b["endpoints"][0]["id"]
        .as_str()
        .expect("b's endpoint")
        .to_string();
    let deliveries_of_b = format!("/endpoints/{endpoint_of_b}/deliveries?limit=100");
    let sent_to_b = count(&app, b, &deliveries_of_b, "deliveries").await;
    assert!(sent_to_b > 0, "b's events were fanned out");

    let erased = erase(&app, a).await;
    assert_eq!(erased["connections"], 1, "{erased}");
    assert_eq!(erased["subscriptions"], 1, "{erased}");
    assert_eq!(erased["webhook_events"], 1, "{erased}");
    assert!(erased["signals"].as_u64().expect("signals") >= signals_of_b as u64 - 1);
    assert!(
        erased["jobs"].as_u64().expect("jobs") >= 2,
        "the sync and the subscription's"
    );
    assert_eq!(
        erased["oauth_states"], 2,
        "the connect used up and the one never finished"
    );
    assert_eq!(erased["push_endpoints"], 1, "{erased}");
    assert!(erased["push_events"].as_u64().expect("events") > signals_of_b as u64 - 1);
    assert_eq!(
        erased["push_deliveries"], erased["push_events"],
        "each of its events was fanned out to its endpoint: {erased}"
    );
    for (path, member) in [
        ("/connections", "connections"),
        ("/signals", "signals"),
        ("/jobs", "jobs"),
    ] {
        assert_eq!(count(&app, a, path, member).await, 0, "{path}");
    }
    // Nothing of the other tenant went with it.
    assert_eq!(count(&app, b, "/signals", "signals").await, signals_of_b);
    let (status, connection) = app.get_json(b, &format!("/connections/{kept}")).await;
    assert_eq!(status, 200);
    assert_eq!(connection["status"], "active");
    assert_eq!(count(&app, b, "/endpoints", "endpoints").await, 1);
    assert_eq!(
        count(&app, b, &deliveries_of_b, "deliveries").await,
        sent_to_b
    );
    assert_eq!(count(&app, a, "/endpoints", "endpoints").await, 0);

    // Once more: nothing left to remove.
    let again = erase(&app, a).await;
    assert_eq!(
        again,
        json!({ "connections": 0, "subscriptions": 0, "signals": 0, "jobs": 0,
                "webhook_events": 0, "oauth_states": 0, "push_endpoints": 0,
                "push_deliveries": 0, "push_events": 0 })
    );
    // The tenant is named as everywhere else.
    assert_problem(
        app.operator(Method::DELETE, "/tenant")
            .send()
            .await
            .expect("sent"),
        400,
        "TENANT_HEADER_REQUIRED",
    )
    .await;
    assert_problem(
        app.anonymous(Method::DELETE, "/tenant")
            .header("X-Tenant-Id", a.to_string())
            .send()
            .await
            .expect("sent"),
        401,
        "UNAUTHORIZED",
    )
    .await;
}
