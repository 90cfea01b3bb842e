use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/zoho/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn msg(id: u64, time: i64) -> Listed {
    Listed {
        id: id.to_string(),
        time,
        raw: json!({"messageId": id.to_string(), "receivedTime": time.to_string()}),
    }
}

/// Scans a folder holding `all` (any order) as Zoho lists it, newest first, `size` a page,
/// and returns the ids reported and the folder's cursor after.
fn scan(folder: &FolderCursor, all: &[Listed], size: usize) -> (Vec<String>, FolderCursor) {
    let mut sorted = all.to_vec();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.time));
    let mut s = Scan {
        folder: 0,
        start: 1,
        top_time: folder.time,
        top_ids: Vec::new(),
    };
    let mut reported = Vec::new();
    loop {
        let page: Vec<Listed> = sorted
            .iter()
            .skip(s.start - 1)
            .take(size)
            .cloned()
            .collect();
        let full = page.len() >= size;
        let stepped = step(folder, &mut s, &page, full);
        reported.extend(stepped.new.iter().map(|m| m.id.clone()));
        if stepped.done {
            return (reported, advance(folder, &s));
        }
        s.start += size;
    }
}

#[test]
fn the_published_example_is_read_as_headers_only() {
    let example = fixture("mail_message");
    let m = listed(&example).expect("listed");
    assert_eq!(m.id, "9000000019029");
    assert_eq!(m.time, 1425388373920, "the search sample's receivedtime");
    let s = signal("email_received", "9000000000993", &m).expect("signal");
    assert_eq!(s.kind, "email_received");
    assert_eq!(s.title.as_deref(), Some("Marketing Strategy"));
    assert_eq!(s.external_id.as_deref(), Some("9000000019029"));
    assert_eq!(s.dedupe_key, "email_received:9000000000993:9000000019029");
    let actor = s.actor.expect("actor");
    assert_eq!(actor.email.as_deref(), Some("mysender@otherzoho.com"));
    assert_eq!(actor.name.as_deref(), Some("Maria Daniel"));
    assert_eq!(s.payload["sent_at"], "2010-04-02T01:32:56.000000Z");
    assert!(
        !s.payload.to_string().contains("extremely important"),
        "no summary of the body"
    );
    // Unreadable listings are skipped, not fatal.
    assert!(listed(&json!({"messageId": "1"})).is_none());
    assert!(listed(&json!({"receivedTime": "1"})).is_none());
}

#[test]
fn the_inbox_and_sent_folders_are_found_in_both_published_listings() {
    let sample = fixture("mail_folders");
    let listed = sample["data"].as_array().expect("data");
    let cursors = folder_cursors(listed, 5).expect("found");
    let ids: Vec<(&str, &str)> = cursors
        .iter()
        .map(|c| (c.role.as_str(), c.id.as_str()))
        .collect();
    assert_eq!(ids, [("inbox", "9999000000305"), ("sent", "9999000000311")]);
    assert!(cursors.iter().all(|c| c.time == 5 && c.seen.is_empty()));
    // The current page's sample quotes ids and adds `isArchived` (its Inbox entry; our copy
    // of the page ends before its Sent entry, whose id here is the test's own).
    let current = vec![
        json!({"path": "/Inbox", "isArchived": 1, "folderName": "Inbox", "imapAccess": true, "folderType": "Inbox", "folderId": "2560636000000008014"}),
        json!({"path": "/Sent", "isArchived": 0, "folderName": "Sent", "imapAccess": true, "folderType": "Sent", "folderId": "2560636000000008022"}),
    ];
    let cursors = folder_cursors(&current, 0).expect("found");
    assert_eq!(cursors[0].id, "2560636000000008014");
    assert_eq!(cursors[1].id, "2560636000000008022");
    // A mailbox without a Sent folder is an error, not a silent half-sync.
    assert!(folder_cursors(&current[..1], 0).is_err());
}

#[test]
fn equal_times_across_a_page_end_are_neither_dropped_nor_repeated() {
    let folder = FolderCursor {
        role: "inbox".into(),
        id: "1".into(),
        time: 100,
        seen: vec!["a".into()],
    };
    // Ids seen at the cursor's millisecond are skipped; others at it are new.
    let mut all = vec![msg(1, 100), msg(2, 100), msg(3, 101), msg(4, 99)];
    all[0].id = "a".into();
    let (reported, next) = scan(&folder, &all, 2);
    assert_eq!(reported, ["3", "2"]);
    assert_eq!(next.time, 101);
    assert_eq!(next.seen, ["3"]);
    let (again, same) = scan(&next, &all, 2);
    assert!(again.is_empty());
    assert_eq!(same, next);
}

proptest! {
    /// Any mailbox, any page size, mail arriving between runs (some at the newest millisecond
    /// already reported): every message at or after the first cursor is reported exactly once.
    #[test]
    fn every_message_is_reported_exactly_once(
        first in proptest::collection::vec(0i64..40, 0..60),
        later in proptest::collection::vec(0i64..20, 0..30),
        size in 1usize..8,
    ) {
        let mut folder = FolderCursor { role: "inbox".into(), id: "1".into(), time: 10, seen: Vec::new() };
        let mut all: Vec<Listed> = first.iter().enumerate().map(|(i, t)| msg(i as u64, *t)).collect();
        let (one, next) = scan(&folder, &all, size);
        folder = next;
        let newest = all.iter().map(|m| m.time).max().unwrap_or(0);
        // Later mail is at or after the newest time seen (mail does not arrive in the past).
        all.extend(later.iter().enumerate().map(|(i, t)| msg(1000 + i as u64, newest.max(10) + t)));
        let (two, _) = scan(&folder, &all, size);
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
    fn the_cursor_codec_round_trips(time in any::<i64>(), seen in proptest::collection::vec("[0-9]{1,19}", 0..5), start in 1usize..10_000, junk in ".{0,40}") {
        let cursor = Cursor {
            folders: vec![FolderCursor { role: "inbox".into(), id: "6000000004013".into(), time, seen }],
            scan: Some(Scan { folder: 0, start, top_time: time, top_ids: vec!["1".into()] }),
        };
        prop_assert_eq!(Cursor::read(Some(&cursor.to_value())), cursor);
        let _ = Cursor::read(Some(&json!(junk)));
        let _ = Cursor::read(Some(&json!({"folders": junk, "scan": {"start": -1}})));
    }
}
