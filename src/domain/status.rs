//! The closed sets of values stored as text: connection status, job status and job type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A value that is not one of an enum's variants; carries the accepted values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseEnumError {
    /// The accepted spellings.
    pub expected: &'static [&'static str],
}

impl fmt::Display for ParseEnumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "must be one of: {}", self.expected.join(", "))
    }
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every spelling, in declaration order.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The stored and serialized spelling.
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(ParseEnumError { expected: Self::ALL }),
                }
            }
        }
    };
}

text_enum!(
    /// Where a connection stands.
    ConnectionStatus {
        /// Tokens are valid; the connection syncs and receives webhooks.
        Active => "active",
        /// The provider rejected the refresh token; the tenant must connect again.
        NeedsReauth => "needs_reauth",
        /// Disconnected; tokens are erased.
        Revoked => "revoked",
        /// Repeated failures; see `last_error`.
        Error => "error",
    }
);

text_enum!(
    /// Where a sync job stands.
    JobStatus {
        /// Waiting for a worker.
        Queued => "queued",
        /// Leased by a worker.
        Running => "running",
        /// Finished without error.
        Succeeded => "succeeded",
        /// Gave up after its last attempt; see `error`.
        Failed => "failed",
    }
);

text_enum!(
    /// What a sync job does.
    JobType {
        /// Everything from the beginning.
        Full => "full",
        /// Changes since the stored cursor.
        Incremental => "incremental",
        /// Changes since the stored cursor, at once, because the provider's notification said
        /// something changed without saying what.
        Webhook => "webhook",
        /// Opens or renews the connection's provider-side subscriptions (watch channels,
        /// dynamic webhooks); runs beside the connection's syncs, never instead of one.
        Subscription => "subscription",
    }
);

impl JobType {
    /// The lane the job queues in: a connection has at most one queued or running job per
    /// lane.
    pub const fn lane(&self) -> &'static str {
        match self {
            JobType::Subscription => "subscription",
            JobType::Full | JobType::Incremental | JobType::Webhook => "sync",
        }
    }
}

text_enum!(
    /// Where a provider-side subscription stands.
    SubscriptionStatus {
        /// Recorded, not opened yet (or being opened again after a reconnect).
        Pending => "pending",
        /// Open at the provider; renewed before `expires_at`.
        Active => "active",
        /// Could not be opened or renewed; `last_error` says why, and it is tried again later.
        Failed => "failed",
        /// Closed at the provider (or abandoned) when the connection was disconnected.
        Closed => "closed",
    }
);

text_enum!(
    /// Where a stored webhook event stands.
    EventStatus {
        /// Stored, waiting for the inbox worker.
        Pending => "pending",
        /// Turned into signals.
        Processed => "processed",
        /// An event type the provider's connector does not map.
        Ignored => "ignored",
        /// No connection of the tenant owns it; kept, never routed elsewhere.
        Unmatched => "unmatched",
        /// Could not be processed; see `last_error`.
        Failed => "failed",
    }
);

text_enum!(
    /// Whether a push endpoint receives deliveries.
    EndpointStatus {
        /// Receives deliveries.
        Active => "active",
        /// Receives nothing until enabled again; `disabled_reason` says why.
        Disabled => "disabled",
    }
);

text_enum!(
    /// Where one delivery of an event to an endpoint stands.
    DeliveryStatus {
        /// Waiting for its first or next attempt (or being attempted).
        Pending => "pending",
        /// The endpoint answered `2xx`.
        Succeeded => "succeeded",
        /// Given up after the last attempt of the schedule.
        Failed => "failed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for s in ConnectionStatus::ALL {
            assert_eq!(s.parse::<ConnectionStatus>().expect("known").as_str(), *s);
        }
        assert_eq!(
            "queud".parse::<JobStatus>().unwrap_err().to_string(),
            "must be one of: queued, running, succeeded, failed"
        );
    }
}
