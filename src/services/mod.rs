//! [`Services`]: everything the engine needs, in one cheaply cloned value: configuration,
//! store, provider registry, vault, the provider HTTP client, in-process locks and wake-ups,
//! the open live streams and the shutdown flag; [`supervise`] restarts a background loop that
//! panicked. Workers, the
//! OAuth flow and subscription steps take it; the HTTP layer wraps it and adds only HTTP
//! things. Nothing here knows HTTP.

mod live;
mod locks;
mod registry;
mod supervise;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Config;
use crate::connector::keys::{KeyCache, KeyCachePolicy};
use crate::connector::ProviderContext;
use crate::crypto::Vault;
use crate::domain::ConnectionId;
use crate::store::Store;

pub use live::{LiveSignals, StreamSlot};
pub use locks::KeyedLocks;
pub use registry::{Registry, RegistryEntry};
pub use supervise::supervise;

/// What the engine runs on. Clones share everything.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    /// Seals and opens secrets at rest.
    pub vault: Vault,
    /// The HTTP client for provider calls.
    pub http: reqwest::Client,
    /// Keys providers publish (JWKS), fetched and cached for webhook verification.
    pub keys: KeyCache,
    /// One token refresh per connection at a time in this process (the store serializes
    /// instances).
    pub refresh_locks: KeyedLocks<ConnectionId>,
    /// Wakes the inbox worker when a delivery is stored.
    pub inbox: Wake,
    /// Wakes the idle sync workers when a job is enqueued.
    pub sync: Wake,
    /// The live signal streams open in this process.
    pub live: LiveSignals,
    /// Set once shutdown begins: loops stop, `/readyz` turns load balancers away.
    pub shutting_down: Arc<AtomicBool>,
}

impl Services {
    /// Services for `config` over `store`.
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>) -> Self {
        let http = crate::connector::http_client(config.provider_timeout);
        Self {
            registry: Registry::from_config(&config),
            keys: KeyCache::new(http.clone(), KeyCachePolicy::default()),
            http,
            vault: Vault::new(
                config.crypto_key.clone(),
                config.previous_crypto_keys.clone(),
            ),
            refresh_locks: KeyedLocks::default(),
            inbox: Wake::default(),
            sync: Wake::default(),
            live: LiveSignals::new(config.stream.max_open),
            config,
            store,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Marks the start of shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// What a connector needs to call its provider, for an enabled provider.
    pub fn provider_context<'a>(&'a self, entry: &'a RegistryEntry) -> ProviderContext<'a> {
        ProviderContext {
            http: &self.http,
            settings: &entry.settings,
        }
    }
}

/// Wakes the idle workers of one kind in this process.
#[derive(Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// Tells a waiting worker there may be work (remembered if none waits).
    pub fn notify(&self) {
        self.0.notify_one();
    }

    /// Completes once notified (at once if a notification is waiting).
    pub async fn notified(&self) {
        self.0.notified().await;
    }
}
