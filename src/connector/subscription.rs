//! Provider-side subscriptions as a connector takes part in them: what opening, renewing and
//! closing one may use, and what opening one gives back. The engine (`crate::subscriptions`)
//! decides when; the connector only speaks to its provider.

use url::Url;

use super::{Metadata, ProviderContext, ProviderSecrets};
use crate::crypto::Secret;
use crate::domain::{Connection, Subscription, Timestamp};

/// What a subscription step may use.
#[derive(Clone, Copy)]
pub struct SubscriptionContext<'a> {
    pub provider: ProviderContext<'a>,
    pub connection: &'a Connection,
    pub secrets: &'a ProviderSecrets,
    pub access_token: &'a Secret,
    /// The subscription: its `resource`, and once opened its `external_id` and `state`.
    pub subscription: &'a Subscription,
    /// Where the provider should deliver: this tenant's webhook URL,
    /// `{public base}/webhooks/{provider}/{tenant_id}`.
    pub webhook_url: &'a Url,
}

/// A subscription the provider opened (or renewed).
#[derive(Clone, Debug, PartialEq)]
pub struct Opened {
    /// The provider's id of it (a channel id, a webhook id).
    pub external_id: String,
    /// When the provider lets it lapse; `None` when it does not expire.
    pub expires_at: Option<Timestamp>,
    /// The provider's non-secret data about it, kept with it (a channel's resource id).
    pub state: Metadata,
    /// Members to set in the connection's metadata once it is recorded (a mailbox watch's
    /// starting history id); `null` removes one.
    pub metadata: Option<Metadata>,
}

/// The subscription a verified delivery says it came through, for providers whose deliveries
/// arrive only on subscriptions this service opened (Google's push channels): the engine
/// accepts the delivery only when the tenant of its URL has that subscription open (not
/// `closed`) with the same `external_id` and, member by member, the same `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedSubscription {
    /// The provider's id of the subscription (a channel id).
    pub external_id: String,
    /// Members of the subscription's `state` the delivery names, each with the text it must
    /// hold there (a channel's resource id).
    pub state: Vec<(&'static str, String)>,
}

impl ClaimedSubscription {
    /// Whether `subscription` is the one claimed and still open.
    pub fn matches(&self, subscription: &Subscription) -> bool {
        subscription.status != crate::domain::SubscriptionStatus::Closed
            && subscription.external_id.as_deref() == Some(self.external_id.as_str())
            && self.state.iter().all(|(member, claimed)| {
                subscription.state.get(*member).and_then(|v| v.as_str()) == Some(claimed.as_str())
            })
    }
}
