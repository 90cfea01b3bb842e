//! The repositories' activity: comments, issue events, pushes and pull request reviews.

use super::*;

/// The page at `activity_next` if it is under the API base, else `first`.
pub(super) fn activity_url(cursor: &Cursor, base: &Url, first: Url) -> (Url, bool) {
    match cursor
        .activity_next
        .as_deref()
        .and_then(|n| Url::parse(n).ok())
        .filter(|u| within_base(u, base))
    {
        Some(next) => (next, true),
        None => (first, false),
    }
}

/// One page of a repository's comments since the cycle began.
pub(super) async fn comments_page(
    ctx: &SyncContext<'_>,
    mut cursor: Cursor,
    now: Timestamp,
) -> Result<SyncPage, ProviderCallError> {
    let mut signals = Vec::new();
    let index = cursor.release_index;
    let mut done = true;
    if let Some(repo) = cursor
        .repos
        .get(index)
        .map(|r| r.full_name.clone())
        .filter(|r| plain_full_name(r))
    {
        let base = api_base(ctx.provider.settings);
        let since = cursor.cycle_since.unwrap_or(cursor.floor).max(cursor.floor);
        let mut first = join_path(&base, &format!("/repos/{repo}/issues/comments"));
        first
            .query_pairs_mut()
            .append_pair("sort", "updated")
            .append_pair("direction", "asc")
            .append_pair("since", &key_time(&since))
            .append_pair("per_page", "100");
        let (url, _) = activity_url(&cursor, &base, first);
        let answer = fetch(ctx, &base, url, None, now).await?;
        cursor.rate_limited_until = answer.exhausted_until;
        match answer.status {
            200 => {
                let comments: Vec<ListedComment> =
                    serde_json::from_slice(&answer.body).map_err(|_| {
                        ProviderCallError::Rejected(
                            "GitHub issue comments answered an unexpected body".into(),
                        )
                    })?;
                signals.extend(
                    comments
                        .iter()
                        .filter_map(|c| comment_draft(c, &repo, &cursor.seen, &cursor.floor)),
                );
                if let Some(next) = answer.next {
                    cursor.activity_next = Some(next.to_string());
                    done = false;
                }
            }
            // Renamed, deleted, no longer visible, or comments turned off: go on without it.
            301 | 403 | 404 | 410 | 451 => {}
            status => {
                return Err(ProviderCallError::Rejected(format!(
                    "GitHub comments of {repo} answered {status}"
                )))
            }
        }
    }
    if done {
        cursor.activity_next = None;
        cursor.release_index += 1;
    }
    let more = cursor.release_index < cursor.repos.len() || cursor.begin(Phase::Reviews);
    Ok(cursor.page(signals, more))
}

/// The newest page of a known repository's issue events, from the watermark on; the pushes
/// ([`pushes_page`]) follow the last repository.
pub(super) async fn events_page(
    ctx: &SyncContext<'_>,
    mut cursor: Cursor,
    now: Timestamp,
) -> Result<SyncPage, ProviderCallError> {
    let mut signals = Vec::new();
    let index = cursor.release_index;
    if let Some(repo) = cursor
        .repos
        .get(index)
        .map(|r| r.full_name.clone())
        .filter(|r| plain_full_name(r))
    {
        let base = api_base(ctx.provider.settings);
        let mut url = join_path(&base, &format!("/repos/{repo}/issues/events"));
        url.query_pairs_mut().append_pair("per_page", "100");
        let answer = fetch(ctx, &base, url, None, now).await?;
        cursor.rate_limited_until = answer.exhausted_until;
        match answer.status {
            200 => {
                let events: Vec<IssueEvent> =
                    serde_json::from_slice(&answer.body).map_err(|_| {
                        ProviderCallError::Rejected(
                            "GitHub issue events answered an unexpected body".into(),
                        )
                    })?;
                let after = cursor.since.max(cursor.floor);
                signals.extend(events.iter().filter_map(|e| event_draft(e, &repo, &after)));
            }
            301 | 403 | 404 | 410 | 451 => {}
            status => {
                return Err(ProviderCallError::Rejected(format!(
                    "GitHub issue events of {repo} answered {status}"
                )))
            }
        }
    }
    cursor.release_index += 1;
    if cursor.release_index >= cursor.repos.len() {
        cursor.phase = Phase::Issues;
        cursor.release_index = 0;
    }
    Ok(cursor.page(signals, true))
}

/// The head commit of the next push found, or the next page of a known repository's events
/// (newest first, back to the repository's mark: [`events_page_of`]); the cycle ends after the
/// last repository.
pub(super) async fn pushes_page(
    ctx: &SyncContext<'_>,
    mut cursor: Cursor,
    now: Timestamp,
) -> Result<SyncPage, ProviderCallError> {
    let base = api_base(ctx.provider.settings);
    let mut signals = Vec::new();
    let mut metadata = None;
    if cursor.events_scan.is_none() && !cursor.pending_pushes.is_empty() {
        let push = cursor.pending_pushes.remove(0);
        signals.extend(head_commit(ctx, &mut cursor, &base, &push, now).await?);
    } else if cursor.release_index < cursor.repos.len() {
        metadata = events_page_of(ctx, &mut cursor, &base, now).await?;
    }
    if cursor.events_scan.is_none() && cursor.pending_pushes.is_empty() {
        cursor.release_index += 1;
    }
    let more = cursor.release_index < cursor.repos.len()
        || cursor.events_scan.is_some()
        || !cursor.pending_pushes.is_empty();
    if !more {
        cursor.end_cycle();
    }
    let mut page = cursor.page(signals, more);
    page.metadata = metadata;
    Ok(page)
}

/// One page of the events of the repository at `release_index`: the first with its `ETag`
/// (a `304` costs no rate limit), the next by `Link` (`page=2`, `page=3`) until an event at or
/// before the repository's mark shows, GitHub's window ends or [`MAX_EVENT_PAGES`] were read.
/// A window ending before the mark means pushes may be missing: logged and kept in the
/// connection's metadata ([`super::pushes::PUSHES_MISSED`]), which this returns patched.
pub(super) async fn events_page_of(
    ctx: &SyncContext<'_>,
    cursor: &mut Cursor,
    base: &Url,
    now: Timestamp,
) -> Result<Option<Metadata>, ProviderCallError> {
    let index = cursor.release_index;
    let repo = cursor.repos[index].clone();
    let mut scan = cursor.events_scan.take().unwrap_or_else(|| EventsScan {
        mark: repo.pushes.clone(),
        ..EventsScan::default()
    });
    if !plain_full_name(&repo.full_name) {
        return Ok(None);
    }
    let mut first = join_path(base, &format!("/repos/{}/events", repo.full_name));
    first.query_pairs_mut().append_pair("per_page", "100");
    let following = scan.next.as_deref().and_then(|n| Url::parse(n).ok());
    let (url, etag) = match following.filter(|u| within_base(u, base)) {
        Some(next) => (next, None),
        None => (first, repo.events_etag.as_deref()),
    };
    let answer = fetch(ctx, base, url, etag, now).await?;
    cursor.rate_limited_until = answer.exhausted_until;
    let events: Vec<RepoEvent> = match answer.status {
        200 => {
            if scan.pages == 0 {
                cursor.repos[index].events_etag = answer.etag.clone();
            }
            serde_json::from_slice(&answer.body).map_err(|_| {
                ProviderCallError::Rejected(
                    "GitHub repository events answered an unexpected body".into(),
                )
            })?
        }
        // Unchanged (costs no rate limit), or no longer visible: nothing more to read.
        304 | 301 | 403 | 404 | 410 | 451 => Vec::new(),
        status => {
            return Err(ProviderCallError::Rejected(format!(
                "GitHub events of {} answered {status}",
                repo.full_name
            )))
        }
    };
    let (found, reached) = scan_page(&events, &cursor.floor, &repo.pushes, &mut scan);
    cursor.pending_pushes.extend(found);
    let next = answer.next.filter(|_| !reached);
    if let Some(next) = next.as_ref().filter(|_| scan.pages < MAX_EVENT_PAGES) {
        scan.next = Some(next.to_string());
        cursor.events_scan = Some(scan);
        return Ok(None);
    }
    cursor.pending_pushes = oldest_first(std::mem::take(&mut cursor.pending_pushes));
    cursor.repos[index].pushes = scan.mark.clone();
    let window_ended = scan.events >= WINDOW_EVENTS || next.is_some();
    if reached || !window_ended {
        return Ok(None);
    }
    let from = repo.pushes.at.unwrap_or(cursor.floor);
    tracing::warn!(
        repository = %repo.full_name,
        from = %key_time(&from),
        until = ?scan.oldest.map(|t| key_time(&t)),
        "GitHub's repository events ended before the pushes already read: some may be missing"
    );
    Ok(pushes_missed_patch(
        &ctx.connection.metadata,
        &repo.full_name,
        &from,
        scan.oldest.as_ref(),
        &now,
    ))
}

/// The head commit of `push`, as its `code_pushed`; nothing when it is gone.
pub(super) async fn head_commit(
    ctx: &SyncContext<'_>,
    cursor: &mut Cursor,
    base: &Url,
    push: &PendingPush,
    now: Timestamp,
) -> Result<Option<SignalDraft>, ProviderCallError> {
    let plain_sha = push.head.len() == 40 && push.head.bytes().all(|b| b.is_ascii_hexdigit());
    if !plain_full_name(&push.repo) || !plain_sha {
        return Ok(None);
    }
    let path = format!("/repos/{}/git/commits/{}", push.repo, push.head);
    let answer = fetch(ctx, base, join_path(base, &path), None, now).await?;
    cursor.rate_limited_until = answer.exhausted_until;
    match answer.status {
        200 => {
            let commit: GitCommit = serde_json::from_slice(&answer.body).map_err(|_| {
                ProviderCallError::Rejected("GitHub commit answered an unexpected body".into())
            })?;
            Ok(push_draft(push, &commit))
        }
        // Force-pushed away and collected, or the repository is gone: no signal.
        301 | 403 | 404 | 409 | 410 | 422 | 451 => Ok(None),
        status => Err(ProviderCallError::Rejected(format!(
            "GitHub commit {} of {} answered {status}",
            push.head, push.repo
        ))),
    }
}

/// One page of the reviews of a pull request the cycle's listing showed.
pub(super) async fn reviews_page(
    ctx: &SyncContext<'_>,
    mut cursor: Cursor,
    now: Timestamp,
) -> Result<SyncPage, ProviderCallError> {
    let pulls: Vec<Seen> = cursor.seen.iter().filter(|s| s.pull).cloned().collect();
    let mut signals = Vec::new();
    let mut done = true;
    if let Some(pull) = pulls
        .get(cursor.release_index)
        .filter(|p| plain_full_name(&p.repo))
    {
        let base = api_base(ctx.provider.settings);
        let mut first = join_path(
            &base,
            &format!("/repos/{}/pulls/{}/reviews", pull.repo, pull.number),
        );
        first.query_pairs_mut().append_pair("per_page", "100");
        let (url, _) = activity_url(&cursor, &base, first);
        let answer = fetch(ctx, &base, url, None, now).await?;
        cursor.rate_limited_until = answer.exhausted_until;
        match answer.status {
            200 => {
                let reviews: Vec<ListedReview> =
                    serde_json::from_slice(&answer.body).map_err(|_| {
                        ProviderCallError::Rejected(
                            "GitHub reviews answered an unexpected body".into(),
                        )
                    })?;
                signals.extend(
                    reviews
                        .iter()
                        .filter_map(|r| review_draft(r, pull, &cursor.floor)),
                );
                if let Some(next) = answer.next {
                    cursor.activity_next = Some(next.to_string());
                    done = false;
                }
            }
            301 | 403 | 404 | 410 | 451 => {}
            status => {
                return Err(ProviderCallError::Rejected(format!(
                    "GitHub reviews of {}#{} answered {status}",
                    pull.repo, pull.number
                )))
            }
        }
    }
    if done {
        cursor.activity_next = None;
        cursor.release_index += 1;
    }
    let more = cursor.release_index < pulls.len() || cursor.begin(Phase::Pushes);
    Ok(cursor.page(signals, more))
}
