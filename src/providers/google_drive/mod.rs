//! Google Drive: file changes, from push notifications and the changes feed.
//!
//! Rate limit: well inside Drive's per-user query quota
//! (https://developers.google.com/drive/api/guides/limits).
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

/// The Google Drive provider.
pub struct GoogleDriveConnector;

static DESCRIPTOR: Descriptor = Descriptor {
    slug: "google_drive",
    display_name: "Google Drive",
    auth_type: AuthType::Oauth2,
    default_scopes: &[
        "openid",
        "email",
        "https://www.googleapis.com/auth/drive.metadata.readonly",
    ],
    kinds: &["file_created", "file_updated", "file_deleted"],
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
impl Connector for GoogleDriveConnector {
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
