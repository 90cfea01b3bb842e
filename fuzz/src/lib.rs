//! What the fuzz targets share: reading an input as a webhook delivery, running a connector's
//! verifier and normalizer on it through the library's public API, and independent checks of
//! what a genuine signature is (computed here with `hmac` and `sha2`, not with the service's
//! own verification code).
//!
//! An input is a delivery written as text: header lines `name: value`, an empty line, then the
//! body's bytes. An input without an empty line is all body.

use std::future::Future;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use connectors::connector::keys::{KeyCache, KeyCachePolicy};
use connectors::connector::{
    http_client, Connector, ProviderSettings, Verified, WebhookEvent, WebhookRejection,
    WebhookRequest, WebhookUrl,
};
use connectors::crypto::Secret;
use connectors::domain::TenantId;
use connectors::providers::CATALOGUE;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

/// The tenant whose URL tenant-scoped deliveries arrive at.
pub const TENANT: TenantId = TenantId(uuid::Uuid::from_u128(
    0x0193_a1b2_c3d4_7e5f_8a9b_0c1d_2e3f_4a5b,
));

/// This service's public base URL, as verifiers see it.
pub const PUBLIC_BASE_URL: &str = "https://connectors.example.com/";

/// A delivery read from fuzzer input.
pub struct Delivery<'a> {
    pub headers: HeaderMap,
    pub body: &'a [u8],
}

/// Reads `data` as a delivery (see the crate documentation). Lines that are not valid headers
/// are skipped, as an HTTP server would have refused them before any verifier ran.
pub fn delivery(data: &[u8]) -> Delivery<'_> {
    let Some(split) = data.windows(2).position(|w| w == b"\n\n") else {
        return Delivery {
            headers: HeaderMap::new(),
            body: data,
        };
    };
    let mut headers = HeaderMap::new();
    for line in data[..split].split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    Delivery {
        headers,
        body: &data[split + 2..],
    }
}

/// The connector of `slug` in the catalogue.
pub fn connector(slug: &str) -> &'static dyn Connector {
    CATALOGUE
        .iter()
        .copied()
        .find(|c| c.descriptor().slug == slug)
        .unwrap_or_else(|| panic!("no provider {slug} in the catalogue"))
}

/// Settings of `slug` with this webhook secret.
pub fn settings(slug: &'static str, webhook_secret: &str) -> ProviderSettings {
    ProviderSettings {
        webhook_secret: Some(Secret::new(webhook_secret)),
        ..ProviderSettings::bare(slug)
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    static KEYS: KeyCache = KeyCache::new(
        http_client(Duration::from_secs(5)),
        KeyCachePolicy::default(),
    );
}

/// Runs `future` to completion on this thread's runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// Runs `slug`'s verifier on a delivery to `url`, as the webhook route does after its precheck
/// passed (the precheck's verdict must agree: whatever it refuses, the verifier refuses too).
pub fn verify(
    connector: &dyn Connector,
    settings: &ProviderSettings,
    url: WebhookUrl,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Verified, WebhookRejection> {
    let public_base_url = url::Url::parse(PUBLIC_BASE_URL).expect("a URL");
    let prechecked = connector.precheck_webhook(settings, url, headers);
    let keys = KEYS.with(KeyCache::clone);
    let verified = block_on(connector.verify_webhook(WebhookRequest {
        settings,
        url,
        headers,
        body,
        keys: &keys,
        public_base_url: &public_base_url,
    }));
    if prechecked.is_err() {
        assert!(
            verified.is_err(),
            "the precheck refused a delivery the verifier accepts"
        );
    }
    verified
}

/// A stored event of `slug` for the delivery, its headers as the inbox keeps them.
pub fn event(
    slug: &str,
    headers: &HeaderMap,
    body: &[u8],
    event_type: Option<String>,
) -> WebhookEvent {
    let headers = headers
        .iter()
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            Some((name.as_str().to_string(), serde_json::Value::from(value)))
        })
        .collect();
    WebhookEvent {
        tenant_id: TENANT,
        provider: slug.to_string(),
        event_type,
        headers,
        body: body.to_vec(),
        received_at: connectors::domain::now(),
    }
}

/// A header's value as text.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Sets `name` to `value` (which must be a valid header value).
pub fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    let value = HeaderValue::from_str(value).expect("a header value");
    headers.insert(HeaderName::from_static(name), value);
}

/// The HMAC-SHA256 of `parts` under `key`.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `presented` (after `prefix`) is the hex of `expected`, in either case.
pub fn hex_signature_is(presented: Option<&str>, prefix: &str, expected: &[u8]) -> bool {
    presented
        .and_then(|p| p.strip_prefix(prefix))
        .is_some_and(|p| p.eq_ignore_ascii_case(&hex(expected)))
}

/// Whether `token` is a compact JWS whose signature is the HMAC-SHA256 of its signing input
/// under `key` (decoding the signature leniently, so only its value counts).
pub fn hs256_signature_is_genuine(token: &str, key: &[u8]) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let &[head, claims, signature] = parts.as_slice() else {
        return false;
    };
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let Ok(presented) = lenient.decode(signature) else {
        return false;
    };
    presented == hmac(key, &[head.as_bytes(), b".", claims.as_bytes()])
}

/// A compact HS256 JWS of `claims` under `key`.
pub fn hs256_token(claims: &serde_json::Value, key: &[u8]) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = hmac(key, &[head.as_bytes(), b".", body.as_bytes()]);
    format!("{head}.{body}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Whether a verifier's refusal is one of a bad signature (not of the body or the set-up).
pub fn refused_signature(result: &Result<Verified, WebhookRejection>) -> bool {
    matches!(result, Err(WebhookRejection::InvalidSignature(_)))
}

/// Flips one bit of `body` chosen by its own bytes, so a signed body is altered.
pub fn altered(body: &[u8]) -> Option<Vec<u8>> {
    if body.is_empty() {
        return None;
    }
    let mut altered = body.to_vec();
    let at = body.iter().map(|b| usize::from(*b)).sum::<usize>() % body.len();
    altered[at] ^= 0x01;
    Some(altered)
}

/// The current Unix time as text.
pub fn now_text() -> String {
    connectors::domain::now().timestamp().to_string()
}

/// Jira's settings: the OAuth app (whose secret signs dynamic webhooks' tokens) and the
/// secret admin webhooks' per-tenant secrets derive from.
pub mod jira {
    use super::*;

    pub const CLIENT_ID: &str = "jira-client-id";
    pub const CLIENT_SECRET: &str = "jira-client-secret";
    pub const WEBHOOK_SECRET: &str = "jira-webhook-secret";

    pub fn settings() -> ProviderSettings {
        ProviderSettings {
            client_id: Some(CLIENT_ID.into()),
            client_secret: Some(Secret::new(CLIENT_SECRET)),
            webhook_secret: Some(Secret::new(WEBHOOK_SECRET)),
            ..ProviderSettings::bare("jira")
        }
    }

    /// The admin webhook secret of [`TENANT`]'s URL.
    pub fn tenant_secret(settings: &ProviderSettings) -> Secret {
        connector("jira")
            .tenant_webhook(settings, TENANT)
            .and_then(|w| w.secret)
            .expect("Jira derives a secret per tenant")
    }

    /// Checks that a delivery that verified carries a genuine proof: an HS256 token signed with
    /// the client secret when it has an `Authorization` header, else the body's HMAC under the
    /// tenant's secret.
    pub fn assert_genuine(settings: &ProviderSettings, headers: &HeaderMap, body: &[u8]) {
        if let Some(authorization) = headers.get("authorization") {
            let token = authorization
                .to_str()
                .ok()
                .and_then(|a| {
                    a.strip_prefix("Bearer ")
                        .or_else(|| a.strip_prefix("bearer "))
                })
                .map(str::trim)
                .expect("a verified delivery has a bearer token");
            assert!(
                hs256_signature_is_genuine(token, CLIENT_SECRET.as_bytes()),
                "a token verified without the client secret's signature"
            );
        } else {
            let expected = hmac(tenant_secret(settings).expose().as_bytes(), &[body]);
            assert!(
                hex_signature_is(header(headers, "x-hub-signature"), "sha256=", &expected),
                "a delivery verified without the body's signature"
            );
        }
    }
}
