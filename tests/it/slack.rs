//! The Slack connector end to end: Slack's published Events API examples (`tests/slack/`)
//! posted signed as Slack signs them to the app's Request URL (`POST /webhooks/slack`) and to a
//! tenant's URL, answered, stored, routed by workspace and normalized into signals.

use connectors::connector::signature::hmac_sha256_hex;
use connectors::crypto::Secret;
use connectors::domain::{
    now, Connection, ConnectionId, ConnectionStatus, EventStatus, NewConnection, TenantId,
};
use connectors::ingest::inbox;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{
    accepted, assert_problem, json, post_delivery, stored_event, tenant, TestApp,
};

const SECRET: &str = "slack-signing-secret-value";
/// The workspace of every published example.
const TEAM: &str = "T123ABC456";

async fn spawn() -> TestApp {
    TestApp::spawn_with(&[("POBLYSH_SLACK_WEBHOOK_SECRET", SECRET)]).await
}

/// A published example from `tests/slack/`.
fn example(name: &str) -> Value {
    let path = format!("{}/tests/slack/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("example is JSON")
}

/// An example under its own `event_id` (every published example uses `Ev123ABC456`).
fn example_as(name: &str, event_id: &str) -> Vec<u8> {
    let mut body = example(name);
    body["event_id"] = json!(event_id);
    serde_json::to_vec(&body).expect("json")
}

/// An active Slack connection of `tenant` to `team`, as the OAuth install stores it.
async fn connect(app: &TestApp, tenant: TenantId, team: &str) -> Connection {
    app.store()
        .insert_connection(&NewConnection {
            id: ConnectionId::generate(),
            tenant_id: tenant,
            provider: "slack".into(),
            external_account_id: team.into(),
            external_account_name: Some("Slack Softball Team".into()),
            status: ConnectionStatus::Active,
            scopes: vec!["channels:history".into(), "reactions:read".into()],
            token_expires_at: None,
            created_at: now(),
        })
        .await
        .expect("insert connection")
}

/// Posts `body` to `path` as Slack does, signed now; `tweak` may change the headers first.
async fn deliver(
    app: &TestApp,
    path: &str,
    body: &[u8],
    tweak: impl FnOnce(&mut Vec<(&'static str, String)>),
) -> reqwest::Response {
    let timestamp = now().timestamp().to_string();
    let signature = hmac_sha256_hex(
        &Secret::new(SECRET),
        &[b"v0:", timestamp.as_bytes(), b":", body],
    );
    let mut headers = vec![
        ("X-Slack-Request-Timestamp", timestamp),
        ("X-Slack-Signature", format!("v0={signature}")),
        ("Content-Type", "application/json".to_string()),
        (
            "User-Agent",
            "Slackbot 1.0 (+https://api.slack.com/robots)".to_string(),
        ),
    ];
    tweak(&mut headers);
    post_delivery(app, path, headers, body).await
}

async fn signals(app: &TestApp, t: TenantId) -> Vec<Value> {
    let (status, body) = app.get_json(t, "/signals?include_payload=true").await;
    assert_eq!(status, 200, "{body}");
    body["signals"].as_array().expect("signals").clone()
}

#[tokio::test]
async fn url_verification_is_answered_with_the_challenge_on_both_urls_and_nothing_is_stored() {
    let app = spawn().await;
    let body = serde_json::to_vec(&example("url_verification")).expect("json");
    for path in [
        "/webhooks/slack".to_string(),
        format!("/webhooks/slack/{}", tenant()),
    ] {
        let response = deliver(&app, &path, &body, |_| {}).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let (_, answer) = json(response).await;
        assert_eq!(
            answer,
            json!({ "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" })
        );
    }
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
}

#[tokio::test]
async fn app_rate_limited_is_acknowledged_and_not_stored() {
    let app = spawn().await;
    let body = serde_json::to_vec(&example("app_rate_limited")).expect("json");
    let response = deliver(&app, "/webhooks/slack", &body, |_| {}).await;
    assert_eq!(response.status(), 200);
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
}

#[tokio::test]
async fn bad_signatures_are_refused_with_401_and_nothing_is_stored() {
    let app = spawn().await;
    let t = tenant();
    connect(&app, t, TEAM).await;
    let body = example_as("message", "Ev-bad");
    type Tweak = Box<dyn FnOnce(&mut Vec<(&'static str, String)>)>;
    let cases = || -> Vec<(&'static str, Tweak)> {
        vec![
            (
                "signed by someone else",
                Box::new(|h| h[1].1 = format!("v0={}", "ab".repeat(32))),
            ),
            ("not hex", Box::new(|h| h[1].1 = "v0=zzzz".into())),
            (
                "wrong version",
                Box::new(|h| h[1].1 = h[1].1.replacen("v0=", "v1=", 1)),
            ),
            (
                "stale timestamp",
                Box::new(|h| h[0].1 = (now().timestamp() - 600).to_string()),
            ),
            (
                "no signature",
                Box::new(|h| h.retain(|(n, _)| *n != "X-Slack-Signature")),
            ),
            (
                "no timestamp",
                Box::new(|h| h.retain(|(n, _)| *n != "X-Slack-Request-Timestamp")),
            ),
        ]
    };
    for path in [
        "/webhooks/slack".to_string(),
        format!("/webhooks/slack/{t}"),
    ] {
        for (label, tweak) in cases() {
            let response = deliver(&app, &path, &body, tweak).await;
            let problem = assert_problem(response, 401, "INVALID_SIGNATURE").await;
            assert!(problem["detail"].is_string(), "{label} on {path}");
        }
    }
    // A timestamp, or a body, changed after signing.
    let response = deliver(&app, "/webhooks/slack", &body, |h| {
        h[0].1 = (now().timestamp() - 1).to_string();
    })
    .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    let timestamp = now().timestamp().to_string();
    let signature = hmac_sha256_hex(
        &Secret::new(SECRET),
        &[b"v0:", timestamp.as_bytes(), b":", &body],
    );
    let response = app
        .anonymous(Method::POST, "/webhooks/slack")
        .header("X-Slack-Request-Timestamp", timestamp)
        .header("X-Slack-Signature", format!("v0={signature}"))
        .body(example_as("message", "Ev-tampered"))
        .send()
        .await
        .expect("sent");
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    // A handshake is verified like any event.
    let challenge = serde_json::to_vec(&example("url_verification")).expect("json");
    let response = deliver(&app, "/webhooks/slack", &challenge, |h| {
        h[1].1 = format!("v0={}", "0".repeat(64));
    })
    .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
    assert!(signals(&app, t).await.is_empty());
}

#[tokio::test]
async fn without_a_signing_secret_nothing_is_accepted() {
    let app = TestApp::spawn().await;
    let body = example_as("message", "Ev-unconfigured");
    let response = deliver(&app, "/webhooks/slack", &body, |_| {}).await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
}

#[tokio::test]
async fn a_message_reaches_every_tenant_that_connected_its_workspace_and_no_one_else() {
    let app = spawn().await;
    let (a, b, other, bystander) = (tenant(), tenant(), tenant(), tenant());
    let connection = connect(&app, a, TEAM).await;
    connect(&app, b, TEAM).await;
    connect(&app, other, "T0OTHERTEAM").await;
    let body = example_as("message", "Ev-message-1");
    let first = accepted(deliver(&app, "/webhooks/slack", &body, |_| {}).await).await;
    assert_eq!(first["duplicate"], false);
    let stored = stored_event(&app, a, &first).await;
    assert_eq!(stored.dedupe_key, "Ev-message-1");
    assert_eq!(stored.event_type.as_deref(), Some("message"));
    assert_eq!(stored.connection_id, Some(connection.id));

    inbox::drain(&app.state).await.expect("drain");
    let found = signals(&app, a).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let signal = &found[0];
    assert_eq!(signal["provider"], "slack");
    assert_eq!(signal["kind"], "message_posted");
    assert_eq!(signal["connection_id"], connection.id.to_string());
    assert_eq!(signal["occurred_at"], "2012-12-14T20:38:43.000005Z");
    assert_eq!(signal["actor"], json!({ "id": "U123ABC456" }));
    assert_eq!(signal["title"], "Hello world");
    assert_eq!(signal["external_id"], "C123ABC456:1355517523.000005");
    assert_eq!(signal["payload"]["channel"], "C123ABC456");
    assert_eq!(signal["payload"]["text"], "Hello world");
    assert_eq!(
        signals(&app, b).await.len(),
        1,
        "the other tenant of the workspace"
    );
    assert!(signals(&app, other).await.is_empty(), "another workspace");
    assert!(signals(&app, bystander).await.is_empty());
}

#[tokio::test]
async fn a_slack_retry_of_the_same_event_is_a_duplicate() {
    let app = spawn().await;
    let t = tenant();
    connect(&app, t, TEAM).await;
    let body = example_as("message", "Ev-retried");
    let first = accepted(deliver(&app, "/webhooks/slack", &body, |_| {}).await).await;
    let retry = accepted(
        deliver(&app, "/webhooks/slack", &body, |h| {
            h.push(("X-Slack-Retry-Num", "1".into()));
            h.push(("X-Slack-Retry-Reason", "http_timeout".into()));
        })
        .await,
    )
    .await;
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["event_id"], first["event_id"]);
    inbox::drain(&app.state).await.expect("drain");
    assert_eq!(signals(&app, t).await.len(), 1);
}

#[tokio::test]
async fn every_mapped_example_becomes_its_signal_on_the_tenant_url() {
    let app = spawn().await;
    let t = tenant();
    connect(&app, t, TEAM).await;
    let path = format!("/webhooks/slack/{t}");
    let cases = [
        ("message", "message_posted"),
        ("thread_broadcast", "message_posted"),
        ("message_changed", "message_updated"),
        ("message_deleted", "message_deleted"),
        ("reaction_added", "reaction_added"),
    ];
    for (name, _) in cases {
        let body = example_as(name, &format!("Ev-{name}"));
        accepted(deliver(&app, &path, &body, |_| {}).await).await;
    }
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), cases.len());
    let mut kinds: Vec<String> = signals(&app, t)
        .await
        .iter()
        .map(|s| s["kind"].as_str().expect("kind").to_string())
        .collect();
    kinds.sort();
    let mut expected: Vec<&str> = cases.iter().map(|(_, kind)| *kind).collect();
    expected.sort();
    assert_eq!(kinds, expected);
}

#[tokio::test]
async fn an_event_of_a_workspace_no_tenant_connected_is_kept_unmatched() {
    let app = spawn().await;
    let t = tenant();
    connect(&app, t, "T0OTHERTEAM").await;
    let body = example_as("reaction_added", "Ev-nobody");
    let kept = accepted(deliver(&app, "/webhooks/slack", &body, |_| {}).await).await;
    // On a tenant's URL, the app-wide signature proves only that Slack sent it: a workspace
    // that tenant did not connect is refused, and nothing is stored for the tenant.
    let on_tenant_url = deliver(&app, &format!("/webhooks/slack/{t}"), &body, |_| {}).await;
    assert_problem(on_tenant_url, 401, "INVALID_SIGNATURE").await;
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 1);
    let nil = TenantId(uuid::Uuid::nil());
    let event = stored_event(&app, nil, &kept).await;
    assert_eq!(event.status, EventStatus::Unmatched);
    assert!(signals(&app, t).await.is_empty());
}

/// A correctly signed event whose `event_id` holds a NUL (PostgreSQL refuses it in text) or
/// another control character is a malformed delivery (`400`, `details.delivery`) on every
/// database and both URLs, and nothing is stored.
#[tokio::test]
async fn a_signed_event_id_with_a_control_character_is_refused_before_storing() {
    let app = spawn().await;
    let t = tenant();
    connect(&app, t, TEAM).await;
    for path in [
        "/webhooks/slack".to_string(),
        format!("/webhooks/slack/{t}"),
    ] {
        for event_id in ["Ev\u{0}nul", "Ev\u{1b}esc", "Ev\nnewline"] {
            let body = example_as("message", event_id);
            let response = deliver(&app, &path, &body, |_| {}).await;
            let problem = assert_problem(response, 400, "VALIDATION_FAILED").await;
            assert!(
                problem["details"]["delivery"].is_string(),
                "{event_id:?} on {path}: {problem}"
            );
        }
    }
    assert_eq!(inbox::drain(&app.state).await.expect("drain"), 0);
    assert!(signals(&app, t).await.is_empty());
}

/// The stored event keeps Slack's delivery headers but not its signature.
#[tokio::test]
async fn the_stored_event_keeps_no_signature() {
    let app = spawn().await;
    let t = tenant();
    connect(&app, t, TEAM).await;
    let body = example_as("message", "Ev-headers");
    let response = deliver(&app, &format!("/webhooks/slack/{t}"), &body, |h| {
        h.push(("X-Slack-Retry-Num", "1".into()));
    })
    .await;
    let event = stored_event(&app, t, &accepted(response).await).await;
    assert!(
        !event.headers.contains_key("x-slack-signature"),
        "{:?}",
        event.headers
    );
    assert!(event.headers.contains_key("x-slack-request-timestamp"));
    assert!(event.headers.contains_key("x-slack-retry-num"));
}
