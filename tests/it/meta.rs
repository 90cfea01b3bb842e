//! Public operational routes, configuration routes and what happens when the database goes.

use reqwest::Method;

use crate::helpers::{assert_problem, json, tenant, TestApp, TOKEN};

#[tokio::test]
async fn root_and_health_describe_the_service() {
    let app = TestApp::spawn().await;
    let (status, root) = json(app.anonymous(Method::GET, "/").send().await.expect("sent")).await;
    assert_eq!(status, 200);
    assert_eq!(root["service"], "poblysh-connectors");
    assert_eq!(root["docs"], "/docs");
    assert_eq!(root["openapi"], "/openapi.json");
    let (status, health) = json(
        app.anonymous(Method::GET, "/healthz")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn readiness_checks_the_database_and_migrations() {
    let app = TestApp::spawn().await;
    let (status, body) = json(
        app.anonymous(Method::GET, "/readyz")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["migrations"], "ok");
}

#[tokio::test]
async fn with_the_database_gone_readiness_and_reads_answer_503() {
    let app = TestApp::spawn().await;
    app.store().close().await;

    let response = app
        .anonymous(Method::GET, "/readyz")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.headers()["retry-after"], "5");
    let body = assert_problem(response, 503, "SERVICE_UNAVAILABLE").await;
    assert_eq!(body["details"]["checks"]["database"], "unreachable");
    assert_eq!(body["retry_after"], 5);

    let response = app.get(tenant(), "/signals").send().await.expect("sent");
    let body = assert_problem(response, 503, "SERVICE_UNAVAILABLE").await;
    assert!(
        !body.to_string().to_lowercase().contains("pool"),
        "no internals: {body}"
    );

    let (status, _) = json(
        app.anonymous(Method::GET, "/healthz")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "liveness does not depend on the database");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = TestApp::spawn().await;
    app.anonymous(Method::GET, "/healthz")
        .send()
        .await
        .expect("sent");
    let caller = tenant();
    app.get(caller, "/signals?limit=0")
        .send()
        .await
        .expect("sent");
    let response = app
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    let text = response.text().await.expect("text");
    assert!(
        text.contains("http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("route=\"/signals\",status=\"400\""), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    // Routes are labelled by template; no tenant id ever becomes a label value.
    assert!(
        !text.contains(&caller.to_string()),
        "no tenant ids in labels"
    );
    assert!(!text.contains("tenant_id=\""), "no tenant label");
}

#[tokio::test]
async fn metrics_can_move_to_their_own_address() {
    let app = TestApp::spawn_with(&[("POBLYSH_METRICS_BIND_ADDR", "127.0.0.1:0")]).await;
    let response = app
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = TestApp::spawn().await;
    let redirect = app
        .anonymous(Method::GET, "/docs")
        .send()
        .await
        .expect("sent");
    assert!(redirect.status().is_redirection());
    assert_eq!(redirect.headers()["location"], "/docs/");
    let response = app
        .anonymous(Method::GET, "/docs/")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let html = response.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("unpkg.com") && !html.contains("cdn."),
        "no CDN: {html}"
    );
    let config = app
        .anonymous(Method::GET, "/docs/swagger-initializer.js")
        .send()
        .await
        .expect("sent");
    assert_eq!(config.status(), 200);
    assert!(config.text().await.expect("js").contains("/openapi.json"));
    let bundle = app
        .anonymous(Method::GET, "/docs/swagger-ui-bundle.js")
        .send()
        .await
        .expect("sent");
    assert_eq!(bundle.status(), 200);
}

#[tokio::test]
async fn providers_list_every_provider_with_kinds_and_configuration_state() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_GITHUB_CLIENT_ID", "Iv1.0123456789"),
        ("POBLYSH_GITHUB_CLIENT_SECRET", "github-client-secret-value"),
    ])
    .await;
    let (status, body) = json(
        app.anonymous(Method::GET, "/providers")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    let providers = body["providers"].as_array().expect("array");
    let slugs: Vec<&str> = providers
        .iter()
        .map(|p| p["slug"].as_str().expect("slug"))
        .collect();
    assert_eq!(
        slugs,
        [
            "github",
            "slack",
            "jira",
            "google_drive",
            "google_calendar",
            "gmail",
            "zoho_cliq",
            "zoho_mail",
            "sandbox"
        ]
    );
    let github = &providers[0];
    assert_eq!(github["configured"], true);
    assert_eq!(github["auth_type"], "oauth2");
    assert!(github["kinds"]
        .as_array()
        .expect("kinds")
        .contains(&"pr_merged".into()));
    assert_eq!(
        providers[1]["configured"], false,
        "slack has no credentials"
    );
    assert_eq!(providers[8]["configured"], true, "the sandbox needs none");
    assert_eq!(providers[8]["auth_type"], "none");
}

#[tokio::test]
async fn the_sandbox_is_absent_when_disabled() {
    let app = TestApp::spawn_with(&[("POBLYSH_SANDBOX_ENABLED", "false")]).await;
    let (_, body) = json(
        app.anonymous(Method::GET, "/providers")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert!(body["providers"]
        .as_array()
        .expect("array")
        .iter()
        .all(|p| p["slug"] != "sandbox"));
    let response = app
        .get(tenant(), "/signals?provider=sandbox")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "VALIDATION_FAILED").await;
}

#[tokio::test]
async fn the_config_summary_redacts_every_secret() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_GITHUB_CLIENT_ID", "Iv1.0123456789"),
        ("POBLYSH_GITHUB_CLIENT_SECRET", "github-client-secret-value"),
        (
            "POBLYSH_GITHUB_WEBHOOK_SECRET",
            "github-webhook-secret-value",
        ),
        (
            "POBLYSH_ALLOWED_RETURN_URLS",
            "https://app.poblysh.com/connectors",
        ),
    ])
    .await;
    let response = app
        .operator(Method::GET, "/config/summary")
        .send()
        .await
        .expect("sent");
    let text = response.text().await.expect("text");
    for secret in [
        TOKEN,
        "github-client-secret-value",
        "github-webhook-secret-value",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let key = app.state.config.crypto_key.to_base64();
    assert!(!text.contains(key.as_str()), "crypto key leaked");
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["profile"], "test");
    assert_eq!(body["operator_token_count"], 1);
    assert_eq!(body["operator_token_source"], "POBLYSH_OPERATOR_TOKENS");
    assert_eq!(
        body["allowed_return_urls"][0],
        "https://app.poblysh.com/connectors"
    );
    let github = &body["providers"][0];
    assert_eq!(github["slug"], "github");
    assert_eq!(github["client_id"], "Iv1.0123456789");
    assert_eq!(github["client_secret_set"], true);
    assert_eq!(github["webhook_secret_set"], true);
    assert!(body["database"]["backend"] == "sqlite" || body["database"]["backend"] == "postgres");
}

#[tokio::test]
async fn the_rate_limit_policy_shows_defaults_and_overrides() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_SLACK_RATE_LIMIT_REQUESTS", "20"),
        ("POBLYSH_SLACK_MAX_CONCURRENCY", "1"),
    ])
    .await;
    let (status, body) = json(
        app.operator(Method::GET, "/config/rate-limit-policy")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200);
    let providers = body["providers"].as_array().expect("array");
    let github = providers
        .iter()
        .find(|p| p["slug"] == "github")
        .expect("github");
    assert_eq!(github["policy"]["requests"], 5000);
    assert_eq!(github["policy"]["window_secs"], 3600);
    let slack = providers
        .iter()
        .find(|p| p["slug"] == "slack")
        .expect("slack");
    assert_eq!(slack["policy"]["requests"], 20);
    assert_eq!(slack["policy"]["max_concurrency"], 1);
    assert_eq!(slack["policy"]["window_secs"], 60);
}
