//! The connection a worker listens on (`LISTEN/NOTIFY`) dropped under a running process:
//! the worker falls back to polling, so work stored meanwhile is still done, and listens again
//! by itself once it can, after which work is picked up as it is announced, not at the next
//! poll.
//!
//! The connection is dropped as an operator (or a connection reaper) would drop it:
//! `pg_terminate_backend` on the backend whose last query is a `LISTEN`. So that the listener
//! stays away long enough to prove the fallback, new connections to the database are refused
//! (`ALLOW_CONNECTIONS false`) until the test allows them again; the processes keep the pool
//! connections they already hold. PostgreSQL in every pass of the suite: SQLite announces
//! nothing between processes and has no connection to drop.

use std::time::{Duration, Instant};

use connectors::domain::TenantId;
use reqwest::{Client, StatusCode};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::faults::{
    client, connect_sandbox, crypto_key, deliver, jobs_of, listed, postgres_admin_url, Database,
    Deadline, Service, START_TIMEOUT,
};
use crate::helpers::tenant;

/// The worker's poll interval: long, so that a wake-up and a poll are told apart.
const POLL: Duration = Duration::from_secs(30);
/// How soon a delivery becomes a signal once announced: far below [`POLL`], yet generous for
/// a busy machine.
const WOKEN: Duration = Duration::from_secs(10);
/// How long a delivery may take while the worker only polls.
const POLLED: Duration = Duration::from_secs(90);
/// How long the worker may take to listen again once the database accepts connections (its
/// reconnect backoff tops out at 10 s).
const RELISTEN: Duration = Duration::from_secs(60);

const DROPPED: &str =
    "\"message\":\"listening for wake-ups failed; polling until the database answers\"";
const AGAIN: &str = "\"message\":\"listening for wake-ups again\"";

/// A worker-only process whose `LISTEN` connection is terminated keeps working by polling and
/// listens again once it can: a delivery stored while it cannot listen becomes a signal at a
/// poll, and deliveries stored after it listens again become signals within seconds, far
/// sooner than the 30 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_listen_connection_falls_back_to_polling_and_listens_again() {
    let admin_url = postgres_admin_url();
    let db = Database::create_postgres(&admin_url).await;
    let name = database_name(&db.url);
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .expect("the test reaches the PostgreSQL server");
    let key = crypto_key();
    let http = client();
    let api = Service::start("the API-only process", &db, &key, "api").await;
    let t = tenant();
    connect_sandbox(&http, &api, t).await;
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
    idle_and_listening(&http, &api, &worker, t).await;
    let first_listener = listeners(&admin, &name).await;
    assert_eq!(
        first_listener.len(),
        1,
        "one backend listens, the worker's: {first_listener:?}"
    );

    allow_connections(&admin, &name, false).await;
    let terminated: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1")
            .bind(first_listener[0])
            .fetch_all(&admin)
            .await
            .expect("terminate the listener");
    assert_eq!(
        terminated,
        vec![true],
        "the listener's backend is terminated"
    );
    wait_for_log(&worker, DROPPED, RELISTEN).await;

    let while_away = "listen-while-away";
    deliver_and_wait(&http, &api, &worker, t, while_away, POLLED).await;
    assert!(
        !worker.log_tail().contains(AGAIN),
        "the delivery was processed while the worker could not listen"
    );
    assert!(
        listeners(&admin, &name).await.is_empty(),
        "nothing listens while connections are refused"
    );

    allow_connections(&admin, &name, true).await;
    wait_for_log(&worker, AGAIN, RELISTEN).await;
    let second_listener = listeners(&admin, &name).await;
    assert_eq!(second_listener.len(), 1, "{second_listener:?}");
    assert_ne!(second_listener, first_listener, "a new connection listens");

    let mut latencies = Vec::new();
    for i in 0..3 {
        let id = format!("listen-again-{i}");
        latencies.push(deliver_and_wait(&http, &api, &worker, t, &id, WOKEN).await);
    }
    println!(
        "with a {} s poll, after listening again: signals {:?} ms after their 202",
        POLL.as_secs(),
        latencies.iter().map(|l| l.as_millis()).collect::<Vec<_>>()
    );
}

/// The database's name in `url`.
fn database_name(url: &str) -> String {
    let parsed = url::Url::parse(url).expect("a database URL");
    parsed.path().trim_start_matches('/').to_string()
}

/// The pids of `name`'s backends whose last query was a `LISTEN`.
async fn listeners(admin: &PgPool, name: &str) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%' ORDER BY pid",
    )
    .bind(name)
    .fetch_all(admin)
    .await
    .expect("pg_stat_activity")
}

/// Lets new connections to `name` in, or refuses them (those already open stay).
async fn allow_connections(admin: &PgPool, name: &str, allow: bool) {
    let sql = format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {allow}");
    sqlx::query(&sql)
        .execute(admin)
        .await
        .expect("ALTER DATABASE");
}

/// Waits until the worker listens and its scheduler's first sync of the tenant's connection
/// has succeeded, so that it is idle.
async fn idle_and_listening(http: &Client, api: &Service, worker: &Service, t: TenantId) {
    let deadline = Deadline::new("the worker to listen and sync once", START_TIMEOUT);
    loop {
        let listening = worker
            .log_tail()
            .contains("\"message\":\"listening for wake-ups\"");
        let jobs = jobs_of(http, api, t).await;
        if listening && !jobs.is_empty() && jobs.iter().all(|j| j["status"] == "succeeded") {
            return;
        }
        deadline
            .tick(format!("listening: {listening}, jobs: {jobs:?}"), worker)
            .await;
    }
}

/// Waits until `worker` has logged `line`.
async fn wait_for_log(worker: &Service, line: &str, limit: Duration) {
    let deadline = Deadline::new(format!("the worker to log {line}"), limit);
    while !worker.log_tail().contains(line) {
        deadline.tick("not yet", worker).await;
    }
}

/// Delivers `id` through `api` and waits, at most `limit`, until its signal is listed;
/// returns how long that took after the `202`.
async fn deliver_and_wait(
    http: &Client,
    api: &Service,
    worker: &Service,
    t: TenantId,
    id: &str,
    limit: Duration,
) -> Duration {
    let response = deliver(http, &api.base, t, id).await.expect("sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted = Instant::now();
    let deadline = Deadline::new(format!("the signal of {id}"), limit);
    loop {
        match listed(http, api, t, id).await {
            Ok(ids) if ids.contains(&id.to_string()) => return accepted.elapsed(),
            Ok(_) => deadline.tick("no signal yet", worker).await,
            Err(err) => deadline.tick(err, worker).await,
        }
    }
}
