//! Turning provider activity into signals, provider-agnostic: the webhook inbox (verify, store,
//! then acknowledge; a worker normalizes) and the sync engine (scheduled jobs, leased workers, a
//! cursor committed with each page). Connectors take part through [`crate::connector`].

pub mod inbox;
pub mod retention;
mod stranded;
pub mod sync;

use crate::services::Services;
use crate::store::WakeUp;

/// Relays the store's wake-ups (deliveries stored and jobs enqueued by any instance sharing
/// the database) to this process's inbox and sync workers, for as long as the task runs.
/// Returns at once where the store announces nothing; the workers poll either way.
pub async fn relay_wake_ups(services: Services) {
    let Some(mut wake_ups) = services.store.wake_ups() else {
        return;
    };
    while let Some(kind) = wake_ups.recv().await {
        match kind {
            WakeUp::Inbox => services.inbox.notify(),
            WakeUp::Jobs => services.sync.notify(),
            WakeUp::Push => crate::store::wake::push_news(),
        }
    }
}
