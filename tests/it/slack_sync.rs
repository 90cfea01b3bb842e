//! Slack history by sync against a fake Slack Web API that answers in the shapes of Slack's
//! method examples (`tests/slack/`): a workspace of 50 channels read completely under the
//! commercial class's 1 request a minute, every message exactly once; the first sync's window;
//! a webhook and a sync of one message giving one signal; `429` and its `Retry-After`; and a
//! rotated token refreshed when Slack refuses the old one.
//!
//! The clock is the test's: each run of the job is claimed at the time the previous run was
//! deferred to, by a fresh worker (whose limiter has seen the minute pass), so no test waits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Duration;
use connectors::connector::signature::hmac_sha256_hex;
use connectors::crypto::Secret;
use connectors::domain::{now, TenantId, Timestamp};
use connectors::ingest::inbox;
use connectors::ingest::sync::{JobOutcome, JobResult, SyncWorker};
use reqwest::Method;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{json, post_delivery, tenant, TestApp};

const CLIENT_SECRET: &str = "slack-sync-client-secret";
const SIGNING_SECRET: &str = "slack-sync-signing-secret";
const TEAM: &str = "T9TK3CUKW";
const FIRST_TOKEN: &str = "xoxe.xoxb-1-first";
const ROTATED_TOKEN: &str = "xoxe.xoxb-1-rotated";

/// A published example from `tests/slack/`.
fn example(name: &str) -> Value {
    let path = format!("{}/tests/slack/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("example is JSON")
}

/// A Slack `ts` `secs` seconds after the Unix epoch, `micros` into that second.
fn ts(secs: i64, micros: u32) -> String {
    format!("{secs}.{micros:06}")
}

fn ts_key(ts: &str) -> (u64, u64) {
    let (s, m) = ts.split_once('.').unwrap_or((ts, "0"));
    (s.parse().unwrap_or(0), m.parse().unwrap_or(0))
}

/// A message as `conversations.history` shows it: the first message of its example, changed.
fn message(ts: &str, user: &str, text: &str) -> Value {
    let mut m = example("conversations_history")["messages"][0].clone();
    m["ts"] = json!(ts);
    m["user"] = json!(user);
    m["text"] = json!(text);
    m
}

/// A reply as `conversations.replies` shows it: the example's first reply, changed.
fn reply(parent: &str, ts: &str, text: &str) -> Value {
    let mut m = example("conversations_replies")["messages"][1].clone();
    m["ts"] = json!(ts);
    m["thread_ts"] = json!(parent);
    m["text"] = json!(text);
    m
}

/// A reaction entry of `reactions.get`'s example, changed.
fn reaction(name: &str, users: &[&str]) -> Value {
    let mut r = example("reactions_get")["file"]["reactions"][0].clone();
    r["name"] = json!(name);
    r["users"] = json!(users);
    r["count"] = json!(users.len());
    r
}

/// The workspace the fake Slack serves, and what it was asked.
#[derive(Default)]
struct Workspace {
    /// Channel id and whether it is private, in listing order.
    channels: Vec<(String, bool)>,
    /// Top-level messages by channel.
    history: HashMap<String, Vec<Value>>,
    /// Replies by (channel, parent ts).
    replies: HashMap<(String, String), Vec<Value>>,
    /// How often each `channel:ts` was served (a thread's parent on a replies page excepted).
    served: BTreeMap<String, u32>,
    /// Every Web API request: method and query.
    requests: Vec<(String, HashMap<String, String>)>,
    /// The bot token Slack accepts.
    token: String,
    /// Answer the next history request `429` with this `Retry-After`.
    throttle_once: Option<u64>,
}

impl Workspace {
    fn add_thread(&mut self, channel: &str, parent: &str, replies: Vec<Value>) {
        let latest = replies
            .iter()
            .filter_map(|r| r["ts"].as_str())
            .max_by_key(|t| ts_key(t))
            .map(str::to_string);
        let top = self.history.get_mut(channel).expect("channel");
        let parent_message = top.iter_mut().find(|m| m["ts"] == parent).expect("parent");
        parent_message["thread_ts"] = json!(parent);
        parent_message["reply_count"] = json!(replies.len());
        parent_message["latest_reply"] = json!(latest);
        self.replies
            .insert((channel.to_string(), parent.to_string()), replies);
    }
}

#[derive(Clone, Default)]
struct FakeSlack(Arc<Mutex<Workspace>>);

/// A page of `items` from the opaque `cursor` on, and the next page's cursor ("" at the end).
fn page_of(items: &[Value], cursor: Option<&String>, limit: usize) -> (Vec<Value>, String) {
    let offset: usize = cursor
        .and_then(|c| STANDARD.decode(c).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    let end = (offset + limit).min(items.len());
    let page = items.get(offset..end).unwrap_or_default().to_vec();
    let next = if end < items.len() {
        STANDARD.encode(format!("offset:{end}"))
    } else {
        String::new()
    };
    (page, next)
}

fn answer(mut body: Value, next: String) -> ResponseTemplate {
    body["ok"] = json!(true);
    body["has_more"] = json!(!next.is_empty());
    body["response_metadata"] = json!({ "next_cursor": next });
    ResponseTemplate::new(200).set_body_json(body)
}

impl Respond for FakeSlack {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut w = self.0.lock().expect("lock");
        let name = request.url.path().trim_start_matches("/api/").to_string();
        let query: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
        w.requests.push((name.clone(), query.clone()));
        let bearer = format!("Bearer {}", w.token);
        if request.headers.get("authorization").map(|v| v.as_bytes()) != Some(bearer.as_bytes()) {
            return ResponseTemplate::new(200)
                .set_body_json(json!({ "ok": false, "error": "invalid_auth" }));
        }
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100);
        let after =
            |m: &Value, oldest: &str| ts_key(m["ts"].as_str().unwrap_or_default()) > ts_key(oldest);
        match name.as_str() {
            "users.conversations" => {
                assert_eq!(query["types"], "public_channel,private_channel");
                let template = example("users_conversations")["channels"][0].clone();
                let channels: Vec<Value> = w
                    .channels
                    .iter()
                    .map(|(id, private)| {
                        let mut c = template.clone();
                        c["id"] = json!(id);
                        c["name"] = json!(id.to_lowercase());
                        c["is_private"] = json!(private);
                        c
                    })
                    .collect();
                // Slack may return fewer than asked for: 30 a page here.
                let (page, next) = page_of(&channels, query.get("cursor"), limit.min(30));
                answer(json!({ "channels": page }), next)
            }
            "conversations.history" => {
                if let Some(wait) = w.throttle_once.take() {
                    return ResponseTemplate::new(429)
                        .insert_header("Retry-After", wait.to_string().as_str())
                        .set_body_json(example("ratelimited"));
                }
                assert_eq!(query["inclusive"], "false");
                let channel = &query["channel"];
                let oldest = query.get("oldest").cloned().unwrap_or_default();
                let mut listed: Vec<Value> = w.history[channel]
                    .iter()
                    .filter(|m| after(m, &oldest))
                    .cloned()
                    .collect();
                listed.sort_by_key(|m| std::cmp::Reverse(ts_key(m["ts"].as_str().unwrap_or(""))));
                let (page, next) = page_of(&listed, query.get("cursor"), limit);
                for m in &page {
                    *w.served
                        .entry(format!("{channel}:{}", m["ts"].as_str().unwrap_or("")))
                        .or_default() += 1;
                }
                answer(json!({ "messages": page, "pin_count": 0 }), next)
            }
            "conversations.replies" => {
                let (channel, parent) = (&query["channel"], &query["ts"]);
                let oldest = query.get("oldest").cloned().unwrap_or_default();
                let head = w.history[channel]
                    .iter()
                    .find(|m| m["ts"] == parent.as_str())
                    .cloned()
                    .expect("parent");
                let replies: Vec<Value> = w.replies[&(channel.clone(), parent.clone())]
                    .iter()
                    .filter(|m| after(m, &oldest))
                    .cloned()
                    .collect();
                let (page, next) = page_of(&replies, query.get("cursor"), limit);
                for m in &page {
                    *w.served
                        .entry(format!("{channel}:{}", m["ts"].as_str().unwrap_or("")))
                        .or_default() += 1;
                }
                // The parent heads every page of a thread.
                let mut messages = vec![head];
                messages.extend(page);
                answer(json!({ "messages": messages }), next)
            }
            other => panic!("unexpected Slack method {other}"),
        }
    }
}

/// A service whose Slack lives on `mock` (`/api` for the Web API) with the given app class.
async fn spawn(mock: &MockServer, extra: &[(&str, &str)]) -> TestApp {
    let api = format!("{}/api", mock.uri());
    let mut settings = vec![
        ("POBLYSH_SLACK_CLIENT_ID", "slack-client-id"),
        ("POBLYSH_SLACK_CLIENT_SECRET", CLIENT_SECRET),
        ("POBLYSH_SLACK_WEBHOOK_SECRET", SIGNING_SECRET),
        ("POBLYSH_SLACK_AUTH_BASE_URL", mock.uri().leak()),
        ("POBLYSH_SLACK_API_BASE_URL", api.leak()),
    ];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings).await
}

/// Connects `t` to the workspace over HTTP, Slack answering the exchange with its published
/// example turned into a rotating bot token of a single-workspace install
/// (https://api.slack.com/authentication/rotation); returns the connection's id.
async fn connect(app: &TestApp, mock: &MockServer, t: TenantId) -> String {
    let mut exchange = example("oauth_v2_access");
    exchange["access_token"] = json!(FIRST_TOKEN);
    exchange["scope"] =
        json!("channels:history,channels:read,groups:history,groups:read,reactions:read");
    exchange["enterprise"] = Value::Null;
    exchange["is_enterprise_install"] = json!(false);
    exchange["refresh_token"] = json!("xoxe-1-refresh-first");
    exchange["expires_in"] = json!(43200);
    assert_eq!(exchange["team"]["id"], TEAM, "the example's workspace");
    Mock::given(method("POST"))
        .and(path("/api/oauth.v2.access"))
        .and(wiremock::matchers::body_string_contains(
            "grant_type=authorization_code",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(exchange))
        .mount(mock)
        .await;
    let response = app
        .operator(Method::POST, "/connect/slack")
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    let (status, body) = json(response).await;
    assert_eq!(status, 200, "{body}");
    let url = app
        .through_hop(body["authorize_url"].as_str().expect("url"))
        .await;
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("state");
    let callback = format!("/connect/slack/callback?code=install-code&state={state}");
    let (status, body) = json(
        app.anonymous(Method::GET, &callback)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["connection"]["id"].as_str().expect("id").to_string()
}

async fn mount(mock: &MockServer, fake: &FakeSlack) {
    Mock::given(method("GET"))
        .and(path_regex(
            r"^/api/(users\.conversations|conversations\.history|conversations\.replies)$",
        ))
        .respond_with(fake.clone())
        .mount(mock)
        .await;
}

async fn sync_now(app: &TestApp, t: TenantId, connection: &str) {
    let response = app
        .operator(Method::POST, &format!("/connections/{connection}/sync"))
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
}

/// Runs the queued job to its end on the test's clock: each run is claimed at the time the run
/// before was deferred to (a fresh worker's limiter has seen that time pass). Asserts that no
/// run sent more than one request and that every deferral waits out the minute; returns the
/// runs and the clock at the end.
async fn run_to_end(app: &TestApp, fake: &FakeSlack, mut clock: Timestamp) -> (usize, Timestamp) {
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs < 1_000, "the sync does not end");
        let worker = SyncWorker::new();
        let lease = Duration::from_std(SyncWorker::lease(&app.state)).expect("lease");
        let job = app
            .store()
            .claim_sync_job(worker.owner(), clock, clock + lease)
            .await
            .expect("claim")
            .expect("a due job");
        let before = fake.0.lock().expect("lock").requests.len();
        let started = now();
        let connector = app.state.registry.get(&job.provider).map(|e| e.connector);
        let outcome: JobOutcome = worker
            .run_job(&app.state, connector, job)
            .await
            .expect("recorded");
        let sent = fake.0.lock().expect("lock").requests.len() - before;
        assert!(sent <= 1, "run {runs} sent {sent} requests in its minute");
        match outcome.result {
            JobResult::Deferred { at } => {
                assert!(
                    at >= started + Duration::seconds(59),
                    "run {runs} resumes at {at}, within the minute"
                );
                clock = clock.max(at);
            }
            JobResult::Succeeded => return (runs, clock),
            other => panic!("run {runs} ended {other:?}"),
        }
    }
}

/// Every signal of the connection, `(kind, dedupe-equivalent id)`: kind, external id and the
/// payload members that tell reactions and edits apart.
async fn all_signals(app: &TestApp, t: TenantId, connection: &str) -> Vec<Value> {
    let mut found = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut uri = format!("/signals?connection_id={connection}&limit=100&include_payload=true");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={c}"));
        }
        let (status, body) = app.get_json(t, &uri).await;
        assert_eq!(status, 200, "{body}");
        found.extend(body["signals"].as_array().expect("signals").iter().cloned());
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return found,
        }
    }
}

fn count(signals: &[Value], kind: &str) -> usize {
    signals.iter().filter(|s| s["kind"] == kind).count()
}

#[tokio::test]
async fn fifty_channels_sync_completely_at_one_request_a_minute_every_message_once() {
    let mock = MockServer::start().await;
    let fake = FakeSlack::default();
    let start = now().timestamp() - 2 * 86_400;
    {
        let mut w = fake.0.lock().expect("lock");
        w.token = FIRST_TOKEN.into();
        for c in 0..50i64 {
            let id = format!("C{c:08}");
            let mut messages: Vec<Value> = (0..17i64)
                .map(|m| message(&ts(start + c * 100 + m, 100), "U1", &format!("{id} #{m}")))
                .collect();
            // Eight days ago: before the first sync's window.
            messages.push(message(&ts(start - 6 * 86_400, 1), "U1", "too old"));
            w.history.insert(id.clone(), messages);
            w.channels.push((id, c % 10 == 0));
        }
        // Threads in five channels, three replies each.
        for c in 0..5i64 {
            let id = format!("C{c:08}");
            let parent = ts(start + c * 100, 100);
            let replies: Vec<Value> = (1..=3)
                .map(|r| reply(&parent, &ts(start + c * 100 + 50, r), &format!("reply {r}")))
                .collect();
            w.add_thread(&id, &parent, replies);
        }
        let general = w.history.get_mut("C00000007").expect("channel");
        general[3]["edited"] = json!({ "user": "U1", "ts": ts(start + 900, 1) });
        general[4]["reactions"] = json!([reaction("tada", &["U2", "U3"])]);
    }
    mount(&mock, &fake).await;
    let app = spawn(&mock, &[]).await;
    let t = tenant();
    let cid = connect(&app, &mock, t).await;

    sync_now(&app, t, &cid).await;
    let (runs, clock) = run_to_end(&app, &fake, now()).await;

    let signals = all_signals(&app, t, &cid).await;
    // 50 × 17 top-level messages and 5 × 3 replies, each posted once.
    assert_eq!(count(&signals, "message_posted"), 50 * 17 + 15);
    assert_eq!(count(&signals, "message_updated"), 1);
    assert_eq!(count(&signals, "reaction_added"), 2);
    assert!(!signals.iter().any(|s| s["title"] == "too old"));
    let private = signals
        .iter()
        .find(|s| {
            s["external_id"]
                .as_str()
                .is_some_and(|e| e.starts_with("C00000010:"))
        })
        .expect("a private channel's message");
    assert_eq!(private["payload"]["channel_type"], "group");
    {
        let w = fake.0.lock().expect("lock");
        assert_eq!(w.served.len(), 50 * 17 + 15, "every message served");
        assert!(
            w.served.values().all(|n| *n == 1),
            "no message read twice: {:?}",
            w.served.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
        for (name, query) in &w.requests {
            if name != "users.conversations" {
                assert_eq!(query["limit"], "15", "the commercial class's page");
            }
        }
        // 2 listing pages, 2 history pages per channel, 1 replies page per thread.
        assert_eq!(w.requests.len(), 2 + 100 + 5);
        assert_eq!(runs, w.requests.len(), "one request a run, a minute apart");
    }

    // The next round reads only what came after each channel's newest message.
    {
        let mut w = fake.0.lock().expect("lock");
        w.requests.clear();
        for c in [3, 30] {
            let id = format!("C{c:08}");
            let later = message(&ts(start + 86_400 + c, 5), "U9", "later");
            w.history.get_mut(&id).expect("channel").push(later);
        }
    }
    sync_now(&app, t, &cid).await;
    let (runs, _) = run_to_end(&app, &fake, clock).await;
    let signals = all_signals(&app, t, &cid).await;
    assert_eq!(count(&signals, "message_posted"), 50 * 17 + 15 + 2);
    let w = fake.0.lock().expect("lock");
    assert!(w.served.values().all(|n| *n == 1), "still nothing twice");
    assert_eq!(runs, 2 + 50, "a listing and one history page a channel");
    let asked = w
        .requests
        .iter()
        .find(|(name, q)| name == "conversations.history" && q["channel"] == "C00000001")
        .expect("asked");
    assert_eq!(
        asked.1["oldest"],
        ts(start + 100 + 16, 100),
        "its newest ts"
    );
}

/// Posts a signed Events API delivery to the app's Request URL.
async fn deliver(app: &TestApp, body: &Value) {
    let body = serde_json::to_vec(body).expect("json");
    let timestamp = now().timestamp().to_string();
    let signature = hmac_sha256_hex(
        &Secret::new(SIGNING_SECRET),
        &[b"v0:", timestamp.as_bytes(), b":", &body],
    );
    let headers = vec![
        ("X-Slack-Request-Timestamp", timestamp),
        ("X-Slack-Signature", format!("v0={signature}")),
        ("Content-Type", "application/json".to_string()),
    ];
    let response = post_delivery(app, "/webhooks/slack", headers, &body).await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn a_message_and_reaction_delivered_by_webhook_and_read_by_sync_are_one_signal_each() {
    let mock = MockServer::start().await;
    let fake = FakeSlack::default();
    let posted = ts(now().timestamp() - 3600, 42);
    {
        let mut w = fake.0.lock().expect("lock");
        w.token = FIRST_TOKEN.into();
        w.channels.push(("C123ABC456".into(), false));
        let mut m = message(&posted, "U123ABC456", "Hello world");
        m["reactions"] = json!([reaction("thumbsup", &["U222222222"])]);
        w.history.insert("C123ABC456".into(), vec![m]);
    }
    mount(&mock, &fake).await;
    let app = spawn(&mock, &[("POBLYSH_SLACK_APP_CLASS", "internal")]).await;
    let t = tenant();
    let cid = connect(&app, &mock, t).await;

    // Slack's own examples, about the same message, in the connected workspace.
    let mut envelope = example("message");
    envelope["team_id"] = json!(TEAM);
    envelope["authorizations"][0]["team_id"] = json!(TEAM);
    envelope["event"]["ts"] = json!(posted);
    envelope["event"]["event_ts"] = json!(posted);
    deliver(&app, &envelope).await;
    let mut reacted = example("reaction_added");
    reacted["team_id"] = json!(TEAM);
    reacted["authorizations"][0]["team_id"] = json!(TEAM);
    reacted["event_id"] = json!("Ev-reaction");
    reacted["event"]["user"] = json!("U222222222");
    reacted["event"]["item"]["ts"] = json!(posted);
    deliver(&app, &reacted).await;
    inbox::drain(&app.state).await.expect("drain");
    assert_eq!(all_signals(&app, t, &cid).await.len(), 2);

    sync_now(&app, t, &cid).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(
        outcomes[0].result,
        JobResult::Succeeded,
        "internal apps are not paced to a minute"
    );
    assert_eq!(outcomes[0].new_signals, 0, "both were already known");
    let signals = all_signals(&app, t, &cid).await;
    assert_eq!(signals.len(), 2, "{signals:?}");
    let w = fake.0.lock().expect("lock");
    assert!(w
        .requests
        .iter()
        .filter(|(name, _)| name != "users.conversations")
        .all(|(_, q)| q["limit"] == "200"));
}

#[tokio::test]
async fn a_429_is_waited_out_for_its_retry_after_and_nothing_is_lost() {
    let mock = MockServer::start().await;
    let fake = FakeSlack::default();
    let base = now().timestamp() - 600;
    {
        let mut w = fake.0.lock().expect("lock");
        w.token = FIRST_TOKEN.into();
        w.channels.push(("C1".into(), false));
        w.history.insert(
            "C1".into(),
            (0..3)
                .map(|i| message(&ts(base + i, 0), "U1", "hi"))
                .collect(),
        );
        w.throttle_once = Some(120);
    }
    mount(&mock, &fake).await;
    let app = spawn(&mock, &[("POBLYSH_SLACK_APP_CLASS", "marketplace")]).await;
    let t = tenant();
    let cid = connect(&app, &mock, t).await;
    sync_now(&app, t, &cid).await;
    let before = now();
    let outcome = SyncWorker::new()
        .run_once(&app.state)
        .await
        .expect("recorded")
        .expect("a job");
    let JobResult::Retrying { at, .. } = outcome.result else {
        panic!("{outcome:?}");
    };
    assert!(
        at >= before + Duration::seconds(120),
        "Retry-After honoured: {at}"
    );
    assert!(all_signals(&app, t, &cid).await.is_empty());
    let (_, _) = run_to_end(&app, &fake, at).await;
    assert_eq!(all_signals(&app, t, &cid).await.len(), 3);
}

#[tokio::test]
async fn a_refused_rotating_token_is_refreshed_and_the_sync_goes_on_with_the_new_one() {
    let mock = MockServer::start().await;
    let fake = FakeSlack::default();
    {
        let mut w = fake.0.lock().expect("lock");
        // Slack has rotated the token: the stored one is refused with `invalid_auth`.
        w.token = ROTATED_TOKEN.into();
        w.channels.push(("C1".into(), false));
        let m = message(&ts(now().timestamp() - 60, 7), "U1", "after the rotation");
        w.history.insert("C1".into(), vec![m]);
    }
    mount(&mock, &fake).await;
    // The refresh grant of https://api.slack.com/authentication/rotation, client as Basic.
    Mock::given(method("POST"))
        .and(path("/api/oauth.v2.access"))
        .and(wiremock::matchers::body_string_contains(
            "grant_type=refresh_token",
        ))
        .and(wiremock::matchers::body_string_contains(
            "refresh_token=xoxe-1-refresh-first",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "access_token": ROTATED_TOKEN, "token_type": "bot",
            "refresh_token": "xoxe-1-refresh-second", "expires_in": 43200,
            "scope": "channels:history,channels:read,groups:history,groups:read,reactions:read",
            "team": { "name": "Slack Softball Team", "id": TEAM }
        })))
        .expect(1)
        .mount(&mock)
        .await;
    let app = spawn(&mock, &[("POBLYSH_SLACK_APP_CLASS", "internal")]).await;
    let t = tenant();
    let cid = connect(&app, &mock, t).await;
    sync_now(&app, t, &cid).await;
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes[0].result, JobResult::Succeeded, "{outcomes:?}");
    let signals = all_signals(&app, t, &cid).await;
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0]["title"], "after the rotation");
    let w = fake.0.lock().expect("lock");
    assert_eq!(w.requests[0].0, "users.conversations");
    assert!(w.requests.len() >= 3, "refused once, then asked again");
}

/// Slack's lifecycle example `name` for the connected workspace, under its own `event_id`.
fn lifecycle(name: &str, event_id: &str) -> Value {
    let mut body = example(name);
    body["team_id"] = json!(TEAM);
    body["event_id"] = json!(event_id);
    body
}

async fn connection(app: &TestApp, t: TenantId, id: &str) -> Value {
    let (status, body) = app.get_json(t, &format!("/connections/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn an_uninstall_revokes_every_connection_to_the_workspace_and_stops_their_syncs() {
    let mock = MockServer::start().await;
    let fake = FakeSlack::default();
    {
        let mut w = fake.0.lock().expect("lock");
        w.token = FIRST_TOKEN.into();
        w.channels.push(("C1".into(), false));
        w.history.insert(
            "C1".into(),
            vec![message(&ts(now().timestamp() - 60, 1), "U1", "hi")],
        );
    }
    mount(&mock, &fake).await;
    let app = spawn(&mock, &[("POBLYSH_SLACK_APP_CLASS", "internal")]).await;
    let (a, b) = (tenant(), tenant());
    let first = connect(&app, &mock, a).await;
    let second = connect(&app, &mock, b).await;
    sync_now(&app, a, &first).await;

    deliver(&app, &lifecycle("app_uninstalled", "Ev-uninstalled")).await;
    inbox::drain(&app.state).await.expect("drain");

    for (t, id) in [(a, &first), (b, &second)] {
        let revoked = connection(&app, t, id).await;
        assert_eq!(revoked["status"], "revoked", "{revoked}");
        assert!(
            revoked["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("uninstalled")),
            "{revoked}"
        );
    }
    let outcomes = SyncWorker::new().drain(&app.state).await.expect("drain");
    assert_eq!(outcomes.len(), 1);
    assert!(
        matches!(outcomes[0].result, JobResult::Failed { .. }),
        "{outcomes:?}"
    );
    assert!(
        fake.0.lock().expect("lock").requests.is_empty(),
        "no call after the uninstall"
    );
    let response = app
        .operator(Method::POST, &format!("/connections/{first}/sync"))
        .header("X-Tenant-Id", a.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 409);
}

#[tokio::test]
async fn a_revoked_bot_token_revokes_the_connection_but_a_revoked_user_token_does_not() {
    let mock = MockServer::start().await;
    let fake = FakeSlack::default();
    mount(&mock, &fake).await;
    let app = spawn(&mock, &[]).await;
    let t = tenant();
    let id = connect(&app, &mock, t).await;

    let mut users_only = lifecycle("tokens_revoked", "Ev-user-token");
    users_only["event"]["tokens"]["bot"] = json!([]);
    deliver(&app, &users_only).await;
    inbox::drain(&app.state).await.expect("drain");
    assert_eq!(connection(&app, t, &id).await["status"], "active");

    deliver(&app, &lifecycle("tokens_revoked", "Ev-bot-token")).await;
    inbox::drain(&app.state).await.expect("drain");
    let revoked = connection(&app, t, &id).await;
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("bot token")));
}

#[test]
fn the_app_class_sets_slacks_limit_which_the_rate_limit_variables_still_override() {
    use connectors::config::{Config, Source};
    let policy = |pairs: &[(&str, &str)]| {
        let mut all = vec![("POBLYSH_PROFILE", "test")];
        all.extend_from_slice(pairs);
        let config = Config::from_source(&Source::from_pairs(all)).expect("valid");
        let p = config.provider("slack").expect("slack").rate_limit;
        (p.requests, p.window_secs, p.burst)
    };
    assert_eq!(policy(&[]), (1, 60, 1), "commercial by default");
    assert_eq!(
        policy(&[("POBLYSH_SLACK_APP_CLASS", "commercial")]),
        (1, 60, 1)
    );
    assert_eq!(
        policy(&[("POBLYSH_SLACK_APP_CLASS", "marketplace")]),
        (50, 60, 10)
    );
    assert_eq!(
        policy(&[("POBLYSH_SLACK_APP_CLASS", "internal")]),
        (50, 60, 10)
    );
    assert_eq!(
        policy(&[
            ("POBLYSH_SLACK_APP_CLASS", "internal"),
            ("POBLYSH_SLACK_RATE_LIMIT_REQUESTS", "20"),
        ]),
        (20, 60, 10)
    );
    for (name, bad) in [
        ("POBLYSH_SLACK_APP_CLASS", "enterprise"),
        ("POBLYSH_SLACK_INITIAL_SYNC_DAYS", "0"),
        ("POBLYSH_SLACK_INITIAL_SYNC_DAYS", "a week"),
    ] {
        let err = Config::from_source(&Source::from_pairs([
            ("POBLYSH_PROFILE", "test"),
            (name, bad),
        ]))
        .expect_err("refused");
        assert_eq!(err.variable, name);
    }
}

#[tokio::test]
async fn the_first_sync_reads_back_the_configured_number_of_days_only() {
    let mock = MockServer::start().await;
    let fake = FakeSlack::default();
    let day = 86_400;
    {
        let mut w = fake.0.lock().expect("lock");
        w.token = FIRST_TOKEN.into();
        w.channels.push(("C1".into(), false));
        let n = now().timestamp();
        let messages = vec![
            message(&ts(n - 2 * day, 0), "U1", "two days ago"),
            message(&ts(n - 4 * day, 0), "U1", "four days ago"),
        ];
        w.history.insert("C1".into(), messages);
    }
    mount(&mock, &fake).await;
    let app = spawn(
        &mock,
        &[
            ("POBLYSH_SLACK_APP_CLASS", "internal"),
            ("POBLYSH_SLACK_INITIAL_SYNC_DAYS", "3"),
        ],
    )
    .await;
    let t = tenant();
    let cid = connect(&app, &mock, t).await;
    let asked_from = now().timestamp() - 3 * day;
    sync_now(&app, t, &cid).await;
    SyncWorker::new().drain(&app.state).await.expect("drain");
    let signals = all_signals(&app, t, &cid).await;
    let titles: Vec<&str> = signals.iter().filter_map(|s| s["title"].as_str()).collect();
    assert_eq!(titles, ["two days ago"]);
    let w = fake.0.lock().expect("lock");
    let oldest = w
        .requests
        .iter()
        .find(|(name, _)| name == "conversations.history")
        .map(|(_, q)| q["oldest"].clone())
        .expect("history asked");
    let secs: i64 = ts_key(&oldest).0.try_into().expect("secs");
    assert!((secs - asked_from).abs() <= 5, "{oldest} vs {asked_from}");
}
