//! Activity the issues listing does not show, read by sync after it: the comments of each
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

use super::normalize::actor_of;
use super::wire::{Issue, ListedComment, ListedReview};
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

#[cfg(test)]
mod tests {
    use super::*;

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
