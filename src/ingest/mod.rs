//! Turning provider activity into signals, provider-agnostic: the webhook inbox (verify, store,
//! then acknowledge; a worker normalizes), the sync engine (scheduled jobs, leased workers, a
//! cursor committed with each page) and the types connectors use to take part.

pub mod inbox;
pub mod signature;
pub mod sync;
mod types;

pub use types::{Normalized, SignalDraft, SyncPage, Verified, WebhookEvent, WebhookRejection};
