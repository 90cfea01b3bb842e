//! Faults that must lose nothing, with the real binary in separate processes: `kill -9` of
//! `connectors serve` in the middle of a burst of webhooks, two service processes sharing one
//! database, and work leased by an instance that died, taken over once its lease expires.
//!
//! Each test starts `connectors serve` (`env!("CARGO_BIN_EXE_connectors")`) over a fresh
//! database: a SQLite file in a temporary directory, or a new PostgreSQL database when
//! `POBLYSH_TEST_DATABASE_URL` is set. Processes listen on port 0 and announce their address
//! in their JSON log. The tests wait only by bounded polling, with generous bounds: the
//! machine running them may be busy.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connectors::connector::signature::hmac_sha256_hex;
use connectors::crypto::{CryptoKey, Secret};
use connectors::domain::{now, EventStatus, TenantId, Timestamp};
use connectors::store::{Store, StoreOptions};
use futures::stream::{self, StreamExt};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{tenant, TestDatabase, TOKEN};

const SECRET: &str = "fault-tests-sandbox-webhook-secret";
/// How long a process may take to start listening and to answer `/readyz` with 200.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Lines of each process's log kept for failure messages.
const LOG_LINES: usize = 400;

/// The PostgreSQL server used by tests that need one whatever the pass:
/// `POBLYSH_TEST_DATABASE_URL`, or the one at 127.0.0.1:5432.
pub(crate) fn postgres_admin_url() -> String {
    std::env::var("POBLYSH_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://127.0.0.1:5432/test".to_string())
}

/// The database of a process test, with a data directory for its processes.
pub(crate) struct Database(TestDatabase);

impl std::ops::Deref for Database {
    type Target = TestDatabase;

    fn deref(&self) -> &TestDatabase {
        &self.0
    }
}

impl Database {
    async fn create() -> Self {
        Self(TestDatabase::create().await)
    }

    /// A new database on the PostgreSQL server that `admin_url` reaches.
    pub(crate) async fn create_postgres(admin_url: &str) -> Self {
        Self(TestDatabase::postgres(admin_url).await)
    }

    /// A store of the test's own over the database (migrated by the first process).
    pub(crate) async fn store(&self) -> Arc<dyn Store> {
        connectors::store::connect(&self.url, &StoreOptions { max_connections: 2 })
            .await
            .expect("the test opens the database")
    }
}

/// Sends SIGKILL to a service process (`Child::kill` is `kill -9` on Unix).
#[derive(Clone)]
struct Killer(Arc<Mutex<Child>>);

impl Killer {
    fn kill(&self) {
        let mut child = self.0.lock().expect("child lock");
        let _ = child.kill();
    }
}

/// `connectors serve` in a process of its own; killed when dropped.
pub(crate) struct Service {
    name: &'static str,
    child: Arc<Mutex<Child>>,
    pub(crate) base: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Service {
    /// Starts the binary over `db` with `roles` (`POBLYSH_ROLES`) and waits until it is ready.
    pub(crate) async fn start(name: &'static str, db: &Database, key: &str, roles: &str) -> Self {
        Self::start_on(name, db, &db.url, key, roles).await
    }

    /// Starts the binary in `db`'s directory over the database at `url` (which may reach
    /// `db` by another route) and waits until it is ready.
    pub(crate) async fn start_on(
        name: &'static str,
        db: &Database,
        url: &str,
        key: &str,
        roles: &str,
    ) -> Self {
        Self::start_with(name, db, url, key, roles, &[]).await
    }

    /// [`Service::start_on`] with more variables in the process's environment.
    pub(crate) async fn start_with(
        name: &'static str,
        db: &Database,
        url: &str,
        key: &str,
        roles: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_connectors"))
            .arg("serve")
            .current_dir(db.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("POBLYSH_PROFILE", "test")
            .env("POBLYSH_API_BIND_ADDR", "127.0.0.1:0")
            .env("POBLYSH_DATABASE_URL", url)
            .env("POBLYSH_DATA_DIR", db.dir.path().join("data"))
            .env("POBLYSH_OPERATOR_TOKENS", TOKEN)
            .env("POBLYSH_CRYPTO_KEY", key)
            .env("POBLYSH_SANDBOX_ENABLED", "true")
            .env("POBLYSH_SANDBOX_WEBHOOK_SECRET", SECRET)
            .env("POBLYSH_ROLES", roles)
            .env("POBLYSH_LOG_FORMAT", "json")
            .env("POBLYSH_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        read_lines(stdout, log.clone(), Some(addr_tx));
        read_lines(stderr, log.clone(), None);
        let mut service = Self {
            name,
            child: Arc::new(Mutex::new(child)),
            base: String::new(),
            log,
        };
        // The sender is dropped when the process closes its output without listening.
        match tokio::time::timeout(START_TIMEOUT, addr_rx).await {
            Ok(Ok(addr)) => service.base = format!("http://{addr}"),
            _ => panic!(
                "{name} did not start listening within {} s; its log:\n{}",
                START_TIMEOUT.as_secs(),
                service.log_tail()
            ),
        }
        service.wait_ready().await;
        service
    }

    async fn wait_ready(&self) {
        let client = client();
        let deadline = Deadline::new(format!("{} to be ready", self.name), START_TIMEOUT);
        loop {
            let answer = client.get(self.url("/readyz")).send().await;
            match answer {
                Ok(response) if response.status() == StatusCode::OK => return,
                Ok(response) => deadline.tick(response.status(), self).await,
                Err(err) => deadline.tick(err, self).await,
            }
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn killer(&self) -> Killer {
        Killer(self.child.clone())
    }

    /// The last lines the process wrote.
    pub(crate) fn log_tail(&self) -> String {
        let log = self.log.lock().expect("log lock");
        let lines: Vec<&str> = log.iter().map(String::as_str).collect();
        lines.join("\n")
    }

    /// How the process ended, or `None` while it runs.
    pub(crate) fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().expect("child lock");
        child.try_wait().expect("process status")
    }

    /// The value of a counter on the process's `/metrics` (0 when absent).
    async fn counter(&self, client: &Client, name: &str, labels: &[&str]) -> u64 {
        let text = client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Keeps the last lines of a process's output; reports the address of its `listening` line.
fn read_lines(
    output: impl Read + Send + 'static,
    log: Arc<Mutex<VecDeque<String>>>,
    mut addr: Option<tokio::sync::oneshot::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if addr.is_some() {
                let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if entry["message"] == "listening" {
                    if let (Some(tx), Some(at)) = (addr.take(), entry["addr"].as_str()) {
                        let _ = tx.send(at.to_string());
                    }
                }
            }
            let mut log = log.lock().expect("log lock");
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
}

/// A bound on a polling loop.
pub(crate) struct Deadline {
    what: String,
    started: Instant,
    limit: Duration,
}

impl Deadline {
    pub(crate) fn new(what: impl Into<String>, limit: Duration) -> Self {
        Self {
            what: what.into(),
            started: Instant::now(),
            limit,
        }
    }

    /// Pauses before the next probe; fails the test with `state` once the bound has passed.
    pub(crate) async fn tick(&self, state: impl Display, service: &Service) {
        if self.started.elapsed() > self.limit {
            panic!(
                "waited {} s for {}; last seen: {state}\nlast lines of {}'s log:\n{}",
                self.limit.as_secs(),
                self.what,
                service.name,
                service.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

pub(crate) fn crypto_key() -> String {
    CryptoKey::generate().to_base64().to_string()
}

/// The sandbox journey over HTTP (`POST /connect/sandbox`, the authorize page's `303`, the
/// callback); returns the connection's id.
pub(crate) async fn connect_sandbox(client: &Client, service: &Service, t: TenantId) -> String {
    let response = client
        .post(service.url("/connect/sandbox"))
        .bearer_auth(TOKEN)
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("connect");
    assert_eq!(response.status(), 200);
    let started: Value = response.json().await.expect("json");
    // The service's authorize hop (binding cookie), then the sandbox's page, then the callback.
    let mut callback = started["authorize_url"]
        .as_str()
        .expect("authorize_url")
        .to_string();
    for _ in 0..2 {
        let redirect = client.get(&callback).send().await.expect("authorize");
        assert_eq!(redirect.status(), 303);
        callback = redirect.headers()["location"]
            .to_str()
            .expect("ascii")
            .to_string();
    }
    let response = client.get(callback).send().await.expect("callback");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["connection"]["id"]
        .as_str()
        .expect("connection id")
        .to_string()
}

/// A signed sandbox delivery whose signal's `external_id` is `id`.
pub(crate) async fn deliver(
    client: &Client,
    service_base: &str,
    t: TenantId,
    id: &str,
) -> reqwest::Result<reqwest::Response> {
    let body = serde_json::to_vec(&json!({
        "id": id,
        "title": format!("Fault test event {id}"),
        "occurred_at": "2026-11-20T10:00:00Z",
        "actor": { "id": "u1", "name": "Ada" }
    }))
    .expect("json");
    let timestamp = now().timestamp().to_string();
    let signature = hmac_sha256_hex(&Secret::new(SECRET), &[timestamp.as_bytes(), b".", &body]);
    client
        .post(format!("{service_base}/webhooks/sandbox/{t}"))
        .header("X-Sandbox-Delivery", id)
        .header("X-Sandbox-Event", "event.created")
        .header("X-Sandbox-Timestamp", timestamp)
        .header("X-Sandbox-Signature", format!("v1={signature}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
}

/// The `event_id` of a `202`.
pub(crate) async fn event_id(response: reqwest::Response) -> Option<Uuid> {
    let body: Value = response.json().await.ok()?;
    body["event_id"].as_str()?.parse().ok()
}

/// The `external_id`s of every signal of `t` whose id starts with `prefix`, as listed by
/// `GET /signals` page by page (a signal listed twice appears twice).
pub(crate) async fn listed(
    client: &Client,
    service: &Service,
    t: TenantId,
    prefix: &str,
) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = client
            .get(service.url("/signals"))
            .bearer_auth(TOKEN)
            .header("X-Tenant-Id", t.to_string())
            .query(&[("limit", "100")]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("GET /signals answered {}", response.status()));
        }
        let page: Value = response.json().await.map_err(|e| e.to_string())?;
        for signal in page["signals"].as_array().into_iter().flatten() {
            if let Some(id) = signal["external_id"].as_str() {
                if id.starts_with(prefix) {
                    ids.push(id.to_string());
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(ids),
        }
    }
}

pub(crate) fn parse_time(text: &str) -> Option<Timestamp> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.to_utc())
}

/// Asserts that `ids` holds each of `expected` exactly once and nothing else.
pub(crate) fn assert_exactly_once(ids: &[String], expected: &HashSet<String>, what: &str) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what}: listed more than once: {twice:?}");
    let unexpected: Vec<_> = counts
        .keys()
        .filter(|id| !expected.contains(**id))
        .collect();
    assert!(unexpected.is_empty(), "{what}: never sent: {unexpected:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "{what}: missing {missing:?}");
}

/// Polls the store until each of `events` is `processed`; returns them.
pub(crate) async fn all_processed(
    store: &Arc<dyn Store>,
    service: &Service,
    events: &[(TenantId, Uuid)],
    limit: Duration,
) -> Vec<connectors::domain::StoredWebhookEvent> {
    let deadline = Deadline::new("every event to be processed", limit);
    loop {
        let mut stored = Vec::with_capacity(events.len());
        let mut waiting = Vec::new();
        for (t, id) in events {
            let event = store
                .get_webhook_event(*t, *id)
                .await
                .expect("read event")
                .unwrap_or_else(|| panic!("acknowledged event {id} is not in the inbox"));
            if event.status != EventStatus::Processed {
                waiting.push(format!("{id}: {:?}", event.status));
            }
            stored.push(event);
        }
        if waiting.is_empty() {
            return stored;
        }
        deadline
            .tick(
                format!("{} not processed: {waiting:?}", waiting.len()),
                service,
            )
            .await;
    }
}

/// `kill -9` in the middle of a burst: every delivery answered `202` is in the inbox while no
/// process runs, and after a restart on the same database becomes exactly one signal.
///
/// The killed process runs the inbox worker too, so it may die holding leases on events it
/// had claimed and not finished (60 s, the worker's lease); the restarted process takes those
/// over when they expire, which is why the bound on the final wait is longer than a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_acknowledged_delivery_and_duplicates_none() {
    const BURST: usize = 300;
    const KILL_AFTER: usize = 100;
    const SENDERS: usize = 48;

    let db = Database::create().await;
    let key = crypto_key();
    let http = client();
    let first = Service::start("the first process", &db, &key, "api,worker").await;
    let t = tenant();
    connect_sandbox(&http, &first, t).await;

    let acked_count = Arc::new(AtomicUsize::new(0));
    let killer = first.killer();
    let base = first.base.clone();
    let outcomes: Vec<(String, Option<Option<Uuid>>)> = stream::iter(0..BURST)
        .map(|i| {
            let (http, base, killer, acked_count) = (
                http.clone(),
                base.clone(),
                killer.clone(),
                acked_count.clone(),
            );
            async move {
                let id = format!("burst-{i}");
                let answer = deliver(&http, &base, t, &id).await;
                match answer {
                    Ok(response) if response.status() == StatusCode::ACCEPTED => {
                        if acked_count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                            killer.kill();
                        }
                        // A 202 whose body was cut off by the kill still acknowledged it.
                        (id, Some(event_id(response).await))
                    }
                    Ok(response) => {
                        let status = response.status();
                        assert!(
                            status.is_server_error(),
                            "{id}: only a dying server may refuse a valid delivery; got {status}"
                        );
                        (id, None)
                    }
                    Err(_) => (id, None),
                }
            }
        })
        .buffer_unordered(SENDERS)
        .collect()
        .await;
    drop(first);
    let acked: Vec<(String, Option<Uuid>)> = outcomes
        .into_iter()
        .filter_map(|(id, event)| event.map(|e| (id, e)))
        .collect();
    assert!(
        acked.len() >= KILL_AFTER && acked.len() < BURST,
        "the kill must land mid-burst: {} of {BURST} acknowledged",
        acked.len()
    );

    // No process runs: the inbox already holds every acknowledged delivery.
    let store = db.store().await;
    let events: Vec<(TenantId, Uuid)> = acked
        .iter()
        .filter_map(|(_, event)| event.map(|e| (t, e)))
        .collect();
    for (t, id) in &events {
        assert!(
            store
                .get_webhook_event(*t, *id)
                .await
                .expect("read event")
                .is_some(),
            "acknowledged event {id} is not in the inbox after kill -9"
        );
    }

    let second = Service::start("the restarted process", &db, &key, "api,worker").await;
    let expected: HashSet<String> = acked.iter().map(|(id, _)| id.clone()).collect();
    let deadline = Deadline::new(
        "every acknowledged delivery's signal after the restart",
        Duration::from_secs(180),
    );
    let ids = loop {
        match listed(&http, &second, t, "burst-").await {
            Ok(ids) if expected.iter().all(|id| ids.contains(id)) => break ids,
            Ok(ids) => {
                let missing = expected.iter().filter(|id| !ids.contains(id)).count();
                deadline
                    .tick(
                        format!("{missing} acknowledged deliveries without a signal"),
                        &second,
                    )
                    .await
            }
            Err(err) => deadline.tick(err, &second).await,
        }
    };
    // Deliveries stored but not acknowledged before the kill may have become signals too;
    // none may appear twice, and nothing that was never sent.
    let sent: HashSet<String> = (0..BURST).map(|i| format!("burst-{i}")).collect();
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "a signal is listed twice: {ids:?}");
    assert!(unique.is_subset(&sent), "{ids:?}");
    assert!(expected.is_subset(&unique));
    all_processed(&store, &second, &events, Duration::from_secs(60)).await;
    println!(
        "kill -9 after {KILL_AFTER} acknowledgements: {} of {BURST} acknowledged, {} signals \
         after the restart",
        acked.len(),
        ids.len()
    );
}

/// Sends `id` to `service_base`, redelivering (as providers do) on `503` or a transport error.
async fn deliver_until_accepted(
    client: &Client,
    service_base: &str,
    t: TenantId,
    id: &str,
) -> Uuid {
    let mut last = String::new();
    for _ in 0..10 {
        match deliver(client, service_base, t, id).await {
            Ok(response) if response.status() == StatusCode::ACCEPTED => {
                return event_id(response).await.expect("event_id in a 202");
            }
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                last = "503".into();
            }
            Ok(response) => panic!("{id}: answered {}", response.status()),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{id} was never accepted: {last}");
}

/// Two service processes over one database (PostgreSQL, or one SQLite file), both running
/// workers, with deliveries and sync requests sent alternately to each: every event is claimed
/// and processed once in all (one attempt each, and the two processes' counters add up to the
/// number of events), every delivery becomes one signal, no event is left pending, and every
/// sync job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_process_every_event_and_job_exactly_once() {
    const TENANTS: usize = 4;
    const DELIVERIES: usize = 160;
    const SENDERS: usize = 16;

    let db = Database::create().await;
    let key = crypto_key();
    let http = client();
    let a = Service::start("instance a", &db, &key, "api,worker").await;
    let b = Service::start("instance b", &db, &key, "api,worker").await;
    let services = [&a, &b];

    let tenants: Vec<TenantId> = (0..TENANTS).map(|_| tenant()).collect();
    let mut connections = Vec::new();
    for (n, t) in tenants.iter().enumerate() {
        let service = services[n % 2];
        let id = connect_sandbox(&http, service, *t).await;
        // The scheduler may have enqueued one already; either way a sync is queued or ran.
        let response = http
            .post(services[(n + 1) % 2].url(&format!("/connections/{id}/sync")))
            .bearer_auth(TOKEN)
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await
            .expect("sync");
        assert_eq!(response.status(), 202);
        connections.push(id);
    }

    let bases = [a.base.clone(), b.base.clone()];
    let sent: Vec<(TenantId, String, Uuid)> = stream::iter(0..DELIVERIES)
        .map(|i| {
            let (http, base) = (http.clone(), bases[i % 2].clone());
            let t = tenants[i % TENANTS];
            async move {
                let id = format!("shared-{i}");
                let event = deliver_until_accepted(&http, &base, t, &id).await;
                (t, id, event)
            }
        })
        .buffer_unordered(SENDERS)
        .collect()
        .await;

    // Every delivery becomes exactly one signal of its tenant.
    for t in &tenants {
        let expected: HashSet<String> = sent
            .iter()
            .filter(|(owner, _, _)| owner == t)
            .map(|(_, id, _)| id.clone())
            .collect();
        let deadline = Deadline::new("every delivery's signal", Duration::from_secs(120));
        let ids = loop {
            match listed(&http, &a, *t, "shared-").await {
                Ok(ids) if ids.len() >= expected.len() => break ids,
                Ok(ids) => {
                    deadline
                        .tick(format!("{} of {} signals", ids.len(), expected.len()), &a)
                        .await
                }
                Err(err) => deadline.tick(err, &a).await,
            }
        };
        assert_exactly_once(&ids, &expected, "signals");
    }

    // No event is left pending, and none was claimed twice.
    let store = db.store().await;
    let events: Vec<(TenantId, Uuid)> = sent.iter().map(|(t, _, e)| (*t, *e)).collect();
    let distinct: HashSet<Uuid> = events.iter().map(|(_, e)| *e).collect();
    assert_eq!(distinct.len(), DELIVERIES, "one event per delivery");
    let stored = all_processed(&store, &a, &events, Duration::from_secs(60)).await;
    for event in &stored {
        assert_eq!(
            event.attempts, 1,
            "event {} was claimed {} times",
            event.id, event.attempts
        );
    }
    let processed = [
        a.counter(
            &http,
            "webhook_events_total",
            &["provider=\"sandbox\"", "outcome=\"processed\""],
        )
        .await,
        b.counter(
            &http,
            "webhook_events_total",
            &["provider=\"sandbox\"", "outcome=\"processed\""],
        )
        .await,
    ];
    assert_eq!(
        processed[0] + processed[1],
        DELIVERIES as u64,
        "events processed by a and b: {processed:?}"
    );

    // Every sync job ran once, on one of the two, and succeeded.
    let deadline = Deadline::new("every sync job to succeed once", Duration::from_secs(120));
    loop {
        let mut jobs = Vec::new();
        for t in &tenants {
            let response = http
                .get(a.url("/jobs?limit=100"))
                .bearer_auth(TOKEN)
                .header("X-Tenant-Id", t.to_string())
                .send()
                .await
                .expect("jobs");
            let body: Value = response.json().await.expect("json");
            jobs.extend(body["jobs"].as_array().cloned().unwrap_or_default());
        }
        let mut ran = 0;
        for service in services {
            ran += service
                .counter(
                    &http,
                    "sync_jobs_total",
                    &["provider=\"sandbox\"", "outcome=\"succeeded\""],
                )
                .await;
        }
        let done = jobs.len() >= TENANTS && jobs.iter().all(|j| j["status"] == "succeeded");
        if done && ran == jobs.len() as u64 {
            for job in &jobs {
                assert_eq!(job["attempts"], 1, "claimed more than once: {job}");
            }
            let synced: HashSet<&str> = jobs
                .iter()
                .filter_map(|j| j["connection_id"].as_str())
                .collect();
            assert!(
                connections.iter().all(|c| synced.contains(c.as_str())),
                "each connection synced"
            );
            break;
        }
        deadline
            .tick(
                format!("{} jobs listed, {ran} runs counted: {jobs:?}", jobs.len()),
                &a,
            )
            .await;
    }
    println!("events processed by instance a and b: {processed:?}");
}

/// An instance that claimed events and a sync job and then died: a live process leaves them
/// alone while the lease holds and finishes them once it has expired, each exactly once.
/// The dead instance is played by the test, through the store's claim methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_leased_by_a_dead_instance_is_taken_over_when_the_lease_expires() {
    const EVENTS: usize = 20;
    let db = Database::create().await;
    let key = crypto_key();
    let http = client();
    // An API-only process: stores deliveries and enqueues jobs, runs no worker.
    let api = Service::start("the API-only process", &db, &key, "api").await;
    let t = tenant();
    let connection = connect_sandbox(&http, &api, t).await;
    let mut events = Vec::new();
    let mut expected = HashSet::new();
    for i in 0..EVENTS {
        let id = format!("leased-{i}");
        let response = deliver(&http, &api.base, t, &id).await.expect("sent");
        assert_eq!(response.status(), 202);
        events.push((t, event_id(response).await.expect("event id")));
        expected.insert(id);
    }
    let response = http
        .post(api.url(&format!("/connections/{connection}/sync")))
        .bearer_auth(TOKEN)
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sync");
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.expect("json");
    let job_id = job["id"].as_str().expect("job id").to_string();

    // The dead instance: claims everything with a short lease, then never writes again.
    let store = db.store().await;
    let claimed_at = now();
    let lease_until: Timestamp = claimed_at + chrono::Duration::seconds(5);
    let claimed = store
        .claim_webhook_events(claimed_at, lease_until, 1_000)
        .await
        .expect("claim events");
    assert_eq!(claimed.len(), EVENTS, "the dead instance holds every event");
    // Every queued job: the sync, and the subscription job queued when it connected.
    let mut claimed_jobs = Vec::new();
    while let Some(job) = store
        .claim_sync_job("dead-instance", claimed_at, lease_until)
        .await
        .expect("claim job")
    {
        claimed_jobs.push(job);
    }
    assert_eq!(claimed_jobs.len(), 2, "{claimed_jobs:?}");
    assert!(
        claimed_jobs.iter().any(|j| j.id.to_string() == job_id),
        "the dead instance holds the sync job: {claimed_jobs:?}"
    );

    let live = Service::start("the live process", &db, &key, "api,worker").await;
    let deadline = Deadline::new(
        "the live process to take the work over",
        Duration::from_secs(120),
    );
    let job = loop {
        let response = http
            .get(live.url(&format!("/jobs/{job_id}")))
            .bearer_auth(TOKEN)
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await
            .expect("job");
        let job: Value = response.json().await.expect("json");
        if job["status"] == "succeeded" {
            break job;
        }
        deadline.tick(&job, &live).await;
    };
    assert_eq!(job["attempts"], 2, "the dead claim and the takeover: {job}");
    let started = job["started_at"]
        .as_str()
        .and_then(parse_time)
        .expect("started_at");
    assert!(
        started >= lease_until,
        "taken over at {started}, before the lease expired at {lease_until}"
    );

    let stored = all_processed(&store, &live, &events, Duration::from_secs(120)).await;
    for event in &stored {
        assert_eq!(event.attempts, 2, "the dead claim and the takeover");
        let processed_at = event.processed_at.expect("processed_at");
        assert!(
            processed_at >= lease_until,
            "event {} processed at {processed_at}, while the dead instance's lease held until \
             {lease_until}",
            event.id
        );
    }
    let ids = listed(&http, &live, t, "leased-").await.expect("signals");
    assert_exactly_once(&ids, &expected, "signals of the taken-over events");
    let synced = listed(&http, &live, t, "sandbox-item-")
        .await
        .expect("signals");
    assert!(!synced.is_empty(), "the taken-over sync stored its signals");
    // The connection's syncs (its subscription job runs in a lane of its own).
    let jobs: Value = http
        .get(live.url("/jobs?job_type=incremental"))
        .bearer_auth(TOKEN)
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("jobs")
        .json()
        .await
        .expect("json");
    // The live scheduler may enqueue the connection's next sync once the taken-over job has
    // ended (when it starts late), never while that job is leased.
    let finished = job["finished_at"]
        .as_str()
        .and_then(parse_time)
        .expect("finished_at");
    for other in jobs["jobs"].as_array().expect("jobs") {
        if other["id"] != job_id.as_str() {
            let created = other["created_at"].as_str().and_then(parse_time);
            assert!(
                created.is_some_and(|c| c >= finished),
                "a second job while the first was leased: {jobs}"
            );
        }
    }
    drop(api);
}

/// Instances split by role on PostgreSQL (in every pass of the suite): an API-only process
/// stores deliveries and enqueues jobs, a worker-only process whose polling is slowed to a
/// minute runs them. The database announces each delivery and each job as it commits
/// (`LISTEN/NOTIFY`), so a delivery becomes a signal, and a requested sync runs, within seconds
/// rather than at the worker's next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_only_process_is_woken_by_work_stored_through_another_process() {
    const POLL: Duration = Duration::from_secs(60);
    /// Far below the poll interval, yet generous for a busy machine.
    const WOKEN: Duration = Duration::from_secs(10);
    const DELIVERIES: usize = 5;

    let db = Database::create_postgres(&postgres_admin_url()).await;
    let key = crypto_key();
    let http = client();
    let api = Service::start("the API-only process", &db, &key, "api").await;
    let t = tenant();
    let connection = connect_sandbox(&http, &api, t).await;
    let poll = POLL.as_millis().to_string();
    let worker = Service::start_with(
        "the worker-only process",
        &db,
        &db.url,
        &key,
        "worker",
        &[("POBLYSH_WORKER_POLL_INTERVAL_MS", poll.as_str())],
    )
    .await;

    // The worker listens, and its scheduler has run the connection's first sync (enqueued and
    // woken within the worker itself), so it is idle now.
    let deadline = Deadline::new("the worker to listen and sync once", START_TIMEOUT);
    loop {
        let listening = worker
            .log_tail()
            .contains("\"message\":\"listening for wake-ups\"");
        let jobs = jobs_of(&http, &api, t).await;
        if listening && !jobs.is_empty() && jobs.iter().all(|j| j["status"] == "succeeded") {
            break;
        }
        deadline
            .tick(format!("listening: {listening}, jobs: {jobs:?}"), &worker)
            .await;
    }

    let mut latencies = Vec::new();
    for i in 0..DELIVERIES {
        let id = format!("woken-{i}");
        let response = deliver(&http, &api.base, t, &id).await.expect("sent");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let accepted = Instant::now();
        let deadline = Deadline::new(format!("the signal of {id}"), WOKEN);
        loop {
            match listed(&http, &api, t, &id).await {
                Ok(ids) if ids.contains(&id) => break,
                Ok(_) => deadline.tick("no signal yet", &worker).await,
                Err(err) => deadline.tick(err, &worker).await,
            }
        }
        latencies.push(accepted.elapsed());
    }

    let earlier: Vec<Value> = jobs_of(&http, &api, t)
        .await
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    let response = http
        .post(api.url(&format!("/connections/{connection}/sync")))
        .bearer_auth(TOKEN)
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sync");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let requested = Instant::now();
    let job: Value = response.json().await.expect("json");
    let job_id = job["id"].as_str().expect("job id").to_string();
    // The worker may claim, even finish, the job between its insert and the answer, which then
    // shows it running or succeeded: either way it is a new job, not one of the earlier ones.
    assert!(
        !earlier.contains(&job["id"]),
        "a new job, not one of {earlier:?}: {job}"
    );
    assert!(
        ["queued", "running", "succeeded"].contains(&job["status"].as_str().unwrap_or_default()),
        "a new job waits, runs or has run: {job}"
    );
    let deadline = Deadline::new(format!("job {job_id} to succeed"), WOKEN);
    loop {
        let job: Value = http
            .get(api.url(&format!("/jobs/{job_id}")))
            .bearer_auth(TOKEN)
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await
            .expect("job")
            .json()
            .await
            .expect("json");
        if job["status"] == "succeeded" {
            break;
        }
        deadline.tick(&job, &worker).await;
    }
    let synced = requested.elapsed();
    println!(
        "with a {} s poll: signals {:?} after their 202, the requested sync done {} ms after its 202",
        POLL.as_secs(),
        latencies.iter().map(|l| l.as_millis()).collect::<Vec<_>>(),
        synced.as_millis()
    );
}

/// Every job of `t`, newest first.
pub(crate) async fn jobs_of(client: &Client, service: &Service, t: TenantId) -> Vec<Value> {
    let response = client
        .get(service.url("/jobs?limit=100"))
        .bearer_auth(TOKEN)
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("jobs");
    let body: Value = response.json().await.expect("json");
    body["jobs"].as_array().cloned().unwrap_or_default()
}
