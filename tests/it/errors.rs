//! Errors from the router and the edge layers have the same problem+json shape as the rest.

use reqwest::Method;

use crate::helpers::{assert_problem, tenant, TestApp};

#[tokio::test]
async fn an_unknown_route_is_a_problem_not_found() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous(Method::GET, "/no/such/route")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn a_wrong_method_is_a_problem_with_allow() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous(Method::DELETE, "/healthz")
        .send()
        .await
        .expect("sent");
    assert!(response.headers()["allow"]
        .to_str()
        .expect("ascii")
        .contains("GET"));
    assert_problem(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = TestApp::spawn_with(&[("POBLYSH_MAX_BODY_BYTES", "4096")]).await;
    for path in ["/signals", "/healthz", "/no/such/route"] {
        let response = app
            .operator(Method::POST, path)
            .header("X-Tenant-Id", tenant().to_string())
            .body(vec![b'x'; 8192])
            .send()
            .await
            .expect("sent");
        let body = assert_problem(response, 413, "PAYLOAD_TOO_LARGE").await;
        assert!(
            body["detail"].as_str().expect("detail").contains("4096"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_default_body_limit_is_one_mebibyte() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous(Method::POST, "/healthz")
        .body(vec![b'x'; 1024 * 1024 + 1])
        .send()
        .await
        .expect("sent");
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE").await;
}

#[tokio::test]
async fn a_callers_request_id_is_kept_as_the_trace_id() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous(Method::GET, "/signals")
        .header("x-request-id", "core-req-42")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["x-request-id"], "core-req-42");
    let body = assert_problem(response, 401, "UNAUTHORIZED").await;
    assert_eq!(body["trace_id"], "core-req-42");
}

#[tokio::test]
async fn successful_responses_carry_a_request_id_too() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous(Method::GET, "/healthz")
        .send()
        .await
        .expect("sent");
    let id = response.headers()["x-request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 32);
}
