//! Signature checks shared by connectors: HMAC-SHA256 over the raw bytes, compared in
//! constant time, and replay windows for providers that sign a timestamp.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::WebhookRejection;
use crate::crypto::Secret;

/// A request header's value as text; `None` when absent or not visible ASCII.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header map of `pairs`, for tests that play a provider's delivery.
#[cfg(test)]
pub(crate) fn header_map(pairs: &[(&'static str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            let value = value.parse().expect("header value");
            (axum::http::HeaderName::from_static(name), value)
        })
        .collect()
}

/// Whether `presented_hex` is the HMAC-SHA256 of `parts` (concatenated) under `secret`.
/// Malformed hex, wrong length and wrong value are all just "no", decided in constant time.
pub fn hmac_sha256_hex_matches(secret: &Secret, parts: &[&[u8]], presented_hex: &str) -> bool {
    let Some(presented) = decode_hex(presented_hex) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&presented).is_ok()
}

/// The HMAC-SHA256 of `parts` as lower-case hex (for signing test deliveries).
pub fn hmac_sha256_hex(secret: &Secret, parts: &[&[u8]]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `presented` is the shared token `secret`, for schemes that echo a token instead of
/// signing. Compares digests in constant time, so neither the value nor its length leaks.
pub fn token_matches(secret: &Secret, presented: &str) -> bool {
    let expected = Sha256::digest(secret.expose().as_bytes());
    let presented = Sha256::digest(presented.as_bytes());
    expected.ct_eq(&presented).into()
}

/// Refuses a signed Unix timestamp further than `window_secs` from now, either way.
pub fn check_replay_window(timestamp: &str, window_secs: i64) -> Result<(), WebhookRejection> {
    let sent: i64 = timestamp.trim().parse().map_err(|_| {
        WebhookRejection::InvalidSignature("the signed timestamp is not a number".into())
    })?;
    let now = crate::domain::now().timestamp();
    // Any i64 may come: a gap that does not even fit is outside every window.
    let gap = now.checked_sub(sent).and_then(i64::checked_abs);
    if gap.is_none_or(|gap| gap > window_secs) {
        return Err(WebhookRejection::InvalidSignature(
            "the signed timestamp is outside the replay window".into(),
        ));
    }
    Ok(())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matching_hmac_passes_and_everything_else_fails() {
        let secret = Secret::new("It's a Secret to Everybody");
        // GitHub's documented example: https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        let expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(hmac_sha256_hex(&secret, &[b"Hello, World!"]), expected);
        assert!(hmac_sha256_hex_matches(
            &secret,
            &[b"Hello, World!"],
            expected
        ));
        assert!(!hmac_sha256_hex_matches(
            &secret,
            &[b"Hello, World?"],
            expected
        ));
        for bad in [
            "",
            "zz",
            &expected[..62],
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1Z",
        ] {
            assert!(
                !hmac_sha256_hex_matches(&secret, &[b"Hello, World!"], bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_the_very_token_matches() {
        let secret = Secret::new("channel-token-0123456789");
        assert!(token_matches(&secret, "channel-token-0123456789"));
        for other in [
            "",
            "channel-token-012345678",
            "channel-token-01234567890",
            "CHANNEL-TOKEN-0123456789",
        ] {
            assert!(!token_matches(&secret, other), "{other:?}");
        }
    }

    #[test]
    fn timestamps_outside_the_window_are_refused() {
        let now = crate::domain::now().timestamp();
        assert!(check_replay_window(&now.to_string(), 300).is_ok());
        assert!(check_replay_window(&(now - 301).to_string(), 300).is_err());
        assert!(check_replay_window(&(now + 301).to_string(), 300).is_err());
        assert!(check_replay_window("soon", 300).is_err());
    }
}
