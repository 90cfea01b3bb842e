//! Calendar's incremental sync of each synced calendar (`super::calendars`) with sync tokens
//! (<https://developers.google.com/workspace/calendar/api/guides/sync>). A round goes through
//! the calendars in order, each from its own cursor until its `nextSyncToken`.
//!
//! - **Full sync.** `events.list` with `timeMin` `POBLYSH_GOOGLE_CALENDAR_FIRST_SYNC_DAYS`
//!   (default 30) days back and `showDeleted=true`, paged with `pageToken`; its last page
//!   carries `nextSyncToken`, which becomes the cursor.
//! - **Incremental sync.** `events.list?syncToken=...&showDeleted=true` (no `timeMin`: Google
//!   refuses it beside a sync token), paged likewise, its last page's `nextSyncToken` the new
//!   cursor.
//! - **`410 Gone`.** Google no longer honours the sync token: it is dropped and a full sync
//!   starts again in the same step.
//! - **Kinds.** `calendar_event_deleted` for status `cancelled`; `calendar_event_created` for an
//!   event created at or after the round's window began (`since`: the full sync's `timeMin`, then
//!   when each incremental round started); `calendar_event_updated` otherwise. Actor from
//!   `organizer`, else `creator`; title the summary; url `htmlLink`.
//! - **Dedupe key.** The calendar, the event id and its `updated` instant.
//!
//! The cursor: `{"calendars": {id: cursor}, "at": n}`, `at` the calendar the round is at; each
//! calendar's cursor `{"since", "sync_token"?, "page_token"?, "time_min"?, "round_started"?}`:
//! a sync token once one is known; a page token while a round is unfinished, with the full
//! sync's `time_min` while that is the round. A cursor of one calendar alone, as kept before
//! several were synced, is the primary calendar's.

use chrono::Duration;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use std::collections::BTreeMap;

use super::super::google::api::{self, Answer};
use super::calendars::{self, PRIMARY};
use crate::connector::{ProviderCallError, SignalDraft, SyncContext, SyncPage};
use crate::domain::{format_time, now, parse_rfc3339, Actor, SignalKind, Timestamp};

/// The setting naming how far back the first sync looks.
pub(super) const FIRST_SYNC_SETTING: &str = "FIRST_SYNC_DAYS";
const DEFAULT_FIRST_SYNC_DAYS: i64 = 30;
const MAX_FIRST_SYNC_DAYS: i64 = 366;
/// Events per page (Google's default 250, at most 2500).
const PAGE_SIZE: &str = "250";

/// Checks `POBLYSH_GOOGLE_CALENDAR_FIRST_SYNC_DAYS` at start-up.
pub(super) fn check_first_sync_days(text: &str) -> Result<(), String> {
    parse_days(text).map(|_| ())
}

fn parse_days(text: &str) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(days @ 1..=MAX_FIRST_SYNC_DAYS) => Ok(days),
        _ => Err(format!(
            "must be a whole number of days from 1 to {MAX_FIRST_SYNC_DAYS}"
        )),
    }
}

/// Where the sync stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cursor {
    /// Events created since are `calendar_event_created`.
    pub since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// The full sync's lower bound, while a full sync is paging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_min: Option<String>,
    /// When this round's first page was asked for; absent between rounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_started: Option<String>,
}

impl Cursor {
    pub(super) fn read(value: &Value) -> Result<Self, ProviderCallError> {
        let bad = |why: String| {
            ProviderCallError::Rejected(format!("unreadable Google Calendar cursor: {why}"))
        };
        let cursor: Cursor =
            serde_json::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
        for time in [
            Some(&cursor.since),
            cursor.time_min.as_ref(),
            cursor.round_started.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            parse_rfc3339(time).map_err(bad)?;
        }
        if cursor.sync_token.is_none() && cursor.time_min.is_none() {
            return Err(bad("neither a sync token nor a full sync".into()));
        }
        Ok(cursor)
    }

    /// A full sync from `days` back of `at`.
    fn full(at: Timestamp, days: i64) -> Self {
        let time_min = format_time(&(at - Duration::days(days)));
        Cursor {
            since: time_min.clone(),
            time_min: Some(time_min),
            ..Cursor::default()
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Events {
    #[serde(default, deserialize_with = "api::readable_items")]
    items: Vec<Event>,
    #[serde(default)]
    next_page_token: Option<String>,
    #[serde(default)]
    next_sync_token: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    html_link: Option<String>,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    updated: Option<String>,
    #[serde(default)]
    organizer: Option<Person>,
    #[serde(default)]
    creator: Option<Person>,
    #[serde(default)]
    start: Option<Value>,
    #[serde(default)]
    end: Option<Value>,
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Person {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

fn first_sync_days(ctx: &SyncContext<'_>) -> i64 {
    ctx.provider
        .settings
        .extra(FIRST_SYNC_SETTING)
        .and_then(|d| parse_days(d).ok())
        .unwrap_or(DEFAULT_FIRST_SYNC_DAYS)
}

/// Where the sync stands on every calendar, and which one the round is at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct State {
    /// Each synced calendar's cursor, by calendar id.
    pub calendars: BTreeMap<String, Cursor>,
    /// The calendar (by its place in the connection's list) the round is at.
    #[serde(default)]
    pub at: usize,
}

impl State {
    /// The stored cursor; a cursor of one calendar (kept before several were synced) is the
    /// primary calendar's.
    pub(super) fn read(value: Option<&Value>) -> Result<Self, ProviderCallError> {
        let value = match value {
            None | Some(Value::Null) => return Ok(State::default()),
            Some(value) => value,
        };
        let Some(calendars) = value.get("calendars") else {
            let mut state = State::default();
            state
                .calendars
                .insert(PRIMARY.to_string(), Cursor::read(value)?);
            return Ok(state);
        };
        let calendars = calendars.as_object().ok_or_else(|| {
            ProviderCallError::Rejected("unreadable Google Calendar cursor: calendars".into())
        })?;
        let mut state = State {
            at: value
                .get("at")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0),
            ..State::default()
        };
        for (id, cursor) in calendars {
            state.calendars.insert(id.clone(), Cursor::read(cursor)?);
        }
        Ok(state)
    }
}

/// What one page of one calendar came to.
struct Step {
    signals: Vec<SignalDraft>,
    cursor: Cursor,
    /// Whether this calendar's round goes on.
    more: bool,
}

/// One step of the sync: one page of the calendar the round is at. A round goes through the
/// connection's calendars in order, each until its `nextSyncToken`.
pub(super) async fn page(
    ctx: SyncContext<'_>,
    cursor: Option<&Value>,
) -> Result<SyncPage, ProviderCallError> {
    let ids = calendars::of(ctx.connection);
    let mut state = State::read(cursor)?;
    state.calendars.retain(|id, _| ids.contains(id));
    let index = state.at.min(ids.len().saturating_sub(1));
    let id = ids
        .get(index)
        .cloned()
        .unwrap_or_else(|| PRIMARY.to_string());
    let step = calendar_page(&ctx, &id, state.calendars.get(&id).cloned()).await?;
    state.calendars.insert(id, step.cursor);
    let (at, more) = match (step.more, index + 1 < ids.len()) {
        (true, _) => (index, true),
        (false, true) => (index + 1, true),
        (false, false) => (0, false),
    };
    state.at = at;
    Ok(SyncPage {
        signals: step.signals,
        cursor: json!(state),
        more,
        metadata: None,
    })
}

/// `events.list` of `calendar` at `cursor`: a full sync from its `timeMin`, or an incremental
/// one from its sync token (Google refuses `timeMin` beside a sync token), at its page.
fn events_url(
    ctx: &SyncContext<'_>,
    calendar: &str,
    cursor: &Cursor,
) -> Result<url::Url, ProviderCallError> {
    let mut url = calendars::url(ctx.provider.settings, calendar, &["events"])?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("maxResults", PAGE_SIZE)
            .append_pair("showDeleted", "true");
        match (&cursor.time_min, &cursor.sync_token) {
            (Some(time_min), _) => {
                query.append_pair("timeMin", time_min);
            }
            (None, Some(token)) => {
                query.append_pair("syncToken", token);
            }
            (None, None) => {}
        }
        if let Some(page) = &cursor.page_token {
            query.append_pair("pageToken", page);
        }
    }
    Ok(url)
}

/// One page of calendar `calendar` from `cursor` (`None`: its first, bounded, full sync).
async fn calendar_page(
    ctx: &SyncContext<'_>,
    calendar: &str,
    cursor: Option<Cursor>,
) -> Result<Step, ProviderCallError> {
    let at = now();
    let mut cursor = cursor.unwrap_or_else(|| Cursor::full(at, first_sync_days(ctx)));
    let mut restarted = false;
    let events = loop {
        let url = events_url(ctx, calendar, &cursor)?;
        let request = ctx
            .provider
            .http
            .get(url)
            .bearer_auth(ctx.access_token.expose());
        match api::send(request, "Google Calendar events.list").await? {
            Answer::Body(body) => {
                break api::parse::<Events>(&body, "Google Calendar events.list")?
            }
            // https://developers.google.com/workspace/calendar/api/guides/sync#full_sync_required_by_server
            Answer::Gone if !restarted && cursor.sync_token.is_some() => {
                tracing::info!(connection_id = %ctx.connection.id, "Google Calendar refused the sync token (410): a full sync starts again");
                cursor = Cursor::full(at, first_sync_days(ctx));
                restarted = true;
            }
            Answer::Gone => {
                return Err(ProviderCallError::Rejected(
                    "Google Calendar answered 410 Gone to a full sync".into(),
                ))
            }
        }
    };
    let since = parse_rfc3339(&cursor.since).map_err(|e| {
        ProviderCallError::Rejected(format!("unreadable Google Calendar cursor: {e}"))
    })?;
    let started = cursor
        .round_started
        .clone()
        .unwrap_or_else(|| format_time(&at));
    let signals = signals(&events, since, &ctx.connection.id.to_string(), calendar);
    match (events.next_page_token, events.next_sync_token) {
        (Some(next), _) if !next.is_empty() => Ok(Step {
            signals,
            cursor: Cursor {
                page_token: Some(next),
                round_started: Some(started),
                ..cursor
            },
            more: true,
        }),
        // The next round's window begins when this one did.
        (_, Some(token)) if !token.is_empty() => Ok(Step {
            signals,
            cursor: Cursor {
                since: started,
                sync_token: Some(token),
                ..Cursor::default()
            },
            more: false,
        }),
        _ => Err(ProviderCallError::Rejected(
            "Google Calendar answered an events page with neither nextPageToken nor nextSyncToken"
                .into(),
        )),
    }
}

/// The signals of one page. An event that cannot be read is logged and skipped: the rest of
/// the page, and the sync token past it, still count.
fn signals(
    events: &Events,
    since: Timestamp,
    connection: &str,
    calendar: &str,
) -> Vec<SignalDraft> {
    events
        .items
        .iter()
        .filter_map(|event| match signal(event, since, connection, calendar) {
            Ok(draft) => Some(draft),
            Err(error) => {
                tracing::warn!(%error, calendar, "skipped a Google Calendar event");
                None
            }
        })
        .collect()
}

fn time(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| parse_rfc3339(t).ok())
}

fn signal(
    event: &Event,
    since: Timestamp,
    connection: &str,
    calendar: &str,
) -> Result<SignalDraft, ProviderCallError> {
    if event.id.is_empty() {
        return Err(ProviderCallError::Rejected(
            "Google Calendar answered an event without an id".into(),
        ));
    }
    let updated = time(event.updated.as_deref());
    let created = time(event.created.as_deref());
    let kind = if event.status.as_deref() == Some("cancelled") {
        "calendar_event_deleted"
    } else if created.is_some_and(|c| c >= since) {
        "calendar_event_created"
    } else {
        "calendar_event_updated"
    };
    // A cancelled occurrence of a recurring event may carry no timestamps at all.
    let occurred_at = updated.or(created).unwrap_or(since);
    // Without an `updated`, a cancellation is named by itself: the same whichever sync sees it.
    let stamp = event.updated.clone().unwrap_or_else(|| {
        if kind == "calendar_event_deleted" {
            "cancelled".to_string()
        } else {
            format_time(&occurred_at)
        }
    });
    let person = event.organizer.as_ref().or(event.creator.as_ref());
    let actor = person.and_then(|p| {
        Some(Actor {
            id: p.email.clone().or_else(|| p.id.clone())?,
            name: p.display_name.clone(),
            email: p.email.clone(),
        })
    });
    Ok(SignalDraft {
        kind: SignalKind::of(kind),
        occurred_at,
        actor,
        title: event.summary.clone(),
        url: event.html_link.clone(),
        external_id: Some(event.id.clone()),
        dedupe_key: format!(
            "google_calendar:{connection}:{calendar}:{}:{stamp}",
            event.id
        ),
        payload: json!({
            "calendar_id": calendar,
            "event_id": event.id,
            "status": event.status,
            "start": event.start,
            "end": event.end,
            "created": event.created,
            "updated": event.updated,
        }),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_cursor_of_one_calendar_is_the_primary_ones_and_garbage_is_refused() {
        let single = json!({"since": "2026-11-06T00:00:00Z", "sync_token": "s1"});
        let state = State::read(Some(&single)).expect("reads");
        assert_eq!(state.calendars[PRIMARY].sync_token.as_deref(), Some("s1"));
        assert_eq!((state.calendars.len(), state.at), (1, 0));
        let again = State::read(Some(&json!(state.clone()))).expect("reads");
        assert_eq!(again, state);
        assert_eq!(State::read(None).expect("empty"), State::default());
        for bad in [
            json!({"calendars": []}),
            json!({"calendars": {"primary": {"since": "then", "sync_token": "s"}}}),
            json!({"calendars": {"team": {"since": "2026-11-06T00:00:00Z"}}}),
            json!("text"),
        ] {
            assert!(State::read(Some(&bad)).is_err(), "{bad}");
        }
    }

    fn events(body: Value) -> Events {
        serde_json::from_value(body).expect("events")
    }

    #[test]
    fn events_become_created_updated_and_deleted() {
        let since = parse_rfc3339("2026-11-01T00:00:00Z").expect("time");
        let page = events(json!({
            "kind": "calendar#events",
            "nextSyncToken": "CPDAlvWDx70CEPDAlvWDx70CGAU=",
            "items": [
                {"id": "e1", "status": "confirmed", "summary": "Standup", "htmlLink": "https://www.google.com/calendar/event?eid=ZTE",
                 "created": "2026-11-20T09:00:00.000Z", "updated": "2026-11-20T09:00:01.000Z",
                 "organizer": {"email": "ada@example.com", "displayName": "Ada", "self": true},
                 "start": {"dateTime": "2026-11-21T10:00:00+01:00"}, "end": {"dateTime": "2026-11-21T10:15:00+01:00"}},
                {"id": "e2", "status": "confirmed", "summary": "Review",
                 "created": "2026-01-01T09:00:00.000Z", "updated": "2026-11-20T10:00:00.000Z",
                 "creator": {"email": "bob@example.com"}},
                {"id": "e3", "status": "cancelled"}
            ]
        }));
        let drafts = signals(&page, since, "c1", "primary");
        let kinds: Vec<&str> = drafts.iter().map(|d| d.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "calendar_event_created",
                "calendar_event_updated",
                "calendar_event_deleted"
            ]
        );
        assert_eq!(drafts[0].title.as_deref(), Some("Standup"));
        assert_eq!(
            drafts[0].actor.as_ref().map(|a| a.id.as_str()),
            Some("ada@example.com")
        );
        assert_eq!(
            drafts[1].actor.as_ref().map(|a| a.id.as_str()),
            Some("bob@example.com")
        );
        assert_eq!(
            drafts[0].dedupe_key,
            "google_calendar:c1:primary:e1:2026-11-20T09:00:01.000Z"
        );
        assert!(drafts[2].actor.is_none());
    }

    #[test]
    fn an_event_that_cannot_be_read_is_skipped_and_the_rest_of_its_page_kept() {
        let since = parse_rfc3339("2026-11-01T00:00:00Z").expect("time");
        let good =
            json!({"id": "ok", "status": "confirmed", "updated": "2026-11-20T09:00:01.000Z"});
        for bad in [
            json!({"id": "", "status": "confirmed"}),
            json!({"id": 7}),
            json!("x"),
        ] {
            let page = events(json!({"nextSyncToken": "t", "items": [bad, good.clone()]}));
            let drafts = signals(&page, since, "c1", "primary");
            assert_eq!(drafts.len(), 1, "{bad}");
            assert_eq!(drafts[0].external_id.as_deref(), Some("ok"));
            assert_eq!(page.next_sync_token.as_deref(), Some("t"));
        }
    }

    #[test]
    fn the_first_sync_window_is_a_sensible_number_of_days() {
        assert_eq!(parse_days("30"), Ok(30));
        for bad in ["0", "-3", "367", "a month", ""] {
            assert!(parse_days(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// The cursor codec round-trips, and refuses what it cannot resume from.
        #[test]
        fn cursors_round_trip(token in proptest::option::of("[A-Za-z0-9=_-]{1,40}"), page in proptest::option::of("[A-Za-z0-9=_-]{1,40}"), secs in 0i64..4_000_000_000) {
            let at = format_time(&chrono::DateTime::from_timestamp(secs, 0).expect("in range"));
            let full = token.is_none();
            let cursor = Cursor {
                since: at.clone(),
                sync_token: token,
                page_token: page,
                time_min: full.then(|| at.clone()),
                round_started: None,
            };
            prop_assert_eq!(Cursor::read(&json!(cursor)).expect("reads"), cursor);
        }

        #[test]
        fn garbage_cursors_are_refused(text in ".{0,40}") {
            prop_assert!(Cursor::read(&json!(text)).is_err());
            let since_only = json!({"since": text.clone()});
            prop_assert!(Cursor::read(&since_only).is_err());
            let _ = Cursor::read(&json!({"since": text, "sync_token": "x"}));
        }
    }
}
