//! Push delivery on SQLite: the shared statements (`src/store/shared/push.rs`). Writers are
//! serialized by SQLite itself, so events are numbered as they are inserted (the highest number
//! inside the inserting transaction is the last one committed) and need no lock of their own;
//! the fan-out, claims and outcomes take this process's write turn.

crate::store::shared::push::push_store!(
    crate::store::SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    // No outbox lock, no fan-out lock: SQLite's writers are serialized.
    None,
    None,
    // One writer.
    true,
    crate::store::shared::push::claim_sql(crate::store::shared::push::HEADS_BY_WINDOW, ""),
    // One process: its dispatchers are woken in-process as events are written (the writer
    // holds SQLite's lock until it commits, so a dispatcher woken early waits for the events).
    true,
    // The signal id inside an event's JSON data.
    "json_extract(data, '$.id')"
);

use std::collections::HashSet;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::domain::{EventId, PushEvent};
use crate::store::shared::outbox::{self, EventRow};
use crate::store::shared::push::{
    FinishedDelivery, EVENT_COLUMNS, FINISHED_COLUMNS, FINISH_SET, FINISH_WHERE,
};
use crate::store::{AttemptRecord, StoreError};

/// Ids per `IN` list, and attempts per `VALUES` list (ten binds each): under SQLite's limit.
const CHUNK: usize = 250;

/// Rows per multi-row insert of events: ten binds each, under SQLite's limit.
const EVENTS_PER_INSERT: usize = 500;

/// Inserts `events` numbered after the highest `seq` given, in their order, having moved
/// `push_numbering` to the last ([`outbox::MOVE_NUMBERING`]): a `VALUES` list per
/// [`EVENTS_PER_INSERT`].
async fn insert_numbered(
    conn: &mut SqliteConnection,
    events: &[&EventRow],
) -> Result<(), StoreError> {
    let count = i64::try_from(events.len()).map_err(|e| StoreError::corrupt("events", e))?;
    let base: i64 = sqlx::query_scalar(outbox::MOVE_NUMBERING)
        .bind(count)
        .fetch_one(&mut *conn)
        .await?;
    let mut seqs = (1..=count).map(|n| {
        base.checked_add(n)
            .ok_or_else(|| StoreError::corrupt("seq", "past the largest number"))
    });
    for chunk in events.chunks(EVENTS_PER_INSERT) {
        let seqs: Vec<i64> = seqs.by_ref().take(chunk.len()).collect::<Result<_, _>>()?;
        let mut q = QueryBuilder::<Sqlite>::new(outbox::INSERT_NUMBERED);
        q.push_values(chunk.iter().zip(seqs), |mut b, (e, seq)| {
            b.push_bind(seq)
                .push_bind(e.id)
                .push_bind(e.tenant_id)
                .push_bind(e.connection_id)
                .push_bind(e.provider.as_str())
                .push_bind(e.kind.as_deref())
                .push_bind(e.event_type)
                .push_bind(e.data.as_str())
                .push_bind(e.created_at)
                .push_bind(true);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Numbering an earlier release's events: nothing to do. SQLite numbers events as it inserts
/// them, and `0009_push_fan_out` numbered those stored before.
async fn number_earlier_events(_pool: &SqlitePool) -> Result<(), StoreError> {
    Ok(())
}

/// The events of `ids`, numbered, a statement per [`CHUNK`].
async fn events_by_id(pool: &SqlitePool, ids: &[EventId]) -> Result<Vec<PushEvent>, StoreError> {
    let mut events = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {EVENT_COLUMNS} FROM push_events WHERE seq > 0 AND id IN ("
        ));
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id.0);
        }
        q.push(")");
        for row in q.build().fetch_all(pool).await? {
            events.push(push_rows::event(&row)?);
        }
    }
    Ok(events)
}

/// Records `records` on their deliveries, a statement per [`CHUNK`]: the ids of those still
/// leased to their attempt, and so written.
async fn finish_deliveries(
    conn: &mut SqliteConnection,
    records: &[AttemptRecord],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut finished = HashSet::with_capacity(records.len());
    for chunk in records.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(format!("WITH r ({FINISHED_COLUMNS}) AS ("));
        q.push_values(chunk.iter().map(FinishedDelivery::of), |mut b, r| {
            b.push_bind(r.delivery)
                .push_bind(r.status)
                .push_bind(r.next_at)
                .push_bind(r.status_code)
                .push_bind(r.error)
                .push_bind(r.latency_ms)
                .push_bind(r.body)
                .push_bind(r.recorded_at)
                .push_bind(r.done_at)
                .push_bind(r.owner);
        });
        q.push(format!(
            ") UPDATE push_deliveries {FINISH_SET} FROM r {FINISH_WHERE} RETURNING id"
        ));
        let ids: Vec<Uuid> = q.build_query_scalar().fetch_all(&mut *conn).await?;
        finished.extend(ids);
    }
    Ok(finished)
}
