//! Whether nothing was lost, and how late it came: every delivery the service acknowledged
//! with `202` became exactly one signal (found by its `external_id`, the delivery's id), each
//! of those signals reached every endpoint at least once, and a signal pushed twice carried
//! the same `webhook-id` both times. The lag is the consumer's clock at the first receipt
//! minus the message's `timestamp` (the event's commit with the signal); both clocks are this
//! machine's.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use connectors::domain::TenantId;
use connectors::store::{PageKey, PageRequest, SignalFilter, Store, StoreOptions};
use hdrhistogram::Histogram;

use crate::consumer::{Consumer, Push};
use crate::ingest::{histogram, Ack};

/// What the check found.
pub struct Outcome {
    pub acked: usize,
    /// Acknowledged deliveries without a signal, and with more than one.
    pub missing_signals: usize,
    pub extra_signals: usize,
    /// (signal, endpoint) pairs never pushed.
    pub missing_pushes: usize,
    /// Pushes received beyond the first of each (signal, endpoint).
    pub duplicates: usize,
    /// Signals whose pushes to one endpoint carried different `webhook-id`s.
    pub changed_ids: usize,
    /// Messages received in all.
    pub received: usize,
    pub bad_signatures: u64,
    /// First receipt minus commit, µs.
    pub lag: Histogram<u64>,
    /// The first and last first-receipts, for the push throughput.
    pub span: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
}

impl Outcome {
    pub fn lossless(&self) -> bool {
        self.missing_signals == 0
            && self.extra_signals == 0
            && self.missing_pushes == 0
            && self.changed_ids == 0
    }

    pub fn lag_ms(&self, q: f64) -> f64 {
        self.lag.value_at_quantile(q) as f64 / 1000.0
    }

    /// First receipts per second between the first and the last.
    pub fn pushes_per_sec(&self) -> f64 {
        let firsts = self.lag.len() as f64;
        match self.span {
            Some((a, b)) => firsts / ((b - a).num_milliseconds().max(1) as f64 / 1000.0),
            None => 0.0,
        }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{} acknowledged; signals missing {} / extra {}; pushes received {}, missing {}, \
             duplicates {} (webhook-id changed on {}); bad signatures {}; push lag p50 {:.0} ms, \
             p99 {:.0} ms, max {:.0} ms; {:.0} first pushes/s",
            self.acked,
            self.missing_signals,
            self.extra_signals,
            self.received,
            self.missing_pushes,
            self.duplicates,
            self.changed_ids,
            self.bad_signatures,
            self.lag_ms(0.5),
            self.lag_ms(0.99),
            self.lag.max() as f64 / 1000.0,
            self.pushes_per_sec()
        )
    }
}

/// A delivery as its signal names it: the tenant and the delivery's id (`external_id`).
type DeliveryKey = (TenantId, String);

fn key(ack: &Ack) -> DeliveryKey {
    (ack.tenant, format!("load-{}-{}", ack.sender, ack.seq))
}

/// Every signal id of the acknowledged deliveries, by delivery: read from the store, tenant by
/// tenant, a page at a time. Waits until each acknowledged delivery has a signal or `timeout`.
async fn signals_of(
    store: &dyn Store,
    tenants: &[TenantId],
    acks: &[Ack],
    timeout: Duration,
) -> Result<HashMap<DeliveryKey, Vec<String>>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut by_external: HashMap<DeliveryKey, Vec<String>> = HashMap::new();
        for tenant in tenants {
            let mut after: Option<PageKey> = None;
            loop {
                let page = store
                    .list_signals(
                        *tenant,
                        &SignalFilter::default(),
                        PageRequest { after, fetch: 1000 },
                    )
                    .await
                    .context("listing signals")?;
                for s in &page {
                    if let Some(external) = &s.external_id {
                        by_external
                            .entry((*tenant, external.clone()))
                            .or_default()
                            .push(s.id.to_string());
                    }
                }
                match page.last() {
                    Some(last) if page.len() == 1000 => {
                        after = Some(PageKey {
                            at: last.occurred_at,
                            id: last.id.0,
                        });
                    }
                    _ => break,
                }
            }
        }
        let all_there = acks.iter().all(|a| by_external.contains_key(&key(a)));
        if all_there || Instant::now() > deadline {
            return Ok(by_external);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every acknowledged delivery's signal has reached all `endpoints` (or `timeout`
/// passes), then checks.
pub async fn check(
    database_url: &str,
    tenants: &[TenantId],
    acks: &[Ack],
    consumer: &Consumer,
    endpoints: usize,
    timeout: Duration,
) -> Result<Outcome> {
    let store: Arc<dyn Store> =
        connectors::store::connect(database_url, &StoreOptions { max_connections: 2 })
            .await
            .context("opening the store")?;
    let deadline = Instant::now() + timeout;
    let signals = signals_of(store.as_ref(), tenants, acks, timeout).await?;
    store.close().await;
    let wanted: BTreeSet<String> = acks
        .iter()
        .filter_map(|a| signals.get(&key(a)))
        .flatten()
        .cloned()
        .collect();
    let pushes = loop {
        let pushes = consumer.pushes();
        let reached: BTreeSet<(&str, usize)> = pushes
            .iter()
            .filter_map(|p| p.signal.as_deref().map(|s| (s, p.endpoint)))
            .filter(|(s, _)| wanted.contains(*s))
            .collect();
        if reached.len() >= wanted.len() * endpoints || Instant::now() > deadline {
            break pushes;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut outcome = Outcome {
        acked: acks.len(),
        missing_signals: 0,
        extra_signals: 0,
        missing_pushes: 0,
        duplicates: 0,
        changed_ids: 0,
        received: pushes.len(),
        bad_signatures: consumer.bad_signatures(),
        lag: histogram()?,
        span: None,
    };
    for ack in acks {
        match signals.get(&key(ack)) {
            None => outcome.missing_signals += 1,
            Some(ids) if ids.len() > 1 => outcome.extra_signals += ids.len() - 1,
            Some(_) => {}
        }
    }
    let mut by_pair: HashMap<(&str, usize), Vec<&Push>> = HashMap::new();
    for push in &pushes {
        if let Some(signal) = &push.signal {
            by_pair
                .entry((signal.as_str(), push.endpoint))
                .or_default()
                .push(push);
        }
    }
    for signal in &wanted {
        for endpoint in 0..endpoints {
            let Some(received) = by_pair.get(&(signal.as_str(), endpoint)) else {
                outcome.missing_pushes += 1;
                continue;
            };
            outcome.duplicates += received.len() - 1;
            let ids: BTreeSet<&str> = received.iter().map(|p| p.webhook_id.as_str()).collect();
            if ids.len() > 1 {
                outcome.changed_ids += 1;
            }
            let Some(first) = received.iter().min_by_key(|p| p.received_at) else {
                continue;
            };
            if let Some(committed) = first.committed_at {
                let lag = (first.received_at - committed).to_std().unwrap_or_default();
                outcome
                    .lag
                    .saturating_record((lag.as_micros() as u64).clamp(1, 600_000_000));
            }
            outcome.span = Some(match outcome.span {
                None => (first.received_at, first.received_at),
                Some((a, b)) => (a.min(first.received_at), b.max(first.received_at)),
            });
        }
    }
    Ok(outcome)
}
