//! The outbox's own statements, for both databases: numbering events as they are inserted
//! (and, on PostgreSQL, the events an instance of an earlier release left for a sequencer) and
//! the fan-out watermark (`push_fan_out.through_seq`: every event with `seq <= through_seq` has
//! been fanned out).
//! The design is in `src/push/mod.rs`; [`push_store!`](super::push::push_store) runs these.

use super::push::EVENT_COLUMNS;

/// The highest `seq` of the events stored, as a subquery (how inserts number after it: see
/// [`INSERT_NUMBERED_ARRAYS`]).
macro_rules! newest_stored {
    () => {
        "(SELECT COALESCE(MAX(seq), 0) FROM push_events WHERE seq > 0)"
    };
}

/// The highest number given (PostgreSQL): `push_numbering`'s, or the highest stored when an
/// instance of an earlier release, which does not keep `push_numbering`, numbered past it.
macro_rules! last_given {
    () => {
        concat!(
            "GREATEST((SELECT last_seq FROM push_numbering), ",
            newest_stored!(),
            ")"
        )
    };
}

/// Gives every visible event inserted with `seq` NULL the next `seq` after the highest given
/// (the highest stored or `push_numbering`'s), in insertion order. Run by one sequencer at a time:
/// rows committed before it get seqs now, rows committed after it get higher ones on the next
/// run. PostgreSQL only, for the events of an instance of a release
/// before `0011_push_unnumbered` (the releases after it queued theirs, [`SEQUENCE_QUEUED`]);
/// it reads the partial index `push_events_unsequenced`, which no event of this release enters.
pub(crate) const SEQUENCE: &str = concat!(
    "UPDATE push_events SET seq = numbered.n FROM (SELECT pos, ",
    last_given!(),
    " + ROW_NUMBER() OVER (ORDER BY pos) AS n FROM push_events WHERE seq IS NULL) AS numbered \
     WHERE push_events.pos = numbered.pos"
);

/// Takes every visible queued event (`push_events_unnumbered`, where an instance of a release
/// from `0011_push_unnumbered` until events were numbered at insert queues its events): the
/// `pos` of each. PostgreSQL only, under the outbox lock, as [`SEQUENCE`]. The queue has no
/// index and is read whole: it holds only the events inserted since autovacuum last emptied
/// it, whatever the size of the outbox.
pub(crate) const TAKE_QUEUED: &str = "DELETE FROM push_events_unnumbered RETURNING pos";

/// Numbers the queued events whose `pos` are `$1` (taken by [`TAKE_QUEUED`] in the same
/// transaction), in `pos` order, after the highest `seq` given. Only events still unnumbered
/// (`seq < 0`) are written; an event deleted since it was queued (its connection purged) is
/// skipped. The positions come as an array, so the plan is one primary-key lookup each.
pub(crate) const SEQUENCE_QUEUED: &str = concat!(
    "UPDATE push_events SET seq = numbered.n FROM (SELECT q.pos, ",
    last_given!(),
    " + ROW_NUMBER() OVER (ORDER BY q.pos) AS n FROM UNNEST($1::int8[]) AS q (pos)) AS numbered \
     WHERE push_events.pos = numbered.pos AND push_events.seq < 0"
);

/// After [`SEQUENCE_QUEUED`] and [`SEQUENCE`]: the highest number given is at least the
/// highest they gave. PostgreSQL only.
pub(crate) const KEEP_NUMBERING: &str = concat!(
    "UPDATE push_numbering SET last_seq = GREATEST(last_seq, ",
    newest_stored!(),
    ")"
);

/// Puts back the outbox's floor, the row numbered 0 that `0011_push_unnumbered` inserts (see
/// there), if an instance of the release before deleted it as expired. Writes nothing when it
/// is there. PostgreSQL only.
pub(crate) const KEEP_FLOOR: &str = "INSERT INTO push_events (id, seq, fanned_out, tenant_id, \
    connection_id, provider, kind, event_type, data, created_at) \
    SELECT '00000000-0000-0000-0000-000000000000', 0, TRUE, \
    '00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000000', \
    '', NULL, 'outbox.floor', '{}', -9223372036854775808 \
    WHERE NOT EXISTS (SELECT 1 FROM push_events WHERE seq = 0) ON CONFLICT DO NOTHING";

/// Whether an instance of an earlier release left events for a sequencer to number: queued in
/// `push_events_unnumbered`, or inserted with `seq` NULL. PostgreSQL only; both are empty
/// except while such an instance runs beside this release (until autovacuum, a look at the
/// queue reads its dead rows, a few pages).
pub(crate) const EARLIER_RELEASE_WAITING: &str = "SELECT EXISTS (SELECT 1 FROM \
    push_events_unnumbered) OR EXISTS (SELECT 1 FROM push_events WHERE seq IS NULL)";

/// The highest `seq` stored (0 before the first event): the newest event a reader can see.
pub(crate) const NEWEST_SEQ: &str = concat!("SELECT ", newest_stored!());

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

/// The columns an event is inserted with, after its `seq`, in the order each store binds them.
macro_rules! inserted_columns {
    () => {
        "id, tenant_id, connection_id, provider, kind, event_type, data, created_at, fanned_out"
    };
}

// Numbering at insert. An insert of events numbers them after the greater of the highest `seq`
// stored and `push_numbering.last_seq` (the highest ever given, which an instance of an earlier
// release does not keep), and moves `last_seq` to its last number: a number is never given
// twice, even once the newest events are deleted. The inserting transaction is the only one
// numbering events until it commits: on SQLite, whose writers are serialized; on PostgreSQL,
// because it holds the outbox lock from just before the insert to its commit, and reads with a
// snapshot taken after the lock was granted. Only `seq > 0` counts: on PostgreSQL an instance
// of an earlier release may have left events waiting at a negative `seq`.

/// PostgreSQL: inserts the events bound as arrays, `$1` to `$8` in the order of
/// `inserted_columns!` (without `fanned_out`, always set), numbered in their order, and moves
/// `push_numbering` past the `$9` of them, in one statement.
pub(crate) const INSERT_NUMBERED_ARRAYS: &str = concat!(
    "WITH numbered AS (UPDATE push_numbering SET last_seq = GREATEST(last_seq, ",
    newest_stored!(),
    ") + $9::int8 RETURNING last_seq - $9::int8 AS base) \
     INSERT INTO push_events (seq, ",
    inserted_columns!(),
    ") SELECT numbered.base + v.n, v.id, v.tenant_id, v.connection_id, v.provider, v.kind, \
     v.event_type, v.data, v.created_at, TRUE FROM numbered, \
     UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::int8[]) WITH ORDINALITY \
     AS v (id, tenant_id, connection_id, provider, kind, event_type, data, created_at, n) \
     ORDER BY v.n"
);

/// SQLite: moves `push_numbering` past `$1` events about to be inserted; returns the number
/// before the first of them.
pub(crate) const MOVE_NUMBERING: &str = concat!(
    "UPDATE push_numbering SET last_seq = MAX(last_seq, ",
    newest_stored!(),
    ") + $1 RETURNING last_seq - $1"
);

/// SQLite: the start of an insert of numbered events; a `VALUES` list of `seq` and the
/// `inserted_columns!` follows.
pub(crate) const INSERT_NUMBERED: &str =
    concat!("INSERT INTO push_events (seq, ", inserted_columns!(), ") ");
