//! What the push tests share: a service that may deliver to a local receiver (wiremock on
//! 127.0.0.1), endpoint registration over HTTP, a dispatcher on a clock the test moves, and
//! the Standard Webhooks reference verifier (npm `standardwebhooks`) run on captured messages.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use connectors::domain::{now, TenantId};
use connectors::push::{Dispatcher, ManualClock};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{json as read_json, TestApp};

/// A service whose deliveries may reach the local receiver over plain HTTP.
pub async fn app() -> TestApp {
    app_with(&[]).await
}

/// [`app`] with extra settings.
pub async fn app_with(extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![
        ("POBLYSH_PUSH_ALLOW_HTTP", "true"),
        ("POBLYSH_PUSH_ALLOWED_ADDRESSES", "127.0.0.1"),
    ];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings).await
}

/// Registers an endpoint posting to `url` (for `tenant`, or operator-wide when `None`) and
/// returns its JSON, secret included.
pub async fn register(app: &TestApp, tenant: Option<TenantId>, body: Value) -> Value {
    let mut request = app.operator(Method::POST, "/endpoints").json(&body);
    if let Some(tenant) = tenant {
        request = request.header("X-Tenant-Id", tenant.to_string());
    }
    let (status, created) = read_json(request.send().await.expect("sent")).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// A consumer that answers every `POST` with `template`.
pub async fn answering(template: ResponseTemplate) -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&receiver)
        .await;
    receiver
}

/// Registers an endpoint for `tenant` posting to the receiver's `/hooks`.
pub async fn endpoint_to(app: &TestApp, tenant: Option<TenantId>, receiver: &MockServer) -> Value {
    register(
        app,
        tenant,
        json!({ "url": format!("{}/hooks", receiver.uri()), "include_payload": true }),
    )
    .await
}

/// A dispatcher of `app` on a clock standing at now.
pub fn dispatcher(app: &TestApp) -> (Dispatcher, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(now()));
    let dispatcher = Dispatcher::new(app.state.services.clone()).with_clock(clock.clone());
    (dispatcher, clock)
}

/// A message the receiver got.
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Received {
    /// The message's JSON body.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// Every message the receiver got, in arrival order.
pub async fn received(receiver: &MockServer) -> Vec<Received> {
    let header = |r: &wiremock::Request, name: &str| {
        r.headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} header"))
            .to_str()
            .expect("ascii")
            .to_string()
    };
    receiver
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|r| Received {
            id: header(r, "webhook-id"),
            timestamp: header(r, "webhook-timestamp"),
            signature: header(r, "webhook-signature"),
            body: String::from_utf8(r.body.clone()).expect("UTF-8 body"),
        })
        .collect()
}

/// Verifies `message` with the Standard Webhooks reference verifier and `secret`; the
/// verified payload, or the verifier's error.
pub fn verify(secret: &str, message: &Received) -> Result<Value, String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/push");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/standardwebhooks")
            .exists(),
        "the verifier is not installed: run npm ci --prefix tests/push"
    );
    let mut child = Command::new("node")
        .arg(format!("{dir}/verify.js"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let input = json!({
        "secret": secret,
        "id": message.id,
        "timestamp": message.timestamp,
        "signature": message.signature,
        "body": message.body,
    });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("written");
    let output = child.wait_with_output().expect("node finished");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("the verified payload"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// `GET path` as `tenant` (or the operator when `None`).
pub async fn get_as(app: &TestApp, tenant: Option<TenantId>, path: &str) -> (u16, Value) {
    let mut request = app.operator(Method::GET, path);
    if let Some(tenant) = tenant {
        request = request.header("X-Tenant-Id", tenant.to_string());
    }
    let (status, body) = read_json(request.send().await.expect("sent")).await;
    (status.as_u16(), body)
}
