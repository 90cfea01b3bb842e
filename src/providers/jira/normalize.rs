//! Jira issues, changelogs and comments as signals, the same whether a webhook or the sync saw
//! them, so one change gives one signal (the dedupe keys below are shared).
//!
//! | what | kind | dedupe key |
//! | --- | --- | --- |
//! | an issue was created | `issue_created` | `jira:issue:{id}:created` |
//! | a changelog entry (one edit of one or more fields) | `issue_updated`, or `issue_resolved` when it sets a resolution or moves the status into the *done* category | `jira:issue:{id}:change:{changelog id}` |
//! | an issue was deleted (webhook only) | `issue_deleted` | `jira:issue:{id}:deleted` |
//! | a comment was added | `issue_commented` | `jira:issue:{id}:comment:{comment id}` |
//! | a comment was edited | `issue_updated` | `jira:issue:{id}:comment:{comment id}:edited:{updated, epoch ms}` |
//!
//! Webhook payloads: <https://developer.atlassian.com/cloud/jira/platform/webhooks/#example-callback-for-an-issue-related-event>;
//! the changelog of an issue: <https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issues/#api-rest-api-3-issue-issueidorkey-changelog-get>.

use serde_json::{json, Value};
use url::Url;

use super::time::{from_millis, millis, parse_jira_time};
use crate::connector::{Normalized, SignalDraft, WebhookEvent};
use crate::domain::{Actor, SignalKind, Timestamp};

/// A Jira user (`user`, `author`, `creator`) as an actor: the account id, the display name, and
/// the e-mail address when the user's privacy settings show it.
pub(super) fn actor(user: &Value) -> Option<Actor> {
    let id = user.get("accountId").and_then(Value::as_str)?;
    if id.is_empty() {
        return None;
    }
    let text = |name: &str| {
        user.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Some(Actor {
        id: id.to_string(),
        name: text("displayName"),
        email: text("emailAddress"),
    })
}

/// The site an issue's links point into: `https://your-domain.atlassian.net`.
pub(super) fn site_of(issue: &Value) -> Option<Url> {
    let url = Url::parse(issue.get("self")?.as_str()?).ok()?;
    // Through the API gateway (`/ex/jira/{cloudId}/...`) the host is not the site.
    if url.path().starts_with("/ex/") || !matches!(url.scheme(), "https" | "http") {
        return None;
    }
    let mut site = url;
    site.set_path("");
    site.set_query(None);
    site.set_fragment(None);
    Some(site)
}

/// What every signal about one issue shares.
struct IssueFacts {
    id: String,
    title: Option<String>,
    url: Option<String>,
    payload: serde_json::Map<String, Value>,
}

fn text_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, k| v.get(k))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// An id Jira writes as a string (or, in some payloads, a number).
fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn issue_facts(issue: &Value, site: Option<&Url>) -> Result<IssueFacts, String> {
    let id = id_of(issue.get("id")).ok_or("the issue has no id")?;
    let key = text_at(issue, &["key"]).map(str::to_string);
    let summary = text_at(issue, &["fields", "summary"]);
    let title = match (&key, summary) {
        (Some(key), Some(summary)) => Some(format!("{key}: {summary}")),
        (Some(key), None) => Some(key.clone()),
        (None, summary) => summary.map(str::to_string),
    };
    let site = site.cloned().or_else(|| site_of(issue));
    let url = match (&site, &key) {
        (Some(site), Some(key)) => {
            let mut url = site.clone();
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.pop_if_empty().push("browse").push(key);
            }
            Some(url.to_string())
        }
        _ => None,
    };
    let mut payload = serde_json::Map::new();
    payload.insert("issue_id".into(), json!(id));
    payload.insert("issue_key".into(), json!(key));
    payload.insert("summary".into(), json!(summary));
    payload.insert(
        "project".into(),
        json!(text_at(issue, &["fields", "project", "key"])),
    );
    payload.insert(
        "issue_type".into(),
        json!(text_at(issue, &["fields", "issuetype", "name"])),
    );
    payload.insert(
        "status".into(),
        json!(text_at(issue, &["fields", "status", "name"])),
    );
    Ok(IssueFacts {
        id,
        title,
        url,
        payload,
    })
}

fn draft(
    kind: &'static str,
    facts: &IssueFacts,
    at: Timestamp,
    actor: Option<Actor>,
    dedupe_key: String,
    extra: &[(&str, Value)],
) -> SignalDraft {
    let mut payload = facts.payload.clone();
    for (k, v) in extra {
        payload.insert((*k).to_string(), v.clone());
    }
    SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at: at,
        actor,
        title: facts.title.clone(),
        url: facts.url.clone(),
        external_id: Some(facts.id.clone()),
        dedupe_key,
        payload: Value::Object(payload),
    }
}

/// `issue_created`, at the issue's `created` time (else `fallback`).
pub(super) fn created(
    issue: &Value,
    actor: Option<Actor>,
    fallback: Timestamp,
    site: Option<&Url>,
) -> Result<SignalDraft, String> {
    let facts = issue_facts(issue, site)?;
    let at = text_at(issue, &["fields", "created"])
        .and_then(parse_jira_time)
        .unwrap_or(fallback);
    let key = format!("jira:issue:{}:created", facts.id);
    Ok(draft("issue_created", &facts, at, actor, key, &[]))
}

/// `issue_deleted`.
pub(super) fn deleted(
    issue: &Value,
    actor: Option<Actor>,
    at: Timestamp,
    site: Option<&Url>,
) -> Result<SignalDraft, String> {
    let facts = issue_facts(issue, site)?;
    let key = format!("jira:issue:{}:deleted", facts.id);
    Ok(draft("issue_deleted", &facts, at, actor, key, &[]))
}

/// Whether a changelog entry resolves the issue: it sets a resolution, or moves the status to
/// the issue's current status and that status is in the *done* category
/// (<https://support.atlassian.com/jira-cloud-administration/docs/what-are-issue-statuses-priorities-and-resolutions/>).
fn resolves(issue: &Value, items: &[Value]) -> bool {
    let field = |item: &Value| {
        item.get("fieldId")
            .or_else(|| item.get("field"))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let sets_resolution = items.iter().any(|item| {
        field(item).as_deref() == Some("resolution")
            && item
                .get("to")
                .and_then(Value::as_str)
                .is_some_and(|to| !to.is_empty())
    });
    let done = text_at(issue, &["fields", "status", "statusCategory", "key"]) == Some("done");
    let status_id = id_of(issue.pointer("/fields/status/id"));
    let into_done = done
        && items.iter().any(|item| {
            field(item).as_deref() == Some("status") && id_of(item.get("to")) == status_id
        });
    sets_resolution || into_done
}

/// One changelog entry: `issue_resolved` when it resolves the issue, else `issue_updated`.
pub(super) fn change(
    issue: &Value,
    history: &Value,
    actor: Option<Actor>,
    at: Timestamp,
    site: Option<&Url>,
) -> Result<SignalDraft, String> {
    let facts = issue_facts(issue, site)?;
    let id = id_of(history.get("id")).ok_or("the changelog entry has no id")?;
    let items: Vec<Value> = history
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let changes: Vec<Value> = items
        .iter()
        .map(|item| {
            json!({
                "field": item.get("field"),
                "from": item.get("fromString"),
                "to": item.get("toString"),
            })
        })
        .collect();
    let kind = if resolves(issue, &items) {
        "issue_resolved"
    } else {
        "issue_updated"
    };
    let key = format!("jira:issue:{}:change:{id}", facts.id);
    Ok(draft(
        kind,
        &facts,
        at,
        actor,
        key,
        &[
            ("changelog_id", json!(id)),
            ("changes", Value::Array(changes)),
        ],
    ))
}

/// `issue_commented` for a new comment, at its `created` time.
pub(super) fn commented(
    issue: &Value,
    comment: &Value,
    site: Option<&Url>,
) -> Result<SignalDraft, String> {
    let facts = issue_facts(issue, site)?;
    let id = id_of(comment.get("id")).ok_or("the comment has no id")?;
    let at = text_at(comment, &["created"])
        .and_then(parse_jira_time)
        .ok_or("the comment has no readable created time")?;
    let key = format!("jira:issue:{}:comment:{id}", facts.id);
    let author = comment.get("author").and_then(actor);
    Ok(draft(
        "issue_commented",
        &facts,
        at,
        author,
        key,
        &[("comment_id", json!(id))],
    ))
}

/// `issue_updated` for an edited comment, at its `updated` time; `None` when it was never
/// edited (`updated` equals `created`).
pub(super) fn comment_edited(
    issue: &Value,
    comment: &Value,
    site: Option<&Url>,
) -> Result<Option<SignalDraft>, String> {
    let facts = issue_facts(issue, site)?;
    let id = id_of(comment.get("id")).ok_or("the comment has no id")?;
    let created = text_at(comment, &["created"]).and_then(parse_jira_time);
    let Some(updated) = text_at(comment, &["updated"]).and_then(parse_jira_time) else {
        return Err("the comment has no readable updated time".into());
    };
    if created.is_some_and(|c| c >= updated) {
        return Ok(None);
    }
    let key = format!(
        "jira:issue:{}:comment:{id}:edited:{}",
        facts.id,
        millis(&updated)
    );
    let author = comment
        .get("updateAuthor")
        .or_else(|| comment.get("author"))
        .and_then(actor);
    Ok(Some(draft(
        "issue_updated",
        &facts,
        updated,
        author,
        key,
        &[("comment_id", json!(id)), ("comment_edited", json!(true))],
    )))
}

/// A stored delivery's body, as JSON.
pub(super) fn parse_body(body: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err("the delivery is not a JSON object".into()),
    }
}

/// What a delivery means (see the module documentation).
pub(super) fn normalize(event: &WebhookEvent) -> Result<Normalized, String> {
    let body = parse_body(&event.body)?;
    let Some(name) = body.get("webhookEvent").and_then(Value::as_str) else {
        return Err("the delivery has no webhookEvent".into());
    };
    let at = body
        .get("timestamp")
        .and_then(Value::as_i64)
        .and_then(from_millis)
        .unwrap_or(event.received_at);
    let user = body.get("user").and_then(actor);
    let issue = body.get("issue").unwrap_or(&Value::Null);
    let signals = match name {
        "jira:issue_created" => vec![created(issue, user, at, None)?],
        "jira:issue_deleted" => vec![deleted(issue, user, at, None)?],
        "jira:issue_updated" => match body.get("changelog") {
            // An update with a changelog is an edit; without one it is the echo of a comment
            // (`issue_event_type_name: issue_commented`), which its comment event reports.
            Some(changelog) if changelog.get("id").is_some() => {
                vec![change(issue, changelog, user, at, None)?]
            }
            _ => Vec::new(),
        },
        "comment_created" => {
            let comment = body.get("comment").ok_or("the delivery has no comment")?;
            vec![commented(issue, comment, None)?]
        }
        "comment_updated" => {
            let comment = body.get("comment").ok_or("the delivery has no comment")?;
            comment_edited(issue, comment, None)?.into_iter().collect()
        }
        _ => return Ok(Normalized::Ignored),
    };
    Ok(Normalized::Signals(signals))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(status_id: &str, category: &str) -> Value {
        json!({
            "id": "10001", "key": "PROJ-1",
            "self": "https://your-domain.atlassian.net/rest/api/3/issue/10001",
            "fields": {
                "summary": "Fix the thing",
                "created": "2026-01-15T10:30:00.000+0000",
                "status": {"id": status_id, "name": "Done", "statusCategory": {"key": category}},
                "project": {"key": "PROJ"}, "issuetype": {"name": "Bug"}
            }
        })
    }

    fn history(items: Value) -> Value {
        json!({"id": "200", "items": items})
    }

    #[test]
    fn a_change_resolves_when_it_sets_a_resolution_or_moves_into_done() {
        let at = crate::domain::now();
        let kind = |issue: &Value, items: Value| {
            change(issue, &history(items), None, at, None)
                .expect("signal")
                .kind
                .as_str()
                .to_string()
        };
        let done = issue("10002", "done");
        assert_eq!(
            kind(
                &done,
                json!([{"field": "resolution", "fieldId": "resolution", "to": "10000", "toString": "Done"}])
            ),
            "issue_resolved"
        );
        assert_eq!(
            kind(
                &done,
                json!([{"field": "status", "fieldId": "status", "from": "1", "to": "10002"}])
            ),
            "issue_resolved"
        );
        // Moved on since: the status this entry set is not the current, done one.
        assert_eq!(
            kind(
                &done,
                json!([{"field": "status", "fieldId": "status", "from": "1", "to": "3"}])
            ),
            "issue_updated"
        );
        let open = issue("3", "indeterminate");
        assert_eq!(
            kind(
                &open,
                json!([{"field": "status", "fieldId": "status", "from": "1", "to": "3"}])
            ),
            "issue_updated"
        );
        assert_eq!(
            kind(
                &open,
                json!([{"field": "resolution", "to": null, "toString": null}])
            ),
            "issue_updated"
        );
    }

    #[test]
    fn titles_urls_and_keys_come_from_the_issue() {
        let s = created(&issue("1", "new"), None, crate::domain::now(), None).expect("signal");
        assert_eq!(s.title.as_deref(), Some("PROJ-1: Fix the thing"));
        assert_eq!(
            s.url.as_deref(),
            Some("https://your-domain.atlassian.net/browse/PROJ-1")
        );
        assert_eq!(s.external_id.as_deref(), Some("10001"));
        assert_eq!(s.dedupe_key, "jira:issue:10001:created");
        assert_eq!(s.occurred_at.to_rfc3339(), "2026-01-15T10:30:00+00:00");
        let site = Url::parse("https://other.atlassian.net/").expect("url");
        let mut through_gateway = issue("1", "new");
        through_gateway["self"] =
            json!("https://api.atlassian.com/ex/jira/c/rest/api/3/issue/10001");
        let s = created(&through_gateway, None, crate::domain::now(), Some(&site)).expect("signal");
        assert_eq!(
            s.url.as_deref(),
            Some("https://other.atlassian.net/browse/PROJ-1")
        );
        let s = created(&through_gateway, None, crate::domain::now(), None).expect("signal");
        assert_eq!(s.url, None);
        assert!(created(&json!({"key": "X-1"}), None, crate::domain::now(), None).is_err());
    }

    #[test]
    fn unedited_comments_give_no_edit_signal() {
        let c = json!({"id": "5", "created": "2026-01-15T10:30:00.000+0000", "updated": "2026-01-15T10:30:00.000+0000"});
        assert_eq!(comment_edited(&issue("1", "new"), &c, None), Ok(None));
        let c = json!({"id": "5", "created": "2026-01-15T10:30:00.000+0000", "updated": "2026-01-15T11:30:00.000+0000"});
        let s = comment_edited(&issue("1", "new"), &c, None)
            .expect("read")
            .expect("edited");
        assert_eq!(
            s.dedupe_key,
            "jira:issue:10001:comment:5:edited:1768476600000"
        );
    }
}
