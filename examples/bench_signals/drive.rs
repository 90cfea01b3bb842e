//! The HTTP side: deep cursors collected from the server's own `next_cursor`, and the load
//! generator recording per-request latency into HDR histograms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use connectors::domain::TenantId;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Client, StatusCode, Url};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::dataset::TenantData;
use crate::report::{mb, thousands};
use crate::server;

/// `limit` of every request.
pub const PAGE_SIZE: u64 = 50;
/// Latencies are recorded in microseconds, up to a minute, with three significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

/// The client side of the server's API.
pub struct Api {
    client: Client,
    base: Url,
    auth: HeaderValue,
}

/// One request to make: a URL and the tenant to send it for.
#[derive(Clone)]
pub struct Target {
    url: Url,
    tenant: HeaderValue,
}

impl Target {
    /// The same request to the server at `base` (the path and query kept).
    pub fn rebased(&self, base: &Url) -> Result<Target> {
        let mut url = base.join(self.url.path())?;
        url.set_query(self.url.query());
        Ok(Target {
            url,
            tenant: self.tenant.clone(),
        })
    }
}

#[derive(Deserialize)]
struct Page {
    signals: Vec<IgnoredAny>,
    next_cursor: Option<String>,
}

impl Api {
    /// One client (one connection pool, keep-alive) for every task.
    pub fn new(base: Url, token: &str, concurrency: usize) -> Result<Self> {
        let client = Client::builder()
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))?;
        auth.set_sensitive(true);
        Ok(Self { client, base, auth })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `GET /signals?limit=50[&cursor=...]` for `tenant`.
    pub fn target(&self, tenant: TenantId, cursor: Option<&str>) -> Result<Target> {
        let mut url = self.base.join("signals")?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &PAGE_SIZE.to_string());
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
        }
        Ok(Target {
            url,
            tenant: HeaderValue::from_str(&tenant.to_string())?,
        })
    }

    /// `GET /healthz`: the floor, a route that touches neither the database nor auth.
    pub fn healthz_target(&self) -> Result<Target> {
        Ok(Target {
            url: self.base.join("healthz")?,
            tenant: HeaderValue::from_static("00000000-0000-0000-0000-000000000000"),
        })
    }

    /// `GET /bench/floor` for `tenant`: the fixed-body floor (operator token, tenant header and
    /// a body the size of a page, but no database and no serialization).
    pub fn fixed_body_target(&self, tenant: TenantId) -> Result<Target> {
        Ok(Target {
            url: self.base.join("bench/floor")?,
            tenant: HeaderValue::from_str(&tenant.to_string())?,
        })
    }

    /// Requests every one of `targets` once; the mean size of the answers' bodies, in bytes.
    pub async fn mean_body_bytes(&self, targets: &[Target]) -> Result<usize> {
        if targets.is_empty() {
            bail!("no page to size");
        }
        let mut total = 0usize;
        for target in targets {
            let response = self.send(target).await?;
            let status = response.status();
            let body = response.bytes().await?;
            if status != StatusCode::OK {
                bail!(
                    "GET {} answered {status} while sizing pages",
                    target.url.path()
                );
            }
            total += body.len();
        }
        Ok(total / targets.len())
    }

    async fn send(&self, target: &Target) -> reqwest::Result<reqwest::Response> {
        self.client
            .get(target.url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header("x-tenant-id", target.tenant.clone())
            .send()
            .await
    }

    /// One page, parsed; anything but 200 is an error.
    async fn page(&self, target: &Target) -> Result<Page> {
        let response = self.send(target).await?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            bail!(
                "GET {} answered {status}: {}",
                target.url.path(),
                snippet(&body)
            );
        }
        Ok(response.json().await?)
    }

    /// One request of the load: the body is read in full; anything but 200 is an error.
    async fn fetch(&self, target: &Target) -> Result<(), String> {
        let response = self.send(target).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if status == StatusCode::OK {
            Ok(())
        } else {
            Err(format!(
                "{status}: {}",
                snippet(&String::from_utf8_lossy(&body))
            ))
        }
    }
}

fn snippet(text: &str) -> String {
    text.chars().take(300).collect()
}

/// First pages: one target per tenant.
pub fn first_page_targets(api: &Api, tenants: &[TenantData]) -> Result<Vec<Target>> {
    tenants.iter().map(|t| api.target(t.id, None)).collect()
}

/// Cursors 70–90 % deep into the history of a sample of tenants.
#[derive(Clone)]
pub struct DeepCursors {
    pub targets: Vec<Target>,
    pub tenants: usize,
    /// Fewest and most rows a cursor skips.
    pub min_skip: u64,
    pub max_skip: u64,
    /// Signals per tenant of the sampled tenants (the largest).
    pub per_tenant: u64,
    pub pages_walked: u64,
    pub elapsed: Duration,
}

impl DeepCursors {
    pub fn describe(&self) -> String {
        format!(
            "each skips {}–{} of a tenant's {} signals",
            thousands(self.min_skip),
            thousands(self.max_skip),
            thousands(self.per_tenant)
        )
    }
}

/// Walks `how_many` random tenants page by page, following `next_cursor`, and keeps every
/// cursor that skips 70 to 90 % of the tenant's signals. Checks each page's size on the way.
pub async fn deep_cursors(api: &Api, tenants: &[TenantData], how_many: u32) -> Result<DeepCursors> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let chosen: Vec<&TenantData> = tenants
        .choose_multiple(&mut rng, how_many as usize)
        .collect();
    let mut targets = Vec::new();
    let (mut min_skip, mut max_skip, mut per_tenant, mut pages) = (u64::MAX, 0, 0, 0);
    for tenant in &chosen {
        let (from, to) = (tenant.signals * 7 / 10, tenant.signals * 9 / 10);
        let mut depth = 0u64;
        let mut cursor: Option<String> = None;
        loop {
            let page = api
                .page(&api.target(tenant.id, cursor.as_deref())?)
                .await
                .with_context(|| format!("walking tenant {} at depth {depth}", tenant.id))?;
            pages += 1;
            let expected = PAGE_SIZE.min(tenant.signals - depth);
            if page.signals.len() as u64 != expected {
                bail!(
                    "tenant {} at depth {depth}: got {} signals, expected {expected}",
                    tenant.id,
                    page.signals.len()
                );
            }
            depth += expected;
            let Some(next) = page.next_cursor else { break };
            if depth > to {
                break;
            }
            if depth >= from {
                targets.push(api.target(tenant.id, Some(&next))?);
                min_skip = min_skip.min(depth);
                max_skip = max_skip.max(depth);
            }
            cursor = Some(next);
        }
        per_tenant = per_tenant.max(tenant.signals);
    }
    if targets.is_empty() {
        bail!("no deep cursor found; are there enough signals per tenant?");
    }
    Ok(DeepCursors {
        targets,
        tenants: chosen.len(),
        min_skip,
        max_skip,
        per_tenant,
        pages_walked: pages,
        elapsed: started.elapsed(),
    })
}

/// How hard and how long to drive a scenario.
pub struct LoadSettings {
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// The outcome of one scenario's recorded window.
pub struct Scenario {
    pub name: &'static str,
    /// Requests started in the recorded window (successful or not).
    pub requests: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// The recorded window.
    pub window: Duration,
    /// Latency of every recorded request, in microseconds.
    pub latency: Histogram<u64>,
    /// Peak VmRSS of the server during warm-up and the window.
    pub max_rss_kb: u64,
    /// CPU used during the window, in cores (1.0 = one core busy all the time).
    pub server_cpu: Option<f64>,
    pub client_cpu: Option<f64>,
}

impl Scenario {
    pub fn req_per_sec(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    /// Latency at `quantile`, in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }

    pub fn one_line(&self) -> String {
        format!(
            "{} requests, {} errors, {:.0} req/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, \
             max {:.2} ms, max RSS {:.1} MB, server CPU {}, client CPU {}",
            thousands(self.requests),
            self.errors,
            self.req_per_sec(),
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.max_ms(),
            mb(self.max_rss_kb),
            cores(self.server_cpu),
            cores(self.client_cpu),
        )
    }
}

/// CPU use as a percentage of one core.
pub fn cores(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_string(), |c| format!("{:.0} %", c * 100.0))
}

struct WorkerStats {
    requests: u64,
    errors: u64,
    error_samples: Vec<String>,
    latency: Histogram<u64>,
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// Runs `concurrency` tasks requesting random `targets` for the warm-up and then the window.
pub async fn run_scenario(
    api: &Arc<Api>,
    name: &'static str,
    targets: Arc<Vec<Target>>,
    load: &LoadSettings,
    pid: u32,
) -> Result<Scenario> {
    let record_from = Instant::now() + load.warmup;
    let end = record_from + load.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_rss(pid, stop.clone()));
    let workers: Vec<_> = (0..load.concurrency)
        .map(|_| tokio::spawn(worker(api.clone(), targets.clone(), record_from, end)))
        .collect();

    tokio::time::sleep_until(record_from.into()).await;
    let cpu_start = (
        server::cpu_seconds("self"),
        server::cpu_seconds(&pid.to_string()),
        Instant::now(),
    );
    let mut total = WorkerStats {
        requests: 0,
        errors: 0,
        error_samples: Vec::new(),
        latency: histogram()?,
    };
    for handle in workers {
        let stats = handle.await.context("a client task panicked")??;
        total.requests += stats.requests;
        total.errors += stats.errors;
        total
            .latency
            .add(&stats.latency)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        for sample in stats.error_samples {
            if total.error_samples.len() < 5 {
                total.error_samples.push(sample);
            }
        }
    }
    let cpu_end = (
        server::cpu_seconds("self"),
        server::cpu_seconds(&pid.to_string()),
        Instant::now(),
    );
    stop.store(true, Ordering::Relaxed);
    let max_rss_kb = sampler.await.context("the RSS sampler panicked")?;

    let wall = (cpu_end.2 - cpu_start.2).as_secs_f64();
    let used = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / wall);
    Ok(Scenario {
        name,
        requests: total.requests,
        errors: total.errors,
        error_samples: total.error_samples,
        window: load.duration,
        latency: total.latency,
        max_rss_kb,
        client_cpu: used(cpu_start.0, cpu_end.0),
        server_cpu: used(cpu_start.1, cpu_end.1),
    })
}

/// One client task: requests back to back until `end`; records those started at or after
/// `record_from`.
async fn worker(
    api: Arc<Api>,
    targets: Arc<Vec<Target>>,
    record_from: Instant,
    end: Instant,
) -> Result<WorkerStats> {
    let mut stats = WorkerStats {
        requests: 0,
        errors: 0,
        error_samples: Vec::new(),
        latency: histogram()?,
    };
    let mut rng = StdRng::from_entropy();
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let target = &targets[rng.gen_range(0..targets.len())];
        let outcome = api.fetch(target).await;
        let took = started.elapsed();
        if started < record_from {
            continue;
        }
        stats.requests += 1;
        stats
            .latency
            .saturating_record((took.as_micros() as u64).clamp(1, MAX_LATENCY_US));
        if let Err(err) = outcome {
            stats.errors += 1;
            if stats.error_samples.len() < 5 {
                stats.error_samples.push(err);
            }
        }
    }
    Ok(stats)
}

/// The peak VmRSS of `pid`, sampled every 500 ms until `stop`.
async fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> u64 {
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
