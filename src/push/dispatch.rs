//! The dispatcher: numbers (on PostgreSQL) and fans out the outbox, claims the deliveries that
//! head their line, attempts them (signed, through the egress rules, 15 s at most) and records
//! each outcome with the retry schedule and the endpoint's health. [`Dispatcher::run_once`] is
//! one pass, for tests to drain deterministically; [`run`] is the background loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use serde_json::json;
use url::Url;
use uuid::Uuid;

use super::clients::Clients;
use super::clock::{Clock, SystemClock};
use super::egress::EgressPolicy;
use super::schedule;
use super::signing::{signature_header, SigningSecret};
use crate::domain::{
    format_time, Delivery, Endpoint, EndpointId, EndpointSecrets, EventId, PushEvent, Timestamp,
};
use crate::services::Services;
use crate::store::{AttemptRecord, ClaimRequest, HealthChange, NextStep, StoreError};

/// The longest an attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a claim lasts: past the attempt's time-out, so only a dead instance loses it.
const LEASE: Duration = Duration::from_secs(60);
/// An endpoint failing this long without a success is disabled.
const FAILING_LIMIT: chrono::Duration = chrono::Duration::days(5);
/// The most of an answer's body kept.
pub const MAX_RESPONSE_BODY: usize = 4096;
/// Events fanned out, and deliveries attempted, per pass.
const BATCH: u32 = 64;
/// Attempts the background loop keeps in flight at once, each on its own task, so an endpoint
/// that hangs holds back only its own lines.
const IN_FLIGHT: usize = 256;
/// Events the background loop fans out per step.
const FAN_OUT: u32 = 512;
/// Outcomes the background loop records per transaction, at the most.
const RECORD_BATCH: usize = 512;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Events the fan-out watermark passed (whether or not an endpoint receives them).
    pub events: u64,
    /// Deliveries created from them.
    pub fanned_out: u64,
    /// Attempts made.
    pub attempted: usize,
    /// Attempts the endpoint answered `2xx`.
    pub delivered: usize,
}

/// Delivers the outbox.
#[derive(Clone)]
pub struct Dispatcher {
    services: Services,
    clock: Arc<dyn Clock>,
    egress: EgressPolicy,
    owner: Uuid,
    clients: Arc<Clients>,
}

/// An endpoint as a pass delivers to it: read once per pass, its secrets opened once.
struct Target {
    endpoint: Endpoint,
    /// The secrets that sign now, or why there are none.
    secrets: Result<Vec<SigningSecret>, String>,
}

/// An attempt made, its outcome not yet recorded.
struct Attempted {
    record: AttemptRecord,
    event: PushEvent,
}

/// What an endpoint answered.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl Dispatcher {
    /// A dispatcher on the system clock.
    pub fn new(services: Services) -> Self {
        Self {
            egress: EgressPolicy::new(&services.config.push),
            services,
            clock: Arc::new(SystemClock),
            owner: Uuid::new_v4(),
            clients: Arc::new(Clients::new(ATTEMPT_TIMEOUT)),
        }
    }

    /// The same dispatcher reading time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// One pass: sequence and fan out, then attempt the deliveries due now and record their
    /// outcomes together.
    pub async fn run_once(&self) -> Result<Pass, StoreError> {
        let store = &self.services.store;
        let now = self.clock.now();
        let step = store
            .dispatch_step(&[], BATCH, &self.claim_request(&|| BATCH, now))
            .await?;
        let ((events, fanned_out), claimed) = (step.fanned_out, step.claimed);
        let attempted = claimed.len();
        let targets = self.targets(&claimed, now).await?;
        let bodies = self.events(&claimed).await?;
        let outcomes = futures::future::join_all(claimed.into_iter().map(|d| {
            let target = targets.get(&d.endpoint_id).cloned();
            let event = bodies.get(&d.event_id).cloned();
            self.attempt(d, target, event)
        }))
        .await;
        let mut done = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            done.extend(outcome?);
        }
        let delivered = self.record(done).await?;
        Ok(Pass {
            events,
            fanned_out,
            attempted,
            delivered,
        })
    }

    /// A claim of as many deliveries that head their line as `room` says, under this
    /// dispatcher's lease.
    fn claim_request<'a>(
        &self,
        room: &'a (dyn Fn() -> u32 + Send + Sync),
        now: Timestamp,
    ) -> ClaimRequest<'a> {
        ClaimRequest {
            owner: self.owner,
            now,
            lease_until: now + chrono::Duration::from_std(LEASE).unwrap_or_default(),
            room,
        }
    }

    /// Records attempts in one transaction; how many of them delivered.
    async fn record(&self, done: Vec<Attempted>) -> Result<usize, StoreError> {
        if done.is_empty() {
            return Ok(0);
        }
        let records: Vec<AttemptRecord> = done.iter().map(|a| a.record.clone()).collect();
        let kept = self.services.store.record_attempts(&records).await?;
        Ok(recorded(&done, &kept))
    }

    /// One step of the background loop: records `done` (the attempts finished since the last
    /// step; emptied once written, kept for the next step if the step fails), sequences and
    /// fans out, then starts an attempt on its own task for each delivery due now, as far as
    /// `slots` allow; each sends its outcome to `outcomes`, for a later step to record. Whether
    /// there was anything to do.
    async fn feed(
        &self,
        done: &mut Vec<Attempted>,
        slots: &Arc<tokio::sync::Semaphore>,
        outcomes: &tokio::sync::mpsc::UnboundedSender<Attempted>,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        // Claims as many as there are free slots when the claim is made: attempts finish
        // while the fan-out runs.
        let free = || u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
        let records: Vec<AttemptRecord> = done.iter().map(|a| a.record.clone()).collect();
        let step = self
            .services
            .store
            .dispatch_step(&records, FAN_OUT, &self.claim_request(&free, now))
            .await?;
        recorded(done, &step.kept);
        done.clear();
        let (events, _) = step.fanned_out;
        let claimed = step.claimed;
        if claimed.is_empty() {
            return Ok(events > 0);
        }
        let targets = self.targets(&claimed, now).await?;
        let bodies = self.events(&claimed).await?;
        for delivery in claimed {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let target = targets.get(&delivery.endpoint_id).cloned();
            let event = bodies.get(&delivery.event_id).cloned();
            let this = self.clone();
            let outcomes = outcomes.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match this.attempt(delivery, target, event).await {
                    Ok(Some(attempted)) => {
                        // The loop is gone only at shutdown: the lease covers the retry.
                        let _ = outcomes.send(attempted);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "push attempt failed"),
                }
            });
        }
        Ok(true)
    }

    /// Runs passes until one finds nothing to do (at most `max_passes`).
    pub async fn drain(&self, max_passes: usize) -> Result<Pass, StoreError> {
        let mut total = Pass::default();
        for _ in 0..max_passes {
            let pass = self.run_once().await?;
            total.events += pass.events;
            total.fanned_out += pass.fanned_out;
            total.attempted += pass.attempted;
            total.delivered += pass.delivered;
            if pass.events == 0 && pass.attempted == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// The endpoints of the claimed deliveries, each read once (with its secrets).
    async fn targets(
        &self,
        claimed: &[Delivery],
        now: Timestamp,
    ) -> Result<HashMap<EndpointId, Arc<Target>>, StoreError> {
        let mut targets = HashMap::new();
        for delivery in claimed {
            let id = delivery.endpoint_id;
            if targets.contains_key(&id) {
                continue;
            }
            // Deleted meanwhile: its deliveries went with it.
            if let Some((endpoint, sealed)) = self.services.store.endpoint_for_delivery(id).await? {
                let secrets = self.open_secrets(&endpoint, &sealed, now);
                targets.insert(id, Arc::new(Target { endpoint, secrets }));
            }
        }
        Ok(targets)
    }

    /// The events of the claimed deliveries, read together.
    async fn events(
        &self,
        claimed: &[Delivery],
    ) -> Result<HashMap<EventId, PushEvent>, StoreError> {
        let ids: Vec<EventId> = claimed.iter().map(|d| d.event_id).collect();
        let events = self.services.store.get_events(&ids).await?;
        Ok(events.into_iter().map(|e| (e.id, e)).collect())
    }

    /// Attempts one claimed delivery to its endpoint (`target`) with its event; its outcome, to
    /// record, or `None` when there was nothing to send any more.
    async fn attempt(
        &self,
        delivery: Delivery,
        target: Option<Arc<Target>>,
        event: Option<PushEvent>,
    ) -> Result<Option<Attempted>, StoreError> {
        let (Some(target), Some(event)) = (target, event) else {
            // Deleted meanwhile: its deliveries went with it.
            return Ok(None);
        };
        let now = self.clock.now();
        let started = Instant::now();
        let answer = self.send(&target, &event, now).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = self.judge(&delivery, &target.endpoint, answer, latency_ms);
        Ok(Some(Attempted { record, event }))
    }

    /// Turns an answer (or the failure to get one) into what is recorded.
    fn judge(
        &self,
        delivery: &Delivery,
        endpoint: &Endpoint,
        answer: Result<Answer, String>,
        latency_ms: u64,
    ) -> AttemptRecord {
        let now = self.clock.now();
        let failing = |disable: Option<String>| HealthChange::Failing {
            disable,
            failing_cutoff: now - FAILING_LIMIT,
        };
        let retry = |retry_after: Option<Duration>| match schedule::next_attempt(
            delivery.attempts,
            retry_after,
            now,
        ) {
            Some(at) => NextStep::RetryAt(at),
            None => NextStep::GiveUp,
        };
        let (status_code, error, body, next, health) = match answer {
            Ok(a) if (200..300).contains(&a.status) => (
                Some(a.status),
                None,
                Some(a.body),
                NextStep::Succeeded,
                HealthChange::Healthy,
            ),
            Ok(a) if a.status == 410 => {
                // Gone: the endpoint is disabled; its pending deliveries wait for it to be
                // enabled (events committed meanwhile are not queued: replay sends them).
                let reason = "the endpoint answered 410 Gone".to_string();
                (
                    Some(a.status),
                    None,
                    Some(a.body),
                    retry(None),
                    failing(Some(reason)),
                )
            }
            Ok(a) => {
                let honoured = matches!(a.status, 429 | 503)
                    .then_some(a.retry_after)
                    .flatten();
                (
                    Some(a.status),
                    None,
                    Some(a.body),
                    retry(honoured),
                    failing(None),
                )
            }
            Err(error) => (None, Some(error), None, retry(None), failing(None)),
        };
        AttemptRecord {
            delivery: delivery.id,
            endpoint: endpoint.id,
            owner: self.owner,
            now,
            status_code,
            error,
            latency_ms,
            response_body: body,
            next,
            health,
        }
    }

    /// Signs and posts the event to the endpoint's URL.
    async fn send(
        &self,
        target: &Target,
        event: &PushEvent,
        now: Timestamp,
    ) -> Result<Answer, String> {
        let endpoint = &target.endpoint;
        let url = self
            .egress
            .check_url(&endpoint.url)
            .map_err(|e| format!("url {e}"))?;
        let secrets = target.secrets.as_ref().map_err(Clone::clone)?;
        let body = message_body(event, endpoint.include_payload);
        let id = event.id.to_string();
        let timestamp = now.timestamp();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static("poblysh-connectors"));
        let signature = signature_header(secrets, &id, timestamp, &body);
        for (name, value) in [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            let value =
                HeaderValue::from_str(&value).map_err(|_| "unencodable header".to_string())?;
            headers.insert(name, value);
        }
        self.post(&url, headers, body, now).await
    }

    /// The secrets that sign now: the current one, and the one before a rotation during its
    /// overlap.
    fn open_secrets(
        &self,
        endpoint: &Endpoint,
        sealed: &EndpointSecrets,
        now: Timestamp,
    ) -> Result<Vec<SigningSecret>, String> {
        let vault = &self.services.vault;
        let open = |bytes: &[u8]| {
            SigningSecret::open(vault, endpoint.tenant_id, endpoint.id, bytes)
                .map_err(|_| "the signing secret could not be opened".to_string())
        };
        let mut secrets = vec![open(&sealed.current)?];
        if let Some((previous, until)) = &sealed.previous {
            if *until > now {
                secrets.push(open(previous)?);
            }
        }
        Ok(secrets)
    }

    /// Posts through a client bound to the one address checked for this attempt (kept for the
    /// next attempt to the same host and address, so its connections are reused).
    async fn post(
        &self,
        url: &Url,
        headers: HeaderMap,
        body: Vec<u8>,
        now: Timestamp,
    ) -> Result<Answer, String> {
        let addr = self
            .egress
            .resolve(url)
            .await
            .map_err(|e| format!("url {e}"))?;
        let client = self.clients.for_address(url, addr)?;
        let response = client
            .post(url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| schedule::parse_retry_after(v, now));
        Ok(Answer {
            status,
            retry_after,
            body: capped_body(response).await,
        })
    }
}

/// Observes the attempts whose outcomes were written (`kept`, in order); how many delivered.
fn recorded(done: &[Attempted], kept: &[bool]) -> usize {
    let mut delivered = 0;
    for (attempted, ours) in done.iter().zip(kept) {
        if !ours {
            tracing::warn!(delivery = %attempted.record.delivery, "delivery lease lost before the outcome was recorded");
            continue;
        }
        if attempted.record.next == NextStep::Succeeded {
            delivered += 1;
        }
        observe(&attempted.record, &attempted.event, attempted.record.now);
    }
    delivered
}

/// The message: `{ type, timestamp, data }`, the signal's payload only when asked for.
pub fn message_body(event: &PushEvent, include_payload: bool) -> Vec<u8> {
    let mut data = event.data.clone();
    if !include_payload {
        if let Some(map) = data.as_object_mut() {
            map.remove("payload");
        }
    }
    let message = json!({
        "type": event.event_type.as_str(),
        "timestamp": format_time(&event.created_at),
        "data": data,
    });
    serde_json::to_vec(&message).unwrap_or_default()
}

/// Up to [`MAX_RESPONSE_BODY`] bytes of the answer's body, as text.
async fn capped_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_RESPONSE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(MAX_RESPONSE_BODY);
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    while text.len() > MAX_RESPONSE_BODY {
        text.pop();
    }
    text
}

/// What went wrong, without the URL or anything the endpoint sent.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        "could not connect".into()
    } else {
        "the request failed before an answer".into()
    }
}

fn observe(record: &AttemptRecord, event: &PushEvent, now: Timestamp) {
    let outcome = match record.next {
        NextStep::Succeeded => "succeeded",
        NextStep::RetryAt(_) => "retried",
        NextStep::GiveUp => "failed",
    };
    metrics::counter!("push_deliveries_total", "outcome" => outcome).increment(1);
    if record.next == NextStep::Succeeded {
        let lag = now.signed_duration_since(event.created_at);
        let seconds = lag.num_milliseconds() as f64 / 1000.0;
        metrics::histogram!("push_delivery_lag_seconds").record(seconds.max(0.0));
    }
}

/// The background loop until shutdown: attempts run on their own tasks (at most
/// [`IN_FLIGHT`] at once) and each step of the loop records the outcomes that came back since
/// the last ([`RECORD_BATCH`] at most), so a hanging endpoint holds back only its own lines.
/// Idle, it waits until events are stored (by this process, or announced by another instance),
/// an attempt comes back (its outcome to record frees the next of its line), or the poll
/// interval passes.
pub async fn run(services: Services) {
    let dispatcher = Dispatcher::new(services.clone());
    let poll = services.config.worker_poll_interval;
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let (outcomes, mut pending) = tokio::sync::mpsc::unbounded_channel::<Attempted>();
    let mut done: Vec<Attempted> = Vec::new();
    while !services.is_shutting_down() {
        let news = crate::store::wake::next_push_news();
        tokio::pin!(news);
        news.as_mut().enable();
        while done.len() < RECORD_BATCH {
            match pending.try_recv() {
                Ok(next) => done.push(next),
                Err(_) => break,
            }
        }
        let busy = match dispatcher.feed(&mut done, &slots, &outcomes).await {
            Ok(busy) => busy,
            Err(e) => {
                tracing::warn!(error = %e, "push dispatch step failed");
                false
            }
        };
        if !busy {
            tokio::select! {
                () = tokio::time::sleep(poll) => {}
                () = &mut news => {}
                Some(next) = pending.recv() => done.push(next),
            }
        }
    }
}
