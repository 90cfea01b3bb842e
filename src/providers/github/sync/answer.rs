//! One request to the GitHub API and what its answer says: status, validator, next page and rate-limit waits.

use super::*;

/// A GitHub answer that is not an error for every caller alike.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) etag: Option<String>,
    pub(super) next: Option<Url>,
    pub(super) body: Vec<u8>,
    /// The reset time, when this answer used the last request of the quota.
    pub(super) exhausted_until: Option<Timestamp>,
}

pub(super) fn header(
    headers: &HeaderMap,
    name: impl reqwest::header::AsHeaderName,
) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

pub(super) async fn fetch(
    ctx: &SyncContext<'_>,
    base: &Url,
    url: Url,
    etag: Option<&str>,
    now: Timestamp,
) -> Result<Answer, ProviderCallError> {
    let mut request = ctx
        .provider
        .http
        .get(url)
        .bearer_auth(ctx.access_token.expose())
        .header(ACCEPT, "application/vnd.github+json")
        .header("X-GitHub-Api-Version", API_VERSION);
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag);
    }
    let response = request.send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let remaining: Option<u64> =
        header(&headers, "x-ratelimit-remaining").and_then(|v| v.parse().ok());
    let reset: Option<Timestamp> = header(&headers, "x-ratelimit-reset")
        .and_then(|v| v.parse().ok())
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0));
    match status {
        401 => return Err(ProviderCallError::Unauthorized),
        403 | 429 => {
            // Read only to tell a rate limit from another refusal: bounded, and lossy.
            let body = read_body(response, MAX_BODY_BYTES)
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if let Some(wait) = rate_limit_wait(status, &headers, remaining, reset, &body, now) {
                return Err(ProviderCallError::RateLimited {
                    retry_after: Some(wait),
                });
            }
            // Forbidden for another reason (scopes, SSO, a blocked repository).
            return Ok(Answer {
                status,
                etag: None,
                next: None,
                body: body.into_bytes(),
                exhausted_until: None,
            });
        }
        500..=599 => {
            return Err(ProviderCallError::Unavailable(format!(
                "GitHub answered {status}"
            )))
        }
        _ => {}
    }
    let body = read_body(response, MAX_BODY_BYTES).await?.to_vec();
    Ok(Answer {
        status,
        etag: header(&headers, ETAG).map(str::to_string),
        next: next_link(&headers, base),
        body,
        exhausted_until: reset.filter(|_| remaining == Some(0)),
    })
}

/// How long GitHub asks us to wait, if this `403`/`429` is a rate limit.
pub(super) fn rate_limit_wait(
    status: u16,
    headers: &HeaderMap,
    remaining: Option<u64>,
    reset: Option<Timestamp>,
    body: &str,
    now: Timestamp,
) -> Option<u64> {
    // Order as GitHub documents it: https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit
    if let Some(secs) = header(headers, RETRY_AFTER).and_then(retry_after_secs) {
        return Some(secs.max(1));
    }
    if remaining == Some(0) {
        return Some(reset.map_or(SECONDARY_WAIT_SECS, |r| seconds_until(r, now)));
    }
    if status == 429 || body.to_ascii_lowercase().contains("rate limit") {
        return Some(SECONDARY_WAIT_SECS);
    }
    None
}

/// Whole seconds from `now` until `at`, rounded up, at least one and at most
/// [`MAX_RETRY_AFTER_SECS`] (`at` comes from `X-RateLimit-Reset`, a number from the network).
pub(super) fn seconds_until(at: Timestamp, now: Timestamp) -> u64 {
    let millis = u64::try_from((at - now).num_milliseconds()).unwrap_or(0);
    millis.div_ceil(1000).clamp(1, MAX_RETRY_AFTER_SECS)
}

/// The `rel="next"` target of a `Link` header, if it is under the configured API base (the
/// token is never sent elsewhere). A link outside it is no next page rather than an error: the
/// page already read is kept, the `since` watermark (one second of overlap) picks up the rest
/// on the next run, and a provider (or proxy) answering odd links cannot fail the connection.
pub(super) fn next_link(headers: &HeaderMap, base: &Url) -> Option<Url> {
    let value = header(headers, LINK)?;
    value.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let target = pieces.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = pieces.any(|p| {
            p.trim()
                .strip_prefix("rel=")
                .is_some_and(|rel| rel.trim_matches('"').split(' ').any(|r| r == "next"))
        });
        let url = Url::parse(target).ok()?;
        (is_next && within_base(&url, base)).then_some(url)
    })
}

/// Whether `url` is under the configured API base as a whole: same scheme, host and port, no
/// credentials, and a path under the base's path (`/api/v3` admits `/api/v3/issues`, not
/// `/api/v30` nor `/api/other`; the URL parser has already resolved any `..` and `%2e%2e`).
/// The token is sent to a followed link, so only the API the operator configured qualifies.
pub(super) fn within_base(url: &Url, base: &Url) -> bool {
    let prefix = base.path().trim_end_matches('/');
    let path = url.path();
    url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default()
        && url.username().is_empty()
        && url.password().is_none()
        && (path == prefix || path.starts_with(&format!("{prefix}/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A next link must stay under the whole configured base: a look-alike host, another
    /// port or scheme, credentials, or a path outside the base's (even through `..`) is no next
    /// page, and the token is never sent there.
    #[test]
    fn next_links_outside_the_whole_api_base_are_ignored() {
        let link = |target: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                LINK,
                format!("<{target}>; rel=\"next\"").parse().expect("value"),
            );
            headers
        };
        let base = Url::parse("https://ghe.example.com/api/v3").expect("url");
        for good in [
            "https://ghe.example.com/api/v3/issues?page=2",
            "https://ghe.example.com:443/api/v3/issues?page=2",
        ] {
            assert!(next_link(&link(good), &base).is_some(), "{good}");
        }
        for bad in [
            "https://ghe.example.com.evil/api/v3/issues?page=2",
            "https://ghe.example.com/../elsewhere/issues",
            "https://ghe.example.com/api/v3/../../elsewhere",
            "https://ghe.example.com/api/v3/%2e%2e/v4/issues",
            "https://ghe.example.com/api/v30/issues",
            "https://ghe.example.com/api/issues",
            "https://ghe.example.com:8443/api/v3/issues",
            "http://ghe.example.com/api/v3/issues",
            "https://user:pw@ghe.example.com/api/v3/issues",
        ] {
            assert_eq!(next_link(&link(bad), &base), None, "{bad}");
        }
        let root = Url::parse("https://api.github.com").expect("url");
        assert!(next_link(&link("https://api.github.com/issues?page=2"), &root).is_some());
        for bad in [
            "https://api.github.com.evil/issues?page=2",
            "https://api.github.com.evil/../elsewhere",
        ] {
            assert_eq!(next_link(&link(bad), &root), None, "{bad}");
        }
    }

    #[test]
    fn next_links_are_read_and_kept_on_the_api_host() {
        let base = Url::parse("https://api.github.com").expect("url");
        let mut headers = HeaderMap::new();
        headers.insert(
            LINK,
            r#"<https://api.github.com/issues?page=2>; rel="next", <https://api.github.com/issues?page=5>; rel="last""#
                .parse()
                .expect("value"),
        );
        assert_eq!(
            next_link(&headers, &base).map(String::from),
            Some("https://api.github.com/issues?page=2".to_string())
        );
        headers.insert(
            LINK,
            r#"<https://evil.example/issues?page=2>; rel="next""#
                .parse()
                .expect("value"),
        );
        assert_eq!(next_link(&headers, &base), None);
        headers.insert(
            LINK,
            r#"<https://api.github.com/issues?page=1>; rel="prev""#
                .parse()
                .expect("value"),
        );
        assert_eq!(next_link(&headers, &base), None);
    }

    #[test]
    fn waits_follow_github_rules() {
        let now = parse_rfc3339("2026-01-01T00:00:00.400Z").expect("time");
        let reset = parse_rfc3339("2026-01-01T00:01:00Z").ok();
        let mut headers = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(403, &headers, Some(0), reset, "", now),
            Some(60)
        );
        assert_eq!(
            rate_limit_wait(403, &headers, Some(10), reset, "", now),
            None
        );
        assert_eq!(
            rate_limit_wait(
                403,
                &headers,
                Some(10),
                reset,
                "You have exceeded a secondary rate limit",
                now
            ),
            Some(SECONDARY_WAIT_SECS)
        );
        assert_eq!(
            rate_limit_wait(429, &headers, None, None, "", now),
            Some(SECONDARY_WAIT_SECS)
        );
        headers.insert(RETRY_AFTER, "17".parse().expect("value"));
        assert_eq!(
            rate_limit_wait(403, &headers, Some(0), reset, "", now),
            Some(17)
        );
    }

    #[test]
    fn absurd_rate_limit_waits_are_clamped() {
        let now = parse_rfc3339("2026-01-01T00:00:00Z").expect("time");
        let far = DateTime::<Utc>::from_timestamp(253_402_300_799, 0);
        let headers = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(403, &headers, Some(0), far, "", now),
            Some(MAX_RETRY_AFTER_SECS)
        );
        let past = parse_rfc3339("2025-01-01T00:00:00Z").ok();
        assert_eq!(
            rate_limit_wait(403, &headers, Some(0), past, "", now),
            Some(1)
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            "99999999999999999999999".parse().expect("value"),
        );
        assert_eq!(
            rate_limit_wait(429, &headers, None, None, "", now),
            Some(MAX_RETRY_AFTER_SECS)
        );
    }
}
