//! `GET /bench/floor`, the benchmarks' fixed-body floor: off by default, and when a benchmark
//! turns it on, authenticated like `GET /signals` and never part of the documented API.

use reqwest::Method;

use crate::helpers::{assert_problem, tenant, TestApp};

#[tokio::test]
async fn the_floor_route_is_not_found_unless_turned_on() {
    let app = TestApp::spawn().await;
    let response = app
        .get(tenant(), "/bench/floor")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn the_floor_route_answers_exactly_the_configured_bytes_of_json() {
    let app = TestApp::spawn_with(&[("POBLYSH_BENCH_FLOOR_BYTES", "17000")]).await;
    let response = app
        .get(tenant(), "/bench/floor")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.bytes().await.expect("body");
    assert_eq!(body.len(), 17_000);
    let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert!(value["floor"].is_string(), "{}", &value.to_string()[..40]);
}

#[tokio::test]
async fn the_floor_route_asks_for_the_same_credentials_as_signals() {
    let app = TestApp::spawn_with(&[("POBLYSH_BENCH_FLOOR_BYTES", "100")]).await;
    let anonymous = app
        .anonymous(Method::GET, "/bench/floor")
        .header("X-Tenant-Id", tenant().to_string())
        .send()
        .await
        .expect("sent");
    assert_problem(anonymous, 401, "UNAUTHORIZED").await;
    let wrong_token = app
        .anonymous(Method::GET, "/bench/floor")
        .bearer_auth("not-the-operator-token")
        .header("X-Tenant-Id", tenant().to_string())
        .send()
        .await
        .expect("sent");
    assert_problem(wrong_token, 401, "UNAUTHORIZED").await;
    let no_tenant = app
        .operator(Method::GET, "/bench/floor")
        .send()
        .await
        .expect("sent");
    assert_problem(no_tenant, 400, "TENANT_HEADER_REQUIRED").await;
}

#[tokio::test]
async fn the_floor_route_is_never_documented() {
    let app = TestApp::spawn_with(&[("POBLYSH_BENCH_FLOOR_BYTES", "100")]).await;
    let served = app
        .anonymous(Method::GET, "/openapi.json")
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    assert!(served.contains("\"/signals\""), "the served document");
    assert!(!served.contains("/bench/floor"));
    assert!(!connectors::openapi::json().contains("/bench"));
}
