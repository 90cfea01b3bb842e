//! Slack: messages and reactions in channels the app can read.
//!
//! Rate limit: the Tier 3 budget of `conversations.history`, about 50 calls a minute
//! (https://api.slack.com/apis/rate-limits).

use crate::providers::{AuthType, Connector, Descriptor, RateLimitPolicy};

/// The Slack provider.
pub struct SlackConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "slack",
    display_name: "Slack",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "channels:history",
        "channels:read",
        "groups:history",
        "reactions:read",
        "team:read",
        "users:read",
    ],
    kinds: &[
        "message_posted",
        "message_updated",
        "message_deleted",
        "reaction_added",
    ],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 50,
        window_secs: 60,
        burst: 10,
        max_concurrency: 2,
    },
};

impl Connector for SlackConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }
}
