//! `GET /signals/stream`: new signals arrive as Server-Sent Events, filtered like
//! `GET /signals`, resumable with `Last-Event-ID`, never another tenant's; heartbeats; a client
//! that stops reading is cut off; streams end after their lifetime; past the cap of open
//! streams the answer is `503`. On PostgreSQL, a signal stored by another process reaches a
//! stream.

use std::time::{Duration, Instant};

use connectors::domain::{Connection, ConnectionId, NewSignal, TenantId};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::faults::{client, connect_sandbox, crypto_key, postgres_admin_url, Database, Service};
use crate::helpers::{assert_problem, signal, tenant, TestApp, TOKEN};

/// Long enough for a wake-up on a busy machine, far below any poll interval the tests set.
const SOON: Duration = Duration::from_secs(10);

/// What a stream sent.
#[derive(Debug)]
enum Frame {
    Signal { id: String, data: Value },
    Comment(String),
}

/// An open stream, read frame by frame.
struct Stream {
    response: Response,
    text: String,
}

impl Stream {
    /// Opens `/signals/stream?{query}` for `t`, resuming after `last_event_id` when given.
    async fn open(app: &TestApp, t: TenantId, query: &str, last_event_id: Option<&str>) -> Self {
        let response = Self::request(app, t, query, last_event_id).await;
        assert_eq!(response.status(), 200, "the stream opens");
        let content_type = response.headers()["content-type"].to_str().expect("ascii");
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            response,
            text: String::new(),
        }
    }

    async fn request(
        app: &TestApp,
        t: TenantId,
        query: &str,
        last_event_id: Option<&str>,
    ) -> Response {
        let mut request = app.get(t, &format!("/signals/stream?{query}"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        request.send().await.expect("sent")
    }

    fn from_response(response: Response) -> Self {
        Self {
            response,
            text: String::new(),
        }
    }

    /// The next frame, or `None` once the stream has ended; fails after `within`.
    async fn frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("nothing within {within:?}; so far: {:?}", self.text))
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self
                    .text
                    .push_str(std::str::from_utf8(&bytes).expect("utf-8")),
                None => {
                    assert!(
                        self.text.trim().is_empty(),
                        "a partial frame: {:?}",
                        self.text
                    );
                    return None;
                }
            }
        }
    }

    /// The next signal event (comments skipped); fails when none comes within `within`.
    async fn signal(&mut self, within: Duration) -> (String, Value) {
        loop {
            match self.frame(within).await {
                Some(Frame::Signal { id, data }) => return (id, data),
                Some(Frame::Comment(_)) => {}
                None => panic!("the stream ended before a signal"),
            }
        }
    }

    /// Asserts that no signal event comes within `quiet` (comments allowed).
    async fn no_signal(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Err(_) => break,
                Ok(chunk) => match chunk.expect("the stream reads") {
                    Some(bytes) => self
                        .text
                        .push_str(std::str::from_utf8(&bytes).expect("utf-8")),
                    None => break,
                },
            }
        }
        assert!(
            !self.text.contains("event: signal") && !self.text.contains("event:signal"),
            "no signal expected, got {:?}",
            self.text
        );
    }
}

/// One event block of `text/event-stream`.
fn parse(block: &str) -> Frame {
    let (mut event, mut id, mut data, mut comment) = (None, None, String::new(), None);
    for line in block.lines().filter(|l| !l.is_empty()) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "" => comment = Some(value.to_string()),
            "event" => event = Some(value.to_string()),
            "id" => id = Some(value.to_string()),
            "data" => data.push_str(value),
            other => panic!("unexpected field {other:?} in {block:?}"),
        }
    }
    match (event.as_deref(), id) {
        (Some("signal"), Some(id)) => Frame::Signal {
            id,
            data: serde_json::from_str(&data).expect("JSON data"),
        },
        (None, None) if data.is_empty() => Frame::Comment(comment.unwrap_or_default()),
        _ => panic!("unexpected block {block:?}"),
    }
}

/// Stores one signal of `connection` of `kind`, in a commit of its own.
async fn store(app: &TestApp, connection: &Connection, kind: &str) -> NewSignal {
    app.signals(vec![signal(connection, kind, 1)])
        .await
        .remove(0)
}

#[tokio::test]
async fn a_signal_stored_after_the_stream_opens_arrives_as_get_signal_shows_it() {
    // A minute between polls: only a wake-up delivers within `SOON` (on PostgreSQL, the
    // worker role listens for them).
    let app = TestApp::spawn_with(&[
        ("POBLYSH_ROLES", "api,worker"),
        ("POBLYSH_WORKER_POLL_INTERVAL_MS", "60000"),
    ])
    .await;
    let t = tenant();
    let connection = app.connection(t, "github").await;
    store(&app, &connection, "pr_opened").await;
    let mut stream = Stream::open(&app, t, "include_payload=true", None).await;

    let stored = store(&app, &connection, "pr_merged").await;

    let (id, data) = stream.signal(SOON).await;
    assert_eq!(
        data["id"],
        stored.id.to_string(),
        "only signals stored after it opened"
    );
    let (status, shown) = app.get_json(t, &format!("/signals/{}", stored.id)).await;
    assert_eq!(status, 200);
    assert_eq!(
        data, shown,
        "the data is the signal as GET /signals/{{id}} shows it"
    );
    // The event id is the signal's cursor: `GET /signals` pages after it.
    let (status, page) = app.get_json(t, &format!("/signals?cursor={id}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["signals"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn the_filters_of_get_signals_apply_and_unknown_parameters_are_refused() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let github = app.connection(t, "github").await;
    let other = app.connection(t, "github").await;
    let query = format!("kind=pr_merged&connection_id={}", github.id);
    let mut stream = Stream::open(&app, t, &query, None).await;

    store(&app, &github, "pr_opened").await;
    store(&app, &other, "pr_merged").await;
    let mut old = signal(&github, "pr_merged", 0);
    old.occurred_at -= chrono::Duration::hours(3);
    let mut recent = Stream::open(
        &app,
        t,
        &format!(
            "{query}&occurred_after={}",
            (connectors::domain::now() - chrono::Duration::hours(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None,
    )
    .await;
    app.signals(vec![old.clone()]).await;
    let wanted = store(&app, &github, "pr_merged").await;

    let (_, first) = stream.signal(SOON).await;
    assert_eq!(
        first["id"],
        old.id.to_string(),
        "the first match in commit order"
    );
    assert!(
        first.get("payload").is_none(),
        "no payload unless asked for"
    );
    let (_, second) = stream.signal(SOON).await;
    assert_eq!(second["id"], wanted.id.to_string());
    let (_, only) = recent.signal(SOON).await;
    assert_eq!(only["id"], wanted.id.to_string(), "occurred_after applies");

    let refused = Stream::request(&app, t, "limit=5&colour=blue", None).await;
    let problem = assert_problem(refused, 400, "VALIDATION_FAILED").await;
    assert!(problem["details"]["colour"].is_string(), "{problem}");
    assert!(problem["details"]["limit"].is_string(), "{problem}");
    let refused = Stream::request(&app, t, "kind=no_such_kind", None).await;
    assert_problem(refused, 400, "VALIDATION_FAILED").await;
}

#[tokio::test]
async fn resuming_with_last_event_id_yields_exactly_the_signals_after_it() {
    let app = TestApp::spawn().await;
    let t = tenant();
    let connection = app.connection(t, "github").await;
    let mut first = Stream::open(&app, t, "", None).await;
    let mut stored = Vec::new();
    for _ in 0..5 {
        stored.push(store(&app, &connection, "pr_opened").await.id.to_string());
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(first.signal(SOON).await);
    }
    let ids: Vec<String> = seen
        .iter()
        .map(|(_, d)| d["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, stored, "in the order they were stored");
    drop(first);

    let resume_after = seen[1].0.clone();
    let mut resumed = Stream::open(&app, t, "", Some(&resume_after)).await;
    let sixth = store(&app, &connection, "pr_opened").await.id.to_string();
    let mut again = Vec::new();
    for _ in 0..4 {
        let (_, data) = resumed.signal(SOON).await;
        again.push(data["id"].as_str().expect("id").to_string());
    }
    let mut expected = stored[2..].to_vec();
    expected.push(sixth);
    assert_eq!(
        again, expected,
        "exactly the signals after the last event id"
    );
    resumed.no_signal(Duration::from_millis(700)).await;

    // The `cursor` parameter resumes the same way; `Last-Event-ID` wins over it.
    let mut by_query = Stream::open(&app, t, &format!("cursor={}", seen[3].0), None).await;
    let (_, data) = by_query.signal(SOON).await;
    assert_eq!(data["id"], stored[4]);
    let mut both = Stream::open(&app, t, &format!("cursor={}", seen[0].0), Some(&seen[3].0)).await;
    let (_, data) = both.signal(SOON).await;
    assert_eq!(data["id"], stored[4], "Last-Event-ID takes precedence");

    let bad = Stream::request(&app, t, "", Some("not-a-cursor")).await;
    assert_problem(bad, 400, "INVALID_CURSOR").await;
    let bad = Stream::request(&app, t, "cursor=not-a-cursor", None).await;
    assert_problem(bad, 400, "INVALID_CURSOR").await;
    let other_filters = Stream::request(&app, t, "kind=pr_opened", Some(&seen[0].0)).await;
    assert_problem(other_filters, 400, "INVALID_CURSOR").await;
}

#[tokio::test]
async fn a_foreign_tenants_signals_never_appear_and_its_cursors_are_refused() {
    let app = TestApp::spawn().await;
    let (ours, theirs) = (tenant(), tenant());
    let our_connection = app.connection(ours, "github").await;
    let their_connection = app.connection(theirs, "github").await;
    let mut stream = Stream::open(&app, ours, "", None).await;
    let mut foreign = Stream::open(&app, theirs, "", None).await;

    store(&app, &their_connection, "pr_opened").await;
    let own = store(&app, &our_connection, "pr_opened").await;

    let (_, data) = stream.signal(SOON).await;
    assert_eq!(
        data["id"],
        own.id.to_string(),
        "the other tenant's signal is not ours"
    );
    stream.no_signal(Duration::from_millis(700)).await;
    let (their_cursor, _) = foreign.signal(SOON).await;
    let refused = Stream::request(&app, ours, "", Some(&their_cursor)).await;
    assert_problem(refused, 400, "INVALID_CURSOR").await;
}

#[tokio::test]
async fn heartbeats_are_sent_while_nothing_happens() {
    let app = TestApp::spawn_with(&[("POBLYSH_STREAM_HEARTBEAT_SECS", "1")]).await;
    let t = tenant();
    let mut stream = Stream::open(&app, t, "", None).await;
    match stream.frame(Duration::from_secs(5)).await {
        Some(Frame::Comment(text)) => assert_eq!(text, "keep-alive"),
        other => panic!("expected a keep-alive comment, got {other:?}"),
    }
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_cut_off_while_others_are_served() {
    let app = TestApp::spawn_with(&[
        ("POBLYSH_STREAM_BUFFER", "1"),
        ("POBLYSH_STREAM_MAX_OPEN", "2"),
    ])
    .await;
    let t = tenant();
    let connection = app.connection(t, "github").await;
    // Never read: its socket and the server's buffers fill, then its one-event buffer.
    let stalled = Stream::open(&app, t, "include_payload=true", None).await;
    let mut reader = Stream::open(&app, t, "", None).await;
    let full = Stream::request(&app, t, "", None).await;
    assert_eq!(full.status(), 503, "both slots taken");

    let big = "x".repeat(64 * 1024);
    let mut freed = false;
    let mut last = None;
    for _ in 0..400 {
        let mut s = signal(&connection, "pr_opened", 1);
        s.payload = json!({ "body": big });
        last = Some(app.signals(vec![s]).await.remove(0));
        let (_, data) = reader.signal(SOON).await;
        assert_eq!(
            Some(data["id"].clone()),
            last.as_ref().map(|s| json!(s.id.to_string()))
        );
        let third = Stream::request(&app, t, "", None).await;
        if third.status() == StatusCode::OK {
            freed = true;
            break;
        }
    }
    assert!(freed, "the stalled stream was never cut off");
    assert!(last.is_some());
    drop(stalled);
}

#[tokio::test]
async fn a_stream_ends_after_its_lifetime() {
    let app = TestApp::spawn_with(&[("POBLYSH_STREAM_MAX_SECONDS", "1")]).await;
    let t = tenant();
    let opened = Instant::now();
    let mut stream = Stream::open(&app, t, "", None).await;
    loop {
        match stream.frame(Duration::from_secs(10)).await {
            Some(Frame::Comment(_)) => {}
            Some(frame) => panic!("unexpected {frame:?}"),
            None => break,
        }
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(900),
        "ended early"
    );
}

#[tokio::test]
async fn past_the_cap_of_open_streams_the_answer_is_503_with_retry_after() {
    // Heartbeats every second: a write finds out soon that a client has gone.
    let app = TestApp::spawn_with(&[
        ("POBLYSH_STREAM_MAX_OPEN", "1"),
        ("POBLYSH_STREAM_HEARTBEAT_SECS", "1"),
    ])
    .await;
    let t = tenant();
    let open = Stream::open(&app, t, "", None).await;
    let refused = Stream::request(&app, t, "", None).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, 503, "SERVICE_UNAVAILABLE").await;

    drop(open);
    let deadline = Instant::now() + SOON;
    loop {
        let again = Stream::request(&app, t, "", None).await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// On PostgreSQL (in every pass of the suite): a signal committed by another instance sharing
/// the database (here the test's own store, as a second process would) reaches a stream of a
/// service process, woken by `LISTEN/NOTIFY`: the process polls only once a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_committed_by_another_instance_reaches_the_stream() {
    let db = Database::create_postgres(&postgres_admin_url()).await;
    let key = crypto_key();
    let slow = [("POBLYSH_WORKER_POLL_INTERVAL_MS", "60000")];
    let streaming = Service::start_with(
        "the streaming process",
        &db,
        &db.url,
        &key,
        "api,worker",
        &slow,
    )
    .await;
    let http = client();
    let t = tenant();
    let connection_id = connect_sandbox(&http, &streaming, t).await;
    let other_instance = db.store().await;
    let connection = other_instance
        .get_connection(t, ConnectionId(connection_id.parse().expect("a uuid")))
        .await
        .expect("read")
        .expect("the connection");

    let response = http
        .get(streaming.url("/signals/stream"))
        .bearer_auth(TOKEN)
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let mut stream = Stream::from_response(response);
    let committed = signal(&connection, "sandbox_event_created", 1);
    other_instance
        .insert_signals(std::slice::from_ref(&committed))
        .await
        .expect("stored");

    loop {
        let (_, data) = stream.signal(SOON).await;
        if data["id"] == committed.id.to_string() {
            break;
        }
    }
}
