//! One provider's effective settings, as its connector sees them. Loaded from
//! `POBLYSH_<SLUG>_*` by [`crate::config`]; every URL the connector calls is derived from them,
//! so one fake can stand in for a provider.

use url::Url;

use super::RateLimitPolicy;
use crate::crypto::Secret;

/// One provider's effective settings.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    pub slug: &'static str,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    pub api_base_url: Option<Url>,
    pub auth_base_url: Option<Url>,
    /// Scopes to request instead of the descriptor's defaults.
    pub scopes: Option<Vec<String>>,
    /// The descriptor's policy with any overrides applied.
    pub rate_limit: RateLimitPolicy,
    /// `POBLYSH_<SLUG>_<NAME>` variables the provider declared for itself
    /// ([`super::Descriptor::settings`]), by `<NAME>`, as given.
    pub extra: Vec<(&'static str, String)>,
}

impl ProviderSettings {
    /// Whether OAuth client credentials are present.
    pub fn has_client_credentials(&self) -> bool {
        self.client_id.is_some() && self.client_secret.is_some()
    }

    /// `_API_BASE_URL`, else the provider's `default`.
    pub fn api_base(&self, default: &str) -> Url {
        or_default(self.api_base_url.as_ref(), default)
    }

    /// `_AUTH_BASE_URL`, else the provider's `default`.
    pub fn auth_base(&self, default: &str) -> Url {
        or_default(self.auth_base_url.as_ref(), default)
    }

    /// A provider-declared setting (`POBLYSH_<SLUG>_<name>`), when set.
    pub fn extra(&self, name: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Settings of `slug` with nothing configured and a one-request rate limit, for tests to
    /// fill in what they need.
    pub fn bare(slug: &'static str) -> Self {
        Self {
            slug,
            client_id: None,
            client_secret: None,
            webhook_secret: None,
            api_base_url: None,
            auth_base_url: None,
            scopes: None,
            rate_limit: RateLimitPolicy {
                requests: 1,
                window_secs: 1,
                burst: 1,
                max_concurrency: 1,
            },
            extra: Vec::new(),
        }
    }
}

fn or_default(configured: Option<&Url>, default: &str) -> Url {
    configured
        .cloned()
        .unwrap_or_else(|| Url::parse(default).expect("a provider's default base URL is valid"))
}

/// This service's OAuth callback URL for a provider: `{public base}/connect/{slug}/callback`.
pub fn callback_url(public_base_url: &Url, slug: &str) -> Url {
    join_path(public_base_url, &format!("/connect/{slug}/callback"))
}

/// `path` (starting with `/`) appended to `base`'s own path, keeping any prefix it has (a
/// public base URL served under a path, GitHub Enterprise Server's `/api/v3`); query and
/// fragment dropped.
pub fn join_path(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let base = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{base}{path}"));
    url.set_query(None);
    url.set_fragment(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_under_the_base_path_whatever_its_trailing_slash() {
        let joined =
            |base: &str, path: &str| join_path(&Url::parse(base).expect("url"), path).to_string();
        assert_eq!(
            joined("https://ghe.example.com/api/v3", "/user"),
            "https://ghe.example.com/api/v3/user"
        );
        assert_eq!(
            joined("https://connectors.example.com/", "/webhooks/github/t"),
            "https://connectors.example.com/webhooks/github/t"
        );
        assert_eq!(
            joined(
                "https://example.com/base/?x=1#top",
                "/connect/slack/callback"
            ),
            "https://example.com/base/connect/slack/callback"
        );
    }
}
