//! Zoho Mail: messages received and sent.
//!
//! Rate limit: a conservative default; Zoho throttles per user and per API
//! (https://www.zoho.com/mail/help/api/).

use crate::providers::{AuthType, Connector, Descriptor, RateLimitPolicy};

/// The Zoho Mail provider.
pub struct ZohoMailConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "zoho_mail",
    display_name: "Zoho Mail",
    auth_type: AuthType::Oauth2,
    default_scopes: &["ZohoMail.accounts.READ", "ZohoMail.messages.READ"],
    kinds: &["email_received", "email_sent"],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 60,
        window_secs: 60,
        burst: 10,
        max_concurrency: 2,
    },
};

impl Connector for ZohoMailConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }
}
