//! The provider registry: the providers of [`crate::providers::CATALOGUE`] this process
//! enables, with their effective configuration.

use std::sync::Arc;

use crate::config::Config;
use crate::connector::{AuthType, Connector, Descriptor, ProviderSettings, RateLimitPolicy};
use crate::domain::{ProviderSlug, SignalKind};
use crate::providers::CATALOGUE;

/// One enabled provider with its effective settings.
#[derive(Clone)]
pub struct RegistryEntry {
    pub connector: &'static dyn Connector,
    /// Its settings.
    pub settings: ProviderSettings,
    /// Whether it has what it needs to connect (client credentials, unless it needs none).
    pub configured: bool,
    /// The scopes requested by default (configured override, else the descriptor's).
    pub scopes: Vec<String>,
    pub rate_limit: RateLimitPolicy,
}

impl RegistryEntry {
    /// The provider's descriptor.
    pub fn descriptor(&self) -> &'static Descriptor {
        self.connector.descriptor()
    }

    /// The provider's slug.
    pub fn slug(&self) -> ProviderSlug {
        ProviderSlug::of_catalogue(self.descriptor().slug)
    }
}

/// The providers enabled in this process.
#[derive(Clone)]
pub struct Registry {
    entries: Arc<Vec<RegistryEntry>>,
}

impl Registry {
    /// Enables every provider, the sandbox only when configured so.
    pub fn from_config(config: &Config) -> Self {
        let entries = CATALOGUE
            .iter()
            .copied()
            .filter(|c| c.descriptor().auth_type != AuthType::None || config.sandbox_enabled)
            .filter_map(|connector| {
                let d = connector.descriptor();
                let settings = config.provider(d.slug)?;
                Some(RegistryEntry {
                    connector,
                    settings: settings.clone(),
                    configured: d.auth_type == AuthType::None || settings.has_client_credentials(),
                    scopes: settings.scopes.clone().unwrap_or_else(|| {
                        d.default_scopes.iter().map(|s| s.to_string()).collect()
                    }),
                    rate_limit: settings.rate_limit,
                })
            })
            .collect();
        Self {
            entries: Arc::new(entries),
        }
    }

    /// Every enabled provider, in catalogue order.
    pub fn entries(&self) -> &[RegistryEntry] {
        &self.entries
    }

    /// Parses a slug from input (a path, a filter): the slug of an enabled provider, or `None`.
    pub fn parse(&self, slug: &str) -> Option<ProviderSlug> {
        self.get(slug).map(RegistryEntry::slug)
    }

    /// The enabled provider `slug` names.
    pub fn entry(&self, slug: ProviderSlug) -> Option<&RegistryEntry> {
        self.get(slug.as_str())
    }

    /// The enabled provider with this slug.
    pub fn get(&self, slug: &str) -> Option<&RegistryEntry> {
        self.entries.iter().find(|e| e.descriptor().slug == slug)
    }

    /// The slugs of every enabled provider.
    pub fn slugs(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.descriptor().slug).collect()
    }

    /// Whether any enabled provider emits this signal kind.
    pub fn knows_kind(&self, kind: &SignalKind) -> bool {
        self.entries
            .iter()
            .any(|e| e.descriptor().kinds.contains(&kind.as_str()))
    }
}
