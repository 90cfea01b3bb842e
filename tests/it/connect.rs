//! The connect journey: start, the provider's redirect, the callback, reconnect, disconnect,
//! and every way a callback can be wrong. The sandbox plays the provider end to end; GitHub
//! runs against a wiremock server that answers as GitHub documents.

use reqwest::Method;
use serde_json::{json, Value};
use url::Url;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{assert_problem, json, tenant, TestApp};
use connectors::domain::{JobType, TenantId};
use connectors::ingest::sync::{JobResult, SyncWorker};

/// `POST /connect/{provider}` for `tenant` with an optional JSON body.
pub async fn start(
    app: &TestApp,
    t: TenantId,
    provider: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app
        .operator(Method::POST, &format!("/connect/{provider}"))
        .header("X-Tenant-Id", t.to_string());
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("sent")
}

/// Starts a connection and returns the authorize URL.
pub async fn authorize_url(app: &TestApp, t: TenantId, provider: &str, body: Option<Value>) -> Url {
    let (status, started) = json(start(app, t, provider, body).await).await;
    assert_eq!(status, 200, "{started}");
    assert!(started["state_expires_at"].is_string());
    app.through_hop(started["authorize_url"].as_str().expect("authorize_url"))
        .await
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Follows the sandbox's authorize page to the redirect it answers with.
pub async fn sandbox_redirect(app: &TestApp, t: TenantId, body: Option<Value>) -> Url {
    let authorize = authorize_url(app, t, "sandbox", body).await;
    let response = app.client.get(authorize).send().await.expect("sent");
    assert_eq!(response.status(), 303);
    Url::parse(response.headers()["location"].to_str().expect("ascii")).expect("location")
}

/// Runs the whole sandbox journey and returns the connection JSON, once its subscription is
/// open (the job a worker would run right after connecting, run here).
pub async fn connect_sandbox(app: &TestApp, t: TenantId) -> Value {
    let callback = sandbox_redirect(app, t, None).await;
    let (status, body) = json(app.client.get(callback).send().await.expect("sent")).await;
    assert_eq!(status, 200, "{body}");
    let connection = body["connection"].clone();
    let path = format!("/connections/{}", connection["id"].as_str().expect("id"));
    let worker = SyncWorker::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, detail) = app.get_json(t, &path).await;
        if detail["subscriptions"][0]["status"] == "active" {
            return connection;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never opened: {detail}"
        );
        // A background worker, where the test runs them, may be the one to open it.
        if let Some(ran) = worker.run_once(&app.state).await.expect("the worker runs") {
            assert_eq!(
                (ran.job_type, &ran.result),
                (JobType::Subscription, &JobResult::Succeeded),
                "only the subscription job is queued right after connecting"
            );
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn the_sandbox_journey_creates_an_active_connection_without_tokens_in_sight() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let callback = sandbox_redirect(&app, t, None).await;
    assert_eq!(callback.path(), "/connect/sandbox/callback");
    assert!(param(&callback, "code").is_some() && param(&callback, "state").is_some());

    let response = app.client.get(callback).send().await.expect("sent");
    let text = response.text().await.expect("text");
    let body: Value = serde_json::from_str(&text).expect("json");
    let connection = &body["connection"];
    assert_eq!(connection["provider"], "sandbox");
    assert_eq!(connection["status"], "active");
    assert_eq!(connection["external_account"]["id"], "sandbox-user");
    assert_eq!(connection["scopes"], json!(["sandbox.read"]));
    assert!(connection["token_expires_at"].is_string());
    assert!(
        !text.contains("sandbox-access") && !text.contains("sandbox-refresh"),
        "{text}"
    );

    let (_, list) = app.get_json(t, "/connections").await;
    assert_eq!(list["connections"][0]["id"], connection["id"]);
    assert!(!list.to_string().contains("sandbox-access"));
}

#[tokio::test]
async fn reconnecting_the_same_account_updates_the_connection_instead_of_duplicating_it() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let first = connect_sandbox(&app, t).await;
    let second = connect_sandbox(&app, t).await;
    assert_eq!(first["id"], second["id"]);
    let (_, list) = app.get_json(t, "/connections").await;
    assert_eq!(list["connections"].as_array().expect("array").len(), 1);
    // Another tenant connecting the same account gets a connection of its own.
    let other = connect_sandbox(&app, tenant()).await;
    assert_ne!(other["id"], first["id"]);
}

#[tokio::test]
async fn a_state_works_once() {
    let app = TestApp::spawn().await;
    let callback = sandbox_redirect(&app, tenant(), None).await;
    let first = app.client.get(callback.clone()).send().await.expect("sent");
    assert_eq!(first.status(), 200);
    let again = app.client.get(callback).send().await.expect("sent");
    let body = assert_problem(again, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(body["details"]["reason"], "already_used");
}

#[tokio::test]
async fn forged_expired_and_cross_provider_states_are_refused() {
    let app = TestApp::spawn().await;
    let response = app
        .anonymous(
            Method::GET,
            "/connect/sandbox/callback?code=x&state=forged-state-value",
        )
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(body["details"]["reason"], "unknown");

    // A state minted for the sandbox, presented at GitHub's callback, is used up and refused.
    let callback = sandbox_redirect(&app, tenant(), None).await;
    let mut crossed = callback.clone();
    crossed.set_path("/connect/github/callback");
    let response = app.client.get(crossed).send().await.expect("sent");
    let body = assert_problem(response, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(body["details"]["reason"], "provider_mismatch");
    let response = app.client.get(callback).send().await.expect("sent");
    let body = assert_problem(response, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(body["details"]["reason"], "already_used");

    // An expired state.
    let state = connectors::connector::pkce::new_state();
    let past = connectors::domain::now() - chrono::Duration::minutes(1);
    app.store()
        .insert_oauth_state(&connectors::domain::NewOAuthState {
            state_hash: connectors::connector::pkce::state_hash(state.expose()),
            tenant_id: tenant(),
            provider: "sandbox".into(),
            pkce_verifier_sealed: None,
            scopes: vec![],
            redirect_uri: format!("{}/connect/sandbox/callback", app.base),
            return_to: None,
            created_at: past - chrono::Duration::minutes(10),
            expires_at: past,
        })
        .await
        .expect("insert state");
    let response = app
        .anonymous(
            Method::GET,
            &format!("/connect/sandbox/callback?code=x&state={}", state.expose()),
        )
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(body["details"]["reason"], "expired");
    let (_, list) = app.get_json(tenant(), "/connections").await;
    assert_eq!(list["connections"], json!([]));
}

#[tokio::test]
async fn a_denied_authorization_or_a_missing_code_stores_nothing() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let callback = sandbox_redirect(&app, t, None).await;
    let state = param(&callback, "state").expect("state");
    let response = app
        .anonymous(
            Method::GET,
            &format!("/connect/sandbox/callback?error=access_denied&error_description=nope&state={state}"),
        )
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "OAUTH_DENIED").await;
    assert_eq!(body["details"]["provider_error"], "access_denied");

    let callback = sandbox_redirect(&app, t, None).await;
    let state = param(&callback, "state").expect("state");
    let response = app
        .anonymous(
            Method::GET,
            &format!("/connect/sandbox/callback?state={state}"),
        )
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "VALIDATION_FAILED").await;
    assert!(body["details"]["code"].is_string());
    let response = app
        .anonymous(Method::GET, "/connect/sandbox/callback?code=abc")
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "VALIDATION_FAILED").await;
    assert!(body["details"]["state"].is_string());
    let (_, list) = app.get_json(t, "/connections").await;
    assert_eq!(list["connections"], json!([]));
}

#[tokio::test]
async fn with_a_return_to_the_callback_sends_the_user_back_with_the_outcome() {
    let app = TestApp::spawn_with(&[(
        "POBLYSH_ALLOWED_RETURN_URLS",
        "https://app.poblysh.com/connectors",
    )])
    .await;
    let t = tenant();
    let body = json!({ "return_to": "https://app.poblysh.com/connectors/done?tab=github" });
    let callback = sandbox_redirect(&app, t, Some(body.clone())).await;
    let response = app.client.get(callback.clone()).send().await.expect("sent");
    assert_eq!(response.status(), 303);
    let back = Url::parse(response.headers()["location"].to_str().expect("ascii")).expect("url");
    assert_eq!(back.path(), "/connectors/done");
    assert_eq!(param(&back, "tab").as_deref(), Some("github"));
    assert_eq!(param(&back, "status").as_deref(), Some("connected"));
    let id = param(&back, "connection_id").expect("connection_id");
    let (status, _) = app.get_json(t, &format!("/connections/{id}")).await;
    assert_eq!(status, 200);

    let again = app.client.get(callback).send().await.expect("sent");
    assert_eq!(again.status(), 303);
    let back = Url::parse(again.headers()["location"].to_str().expect("ascii")).expect("url");
    assert_eq!(param(&back, "status").as_deref(), Some("error"));
    assert_eq!(param(&back, "code").as_deref(), Some("OAUTH_STATE_INVALID"));
}

/// Where the `Location` of a `303` points.
fn location(response: &reqwest::Response) -> Url {
    assert_eq!(response.status(), 303, "a redirect");
    Url::parse(response.headers()["location"].to_str().expect("ascii")).expect("location")
}

#[tokio::test]
async fn a_state_that_names_no_connect_sends_the_browser_to_the_configured_fallback() {
    let fallback = "https://app.poblysh.com/connectors/failed?from=connectors";
    let app = TestApp::spawn_with(&[
        (
            "POBLYSH_ALLOWED_RETURN_URLS",
            "https://app.poblysh.com/connectors",
        ),
        ("POBLYSH_CONNECT_FALLBACK_RETURN_URL", fallback),
    ])
    .await;
    let get = |path: String| app.anonymous(Method::GET, &path).send();
    // Unknown at the callback and at the authorize hop, or missing: the browser goes to the
    // fallback with the code, keeping the fallback's own query.
    for (path, code) in [
        (
            "/connect/sandbox/callback?code=x&state=forged-state-value".to_string(),
            "OAUTH_STATE_INVALID",
        ),
        (
            "/connect/sandbox/authorize?state=forged-state-value".to_string(),
            "OAUTH_STATE_INVALID",
        ),
        (
            "/connect/sandbox/callback?code=x".to_string(),
            "VALIDATION_FAILED",
        ),
        (
            "/connect/myspace/callback?code=x&state=forged".to_string(),
            "PROVIDER_NOT_FOUND",
        ),
    ] {
        let response = get(path.clone()).await.expect("sent");
        let back = location(&response);
        assert_eq!(
            (back.origin(), back.path()),
            (
                Url::parse(fallback).expect("url").origin(),
                "/connectors/failed"
            ),
            "{path}"
        );
        assert_eq!(
            param(&back, "from").as_deref(),
            Some("connectors"),
            "{path}"
        );
        assert_eq!(param(&back, "status").as_deref(), Some("error"), "{path}");
        assert_eq!(param(&back, "code").as_deref(), Some(code), "{path}");
    }

    // Core forwarding a callback (with its binding) is answered, never redirected.
    let response = get("/connect/sandbox/callback?code=x&state=forged&binding=b".into())
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(body["details"]["reason"], "unknown");

    // A connect that is known keeps its own answer: JSON without a return_to...
    let callback = sandbox_redirect(&app, tenant(), None).await;
    let first = app.client.get(callback.clone()).send().await.expect("sent");
    assert_eq!(first.status(), 200);
    let again = app.client.get(callback).send().await.expect("sent");
    let body = assert_problem(again, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(body["details"]["reason"], "already_used");
    // ...and its return_to with one.
    let body = json!({ "return_to": "https://app.poblysh.com/connectors/done" });
    let callback = sandbox_redirect(&app, tenant(), Some(body)).await;
    let response = app.client.get(callback).send().await.expect("sent");
    let back = location(&response);
    assert_eq!(back.path(), "/connectors/done");
    assert_eq!(param(&back, "status").as_deref(), Some("connected"));
}

#[tokio::test]
async fn without_a_fallback_a_state_that_names_no_connect_is_a_problem_body() {
    let app = TestApp::spawn_with(&[(
        "POBLYSH_ALLOWED_RETURN_URLS",
        "https://app.poblysh.com/connectors",
    )])
    .await;
    let response = app
        .anonymous(
            Method::GET,
            "/connect/sandbox/authorize?state=forged-state-value",
        )
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 400, "OAUTH_STATE_INVALID").await;
    assert_eq!(body["details"]["reason"], "unknown");
}

/// A NUL (PostgreSQL refuses it in text) or any other control character in what Core asks
/// for is a `400` naming the field, on every database, never a `500`.
#[tokio::test]
async fn start_refuses_control_characters_by_field() {
    let app = TestApp::spawn_with(&[(
        "POBLYSH_ALLOWED_RETURN_URLS",
        "https://app.poblysh.com/connectors",
    )])
    .await;
    let t = tenant();
    for (body, field) in [
        (json!({ "scopes": ["sandbox.read\u{0}"] }), "scopes"),
        (json!({ "scopes": ["sandbox\u{1b}read"] }), "scopes"),
        (
            json!({ "return_to": "https://app.poblysh.com/connectors\u{0}" }),
            "return_to",
        ),
        (
            json!({ "redirect_uri": "https://core.poblysh.com/cb\u{0}" }),
            "redirect_uri",
        ),
    ] {
        let response = start(&app, t, "sandbox", Some(body.clone())).await;
        let problem = assert_problem(response, 400, "VALIDATION_FAILED").await;
        assert_eq!(
            problem["details"][field], "must not contain control characters",
            "{body}: {problem}"
        );
    }
}

#[tokio::test]
async fn start_refuses_foreign_return_urls_redirect_uris_and_bad_bodies() {
    let app = TestApp::spawn_with(&[(
        "POBLYSH_ALLOWED_RETURN_URLS",
        "https://app.poblysh.com/connectors",
    )])
    .await;
    let t = tenant();
    for (body, field) in [
        (
            json!({ "return_to": "https://evil.example.com/connectors" }),
            "return_to",
        ),
        (
            json!({ "return_to": "https://app.poblysh.com/admin" }),
            "return_to",
        ),
        (
            json!({ "redirect_uri": "https://core.poblysh.com/oauth/callback" }),
            "redirect_uri",
        ),
        (json!({ "scopes": ["has space"] }), "scopes"),
        (json!({ "unexpected": true }), "body"),
        (json!(["not", "an", "object"]), "body"),
    ] {
        let response = start(&app, t, "sandbox", Some(body.clone())).await;
        let problem = assert_problem(response, 400, "VALIDATION_FAILED").await;
        assert!(problem["details"][field].is_string(), "{body}: {problem}");
    }
    let response = start(&app, t, "myspace", None).await;
    assert_problem(response, 404, "PROVIDER_NOT_FOUND").await;
    let response = start(&app, t, "slack", None).await;
    assert_problem(response, 409, "PROVIDER_NOT_CONFIGURED").await;
    let response = app
        .anonymous(Method::POST, "/connect/sandbox")
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

async fn github_app(mock: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let uri = mock.uri();
    let mut settings = vec![
        ("POBLYSH_GITHUB_CLIENT_ID", "Iv1.test-client"),
        ("POBLYSH_GITHUB_CLIENT_SECRET", "github-test-secret-value"),
        ("POBLYSH_GITHUB_AUTH_BASE_URL", uri.as_str()),
        ("POBLYSH_GITHUB_API_BASE_URL", uri.as_str()),
    ];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings).await
}

/// GitHub's `GET /user` answer (shape from the REST docs, trimmed).
fn github_user() -> Value {
    json!({ "login": "octocat", "id": 583231, "node_id": "MDQ6VXNlcjU4MzIzMQ==", "type": "User", "site_admin": false, "name": "The Octocat" })
}

#[tokio::test]
async fn github_connects_with_pkce_and_the_callback_exchanges_the_code() {
    let mock = MockServer::start().await;
    let app = github_app(&mock, &[]).await;
    let t = tenant();
    let authorize = authorize_url(&app, t, "github", None).await;
    assert_eq!(authorize.path(), "/login/oauth/authorize");
    assert_eq!(
        param(&authorize, "client_id").as_deref(),
        Some("Iv1.test-client")
    );
    assert_eq!(
        param(&authorize, "scope").as_deref(),
        Some("repo read:org read:user")
    );
    assert_eq!(
        param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let redirect_uri = param(&authorize, "redirect_uri").expect("redirect_uri");
    assert_eq!(
        redirect_uri,
        format!("{}/connect/github/callback", app.base)
    );
    let state = param(&authorize, "state").expect("state");
    assert!(state.len() >= 43, "256-bit state");
    let challenge = param(&authorize, "code_challenge").expect("challenge");

    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .and(header("accept", "application/json"))
        .and(body_string_contains("grant_type=authorization_code"))
        .and(body_string_contains("code=gh-code-123"))
        .and(body_string_contains(
            "client_secret=github-test-secret-value",
        ))
        .and(body_string_contains("code_verifier="))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "gho_16C7e42F292c6912E7710c838347Ae178B4a",
            "scope": "repo,read:org,read:user",
            "token_type": "bearer"
        })))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/user"))
        .and(header(
            "authorization",
            "Bearer gho_16C7e42F292c6912E7710c838347Ae178B4a",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(github_user()))
        .expect(1)
        .mount(&mock)
        .await;

    let response = app
        .anonymous(
            Method::GET,
            &format!("/connect/github/callback?code=gh-code-123&state={state}"),
        )
        .send()
        .await
        .expect("sent");
    let (status, body) = json(response).await;
    assert_eq!(status, 200, "{body}");
    let connection = &body["connection"];
    assert_eq!(connection["external_account"]["id"], "583231");
    assert_eq!(connection["external_account"]["display_name"], "octocat");
    assert_eq!(
        connection["scopes"],
        json!(["repo", "read:org", "read:user"])
    );
    assert_eq!(
        connection["token_expires_at"],
        Value::Null,
        "classic tokens do not expire"
    );

    // The verifier sent at exchange is the one behind the challenge of the authorize URL.
    let requests = mock.received_requests().await.expect("recorded");
    let exchange = requests
        .iter()
        .find(|r| r.url.path() == "/login/oauth/access_token")
        .expect("exchange");
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&exchange.body)
        .into_owned()
        .collect();
    let verifier = form
        .iter()
        .find(|(k, _)| k == "code_verifier")
        .expect("verifier")
        .1
        .clone();
    assert_eq!(
        connectors::connector::pkce::challenge(&connectors::crypto::Secret::new(verifier)),
        challenge
    );
    let sent_redirect = form
        .iter()
        .find(|(k, _)| k == "redirect_uri")
        .expect("redirect_uri")
        .1
        .clone();
    assert_eq!(sent_redirect, redirect_uri);
}

#[tokio::test]
async fn a_github_error_in_a_200_or_a_broken_token_endpoint_is_a_provider_error_and_stores_nothing()
{
    let mock = MockServer::start().await;
    let app = github_app(&mock, &[]).await;
    let t = tenant();
    for (template, label) in [
        (
            ResponseTemplate::new(200).set_body_json(json!({
                "error": "bad_verification_code",
                "error_description": "The code passed is incorrect or expired.",
                "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code"
            })),
            "bad_verification_code",
        ),
        (ResponseTemplate::new(200).set_body_string("<html>maintenance</html>").insert_header("content-type", "text/html"), "html"),
        (ResponseTemplate::new(503), "503"),
        (ResponseTemplate::new(200).set_body_json(json!({ "token_type": "bearer" })), "no token"),
    ] {
        mock.reset().await;
        Mock::given(method("POST")).and(path("/login/oauth/access_token")).respond_with(template).mount(&mock).await;
        let authorize = authorize_url(&app, t, "github", None).await;
        let state = param(&authorize, "state").expect("state");
        let callback = format!("/connect/github/callback?code=stale&state={state}");
        let response = app.anonymous(Method::GET, &callback).send().await.expect("sent");
        let body = assert_problem(response, 502, "PROVIDER_ERROR").await;
        assert_eq!(body["details"]["provider"], "github", "{label}");
        // The state is consumed even though the exchange failed.
        let response = app.anonymous(Method::GET, &callback).send().await.expect("sent");
        let body = assert_problem(response, 400, "OAUTH_STATE_INVALID").await;
        assert_eq!(body["details"]["reason"], "already_used", "{label}");
    }
    let (_, list) = app.get_json(t, "/connections").await;
    assert_eq!(list["connections"], json!([]));
}

#[tokio::test]
async fn core_may_receive_the_redirect_itself_with_an_allow_listed_redirect_uri() {
    let mock = MockServer::start().await;
    let app = github_app(
        &mock,
        &[(
            "POBLYSH_ALLOWED_REDIRECT_URIS",
            "https://core.poblysh.com/oauth/github",
        )],
    )
    .await;
    let t = tenant();
    let (status, started) = json(
        start(
            &app,
            t,
            "github",
            Some(json!({ "redirect_uri": "https://core.poblysh.com/oauth/github" })),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{started}");
    // No hop through the service: Core's session is what binds this connect to the browser.
    let authorize = Url::parse(started["authorize_url"].as_str().expect("url")).expect("url");
    assert_eq!(authorize.path(), "/login/oauth/authorize");
    let binding = started["binding"]
        .as_str()
        .expect("a binding for Core's session");
    assert_eq!(
        param(&authorize, "redirect_uri").as_deref(),
        Some("https://core.poblysh.com/oauth/github")
    );
    let state = param(&authorize, "state").expect("state");
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .and(body_string_contains(
            "redirect_uri=https%3A%2F%2Fcore.poblysh.com%2Foauth%2Fgithub",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "access_token": "gho_core", "token_type": "bearer", "scope": "repo" }),
        ))
        .expect(1)
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/user"))
        .respond_with(ResponseTemplate::new(200).set_body_json(github_user()))
        .mount(&mock)
        .await;
    // Core forwards code and state to our callback.
    let response = app
        .anonymous(
            Method::GET,
            &format!("/connect/github/callback?code=forwarded&state={state}&binding={binding}"),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn disconnecting_revokes_at_github_erases_tokens_and_keeps_or_purges_history() {
    let mock = MockServer::start().await;
    let app = github_app(&mock, &[]).await;
    let t = tenant();
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "access_token": "gho_revoke_me", "token_type": "bearer", "scope": "repo" }),
        ))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/user"))
        .respond_with(ResponseTemplate::new(200).set_body_json(github_user()))
        .mount(&mock)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/applications/Iv1.test-client/grant"))
        .and(body_string_contains("gho_revoke_me"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&mock)
        .await;
    let authorize = authorize_url(&app, t, "github", None).await;
    let state = param(&authorize, "state").expect("state");
    let (_, body) = json(
        app.anonymous(
            Method::GET,
            &format!("/connect/github/callback?code=c&state={state}"),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    let id = body["connection"]["id"].as_str().expect("id").to_string();
    let conn = app
        .store()
        .get_connection(t, id.parse().expect("uuid"))
        .await
        .expect("get")
        .expect("exists");
    app.signals(vec![crate::helpers::signal(&conn, "pr_opened", 1)])
        .await;

    // Another tenant cannot disconnect it.
    let response = app
        .operator(Method::DELETE, &format!("/connections/{id}"))
        .header("X-Tenant-Id", tenant().to_string())
        .send()
        .await
        .expect("sent");
    assert_problem(response, 404, "CONNECTION_NOT_FOUND").await;

    let response = app
        .operator(Method::DELETE, &format!("/connections/{id}"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    let (status, revoked) = json(response).await;
    assert_eq!(status, 200);
    assert_eq!(revoked["status"], "revoked");
    let tokens = app
        .store()
        .connection_tokens(t, conn.id)
        .await
        .expect("tokens")
        .expect("row");
    assert_eq!(
        tokens,
        connectors::domain::SealedTokens::default(),
        "tokens erased"
    );
    let (_, signals) = app.get_json(t, "/signals").await;
    assert_eq!(
        signals["signals"].as_array().expect("array").len(),
        1,
        "history kept"
    );

    let response = app
        .operator(Method::DELETE, &format!("/connections/{id}?purge=true"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 204);
    let (_, signals) = app.get_json(t, "/signals").await;
    assert_eq!(signals["signals"], json!([]));
    let (status, _) = app.get_json(t, &format!("/connections/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_token_endpoint_that_times_out_is_a_provider_error() {
    let mock = MockServer::start().await;
    let app = github_app(&mock, &[("POBLYSH_PROVIDER_TIMEOUT_SECS", "1")]).await;
    let t = tenant();
    Mock::given(method("POST"))
        .and(path("/login/oauth/access_token"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(3)))
        .mount(&mock)
        .await;
    let authorize = authorize_url(&app, t, "github", None).await;
    let state = param(&authorize, "state").expect("state");
    let response = app
        .anonymous(
            Method::GET,
            &format!("/connect/github/callback?code=slow&state={state}"),
        )
        .send()
        .await
        .expect("sent");
    let body = assert_problem(response, 502, "PROVIDER_ERROR").await;
    assert!(
        body["details"]["provider_error"]
            .as_str()
            .expect("text")
            .contains("timed out"),
        "{body}"
    );
    let (_, list) = app.get_json(t, "/connections").await;
    assert_eq!(list["connections"], json!([]));
}
