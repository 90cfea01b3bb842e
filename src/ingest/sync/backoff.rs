//! When to try again, and when to sync next.
//!
//! Retries use exponential backoff with full jitter: after the `n`th attempt the delay is drawn
//! uniformly from `[0, min(15 min, 1 s × 2^n)]`, and is never shorter than the provider's
//! `Retry-After`, which is believed up to [`MAX_RETRY_AFTER`] (an hour, GitHub's rate-limit
//! window): it is a number from the network and must not park a job for years. Scheduled syncs are spread by ±10 % around the interval so connections
//! created together do not stay in lock step.

use std::time::Duration;

use rand::Rng;

use crate::connector::MAX_RETRY_AFTER_SECS;

/// The first backoff step.
pub const BASE: Duration = Duration::from_secs(1);
/// The longest backoff (a provider's `Retry-After` may ask for more).
pub const CAP: Duration = Duration::from_secs(15 * 60);
/// The longest `Retry-After` honoured; longer requests wait this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(MAX_RETRY_AFTER_SECS);

/// The upper bound of the delay after `attempts` attempts.
pub fn ceiling(attempts: i32) -> Duration {
    let exponent = attempts.clamp(0, 20) as u32;
    BASE.saturating_mul(1 << exponent).min(CAP)
}

/// The delay before the next attempt, after `attempts` attempts.
pub fn retry_delay(attempts: i32, retry_after: Option<Duration>) -> Duration {
    retry_delay_with(attempts, retry_after, &mut rand::thread_rng())
}

/// [`retry_delay`] with a given random source.
pub fn retry_delay_with(
    attempts: i32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let ceiling = ceiling(attempts);
    // The ceiling is at most `CAP`, so its milliseconds fit a u64.
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let jittered = Duration::from_millis(rng.gen_range(0..=millis));
    jittered.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
}

/// `interval` spread by ±10 %.
pub fn jittered(interval: Duration) -> Duration {
    jittered_with(interval, &mut rand::thread_rng())
}

/// [`jittered`] with a given random source.
pub fn jittered_with(interval: Duration, rng: &mut impl Rng) -> Duration {
    interval.mul_f64(rng.gen_range(0.9..=1.1))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn the_ceiling_doubles_per_attempt_up_to_fifteen_minutes() {
        assert_eq!(ceiling(0), Duration::from_secs(1));
        assert_eq!(ceiling(1), Duration::from_secs(2));
        assert_eq!(ceiling(3), Duration::from_secs(8));
        assert_eq!(ceiling(9), Duration::from_secs(512));
        assert_eq!(ceiling(10), CAP);
        assert_eq!(ceiling(i32::MAX), CAP);
    }

    #[test]
    fn delays_are_fully_jittered_below_the_ceiling() {
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..200)
            .map(|_| retry_delay_with(4, None, &mut rng))
            .collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(16)));
        assert!(delays.iter().any(|d| *d < Duration::from_secs(4)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(12)));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let delay = retry_delay_with(1, Some(Duration::from_secs(120)), &mut rng);
            assert!(delay >= Duration::from_secs(120));
        }
    }

    #[test]
    fn an_absurd_retry_after_is_clamped() {
        let mut rng = StdRng::seed_from_u64(5);
        for asked in [
            Duration::from_secs(MAX_RETRY_AFTER_SECS + 1),
            Duration::from_secs(10_000_000_000_000),
            Duration::from_secs(i64::MAX as u64),
            Duration::MAX,
        ] {
            let delay = retry_delay_with(3, Some(asked), &mut rng);
            assert_eq!(delay, MAX_RETRY_AFTER, "{asked:?}");
        }
    }

    #[test]
    fn intervals_are_spread_by_ten_percent() {
        let mut rng = StdRng::seed_from_u64(3);
        let interval = Duration::from_secs(900);
        for _ in 0..200 {
            let next = jittered_with(interval, &mut rng);
            assert!(next >= Duration::from_secs(810) && next <= Duration::from_secs(990));
        }
    }
}
