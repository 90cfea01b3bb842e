//! Google Drive end to end against a fake Google that answers as Drive's discovery document
//! (`tests/google/drive.v3.json`) declares, every request and answer checked against it:
//! connect, the `changes.watch` channel opened, a notification verified by its channel token
//! starting a sync of the changes feed over several pages with a `429` in the middle, bad
//! notifications refused, and the channel stopped on disconnect before the grant is revoked.

use connectors::domain::EventStatus;
use connectors::ingest::sync::JobResult;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::google_discovery::Discovery;
use crate::google_fake::{channel_answer, retrying, time, Google};
use crate::helpers::{assert_problem, json, stored_event, webhook_jobs};

const RESOURCE_ID: &str = "o3hgv1538sdjfh";

/// The fake Drive: start page tokens, watches, stops.
async fn drive() -> (Google, Discovery) {
    drive_granting(None).await
}

/// The fake Drive, granting channels `lifetime` (else the expiration asked for).
async fn drive_granting(lifetime: Option<chrono::Duration>) -> (Google, Discovery) {
    let google = Google::start("google_drive", &[]).await;
    let drive = Discovery::load("drive.v3.json");
    let d = drive.clone();
    Mock::given(method("GET"))
        .and(path("/drive/v3/changes/startPageToken"))
        .respond_with(
            drive.responder("drive.changes.getStartPageToken", move |_| {
                d.answer(
                    "drive.changes.getStartPageToken",
                    200,
                    json!({"kind": "drive#startPageToken", "startPageToken": "100"}),
                )
            }),
        )
        .mount(&google.mock)
        .await;
    let d = drive.clone();
    Mock::given(method("POST"))
        .and(path("/drive/v3/changes/watch"))
        .respond_with(drive.responder("drive.changes.watch", move |r: &Request| {
            let uri = "https://www.googleapis.com/drive/v3/changes?alt=json&pageToken=100";
            let mut channel = channel_answer(r, RESOURCE_ID, uri);
            if let Some(lifetime) = lifetime {
                let expiration = (connectors::domain::now() + lifetime).timestamp_millis();
                channel["expiration"] = json!(expiration.to_string());
            }
            d.answer("drive.changes.watch", 200, channel)
        }))
        .mount(&google.mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/drive/v3/channels/stop"))
        .respond_with(drive.responder("drive.channels.stop", |_| ResponseTemplate::new(204)))
        .mount(&google.mock)
        .await;
    (google, drive)
}

/// A change to file `id` at `time`, as `changes.list` answers one for our `fields`.
fn change(id: &str, at: &str, file: Option<Value>) -> Value {
    let mut change = json!({"kind": "drive#change", "changeType": "file", "fileId": id, "time": at, "removed": file.is_none()});
    if let Some(file) = file {
        change["file"] = file;
    }
    change
}

fn file(id: &str, name: &str, created: &str, trashed: bool) -> Value {
    json!({
        "id": id, "name": name, "mimeType": "application/vnd.google-apps.document",
        "createdTime": created, "modifiedTime": created, "trashed": trashed,
        "webViewLink": format!("https://docs.google.com/document/d/{id}/edit"),
        "lastModifyingUser": {"kind": "drive#user", "displayName": "Paula", "emailAddress": "paula@zylker.com", "permissionId": "07121551936442451291"}
    })
}

/// Answers `changes.list` at `token` with `body`, checked against the document.
async fn changes(google: &Google, drive: &Discovery, token: &str, body: Value, times: Option<u64>) {
    let d = drive.clone();
    let mock = Mock::given(method("GET"))
        .and(path("/drive/v3/changes"))
        .and(query_param("pageToken", token))
        .respond_with(drive.responder("drive.changes.list", move |_| {
            d.answer("drive.changes.list", 200, body.clone())
        }));
    match times {
        Some(n) => mock.up_to_n_times(n).mount(&google.mock).await,
        None => mock.mount(&google.mock).await,
    }
}

/// The channel the service opened: its id, from the watch request.
async fn opened_channel(google: &Google) -> (String, Value) {
    let watches = google.requests("/drive/v3/changes/watch").await;
    let last = watches.last().expect("a watch");
    let body: Value = serde_json::from_slice(&last.body).expect("json");
    (body["id"].as_str().expect("id").to_string(), body)
}

#[tokio::test]
async fn drive_runs_its_whole_journey_against_a_fake_google() {
    let (google, drive) = drive().await;
    let (t, cid) = google.connect().await;

    // The subscription job opens the channel on the changes feed, for this tenant's URL.
    let ran = google.work().await;
    assert!(
        ran.iter().all(|o| o.result == JobResult::Succeeded),
        "{ran:?}"
    );
    let (channel, asked) = opened_channel(&google).await;
    assert_eq!(asked["type"], "web_hook");
    assert_eq!(
        asked["address"],
        format!("{}/webhooks/google_drive/{t}", google.app.base)
    );
    assert_eq!(asked["token"].as_str().map(str::len), Some(64));
    let detail = google.detail(t, &cid).await;
    let sub = &detail["subscriptions"][0];
    assert_eq!(sub["status"], "active", "{detail}");
    assert_eq!(sub["resource"], "changes");
    let connection = google
        .app
        .store()
        .get_connection(t, cid.parse().expect("uuid"))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(
        connection.metadata["google_channel:changes"],
        json!({"id": channel, "resource_id": RESOURCE_ID})
    );
    let expires = time(&sub["expires_at"]);
    let requested: i64 = asked["expiration"]
        .as_str()
        .expect("ms")
        .parse()
        .expect("ms");
    assert_eq!(expires.timestamp_millis(), requested);

    // The start page token was taken at connect: the first sync starts from it.
    assert_eq!(connection.metadata["start_page_token"], "100");
    let since = time(&connection.metadata["start_page_token_at"]);
    assert!(google.cursor(&cid).await.is_none());

    // Changes arrive over two pages; the second is rate limited once.
    let created = connectors::domain::format_time(&(since + chrono::Duration::seconds(1)));
    let page1 = json!({"kind": "drive#changeList", "nextPageToken": "150", "changes": [
        change("f1", "2026-12-06T10:00:00.000Z", Some(file("f1", "Plan.docx", &created, false))),
        change("f2", "2026-12-06T10:01:00.000Z", Some(file("f2", "Budget.xlsx", "2025-02-01T08:00:00.000Z", false))),
    ]});
    let page2 = json!({"kind": "drive#changeList", "newStartPageToken": "200", "changes": [
        change("f3", "2026-12-06T10:02:00.000Z", Some(file("f3", "Old.txt", "2025-02-01T08:00:00.000Z", true))),
        change("f4", "2026-12-06T10:03:00.000Z", None),
    ]});
    changes(&google, &drive, "100", page1, None).await;
    Mock::given(method("GET"))
        .and(path("/drive/v3/changes"))
        .and(query_param("pageToken", "150"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "30").set_body_json(json!({
            "error": {"code": 429, "message": "Rate Limit Exceeded", "errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}]}
        })))
        .up_to_n_times(1)
        .mount(&google.mock)
        .await;
    changes(&google, &drive, "150", page2, None).await;

    // The channel's handshake is answered and stores nothing; a change notification is kept
    // without its token and syncs the connection at once.
    let response = google
        .notify(t, &channel, RESOURCE_ID, "sync", 1, None)
        .await;
    assert_eq!(response.status(), 200);
    let (status, accepted) = json(
        google
            .notify(t, &channel, RESOURCE_ID, "change", 2, None)
            .await,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let before = connectors::domain::now();
    let ran = google.work().await;
    let stored = stored_event(&google.app, t, &accepted).await;
    assert_eq!(stored.status, EventStatus::Processed);
    assert!(!stored.headers.contains_key("x-goog-channel-token"));
    let (at, error) = retrying(ran.last().expect("the webhook sync"));
    assert!(at >= before + chrono::Duration::seconds(30), "{at}");
    assert!(error.contains("rate limited"), "{error}");
    let kinds = |signals: &[Value]| -> Vec<(String, String)> {
        signals
            .iter()
            .map(|s| {
                (
                    s["kind"].as_str().unwrap_or("").to_string(),
                    s["external_id"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let first = google.signals(t, &cid).await;
    assert_eq!(
        kinds(&first),
        [
            ("file_created".to_string(), "f1".to_string()),
            ("file_updated".into(), "f2".into())
        ]
    );
    assert_eq!(
        google.cursor(&cid).await.expect("cursor")["page_token"],
        "150"
    );

    // Due at Google's time, the retry reads the rest and ends the round.
    let outcome = google.run_at(at).await.expect("due");
    assert_eq!(outcome.result, JobResult::Succeeded);
    let all = google.signals(t, &cid).await;
    assert_eq!(
        kinds(&all),
        [
            ("file_created".to_string(), "f1".to_string()),
            ("file_updated".into(), "f2".into()),
            ("file_deleted".into(), "f3".into()),
            ("file_deleted".into(), "f4".into()),
        ]
    );
    assert_eq!(all[0]["title"], "Plan.docx");
    assert_eq!(all[0]["url"], "https://docs.google.com/document/d/f1/edit");
    assert_eq!(all[0]["actor"]["name"], "Paula");
    let cursor = google.cursor(&cid).await.expect("cursor");
    assert_eq!(cursor["page_token"], "200");
    assert!(cursor.get("round_started").is_none(), "{cursor}");

    // Google's retry of the message is a duplicate: nothing more to sync.
    let (_, again) = json(
        google
            .notify(t, &channel, RESOURCE_ID, "change", 2, None)
            .await,
    )
    .await;
    assert_eq!(again["duplicate"], true);

    // Disconnecting stops the channel, then revokes the grant.
    google.disconnect(t, &cid).await;
    let requests = google.mock.received_requests().await.expect("recorded");
    let stop = requests
        .iter()
        .position(|r| r.url.path() == "/drive/v3/channels/stop")
        .expect("channels.stop");
    let revoke = requests
        .iter()
        .position(|r| r.url.path() == "/revoke")
        .expect("revoked");
    assert!(
        stop < revoke,
        "the channel is stopped while the grant still works"
    );
    let stopped: Value = serde_json::from_slice(&requests[stop].body).expect("json");
    assert_eq!(stopped, json!({"id": channel, "resourceId": RESOURCE_ID}));

    // What the stopped channel still sends is refused and not stored.
    let late = google
        .notify(t, &channel, RESOURCE_ID, "change", 3, None)
        .await;
    assert_problem(late, 401, "INVALID_SIGNATURE").await;
    google.assert_inbox_stored_nothing().await;
    drive.assert_clean();
}

#[tokio::test]
async fn notifications_for_channels_we_did_not_open_are_refused_and_not_stored() {
    let (google, drive) = drive().await;
    let (t, cid) = google.connect().await;
    google.work().await;
    let (channel, _) = opened_channel(&google).await;

    // A wrong or missing token, or one made for another tenant's URL: 401, nothing stored.
    for token in [Some("not-the-channel-token"), Some("")] {
        let response = google
            .notify(t, &channel, RESOURCE_ID, "change", 3, token)
            .await;
        assert_problem(response, 401, "INVALID_SIGNATURE").await;
    }
    let other = crate::helpers::tenant();
    let token = crate::google_fake::channel_token("google_drive", t, &channel);
    let response = google
        .notify(
            other,
            &channel,
            RESOURCE_ID,
            "change",
            3,
            Some(token.expose()),
        )
        .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    google.assert_inbox_stored_nothing().await;

    // A rightly signed message naming a resource the channel does not watch, or a channel id
    // this service never opened: 401, nothing stored, nothing synced.
    let response = google
        .notify(t, &channel, "another-resource", "change", 4, None)
        .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    let never_opened = uuid::Uuid::new_v4().to_string();
    let response = google
        .notify(t, &never_opened, RESOURCE_ID, "change", 1, None)
        .await;
    assert_problem(response, 401, "INVALID_SIGNATURE").await;
    google.assert_inbox_stored_nothing().await;
    assert!(webhook_jobs(&google.app, t, &cid).await.is_empty());

    // The channel itself is still heard.
    let (status, accepted) = json(
        google
            .notify(t, &channel, RESOURCE_ID, "change", 5, None)
            .await,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    connectors::ingest::inbox::drain(&google.app.state)
        .await
        .expect("drain");
    let stored = stored_event(&google.app, t, &accepted).await;
    assert_eq!(stored.status, EventStatus::Processed);
    assert_eq!(webhook_jobs(&google.app, t, &cid).await.len(), 1);
    drive.assert_clean();
}

#[tokio::test]
async fn a_change_made_between_connect_and_the_first_sync_becomes_a_signal() {
    let (google, drive) = drive().await;
    let (t, cid) = google.connect().await;

    // The callback took the start page token, before any job ran.
    assert_eq!(
        google
            .requests("/drive/v3/changes/startPageToken")
            .await
            .len(),
        1
    );
    let id = cid.parse().expect("uuid");
    let store = google.app.store();
    let connection = store
        .get_connection(t, id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(connection.metadata["start_page_token"], "100");
    let connected = time(&connection.metadata["start_page_token_at"]);

    // A file is created after connect; the first sync runs later.
    let created = connectors::domain::format_time(&(connected + chrono::Duration::seconds(5)));
    let page = json!({"kind": "drive#changeList", "newStartPageToken": "101", "changes": [
        change("f9", &created, Some(file("f9", "Minutes.docx", &created, false))),
    ]});
    changes(&google, &drive, "100", page, None).await;
    google.sync_now(t, &cid).await;
    let ran = google.work().await;
    assert!(
        ran.iter().all(|o| o.result == JobResult::Succeeded),
        "{ran:?}"
    );

    let signals = google.signals(t, &cid).await;
    assert_eq!(signals.len(), 1, "{signals:?}");
    assert_eq!(signals[0]["kind"], "file_created");
    assert_eq!(signals[0]["title"], "Minutes.docx");
    let cursor = google.cursor(&cid).await.expect("cursor");
    assert_eq!(cursor["page_token"], "101");
    let connection = store
        .get_connection(t, id)
        .await
        .expect("read")
        .expect("stored");
    assert!(
        !connection.metadata.contains_key("start_page_token"),
        "the kept token is used up: {:?}",
        connection.metadata
    );
    drive.assert_clean();
}

#[tokio::test]
async fn a_garbage_page_fails_readably_and_the_cursor_stays() {
    let (google, drive) = drive().await;
    let (t, cid) = google.connect().await;
    google.work().await;
    let empty = json!({"kind": "drive#changeList", "newStartPageToken": "100", "changes": []});
    changes(&google, &drive, "100", empty, Some(1)).await;
    google.sync_now(t, &cid).await;
    google.work().await;
    let before = google.cursor(&cid).await.expect("cursor");
    Mock::given(method("GET"))
        .and(path("/drive/v3/changes"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>oops</html>"))
        .mount(&google.mock)
        .await;
    google.sync_now(t, &cid).await;
    let ran = google.work().await;
    let (_, error) = retrying(ran.last().expect("ran"));
    assert!(error.contains("cannot be read"), "{error}");
    assert_eq!(google.cursor(&cid).await, Some(before));
    assert!(google.signals(t, &cid).await.is_empty());
    drive.assert_clean();
}

#[tokio::test]
async fn a_channel_is_replaced_before_it_expires_and_the_old_one_stopped() {
    let (google, drive) = drive_granting(Some(chrono::Duration::seconds(2))).await;
    let (t, cid) = google.connect().await;
    google.work().await;
    let (old, _) = opened_channel(&google).await;

    // Four fifths into the lifetime Google granted, the scheduler queues the renewal.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let queued =
        connectors::subscriptions::schedule_due(&google.app.state, connectors::domain::now())
            .await
            .expect("scheduled");
    assert_eq!(queued, 1);
    let ran = google.work().await;
    assert!(
        ran.iter().all(|o| o.result == JobResult::Succeeded),
        "{ran:?}"
    );
    let (new, _) = opened_channel(&google).await;
    assert_ne!(new, old, "Google channels are replaced, not extended");
    let stops = google.requests("/drive/v3/channels/stop").await;
    assert_eq!(stops.len(), 1);
    let stopped: Value = serde_json::from_slice(&stops[0].body).expect("json");
    assert_eq!(stopped, json!({"id": old, "resourceId": RESOURCE_ID}));

    let empty = json!({"kind": "drive#changeList", "newStartPageToken": "100", "changes": []});
    changes(&google, &drive, "100", empty, None).await;

    // The stopped channel's last messages are refused; the new one's sync.
    let late = google.notify(t, &old, RESOURCE_ID, "change", 9, None).await;
    assert_problem(late, 401, "INVALID_SIGNATURE").await;
    let (_, fresh) = json(google.notify(t, &new, RESOURCE_ID, "change", 2, None).await).await;
    google.work().await;
    assert_eq!(
        stored_event(&google.app, t, &fresh).await.status,
        EventStatus::Processed
    );
    assert_eq!(
        google.cursor(&cid).await.expect("synced")["page_token"],
        "100"
    );
    drive.assert_clean();
}
