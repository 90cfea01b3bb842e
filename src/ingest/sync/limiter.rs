//! Client-side rate limits, enforced before a connector is called: per (provider, connection),
//! a token bucket (`burst` tokens, refilled at `requests / window_secs` per second) paces
//! calls, and a semaphore caps calls in flight at `max_concurrency`. In-process: each instance
//! paces its own calls, and a connection syncs on one instance at a time anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::connector::RateLimitPolicy;
use crate::domain::ConnectionId;

/// Limiters beyond this many are pruned of idle ones.
const PRUNE_ABOVE: usize = 10_000;

/// A token bucket: up to `capacity` calls back to back, then one per `1 / per_sec` seconds.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `policy` at `now`.
    pub fn new(policy: RateLimitPolicy, now: Instant) -> Self {
        let capacity = f64::from(policy.burst.max(1));
        Self {
            capacity,
            per_sec: f64::from(policy.requests.max(1)) / f64::from(policy.window_secs.max(1)),
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Takes a token at `now`, or says how long until one is available (taking nothing).
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec))
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

struct Limiter {
    policy: RateLimitPolicy,
    bucket: Mutex<TokenBucket>,
    slots: Arc<Semaphore>,
}

impl Limiter {
    fn new(policy: RateLimitPolicy) -> Self {
        Self {
            policy,
            bucket: Mutex::new(TokenBucket::new(policy, Instant::now())),
            slots: Arc::new(Semaphore::new(policy.max_concurrency.max(1) as usize)),
        }
    }

    fn is_idle(&self) -> bool {
        let full = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_full(Instant::now());
        full && self.slots.available_permits() == self.policy.max_concurrency.max(1) as usize
    }
}

/// Held while one call is in flight; frees its concurrency slot when dropped.
pub struct CallPermit {
    _slot: OwnedSemaphorePermit,
}

/// Limiters by provider slug and connection.
type LimiterMap = HashMap<(String, ConnectionId), Arc<Limiter>>;

/// Every connection's limiter, created on first use.
#[derive(Clone, Default)]
pub struct RateLimiters {
    limiters: Arc<Mutex<LimiterMap>>,
}

impl RateLimiters {
    fn limiter(
        &self,
        provider: &str,
        connection: ConnectionId,
        policy: RateLimitPolicy,
    ) -> Arc<Limiter> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        let key = (provider.to_string(), connection);
        if let Some(existing) = limiters.get(&key) {
            if existing.policy == policy {
                return existing.clone();
            }
        }
        if limiters.len() >= PRUNE_ABOVE {
            limiters.retain(|_, l| Arc::strong_count(l) > 1 || !l.is_idle());
        }
        let limiter = Arc::new(Limiter::new(policy));
        limiters.insert(key, limiter.clone());
        limiter
    }

    /// Waits for a concurrency slot and a token. A token further away than `max_wait` is not
    /// waited for: `Err` says how long until one is available, so the caller can come back
    /// then instead of holding its job.
    pub async fn acquire(
        &self,
        provider: &str,
        connection: ConnectionId,
        policy: RateLimitPolicy,
        max_wait: Duration,
    ) -> Result<CallPermit, Duration> {
        let limiter = self.limiter(provider, connection, policy);
        let slot = limiter
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("limiter semaphores are never closed");
        loop {
            let taken = limiter
                .bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_take(Instant::now());
            match taken {
                Ok(()) => return Ok(CallPermit { _slot: slot }),
                Err(wait) if wait > max_wait => return Err(wait),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(
        requests: u32,
        window_secs: u32,
        burst: u32,
        max_concurrency: u32,
    ) -> RateLimitPolicy {
        RateLimitPolicy {
            requests,
            window_secs,
            burst,
            max_concurrency,
        }
    }

    #[test]
    fn a_burst_goes_through_then_calls_are_paced_at_the_window_rate() {
        let start = Instant::now();
        // 60 per minute: one per second after a burst of 3.
        let mut bucket = TokenBucket::new(policy(60, 60, 3, 1), start);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(start), Ok(()));
        }
        let wait = bucket.try_take(start).expect_err("burst spent");
        assert_eq!(wait, Duration::from_secs(1));
        // Half a second later, half a token has accrued: half a second to go.
        let wait = bucket
            .try_take(start + Duration::from_millis(500))
            .expect_err("not yet");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(bucket.try_take(start + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn an_idle_bucket_refills_only_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(policy(10, 1, 2, 1), start);
        bucket.try_take(start).expect("token");
        bucket.try_take(start).expect("token");
        let later = start + Duration::from_secs(3600);
        bucket.try_take(later).expect("refilled");
        bucket.try_take(later).expect("refilled");
        assert!(bucket.try_take(later).is_err(), "capacity is the burst");
    }

    #[tokio::test]
    async fn a_far_away_token_is_reported_instead_of_waited_for() {
        let limiters = RateLimiters::default();
        let connection = ConnectionId::generate();
        // Two calls per hour, both spent at once.
        let p = policy(2, 3600, 2, 1);
        for _ in 0..2 {
            drop(
                limiters
                    .acquire("sandbox", connection, p, Duration::from_secs(1))
                    .await
                    .map_err(|_| "token")
                    .unwrap(),
            );
        }
        let wait = limiters
            .acquire("sandbox", connection, p, Duration::from_secs(1))
            .await
            .err()
            .expect("spent");
        assert!(
            wait > Duration::from_secs(1790) && wait <= Duration::from_secs(1800),
            "{wait:?}"
        );
        // Another connection has its own bucket.
        assert!(limiters
            .acquire("sandbox", ConnectionId::generate(), p, Duration::ZERO)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn calls_in_flight_are_capped_per_connection() {
        let limiters = RateLimiters::default();
        let connection = ConnectionId::generate();
        let p = policy(1000, 1, 1000, 2);
        let first = limiters
            .acquire("sandbox", connection, p, Duration::ZERO)
            .await;
        let second = limiters
            .acquire("sandbox", connection, p, Duration::ZERO)
            .await;
        assert!(first.is_ok() && second.is_ok());
        let third = tokio::time::timeout(
            Duration::from_millis(50),
            limiters.acquire("sandbox", connection, p, Duration::ZERO),
        )
        .await;
        assert!(third.is_err(), "a third call waits for a slot");
        drop(first);
        let third = tokio::time::timeout(
            Duration::from_secs(5),
            limiters.acquire("sandbox", connection, p, Duration::ZERO),
        )
        .await
        .expect("a slot freed");
        assert!(third.is_ok());
    }
}
