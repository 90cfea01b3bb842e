//! GitHub's JSON as it arrives, in webhook payloads and REST answers: only the fields the
//! connector reads. Unknown fields are ignored, so GitHub adding fields never breaks parsing.
//! (Routing reads the account ids straight from the JSON: see `webhook::route`.)
//!
//! - Webhook payloads: <https://docs.github.com/en/webhooks/webhook-events-and-payloads>.
//! - Issues listing: <https://docs.github.com/en/rest/issues/issues#list-issues-assigned-to-the-authenticated-user>.
//! - Releases listing: <https://docs.github.com/en/rest/releases/releases#list-releases>.

use serde::Deserialize;

/// A user, bot or organization.
#[derive(Clone, Debug, Deserialize)]
pub struct Account {
    pub id: u64,
    pub login: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Repository {
    pub id: u64,
    pub full_name: String,
    #[serde(default)]
    pub owner: Option<Account>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Label {
    pub name: String,
}

/// An issue; from the issues endpoints also a pull request (then `pull_request` is set and
/// `id` is the issue's id, not the pull request's).
#[derive(Clone, Debug, Deserialize)]
pub struct Issue {
    pub id: u64,
    pub number: u64,
    pub title: String,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub state_reason: Option<String>,
    #[serde(default)]
    pub user: Option<Account>,
    #[serde(default)]
    pub labels: Vec<Label>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub closed_at: Option<String>,
    #[serde(default)]
    pub pull_request: Option<IssuePullRequest>,
    /// Present in the cross-repository listing (`GET /issues`).
    #[serde(default)]
    pub repository: Option<Repository>,
    /// `{API}/repos/{owner}/{repo}`, always present.
    #[serde(default)]
    pub repository_url: Option<String>,
}

/// The pull request part of an issue from the issues endpoints.
#[derive(Clone, Debug, Deserialize)]
pub struct IssuePullRequest {
    #[serde(default)]
    pub merged_at: Option<String>,
}

/// A pull request as webhooks carry it.
#[derive(Clone, Debug, Deserialize)]
pub struct PullRequest {
    pub id: u64,
    pub number: u64,
    pub title: String,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(default)]
    pub merged_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub closed_at: Option<String>,
    #[serde(default)]
    pub base: Option<GitRef>,
    #[serde(default)]
    pub head: Option<GitRef>,
}

/// A pull request's base or head branch.
#[derive(Clone, Debug, Deserialize)]
pub struct GitRef {
    #[serde(rename = "ref")]
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Comment {
    pub id: u64,
    pub html_url: String,
    pub created_at: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Review {
    pub id: u64,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub submitted_at: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Release {
    pub id: u64,
    pub tag_name: String,
    #[serde(default)]
    pub name: Option<String>,
    pub html_url: String,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(default)]
    pub published_at: Option<String>,
    #[serde(default)]
    pub author: Option<Account>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Commit {
    pub id: String,
    pub message: String,
    pub timestamp: String,
    /// The commit's page on GitHub.
    #[serde(default)]
    pub url: Option<String>,
}

/// The `push` event: <https://docs.github.com/en/webhooks/webhook-events-and-payloads#push>.
#[derive(Clone, Debug, Deserialize)]
pub struct Push {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub before: String,
    pub after: String,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub forced: bool,
    #[serde(default)]
    pub compare: Option<String>,
    #[serde(default)]
    pub commits: Vec<Commit>,
    #[serde(default)]
    pub head_commit: Option<Commit>,
    pub repository: Repository,
}

/// `issues` events.
#[derive(Debug, Deserialize)]
pub struct IssuesEvent {
    pub issue: Issue,
    pub repository: Repository,
}

/// `issue_comment` events.
#[derive(Debug, Deserialize)]
pub struct IssueCommentEvent {
    pub issue: Issue,
    pub comment: Comment,
    pub repository: Repository,
}

/// `pull_request` events.
#[derive(Debug, Deserialize)]
pub struct PullRequestEvent {
    pub pull_request: PullRequest,
    pub repository: Repository,
}

/// `pull_request_review` events.
#[derive(Debug, Deserialize)]
pub struct PullRequestReviewEvent {
    pub review: Review,
    pub pull_request: PullRequest,
    pub repository: Repository,
}

/// `release` events.
#[derive(Debug, Deserialize)]
pub struct ReleaseEvent {
    pub release: Release,
    pub repository: Repository,
}

/// An issue comment as the repository comments listing gives it
/// (<https://docs.github.com/en/rest/issues/comments#list-issue-comments-for-a-repository>):
/// the issue only by URL.
#[derive(Clone, Debug, Deserialize)]
pub struct ListedComment {
    pub id: u64,
    pub html_url: String,
    pub issue_url: String,
    pub created_at: String,
    #[serde(default)]
    pub user: Option<Account>,
}

/// A review as a pull request's reviews listing gives it
/// (<https://docs.github.com/en/rest/pulls/reviews#list-reviews-for-a-pull-request>).
#[derive(Clone, Debug, Deserialize)]
pub struct ListedReview {
    pub id: u64,
    pub html_url: String,
    pub state: String,
    #[serde(default)]
    pub submitted_at: Option<String>,
    #[serde(default)]
    pub user: Option<Account>,
}

/// An event of a repository's issue events listing
/// (<https://docs.github.com/en/rest/issues/events#list-issue-events-for-a-repository>).
#[derive(Clone, Debug, Deserialize)]
pub struct IssueEvent {
    pub event: String,
    pub created_at: String,
    #[serde(default)]
    pub actor: Option<Account>,
    #[serde(default)]
    pub issue: Option<Issue>,
}

/// An event of a repository's events listing
/// (<https://docs.github.com/en/rest/activity/events#list-repository-events>); only
/// `PushEvent`s are read, whose `payload` is [`PushEventPayload`].
#[derive(Clone, Debug, Deserialize)]
pub struct RepoEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub actor: Account,
    pub repo: EventRepo,
    #[serde(default)]
    pub payload: serde_json::Value,
    pub created_at: Option<String>,
}

/// The repository of an event: `name` is `owner/repo`.
#[derive(Clone, Debug, Deserialize)]
pub struct EventRepo {
    pub id: u64,
    pub name: String,
}

/// A `PushEvent`'s payload on GitHub.com: the ref and the SHAs before and after, no longer the
/// commits (<https://docs.github.com/en/rest/using-the-rest-api/github-event-types#pushevent>).
#[derive(Clone, Debug, Deserialize)]
pub struct PushEventPayload {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub head: String,
    pub before: String,
}

/// A commit object of the Git database API
/// (<https://docs.github.com/en/rest/git/commits#get-a-commit-object>).
#[derive(Clone, Debug, Deserialize)]
pub struct GitCommit {
    pub sha: String,
    pub html_url: String,
    pub message: String,
    pub author: GitPerson,
}

/// A commit's author or committer, with the date git recorded.
#[derive(Clone, Debug, Deserialize)]
pub struct GitPerson {
    pub date: String,
}
