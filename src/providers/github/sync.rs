//! Incremental sync: issues and pull requests updated since the cursor, then the releases of
//! the repositories they live in. One HTTP request per page.
//!
//! **Issues and pull requests** come from `GET /issues?filter=all&state=all&sort=updated&
//! direction=asc&since=…&per_page=100`, every issue and pull request the user can see across
//! owned, member and organization repositories
//! (<https://docs.github.com/en/rest/issues/issues#list-issues-assigned-to-the-authenticated-user>).
//! Paging is by watermark: after a page, `since` moves to its latest `updated_at` (less one
//! second, in case `since` is exclusive) and the listing is asked again, so an item updated
//! while we page moves ahead of the watermark instead of shifting an unread item onto a page
//! already read. Only when a whole page shares one second (the watermark cannot move) is the
//! `Link: rel="next"` URL followed
//! (<https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api>);
//! a `Link` header is also how we know more follows.
//!
//! The owners of the repositories the listing shows are recorded in the connection's metadata
//! (see `webhook::KNOWN_OWNERS`): deliveries naming them are routed to this connection.
//!
//! **Releases**: `GET /repos/{owner}/{repo}/releases` for each repository seen (the 50 most
//! recently active), newest first
//! (<https://docs.github.com/en/rest/releases/releases#list-releases>).
//!
//! **Issue events, comments and reviews** ([`super::history`]): a cycle after the first starts
//! with the issue events of the repositories known (reopenings and closings, with who did it);
//! after the releases come the comments of each of those
//! repositories since the cycle began (`issues/comments?since=…`), then the reviews of each pull
//! request the cycle's listing showed (at most [`history::MAX_SEEN`]).
//!
//! **Pushes** ([`super::pushes`]): every cycle, the first included, ends with each known
//! repository's events, paged back to the last one read (at most GitHub's 300), then the head
//! commit of each branch push they showed, one per page.
//!
//! **Conditional requests**: each listing's `ETag` is kept and sent back as `If-None-Match`;
//! a `304` costs no rate limit
//! (<https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate>).
//!
//! **Rate limits**
//! (<https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit>):
//! a `403`/`429` with `Retry-After` waits that long; with `X-RateLimit-Remaining: 0` until
//! `X-RateLimit-Reset`; other secondary limits at least a minute. No wait is longer than
//! [`crate::connector::MAX_RETRY_AFTER_SECS`], whatever the headers say. A successful answer with
//! `X-RateLimit-Remaining: 0` is used, and the next page waits for the reset without calling.
//! `401` is [`ProviderCallError::Unauthorized`] (the engine refreshes once and retries).
//!
//! # The cursor
//!
//! ```json
//! {
//!   "v": 1,
//!   "floor": "2026-01-01T00:00:00Z",
//!   "since": "2026-01-30T09:59:59Z",
//!   "next": "https://api.github.com/issues?...&page=2",
//!   "issues_etag": { "url": "https://api.github.com/issues?...", "etag": "W/\"…\"" },
//!   "phase": "issues",
//!   "repos": [ { "full_name": "octo/app", "etag": "\"…\"", "events_etag": "\"…\"",
//!                "pushes": { "at": "2026-01-30T09:00:00Z", "ids": ["22249084947"] } } ],
//!   "release_index": 0,
//!   "rate_limited_until": "2026-01-30T11:00:00Z"
//! }
//! ```
//!
//! - `floor`: changes before it are history and never reported (the first sync starts
//!   [`INITIAL_LOOKBACK_DAYS`] back); fixed for the connection's life.
//! - `since`: the watermark for the next issues request.
//! - `next`: set only while following `Link: rel="next"`, and only under the whole API base
//!   (scheme, host, port and path prefix); any other link counts as no next page.
//! - `issues_etag`: the validator of the last first-page request, sent when the URL is the same.
//! - `phase`: `events`, `pushes`, `issues`, `releases`, `comments` or `reviews`;
//!   `release_index` is the next repository (or, for reviews, pull request) to ask;
//!   `activity_next` a comments or reviews listing's next page.
//! - `pending_pushes`: pushes of the repository at `release_index` whose head commit is still
//!   to be read; `events_scan`: while its events are paged, the next page, how many were read,
//!   the oldest event seen and how far they go.
//! - `cycle_since`: `since` when the cycle began, for the comments listing.
//! - `seen`: the items the cycle's listing showed, for titles and reviews.
//! - `repos`: repositories seen in the listing, most recent first, with their releases' and
//!   events' `ETag` and how far their events were read (`pushes`: the newest event's time and
//!   the ids of that second's events).
//! - `rate_limited_until`: no request before this (the quota ran out on a successful answer).
//!
//! A cursor that cannot be read (another version) starts over; dedupe keys keep that from
//! repeating signals. A cycle is: issues pages until the listing is exhausted, then one page per
//! repository's releases; `more` is `false` at the end of a cycle.

use chrono::{DateTime, Duration, Utc};
use reqwest::header::{HeaderMap, ACCEPT, ETAG, IF_NONE_MATCH, LINK, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use super::history::{self, comment_draft, event_draft, review_draft, Seen};
use super::normalize::{key_time, listed_issue, listed_release, listed_repository};
use super::oauth::{api_base, API_VERSION};
use super::pushes::{
    oldest_first, push_draft, pushes_missed_patch, scan_page, EventsScan, PendingPush, PushMark,
    MAX_EVENT_PAGES, WINDOW_EVENTS,
};
use super::webhook::known_owners_patch;
use super::wire::{GitCommit, Issue, IssueEvent, ListedComment, ListedReview, Release, RepoEvent};
use crate::connector::join_path;
use crate::connector::transport;
use crate::connector::Metadata;
use crate::connector::ProviderCallError;
use crate::connector::SyncContext;
use crate::connector::{read_body, MAX_BODY_BYTES};
use crate::connector::{retry_after_secs, MAX_RETRY_AFTER_SECS};
use crate::connector::{SignalDraft, SyncPage};
use crate::domain::{now, parse_rfc3339, Timestamp};

/// The cursor format.
const VERSION: u32 = 1;
/// How far back the first sync of a connection looks.
pub const INITIAL_LOOKBACK_DAYS: i64 = 30;
/// Repositories whose releases are followed.
const MAX_REPOS: usize = 50;
/// The wait for a secondary rate limit that names none ("at least one minute").
const SECONDARY_WAIT_SECS: u64 = 60;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    #[default]
    Issues,
    Releases,
    Comments,
    Reviews,
    Events,
    Pushes,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Validator {
    url: String,
    etag: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RepoState {
    full_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    /// The validator of its events listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    events_etag: Option<String>,
    #[serde(default, skip_serializing_if = "PushMark::is_unset")]
    pushes: PushMark,
}

/// Where a connection's sync stands (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Cursor {
    v: u32,
    floor: Timestamp,
    since: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issues_etag: Option<Validator>,
    #[serde(default)]
    phase: Phase,
    #[serde(default)]
    repos: Vec<RepoState>,
    #[serde(default)]
    release_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limited_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cycle_since: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    seen: Vec<Seen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    activity_next: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending_pushes: Vec<PendingPush>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    events_scan: Option<EventsScan>,
}

impl Cursor {
    fn start(now: Timestamp) -> Self {
        let floor = whole_seconds(now - Duration::days(INITIAL_LOOKBACK_DAYS));
        Self {
            v: VERSION,
            floor,
            since: floor,
            next: None,
            issues_etag: None,
            phase: Phase::Issues,
            repos: Vec::new(),
            release_index: 0,
            rate_limited_until: None,
            cycle_since: None,
            seen: Vec::new(),
            activity_next: None,
            pending_pushes: Vec::new(),
            events_scan: None,
        }
    }

    fn read(value: Option<&Value>, now: Timestamp) -> Self {
        value
            .and_then(|v| serde_json::from_value::<Cursor>(v.clone()).ok())
            .filter(|c| c.v == VERSION)
            .unwrap_or_else(|| Self::start(now))
    }

    fn page(&self, signals: Vec<SignalDraft>, more: bool) -> SyncPage {
        SyncPage {
            signals,
            cursor: serde_json::to_value(self).expect("the cursor serializes"),
            more,
            metadata: None,
        }
    }

    /// Remembers a repository as the most recently active.
    fn saw(&mut self, full_name: String) {
        let state = match self.repos.iter().position(|r| r.full_name == full_name) {
            Some(i) => self.repos.remove(i),
            None => RepoState {
                full_name,
                etag: None,
                events_etag: None,
                pushes: PushMark::default(),
            },
        };
        self.repos.insert(0, state);
        self.repos.truncate(MAX_REPOS);
    }

    /// The issues listing is done: the releases follow, if any repository is known.
    fn begin_releases(&mut self) -> bool {
        self.next = None;
        self.release_index = 0;
        if self.repos.is_empty() {
            self.end_cycle();
            false
        } else {
            self.phase = Phase::Releases;
            true
        }
    }

    /// Remembers an item of the cycle's listing.
    fn remember(&mut self, item: Seen) {
        self.seen
            .retain(|s| !(s.repo == item.repo && s.number == item.number));
        if self.seen.len() < history::MAX_SEEN {
            self.seen.push(item);
        }
    }

    /// Moves to `phase` from its first repository or pull request; ends the cycle when it has
    /// none. Whether more follows.
    fn begin(&mut self, phase: Phase) -> bool {
        self.release_index = 0;
        self.activity_next = None;
        let any = match phase {
            Phase::Comments | Phase::Pushes => !self.repos.is_empty(),
            Phase::Reviews => self.seen.iter().any(|s| s.pull),
            _ => false,
        };
        if phase == Phase::Pushes {
            // The items of the cycle's listing served the reviews; the pushes need none.
            self.seen.clear();
        }
        if any {
            self.phase = phase;
            true
        } else if phase == Phase::Pushes {
            self.end_cycle();
            false
        } else {
            self.begin(Phase::Pushes)
        }
    }

    /// The cycle is over: the next starts with the issue events of the repositories known,
    /// if any, then the issues listing.
    fn end_cycle(&mut self) {
        self.phase = if self.repos.is_empty() {
            Phase::Issues
        } else {
            Phase::Events
        };
        self.release_index = 0;
        self.activity_next = None;
        self.cycle_since = None;
        self.seen.clear();
    }
}

fn whole_seconds(at: Timestamp) -> Timestamp {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

/// One page of the sync (see the module documentation).
pub(super) async fn sync_page(
    ctx: SyncContext<'_>,
    cursor: Option<&Value>,
) -> Result<SyncPage, ProviderCallError> {
    let now = now();
    let mut cursor = Cursor::read(cursor, now);
    if let Some(until) = cursor.rate_limited_until.take() {
        if until > now {
            return Err(ProviderCallError::RateLimited {
                retry_after: Some(seconds_until(until, now)),
            });
        }
    }
    match cursor.phase {
        Phase::Issues => issues_page(&ctx, cursor, now).await,
        Phase::Releases => releases_page(&ctx, cursor, now).await,
        Phase::Comments => comments_page(&ctx, cursor, now).await,
        Phase::Reviews => reviews_page(&ctx, cursor, now).await,
        Phase::Events => events_page(&ctx, cursor, now).await,
        Phase::Pushes => pushes_page(&ctx, cursor, now).await,
    }
}

fn issues_url(base: &Url, since: &Timestamp) -> Url {
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

async fn issues_page(
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
fn plain_full_name(full_name: &str) -> bool {
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

async fn releases_page(
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

/// The page at `activity_next` if it is under the API base, else `first`.
fn activity_url(cursor: &Cursor, base: &Url, first: Url) -> (Url, bool) {
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
async fn comments_page(
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
async fn events_page(
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
async fn pushes_page(
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
async fn events_page_of(
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
async fn head_commit(
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
async fn reviews_page(
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

/// A GitHub answer that is not an error for every caller alike.
struct Answer {
    status: u16,
    etag: Option<String>,
    next: Option<Url>,
    body: Vec<u8>,
    /// The reset time, when this answer used the last request of the quota.
    exhausted_until: Option<Timestamp>,
}

fn header(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

async fn fetch(
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
fn rate_limit_wait(
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
fn seconds_until(at: Timestamp, now: Timestamp) -> u64 {
    let millis = u64::try_from((at - now).num_milliseconds()).unwrap_or(0);
    millis.div_ceil(1000).clamp(1, MAX_RETRY_AFTER_SECS)
}

/// The `rel="next"` target of a `Link` header, if it is under the configured API base (the
/// token is never sent elsewhere). A link outside it is no next page rather than an error: the
/// page already read is kept, the `since` watermark (one second of overlap) picks up the rest
/// on the next run, and a provider (or proxy) answering odd links cannot fail the connection.
fn next_link(headers: &HeaderMap, base: &Url) -> Option<Url> {
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
fn within_base(url: &Url, base: &Url) -> bool {
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

    #[test]
    fn only_plain_repository_names_reach_a_path() {
        assert!(plain_full_name("octo-org/hello.world_2"));
        for bad in ["octo", "a/b/c", "../x", "a/..", "a/b?c", "a/ b", "/b"] {
            assert!(!plain_full_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_cursor_of_another_version_starts_over() {
        let now = parse_rfc3339("2026-03-01T12:30:45.5Z").expect("time");
        let fresh = Cursor::read(Some(&serde_json::json!({ "v": 99 })), now);
        assert_eq!(key_time(&fresh.floor), "2026-01-30T12:30:45Z");
        assert_eq!(fresh.since, fresh.floor);
        let value = fresh.page(Vec::new(), false).cursor;
        assert_eq!(Cursor::read(Some(&value), now), fresh);
    }
}
