//! The sync job queue part of the storage interface.

use async_trait::async_trait;

/// Enqueuing, leasing and finishing sync jobs, and committing each page with its cursor.
#[async_trait]
pub trait SyncQueue: Send + Sync {}
