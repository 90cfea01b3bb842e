//! Jira's times. The REST API writes `2026-01-15T10:30:00.000+0000`: an offset without a colon,
//! which RFC 3339 parsers refuse
//! (<https://developer.atlassian.com/cloud/jira/platform/rest/v3/intro/#timestamps>); webhook
//! payloads carry `timestamp` as epoch milliseconds. JQL takes epoch milliseconds as date
//! literals, which do not depend on the site's or the user's time zone as `yyyy-MM-dd HH:mm`
//! literals do (<https://support.atlassian.com/jira-software-cloud/docs/jql-fields/#Updated>).

use chrono::{DateTime, Utc};

use crate::domain::Timestamp;

/// A Jira time: `yyyy-MM-ddTHH:mm:ss[.fff](+hhmm|+hh:mm|Z)`; `None` for anything else.
pub(super) fn parse_jira_time(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if text.len() > 40 {
        return None;
    }
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Epoch milliseconds as an instant; `None` out of chrono's range.
pub(super) fn from_millis(ms: i64) -> Option<Timestamp> {
    DateTime::from_timestamp_millis(ms)
}

/// An instant as epoch milliseconds.
pub(super) fn millis(at: &Timestamp) -> i64 {
    at.timestamp_millis()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn jira_offsets_with_and_without_colon_and_utc_parse() {
        let at = parse_jira_time("2026-01-15T10:30:00.000+0000").expect("parsed");
        assert_eq!(at.to_rfc3339(), "2026-01-15T10:30:00+00:00");
        assert_eq!(
            parse_jira_time("2026-01-15T12:30:00.250+0200"),
            Some(at + chrono::Duration::milliseconds(250))
        );
        assert_eq!(parse_jira_time("2026-01-15T05:30:00-05:00"), Some(at));
        assert_eq!(parse_jira_time("2026-01-15T10:30:00Z"), Some(at));
        for bad in [
            "",
            "2026-01-15",
            "2026-01-15 10:30",
            "1737000000000",
            "garbage",
        ] {
            assert_eq!(parse_jira_time(bad), None, "{bad}");
        }
    }

    proptest! {
        /// Every instant Jira could write, in any whole-minute offset, reads back as itself.
        #[test]
        fn any_written_time_reads_back(secs in 0i64..4_102_444_800, ms in 0u32..1000, offset_min in -720i32..=840) {
            let at = DateTime::from_timestamp(secs, ms * 1_000_000).expect("in range");
            let zone = chrono::FixedOffset::east_opt(offset_min * 60).expect("offset");
            let written = at.with_timezone(&zone).format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string();
            prop_assert_eq!(parse_jira_time(&written), Some(at));
            prop_assert_eq!(from_millis(millis(&at)), Some(at));
        }

        /// Arbitrary text never panics.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,60}") {
            let _ = parse_jira_time(&text);
        }
    }
}
