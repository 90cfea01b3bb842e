//! Incremental sync on `POST /rest/api/3/search/jql`
//! (<https://developer.atlassian.com/cloud/jira/platform/rest/v3/api-group-issue-search/#api-rest-api-3-search-jql-post>;
//! the old `/rest/api/3/search` answers `410 Gone` since its removal:
//! <https://developer.atlassian.com/changelog/#CHANGE-2046>).
//!
//! A **pass** reads every issue updated in a bounded window, oldest first:
//!
//! ```text
//! updated >= {from} AND updated <= {to} ORDER BY updated ASC
//! ```
//!
//! with epoch-millisecond literals (a `yyyy-MM-dd HH:mm` literal is read in the user's time
//! zone), explicit `fields` (the endpoint returns only ids otherwise) and `expand=changelog`,
//! one page per step, following `nextPageToken` until `isLast`. `from` is the end of the last
//! pass less [`OVERLAP_MS`], since the search index is eventually consistent
//! (<https://developer.atlassian.com/cloud/jira/platform/search-and-reconcile/>); dedupe keys
//! make the overlap harmless. `to` is fixed when the pass starts.
//!
//! For each issue: its creation, each changelog entry and each comment created or edited
//! inside the window (see `normalize`). An issue with more comments or changelog entries than
//! the search embeds has the rest read from `GET /issue/{id}/comment` and
//! `GET /issue/{id}/changelog`. Deletions are not visible to a search: `issue_deleted` comes
//! from webhooks only.
//!
//! # The cursor
//!
//! ```json
//! { "v": 1, "floor": 1767225600000, "since": 1769817600000,
//!   "pass": { "from": 1769817300000, "to": 1769821200000, "token": "CAEaAggD" } }
//! ```
//!
//! `floor`: nothing before it is reported (the first sync looks [`INITIAL_LOOKBACK_DAYS`]
//! back); `since`: where the last finished pass ended; `pass`: the pass under way. A page that
//! cannot be read fails the step: its signals and the cursor are not stored.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use super::api::{call, cloud_id, site_url, SITE_URL};
use super::normalize::{actor, change, comment_edited, commented, created};
use super::time::{millis, parse_jira_time};
use crate::connector::{ProviderCallError, SignalDraft, SyncContext, SyncPage};
use crate::domain::now;

/// How far back the first sync of a connection looks.
pub const INITIAL_LOOKBACK_DAYS: i64 = 30;
/// How far each pass reaches back before the end of the last one.
pub const OVERLAP_MS: i64 = 5 * 60 * 1000;
/// Issues asked for per page.
const PAGE_SIZE: u32 = 50;
/// The fields asked for: what the signals need.
const FIELDS: &[&str] = &[
    "summary",
    "status",
    "resolution",
    "created",
    "updated",
    "issuetype",
    "project",
    "creator",
    "reporter",
    "comment",
];
/// Comments or changelog entries read per extra request, and the most requests per issue.
const EXTRA_PAGE: usize = 100;
const MAX_EXTRA_PAGES: usize = 10;
const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Pass {
    from: i64,
    to: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    v: u32,
    floor: i64,
    since: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pass: Option<Pass>,
}

impl Cursor {
    fn start(now_ms: i64) -> Self {
        let floor = now_ms.saturating_sub(INITIAL_LOOKBACK_DAYS * 24 * 3600 * 1000);
        Self {
            v: VERSION,
            floor,
            since: floor,
            pass: None,
        }
    }

    /// The stored cursor, or a fresh start when there is none or it cannot be read.
    fn read(value: Option<&Value>, now_ms: i64) -> Self {
        value
            .and_then(|v| serde_json::from_value::<Cursor>(v.clone()).ok())
            .filter(|c| c.v == VERSION && c.floor <= c.since)
            .unwrap_or_else(|| Self::start(now_ms))
    }

    /// The pass under way, or a new one from the last end (less the overlap) to now.
    fn pass(&mut self, now_ms: i64) -> Pass {
        self.pass
            .get_or_insert_with(|| Pass {
                from: self.since.saturating_sub(OVERLAP_MS).max(self.floor),
                to: now_ms.max(self.since),
                token: None,
            })
            .clone()
    }

    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The JQL of a pass.
fn jql(pass: &Pass) -> String {
    format!(
        "updated >= {} AND updated <= {} ORDER BY updated ASC",
        pass.from, pass.to
    )
}

/// A search page as the sync needs it: `issues` must be an array.
#[derive(Deserialize)]
struct SearchPage {
    issues: Vec<Value>,
    #[serde(default, rename = "nextPageToken")]
    next_page_token: Option<String>,
    #[serde(default, rename = "isLast")]
    is_last: Option<bool>,
}

/// One step of the sync (see the module documentation).
pub(super) async fn sync_page(
    ctx: SyncContext<'_>,
    cursor: Option<&Value>,
) -> Result<SyncPage, ProviderCallError> {
    let now_ms = millis(&now());
    let mut cursor = Cursor::read(cursor, now_ms);
    let pass = cursor.pass(now_ms);
    let cloud = cloud_id(ctx.connection);
    let settings = ctx.provider.settings;
    let mut body = json!({
        "jql": jql(&pass),
        "fields": FIELDS,
        "expand": "changelog",
        "maxResults": PAGE_SIZE,
    });
    if let Some(token) = &pass.token {
        body["nextPageToken"] = json!(token);
    }
    let (_, answer) = call(
        ctx.provider.http,
        ctx.access_token,
        Method::POST,
        site_url(settings, cloud, "/search/jql"),
        Some(&body),
        "Jira search",
    )
    .await?;
    let page: SearchPage = serde_json::from_value(answer).map_err(|_| {
        ProviderCallError::Rejected("Jira search answered a page that cannot be read".into())
    })?;
    let site = ctx
        .connection
        .metadata
        .get(SITE_URL)
        .and_then(Value::as_str)
        .and_then(|s| Url::parse(s).ok());
    let mut signals = Vec::new();
    for issue in &page.issues {
        let found = issue_signals(&ctx, cloud, issue, &pass, cursor.floor, site.as_ref())
            .await
            .map_err(|e| match e {
                Unreadable::Call(err) => err,
                Unreadable::Item(why) => ProviderCallError::Rejected(format!(
                    "Jira search answered an issue that cannot be read: {why}"
                )),
            })?;
        signals.extend(found);
    }
    let next = page
        .next_page_token
        .filter(|t| !t.is_empty() && page.is_last != Some(true));
    let more = match next {
        Some(token) => {
            if pass.token.as_deref() == Some(token.as_str()) {
                return Err(ProviderCallError::Rejected(
                    "Jira search answered the same nextPageToken again".into(),
                ));
            }
            cursor.pass = Some(Pass {
                token: Some(token),
                ..pass
            });
            true
        }
        None => {
            cursor.since = pass.to;
            cursor.pass = None;
            false
        }
    };
    Ok(SyncPage {
        signals,
        cursor: cursor.to_value(),
        more,
        metadata: None,
    })
}

enum Unreadable {
    Call(ProviderCallError),
    Item(String),
}

impl From<String> for Unreadable {
    fn from(why: String) -> Self {
        Unreadable::Item(why)
    }
}

/// Whether a Jira time falls inside the pass (and after the floor).
fn inside(text: Option<&str>, pass: &Pass, floor: i64) -> Result<bool, String> {
    let at = text
        .and_then(parse_jira_time)
        .ok_or_else(|| format!("unreadable time {:?}", text.unwrap_or("(absent)")))?;
    let ms = millis(&at);
    Ok(ms >= pass.from.max(floor) && ms <= pass.to)
}

async fn issue_signals(
    ctx: &SyncContext<'_>,
    cloud: &str,
    issue: &Value,
    pass: &Pass,
    floor: i64,
    site: Option<&Url>,
) -> Result<Vec<SignalDraft>, Unreadable> {
    let id = issue
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| "an issue without a numeric id".to_string())?;
    let fields = issue.get("fields").filter(|f| f.is_object());
    let fields = fields.ok_or_else(|| format!("issue {id} has no fields"))?;
    let mut signals = Vec::new();
    let created_at = fields.get("created").and_then(Value::as_str);
    if inside(created_at, pass, floor)? {
        let by = fields
            .get("creator")
            .or_else(|| fields.get("reporter"))
            .and_then(actor);
        signals.push(created(issue, by, now(), site)?);
    }
    let histories = embedded_or_fetched(
        ctx,
        cloud,
        issue.get("changelog"),
        "histories",
        &format!("/issue/{id}/changelog"),
        "values",
    )
    .await?;
    for history in &histories {
        let when = history.get("created").and_then(Value::as_str);
        if inside(when, pass, floor)? {
            let at = when.and_then(parse_jira_time).unwrap_or_else(now);
            let by = history.get("author").and_then(actor);
            signals.push(change(issue, history, by, at, site)?);
        }
    }
    let comments = embedded_or_fetched(
        ctx,
        cloud,
        fields.get("comment"),
        "comments",
        &format!("/issue/{id}/comment"),
        "comments",
    )
    .await?;
    for comment in &comments {
        if inside(comment.get("created").and_then(Value::as_str), pass, floor)? {
            signals.push(commented(issue, comment, site)?);
        }
        let updated = comment.get("updated").and_then(Value::as_str);
        if updated.is_some() && inside(updated, pass, floor)? {
            signals.extend(comment_edited(issue, comment, site)?);
        }
    }
    Ok(signals)
}

/// The items a search embedded (`{"total", member: [...]}`), and when `total` says more exist,
/// the rest read from `path` (`?startAt=&maxResults=`, items in `page_member`).
async fn embedded_or_fetched(
    ctx: &SyncContext<'_>,
    cloud: &str,
    embedded: Option<&Value>,
    member: &str,
    path: &str,
    page_member: &str,
) -> Result<Vec<Value>, Unreadable> {
    let Some(embedded) = embedded.filter(|e| !e.is_null()) else {
        return Ok(Vec::new());
    };
    // The document's search example shows `comment` as a plain list.
    if let Some(list) = embedded.as_array() {
        return Ok(list.clone());
    }
    let mut items = embedded
        .get(member)
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| format!("the embedded {member} are not a list"))?;
    let total = embedded
        .get("total")
        .and_then(Value::as_u64)
        .and_then(|t| usize::try_from(t).ok())
        .unwrap_or(items.len());
    if total <= items.len() {
        return Ok(items);
    }
    // The embedded list may be the first or the latest entries: read them all again.
    items.clear();
    for _ in 0..MAX_EXTRA_PAGES {
        let mut url = site_url(ctx.provider.settings, cloud, path);
        url.query_pairs_mut()
            .append_pair("startAt", &items.len().to_string())
            .append_pair("maxResults", &EXTRA_PAGE.to_string());
        let (_, answer) = call(
            ctx.provider.http,
            ctx.access_token,
            Method::GET,
            url,
            None,
            "Jira issue listing",
        )
        .await
        .map_err(Unreadable::Call)?;
        let page = answer
            .get(page_member)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("a {page_member} page that is not a list"))?;
        if page.is_empty() {
            break;
        }
        items.extend(page.iter().cloned());
        if items.len() >= total {
            break;
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn passes_overlap_the_last_one_and_never_reach_below_the_floor() {
        let now_ms = 1_769_821_200_000;
        let mut c = Cursor::start(now_ms);
        let first = c.pass(now_ms);
        assert_eq!(first.from, c.floor);
        assert_eq!(first.to, now_ms);
        assert_eq!(
            jql(&first),
            format!(
                "updated >= {} AND updated <= {now_ms} ORDER BY updated ASC",
                c.floor
            )
        );
        c.since = first.to;
        c.pass = None;
        let second = c.pass(now_ms + 60_000);
        assert_eq!(second.from, now_ms - OVERLAP_MS);
        assert_eq!(second.to, now_ms + 60_000);
        // A clock that went back never makes an empty or inverted window.
        c.pass = None;
        assert!(c.pass(now_ms - 10_000).to >= c.since);
    }

    #[test]
    fn unreadable_or_foreign_cursors_start_over() {
        let now_ms = 1_769_821_200_000;
        for junk in [
            json!(null),
            json!("x"),
            json!({"v": 2, "floor": 1, "since": 2}),
            json!({"v": 1, "floor": 5, "since": 2}),
            json!({"v": 1, "floor": "a", "since": 2}),
        ] {
            assert_eq!(
                Cursor::read(Some(&junk), now_ms),
                Cursor::start(now_ms),
                "{junk}"
            );
        }
    }

    proptest! {
        /// Whatever a cursor holds, it reads back as written.
        #[test]
        fn cursors_round_trip(floor in 0i64..i64::MAX / 2, gap in 0i64..1_000_000_000, from in 0i64..i64::MAX / 2, token in proptest::option::of("[A-Za-z0-9_-]{1,40}")) {
            let c = Cursor { v: VERSION, floor, since: floor + gap, pass: Some(Pass { from, to: from + gap, token }) };
            prop_assert_eq!(Cursor::read(Some(&c.to_value()), 0), c);
        }

        /// Arbitrary JSON never panics the cursor reader, and what it reads is usable.
        #[test]
        fn arbitrary_cursors_never_panic(floor in any::<i64>(), since in any::<i64>(), v in any::<u32>()) {
            let c = Cursor::read(Some(&json!({"v": v, "floor": floor, "since": since})), 1_769_821_200_000);
            prop_assert!(c.floor <= c.since);
            let mut c = c;
            let pass = c.pass(1_769_821_200_000);
            prop_assert!(pass.from <= pass.to || pass.to >= c.since);
        }
    }
}
