//! `GET /signals/stream`: a tenant's signals as Server-Sent Events, as they are stored. Each
//! signal is one `event: signal` whose `id` is its signals cursor and whose `data` is the
//! signal as `GET /signals/{id}` shows it (its payload only with `include_payload=true`, as
//! on `GET /signals`). A stream starts at "now", or after the signal a cursor names
//! (`Last-Event-ID`, else `cursor`), and reads the outbox in commit order (the feed is
//! `crate::push::live`). It ends after its lifetime, at shutdown, or when its client falls
//! further behind than its buffer: the client resumes with `Last-Event-ID`.

use std::convert::Infallible;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{self, Sender};
use tokio::time::{sleep, sleep_until, Duration, Instant};
use utoipa::IntoParams;
use uuid::Uuid;

use super::errors::StreamErrors;
use super::signals::{check_bounds, read_filters};
use crate::domain::{parse_rfc3339, PushEvent, SignalId, TenantId};
use crate::http::cursor::{invalid, CursorScope};
use crate::http::query::QueryParams;
use crate::http::{ApiError, AppState, ErrorCode, Tenant, TenantHeader};
use crate::services::StreamSlot;
use crate::store::{PageKey, SignalFilter};

/// Events read from the outbox at once.
const BATCH: u32 = 100;
/// The least time a stream waits for news before it looks for events itself: the feed wakes
/// it as events are numbered (and looks every poll interval), so this only bounds the delay
/// should the feed stall.
const FALLBACK_POLL: Duration = Duration::from_secs(10);
/// `Retry-After` when every stream slot is taken.
const RETRY_AFTER_SECS: u64 = 5;

/// Query parameters of `GET /signals/stream`: the filters of `GET /signals`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SignalStreamQuery {
    /// Only signals from this provider (a slug from `GET /providers`).
    provider: Option<String>,
    /// Only signals of this connection.
    #[param(value_type = Option<uuid::Uuid>)]
    connection_id: Option<String>,
    /// Only signals of this kind (one of the kinds `GET /providers` lists).
    kind: Option<String>,
    /// Only signals that occurred at or after this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    occurred_after: Option<String>,
    /// Only signals that occurred at or before this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    occurred_before: Option<String>,
    /// Include each signal's `payload` (default `false`).
    #[param(value_type = Option<bool>, default = false)]
    include_payload: Option<String>,
    /// Resume after the signal this cursor names: an event's `id`, or a `next_cursor` of
    /// `GET /signals`, issued with the same filters. `Last-Event-ID` takes precedence.
    cursor: Option<String>,
}

/// The tenant's signals as they are stored, as Server-Sent Events (`text/event-stream`).
///
/// Each signal is an `event: signal` whose `id` is the signal's cursor (the one
/// `GET /signals` pages with) and whose `data` is the signal as `GET /signals/{id}` shows it;
/// comments (`: keep-alive`) keep the connection alive between them. Without a cursor the
/// stream starts now, with signals stored from then on; with `Last-Event-ID` (or `cursor`) it
/// resumes after that signal, in the order signals were stored, none twice. The stream ends
/// after `POBLYSH_STREAM_MAX_SECONDS`, or when the client falls too far behind, and the client
/// resumes with `Last-Event-ID`. Past `POBLYSH_STREAM_MAX_OPEN` open streams the answer is
/// `503` with `Retry-After`.
#[utoipa::path(
    get,
    path = "/signals/stream",
    tag = "signals",
    params(
        TenantHeader,
        ("Last-Event-ID" = Option<String>, Header,
            description = "The `id` of the last event received: the stream resumes after it."),
        SignalStreamQuery
    ),
    security(("operator_token" = [])),
    responses(
        (status = 200, description = "A stream of `signal` events, until the stream's lifetime ends",
            content_type = "text/event-stream", body = String),
        StreamErrors
    )
)]
pub async fn stream_signals(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut q = QueryParams::parse::<SignalStreamQuery>(raw.as_deref());
    let (filter, scope) = read_filters(&mut q, &state.registry, tenant);
    let cursor = q.take("cursor", |c| Ok(c.to_string()));
    q.check()?;
    check_bounds(&filter)?;
    let resume = match headers.get("last-event-id") {
        Some(value) if !value.is_empty() => Some(
            value
                .to_str()
                .map_err(|_| invalid("not a cursor issued by this service"))?
                .to_string(),
        ),
        _ => cursor,
    };
    let after = resume
        .map(|c| state.cursors.decode(&scope, &c))
        .transpose()?;
    let slot = state.live.open().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "too many live streams are open on this instance; try again shortly",
        )
        .with_retry_after(RETRY_AFTER_SECS)
    })?;
    let newest = state.store.sequence_events().await?;
    let start = match after {
        None => newest,
        Some(key) => state
            .store
            .signal_event_seq(tenant, SignalId(key.id))
            .await?
            .ok_or_else(|| {
                invalid(
                    "it names no signal the stream can resume after; open the stream without \
                     a cursor and read earlier signals from GET /signals",
                )
            })?,
    };
    let settings = &state.config.stream;
    let (sender, mut receiver) = mpsc::channel(settings.buffer);
    let feed = Feed {
        state: state.clone(),
        tenant,
        filter,
        scope,
        last_seq: start,
        sender,
    };
    tokio::spawn(feed.pump(slot));
    let events = futures::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|event| event.map(Ok::<Event, Infallible>))
    });
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(settings.heartbeat)
            .text("keep-alive"),
    ))
}

/// One stream's reader of the outbox.
struct Feed {
    state: AppState,
    tenant: TenantId,
    filter: SignalFilter,
    scope: CursorScope,
    /// The `seq` of the last event read.
    last_seq: i64,
    sender: Sender<Event>,
}

impl Feed {
    /// Feeds the stream until it ends, then records why.
    async fn pump(mut self, slot: StreamSlot) {
        let reason = self.run().await;
        drop(slot);
        tracing::info!(tenant_id = %self.tenant, reason, "live signal stream ended");
        metrics::counter!("signal_stream_disconnects_total", "reason" => reason).increment(1);
    }

    /// Reads new events as the feed announces them; returns why the stream ended.
    async fn run(&mut self) -> &'static str {
        let live = self.state.live.clone();
        let deadline = Instant::now() + self.state.config.stream.max_lifetime;
        let fallback = FALLBACK_POLL.max(self.state.config.worker_poll_interval);
        loop {
            if self.state.is_shutting_down() {
                return "shutdown";
            }
            let news = live.next_sequenced();
            tokio::pin!(news);
            news.as_mut().enable();
            if let Err(reason) = self.catch_up().await {
                return reason;
            }
            tokio::select! {
                () = &mut news => {}
                () = sleep(fallback) => {}
                () = sleep_until(deadline) => return "lifetime",
                () = self.sender.closed() => return "client_closed",
            }
        }
    }

    /// Sends every event after the last one read; `Err` with the reason to end the stream.
    async fn catch_up(&mut self) -> Result<(), &'static str> {
        loop {
            let events = self
                .state
                .store
                .signal_events_after(self.tenant, self.last_seq, &self.filter, BATCH)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "reading signals for a live stream failed");
                    "error"
                })?;
            for event in &events {
                self.last_seq = event.seq;
                let Some(message) = self.message(event) else {
                    continue;
                };
                match self.sender.try_send(message) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => return Err("slow_consumer"),
                    Err(TrySendError::Closed(_)) => return Err("client_closed"),
                }
            }
            if events.len() < BATCH as usize {
                return Ok(());
            }
        }
    }

    /// The event of a `signal.created` outbox row, unless the time filters exclude it.
    fn message(&self, event: &PushEvent) -> Option<Event> {
        let mut data = event.data.clone();
        let signal = data.as_object_mut()?;
        // The outbox keeps the tenant beside the signal; `GET /signals/{id}` does not show it.
        signal.remove("tenant_id");
        if !self.filter.include_payload {
            signal.remove("payload");
        }
        let id = signal.get("id")?.as_str()?.parse::<Uuid>().ok()?;
        let at = parse_rfc3339(signal.get("occurred_at")?.as_str()?).ok()?;
        let f = &self.filter;
        if f.occurred_after.is_some_and(|after| at < after)
            || f.occurred_before.is_some_and(|before| at > before)
        {
            return None;
        }
        let cursor = self.state.cursors.encode(&self.scope, &PageKey { at, id });
        Event::default()
            .event("signal")
            .id(cursor)
            .json_data(&data)
            .ok()
    }
}
