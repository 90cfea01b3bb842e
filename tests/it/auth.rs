//! Operator token and tenant header rules, on every tenant-scoped route.

use reqwest::Method;

use crate::helpers::{assert_problem, tenant, TestApp, TOKEN};

/// Every tenant-scoped route, with a valid-looking id where one is needed.
const TENANT_ROUTES: &[&str] = &[
    "/connections",
    "/connections/0190f5f0-0000-7000-8000-000000000000",
    "/signals",
    "/signals/0190f5f0-0000-7000-8000-000000000000",
    "/jobs",
    "/jobs/0190f5f0-0000-7000-8000-000000000000",
];

const OPERATOR_ROUTES: &[&str] = &["/config/summary", "/config/rate-limit-policy"];

#[tokio::test]
async fn tenant_routes_without_a_token_are_unauthorized() {
    let app = TestApp::spawn().await;
    for route in TENANT_ROUTES.iter().chain(OPERATOR_ROUTES) {
        let response = app
            .anonymous(Method::GET, route)
            .header("X-Tenant-Id", tenant().to_string())
            .send()
            .await
            .expect("sent");
        assert_problem(response, 401, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn a_wrong_token_or_scheme_is_unauthorized() {
    let app = TestApp::spawn().await;
    for authorization in [
        "Bearer not-the-token-at-all-000000".to_string(),
        format!("Basic {TOKEN}"),
        TOKEN.to_string(),
        "Bearer".to_string(),
        format!("Bearer {TOKEN}x"),
    ] {
        let response = app
            .anonymous(Method::GET, "/signals")
            .header("Authorization", authorization.as_str())
            .header("X-Tenant-Id", tenant().to_string())
            .send()
            .await
            .expect("sent");
        let body = assert_problem(response, 401, "UNAUTHORIZED").await;
        assert!(
            !body.to_string().contains(TOKEN),
            "the token is never echoed"
        );
    }
}

#[tokio::test]
async fn authentication_is_checked_before_the_tenant_header() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous(Method::GET, "/signals")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn a_missing_tenant_header_is_named() {
    let app = TestApp::spawn().await;
    for route in TENANT_ROUTES {
        let response = app.operator(Method::GET, route).send().await.expect("sent");
        assert_problem(response, 400, "TENANT_HEADER_REQUIRED").await;
    }
}

#[tokio::test]
async fn a_tenant_header_that_is_not_a_uuid_is_refused() {
    let app = TestApp::spawn().await;
    for value in ["acme", "", "123", "6b1f0a52-1d2e-4c61-9d0a-2d9a1c3f5e1"] {
        for route in TENANT_ROUTES {
            let response = app
                .operator(Method::GET, route)
                .header("X-Tenant-Id", value)
                .send()
                .await
                .expect("sent");
            let body = assert_problem(response, 400, "INVALID_TENANT_ID").await;
            assert_eq!(body["details"]["X-Tenant-Id"], "must be a UUID");
        }
    }
}

#[tokio::test]
async fn every_listed_operator_token_is_accepted() {
    let app = TestApp::spawn_with(&[(
        "POBLYSH_OPERATOR_TOKENS",
        "first-operator-token-aaaaaaaa, second-operator-token-bbbbbbb",
    )])
    .await;
    for token in [
        "first-operator-token-aaaaaaaa",
        "second-operator-token-bbbbbbb",
    ] {
        let response = app
            .anonymous(Method::GET, "/signals")
            .bearer_auth(token)
            .header("X-Tenant-Id", tenant().to_string())
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{token}");
    }
    let response = app
        .anonymous(Method::GET, "/signals")
        .bearer_auth(TOKEN)
        .header("X-Tenant-Id", tenant().to_string())
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn operator_routes_need_a_token_but_no_tenant() {
    let app = TestApp::spawn().await;
    for route in OPERATOR_ROUTES {
        let response = app.operator(Method::GET, route).send().await.expect("sent");
        assert_eq!(response.status(), 200, "{route}");
    }
}

#[tokio::test]
async fn public_routes_need_no_credentials() {
    let app = TestApp::spawn().await;
    for route in [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/providers",
        "/docs/",
    ] {
        let response = app
            .anonymous(Method::GET, route)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200, "{route}");
    }
}
