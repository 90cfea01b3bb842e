//! The sync job queue on postgres.

use async_trait::async_trait;

use super::PostgresStore;
use crate::store::SyncQueue;

#[async_trait]
impl SyncQueue for PostgresStore {}
