//! The floors of an ingest run, driven on the same server with the same number of clients just
//! before the deliveries, so that accepted/s can be read as a fraction of each: `GET /healthz`
//! (no work at all) and `GET /bench/floor` (a fixed body the size of a `202` answer, behind
//! the operator token and `X-Tenant-Id`, so authentication is included but no database).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use connectors::domain::TenantId;
use hdrhistogram::Histogram;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Client, StatusCode, Url};

use crate::ingest::histogram;

/// What a floor route did over the recorded window.
pub struct Floor {
    pub requests: u64,
    pub errors: u64,
    pub window: Duration,
    /// Latency of every recorded request, in microseconds.
    pub latency: Histogram<u64>,
}

impl Floor {
    pub fn per_sec(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// `per_sec` as a fraction of the floor's throughput.
    pub fn fraction(&self, per_sec: f64) -> f64 {
        per_sec / self.per_sec().max(1e-9)
    }
}

/// `concurrency` tasks request `GET /healthz` back to back for `warmup`, then `duration`.
pub async fn healthz(
    client: &Client,
    base: &Url,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Floor> {
    let request = Request {
        url: base.join("healthz")?,
        headers: HeaderMap::new(),
    };
    drive(client, request, concurrency, warmup, duration).await
}

/// `concurrency` tasks request `GET /bench/floor` for `tenant` with `auth` (the operator's
/// `Authorization` header) back to back for `warmup`, then `duration`.
pub async fn fixed_body(
    client: &Client,
    base: &Url,
    (auth, tenant): (HeaderValue, TenantId),
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Floor> {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, auth);
    headers.insert("x-tenant-id", HeaderValue::from_str(&tenant.to_string())?);
    let request = Request {
        url: base.join("bench/floor")?,
        headers,
    };
    drive(client, request, concurrency, warmup, duration).await
}

/// The one request a floor repeats.
struct Request {
    url: Url,
    headers: HeaderMap,
}

async fn drive(
    client: &Client,
    request: Request,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Floor> {
    let request = Arc::new(request);
    let record_from = Instant::now() + warmup;
    let end = record_from + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(sender(client.clone(), request.clone(), record_from, end)))
        .collect();
    let mut floor = Floor {
        requests: 0,
        errors: 0,
        window: duration,
        latency: histogram()?,
    };
    for task in tasks {
        let (requests, errors, latency) = task.await.map_err(|e| anyhow!("sender: {e}"))??;
        floor.requests += requests;
        floor.errors += errors;
        floor
            .latency
            .add(latency)
            .map_err(|e| anyhow!("histogram: {e:?}"))?;
    }
    Ok(floor)
}

async fn sender(
    client: Client,
    request: Arc<Request>,
    record_from: Instant,
    end: Instant,
) -> Result<(u64, u64, Histogram<u64>)> {
    let mut latency = histogram()?;
    let (mut requests, mut errors) = (0, 0);
    loop {
        let started = Instant::now();
        if started >= end {
            return Ok((requests, errors, latency));
        }
        let sent = client
            .get(request.url.clone())
            .headers(request.headers.clone())
            .send()
            .await;
        let ok = match sent {
            Ok(response) => response.status() == StatusCode::OK && response.bytes().await.is_ok(),
            Err(_) => false,
        };
        if started >= record_from {
            requests += 1;
            if !ok {
                errors += 1;
            }
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            latency.saturating_record(micros.max(1));
        }
    }
}
