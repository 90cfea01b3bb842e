//! Calling a Google REST API (Drive v3, Calendar v3), shared by the Google providers: where
//! the APIs live, and how Google's answers map to [`ProviderCallError`].
//!
//! Base URL: the APIs live under `https://www.googleapis.com` (`/drive/v3`, `/calendar/v3`, as
//! each discovery document's `rootUrl` and `servicePath` say). `POBLYSH_<SLUG>_API_BASE_URL`
//! replaces that host (and any path prefix), the service path being joined onto it, so one
//! stand-in server plays every Google API.
//!
//! Errors: Google answers failures with its JSON error body
//! (<https://cloud.google.com/apis/design/errors#http_mapping>, and the per-API guides
//! <https://developers.google.com/workspace/drive/api/guides/handle-errors>,
//! <https://developers.google.com/workspace/calendar/api/guides/errors>):
//!
//! ```text
//! {"error": {"code": 403, "message": "...", "status": "PERMISSION_DENIED",
//!            "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded", ...}],
//!            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"}]}}
//! ```
//!
//! - `401`: the access token was refused.
//! - `429`, and `403` whose reason is `rateLimitExceeded`, `userRateLimitExceeded` (or
//!   `RATE_LIMIT_EXCEEDED` in `details`): rate limited, honouring `Retry-After`; the engine
//!   backs off with jitter.
//! - `410 Gone`: a sync token Google no longer honours (Calendar): told apart, so the caller
//!   can start a full sync again.
//! - `503` with `Retry-After`: waited out like a rate limit. Other `5xx`: unavailable, worth
//!   retrying. Any other status: rejected, with Google's reason.

use reqwest::RequestBuilder;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use crate::connector::{
    join_path, read_body, retry_after_header, transport, ProviderCallError, ProviderSettings,
    MAX_BODY_BYTES,
};

/// Google's API host.
const API_BASE: &str = "https://www.googleapis.com";

/// Longest error message from Google kept in an error.
const MAX_MESSAGE_CHARS: usize = 200;

/// `{API base}{path}`: `path` starting with the service path (`/drive/v3/changes`).
pub(in crate::providers) fn url(settings: &ProviderSettings, path: &str) -> Url {
    join_path(&settings.api_base(API_BASE), path)
}

/// What a call came to: the body of a `2xx`, or `410 Gone`.
pub(in crate::providers) enum Answer {
    Body(axum::body::Bytes),
    Gone,
}

/// Sends `request` (with its bearer token) and reads the answer, mapping failures as the
/// module docs say; `410` is [`Answer::Gone`].
pub(in crate::providers) async fn send(
    request: RequestBuilder,
    what: &str,
) -> Result<Answer, ProviderCallError> {
    let response = request
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let retry_after = retry_after_header(response.headers());
    let body = read_body(response, MAX_BODY_BYTES).await?;
    if (200..300).contains(&status) {
        return Ok(Answer::Body(body));
    }
    if status == 410 {
        return Ok(Answer::Gone);
    }
    Err(error(status, retry_after, &body, what))
}

/// Sends `request` and reads a `2xx` JSON answer as `T`; `410` is rejected like any `4xx`.
pub(in crate::providers) async fn json<T: DeserializeOwned>(
    request: RequestBuilder,
    what: &str,
) -> Result<T, ProviderCallError> {
    match send(request, what).await? {
        Answer::Body(body) => parse(&body, what),
        Answer::Gone => Err(ProviderCallError::Rejected(format!("{what} answered 410"))),
    }
}

/// Reads a `2xx` body as `T`, refusing (readably) one that is not.
pub(in crate::providers) fn parse<T: DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ProviderCallError> {
    serde_json::from_slice(body).map_err(|e| {
        ProviderCallError::Rejected(format!("{what} answered a body that cannot be read: {e}"))
    })
}

/// Reads a list of a `2xx` body item by item: an item that cannot be read is logged and skipped,
/// so one odd entry of a page does not hold back the rest of it (and every later page).
/// Use with `#[serde(default, deserialize_with = "api::readable_items")]`.
pub(in crate::providers) fn readable_items<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    let items = Vec::<serde_json::Value>::deserialize(deserializer)?;
    Ok(items
        .into_iter()
        .filter_map(|item| match serde_json::from_value(item) {
            Ok(read) => Some(read),
            Err(error) => {
                tracing::warn!(%error, "skipped a list item Google answered that cannot be read");
                None
            }
        })
        .collect())
}

/// Google's error body, as much as we read of it.
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorInfo,
}

#[derive(Deserialize, Default)]
struct ErrorInfo {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<Reason>,
    #[serde(default)]
    details: Vec<Reason>,
}

#[derive(Deserialize, Default)]
struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

/// The reasons Google gives for rate limiting a request.
const RATE_LIMIT_REASONS: &[&str] = &[
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "RATE_LIMIT_EXCEEDED",
];

/// The failure a non-`2xx` answer stands for.
pub(in crate::providers) fn error(
    status: u16,
    retry_after: Option<u64>,
    body: &[u8],
    what: &str,
) -> ProviderCallError {
    // An error body that is not Google's JSON (a proxy's page) still maps by status.
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let reasons: Vec<&str> = parsed
        .error
        .errors
        .iter()
        .chain(&parsed.error.details)
        .filter_map(|r| r.reason.as_deref())
        .collect();
    let rate_limited = reasons.iter().any(|r| RATE_LIMIT_REASONS.contains(r));
    let explained = {
        let message: String = parsed
            .error
            .message
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_MESSAGE_CHARS)
            .collect();
        match (reasons.first(), message.is_empty()) {
            (Some(reason), false) => format!("{what} answered {status} ({reason}): {message}"),
            (Some(reason), true) => format!("{what} answered {status} ({reason})"),
            (None, false) => format!("{what} answered {status}: {message}"),
            (None, true) => format!("{what} answered {status}"),
        }
    };
    match status {
        401 => ProviderCallError::Unauthorized,
        429 => ProviderCallError::RateLimited { retry_after },
        403 if rate_limited => ProviderCallError::RateLimited { retry_after },
        // Overloaded and saying when to come back: wait that long, as for a rate limit.
        503 if retry_after.is_some() => ProviderCallError::RateLimited { retry_after },
        500..=599 => ProviderCallError::Unavailable(explained),
        _ => ProviderCallError::Rejected(explained),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn google_error(code: u16, reason: &str) -> Vec<u8> {
        serde_json::json!({"error": {"code": code, "message": "User Rate Limit Exceeded",
            "errors": [{"domain": "usageLimits", "reason": reason, "message": "User Rate Limit Exceeded"}]}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn rate_limits_are_told_apart_from_refusals() {
        for reason in ["rateLimitExceeded", "userRateLimitExceeded"] {
            let err = error(403, Some(7), &google_error(403, reason), "Drive");
            assert!(
                matches!(
                    err,
                    ProviderCallError::RateLimited {
                        retry_after: Some(7)
                    }
                ),
                "{err:?}"
            );
        }
        let details = br#"{"error":{"code":403,"message":"Quota exceeded","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED"}]}}"#;
        assert!(matches!(
            error(403, None, details, "Drive"),
            ProviderCallError::RateLimited { retry_after: None }
        ));
        assert!(matches!(
            error(429, Some(3), b"", "Drive"),
            ProviderCallError::RateLimited {
                retry_after: Some(3)
            }
        ));
        let forbidden = error(
            403,
            None,
            &google_error(403, "insufficientPermissions"),
            "Drive",
        );
        match forbidden {
            ProviderCallError::Rejected(why) => {
                assert!(why.contains("insufficientPermissions"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            error(401, None, &google_error(401, "authError"), "Drive"),
            ProviderCallError::Unauthorized
        ));
        assert!(matches!(
            error(503, None, b"<html>", "Drive"),
            ProviderCallError::Unavailable(_)
        ));
        assert!(matches!(
            error(503, Some(20), b"<html>", "Drive"),
            ProviderCallError::RateLimited {
                retry_after: Some(20)
            }
        ));
    }

    #[test]
    fn the_url_follows_the_api_base_override() {
        let bare = ProviderSettings::bare("google_drive");
        assert_eq!(
            url(&bare, "/drive/v3/changes").as_str(),
            "https://www.googleapis.com/drive/v3/changes"
        );
        let fake = ProviderSettings {
            api_base_url: Some(Url::parse("http://127.0.0.1:9/google/").expect("url")),
            ..bare
        };
        assert_eq!(
            url(&fake, "/drive/v3/changes").as_str(),
            "http://127.0.0.1:9/google/drive/v3/changes"
        );
    }

    proptest! {
        /// Whatever the body, an error maps without panicking, and its text holds no
        /// control character and stays bounded.
        #[test]
        fn any_error_body_maps(status in 400u16..600, body in proptest::collection::vec(any::<u8>(), 0..300), message in ".{0,400}") {
            let _ = error(status, None, &body, "Drive");
            let shaped = serde_json::json!({"error": {"message": message, "errors": [{"reason": "x"}]}}).to_string();
            match error(status, None, shaped.as_bytes(), "Drive") {
                ProviderCallError::Rejected(why) | ProviderCallError::Unavailable(why) => {
                    prop_assert!(!why.contains(char::is_control));
                    prop_assert!(why.chars().count() < MAX_MESSAGE_CHARS + 60);
                }
                _ => {}
            }
        }
    }
}
