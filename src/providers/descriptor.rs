//! What a provider declares about itself (the catalogue entry behind `GET /providers`) and the
//! [`Connector`] trait through which core code reaches it.

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};
use url::Url;
use utoipa::ToSchema;

use crate::config::ProviderSettings;
use crate::crypto::Secret;
use crate::domain::{Connection, ConnectionId, TenantId};
use crate::http::AppState;
use crate::ingest::{Normalized, SyncPage, Verified, WebhookEvent, WebhookRejection};
use crate::oauth::{
    standard_token_response, ConnectionTokens, ExternalAccount, OAuthEndpoints, ProviderCallError,
    ProviderContext, TokenSet,
};

/// How a tenant authorizes the service at a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// OAuth 2.0 authorization code flow.
    Oauth2,
    /// No credentials (the built-in sandbox).
    None,
}

/// Client-side limits on calls to a provider, enforced before requests are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RateLimitPolicy {
    /// Requests allowed per window, per connection.
    pub requests: u32,
    /// Window length in seconds.
    pub window_secs: u32,
    /// Requests that may be sent back to back before pacing starts.
    pub burst: u32,
    /// Requests in flight at once, per connection.
    pub max_concurrency: u32,
}

/// The URL a webhook delivery arrived at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookUrl {
    /// `/webhooks/{provider}/{tenant_id}`: registered for one tenant.
    Tenant(TenantId),
    /// `/webhooks/{provider}`: one URL for the whole provider app.
    App,
}

/// What an operator registers at the provider so that one tenant's deliveries reach
/// `/webhooks/{provider}/{tenant_id}`.
#[derive(Debug)]
pub struct TenantWebhook {
    /// The secret the provider signs those deliveries with; `None` while the provider's
    /// webhook secret is not configured.
    pub secret: Option<Secret>,
    /// The content type to choose.
    pub content_type: &'static str,
    /// The provider's event types to subscribe to.
    pub events: &'static [&'static str],
}

/// A provider's static description.
#[derive(Debug)]
pub struct Descriptor {
    /// Stable identifier used in routes and filters, e.g. `github`.
    pub slug: &'static str,
    /// Human-readable name.
    pub display_name: &'static str,
    pub auth_type: AuthType,
    /// Scopes requested when the caller names none.
    pub default_scopes: &'static [&'static str],
    /// Signal kinds this provider emits.
    pub kinds: &'static [&'static str],
    /// Whether the provider pushes events to `/webhooks/{provider}/...`.
    pub webhooks: bool,
    /// Whether the sync engine polls it.
    pub sync: bool,
    /// Default client-side rate limits.
    pub rate_limit: RateLimitPolicy,
}

/// A provider's behaviour: its catalogue entry, OAuth endpoints and quirks, and who an account
/// is. Default methods implement plain RFC 6749; a provider overrides only where it differs.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// The provider's catalogue entry.
    fn descriptor(&self) -> &'static Descriptor;

    /// OAuth endpoints under these settings; `None` for providers that do not use OAuth.
    fn oauth(
        &self,
        _settings: &ProviderSettings,
        _public_base_url: &Url,
    ) -> Option<OAuthEndpoints> {
        None
    }

    /// Reads a token endpoint response (status and body as JSON or form).
    fn interpret_token_response(
        &self,
        status: u16,
        body: &Map<String, Value>,
    ) -> Result<TokenSet, ProviderCallError> {
        standard_token_response(status, body)
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3, with the PKCE verifier when sent).
    async fn exchange_code(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&Secret>,
    ) -> Result<TokenSet, ProviderCallError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier.expose()));
        }
        let (status, body) = ctx.token_request(endpoints, &form).await?;
        self.interpret_token_response(status, &body)
    }

    /// Uses a refresh token (RFC 6749 §6).
    async fn refresh_tokens(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        refresh_token: &Secret,
    ) -> Result<TokenSet, ProviderCallError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let (status, body) = ctx.token_request(endpoints, &form).await?;
        self.interpret_token_response(status, &body)
    }

    /// Who the account behind fresh tokens is.
    async fn identify(
        &self,
        _ctx: ProviderContext<'_>,
        _tokens: &TokenSet,
    ) -> Result<ExternalAccount, ProviderCallError> {
        Err(ProviderCallError::Rejected(
            "this provider cannot identify accounts".into(),
        ))
    }

    /// Revokes the grant at the provider (RFC 7009 by default, refresh token first since
    /// revoking it ends the whole grant).
    async fn revoke(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        tokens: &ConnectionTokens,
    ) -> Result<(), ProviderCallError> {
        let token = tokens
            .refresh_token
            .as_ref()
            .unwrap_or(&tokens.access_token);
        ctx.revoke_token(endpoints, token).await
    }

    /// Verifies a webhook delivery that arrived at `url` on its raw bytes, in constant time,
    /// within the provider's replay window, and names its dedupe key. The default refuses every
    /// delivery.
    fn verify_webhook(
        &self,
        _settings: &ProviderSettings,
        _url: WebhookUrl,
        _headers: &HeaderMap,
        _body: &[u8],
    ) -> Result<Verified, WebhookRejection> {
        Err(WebhookRejection::NotConfigured)
    }

    /// What to register at the provider for one tenant's webhook URL; `None` when the
    /// provider's webhooks are not registered per tenant (one URL per app, or channels the
    /// service opens itself).
    fn tenant_webhook(
        &self,
        _settings: &ProviderSettings,
        _tenant: TenantId,
    ) -> Option<TenantWebhook> {
        None
    }

    /// Request headers that carry a secret of the provider's scheme (a channel token) and are
    /// therefore never stored with the event, beside the credentials no event keeps.
    fn webhook_secret_headers(&self) -> &'static [&'static str] {
        &[]
    }

    /// The provider account a verified app-level delivery belongs to (a Slack workspace, a
    /// GitHub App installation's account), as stored in `external_account_id`; `None` when the
    /// payload names none.
    fn webhook_account(&self, _headers: &HeaderMap, _body: &[u8]) -> Option<String> {
        None
    }

    /// Which of the tenant's active connections to this provider a stored event belongs to;
    /// `None` leaves it `unmatched`. The default: the only connection, if there is exactly one.
    fn route_webhook(
        &self,
        _event: &WebhookEvent,
        connections: &[Connection],
    ) -> Option<ConnectionId> {
        match connections {
            [only] => Some(only.id),
            _ => None,
        }
    }

    /// What a stored event means. `Err` describes a payload that cannot be read (the event
    /// ends `failed`, never retried).
    fn normalize_webhook(&self, _event: &WebhookEvent) -> Result<Normalized, String> {
        Ok(Normalized::Ignored)
    }

    /// One step of an incremental sync: fetch the page after `cursor` (`None`: from the
    /// beginning) and return its signals and the cursor to resume from.
    async fn sync_page(
        &self,
        _ctx: SyncContext<'_>,
        _cursor: Option<&Value>,
    ) -> Result<SyncPage, ProviderCallError> {
        Ok(SyncPage {
            signals: Vec::new(),
            cursor: Value::Null,
            more: false,
        })
    }

    /// Routes the provider serves itself (the sandbox's authorize page); not part of the API.
    fn routes(&self) -> Option<axum::Router<AppState>> {
        None
    }
}

/// What a sync step may use: the provider's HTTP client and settings, the connection and a
/// fresh access token.
#[derive(Clone, Copy)]
pub struct SyncContext<'a> {
    pub provider: ProviderContext<'a>,
    pub connection: &'a Connection,
    pub access_token: &'a Secret,
}
