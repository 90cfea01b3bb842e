//! Webhook ingest under load: concurrent senders post signed sandbox deliveries, back to back or
//! at a constant rate, and record the latency to `202`; with the worker running, the inbox lag from `202` to the
//! signal is measured twice: for a sample of the load's own deliveries (from the stored
//! event's `processed_at`) and by a probe that polls `GET /signals?limit=1` for its delivery.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use chrono::{DateTime, Utc};
use connectors::domain::{EventStatus, TenantId};
use connectors::store::{Store, StoreOptions};
use hdrhistogram::Histogram;
use reqwest::Url;
use uuid::Uuid;

use crate::api::Api;
use crate::machine::thousands;
use crate::server;

/// Latencies are recorded in microseconds, up to ten minutes, with three significant digits.
const MAX_LATENCY_US: u64 = 600_000_000;
/// How long the probe waits for one delivery's signal before counting it as not listed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the probe polls `GET /signals?limit=1`.
const PROBE_POLL: Duration = Duration::from_millis(5);

pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).clamp(1, MAX_LATENCY_US));
}

/// What to call the run, and how hard and how long to send.
pub struct LoadSettings {
    /// `ingest` or `ingest+worker`.
    pub name: &'static str,
    /// The server's `POBLYSH_ROLES`.
    pub roles: &'static str,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Deliveries per second over all senders; `None`: each sends back to back.
    pub rate: Option<f64>,
}

/// An acknowledged delivery of the recorded window.
#[derive(Clone, Copy)]
pub struct Ack {
    pub tenant: TenantId,
    pub event: Uuid,
    /// The delivery's id is `load-{sender}-{seq}` (the signal's `external_id`); read by the
    /// push harness, which matches signals to acknowledgements.
    #[allow(dead_code)]
    pub sender: usize,
    #[allow(dead_code)]
    pub seq: usize,
    /// The harness's clock when the `202` arrived.
    pub at: DateTime<Utc>,
}

/// The recorded window of one ingest run.
pub struct IngestRun {
    /// `ingest` (`POBLYSH_ROLES=api`) or `ingest+worker` (`api,worker`).
    pub name: &'static str,
    pub roles: &'static str,
    /// Deliveries answered `202` in the recorded window.
    pub accepted: u64,
    /// Deliveries answered `202` from the start of the warm-up to the end.
    pub accepted_total: u64,
    /// When the warm-up began (the harness's clock).
    pub started_at: DateTime<Utc>,
    /// Anything else (another status or a transport error).
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub window: Duration,
    /// Latency to `202` of the accepted deliveries, µs.
    pub latency: Histogram<u64>,
    pub max_rss_kb: u64,
    pub server_cpu: Option<f64>,
    pub client_cpu: Option<f64>,
    /// Every acknowledgement of the window, in no particular order.
    pub acks: Vec<Ack>,
    /// When the last sender stopped (the harness's clock).
    pub ended_at: DateTime<Utc>,
    /// The probe's measurements, when it ran.
    pub probe: Option<Probe>,
    /// Paced deliveries of the recorded window that started more than a period after their
    /// time: their sender woke late (the harness was short of CPU) or had 64 unanswered.
    pub late: u64,
}

impl IngestRun {
    pub fn per_sec(&self) -> f64 {
        self.accepted as f64 / self.window.as_secs_f64()
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn one_line(&self) -> String {
        format!(
            "{} accepted, {} errors, {} started late, {:.0}/s, p50 {:.2} ms, p90 {:.2} ms, \
             p99 {:.2} ms, max {:.2} ms, server CPU {}, client CPU {}",
            thousands(self.accepted),
            self.errors,
            thousands(self.late),
            self.per_sec(),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.latency.max() as f64 / 1000.0,
            cores(self.server_cpu),
            cores(self.client_cpu)
        )
    }
}

/// CPU use as a percentage of one core.
pub fn cores(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |c| format!("{:.0} %", c * 100.0))
}

struct SenderStats {
    accepted: u64,
    accepted_total: u64,
    errors: u64,
    error_samples: Vec<String>,
    latency: Histogram<u64>,
    acks: Vec<Ack>,
    /// Paced deliveries of the recorded window that started more than a period after their time.
    late: u64,
}

/// Drives `concurrency` senders over `tenants` for the warm-up and the recorded window; with
/// `probe_tenant`, the lag probe runs during the window too.
pub async fn run(
    api: &Arc<Api>,
    base: &Url,
    tenants: &Arc<Vec<TenantId>>,
    load: &LoadSettings,
    pid: u32,
    probe_tenant: Option<TenantId>,
) -> Result<IngestRun> {
    let started_at = Utc::now();
    let record_from = Instant::now() + load.warmup;
    let end = record_from + load.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_rss(pid, stop.clone()));
    // Each sender's share of the rate: one delivery per `period`.
    let period = load
        .rate
        .map(|rate| Duration::from_secs_f64(load.concurrency as f64 / rate));
    let senders: Vec<_> = (0..load.concurrency)
        .map(|n| {
            let (api, base, tenants) = (api.clone(), base.clone(), tenants.clone());
            let window = (record_from, end);
            tokio::spawn(async move { sender(api, &base, &tenants, n, window, period).await })
        })
        .collect();
    let probe = probe_tenant.map(|t| {
        let (api, base) = (api.clone(), base.clone());
        tokio::spawn(async move { probe(&api, &base, t, record_from, end).await })
    });

    tokio::time::sleep_until(record_from.into()).await;
    let cpu_start = (
        server::cpu_seconds("self"),
        server::cpu_seconds(&pid.to_string()),
        Instant::now(),
    );
    let mut total = SenderStats {
        accepted: 0,
        accepted_total: 0,
        errors: 0,
        error_samples: Vec::new(),
        latency: histogram()?,
        acks: Vec::new(),
        late: 0,
    };
    for handle in senders {
        let stats = handle.await.context("a sender panicked")??;
        total.accepted += stats.accepted;
        total.accepted_total += stats.accepted_total;
        total.errors += stats.errors;
        total.late += stats.late;
        total
            .latency
            .add(&stats.latency)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        total.acks.extend(stats.acks);
        for sample in stats.error_samples {
            if total.error_samples.len() < 5 {
                total.error_samples.push(sample);
            }
        }
    }
    let ended_at = Utc::now();
    let cpu_end = (
        server::cpu_seconds("self"),
        server::cpu_seconds(&pid.to_string()),
        Instant::now(),
    );
    let probe = match probe {
        Some(handle) => Some(handle.await.context("the probe panicked")??),
        None => None,
    };
    stop.store(true, Ordering::Relaxed);
    let max_rss_kb = sampler.await.context("the RSS sampler panicked")?;
    let wall = (cpu_end.2 - cpu_start.2).as_secs_f64();
    let used = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / wall);
    Ok(IngestRun {
        name: load.name,
        roles: load.roles,
        accepted: total.accepted,
        accepted_total: total.accepted_total,
        started_at,
        errors: total.errors,
        error_samples: total.error_samples,
        window: load.duration,
        latency: total.latency,
        max_rss_kb,
        client_cpu: used(cpu_start.0, cpu_end.0),
        server_cpu: used(cpu_start.1, cpu_end.1),
        acks: total.acks,
        ended_at,
        probe,
        late: total.late,
    })
}

/// Deliveries one paced sender keeps in flight at most; past it the sender falls behind its
/// schedule and each further delivery starts late (counted), as soon as one is answered. At
/// 32 senders and 3,000/s that takes answers slower than 680 ms.
const MAX_IN_FLIGHT: usize = 64;

/// One sender: deliveries until `end` (of `window`), back to back or one per `period`,
/// round robin over the tenants; records those started at or after the window's start.
///
/// Paced, the deliveries arrive at a constant rate, each at its time whether or not the ones
/// before it have been answered (an open model: a slow answer does not hold the next delivery
/// back, so the rate asked is the rate sent while answers come within 64 periods, and a slow
/// server is not measured at a lower rate). A delivery's latency is counted from when it was
/// sent.
async fn sender(
    api: Arc<Api>,
    base: &Url,
    tenants: &[TenantId],
    n: usize,
    (record_from, end): (Instant, Instant),
    period: Option<Duration>,
) -> Result<SenderStats> {
    let mut stats = SenderStats {
        accepted: 0,
        accepted_total: 0,
        errors: 0,
        error_samples: Vec::new(),
        latency: histogram()?,
        acks: Vec::new(),
        late: 0,
    };
    let mut seq = 0usize;
    let mut in_flight = tokio::task::JoinSet::new();
    // Senders start spread over one period, not all at once.
    let mut next = Instant::now() + period.map_or(Duration::ZERO, |p| p / 64 * (n % 64) as u32);
    loop {
        if let Some(period) = period {
            tokio::time::sleep_until(next.into()).await;
            while in_flight.len() >= MAX_IN_FLIGHT {
                if let Some(done) = in_flight.join_next().await {
                    stats.add(done.context("a delivery panicked")?, record_from);
                }
            }
            let now = Instant::now();
            if now > next + period && now >= record_from && now < end {
                stats.late += 1;
            }
            next += period;
        }
        while let Some(done) = in_flight.try_join_next() {
            stats.add(done.context("a delivery panicked")?, record_from);
        }
        let started = Instant::now();
        if started >= end {
            break;
        }
        let tenant = tenants[(n + seq) % tenants.len()];
        let delivery = Delivery {
            tenant,
            sender: n,
            seq,
            started,
        };
        seq += 1;
        if period.is_some() {
            let (api, base) = (api.clone(), base.clone());
            in_flight.spawn(async move { delivery.send(&api, &base).await });
        } else {
            let done = delivery.send(&api, base).await;
            stats.add(done, record_from);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        stats.add(done.context("a delivery panicked")?, record_from);
    }
    Ok(stats)
}

/// One delivery of a sender: `load-{sender}-{seq}` to `tenant`, started at `started`.
struct Delivery {
    tenant: TenantId,
    sender: usize,
    seq: usize,
    started: Instant,
}

/// A delivery's answer: how long it took, when it arrived (the harness's clock), and the
/// stored event's id or the error.
type Answer = (Delivery, Duration, DateTime<Utc>, Result<Uuid, String>);

impl Delivery {
    /// Sends it and takes the answer.
    async fn send(self, api: &Api, base: &Url) -> Answer {
        let id = format!("load-{}-{}", self.sender, self.seq);
        let outcome = api.deliver(base, self.tenant, &id).await;
        let took = self.started.elapsed();
        (self, took, Utc::now(), outcome)
    }
}

impl SenderStats {
    /// Counts one answered delivery; recorded when it started at or after `record_from`.
    fn add(&mut self, (delivery, took, at, outcome): Answer, record_from: Instant) {
        self.accepted_total += u64::from(outcome.is_ok());
        if delivery.started < record_from {
            return;
        }
        match outcome {
            Ok(event) => {
                self.accepted += 1;
                record(&mut self.latency, took);
                self.acks.push(Ack {
                    tenant: delivery.tenant,
                    event,
                    sender: delivery.sender,
                    seq: delivery.seq,
                    at,
                });
            }
            Err(err) => {
                self.errors += 1;
                if self.error_samples.len() < 5 {
                    self.error_samples.push(err);
                }
            }
        }
    }
}

/// The probe's view of the lag: time from `202` until `GET /signals` lists the delivery's
/// signal among the tenant's newest, one probe delivery at a time.
pub struct Probe {
    pub lag: Histogram<u64>,
    /// Probe deliveries whose signal was not listed within [`PROBE_TIMEOUT`].
    pub not_listed: u64,
    /// Probe deliveries that were not accepted.
    pub errors: u64,
}

/// During the recorded window: sends one delivery to `tenant` (a tenant of its own, whose
/// connection is not otherwise loaded), polls `GET /signals?limit=10` (newest first) every
/// 5 ms until it lists that delivery's signal, records the time since the `202`, and starts
/// over. Ten rather than one: the scheduler's first sync of the probe's connection may add
/// signals newer than the probe's own.
async fn probe(
    api: &Api,
    base: &Url,
    tenant: TenantId,
    record_from: Instant,
    end: Instant,
) -> Result<Probe> {
    tokio::time::sleep_until(record_from.into()).await;
    let mut result = Probe {
        lag: histogram()?,
        not_listed: 0,
        errors: 0,
    };
    let mut seq = 0;
    while Instant::now() < end {
        let id = format!("probe-{seq}");
        seq += 1;
        if api.deliver(base, tenant, &id).await.is_err() {
            result.errors += 1;
            continue;
        }
        let acked = Instant::now();
        loop {
            let page = api
                .get_json(base, tenant, "signals?limit=10")
                .await
                .ok()
                .and_then(|page| page["signals"].as_array().cloned())
                .unwrap_or_default();
            if page.iter().any(|s| s["external_id"] == id.as_str()) {
                record(&mut result.lag, acked.elapsed());
                break;
            }
            if acked.elapsed() > PROBE_TIMEOUT {
                result.not_listed += 1;
                break;
            }
            tokio::time::sleep(PROBE_POLL).await;
        }
    }
    Ok(result)
}

/// The lag of a sample of the load's own deliveries, read from the store once the inbox has
/// drained: the stored event's `processed_at` (stamped by the worker as it stores the signal)
/// minus the harness's clock at the `202`. Server and harness share the machine's clock.
pub struct StoreLag {
    pub lag: Histogram<u64>,
    /// Sampled events that ended other than `processed` (unmatched, ignored, failed).
    pub other: Vec<String>,
    /// Sampled events still pending when the drain timeout passed.
    pub pending: usize,
    /// From the end of the load until the last sampled event was processed (zero when the
    /// worker kept up); `None` when some were still pending.
    pub drained_in: Option<Duration>,
    /// Deliveries accepted over the whole run (warm-up included) per second from the start of
    /// the warm-up until the last sampled one was processed: the worker's throughput when it
    /// fell behind, the arrival rate when it kept up. `None` when not drained.
    pub worker_rate: Option<f64>,
}

/// Samples up to `samples` acknowledgements evenly (always including the last one of the
/// window), then polls the store until each is no longer pending or `timeout` passes.
pub async fn store_lag(
    database_url: &str,
    run: &IngestRun,
    samples: usize,
    timeout: Duration,
) -> Result<StoreLag> {
    let store: Arc<dyn Store> =
        connectors::store::connect(database_url, &StoreOptions { max_connections: 2 })
            .await
            .context("opening the store to read processed_at")?;
    let mut acks = run.acks.clone();
    acks.sort_by_key(|a| a.at);
    let step = acks.len().div_ceil(samples.max(1)).max(1);
    let mut waiting: Vec<Ack> = acks.iter().step_by(step).copied().collect();
    if let Some(last) = acks.last() {
        if waiting.last().map(|a| a.event) != Some(last.event) {
            waiting.push(*last);
        }
    }
    let mut result = StoreLag {
        lag: histogram()?,
        other: Vec::new(),
        pending: 0,
        drained_in: None,
        worker_rate: None,
    };
    let deadline = Instant::now() + timeout;
    let mut last_processed = run.ended_at;
    loop {
        let mut still = Vec::new();
        for ack in waiting {
            let event = store
                .get_webhook_event(ack.tenant, ack.event)
                .await
                .context("reading a stored event")?
                .ok_or_else(|| anyhow!("acknowledged event {} is not stored", ack.event))?;
            match (event.status, event.processed_at) {
                (EventStatus::Pending, _) => still.push(ack),
                (EventStatus::Processed, Some(at)) => {
                    let lag = (at - ack.at).to_std().unwrap_or(Duration::ZERO);
                    record(&mut result.lag, lag);
                    last_processed = last_processed.max(at);
                }
                (status, _) => result.other.push(format!("{}: {status:?}", ack.event)),
            }
        }
        if still.is_empty() {
            result.drained_in = (last_processed - run.ended_at).to_std().ok();
            let busy = (last_processed - run.started_at)
                .to_std()
                .unwrap_or_default();
            result.worker_rate = Some(run.accepted_total as f64 / busy.as_secs_f64().max(1e-9));
            break;
        }
        if Instant::now() > deadline {
            result.pending = still.len();
            break;
        }
        waiting = still;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.close().await;
    Ok(result)
}

/// The peak VmRSS of `pid`, sampled every 500 ms until `stop`.
pub async fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> u64 {
    let mut max = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Some(kb) = server::rss_kb(pid) {
            max = max.max(kb);
        }
        if stop.load(Ordering::Relaxed) {
            return max;
        }
    }
}
