//! Live stream settings (`GET /signals/stream`): heartbeat interval, the longest a stream
//! stays open, how many are open at once, and how many events one buffers for its client.

use std::time::Duration;

use super::{parse, ConfigError, Source};

/// Settings of the live signal stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// Time between keep-alive comments (`POBLYSH_STREAM_HEARTBEAT_SECS`).
    pub heartbeat: Duration,
    /// The longest a stream stays open before it ends and the client resumes
    /// (`POBLYSH_STREAM_MAX_SECONDS`).
    pub max_lifetime: Duration,
    /// Streams open at once on this instance; more are answered `503`
    /// (`POBLYSH_STREAM_MAX_OPEN`).
    pub max_open: usize,
    /// Events held for a client that has not read them yet; a stream whose client falls this
    /// far behind is ended (`POBLYSH_STREAM_BUFFER`).
    pub buffer: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            max_lifetime: Duration::from_secs(300),
            max_open: 100,
            buffer: 64,
        }
    }
}

/// The settings; heartbeats must come more often than `idle_timeout`, after which a
/// connection that sent nothing is closed (unset, they come every 15 s or twice per idle time-out,
/// whichever is more often).
pub(super) fn settings(
    source: &Source,
    idle_timeout: Duration,
) -> Result<StreamSettings, ConfigError> {
    let defaults = StreamSettings::default();
    let seconds = |name: &str, max: u64| {
        parse::optional(source, name, parse::bounded(1u64, max)).map(|s| s.map(Duration::from_secs))
    };
    let heartbeat = match seconds("POBLYSH_STREAM_HEARTBEAT_SECS", 3600)? {
        Some(every) if every >= idle_timeout => return Err(ConfigError::new(
            "POBLYSH_STREAM_HEARTBEAT_SECS",
            "must be shorter than POBLYSH_IDLE_TIMEOUT_SECS, or quiet streams are closed as idle",
        )),
        Some(every) => every,
        None => defaults
            .heartbeat
            .min((idle_timeout / 2).max(Duration::from_secs(1))),
    };
    Ok(StreamSettings {
        heartbeat,
        max_lifetime: seconds("POBLYSH_STREAM_MAX_SECONDS", 86_400)?
            .unwrap_or(defaults.max_lifetime),
        max_open: parse::optional(
            source,
            "POBLYSH_STREAM_MAX_OPEN",
            parse::bounded(1usize, 100_000),
        )?
        .unwrap_or(defaults.max_open),
        buffer: parse::optional(
            source,
            "POBLYSH_STREAM_BUFFER",
            parse::bounded(1usize, 10_000),
        )?
        .unwrap_or(defaults.buffer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of(pairs: &[(&str, &str)]) -> Result<StreamSettings, ConfigError> {
        settings(
            &Source::from_pairs(pairs.iter().copied()),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn defaults_apply_when_unset_and_bad_values_name_their_variable() {
        assert_eq!(settings_of(&[]), Ok(StreamSettings::default()));
        let set = settings_of(&[
            ("POBLYSH_STREAM_HEARTBEAT_SECS", "2"),
            ("POBLYSH_STREAM_MAX_SECONDS", "2"),
            ("POBLYSH_STREAM_MAX_OPEN", "1"),
            ("POBLYSH_STREAM_BUFFER", "1"),
        ])
        .expect("valid");
        assert_eq!(set.heartbeat, Duration::from_secs(2));
        assert_eq!(set.max_lifetime, Duration::from_secs(2));
        assert_eq!((set.max_open, set.buffer), (1, 1));
        let bad = settings_of(&[("POBLYSH_STREAM_MAX_SECONDS", "0")]).expect_err("refused");
        assert_eq!(bad.variable, "POBLYSH_STREAM_MAX_SECONDS");
    }

    #[test]
    fn heartbeats_come_more_often_than_the_idle_time_out() {
        let idle = Duration::from_secs(10);
        let quiet = Source::from_pairs([("POBLYSH_STREAM_HEARTBEAT_SECS", "10")]);
        let bad = settings(&quiet, idle).expect_err("refused");
        assert_eq!(bad.variable, "POBLYSH_STREAM_HEARTBEAT_SECS");
        let unset = settings(&Source::from_pairs(Vec::<(String, String)>::new()), idle);
        assert_eq!(unset.expect("valid").heartbeat, Duration::from_secs(5));
    }
}
