//! Gmail's sync: the mailbox's history feed
//! (<https://developers.google.com/gmail/api/guides/sync>).
//!
//! - **Incremental.** `users.history.list?startHistoryId=…&historyTypes=messageAdded`, one
//!   page of at most [`HISTORY_PAGE`] records per step, `pageToken` until the last page, whose
//!   `historyId` (the mailbox's latest) becomes the cursor. The first sync starts from the
//!   `history_id` kept at connect (`users.getProfile`).
//! - **Recovery.** History is kept for a limited time: a `404` means the stored id is too old.
//!   The sync then notes the mailbox's current `historyId` (`users.getProfile`) and reads the
//!   newest messages (`users.messages.list`, at most [`FULL_SYNC_MAX`] of them), then starts
//!   again from that id.
//! - **Messages.** Each added message is read with `users.messages.get?format=metadata` and
//!   the headers `From`, `To`, `Subject` and `Date` only: no body, no snippet is ever read.
//!   One signal per message: `email_sent` when it carries the `SENT` label, else
//!   `email_received` when it carries `INBOX`; other messages (drafts, spam, archived by a
//!   filter) make none. A message gone before it is read is skipped.
//!
//! Cursor: `{"mode": "history", "history_id": "…", "page_token": "…"?}` or
//! `{"mode": "full", "history_id": "…", "page_token": "…"?, "listed": n}`; history ids are
//! unsigned 64-bit integers kept as strings.

use chrono::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::api::{parse_history_id, Gmail, Message};
use crate::connector::{Metadata, ProviderCallError, SignalDraft, SyncContext, SyncPage};
use crate::domain::{Actor, Connection, SignalKind, Timestamp};

/// History records asked for per page: with one message each, a page costs at most
/// 2 + 5 × 50 = 252 quota units.
pub(super) const HISTORY_PAGE: u32 = 50;
/// Messages listed per page of a full sync (5 + 5 × 50 = 255 units).
pub(super) const FULL_SYNC_PAGE: u32 = 50;
/// The most messages a full sync reads.
pub(super) const FULL_SYNC_MAX: u32 = 200;
/// The connection metadata member holding the history id noted at connect.
pub(super) const HISTORY_ID: &str = "history_id";

/// Where the sync stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub(super) enum Cursor {
    /// Reading history after `history_id`.
    History {
        history_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page_token: Option<String>,
    },
    /// Reading the newest messages; history resumes from `history_id` afterwards.
    Full {
        history_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page_token: Option<String>,
        listed: u32,
    },
}

impl Cursor {
    /// The stored cursor, or where a first sync starts (`None`: from a full sync).
    pub(super) fn read(
        stored: Option<&Value>,
        connection: &Connection,
    ) -> Result<Option<Self>, ProviderCallError> {
        match stored {
            None | Some(Value::Null) => Ok(connection
                .metadata
                .get(HISTORY_ID)
                .and_then(Value::as_str)
                .filter(|id| parse_history_id(id).is_some())
                .map(|id| Cursor::History {
                    history_id: id.to_string(),
                    page_token: None,
                })),
            Some(value) => {
                let cursor: Cursor = serde_json::from_value(value.clone()).map_err(|_| {
                    ProviderCallError::Rejected("the stored Gmail cursor is unreadable".into())
                })?;
                let id = match &cursor {
                    Cursor::History { history_id, .. } | Cursor::Full { history_id, .. } => {
                        history_id
                    }
                };
                if parse_history_id(id).is_none() {
                    return Err(ProviderCallError::Rejected(
                        "the stored Gmail cursor names no history id".into(),
                    ));
                }
                Ok(Some(cursor))
            }
        }
    }

    fn value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// One step of the sync.
pub(super) async fn page(
    ctx: SyncContext<'_>,
    stored: Option<&Value>,
) -> Result<SyncPage, ProviderCallError> {
    let gmail = Gmail::new(ctx.provider, ctx.access_token);
    match Cursor::read(stored, ctx.connection)? {
        None => start_full(&gmail).await,
        Some(Cursor::History {
            history_id,
            page_token,
        }) => history_page(&gmail, ctx.connection, history_id, page_token).await,
        Some(Cursor::Full {
            history_id,
            page_token,
            listed,
        }) => full_page(&gmail, ctx.connection, history_id, page_token, listed).await,
    }
}

/// Notes the mailbox's current history id and starts a full sync.
async fn start_full(gmail: &Gmail<'_>) -> Result<SyncPage, ProviderCallError> {
    let profile = gmail.profile().await?;
    let mut metadata = Metadata::new();
    metadata.insert(HISTORY_ID.into(), json!(profile.history_id));
    Ok(SyncPage {
        signals: Vec::new(),
        cursor: Cursor::Full {
            history_id: profile.history_id,
            page_token: None,
            listed: 0,
        }
        .value(),
        more: true,
        metadata: Some(metadata),
    })
}

async fn history_page(
    gmail: &Gmail<'_>,
    connection: &Connection,
    start: String,
    page_token: Option<String>,
) -> Result<SyncPage, ProviderCallError> {
    let Some(list) = gmail
        .history(&start, page_token.as_deref(), HISTORY_PAGE)
        .await?
    else {
        // The history is too old (or the id invalid): read the newest messages instead
        // (https://developers.google.com/gmail/api/guides/sync#limited_history).
        tracing::info!(connection_id = %connection.id, "Gmail history too old: a full sync follows");
        return start_full(gmail).await;
    };
    let mut ids: Vec<String> = Vec::new();
    for record in &list.history {
        for added in &record.messages_added {
            if !ids.contains(&added.message.id) {
                ids.push(added.message.id.clone());
            }
        }
    }
    let signals = read_messages(gmail, connection, &ids).await?;
    let (cursor, more) = match list.next_page_token.filter(|t| !t.is_empty()) {
        Some(token) if page_token.as_deref() != Some(token.as_str()) => (
            Cursor::History {
                history_id: start,
                page_token: Some(token),
            },
            true,
        ),
        _ => (
            Cursor::History {
                history_id: list.history_id.unwrap_or(start),
                page_token: None,
            },
            false,
        ),
    };
    Ok(SyncPage {
        signals,
        cursor: cursor.value(),
        more,
        metadata: None,
    })
}

async fn full_page(
    gmail: &Gmail<'_>,
    connection: &Connection,
    history_id: String,
    page_token: Option<String>,
    listed: u32,
) -> Result<SyncPage, ProviderCallError> {
    let room = FULL_SYNC_MAX.saturating_sub(listed).min(FULL_SYNC_PAGE);
    let list = if room == 0 {
        Default::default()
    } else {
        gmail.messages(page_token.as_deref(), room).await?
    };
    let ids: Vec<String> = list
        .messages
        .iter()
        .take(room as usize)
        .map(|m| m.id.clone())
        .collect();
    let listed = listed.saturating_add(u32::try_from(ids.len()).unwrap_or(u32::MAX));
    let signals = read_messages(gmail, connection, &ids).await?;
    let next = list
        .next_page_token
        .filter(|t| !t.is_empty() && listed < FULL_SYNC_MAX && !ids.is_empty());
    let cursor = match next {
        Some(token) => Cursor::Full {
            history_id,
            page_token: Some(token),
            listed,
        },
        // Done: the history since the full sync began follows at once.
        None => Cursor::History {
            history_id,
            page_token: None,
        },
    };
    Ok(SyncPage {
        signals,
        cursor: cursor.value(),
        more: true,
        metadata: None,
    })
}

/// The signals of the messages `ids`, read one by one.
async fn read_messages(
    gmail: &Gmail<'_>,
    connection: &Connection,
    ids: &[String],
) -> Result<Vec<SignalDraft>, ProviderCallError> {
    let mut signals = Vec::with_capacity(ids.len());
    for id in ids {
        match gmail.message(id).await? {
            Some(message) => signals.extend(signal(connection, &message)),
            None => {
                tracing::debug!(connection_id = %connection.id, "a Gmail message was gone before it was read")
            }
        }
    }
    Ok(signals)
}

/// The signal of one message, if it is in the inbox or sent.
pub(super) fn signal(connection: &Connection, message: &Message) -> Option<SignalDraft> {
    let has = |label: &str| message.label_ids.iter().any(|l| l == label);
    let kind = if has("SENT") {
        "email_sent"
    } else if has("INBOX") {
        "email_received"
    } else {
        return None;
    };
    let header = |name: &str| {
        message
            .payload
            .as_ref()
            .and_then(|p| p.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)))
            .map(|h| h.value.clone())
    };
    let occurred_at = message
        .internal_date
        .as_deref()
        .and_then(epoch_millis)
        .or_else(|| {
            header("Date")
                .and_then(|d| chrono::DateTime::parse_from_rfc2822(&d).ok())
                .map(|d| d.to_utc())
        })?;
    let from = header("From");
    let actor = from
        .as_deref()
        .and_then(mailbox)
        .map(|(name, email)| Actor {
            id: email.to_ascii_lowercase(),
            name,
            email: Some(email),
        });
    Some(SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at,
        actor,
        title: header("Subject"),
        url: None,
        external_id: Some(message.id.clone()),
        dedupe_key: format!("gmail:{}:{}", connection.external_account_id, message.id),
        payload: json!({
            "message_id": message.id,
            "thread_id": message.thread_id,
            "labels": message.label_ids,
            "from": from,
            "to": header("To"),
            "subject": header("Subject"),
            "date": header("Date"),
        }),
    })
}

/// An `internalDate`: milliseconds since the epoch, as a string.
fn epoch_millis(text: &str) -> Option<Timestamp> {
    let ms: i64 = text.parse().ok()?;
    chrono::Utc.timestamp_millis_opt(ms).single()
}

/// The display name and address of the first mailbox of an address header
/// (`Ada <ada@example.com>`, `ada@example.com`, `"Lovelace, Ada" <ada@example.com>`).
pub(super) fn mailbox(header: &str) -> Option<(Option<String>, String)> {
    let header = header.trim();
    let (name, address) = match (header.rfind('<'), header.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            let name = header[..open].trim().trim_matches('"').trim();
            (
                (!name.is_empty()).then(|| name.to_string()),
                header[open + 1..close].trim(),
            )
        }
        _ => (None, header.split(',').next().unwrap_or("").trim()),
    };
    (address.contains('@') && !address.contains(char::is_whitespace))
        .then(|| (name, address.to_string()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::api::{Header, Payload};
    use super::*;

    fn message(labels: &[&str]) -> Message {
        Message {
            id: "18c5a9b2e3f4d5a6".into(),
            thread_id: Some("18c5a9b2e3f4d5a6".into()),
            label_ids: labels.iter().map(|l| l.to_string()).collect(),
            internal_date: Some("1733486400000".into()),
            payload: Some(Payload {
                headers: vec![
                    Header {
                        name: "From".into(),
                        value: "\"Lovelace, Ada\" <Ada@Example.com>".into(),
                    },
                    Header {
                        name: "Subject".into(),
                        value: "Notes on the engine".into(),
                    },
                ],
            }),
        }
    }

    #[test]
    fn inbox_is_received_sent_is_sent_and_the_rest_is_nothing() {
        let c = Connection::active_for_tests("gmail", "me@example.com");
        let received = signal(&c, &message(&["INBOX", "UNREAD"])).expect("signal");
        assert_eq!(received.kind.as_str(), "email_received");
        assert_eq!(received.title.as_deref(), Some("Notes on the engine"));
        assert_eq!(received.dedupe_key, "gmail:me@example.com:18c5a9b2e3f4d5a6");
        let actor = received.actor.expect("actor");
        assert_eq!(actor.id, "ada@example.com");
        assert_eq!(actor.name.as_deref(), Some("Lovelace, Ada"));
        assert_eq!(received.occurred_at.timestamp(), 1_733_486_400);
        let sent = signal(&c, &message(&["SENT", "INBOX"])).expect("signal");
        assert_eq!(sent.kind.as_str(), "email_sent");
        assert!(signal(&c, &message(&["DRAFT"])).is_none());
        assert!(signal(&c, &message(&["SPAM"])).is_none());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Connection::active_for_tests("gmail", "me@example.com");
        for cursor in [
            Cursor::History {
                history_id: "18446744073709551615".into(),
                page_token: None,
            },
            Cursor::Full {
                history_id: "1".into(),
                page_token: Some("p".into()),
                listed: 50,
            },
        ] {
            assert_eq!(
                Cursor::read(Some(&cursor.value()), &c).expect("read"),
                Some(cursor)
            );
        }
        for bad in [
            json!({"mode": "history"}),
            json!({"mode": "history", "history_id": "x"}),
            json!({"mode": "sideways", "history_id": "1"}),
            json!([1]),
        ] {
            assert!(Cursor::read(Some(&bad), &c).is_err(), "{bad}");
        }
        assert_eq!(Cursor::read(None, &c).expect("read"), None);
        let mut known = c.clone();
        known.metadata.insert(HISTORY_ID.into(), json!("1234"));
        assert_eq!(
            Cursor::read(Some(&Value::Null), &known).expect("read"),
            Some(Cursor::History {
                history_id: "1234".into(),
                page_token: None
            })
        );
    }

    proptest! {
        #[test]
        fn any_cursor_round_trips(id in any::<u64>(), token in proptest::option::of("[A-Za-z0-9_-]{1,40}"), listed in any::<u32>(), full in any::<bool>()) {
            let c = Connection::active_for_tests("gmail", "me@example.com");
            let cursor = if full {
                Cursor::Full { history_id: id.to_string(), page_token: token, listed }
            } else {
                Cursor::History { history_id: id.to_string(), page_token: token }
            };
            prop_assert_eq!(Cursor::read(Some(&cursor.value()), &c).expect("read"), Some(cursor));
        }

        #[test]
        fn address_headers_never_panic(text in "\\PC{0,80}") {
            if let Some((_, address)) = mailbox(&text) {
                prop_assert!(address.contains('@'));
            }
        }
    }

    #[test]
    fn address_headers_are_read() {
        assert_eq!(
            mailbox("Ada <ada@example.com>"),
            Some((Some("Ada".into()), "ada@example.com".into()))
        );
        assert_eq!(
            mailbox("ada@example.com"),
            Some((None, "ada@example.com".into()))
        );
        assert_eq!(mailbox("undisclosed-recipients:;"), None);
        assert_eq!(mailbox("> <"), None);
    }
}
