//! When a failed delivery is tried again: immediately, then after 5 s, 5 min, 30 min, 2 h,
//! 5 h, 10 h and 10 h, each delay stretched by up to a tenth at random so that endpoints that
//! failed together are not retried together; after the eighth attempt the delivery fails. A
//! `Retry-After` on `429` or `503` is honoured: never sooner than it asks, up to a bound.

use std::time::Duration;

use rand::Rng;

use crate::connector::retry_after_secs_within;
use crate::domain::Timestamp;

/// The delay before each attempt; the first is immediate.
pub const SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// When to try again after `attempts` attempts failed, or `None` when the schedule is spent.
pub fn next_attempt(
    attempts: u32,
    retry_after: Option<Duration>,
    now: Timestamp,
) -> Option<Timestamp> {
    let base = *SCHEDULE.get(usize::try_from(attempts).ok()?)?;
    let jitter = base.mul_f64(rand::thread_rng().gen_range(0.0..0.1));
    let scheduled = base.saturating_add(jitter);
    let wait = match retry_after {
        Some(asked) => scheduled.max(asked.min(MAX_RETRY_AFTER)),
        None => scheduled,
    };
    let wait = chrono::Duration::from_std(wait).ok()?;
    now.checked_add_signed(wait)
}

/// A `Retry-After` value: seconds (read as the connectors read them, bounded by
/// [`MAX_RETRY_AFTER`]), or an HTTP date (then relative to `now`).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    if let Some(seconds) = retry_after_secs_within(value, MAX_RETRY_AFTER.as_secs()) {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let wait = at.with_timezone(&chrono::Utc).signed_duration_since(now);
    Some(wait.to_std().unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds_after(now: Timestamp, at: Timestamp) -> i64 {
        at.signed_duration_since(now).num_seconds()
    }

    #[test]
    fn the_schedule_grows_with_jitter_and_ends_after_eight_attempts() {
        let now = crate::domain::now();
        let second = next_attempt(1, None, now).expect("a second attempt");
        assert!((5..=6).contains(&seconds_after(now, second)));
        let last = next_attempt(7, None, now).expect("an eighth attempt");
        assert!((36_000..=39_600).contains(&seconds_after(now, last)));
        assert_eq!(next_attempt(8, None, now), None);
    }

    #[test]
    fn retry_after_is_never_undercut_and_is_bounded() {
        let now = crate::domain::now();
        let asked = next_attempt(1, Some(Duration::from_secs(120)), now).expect("retry");
        assert_eq!(seconds_after(now, asked), 120);
        let huge = next_attempt(1, Some(Duration::from_secs(u64::MAX)), now).expect("retry");
        assert_eq!(seconds_after(now, huge), 24 * 3600);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999", now),
            Some(MAX_RETRY_AFTER),
            "more digits than a u64 holds still mean a long wait"
        );
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        let date = (now + chrono::Duration::seconds(60)).to_rfc2822();
        let wait = parse_retry_after(&date, now).expect("a date");
        assert!((59..=60).contains(&wait.as_secs()));
    }
}
