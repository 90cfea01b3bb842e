//! Slack's Events API JSON, as far as the connector reads it. Every field Slack may leave out
//! is optional here; what a mapping cannot do without is checked where it is needed, so an
//! unexpected payload is an error message, never a panic.
//!
//! The outer envelope is the "event wrapper" of
//! <https://docs.slack.dev/apis/events-api/#callback-field>;
//! the inner shapes follow the event reference pages (<https://api.slack.com/events/message>,
//! <https://api.slack.com/events/reaction_added>).

use serde::Deserialize;
use serde_json::Value;

/// Any body the Events API posts: `url_verification`, `app_rate_limited` or `event_callback`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Envelope {
    /// The envelope type (`event_callback`, `url_verification`, `app_rate_limited`).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Globally unique id of the event; Slack's retries repeat it.
    #[serde(default)]
    pub event_id: Option<String>,
    /// The workspace where the event occurred.
    #[serde(default)]
    pub team_id: Option<String>,
    /// The workspace whose context the event is delivered in (Slack Connect, Enterprise Grid).
    #[serde(default)]
    pub context_team_id: Option<String>,
    #[serde(default)]
    pub enterprise_id: Option<String>,
    /// At most one installation of the app the event is visible to.
    #[serde(default)]
    pub authorizations: Option<Vec<Authorization>>,
    /// `url_verification` only.
    #[serde(default)]
    pub challenge: Option<String>,
    /// `app_rate_limited` only: the minute the limit began (Unix seconds).
    #[serde(default)]
    pub minute_rate_limited: Option<i64>,
    /// The inner event of an `event_callback`.
    #[serde(default)]
    pub event: Option<Value>,
}

/// One installation an event is visible to
/// (<https://api.slack.com/changelog/2020-09-15-events-api-truncate-authed-users>).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Authorization {
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub enterprise_id: Option<String>,
    #[serde(default)]
    pub is_enterprise_install: Option<bool>,
}

/// The fields of a message object, whether it is the event itself (`message`), the new state
/// inside `message_changed` or the old one in `previous_message`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Message {
    pub ts: String,
    #[serde(default)]
    pub subtype: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    /// The name a `bot_message` is shown under.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub thread_ts: Option<String>,
    #[serde(default)]
    pub edited: Option<Edited>,
    #[serde(default)]
    pub files: Option<Vec<FileRef>>,
    /// Reactions to the message, as `conversations.history` and `.replies` show them.
    #[serde(default)]
    pub reactions: Option<Vec<Reaction>>,
    /// Replies in the thread this message starts (`conversations.history`).
    #[serde(default)]
    pub reply_count: Option<u64>,
    /// The `ts` of the thread's latest reply (`conversations.history`).
    #[serde(default)]
    pub latest_reply: Option<String>,
}

/// One emoji on a message and who put it there
/// (<https://api.slack.com/methods/reactions.get>; the same shape in `conversations.history`).
/// `users` may be cut short of `count` on popular reactions.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Reaction {
    pub name: String,
    #[serde(default)]
    pub users: Vec<String>,
}

/// Any Web API answer the sync reads: `ok`, an `error` when not, the listed `channels` or
/// `messages`, and the next page's cursor (<https://api.slack.com/apis/pagination>). Messages
/// stay JSON here so that one unreadable message is skipped, not the whole page.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ApiAnswer {
    #[serde(default)]
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub channels: Option<Vec<Channel>>,
    #[serde(default)]
    pub messages: Option<Vec<Value>>,
    #[serde(default)]
    pub response_metadata: Option<ResponseMetadata>,
}

impl ApiAnswer {
    /// The cursor of the next page; Slack sends an empty string on the last one.
    pub fn next_cursor(&self) -> Option<String> {
        self.response_metadata
            .as_ref()
            .and_then(|m| m.next_cursor.clone())
            .filter(|c| !c.is_empty())
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ResponseMetadata {
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A conversation object (<https://api.slack.com/types/conversation>), as far as the sync
/// reads it.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Channel {
    pub id: String,
    #[serde(default)]
    pub is_private: bool,
    #[serde(default)]
    pub is_im: bool,
    #[serde(default)]
    pub is_mpim: bool,
    #[serde(default)]
    pub is_archived: bool,
}

impl Channel {
    /// The `channel_type` the Events API gives messages in this conversation.
    pub fn channel_type(&self) -> &'static str {
        if self.is_im {
            "im"
        } else if self.is_mpim {
            "mpim"
        } else if self.is_private {
            "group"
        } else {
            "channel"
        }
    }
}

/// Who edited a message and when (the `edited` property of <https://api.slack.com/events/message>).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Edited {
    #[serde(default)]
    pub user: Option<String>,
    pub ts: String,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct FileRef {
    #[serde(default)]
    pub id: Option<String>,
}

/// A `message` event posting a message (no subtype, or a subtype that posts).
#[derive(Debug, Deserialize)]
pub(super) struct Posted {
    pub channel: String,
    #[serde(default)]
    pub channel_type: Option<String>,
    #[serde(flatten)]
    pub message: Message,
}

/// `message` / `message_changed` (<https://api.slack.com/events/message/message_changed>).
#[derive(Debug, Deserialize)]
pub(super) struct Changed {
    pub channel: String,
    #[serde(default)]
    pub channel_type: Option<String>,
    /// The message as it is now; an edit's time is its `edited.ts`.
    pub message: Message,
}

/// `message` / `message_deleted` (<https://api.slack.com/events/message/message_deleted>).
#[derive(Debug, Deserialize)]
pub(super) struct Deleted {
    pub channel: String,
    #[serde(default)]
    pub channel_type: Option<String>,
    /// When the deletion happened.
    #[serde(default)]
    pub ts: Option<String>,
    #[serde(default)]
    pub event_ts: Option<String>,
    /// The `ts` of the message that was deleted.
    pub deleted_ts: String,
    #[serde(default)]
    pub previous_message: Option<Message>,
}

/// `reaction_added` (<https://api.slack.com/events/reaction_added>).
#[derive(Debug, Deserialize)]
pub(super) struct ReactionAdded {
    pub user: String,
    pub reaction: String,
    /// Who wrote the item; absent for messages no user wrote (incoming webhooks).
    #[serde(default)]
    pub item_user: Option<String>,
    pub item: ReactionItem,
    pub event_ts: String,
}

/// What was reacted to: a message (`channel`, `ts`), a file or a file comment.
#[derive(Debug, Deserialize)]
pub(super) struct ReactionItem {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub ts: Option<String>,
    #[serde(default)]
    pub channel_type: Option<String>,
}
