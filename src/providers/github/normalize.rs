//! GitHub activity as signals, from webhooks and from sync alike.
//!
//! Webhook mapping (event `X-GitHub-Event`, then the payload's `action`):
//!
//! | event | action | kind | `occurred_at` |
//! | --- | --- | --- | --- |
//! | `issues` | `opened` / [`UPDATING_ISSUE_ACTIONS`] / `closed` / `reopened` | `issue_created` / `issue_updated` / `issue_closed` / `issue_reopened` | `created_at` / `updated_at` / `closed_at` / `updated_at` |
//! | `issue_comment` | `created` | `issue_commented` | `comment.created_at` |
//! | `pull_request` | `opened` / [`UPDATING_PULL_ACTIONS`] / `closed` / `reopened` | `pr_opened` / `pr_updated` / `pr_merged` or `pr_closed` / `pr_reopened` | `created_at` / `updated_at` / `merged_at` or `closed_at` / `updated_at` |
//! | `pull_request_review` | `submitted` | `pr_reviewed` | `review.submitted_at` |
//! | `push` | (branch pushes with a head commit) | `code_pushed` | `head_commit.timestamp` (url: `head_commit.url`) |
//! | `release` | `published` | `release_published` | `release.published_at` |
//!
//! Everything else (other events, other actions, `ping`, tag pushes, branch deletions) is
//! ignored. A body that is not JSON (nor GitHub's form encoding, `payload=<json>`) is an error.
//!
//! Dedupe keys name the change, not the delivery, so the same change seen by a webhook and by
//! a later sync is one signal (the store keeps the first):
//!
//! - issues: `issue:<issue id>:created`, `issue:<issue id>:closed:<closed_at>`,
//!   `issue:<issue id>:changed:<updated_at>`;
//! - pull requests: `pr:<owner>/<repo>#<number>:created`, `…:closed:<closed_at>`,
//!   `…:changed:<updated_at>`. The REST issues listing gives a pull request's *issue* id, not
//!   its pull request id, so repository and number identify it on both paths (also its
//!   `external_id`);
//! - `comment:<comment id>`, `review:<review id>`, `push:<repository id>:<ref>:<after sha>`,
//!   `release:<release id>:published`.
//!
//! Times in keys are UTC to the second (`2019-05-15T15:20:18Z`), as GitHub writes them.

use chrono::SecondsFormat;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::wire::{
    Account, Issue, IssueCommentEvent, IssuesEvent, PullRequest, PullRequestEvent,
    PullRequestReviewEvent, Push, Release, ReleaseEvent, Repository,
};
use crate::connector::{Normalized, SignalDraft, WebhookEvent};
use crate::domain::{parse_rfc3339, Actor, SignalKind, Timestamp};

/// `issues` actions that are `issue_updated`: changes to what the issue says or how it is
/// filed, each of which moves its `updated_at`, so a sync that sees that `updated_at` reports
/// the same change (<https://docs.github.com/en/webhooks/webhook-events-and-payloads#issues>).
/// Not: `pinned`/`unpinned`, `locked`/`unlocked`, `transferred`, `deleted`, typed and
/// sub-issue actions (ignored).
pub(super) const UPDATING_ISSUE_ACTIONS: &[&str] = &[
    "edited",
    "labeled",
    "unlabeled",
    "assigned",
    "unassigned",
    "milestoned",
    "demilestoned",
];

/// `pull_request` actions that are `pr_updated`: the same, plus new commits on the head branch
/// (`synchronize`) and draft changes
/// (<https://docs.github.com/en/webhooks/webhook-events-and-payloads#pull_request>). Not:
/// review requests, `locked`/`unlocked`, auto-merge and merge-queue actions (ignored).
pub(super) const UPDATING_PULL_ACTIONS: &[&str] = &[
    "edited",
    "synchronize",
    "labeled",
    "unlabeled",
    "assigned",
    "unassigned",
    "milestoned",
    "demilestoned",
    "ready_for_review",
    "converted_to_draft",
];

/// What happened to an issue or pull request; decides the dedupe key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// Opened: happens once.
    Created,
    /// Closed (or merged) at the given time.
    Closed,
    /// Any other change, at `updated_at`.
    Changed,
}

/// `key` for `change` of `subject` at `at`.
pub(super) fn change_key(subject: &str, change: Change, at: &Timestamp) -> String {
    match change {
        Change::Created => format!("{subject}:created"),
        Change::Closed => format!("{subject}:closed:{}", key_time(at)),
        Change::Changed => format!("{subject}:changed:{}", key_time(at)),
    }
}

/// A time as it appears in keys and in GitHub's own JSON: UTC, whole seconds, `Z`.
pub(super) fn key_time(at: &Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(field: &str, value: &str) -> Result<Timestamp, String> {
    parse_rfc3339(value).map_err(|e| format!("{field} {e}"))
}

/// The actor an account is.
pub(super) fn actor_of(account: &Account) -> Actor {
    actor(account)
}

fn actor(account: &Account) -> Actor {
    Actor {
        id: account.id.to_string(),
        name: account.login.clone(),
        email: None,
    }
}

pub(super) fn issue_subject(issue_id: u64) -> String {
    format!("issue:{issue_id}")
}

/// A pull request's identity on both paths: `owner/repo#number`.
pub(super) fn pull_identity(repository: &str, number: u64) -> String {
    format!("{repository}#{number}")
}

fn labels(issue: &Issue) -> Value {
    issue.labels.iter().map(|l| l.name.clone()).collect()
}

/// Turns a stored delivery into signals.
pub(super) fn normalize(event: &WebhookEvent) -> Result<Normalized, String> {
    let body = parse_body(event)?;
    let action = body
        .get("action")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let sender = body
        .get("sender")
        .and_then(|s| serde_json::from_value::<Account>(s.clone()).ok())
        .as_ref()
        .map(actor);
    let action = action.as_deref();
    let drafts = match event.event_type.as_deref() {
        Some("issues") => issues(body, action, sender)?,
        Some("issue_comment") => issue_comment(body, action, sender)?,
        Some("pull_request") => pull_request(body, action, sender)?,
        Some("pull_request_review") => pull_request_review(body, action, sender)?,
        Some("push") => push(body, sender)?,
        Some("release") => release(body, action, sender)?,
        _ => None,
    };
    Ok(match drafts {
        Some(draft) => Normalized::Signals(vec![draft]),
        None => Normalized::Ignored,
    })
}

/// The payload as JSON: the body itself (`application/json`) or its `payload` form field
/// (`application/x-www-form-urlencoded`, GitHub's other content type:
/// <https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers>).
pub(super) fn parse_body(event: &WebhookEvent) -> Result<Value, String> {
    parse_payload(event.header("content-type"), &event.body)
}

/// [`parse_body`] on a body and its `Content-Type`.
pub(super) fn parse_payload(content_type: Option<&str>, body: &[u8]) -> Result<Value, String> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Ok(value);
    }
    let form = content_type.is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form {
        if let Some((_, payload)) =
            url::form_urlencoded::parse(body).find(|(name, _)| name == "payload")
        {
            return serde_json::from_str(&payload)
                .map_err(|e| format!("the payload form field is not JSON: {e}"));
        }
    }
    Err("the body is not a GitHub webhook payload: not JSON".to_string())
}

fn read<T: DeserializeOwned>(body: Value, event: &str) -> Result<T, String> {
    serde_json::from_value(body).map_err(|e| format!("the {event} payload cannot be read: {e}"))
}

fn issues(
    body: Value,
    action: Option<&str>,
    sender: Option<Actor>,
) -> Result<Option<SignalDraft>, String> {
    let (kind, change) = match action {
        Some("opened") => ("issue_created", Change::Created),
        Some(a) if UPDATING_ISSUE_ACTIONS.contains(&a) => ("issue_updated", Change::Changed),
        Some("closed") => ("issue_closed", Change::Closed),
        Some("reopened") => ("issue_reopened", Change::Changed),
        _ => return Ok(None),
    };
    let event: IssuesEvent = read(body, "issues")?;
    let issue = &event.issue;
    let at = issue_time(issue, change)?;
    Ok(Some(SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at: at,
        actor: sender,
        title: Some(issue.title.clone()),
        url: Some(issue.html_url.clone()),
        external_id: Some(issue.id.to_string()),
        dedupe_key: change_key(&issue_subject(issue.id), change, &at),
        payload: issue_payload(issue, &event.repository.full_name, action),
    }))
}

/// When `change` happened to an issue (or a pull request from the issues listing).
fn issue_time(issue: &Issue, change: Change) -> Result<Timestamp, String> {
    match (change, &issue.closed_at) {
        (Change::Created, _) => time("created_at", &issue.created_at),
        (Change::Closed, Some(closed)) => time("closed_at", closed),
        _ => time("updated_at", &issue.updated_at),
    }
}

pub(super) fn issue_payload(issue: &Issue, repository: &str, action: Option<&str>) -> Value {
    let mut payload = json!({
        "repository": repository,
        "number": issue.number,
        "issue_id": issue.id,
        "state": issue.state,
        "state_reason": issue.state_reason,
        "labels": labels(issue),
        "author": issue.user.as_ref().and_then(|u| u.login.clone()),
    });
    with_action(&mut payload, action);
    payload
}

fn with_action(payload: &mut Value, action: Option<&str>) {
    if let (Some(map), Some(action)) = (payload.as_object_mut(), action) {
        map.insert("action".into(), Value::from(action));
    }
}

fn issue_comment(
    body: Value,
    action: Option<&str>,
    sender: Option<Actor>,
) -> Result<Option<SignalDraft>, String> {
    if action != Some("created") {
        return Ok(None);
    }
    let event: IssueCommentEvent = read(body, "issue_comment")?;
    let (issue, comment) = (&event.issue, &event.comment);
    let at = time("comment.created_at", &comment.created_at)?;
    Ok(Some(SignalDraft {
        kind: SignalKind::of("issue_commented"),
        occurred_at: at,
        actor: sender,
        title: Some(issue.title.clone()),
        url: Some(comment.html_url.clone()),
        external_id: Some(comment.id.to_string()),
        dedupe_key: format!("comment:{}", comment.id),
        payload: json!({
            "repository": event.repository.full_name,
            "number": issue.number,
            "issue_id": issue.id,
            "comment_id": comment.id,
            "is_pull_request": issue.pull_request.is_some(),
            "action": "created",
        }),
    }))
}

fn pull_request(
    body: Value,
    action: Option<&str>,
    sender: Option<Actor>,
) -> Result<Option<SignalDraft>, String> {
    let change = match action {
        Some("opened") => Change::Created,
        Some("reopened") => Change::Changed,
        Some(a) if UPDATING_PULL_ACTIONS.contains(&a) => Change::Changed,
        Some("closed") => Change::Closed,
        _ => return Ok(None),
    };
    let event: PullRequestEvent = read(body, "pull_request")?;
    let pr = &event.pull_request;
    let merged = pr.merged.unwrap_or(false) || pr.merged_at.is_some();
    let kind = match (action, merged) {
        (Some("opened"), _) => "pr_opened",
        (Some("reopened"), _) => "pr_reopened",
        (Some("closed"), true) => "pr_merged",
        (Some("closed"), false) => "pr_closed",
        _ => "pr_updated",
    };
    let (key_at, at) = match (change, &pr.closed_at) {
        (Change::Created, _) => {
            let at = time("created_at", &pr.created_at)?;
            (at, at)
        }
        (Change::Closed, Some(closed)) => {
            let closed = time("closed_at", closed)?;
            let at = match (&pr.merged_at, merged) {
                (Some(merged_at), true) => time("merged_at", merged_at)?,
                _ => closed,
            };
            (closed, at)
        }
        _ => {
            let at = time("updated_at", &pr.updated_at)?;
            (at, at)
        }
    };
    let repository = &event.repository.full_name;
    let identity = pull_identity(repository, pr.number);
    Ok(Some(SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at: at,
        actor: sender,
        title: Some(pr.title.clone()),
        url: Some(pr.html_url.clone()),
        external_id: Some(identity.clone()),
        dedupe_key: change_key(&format!("pr:{identity}"), change, &key_at),
        payload: pull_payload(pr, repository, merged, action),
    }))
}

fn pull_payload(pr: &PullRequest, repository: &str, merged: bool, action: Option<&str>) -> Value {
    let mut payload = json!({
        "repository": repository,
        "number": pr.number,
        "pull_request_id": pr.id,
        "state": pr.state,
        "draft": pr.draft.unwrap_or(false),
        "merged": merged,
        "base": pr.base.as_ref().map(|r| r.name.clone()),
        "head": pr.head.as_ref().map(|r| r.name.clone()),
    });
    with_action(&mut payload, action);
    payload
}

fn pull_request_review(
    body: Value,
    action: Option<&str>,
    sender: Option<Actor>,
) -> Result<Option<SignalDraft>, String> {
    if action != Some("submitted") {
        return Ok(None);
    }
    let event: PullRequestReviewEvent = read(body, "pull_request_review")?;
    let (review, pr) = (&event.review, &event.pull_request);
    let submitted = review
        .submitted_at
        .as_deref()
        .ok_or("the submitted review has no submitted_at")?;
    let at = time("review.submitted_at", submitted)?;
    Ok(Some(SignalDraft {
        kind: SignalKind::of("pr_reviewed"),
        occurred_at: at,
        actor: sender,
        title: Some(pr.title.clone()),
        url: Some(review.html_url.clone()),
        external_id: Some(review.id.to_string()),
        dedupe_key: format!("review:{}", review.id),
        payload: json!({
            "repository": event.repository.full_name,
            "number": pr.number,
            "pull_request_id": pr.id,
            "review_id": review.id,
            "state": review.state.to_ascii_lowercase(),
            "action": "submitted",
        }),
    }))
}

/// The dedupe key of a push to `git_ref` of repository `repository_id` that left it at `after`.
pub(super) fn push_key(repository_id: u64, git_ref: &str, after: &str) -> String {
    format!("push:{repository_id}:{git_ref}:{after}")
}

fn push(body: Value, sender: Option<Actor>) -> Result<Option<SignalDraft>, String> {
    let push: Push = read(body, "push")?;
    // Tags point at code already pushed (releases report them); deletions push nothing and
    // carry `head_commit: null` (https://docs.github.com/en/webhooks/webhook-events-and-payloads#push).
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        return Ok(None);
    };
    let Some(head) = push.head_commit.as_ref().filter(|_| !push.deleted) else {
        return Ok(None);
    };
    let at = time("head_commit.timestamp", &head.timestamp)?;
    let Repository { id, full_name, .. } = &push.repository;
    let headline = head.message.lines().next().unwrap_or_default().to_string();
    Ok(Some(SignalDraft {
        kind: SignalKind::of("code_pushed"),
        occurred_at: at,
        actor: sender,
        title: Some(headline.clone()),
        // The head commit's page, which sync can find too; the compare view is in the payload.
        url: head.url.clone(),
        external_id: Some(push.after.clone()),
        dedupe_key: push_key(*id, &push.git_ref, &push.after),
        payload: json!({
            "repository": full_name,
            "ref": push.git_ref,
            "branch": branch,
            "before": push.before,
            "after": push.after,
            "created": push.created,
            "forced": push.forced,
            "commits": push.commits.len(),
            "compare": push.compare,
            "head_commit": { "id": head.id, "message": headline },
        }),
    }))
}

fn release(
    body: Value,
    action: Option<&str>,
    sender: Option<Actor>,
) -> Result<Option<SignalDraft>, String> {
    if action != Some("published") {
        return Ok(None);
    }
    let event: ReleaseEvent = read(body, "release")?;
    release_draft(
        &event.release,
        &event.repository.full_name,
        sender,
        Some("published"),
    )
    .map(Some)
}

/// A published release as a signal; `Err` when it carries no `published_at`.
fn release_draft(
    release: &Release,
    repository: &str,
    actor: Option<Actor>,
    action: Option<&str>,
) -> Result<SignalDraft, String> {
    let published = release
        .published_at
        .as_deref()
        .ok_or("the release has no published_at")?;
    let at = time("release.published_at", published)?;
    let title = release
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| release.tag_name.clone());
    let mut payload = json!({
        "repository": repository,
        "release_id": release.id,
        "tag": release.tag_name,
        "name": release.name,
        "prerelease": release.prerelease,
    });
    with_action(&mut payload, action);
    Ok(SignalDraft {
        kind: SignalKind::of("release_published"),
        occurred_at: at,
        actor,
        title: Some(title),
        url: Some(release.html_url.clone()),
        external_id: Some(release.id.to_string()),
        dedupe_key: format!("release:{}:published", release.id),
        payload,
    })
}

/// The signals sync reports for one item of the issues listing (an issue or a pull request):
/// its opening, its closing (or merge) and its latest other change, each only when it happened
/// at or after `floor`. The keys are the webhook path's for the same change.
pub(super) fn listed_issue(issue: &Issue, floor: &Timestamp) -> Result<Vec<SignalDraft>, String> {
    let repository = listed_repository(issue)
        .ok_or_else(|| format!("issue {} names no repository", issue.id))?;
    let created = time("created_at", &issue.created_at)?;
    let updated = time("updated_at", &issue.updated_at)?;
    let closed = issue
        .closed_at
        .as_deref()
        .map(|c| time("closed_at", c))
        .transpose()?;
    let pull = issue.pull_request.as_ref();
    let merged_at = pull
        .and_then(|p| p.merged_at.as_deref())
        .map(|m| time("merged_at", m))
        .transpose()?;
    // The listing gives a pull request's issue id, not its own (https://docs.github.com/en/rest/issues/issues#list-issues-assigned-to-the-authenticated-user).
    let (subject, external_id) = match pull {
        Some(_) => {
            let identity = pull_identity(&repository, issue.number);
            (format!("pr:{identity}"), identity)
        }
        None => (issue_subject(issue.id), issue.id.to_string()),
    };
    let mut payload = match pull {
        Some(_) => json!({
            "repository": repository,
            "number": issue.number,
            "state": issue.state,
            "merged": merged_at.is_some(),
        }),
        None => issue_payload(issue, &repository, None),
    };
    if pull.is_some() {
        if let Some(map) = payload.as_object_mut() {
            map.insert("labels".into(), labels(issue));
            map.insert(
                "author".into(),
                json!(issue.user.as_ref().and_then(|u| u.login.clone())),
            );
        }
    }
    let draft = |kind: &'static str, at: Timestamp, key_at: Timestamp, change, actor| SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at: at,
        actor,
        title: Some(issue.title.clone()),
        url: Some(issue.html_url.clone()),
        external_id: Some(external_id.clone()),
        dedupe_key: change_key(&subject, change, &key_at),
        payload: payload.clone(),
    };
    let mut drafts = Vec::new();
    if created >= *floor {
        let kind = if pull.is_some() {
            "pr_opened"
        } else {
            "issue_created"
        };
        drafts.push(draft(
            kind,
            created,
            created,
            Change::Created,
            issue.user.as_ref().map(actor),
        ));
    }
    if let Some(closed) = closed.filter(|c| *c >= *floor) {
        let (kind, at) = match (pull, merged_at) {
            (Some(_), Some(merged)) => ("pr_merged", merged),
            (Some(_), None) => ("pr_closed", closed),
            (None, _) => ("issue_closed", closed),
        };
        drafts.push(draft(kind, at, closed, Change::Closed, None));
    }
    if updated >= *floor && updated != created && Some(updated) != closed {
        let kind = if pull.is_some() {
            "pr_updated"
        } else {
            "issue_updated"
        };
        drafts.push(draft(kind, updated, updated, Change::Changed, None));
    }
    Ok(drafts)
}

/// The `owner/repo` of an item of the issues listing.
pub(super) fn listed_repository(issue: &Issue) -> Option<String> {
    if let Some(repository) = &issue.repository {
        return Some(repository.full_name.clone());
    }
    // `{API}/repos/{owner}/{repo}`
    let url = issue.repository_url.as_deref()?;
    let mut parts = url.rsplitn(3, '/');
    let repo = parts.next()?;
    let owner = parts.next()?;
    Some(format!("{owner}/{repo}"))
}

/// A release from a repository's releases listing, when published at or after `floor`.
pub(super) fn listed_release(
    release: &Release,
    repository: &str,
    floor: &Timestamp,
) -> Option<SignalDraft> {
    if release.draft {
        return None;
    }
    let draft = release_draft(
        release,
        repository,
        release.author.as_ref().map(actor),
        None,
    )
    .ok()?;
    (draft.occurred_at >= *floor).then_some(draft)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(created: &str, updated: &str, closed: Option<&str>, pull: Option<Value>) -> Issue {
        serde_json::from_value(json!({
            "id": 7, "number": 3, "title": "Crash on start",
            "html_url": "https://github.com/octo/app/issues/3", "state": if closed.is_some() { "closed" } else { "open" },
            "user": { "id": 1, "login": "octocat" }, "labels": [{ "name": "bug" }],
            "created_at": created, "updated_at": updated, "closed_at": closed,
            "pull_request": pull,
            "repository_url": "https://api.github.com/repos/octo/app"
        }))
        .expect("issue")
    }

    fn keys(drafts: &[SignalDraft]) -> Vec<(String, String)> {
        drafts
            .iter()
            .map(|d| (d.kind.to_string(), d.dedupe_key.clone()))
            .collect()
    }

    fn webhook(event: &str, body: Value) -> Normalized {
        let mut headers = serde_json::Map::new();
        headers.insert("x-github-event".into(), json!(event));
        normalize(&WebhookEvent {
            tenant_id: crate::domain::TenantId(uuid::Uuid::nil()),
            provider: "github".into(),
            event_type: Some(event.into()),
            headers,
            body: serde_json::to_vec(&body).expect("json"),
            received_at: crate::domain::now(),
        })
        .expect("readable")
    }

    #[test]
    fn new_commits_labels_and_assignees_are_updates_keyed_by_updated_at() {
        let pr = json!({
            "id": 11, "number": 3, "title": "Fix", "html_url": "https://github.com/octo/app/pull/3",
            "state": "open", "created_at": "2026-01-02T10:00:00Z",
            "updated_at": "2026-01-05T12:00:00Z", "closed_at": null, "merged_at": null,
            "user": { "id": 1, "login": "octocat" }
        });
        let repository = json!({ "id": 9, "full_name": "octo/app", "name": "app" });
        let sender = json!({ "id": 2, "login": "hubot" });
        for action in UPDATING_PULL_ACTIONS {
            let body = json!({ "action": action, "number": 3, "pull_request": pr, "repository": repository, "sender": sender });
            let Normalized::Signals(drafts) = webhook("pull_request", body) else {
                panic!("{action} is mapped");
            };
            assert_eq!(
                keys(&drafts),
                [(
                    "pr_updated".into(),
                    "pr:octo/app#3:changed:2026-01-05T12:00:00Z".into()
                )],
                "{action}"
            );
            assert_eq!(drafts[0].payload["action"], *action);
        }
        for ignored in [
            "review_requested",
            "locked",
            "auto_merge_enabled",
            "enqueued",
        ] {
            let body = json!({ "action": ignored, "number": 3, "pull_request": pr, "repository": repository, "sender": sender });
            assert!(
                matches!(webhook("pull_request", body), Normalized::Ignored),
                "{ignored}"
            );
        }
        let issue = json!({
            "id": 7, "number": 4, "title": "Crash", "html_url": "https://github.com/octo/app/issues/4",
            "state": "open", "created_at": "2026-01-02T10:00:00Z",
            "updated_at": "2026-01-05T12:00:00Z", "closed_at": null
        });
        for action in UPDATING_ISSUE_ACTIONS {
            let body = json!({ "action": action, "issue": issue, "repository": repository, "sender": sender });
            let Normalized::Signals(drafts) = webhook("issues", body) else {
                panic!("{action} is mapped");
            };
            assert_eq!(
                keys(&drafts),
                [(
                    "issue_updated".into(),
                    "issue:7:changed:2026-01-05T12:00:00Z".into()
                )]
            );
        }
        let pinned = json!({ "action": "pinned", "issue": issue, "repository": repository, "sender": sender });
        assert!(matches!(webhook("issues", pinned), Normalized::Ignored));
    }

    #[test]
    fn a_listed_issue_reports_each_change_since_the_floor_once() {
        let floor = parse_rfc3339("2026-01-01T00:00:00Z").expect("time");
        let fresh = listed("2026-01-02T10:00:00Z", "2026-01-02T10:00:00Z", None, None);
        assert_eq!(
            keys(&listed_issue(&fresh, &floor).expect("drafts")),
            [("issue_created".into(), "issue:7:created".into())]
        );
        let closed = listed(
            "2025-06-01T00:00:00Z",
            "2026-01-03T08:00:00Z",
            Some("2026-01-03T08:00:00Z"),
            None,
        );
        assert_eq!(
            keys(&listed_issue(&closed, &floor).expect("drafts")),
            [(
                "issue_closed".into(),
                "issue:7:closed:2026-01-03T08:00:00Z".into()
            )]
        );
        let merged = listed(
            "2026-01-02T10:00:00Z",
            "2026-01-04T09:00:00Z",
            Some("2026-01-03T08:00:00Z"),
            Some(json!({ "merged_at": "2026-01-03T08:00:00Z" })),
        );
        let drafts = listed_issue(&merged, &floor).expect("drafts");
        assert_eq!(
            keys(&drafts),
            [
                ("pr_opened".into(), "pr:octo/app#3:created".into()),
                (
                    "pr_merged".into(),
                    "pr:octo/app#3:closed:2026-01-03T08:00:00Z".into()
                ),
                (
                    "pr_updated".into(),
                    "pr:octo/app#3:changed:2026-01-04T09:00:00Z".into()
                ),
            ]
        );
        assert_eq!(drafts[0].external_id.as_deref(), Some("octo/app#3"));
        assert_eq!(drafts[0].actor.as_ref().map(|a| a.id.as_str()), Some("1"));
    }
}
