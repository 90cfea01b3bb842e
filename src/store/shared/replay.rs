//! Which events a replay sends again: those since an instant, or those of the signals after a
//! position of `GET /signals`. The endpoint's scope and filter are part of the statement, so
//! the cap applies in SQL: a replay reads its candidates a page at a time, in `seq` order, and
//! stops reading once it has as many as it may send.

use uuid::Uuid;

use super::push::EVENT_COLUMNS;
use crate::domain::{to_micros, EndpointFilter, PushEvent};
use crate::store::{PageKey, ReplayFrom};

/// Candidates read per statement.
pub(crate) const REPLAY_PAGE: u32 = 1_000;

/// A replay's statement and its binds: `$1` the first instant, `$2` the endpoint's tenant,
/// `$3` whether the endpoint is operator-wide, `$4` the `seq` the page starts after, `$5` the
/// page's size, then `texts` in order (the filter's lists).
pub(crate) struct ReplayQuery {
    pub sql: String,
    pub since: i64,
    pub texts: Vec<String>,
}

/// The page statement of a replay from `from` to an endpoint with `filter`: since an instant,
/// every event it receives from it; after a signal, every `signal.created` event it receives.
pub(crate) fn replay_query(from: &ReplayFrom, filter: &EndpointFilter) -> ReplayQuery {
    let mut sql = format!(
        "SELECT {EVENT_COLUMNS} FROM push_events WHERE created_at >= $1 \
         AND seq > 0 AND seq > $4 AND (tenant_id = $2 OR $3)"
    );
    let since = match from {
        ReplayFrom::Since(since) => to_micros(since),
        ReplayFrom::AfterSignal(_) => {
            sql.push_str(" AND event_type = 'signal.created'");
            0
        }
    };
    let mut texts = Vec::new();
    let mut listed = |column: &str, items: Option<Vec<String>>, or_null: bool| {
        let Some(items) = items else { return };
        let condition = if items.is_empty() {
            "1 = 0".to_string()
        } else {
            let first = texts.len() + 6;
            let placeholders: Vec<String> = (first..first + items.len())
                .map(|n| format!("${n}"))
                .collect();
            format!("{column} IN ({})", placeholders.join(", "))
        };
        texts.extend(items);
        sql.push_str(&if or_null {
            format!(" AND ({column} IS NULL OR {condition})")
        } else {
            format!(" AND {condition}")
        });
    };
    let strings = |items: &Option<Vec<_>>| {
        items
            .as_ref()
            .map(|i: &Vec<_>| i.iter().map(ToString::to_string).collect::<Vec<String>>())
    };
    listed("event_type", strings(&filter.event_types), false);
    listed("provider", filter.providers.clone(), false);
    // Kinds filter signals only; other events carry none and pass.
    listed("kind", filter.kinds.clone(), true);
    sql.push_str(" ORDER BY seq LIMIT $5");
    ReplayQuery { sql, since, texts }
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

/// What one page of candidates gives a replay: since an instant, all of them; after a signal,
/// those of later signals. `anchored` turns true once a candidate is about the signal the
/// position names (it starts true for a replay since an instant); a replay whose candidates
/// never name it is refused (a foreign or unknown signal).
pub(crate) fn replay_picks(
    events: Vec<PushEvent>,
    from: &ReplayFrom,
    anchored: &mut bool,
) -> Vec<PushEvent> {
    let ReplayFrom::AfterSignal(after) = from else {
        *anchored = true;
        return events;
    };
    events
        .into_iter()
        .filter_map(|e| signal_position(&e).map(|p| (p, e)))
        .filter(|(p, _)| {
            *anchored |= p.id == after.id;
            (p.at, p.id) > (after.at, after.id)
        })
        .map(|(_, e)| e)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventType;

    #[test]
    fn the_filter_becomes_conditions_with_numbered_binds() {
        let filter = EndpointFilter {
            event_types: Some(vec![EventType::SignalCreated]),
            providers: None,
            kinds: Some(vec!["pr_opened".into(), "issue_opened".into()]),
        };
        let q = replay_query(&ReplayFrom::Since(crate::domain::now()), &filter);
        assert!(q.sql.contains("event_type IN ($6)"), "{}", q.sql);
        assert!(
            q.sql.contains("(kind IS NULL OR kind IN ($7, $8))"),
            "{}",
            q.sql
        );
        assert!(!q.sql.contains("provider IN"), "{}", q.sql);
        assert_eq!(q.texts, ["signal.created", "pr_opened", "issue_opened"]);
        let none = EndpointFilter {
            event_types: None,
            providers: Some(Vec::new()),
            kinds: None,
        };
        let q = replay_query(&ReplayFrom::Since(crate::domain::now()), &none);
        assert!(q.sql.contains("AND 1 = 0"), "{}", q.sql);
        assert!(q.texts.is_empty());
    }
}
