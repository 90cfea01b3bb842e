//! Turning provider activity into signals, provider-agnostic: the webhook inbox (verify, store,
//! then acknowledge; a worker normalizes), the sync engine (scheduled jobs, leased workers, a
//! cursor committed with each page) and the types connectors use to take part.

pub mod inbox;
pub mod signature;
mod stranded;
pub mod sync;
mod types;

pub use types::{Normalized, SignalDraft, SyncPage, Verified, WebhookEvent, WebhookRejection};

use crate::http::AppState;
use crate::store::WakeUp;

/// Relays the store's wake-ups (deliveries stored and jobs enqueued by any instance sharing
/// the database) to this process's inbox and sync workers, for as long as the task runs.
/// Returns at once where the store announces nothing; the workers poll either way.
pub async fn relay_wake_ups(state: AppState) {
    let Some(mut wake_ups) = state.store.wake_ups() else {
        return;
    };
    while let Some(kind) = wake_ups.recv().await {
        match kind {
            WakeUp::Inbox => state.inbox.notify(),
            WakeUp::Jobs => state.sync.notify(),
        }
    }
}
