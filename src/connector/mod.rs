//! The contract between the engine and every provider: the [`Connector`] trait and every type
//! a connector speaks. A provider is a folder under `src/providers/` implementing it; the
//! engine (OAuth flow, inbox, sync, subscriptions) reaches providers only through it. This
//! module depends on nothing above `domain` and `crypto`, so both sides can see it.
//!
//! How to add a provider: `docs/providers/adding-a-provider.md`.

mod call;
pub mod derive;
mod descriptor;
pub mod keys;
mod oauth;
mod page;
pub mod pkce;
mod settings;
mod signal;
pub mod signature;
mod subscription;
mod sync;
mod token;
mod webhook;

use async_trait::async_trait;
use axum::http::HeaderMap;
use serde_json::{Map, Value};
use url::Url;

use crate::crypto::Secret;
use crate::domain::{Connection, ConnectionId, TenantId};

pub use call::{
    check_status, http_client, rate_limited, read_body, retry_after_header, retry_after_secs,
    retry_after_secs_within, transport, ProviderCallError, ProviderContext, MAX_BODY_BYTES,
    MAX_RETRY_AFTER_SECS,
};
pub use descriptor::{AuthType, Descriptor, RateLimitPolicy, Setting};
pub use oauth::{
    ClientAuth, CodeExchange, ConnectionTokens, ExternalAccount, Metadata, OAuthEndpoints,
    ProviderSecrets,
};
pub use page::{PageRequest, PageResponse, ProviderPage};
pub use settings::{callback_url, join_path, ProviderSettings};
pub use signal::{declared_signals, SignalDraft};
pub use subscription::{ClaimedSubscription, Opened, SubscriptionContext};
pub use sync::{SyncContext, SyncPage};
pub use token::{standard_token_response, TokenSet, MAX_TOKEN_LIFETIME_SECS};
pub use webhook::{
    route_to_account, Normalized, TenantWebhook, Verified, WebhookEvent, WebhookRejection,
    WebhookRequest, WebhookUrl,
};

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

    /// The default client-side rate limits under the provider's own settings (`extra`, as in
    /// [`ProviderSettings::extra`]), before the `POBLYSH_<SLUG>_RATE_LIMIT_*` overrides apply:
    /// the descriptor's by default. A provider whose limits depend on how it is deployed (Slack's
    /// app class) derives them here.
    fn default_rate_limit(&self, _extra: &[(&'static str, String)]) -> RateLimitPolicy {
        self.descriptor().rate_limit
    }

    /// Reads a token endpoint response (status and body as JSON or form).
    fn interpret_token_response(
        &self,
        status: u16,
        body: &Map<String, Value>,
    ) -> Result<TokenSet, ProviderCallError> {
        standard_token_response(status, body)
    }

    /// Checks the callback's other query parameters ([`CodeExchange::params`]) before any code
    /// is exchanged; `Err((field, problem))` ends the connect with `400 VALIDATION_FAILED`
    /// naming the parameter, and nothing is exchanged. The default accepts every callback.
    fn check_callback(
        &self,
        _settings: &ProviderSettings,
        _params: &[(String, String)],
    ) -> Result<(), (String, String)> {
        Ok(())
    }

    /// Whether connecting an account again revokes the grant the connection held before (for
    /// providers that cap live grants per user and never rotate refresh tokens). The engine
    /// does it best effort, after the new grant is identified and only when its refresh token
    /// differs from the old one.
    fn revokes_replaced_grant(&self) -> bool {
        false
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3, with the PKCE verifier when sent).
    async fn exchange_code(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        exchange: CodeExchange<'_>,
    ) -> Result<TokenSet, ProviderCallError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", exchange.code),
            ("redirect_uri", exchange.redirect_uri),
        ];
        if let Some(verifier) = exchange.verifier {
            form.push(("code_verifier", verifier.expose()));
        }
        let (status, body) = ctx.token_request(endpoints, &form).await?;
        self.interpret_token_response(status, &body)
    }

    /// Uses a connection's refresh token (RFC 6749 §6).
    async fn refresh_tokens(
        &self,
        ctx: ProviderContext<'_>,
        endpoints: &OAuthEndpoints,
        _connection: &Connection,
        refresh_token: &Secret,
    ) -> Result<TokenSet, ProviderCallError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let (status, body) = ctx.token_request(endpoints, &form).await?;
        self.interpret_token_response(status, &body)
    }

    /// Who the account behind fresh tokens is, with the provider state to keep beside it
    /// (taken from the token response's other members or asked of the provider).
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
        _connection: &Connection,
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
    async fn verify_webhook(
        &self,
        _request: WebhookRequest<'_>,
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

    /// Checks what a delivery to `url` must carry on its headers alone, before its body is
    /// read, so an unsigned flood costs no memory: the secret it is verified with is configured,
    /// and the signature headers are present and well formed. Whatever passes is verified in
    /// full by [`Connector::verify_webhook`]. The default lets every delivery through.
    fn precheck_webhook(
        &self,
        _settings: &ProviderSettings,
        _url: WebhookUrl,
        _headers: &HeaderMap,
    ) -> Result<(), WebhookRejection> {
        Ok(())
    }

    /// Whether a delivery to a tenant's URL is signed with the app-wide secret rather than one
    /// derived for that tenant (Slack signs every delivery of an app alike). Such a delivery
    /// proves only that the provider sent it, not for whom: it is accepted on a tenant's URL
    /// only when the account it names ([`Connector::webhook_account`]) is one that tenant
    /// connected.
    fn app_wide_secret(&self) -> bool {
        false
    }

    /// Whether the provider's own deliveries to `/webhooks/{provider}` carry
    /// `Authorization: Bearer` (Cloud Pub/Sub push's OIDC token). For such a provider that
    /// header marks a relay by Core only when it holds an operator token; any other bearer
    /// token is the provider's, verified by [`Connector::verify_webhook`].
    fn app_webhook_bearer(&self) -> bool {
        false
    }

    /// Request headers (lower-case) that carry a secret of the provider's scheme (a channel
    /// token) or a delivery's signature, which a database reader could replay, and are
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

    /// The subscription a verified delivery to a tenant's URL claims to come through, for a
    /// provider whose deliveries arrive only on subscriptions this service opened (a push
    /// channel's id and resource id). Such a connector answers `Some` for every delivery: the
    /// engine stores it only when the tenant has that subscription open, for the connection
    /// that opened it, and refuses it like a bad signature otherwise. `None` (the default):
    /// deliveries are not tied to a subscription.
    fn claimed_subscription(&self, _headers: &HeaderMap) -> Option<ClaimedSubscription> {
        None
    }

    /// Which of the tenant's active connections to this provider a stored event belongs to;
    /// `None` leaves it `unmatched`. The default ([`route_to_account`]): a delivery naming an
    /// account ([`Connector::webhook_account`]) goes only to a connection of that account; one
    /// naming none goes to the tenant's only connection, if there is exactly one.
    fn route_webhook(
        &self,
        event: &WebhookEvent,
        connections: &[Connection],
    ) -> Option<ConnectionId> {
        let account = self.webhook_account(&event.header_map(), &event.body);
        route_to_account(account.as_deref(), connections)
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
            metadata: None,
        })
    }

    /// The resources this connection needs subscriptions on at the provider (watch channels,
    /// dynamic webhooks, mailbox watches), one name each; none by default. The engine opens
    /// each after connect, renews it before it expires and closes it on disconnect.
    fn subscriptions(&self, _connection: &Connection) -> Vec<String> {
        Vec::new()
    }

    /// Opens the subscription on `ctx.subscription.resource`.
    async fn open_subscription(
        &self,
        _ctx: SubscriptionContext<'_>,
    ) -> Result<Opened, ProviderCallError> {
        Err(ProviderCallError::Rejected(
            "this provider opens no subscriptions".into(),
        ))
    }

    /// Renews an open subscription before it expires. The default opens a fresh one; when
    /// the answer names another `external_id`, the engine closes the old one.
    async fn renew_subscription(
        &self,
        ctx: SubscriptionContext<'_>,
    ) -> Result<Opened, ProviderCallError> {
        self.open_subscription(ctx).await
    }

    /// Closes a subscription (`ctx.subscription.external_id`) at the provider. Best effort:
    /// the engine logs a failure and goes on.
    async fn close_subscription(
        &self,
        _ctx: SubscriptionContext<'_>,
    ) -> Result<(), ProviderCallError> {
        Ok(())
    }

    /// Pages the provider serves from this service (the sandbox's authorize page); not part
    /// of the API.
    fn pages(&self) -> &'static [ProviderPage] {
        &[]
    }
}
