//! The outbox's own statements, for both databases: numbering events (after they commit, by
//! the sequencer, on PostgreSQL; as they are inserted on SQLite) and the fan-out watermark
//! (`push_fan_out.through_seq`: every event with `seq <= through_seq` has been fanned out).
//! The design is in `src/push/mod.rs`; [`push_store!`](super::push::push_store) runs these.

use super::push::EVENT_COLUMNS;

/// Gives every visible event inserted with `seq` NULL the next `seq`, in insertion order. Run
/// by one sequencer at a time: rows committed before it get seqs now, rows committed after it
/// get higher ones on the next run. PostgreSQL only, for the events of an instance of a release
/// before `0011_push_unnumbered` (this release queues its events instead, [`SEQUENCE_QUEUED`]);
/// it reads the partial index `push_events_unsequenced`, which no event of this release enters.
pub(crate) const SEQUENCE: &str = "UPDATE push_events SET seq = numbered.n \
    FROM (SELECT pos, (SELECT COALESCE(MAX(seq), 0) FROM push_events WHERE seq > 0) \
          + ROW_NUMBER() OVER (ORDER BY pos) AS n \
          FROM push_events WHERE seq IS NULL) AS numbered \
    WHERE push_events.pos = numbered.pos";

/// Takes every visible queued event (`push_events_unnumbered`): the `pos` of each. PostgreSQL
/// only, under the sequencer's lock, as [`SEQUENCE`]. The queue has no index and is read whole:
/// it holds only the events inserted since autovacuum last emptied it, whatever the size of the
/// outbox.
pub(crate) const TAKE_QUEUED: &str = "DELETE FROM push_events_unnumbered RETURNING pos";

/// Numbers the queued events whose `pos` are `$1` (taken by [`TAKE_QUEUED`] in the same
/// transaction), in `pos` order, after the highest `seq`. Only events still unnumbered
/// (`seq < 0`) are written; an event deleted since it was queued (its connection purged) is
/// skipped. The positions come as an array, so the plan is one primary-key lookup each.
pub(crate) const SEQUENCE_QUEUED: &str = "UPDATE push_events SET seq = numbered.n \
    FROM (SELECT q.pos, (SELECT COALESCE(MAX(seq), 0) FROM push_events WHERE seq > 0) \
          + ROW_NUMBER() OVER (ORDER BY q.pos) AS n FROM UNNEST($1::int8[]) AS q (pos)) AS numbered \
    WHERE push_events.pos = numbered.pos AND push_events.seq < 0";

/// Puts back the outbox's floor, the row numbered 0 that `0011_push_unnumbered` inserts (see
/// there), if an instance of the release before deleted it as expired. Writes nothing when it
/// is there. PostgreSQL only.
pub(crate) const KEEP_FLOOR: &str = "INSERT INTO push_events (id, seq, fanned_out, tenant_id, \
    connection_id, provider, kind, event_type, data, created_at) \
    SELECT '00000000-0000-0000-0000-000000000000', 0, TRUE, \
    '00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000000', \
    '', NULL, 'outbox.floor', '{}', -9223372036854775808 \
    WHERE NOT EXISTS (SELECT 1 FROM push_events WHERE seq = 0) ON CONFLICT DO NOTHING";

/// The highest `seq` given so far (0 before the first event). Events not yet numbered have a
/// negative `seq` on PostgreSQL.
pub(crate) const NEWEST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM push_events WHERE seq > 0";

/// How far fan-out has gone: every event with `seq <= through_seq` has been fanned out.
pub(crate) const FANNED_OUT_THROUGH: &str = "SELECT through_seq FROM push_fan_out";

/// Moves the fan-out watermark to `$1`.
pub(crate) const ADVANCE_FAN_OUT: &str = "UPDATE push_fan_out SET through_seq = $1";

/// Up to `$1` events past the fan-out watermark, in `seq` order: the watermark is read by
/// the same statement, so a fan-out reads it and its events in one step.
pub(crate) fn events_past_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM push_events \
         WHERE seq > (SELECT through_seq FROM push_fan_out) ORDER BY seq LIMIT $1"
    )
}

/// An event's row, encoded for its insert: its JSON `data` written out, so a caller can encode
/// rows before it takes its turn to write.
#[derive(Debug)]
pub(crate) struct EventRow {
    pub id: uuid::Uuid,
    pub tenant_id: uuid::Uuid,
    pub connection_id: uuid::Uuid,
    pub provider: String,
    pub kind: Option<String>,
    pub event_type: &'static str,
    pub data: String,
    pub created_at: i64,
}

impl EventRow {
    pub(crate) fn of(event: &crate::domain::NewPushEvent) -> Self {
        Self {
            id: event.id.0,
            tenant_id: event.tenant_id.0,
            connection_id: event.connection_id.0,
            provider: event.provider.clone(),
            kind: event.kind.clone(),
            event_type: event.event_type.as_str(),
            data: event.data.to_string(),
            created_at: crate::domain::to_micros(&event.created_at),
        }
    }
}

/// The columns an event is inserted with, after `seq` where the insert numbers it.
const INSERTED_COLUMNS: &str =
    "id, tenant_id, connection_id, provider, kind, event_type, data, created_at, fanned_out";

/// The start of an insert of events numbered as they are inserted (SQLite, whose writers are
/// serialized, so the highest `seq` inside the inserting transaction is the last one
/// committed): row `n` of the `VALUES` list that follows (its first column) gets
/// `MAX(seq) + n`, read by the same statement. SQLite runs the `SELECT` of an insert into the
/// table it reads to completion before inserting, so every row sees the same `MAX(seq)`.
pub(crate) fn insert_numbered_sql() -> String {
    let values: Vec<String> = (2..=10).map(|i| format!("v.column{i}")).collect();
    format!(
        "INSERT INTO push_events (seq, {INSERTED_COLUMNS}) SELECT numbered.base + v.column1, {} \
         FROM (SELECT COALESCE(MAX(seq), 0) AS base FROM push_events) AS numbered, (",
        values.join(", ")
    )
}

/// The start of an insert of events left for the sequencer to number (PostgreSQL): the
/// `VALUES` list that follows is named `v`; each row takes its `pos` from the table's sequence,
/// `seq = -pos` (not numbered, and no entry in `push_events_unsequenced`), and its `pos` is
/// queued in `push_events_unnumbered`. [`queue_inserted_sql`] ends the statement.
pub(crate) fn insert_queued_sql() -> String {
    format!("WITH v ({INSERTED_COLUMNS}) AS (")
}

/// The CTE `inserted`: the events of `v` that `filter` keeps, each with its `pos` from the
/// table's sequence and `seq = -pos` (not numbered, and no entry in `push_events_unsequenced`),
/// in the order of the list; then their positions queued in `push_events_unnumbered`.
fn insert_and_queue(filter: &str) -> String {
    format!(
        "inserted AS (INSERT INTO push_events (pos, seq, {INSERTED_COLUMNS}) \
         SELECT p.pos, -p.pos, p.id, p.tenant_id, p.connection_id, p.provider, p.kind, \
         p.event_type, p.data, p.created_at, p.fanned_out \
         FROM (SELECT nextval('push_events_pos_seq') AS pos, v.* FROM v{filter}) AS p \
         RETURNING pos), \
         queued AS (INSERT INTO push_events_unnumbered (pos) SELECT pos FROM inserted)"
    )
}

/// The end of [`insert_queued_sql`]'s statement, after its `VALUES` list.
pub(crate) fn queue_inserted_sql() -> String {
    format!("), {} SELECT 1", insert_and_queue(""))
}

/// The middle of a PostgreSQL statement that inserts signals and queues their `signal.created`
/// events together: it follows a first CTE, `s`, the signals' `INSERT ... RETURNING id`, and
/// opens the `VALUES` list of the events, each row its signal's id first.
/// [`queue_created_end_sql`] ends the statement.
pub(crate) fn queue_created_sql() -> String {
    format!("), v (signal_id, {INSERTED_COLUMNS}) AS (")
}

/// The end of [`queue_created_sql`]'s statement: the events of the signals `s` inserted (not
/// of those it skipped as duplicates) are inserted and queued as [`queue_inserted_sql`] does,
/// in the order of the list; the statement returns the inserted signals' ids.
pub(crate) fn queue_created_end_sql() -> String {
    format!(
        "), {} SELECT id FROM s",
        insert_and_queue(" WHERE v.signal_id IN (SELECT id FROM s)")
    )
}
