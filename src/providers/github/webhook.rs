//! GitHub webhook deliveries: verification and routing to a connection.
//!
//! Headers (<https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers>):
//! `X-GitHub-Delivery` (a GUID, kept by redeliveries: the dedupe key), `X-GitHub-Event` (the
//! event type) and, when the webhook has a secret, `X-Hub-Signature-256: sha256=<hex>`, the
//! HMAC-SHA256 of the raw body under the secret. The legacy `X-Hub-Signature` (SHA-1) is never
//! accepted on its own
//! (<https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>).
//! GitHub signs no timestamp, so there is no replay window; redeliveries are caught by their
//! delivery id.
//!
//! Each tenant's URL has its own secret, derived from the configured one (see
//! [`tenant_secret`]): a delivery signed for one tenant's webhook never verifies on another
//! tenant's URL. The app-level URL takes the configured secret itself.

use axum::http::HeaderMap;
use serde_json::Value;

use super::normalize::{parse_body, parse_payload};
use crate::connector::derive::derive_secret;
use crate::connector::signature::{header, hmac_sha256_hex_matches};
use crate::connector::{Metadata, ProviderSettings};
use crate::connector::{TenantWebhook, WebhookUrl};
use crate::connector::{Verified, WebhookEvent, WebhookRejection};
use crate::crypto::Secret;
use crate::domain::{Connection, ConnectionId, TenantId};

/// The headers carrying GitHub's signatures: never stored with the event, since they carry no
/// timestamp and a database reader could replay a stored one.
pub(super) const SIGNATURE_HEADERS: &[&str] = &["x-hub-signature-256", "x-hub-signature"];

/// The events whose deliveries become signals (see `normalize`).
pub(super) const EVENTS: &[&str] = &[
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "push",
    "release",
];

/// The secret of one tenant's webhook URL, derived from the configured secret for the purpose
/// `github-webhook` and the tenant id (lower-case hyphenated form) by
/// [`crate::connector::derive`].
fn tenant_secret(secret: &Secret, tenant: TenantId) -> Secret {
    derive_secret(secret, "github-webhook", &[&tenant.to_string()])
}

/// What to register on a repository or organization for one tenant.
pub(super) fn tenant_webhook(settings: &ProviderSettings, tenant: TenantId) -> TenantWebhook {
    TenantWebhook {
        secret: settings
            .webhook_secret
            .as_ref()
            .map(|secret| tenant_secret(secret, tenant)),
        content_type: "application/json",
        events: EVENTS,
    }
}

/// What the headers alone can settle, before the body is read: the webhook secret is
/// configured and `X-Hub-Signature-256` is `sha256=` and 64 hex digits. Returns the secret the
/// delivery to `url` must be signed with, and the signature's hex.
pub(super) fn precheck<'a>(
    settings: &ProviderSettings,
    url: WebhookUrl,
    headers: &'a HeaderMap,
) -> Result<(Secret, &'a str), WebhookRejection> {
    let configured = settings
        .webhook_secret
        .as_ref()
        .ok_or(WebhookRejection::NotConfigured)?;
    let secret = match url {
        WebhookUrl::App => configured.clone(),
        WebhookUrl::Tenant(tenant) => tenant_secret(configured, tenant),
    };
    let invalid = |why: &str| WebhookRejection::InvalidSignature(why.to_string());
    let signature = match header(headers, "x-hub-signature-256") {
        Some(signature) => signature,
        // SHA-1 is legacy, sent only for compatibility (https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries).
        None if headers.contains_key("x-hub-signature") => {
            return Err(invalid(
                "only the SHA-1 X-Hub-Signature was sent; X-Hub-Signature-256 is required",
            ))
        }
        None => return Err(invalid("the X-Hub-Signature-256 header is missing")),
    };
    let hex = signature
        .strip_prefix("sha256=")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| invalid("X-Hub-Signature-256 must be sha256= and 64 hex digits"))?;
    Ok((secret, hex))
}

pub(super) fn verify(
    settings: &ProviderSettings,
    url: WebhookUrl,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, WebhookRejection> {
    let (secret, hex) = precheck(settings, url, headers)?;
    if !hmac_sha256_hex_matches(&secret, &[body], hex) {
        return Err(WebhookRejection::InvalidSignature(
            "the signature does not match the body".into(),
        ));
    }
    let malformed =
        |what: &str| WebhookRejection::Malformed(format!("the {what} header is missing"));
    header(headers, "x-github-delivery")
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .ok_or_else(|| malformed("X-GitHub-Delivery"))?;
    let event = header(headers, "x-github-event")
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| malformed("X-GitHub-Event"))?;
    // GitHub signs no delivery id or time: the signed body re-posted under a new
    // `X-GitHub-Delivery` must not become a new event, so deliveries are told apart by the
    // digest of what was signed. A redelivery carries the same body and id
    // (https://docs.github.com/en/webhooks/testing-and-troubleshooting-webhooks/redelivering-webhooks).
    Ok(Verified::Event {
        dedupe_key: body_digest(body),
        event_type: Some(event.to_string()),
    })
}

/// The dedupe key of a delivery: the SHA-256 of its signed body.
fn body_digest(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", crate::crypto::hex(&Sha256::digest(body)))
}

/// The member of a connection's metadata listing the accounts (users and organizations, by
/// numeric id) owning repositories its sync has listed: accounts whose repositories the
/// connection is known to see (written by `sync`).
pub(super) const KNOWN_OWNERS: &str = "repository_owner_ids";

/// The connection a delivery on a tenant's URL belongs to, only when provably that
/// connection's: the connection whose own account the payload names (see [`account_ids`]:
/// installation account, organization, repository owner, then sender), else the first whose
/// sync has listed repositories of the organization or owner the payload names
/// ([`KNOWN_OWNERS`]). A delivery naming no such account stays unmatched, however few
/// connections the tenant has.
pub(super) fn route(event: &WebhookEvent, connections: &[Connection]) -> Option<ConnectionId> {
    let body = parse_body(event).ok()?;
    let named = account_ids(&body);
    let own = named
        .iter()
        .find_map(|(_, id)| connections.iter().find(|c| c.external_account_id == *id));
    let seen = || {
        named
            .iter()
            .filter(|(source, _)| *source != Source::Sender)
            .find_map(|(_, id)| connections.iter().find(|c| knows_owner(c, id)))
    };
    own.or_else(seen).map(|c| c.id)
}

/// Owners remembered per connection; the most recently listed are kept.
const MAX_KNOWN_OWNERS: usize = 200;

/// The metadata patch that adds `listed` (owner ids of repositories a sync page listed, or the
/// organizations of the account at connect) to the [`KNOWN_OWNERS`] of a connection's
/// `metadata`, most recent first; `None` when it knows them all already.
pub(super) fn known_owners_patch(
    metadata: &Metadata,
    listed: impl IntoIterator<Item = u64>,
) -> Option<Metadata> {
    let known: Vec<String> = metadata
        .get(KNOWN_OWNERS)
        .and_then(Value::as_array)
        .map(|owners| {
            owners
                .iter()
                .filter_map(|o| o.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut owners: Vec<String> = Vec::new();
    for id in listed.into_iter().map(|id| id.to_string()) {
        if !owners.contains(&id) {
            owners.push(id);
        }
    }
    if owners.iter().all(|id| known.contains(id)) {
        return None;
    }
    for id in known {
        if !owners.contains(&id) {
            owners.push(id);
        }
    }
    owners.truncate(MAX_KNOWN_OWNERS);
    let mut patch = Metadata::new();
    patch.insert(KNOWN_OWNERS.into(), Value::from(owners));
    Some(patch)
}

/// Whether the connection's sync has listed repositories owned by account `id`.
fn knows_owner(connection: &Connection, id: &str) -> bool {
    connection
        .metadata
        .get(KNOWN_OWNERS)
        .and_then(Value::as_array)
        .is_some_and(|owners| owners.iter().any(|o| o.as_str() == Some(id)))
}

/// The account an app-level delivery (`POST /webhooks/github`, no tenant) belongs to: the GitHub
/// App installation's account when the payload names it (`installation` events:
/// <https://docs.github.com/en/webhooks/webhook-events-and-payloads#installation>), else the
/// organization, else the repository owner. Never the sender: acting on a repository does not
/// make its events the actor's.
pub(super) fn app_account(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let body = parse_payload(header(headers, "content-type"), body).ok()?;
    account_ids(&body)
        .into_iter()
        .filter(|(source, _)| *source != Source::Sender)
        .map(|(_, id)| id)
        .next()
}

/// Where in a payload an account id was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Installation,
    Organization,
    RepositoryOwner,
    Sender,
}

/// The GitHub account ids a payload names, most specific owner first: the App installation's
/// account, the organization, the repository owner, then the sender. Connections store the
/// numeric user id as `external_account_id`.
fn account_ids(body: &Value) -> Vec<(Source, String)> {
    let id = |source, path: &[&str]| {
        path.iter()
            .try_fold(body, |value, key| value.get(key))
            .and_then(Value::as_u64)
            .map(|id| (source, id.to_string()))
    };
    [
        id(Source::Installation, &["installation", "account", "id"]),
        id(Source::Organization, &["organization", "id"]),
        id(Source::RepositoryOwner, &["repository", "owner", "id"]),
        id(Source::Sender, &["sender", "id"]),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::signature::hmac_sha256_hex;
    use crate::crypto::Secret;
    use crate::domain::{now, TenantId};

    fn settings(secret: Option<&str>) -> ProviderSettings {
        ProviderSettings {
            webhook_secret: secret.map(Secret::new),
            ..ProviderSettings::bare("github")
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        crate::connector::signature::header_map(pairs)
    }

    #[test]
    fn github_documented_signature_verifies() {
        // The example of https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let verdict = verify(
            &settings(Some("It's a Secret to Everybody")),
            WebhookUrl::App,
            &headers(&[
                ("x-hub-signature-256", signature),
                ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
                ("x-github-event", "ping"),
            ]),
            b"Hello, World!",
        );
        assert_eq!(
            verdict,
            Ok(Verified::Event {
                dedupe_key: body_digest(b"Hello, World!"),
                event_type: Some("ping".into()),
            })
        );
    }

    #[test]
    fn everything_but_a_good_sha256_signature_is_refused() {
        let secret = "s3cret";
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let good = hmac_sha256_hex(&Secret::new(secret), &[body]);
        let invalid = |h: HeaderMap| {
            matches!(
                verify(&settings(Some(secret)), WebhookUrl::App, &h, body),
                Err(WebhookRejection::InvalidSignature(_))
            )
        };
        let base = [("x-github-delivery", "d"), ("x-github-event", "ping")];
        assert!(invalid(headers(&base)));
        assert!(invalid(headers(&[
            base[0],
            base[1],
            ("x-hub-signature", "sha1=0123")
        ])));
        for bad in [
            format!("sha1={good}"),
            format!("SHA256={good}"),
            good.clone(),
            "sha256=zz".into(),
            format!("sha256={}", &good[..40]),
            format!("sha256={}", "0".repeat(64)),
        ] {
            assert!(
                invalid(headers(&[base[0], base[1], ("x-hub-signature-256", &bad)])),
                "{bad}"
            );
        }
        let signed = format!("sha256={good}");
        assert_eq!(
            verify(
                &settings(None),
                WebhookUrl::App,
                &headers(&[("x-hub-signature-256", &signed)]),
                body
            ),
            Err(WebhookRejection::NotConfigured)
        );
        for missing in ["x-github-delivery", "x-github-event"] {
            let mut h = headers(&[base[0], base[1], ("x-hub-signature-256", &signed)]);
            h.remove(missing);
            assert!(matches!(
                verify(&settings(Some(secret)), WebhookUrl::App, &h, body),
                Err(WebhookRejection::Malformed(_))
            ));
        }
    }

    #[test]
    fn a_tenant_url_takes_only_that_tenants_derived_secret() {
        let configured = "It's a Secret to Everybody";
        let tenant: TenantId = "7b0c9c1e-4c1e-4d0a-9a55-1c2f3e4d5a6b"
            .parse()
            .expect("uuid");
        let other = TenantId(uuid::Uuid::now_v7());
        let derived = tenant_secret(&Secret::new(configured), tenant);
        // HKDF-SHA256 as `connector::derive` documents it, computed independently.
        assert_eq!(
            derived.expose(),
            "be3bdb1a4382d0ff3b925c9db1fdaa84105cd786d68339dcd9c5159f2632f7d7"
        );
        let body = br#"{"zen":"Design for failure."}"#;
        let signed_with = |secret: &Secret| {
            headers(&[
                ("x-github-delivery", "d"),
                ("x-github-event", "ping"),
                (
                    "x-hub-signature-256",
                    &format!("sha256={}", hmac_sha256_hex(secret, &[body])),
                ),
            ])
        };
        let verdict =
            |url, h: HeaderMap| verify(&settings(Some(configured)), url, &h, body).is_ok();
        assert!(verdict(WebhookUrl::Tenant(tenant), signed_with(&derived)));
        assert!(!verdict(WebhookUrl::Tenant(other), signed_with(&derived)));
        assert!(!verdict(WebhookUrl::App, signed_with(&derived)));
        let master = Secret::new(configured);
        assert!(!verdict(WebhookUrl::Tenant(tenant), signed_with(&master)));
        assert!(verdict(WebhookUrl::App, signed_with(&master)));
        let registration = tenant_webhook(&settings(Some(configured)), tenant);
        assert_eq!(
            registration.secret.as_ref().map(Secret::expose),
            Some(derived.expose())
        );
        assert!(tenant_webhook(&settings(None), tenant).secret.is_none());
    }

    #[test]
    fn an_app_level_delivery_belongs_to_the_installation_or_the_owner_never_the_sender() {
        let account =
            |body: Value| app_account(&HeaderMap::new(), &serde_json::to_vec(&body).expect("json"));
        assert_eq!(
            account(serde_json::json!({
                "installation": { "id": 1, "account": { "id": 7 } },
                "repository": { "owner": { "id": 8 } },
                "sender": { "id": 9 }
            })),
            Some("7".into())
        );
        assert_eq!(
            account(
                serde_json::json!({ "repository": { "owner": { "id": 8 } }, "sender": { "id": 9 } })
            ),
            Some("8".into())
        );
        assert_eq!(account(serde_json::json!({ "sender": { "id": 9 } })), None);
        assert_eq!(app_account(&HeaderMap::new(), b"not json"), None);
    }

    fn connection(account: &str) -> Connection {
        Connection::active_for_tests("github", account)
    }

    fn event(body: Value) -> WebhookEvent {
        WebhookEvent {
            tenant_id: TenantId(uuid::Uuid::nil()),
            provider: "github".into(),
            event_type: Some("issues".into()),
            headers: Default::default(),
            body: serde_json::to_vec(&body).expect("json"),
            received_at: now(),
        }
    }

    #[test]
    fn routing_prefers_the_owner_then_the_sender_and_never_guesses() {
        let (org, owner, sender, other) = (
            connection("100"),
            connection("200"),
            connection("300"),
            connection("400"),
        );
        let body = serde_json::json!({
            "organization": { "id": 100, "login": "octo-org" },
            "repository": { "id": 1, "full_name": "octo-org/r", "owner": { "id": 200 } },
            "sender": { "id": 300, "login": "octocat" }
        });
        let all = [other.clone(), sender.clone(), owner.clone(), org.clone()];
        assert_eq!(route(&event(body.clone()), &all), Some(org.id));
        let some = [other.clone(), sender.clone(), owner.clone()];
        assert_eq!(route(&event(body.clone()), &some), Some(owner.id));
        let few = [other.clone(), sender.clone()];
        assert_eq!(route(&event(body.clone()), &few), Some(sender.id));
        assert_eq!(
            route(&event(body.clone()), std::slice::from_ref(&other)),
            None,
            "the only connection, but none of the accounts named is its"
        );
        assert_eq!(route(&event(body), &[other, connection("500")]), None);
        let installation = serde_json::json!({
            "installation": { "id": 9, "account": { "id": 400 } },
            "sender": { "id": 300 }
        });
        let installed = connection("400");
        assert_eq!(
            route(&event(installation), &[sender, installed.clone()]),
            Some(installed.id)
        );
    }

    /// A member's connection whose sync listed the organization's repositories takes the
    /// organization's deliveries; a stranger's repository reaches no one.
    #[test]
    fn an_owner_the_connections_sync_listed_routes_to_it() {
        let mut member = connection("300");
        member
            .metadata
            .insert(KNOWN_OWNERS.into(), serde_json::json!(["100", "300"]));
        let unrelated = connection("400");
        let org_repo = serde_json::json!({
            "organization": { "id": 100 },
            "repository": { "id": 1, "owner": { "id": 100 } },
            "sender": { "id": 900 }
        });
        let candidates = [unrelated.clone(), member.clone()];
        assert_eq!(route(&event(org_repo), &candidates), Some(member.id));
        let stranger = serde_json::json!({
            "repository": { "id": 2, "owner": { "id": 555 } },
            "sender": { "id": 555 }
        });
        assert_eq!(route(&event(stranger.clone()), &candidates), None);
        assert_eq!(route(&event(stranger), std::slice::from_ref(&member)), None);
        // A sender the sync saw as an owner proves nothing about the repository.
        let sent_by_known = serde_json::json!({
            "repository": { "id": 3, "owner": { "id": 555 } },
            "sender": { "id": 100 }
        });
        assert_eq!(
            route(&event(sent_by_known), std::slice::from_ref(&member)),
            None
        );
    }

    #[test]
    fn owners_listed_by_sync_are_added_once_most_recent_first() {
        let mut member = connection("300");
        assert_eq!(
            known_owners_patch(&member.metadata, [100, 100, 300]).map(|p| p[KNOWN_OWNERS].clone()),
            Some(serde_json::json!(["100", "300"]))
        );
        member
            .metadata
            .insert(KNOWN_OWNERS.into(), serde_json::json!(["100", "300"]));
        assert_eq!(known_owners_patch(&member.metadata, [300, 100]), None);
        assert_eq!(
            known_owners_patch(&member.metadata, [7]).map(|p| p[KNOWN_OWNERS].clone()),
            Some(serde_json::json!(["7", "100", "300"]))
        );
        let many = known_owners_patch(&member.metadata, 1000..1300).expect("patch");
        assert_eq!(
            many[KNOWN_OWNERS].as_array().map(Vec::len),
            Some(MAX_KNOWN_OWNERS)
        );
    }

    proptest::proptest! {
        /// Arbitrary deliveries never verify, on either URL, and a signed one stops verifying
        /// when any byte of its body changes; nothing panics, and whatever the body, the
        /// normalizer answers without panicking.
        #[test]
        fn arbitrary_or_altered_deliveries_never_verify(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            signature in "[ -~]{0,80}",
            event in "[a-z_]{0,20}",
            flip in proptest::prelude::any::<usize>(),
            on_tenant_url in proptest::prelude::any::<bool>(),
        ) {
            let url = if on_tenant_url { WebhookUrl::Tenant(TenantId(uuid::Uuid::new_v4())) } else { WebhookUrl::App };
            let settings = settings(Some("s3cret"));
            let forged = headers(&[
                ("x-hub-signature-256", &signature),
                ("x-github-delivery", "d"),
                ("x-github-event", &event),
            ]);
            proptest::prop_assert!(verify(&settings, url, &forged, &body).is_err());
            if !body.is_empty() {
                let secret = match url {
                    WebhookUrl::App => Secret::new("s3cret"),
                    WebhookUrl::Tenant(t) => tenant_secret(&Secret::new("s3cret"), t),
                };
                let good = format!("sha256={}", hmac_sha256_hex(&secret, &[&body]));
                let signed = headers(&[
                    ("x-hub-signature-256", &good),
                    ("x-github-delivery", "d"),
                    ("x-github-event", "issues"),
                ]);
                proptest::prop_assert!(verify(&settings, url, &signed, &body).is_ok());
                let mut altered = body.clone();
                let at = flip % altered.len();
                altered[at] ^= 0x01;
                proptest::prop_assert!(verify(&settings, url, &signed, &altered).is_err());
            }
            let stored = WebhookEvent {
                tenant_id: TenantId(uuid::Uuid::new_v4()),
                provider: "github".into(),
                event_type: Some(event),
                headers: serde_json::Map::new(),
                body,
                received_at: now(),
            };
            let _ = super::super::normalize::normalize(&stored);
        }
    }
}
