//! Zoho Cliq's incremental sync, one request per page:
//!
//! 1. List the chats whose last message is newer than the last listing
//!    (`GET /api/v2/chats?modified_after=..&limit=100`, paged back with `modified_before`,
//!    https://www.zoho.com/cliq/help/restapi/v2/, "Retrieve all direct chats"), queueing them.
//! 2. For each queued chat, read its messages since the chat's cursor
//!    (`GET /api/v2/chats/{CHAT_ID}/messages?fromtime=..&limit=..`, "Get Messages"), page after
//!    page, each message a `message_posted` signal.
//!
//! The queue lives in the cursor, so a run that stops (the client-side limit defers it, a
//! lockout makes it wait 10 minutes) resumes with the same chat: chats spread over runs
//! instead of failing. A chat's cursor is the newest message time read and the ids read at
//! that millisecond; the request asks from one millisecond earlier, so equal times are neither
//! dropped nor repeated. The listing shows no edits or deletions (Get Messages takes only
//! `fromtime`, `totime` and `limit`, https://www.zoho.com/cliq/help/restapi/v2/messages/, and
//! the message objects Zoho publishes carry no edit or deletion marker), so only posts are
//! reported.

use chrono::{DateTime, Duration};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use super::THROTTLE;
use crate::connector::{ProviderCallError, SignalDraft, SyncContext, SyncPage};
use crate::domain::{now, parse_rfc3339, Actor, SignalKind, Timestamp};
use crate::providers::zoho;

/// Chats per listing request (Cliq's maximum).
const CHATS_PER_PAGE: usize = 100;
/// Messages per request.
pub(super) const MESSAGES_PER_PAGE: usize = 50;
/// How far back the first read of a chat goes.
const FIRST_SYNC_DAYS: i64 = 7;
/// At most this many ids are kept for one millisecond of one chat.
const MAX_SEEN: usize = 200;
/// At most this many chat cursors are kept (the least recently read go first).
const MAX_CHATS: usize = 2000;
/// How far before the previous listing's start the next one looks, in milliseconds.
const LISTING_MARGIN_MS: i64 = 5 * 60 * 1000;
/// Message text kept in a signal, in characters.
const MAX_TEXT: usize = 1000;

/// A chat waiting to be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Queued {
    pub id: String,
    pub name: Option<String>,
}

/// Where one chat's messages stand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ChatCursor {
    pub id: String,
    pub time: i64,
    pub seen: Vec<String>,
}

/// A listing of chats in progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Listing {
    /// When it began (epoch ms): the next listing asks for chats modified after it.
    pub started: i64,
    /// `modified_before` of its next page.
    pub before: Option<i64>,
}

/// The whole cursor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Cursor {
    /// `modified_after` of the next listing (epoch ms); `None` before the first.
    pub chats_since: Option<i64>,
    pub listing: Option<Listing>,
    pub queue: Vec<Queued>,
    pub chats: Vec<ChatCursor>,
    /// The last run ended with an empty queue: the next step starts a listing.
    pub idle: bool,
}

impl Cursor {
    pub(super) fn read(value: Option<&Value>) -> Self {
        value
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_else(|| Cursor {
                idle: true,
                ..Cursor::default()
            })
    }

    fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A time Cliq sends as epoch milliseconds (number or string) or as ISO 8601.
pub(super) fn time_ms(value: Option<&Value>) -> Option<i64> {
    zoho::millis(value).or_else(|| {
        value
            .and_then(Value::as_str)
            .and_then(|s| parse_rfc3339(s).ok())
            .map(|t| t.timestamp_millis())
    })
}

fn id_ok(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `{api}/api/v2/{segments...}`.
fn api_url(ctx: &SyncContext<'_>, segments: &[&str]) -> Url {
    let mut url = zoho::api_base(ctx.provider.settings, ctx.connection, "cliq");
    url.set_query(None);
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().push("api").push("v2");
        path.extend(segments);
    }
    url
}

/// One sync step.
pub(super) async fn page(
    ctx: SyncContext<'_>,
    cursor: Option<&Value>,
) -> Result<SyncPage, ProviderCallError> {
    let mut cursor = Cursor::read(cursor);
    let now_ms = now().timestamp_millis();
    if cursor.idle && cursor.listing.is_none() {
        cursor.idle = false;
        cursor.listing = Some(Listing {
            started: now_ms,
            before: None,
        });
    }
    let signals = if let Some(listing) = cursor.listing.clone() {
        list_chats(&ctx, &mut cursor, listing, now_ms).await?;
        Vec::new()
    } else if let Some(chat) = cursor.queue.first().cloned() {
        read_chat(&ctx, &mut cursor, &chat, now_ms).await?
    } else {
        Vec::new()
    };
    let more = cursor.listing.is_some() || !cursor.queue.is_empty();
    cursor.idle = !more;
    Ok(SyncPage {
        signals,
        cursor: cursor.to_value(),
        more,
        metadata: None,
    })
}

/// One page of the chat listing.
async fn list_chats(
    ctx: &SyncContext<'_>,
    cursor: &mut Cursor,
    listing: Listing,
    now_ms: i64,
) -> Result<(), ProviderCallError> {
    let since = cursor.chats_since.unwrap_or_else(|| {
        now_ms.saturating_sub(Duration::days(FIRST_SYNC_DAYS).num_milliseconds())
    });
    let mut url = api_url(ctx, &["chats"]);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("limit", &CHATS_PER_PAGE.to_string())
            .append_pair("modified_after", &since.to_string());
        if let Some(before) = listing.before {
            q.append_pair("modified_before", &before.to_string());
        }
    }
    let body = zoho::get_json(
        ctx.provider,
        url,
        ctx.access_token,
        "Zoho Cliq chats",
        THROTTLE,
    )
    .await?;
    let chats = body
        .get("chats")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderCallError::Rejected("Zoho Cliq listed no chats".into()))?;
    let mut oldest: Option<i64> = None;
    for chat in chats {
        let Some(id) = zoho::id_text(chat.get("chat_id")).filter(|id| id_ok(id)) else {
            continue;
        };
        if let Some(t) = time_ms(chat.get("last_modified_time")) {
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
        if !cursor.queue.iter().any(|q| q.id == id) {
            let name = chat
                .get("name")
                .and_then(Value::as_str)
                .map(|n| n.chars().take(200).collect());
            cursor.queue.push(Queued { id, name });
        }
    }
    let next_before = oldest.filter(|o| listing.before.is_none_or(|b| *o < b));
    if chats.len() >= CHATS_PER_PAGE && next_before.is_some() {
        cursor.listing = Some(Listing {
            started: listing.started,
            before: next_before,
        });
    } else {
        cursor.listing = None;
        // A margin for the clocks of Zoho and this service: a chat listed twice is read from
        // its own cursor and reports nothing twice.
        cursor.chats_since = Some(listing.started.saturating_sub(LISTING_MARGIN_MS));
    }
    Ok(())
}

/// One message of a listing, as far as the sync reads it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Listed {
    pub id: String,
    pub time: i64,
    pub raw: Value,
}

pub(super) fn listed(raw: &Value) -> Option<Listed> {
    let id = zoho::id_text(raw.get("id")).or_else(|| zoho::id_text(raw.get("message_id")))?;
    let time = time_ms(raw.get("time"))?;
    Some(Listed {
        id,
        time,
        raw: raw.clone(),
    })
}

/// The messages of a page that are new against a chat's cursor, oldest first, and the cursor
/// after them.
pub(super) fn fold(chat: &ChatCursor, page: &[Listed]) -> (Vec<Listed>, ChatCursor) {
    let mut sorted: Vec<&Listed> = page.iter().collect();
    sorted.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
    let mut next = chat.clone();
    let mut new = Vec::new();
    for m in sorted {
        if m.time < chat.time || (m.time == chat.time && chat.seen.contains(&m.id)) {
            continue;
        }
        if new.iter().any(|n: &Listed| n.id == m.id) {
            continue;
        }
        if m.time > next.time {
            next.time = m.time;
            next.seen = vec![m.id.clone()];
        } else if !next.seen.contains(&m.id) {
            next.seen.push(m.id.clone());
        }
        new.push(m.clone());
    }
    if next.seen.len() > MAX_SEEN {
        let extra = next.seen.len() - MAX_SEEN;
        next.seen.drain(..extra);
    }
    (new, next)
}

/// One page of one chat's messages.
async fn read_chat(
    ctx: &SyncContext<'_>,
    cursor: &mut Cursor,
    chat: &Queued,
    now_ms: i64,
) -> Result<Vec<SignalDraft>, ProviderCallError> {
    let current = cursor
        .chats
        .iter()
        .find(|c| c.id == chat.id)
        .cloned()
        .unwrap_or_else(|| ChatCursor {
            id: chat.id.clone(),
            time: now_ms.saturating_sub(Duration::days(FIRST_SYNC_DAYS).num_milliseconds()),
            seen: Vec::new(),
        });
    let mut url = api_url(ctx, &["chats", &chat.id, "messages"]);
    url.query_pairs_mut()
        .append_pair("fromtime", &current.time.saturating_sub(1).to_string())
        .append_pair("limit", &MESSAGES_PER_PAGE.to_string());
    let body = zoho::get_json(
        ctx.provider,
        url,
        ctx.access_token,
        "Zoho Cliq messages",
        THROTTLE,
    )
    .await?;
    let raw = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderCallError::Rejected("Zoho Cliq listed no messages".into()))?;
    let page: Vec<Listed> = raw.iter().filter_map(listed).collect();
    let (new, next) = fold(&current, &page);
    let signals = new.iter().filter_map(|m| signal(chat, m)).collect();
    // A full page with something new: read on from the new cursor; else this chat is done.
    let finished = raw.len() < MESSAGES_PER_PAGE || new.is_empty();
    cursor.chats.retain(|c| c.id != chat.id);
    cursor.chats.push(next);
    if cursor.chats.len() > MAX_CHATS {
        let extra = cursor.chats.len() - MAX_CHATS;
        cursor.chats.drain(..extra);
    }
    if finished {
        cursor.queue.retain(|q| q.id != chat.id);
    }
    Ok(signals)
}

fn time(ms: i64) -> Option<Timestamp> {
    DateTime::from_timestamp_millis(ms)
}

/// The `message_posted` signal of one message.
pub(super) fn signal(chat: &Queued, m: &Listed) -> Option<SignalDraft> {
    let occurred_at = time(m.time)?;
    let sender = m.raw.get("sender");
    let sender_id = sender
        .and_then(|s| zoho::id_text(s.get("id")))
        .or_else(|| zoho::id_text(sender));
    let sender_name = sender
        .and_then(|s| s.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let text: Option<String> = m
        .raw
        .get("content")
        .and_then(|c| c.get("text"))
        .and_then(Value::as_str)
        .map(|t| t.chars().take(MAX_TEXT).collect());
    let kind = m.raw.get("type").and_then(Value::as_str).unwrap_or("text");
    Some(SignalDraft {
        kind: SignalKind::of("message_posted"),
        occurred_at,
        actor: sender_id.map(|id| Actor {
            id,
            name: sender_name.clone(),
            email: None,
        }),
        title: chat.name.clone(),
        url: None,
        external_id: Some(m.id.clone()),
        dedupe_key: format!("message_posted:{}:{}", chat.id, m.id),
        payload: json!({
            "chat_id": chat.id,
            "chat_name": chat.name,
            "message_id": m.id,
            "type": kind,
            "text": text,
            "sender_name": sender_name,
            "posted_at": crate::domain::format_time(&occurred_at),
        }),
    })
}

#[cfg(test)]
mod tests;
