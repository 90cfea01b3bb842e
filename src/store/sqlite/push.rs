//! Push delivery on SQLite: the shared statements (`src/store/shared/push.rs`). Writers are
//! serialized by SQLite itself, so events are numbered as they are inserted (the highest `seq`
//! inside the inserting transaction is the last one committed) and need no sequencer; the
//! fan-out, claims and outcomes take this process's write turn.

crate::store::shared::push::push_store!(
    crate::store::SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    None,
    // Numbered at insert.
    true,
    crate::store::shared::push::claim_sql(crate::store::shared::push::HEADS_BY_WINDOW, ""),
    // One process: its dispatchers are woken in-process (the writer holds SQLite's lock until
    // it commits, so a dispatcher woken early waits for the events).
    None,
    // The signal id inside an event's JSON data.
    "json_extract(data, '$.id')"
);
