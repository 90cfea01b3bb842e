//! Push delivery on SQLite: the shared statements (`src/store/shared/push.rs`). Writers are
//! serialized by SQLite itself, so the sequencer needs no lock of its own.

crate::store::shared::push::push_store!(
    crate::store::SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    None,
    "",
    // One process: its dispatchers are woken in-process (the writer holds SQLite's lock until
    // it commits, so a sequencer woken early waits for the events).
    None,
    // The signal id inside an event's JSON data.
    "json_extract(data, '$.id')"
);
