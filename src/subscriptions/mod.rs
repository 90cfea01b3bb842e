//! Provider-side subscriptions (watch channels, dynamic webhooks, mailbox watches): opened
//! after connect, renewed before they expire and closed on disconnect, through the job queue.

use crate::domain::Connection;
use crate::services::Services;
use crate::store::StoreError;

/// Queues the opening of `connection`'s subscriptions, if its provider has any.
pub async fn request_opening(
    _services: &Services,
    _connection: &Connection,
) -> Result<(), StoreError> {
    Ok(())
}
