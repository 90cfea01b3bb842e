//! Per-provider settings: `POBLYSH_<SLUG>_CLIENT_ID`, `_CLIENT_SECRET`, `_WEBHOOK_SECRET`,
//! `_API_BASE_URL`, `_AUTH_BASE_URL`, `_SCOPES`, and rate-limit overrides
//! (`_RATE_LIMIT_REQUESTS`, `_RATE_LIMIT_WINDOW_SECS`, `_RATE_LIMIT_BURST`,
//! `_MAX_CONCURRENCY`), the sync interval (`_SYNC_INTERVAL_SECS`) and the variables a provider
//! declares for itself ([`Descriptor::settings`]). The slugs come from the
//! provider registry, so a new provider needs no change here.

use std::time::Duration;

use super::{parse, ConfigError, Source};
use crate::connector::{Connector, Descriptor, ProviderSettings, RateLimitPolicy};
use crate::crypto::Secret;
use crate::providers;

pub(super) fn load(source: &Source) -> Result<Vec<ProviderSettings>, ConfigError> {
    providers::CATALOGUE
        .iter()
        .map(|c| load_one(source, *c))
        .collect()
}

fn load_one(source: &Source, c: &'static dyn Connector) -> Result<ProviderSettings, ConfigError> {
    let d = c.descriptor();
    let var = |suffix: &str| format!("POBLYSH_{}_{suffix}", d.slug.to_ascii_uppercase());
    let secret = |suffix: &str| source.get(&var(suffix)).map(|s| Secret::new(s.trim()));
    let extra = own_settings(source, d)?;
    // The provider's defaults under its own settings (Slack's app class), then the overrides.
    let defaults = c.default_rate_limit(&extra);
    let rate_limit = RateLimitPolicy {
        requests: parse::optional(
            source,
            &var("RATE_LIMIT_REQUESTS"),
            parse::bounded(1u32, 10_000_000),
        )?
        .unwrap_or(defaults.requests),
        window_secs: parse::optional(
            source,
            &var("RATE_LIMIT_WINDOW_SECS"),
            parse::bounded(1u32, 86_400),
        )?
        .unwrap_or(defaults.window_secs),
        burst: parse::optional(
            source,
            &var("RATE_LIMIT_BURST"),
            parse::bounded(1u32, 1_000_000),
        )?
        .unwrap_or(defaults.burst),
        max_concurrency: parse::optional(
            source,
            &var("MAX_CONCURRENCY"),
            parse::bounded(1u32, 1_000),
        )?
        .unwrap_or(defaults.max_concurrency),
    };
    Ok(ProviderSettings {
        slug: d.slug,
        client_id: source.get(&var("CLIENT_ID")).map(|s| s.trim().to_string()),
        client_secret: secret("CLIENT_SECRET"),
        webhook_secret: secret("WEBHOOK_SECRET"),
        api_base_url: parse::optional(source, &var("API_BASE_URL"), parse::http_url)?,
        auth_base_url: parse::optional(source, &var("AUTH_BASE_URL"), parse::http_url)?,
        scopes: parse::optional(source, &var("SCOPES"), parse::word_list)?,
        rate_limit,
        extra,
    })
}

/// The provider's own settings that are set, each checked.
fn own_settings(
    source: &Source,
    d: &'static Descriptor,
) -> Result<Vec<(&'static str, String)>, ConfigError> {
    let mut set = Vec::new();
    for setting in d.settings {
        let name = format!("POBLYSH_{}_{}", d.slug.to_ascii_uppercase(), setting.name);
        if let Some(value) = source.get(&name) {
            let value = value.trim();
            (setting.check)(value).map_err(|problem| ConfigError::new(&name, problem))?;
            set.push((setting.name, value.to_string()));
        }
    }
    Ok(set)
}

/// Per-provider sync intervals (`POBLYSH_<SLUG>_SYNC_INTERVAL_SECS`), for the providers that
/// set one.
pub(super) fn sync_intervals(
    source: &Source,
) -> Result<Vec<(&'static str, Duration)>, ConfigError> {
    let mut intervals = Vec::new();
    for d in providers::descriptors() {
        let name = format!("POBLYSH_{}_SYNC_INTERVAL_SECS", d.slug.to_ascii_uppercase());
        if let Some(secs) = parse::optional(source, &name, parse::bounded(1u64, 604_800))? {
            intervals.push((d.slug, Duration::from_secs(secs)));
        }
    }
    Ok(intervals)
}
