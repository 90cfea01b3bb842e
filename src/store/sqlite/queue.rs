//! The sync job queue on sqlite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::SyncQueue;

#[async_trait]
impl SyncQueue for SqliteStore {}
