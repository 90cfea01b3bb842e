//! What every handler can reach: the engine's [`Services`] plus what only HTTP needs
//! (operator tokens, the cursor codec, the metrics handle).

use std::ops::Deref;

use metrics_exporter_prometheus::PrometheusHandle;

use super::auth::OperatorTokens;
use super::body::BodyBudget;
use super::cursor::CursorCodec;
use crate::services::Services;

/// Shared, cheaply cloned application state. Reads through to its [`Services`].
#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub operators: OperatorTokens,
    pub cursors: CursorCodec,
    pub metrics: PrometheusHandle,
    /// Bytes of webhook bodies held in memory at once.
    pub webhook_bodies: BodyBudget,
}

impl AppState {
    /// State over `services`.
    pub fn new(services: Services, metrics: PrometheusHandle) -> Self {
        Self {
            operators: OperatorTokens::new(&services.config.operator_tokens),
            cursors: CursorCodec::new(&services.config.crypto_key),
            webhook_bodies: BodyBudget::new(services.config.max_webhook_bytes_in_flight),
            services,
            metrics,
        }
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}
