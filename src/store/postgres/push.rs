//! Push delivery on PostgreSQL: the shared statements (`src/store/shared/push.rs`), with the
//! numbering of events serialized across instances by a transaction-scoped advisory lock held
//! to commit, fan-out by another, and claims skipping rows another instance holds.

crate::store::shared::push::push_store!(
    crate::store::PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    // The outbox lock, taken by a transaction just before it inserts events and held to its
    // commit, so numbers follow commit order; the key is "push seq" in ASCII, the key of the
    // sequencer of earlier releases, so they and this release number events one at a time.
    Some(OUTBOX_LOCK),
    // One fan-out at a time across instances; the key is "push fan" in ASCII.
    Some("SELECT pg_advisory_xact_lock(8103509995580449134)"),
    // Many writers.
    false,
    // Claims skip-scan the line heads and skip rows another instance holds.
    crate::store::shared::push::claim_sql(
        crate::store::shared::push::HEADS_BY_SKIP_SCAN,
        "FOR UPDATE OF d SKIP LOCKED"
    ),
    // Announced to every instance once the events' transaction has committed, outside it
    // (`Dialect::push_events_committed`): a `NOTIFY` inside would serialize those commits.
    false,
    // The signal id inside an event's JSON data.
    "(data::jsonb ->> 'id')"
);

use std::collections::HashSet;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{EventId, PushEvent};
use crate::store::shared::outbox::{self, EventRow};
use crate::store::shared::push::{
    FinishedDelivery, EVENT_COLUMNS, FINISHED_COLUMNS, FINISH_SET, FINISH_WHERE,
};
use crate::store::{AttemptRecord, StoreError};

/// Inserts `events` numbered after the highest `seq` given, in their order, and moves
/// `push_numbering` to the last, in one statement ([`outbox::INSERT_NUMBERED_ARRAYS`], one
/// prepared statement whatever their number): the caller holds the outbox lock until its
/// commit, so this runs while no other transaction can number events, and a statement prepared
/// once keeps that time short.
async fn insert_numbered(conn: &mut PgConnection, events: &[&EventRow]) -> Result<(), StoreError> {
    let count = i64::try_from(events.len()).map_err(|e| StoreError::corrupt("events", e))?;
    sqlx::query(outbox::INSERT_NUMBERED_ARRAYS)
        .bind(events.iter().map(|e| e.id).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.tenant_id).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.connection_id).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.provider.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.kind.as_deref()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.event_type).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.created_at).collect::<Vec<_>>())
        .bind(count)
        .execute(conn)
        .await?;
    Ok(())
}

/// The outbox lock (see the invocation above). Every writer waits while a transaction holds
/// it, so the transaction also ends its session if it sits idle for 30 s before its commit (a
/// client gone without closing its connection would otherwise hold the lock until the server
/// notices, which can take hours).
const OUTBOX_LOCK: &str = "SELECT pg_advisory_xact_lock(8103509995581302129), \
    set_config('idle_in_transaction_session_timeout', '30s', true)";

/// Numbers the events an instance of an earlier release left for a sequencer, when there are
/// any: under the outbox lock, held to the caller's commit, those it queued (releases from
/// `0011_push_unnumbered` until events were numbered at insert), then those it inserted with
/// `seq` NULL (releases before `0011_push_unnumbered`), each after every `seq` given before
/// (both sets are of rows committed before their statement); then keeps the outbox's floor in
/// place for such an instance. In a transaction of its own, so the lock is held for the
/// numbering alone. Without such an instance beside this release, one look at two empty
/// places: no transaction, no lock.
async fn number_earlier_events(pool: &PgPool) -> Result<(), StoreError> {
    let waiting: bool = sqlx::query_scalar(outbox::EARLIER_RELEASE_WAITING)
        .fetch_one(pool)
        .await?;
    if !waiting {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let conn: &mut PgConnection = &mut tx;
    sqlx::query(OUTBOX_LOCK).execute(&mut *conn).await?;
    let queued: Vec<i64> = sqlx::query_scalar(outbox::TAKE_QUEUED)
        .fetch_all(&mut *conn)
        .await?;
    if !queued.is_empty() {
        sqlx::query(outbox::SEQUENCE_QUEUED)
            .bind(&queued)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(outbox::SEQUENCE).execute(&mut *conn).await?;
    sqlx::query(outbox::KEEP_NUMBERING)
        .execute(&mut *conn)
        .await?;
    sqlx::query(outbox::KEEP_FLOOR).execute(&mut *conn).await?;
    tx.commit().await?;
    Ok(())
}

/// The events of `ids`, numbered, in one statement whatever their number.
async fn events_by_id(pool: &PgPool, ids: &[EventId]) -> Result<Vec<PushEvent>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let sql = format!("SELECT {EVENT_COLUMNS} FROM push_events WHERE id = ANY($1) AND seq > 0");
    let rows = sqlx::query(&sql).bind(&ids).fetch_all(pool).await?;
    rows.iter().map(push_rows::event).collect()
}

/// Records `records` on their deliveries in one statement (one prepared statement whatever
/// their number): the ids of those still leased to their attempt, and so written.
async fn finish_deliveries(
    conn: &mut PgConnection,
    records: &[AttemptRecord],
) -> Result<HashSet<Uuid>, StoreError> {
    let rows: Vec<FinishedDelivery> = records.iter().map(FinishedDelivery::of).collect();
    let sql = format!(
        "UPDATE push_deliveries {FINISH_SET} \
         FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::int8[], \
         $7::text[], $8::int8[], $9::int8[], $10::uuid[]) AS r ({FINISHED_COLUMNS}) \
         {FINISH_WHERE} RETURNING push_deliveries.id"
    );
    let finished: Vec<Uuid> = sqlx::query_scalar(&sql)
        .bind(rows.iter().map(|r| r.delivery).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.next_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.status_code).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.error).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.latency_ms).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.body).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.done_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.owner).collect::<Vec<_>>())
        .fetch_all(conn)
        .await?;
    Ok(finished.into_iter().collect())
}
