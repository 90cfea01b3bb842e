//! Activity the issues listing does not show. Before it, at the start of each cycle after the
//! first, the issue events of each repository known (`GET /repos/{owner}/{repo}/issues/events`,
//! newest first, first page only,
//! <https://docs.github.com/en/rest/issues/events#list-issue-events-for-a-repository>):
//! `reopened` as `issue_reopened` / `pr_reopened` and an issue's `closed` as `issue_closed`,
//! with who did it, under the webhooks' keys; read before the listing so that its actor-less
//! update or close of the same moment does not take the key first. After it: the comments of each
//! repository seen (`GET /repos/{owner}/{repo}/issues/comments?since=…`,
//! <https://docs.github.com/en/rest/issues/comments#list-issue-comments-for-a-repository>) as
//! `issue_commented`, and the reviews of each pull request updated in the cycle
//! (`GET /repos/{owner}/{repo}/pulls/{number}/reviews`,
//! <https://docs.github.com/en/rest/pulls/reviews#list-reviews-for-a-pull-request>) as
//! `pr_reviewed`, under the webhooks' dedupe keys (`comment:<id>`, `review:<id>`). The actor is
//! the comment's or review's author (a webhook names its sender, the same person). Titles come
//! from the items the cycle's issues listing showed (a new comment moves its issue's
//! `updated_at`, so its issue is among them).

use serde::{Deserialize, Serialize};
use serde_json::json;
#[cfg(test)]
use serde_json::Value;

use super::normalize::{actor_of, change_key, issue_payload, issue_subject, pull_identity, Change};
use super::wire::{Issue, IssueEvent, ListedComment, ListedReview};
use crate::connector::SignalDraft;
use crate::domain::{parse_rfc3339, SignalKind, Timestamp};

/// Items of one cycle remembered for their titles, and pull requests queued for reviews.
pub(super) const MAX_SEEN: usize = 500;

/// An issue or pull request the cycle's listing showed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Seen {
    pub repo: String,
    pub number: u64,
    /// The issue id (a pull request's issue id: the listing has no other).
    pub id: u64,
    pub title: String,
    pub pull: bool,
}

impl Seen {
    pub fn of(issue: &Issue, repo: &str) -> Self {
        Self {
            repo: repo.to_string(),
            number: issue.number,
            id: issue.id,
            title: issue.title.clone(),
            pull: issue.pull_request.is_some(),
        }
    }
}

/// The issue number at the end of a comment's `issue_url` (`…/issues/{number}`).
fn issue_number(issue_url: &str) -> Option<u64> {
    issue_url.rsplit('/').next()?.parse().ok()
}

/// `issue_commented` for a listed comment created at or after `floor`.
pub(super) fn comment_draft(
    comment: &ListedComment,
    repo: &str,
    seen: &[Seen],
    floor: &Timestamp,
) -> Option<SignalDraft> {
    let at = parse_rfc3339(&comment.created_at).ok()?;
    if at < *floor {
        return None;
    }
    let number = issue_number(&comment.issue_url)?;
    let item = seen.iter().find(|s| s.repo == repo && s.number == number);
    Some(SignalDraft {
        kind: SignalKind::of("issue_commented"),
        occurred_at: at,
        actor: comment.user.as_ref().map(actor_of),
        title: item.map(|i| i.title.clone()),
        url: Some(comment.html_url.clone()),
        external_id: Some(comment.id.to_string()),
        dedupe_key: format!("comment:{}", comment.id),
        payload: json!({
            "repository": repo,
            "number": number,
            "issue_id": item.map(|i| i.id),
            "comment_id": comment.id,
            "is_pull_request": item.map(|i| i.pull),
            "action": "created",
        }),
    })
}

/// `pr_reviewed` for a submitted review of `pull` submitted at or after `floor`.
pub(super) fn review_draft(
    review: &ListedReview,
    pull: &Seen,
    floor: &Timestamp,
) -> Option<SignalDraft> {
    // A pending review has not been submitted (no `submitted_at`).
    let at = parse_rfc3339(review.submitted_at.as_deref()?).ok()?;
    if at < *floor || review.state.eq_ignore_ascii_case("pending") {
        return None;
    }
    Some(SignalDraft {
        kind: SignalKind::of("pr_reviewed"),
        occurred_at: at,
        actor: review.user.as_ref().map(actor_of),
        title: Some(pull.title.clone()),
        url: Some(review.html_url.clone()),
        external_id: Some(review.id.to_string()),
        dedupe_key: format!("review:{}", review.id),
        payload: json!({
            "repository": pull.repo,
            "number": pull.number,
            "review_id": review.id,
            "state": review.state.to_ascii_lowercase(),
            "action": "submitted",
        }),
    })
}

/// `issue_reopened`, `pr_reopened` or `issue_closed` for an issue event at or after `after`;
/// a pull request's close (merged or not) is left to the listing.
pub(super) fn event_draft(
    event: &IssueEvent,
    repo: &str,
    after: &Timestamp,
) -> Option<SignalDraft> {
    let at = parse_rfc3339(&event.created_at).ok()?;
    let issue = event.issue.as_ref()?;
    if at < *after {
        return None;
    }
    let pull = issue.pull_request.is_some();
    let (kind, subject, change, external_id) = match (event.event.as_str(), pull) {
        ("reopened", false) => (
            "issue_reopened",
            issue_subject(issue.id),
            Change::Changed,
            issue.id.to_string(),
        ),
        ("reopened", true) => {
            let identity = pull_identity(repo, issue.number);
            (
                "pr_reopened",
                format!("pr:{identity}"),
                Change::Changed,
                identity,
            )
        }
        ("closed", false) => (
            "issue_closed",
            issue_subject(issue.id),
            Change::Closed,
            issue.id.to_string(),
        ),
        _ => return None,
    };
    let payload = if pull {
        json!({ "repository": repo, "number": issue.number, "action": event.event })
    } else {
        issue_payload(issue, repo, Some(&event.event))
    };
    Some(SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at: at,
        actor: event.actor.as_ref().map(actor_of),
        title: Some(issue.title.clone()),
        url: Some(issue.html_url.clone()),
        external_id: Some(external_id),
        dedupe_key: change_key(&subject, change, &at),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopenings_and_issue_closings_take_the_webhooks_keys_with_their_actor() {
        let after = parse_rfc3339("2026-01-01T00:00:00Z").expect("time");
        let event = |kind: &str, pull: bool, at: &str| -> IssueEvent {
            serde_json::from_value(json!({
                "id": 1, "event": kind, "created_at": at, "actor": { "id": 5, "login": "hubot" },
                "issue": {
                    "id": 7, "number": 3, "title": "Crash", "state": "open",
                    "html_url": format!("https://github.com/octo/app/{}/3", if pull { "pull" } else { "issues" }),
                    "created_at": "2025-06-01T00:00:00Z", "updated_at": at,
                    "pull_request": if pull { json!({ "merged_at": null }) } else { Value::Null }
                }
            }))
            .expect("event")
        };
        let at = "2026-01-02T10:00:00Z";
        let reopened =
            event_draft(&event("reopened", false, at), "octo/app", &after).expect("draft");
        assert_eq!(reopened.kind, "issue_reopened");
        assert_eq!(reopened.dedupe_key, "issue:7:changed:2026-01-02T10:00:00Z");
        assert_eq!(reopened.actor.map(|a| a.id).as_deref(), Some("5"));
        let pr = event_draft(&event("reopened", true, at), "octo/app", &after).expect("draft");
        assert_eq!(pr.kind, "pr_reopened");
        assert_eq!(pr.dedupe_key, "pr:octo/app#3:changed:2026-01-02T10:00:00Z");
        let closed = event_draft(&event("closed", false, at), "octo/app", &after).expect("draft");
        assert_eq!(closed.dedupe_key, "issue:7:closed:2026-01-02T10:00:00Z");
        assert!(event_draft(&event("closed", true, at), "octo/app", &after).is_none());
        assert!(event_draft(&event("labeled", false, at), "octo/app", &after).is_none());
        let old = event("reopened", false, "2025-12-31T00:00:00Z");
        assert!(event_draft(&old, "octo/app", &after).is_none());
    }

    #[test]
    fn comments_and_reviews_take_the_webhooks_keys_and_their_items_titles() {
        let floor = parse_rfc3339("2026-01-01T00:00:00Z").expect("time");
        let seen = [Seen {
            repo: "octo/app".into(),
            number: 3,
            id: 7,
            title: "Crash".into(),
            pull: true,
        }];
        let comment: ListedComment = serde_json::from_value(json!({
            "id": 55, "html_url": "https://github.com/octo/app/pull/3#issuecomment-55",
            "issue_url": "https://api.github.com/repos/octo/app/issues/3",
            "created_at": "2026-01-02T10:00:00Z", "user": { "id": 1, "login": "octocat" }
        }))
        .expect("comment");
        let draft = comment_draft(&comment, "octo/app", &seen, &floor).expect("draft");
        assert_eq!(draft.dedupe_key, "comment:55");
        assert_eq!(draft.title.as_deref(), Some("Crash"));
        assert_eq!(draft.actor.map(|a| a.id).as_deref(), Some("1"));
        assert_eq!(draft.payload["is_pull_request"], true);
        let old = ListedComment {
            created_at: "2025-12-31T23:59:59Z".into(),
            ..comment
        };
        assert!(comment_draft(&old, "octo/app", &seen, &floor).is_none());

        let review: ListedReview = serde_json::from_value(json!({
            "id": 80, "html_url": "https://github.com/octo/app/pull/3#pullrequestreview-80",
            "state": "APPROVED", "submitted_at": "2026-01-02T11:00:00Z",
            "user": { "id": 2, "login": "hubot" }
        }))
        .expect("review");
        let draft = review_draft(&review, &seen[0], &floor).expect("draft");
        assert_eq!(draft.dedupe_key, "review:80");
        assert_eq!(draft.payload["state"], "approved");
        let pending = ListedReview {
            state: "PENDING".into(),
            submitted_at: None,
            ..review
        };
        assert!(review_draft(&pending, &seen[0], &floor).is_none());
    }
}
