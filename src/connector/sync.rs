//! One step of an incremental sync, as a connector takes part in it.

use serde_json::Value;

use super::{Metadata, ProviderContext, ProviderSecrets, SignalDraft};
use crate::crypto::Secret;
use crate::domain::Connection;

/// What a sync step may use: the provider's HTTP client and settings, the connection (with its
/// metadata), its sealed provider secrets opened, and a fresh access token.
#[derive(Clone, Copy)]
pub struct SyncContext<'a> {
    pub provider: ProviderContext<'a>,
    pub connection: &'a Connection,
    pub secrets: &'a ProviderSecrets,
    pub access_token: &'a Secret,
}

/// One page of an incremental sync.
#[derive(Clone, Debug, Default)]
pub struct SyncPage {
    pub signals: Vec<SignalDraft>,
    /// The cursor to resume from; stored together with this page's signals.
    pub cursor: Value,
    /// Whether another page follows right away.
    pub more: bool,
    /// Members to set in the connection's metadata, stored with the page (a member set to
    /// `null` is removed); `None` leaves it as it is.
    pub metadata: Option<Metadata>,
}
