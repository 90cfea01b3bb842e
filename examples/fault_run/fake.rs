//! The fake sandbox API the instances' syncs read (`POBLYSH_SANDBOX_API_BASE_URL`; the contract
//! is in `docs/providers/sandbox.md`). Every `GET /v1/events` waits the configured latency;
//! a share of them (`fault_rate`) is refused instead, half with `429` and `Retry-After: 1`, half
//! with `500`. Each connection's events grow with time, so every scheduled sync finds new ones.
//!
//! Overlaps: the bearer token names the connection, and one sync job asks for its pages one
//! after the other, never two at once. A request that arrives while another request of the same
//! connection is still being answered therefore comes from a second job running at the same
//! time (on this instance or another): that is counted as an overlap. The count of requests in
//! flight is kept by a guard, so a request whose client died (`kill -9`) stops counting when
//! its connection closes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use chrono::{DateTime, SecondsFormat};
use rand::Rng;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// What the fake serves.
#[derive(Clone, Copy, Debug)]
pub struct FakeSettings {
    /// How long every answered request waits.
    pub latency: Duration,
    /// Share of event requests refused with `429` or `500` (0 to 1).
    pub fault_rate: f64,
    /// Events each connection holds at the start.
    pub initial_events: u64,
    /// New events per connection per second.
    pub events_per_sec: f64,
}

/// What the fake saw.
#[derive(Clone, Debug, Default)]
pub struct FakeStats {
    /// Event requests answered `200`.
    pub served: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    /// Requests that arrived while another of the same connection was in flight.
    pub overlaps: u64,
    /// Connections with at least one overlap.
    pub overlapping_connections: usize,
    /// Connections (tokens) seen.
    pub connections: usize,
}

#[derive(Default)]
struct Tracked {
    in_flight: HashMap<String, u32>,
    overlapping: HashSet<String>,
}

struct Shared {
    settings: FakeSettings,
    started: Instant,
    served: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
    overlaps: AtomicU64,
    tracked: Mutex<Tracked>,
    seen: Mutex<HashSet<String>>,
}

/// A running fake; stopped when dropped.
pub struct FakeApi {
    pub base: Url,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    /// Binds 127.0.0.1 on a free port and serves in a task of its own.
    pub async fn start(settings: FakeSettings) -> Result<Self> {
        let shared = Arc::new(Shared {
            settings,
            started: Instant::now(),
            served: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            overlaps: AtomicU64::new(0),
            tracked: Mutex::new(Tracked::default()),
            seen: Mutex::new(HashSet::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake sandbox API")?;
        let base = Url::parse(&format!("http://{}/", listener.local_addr()?))?;
        let app = Router::new()
            .route("/v1/events", get(events))
            .route("/v1/subscriptions", post(subscribe))
            .route("/v1/subscriptions/{id}/renew", post(subscribe))
            .route(
                "/v1/subscriptions/{id}",
                delete(|| async { StatusCode::NO_CONTENT }),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("fault_run: the fake sandbox API stopped: {err}");
            }
        });
        Ok(Self { base, shared, task })
    }

    /// What it saw so far.
    pub fn stats(&self) -> FakeStats {
        let s = &self.shared;
        let overlapping_connections = s.tracked.lock().map_or(0, |t| t.overlapping.len());
        FakeStats {
            served: s.served.load(Ordering::Relaxed),
            rate_limited: s.rate_limited.load(Ordering::Relaxed),
            server_errors: s.server_errors.load(Ordering::Relaxed),
            overlaps: s.overlaps.load(Ordering::Relaxed),
            overlapping_connections,
            connections: s.seen.lock().map_or(0, |m| m.len()),
        }
    }
}

/// Counts a request of `token` in flight until dropped (answered, or its client gone).
struct InFlight {
    shared: Arc<Shared>,
    token: String,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>, token: &str) -> Self {
        if let Ok(mut guard) = shared.tracked.lock() {
            let tracked = &mut *guard;
            let count = tracked.in_flight.entry(token.to_string()).or_insert(0);
            if *count > 0 {
                shared.overlaps.fetch_add(1, Ordering::Relaxed);
                tracked.overlapping.insert(token.to_string());
            }
            *count += 1;
        }
        Self {
            shared: shared.clone(),
            token: token.to_string(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut tracked) = self.shared.tracked.lock() {
            if let Some(count) = tracked.in_flight.get_mut(&self.token) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    tracked.in_flight.remove(&self.token);
                }
            }
        }
    }
}

/// Opens (or renews) a subscription for a day, at once.
async fn subscribe() -> Response {
    let expires = chrono::Utc::now() + chrono::Duration::days(1);
    let id = format!(
        "fault-{}",
        expires.timestamp_nanos_opt().unwrap_or_default()
    );
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "id": id,
            "expires_at": expires.to_rfc3339_opts(SecondsFormat::Micros, true),
        })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u64>,
}

async fn events(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if let Ok(mut seen) = shared.seen.lock() {
        if !seen.contains(token) {
            seen.insert(token.to_string());
        }
    }
    let _in_flight = InFlight::enter(&shared, token);
    tokio::time::sleep(shared.settings.latency).await;
    let roll: f64 = rand::thread_rng().gen();
    if roll < shared.settings.fault_rate / 2.0 {
        shared.rate_limited.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            axum::Json(json!({ "error": "rate_limited" })),
        )
            .into_response();
    }
    if roll < shared.settings.fault_rate {
        shared.server_errors.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": "internal" })),
        )
            .into_response();
    }
    let settings = shared.settings;
    let grown = shared.started.elapsed().as_secs_f64() * settings.events_per_sec;
    let total = settings.initial_events + grown as u64;
    let last = query
        .after
        .saturating_add(query.limit.unwrap_or(100).min(100))
        .min(total);
    let events: Vec<Value> = (query.after + 1..=last).map(event).collect();
    shared.served.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({ "events": events, "has_more": last < total })).into_response()
}

/// Event `seq`: odd numbers create item `(seq + 1) / 2`, even ones update it.
fn event(seq: u64) -> Value {
    let item = seq.div_ceil(2);
    let (event_type, verb) = if seq % 2 == 1 {
        ("event.created", "created")
    } else {
        ("event.updated", "updated")
    };
    // 2026-11-25T10:00:00Z plus `seq` seconds.
    let at = DateTime::from_timestamp(1_795_600_800 + seq as i64, 0).unwrap_or_default();
    json!({
        "seq": seq,
        "type": event_type,
        "id": format!("item-{item}"),
        "title": format!("Item {item} {verb}"),
        "occurred_at": at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "actor": { "id": "fault-run", "name": "Fault Run Provider" },
    })
}
