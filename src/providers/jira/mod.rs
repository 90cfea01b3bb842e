//! Jira: issues and comments in Jira Cloud (or Data Center by base URL).
//!
//! Rate limit: a conservative share of Jira Cloud's cost-based budget
//! (https://developer.atlassian.com/cloud/jira/platform/rate-limiting/).

use crate::providers::{AuthType, Connector, Descriptor, RateLimitPolicy};

/// The Jira provider.
pub struct JiraConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "jira",
    display_name: "Jira",
    auth_type: AuthType::Oauth2,
    default_scopes: &["read:jira-work", "read:jira-user", "offline_access"],
    kinds: &[
        "issue_created",
        "issue_updated",
        "issue_resolved",
        "issue_deleted",
        "issue_commented",
    ],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 100,
        window_secs: 60,
        burst: 20,
        max_concurrency: 2,
    },
};

impl Connector for JiraConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }
}
