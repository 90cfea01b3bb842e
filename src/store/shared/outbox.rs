//! The outbox's own statements, for both databases: numbering events (after they commit, by
//! the sequencer, on PostgreSQL; as they are inserted on SQLite) and the fan-out watermark
//! (`push_fan_out.through_seq`: every event with `seq <= through_seq` has been fanned out).
//! The design is in `src/push/mod.rs`; [`push_store!`](super::push::push_store) runs these.

use super::push::EVENT_COLUMNS;

/// Gives every visible unsequenced event the next `seq`, in insertion order. Run by one
/// sequencer at a time: rows committed before it get seqs now, rows committed after it get
/// higher ones on the next run. PostgreSQL only: SQLite numbers events as it inserts them.
pub(crate) const SEQUENCE: &str = "UPDATE push_events SET seq = numbered.n \
    FROM (SELECT pos, (SELECT COALESCE(MAX(seq), 0) FROM push_events) \
          + ROW_NUMBER() OVER (ORDER BY pos) AS n \
          FROM push_events WHERE seq IS NULL) AS numbered \
    WHERE push_events.pos = numbered.pos";

/// The highest `seq` given so far (0 before the first event).
pub(crate) const NEWEST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM push_events";

/// How far fan-out has gone: every event with `seq <= through_seq` has been fanned out.
pub(crate) const FANNED_OUT_THROUGH: &str = "SELECT through_seq FROM push_fan_out";

/// Moves the fan-out watermark to `$1`.
pub(crate) const ADVANCE_FAN_OUT: &str = "UPDATE push_fan_out SET through_seq = $1";

/// Up to `$2` events past the watermark `$1`, in `seq` order.
pub(crate) fn events_past_sql() -> String {
    format!("SELECT {EVENT_COLUMNS} FROM push_events WHERE seq > $1 ORDER BY seq LIMIT $2")
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

/// The start of an insert of events left for the sequencer to number (PostgreSQL).
pub(crate) fn insert_unnumbered_sql() -> String {
    format!("INSERT INTO push_events ({INSERTED_COLUMNS}) ")
}
