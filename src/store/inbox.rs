//! The webhook inbox part of the storage interface.

use async_trait::async_trait;

/// Storing verified webhook deliveries and handing them to the inbox worker.
#[async_trait]
pub trait Inbox: Send + Sync {}
