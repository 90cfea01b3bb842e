use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::connector::Connector;
use crate::providers::zoho_cliq::ZohoCliqConnector;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/zoho/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn msg(id: u64, time: i64) -> Listed {
    Listed {
        id: id.to_string(),
        time,
        raw: json!({"id": id.to_string(), "time": time}),
    }
}

#[test]
fn the_client_side_limit_stays_under_cliqs_fifteen_a_minute() {
    let limit = ZohoCliqConnector.descriptor().rate_limit;
    let per_minute = u64::from(limit.requests) * 60 / u64::from(limit.window_secs);
    assert!(per_minute + u64::from(limit.burst) <= 15, "{limit:?}");
    assert_eq!(limit.max_concurrency, 1);
}

#[test]
fn the_published_examples_are_read() {
    let example = fixture("cliq_message");
    let m = listed(&example).expect("listed");
    assert_eq!(m.id, "1710934200000");
    assert_eq!(m.time, 1742481000000, "2025-03-20T14:30:00.000Z");
    let chat = Queued {
        id: "6795".into(),
        name: Some("General".into()),
    };
    let s = signal(&chat, &m).expect("signal");
    assert_eq!(s.kind, "message_posted");
    assert_eq!(s.dedupe_key, "message_posted:6795:1710934200000");
    assert_eq!(s.actor.expect("actor").id, "711622XXXX");
    assert_eq!(s.payload["text"], "Please review the updated proposal.");
    let chats = fixture("cliq_chats");
    let first = &chats["chats"][0];
    assert_eq!(
        time_ms(first.get("last_modified_time")),
        Some(1744295400000)
    );
    assert_eq!(time_ms(Some(&json!(1711929600000i64))), Some(1711929600000));
    assert_eq!(time_ms(Some(&json!("soon"))), None);
}

#[test]
fn a_message_in_the_shape_of_the_published_pinned_message_is_read() {
    // The `200` example of `GET /chats/{CHAT_ID}/pin-messages` in Zoho's Pin Messages OpenAPI
    // document, the message members only (https://www.zoho.com/cliq/help/restapi/v3/).
    let pinned = json!({
        "type": "text",
        "id": "1746000123456789001",
        "time": "2026-04-30T09:00:00Z",
        "sender": {"id": "1234567890", "name": "Alice Johnson"},
        "content": {"text": "Please review the Q2 report before Friday."}
    });
    let m = listed(&pinned).expect("listed");
    assert_eq!(m.id, "1746000123456789001");
    let chat = Queued {
        id: "2890538000000012345".into(),
        name: Some("Alice Johnson".into()),
    };
    let s = signal(&chat, &m).expect("signal");
    let actor = s.actor.expect("actor");
    assert_eq!(actor.id, "1234567890");
    assert_eq!(actor.name.as_deref(), Some("Alice Johnson"));
    assert_eq!(
        s.payload["text"],
        "Please review the Q2 report before Friday."
    );
}

/// Reads a chat holding `all` as Cliq pages it (oldest first, from one millisecond before
/// the cursor) and returns the ids reported and the cursor after.
fn read(chat: &ChatCursor, all: &[Listed], size: usize) -> (Vec<String>, ChatCursor) {
    let mut sorted = all.to_vec();
    sorted.sort_by_key(|m| m.time);
    let mut cursor = chat.clone();
    let mut reported = Vec::new();
    loop {
        let from = cursor.time.saturating_sub(1);
        let page: Vec<Listed> = sorted
            .iter()
            .filter(|m| m.time > from)
            .take(size)
            .cloned()
            .collect();
        let (new, next) = fold(&cursor, &page);
        reported.extend(new.iter().map(|m| m.id.clone()));
        cursor = next;
        if page.len() < size || new.is_empty() {
            return (reported, cursor);
        }
    }
}

proptest! {
    /// Any chat, page size and later posts (some at the newest millisecond already read):
    /// every message at or after the first cursor is reported exactly once, as long as a page
    /// holds more messages than share one millisecond.
    #[test]
    fn every_message_is_reported_exactly_once(
        first in proptest::collection::vec(0i64..40, 0..60),
        later in proptest::collection::vec(0i64..20, 0..30),
        size in 8usize..20,
    ) {
        let start = ChatCursor { id: "c".into(), time: 10, seen: Vec::new() };
        let mut all: Vec<Listed> = first.iter().enumerate().map(|(i, t)| msg(i as u64, *t)).collect();
        // At most `size - 1` messages share a millisecond (else no page can get past it).
        let crowded = all.iter().any(|m| all.iter().filter(|n| n.time == m.time).count() >= size);
        prop_assume!(!crowded);
        let (one, cursor) = read(&start, &all, size);
        let newest = all.iter().map(|m| m.time).max().unwrap_or(0).max(10);
        all.extend(later.iter().enumerate().map(|(i, t)| msg(1000 + i as u64, newest + t)));
        let crowded = all.iter().any(|m| all.iter().filter(|n| n.time == m.time).count() >= size);
        prop_assume!(!crowded);
        let (two, _) = read(&cursor, &all, size);
        let mut reported: Vec<String> = one.into_iter().chain(two).collect();
        let count = reported.len();
        reported.sort();
        reported.dedup();
        prop_assert_eq!(count, reported.len(), "nothing twice");
        let expected: BTreeSet<String> = all.iter().filter(|m| m.time >= 10).map(|m| m.id.clone()).collect();
        prop_assert_eq!(reported.into_iter().collect::<BTreeSet<_>>(), expected);
    }

    /// A stored cursor survives its codec, and any JSON is read without panicking.
    #[test]
    fn the_cursor_codec_round_trips(time in any::<i64>(), ids in proptest::collection::vec("[0-9_]{1,30}", 0..5), junk in ".{0,40}") {
        let cursor = Cursor {
            chats_since: Some(time),
            listing: Some(Listing { started: time, before: Some(time) }),
            queue: ids.iter().map(|id| Queued { id: id.clone(), name: None }).collect(),
            chats: vec![ChatCursor { id: "c".into(), time, seen: ids.clone() }],
            idle: false,
        };
        prop_assert_eq!(Cursor::read(Some(&cursor.to_value())), cursor);
        let _ = Cursor::read(Some(&json!(junk)));
        let fresh = Cursor::read(None);
        prop_assert!(fresh.idle);
    }
}
