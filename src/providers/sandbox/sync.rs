//! The sandbox's sync: a steady trickle of synthetic signals, one per minute. The cursor
//! records the last emitted sequence number and the minute it stood for; each call emits one
//! signal per whole minute elapsed since then, at most [`PAGE_SIZE`] per page (`more` when
//! capped). A first sync starts [`FIRST_SYNC`] minutes back, and a long pause catches up at
//! most [`MAX_BACKLOG`] minutes. Everything is derived from the cursor, and dedupe keys from
//! the connection and sequence number, so replaying a page stores nothing twice.

use chrono::Duration;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::connector::ProviderCallError;
use crate::connector::{SignalDraft, SyncPage};
use crate::domain::{parse_rfc3339, Actor, Connection, SignalKind, Timestamp};

/// Signals per page.
pub const PAGE_SIZE: i64 = 20;
/// Minutes a first sync looks back.
pub const FIRST_SYNC: i64 = 5;
/// The most minutes one catch-up covers; older ones are skipped.
pub const MAX_BACKLOG: i64 = 60;

/// Where the trickle stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The last emitted sequence number (0: none yet).
    pub seq: u64,
    /// The instant the last emitted signal stands for.
    pub at: String,
}

/// The page after `cursor` at `now`.
pub fn page(
    connection: &Connection,
    cursor: Option<&Value>,
    now: Timestamp,
) -> Result<SyncPage, ProviderCallError> {
    let (mut seq, mut at) = match cursor {
        // No cursor, or the API mode's (`{"after": n}`): the trickle starts afresh.
        None | Some(Value::Null) => (0, now - Duration::minutes(FIRST_SYNC)),
        Some(value) if value.get("after").is_some() && value.get("seq").is_none() => {
            (0, now - Duration::minutes(FIRST_SYNC))
        }
        Some(value) => {
            let cursor: Cursor = serde_json::from_value(value.clone())
                .map_err(|e| ProviderCallError::Rejected(format!("unreadable cursor: {e}")))?;
            let at = parse_rfc3339(&cursor.at)
                .map_err(|e| ProviderCallError::Rejected(format!("unreadable cursor: {e}")))?;
            (cursor.seq, at)
        }
    };
    if now - at > Duration::minutes(MAX_BACKLOG) {
        at = now - Duration::minutes(MAX_BACKLOG);
    }
    let elapsed = (now - at).num_minutes().max(0);
    let count = elapsed.min(PAGE_SIZE);
    let mut signals = Vec::with_capacity(count as usize);
    for _ in 0..count {
        seq += 1;
        at += Duration::minutes(1);
        signals.push(signal(connection, seq, at));
    }
    Ok(SyncPage {
        signals,
        cursor: json!(Cursor {
            seq,
            at: crate::domain::format_time(&at),
        }),
        more: elapsed > PAGE_SIZE,
        metadata: None,
    })
}

/// Signal `seq`: odd numbers create item `(seq + 1) / 2`, even ones update it.
fn signal(connection: &Connection, seq: u64, at: Timestamp) -> SignalDraft {
    let item = seq.div_ceil(2);
    let (kind, verb) = if seq % 2 == 1 {
        ("sandbox_event_created", "created")
    } else {
        ("sandbox_event_updated", "updated")
    };
    SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at: at,
        actor: Some(Actor {
            id: "sandbox-user".into(),
            name: Some("Sandbox User".into()),
            email: None,
        }),
        title: Some(format!("Sandbox item #{item} {verb}")),
        url: None,
        external_id: Some(format!("sandbox-item-{item}")),
        dedupe_key: format!("sandbox:{}:{seq}", connection.id),
        payload: json!({ "sequence": seq, "item": item, "action": verb }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{now, ConnectionId, ConnectionStatus, TenantId};

    fn connection() -> Connection {
        Connection {
            id: ConnectionId::generate(),
            tenant_id: TenantId(uuid::Uuid::new_v4()),
            provider: "sandbox".into(),
            external_account_id: "sandbox-user".into(),
            external_account_name: None,
            status: ConnectionStatus::Active,
            scopes: vec![],
            token_expires_at: None,
            last_synced_at: None,
            last_error: None,
            metadata: Default::default(),
            created_at: now(),
            updated_at: now(),
        }
    }

    #[test]
    fn a_first_sync_emits_a_handful_of_recent_signals() {
        let c = connection();
        let t = now();
        let first = page(&c, None, t).expect("page");
        assert_eq!(first.signals.len(), FIRST_SYNC as usize);
        assert!(!first.more);
        assert_eq!(first.signals[0].kind, "sandbox_event_created");
        assert_eq!(first.signals[1].kind, "sandbox_event_updated");
        assert_eq!(
            first.signals[1].external_id, first.signals[0].external_id,
            "an update names the item it updates"
        );
        assert_eq!(first.signals.last().expect("one").occurred_at, t);
        // Within the same minute, nothing new.
        let again = page(&c, Some(&first.cursor), t + Duration::seconds(59)).expect("page");
        assert!(again.signals.is_empty() && !again.more);
        assert_eq!(again.cursor, first.cursor);
    }

    #[test]
    fn replaying_a_page_yields_the_same_dedupe_keys() {
        let c = connection();
        let t = now();
        let first = page(&c, None, t).expect("page");
        let later = t + Duration::minutes(3);
        let a = page(&c, Some(&first.cursor), later).expect("page");
        let b = page(&c, Some(&first.cursor), later).expect("page");
        let keys = |p: &SyncPage| {
            p.signals
                .iter()
                .map(|s| s.dedupe_key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&a), keys(&b));
        assert_eq!(keys(&a).len(), 3);
        assert!(keys(&a)[0].ends_with(":6"), "{:?}", keys(&a));
        assert_eq!(a.cursor, b.cursor);
        // Another connection's keys never collide.
        let other = page(&connection(), Some(&first.cursor), later).expect("page");
        assert!(keys(&other).iter().all(|k| !keys(&a).contains(k)));
    }

    #[test]
    fn a_backlog_comes_in_capped_pages_and_is_bounded() {
        let c = connection();
        let t = now();
        let start = json!(Cursor {
            seq: 10,
            at: crate::domain::format_time(&(t - Duration::minutes(45))),
        });
        let p1 = page(&c, Some(&start), t).expect("page");
        assert_eq!((p1.signals.len(), p1.more), (20, true));
        let p2 = page(&c, Some(&p1.cursor), t).expect("page");
        assert_eq!((p2.signals.len(), p2.more), (20, true));
        let p3 = page(&c, Some(&p2.cursor), t).expect("page");
        assert_eq!((p3.signals.len(), p3.more), (5, false));
        assert_eq!(
            p3.signals.last().expect("one").dedupe_key,
            format!("sandbox:{}:55", c.id)
        );

        let ancient = json!(Cursor {
            seq: 1,
            at: "2020-01-01T00:00:00Z".into(),
        });
        let mut cursor = ancient;
        let mut total = 0;
        loop {
            let p = page(&c, Some(&cursor), t).expect("page");
            total += p.signals.len();
            cursor = p.cursor;
            if !p.more {
                break;
            }
        }
        assert_eq!(total, MAX_BACKLOG as usize);
    }

    #[test]
    fn a_cursor_left_by_the_api_mode_starts_the_trickle_afresh() {
        let t = now();
        let p = page(&connection(), Some(&json!({ "after": 41 })), t).expect("page");
        assert_eq!(p.signals.len(), FIRST_SYNC as usize);
        assert!(p.signals[0].dedupe_key.ends_with(":1"));
    }

    #[test]
    fn a_garbled_cursor_is_rejected() {
        let err = page(&connection(), Some(&json!({ "seq": "x" })), now()).expect_err("bad");
        assert!(matches!(err, ProviderCallError::Rejected(_)));
    }
}
