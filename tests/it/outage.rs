//! The database going away and coming back under a running `connectors serve` (API and
//! workers in one process): while it is away, deliveries are refused with `503` and a
//! `Retry-After` (providers redeliver), `/readyz` says so and `/healthz` does not; once it is
//! back, the same process becomes ready again, accepts the redeliveries, and its workers resume
//! by themselves within seconds (events claimed when it went away are given back, not left to
//! their leases), losing nothing and duplicating nothing.
//!
//! The outage is made by a TCP proxy in the test between the service and PostgreSQL: unplugged,
//! it resets every proxied connection and every new one. PostgreSQL is the only backend that
//! can go away under a running process: a SQLite database is a file the process itself has
//! open, with no server and no connection to lose. What another process can do to that file
//! (hold its write lock past the busy timeout) is contention on one database that stays
//! readable, not an outage, so this test runs against PostgreSQL in every pass of the suite:
//! the server named by `POBLYSH_TEST_DATABASE_URL`, or the one at 127.0.0.1:5432 otherwise.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connectors::domain::{now, ConnectionId, EventStatus, JobStatus, JobType, TenantId, Timestamp};
use connectors::store::{IfRunning, Store};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use uuid::Uuid;

use crate::faults::{
    all_processed, assert_exactly_once, client, connect_sandbox, crypto_key, deliver, event_id,
    listed, parse_time, postgres_admin_url, Database, Deadline, Service,
};
use crate::helpers::{assert_problem, tenant, TOKEN};

/// How long the service may take to become ready again once the database is back.
const RECOVERY: Duration = Duration::from_secs(60);
/// How long accepted deliveries may take to become signals, and jobs to succeed, once the
/// database is back. The events the worker held when it went away are given back as soon as it
/// answers: waiting for their leases instead (60 s from the cut, with an outage of about 15 s)
/// would take longer than this.
const SIGNALS: Duration = Duration::from_secs(20);

/// A TCP proxy between the service and PostgreSQL that can be unplugged and plugged back.
struct Proxy {
    port: u16,
    plug: Arc<Mutex<Plug>>,
    accept: AbortHandle,
}

/// Whether the proxy forwards, and the links it forwards.
struct Plug {
    plugged: bool,
    links: Vec<AbortHandle>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to `upstream`.
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let plug = Arc::new(Mutex::new(Plug {
            plugged: true,
            links: Vec::new(),
        }));
        let shared = plug.clone();
        let accept = tokio::spawn(async move {
            loop {
                let inbound = match listener.accept().await {
                    Ok((inbound, _)) => inbound,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // Closing then resets the connection, as a broken network would.
                let _ = inbound.set_zero_linger();
                let mut plug = shared.lock().expect("plug lock");
                if !plug.plugged {
                    drop(inbound);
                    continue;
                }
                plug.links.retain(|link| !link.is_finished());
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    let mut inbound = inbound;
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                plug.links.push(link.abort_handle());
            }
        })
        .abort_handle();
        Self { port, plug, accept }
    }

    /// `url` with its host and port replaced by the proxy's.
    fn route(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("valid database URL");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.port)).expect("port");
        url.to_string()
    }

    /// Resets every forwarded connection and, until [`Proxy::plug`], every new one; returns
    /// how many connections were cut.
    fn unplug(&self) -> usize {
        let mut plug = self.plug.lock().expect("plug lock");
        plug.plugged = false;
        let links = std::mem::take(&mut plug.links);
        let live = links.iter().filter(|link| !link.is_finished()).count();
        for link in links {
            link.abort();
        }
        live
    }

    /// Forwards new connections again.
    fn plug(&self) {
        self.plug.lock().expect("plug lock").plugged = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.unplug();
    }
}

/// `host:port` of the server `url` names.
fn upstream(url: &str) -> String {
    let url = url::Url::parse(url).expect("valid database URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    format!("{host}:{}", url.port().unwrap_or(5432))
}

/// The database goes away under a running process and comes back: deliveries meanwhile get
/// `503` with `Retry-After` and a problem body, `/readyz` is `503` and `/healthz` `200`; then,
/// without a restart, the process is ready again, the refused deliveries are accepted when
/// redelivered, every accepted delivery becomes exactly one signal, the job that was due during
/// the outage runs once, and a sync requested afterwards succeeds. PostgreSQL in both passes of
/// the suite: SQLite has no server to lose (see the module's documentation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_database_goes_away_and_comes_back_the_service_refuses_then_resumes_by_itself() {
    const BEFORE: usize = 10;
    const AT_THE_CUT: usize = 10;
    const DURING: usize = 5;

    let db = Database::create_postgres(&postgres_admin_url()).await;
    let proxy = Proxy::start(upstream(&db.url)).await;
    let key = crypto_key();
    let http = client();
    let service = Service::start_on(
        "the service",
        &db,
        &proxy.route(&db.url),
        &key,
        "api,worker",
    )
    .await;
    // The test's own way in, which the outage does not touch.
    let store = db.store().await;
    let t = tenant();
    let connection: ConnectionId = connect_sandbox(&http, &service, t)
        .await
        .parse()
        .expect("connection id");

    // Before: deliveries are accepted and become signals; the connection's first sync runs.
    let mut accepted = Vec::new();
    for i in 0..BEFORE {
        accepted.push(accept(&http, &service, t, &format!("outage-before-{i}")).await);
    }
    let before: HashSet<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    wait_for_signals(&http, &service, t, &before).await;
    first_sync_done(&http, &service, &store, t, connection).await;

    // A job due while the database is away, and deliveries the worker may be holding when it
    // goes.
    let row = store
        .get_connection(t, connection)
        .await
        .expect("read connection")
        .expect("the connection");
    let mut due = connectors::ingest::sync::new_job(&row, JobType::Incremental, now());
    due.scheduled_at = now() + chrono::Duration::seconds(1);
    let enqueued = store
        .enqueue_sync(&due, IfRunning::Join)
        .await
        .expect("enqueue");
    assert!(enqueued.created, "no other job of the connection is active");
    for i in 0..AT_THE_CUT {
        accepted.push(accept(&http, &service, t, &format!("outage-at-cut-{i}")).await);
    }

    let cut_at = now();
    let cut = proxy.unplug();
    assert!(
        cut > 0,
        "the service's pool held connections through the proxy"
    );
    let mut refused = Vec::new();
    for i in 0..DURING {
        let id = format!("outage-during-{i}");
        let response = deliver(&http, &service.base, t, &id)
            .await
            .expect("the service answers while the database is away");
        assert_unavailable(response, &service, &id).await;
        refused.push(id);
    }
    not_ready_but_alive(&http, &service).await;
    // The events the worker held when the database went away, seen through the test's own way
    // in: claimed (an attempt counted) and not finished.
    let mut held = 0;
    for (_, event) in &accepted {
        let stored = store
            .get_webhook_event(t, *event)
            .await
            .expect("read event")
            .expect("the event");
        if stored.status == EventStatus::Pending && stored.attempts > 0 {
            held += 1;
        }
    }
    // Every background loop meets the outage: the inbox worker, the sync worker (after the job
    // has come due) and the scheduler (which ticks at least every 15 s).
    wait_for_log(&service, "inbox round failed", due.scheduled_at).await;
    wait_for_log(&service, "claiming a sync job failed", due.scheduled_at).await;
    wait_for_log(&service, "sync scheduling failed", cut_at).await;
    let job = store
        .get_job(t, due.id)
        .await
        .expect("read job")
        .expect("the due job");
    assert!(
        job.status == JobStatus::Queued && job.attempts == 0 && job.scheduled_at <= now(),
        "the due job waits, unclaimed, while the database is away: {job:?}"
    );
    assert!(
        service.exited().is_none(),
        "the process exited during the outage: {:?}\n{}",
        service.exited(),
        service.log_tail()
    );

    proxy.plug();
    let back = now();
    let plugged = std::time::Instant::now();
    wait_until_ready(&http, &service).await;
    let ready_after = plugged.elapsed();
    for id in &refused {
        accepted.push(accept(&http, &service, t, id).await);
    }

    let expected: HashSet<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
    let ids = wait_for_signals(&http, &service, t, &expected).await;
    assert_exactly_once(&ids, &expected, "signals of the accepted deliveries");
    let events: Vec<(TenantId, Uuid)> = accepted.iter().map(|(_, event)| (t, *event)).collect();
    all_processed(&store, &service, &events, SIGNALS).await;
    let signals_after = plugged.elapsed();

    let job = wait_for_job(&http, &service, t, &due.id.to_string()).await;
    assert_eq!(job["attempts"], 1, "the due job ran once: {job}");
    let response = http
        .post(service.url(&format!("/connections/{connection}/sync")))
        .bearer_auth(TOKEN)
        .header("X-Tenant-Id", t.to_string())
        .send()
        .await
        .expect("sync");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let requested: Value = response.json().await.expect("json");
    let requested_id = requested["id"].as_str().expect("job id").to_string();
    let job = wait_for_job(&http, &service, t, &requested_id).await;
    let created = job["created_at"]
        .as_str()
        .and_then(parse_time)
        .expect("created_at");
    assert!(
        created >= back,
        "the sync requested after the outage is a new job: {job}"
    );

    assert!(service.exited().is_none(), "{}", service.log_tail());
    assert!(
        !service.log_tail().contains("panicked"),
        "a task panicked:\n{}",
        service.log_tail()
    );
    assert!(
        signals_after < SIGNALS,
        "every signal {} ms after the database came back",
        signals_after.as_millis()
    );
    println!(
        "{cut} connections cut, {held} events held by the worker; ready {} ms and every signal \
         {} ms after the database came back",
        ready_after.as_millis(),
        signals_after.as_millis()
    );
}

/// Delivers `id` once and expects it accepted; returns `id` and its event.
async fn accept(http: &Client, service: &Service, t: TenantId, id: &str) -> (String, Uuid) {
    let response = deliver(http, &service.base, t, id).await.expect("sent");
    let status = response.status();
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{id}: answered {status}\n{}",
        service.log_tail()
    );
    let event = event_id(response).await.expect("event_id in a 202");
    (id.to_string(), event)
}

/// Asserts a `503 SERVICE_UNAVAILABLE` problem whose `Retry-After` header matches its body.
async fn assert_unavailable(response: reqwest::Response, service: &Service, id: &str) {
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{id} while the database is away\n{}",
        service.log_tail()
    );
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!(retry_after > 0, "Retry-After: {retry_after}");
    let body = assert_problem(response, 503, "SERVICE_UNAVAILABLE").await;
    assert_eq!(body["retry_after"], retry_after, "{body}");
}

/// `/readyz` answers `503` naming the database; `/healthz` still answers `200`.
async fn not_ready_but_alive(http: &Client, service: &Service) {
    let response = http
        .get(service.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert!(response.headers().contains_key("retry-after"));
    let body = assert_problem(response, 503, "SERVICE_UNAVAILABLE").await;
    assert_eq!(
        body["details"]["checks"]["database"], "unreachable",
        "{body}"
    );
    let response = http
        .get(service.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn wait_until_ready(http: &Client, service: &Service) {
    let deadline = Deadline::new("/readyz to answer 200 with the database back", RECOVERY);
    loop {
        match http.get(service.url("/readyz")).send().await {
            Ok(response) if response.status() == StatusCode::OK => return,
            Ok(response) => deadline.tick(response.status(), service).await,
            Err(err) => deadline.tick(err, service).await,
        }
    }
}

/// Waits until the service logs `message` later than `after`.
async fn wait_for_log(service: &Service, message: &str, after: Timestamp) {
    let deadline = Deadline::new(format!("{message:?} logged after {after}"), RECOVERY);
    let logged = || {
        service.log_tail().lines().any(|line| {
            let entry: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            entry["message"] == message
                && entry["timestamp"]
                    .as_str()
                    .and_then(parse_time)
                    .is_some_and(|at| at > after)
        })
    };
    while !logged() {
        deadline.tick("not yet", service).await;
    }
}

/// Waits until each of `expected` is listed by `GET /signals`; returns the listed ids.
async fn wait_for_signals(
    http: &Client,
    service: &Service,
    t: TenantId,
    expected: &HashSet<String>,
) -> Vec<String> {
    let deadline = Deadline::new("every accepted delivery's signal", SIGNALS);
    loop {
        match listed(http, service, t, "outage-").await {
            Ok(ids) if expected.iter().all(|id| ids.contains(id)) => return ids,
            Ok(ids) => {
                let missing: Vec<_> = expected.iter().filter(|id| !ids.contains(id)).collect();
                deadline
                    .tick(format!("no signal yet for {missing:?}"), service)
                    .await
            }
            Err(err) => deadline.tick(err, service).await,
        }
    }
}

/// Waits until the scheduler has taken the new connection (its next sync is not due) and every
/// job of it has succeeded, so that no job of the scheduler's is active.
async fn first_sync_done(
    http: &Client,
    service: &Service,
    store: &Arc<dyn Store>,
    t: TenantId,
    connection: ConnectionId,
) {
    let deadline = Deadline::new("the connection's first sync", RECOVERY);
    loop {
        let due = store
            .connections_due_for_sync(&["sandbox"], now(), 100)
            .await
            .expect("due connections");
        let response = http
            .get(service.url(&format!(
                "/jobs?connection_id={connection}&job_type=incremental"
            )))
            .bearer_auth(TOKEN)
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await
            .expect("jobs");
        let body: Value = response.json().await.expect("json");
        // The connection's syncs: its subscription job runs in a lane of its own.
        let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
        let scheduled = !due.iter().any(|c| c.id == connection);
        if scheduled && !jobs.is_empty() && jobs.iter().all(|j| j["status"] == "succeeded") {
            return;
        }
        deadline
            .tick(format!("scheduled: {scheduled}, jobs: {jobs:?}"), service)
            .await;
    }
}

/// Waits until job `id` has succeeded; returns it.
async fn wait_for_job(http: &Client, service: &Service, t: TenantId, id: &str) -> Value {
    let deadline = Deadline::new(format!("job {id} to succeed"), SIGNALS);
    loop {
        let response = http
            .get(service.url(&format!("/jobs/{id}")))
            .bearer_auth(TOKEN)
            .header("X-Tenant-Id", t.to_string())
            .send()
            .await;
        match response {
            Ok(response) if response.status() == StatusCode::OK => {
                let job: Value = response.json().await.expect("json");
                if job["status"] == "succeeded" {
                    return job;
                }
                assert_ne!(job["status"], "failed", "{job}");
                deadline.tick(&job, service).await;
            }
            Ok(response) => deadline.tick(response.status(), service).await,
            Err(err) => deadline.tick(err, service).await,
        }
    }
}
