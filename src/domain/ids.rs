//! Typed identifiers. Each wraps a UUID so a tenant id can never be passed where a
//! connection id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim()).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A tenant, as chosen by Poblysh Core and sent in `X-Tenant-Id`.
    TenantId
);
uuid_id!(
    /// A connection between a tenant and one account at a provider.
    ConnectionId
);
uuid_id!(
    /// A normalized signal (UUIDv7, so ids sort by creation time).
    SignalId
);
uuid_id!(
    /// A sync job.
    JobId
);

uuid_id!(
    /// A provider-side subscription of a connection.
    SubscriptionId
);

uuid_id!(
    /// A push endpoint registered by Core.
    EndpointId
);

uuid_id!(
    /// An event in the push outbox; sent as `webhook-id`, the same on every attempt.
    EventId
);

uuid_id!(
    /// One delivery of an event to an endpoint.
    DeliveryId
);

impl EndpointId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl EventId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl DeliveryId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl SubscriptionId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl TenantId {
    /// Where deliveries that name no connected account are kept: no tenant's. Never accepted
    /// as a tenant from a caller, never routed.
    pub const NONE: TenantId = TenantId(Uuid::nil());

    /// A tenant id a caller named: a UUID, and not the nil one, which belongs to no tenant.
    pub fn parse_named(text: &str) -> Result<Self, &'static str> {
        match text.parse::<TenantId>() {
            Ok(id) if id == Self::NONE => Err("must not be the nil UUID"),
            Ok(id) => Ok(id),
            Err(_) => Err("must be a UUID"),
        }
    }
}

impl ConnectionId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl SignalId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl JobId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}
