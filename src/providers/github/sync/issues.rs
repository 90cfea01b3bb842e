//! The issues and pull requests updated since the cursor, then the releases of their repositories.

use super::*;

pub(super) fn issues_url(base: &Url, since: &Timestamp) -> Url {
    let mut url = join_path(base, "/issues");
    url.query_pairs_mut()
        .append_pair("filter", "all")
        .append_pair("state", "all")
        .append_pair("sort", "updated")
        .append_pair("direction", "asc")
        .append_pair("since", &key_time(since))
        .append_pair("per_page", "100");
    url
}

pub(super) async fn issues_page(
    ctx: &SyncContext<'_>,
    mut cursor: Cursor,
    now: Timestamp,
) -> Result<SyncPage, ProviderCallError> {
    let base = api_base(ctx.provider.settings);
    if cursor.cycle_since.is_none() {
        cursor.cycle_since = Some(cursor.since);
    }
    let following = cursor
        .next
        .as_deref()
        .and_then(|n| Url::parse(n).ok())
        .filter(|u| within_base(u, &base));
    let url = following
        .clone()
        .unwrap_or_else(|| issues_url(&base, &cursor.since));
    let etag = cursor
        .issues_etag
        .as_ref()
        .filter(|v| v.url == url.as_str())
        .map(|v| v.etag.clone());
    let answer = fetch(ctx, &base, url.clone(), etag.as_deref(), now).await?;
    cursor.rate_limited_until = answer.exhausted_until;
    match answer.status {
        // Unchanged since the ETag: costs no rate limit (https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate).
        304 => {
            let more = cursor.begin_releases();
            return Ok(cursor.page(Vec::new(), more));
        }
        200 => {}
        status => {
            return Err(ProviderCallError::Rejected(format!(
                "GitHub /issues answered {status}"
            )))
        }
    }
    let items: Vec<Issue> = serde_json::from_slice(&answer.body).map_err(|_| {
        ProviderCallError::Rejected("GitHub /issues answered an unexpected body".into())
    })?;
    if following.is_none() {
        if let Some(etag) = answer.etag {
            cursor.issues_etag = Some(Validator {
                url: url.to_string(),
                etag,
            });
        }
    }
    let mut signals = Vec::new();
    let mut latest: Option<Timestamp> = None;
    for item in &items {
        match listed_issue(item, &cursor.floor) {
            Ok(drafts) => signals.extend(drafts),
            Err(problem) => tracing::warn!(issue_id = item.id, problem, "skipped a GitHub issue"),
        }
        if let Ok(updated) = parse_rfc3339(&item.updated_at) {
            latest = latest.max(Some(updated));
        }
        if let Some(repository) = listed_repository(item) {
            cursor.remember(Seen::of(item, &repository));
            cursor.saw(repository);
        }
    }
    // `since` is "updated after" (https://docs.github.com/en/rest/issues/issues#list-issues-assigned-to-the-authenticated-user): one second of overlap in case it is exclusive.
    let advanced = latest
        .map(|l| whole_seconds(l) - Duration::seconds(1))
        .filter(|s| *s > cursor.since);
    if let Some(since) = advanced {
        cursor.since = since;
    }
    let more = match (answer.next, advanced) {
        (Some(_), Some(_)) => {
            cursor.next = None;
            true
        }
        // A whole page within one second: only the next link moves on.
        (Some(next), None) => {
            cursor.next = Some(next.to_string());
            true
        }
        (None, _) => cursor.begin_releases(),
    };
    let mut page = cursor.page(signals, more);
    let owners = items
        .iter()
        .filter_map(|i| i.repository.as_ref()?.owner.as_ref().map(|o| o.id));
    page.metadata = known_owners_patch(&ctx.connection.metadata, owners);
    Ok(page)
}

/// Whether `full_name` is a plain `owner/repo` (safe to put in a path).
pub(super) fn plain_full_name(full_name: &str) -> bool {
    let mut parts = full_name.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

pub(super) async fn releases_page(
    ctx: &SyncContext<'_>,
    mut cursor: Cursor,
    now: Timestamp,
) -> Result<SyncPage, ProviderCallError> {
    let index = cursor.release_index;
    let mut signals = Vec::new();
    if let Some(repo) = cursor.repos.get(index).cloned() {
        if plain_full_name(&repo.full_name) {
            let base = api_base(ctx.provider.settings);
            let mut url = join_path(&base, &format!("/repos/{}/releases", repo.full_name));
            url.query_pairs_mut().append_pair("per_page", "30");
            let answer = fetch(ctx, &base, url, repo.etag.as_deref(), now).await?;
            cursor.rate_limited_until = answer.exhausted_until;
            match answer.status {
                200 => {
                    let releases: Vec<Release> =
                        serde_json::from_slice(&answer.body).map_err(|_| {
                            ProviderCallError::Rejected(
                                "GitHub releases answered an unexpected body".into(),
                            )
                        })?;
                    signals.extend(
                        releases
                            .iter()
                            .filter_map(|r| listed_release(r, &repo.full_name, &cursor.floor)),
                    );
                    cursor.repos[index].etag = answer.etag;
                    cursor.release_index += 1;
                }
                304 => cursor.release_index += 1,
                // Renamed, deleted or no longer visible: forget it (a rename is seen anew).
                301 | 403 | 404 | 410 | 451 => {
                    cursor.repos.remove(index);
                }
                status => {
                    return Err(ProviderCallError::Rejected(format!(
                        "GitHub releases of {} answered {status}",
                        repo.full_name
                    )))
                }
            }
        } else {
            cursor.repos.remove(index);
        }
    }
    let more = cursor.release_index < cursor.repos.len() || cursor.begin(Phase::Comments);
    Ok(cursor.page(signals, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_repository_names_reach_a_path() {
        assert!(plain_full_name("octo-org/hello.world_2"));
        for bad in ["octo", "a/b/c", "../x", "a/..", "a/b?c", "a/ b", "/b"] {
            assert!(!plain_full_name(bad), "{bad}");
        }
    }
}
