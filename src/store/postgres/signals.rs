//! Signal rows on PostgreSQL.

use std::collections::HashSet;

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::domain::{Actor, ConnectionId, NewPushEvent, NewSignal, Signal, SignalId, TenantId};
use crate::store::{PageRequest, SignalFilter, StoreError};

const COLUMNS: &str = "id, tenant_id, connection_id, provider, kind, occurred_at, received_at, \
     actor, title, url, external_id, dedupe_key";

/// PostgreSQL allows 65,535 bound parameters per statement; a signal takes 13, and
/// 13 × 1,000 stays well under it.
const ROWS_PER_STATEMENT: usize = 1_000;

pub(super) async fn insert(pool: &PgPool, signals: &[NewSignal]) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let inserted = insert_in(&mut tx, signals).await?;
    tx.commit().await?;
    Ok(inserted)
}

/// Stores signals on `conn` (inside the caller's transaction), skipping any whose
/// `(connection_id, dedupe_key)` exists, then writes a `signal.created` push event for each
/// new one, in the signals' order; returns how many were new. The events take the outbox lock
/// until the caller's transaction ends (`push::insert_events_in`), so this is the last write
/// before its commit. The signals go in first and apart: a signal that meets one another
/// transaction is storing waits for that transaction without holding the lock, which that
/// transaction may be waiting for.
pub(super) async fn insert_in(
    conn: &mut PgConnection,
    signals: &[NewSignal],
) -> Result<u64, StoreError> {
    let mut new: HashSet<Uuid> = HashSet::new();
    for chunk in signals.chunks(ROWS_PER_STATEMENT) {
        let mut q =
            QueryBuilder::<Postgres>::new(format!("INSERT INTO signals ({COLUMNS}, payload) "));
        q.push_values(chunk, |mut b, s| {
            b.push_bind(s.id.0)
                .push_bind(s.tenant_id.0)
                .push_bind(s.connection_id.0)
                .push_bind(s.provider.clone())
                .push_bind(s.kind.clone())
                .push_bind(s.occurred_at)
                .push_bind(s.received_at)
                .push_bind(s.actor.clone().map(Json))
                .push_bind(s.title.clone())
                .push_bind(s.url.clone())
                .push_bind(s.external_id.clone())
                .push_bind(s.dedupe_key.clone())
                .push_bind(Json(s.payload.clone()));
        });
        q.push(" ON CONFLICT (connection_id, dedupe_key) DO NOTHING RETURNING id");
        let ids: Vec<Uuid> = q.build_query_scalar().fetch_all(&mut *conn).await?;
        new.extend(ids);
    }
    let now = crate::domain::now();
    let events: Vec<NewPushEvent> = signals
        .iter()
        .filter(|s| new.contains(&s.id.0))
        .map(|s| NewPushEvent::signal_created(s, now))
        .collect();
    super::push::insert_events_in(conn, &events).await?;
    Ok(u64::try_from(new.len()).unwrap_or(u64::MAX))
}

pub(super) async fn get(
    pool: &PgPool,
    tenant: TenantId,
    id: SignalId,
) -> Result<Option<Signal>, StoreError> {
    let sql = format!("SELECT {COLUMNS}, payload FROM signals WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(&sql)
        .bind(tenant.0)
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(|r| decode(r, true)).transpose()
}

pub(super) async fn list(
    pool: &PgPool,
    tenant: TenantId,
    filter: &SignalFilter,
    page: PageRequest,
) -> Result<Vec<Signal>, StoreError> {
    let payload = if filter.include_payload {
        ", payload"
    } else {
        ""
    };
    let mut q = QueryBuilder::<Postgres>::new(format!(
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
    if let Some(after) = filter.occurred_after {
        q.push(" AND occurred_at >= ").push_bind(after);
    }
    if let Some(before) = filter.occurred_before {
        q.push(" AND occurred_at <= ").push_bind(before);
    }
    if let Some(key) = page.after {
        q.push(" AND (occurred_at, id) < (")
            .push_bind(key.at)
            .push(", ")
            .push_bind(key.id)
            .push(")");
    }
    q.push(" ORDER BY occurred_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(page.fetch));
    let rows = q.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| decode(r, filter.include_payload))
        .collect()
}

fn decode(row: &PgRow, with_payload: bool) -> Result<Signal, StoreError> {
    let actor: Option<Json<Actor>> = row.try_get("actor")?;
    let payload = if with_payload {
        let Json(value): Json<serde_json::Value> = row.try_get("payload")?;
        Some(value)
    } else {
        None
    };
    Ok(Signal {
        id: SignalId(row.try_get::<Uuid, _>("id")?),
        tenant_id: TenantId(row.try_get::<Uuid, _>("tenant_id")?),
        connection_id: ConnectionId(row.try_get::<Uuid, _>("connection_id")?),
        provider: row.try_get("provider")?,
        kind: row.try_get("kind")?,
        occurred_at: row.try_get("occurred_at")?,
        received_at: row.try_get("received_at")?,
        actor: actor.map(|Json(a)| a),
        title: row.try_get("title")?,
        url: row.try_get("url")?,
        external_id: row.try_get("external_id")?,
        dedupe_key: row.try_get("dedupe_key")?,
        payload,
    })
}
