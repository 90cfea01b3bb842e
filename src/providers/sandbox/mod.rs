//! Sandbox: a built-in provider that needs no credentials. Its authorize page
//! redirects straight back with a code and its sync emits a steady trickle of synthetic
//! signals, so the whole journey runs on a laptop in a minute. Enabled by default only in the
//! local profile (`POBLYSH_SANDBOX_ENABLED`).

use crate::providers::{AuthType, Connector, Descriptor, RateLimitPolicy};

/// The Sandbox provider.
pub struct SandboxConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "sandbox",
    display_name: "Sandbox",
    auth_type: AuthType::None,
    default_scopes: &[],
    kinds: &["sandbox_event_created", "sandbox_event_updated"],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 600,
        window_secs: 60,
        burst: 60,
        max_concurrency: 4,
    },
};

impl Connector for SandboxConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }
}
