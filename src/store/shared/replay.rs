//! Which events a replay sends again: those since an instant, or those of the signals after a
//! position of `GET /signals`.

use uuid::Uuid;

use super::push::EVENT_COLUMNS;
use crate::domain::{to_micros, PushEvent};
use crate::store::{PageKey, ReplayFrom};

/// The statement selecting a replay's candidate events, in `seq` order, and its first bind:
/// since an instant, every event from it; after a signal, every `signal.created` event.
pub(crate) fn replay_sql(from: &ReplayFrom) -> (String, i64) {
    let scope = "seq IS NOT NULL AND (tenant_id = $2 OR $3) ORDER BY seq";
    match from {
        ReplayFrom::Since(since) => (
            format!("SELECT {EVENT_COLUMNS} FROM push_events WHERE created_at >= $1 AND {scope}"),
            to_micros(since),
        ),
        ReplayFrom::AfterSignal(_) => (
            format!(
                "SELECT {EVENT_COLUMNS} FROM push_events WHERE created_at >= $1 \
                 AND event_type = 'signal.created' AND {scope}"
            ),
            0,
        ),
    }
}

/// The position in `GET /signals` of the signal a `signal.created` event is about.
fn signal_position(event: &PushEvent) -> Option<PageKey> {
    let id = event.data.get("id")?.as_str()?.parse::<Uuid>().ok()?;
    let at = event.data.get("occurred_at")?.as_str()?;
    let at = chrono::DateTime::parse_from_rfc3339(at)
        .ok()?
        .with_timezone(&chrono::Utc);
    Some(PageKey { at, id })
}

/// The candidates a replay sends: all of them since an instant; after a signal, those of later
/// signals, or `None` when no candidate is about the signal the position names (a foreign or
/// unknown signal).
pub(crate) fn replay_picks(events: Vec<PushEvent>, from: &ReplayFrom) -> Option<Vec<PushEvent>> {
    let ReplayFrom::AfterSignal(after) = from else {
        return Some(events);
    };
    let positioned: Vec<(PageKey, PushEvent)> = events
        .into_iter()
        .filter_map(|e| signal_position(&e).map(|p| (p, e)))
        .collect();
    if !positioned.iter().any(|(p, _)| p.id == after.id) {
        return None;
    }
    Some(
        positioned
            .into_iter()
            .filter(|(p, _)| (p.at, p.id) > (after.at, after.id))
            .map(|(_, e)| e)
            .collect(),
    )
}
