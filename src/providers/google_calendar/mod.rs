//! Google Calendar: event changes, from push notifications and sync tokens.
//!
//! Webhooks: Google's push notification channels (`super::google::push`): verified by their
//! channel token, the `sync` handshake answered, and every change notification a request to
//! sync the connection. The sync step itself (incremental `events.list` with sync tokens) and opening the channels (`watch`) are
//! not built yet: until they are, a requested sync finds nothing.
//!
//! Rate limit: Calendar's per-user quota of 600 queries a minute
//! (https://developers.google.com/calendar/api/guides/quota).
//!
//! OAuth: Google's web server flow, shared with the other Google providers (`super::google`).

use async_trait::async_trait;
use url::Url;

use super::google;
use crate::connector::ProviderSettings;
use crate::connector::{AuthType, Connector, Descriptor, RateLimitPolicy};
use crate::connector::{
    ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError, ProviderContext, TokenSet,
};
use crate::connector::{Normalized, Verified, WebhookEvent, WebhookRejection, WebhookRequest};
use crate::domain::Connection;

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
    kinds: &[],
    webhooks: false,
    sync: false,
    rate_limit: RateLimitPolicy {
        requests: 600,
        window_secs: 60,
        burst: 50,
        max_concurrency: 4,
    },
    settings: &[],
};

#[async_trait]
impl Connector for GoogleCalendarConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }

    fn oauth(&self, settings: &ProviderSettings, _public_base_url: &Url) -> Option<OAuthEndpoints> {
        Some(google::endpoints(settings))
    }

    /// Push notifications of the channels opened for this provider (`super::google::push`).
    async fn verify_webhook(
        &self,
        request: WebhookRequest<'_>,
    ) -> Result<Verified, WebhookRejection> {
        google::push::verify(request.settings, request.headers)
    }

    fn webhook_secret_headers(&self) -> &'static [&'static str] {
        google::push::SECRET_HEADERS
    }

    fn normalize_webhook(&self, event: &WebhookEvent) -> Result<Normalized, String> {
        google::push::normalize(event)
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
        _connection: &Connection,
        tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        google::revoke(ctx, endpoints, tokens).await
    }
}
