//! Token endpoint responses: the RFC 6749 §5.1 shape, read from JSON or form encoding.

use chrono::Duration;
use serde_json::{Map, Value};

use super::ProviderCallError;
use crate::crypto::Secret;
use crate::domain::{now, Timestamp};

/// Tokens from a token endpoint.
#[derive(Clone, Debug)]
pub struct TokenSet {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub expires_at: Option<Timestamp>,
    /// Scopes granted, when the provider says.
    pub scopes: Option<Vec<String>>,
    /// The rest of the response, for providers that name the account in it.
    pub extra: Map<String, Value>,
}

/// Reads a standard token response; `error` members (RFC 6749 §5.2), even with status 200,
/// are failures.
pub fn standard_token_response(
    status: u16,
    body: &Map<String, Value>,
) -> Result<TokenSet, ProviderCallError> {
    if let Some(error) = body.get("error").and_then(Value::as_str) {
        let description = body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        let message = format!("{error} {description}").trim().to_string();
        return Err(match error {
            "invalid_grant" | "bad_verification_code" | "bad_refresh_token" => {
                ProviderCallError::InvalidGrant(message)
            }
            _ if status >= 500 => ProviderCallError::Unavailable(message),
            _ => ProviderCallError::Rejected(message),
        });
    }
    if status >= 500 {
        return Err(ProviderCallError::Unavailable(format!(
            "token endpoint answered {status}"
        )));
    }
    if status >= 400 {
        return Err(ProviderCallError::Rejected(format!(
            "token endpoint answered {status}"
        )));
    }
    let access_token = body
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderCallError::Rejected("token response has no access_token".into()))?;
    Ok(TokenSet {
        access_token: Secret::new(access_token),
        refresh_token: body
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        expires_at: expires_at(body.get("expires_in")),
        scopes: body.get("scope").and_then(Value::as_str).map(split_scopes),
        extra: body
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "access_token" | "refresh_token" | "id_token"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// The longest token lifetime believed. A provider's `expires_in` is a number from the network:
/// `1e13` or `i64::MAX` seconds would overflow the clock arithmetic, so anything longer counts
/// as this long (the token is then refreshed early, which is harmless).
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 366 * 24 * 3600;

/// `expires_in` as a number or a numeric string (form-encoded responses carry strings).
/// Zero, negative or unreadable lifetimes give `None`; fractions are rounded down and lifetimes
/// beyond [`MAX_TOKEN_LIFETIME_SECS`] are clamped to it, so the result never panics.
pub(crate) fn expires_at(value: Option<&Value>) -> Option<Timestamp> {
    expires_at_from(now(), value)
}

fn expires_at_from(at: Timestamp, value: Option<&Value>) -> Option<Timestamp> {
    let seconds = match value? {
        Value::Number(n) => lifetime_secs(n.as_f64()?)?,
        Value::String(s) => lifetime_secs(s.trim().parse::<f64>().ok()?)?,
        _ => return None,
    };
    at.checked_add_signed(Duration::try_seconds(seconds)?)
}

/// Whole seconds of a positive lifetime, clamped to [`MAX_TOKEN_LIFETIME_SECS`]; `NaN`,
/// infinities and non-positive values give `None`.
fn lifetime_secs(seconds: f64) -> Option<i64> {
    if !seconds.is_finite() || seconds < 1.0 {
        return None;
    }
    // The clamp happens in f64, before the cast, so the cast is always in range.
    Some(seconds.min(MAX_TOKEN_LIFETIME_SECS as f64) as i64)
}

/// Scopes separated by spaces or commas.
pub(crate) fn split_scopes(text: &str) -> Vec<String> {
    text.split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses a response body as JSON, or as a form when it is not JSON.
pub(crate) fn body_to_map(body: &[u8]) -> Result<Map<String, Value>, ProviderCallError> {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        return Ok(map);
    }
    let map: Map<String, Value> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    if map.contains_key("access_token") || map.contains_key("error") {
        Ok(map)
    } else {
        Err(ProviderCallError::Rejected(
            "token response is neither JSON nor a form".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn a_standard_response_gives_tokens_and_expiry() {
        let t = standard_token_response(
            200,
            &map(json!({"access_token": "a", "refresh_token": "r", "expires_in": 3600, "scope": "repo user"})),
        )
        .expect("tokens");
        assert_eq!(t.access_token.expose(), "a");
        assert_eq!(t.refresh_token.expect("refresh").expose(), "r");
        assert!(t.expires_at.expect("expiry") > now());
        assert_eq!(t.scopes.expect("scopes"), ["repo", "user"]);
        assert!(!t.extra.contains_key("access_token"));
    }

    #[test]
    fn an_error_in_a_200_is_a_failure() {
        let err = standard_token_response(200, &map(json!({"error": "bad_verification_code"})))
            .unwrap_err();
        assert!(matches!(err, ProviderCallError::InvalidGrant(_)));
        let err = standard_token_response(200, &map(json!({"token_type": "bearer"}))).unwrap_err();
        assert!(matches!(err, ProviderCallError::Rejected(_)));
    }

    #[test]
    fn absurd_lifetimes_are_clamped_and_never_panic() {
        let at = now();
        let max = at + Duration::seconds(MAX_TOKEN_LIFETIME_SECS);
        let huge = [
            json!(1e13),
            json!(1e300),
            json!(i64::MAX),
            json!(u64::MAX),
            json!("9223372036854775807"),
            json!("99999999999999999999999999999999"),
            json!("1e13"),
        ];
        for value in huge {
            assert_eq!(expires_at_from(at, Some(&value)), Some(max), "{value}");
        }
        for value in [
            json!(0),
            json!(-1),
            json!(i64::MIN),
            json!(-1e13),
            json!(0.5),
            json!("-5"),
            json!("soon"),
            json!("NaN"),
            json!("inf"),
            json!(true),
            json!(null),
        ] {
            assert_eq!(expires_at_from(at, Some(&value)), None, "{value}");
        }
        assert_eq!(
            expires_at_from(at, Some(&json!(3600.9))),
            Some(at + Duration::seconds(3600))
        );
        assert_eq!(
            expires_at_from(at, Some(&json!(" 60 "))),
            Some(at + Duration::seconds(60))
        );
        // A response carrying one is still read, with the clamped expiry.
        let t =
            standard_token_response(200, &map(json!({"access_token": "a", "expires_in": 1e13})))
                .expect("tokens");
        assert!(
            t.expires_at.expect("expiry") <= now() + Duration::seconds(MAX_TOKEN_LIFETIME_SECS)
        );
    }

    #[test]
    fn form_encoded_bodies_are_read() {
        let m = body_to_map(b"access_token=abc&scope=repo%2Cuser&token_type=bearer").expect("form");
        assert_eq!(m["access_token"], "abc");
        assert!(body_to_map(b"<html>oops</html>").is_err());
    }
}
