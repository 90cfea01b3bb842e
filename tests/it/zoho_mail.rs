//! Zoho Mail end to end against a fake Zoho answering with Zoho's published examples
//! (`tests/zoho/`): connect from the EU data centre through the Multi-DC callback, sync the
//! Inbox and Sent over several pages with a throttle in the middle, every message once, and
//! disconnect revoking at the connection's accounts server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use connectors::domain::{now, ConnectionId, Signal, TenantId};
use connectors::ingest::sync::{JobResult, SyncWorker};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{assert_problem, json, tenant, TestApp};

const ACCOUNT: &str = "6000000000293";
const INBOX: &str = "9999000000305";
const SENT: &str = "9999000000311";
const REFRESH: &str = "1000.18e983526f0ca8575ea9c53b0cd5bb58.1bd83a6f2e22c3a7e1309d96ae439cc1";

/// A published example from `tests/zoho/`.
pub fn example(name: &str) -> Value {
    let path = format!("{}/tests/zoho/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("example is JSON")
}

async fn spawn(mock: &MockServer) -> TestApp {
    let uri = mock.uri();
    TestApp::spawn_with(&[
        (
            "POBLYSH_ZOHO_MAIL_CLIENT_ID",
            "1000.GMB0YULZHJK411248S8I5GZ4CHUEX0",
        ),
        (
            "POBLYSH_ZOHO_MAIL_CLIENT_SECRET",
            "zoho-mail-test-secret-value",
        ),
        ("POBLYSH_ZOHO_MAIL_AUTH_BASE_URL", uri.as_str()),
        ("POBLYSH_ZOHO_MAIL_API_BASE_URL", uri.as_str()),
        // The test reads pages back to back; the descriptor's pacing is checked on its own.
        ("POBLYSH_ZOHO_MAIL_RATE_LIMIT_BURST", "100"),
        ("POBLYSH_ZOHO_MAIL_RATE_LIMIT_REQUESTS", "1000"),
    ])
    .await
}

/// Starts a connect for `slug` and returns the state of its authorize URL.
pub async fn start(app: &TestApp, slug: &str, t: TenantId) -> String {
    let authorize = crate::connect::authorize_url(app, t, slug, None).await;
    authorize
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state")
}

/// The callback path as Zoho redirects with Multi-DC on.
pub fn callback(slug: &str, state: &str, location: &str, accounts: &str) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "code",
            "1000.86a03ca5dbfccb7445b1889b8215efb0.cad9e1ae4989a1196fe05aa729fcb4e1",
        )
        .append_pair("state", state)
        .append_pair("location", location)
        .append_pair("accounts-server", accounts)
        .finish();
    format!("/connect/{slug}/callback?{query}")
}

async fn mount_connect(mock: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("token_eu")))
        .mount(mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/accounts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("mail_accounts")))
        .mount(mock)
        .await;
}

/// Connects through the Multi-DC callback and returns the connection id and its view.
async fn connect(app: &TestApp, mock: &MockServer, t: TenantId) -> (ConnectionId, Value) {
    mount_connect(mock).await;
    let state = start(app, "zoho_mail", t).await;
    let (status, body) = json(
        app.anonymous(
            Method::GET,
            &callback("zoho_mail", &state, "eu", &mock.uri()),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body["connection"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    (id, body["connection"].clone())
}

/// A message as Zoho lists it: the published example with its own id, time and headers.
fn message(folder: &str, id: u64, at: i64, subject: &str) -> Value {
    let mut m = example("mail_message");
    m["messageId"] = json!(id.to_string());
    m["folderId"] = json!(folder);
    m["receivedTime"] = json!(at.to_string());
    m["sentDateInGMT"] = json!((at - 1000).to_string());
    m["subject"] = json!(subject);
    m["toAddress"] = json!("&lt;michael.jackson@vtv.com&gt;");
    if let Some(o) = m.as_object_mut() {
        o.remove("receivedtime");
    }
    m
}

/// The fake mailbox: each folder newest first, paged by `start` and `limit` as Zoho does,
/// throttling the listing calls whose numbers are in `throttle_at`.
type Folders = Vec<(String, Vec<Value>)>;

#[derive(Clone)]
struct Mailbox {
    folders: Arc<Mutex<Folders>>,
    calls: Arc<AtomicUsize>,
    throttle_at: Arc<Mutex<Vec<usize>>>,
}

impl Mailbox {
    fn add(&self, folder: &str, m: Value) {
        let mut folders = self.folders.lock().expect("lock");
        if let Some((_, list)) = folders.iter_mut().find(|(f, _)| f == folder) {
            list.push(m);
            list.sort_by_key(|m| {
                std::cmp::Reverse(
                    m["receivedTime"]
                        .as_str()
                        .unwrap_or("0")
                        .parse::<i64>()
                        .unwrap_or(0),
                )
            });
        }
    }
}

impl Respond for Mailbox {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.throttle_at.lock().expect("lock").contains(&call) {
            return ResponseTemplate::new(429)
                .insert_header("Retry-After", "120")
                .set_body_json(
                    json!({"status": {"code": 429, "description": "Too many requests"}}),
                );
        }
        let q = |name: &str| {
            request
                .url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(q("sortorder").as_deref(), Some("false"), "newest first");
        let folder = q("folderId").unwrap_or_default();
        let start: usize = q("start").and_then(|s| s.parse().ok()).unwrap_or(1);
        let limit: usize = q("limit").and_then(|s| s.parse().ok()).unwrap_or(10);
        assert!((1..=200).contains(&limit), "Zoho allows 1 to 200");
        let folders = self.folders.lock().expect("lock");
        let list = folders
            .iter()
            .find(|(f, _)| *f == folder)
            .map(|(_, l)| l.clone())
            .unwrap_or_default();
        let page: Vec<Value> = list.into_iter().skip(start - 1).take(limit).collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "status": {"code": 200, "description": "success"},
            "data": page
        }))
    }
}

async fn signals_of(app: &TestApp, t: TenantId) -> Vec<Signal> {
    app.stored_signals(t).await
}

/// Makes every queued job due now (a retry waits for Zoho's lock period otherwise).
pub async fn make_jobs_due(app: &TestApp) {
    app.execute_sql(
        "UPDATE sync_jobs SET scheduled_at = 0 WHERE status = 'queued'",
        "UPDATE sync_jobs SET scheduled_at = now() - interval '1 second' WHERE status = 'queued'",
    )
    .await;
}

pub async fn request_sync(app: &TestApp, t: TenantId, id: ConnectionId) {
    let response = app
        .operator(Method::POST, &format!("/connections/{id}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_mailbox_in_the_eu_connects_syncs_through_a_throttle_and_disconnects_at_its_dc() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let t = tenant();
    let (id, view) = connect(&app, &mock, t).await;
    assert_eq!(view["external_account"]["id"], ACCOUNT);
    let details = &view["account_details"];
    assert_eq!(details["data_centre"], "eu", "{view}");
    assert_eq!(details["api_domain"], "https://www.zohoapis.eu");
    assert_eq!(details["accounts_server"], mock.uri());
    assert_eq!(details["primary_address"], "michael.jackson@vtv.com");
    // The code went to the accounts server the redirect named, with the client secret in the body.
    let token_calls: Vec<Request> = mock
        .received_requests()
        .await
        .expect("recorded")
        .into_iter()
        .filter(|r| r.url.path() == "/oauth/v2/token")
        .collect();
    assert_eq!(token_calls.len(), 1);
    let form = String::from_utf8_lossy(&token_calls[0].body).to_string();
    assert!(form.contains("grant_type=authorization_code"), "{form}");
    assert!(
        form.contains("client_secret=zoho-mail-test-secret-value"),
        "{form}"
    );

    // The mailbox: 120 received over the last hours, two of them in the same millisecond across
    // the first page boundary, and 7 sent.
    let base = now().timestamp_millis() - 3_600_000;
    let mailbox = Mailbox {
        folders: Arc::new(Mutex::new(vec![
            (INBOX.to_string(), Vec::new()),
            (SENT.to_string(), Vec::new()),
        ])),
        calls: Arc::new(AtomicUsize::new(0)),
        throttle_at: Arc::new(Mutex::new(vec![2])),
    };
    for i in 0..120u64 {
        let at = if i == 70 {
            base + 69_000
        } else {
            base + i as i64 * 1000
        };
        mailbox.add(
            INBOX,
            message(INBOX, 7_000_000 + i, at, &format!("Received {i}")),
        );
    }
    for i in 0..7u64 {
        mailbox.add(
            SENT,
            message(
                SENT,
                8_000_000 + i,
                base + i as i64 * 5000,
                &format!("Sent {i}"),
            ),
        );
    }
    // Older than the first sync's horizon: never reported.
    mailbox.add(
        INBOX,
        message(INBOX, 6_999_999, base - 30 * 86_400_000, "Ancient"),
    );
    Mock::given(method("GET"))
        .and(path(format!("/api/accounts/{ACCOUNT}/folders")))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("mail_folders")))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/api/accounts/{ACCOUNT}/messages/view")))
        .respond_with(mailbox.clone())
        .mount(&mock)
        .await;

    request_sync(&app, t, id).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes.len(), 1);
    match &outcomes[0].result {
        JobResult::Retrying { at, error } => {
            assert!(
                *at >= now() + chrono::Duration::seconds(100),
                "waits out Zoho's lock: {at}"
            );
            assert!(error.contains("rate limited"), "{error}");
        }
        other => panic!("expected a retry after the throttle, got {other:?}"),
    }
    assert_eq!(outcomes[0].pages, 2, "folders, then the first inbox page");
    assert_eq!(outcomes[0].new_signals, 50);
    let (_, connection) = app.get_json(t, &format!("/connections/{id}")).await;
    assert_eq!(connection["status"], "active", "{connection}");

    make_jobs_due(&app).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    let signals = signals_of(&app, t).await;
    let received: Vec<&Signal> = signals
        .iter()
        .filter(|s| s.kind == "email_received")
        .collect();
    let sent: Vec<&Signal> = signals.iter().filter(|s| s.kind == "email_sent").collect();
    assert_eq!(received.len(), 120);
    assert_eq!(sent.len(), 7);
    let mut ids: Vec<&str> = signals
        .iter()
        .filter_map(|s| s.external_id.as_deref())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 127, "every message exactly once");
    assert!(!ids.contains(&"6999999"));
    // Headers only: never the body, nor the listing's summary of it.
    let one = received
        .iter()
        .find(|s| s.external_id.as_deref() == Some("7000005"))
        .expect("one");
    assert_eq!(one.title.as_deref(), Some("Received 5"));
    let payload = one.payload.as_ref().expect("payload");
    assert_eq!(payload["to"], "<michael.jackson@vtv.com>");
    assert_eq!(payload["from"], "mysender@otherzoho.com");
    assert!(
        !payload.to_string().contains("extremely important"),
        "{payload}"
    );

    // New mail, one in the same millisecond as the newest already reported: exactly the new ones.
    mailbox.add(
        INBOX,
        message(INBOX, 7_100_000, base + 119_000, "Same millisecond"),
    );
    mailbox.add(INBOX, message(INBOX, 7_100_001, base + 200_000, "Later"));
    mailbox.add(SENT, message(SENT, 8_100_000, base + 200_000, "Reply"));
    request_sync(&app, t, id).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    assert_eq!(outcomes[0].new_signals, 3);
    assert_eq!(signals_of(&app, t).await.len(), 130);

    // Disconnect revokes the refresh token at the connection's accounts server.
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token/revoke"))
        .and(query_param("token", REFRESH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "success"})))
        .expect(1)
        .mount(&mock)
        .await;
    let response = app
        .operator(Method::DELETE, &format!("/connections/{id}"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    mock.verify().await;
}

#[tokio::test]
async fn an_accounts_server_outside_zohos_list_is_refused_and_nothing_is_exchanged() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("token_eu")))
        .expect(0)
        .mount(&mock)
        .await;
    let t = tenant();
    for bad in [
        "https://accounts.zoho.eu.evil.example",
        "https://evil.example/accounts.zoho.eu",
        "http://accounts.zoho.eu",
        "https://accounts.zoho.eu:8443",
        "https://user@accounts.zoho.eu",
        "https://accounts.zoho.eu/oauth?x=1",
        "javascript:alert(1)",
        "",
    ] {
        let state = start(&app, "zoho_mail", t).await;
        let response = app
            .anonymous(Method::GET, &callback("zoho_mail", &state, "eu", bad))
            .send()
            .await
            .expect("sent");
        let problem = assert_problem(response, 400, "VALIDATION_FAILED").await;
        assert!(
            problem.to_string().contains("accounts-server"),
            "{bad}: {problem}"
        );
    }
    let state = start(&app, "zoho_mail", t).await;
    let response = app
        .anonymous(
            Method::GET,
            &callback("zoho_mail", &state, "../eu", &mock.uri()),
        )
        .send()
        .await
        .expect("sent");
    assert_problem(response, 400, "VALIDATION_FAILED").await;
    mock.verify().await;
}

#[tokio::test]
async fn connecting_again_revokes_the_refresh_token_held_before() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let t = tenant();
    let (first, _) = connect(&app, &mock, t).await;
    // The second consent brings another refresh token; the old one is revoked.
    mock.reset().await;
    let mut token = example("token_eu");
    token["refresh_token"] = json!("1000.second-refresh-token");
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/accounts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("mail_accounts")))
        .mount(&mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token/revoke"))
        .and(query_param("token", REFRESH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "success"})))
        .expect(1)
        .mount(&mock)
        .await;
    let state = start(&app, "zoho_mail", t).await;
    let (status, body) = json(
        app.anonymous(
            Method::GET,
            &callback("zoho_mail", &state, "eu", &mock.uri()),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["connection"]["id"],
        first.to_string(),
        "the same connection"
    );
    mock.verify().await;
}

#[tokio::test]
async fn the_catalogue_lists_both_zoho_providers_as_syncing() {
    let app = TestApp::spawn().await;
    let (status, body) = json(
        app.operator(Method::GET, "/providers")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let providers = body["providers"].as_array().expect("providers");
    for (slug, kinds) in [
        ("zoho_mail", json!(["email_received", "email_sent"])),
        ("zoho_cliq", json!(["message_posted"])),
    ] {
        let p = providers.iter().find(|p| p["slug"] == slug).expect(slug);
        assert_eq!(p["sync"], true, "{p}");
        assert_eq!(p["webhooks"], false, "{p}");
        assert_eq!(p["kinds"], kinds, "{p}");
    }
}
