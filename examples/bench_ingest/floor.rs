//! The floor of an ingest run: `GET /healthz` driven on the same server, with the same number
//! of clients, just before the deliveries, so that accepted/s can be read as a fraction of
//! what the server answers when a request does no work.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use reqwest::{Client, StatusCode, Url};

use crate::ingest::histogram;

/// What `GET /healthz` did over the recorded window.
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
    let url = Arc::new(base.join("healthz")?);
    let record_from = Instant::now() + warmup;
    let end = record_from + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(sender(client.clone(), url.clone(), record_from, end)))
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
    url: Arc<Url>,
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
        let ok = match client.get(url.as_ref().clone()).send().await {
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
