//! Gmail: messages received and sent, from Pub/Sub push and the history feed.
//!
//! Rate limit: 250 quota units a second per user, a message read costing 5
//! (https://developers.google.com/gmail/api/reference/quota).

use crate::providers::{AuthType, Connector, Descriptor, RateLimitPolicy};

/// The Gmail provider.
pub struct GmailConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "gmail",
    display_name: "Gmail",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "openid",
        "email",
        "https://www.googleapis.com/auth/gmail.readonly",
    ],
    kinds: &["email_received", "email_sent"],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 3000,
        window_secs: 60,
        burst: 100,
        max_concurrency: 4,
    },
};

impl Connector for GmailConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }
}
