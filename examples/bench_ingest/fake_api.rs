//! The fake sandbox API the sync scenario's server reads through
//! `POBLYSH_SANDBOX_API_BASE_URL` (the contract is in `docs/providers/sandbox.md`): an axum
//! server on 127.0.0.1 in the harness's own runtime. Every `GET /v1/events` waits the
//! configured latency, then lists up to `page_size` events after `after`, out of
//! `pages × page_size` per connection. Events are the same for every connection (dedupe keys
//! are per connection): odd `seq` creates item `(seq + 1) / 2`, even `seq` updates it, one
//! second apart. The bearer token tells connections apart for the statistics: requests served
//! and the time between one connection's consecutive requests. Subscription calls are answered
//! at once and not counted.

use std::collections::HashMap;
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
use hdrhistogram::Histogram;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// What the fake serves.
#[derive(Clone, Copy, Debug)]
pub struct FakeSettings {
    /// How long every request waits before its answer.
    pub latency: Duration,
    /// Events per page at most.
    pub page_size: u64,
    /// Pages per connection.
    pub pages: u64,
}

/// What the fake saw.
#[derive(Clone, Debug)]
pub struct FakeStats {
    /// Requests answered `200`.
    pub requests: u64,
    /// Requests refused (no bearer token).
    pub refused: u64,
    /// Connections (bearer tokens) seen.
    pub connections: usize,
    /// Time between a connection's consecutive requests, µs.
    pub gaps: Histogram<u64>,
}

struct Shared {
    settings: FakeSettings,
    requests: AtomicU64,
    refused: AtomicU64,
    /// The last request of each token.
    last: Mutex<HashMap<String, Instant>>,
    gaps: Mutex<Histogram<u64>>,
}

/// A running fake API; stopped when dropped.
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
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last: Mutex::new(HashMap::new()),
            gaps: Mutex::new(Histogram::new(3).context("histogram")?),
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
                eprintln!("bench_ingest: the fake sandbox API stopped: {err}");
            }
        });
        Ok(Self { base, shared, task })
    }

    /// What it saw so far.
    pub fn stats(&self) -> FakeStats {
        let connections = self.shared.last.lock().map_or(0, |m| m.len());
        let gaps = self
            .shared
            .gaps
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        FakeStats {
            requests: self.shared.requests.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
            connections,
            gaps,
        }
    }
}

/// Opens (or renews) a subscription for a day, at once: the sandbox opens one per connection
/// when it connects, and the sync scenario measures syncs, not subscriptions.
async fn subscribe() -> Response {
    let expires = chrono::Utc::now() + chrono::Duration::days(1);
    let id = format!(
        "bench-{}",
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
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED.into_response();
    };
    shared.record(token, Instant::now());
    tokio::time::sleep(shared.settings.latency).await;
    let settings = shared.settings;
    let total = settings.pages * settings.page_size;
    let count = settings.page_size.min(query.limit.unwrap_or(u64::MAX));
    let last = query.after.saturating_add(count).min(total);
    let events: Vec<Value> = (query.after + 1..=last).map(event).collect();
    axum::Json(json!({ "events": events, "has_more": last < total })).into_response()
}

impl Shared {
    fn record(&self, token: &str, at: Instant) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let previous = match self.last.lock() {
            Ok(mut last) => last.insert(token.to_string(), at),
            Err(_) => None,
        };
        if let (Some(previous), Ok(mut gaps)) = (previous, self.gaps.lock()) {
            let micros = at.saturating_duration_since(previous).as_micros();
            let _ = gaps.record(u64::try_from(micros).unwrap_or(u64::MAX));
        }
    }
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
        "actor": { "id": "bench", "name": "Bench Provider" },
    })
}
