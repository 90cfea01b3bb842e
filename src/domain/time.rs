//! Timestamps: UTC, microsecond precision everywhere (PostgreSQL's precision), so a value read
//! back from either database compares equal to the one written.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// A UTC instant with microsecond precision.
pub type Timestamp = DateTime<Utc>;

/// Microseconds since the Unix epoch.
pub fn to_micros(t: &Timestamp) -> i64 {
    t.timestamp_micros()
}

/// The instant `micros` microseconds after the Unix epoch, if representable.
pub fn from_micros(micros: i64) -> Option<Timestamp> {
    Utc.timestamp_micros(micros).single()
}

/// Parses an RFC 3339 timestamp (any offset) into UTC, truncated to microseconds.
pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
    let parsed = DateTime::parse_from_rfc3339(s)
        .map_err(|_| "must be an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z".to_string())?;
    from_micros(parsed.timestamp_micros()).ok_or_else(|| "timestamp out of range".to_string())
}

/// Truncates to microseconds.
pub fn now() -> Timestamp {
    from_micros(Utc::now().timestamp_micros()).unwrap_or_else(Utc::now)
}

/// Formats for display in logs and errors.
pub fn format(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_normalized_to_utc_and_truncated_to_micros() {
        let t = parse_rfc3339("2026-01-31T13:00:00.1234567+01:00").expect("valid");
        assert_eq!(format(&t), "2026-01-31T12:00:00.123456Z");
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_err());
    }
}
