//! The webhook inbox on postgres.

use async_trait::async_trait;

use super::PostgresStore;
use crate::store::Inbox;

#[async_trait]
impl Inbox for PostgresStore {}
