//! The sync scenario: many sandbox connections, one sync job each, run by the release server's
//! background workers against the harness's fake sandbox API ([`crate::fake_api`]); signals
//! per second from the first job's start to the last job's end.
//!
//! Each job is a first sync: it reads every page the fake holds for its connection
//! (`--pages-per-connection` pages of `--page-size` events, each answered after
//! `--provider-latency-ms`).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use connectors::domain::TenantId;
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::Url;
use serde_json::Value;

use crate::api::Api;
use crate::fake_api::{FakeSettings, FakeStats};
use crate::report::thousands;

/// One connection with its queued job.
pub struct Queued {
    pub tenant: TenantId,
    pub connection: String,
    pub job: String,
}

/// `POST /connections/{id}/sync` for every connection.
pub async fn enqueue_all(
    api: &Api,
    base: &Url,
    connections: Vec<(TenantId, String)>,
    concurrency: usize,
) -> Result<Vec<Queued>> {
    stream::iter(connections)
        .map(|(tenant, connection)| async move {
            let job = api.sync_now(base, tenant, &connection).await?;
            Ok::<_, anyhow::Error>(Queued {
                tenant,
                connection,
                job,
            })
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// Prepares the queued jobs through the store while no worker runs
/// ([`crate::queue::requeue_due_now`]). Each connection also has the job that opens its
/// sandbox subscription, queued when it connected; it goes back to the queue too and runs (at
/// once, against the fake) beside the syncs, which alone are counted.
pub async fn prepare(database_url: &str, queued: &[Queued]) -> Result<()> {
    let syncs = crate::queue::requeue_due_now(database_url).await?;
    if syncs != queued.len() {
        bail!(
            "claimed {syncs} queued sync jobs, expected {}",
            queued.len()
        );
    }
    Ok(())
}

/// Waits until the server's `sync_jobs_total` counts `jobs` finished jobs (succeeded or
/// failed), polling `/metrics` every 100 ms; returns the wall time since `started`.
pub async fn wait_finished(
    api: &Api,
    base: &Url,
    jobs: usize,
    started: Instant,
    timeout: Duration,
) -> Result<Duration> {
    let mut last_report = Instant::now();
    loop {
        let succeeded = api
            .counter(
                base,
                "sync_jobs_total",
                &[
                    "provider=\"sandbox\"",
                    "job_type=\"incremental\"",
                    "outcome=\"succeeded\"",
                ],
            )
            .await
            .unwrap_or(0);
        let failed = api
            .counter(
                base,
                "sync_jobs_total",
                &[
                    "provider=\"sandbox\"",
                    "job_type=\"incremental\"",
                    "outcome=\"failed\"",
                ],
            )
            .await
            .unwrap_or(0);
        if (succeeded + failed) as usize >= jobs {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!(
                "after {} s only {succeeded} of {jobs} jobs succeeded ({failed} failed)",
                timeout.as_secs()
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            println!(
                "  {} of {} jobs done after {:.0} s",
                thousands(succeeded + failed),
                thousands(jobs as u64),
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the jobs and the connections' signals say once every job has ended.
pub struct SyncOutcome {
    pub connections: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Attempts beyond the first, summed over the jobs.
    pub extra_attempts: i64,
    /// Signals listed for the connections.
    pub signals: u64,
    /// Signals the fake holds for the connections.
    pub expected_signals: u64,
    /// Provider calls (pages) the server counted.
    pub pages: u64,
    /// What the fake provider served.
    pub fake: FakeSettings,
    /// What the fake provider saw.
    pub provider: FakeStats,
    /// Jobs the server ran at once (`POBLYSH_SYNC_CONCURRENCY`).
    pub jobs_at_once: usize,
    /// From the first job's `started_at` to the last job's `finished_at`.
    pub window: Duration,
    /// From starting the server to the last job counted (includes start-up).
    pub wall: Duration,
}

impl SyncOutcome {
    /// The figures on one line, for the console.
    pub fn one_line(&self) -> String {
        format!(
            "{} jobs succeeded, {} failed, {} signals in {:.2} s: {} signals/s ({} pages; {} \
             provider requests, per connection {:.1} ms p50 / {:.1} ms p99 apart; wall {:.2} s)",
            thousands(self.succeeded as u64),
            self.failed,
            thousands(self.signals),
            self.window.as_secs_f64(),
            thousands(self.signals_per_sec().round() as u64),
            thousands(self.pages),
            thousands(self.provider.requests),
            self.gap_ms(0.5),
            self.gap_ms(0.99),
            self.wall.as_secs_f64()
        )
    }

    /// The time between a connection's consecutive provider requests at quantile `q`, ms.
    pub fn gap_ms(&self, q: f64) -> f64 {
        self.provider.gaps.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn signals_per_sec(&self) -> f64 {
        self.signals as f64 / self.window.as_secs_f64().max(1e-9)
    }

    pub fn jobs_per_sec(&self) -> f64 {
        self.succeeded as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|t| t.to_utc())
}

/// Reads every job (`GET /jobs/{id}`) and counts every connection's signals (`GET /signals`,
/// page by page), after the measurement.
pub async fn collect(
    api: &Api,
    base: &Url,
    queued: &[Queued],
    wall: Duration,
    concurrency: usize,
    fake: (FakeSettings, FakeStats),
    jobs_at_once: usize,
) -> Result<SyncOutcome> {
    let jobs: Vec<Value> = stream::iter(queued)
        .map(|q| async move {
            api.get_json(base, q.tenant, &format!("jobs/{}", q.job))
                .await
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut first_start: Option<DateTime<Utc>> = None;
    let mut last_finish: Option<DateTime<Utc>> = None;
    let (mut succeeded, mut failed, mut extra_attempts) = (0, 0, 0);
    for job in &jobs {
        match job["status"].as_str() {
            Some("succeeded") => succeeded += 1,
            Some("failed") => failed += 1,
            other => bail!("job {} ended {other:?}", job["id"]),
        }
        extra_attempts += job["attempts"].as_i64().unwrap_or(1) - 1;
        if let Some(t) = time(&job["started_at"]) {
            first_start = Some(first_start.map_or(t, |f| f.min(t)));
        }
        if let Some(t) = time(&job["finished_at"]) {
            last_finish = Some(last_finish.map_or(t, |l| l.max(t)));
        }
    }
    let window = match (first_start, last_finish) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
        _ => bail!("the jobs carry no start or finish times"),
    };
    let counts: Vec<u64> = stream::iter(queued)
        .map(|q| count_signals(api, base, q))
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    let pages = api
        .counter(
            base,
            "provider_calls_total",
            &["provider=\"sandbox\"", "outcome=\"ok\""],
        )
        .await?;
    let (settings, provider) = fake;
    Ok(SyncOutcome {
        connections: queued.len(),
        succeeded,
        failed,
        extra_attempts,
        signals: counts.iter().sum(),
        expected_signals: queued.len() as u64 * settings.pages * settings.page_size,
        pages,
        fake: settings,
        provider,
        jobs_at_once,
        window,
        wall,
    })
}

async fn count_signals(api: &Api, base: &Url, q: &Queued) -> Result<u64> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("signals?limit=100&connection_id={}", q.connection);
        if let Some(c) = &cursor {
            path.push_str("&cursor=");
            path.push_str(&url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>());
        }
        let page = api.get_json(base, q.tenant, &path).await?;
        count += page["signals"].as_array().map_or(0, Vec::len) as u64;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(count),
        }
    }
}
