//! Calls to a Jira Cloud site's REST API v3 through Atlassian's API gateway.
//!
//! OAuth 2.0 (3LO) apps call `https://api.atlassian.com/ex/jira/{cloudId}/rest/api/3/...`
//! (<https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/#3-2-construct-the-request-url>);
//! the gateway is `POBLYSH_JIRA_API_BASE_URL` when set, so one fake stands in for Atlassian.
//!
//! Answers are read as Atlassian documents them
//! (<https://developer.atlassian.com/cloud/jira/platform/rate-limiting/>):
//! - `429`: wait `Retry-After` seconds; without it, until `X-RateLimit-Reset` (an ISO 8601
//!   instant); `RateLimit-Reason` (which quota ran out: `jira-quota-global-based`,
//!   `jira-burst-based`, ...) is logged. Never longer than [`MAX_RETRY_AFTER_SECS`].
//! - `401`: the token was refused ([`ProviderCallError::Unauthorized`]; the engine refreshes once).
//! - `404` on the site itself: the cloud id no longer names a site the grant reaches
//!   ([`ProviderCallError::Gone`]).
//! - `5xx`: unavailable; other `4xx`: rejected, with Atlassian's `errorMessages` when given.

use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::Method;
use serde_json::Value;
use url::Url;

use crate::connector::{join_path, read_body, transport, MAX_BODY_BYTES};
use crate::connector::{retry_after_header, MAX_RETRY_AFTER_SECS};
use crate::connector::{ProviderCallError, ProviderSettings};
use crate::crypto::Secret;
use crate::domain::{now, Connection};

/// Atlassian's API gateway.
pub(super) const API_BASE: &str = "https://api.atlassian.com";

/// The metadata member holding the connection's cloud id.
pub(super) const CLOUD_ID: &str = "cloud_id";
/// The metadata member holding the site's URL (`https://your-domain.atlassian.net`).
pub(super) const SITE_URL: &str = "site_url";

/// The cloud id of a connection: its metadata's `cloud_id`, else its account id (which is the
/// cloud id: see `oauth::identify`).
pub(super) fn cloud_id(connection: &Connection) -> &str {
    connection
        .metadata
        .get(CLOUD_ID)
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .unwrap_or(&connection.external_account_id)
}

/// `{api base}/ex/jira/{cloudId}/rest/api/3{path}`, the cloud id as one path segment.
pub(super) fn site_url(settings: &ProviderSettings, cloud_id: &str, path: &str) -> Url {
    let mut url = join_path(&settings.api_base(API_BASE), "/ex/jira");
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(cloud_id);
    }
    join_path(&url, &format!("/rest/api/3{path}"))
}

/// One call: `method` on `url` with an optional JSON body; the answer's status and JSON body
/// (`Value::Null` when empty), or the failure the status means.
pub(super) async fn call(
    http: &reqwest::Client,
    token: &Secret,
    method: Method,
    url: Url,
    body: Option<&Value>,
    what: &str,
) -> Result<(u16, Value), ProviderCallError> {
    let mut request = http
        .request(method, url)
        .bearer_auth(token.expose())
        .header(ACCEPT, "application/json");
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    if status == 429 {
        return Err(rate_limited(response.headers(), what));
    }
    let bytes = read_body(response, MAX_BODY_BYTES).await?;
    let json = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(json) => json,
            Err(_) if (200..300).contains(&status) => {
                return Err(ProviderCallError::Rejected(format!(
                    "{what} answered {status} with a body that is not JSON"
                )))
            }
            Err(_) => Value::Null,
        }
    };
    match status {
        200..=299 => Ok((status, json)),
        401 => Err(ProviderCallError::Unauthorized),
        404 if is_site_gone(&json) => Err(ProviderCallError::Gone(format!(
            "the Jira site is gone or no longer reachable with this grant ({what} answered 404)"
        ))),
        500..=599 => Err(ProviderCallError::Unavailable(format!(
            "{what} answered {status}"
        ))),
        _ => Err(ProviderCallError::Rejected(format!(
            "{what} answered {status}{}",
            error_messages(&json)
        ))),
    }
}

/// Whether a `404` is about the site rather than a thing on it: the gateway answers an unknown
/// or unreachable cloud id without Jira's `errorMessages` (Jira's own 404s, e.g. for an issue,
/// carry them).
fn is_site_gone(json: &Value) -> bool {
    !json.get("errorMessages").is_some_and(Value::is_array)
        && !json.get("errors").is_some_and(Value::is_object)
}

/// `: message; message` from Jira's error collection
/// (`{"errorMessages": [...], "errors": {...}}`), short and printable; empty when none.
pub(super) fn error_messages(json: &Value) -> String {
    let mut messages: Vec<String> = json
        .get("errorMessages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if let Some(errors) = json.get("errors").and_then(Value::as_object) {
        messages.extend(
            errors
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}: {v}"))),
        );
    }
    if messages.is_empty() {
        return String::new();
    }
    let text: String = messages
        .join("; ")
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    format!(": {text}")
}

/// A `429` as Atlassian documents it: `Retry-After` seconds, else until `X-RateLimit-Reset`.
pub(super) fn rate_limited(headers: &HeaderMap, what: &str) -> ProviderCallError {
    let reason = headers
        .get("ratelimit-reason")
        .and_then(|v| v.to_str().ok())
        .map(|r| r.chars().take(64).collect::<String>());
    tracing::warn!(provider = "jira", call = what, reason = ?reason, "rate limited by Jira");
    ProviderCallError::RateLimited {
        retry_after: retry_after_header(headers).or_else(|| reset_wait(headers)),
    }
}

/// Seconds until `X-RateLimit-Reset` (ISO 8601), at least one, at most the engine's ceiling.
fn reset_wait(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get("x-ratelimit-reset")?.to_str().ok()?;
    let at = parse_reset(value)?;
    let secs = (at - now())
        .num_seconds()
        .clamp(1, MAX_RETRY_AFTER_SECS as i64);
    u64::try_from(secs).ok()
}

/// An ISO 8601 instant as Atlassian writes it, with or without seconds
/// (`2026-06-11T17:00:00Z`, `2026-06-11T17:00Z`, `...+0000`).
fn parse_reset(value: &str) -> Option<crate::domain::Timestamp> {
    let value = value.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(value) {
        return Some(at.with_timezone(&chrono::Utc));
    }
    super::time::parse_jira_time(value).or_else(|| {
        chrono::NaiveDateTime::parse_from_str(value.trim_end_matches('Z'), "%Y-%m-%dT%H:%M")
            .ok()
            .filter(|_| value.ends_with('Z'))
            .map(|t| t.and_utc())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_static(k),
                    v.parse().expect("value"),
                )
            })
            .collect()
    }

    fn waited(err: ProviderCallError) -> Option<u64> {
        match err {
            ProviderCallError::RateLimited { retry_after } => retry_after,
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }

    #[test]
    fn retry_after_wins_then_the_reset_instant_and_both_are_bounded() {
        assert_eq!(
            waited(rate_limited(
                &headers(&[
                    ("retry-after", "7"),
                    ("x-ratelimit-reset", "2000-01-01T00:00Z")
                ]),
                "t"
            )),
            Some(7)
        );
        let reset = (now() + chrono::Duration::seconds(120)).to_rfc3339();
        let wait = waited(rate_limited(
            &headers(&[("x-ratelimit-reset", &reset)]),
            "t",
        ))
        .expect("a wait");
        assert!((110..=120).contains(&wait), "{wait}");
        let far = (now() + chrono::Duration::days(30))
            .format("%Y-%m-%dT%H:%MZ")
            .to_string();
        assert_eq!(
            waited(rate_limited(&headers(&[("x-ratelimit-reset", &far)]), "t")),
            Some(MAX_RETRY_AFTER_SECS)
        );
        let past = "2000-01-01T00:00:00.000+0000";
        assert_eq!(
            waited(rate_limited(&headers(&[("x-ratelimit-reset", past)]), "t")),
            Some(1)
        );
        assert_eq!(
            waited(rate_limited(
                &headers(&[("x-ratelimit-reset", "soon")]),
                "t"
            )),
            None
        );
        assert_eq!(waited(rate_limited(&HeaderMap::new(), "t")), None);
    }

    #[test]
    fn site_urls_carry_the_cloud_id_as_one_segment_under_the_gateway() {
        let mut settings = ProviderSettings::bare("jira");
        assert_eq!(
            site_url(&settings, "11223344-a1b2-3b33-c444-def123456789", "/search/jql").as_str(),
            "https://api.atlassian.com/ex/jira/11223344-a1b2-3b33-c444-def123456789/rest/api/3/search/jql"
        );
        settings.api_base_url = Some(Url::parse("http://127.0.0.1:9/prefix/").expect("url"));
        assert_eq!(
            site_url(&settings, "a/b?c", "/webhook").as_str(),
            "http://127.0.0.1:9/prefix/ex/jira/a%2Fb%3Fc/rest/api/3/webhook"
        );
    }

    #[test]
    fn error_messages_are_short_and_printable() {
        let json = serde_json::json!({
            "errorMessages": ["The value 'X' does not exist for the field 'project'.\n"],
            "errors": {"jql": "bad"}
        });
        assert_eq!(
            error_messages(&json),
            ": The value 'X' does not exist for the field 'project'.; jql: bad"
        );
        assert_eq!(error_messages(&Value::Null), "");
        assert!(!is_site_gone(&json));
        assert!(is_site_gone(
            &serde_json::json!({"code": 404, "message": "Not Found"})
        ));
    }
}
