//! Google Calendar: event changes, from push notifications and sync tokens.
//!
//! Rate limit: Calendar's per-user quota of 600 queries a minute
//! (https://developers.google.com/calendar/api/guides/quota).
//!
//! OAuth: Google's web server flow, shared with the other Google providers (`super::google`).

use async_trait::async_trait;
use url::Url;

use super::google;
use crate::config::ProviderSettings;
use crate::oauth::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::providers::{AuthType, Connector, Descriptor, RateLimitPolicy};

/// The Google Calendar provider.
pub struct GoogleCalendarConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "google_calendar",
    display_name: "Google Calendar",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "openid",
        "email",
        "https://www.googleapis.com/auth/calendar.readonly",
    ],
    kinds: &[
        "calendar_event_created",
        "calendar_event_updated",
        "calendar_event_deleted",
    ],
    webhooks: true,
    sync: true,
    rate_limit: RateLimitPolicy {
        requests: 600,
        window_secs: 60,
        burst: 50,
        max_concurrency: 4,
    },
};

#[async_trait]
impl Connector for GoogleCalendarConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }

    fn oauth(&self, settings: &ProviderSettings, _public_base_url: &Url) -> Option<OAuthEndpoints> {
        Some(google::endpoints(settings))
    }

    async fn identify(
        &self,
        ctx: ProviderContext<'_>,
        tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        google::identify(ctx, &tokens.access_token).await
    }

    async fn revoke(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        google::revoke(ctx, endpoints, tokens).await
    }
}
