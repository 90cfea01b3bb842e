//! Pushes read by sync. Each cycle after the first, after the issue events, the newest page of
//! each known repository's events (`GET /repos/{owner}/{repo}/events?per_page=100`,
//! <https://docs.github.com/en/rest/activity/events#list-repository-events>, `ETag` sent
//! back) gives its `PushEvent`s to branches since the repository's mark. Since 2025 their
//! payload names the ref, `head` and `before` but no commits
//! (<https://docs.github.com/en/rest/using-the-rest-api/github-event-types#pushevent>), so the
//! head commit is then read from the Git database
//! (`GET /repos/{owner}/{repo}/git/commits/{sha}`,
//! <https://docs.github.com/en/rest/git/commits#get-a-commit-object>) for its message, date
//! and page, one request per push. The signal is the webhook's `code_pushed`, under its key
//! (`push:<repository id>:<ref>:<after>`, the event's `head` being the webhook's `after`) with
//! the same actor (the event's actor: who pushed, the webhook's sender).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::normalize::{actor_of, key_time, push_key};
use super::wire::{Account, GitCommit, PushEventPayload, RepoEvent};
use crate::connector::{Metadata, SignalDraft};
use crate::domain::{parse_rfc3339, SignalKind, Timestamp};

/// Pushes waiting for their head commit, at most: all a repository's events listing can show.
pub(super) const MAX_PENDING: usize = WINDOW_EVENTS;

/// The events GitHub keeps listed per repository, 100 a page at most (and only those of the
/// last 90 days): <https://docs.github.com/en/rest/activity/events#list-repository-events>.
pub(super) const WINDOW_EVENTS: usize = 300;
/// Pages of a repository's events read in one scan (`per_page=100`).
pub(super) const MAX_EVENT_PAGES: u32 = 3;

/// The `head` of a push that deleted its branch.
const NO_COMMIT: &str = "0000000000000000000000000000000000000000";

/// How far a repository's events have been read: the newest event's time, and the ids of the
/// events of that second already taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PushMark {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

impl PushMark {
    /// Whether no event of the repository has been read yet.
    pub fn is_unset(&self) -> bool {
        self.at.is_none()
    }

    fn passed(&self, at: &Timestamp, id: &str) -> bool {
        match &self.at {
            Some(mark) => at < mark || (at == mark && self.ids.iter().any(|i| i == id)),
            None => false,
        }
    }

    fn advance(&mut self, at: Timestamp, id: &str) {
        if self.at.is_none_or(|mark| at > mark) {
            self.at = Some(at);
            self.ids.clear();
        }
        if self.at == Some(at) && !self.ids.iter().any(|i| i == id) {
            self.ids.push(id.to_string());
        }
    }
}

/// A push to a branch found in the events listing, whose head commit is still to be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PendingPush {
    pub repo_id: u64,
    pub repo: String,
    pub git_ref: String,
    pub head: String,
    pub before: String,
    pub actor_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_login: Option<String>,
    /// When the event was created (the listing's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// A repository's events listing being read page by page, newest first, back to its mark.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct EventsScan {
    /// The page to read next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Pages and events read so far.
    pub pages: u32,
    pub events: usize,
    /// The oldest event read so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<Timestamp>,
    /// How far the events read so far go: the repository's mark once the scan ends.
    #[serde(default)]
    pub mark: PushMark,
}

/// Reads one page of a repository's events into `scan`: the branch pushes created at or after
/// `floor` and past `mark` (the repository's mark when the scan began), and whether the page
/// reached that mark (an event already read, or older than it or than `floor`).
pub(super) fn scan_page(
    events: &[RepoEvent],
    floor: &Timestamp,
    mark: &PushMark,
    scan: &mut EventsScan,
) -> (Vec<PendingPush>, bool) {
    scan.pages = scan.pages.saturating_add(1);
    scan.events = scan.events.saturating_add(events.len());
    let mut reached = false;
    let mut pushes = Vec::new();
    for event in events {
        let Some(at) = event
            .created_at
            .as_deref()
            .and_then(|t| parse_rfc3339(t).ok())
        else {
            continue;
        };
        scan.oldest = Some(scan.oldest.map_or(at, |o| o.min(at)));
        if mark.passed(&at, &event.id) || at < *floor {
            reached = true;
            continue;
        }
        scan.mark.advance(at, &event.id);
        if let Some(push) = branch_push(event, at) {
            pushes.push(push);
        }
    }
    (pushes, reached)
}

/// The push to a branch `event` is, if it is one.
fn branch_push(event: &RepoEvent, at: Timestamp) -> Option<PendingPush> {
    if event.kind.as_deref() != Some("PushEvent") {
        return None;
    }
    let payload: PushEventPayload = serde_json::from_value(event.payload.clone()).ok()?;
    // Tags point at code already pushed, and deletions push nothing (as the webhook:
    // https://docs.github.com/en/webhooks/webhook-events-and-payloads#push).
    if !payload.git_ref.starts_with("refs/heads/") || payload.head == NO_COMMIT {
        return None;
    }
    Some(PendingPush {
        repo_id: event.repo.id,
        repo: event.repo.name.clone(),
        git_ref: payload.git_ref,
        head: payload.head,
        before: payload.before,
        actor_id: event.actor.id,
        actor_login: event.actor.login.clone(),
        at: Some(at),
    })
}

/// The pushes a scan found, oldest first, at most [`MAX_PENDING`].
pub(super) fn oldest_first(mut pushes: Vec<PendingPush>) -> Vec<PendingPush> {
    pushes.sort_by_key(|p| p.at);
    pushes.truncate(MAX_PENDING);
    pushes
}

/// The branch pushes of one listing `events` past `mark`, oldest first; `mark` moves past
/// every event read.
#[cfg(test)]
fn pending_pushes(
    events: &[RepoEvent],
    floor: &Timestamp,
    mark: &mut PushMark,
) -> Vec<PendingPush> {
    let mut scan = EventsScan {
        mark: mark.clone(),
        ..EventsScan::default()
    };
    let (found, _) = scan_page(events, floor, mark, &mut scan);
    *mark = scan.mark;
    oldest_first(found)
}

/// The connection's metadata member naming the repositories whose pushes may be missing:
/// `{"owner/repo": {"from": …, "until": …, "seen_at": …}}`, pushes created between `from` (the
/// last read) and `until` (the oldest event GitHub still listed) possibly lost.
pub const PUSHES_MISSED: &str = "pushes_possibly_missed";
/// Repositories kept in [`PUSHES_MISSED`], the latest first.
const MAX_MISSED: usize = 50;

/// The metadata patch recording that `repo`'s events ended at `until` without reaching `from`.
pub(super) fn pushes_missed_patch(
    metadata: &Metadata,
    repo: &str,
    from: &Timestamp,
    until: Option<&Timestamp>,
    now: &Timestamp,
) -> Option<Metadata> {
    let mut missed: Vec<(String, Value)> = metadata
        .get(PUSHES_MISSED)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(name, _)| name.as_str() != repo)
                .map(|(name, gap)| (name.clone(), gap.clone()))
                .collect()
        })
        .unwrap_or_default();
    missed.sort_by(|a, b| b.1["seen_at"].as_str().cmp(&a.1["seen_at"].as_str()));
    missed.truncate(MAX_MISSED.saturating_sub(1));
    let gap = json!({
        "from": key_time(from),
        "until": until.map(key_time),
        "seen_at": key_time(now),
    });
    missed.insert(0, (repo.to_string(), gap));
    let mut patch = Metadata::new();
    patch.insert(
        PUSHES_MISSED.into(),
        Value::Object(missed.into_iter().collect()),
    );
    Some(patch)
}

/// `code_pushed` for a push and its head commit, as the webhook gives it: at the head commit's
/// author date, titled by its message's first line, linking to its page.
pub(super) fn push_draft(push: &PendingPush, commit: &GitCommit) -> Option<SignalDraft> {
    let at = parse_rfc3339(&commit.author.date).ok()?;
    let headline = commit
        .message
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let branch = push.git_ref.strip_prefix("refs/heads/")?;
    let actor = Account {
        id: push.actor_id,
        login: push.actor_login.clone(),
    };
    Some(SignalDraft {
        kind: SignalKind::of("code_pushed"),
        occurred_at: at,
        actor: Some(actor_of(&actor)),
        title: Some(headline.clone()),
        url: Some(commit.html_url.clone()),
        external_id: Some(push.head.clone()),
        dedupe_key: push_key(push.repo_id, &push.git_ref, &push.head),
        payload: json!({
            "repository": push.repo,
            "ref": push.git_ref,
            "branch": branch,
            "before": push.before,
            "after": push.head,
            "head_commit": { "id": commit.sha, "message": headline },
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: &str, at: &str, git_ref: &str, head: &str) -> RepoEvent {
        serde_json::from_value(json!({
            "id": id, "type": kind, "created_at": at, "public": true,
            "actor": { "id": 583231, "login": "octocat" },
            "repo": { "id": 1296269, "name": "octocat/Hello-World" },
            "payload": {
                "repository_id": 1296269, "push_id": 10115855396u64, "ref": git_ref,
                "head": head, "before": "883efe034920928c47fe18598c01249d1a9fdabd"
            }
        }))
        .expect("event")
    }

    #[test]
    fn branch_pushes_past_the_mark_are_taken_once_oldest_first() {
        let floor = parse_rfc3339("2026-01-01T00:00:00Z").expect("time");
        let head = "7a8f3ac80e2ad2f6842cb86f576d4bfe2c03e300";
        let events = [
            event(
                "5",
                "PushEvent",
                "2026-01-03T00:00:00Z",
                "refs/heads/main",
                head,
            ),
            event(
                "4",
                "PushEvent",
                "2026-01-02T00:00:00Z",
                "refs/tags/v1",
                head,
            ),
            event(
                "3",
                "PushEvent",
                "2026-01-02T00:00:00Z",
                "refs/heads/gone",
                NO_COMMIT,
            ),
            event(
                "2",
                "IssuesEvent",
                "2026-01-02T00:00:00Z",
                "refs/heads/main",
                head,
            ),
            event(
                "1",
                "PushEvent",
                "2025-12-31T00:00:00Z",
                "refs/heads/main",
                head,
            ),
            event(
                "6",
                "PushEvent",
                "2026-01-03T00:00:00Z",
                "refs/heads/dev",
                head,
            ),
        ];
        let mut mark = PushMark::default();
        let taken = pending_pushes(&events, &floor, &mut mark);
        let refs: Vec<&str> = taken.iter().map(|p| p.git_ref.as_str()).collect();
        assert_eq!(refs, ["refs/heads/main", "refs/heads/dev"]);
        assert_eq!(mark.ids, ["5", "6"], "every event of the newest second");
        assert!(pending_pushes(&events, &floor, &mut mark).is_empty());
        let later = [event(
            "7",
            "PushEvent",
            "2026-01-03T00:00:00Z",
            "refs/heads/x",
            head,
        )];
        assert_eq!(pending_pushes(&later, &floor, &mut mark).len(), 1);
    }

    #[test]
    fn a_push_takes_the_webhooks_key_and_its_head_commits_message_date_and_page() {
        let floor = parse_rfc3339("2026-01-01T00:00:00Z").expect("time");
        let head = "7a8f3ac80e2ad2f6842cb86f576d4bfe2c03e300";
        let events = [event(
            "5",
            "PushEvent",
            "2026-01-03T00:00:00Z",
            "refs/heads/main",
            head,
        )];
        let push = pending_pushes(&events, &floor, &mut PushMark::default()).remove(0);
        let commit: GitCommit = serde_json::from_value(json!({
            "sha": head, "html_url": format!("https://github.com/octocat/Hello-World/commit/{head}"),
            "message": "Fix all the bugs\n\nDetails.",
            "author": { "date": "2026-01-02T23:59:00Z", "name": "Monalisa", "email": "m@example.com" }
        }))
        .expect("commit");
        let draft = push_draft(&push, &commit).expect("draft");
        assert_eq!(
            draft.dedupe_key,
            format!("push:1296269:refs/heads/main:{head}")
        );
        assert_eq!(draft.title.as_deref(), Some("Fix all the bugs"));
        assert_eq!(draft.actor.map(|a| a.id).as_deref(), Some("583231"));
        assert_eq!(draft.payload["branch"], Value::from("main"));
    }

    #[test]
    fn a_scan_reaches_the_mark_on_an_event_already_read_or_older() {
        let floor = parse_rfc3339("2026-01-01T00:00:00Z").expect("time");
        let head = "7a8f3ac80e2ad2f6842cb86f576d4bfe2c03e300";
        let newer = [event(
            "9",
            "PushEvent",
            "2026-01-05T00:00:00Z",
            "refs/heads/main",
            head,
        )];
        let mark = PushMark {
            at: parse_rfc3339("2026-01-04T00:00:00Z").ok(),
            ids: vec!["8".into()],
        };
        let mut scan = EventsScan::default();
        let (found, reached) = scan_page(&newer, &floor, &mark, &mut scan);
        assert_eq!((found.len(), reached), (1, false));
        let read_before = [event(
            "8",
            "PushEvent",
            "2026-01-04T00:00:00Z",
            "refs/heads/main",
            head,
        )];
        let (found, reached) = scan_page(&read_before, &floor, &mark, &mut scan);
        assert_eq!((found.len(), reached), (0, true));
        assert_eq!((scan.pages, scan.events), (2, 2));
        assert_eq!(scan.mark.ids, ["9"]);
    }

    #[test]
    fn a_gap_is_kept_per_repository_the_latest_first() {
        let at = |t: &str| parse_rfc3339(t).expect("time");
        let first = pushes_missed_patch(
            &Metadata::new(),
            "octo/app",
            &at("2026-01-01T00:00:00Z"),
            Some(&at("2026-01-02T00:00:00Z")),
            &at("2026-01-03T00:00:00Z"),
        )
        .expect("a patch");
        let second = pushes_missed_patch(
            &first,
            "octo/lib",
            &at("2026-01-04T00:00:00Z"),
            None,
            &at("2026-01-05T00:00:00Z"),
        )
        .expect("a patch");
        let gaps = &second[PUSHES_MISSED];
        assert_eq!(gaps["octo/app"]["until"], "2026-01-02T00:00:00Z");
        assert_eq!(gaps["octo/lib"]["from"], "2026-01-04T00:00:00Z");
        assert_eq!(gaps["octo/lib"]["until"], Value::Null);
    }
}
