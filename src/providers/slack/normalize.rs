//! Slack events as signals.
//!
//! | event (`type` / `subtype`) | kind | `occurred_at` | actor |
//! | --- | --- | --- | --- |
//! | `message` (no subtype), `thread_broadcast`, `file_share`, `me_message`, `bot_message` | `message_posted` | the message's `ts` | `user` (a `bot_message`: `bot_id`, named `username`) |
//! | `message` / `message_changed` with `message.edited` | `message_updated` | `message.edited.ts` | the editor |
//! | `message` / `message_deleted` | `message_deleted` | the event's `event_ts` (else `ts`) | none (Slack does not say who) |
//! | `reaction_added` to a message | `reaction_added` | `event_ts` | `user` |
//!
//! Everything else is ignored: other envelopes, other events, reactions to files, and message
//! subtypes that are not someone posting (joins, topic and purpose changes, `message_replied`
//! notices, ...). A `message_changed` without `edited` is not an edit but Slack filling in a
//! message (a link unfurl, detected language:
//! <https://api.slack.com/events/message/message_changed>) and is ignored too.
//!
//! Slack's `ts` ("seconds.micros") is both a message's id within its channel and its time, so
//! `external_id` is `{channel}:{ts}` and the dedupe keys name the change in terms that
//! `conversations.history` also shows (a message's `ts`, `edited.ts`, `reactions`), so a later
//! sync could reproduce them: `message:{channel}:{ts}`,
//! `message_updated:{channel}:{ts}:{edited.ts}`, `message_deleted:{channel}:{deleted_ts}`,
//! `reaction_added:{channel}:{item ts}:{user}:{reaction}`.
//!
//! The payload holds the normalized fields, never the raw envelope (which stays in the inbox).
//! A deleted message's former text is not carried into its signal.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::wire::{Changed, Deleted, Envelope, Message, Posted, ReactionAdded};
use crate::connector::{Normalized, SignalDraft, WebhookEvent};
use crate::domain::{from_micros, Actor, SignalKind, Timestamp};

/// Longest title taken from a message's text, in characters.
const TITLE_CHARS: usize = 120;

/// Message subtypes that are someone posting a message (the subtype list of
/// <https://api.slack.com/events/message>). `bot_message` is an integration posting: it is
/// activity in the channel as much as a person's message, and its `bot_id` in the payload lets
/// readers leave it out.
pub(super) const POSTING_SUBTYPES: &[&str] = &[
    "thread_broadcast",
    "file_share",
    "me_message",
    "bot_message",
];

/// Turns a stored delivery into signals.
pub(super) fn normalize(event: &WebhookEvent) -> Result<Normalized, String> {
    let envelope: Envelope = serde_json::from_slice(&event.body)
        .map_err(|e| format!("the body is not a Slack Events API payload: {e}"))?;
    if envelope.kind.as_deref() != Some("event_callback") {
        return Ok(Normalized::Ignored);
    }
    let Some(inner) = envelope.event else {
        return Ok(Normalized::Ignored);
    };
    let kind = inner.get("type").and_then(Value::as_str);
    if let Some(revoked) = lifecycle(kind, &inner) {
        return Ok(revoked);
    }
    let subtype = inner.get("subtype").and_then(Value::as_str);
    let draft = match (kind, subtype) {
        (Some("message"), None) => Some(posted(read(inner, "message")?)?),
        (Some("message"), Some(s)) if POSTING_SUBTYPES.contains(&s) => {
            Some(posted(read(inner, "message")?)?)
        }
        (Some("message"), Some("message_changed")) => changed(read(inner, "message_changed")?)?,
        (Some("message"), Some("message_deleted")) => {
            Some(deleted(read(inner, "message_deleted")?)?)
        }
        (Some("reaction_added"), _) => reaction(read(inner, "reaction_added")?)?,
        _ => None,
    };
    Ok(match draft {
        Some(draft) => Normalized::Signals(vec![draft]),
        None => Normalized::Ignored,
    })
}

/// The app lifecycle events that end a connection: `app_uninstalled`
/// (<https://api.slack.com/events/app_uninstalled>) and `tokens_revoked` naming a bot token
/// (<https://api.slack.com/events/tokens_revoked>; the connector acts with the bot token, so a
/// revoked user token alone changes nothing).
fn lifecycle(kind: Option<&str>, inner: &Value) -> Option<Normalized> {
    let reason = match kind? {
        "app_uninstalled" => "the Slack app was uninstalled from the workspace",
        "tokens_revoked" => {
            let bot = inner.pointer("/tokens/bot").and_then(Value::as_array);
            if bot.is_none_or(|b| b.is_empty()) {
                return Some(Normalized::Ignored);
            }
            "Slack revoked the app's bot token in the workspace"
        }
        _ => return None,
    };
    Some(Normalized::AccessRevoked {
        reason: reason.to_string(),
    })
}

fn read<T: DeserializeOwned>(event: Value, what: &str) -> Result<T, String> {
    serde_json::from_value(event).map_err(|e| format!("the {what} event cannot be read: {e}"))
}

/// A Slack timestamp ("1355517523.000005": seconds, then microseconds) as an instant.
pub(super) fn slack_time(field: &str, ts: &str) -> Result<Timestamp, String> {
    let bad = || format!("{field} {ts:?} is not a Slack timestamp");
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !(frac.is_empty() || digits(frac) && frac.len() <= 6) {
        return Err(bad());
    }
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let micros: i64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    secs.checked_mul(1_000_000)
        .and_then(|s| s.checked_add(micros))
        .and_then(from_micros)
        .ok_or_else(bad)
}

fn person(id: Option<&String>) -> Option<Actor> {
    id.filter(|id| !id.is_empty()).map(|id| Actor {
        id: id.clone(),
        name: None,
        email: None,
    })
}

/// Who posted a message: its user, else the bot (`bot_message`s have no user).
fn author(message: &Message) -> Option<Actor> {
    person(message.user.as_ref()).or_else(|| {
        person(message.bot_id.as_ref()).map(|bot| Actor {
            name: message.username.clone(),
            ..bot
        })
    })
}

/// A title from a message's text: whitespace collapsed, at most [`TITLE_CHARS`] characters.
fn title(text: Option<&str>) -> Option<String> {
    let words: Vec<&str> = text?.split_whitespace().collect();
    if words.is_empty() {
        return None;
    }
    let joined = words.join(" ");
    if joined.chars().count() <= TITLE_CHARS {
        return Some(joined);
    }
    let cut: String = joined.chars().take(TITLE_CHARS - 1).collect();
    Some(format!("{}…", cut.trim_end()))
}

pub(super) fn posted(event: Posted) -> Result<SignalDraft, String> {
    let Posted {
        channel,
        channel_type,
        message,
    } = event;
    let files: Vec<&str> = message
        .files
        .iter()
        .flatten()
        .filter_map(|f| f.id.as_deref())
        .collect();
    Ok(SignalDraft {
        kind: SignalKind::of("message_posted"),
        occurred_at: slack_time("ts", &message.ts)?,
        actor: author(&message),
        title: title(message.text.as_deref()),
        url: None,
        external_id: Some(format!("{channel}:{}", message.ts)),
        dedupe_key: format!("message:{channel}:{}", message.ts),
        payload: json!({
            "channel": channel,
            "channel_type": channel_type,
            "ts": message.ts,
            "thread_ts": message.thread_ts,
            "subtype": message.subtype,
            "user": message.user,
            "bot_id": message.bot_id,
            "text": message.text,
            "files": files,
        }),
    })
}

pub(super) fn changed(event: Changed) -> Result<Option<SignalDraft>, String> {
    let Changed {
        channel,
        channel_type,
        message,
    } = event;
    let Some(edited) = &message.edited else {
        return Ok(None);
    };
    let actor = person(edited.user.as_ref()).or_else(|| author(&message));
    Ok(Some(SignalDraft {
        kind: SignalKind::of("message_updated"),
        occurred_at: slack_time("message.edited.ts", &edited.ts)?,
        actor,
        title: title(message.text.as_deref()),
        url: None,
        external_id: Some(format!("{channel}:{}", message.ts)),
        dedupe_key: format!("message_updated:{channel}:{}:{}", message.ts, edited.ts),
        payload: json!({
            "channel": channel,
            "channel_type": channel_type,
            "ts": message.ts,
            "thread_ts": message.thread_ts,
            "edited_ts": edited.ts,
            "edited_by": edited.user,
            "user": message.user,
            "bot_id": message.bot_id,
            "text": message.text,
        }),
    }))
}

fn deleted(event: Deleted) -> Result<SignalDraft, String> {
    let Deleted {
        channel,
        channel_type,
        ts,
        event_ts,
        deleted_ts,
        previous_message,
    } = event;
    let at = event_ts
        .or(ts)
        .ok_or("the message_deleted event has no ts")?;
    let previous = previous_message.as_ref();
    Ok(SignalDraft {
        kind: SignalKind::of("message_deleted"),
        occurred_at: slack_time("event_ts", &at)?,
        actor: None,
        title: Some("Message deleted".into()),
        url: None,
        external_id: Some(format!("{channel}:{deleted_ts}")),
        dedupe_key: format!("message_deleted:{channel}:{deleted_ts}"),
        payload: json!({
            "channel": channel,
            "channel_type": channel_type,
            "ts": deleted_ts,
            "deleted_at_ts": at,
            "thread_ts": previous.and_then(|m| m.thread_ts.clone()),
            "user": previous.and_then(|m| m.user.clone()),
        }),
    })
}

fn reaction(event: ReactionAdded) -> Result<Option<SignalDraft>, String> {
    if event.item.kind != "message" {
        return Ok(None);
    }
    let missing = |field: &str| format!("the reaction_added item has no {field}");
    let channel = event
        .item
        .channel
        .as_deref()
        .ok_or_else(|| missing("channel"))?;
    let ts = event.item.ts.as_deref().ok_or_else(|| missing("ts"))?;
    Ok(Some(reaction_draft(
        Reacted {
            channel,
            channel_type: event.item.channel_type.as_deref(),
            ts,
            user: &event.user,
            reaction: &event.reaction,
            item_user: event.item_user.as_deref(),
        },
        slack_time("event_ts", &event.event_ts)?,
    )))
}

/// Someone's emoji on a message: what the webhook's `reaction_added` and a synced message's
/// `reactions` both say.
pub(super) struct Reacted<'a> {
    pub channel: &'a str,
    pub channel_type: Option<&'a str>,
    /// The message's `ts`.
    pub ts: &'a str,
    pub user: &'a str,
    pub reaction: &'a str,
    /// Who wrote the message.
    pub item_user: Option<&'a str>,
}

/// The `reaction_added` signal of `r`, at `occurred_at`.
pub(super) fn reaction_draft(r: Reacted<'_>, occurred_at: Timestamp) -> SignalDraft {
    SignalDraft {
        kind: SignalKind::of("reaction_added"),
        occurred_at,
        actor: person(Some(&r.user.to_string())),
        title: Some(format!(":{}: on a message", r.reaction)),
        url: None,
        external_id: Some(format!("{}:{}", r.channel, r.ts)),
        dedupe_key: format!(
            "reaction_added:{}:{}:{}:{}",
            r.channel, r.ts, r.user, r.reaction
        ),
        payload: json!({
            "channel": r.channel,
            "channel_type": r.channel_type,
            "ts": r.ts,
            "reaction": r.reaction,
            "item_user": r.item_user,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{now, parse_rfc3339, TenantId};

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/slack/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).expect("fixture is JSON")
    }

    /// `inner` in the envelope of Slack's `message` example.
    fn wrapped(inner: Value) -> Value {
        let mut envelope = fixture("message");
        envelope["event"] = inner;
        envelope
    }

    fn normalized(body: &Value) -> Result<Normalized, String> {
        normalize(&WebhookEvent {
            tenant_id: TenantId(uuid::Uuid::nil()),
            provider: "slack".into(),
            event_type: None,
            headers: Default::default(),
            body: serde_json::to_vec(body).expect("json"),
            received_at: now(),
        })
    }

    fn one(body: &Value) -> SignalDraft {
        match normalized(body) {
            Ok(Normalized::Signals(mut drafts)) if drafts.len() == 1 => drafts.remove(0),
            other => panic!("one signal expected, got {other:?}"),
        }
    }

    fn ignored(body: &Value) -> bool {
        matches!(normalized(body), Ok(Normalized::Ignored))
    }

    fn at(rfc3339: &str) -> Timestamp {
        parse_rfc3339(rfc3339).expect("time")
    }

    #[test]
    fn slack_timestamps_are_seconds_and_microseconds() {
        let t = |ts| slack_time("ts", ts);
        assert_eq!(
            t("1355517523.000005"),
            Ok(at("2012-12-14T20:38:43.000005Z"))
        );
        assert_eq!(
            t("1360782400.498405"),
            Ok(at("2013-02-13T19:06:40.498405Z"))
        );
        assert_eq!(t("1355517523"), Ok(at("2012-12-14T20:38:43Z")));
        assert_eq!(t("1355517523.5"), Ok(at("2012-12-14T20:38:43.5Z")));
        for bad in [
            "",
            ".5",
            "abc.000001",
            "1355517523.0000001",
            "-1.000000",
            "1.2.3",
            "99999999999999999999.0",
        ] {
            assert!(t(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_message_is_posted_by_its_user_at_its_ts() {
        let draft = one(&fixture("message"));
        assert_eq!(
            draft,
            SignalDraft {
                kind: SignalKind::of("message_posted"),
                occurred_at: at("2012-12-14T20:38:43.000005Z"),
                actor: Some(Actor {
                    id: "U123ABC456".into(),
                    name: None,
                    email: None
                }),
                title: Some("Hello world".into()),
                url: None,
                external_id: Some("C123ABC456:1355517523.000005".into()),
                dedupe_key: "message:C123ABC456:1355517523.000005".into(),
                payload: json!({
                    "channel": "C123ABC456", "channel_type": "channel",
                    "ts": "1355517523.000005", "thread_ts": null, "subtype": null,
                    "user": "U123ABC456", "bot_id": null, "text": "Hello world", "files": [],
                }),
            }
        );
    }

    #[test]
    fn a_thread_broadcast_is_a_posted_reply_with_its_thread() {
        let draft = one(&fixture("thread_broadcast"));
        assert_eq!(draft.kind, "message_posted");
        assert_eq!(draft.dedupe_key, "message:C123ABC456:1673464745.620769");
        assert_eq!(draft.title.as_deref(), Some("broadcasting this reply"));
        assert_eq!(draft.payload["thread_ts"], "1673464730.703009");
        assert_eq!(draft.payload["subtype"], "thread_broadcast");
        assert!(
            !draft
                .payload
                .to_string()
                .contains("This is the original message"),
            "the root message is not copied"
        );
    }

    #[test]
    fn file_shares_me_messages_and_bot_messages_are_posted_too() {
        // file_share: the fields of @slack/types' FileShareMessageEvent.
        let file = one(&wrapped(json!({
            "type": "message", "subtype": "file_share", "text": "", "user": "U123ABC456",
            "files": [{ "id": "F2147483862" }], "upload": true, "display_as_bot": false,
            "ts": "1670631527.874149", "channel": "C123ABC456", "event_ts": "1670631527.874149",
            "channel_type": "channel"
        })));
        assert_eq!(file.kind, "message_posted");
        assert_eq!(file.title, None, "no text, no title");
        assert_eq!(file.payload["files"], json!(["F2147483862"]));
        let me = one(&wrapped(json!({
            "type": "message", "subtype": "me_message", "channel": "C123ABC456",
            "user": "U123ABC456", "text": "is doing that thing", "ts": "1355517523.000005"
        })));
        assert_eq!(me.kind, "message_posted");
        // https://api.slack.com/events/message/bot_message, in a channel.
        let bot = one(&wrapped(json!({
            "type": "message", "subtype": "bot_message", "ts": "1358877455.000010",
            "text": "Pushing is the answer", "bot_id": "BB12033", "username": "github",
            "icons": {}, "channel": "C123ABC456"
        })));
        assert_eq!(
            bot.actor,
            Some(Actor {
                id: "BB12033".into(),
                name: Some("github".into()),
                email: None
            })
        );
        assert_eq!(bot.payload["bot_id"], "BB12033");
    }

    #[test]
    fn long_text_makes_a_short_one_line_title() {
        let text = format!("first line\n\n{}", "é".repeat(300));
        let draft = one(&wrapped(json!({
            "type": "message", "channel": "C1", "user": "U1", "text": text, "ts": "1.000001"
        })));
        let title = draft.title.expect("title");
        assert!(title.starts_with("first line é"), "{title}");
        assert!(title.ends_with('…'));
        assert_eq!(title.chars().count(), TITLE_CHARS);
        assert_eq!(
            draft.payload["text"],
            text.as_str(),
            "the payload keeps it all"
        );
    }

    #[test]
    fn an_edit_is_an_update_by_its_editor_at_the_edit() {
        let draft = one(&fixture("message_changed"));
        assert_eq!(draft.kind, "message_updated");
        assert_eq!(draft.occurred_at, at("2013-01-22T18:19:15.000001Z"));
        assert_eq!(draft.actor.map(|a| a.id).as_deref(), Some("U123ABC456"));
        assert_eq!(draft.title.as_deref(), Some("Hello, world!"));
        assert_eq!(
            draft.external_id.as_deref(),
            Some("C123ABC456:1355517523.000005")
        );
        assert_eq!(
            draft.dedupe_key,
            "message_updated:C123ABC456:1355517523.000005:1358878755.000001"
        );
        assert_eq!(draft.payload["edited_ts"], "1358878755.000001");
        // An unfurl or language detection changes a message without editing it.
        let mut unfurl = fixture("message_changed");
        unfurl["event"]["message"]
            .as_object_mut()
            .expect("object")
            .remove("edited");
        assert!(ignored(&unfurl));
    }

    #[test]
    fn a_deletion_names_the_deleted_message_but_not_its_text() {
        let draft = one(&fixture("message_deleted"));
        assert_eq!(draft.kind, "message_deleted");
        assert_eq!(
            draft.occurred_at,
            at("2013-01-22T18:19:15.000001Z"),
            "when it was deleted"
        );
        assert_eq!(draft.actor, None);
        assert_eq!(
            draft.external_id.as_deref(),
            Some("C123ABC456:1358878749.000002")
        );
        assert_eq!(
            draft.dedupe_key,
            "message_deleted:C123ABC456:1358878749.000002"
        );
        let mut with_previous = fixture("message_deleted");
        with_previous["event"]["previous_message"] = json!({
            "type": "message", "user": "U2", "text": "secret plans", "ts": "1358878749.000002"
        });
        let draft = one(&with_previous);
        assert_eq!(draft.payload["user"], "U2");
        assert!(!draft.payload.to_string().contains("secret plans"));
        assert!(!draft.title.unwrap_or_default().contains("secret plans"));
    }

    #[test]
    fn a_reaction_to_a_message_is_reported_by_whoever_reacted() {
        let draft = one(&fixture("reaction_added"));
        assert_eq!(
            draft,
            SignalDraft {
                kind: SignalKind::of("reaction_added"),
                occurred_at: at("2013-02-13T19:13:24.083113Z"),
                actor: Some(Actor {
                    id: "U123ABC456".into(),
                    name: None,
                    email: None
                }),
                title: Some(":thumbsup: on a message".into()),
                url: None,
                external_id: Some("C123ABC456:1360782400.498405".into()),
                dedupe_key: "reaction_added:C123ABC456:1360782400.498405:U123ABC456:thumbsup"
                    .into(),
                payload: json!({
                    "channel": "C123ABC456", "channel_type": "channel",
                    "ts": "1360782400.498405", "reaction": "thumbsup", "item_user": "U222222222",
                }),
            }
        );
        let mut on_a_file = fixture("reaction_added");
        on_a_file["event"]["item"] = json!({ "type": "file", "file": "F123ABC456" });
        assert!(ignored(&on_a_file));
    }

    #[test]
    fn an_uninstall_or_a_revoked_bot_token_revokes_but_a_user_token_alone_does_not() {
        let revoked = |body: &Value| matches!(normalized(body), Ok(Normalized::AccessRevoked { reason }) if !reason.is_empty());
        assert!(revoked(&fixture("app_uninstalled")));
        assert!(revoked(&fixture("tokens_revoked")));
        let mut users_only = fixture("tokens_revoked");
        users_only["event"]["tokens"]["bot"] = json!([]);
        assert!(ignored(&users_only));
        users_only["event"]["tokens"]
            .as_object_mut()
            .expect("object")
            .remove("bot");
        assert!(ignored(&users_only));
    }

    #[test]
    fn unmapped_events_and_envelopes_are_ignored() {
        assert!(ignored(&fixture("url_verification")));
        assert!(ignored(&fixture("app_rate_limited")));
        for inner in [
            json!({
                "type": "message", "subtype": "channel_join", "channel": "C1", "user": "U1",
                "ts": "1.1", "text": "<@U1> has joined the channel"
            }),
            json!({
                "type": "message", "subtype": "message_replied", "hidden": true, "channel": "C1",
                "ts": "1.1", "message": { "ts": "1.0" }
            }),
            json!({
                "type": "reaction_removed", "user": "U1", "reaction": "x",
                "item": { "type": "message", "channel": "C1", "ts": "1.1" }, "event_ts": "2.2"
            }),
            json!({
                "type": "app_mention", "user": "U1", "text": "hi", "ts": "1.1", "channel": "C1",
                "event_ts": "1.1"
            }),
        ] {
            assert!(ignored(&wrapped(inner.clone())), "{inner}");
        }
        let mut no_event = fixture("message");
        no_event.as_object_mut().expect("object").remove("event");
        assert!(ignored(&no_event));
    }

    #[test]
    fn mapped_events_that_cannot_be_read_are_errors() {
        for inner in [
            json!({ "type": "message", "user": "U1", "text": "no channel", "ts": "1.1" }),
            json!({ "type": "message", "channel": "C1", "user": "U1", "text": "no ts" }),
            json!({ "type": "message", "channel": "C1", "ts": "yesterday" }),
            json!({ "type": "message", "subtype": "message_changed", "channel": "C1", "ts": "1.1" }),
            json!({
                "type": "message", "subtype": "message_changed", "channel": "C1",
                "message": { "ts": "1.0", "edited": { "ts": "soon" } }
            }),
            json!({
                "type": "message", "subtype": "message_deleted", "channel": "C1", "deleted_ts": "1.0"
            }),
            json!({
                "type": "reaction_added", "user": "U1", "reaction": "x",
                "item": { "type": "message", "ts": "1.1" }, "event_ts": "2.2"
            }),
            json!({
                "type": "reaction_added", "user": "U1",
                "item": { "type": "message", "channel": "C1", "ts": "1.1" }, "event_ts": "2.2"
            }),
        ] {
            assert!(normalized(&wrapped(inner.clone())).is_err(), "{inner}");
        }
        let not_json = WebhookEvent {
            tenant_id: TenantId(uuid::Uuid::nil()),
            provider: "slack".into(),
            event_type: None,
            headers: Default::default(),
            body: b"payload=%7B%7D".to_vec(),
            received_at: now(),
        };
        assert!(normalize(&not_json).is_err());
    }
}
