//! Google Drive: file changes, from push notifications and the changes feed.
//!
//! Rate limit: well inside Drive's per-user query quota
//! (https://developers.google.com/drive/api/guides/limits).

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

impl Connector for GoogleDriveConnector {
    fn descriptor(&self) -> &'static Descriptor {
        &DESCRIPTOR
    }
}
