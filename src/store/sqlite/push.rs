//! Push delivery on SQLite: the shared statements (`src/store/shared/push.rs`). Writers are
//! serialized by SQLite itself, so the sequencer needs no lock of its own.

crate::store::shared::push::push_store!(
    crate::store::SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    None,
    ""
);
