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

mod activity;
mod answer;
mod issues;

use activity::*;
use answer::*;
use issues::*;

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

#[cfg(test)]
mod tests {
    use super::*;

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
