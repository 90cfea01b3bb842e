//! Jira webhook deliveries to `POST /webhooks/jira/{tenant_id}`: verification and routing.
//!
//! Two kinds arrive there (<https://developer.atlassian.com/cloud/jira/platform/webhooks/>):
//!
//! - **Dynamic webhooks** the service registers for each connection (see `subscription`):
//!   `Authorization: Bearer <JWT>`, signed HS256 with the OAuth app's client secret
//!   (<https://developer.atlassian.com/cloud/jira/platform/webhooks/#webhooks-authentication-for-oauth-2-0-apps>).
//!   The algorithm is pinned: a header naming anything but `HS256` (`none`, `RS256`, `HS512`)
//!   is refused before any key is used. `exp` and `nbf`, when present, are checked with a
//!   minute of leeway; `aud`, when present, must name the app's client id.
//! - **Admin webhooks** a Jira administrator registers with a secret
//!   (<https://developer.atlassian.com/cloud/jira/platform/webhooks/#secure-admin-webhooks>):
//!   `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>`. The secret is the tenant's
//!   own, derived from `POBLYSH_JIRA_WEBHOOK_SECRET` (see [`tenant_secret`]) and answered by
//!   `GET /providers/jira/webhook`, so a delivery signed for one tenant never verifies on
//!   another tenant's URL.
//!
//! `X-Atlassian-Webhook-Identifier` is the same across retries of one delivery: the dedupe key.
//! Jira signs no timestamp in `X-Hub-Signature`, so redeliveries are caught by that key.

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use url::Url;

use super::api::{cloud_id, SITE_URL};
use super::normalize::parse_body;
use crate::connector::derive::derive_secret;
use crate::connector::signature::{header, hmac_sha256_hex_matches};
use crate::connector::{ProviderSettings, TenantWebhook, WebhookUrl};
use crate::connector::{Verified, WebhookEvent, WebhookRejection};
use crate::crypto::Secret;
use crate::domain::{now, Connection, ConnectionId, TenantId};

/// Headers carrying a delivery's proof (never stored with the event; `Authorization` is never
/// stored anyway).
pub(super) const SECRET_HEADERS: &[&str] = &["x-hub-signature"];

/// The events subscribed to, by dynamic and admin webhooks alike.
pub(super) const EVENTS: &[&str] = &[
    "jira:issue_created",
    "jira:issue_updated",
    "jira:issue_deleted",
    "comment_created",
    "comment_updated",
];

/// The connection metadata member listing the ids of its dynamic webhooks.
pub(super) const WEBHOOK_IDS: &str = "webhook_ids";

/// The longest token read.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Clock skew allowed on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: i64 = 60;

/// The secret of one tenant's URL for admin webhooks: derived from the configured secret for
/// the purpose `jira-webhook` and the tenant id (lower-case hyphenated form).
pub(super) fn tenant_secret(secret: &Secret, tenant: TenantId) -> Secret {
    derive_secret(secret, "jira-webhook", &[&tenant.to_string()])
}

/// What an administrator registers in Jira for one tenant (admin webhooks).
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

fn invalid(why: impl Into<String>) -> WebhookRejection {
    WebhookRejection::InvalidSignature(why.into())
}

/// Verifies a delivery (see the module documentation).
/// How a delivery proves itself, as far as its headers alone tell.
pub(super) enum Proof<'a> {
    /// A dynamic webhook's token, verified in full (it signs no body).
    Token,
    /// An admin webhook's HMAC of the body, with the tenant's secret, still to be checked.
    BodyHmac { secret: Secret, hex: &'a str },
}

/// What the headers alone can settle, before the body is read: a dynamic webhook's token is
/// verified in full; an admin webhook's signature must be `sha256=` and 64 hex digits, with the
/// webhook secret configured.
pub(super) fn precheck<'a>(
    settings: &ProviderSettings,
    url: WebhookUrl,
    headers: &'a HeaderMap,
) -> Result<Proof<'a>, WebhookRejection> {
    let WebhookUrl::Tenant(tenant) = url else {
        // Jira deliveries name no tenant of ours: only tenant URLs are registered.
        return Err(WebhookRejection::NotConfigured);
    };
    if let Some(authorization) = header(headers, "authorization") {
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| invalid("the Authorization header is not a bearer token"))?;
        let secret = settings
            .client_secret
            .as_ref()
            .ok_or(WebhookRejection::NotConfigured)?;
        verify_jwt(
            secret,
            settings.client_id.as_deref(),
            token,
            now().timestamp(),
        )?;
        Ok(Proof::Token)
    } else if let Some(signature) = header(headers, "x-hub-signature") {
        let configured = settings
            .webhook_secret
            .as_ref()
            .ok_or(WebhookRejection::NotConfigured)?;
        let hex = signature
            .strip_prefix("sha256=")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| invalid("X-Hub-Signature must be sha256= and 64 hex digits"))?;
        Ok(Proof::BodyHmac {
            secret: tenant_secret(configured, tenant),
            hex,
        })
    } else {
        Err(invalid(
            "neither an Authorization bearer token nor an X-Hub-Signature was sent",
        ))
    }
}

pub(super) fn verify(
    settings: &ProviderSettings,
    url: WebhookUrl,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, WebhookRejection> {
    if let Proof::BodyHmac { secret, hex } = precheck(settings, url, headers)? {
        if !hmac_sha256_hex_matches(&secret, &[body], hex) {
            return Err(invalid("the signature does not match the body"));
        }
    }
    let identifier = header(headers, "x-atlassian-webhook-identifier")
        .map(str::trim)
        .filter(|d| !d.is_empty() && d.len() <= 200)
        .ok_or_else(|| {
            WebhookRejection::Malformed(
                "the X-Atlassian-Webhook-Identifier header is missing".into(),
            )
        })?;
    let event_type = parse_body(body).ok().and_then(|b| {
        b.get("webhookEvent")
            .and_then(Value::as_str)
            .filter(|e| e.len() <= 100)
            .map(str::to_string)
    });
    Ok(Verified::Event {
        dedupe_key: identifier.to_string(),
        event_type,
    })
}

/// Checks a dynamic webhook's token at `now` (Unix seconds).
pub(super) fn verify_jwt(
    secret: &Secret,
    client_id: Option<&str>,
    token: &str,
    now: i64,
) -> Result<(), WebhookRejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("the token is too large"));
    }
    let alg = header_alg(token)?;
    if alg != "HS256" {
        let shown: String = alg
            .chars()
            .take(16)
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect();
        return Err(invalid(format!(
            "the token's algorithm {shown:?} is not HS256"
        )));
    }
    // The library checks the signature with the algorithm pinned; the claims are checked below.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let key = DecodingKey::from_secret(secret.expose().as_bytes());
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|_| invalid("the token's signature does not verify"))?
        .claims;
    let seconds = |name: &str| -> Result<Option<i64>, WebhookRejection> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| invalid(format!("the token's {name} is not a number"))),
        }
    };
    if let Some(exp) = seconds("exp")? {
        if now > exp.saturating_add(LEEWAY_SECS) {
            return Err(invalid("the token has expired"));
        }
    }
    if let Some(nbf) = seconds("nbf")? {
        if now.saturating_add(LEEWAY_SECS) < nbf {
            return Err(invalid("the token is not valid yet"));
        }
    }
    if let Some(aud) = claims.get("aud") {
        let names = match aud {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !client_id.is_some_and(|id| names.contains(&id)) {
            return Err(invalid("the token is meant for another audience"));
        }
    }
    Ok(())
}

/// The `alg` of a compact JWS header.
fn header_alg(token: &str) -> Result<String, WebhookRejection> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("the token is not three dot-separated parts"));
    };
    let json = URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| invalid("the token's header is not base64url"))?;
    let header: Value =
        serde_json::from_slice(&json).map_err(|_| invalid("the token's header is not JSON"))?;
    if header.get("crit").is_some() {
        return Err(invalid("the token names critical extensions"));
    }
    header
        .get("alg")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| invalid("the token's header names no algorithm"))
}

/// The connection a delivery belongs to: the one whose dynamic webhook it matched
/// (`matchedWebhookIds`), else the one whose site its `self` links point into (the site's host,
/// or the cloud id of a gateway link). Anything else stays unmatched.
pub(super) fn route(event: &WebhookEvent, connections: &[Connection]) -> Option<ConnectionId> {
    let body = parse_body(&event.body).ok()?;
    let matched: Vec<String> = body
        .get("matchedWebhookIds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(id_text)
        .collect();
    if !matched.is_empty() {
        let owner = connections.iter().find(|c| {
            c.metadata
                .get(WEBHOOK_IDS)
                .and_then(Value::as_array)
                .is_some_and(|ids| {
                    ids.iter()
                        .filter_map(id_text)
                        .any(|id| matched.contains(&id))
                })
        });
        if let Some(owner) = owner {
            return Some(owner.id);
        }
    }
    for link in self_links(&body) {
        let Ok(url) = Url::parse(link) else { continue };
        let owner = connections.iter().find(|c| owns(c, &url));
        if let Some(owner) = owner {
            return Some(owner.id);
        }
    }
    None
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The `self` links of the payload's issue, comment and user.
fn self_links(body: &Value) -> Vec<&str> {
    [
        "/issue/self",
        "/comment/self",
        "/user/self",
        "/issue/fields/project/self",
    ]
    .iter()
    .filter_map(|p| body.pointer(p).and_then(Value::as_str))
    .collect()
}

/// Whether `link` points into `connection`'s site.
fn owns(connection: &Connection, link: &Url) -> bool {
    let mut segments = link.path_segments().into_iter().flatten();
    if let (Some("ex"), Some("jira"), Some(cloud)) =
        (segments.next(), segments.next(), segments.next())
    {
        return cloud == cloud_id(connection);
    }
    let site = connection
        .metadata
        .get(SITE_URL)
        .and_then(Value::as_str)
        .and_then(|s| Url::parse(s).ok());
    site.is_some_and(|site| {
        site.host_str().is_some()
            && site.host_str().map(str::to_ascii_lowercase)
                == link.host_str().map(str::to_ascii_lowercase)
            && site.port_or_known_default() == link.port_or_known_default()
    })
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const CLIENT_SECRET: &str = "jira-client-secret-value";

    fn sign(alg: Algorithm, claims: &Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("signs")
    }

    fn check(token: &str, at: i64) -> Result<(), WebhookRejection> {
        verify_jwt(&Secret::new(CLIENT_SECRET), Some("client-id"), token, at)
    }

    #[test]
    fn a_good_hs256_token_passes_and_claims_are_checked() {
        let at = 1_769_821_200;
        assert_eq!(
            check(&sign(Algorithm::HS256, &json!({}), CLIENT_SECRET), at),
            Ok(())
        );
        let good = json!({"exp": at + 30, "iat": at, "aud": "client-id", "iss": "jira"});
        assert_eq!(
            check(&sign(Algorithm::HS256, &good, CLIENT_SECRET), at),
            Ok(())
        );
        let aud_list = json!({"aud": ["other", "client-id"]});
        assert_eq!(
            check(&sign(Algorithm::HS256, &aud_list, CLIENT_SECRET), at),
            Ok(())
        );
        for bad in [
            json!({"exp": at - 61}),
            json!({"nbf": at + 61}),
            json!({"aud": "someone-else"}),
            json!({"aud": 7}),
            json!({"exp": "tomorrow"}),
        ] {
            assert!(
                check(&sign(Algorithm::HS256, &bad, CLIENT_SECRET), at).is_err(),
                "{bad}"
            );
        }
        assert!(check(&sign(Algorithm::HS256, &json!({}), "another-secret"), at).is_err());
    }

    #[test]
    fn every_other_algorithm_is_refused_none_included() {
        let at = 1_769_821_200;
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            assert!(check(&sign(alg, &json!({}), CLIENT_SECRET), at).is_err());
        }
        let body = URL_SAFE_NO_PAD.encode(b"{}");
        for header in [
            r#"{"alg":"none"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"HS256","crit":["b64"]}"#,
        ] {
            let head = URL_SAFE_NO_PAD.encode(header.as_bytes());
            for sig in ["", "AAAA"] {
                assert!(
                    check(&format!("{head}.{body}.{sig}"), at).is_err(),
                    "{header}"
                );
            }
        }
        // An HS256 header over a body signed with another algorithm's output.
        let hs512 = sign(Algorithm::HS512, &json!({}), CLIENT_SECRET);
        let mut parts: Vec<&str> = hs512.split('.').collect();
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        parts[0] = &head;
        assert!(check(&parts.join("."), at).is_err());
    }

    fn connection(cloud: &str, site: &str, webhook_ids: Value) -> Connection {
        let mut c = Connection::active_for_tests("jira", cloud);
        c.metadata.insert(SITE_URL.into(), json!(site));
        c.metadata.insert(WEBHOOK_IDS.into(), webhook_ids);
        c
    }

    fn event(body: Value) -> WebhookEvent {
        WebhookEvent {
            tenant_id: TenantId(uuid::Uuid::nil()),
            provider: "jira".into(),
            event_type: None,
            headers: Map::new(),
            body: serde_json::to_vec(&body).expect("json"),
            received_at: now(),
        }
    }

    #[test]
    fn deliveries_route_by_matched_webhook_then_by_site_and_otherwise_nowhere() {
        let a = connection("cloud-a", "https://a.atlassian.net", json!([1000]));
        let b = connection("cloud-b", "https://b.atlassian.net", json!(["2000"]));
        let both = [a.clone(), b.clone()];
        let issue = |link: &str| json!({"issue": {"self": link}});
        let mut matched = issue("https://a.atlassian.net/rest/api/2/issue/1");
        matched["matchedWebhookIds"] = json!([2000]);
        assert_eq!(route(&event(matched), &both), Some(b.id));
        assert_eq!(
            route(
                &event(issue("https://B.atlassian.net/rest/api/2/issue/1")),
                &both
            ),
            Some(b.id)
        );
        assert_eq!(
            route(
                &event(issue(
                    "https://api.atlassian.com/ex/jira/cloud-a/rest/api/3/issue/1"
                )),
                &both
            ),
            Some(a.id)
        );
        for nowhere in [
            issue("https://c.atlassian.net/rest/api/2/issue/1"),
            issue("https://api.atlassian.com/ex/jira/cloud-c/rest/api/3/issue/1"),
            issue("https://a.atlassian.net:8443/rest/api/2/issue/1"),
            json!({"matchedWebhookIds": [3000]}),
            json!({}),
        ] {
            assert_eq!(route(&event(nowhere.clone()), &both), None, "{nowhere}");
        }
        // Even a tenant's only connection gets nothing about another site.
        assert_eq!(
            route(
                &event(issue("https://c.atlassian.net/rest/api/2/issue/1")),
                &[a]
            ),
            None
        );
        assert_eq!(
            route(
                &WebhookEvent {
                    body: b"[]".to_vec(),
                    ..event(json!({}))
                },
                &both
            ),
            None
        );
    }

    #[test]
    fn only_tenant_urls_with_an_identifier_are_accepted() {
        let settings = ProviderSettings {
            client_secret: Some(Secret::new(CLIENT_SECRET)),
            ..ProviderSettings::bare("jira")
        };
        let token = sign(Algorithm::HS256, &json!({}), CLIENT_SECRET);
        let bearer = format!("Bearer {token}");
        let with = |pairs: &[(&'static str, &str)]| crate::connector::signature::header_map(pairs);
        let tenant = WebhookUrl::Tenant(TenantId(uuid::Uuid::nil()));
        let body = br#"{"webhookEvent":"jira:issue_created"}"#;
        assert_eq!(
            verify(
                &settings,
                tenant,
                &with(&[
                    ("authorization", &bearer),
                    ("x-atlassian-webhook-identifier", "d-1")
                ]),
                body
            ),
            Ok(Verified::Event {
                dedupe_key: "d-1".into(),
                event_type: Some("jira:issue_created".into())
            })
        );
        assert!(matches!(
            verify(
                &settings,
                tenant,
                &with(&[("authorization", &bearer)]),
                body
            ),
            Err(WebhookRejection::Malformed(_))
        ));
        assert_eq!(
            verify(
                &settings,
                WebhookUrl::App,
                &with(&[
                    ("authorization", &bearer),
                    ("x-atlassian-webhook-identifier", "d-1")
                ]),
                body
            ),
            Err(WebhookRejection::NotConfigured)
        );
        // Admin-webhook signatures need the webhook secret configured.
        assert_eq!(
            verify(
                &settings,
                tenant,
                &with(&[
                    ("x-hub-signature", "sha256=00"),
                    ("x-atlassian-webhook-identifier", "d-1")
                ]),
                body
            ),
            Err(WebhookRejection::NotConfigured)
        );
    }

    proptest! {
        /// Arbitrary tokens never panic and never verify.
        #[test]
        fn arbitrary_tokens_are_refused(token in "[A-Za-z0-9_.=-]{0,300}") {
            prop_assert!(check(&token, 1_769_821_200).is_err());
        }

        /// Changing any one character of a good token makes it fail.
        #[test]
        fn any_one_character_change_is_refused(at in 0usize..1000, c in "[A-Za-z0-9_-]") {
            let token = sign(Algorithm::HS256, &json!({"exp": 1_769_821_260}), CLIENT_SECRET);
            let i = at % token.len();
            let replacement = c.chars().next().expect("a char");
            prop_assume!(token.as_bytes()[i] != replacement as u8 && token.as_bytes()[i] != b'.');
            let mut altered: Vec<char> = token.chars().collect();
            altered[i] = replacement;
            let altered: String = altered.into_iter().collect();
            // Base64url's last character may carry unused bits: the same bytes can verify.
            let same_bytes = altered.split('.').zip(token.split('.')).all(|(a, b)| {
                URL_SAFE_NO_PAD.decode(a).ok().is_some_and(|x| URL_SAFE_NO_PAD.decode(b).ok() == Some(x))
            });
            prop_assume!(!same_bytes);
            prop_assert!(check(&altered, 1_769_821_200).is_err());
        }
    }
}
