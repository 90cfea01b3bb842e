//! Which calendars a connection syncs: the primary calendar, and every other calendar of the
//! user's `calendarList` that the user selected (`selected: true`: shown in the Calendar UI;
//! <https://developers.google.com/workspace/calendar/api/v3/reference/calendarList>), read at
//! connect and kept in the connection's metadata (`calendars`). Each has its own sync token
//! (`super::sync`) and its own `events.watch` channel (resource `calendar:{id}`).
//!
//! - `minAccessRole=reader`: a calendar shared as free/busy only lists no event details and is
//!   left out.
//! - The primary calendar is named by the keyword `primary`, whatever its id (the account's
//!   address), so its URLs, cursors and dedupe keys stay the same.
//! - Reconnecting reads the list again and opens a channel on each newly selected calendar; a
//!   calendar no longer selected stops syncing, and its channel stays open until disconnect.

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::super::google::api;
use crate::connector::{ProviderCallError, ProviderContext, ProviderSettings};
use crate::crypto::Secret;
use crate::domain::Connection;

/// The metadata member listing the synced calendars.
pub(super) const METADATA: &str = "calendars";
/// The keyword for the user's primary calendar.
pub(super) const PRIMARY: &str = "primary";
/// The prefix of a calendar's subscription resource.
const RESOURCE_PREFIX: &str = "calendar:";
/// Entries per `calendarList.list` page (Google's most).
const PAGE_SIZE: &str = "250";
/// Pages read at most: 2,500 calendars.
const MAX_PAGES: usize = 10;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CalendarList {
    #[serde(default)]
    items: Vec<Entry>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct Entry {
    id: String,
    #[serde(default)]
    selected: bool,
    #[serde(default)]
    primary: bool,
}

/// The calendars to sync: `primary` first, then the other selected ones in list order.
pub(super) async fn selected(
    ctx: ProviderContext<'_>,
    access_token: &Secret,
) -> Result<Vec<String>, ProviderCallError> {
    let mut ids = vec![PRIMARY.to_string()];
    let mut page_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url = api::url(ctx.settings, "/calendar/v3/users/me/calendarList");
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("maxResults", PAGE_SIZE)
                .append_pair("minAccessRole", "reader");
            if let Some(token) = &page_token {
                query.append_pair("pageToken", token);
            }
        }
        let request = ctx.http.get(url).bearer_auth(access_token.expose());
        let list: CalendarList = api::json(request, "Google Calendar calendarList.list").await?;
        for entry in list.items {
            if entry.selected && !entry.primary && !entry.id.is_empty() && !ids.contains(&entry.id)
            {
                ids.push(entry.id);
            }
        }
        match list.next_page_token.filter(|t| !t.is_empty()) {
            Some(next) => page_token = Some(next),
            None => break,
        }
    }
    Ok(ids)
}

/// The calendars `connection` syncs: as kept at connect, else the primary one.
pub(super) fn of(connection: &Connection) -> Vec<String> {
    let kept: Vec<String> = connection
        .metadata
        .get(METADATA)
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .filter(|id| !id.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if kept.is_empty() {
        vec![PRIMARY.to_string()]
    } else {
        kept
    }
}

/// The subscription resource of calendar `id`.
pub(super) fn resource(id: &str) -> String {
    format!("{RESOURCE_PREFIX}{id}")
}

/// The calendar a subscription resource names.
pub(super) fn from_resource(resource: &str) -> Result<&str, ProviderCallError> {
    resource
        .strip_prefix(RESOURCE_PREFIX)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            ProviderCallError::Rejected(format!("{resource} names no Google Calendar calendar"))
        })
}

/// `{API base}/calendar/v3/calendars/{id}/{tail...}`, the id encoded as one path segment
/// (calendar ids hold `@` and `#`).
pub(super) fn url(
    settings: &ProviderSettings,
    id: &str,
    tail: &[&str],
) -> Result<Url, ProviderCallError> {
    let mut url = api::url(settings, "/calendar/v3/calendars");
    url.path_segments_mut()
        .map_err(|()| ProviderCallError::Rejected("the Calendar API URL has no path".into()))?
        .pop_if_empty()
        .push(id)
        .extend(tail);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calendar_id_is_one_path_segment_and_its_resource_reads_back() {
        let settings = ProviderSettings::bare("google_calendar");
        let id = "en.usa#holiday@group.v.calendar.google.com";
        let url = url(&settings, id, &["events", "watch"]).expect("url");
        assert_eq!(
            url.as_str(),
            "https://www.googleapis.com/calendar/v3/calendars/en.usa%23holiday@group.v.calendar.google.com/events/watch"
        );
        assert_eq!(from_resource(&resource(id)).ok(), Some(id));
        assert!(from_resource("calendar:").is_err());
        assert!(from_resource("changes").is_err());
    }
}
