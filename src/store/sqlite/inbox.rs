//! The webhook inbox on sqlite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::Inbox;

#[async_trait]
impl Inbox for SqliteStore {}
