//! Storing webhook deliveries on PostgreSQL by group commit (`store::shared::deliveries`,
//! `store::shared::group`). A few writers commit side by side, each group in one
//! `INSERT ... SELECT FROM UNNEST` statement: one round trip and one WAL flush for the group,
//! and one prepared statement whatever its size. Stored deliveries are announced to the other
//! instances once committed.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use super::announce::Announcer;
use crate::domain::{NewWebhookEvent, Timestamp};
use crate::store::shared::deliveries::{Deliveries, Stored};
use crate::store::shared::group::GroupCommit;
use crate::store::StoreError;

/// The most deliveries one statement holds.
const MAX_GROUP: usize = 256;
/// The most groups committing at once: enough to keep the WAL busy while the next group
/// gathers, few enough to leave the pool to the inbox worker and the API.
const MAX_WRITERS: u32 = 4;

/// Starts the writers over `pool`, half as many as the pool has connections (at least one, at
/// most [`MAX_WRITERS`]); they end when the last handle is dropped.
pub(super) fn start(pool: PgPool, announcer: Announcer, max_connections: u32) -> Deliveries {
    let writers = (max_connections / 2).clamp(1, MAX_WRITERS);
    Deliveries::start(
        Writer { pool, announcer },
        usize::try_from(writers).unwrap_or(1),
        MAX_GROUP,
    )
}

struct Writer {
    pool: PgPool,
    announcer: Announcer,
}

/// What makes two deliveries the same.
type Key<'a> = (Uuid, &'a str, &'a str);

fn key(new: &NewWebhookEvent) -> Key<'_> {
    (
        new.tenant_id.0,
        new.provider.as_str(),
        new.dedupe_key.as_str(),
    )
}

#[async_trait]
impl GroupCommit for Writer {
    type Item = NewWebhookEvent;
    type Outcome = Stored;

    async fn commit_group(&self, group: &[&NewWebhookEvent]) -> Result<Vec<Stored>, StoreError> {
        // Rows go in key order: two groups committing side by side (here or in another
        // instance) that share keys wait for each other in the same order, never in a cycle.
        let mut sorted = group.to_vec();
        sorted.sort_by(|a, b| key(a).cmp(&key(b)));
        let inserted: HashSet<Uuid> = insert_all(&self.pool, &sorted).await?.into_iter().collect();
        let mut outcomes: Vec<Option<Stored>> = group
            .iter()
            .map(|new| inserted.contains(&new.id).then_some((new.id, false)))
            .collect();
        let duplicates: Vec<&NewWebhookEvent> = group
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_none())
            .map(|(new, _)| *new)
            .collect();
        if duplicates.is_empty() {
            return Ok(outcomes.into_iter().flatten().collect());
        }
        // The statement has committed, and a conflicting row it skipped had committed before
        // (an insert waits for the transaction holding the key): each is there to be read.
        let stored = stored_ids(&self.pool, &duplicates).await?;
        for (new, outcome) in group.iter().zip(outcomes.iter_mut()) {
            if outcome.is_none() {
                *outcome = match stored.get(&key(new)) {
                    Some(id) => Some((*id, true)),
                    // Purged since: stored again, alone.
                    None => Some(self.commit_one(new).await?),
                };
            }
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    async fn commit_one(&self, new: &NewWebhookEvent) -> Result<Stored, StoreError> {
        let inserted = insert_all(&self.pool, &[new]).await?;
        if inserted.contains(&new.id) {
            return Ok((new.id, false));
        }
        let existing: Uuid = sqlx::query_scalar(
            "SELECT id FROM webhook_events WHERE tenant_id = $1 AND provider = $2 AND dedupe_key = $3",
        )
        .bind(new.tenant_id.0)
        .bind(&new.provider)
        .bind(&new.dedupe_key)
        .fetch_one(&self.pool)
        .await?;
        Ok((existing, true))
    }

    fn committed(&self, outcomes: &[Stored]) {
        // Committed: worker instances elsewhere hear of it (a duplicate is no news).
        if outcomes.iter().any(|(_, duplicate)| !duplicate) {
            self.announcer.news();
        }
    }
}

/// Inserts `rows` in one statement (its own transaction), skipping any whose key is stored or
/// comes earlier in `rows`; returns the ids of the rows stored.
async fn insert_all(pool: &PgPool, rows: &[&NewWebhookEvent]) -> Result<Vec<Uuid>, StoreError> {
    let ids: Vec<Uuid> = rows.iter().map(|n| n.id).collect();
    let tenants: Vec<Uuid> = rows.iter().map(|n| n.tenant_id.0).collect();
    let providers: Vec<&str> = rows.iter().map(|n| n.provider.as_str()).collect();
    let connections: Vec<Option<Uuid>> =
        rows.iter().map(|n| n.connection_id.map(|c| c.0)).collect();
    let keys: Vec<&str> = rows.iter().map(|n| n.dedupe_key.as_str()).collect();
    let types: Vec<Option<&str>> = rows.iter().map(|n| n.event_type.as_deref()).collect();
    let headers: Vec<Json<&serde_json::Map<String, serde_json::Value>>> =
        rows.iter().map(|n| Json(&n.headers)).collect();
    let bodies: Vec<&[u8]> = rows.iter().map(|n| n.body.as_slice()).collect();
    let received: Vec<Timestamp> = rows.iter().map(|n| n.received_at).collect();
    let stored = sqlx::query_scalar(
        "INSERT INTO webhook_events (id, tenant_id, provider, connection_id, dedupe_key, \
         event_type, headers, body, status, next_attempt_at, received_at) \
         SELECT id, tenant_id, provider, connection_id, dedupe_key, event_type, headers, body, \
         'pending', received_at, received_at \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], \
         $7::jsonb[], $8::bytea[], $9::timestamptz[]) \
         AS d (id, tenant_id, provider, connection_id, dedupe_key, event_type, headers, body, \
         received_at) \
         ON CONFLICT (tenant_id, provider, dedupe_key) DO NOTHING RETURNING id",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&providers)
    .bind(&connections)
    .bind(&keys)
    .bind(&types)
    .bind(&headers)
    .bind(&bodies)
    .bind(&received)
    .fetch_all(pool)
    .await?;
    Ok(stored)
}

/// The ids of the stored events with the keys of `deliveries`.
async fn stored_ids<'a>(
    pool: &PgPool,
    deliveries: &[&'a NewWebhookEvent],
) -> Result<HashMap<Key<'a>, Uuid>, StoreError> {
    let tenants: Vec<Uuid> = deliveries.iter().map(|n| n.tenant_id.0).collect();
    let providers: Vec<&str> = deliveries.iter().map(|n| n.provider.as_str()).collect();
    let keys: Vec<&str> = deliveries.iter().map(|n| n.dedupe_key.as_str()).collect();
    let rows: Vec<(Uuid, Uuid, String, String)> = sqlx::query_as(
        "SELECT e.id, e.tenant_id, e.provider, e.dedupe_key FROM webhook_events AS e \
         JOIN UNNEST($1::uuid[], $2::text[], $3::text[]) AS k (tenant_id, provider, dedupe_key) \
         ON e.tenant_id = k.tenant_id AND e.provider = k.provider AND e.dedupe_key = k.dedupe_key",
    )
    .bind(&tenants)
    .bind(&providers)
    .bind(&keys)
    .fetch_all(pool)
    .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for (id, tenant, provider, dedupe_key) in rows {
        // Back to the keys borrowed from the deliveries, so the map outlives these rows.
        if let Some(new) = deliveries
            .iter()
            .find(|n| key(n) == (tenant, &*provider, &*dedupe_key))
        {
            stored.insert(key(new), id);
        }
    }
    Ok(stored)
}
