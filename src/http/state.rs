//! What every handler can reach.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use super::auth::OperatorTokens;
use super::cursor::CursorCodec;
use crate::config::Config;
use crate::crypto::Vault;
use crate::ingest::inbox::InboxSignal;
use crate::ingest::sync::SyncSignal;
use crate::oauth::refresh::TokenManager;
use crate::providers::Registry;
use crate::store::Store;

/// Shared, cheaply cloned application state.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub registry: Registry,
    pub operators: OperatorTokens,
    pub cursors: CursorCodec,
    pub metrics: PrometheusHandle,
    /// Seals and opens secrets at rest.
    pub vault: Vault,
    /// The HTTP client for provider calls.
    pub http: reqwest::Client,
    /// Hands out fresh access tokens.
    pub tokens: TokenManager,
    /// Wakes the inbox worker when a delivery is stored.
    pub inbox: InboxSignal,
    /// Wakes the idle sync workers when a job is enqueued.
    pub sync: SyncSignal,
    /// Set once shutdown begins, so `/readyz` turns load balancers away.
    pub shutting_down: Arc<AtomicBool>,
}

impl AppState {
    /// State for `config` over `store`.
    pub fn new(config: Arc<Config>, store: Arc<dyn Store>, metrics: PrometheusHandle) -> Self {
        Self {
            registry: Registry::from_config(&config),
            operators: OperatorTokens::new(&config.operator_tokens),
            cursors: CursorCodec::new(&config.crypto_key),
            vault: Vault::new(
                config.crypto_key.clone(),
                config.previous_crypto_keys.clone(),
            ),
            http: crate::oauth::client::http_client(config.provider_timeout),
            tokens: TokenManager::default(),
            inbox: InboxSignal::default(),
            sync: SyncSignal::default(),
            config,
            store,
            metrics,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}
