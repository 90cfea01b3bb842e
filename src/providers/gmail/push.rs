//! Gmail's change notifications, as Cloud Pub/Sub pushes them
//! (<https://developers.google.com/gmail/api/guides/push>): to `POST /webhooks/gmail`, one
//! push subscription for the whole deployment, routed by the mailbox address; or to
//! `POST /webhooks/gmail/{tenant_id}`, routed among that tenant's mailboxes.
//!
//! - **Proof.** An authenticated push subscription sends `Authorization: Bearer <JWT>`, an
//!   OpenID Connect token Google signs with RS256; it is checked against Google's published
//!   keys (`POBLYSH_GMAIL_PUSH_JWKS_URL`; else `{POBLYSH_GMAIL_AUTH_BASE_URL}/oauth2/v3/certs`
//!   when that is set; else `https://www.googleapis.com/oauth2/v3/certs`): signature,
//!   expiry, issuer `https://accounts.google.com` (or `accounts.google.com`), audience
//!   `POBLYSH_GMAIL_PUSH_AUDIENCE` (the one set on the push subscription; by default the push
//!   URL, `{POBLYSH_PUBLIC_BASE_URL}/webhooks/gmail`, as Pub/Sub's own default), and, when
//!   `POBLYSH_GMAIL_PUSH_SERVICE_ACCOUNT` is set, the verified `email` of the service account
//!   the subscription pushes as
//!   (<https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions>).
//! - **Identity.** The body is
//!   `{"message": {"data": base64, "messageId": "...", "publishTime": "..."}, "subscription":
//!   "..."}`; `messageId` names the delivery (Pub/Sub redelivers with the same id, and a
//!   redelivery is acknowledged as a duplicate), and `data` decodes to
//!   `{"emailAddress": "...", "historyId": ...}`, the history id a number or a string.
//! - **Meaning.** A notification says the mailbox changed, not how: it requests a sync of the
//!   connection whose address it names. A stale one (its history already synced) only costs a
//!   sync that finds nothing; one naming no connected mailbox is kept `unmatched`. Either way
//!   Pub/Sub is answered `2xx`, or it would redeliver until the message expires.

use axum::http::HeaderMap;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use serde::Deserialize;
use url::Url;

use crate::connector::keys::JwtExpectation;
use crate::connector::signature::header;
use crate::connector::ProviderSettings;
use crate::connector::{
    Normalized, Verified, WebhookEvent, WebhookRejection, WebhookRequest, WebhookUrl,
};
use crate::domain::{Connection, ConnectionId};

/// The audience the push subscription's token is minted for.
pub(super) const AUDIENCE: &str = "PUSH_AUDIENCE";
/// Where Google publishes the keys that sign push tokens.
pub(super) const JWKS_URL: &str = "PUSH_JWKS_URL";
/// The service account the push subscription authenticates as, when pinned.
pub(super) const SERVICE_ACCOUNT: &str = "PUSH_SERVICE_ACCOUNT";
/// Google's published signing keys.
const GOOGLE_JWKS: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// The issuers Google's tokens name (both spellings are documented).
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY_SECS: u64 = 60;

/// Checks `POBLYSH_GMAIL_PUSH_AUDIENCE` at start-up.
pub(super) fn check_audience(text: &str) -> Result<(), String> {
    if text.trim().is_empty() || text.len() > 2048 {
        return Err("must be the audience set on the Pub/Sub push subscription".into());
    }
    Ok(())
}

/// Checks `POBLYSH_GMAIL_PUSH_JWKS_URL` at start-up.
pub(super) fn check_jwks_url(text: &str) -> Result<(), String> {
    match Url::parse(text.trim()) {
        Ok(url) if matches!(url.scheme(), "https" | "http") => Ok(()),
        _ => Err("must be an http(s) URL".into()),
    }
}

/// Checks `POBLYSH_GMAIL_PUSH_SERVICE_ACCOUNT` at start-up.
pub(super) fn check_service_account(text: &str) -> Result<(), String> {
    if text.contains('@') && !text.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err("must be a service account's e-mail address".into())
    }
}

#[derive(Deserialize)]
struct Push {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(rename = "messageId")]
    message_id: String,
    #[serde(default)]
    data: Option<String>,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "emailAddress")]
    email_address: String,
    #[serde(rename = "historyId", default)]
    history_id: serde_json::Value,
}

/// Verifies a push: its token first (nothing is read from an unverified body), then the
/// delivery's identity.
/// What the headers alone can settle, before the body is read: the key set is known and the
/// push carries a bearer token shaped like a JWT (three segments, of a bounded size).
pub(super) fn precheck(
    settings: &ProviderSettings,
    headers: &HeaderMap,
) -> Result<(), WebhookRejection> {
    jwks_url(settings).ok_or(WebhookRejection::NotConfigured)?;
    header(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.len() <= 16 * 1024 && t.split('.').count() == 3)
        .map(|_| ())
        .ok_or_else(|| {
            WebhookRejection::InvalidSignature(
                "the Authorization header with Pub/Sub's token is missing or malformed".into(),
            )
        })
}

pub(super) async fn verify(request: WebhookRequest<'_>) -> Result<Verified, WebhookRejection> {
    let settings = request.settings;
    let audience = audience(&request);
    let jwks_url = jwks_url(settings).ok_or(WebhookRejection::NotConfigured)?;
    let token = header(request.headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            WebhookRejection::InvalidSignature(
                "the Authorization header with Pub/Sub's token is missing".into(),
            )
        })?;
    let expectation = JwtExpectation {
        jwks_url,
        issuers: ISSUERS.iter().map(|i| i.to_string()).collect(),
        audience,
        leeway_secs: LEEWAY_SECS,
    };
    let claims = request
        .keys
        .verify_rs256(token, &expectation)
        .await
        .map_err(|e| WebhookRejection::InvalidSignature(format!("the push token: {e}")))?;
    if let Some(account) = settings.extra(SERVICE_ACCOUNT) {
        let email = claims.get("email").and_then(|v| v.as_str());
        let verified = claims.get("email_verified").and_then(|v| v.as_bool());
        if email != Some(account) || verified != Some(true) {
            return Err(WebhookRejection::InvalidSignature(
                "the push token is not the configured service account's".into(),
            ));
        }
    }
    let push: Push = serde_json::from_slice(request.body).map_err(|_| {
        WebhookRejection::Malformed("the body is not a Pub/Sub push message".into())
    })?;
    if push.message.message_id.is_empty() || push.message.message_id.len() > 200 {
        return Err(WebhookRejection::Malformed(
            "the push message has no usable messageId".into(),
        ));
    }
    Ok(Verified::Event {
        dedupe_key: format!("pubsub:{}", push.message.message_id),
        event_type: Some("gmail.notification".into()),
    })
}

/// The audience push tokens must name: `POBLYSH_GMAIL_PUSH_AUDIENCE`, else the URL the push
/// arrived at, which Pub/Sub uses when the subscription names no audience
/// (<https://cloud.google.com/pubsub/docs/authenticate-push-subscriptions>).
fn audience(request: &WebhookRequest<'_>) -> String {
    if let Some(configured) = request.settings.extra(AUDIENCE) {
        return configured.to_string();
    }
    let path = match request.url {
        WebhookUrl::App => "/webhooks/gmail".to_string(),
        WebhookUrl::Tenant(tenant) => format!("/webhooks/gmail/{tenant}"),
    };
    crate::connector::join_path(request.public_base_url, &path).to_string()
}

/// Where the push tokens' keys are published (see the module docs).
fn jwks_url(settings: &crate::connector::ProviderSettings) -> Option<Url> {
    match (settings.extra(JWKS_URL), &settings.auth_base_url) {
        (Some(url), _) => Url::parse(url).ok(),
        (None, Some(base)) => Some(crate::connector::join_path(base, "/oauth2/v3/certs")),
        (None, None) => Url::parse(GOOGLE_JWKS).ok(),
    }
}

/// The mailbox a verified push names, lower case: the account its connections were made with.
pub(super) fn account(body: &[u8]) -> Option<String> {
    notification(body).map(|n| n.email_address.to_ascii_lowercase())
}

/// The mailbox a stored notification names.
fn mailbox(event: &WebhookEvent) -> Option<String> {
    notification(&event.body).map(|n| n.email_address)
}

/// The notification a push carries: an address and a readable history id.
fn notification(body: &[u8]) -> Option<Notification> {
    let push: Push = serde_json::from_slice(body).ok()?;
    let data = push.message.data?;
    // Pub/Sub sends standard base64; accept the URL-safe alphabet too.
    let bytes = STANDARD
        .decode(data.trim())
        .or_else(|_| URL_SAFE.decode(data.trim()))
        .ok()?;
    let notification: Notification = serde_json::from_slice(&bytes).ok()?;
    super::api::history_id_of(&notification.history_id)?;
    (!notification.email_address.is_empty()).then_some(notification)
}

/// A notification asks for a sync; one that names no mailbox cannot be read.
pub(super) fn normalize(event: &WebhookEvent) -> Result<Normalized, String> {
    mailbox(event)
        .map(|_| Normalized::SyncRequested)
        .ok_or_else(|| "the push message's data names no emailAddress and historyId".to_string())
}

/// The tenant's connection whose mailbox the notification names (the address kept as its
/// `email` when it connected). A push always names its mailbox, so no other connection, not
/// even the tenant's only one, is ever chosen for it.
pub(super) fn route(event: &WebhookEvent, connections: &[Connection]) -> Option<ConnectionId> {
    let address = mailbox(event)?;
    connections
        .iter()
        .find(|c| {
            c.metadata
                .get("email")
                .and_then(|v| v.as_str())
                .is_some_and(|e| e.eq_ignore_ascii_case(&address))
        })
        .map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{now, TenantId};

    /// The push of the Gmail guide's example notification.
    fn event(address: &str) -> WebhookEvent {
        let data = STANDARD.encode(format!(
            r#"{{"emailAddress": "{address}", "historyId": "9876543210"}}"#
        ));
        WebhookEvent {
            tenant_id: TenantId(uuid::Uuid::nil()),
            provider: "gmail".into(),
            event_type: Some("gmail.notification".into()),
            headers: Default::default(),
            body: format!(
                r#"{{"message":{{"data":"{data}","messageId":"2070443601311540","publishTime":"2021-02-26T19:13:55.749Z"}},"subscription":"projects/myproject/subscriptions/mysubscription"}}"#
            )
            .into_bytes(),
            received_at: now(),
        }
    }

    fn mailbox_connection(address: &str) -> Connection {
        let mut c = Connection::active_for_tests("gmail", address);
        c.metadata.insert("email".into(), address.into());
        c
    }

    #[test]
    fn a_notification_goes_only_to_the_mailbox_it_names() {
        let (a, b) = (
            mailbox_connection("a@example.com"),
            mailbox_connection("b@example.com"),
        );
        let both = [a.clone(), b.clone()];
        assert_eq!(route(&event("B@example.com"), &both), Some(b.id));
        assert_eq!(route(&event("c@example.com"), &both), None);
        assert_eq!(
            route(&event("c@example.com"), std::slice::from_ref(&a)),
            None,
            "another mailbox never falls back to the only connection"
        );
        assert!(matches!(
            normalize(&event("a@example.com")),
            Ok(Normalized::SyncRequested)
        ));
    }

    #[test]
    fn a_push_without_a_readable_address_cannot_be_read() {
        let mut broken = event("a@example.com");
        broken.body = br#"{"message":{"data":"!!","messageId":"1"}}"#.to_vec();
        assert!(normalize(&broken).is_err());
        assert_eq!(route(&broken, &[mailbox_connection("a@example.com")]), None);
    }

    #[test]
    fn the_history_id_may_be_a_number_or_a_string_but_must_be_one() {
        let body = |history: &str| {
            let data = STANDARD.encode(format!(
                r#"{{"emailAddress": "A@example.com", "historyId": {history}}}"#
            ));
            format!(r#"{{"message":{{"data":"{data}","messageId":"1"}}}}"#).into_bytes()
        };
        assert_eq!(
            account(&body("9876543210")).as_deref(),
            Some("a@example.com")
        );
        assert_eq!(
            account(&body(r#""9876543210""#)).as_deref(),
            Some("a@example.com")
        );
        assert_eq!(
            account(&body("18446744073709551615")).as_deref(),
            Some("a@example.com")
        );
        for bad in ["-1", r#""x""#, "null", "1.5"] {
            assert_eq!(account(&body(bad)), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_push_body_is_read_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300), data in "\\PC{0,120}") {
            let _ = account(&body);
            let wrapped = format!(
                r#"{{"message":{{"data":"{}","messageId":"1"}}}}"#,
                STANDARD.encode(data.as_bytes())
            );
            let _ = account(wrapped.as_bytes());
        }

        #[test]
        fn every_address_and_history_id_round_trips(local in "[a-z0-9.]{1,20}", id in proptest::num::u64::ANY, as_number in proptest::bool::ANY) {
            let history = if as_number { id.to_string() } else { format!("\"{id}\"") };
            let data = STANDARD.encode(format!(
                r#"{{"emailAddress": "{local}@Example.com", "historyId": {history}}}"#
            ));
            let body = format!(r#"{{"message":{{"data":"{data}","messageId":"1"}}}}"#);
            proptest::prop_assert_eq!(account(body.as_bytes()), Some(format!("{local}@example.com")));
        }
    }

    #[test]
    fn the_key_set_follows_the_auth_base_unless_named() {
        let mut settings = crate::connector::ProviderSettings::bare("gmail");
        assert_eq!(
            jwks_url(&settings).map(|u| u.to_string()).as_deref(),
            Some(GOOGLE_JWKS)
        );
        settings.auth_base_url = Some(Url::parse("http://127.0.0.1:9/fake").expect("url"));
        assert_eq!(
            jwks_url(&settings).map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:9/fake/oauth2/v3/certs")
        );
        settings
            .extra
            .push((JWKS_URL, "https://keys.example.com/certs".into()));
        assert_eq!(
            jwks_url(&settings).map(|u| u.to_string()).as_deref(),
            Some("https://keys.example.com/certs")
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(check_audience("https://connectors.example.com/webhooks/gmail").is_ok());
        assert!(check_audience(" ").is_err());
        assert!(check_jwks_url("https://www.googleapis.com/oauth2/v3/certs").is_ok());
        assert!(check_jwks_url("ftp://x").is_err());
        assert!(check_service_account("push@p.iam.gserviceaccount.com").is_ok());
        assert!(check_service_account("nobody").is_err());
    }
}
