//! Push delivery on PostgreSQL: the shared statements (`src/store/shared/push.rs`), with the
//! sequencer serialized across instances by a transaction-scoped advisory lock and claims
//! skipping rows another instance holds.

crate::store::shared::push::push_store!(
    crate::store::PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    // The outbox sequencer's advisory lock; the key is "push seq" in ASCII.
    Some("SELECT pg_advisory_xact_lock(8103509995581302129)"),
    // Sequence values are handed out at insert, not at commit: numbered after they commit.
    false,
    // Claims skip-scan the line heads and skip rows another instance holds.
    crate::store::shared::push::claim_sql(
        crate::store::shared::push::HEADS_BY_SKIP_SCAN,
        "FOR UPDATE OF d SKIP LOCKED"
    ),
    // Sent when the events' transaction commits, to every instance listening.
    Some("SELECT pg_notify('poblysh_push', '')"),
    // The signal id inside an event's JSON data.
    "(data::jsonb ->> 'id')"
);
