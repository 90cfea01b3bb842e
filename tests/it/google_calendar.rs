//! Google Calendar end to end against a fake Google that answers as Calendar's discovery
//! document (`tests/google/calendar.v3.json`) declares, every request and answer checked
//! against it: connect, the `events.watch` channel opened, a bounded full sync over several
//! pages with a `429` in the middle, a notification starting an incremental sync whose sync
//! token Google no longer honours (`410`: a full sync again), and the channel stopped on
//! disconnect before the grant is revoked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Duration;
use connectors::domain::{format_time, now, EventStatus};
use connectors::ingest::sync::JobResult;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex, query_param, query_param_is_missing};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::google_discovery::Discovery;
use crate::google_fake::{channel_answer, retrying, time, Google};
use crate::helpers::{assert_problem, json, stored_event};

const RESOURCE_ID: &str = "ret08u3rv24htgh289g";
const TEAM_RESOURCE_ID: &str = "a9Bq6c0Zx1T5mPq2rSt3uVw";
const TEAM: &str = "c_9f2b41d7e0@group.calendar.google.com";
const EVENTS: &str = "/calendar/v3/calendars/primary/events";

/// The fake Calendar, whose calendar list holds the primary calendar and one the user did not
/// select.
async fn calendar() -> (Google, Discovery) {
    calendar_listing(&[]).await
}

/// A calendar list entry, as `calendarList.list` answers one.
fn entry(id: &str, summary: &str, primary: bool, selected: bool) -> Value {
    let mut entry = json!({
        "kind": "calendar#calendarListEntry", "etag": "\"1733472000000000\"", "id": id,
        "summary": summary, "timeZone": "Europe/Berlin", "accessRole": "owner",
        "selected": selected,
    });
    if primary {
        entry["primary"] = json!(true);
    }
    entry
}

/// The fake Calendar, whose calendar list also holds the selected calendars `also`.
async fn calendar_listing(also: &[&str]) -> (Google, Discovery) {
    let google = Google::start(
        "google_calendar",
        &[("POBLYSH_GOOGLE_CALENDAR_FIRST_SYNC_DAYS", "30")],
    )
    .await;
    let calendar = Discovery::load("calendar.v3.json");
    let mut items = vec![
        entry("paula@zylker.com", "Paula", true, true),
        entry(
            "en.german#holiday@group.v.calendar.google.com",
            "Holidays in Germany",
            false,
            false,
        ),
    ];
    items.extend(also.iter().map(|id| entry(id, "Team", false, true)));
    let list = json!({"kind": "calendar#calendarList", "etag": "\"p33k9lvhrnivsc0g\"", "nextSyncToken": "CPDAlvWDx70CEPDAlvWDx70CGAU=", "items": items});
    let c = calendar.clone();
    Mock::given(method("GET"))
        .and(path("/calendar/v3/users/me/calendarList"))
        .respond_with(calendar.responder("calendar.calendarList.list", move |_| {
            c.answer("calendar.calendarList.list", 200, list.clone())
        }))
        .mount(&google.mock)
        .await;
    let c = calendar.clone();
    Mock::given(method("POST"))
        .and(path_regex("^/calendar/v3/calendars/[^/]+/events/watch$"))
        .respond_with(
            calendar.responder("calendar.events.watch", move |r: &Request| {
                // Google names each watched calendar's events by a resource id of its own.
                let (resource, uri) = if r.url.path().contains("/primary/") {
                    (
                        RESOURCE_ID,
                        "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
                    )
                } else {
                    (
                        TEAM_RESOURCE_ID,
                        "https://www.googleapis.com/calendar/v3/calendars/team/events?alt=json",
                    )
                };
                c.answer(
                    "calendar.events.watch",
                    200,
                    channel_answer(r, resource, uri),
                )
            }),
        )
        .mount(&google.mock)
        .await;
    Mock::given(method("POST"))
        .and(path("/calendar/v3/channels/stop"))
        .respond_with(calendar.responder("calendar.channels.stop", |_| ResponseTemplate::new(204)))
        .mount(&google.mock)
        .await;
    (google, calendar)
}

/// An event as `events.list` answers one.
fn event(id: &str, status: &str, summary: &str, created: &str, updated: &str) -> Value {
    json!({
        "kind": "calendar#event", "etag": format!("\"{id}-{updated}\""), "id": id, "status": status,
        "htmlLink": format!("https://www.google.com/calendar/event?eid={id}"),
        "created": created, "updated": updated, "summary": summary,
        "creator": {"email": "paula@zylker.com", "self": true},
        "organizer": {"email": "paula@zylker.com", "displayName": "Paula", "self": true},
        "start": {"dateTime": "2026-12-10T10:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-12-10T10:30:00+01:00", "timeZone": "Europe/Berlin"},
        "iCalUID": format!("{id}@google.com"), "sequence": 0, "eventType": "default"
    })
}

/// A cancelled event, as an incremental or `showDeleted` listing answers it.
fn cancelled(id: &str) -> Value {
    json!({"kind": "calendar#event", "etag": "\"3181161784712000\"", "id": id, "status": "cancelled"})
}

fn page(items: Vec<Value>, next_page: Option<&str>, next_sync: Option<&str>) -> Value {
    let mut body = json!({
        "kind": "calendar#events", "etag": "\"p33k9lsqjlm8s80g\"", "summary": "paula@zylker.com",
        "updated": "2026-12-06T10:00:00.000Z", "timeZone": "Europe/Berlin", "accessRole": "owner",
        "defaultReminders": [{"method": "popup", "minutes": 10}], "items": items,
    });
    if let Some(token) = next_page {
        body["nextPageToken"] = json!(token);
    }
    if let Some(token) = next_sync {
        body["nextSyncToken"] = json!(token);
    }
    body
}

fn kinds(signals: &[Value]) -> Vec<(String, String)> {
    let mut kinds: Vec<(String, String)> = signals
        .iter()
        .map(|s| {
            (
                s["external_id"].as_str().unwrap_or("").to_string(),
                s["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

fn pair(id: &str, kind: &str) -> (String, String) {
    (id.to_string(), kind.to_string())
}

#[tokio::test]
async fn calendar_runs_its_whole_journey_against_a_fake_google() {
    let (google, calendar) = calendar().await;
    let (t, cid) = google.connect().await;
    let ran = google.work().await;
    assert!(
        ran.iter().all(|o| o.result == JobResult::Succeeded),
        "{ran:?}"
    );
    let watches = google
        .requests("/calendar/v3/calendars/primary/events/watch")
        .await;
    let asked: Value = serde_json::from_slice(&watches[0].body).expect("json");
    let channel = asked["id"].as_str().expect("id").to_string();
    let detail = google.detail(t, &cid).await;
    assert_eq!(detail["subscriptions"][0]["status"], "active", "{detail}");
    assert_eq!(detail["subscriptions"][0]["resource"], "calendar:primary");

    let recent = format_time(&(now() - Duration::days(1)));
    let old = "2025-01-15T09:00:00.000Z";
    let edited = format_time(&(now() - Duration::hours(2)));
    // Full syncs: page one, then page two (a 429 first), ending with a sync token; the
    // second full sync (after the 410) finds one more event on page two.
    let fulls = Arc::new(AtomicUsize::new(0));
    let c = calendar.clone();
    let first_page = page(
        vec![
            event("e1", "confirmed", "Standup", &recent, &recent),
            event("e2", "confirmed", "Review", old, &edited),
        ],
        Some("page-2"),
        None,
    );
    Mock::given(method("GET"))
        .and(path(EVENTS))
        .and(query_param_is_missing("syncToken"))
        .and(query_param_is_missing("pageToken"))
        .respond_with(
            calendar.responder("calendar.events.list", move |r: &Request| {
                let time_min = r
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "timeMin")
                    .map(|(_, v)| v.into_owned());
                let bound = time(&json!(time_min.expect("a bounded full sync")));
                assert!(
                    (now() - Duration::days(30) - bound).num_seconds().abs() < 60,
                    "{bound}"
                );
                c.answer("calendar.events.list", 200, first_page.clone())
            }),
        )
        .mount(&google.mock)
        .await;
    Mock::given(method("GET"))
        .and(path(EVENTS))
        .and(query_param("pageToken", "page-2"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "20").set_body_json(json!({
            "error": {"code": 429, "message": "Rate Limit Exceeded", "errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded", "message": "Rate Limit Exceeded"}]}
        })))
        .up_to_n_times(1)
        .mount(&google.mock)
        .await;
    let c = calendar.clone();
    let f = fulls.clone();
    Mock::given(method("GET"))
        .and(path(EVENTS))
        .and(query_param("pageToken", "page-2"))
        .respond_with(calendar.responder("calendar.events.list", move |_| {
            let body = match f.fetch_add(1, Ordering::SeqCst) {
                0 => page(vec![cancelled("e3")], None, Some("sync-1")),
                _ => page(vec![cancelled("e3"), cancelled("e4")], None, Some("sync-2")),
            };
            c.answer("calendar.events.list", 200, body)
        }))
        .mount(&google.mock)
        .await;

    // The first sync: page one is stored, page two is rate limited, then read at Google's time.
    google.sync_now(t, &cid).await;
    let before = now();
    let ran = google.work().await;
    let (at, error) = retrying(ran.last().expect("the sync"));
    assert!(at >= before + Duration::seconds(20), "{at}");
    assert!(error.contains("rate limited"), "{error}");
    assert_eq!(
        kinds(&google.signals(t, &cid).await),
        [
            pair("e1", "calendar_event_created"),
            pair("e2", "calendar_event_updated")
        ]
    );
    let outcome = google.run_at(at).await.expect("due");
    assert_eq!(outcome.result, JobResult::Succeeded);
    let signals = google.signals(t, &cid).await;
    assert_eq!(
        kinds(&signals),
        [
            pair("e1", "calendar_event_created"),
            pair("e2", "calendar_event_updated"),
            pair("e3", "calendar_event_deleted"),
        ]
    );
    let standup = signals
        .iter()
        .find(|s| s["external_id"] == "e1")
        .expect("e1");
    assert_eq!(standup["title"], "Standup");
    assert_eq!(
        standup["url"],
        "https://www.google.com/calendar/event?eid=e1"
    );
    assert_eq!(standup["actor"]["email"], "paula@zylker.com");
    assert_eq!(
        google.cursor(&cid).await.expect("cursor")["calendars"]["primary"]["sync_token"],
        "sync-1"
    );

    // A notification: the incremental sync's token is gone, so a full sync runs again and
    // finds the one new change; what it finds again is stored once.
    Mock::given(method("GET"))
        .and(path(EVENTS))
        .and(query_param("syncToken", "sync-1"))
        .respond_with(ResponseTemplate::new(410).set_body_json(json!({
            "error": {"code": 410, "message": "Sync token is no longer valid, a full sync is required.",
                      "errors": [{"domain": "calendar", "reason": "fullSyncRequired", "message": "Sync token is no longer valid, a full sync is required."}]}
        })))
        .mount(&google.mock)
        .await;
    let response = google
        .notify(t, &channel, RESOURCE_ID, "sync", 1, None)
        .await;
    assert_eq!(response.status(), 200);
    let (status, accepted) = json(
        google
            .notify(t, &channel, RESOURCE_ID, "exists", 2, None)
            .await,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let ran = google.work().await;
    assert!(
        ran.iter().all(|o| o.result == JobResult::Succeeded),
        "{ran:?}"
    );
    assert_eq!(
        stored_event(&google.app, t, &accepted).await.status,
        EventStatus::Processed
    );
    assert_eq!(
        kinds(&google.signals(t, &cid).await),
        [
            pair("e1", "calendar_event_created"),
            pair("e2", "calendar_event_updated"),
            pair("e3", "calendar_event_deleted"),
            pair("e4", "calendar_event_deleted"),
        ]
    );
    assert_eq!(
        google.cursor(&cid).await.expect("cursor")["calendars"]["primary"]["sync_token"],
        "sync-2"
    );

    // An incremental sync with the new token, showing deleted events.
    let c = calendar.clone();
    let later = format_time(&now());
    let incremental = page(
        vec![event("e2", "confirmed", "Review (moved)", old, &later)],
        None,
        Some("sync-3"),
    );
    Mock::given(method("GET"))
        .and(path(EVENTS))
        .and(query_param("syncToken", "sync-2"))
        .and(query_param("showDeleted", "true"))
        .and(query_param_is_missing("timeMin"))
        .respond_with(calendar.responder("calendar.events.list", move |_| {
            c.answer("calendar.events.list", 200, incremental.clone())
        }))
        .mount(&google.mock)
        .await;
    let (status, _) = json(
        google
            .notify(t, &channel, RESOURCE_ID, "exists", 3, None)
            .await,
    )
    .await;
    assert_eq!(status, 202);
    google.work().await;
    let signals = google.signals(t, &cid).await;
    assert_eq!(signals.len(), 5);
    assert!(signals
        .iter()
        .any(|s| s["title"] == "Review (moved)" && s["kind"] == "calendar_event_updated"));
    assert_eq!(
        google.cursor(&cid).await.expect("cursor")["calendars"]["primary"]["sync_token"],
        "sync-3"
    );

    // Disconnecting stops the channel, then revokes the grant.
    google.disconnect(t, &cid).await;
    let requests = google.mock.received_requests().await.expect("recorded");
    let stop = requests
        .iter()
        .position(|r| r.url.path() == "/calendar/v3/channels/stop")
        .expect("channels.stop");
    let revoke = requests
        .iter()
        .position(|r| r.url.path() == "/revoke")
        .expect("revoked");
    assert!(stop < revoke);
    let stopped: Value = serde_json::from_slice(&requests[stop].body).expect("json");
    assert_eq!(stopped, json!({"id": channel, "resourceId": RESOURCE_ID}));

    // What the stopped channel still sends is refused and not stored.
    let late = google
        .notify(t, &channel, RESOURCE_ID, "exists", 4, None)
        .await;
    assert_problem(late, 401, "INVALID_SIGNATURE").await;
    google.assert_inbox_stored_nothing().await;
    calendar.assert_clean();
}

/// Answers `events.list` of calendar `id` with `body`: its full sync (`sync_token` `None`) or
/// its incremental sync from `sync_token`.
async fn events_of(
    google: &Google,
    calendar: &Discovery,
    id: &str,
    sync_token: Option<&str>,
    body: Value,
) {
    let c = calendar.clone();
    let listed =
        Mock::given(method("GET")).and(path(format!("/calendar/v3/calendars/{id}/events")));
    let listed = match sync_token {
        None => listed.and(query_param_is_missing("syncToken")),
        Some(token) => listed.and(query_param("syncToken", token)),
    };
    listed
        .respond_with(calendar.responder("calendar.events.list", move |_| {
            c.answer("calendar.events.list", 200, body.clone())
        }))
        .mount(&google.mock)
        .await;
}

#[tokio::test]
async fn every_selected_calendar_syncs_with_its_own_token_and_channel() {
    let (google, calendar) = calendar_listing(&[TEAM]).await;
    let (t, cid) = google.connect().await;
    let id = cid.parse().expect("uuid");
    let connection = google
        .app
        .store()
        .get_connection(t, id)
        .await
        .expect("read")
        .expect("stored");
    // The primary calendar and the selected one; the unselected holidays are left out.
    assert_eq!(connection.metadata["calendars"], json!(["primary", TEAM]));

    // One channel per calendar.
    let ran = google.work().await;
    assert!(
        ran.iter().all(|o| o.result == JobResult::Succeeded),
        "{ran:?}"
    );
    let requests = google.mock.received_requests().await.expect("recorded");
    let watched: Vec<(String, String)> = requests
        .iter()
        .filter(|r| r.url.path().ends_with("/events/watch"))
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("json");
            (
                r.url.path().to_string(),
                body["id"].as_str().expect("id").to_string(),
            )
        })
        .collect();
    let paths: Vec<&str> = watched.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/calendar/v3/calendars/primary/events/watch".to_string(),
            format!("/calendar/v3/calendars/{TEAM}/events/watch"),
        ]
    );
    let detail = google.detail(t, &cid).await;
    let resources: Vec<(&str, &str)> = detail["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|s| {
            (
                s["resource"].as_str().unwrap_or(""),
                s["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        resources,
        [
            ("calendar:primary", "active"),
            (format!("calendar:{TEAM}").as_str(), "active")
        ]
    );

    // A sync goes through both calendars, each with its own sync token.
    let recent = format_time(&(now() - Duration::hours(3)));
    let standup = event("e1", "confirmed", "Standup", &recent, &recent);
    let offsite = event("t1", "confirmed", "Team offsite", &recent, &recent);
    let full = None;
    events_of(
        &google,
        &calendar,
        "primary",
        full,
        page(vec![standup], None, Some("p-1")),
    )
    .await;
    events_of(
        &google,
        &calendar,
        TEAM,
        full,
        page(vec![offsite], None, Some("t-1")),
    )
    .await;
    google.sync_now(t, &cid).await;
    let ran = google.work().await;
    assert!(
        ran.iter().all(|o| o.result == JobResult::Succeeded),
        "{ran:?}"
    );
    assert_eq!(
        kinds(&google.signals(t, &cid).await),
        [
            pair("e1", "calendar_event_created"),
            pair("t1", "calendar_event_created")
        ]
    );
    let cursor = google.cursor(&cid).await.expect("cursor");
    assert_eq!(cursor["calendars"]["primary"]["sync_token"], "p-1");
    assert_eq!(cursor["calendars"][TEAM]["sync_token"], "t-1");
    assert_eq!(cursor["at"], 0);

    // The team calendar's channel is heard, and the next sync reads both calendars again
    // from their own tokens.
    let moved = format_time(&now());
    let offsite_moved = event("t1", "confirmed", "Team offsite (moved)", &recent, &moved);
    events_of(
        &google,
        &calendar,
        "primary",
        Some("p-1"),
        page(vec![], None, Some("p-2")),
    )
    .await;
    events_of(
        &google,
        &calendar,
        TEAM,
        Some("t-1"),
        page(vec![offsite_moved], None, Some("t-2")),
    )
    .await;
    let channel = &watched[1].1;
    let (status, accepted) = json(
        google
            .notify(t, channel, TEAM_RESOURCE_ID, "exists", 2, None)
            .await,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    // The team calendar's resource id names no channel of the primary calendar.
    let crossed = google
        .notify(t, &watched[0].1, TEAM_RESOURCE_ID, "exists", 2, None)
        .await;
    assert_problem(crossed, 401, "INVALID_SIGNATURE").await;
    google.work().await;
    assert_eq!(
        stored_event(&google.app, t, &accepted).await.status,
        EventStatus::Processed
    );
    let signals = google.signals(t, &cid).await;
    assert!(signals
        .iter()
        .any(|s| s["title"] == "Team offsite (moved)" && s["kind"] == "calendar_event_updated"));
    let cursor = google.cursor(&cid).await.expect("cursor");
    assert_eq!(cursor["calendars"]["primary"]["sync_token"], "p-2");
    assert_eq!(cursor["calendars"][TEAM]["sync_token"], "t-2");

    // Disconnecting stops both channels.
    google.disconnect(t, &cid).await;
    assert_eq!(google.requests("/calendar/v3/channels/stop").await.len(), 2);
    calendar.assert_clean();
}
