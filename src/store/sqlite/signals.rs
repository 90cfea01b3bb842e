//! Signal rows on SQLite.

use std::collections::HashSet;

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::time;
use crate::domain::{
    to_micros, ConnectionId, NewPushEvent, NewSignal, Signal, SignalId, TenantId, Timestamp,
};
use crate::store::shared::outbox::EventRow;
use crate::store::{PageRequest, SignalFilter, StoreError};

const COLUMNS: &str = "id, tenant_id, connection_id, provider, kind, occurred_at, received_at, \
     actor, title, url, external_id, dedupe_key";

/// SQLite caps bound parameters per statement; 13 columns × 500 rows stays well under it.
const ROWS_PER_STATEMENT: usize = 500;

pub(super) async fn insert(pool: &SqlitePool, signals: &[NewSignal]) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let inserted = insert_in(&mut tx, signals).await?;
    tx.commit().await?;
    Ok(inserted)
}

/// Stores signals on `conn` (inside the caller's transaction), skipping any whose
/// `(connection_id, dedupe_key)` exists; returns how many were new.
pub(super) async fn insert_in(
    conn: &mut SqliteConnection,
    signals: &[NewSignal],
) -> Result<u64, StoreError> {
    let now = crate::domain::now();
    let rows = signals
        .iter()
        .map(|s| SignalRow::encode(s, now))
        .collect::<Result<Vec<_>, _>>()?;
    let rows: Vec<&SignalRow> = rows.iter().collect();
    let new = insert_rows(conn, &rows).await?;
    Ok(new.len() as u64)
}

/// A signal's row encoded for its insert, with the `signal.created` event its insert adds:
/// encoding is the part of storing a signal that needs no turn at the database.
#[derive(Debug)]
pub(super) struct SignalRow {
    pub id: Uuid,
    tenant_id: Uuid,
    connection_id: Uuid,
    provider: String,
    kind: String,
    occurred_at: i64,
    received_at: i64,
    actor: Option<String>,
    title: Option<String>,
    url: Option<String>,
    external_id: Option<String>,
    dedupe_key: String,
    payload: String,
    event: EventRow,
}

impl SignalRow {
    /// `signal`'s row; its event says it was created at `now`.
    pub(super) fn encode(signal: &NewSignal, now: Timestamp) -> Result<Self, StoreError> {
        let actor = signal
            .actor
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::corrupt("actor", e))?;
        let payload = serde_json::to_string(&signal.payload)
            .map_err(|e| StoreError::corrupt("payload", e))?;
        Ok(Self {
            id: signal.id.0,
            tenant_id: signal.tenant_id.0,
            connection_id: signal.connection_id.0,
            provider: signal.provider.clone(),
            kind: signal.kind.clone(),
            occurred_at: to_micros(&signal.occurred_at),
            received_at: to_micros(&signal.received_at),
            actor,
            title: signal.title.clone(),
            url: signal.url.clone(),
            external_id: signal.external_id.clone(),
            dedupe_key: signal.dedupe_key.clone(),
            payload,
            event: EventRow::of(&NewPushEvent::signal_created(signal, now)),
        })
    }
}

/// Inserts `rows` on `conn` (inside the caller's transaction), skipping any whose
/// `(connection_id, dedupe_key)` exists, and with each new one its `signal.created` event;
/// returns the ids of the new ones.
pub(super) async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &[&SignalRow],
) -> Result<HashSet<Uuid>, StoreError> {
    let mut inserted = HashSet::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO signals ({COLUMNS}, payload) "));
        q.push_values(chunk, |mut b, s| {
            b.push_bind(s.id)
                .push_bind(s.tenant_id)
                .push_bind(s.connection_id)
                .push_bind(s.provider.as_str())
                .push_bind(s.kind.as_str())
                .push_bind(s.occurred_at)
                .push_bind(s.received_at)
                .push_bind(s.actor.as_deref())
                .push_bind(s.title.as_deref())
                .push_bind(s.url.as_deref())
                .push_bind(s.external_id.as_deref())
                .push_bind(s.dedupe_key.as_str())
                .push_bind(s.payload.as_str());
        });
        q.push(" ON CONFLICT (connection_id, dedupe_key) DO NOTHING RETURNING id");
        let new: HashSet<Uuid> = q
            .build_query_scalar()
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
        // Each new signal is reported to push endpoints, in this same transaction.
        let events: Vec<&EventRow> = chunk
            .iter()
            .filter(|s| new.contains(&s.id))
            .map(|s| &s.event)
            .collect();
        super::push::insert_event_rows(conn, &events).await?;
        inserted.extend(new);
    }
    Ok(inserted)
}

pub(super) async fn get(
    pool: &SqlitePool,
    tenant: TenantId,
    id: SignalId,
) -> Result<Option<Signal>, StoreError> {
    let sql = format!("SELECT {COLUMNS}, payload FROM signals WHERE tenant_id = ? AND id = ?");
    let row = sqlx::query(&sql)
        .bind(tenant.0)
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(|r| decode(r, true)).transpose()
}

pub(super) async fn list(
    pool: &SqlitePool,
    tenant: TenantId,
    filter: &SignalFilter,
    page: PageRequest,
) -> Result<Vec<Signal>, StoreError> {
    let payload = if filter.include_payload {
        ", payload"
    } else {
        ""
    };
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {COLUMNS}{payload} FROM signals WHERE tenant_id = "
    ));
    q.push_bind(tenant.0);
    if let Some(provider) = &filter.provider {
        q.push(" AND provider = ").push_bind(provider.clone());
    }
    if let Some(connection) = filter.connection_id {
        q.push(" AND connection_id = ").push_bind(connection.0);
    }
    if let Some(kind) = &filter.kind {
        q.push(" AND kind = ").push_bind(kind.clone());
    }
    if let Some(after) = &filter.occurred_after {
        q.push(" AND occurred_at >= ").push_bind(to_micros(after));
    }
    if let Some(before) = &filter.occurred_before {
        q.push(" AND occurred_at <= ").push_bind(to_micros(before));
    }
    if let Some(key) = page.after {
        // Written as a range on the leading index column plus a tie-break, which SQLite's
        // planner turns into an index range scan (a row-value comparison it may not).
        let at = to_micros(&key.at);
        q.push(" AND occurred_at <= ").push_bind(at);
        q.push(" AND (occurred_at < ").push_bind(at);
        q.push(" OR id < ").push_bind(key.id).push(")");
    }
    q.push(" ORDER BY occurred_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(page.fetch));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| decode(r, filter.include_payload))
        .collect()
}

fn decode(row: &SqliteRow, with_payload: bool) -> Result<Signal, StoreError> {
    let actor: Option<String> = row.try_get("actor")?;
    let payload = if with_payload {
        let text: String = row.try_get("payload")?;
        Some(serde_json::from_str(&text).map_err(|e| StoreError::corrupt("payload", e))?)
    } else {
        None
    };
    Ok(Signal {
        id: SignalId(row.try_get::<Uuid, _>("id")?),
        tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
        connection_id: ConnectionId(row.try_get::<Uuid, _>("connection_id")?),
        provider: row.try_get("provider")?,
        kind: row.try_get("kind")?,
        occurred_at: time("occurred_at", row.try_get("occurred_at")?)?,
        received_at: time("received_at", row.try_get("received_at")?)?,
        actor: actor
            .map(|a| serde_json::from_str(&a))
            .transpose()
            .map_err(|e| StoreError::corrupt("actor", e))?,
        title: row.try_get("title")?,
        url: row.try_get("url")?,
        external_id: row.try_get("external_id")?,
        dedupe_key: row.try_get("dedupe_key")?,
        payload,
    })
}
