//! Which kind of Slack app the deployment is (`POBLYSH_SLACK_APP_CLASS`), and the limits that
//! follow from it.
//!
//! Since 2025, `conversations.history` and `conversations.replies` allow a commercially
//! distributed app that is not in the Slack Marketplace 1 request a minute and 15 messages a
//! page; Marketplace apps and internal (single-workspace, not distributed) apps keep Tier 3,
//! about 50 a minute, with pages up to 1,000 (200 recommended)
//! (<https://api.slack.com/apis/rate-limits>,
//! <https://api.slack.com/changelog/2025-05-terms-rate-limit-update-and-faq>).
//!
//! A sync page is one Web API request, so the limiter paces requests exactly. Under the
//! commercial class every request of the sync, the channel listing included, waits its
//! minute: a job that must wait is deferred (not failed) and resumes from its cursor.

use crate::connector::RateLimitPolicy;

/// The setting's name, after `POBLYSH_SLACK_`.
pub(super) const SETTING: &str = "APP_CLASS";

/// How Slack classifies the app, which decides its history limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum AppClass {
    /// Distributed outside the Slack Marketplace: 1 request a minute, 15 messages a page.
    #[default]
    Commercial,
    /// Approved for the Slack Marketplace: Tier 3.
    Marketplace,
    /// Built for one organization's own workspace(s): Tier 3.
    Internal,
}

impl AppClass {
    /// Reads a value of the setting.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "commercial" => Ok(Self::Commercial),
            "marketplace" => Ok(Self::Marketplace),
            "internal" => Ok(Self::Internal),
            other => Err(format!(
                "{other:?} is not an app class: use commercial, marketplace or internal"
            )),
        }
    }

    /// The class configured in a provider's own settings (the default when unset).
    pub fn of(extra: &[(&'static str, String)]) -> Self {
        extra
            .iter()
            .find(|(name, _)| *name == SETTING)
            .and_then(|(_, value)| Self::parse(value).ok())
            .unwrap_or_default()
    }

    /// The client-side limit on a connection's requests.
    pub fn rate_limit(self) -> RateLimitPolicy {
        match self {
            Self::Commercial => RateLimitPolicy {
                requests: 1,
                window_secs: 60,
                burst: 1,
                max_concurrency: 1,
            },
            Self::Marketplace | Self::Internal => RateLimitPolicy {
                requests: 50,
                window_secs: 60,
                burst: 10,
                max_concurrency: 2,
            },
        }
    }

    /// Messages asked for per `conversations.history` / `.replies` page.
    pub fn page_size(self) -> u32 {
        match self {
            Self::Commercial => 15,
            Self::Marketplace | Self::Internal => 200,
        }
    }
}

/// Checks a value of `POBLYSH_SLACK_APP_CLASS` at start-up.
pub(super) fn check(text: &str) -> Result<(), String> {
    AppClass::parse(text).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commercial_class_is_the_default_and_allows_one_request_a_minute() {
        assert_eq!(AppClass::of(&[]), AppClass::Commercial);
        let policy = AppClass::Commercial.rate_limit();
        assert_eq!(
            (policy.requests, policy.window_secs, policy.burst),
            (1, 60, 1)
        );
        assert_eq!(AppClass::Commercial.page_size(), 15);
        for class in ["marketplace", "internal"] {
            let parsed = AppClass::of(&[(SETTING, class.to_string())]);
            assert_ne!(parsed, AppClass::Commercial);
            assert_eq!(parsed.rate_limit().requests, 50);
            assert_eq!(parsed.page_size(), 200);
        }
        for bad in ["", "Commercial", "enterprise", "internal,marketplace"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
