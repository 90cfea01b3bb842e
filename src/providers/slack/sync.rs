//! Slack history by sync: one Web API request per page, so the engine's limiter paces exactly
//! what Slack limits (see [`super::class`]).
//!
//! A round: the conversations the app is a member of, from `users.conversations`
//! (`types=public_channel,private_channel`, `exclude_archived=true`,
//! <https://api.slack.com/methods/users.conversations>), then for each in turn
//! `conversations.history` with `oldest` = the channel's cursor and `inclusive=false`
//! (<https://api.slack.com/methods/conversations.history>), paged by
//! `response_metadata.next_cursor` (<https://api.slack.com/apis/pagination>), and
//! `conversations.replies` (<https://api.slack.com/methods/conversations.replies>) for each
//! thread whose parent that history showed with replies. `more` is `false` when the round is
//! done; the next round starts at the next scheduled sync. A round over many channels spans
//! many jobs: each page commits its cursor, and a job the limiter makes wait is deferred.
//!
//! Signals are those of the Events API with the same dedupe keys ([`super::normalize`]), so a
//! message delivered by webhook and read by sync is one signal: `message_posted`,
//! `message_updated` for a message showing `edited`, and `reaction_added` for each user of each
//! of its `reactions` (dated by the message, since history does not say when a reaction was
//! added). `message_deleted` comes only from webhooks: history no longer shows the message.
//!
//! What history cannot show: edits of and reactions to messages older than the channel's
//! cursor, and replies in threads whose parent is older than it; those come from webhooks only.
//!
//! # The cursor
//!
//! ```json
//! {
//!   "v": 1,
//!   "floor": "1764460800.000000",
//!   "channels": { "C1": { "type": "channel", "oldest": "1764547200.000100" } },
//!   "listing": { "next": "dGVhbTpDMDYxRkE1UEI=", "seen": [["C1", "channel"], ["C2", "group"]] },
//!   "queue": ["C2"],
//!   "current": { "channel": "C1", "page": "bmV4dF90czox", "newest": "1764547200.000100" },
//!   "threads": [ { "channel": "C1", "ts": "1764547100.000200", "oldest": "1764460800.000000" } ]
//! }
//! ```
//!
//! - `floor`: the start of the first sync's window (`POBLYSH_SLACK_INITIAL_SYNC_DAYS`, default
//!   7); a channel seen for the first time is read from there.
//! - `channels`: each member channel's `channel_type` and the newest `ts` read from it.
//! - `listing`: present while the channel listing is paged; channels it no longer lists are
//!   forgotten when it ends.
//! - `queue`, `current`: the channels left in this round and the one being paged (`newest`
//!   becomes its `oldest` once its last page is read: history pages go from newest to oldest).
//! - `threads`: threads to read replies of, each after its own `oldest`, read before the
//!   channel's next page.

use std::collections::BTreeMap;

use chrono::Duration;
use serde::{Deserialize, Serialize};
#[cfg(test)]
use serde_json::json;
use serde_json::Value;

use super::class::AppClass;
use super::normalize::{changed, posted, reaction_draft, slack_time, Reacted, POSTING_SUBTYPES};
use super::oauth::API_BASE;
use super::wire::{ApiAnswer, Changed, Edited, Message, Posted};
use crate::connector::{join_path, rate_limited, read_body, transport, MAX_BODY_BYTES};
use crate::connector::{ProviderCallError, SignalDraft, SyncContext, SyncPage};
use crate::domain::{now, Timestamp};

/// The cursor format.
const VERSION: u32 = 1;
/// `POBLYSH_SLACK_INITIAL_SYNC_DAYS`, after `POBLYSH_SLACK_`.
pub(super) const INITIAL_DAYS_SETTING: &str = "INITIAL_SYNC_DAYS";
/// How far back a first sync reads when the setting is unset.
pub(super) const DEFAULT_INITIAL_DAYS: i64 = 7;
/// Channels per `users.conversations` page (Slack's limit is under 1,000).
const CHANNELS_PER_PAGE: u32 = 200;

/// Checks a value of `POBLYSH_SLACK_INITIAL_SYNC_DAYS` at start-up: whole days, 1 to 365.
pub(super) fn check_initial_days(text: &str) -> Result<(), String> {
    match text.trim().parse::<i64>() {
        Ok(days) if (1..=365).contains(&days) => Ok(()),
        _ => Err(format!("{text:?} is not a number of days from 1 to 365")),
    }
}

fn initial_days(ctx: &SyncContext<'_>) -> i64 {
    ctx.provider
        .settings
        .extra(INITIAL_DAYS_SETTING)
        .and_then(|d| d.trim().parse().ok())
        .filter(|d| (1..=365).contains(d))
        .unwrap_or(DEFAULT_INITIAL_DAYS)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ChannelState {
    #[serde(rename = "type")]
    channel_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oldest: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Listing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    #[serde(default)]
    seen: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Current {
    channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    newest: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Thread {
    channel: String,
    ts: String,
    oldest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<String>,
}

/// Where a connection's sync stands (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    v: u32,
    floor: String,
    #[serde(default)]
    channels: BTreeMap<String, ChannelState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listing: Option<Listing>,
    #[serde(default)]
    queue: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<Current>,
    #[serde(default)]
    threads: Vec<Thread>,
}

impl Cursor {
    fn start(now: Timestamp, days: i64) -> Self {
        let floor = (now - Duration::days(days)).timestamp();
        Self {
            v: VERSION,
            floor: format!("{floor}.000000"),
            channels: BTreeMap::new(),
            listing: None,
            queue: Vec::new(),
            current: None,
            threads: Vec::new(),
        }
    }

    /// The stored cursor, or a fresh one when there is none or it cannot be read (dedupe keys
    /// keep a restart from repeating signals).
    fn read(value: Option<&Value>, now: Timestamp, days: i64) -> Self {
        value
            .and_then(|v| serde_json::from_value::<Cursor>(v.clone()).ok())
            .filter(|c| c.v == VERSION && slack_time("floor", &c.floor).is_ok())
            .unwrap_or_else(|| Self::start(now, days))
    }

    /// Whether the round is over: nothing listed, queued or pending.
    fn round_done(&self) -> bool {
        self.listing.is_none()
            && self.queue.is_empty()
            && self.current.is_none()
            && self.threads.is_empty()
    }

    fn page(self, signals: Vec<SignalDraft>) -> Result<SyncPage, ProviderCallError> {
        let more = !self.round_done();
        let cursor = serde_json::to_value(&self).map_err(|e| {
            ProviderCallError::Rejected(format!("the Slack sync cursor cannot be written: {e}"))
        })?;
        Ok(SyncPage {
            signals,
            cursor,
            more,
            metadata: None,
        })
    }

    /// The listing ended: keep the channels it listed (new ones start at the floor) and queue
    /// them all for this round.
    fn end_listing(&mut self, seen: Vec<(String, String)>) {
        let mut channels = BTreeMap::new();
        for (id, channel_type) in seen {
            let oldest = self.channels.remove(&id).and_then(|c| c.oldest);
            channels.insert(
                id,
                ChannelState {
                    channel_type,
                    oldest,
                },
            );
        }
        self.channels = channels;
        self.queue = self.channels.keys().cloned().collect();
        self.listing = None;
    }
}

/// One page of the sync (see the module documentation).
pub(super) async fn sync_page(
    ctx: SyncContext<'_>,
    cursor: Option<&Value>,
) -> Result<SyncPage, ProviderCallError> {
    let mut cursor = Cursor::read(cursor, now(), initial_days(&ctx));
    if cursor.round_done() {
        cursor.listing = Some(Listing::default());
    }
    let page_size = AppClass::of(&ctx.provider.settings.extra).page_size();
    if let Some(listing) = cursor.listing.take() {
        return listing_page(&ctx, cursor, listing).await;
    }
    if let Some(thread) = cursor.threads.first().cloned() {
        return replies_page(&ctx, cursor, thread, page_size).await;
    }
    let current = match cursor.current.take() {
        Some(current) => current,
        None if cursor.queue.is_empty() => return cursor.page(Vec::new()),
        None => Current {
            channel: cursor.queue.remove(0),
            page: None,
            newest: None,
        },
    };
    history_page(&ctx, cursor, current, page_size).await
}

async fn listing_page(
    ctx: &SyncContext<'_>,
    mut cursor: Cursor,
    mut listing: Listing,
) -> Result<SyncPage, ProviderCallError> {
    let limit = CHANNELS_PER_PAGE.to_string();
    let mut query = vec![
        ("types", "public_channel,private_channel"),
        ("exclude_archived", "true"),
        ("limit", limit.as_str()),
    ];
    if let Some(next) = listing.next.as_deref() {
        query.push(("cursor", next));
    }
    let answer = call(ctx, "users.conversations", &query).await?;
    for channel in answer.channels.iter().flatten() {
        if !channel.is_archived && !channel.id.is_empty() {
            listing
                .seen
                .push((channel.id.clone(), channel.channel_type().to_string()));
        }
    }
    match answer.next_cursor() {
        Some(next) => {
            listing.next = Some(next);
            cursor.listing = Some(listing);
        }
        None => cursor.end_listing(listing.seen),
    }
    cursor.page(Vec::new())
}

async fn history_page(
    ctx: &SyncContext<'_>,
    mut cursor: Cursor,
    mut current: Current,
    page_size: u32,
) -> Result<SyncPage, ProviderCallError> {
    let Some(state) = cursor.channels.get(&current.channel).cloned() else {
        // Forgotten by a listing since it was queued.
        return cursor.page(Vec::new());
    };
    let oldest = state.oldest.clone().unwrap_or_else(|| cursor.floor.clone());
    let limit = page_size.to_string();
    let mut query = vec![
        ("channel", current.channel.as_str()),
        ("oldest", oldest.as_str()),
        ("inclusive", "false"),
        ("limit", limit.as_str()),
    ];
    if let Some(page) = current.page.as_deref() {
        query.push(("cursor", page));
    }
    let answer = match call(ctx, "conversations.history", &query).await {
        Err(Skip::Channel(error)) => {
            tracing::info!(channel = %current.channel, error, "skipped a Slack channel");
            return cursor.page(Vec::new());
        }
        other => other?,
    };
    let mut signals = Vec::new();
    for message in read_messages(&answer, &current.channel) {
        newest_of(&mut current.newest, &message.ts);
        if message.thread_ts.as_deref() == Some(message.ts.as_str())
            && message.reply_count.unwrap_or(0) > 0
            && message.latest_reply.is_some()
        {
            cursor.threads.push(Thread {
                channel: current.channel.clone(),
                ts: message.ts.clone(),
                oldest: oldest.clone(),
                page: None,
            });
        }
        signals.extend(message_signals(
            &current.channel,
            &state.channel_type,
            message,
        ));
    }
    match answer.next_cursor() {
        Some(next) => {
            current.page = Some(next);
            cursor.current = Some(current);
        }
        None => {
            if let Some(newest) = current.newest {
                if let Some(channel) = cursor.channels.get_mut(&current.channel) {
                    channel.oldest = Some(newest);
                }
            }
        }
    }
    cursor.page(signals)
}

async fn replies_page(
    ctx: &SyncContext<'_>,
    mut cursor: Cursor,
    mut thread: Thread,
    page_size: u32,
) -> Result<SyncPage, ProviderCallError> {
    let channel_type = cursor
        .channels
        .get(&thread.channel)
        .map(|c| c.channel_type.clone())
        .unwrap_or_else(|| "channel".into());
    let limit = page_size.to_string();
    let mut query = vec![
        ("channel", thread.channel.as_str()),
        ("ts", thread.ts.as_str()),
        ("oldest", thread.oldest.as_str()),
        ("inclusive", "false"),
        ("limit", limit.as_str()),
    ];
    if let Some(page) = thread.page.as_deref() {
        query.push(("cursor", page));
    }
    let answer = match call(ctx, "conversations.replies", &query).await {
        Err(Skip::Channel(error)) => {
            tracing::info!(channel = %thread.channel, error, "skipped a Slack thread");
            cursor.threads.remove(0);
            return cursor.page(Vec::new());
        }
        other => other?,
    };
    let mut signals = Vec::new();
    for message in read_messages(&answer, &thread.channel) {
        // The parent comes first on every page; history reported it already.
        if message.ts != thread.ts {
            signals.extend(message_signals(&thread.channel, &channel_type, message));
        }
    }
    match answer.next_cursor() {
        Some(next) => {
            thread.page = Some(next);
            cursor.threads[0] = thread;
        }
        None => {
            cursor.threads.remove(0);
        }
    }
    cursor.page(signals)
}

/// `newest` moved up to `ts` if that is later.
fn newest_of(newest: &mut Option<String>, ts: &str) {
    let Ok(at) = slack_time("ts", ts) else {
        return;
    };
    let later = match newest.as_deref().map(|n| slack_time("ts", n)) {
        Some(Ok(current)) => at > current,
        _ => true,
    };
    if later {
        *newest = Some(ts.to_string());
    }
}

/// The messages of an answer that can be read; one that cannot is logged and skipped.
fn read_messages(answer: &ApiAnswer, channel: &str) -> Vec<Message> {
    answer
        .messages
        .iter()
        .flatten()
        .filter_map(|m| match serde_json::from_value::<Message>(m.clone()) {
            Ok(message) if slack_time("ts", &message.ts).is_ok() => Some(message),
            _ => {
                tracing::warn!(channel, "skipped a Slack message that cannot be read");
                None
            }
        })
        .collect()
}

/// What one message of a history or replies page says, as the Events API would have said it.
fn message_signals(channel: &str, channel_type: &str, message: Message) -> Vec<SignalDraft> {
    let posting = message
        .subtype
        .as_deref()
        .is_none_or(|s| POSTING_SUBTYPES.contains(&s));
    if !posting {
        return Vec::new();
    }
    let mut drafts = Vec::new();
    let Ok(at) = slack_time("ts", &message.ts) else {
        return drafts;
    };
    for reaction in message.reactions.iter().flatten() {
        for user in &reaction.users {
            drafts.push(reaction_draft(
                Reacted {
                    channel,
                    channel_type: Some(channel_type),
                    ts: &message.ts,
                    user,
                    reaction: &reaction.name,
                    item_user: message.user.as_deref(),
                },
                at,
            ));
        }
    }
    if let Some(edited) = &message.edited {
        let now_shown = Message {
            ts: message.ts.clone(),
            subtype: message.subtype.clone(),
            user: message.user.clone(),
            bot_id: message.bot_id.clone(),
            username: message.username.clone(),
            text: message.text.clone(),
            thread_ts: message.thread_ts.clone(),
            edited: Some(Edited {
                user: edited.user.clone(),
                ts: edited.ts.clone(),
            }),
            ..Message::default()
        };
        let draft = changed(Changed {
            channel: channel.to_string(),
            channel_type: Some(channel_type.to_string()),
            message: now_shown,
        });
        if let Ok(Some(draft)) = draft {
            drafts.push(draft);
        }
    }
    if let Ok(draft) = posted(Posted {
        channel: channel.to_string(),
        channel_type: Some(channel_type.to_string()),
        message,
    }) {
        drafts.insert(0, draft);
    }
    drafts
}

/// Why a call gave nothing to use.
enum Skip {
    /// The channel cannot be read (left, archived, deleted, not allowed): go on without it.
    Channel(String),
    /// The sync cannot go on now.
    Call(ProviderCallError),
}

impl From<ProviderCallError> for Skip {
    fn from(err: ProviderCallError) -> Self {
        Skip::Call(err)
    }
}

impl From<Skip> for ProviderCallError {
    fn from(skip: Skip) -> Self {
        match skip {
            Skip::Call(err) => err,
            Skip::Channel(error) => ProviderCallError::Rejected(format!("Slack answered {error}")),
        }
    }
}

/// Calls a Web API method with `query` and the bot token. Slack answers `200` with
/// `ok: false` and an `error` on failure (<https://api.slack.com/web#evaluating_responses>) and
/// `429` with `Retry-After` when rate limited (<https://api.slack.com/apis/rate-limits>).
async fn call(
    ctx: &SyncContext<'_>,
    method: &str,
    query: &[(&str, &str)],
) -> Result<ApiAnswer, Skip> {
    let api = ctx.provider.settings.api_base(API_BASE);
    let response = ctx
        .provider
        .http
        .get(join_path(&api, &format!("/{method}")))
        .query(query)
        .bearer_auth(ctx.access_token.expose())
        .send()
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    match status {
        429 => return Err(rate_limited(&response).into()),
        401 => return Err(ProviderCallError::Unauthorized.into()),
        500..=599 => {
            return Err(
                ProviderCallError::Unavailable(format!("Slack {method} answered {status}")).into(),
            )
        }
        200..=299 => {}
        _ => {
            return Err(
                ProviderCallError::Rejected(format!("Slack {method} answered {status}")).into(),
            )
        }
    }
    let body = read_body(response, MAX_BODY_BYTES).await?;
    let answer: ApiAnswer = serde_json::from_slice(&body).map_err(|_| {
        ProviderCallError::Rejected(format!("Slack {method} answered an unexpected body"))
    })?;
    if answer.ok {
        return Ok(answer);
    }
    Err(api_error(
        method,
        answer.error.as_deref().unwrap_or("unknown_error"),
    ))
}

/// An `ok: false` answer's `error`, sorted (the error lists of the method pages).
fn api_error(method: &str, error: &str) -> Skip {
    let message = format!("Slack {method} answered {error}");
    match error {
        "channel_not_found" | "not_in_channel" | "is_archived" | "thread_not_found"
        | "missing_scope" | "access_denied" => Skip::Channel(error.to_string()),
        "invalid_auth" | "not_authed" | "token_expired" => {
            Skip::Call(ProviderCallError::Unauthorized)
        }
        "token_revoked" | "account_inactive" | "team_access_not_granted" => {
            Skip::Call(ProviderCallError::InvalidGrant(message))
        }
        "ratelimited" => Skip::Call(ProviderCallError::RateLimited { retry_after: None }),
        "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
            Skip::Call(ProviderCallError::Unavailable(message))
        }
        _ => Skip::Call(ProviderCallError::Rejected(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(value: Value) -> Message {
        serde_json::from_value(value).expect("message")
    }

    #[test]
    fn a_history_message_gives_the_webhook_keys_for_post_edit_and_each_reaction() {
        let drafts = message_signals(
            "C1",
            "channel",
            message(json!({
                "type": "message", "user": "U1", "text": "hello", "ts": "1512085950.000216",
                "edited": { "user": "U1", "ts": "1512085960.000000" },
                "reactions": [ { "name": "thumbsup", "users": ["U2", "U3"], "count": 2 } ]
            })),
        );
        let keys: Vec<&str> = drafts.iter().map(|d| d.dedupe_key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "message:C1:1512085950.000216",
                "reaction_added:C1:1512085950.000216:U2:thumbsup",
                "reaction_added:C1:1512085950.000216:U3:thumbsup",
                "message_updated:C1:1512085950.000216:1512085960.000000",
            ]
        );
        assert_eq!(drafts[0].payload["channel_type"], "channel");
        assert_eq!(drafts[1].payload["item_user"], "U1");
        // Joins and other notices are not someone posting.
        let join = message(json!({
            "type": "message", "subtype": "channel_join", "user": "U1", "ts": "1.000001"
        }));
        assert!(message_signals("C1", "channel", join).is_empty());
    }

    #[test]
    fn slack_errors_sort_into_skip_refresh_reauth_and_retry() {
        let sorted = |e: &str| match api_error("conversations.history", e) {
            Skip::Channel(_) => "skip",
            Skip::Call(ProviderCallError::Unauthorized) => "refresh",
            Skip::Call(ProviderCallError::InvalidGrant(_)) => "reauth",
            Skip::Call(ProviderCallError::RateLimited { .. }) => "wait",
            Skip::Call(ProviderCallError::Unavailable(_)) => "retry",
            Skip::Call(ProviderCallError::Rejected(_)) => "rejected",
            Skip::Call(ProviderCallError::Gone(_)) => "gone",
        };
        assert_eq!(sorted("not_in_channel"), "skip");
        assert_eq!(sorted("channel_not_found"), "skip");
        assert_eq!(sorted("invalid_auth"), "refresh");
        assert_eq!(sorted("token_expired"), "refresh");
        assert_eq!(sorted("token_revoked"), "reauth");
        assert_eq!(sorted("ratelimited"), "wait");
        assert_eq!(sorted("internal_error"), "retry");
        assert_eq!(sorted("invalid_arguments"), "rejected");
    }

    #[test]
    fn a_listing_keeps_known_channels_cursors_adds_new_ones_and_forgets_the_rest() {
        let mut cursor = Cursor::start(now(), 7);
        for (id, oldest) in [("C1", "5.000000"), ("C2", "6.000000")] {
            cursor.channels.insert(
                id.into(),
                ChannelState {
                    channel_type: "channel".into(),
                    oldest: Some(oldest.into()),
                },
            );
        }
        cursor.listing = Some(Listing::default());
        cursor.end_listing(vec![
            ("C1".into(), "group".into()),
            ("C3".into(), "channel".into()),
        ]);
        assert_eq!(cursor.queue, ["C1", "C3"]);
        assert!(cursor.listing.is_none());
        assert_eq!(cursor.channels["C1"].oldest.as_deref(), Some("5.000000"));
        assert_eq!(cursor.channels["C1"].channel_type, "group");
        assert_eq!(cursor.channels["C3"].oldest, None, "read from the floor");
        assert!(!cursor.channels.contains_key("C2"), "the bot left it");
        assert!(!cursor.round_done());
    }

    #[test]
    fn the_newest_ts_is_compared_as_time_not_text() {
        let mut newest = Some("999.000001".to_string());
        newest_of(&mut newest, "1000.000000");
        assert_eq!(newest.as_deref(), Some("1000.000000"));
        newest_of(&mut newest, "998.999999");
        newest_of(&mut newest, "not a ts");
        assert_eq!(newest.as_deref(), Some("1000.000000"));
    }

    proptest! {
        #[test]
        fn a_cursor_survives_its_round_trip_and_garbage_starts_over(
            channels in proptest::collection::btree_map("C[A-Z0-9]{1,10}", 0u32..2_000_000_000, 0..8),
            queue_len in 0usize..8,
            garbage in ".{0,40}",
        ) {
            let start = now();
            let mut cursor = Cursor::start(start, 7);
            for (id, secs) in &channels {
                cursor.channels.insert(id.clone(), ChannelState {
                    channel_type: "channel".into(),
                    oldest: Some(format!("{secs}.000001")),
                });
            }
            cursor.queue = cursor.channels.keys().take(queue_len).cloned().collect();
            let value = serde_json::to_value(&cursor).expect("json");
            prop_assert_eq!(Cursor::read(Some(&value), start, 7), cursor.clone());
            let fresh = Cursor::read(Some(&json!(garbage)), start, 7);
            prop_assert!(fresh.channels.is_empty() && fresh.round_done());
        }
    }
}
