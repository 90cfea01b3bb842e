//! The Gmail connector end to end against a fake Google (one wiremock server as both the
//! OAuth host and the Gmail API, as `POBLYSH_GMAIL_AUTH_BASE_URL` and `_API_BASE_URL` allow):
//! connect (`users.getProfile`), the watch opened on the Pub/Sub topic, a signed push to
//! `POST /webhooks/gmail`, the history synced over several pages into one signal per message,
//! a quota answer in the middle, a history too old recovered by a bounded full sync, and
//! disconnect stopping the watch before the grant is revoked.
//!
//! Every answer of the fake is checked against the response schema of its method in Google's
//! discovery document (`tests/gmail/gmail.v1.json`), and every request the connector sent
//! against the method's parameters: a query parameter the method does not declare, a
//! required one missing, or a value outside an enum fails the test. The push envelope's
//! message is checked against `PubsubMessage` of `tests/gmail/pubsub.v1.json`.

use std::path::Path;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use connectors::domain::{now, EventStatus, Signal, TenantId};
use connectors::ingest::inbox;
use connectors::ingest::sync::{JobOutcome, JobResult, SyncWorker};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use url::Url;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    accepted, assert_problem, json, post_delivery, stored_event, tenant, TestApp,
};

const KEY: &str = include_str!("../keys/jwt-test-rsa-1.pem");
const OTHER_KEY: &str = include_str!("../keys/jwt-test-rsa-2.pem");
const AUDIENCE: &str = "https://connectors.example.com/webhooks/gmail";
const SERVICE_ACCOUNT: &str = "gmail-push@example-project.iam.gserviceaccount.com";
const TOPIC: &str = "projects/example-project/topics/gmail";
const ADDRESS: &str = "user@example.com";
const ACCESS_TOKEN: &str = "ya29.test-access-token";
const API: &str = "/gmail/v1/users/me";

// --- Google's discovery documents -------------------------------------------------------

fn document(name: &str) -> &'static Value {
    static GMAIL: OnceLock<Value> = OnceLock::new();
    static PUBSUB: OnceLock<Value> = OnceLock::new();
    let cell = if name == "gmail" { &GMAIL } else { &PUBSUB };
    cell.get_or_init(|| {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/gmail/{name}.v1.json"));
        serde_json::from_str(&std::fs::read_to_string(&file).expect("discovery document"))
            .expect("discovery JSON")
    })
}

/// The Gmail method a request calls: its discovery entry.
fn method_of(verb: &str, request_path: &str) -> Option<&'static Value> {
    fn walk<'a>(resource: &'a Value, out: &mut Vec<&'a Value>) {
        if let Some(methods) = resource["methods"].as_object() {
            out.extend(methods.values());
        }
        if let Some(resources) = resource["resources"].as_object() {
            for r in resources.values() {
                walk(r, out);
            }
        }
    }
    let mut methods = Vec::new();
    walk(document("gmail"), &mut methods);
    let segments: Vec<&str> = request_path.trim_start_matches('/').split('/').collect();
    methods.into_iter().find(|m| {
        let template: Vec<&str> = m["path"].as_str().unwrap_or("").split('/').collect();
        m["httpMethod"] == verb
            && template.len() == segments.len()
            && template
                .iter()
                .zip(&segments)
                .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
    })
}

/// What is wrong with a request the connector sent to the fake Gmail API.
fn request_problems(verb: &str, url: &Url, body: &[u8]) -> Vec<String> {
    let Some(m) = method_of(verb, url.path()) else {
        return vec![format!("{verb} {} is no Gmail method", url.path())];
    };
    let id = m["id"].as_str().unwrap_or("?");
    let declared = m["parameters"].as_object().cloned().unwrap_or_default();
    let global = document("gmail")["parameters"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let mut problems = Vec::new();
    for (name, value) in &pairs {
        let Some(p) = declared.get(name).or_else(|| global.get(name)) else {
            problems.push(format!("{id}: undeclared query parameter {name}"));
            continue;
        };
        if p["location"] != "query" {
            problems.push(format!("{id}: {name} is not a query parameter"));
        }
        if let Some(values) = p["enum"].as_array() {
            if !values.iter().any(|v| v == value.as_str()) {
                problems.push(format!("{id}: {name}={value} is outside its enum"));
            }
        }
        if p["type"] == "integer" && value.parse::<i64>().is_err() {
            problems.push(format!("{id}: {name}={value} is not an integer"));
        }
        if p["type"] == "boolean" && !matches!(value.as_str(), "true" | "false") {
            problems.push(format!("{id}: {name}={value} is not a boolean"));
        }
        if p["repeated"] != true && pairs.iter().filter(|(n, _)| n == name).count() > 1 {
            problems.push(format!("{id}: {name} is not repeated"));
        }
    }
    for (name, p) in &declared {
        if p["required"] == true
            && p["location"] == "query"
            && !pairs.iter().any(|(n, _)| n == name)
        {
            problems.push(format!("{id}: required {name} missing"));
        }
    }
    if let Some(schema) = m["request"]["$ref"].as_str() {
        match serde_json::from_slice::<Value>(body) {
            Ok(body) => problems.extend(schema_problems(
                "gmail",
                &json!({"$ref": schema}),
                &body,
                id,
            )),
            Err(_) => problems.push(format!("{id}: the request body is not JSON")),
        }
    }
    problems
}

/// What in `value` does not match `schema` (a discovery schema), strictly: no member the
/// schema does not declare, 64-bit integers as strings.
fn schema_problems(doc: &str, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(name) = schema["$ref"].as_str() {
        let target = &document(doc)["schemas"][name];
        assert!(target.is_object(), "no schema {name}");
        return schema_problems(doc, target, value, at);
    }
    let mut problems = Vec::new();
    let wrong = |what: &str| vec![format!("{at}: expected {what}, got {value}")];
    match schema["type"].as_str() {
        Some("object") => {
            let Some(members) = value.as_object() else {
                return wrong("an object");
            };
            let properties = schema["properties"].as_object();
            for (name, member) in members {
                match (
                    properties.and_then(|p| p.get(name)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) | (None, Some(s)) => {
                        problems.extend(schema_problems(doc, s, member, &format!("{at}.{name}")))
                    }
                    (None, None) => problems.push(format!("{at}.{name} is not in the schema")),
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                return wrong("an array");
            };
            for (i, item) in items.iter().enumerate() {
                problems.extend(schema_problems(
                    doc,
                    &schema["items"],
                    item,
                    &format!("{at}[{i}]"),
                ));
            }
        }
        Some("string") => {
            let Some(text) = value.as_str() else {
                return wrong("a string");
            };
            let numeric = matches!(schema["format"].as_str(), Some("int64" | "uint64"));
            if numeric && text.parse::<i128>().is_err() {
                return wrong("a 64-bit integer as a string");
            }
            if schema["format"] == "byte" && STANDARD.decode(text).is_err() {
                return wrong("base64");
            }
            if let Some(values) = schema["enum"].as_array() {
                if !values.iter().any(|v| v == text) {
                    return wrong("a value of the enum");
                }
            }
        }
        Some("integer") if !value.is_i64() && !value.is_u64() => return wrong("an integer"),
        Some("boolean") if !value.is_boolean() => return wrong("a boolean"),
        _ => {}
    }
    problems
}

/// Every request the fake received for the Gmail API, checked.
async fn assert_requests_match_discovery(google: &MockServer) {
    let requests = google.received_requests().await.expect("recording");
    let problems: Vec<String> = requests
        .iter()
        .filter(|r| r.url.path().starts_with("/gmail/"))
        .flat_map(|r| request_problems(r.method.as_str(), &r.url, &r.body))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A `200` of Gmail's method `id`, its body checked against the method's response schema.
fn answer(id: &str, body: Value) -> ResponseTemplate {
    let m = all_methods()
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no method {id}"));
    let problems = schema_problems("gmail", &m["response"], &body, id);
    assert!(
        problems.is_empty(),
        "the fake's own answer is wrong: {problems:#?}"
    );
    ResponseTemplate::new(200).set_body_json(body)
}

fn all_methods() -> Vec<&'static Value> {
    fn walk(resource: &'static Value, out: &mut Vec<&'static Value>) {
        if let Some(methods) = resource["methods"].as_object() {
            out.extend(methods.values());
        }
        if let Some(resources) = resource["resources"].as_object() {
            for r in resources.values() {
                walk(r, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(document("gmail"), &mut out);
    out
}

/// Google's error body (https://developers.google.com/gmail/api/guides/handle-errors).
fn google_error(code: u16, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "error": {
            "code": code,
            "message": message,
            "errors": [{ "domain": "global", "reason": reason, "message": message }]
        }
    }))
}

#[test]
fn the_checker_refuses_what_gmail_would() {
    let get = |url: &str| request_problems("GET", &Url::parse(url).expect("url"), b"");
    assert_eq!(
        get("http://g/gmail/v1/users/me/history?startHistoryId=1&historyTypes=messageAdded"),
        Vec::<String>::new()
    );
    for bad in [
        "http://g/gmail/v1/users/me/history?startHistoryId=1&historyTypes=messageArrived",
        "http://g/gmail/v1/users/me/history?startHistoryId=1&since=2",
        "http://g/gmail/v1/users/me/messages/m1?format=metadata&format=full",
        "http://g/gmail/v1/users/me/messages?maxResults=ten",
        "http://g/gmail/v1/users/me/threads/t1/everything",
    ] {
        assert!(!get(bad).is_empty(), "{bad}");
    }
    let problems = schema_problems(
        "gmail",
        &json!({"$ref": "Profile"}),
        &json!({"emailAddress": "a@b", "historyId": 12, "colour": "red"}),
        "Profile",
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
}

// --- The fake Google ----------------------------------------------------------------------

fn encoding_key(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test key parses")
}

/// A message as `users.messages.get?format=metadata` answers with the fields asked for.
fn message(id: &str, labels: &[&str], subject: &str, from: &str, internal_ms: i64) -> Value {
    json!({
        "id": id,
        "threadId": id,
        "labelIds": labels,
        "historyId": "1010",
        "internalDate": internal_ms.to_string(),
        "payload": {
            "headers": [
                { "name": "From", "value": from },
                { "name": "To", "value": "Some One <someone@example.org>" },
                { "name": "Subject", "value": subject },
                { "name": "Date", "value": "Fri, 6 Dec 2024 12:00:00 +0000" }
            ]
        }
    })
}

async fn mount_message(google: &MockServer, body: Value) {
    let id = body["id"].as_str().expect("id").to_string();
    Mock::given(method("GET"))
        .and(path(format!("{API}/messages/{id}")))
        .and(query_param("format", "metadata"))
        .respond_with(answer("gmail.users.messages.get", body))
        .mount(google)
        .await;
}

/// A history page of added messages.
fn history(ids: &[&str], history_id: &str, next: Option<&str>) -> Value {
    let mut body = json!({
        "history": ids.iter().enumerate().map(|(i, id)| json!({
            "id": format!("{}", 1001 + i),
            "messages": [{ "id": id, "threadId": id }],
            "messagesAdded": [{ "message": { "id": id, "threadId": id, "labelIds": ["INBOX"] } }]
        })).collect::<Vec<_>>(),
        "historyId": history_id,
    });
    if let Some(next) = next {
        body["nextPageToken"] = json!(next);
    }
    body
}

async fn mount_history(
    google: &MockServer,
    start: &str,
    token: Option<&str>,
    body: ResponseTemplate,
) {
    let mock = Mock::given(method("GET"))
        .and(path(format!("{API}/history")))
        .and(query_param("startHistoryId", start));
    let mock = match token {
        Some(t) => mock.and(query_param("pageToken", t)),
        None => mock.and(query_param_is_missing("pageToken")),
    };
    mock.respond_with(body).mount(google).await;
}

/// Google's OAuth host, its key set, and the profile, watch and stop of the mailbox.
async fn fake_google() -> MockServer {
    let google = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": ACCESS_TOKEN,
            "expires_in": 3599,
            "refresh_token": "1//test-refresh-token",
            "scope": "https://www.googleapis.com/auth/gmail.metadata",
            "token_type": "Bearer"
        })))
        .mount(&google)
        .await;
    Mock::given(method("POST"))
        .and(path("/revoke"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&google)
        .await;
    let mut jwk = serde_json::to_value(
        Jwk::from_encoding_key(&encoding_key(KEY), Algorithm::RS256).expect("a JWK"),
    )
    .expect("JWK");
    jwk["kid"] = json!("k1");
    jwk["use"] = json!("sig");
    Mock::given(method("GET"))
        .and(path("/oauth2/v3/certs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "keys": [jwk] })))
        .mount(&google)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/profile")))
        .respond_with(answer(
            "gmail.users.getProfile",
            json!({ "emailAddress": "User@example.com", "historyId": "1000", "messagesTotal": 12, "threadsTotal": 9 }),
        ))
        .mount(&google)
        .await;
    let expiration = (now() + chrono::Duration::days(7)).timestamp_millis();
    Mock::given(method("POST"))
        .and(path(format!("{API}/watch")))
        .respond_with(answer(
            "gmail.users.watch",
            json!({ "historyId": "1000", "expiration": expiration.to_string() }),
        ))
        .mount(&google)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/stop")))
        .respond_with(ResponseTemplate::new(204))
        .mount(&google)
        .await;
    google
}

async fn spawn(google: &MockServer) -> TestApp {
    let uri = google.uri();
    TestApp::spawn_with(&[
        (
            "POBLYSH_GMAIL_CLIENT_ID",
            "test-client.apps.googleusercontent.com",
        ),
        ("POBLYSH_GMAIL_CLIENT_SECRET", "gmail-test-client-secret"),
        ("POBLYSH_GMAIL_AUTH_BASE_URL", uri.as_str()),
        ("POBLYSH_GMAIL_API_BASE_URL", uri.as_str()),
        ("POBLYSH_GMAIL_PUSH_AUDIENCE", AUDIENCE),
        ("POBLYSH_GMAIL_PUSH_SERVICE_ACCOUNT", SERVICE_ACCOUNT),
        ("POBLYSH_GMAIL_PUBSUB_TOPIC", TOPIC),
        // The journey syncs more pages back to back than the quota's burst allows.
        ("POBLYSH_GMAIL_RATE_LIMIT_BURST", "50"),
    ])
    .await
}

/// Connects the mailbox through Google's OAuth flow; drains the watch's opening.
async fn connect(app: &TestApp, t: TenantId) -> String {
    let authorize = crate::connect::authorize_url(app, t, "gmail", None).await;
    let param = |name: &str| {
        authorize
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    // Offline access with PKCE, the metadata scope only.
    assert_eq!(authorize.path(), "/o/oauth2/v2/auth");
    assert_eq!(param("access_type").as_deref(), Some("offline"));
    assert_eq!(param("prompt").as_deref(), Some("consent"));
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(
        param("scope").as_deref(),
        Some("https://www.googleapis.com/auth/gmail.metadata")
    );
    let state = param("state").expect("state");
    let (status, body) = json(
        app.anonymous(
            Method::GET,
            &format!("/connect/gmail/callback?code=4/test-code&state={state}"),
        )
        .send()
        .await
        .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["connection"]["id"].as_str().expect("id").to_string()
}

fn claims() -> Value {
    let now = now().timestamp();
    json!({
        "aud": AUDIENCE,
        "azp": "113774264463038321964",
        "email": SERVICE_ACCOUNT,
        "email_verified": true,
        "exp": now + 3600,
        "iat": now,
        "iss": "https://accounts.google.com",
        "sub": "113774264463038321964",
    })
}

fn token(pem: &str, claims: &Value) -> String {
    let header = Header {
        kid: Some("k1".into()),
        ..Header::new(Algorithm::RS256)
    };
    jsonwebtoken::encode(&header, claims, &encoding_key(pem)).expect("token signs")
}

/// A push as Pub/Sub delivers it; its message checked against `PubsubMessage`.
fn push(message_id: &str, address: &str, history_id: Value) -> Vec<u8> {
    let data =
        STANDARD.encode(json!({ "emailAddress": address, "historyId": history_id }).to_string());
    let message = json!({
        "data": data,
        "messageId": message_id,
        "publishTime": "2026-12-06T04:00:00.749Z"
    });
    let problems = schema_problems(
        "pubsub",
        &json!({"$ref": "PubsubMessage"}),
        &message,
        "message",
    );
    assert!(problems.is_empty(), "{problems:#?}");
    serde_json::to_vec(&json!({
        "message": message,
        "subscription": "projects/example-project/subscriptions/gmail-push"
    }))
    .expect("json")
}

async fn deliver(app: &TestApp, token: Option<String>, body: &[u8]) -> reqwest::Response {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(token) = token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    post_delivery(app, "/webhooks/gmail", headers, body).await
}

async fn drain(app: &TestApp) -> Vec<JobOutcome> {
    SyncWorker::new().drain(&app.state).await.expect("drain")
}

/// Makes queued jobs due now (a retry's wait passed).
async fn make_jobs_due(app: &TestApp) {
    app.execute_sql(
        "UPDATE sync_jobs SET scheduled_at = 0 WHERE status = 'queued'",
        "UPDATE sync_jobs SET scheduled_at = now() - interval '1 second' WHERE status = 'queued'",
    )
    .await;
}

async fn signals_of(app: &TestApp, t: TenantId) -> Vec<Signal> {
    let mut signals = app.stored_signals(t).await;
    signals.sort_by(|a, b| a.external_id.cmp(&b.external_id));
    signals
}

async fn cursor(app: &TestApp, id: &str) -> Option<Value> {
    app.store()
        .sync_cursor(id.parse().expect("uuid"))
        .await
        .expect("cursor")
}

// --- The journey --------------------------------------------------------------------------

#[tokio::test]
async fn a_mailbox_connects_is_watched_pushed_synced_over_pages_and_stopped_on_disconnect() {
    let google = fake_google().await;
    let app = spawn(&google).await;
    let t = tenant();
    let id = connect(&app, t).await;

    // Connect: the mailbox is the account, its history id kept.
    let (_, detail) = app.get_json(t, &format!("/connections/{id}")).await;
    assert_eq!(detail["external_account"]["id"], ADDRESS, "{detail}");
    assert_eq!(detail["account_details"]["history_id"], "1000", "{detail}");
    assert_eq!(detail["account_details"]["email"], "User@example.com");

    // The watch opens on the topic, inbox and sent only, renewed within a day.
    let outcomes = drain(&app).await;
    assert!(
        outcomes.iter().all(|o| o.result == JobResult::Succeeded),
        "{outcomes:?}"
    );
    let (_, detail) = app.get_json(t, &format!("/connections/{id}")).await;
    let sub = &detail["subscriptions"][0];
    assert_eq!(sub["status"], "active", "{detail}");
    assert_eq!(sub["resource"], "mailbox");
    let expires = chrono::DateTime::parse_from_rfc3339(sub["expires_at"].as_str().expect("expiry"))
        .expect("time")
        .to_utc();
    assert!(expires <= now() + chrono::Duration::days(1), "{sub}");
    let requests = google.received_requests().await.expect("recording");
    let watch = requests
        .iter()
        .find(|r| r.url.path() == format!("{API}/watch"))
        .expect("users.watch called");
    let body: Value = serde_json::from_slice(&watch.body).expect("json");
    assert_eq!(body["topicName"], TOPIC);
    assert_eq!(body["labelIds"], json!(["INBOX", "SENT"]));
    assert_eq!(
        watch
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );

    // Two pages of history: a received, a sent and a draft message.
    let at = now().timestamp_millis() - 60_000;
    mount_history(
        &google,
        "1000",
        None,
        answer(
            "gmail.users.history.list",
            history(&["m1"], "1010", Some("page-2")),
        ),
    )
    .await;
    mount_history(
        &google,
        "1000",
        Some("page-2"),
        answer(
            "gmail.users.history.list",
            history(&["m2", "m3", "m2"], "1010", None),
        ),
    )
    .await;
    mount_message(
        &google,
        message(
            "m1",
            &["INBOX", "UNREAD", "CATEGORY_PERSONAL"],
            "Hello",
            "Ada Lovelace <ada@example.org>",
            at,
        ),
    )
    .await;
    mount_message(
        &google,
        message(
            "m2",
            &["SENT"],
            "Re: Hello",
            "User <user@example.com>",
            at + 1000,
        ),
    )
    .await;
    mount_message(
        &google,
        message(
            "m3",
            &["DRAFT"],
            "Unsent",
            "User <user@example.com>",
            at + 2000,
        ),
    )
    .await;

    // A signed push to the deployment's URL, the history id a number.
    let body = push("2070443601311540", "User@example.com", json!(1010));
    let first = accepted(deliver(&app, Some(token(KEY, &claims())), &body).await).await;
    assert_eq!(first["duplicate"], false);
    let again = accepted(deliver(&app, Some(token(KEY, &claims())), &body).await).await;
    assert_eq!(
        again["duplicate"], true,
        "Pub/Sub redelivers with the same messageId"
    );
    let event = stored_event(&app, t, &first).await;
    assert!(!event.headers.contains_key("authorization"));
    inbox::drain(&app.state).await.expect("inbox");
    let outcomes = drain(&app).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    assert_eq!(outcomes[0].pages, 2);
    let signals = signals_of(&app, t).await;
    let kinds: Vec<_> = signals
        .iter()
        .map(|s| (s.external_id.as_deref(), s.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [(Some("m1"), "email_received"), (Some("m2"), "email_sent")]
    );
    let received = &signals[0];
    assert_eq!(received.title.as_deref(), Some("Hello"));
    let actor = received.actor.as_ref().expect("actor");
    assert_eq!(
        (actor.id.as_str(), actor.name.as_deref()),
        ("ada@example.org", Some("Ada Lovelace"))
    );
    assert_eq!(received.occurred_at.timestamp_millis(), at);
    let payload = received.payload.as_ref().expect("payload");
    assert_eq!(payload["to"], "Some One <someone@example.org>");
    assert_eq!(
        payload["labels"],
        json!(["INBOX", "UNREAD", "CATEGORY_PERSONAL"])
    );
    assert!(payload.get("snippet").is_none() && payload.get("body").is_none());
    assert_eq!(
        cursor(&app, &id).await,
        Some(json!({ "mode": "history", "history_id": "1010" }))
    );

    // The quota runs out in the middle: the first page is kept, the job waits at least
    // Retry-After and then resumes from the page it stopped at.
    mount_history(
        &google,
        "1010",
        None,
        answer(
            "gmail.users.history.list",
            history(&["m4"], "1020", Some("page-b")),
        ),
    )
    .await;
    mount_message(
        &google,
        message(
            "m4",
            &["INBOX"],
            "Later",
            "Ada Lovelace <ada@example.org>",
            at + 3000,
        ),
    )
    .await;
    let quota = Mock::given(method("GET"))
        .and(path(format!("{API}/history")))
        .and(query_param("pageToken", "page-b"))
        .respond_with(
            google_error(
                429,
                "rateLimitExceeded",
                "Too many concurrent requests for user",
            )
            .insert_header("Retry-After", "30"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount_as_scoped(&google)
        .await;
    let body = push("2070443601311541", ADDRESS, json!("1020"));
    accepted(deliver(&app, Some(token(KEY, &claims())), &body).await).await;
    inbox::drain(&app.state).await.expect("inbox");
    let outcomes = drain(&app).await;
    match &outcomes[0].result {
        JobResult::Retrying { at, .. } => {
            assert!(*at >= now() + chrono::Duration::seconds(29), "{at}")
        }
        other => panic!("expected a retry after the quota, got {other:?}"),
    }
    assert_eq!(signals_of(&app, t).await.len(), 3, "the first page is kept");
    assert_eq!(
        cursor(&app, &id).await,
        Some(json!({ "mode": "history", "history_id": "1010", "page_token": "page-b" }))
    );
    drop(quota);
    mount_history(
        &google,
        "1010",
        Some("page-b"),
        answer("gmail.users.history.list", json!({ "historyId": "1020" })),
    )
    .await;
    make_jobs_due(&app).await;
    let outcomes = drain(&app).await;
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    assert_eq!(
        cursor(&app, &id).await,
        Some(json!({ "mode": "history", "history_id": "1020" }))
    );

    // A stale push (its history already synced) is acknowledged and syncs nothing new.
    let stale = push("2070443601311542", ADDRESS, json!("1005"));
    accepted(deliver(&app, Some(token(KEY, &claims())), &stale).await).await;
    mount_history(
        &google,
        "1020",
        None,
        answer("gmail.users.history.list", json!({ "historyId": "1020" })),
    )
    .await;
    inbox::drain(&app.state).await.expect("inbox");
    drain(&app).await;
    assert_eq!(signals_of(&app, t).await.len(), 3);

    // Disconnect: the watch stops before the grant is revoked.
    let response = app
        .operator(Method::DELETE, &format!("/connections/{id}"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert!(response.status().is_success(), "{}", response.status());
    let paths: Vec<String> = google
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    let stop = paths
        .iter()
        .position(|p| *p == format!("{API}/stop"))
        .expect("users.stop called");
    let revoke = paths.iter().position(|p| p == "/revoke").expect("revoked");
    assert!(stop < revoke, "{paths:?}");
    assert_requests_match_discovery(&google).await;
}

#[tokio::test]
async fn a_history_too_old_is_recovered_by_a_bounded_full_sync_and_garbage_keeps_the_cursor() {
    let google = fake_google().await;
    let app = spawn(&google).await;
    let t = tenant();
    let id = connect(&app, t).await;
    drain(&app).await;

    // The history from the connect-time id is gone (404).
    mount_history(
        &google,
        "1000",
        None,
        google_error(404, "notFound", "Requested entity was not found."),
    )
    .await;
    // The profile now says 5000 (mounted over the earlier one).
    Mock::given(method("GET"))
        .and(path(format!("{API}/profile")))
        .respond_with(answer(
            "gmail.users.getProfile",
            json!({ "emailAddress": "User@example.com", "historyId": "5000" }),
        ))
        .with_priority(1)
        .mount(&google)
        .await;
    let at = now().timestamp_millis() - 3_600_000;
    Mock::given(method("GET"))
        .and(path(format!("{API}/messages")))
        .and(query_param_is_missing("pageToken"))
        .respond_with(answer(
            "gmail.users.messages.list",
            json!({
                "messages": [{ "id": "f1", "threadId": "f1" }, { "id": "f2", "threadId": "f2" }],
                "nextPageToken": "list-2",
                "resultSizeEstimate": 3
            }),
        ))
        .mount(&google)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/messages")))
        .and(query_param("pageToken", "list-2"))
        .respond_with(answer(
            "gmail.users.messages.list",
            json!({ "messages": [{ "id": "f3", "threadId": "f3" }], "resultSizeEstimate": 3 }),
        ))
        .mount(&google)
        .await;
    mount_message(
        &google,
        message("f1", &["INBOX"], "One", "Ada <ada@example.org>", at),
    )
    .await;
    mount_message(
        &google,
        message("f2", &["SENT"], "Two", "User <user@example.com>", at + 1),
    )
    .await;
    // f3 was deleted before it was read.
    Mock::given(method("GET"))
        .and(path(format!("{API}/messages/f3")))
        .respond_with(google_error(
            404,
            "notFound",
            "Requested entity was not found.",
        ))
        .mount(&google)
        .await;
    mount_history(
        &google,
        "5000",
        None,
        answer("gmail.users.history.list", json!({ "historyId": "5001" })),
    )
    .await;
    let response = app
        .operator(Method::POST, &format!("/connections/{id}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let outcomes = drain(&app).await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    let signals = signals_of(&app, t).await;
    let kinds: Vec<_> = signals
        .iter()
        .map(|s| (s.external_id.as_deref(), s.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [(Some("f1"), "email_received"), (Some("f2"), "email_sent")]
    );
    assert_eq!(
        cursor(&app, &id).await,
        Some(json!({ "mode": "history", "history_id": "5001" }))
    );
    let (_, detail) = app.get_json(t, &format!("/connections/{id}")).await;
    assert_eq!(detail["account_details"]["history_id"], "5000", "{detail}");

    // A garbage page: the job fails readably and the cursor stays.
    mount_history(
        &google,
        "5001",
        None,
        ResponseTemplate::new(200).set_body_string("<html>busy</html>"),
    )
    .await;
    app.operator(Method::POST, &format!("/connections/{id}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    let outcomes = drain(&app).await;
    match &outcomes[0].result {
        JobResult::Failed { error } | JobResult::Retrying { error, .. } => {
            assert!(
                error.contains("users.history.list with an unreadable body"),
                "{error}"
            )
        }
        other => panic!("expected a failed attempt, got {other:?}"),
    }
    assert_eq!(
        cursor(&app, &id).await,
        Some(json!({ "mode": "history", "history_id": "5001" }))
    );
    assert_requests_match_discovery(&google).await;
}

#[tokio::test]
async fn pushes_to_the_deployment_url_are_refused_unless_google_signed_them_for_us() {
    let google = fake_google().await;
    let app = spawn(&google).await;
    let t = tenant();
    connect(&app, t).await;
    let body = push("1", ADDRESS, json!("1001"));
    let mut expired = claims();
    expired["exp"] = json!(now().timestamp() - 3600);
    expired["iat"] = json!(now().timestamp() - 7200);
    let mut foreign_audience = claims();
    foreign_audience["aud"] = json!("https://elsewhere.example.com/push");
    let mut other_account = claims();
    other_account["email"] = json!("someone@other-project.iam.gserviceaccount.com");
    let mut unverified = claims();
    unverified["email_verified"] = json!(false);
    let unsigned = {
        let header = STANDARD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let payload = STANDARD.encode(claims().to_string());
        format!(
            "{}.{}.",
            header.trim_end_matches('='),
            payload.trim_end_matches('=')
        )
    };
    for (what, token) in [
        ("no token", None),
        ("unsigned", Some(unsigned)),
        ("another key", Some(token(OTHER_KEY, &claims()))),
        ("expired", Some(token(KEY, &expired))),
        ("another audience", Some(token(KEY, &foreign_audience))),
        ("another service account", Some(token(KEY, &other_account))),
        ("an unverified address", Some(token(KEY, &unverified))),
    ] {
        let response = deliver(&app, token, &body).await;
        let problem = assert_problem(response, 401, "INVALID_SIGNATURE").await;
        assert!(problem["detail"].is_string(), "{what}: {problem}");
    }
    assert_eq!(
        inbox::drain(&app.state).await.expect("inbox"),
        0,
        "nothing stored"
    );

    // A verified push for a mailbox no one connected: acknowledged, kept unmatched.
    let stranger = push("2", "stranger@example.net", json!("77"));
    let kept = accepted(deliver(&app, Some(token(KEY, &claims())), &stranger).await).await;
    inbox::drain(&app.state).await.expect("inbox");
    let event = stored_event(&app, TenantId(uuid::Uuid::nil()), &kept).await;
    assert_eq!(event.status, EventStatus::Unmatched);
    assert!(signals_of(&app, t).await.is_empty());
}

/// Core may still relay an event to `POST /webhooks/gmail` with its operator token: a bearer
/// token there is Pub/Sub's only when it is not an operator's.
#[tokio::test]
async fn core_still_relays_to_the_deployment_url_with_its_operator_token() {
    let google = fake_google().await;
    let app = spawn(&google).await;
    let t = tenant();
    let body = push("relayed-1", ADDRESS, json!("1"));
    let relayed = accepted(
        app.operator(Method::POST, "/webhooks/gmail")
            .header("X-Tenant-Id", t.to_string())
            .header("Idempotency-Key", "relayed-1")
            .body(body)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let event = stored_event(&app, t, &relayed).await;
    assert_eq!(event.dedupe_key, "relayed-1");
}

/// Renewing the watch calls `users.watch` again on the same mailbox: the subscription keeps
/// its id, and nothing is stopped.
#[tokio::test]
async fn the_watch_is_renewed_in_place_and_never_stopped_by_a_renewal() {
    let google = fake_google().await;
    let app = spawn(&google).await;
    let t = tenant();
    let id = connect(&app, t).await;
    drain(&app).await;
    app.execute_sql(
        "UPDATE subscriptions SET renew_at = 0",
        "UPDATE subscriptions SET renew_at = now() - interval '1 second'",
    )
    .await;
    let queued = connectors::subscriptions::schedule_due(&app.state, now())
        .await
        .expect("scheduled");
    assert_eq!(queued, 1);
    let outcomes = drain(&app).await;
    assert!(
        outcomes.iter().all(|o| o.result == JobResult::Succeeded),
        "{outcomes:?}"
    );
    let calls: Vec<String> = google
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|r| r.url.path().to_string())
        .filter(|p| p.ends_with("/watch") || p.ends_with("/stop"))
        .collect();
    assert_eq!(calls, [format!("{API}/watch"), format!("{API}/watch")]);
    let (_, detail) = app.get_json(t, &format!("/connections/{id}")).await;
    let sub = &detail["subscriptions"][0];
    assert_eq!(sub["status"], "active", "{detail}");
    assert_requests_match_discovery(&google).await;
}
