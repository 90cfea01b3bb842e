//! Zoho Mail's incremental sync: the Inbox and Sent folders, each read newest first with
//! `GET /api/accounts/{accountId}/messages/view?folderId=..&sortorder=false`
//! (https://www.zoho.com/mail/help/api/get-emails-list.html) down to its cursor.
//!
//! One cursor per folder: the newest received time seen and the ids of the messages seen at
//! that very millisecond, so a message sharing the cursor's time is neither dropped nor
//! repeated. A scan in progress keeps its offset (`start`) and the newest time it met; the
//! folder's cursor moves only when the scan reaches the old cursor or the folder's end. New
//! mail arriving during a scan shifts older messages to later offsets: they are met again and
//! their signals are dropped as duplicates by their dedupe key, never skipped.
//!
//! Each page is one request: the first run also reads the folder list once
//! (https://www.zoho.com/mail/help/api/get-all-folder-details.html).

use chrono::{DateTime, Duration};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use super::THROTTLE;
use crate::connector::SignalDraft;
use crate::connector::{ProviderCallError, SyncContext, SyncPage};
use crate::domain::{now, Actor, SignalKind, Timestamp};
use crate::providers::zoho;

/// Messages per listing request (Zoho allows 1 to 200).
pub(super) const PAGE_SIZE: usize = 50;
/// How far back the first sync of a folder reads.
const FIRST_SYNC_DAYS: i64 = 7;
/// At most this many ids are kept for one millisecond.
const MAX_SEEN: usize = 500;

/// The folders read, in order, and the kind each one's messages become.
const FOLDERS: [(&str, &str); 2] = [("inbox", "email_received"), ("sent", "email_sent")];

/// Where one folder's sync stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct FolderCursor {
    /// `inbox` or `sent`.
    pub role: String,
    /// Zoho's folder id.
    pub id: String,
    /// Received time (epoch ms) of the newest message reported.
    pub time: i64,
    /// Ids of the messages reported at exactly `time`.
    pub seen: Vec<String>,
}

/// A scan of one folder in progress.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Scan {
    /// Index into `folders`.
    pub folder: usize,
    /// Zoho's 1-based `start` of the next listing.
    pub start: usize,
    /// The newest time met in this scan, and the ids met at it.
    pub top_time: i64,
    pub top_ids: Vec<String>,
}

/// The whole cursor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Cursor {
    pub folders: Vec<FolderCursor>,
    pub scan: Option<Scan>,
}

impl Cursor {
    /// Reads a stored cursor; an unreadable one starts over (duplicates are dropped by key).
    pub(super) fn read(value: Option<&Value>) -> Self {
        value
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// One listed message, as far as the sync reads it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Listed {
    pub id: String,
    pub time: i64,
    pub raw: Value,
}

/// The id and received time of a listed message: `messageId`, and `receivedTime` (the List
/// Emails sample; `receivedtime` in the search sample), else `sentDateInGMT`.
pub(super) fn listed(raw: &Value) -> Option<Listed> {
    let id = zoho::id_text(raw.get("messageId"))?;
    let time = zoho::millis(raw.get("receivedTime"))
        .or_else(|| zoho::millis(raw.get("receivedtime")))
        .or_else(|| zoho::millis(raw.get("sentDateInGMT")))?;
    Some(Listed {
        id,
        time,
        raw: raw.clone(),
    })
}

/// What one listing page does to a scan.
#[derive(Debug, PartialEq)]
pub(super) struct Step {
    /// The messages to report, newest first.
    pub new: Vec<Listed>,
    /// Whether the scan of this folder is over (cursor or end reached).
    pub done: bool,
}

/// Walks one page newest first against the folder's cursor, updating the scan's newest time.
pub(super) fn step(folder: &FolderCursor, scan: &mut Scan, page: &[Listed], full: bool) -> Step {
    let mut new = Vec::new();
    let mut reached = false;
    for m in page {
        if m.time < folder.time {
            reached = true;
            break;
        }
        if m.time == folder.time && folder.seen.contains(&m.id) {
            continue;
        }
        if m.time > scan.top_time {
            scan.top_time = m.time;
            scan.top_ids = vec![m.id.clone()];
        } else if m.time == scan.top_time && !scan.top_ids.contains(&m.id) {
            scan.top_ids.push(m.id.clone());
        }
        new.push(m.clone());
    }
    Step {
        new,
        done: reached || !full,
    }
}

/// The folder's cursor after a finished scan.
pub(super) fn advance(folder: &FolderCursor, scan: &Scan) -> FolderCursor {
    let mut next = folder.clone();
    if scan.top_time > folder.time {
        next.time = scan.top_time;
        next.seen = scan.top_ids.clone();
    } else if scan.top_time == folder.time {
        for id in &scan.top_ids {
            if !next.seen.contains(id) {
                next.seen.push(id.clone());
            }
        }
    }
    if next.seen.len() > MAX_SEEN {
        let extra = next.seen.len() - MAX_SEEN;
        next.seen.drain(..extra);
    }
    next
}

/// The account id the connection was made with (digits, checked at connect).
fn account_id(ctx: &SyncContext<'_>) -> Result<String, ProviderCallError> {
    let id = ctx.connection.external_account_id.as_str();
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(ProviderCallError::Rejected(
            "the connection's Zoho Mail account id is not numeric".into(),
        ))
    }
}

/// `{api}/api/accounts/{account}/{tail...}`.
fn account_url(ctx: &SyncContext<'_>, account: &str, tail: &[&str]) -> Url {
    let mut url = zoho::api_base(ctx.provider.settings, ctx.connection, "mail");
    url.set_query(None);
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .push("api")
            .push("accounts")
            .push(account);
        segments.extend(tail);
    }
    url
}

/// One sync step.
pub(super) async fn page(
    ctx: SyncContext<'_>,
    cursor: Option<&Value>,
) -> Result<SyncPage, ProviderCallError> {
    let account = account_id(&ctx)?;
    let mut cursor = Cursor::read(cursor);
    if cursor.folders.len() != FOLDERS.len() {
        cursor.folders = read_folders(&ctx, &account).await?;
        cursor.scan = None;
        return Ok(SyncPage {
            signals: Vec::new(),
            cursor: cursor.to_value(),
            more: true,
            metadata: None,
        });
    }
    let mut scan = cursor.scan.take().unwrap_or(Scan {
        folder: 0,
        start: 1,
        top_time: 0,
        top_ids: Vec::new(),
    });
    let Some(folder) = cursor.folders.get(scan.folder).cloned() else {
        return Ok(SyncPage {
            signals: Vec::new(),
            cursor: Cursor {
                folders: cursor.folders,
                scan: None,
            }
            .to_value(),
            more: false,
            metadata: None,
        });
    };
    if scan.top_time < folder.time {
        scan.top_time = folder.time;
    }
    let mut url = account_url(&ctx, &account, &["messages", "view"]);
    url.query_pairs_mut()
        .append_pair("folderId", &folder.id)
        .append_pair("start", &scan.start.to_string())
        .append_pair("limit", &PAGE_SIZE.to_string())
        .append_pair("sortBy", "date")
        .append_pair("sortorder", "false")
        .append_pair("includeto", "true");
    let body = zoho::get_json(
        ctx.provider,
        url,
        ctx.access_token,
        "Zoho Mail messages",
        THROTTLE,
    )
    .await?;
    let raw = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderCallError::Rejected("Zoho Mail listed no data".into()))?;
    let listed: Vec<Listed> = raw.iter().filter_map(listed).collect();
    let full = raw.len() >= PAGE_SIZE;
    let kind = FOLDERS
        .iter()
        .find(|(role, _)| *role == folder.role)
        .map_or("email_received", |(_, kind)| *kind);
    let stepped = step(&folder, &mut scan, &listed, full);
    let signals = stepped
        .new
        .iter()
        .filter_map(|m| signal(kind, &account, m))
        .collect();
    let more;
    if stepped.done {
        let advanced = advance(&folder, &scan);
        if let Some(slot) = cursor.folders.get_mut(scan.folder) {
            *slot = advanced;
        }
        let next = scan.folder.saturating_add(1);
        if next < cursor.folders.len() {
            cursor.scan = Some(Scan {
                folder: next,
                start: 1,
                top_time: 0,
                top_ids: Vec::new(),
            });
            more = true;
        } else {
            cursor.scan = None;
            more = false;
        }
    } else {
        scan.start = scan.start.saturating_add(PAGE_SIZE);
        cursor.scan = Some(scan);
        more = true;
    }
    Ok(SyncPage {
        signals,
        cursor: cursor.to_value(),
        more,
        metadata: None,
    })
}

/// The Inbox and Sent folder ids, from `GET /api/accounts/{accountId}/folders` (each folder's
/// `folderType` is `Inbox`, `Sent`, ...); their cursors start `FIRST_SYNC_DAYS` back.
async fn read_folders(
    ctx: &SyncContext<'_>,
    account: &str,
) -> Result<Vec<FolderCursor>, ProviderCallError> {
    let url = account_url(ctx, account, &["folders"]);
    let body = zoho::get_json(
        ctx.provider,
        url,
        ctx.access_token,
        "Zoho Mail folders",
        THROTTLE,
    )
    .await?;
    let folders = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderCallError::Rejected("Zoho Mail listed no folders".into()))?;
    let since = (now() - Duration::days(FIRST_SYNC_DAYS)).timestamp_millis();
    folder_cursors(folders, since)
}

/// The Inbox and Sent cursors, starting at `since`, from a folder listing. Zoho's samples give
/// `folderId` as a number (older) or a string (current); both are read.
pub(super) fn folder_cursors(
    folders: &[Value],
    since: i64,
) -> Result<Vec<FolderCursor>, ProviderCallError> {
    FOLDERS
        .iter()
        .map(|(role, _)| {
            folders
                .iter()
                .find(|f| {
                    f.get("folderType")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.eq_ignore_ascii_case(role))
                })
                .and_then(|f| zoho::id_text(f.get("folderId")))
                .map(|id| FolderCursor {
                    role: role.to_string(),
                    id,
                    time: since,
                    seen: Vec::new(),
                })
                .ok_or_else(|| {
                    ProviderCallError::Rejected(format!("Zoho Mail has no {role} folder"))
                })
        })
        .collect()
}

/// Zoho Mail lists addresses HTML-escaped (`&lt;rebecca@zylker.com&gt;`).
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn text(raw: &Value, key: &str) -> Option<String> {
    raw.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && *s != "Not Provided")
        .map(unescape)
}

fn time(ms: i64) -> Option<Timestamp> {
    DateTime::from_timestamp_millis(ms)
}

/// The signal of one message: its headers (from, to, cc, subject, times, ids), never its body
/// or the listing's `summary` (the first lines of the body).
pub(super) fn signal(kind: &'static str, account: &str, m: &Listed) -> Option<SignalDraft> {
    let occurred_at = time(m.time)?;
    let from = text(&m.raw, "fromAddress");
    let sender = text(&m.raw, "sender");
    let subject = text(&m.raw, "subject");
    let sent_at = zoho::millis(m.raw.get("sentDateInGMT")).and_then(time);
    let payload = json!({
        "account_id": account,
        "message_id": m.id,
        "folder_id": zoho::id_text(m.raw.get("folderId")),
        "thread_id": zoho::id_text(m.raw.get("threadId")),
        "from": from,
        "sender": sender,
        "to": text(&m.raw, "toAddress"),
        "cc": text(&m.raw, "ccAddress"),
        "subject": subject,
        "received_at": crate::domain::format_time(&occurred_at),
        "sent_at": sent_at.as_ref().map(crate::domain::format_time),
    });
    Some(SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at,
        actor: from.as_ref().map(|address| Actor {
            id: address.clone(),
            name: sender.clone(),
            email: Some(address.clone()),
        }),
        title: subject,
        url: None,
        external_id: Some(m.id.clone()),
        dedupe_key: format!("{kind}:{account}:{}", m.id),
        payload,
    })
}

#[cfg(test)]
mod tests;
