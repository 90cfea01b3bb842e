//! Zoho Cliq: channel messages.
//!
//! Rate limit: a conservative default; Zoho throttles per user and per API
//! (https://www.zoho.com/cliq/help/restapi/v2/).

use crate::providers::{AuthType, Connector, Descriptor, RateLimitPolicy};

/// The Zoho Cliq provider.
pub struct ZohoCliqConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "zoho_cliq",
    display_name: "Zoho Cliq",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "ZohoCliq.Channels.READ",
        "ZohoCliq.Messages.READ",
        "ZohoCliq.Users.READ",
    ],
    kinds: &["message_posted", "message_updated", "message_deleted"],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 60,
        window_secs: 60,
        burst: 10,
        max_concurrency: 2,
    },
};

impl Connector for ZohoCliqConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }
}
