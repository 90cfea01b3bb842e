//! The load while the instances run: signed sandbox deliveries at a fixed rate, spread over the
//! two API instances, and readers paging through `GET /signals`. Every request is recorded
//! with the instant it started, so the report can split the run into phases afterwards.
//!
//! A delivery that cannot reach its instance (connection refused or reset: the instance is
//! down) is sent once more, with the same delivery id, to the other instance, as a provider
//! retries a failed delivery and a load balancer routes around a dead backend. The inbox keys
//! deliveries by that id, so a delivery that was stored before its instance died is not
//! stored twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use connectors::domain::TenantId;
use reqwest::Url;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::Api;

/// One request: when it started, how long it took, whether it succeeded.
#[derive(Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub took: Duration,
    pub ok: bool,
}

/// A delivery answered `202`.
#[derive(Clone)]
pub struct Ack {
    pub tenant: TenantId,
    /// The delivery's (and the signal's external) id.
    pub id: String,
}

/// What the load saw.
#[derive(Default)]
pub struct Recorded {
    pub deliveries: Vec<Sample>,
    pub reads: Vec<Sample>,
    pub acks: Vec<Ack>,
    /// Deliveries sent again to the other instance after a transport error.
    pub rerouted: u64,
    /// A few error messages.
    pub error_samples: Vec<String>,
}

/// The API instances' addresses; a restarted instance listens on a new port.
pub type Targets = Arc<RwLock<Vec<Url>>>;

pub struct Load {
    pub api: Arc<Api>,
    pub targets: Targets,
    pub tenants: Arc<Vec<TenantId>>,
    pub rate: u32,
    pub readers: usize,
    pub stop: Arc<AtomicBool>,
    pub recorded: Arc<Mutex<Recorded>>,
}

fn target(targets: &Targets, n: u64) -> Option<Url> {
    let list = targets.read().ok()?;
    if list.is_empty() {
        return None;
    }
    list.get((n % list.len() as u64) as usize).cloned()
}

impl Load {
    /// Runs until `stop`; returns when every request in flight has ended.
    pub async fn run(&self) {
        let mut tasks = JoinSet::new();
        for n in 0..self.readers {
            let (api, targets, tenants) =
                (self.api.clone(), self.targets.clone(), self.tenants.clone());
            let (stop, recorded) = (self.stop.clone(), self.recorded.clone());
            tasks.spawn(async move { reader(n, &api, &targets, &tenants, &stop, &recorded).await });
        }
        self.deliveries().await;
        while tasks.join_next().await.is_some() {}
    }

    /// One delivery every `1 / rate` s (open loop: a slow answer does not slow the rate), at
    /// most 256 in flight.
    async fn deliveries(&self) {
        let period = Duration::from_secs_f64(1.0 / f64::from(self.rate.max(1)));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let in_flight = Arc::new(Semaphore::new(256));
        let seq = AtomicU64::new(0);
        let mut tasks = JoinSet::new();
        while !self.stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let n = seq.fetch_add(1, Ordering::Relaxed);
            let tenant = self.tenants[(n % self.tenants.len() as u64) as usize];
            let (api, targets, recorded) = (
                self.api.clone(),
                self.targets.clone(),
                self.recorded.clone(),
            );
            tasks.spawn(async move {
                deliver(&api, &targets, tenant, n, &recorded).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// A transport error (the instance is not there), not an answer.
fn unreachable(err: &str) -> bool {
    !err.starts_with(|c: char| c.is_ascii_digit())
}

async fn deliver(
    api: &Api,
    targets: &Targets,
    tenant: TenantId,
    n: u64,
    recorded: &Mutex<Recorded>,
) {
    let id = format!("fault-{n}");
    let at = Instant::now();
    let mut rerouted = false;
    let mut outcome = Err("no API instance".to_string());
    for attempt in 0..2 {
        let Some(base) = target(targets, n + attempt) else {
            break;
        };
        outcome = api.deliver(&base, tenant, &id).await;
        match &outcome {
            Err(err) if attempt == 0 && unreachable(err) => rerouted = true,
            _ => break,
        }
    }
    let took = at.elapsed();
    let Ok(mut rec) = recorded.lock() else { return };
    rec.rerouted += u64::from(rerouted);
    rec.deliveries.push(Sample {
        at,
        took,
        ok: outcome.is_ok(),
    });
    match outcome {
        Ok(_) => rec.acks.push(Ack { tenant, id }),
        Err(err) if rec.error_samples.len() < 8 => rec.error_samples.push(err),
        Err(_) => {}
    }
}

/// Pages through one tenant's signals (up to 3 pages of 50), then the next tenant's, alternating
/// instances; a request that fails is asked once more of the other instance.
async fn reader(
    n: usize,
    api: &Api,
    targets: &Targets,
    tenants: &[TenantId],
    stop: &AtomicBool,
    recorded: &Mutex<Recorded>,
) {
    let mut turn = n as u64;
    while !stop.load(Ordering::Relaxed) {
        turn += 1;
        let tenant = tenants[(turn % tenants.len() as u64) as usize];
        let mut cursor: Option<String> = None;
        for _ in 0..3 {
            let mut path = "signals?limit=50".to_string();
            if let Some(c) = &cursor {
                path.push_str("&cursor=");
                path.extend(url::form_urlencoded::byte_serialize(c.as_bytes()));
            }
            let at = Instant::now();
            let mut page = Err(anyhow::anyhow!("no API instance"));
            for attempt in 0..2 {
                let Some(base) = target(targets, turn + attempt) else {
                    break;
                };
                page = api.get_json(&base, tenant, &path).await;
                if page.is_ok() {
                    break;
                }
            }
            let took = at.elapsed();
            if let Ok(mut rec) = recorded.lock() {
                rec.reads.push(Sample {
                    at,
                    took,
                    ok: page.is_ok(),
                });
            }
            match page
                .ok()
                .and_then(|p| p["next_cursor"].as_str().map(str::to_string))
            {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
}
