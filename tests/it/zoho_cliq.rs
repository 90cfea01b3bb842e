//! Zoho Cliq end to end against a fake Zoho answering with Zoho's published examples
//! (`tests/zoho/`): connect from the EU data centre, sync chats and their messages over several
//! pages with Cliq's lockout in the middle, every message once, and disconnect revoking at the
//! connection's accounts server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat};
use connectors::domain::{now, ConnectionId, Signal, TenantId};
use connectors::ingest::sync::{JobResult, SyncWorker};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{json, tenant, TestApp};
use crate::zoho_mail::{callback, example, make_jobs_due, request_sync, start};

const REFRESH: &str = "1000.18e983526f0ca8575ea9c53b0cd5bb58.1bd83a6f2e22c3a7e1309d96ae439cc1";
const ALICE: &str = "2890538000000012345";
const BOB: &str = "2890538000000067890";

async fn spawn(mock: &MockServer) -> TestApp {
    let uri = mock.uri();
    TestApp::spawn_with(&[
        (
            "POBLYSH_ZOHO_CLIQ_CLIENT_ID",
            "1000.GMB0YULZHJK411248S8I5GZ4CHUEX0",
        ),
        (
            "POBLYSH_ZOHO_CLIQ_CLIENT_SECRET",
            "zoho-cliq-test-secret-value",
        ),
        ("POBLYSH_ZOHO_CLIQ_AUTH_BASE_URL", uri.as_str()),
        ("POBLYSH_ZOHO_CLIQ_API_BASE_URL", uri.as_str()),
        // The test reads pages back to back; the descriptor's pacing is checked on its own.
        ("POBLYSH_ZOHO_CLIQ_RATE_LIMIT_BURST", "100"),
        ("POBLYSH_ZOHO_CLIQ_RATE_LIMIT_REQUESTS", "1000"),
    ])
    .await
}

fn iso(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A message as Cliq lists it: the published example with its own id, time and text.
fn message(id: &str, at: i64, text: &str) -> Value {
    let mut m = example("cliq_message");
    m["message_id"] = json!(id);
    m["time"] = json!(iso(at));
    m["content"]["text"] = json!(text);
    m
}

/// The fake Cliq: chats with their messages (and times in ms), paged as Cliq pages them.
type Chat = (Value, Vec<(i64, Value)>);

#[derive(Clone, Default)]
struct Cliq {
    chats: Arc<Mutex<Vec<Chat>>>,
    message_calls: Arc<AtomicUsize>,
    lockout_at: Arc<Mutex<Vec<usize>>>,
}

impl Cliq {
    fn post(&self, chat: &str, at: i64, id: &str, text: &str) {
        let mut chats = self.chats.lock().expect("lock");
        if let Some((c, list)) = chats.iter_mut().find(|(c, _)| c["chat_id"] == chat) {
            list.push((at, message(id, at, text)));
            list.sort_by_key(|(t, _)| *t);
            c["last_modified_time"] = json!(iso(at));
        }
    }
}

struct Chats(Cliq);
struct Messages(Cliq);

fn q(request: &Request, name: &str) -> Option<i64> {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

impl Respond for Chats {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let after = q(request, "modified_after").unwrap_or(0);
        let chats: Vec<Value> = self
            .0
            .chats
            .lock()
            .expect("lock")
            .iter()
            .map(|(c, list)| (c.clone(), list.last().map_or(0, |(t, _)| *t)))
            .filter(|(_, last)| *last > after)
            .map(|(c, _)| c)
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({ "chats": chats }))
    }
}

impl Respond for Messages {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let call = self.0.message_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.0.lockout_at.lock().expect("lock").contains(&call) {
            return ResponseTemplate::new(400).set_body_json(example("cliq_throttle"));
        }
        let chat = request
            .url
            .path_segments()
            .and_then(|mut s| s.nth(3))
            .unwrap_or_default()
            .to_string();
        let from = q(request, "fromtime").unwrap_or(0);
        let limit = q(request, "limit").unwrap_or(10) as usize;
        let chats = self.0.chats.lock().expect("lock");
        let data: Vec<Value> = chats
            .iter()
            .find(|(c, _)| c["chat_id"] == chat.as_str())
            .map(|(_, list)| {
                list.iter()
                    .filter(|(t, _)| *t > from)
                    .take(limit)
                    .map(|(_, m)| m.clone())
                    .collect()
            })
            .unwrap_or_default();
        ResponseTemplate::new(200).set_body_json(json!({ "data": data }))
    }
}

/// Checks every chat and message the fake serves against the schemas of Zoho's Cliq OpenAPI
/// documents (`tests/zoho/cliq_schemas.json`).
fn assert_published_shapes(cliq: &Cliq) {
    let schemas = example("cliq_schemas");
    let validator = |name: &str| {
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schemas[name])
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let (chat, message) = (validator("chat"), validator("message"));
    for (c, list) in cliq.chats.lock().expect("lock").iter() {
        let errors: Vec<String> = chat.iter_errors(c).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{c}: {errors:?}");
        for (_, m) in list {
            let errors: Vec<String> = message.iter_errors(m).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{m}: {errors:?}");
        }
    }
}

async fn signals_of(app: &TestApp, t: TenantId) -> Vec<Signal> {
    app.stored_signals(t).await
}

async fn connect(app: &TestApp, mock: &MockServer, t: TenantId) -> (ConnectionId, Value) {
    Mock::given(method("POST"))
        .and(path("/oauth/v2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("token_eu")))
        .mount(mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/oauth/user/info"))
        .respond_with(ResponseTemplate::new(200).set_body_json(example("user_info")))
        .mount(mock)
        .await;
    let state = start(app, "zoho_cliq", t).await;
    let (status, body) = json(
        app.anonymous(
            Method::GET,
            &callback("zoho_cliq", &state, "eu", &mock.uri()),
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

#[tokio::test]
async fn a_cliq_user_in_the_eu_syncs_every_chat_through_a_lockout_and_disconnects_at_its_dc() {
    let mock = MockServer::start().await;
    let app = spawn(&mock).await;
    let t = tenant();
    let (id, view) = connect(&app, &mock, t).await;
    assert_eq!(view["external_account"]["id"], "70027934");
    assert_eq!(
        view["external_account"]["display_name"], "tim.harrison@zylker.eu",
        "{view}"
    );
    assert_eq!(view["account_details"]["data_centre"], "eu");
    assert_eq!(
        view["account_details"]["api_domain"],
        "https://www.zohoapis.eu"
    );

    let cliq = Cliq::default();
    {
        let mut chats = cliq.chats.lock().expect("lock");
        let listed = example("cliq_chats");
        for c in listed["chats"].as_array().expect("chats") {
            chats.push((c.clone(), Vec::new()));
        }
    }
    let base = now().timestamp_millis() - 3_600_000;
    // Alice's chat: 60 messages, two in the same millisecond across the first page's end.
    for i in 0..60i64 {
        let at = if i == 50 {
            base + 49_000
        } else {
            base + i * 1000
        };
        cliq.post(
            ALICE,
            at,
            &format!("{}_a{i}", base + i),
            &format!("Alice {i}"),
        );
    }
    for i in 0..5i64 {
        cliq.post(
            BOB,
            base + i * 7000,
            &format!("{}_b{i}", base + i),
            &format!("Bob {i}"),
        );
    }
    // Older than the first sync's horizon: never reported.
    cliq.post(BOB, base - 30 * 86_400_000, "ancient_b", "Ancient");
    *cliq.lockout_at.lock().expect("lock") = vec![2];
    assert_published_shapes(&cliq);
    Mock::given(method("GET"))
        .and(path("/api/v2/chats"))
        .respond_with(Chats(cliq.clone()))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/v2/chats/[0-9]+/messages$"))
        .respond_with(Messages(cliq.clone()))
        .mount(&mock)
        .await;

    request_sync(&app, t, id).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes.len(), 1);
    match &outcomes[0].result {
        JobResult::Retrying { at, error } => {
            assert!(
                *at >= now() + chrono::Duration::seconds(590),
                "waits Cliq's 10-minute lock: {at}"
            );
            assert!(error.contains("rate limited"), "{error}");
        }
        other => panic!("expected a wait for the lockout, got {other:?}"),
    }
    assert_eq!(outcomes[0].pages, 2, "the chats, then Alice's first page");
    assert_eq!(outcomes[0].new_signals, 50);
    let (_, connection) = app.get_json(t, &format!("/connections/{id}")).await;
    assert_eq!(connection["status"], "active", "{connection}");

    make_jobs_due(&app).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    let signals = signals_of(&app, t).await;
    assert_eq!(signals.len(), 65, "every message exactly once");
    assert!(signals.iter().all(|s| s.kind == "message_posted"));
    let mut keys: Vec<&str> = signals.iter().map(|s| s.dedupe_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 65);
    let one = signals
        .iter()
        .find(|s| s.external_id.as_deref() == Some(&format!("{}_a7", base + 7)))
        .expect("Alice 7");
    assert_eq!(one.title.as_deref(), Some("Alice Johnson"));
    assert_eq!(one.payload.as_ref().expect("payload")["text"], "Alice 7");
    assert_eq!(one.actor.as_ref().expect("actor").id, "711622XXXX");

    // New posts, one in the same millisecond as Bob's newest: exactly those.
    cliq.post(BOB, base + 4 * 7000, "same_ms_b", "Bob again");
    cliq.post(BOB, now().timestamp_millis(), "later_b", "Bob later");
    assert_published_shapes(&cliq);
    request_sync(&app, t, id).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    assert_eq!(outcomes[0].new_signals, 2);

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
