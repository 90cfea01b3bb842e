//! The sync scheduler, measured in this process: `Scheduler::tick` (the pass every instance
//! with workers runs) over the store of the run's database, with nothing due, with a few
//! connections due, and with every connection due.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use connectors::config::{Config, Source};
use connectors::domain::now;
use connectors::ingest::sync::Scheduler;
use connectors::services::Services;
use connectors::store::{Store, StoreOptions};
use hdrhistogram::Histogram;

use crate::bulk::Bulk;
use crate::report::thousands;

/// The services a scheduler pass needs, over the run's database.
pub struct Harness {
    services: Services,
    store: Arc<dyn Store>,
}

impl Harness {
    /// The configuration of the measured server (sandbox enabled), without its listener.
    pub async fn open(url: &str, token: &str, secret: &str, crypto_key: &str) -> Result<Self> {
        let config = Config::from_source(&Source::from_pairs([
            ("POBLYSH_PROFILE", "test"),
            ("POBLYSH_DATABASE_URL", url),
            ("POBLYSH_OPERATOR_TOKENS", token),
            ("POBLYSH_CRYPTO_KEY", crypto_key),
            ("POBLYSH_SANDBOX_ENABLED", "true"),
            ("POBLYSH_SANDBOX_WEBHOOK_SECRET", secret),
            ("POBLYSH_ROLES", "worker"),
        ]))
        .map_err(|e| anyhow!("scheduler configuration: {e}"))?;
        let store = connectors::store::connect(url, &StoreOptions { max_connections: 4 })
            .await
            .context("opening the store for the scheduler")?;
        Ok(Self {
            services: Services::new(Arc::new(config), store.clone()),
            store,
        })
    }

    /// The providers the scheduler looks at (every enabled provider that syncs).
    pub fn providers(&self) -> Vec<&'static str> {
        self.services
            .registry
            .entries()
            .iter()
            .map(|e| e.descriptor())
            .filter(|d| d.sync)
            .map(|d| d.slug)
            .collect()
    }

    pub async fn close(self) {
        self.store.close().await;
    }

    /// One pass, timed; fails unless it created `expected` jobs.
    async fn pass(&self, expected: u64) -> Result<Duration> {
        let started = Instant::now();
        let created = Scheduler.tick(&self.services, now()).await?;
        let took = started.elapsed();
        if created as u64 != expected {
            bail!("a scheduler pass created {created} jobs, expected {expected}");
        }
        Ok(took)
    }
}

/// The scheduler's figures at one stage.
pub struct SchedulerFigures {
    pub connections: u64,
    /// A pass with nothing due, µs.
    pub idle: Histogram<u64>,
    /// A pass with `due` connections due, µs.
    pub partial: Histogram<u64>,
    pub due: u64,
    /// The pass over every connection.
    pub full: Duration,
}

impl SchedulerFigures {
    /// Median µs per connection scheduled by a partial pass.
    pub fn partial_per_connection_us(&self) -> f64 {
        self.partial.value_at_quantile(0.5) as f64 / self.due as f64
    }

    pub fn full_per_connection_us(&self) -> f64 {
        self.full.as_secs_f64() * 1e6 / self.connections as f64
    }

    pub fn one_line(&self) -> String {
        format!(
            "nothing due: p50 {:.2} ms, p99 {:.2} ms; {} due: p50 {:.2} ms ({:.0} µs per \
             connection), p99 {:.2} ms; all {} due: {:.2} s ({:.0} µs per connection)",
            ms(&self.idle, 0.5),
            ms(&self.idle, 0.99),
            self.due,
            ms(&self.partial, 0.5),
            self.partial_per_connection_us(),
            ms(&self.partial, 0.99),
            thousands(self.connections),
            self.full.as_secs_f64(),
            self.full_per_connection_us()
        )
    }
}

pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record((d.as_micros() as u64).max(1));
}

/// `passes` passes with nothing due, `passes` with `due` random connections due (sync jobs
/// removed between passes, untimed), then one pass with every connection due.
pub async fn measure(h: &Harness, bulk: &Bulk, due: u64, passes: u32) -> Result<SchedulerFigures> {
    let connections = bulk.count("connections").await?;
    bulk.clear_jobs().await?;
    bulk.schedule_ahead().await?;
    // The first pass also queues the subscription jobs of connections with a subscription to
    // open (the sandbox's); they stay queued, so the timed passes create only sync jobs.
    Scheduler.tick(&h.services, now()).await?;
    let mut idle = histogram()?;
    for _ in 0..passes {
        record(&mut idle, h.pass(0).await?);
    }
    let mut partial = histogram()?;
    for _ in 0..passes {
        bulk.make_due(Some(due)).await?;
        record(&mut partial, h.pass(due).await?);
        bulk.clear_jobs().await?;
    }
    bulk.make_due(None).await?;
    let full = h.pass(connections).await?;
    bulk.clear_jobs().await?;
    bulk.schedule_ahead().await?;
    Ok(SchedulerFigures {
        connections,
        idle,
        partial,
        due,
        full,
    })
}
