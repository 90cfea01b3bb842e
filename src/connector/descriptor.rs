//! What a provider declares about itself: the catalogue entry behind `GET /providers`.

use serde::Serialize;
use utoipa::ToSchema;

/// How a tenant authorizes the service at a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// OAuth 2.0 authorization code flow.
    Oauth2,
    /// No credentials (the built-in sandbox).
    None,
}

/// Client-side limits on calls to a provider, enforced before requests are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RateLimitPolicy {
    /// Requests allowed per window, per connection.
    pub requests: u32,
    /// Window length in seconds.
    pub window_secs: u32,
    /// Requests that may be sent back to back before pacing starts.
    pub burst: u32,
    /// Requests in flight at once, per connection.
    pub max_concurrency: u32,
}

/// A provider's static description. `kinds`, `webhooks` and `sync` say what the provider does
/// in this build, never what it is planned to do: `GET /providers` shows them to Core.
#[derive(Debug)]
pub struct Descriptor {
    /// Stable identifier used in routes and filters, e.g. `github`.
    pub slug: &'static str,
    /// Human-readable name.
    pub display_name: &'static str,
    pub auth_type: AuthType,
    /// Scopes requested when the caller names none.
    pub default_scopes: &'static [&'static str],
    /// Signal kinds this provider emits.
    pub kinds: &'static [&'static str],
    /// Whether deliveries to `/webhooks/{provider}/...` become signals or syncs.
    pub webhooks: bool,
    /// Whether the sync engine polls it.
    pub sync: bool,
    /// Default client-side rate limits.
    pub rate_limit: RateLimitPolicy,
    /// Settings of its own beyond the common ones, read from `POBLYSH_<SLUG>_<NAME>` into
    /// [`super::ProviderSettings::extra`] (e.g. the sandbox's `SUBSCRIPTION_TTL_SECS`).
    pub settings: &'static [Setting],
}

/// A provider's own setting: its name (after `POBLYSH_<SLUG>_`) and the check a value must
/// pass, so a malformed value stops start-up naming the variable.
#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    pub check: fn(&str) -> Result<(), String>,
}
