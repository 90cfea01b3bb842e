//! Push delivery's statements, written once for both databases. The push tables keep times as
//! microseconds and JSON as text on both, and both speak `$n` placeholders, `RETURNING`,
//! `UPDATE ... FROM` and window functions, so the same SQL runs on each. [`push_store!`]
//! expands the [`PushStore`](crate::store::PushStore) implementation for a store type with
//! its concrete sqlx types; the dialect parts are what serializes the numbering of events as
//! they are inserted (an advisory lock held to commit on PostgreSQL; SQLite's one writer), the
//! lock one fan-out at a time holds, `SKIP LOCKED` when claiming, and the write turn and `BEGIN
//! IMMEDIATE` SQLite's writers take ([`Dialect`](super::Dialect)).

/// Columns of an endpoint row, in the order [`push_store!`] decodes them.
pub(crate) const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, event_types, \
    providers, kinds, include_payload, status, disabled_reason, failing_since, last_success_at, \
    last_failure_at, last_failure_status, last_failure_error, created_at, updated_at";

/// Columns of a delivery row.
pub(crate) const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, tenant_id, \
    connection_id, seq, status, attempts, next_attempt_at, last_status_code, last_error, \
    last_latency_ms, last_response_body, created_at, updated_at, completed_at";

/// Columns of an event row.
pub(crate) const EVENT_COLUMNS: &str =
    "id, seq, tenant_id, connection_id, provider, kind, event_type, data, created_at";

/// The line heads (the first pending delivery of each (endpoint, connection) line) found in
/// one ordered pass over the pending deliveries, materialized so no plan evaluates it per row.
/// It reads the whole backlog; SQLite claims with it, where writers are serialized and a claim
/// runs beside no other.
pub(crate) const HEADS_BY_WINDOW: &str = "heads AS MATERIALIZED (SELECT id FROM (SELECT id, \
    ROW_NUMBER() OVER (PARTITION BY endpoint_id, connection_id ORDER BY seq, id) AS place \
    FROM push_deliveries WHERE status = 'pending') AS line WHERE line.place = 1)";

/// The same line heads by a skip scan of the index `push_deliveries_heads`: the first pending
/// delivery, then, line after line, the first of the next line. A claim reads one index entry
/// per line however long the backlog behind each head is; with a backlog of tens of thousands
/// the pass of [`HEADS_BY_WINDOW`] made each claim on PostgreSQL take a large share of a second.
pub(crate) const HEADS_BY_SKIP_SCAN: &str = "RECURSIVE heads AS ((SELECT endpoint_id, \
    connection_id, id FROM push_deliveries WHERE status = 'pending' \
    ORDER BY endpoint_id, connection_id, seq, id LIMIT 1) \
    UNION ALL SELECT next.endpoint_id, next.connection_id, next.id FROM heads h \
    CROSS JOIN LATERAL (SELECT d.endpoint_id, d.connection_id, d.id FROM push_deliveries d \
      WHERE d.status = 'pending' \
      AND (d.endpoint_id, d.connection_id) > (h.endpoint_id, h.connection_id) \
      ORDER BY d.endpoint_id, d.connection_id, d.seq, d.id LIMIT 1) AS next)";

/// Leases the due deliveries heading their line: `heads` is the dialect's way of finding the
/// heads ([`HEADS_BY_WINDOW`], [`HEADS_BY_SKIP_SCAN`]), `lock` its row locking clause.
pub(crate) fn claim_sql(heads: &str, lock: &str) -> String {
    format!(
        "WITH {heads} \
         UPDATE push_deliveries SET lease_owner = $1, lease_expires_at = $2, \
         attempts = attempts + 1, updated_at = $3 \
         WHERE id IN (SELECT d.id FROM heads \
           JOIN push_deliveries d ON d.id = heads.id \
           JOIN push_endpoints e ON e.id = d.endpoint_id \
           WHERE d.status = 'pending' AND e.status = 'active' AND d.next_attempt_at <= $3 \
           AND (d.lease_expires_at IS NULL OR d.lease_expires_at <= $3) \
           ORDER BY d.next_attempt_at, d.seq LIMIT $4 {lock}) \
         RETURNING {DELIVERY_COLUMNS}"
    )
}

/// What recording an attempt sets on its delivery, from the attempts named `r` (columns
/// [`FINISHED_COLUMNS`]); the dialects differ only in how they give `r` (`UNNEST` of arrays,
/// `VALUES`), between this and [`FINISH_WHERE`].
pub(crate) const FINISH_SET: &str = "SET status = r.to_status, next_attempt_at = r.next_at, \
    lease_owner = NULL, lease_expires_at = NULL, last_status_code = r.status_code, \
    last_error = r.error, last_latency_ms = r.latency_ms, last_response_body = r.body, \
    updated_at = r.recorded_at, completed_at = r.done_at";

/// Which deliveries [`FINISH_SET`] writes: those still leased to the attempt and pending.
pub(crate) const FINISH_WHERE: &str = "WHERE push_deliveries.id = r.delivery \
    AND push_deliveries.lease_owner = r.owner AND push_deliveries.status = 'pending'";

/// The columns of the attempts [`FINISH_SET`] reads, in order.
pub(crate) const FINISHED_COLUMNS: &str =
    "delivery, to_status, next_at, status_code, error, latency_ms, body, recorded_at, done_at, owner";

/// One attempt's values for [`FINISH_SET`], in the order of [`FINISHED_COLUMNS`].
pub(crate) struct FinishedDelivery<'a> {
    pub delivery: uuid::Uuid,
    pub status: &'static str,
    pub next_at: i64,
    pub status_code: Option<i64>,
    pub error: Option<&'a str>,
    pub latency_ms: i64,
    pub body: Option<&'a str>,
    pub recorded_at: i64,
    pub done_at: Option<i64>,
    pub owner: uuid::Uuid,
}

impl<'a> FinishedDelivery<'a> {
    /// What `r` leaves on its delivery: succeeded or failed for good (completed now), or
    /// pending until its next attempt.
    pub(crate) fn of(r: &'a crate::store::AttemptRecord) -> Self {
        use crate::domain::{to_micros, DeliveryStatus};
        use crate::store::NextStep;
        let now = to_micros(&r.now);
        let (status, next_at, done_at) = match r.next {
            NextStep::Succeeded => (DeliveryStatus::Succeeded, now, Some(now)),
            NextStep::RetryAt(at) => (DeliveryStatus::Pending, to_micros(&at), None),
            NextStep::GiveUp => (DeliveryStatus::Failed, now, Some(now)),
        };
        Self {
            delivery: r.delivery.0,
            status: status.as_str(),
            next_at,
            status_code: r.status_code.map(i64::from),
            error: r.error.as_deref(),
            latency_ms: i64::try_from(r.latency_ms).unwrap_or(i64::MAX),
            body: r.response_body.as_deref(),
            recorded_at: now,
            done_at,
            owner: r.owner,
        }
    }
}

/// A success: the endpoint is no longer failing.
pub(crate) const ENDPOINT_HEALTHY: &str =
    "UPDATE push_endpoints SET last_success_at = $1, failing_since = NULL WHERE id = $2";

/// A failure: remembered, and the endpoint disabled when told to or when it has been failing
/// since the cutoff (`$5`) or earlier.
pub(crate) const ENDPOINT_FAILING: &str = "UPDATE push_endpoints SET last_failure_at = $1, \
    last_failure_status = $2, last_failure_error = $3, \
    failing_since = COALESCE(failing_since, $1), \
    status = CASE WHEN $4 IS NOT NULL OR COALESCE(failing_since, $1) <= $5 \
      THEN 'disabled' ELSE status END, \
    disabled_reason = CASE WHEN $4 IS NOT NULL THEN $4 \
      WHEN COALESCE(failing_since, $1) <= $5 \
      THEN 'every attempt failed for 5 days' ELSE disabled_reason END, \
    updated_at = $1 WHERE id = $6";

/// How far from a signal's `received_at` its `signal.created` event is looked for.
const EVENT_WINDOW_MICROS: i64 = 10 * 60 * 1_000_000;

/// Where to look for the event of a signal received at `received` (microseconds), in order:
/// the moments after it (the event is written after the signal is received, usually within
/// milliseconds), then those before it (a clock stepped back between the two).
pub(crate) fn event_windows(received: i64) -> [(i64, i64); 2] {
    [
        (received, received.saturating_add(EVENT_WINDOW_MICROS)),
        (
            received.saturating_sub(EVENT_WINDOW_MICROS),
            received.saturating_sub(1),
        ),
    ]
}

/// Which of `records` (those whose outcome was `kept`) change their endpoint's health, in
/// order. A success followed, later in the batch, by another success of the same endpoint with
/// no failure between changes nothing the later one does not, so only the last of such a run
/// is written: a batch of successes to one endpoint writes its row once, not once per delivery.
pub(crate) fn health_writes(records: &[crate::store::AttemptRecord], kept: &[bool]) -> Vec<usize> {
    use crate::store::HealthChange;
    let mut later_healthy = std::collections::HashMap::new();
    let mut writes = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate().rev() {
        if !kept.get(i).copied().unwrap_or(false) {
            continue;
        }
        let healthy = r.health == HealthChange::Healthy;
        let covered = healthy && later_healthy.get(&r.endpoint) == Some(&true);
        later_healthy.insert(r.endpoint, healthy);
        if !covered {
            writes.push(i);
        }
    }
    writes.reverse();
    writes
}

/// Expands `impl PushStore for $store` over sqlx database `$db` and its row type `$row`.
/// `$outbox_lock` is a statement a transaction runs just before it inserts events, taking a
/// lock it holds to its commit so that no other transaction numbers events meanwhile
/// (PostgreSQL), or `None` where writers are serialized anyway (SQLite); `$fan_out_lock` a
/// statement taking the lock one fan-out at a time holds, or `None`; `$one_writer` whether the
/// database has one writer at a time (SQLite: a dispatcher step is one transaction of it, and
/// every event is numbered as it is inserted) rather than many (PostgreSQL: the outcomes,
/// fan-out and claim of a step run apart, and an instance of an earlier release may leave
/// events for a sequencer); `$claim` the statement that claims deliveries ([`claim_sql`]);
/// `$wake_at_insert` whether inserting events wakes this process's dispatchers and streams at
/// once (SQLite, whose readers then wait for the writer's lock) rather than the store
/// announcing them to every instance once the caller's transaction has committed
/// ([`Dialect::push_events_committed`](super::Dialect::push_events_committed), PostgreSQL);
/// `$data_id` the expression reading the `id` member of an event's JSON `data`. The invoking
/// module supplies the statements whose shape differs by dialect: `events_by_id(pool, ids)`,
/// `finish_deliveries(conn, records)` (the ids of the deliveries written, per
/// [`FINISH_SET`] and [`FINISH_WHERE`]), `insert_numbered(conn, rows)` (inserts events numbered
/// after the highest number given, see
/// [`INSERT_NUMBERED_ARRAYS`](super::outbox::INSERT_NUMBERED_ARRAYS)) and
/// `number_earlier_events(pool)` (numbers, in a transaction of its own, the events an instance
/// of an earlier release left for a sequencer; run only where there are many writers).
macro_rules! push_store {
    ($store:ty, $db:ty, $row:ty, $outbox_lock:expr, $fan_out_lock:expr, $one_writer:expr, $claim:expr, $wake_at_insert:expr, $data_id:expr) => {
        $crate::store::shared::push_rows::push_rows!($row);

        /// Writes events into the outbox inside the caller's transaction, numbered as they are
        /// inserted. On PostgreSQL this takes the outbox lock, held until the caller's
        /// transaction ends: insert events last, just before the commit. Each is marked
        /// `fanned_out`: this release fans out by watermark, and an instance of the previous
        /// release running beside it (which fans out what is not marked) leaves them alone.
        pub(super) async fn insert_events_in(
            conn: &mut <$db as sqlx::Database>::Connection,
            events: &[$crate::domain::NewPushEvent],
        ) -> Result<(), $crate::store::StoreError> {
            let rows: Vec<$crate::store::shared::outbox::EventRow> =
                events.iter().map($crate::store::shared::outbox::EventRow::of).collect();
            let rows: Vec<&$crate::store::shared::outbox::EventRow> = rows.iter().collect();
            insert_event_rows(conn, &rows).await
        }

        /// [`insert_events_in`] for rows encoded beforehand.
        pub(super) async fn insert_event_rows(
            conn: &mut <$db as sqlx::Database>::Connection,
            events: &[&$crate::store::shared::outbox::EventRow],
        ) -> Result<(), $crate::store::StoreError> {
            if events.is_empty() {
                return Ok(());
            }
            let lock: Option<&str> = $outbox_lock;
            if let Some(lock) = lock {
                sqlx::query(lock).execute(&mut *conn).await?;
            }
            insert_numbered(&mut *conn, events).await?;
            let wake_at_insert: bool = $wake_at_insert;
            if wake_at_insert {
                $crate::store::wake::push_news();
            }
            Ok(())
        }

        mod push_impl {
            use async_trait::async_trait;
            use sqlx::Row;
            use uuid::Uuid;

            use super::push_rows::{delivery, encode_list, endpoint, event};
            use $crate::domain::{
                to_micros, Delivery, DeliveryId, Endpoint, EndpointId,
                EndpointPatch, EndpointSecrets, EventId, NewEndpoint, PushEvent, TenantId,
                Timestamp,
            };
            use $crate::store::shared::outbox::*;
            use $crate::store::shared::push::*;
            use $crate::store::shared::Dialect;
            use $crate::store::shared::replay::{replay_picks, replay_query, REPLAY_PAGE};
            use $crate::store::{
                AttemptRecord, ClaimRequest, DispatchStep, HealthChange, PageRequest, PushStore, ReplayFrom, StoreError,
            };

            #[async_trait]
            impl PushStore for $store {
                async fn insert_endpoint(&self, new: &NewEndpoint) -> Result<Endpoint, StoreError> {
                    let at = to_micros(&new.created_at);
                    let sql = format!(
                        "INSERT INTO push_endpoints (id, tenant_id, url, description, event_types, \
                         providers, kinds, include_payload, secret_sealed, status, created_at, \
                         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $10) \
                         RETURNING {ENDPOINT_COLUMNS}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(new.id.0)
                        .bind(new.tenant_id.0)
                        .bind(&new.url)
                        .bind(&new.description)
                        .bind(encode_list(&new.filter.event_types))
                        .bind(encode_list(&new.filter.providers))
                        .bind(encode_list(&new.filter.kinds))
                        .bind(new.include_payload)
                        .bind(&new.secret_sealed)
                        .bind(at)
                        .fetch_one(&self.pool)
                        .await?;
                    endpoint(&row)
                }

                async fn get_endpoint(
                    &self,
                    scope: TenantId,
                    id: EndpointId,
                ) -> Result<Option<Endpoint>, StoreError> {
                    let sql = format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM push_endpoints WHERE tenant_id = $1 AND id = $2"
                    );
                    let row = sqlx::query(&sql).bind(scope.0).bind(id.0).fetch_optional(&self.pool).await?;
                    row.as_ref().map(endpoint).transpose()
                }

                async fn list_endpoints(
                    &self,
                    scope: TenantId,
                    page: PageRequest,
                ) -> Result<Vec<Endpoint>, StoreError> {
                    let (at, id) = match page.after {
                        Some(k) => (to_micros(&k.at), k.id),
                        None => (i64::MIN, Uuid::nil()),
                    };
                    let sql = format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM push_endpoints WHERE tenant_id = $1 \
                         AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
                         ORDER BY created_at, id LIMIT $4"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(scope.0)
                        .bind(at)
                        .bind(id)
                        .bind(i64::from(page.fetch))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(endpoint).collect()
                }

                async fn update_endpoint(
                    &self,
                    scope: TenantId,
                    id: EndpointId,
                    patch: &EndpointPatch,
                    now: Timestamp,
                ) -> Result<Option<Endpoint>, StoreError> {
                    let mut tx = self.pool.begin().await?;
                    let sql = format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM push_endpoints WHERE tenant_id = $1 AND id = $2"
                    );
                    let Some(row) = sqlx::query(&sql).bind(scope.0).bind(id.0).fetch_optional(&mut *tx).await? else {
                        return Ok(None);
                    };
                    let mut current = endpoint(&row)?;
                    if let Some(url) = &patch.url {
                        current.url = url.clone();
                    }
                    if let Some(description) = &patch.description {
                        current.description = description.clone();
                    }
                    if let Some(filter) = &patch.filter {
                        current.filter = filter.clone();
                    }
                    if let Some(include) = patch.include_payload {
                        current.include_payload = include;
                    }
                    let enable = patch.status == Some($crate::domain::EndpointStatus::Active);
                    if let Some(status) = patch.status {
                        current.status = status;
                    }
                    let sql = format!(
                        "UPDATE push_endpoints SET url = $1, description = $2, event_types = $3, \
                         providers = $4, kinds = $5, include_payload = $6, status = $7, \
                         disabled_reason = CASE WHEN $8 THEN NULL \
                         WHEN $7 = 'disabled' AND status = 'active' THEN 'disabled by request' \
                         ELSE disabled_reason END, \
                         failing_since = CASE WHEN $8 THEN NULL ELSE failing_since END, \
                         updated_at = $9 WHERE id = $10 RETURNING {ENDPOINT_COLUMNS}"
                    );
                    let row = sqlx::query(&sql)
                        .bind(&current.url)
                        .bind(&current.description)
                        .bind(encode_list(&current.filter.event_types))
                        .bind(encode_list(&current.filter.providers))
                        .bind(encode_list(&current.filter.kinds))
                        .bind(current.include_payload)
                        .bind(current.status.as_str())
                        .bind(enable)
                        .bind(to_micros(&now))
                        .bind(id.0)
                        .fetch_one(&mut *tx)
                        .await?;
                    let updated = endpoint(&row)?;
                    tx.commit().await?;
                    Ok(Some(updated))
                }

                async fn delete_endpoint(&self, scope: TenantId, id: EndpointId) -> Result<bool, StoreError> {
                    let done = sqlx::query("DELETE FROM push_endpoints WHERE tenant_id = $1 AND id = $2")
                        .bind(scope.0)
                        .bind(id.0)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn rotate_endpoint_secret(
                    &self,
                    scope: TenantId,
                    id: EndpointId,
                    sealed: &[u8],
                    previous_until: Timestamp,
                    now: Timestamp,
                ) -> Result<bool, StoreError> {
                    let done = sqlx::query(
                        "UPDATE push_endpoints SET previous_secret_sealed = secret_sealed, \
                         previous_secret_expires_at = $1, secret_sealed = $2, updated_at = $3 \
                         WHERE tenant_id = $4 AND id = $5",
                    )
                    .bind(to_micros(&previous_until))
                    .bind(sealed)
                    .bind(to_micros(&now))
                    .bind(scope.0)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() > 0)
                }

                async fn endpoint_for_delivery(
                    &self,
                    id: EndpointId,
                ) -> Result<Option<(Endpoint, EndpointSecrets)>, StoreError> {
                    let sql = format!(
                        "SELECT {ENDPOINT_COLUMNS}, secret_sealed, previous_secret_sealed, \
                         previous_secret_expires_at FROM push_endpoints WHERE id = $1"
                    );
                    let row = sqlx::query(&sql).bind(id.0).fetch_optional(&self.pool).await?;
                    let Some(row) = row else { return Ok(None) };
                    let previous: Option<Vec<u8>> = row.try_get("previous_secret_sealed")?;
                    let until: Option<i64> = row.try_get("previous_secret_expires_at")?;
                    let previous = match (previous, until) {
                        (Some(sealed), Some(until)) => Some((sealed, super::push_rows::time("previous_secret_expires_at", until)?)),
                        _ => None,
                    };
                    let secrets = EndpointSecrets { current: row.try_get("secret_sealed")?, previous };
                    Ok(Some((endpoint(&row)?, secrets)))
                }

                async fn sequence_and_fan_out(&self, limit: u32, now: Timestamp) -> Result<(u64, u64), StoreError> {
                    // The write lock first, even with nothing to do: on SQLite a writer wakes
                    // the dispatcher before its commit, and this pass must wait for that commit
                    // to see the events it announced.
                    let _turn = self.write_turn().await;
                    let one_writer: bool = $one_writer;
                    if !one_writer {
                        // Apart from the fan-out: numbering holds the outbox lock, which
                        // writers wait for, and fan-out runs without it.
                        super::number_earlier_events(&self.pool).await?;
                    }
                    let mut tx = self.begin_write().await?;
                    let passed = fan_out_in(&mut tx, limit, now).await?;
                    tx.commit().await?;
                    Ok(passed)
                }

                async fn dispatch_step(
                    &self,
                    records: &[AttemptRecord],
                    fan_out: u32,
                    claim: &ClaimRequest<'_>,
                ) -> Result<DispatchStep, StoreError> {
                    let one_writer: bool = $one_writer;
                    if !one_writer {
                        // PostgreSQL: the outcomes and the fan-out on two connections at
                        // once, and the claim after both (it may take the next delivery of a
                        // line just recorded), out of the fan-out's lock, so other instances
                        // claim while one fans out.
                        let (kept, fanned_out) = tokio::try_join!(
                            self.record_attempts(records),
                            self.sequence_and_fan_out(fan_out, claim.now)
                        )?;
                        let limit = claim.limit();
                        let claimed = if limit == 0 {
                            Vec::new()
                        } else {
                            self.claim_deliveries(claim.owner, claim.now, claim.lease_until, limit).await?
                        };
                        return Ok(DispatchStep { kept, fanned_out, claimed });
                    }
                    // SQLite: one transaction of its one writer, one commit for all three.
                    let _turn = self.write_turn().await;
                    let mut tx = self.begin_write().await?;
                    let kept = record_in(&mut tx, records).await?;
                    let fanned_out = fan_out_in(&mut tx, fan_out, claim.now).await?;
                    let limit = claim.limit();
                    let claimed = if limit == 0 {
                        Vec::new()
                    } else {
                        claim_on(&mut *tx, claim.owner, claim.now, claim.lease_until, limit).await?
                    };
                    tx.commit().await?;
                    Ok(DispatchStep { kept, fanned_out, claimed })
                }

                async fn sequence_events(&self) -> Result<i64, StoreError> {
                    let one_writer: bool = $one_writer;
                    if one_writer {
                        // Under the write lock, as fan-out: a writer that announced events
                        // before its commit has committed them by the time it is granted.
                        let _turn = self.write_turn().await;
                        let mut tx = self.begin_write().await?;
                        let last: i64 = sqlx::query_scalar(NEWEST_SEQ).fetch_one(&mut *tx).await?;
                        tx.commit().await?;
                        return Ok(last);
                    }
                    // Events are numbered in commit order as they are inserted, so the highest
                    // number committed is the newest; an earlier release's are numbered first.
                    super::number_earlier_events(&self.pool).await?;
                    let last: i64 = sqlx::query_scalar(NEWEST_SEQ).fetch_one(&self.pool).await?;
                    Ok(last)
                }

                async fn signal_events_after(
                    &self,
                    tenant: TenantId,
                    after_seq: i64,
                    filter: &$crate::store::SignalFilter,
                    limit: u32,
                ) -> Result<Vec<PushEvent>, StoreError> {
                    let sql = format!(
                        "SELECT {EVENT_COLUMNS} FROM push_events WHERE tenant_id = $1 \
                         AND event_type = 'signal.created' AND seq > 0 AND seq > $2 \
                         AND ($3 IS NULL OR provider = $3) AND ($4 IS NULL OR connection_id = $4) \
                         AND ($5 IS NULL OR kind = $5) ORDER BY seq LIMIT $6"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(tenant.0)
                        .bind(after_seq)
                        .bind(filter.provider.as_deref())
                        .bind(filter.connection_id.map(|c| c.0))
                        .bind(filter.kind.as_deref())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(event).collect()
                }

                async fn signal_event_seq(
                    &self,
                    tenant: TenantId,
                    signal: $crate::domain::SignalId,
                ) -> Result<Option<i64>, StoreError> {
                    // The event carries the signal's id only inside its JSON, which no index
                    // reads; it was written in the transaction that stored the signal, just
                    // after the signal was received, so the search reads the tenant's events of
                    // that moment (index `push_events_by_tenant`), not all of them.
                    let Some(stored) = $crate::store::Store::get_signal(self, tenant, signal).await? else {
                        return Ok(None);
                    };
                    let received = to_micros(&stored.received_at);
                    let sql = format!(
                        "SELECT seq FROM push_events WHERE tenant_id = $1 \
                         AND created_at >= $3 AND created_at <= $4 \
                         AND event_type = 'signal.created' AND seq > 0 AND {} = $2 \
                         ORDER BY created_at LIMIT 1",
                        $data_id
                    );
                    for (from, to) in event_windows(received) {
                        let seq: Option<i64> = sqlx::query_scalar(&sql)
                            .bind(tenant.0)
                            .bind(signal.0.to_string())
                            .bind(from)
                            .bind(to)
                            .fetch_optional(&self.pool)
                            .await?;
                        if seq.is_some() {
                            return Ok(seq);
                        }
                    }
                    Ok(None)
                }

                async fn claim_deliveries(
                    &self,
                    owner: Uuid,
                    now: Timestamp,
                    lease_until: Timestamp,
                    limit: u32,
                ) -> Result<Vec<Delivery>, StoreError> {
                    let _turn = self.write_turn().await;
                    claim_on(self.write_pool(), owner, now, lease_until, limit).await
                }

                async fn get_events(&self, ids: &[EventId]) -> Result<Vec<PushEvent>, StoreError> {
                    super::events_by_id(&self.pool, ids).await
                }

                async fn record_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<bool>, StoreError> {
                    if records.is_empty() {
                        return Ok(Vec::new());
                    }
                    let _turn = self.write_turn().await;
                    let mut tx = self.begin_write().await?;
                    let kept = record_in(&mut tx, records).await?;
                    tx.commit().await?;
                    Ok(kept)
                }

                async fn list_deliveries(
                    &self,
                    endpoint_id: EndpointId,
                    page: PageRequest,
                ) -> Result<Vec<Delivery>, StoreError> {
                    let (at, id) = match page.after {
                        Some(k) => (to_micros(&k.at), k.id),
                        None => (i64::MAX, Uuid::max()),
                    };
                    let sql = format!(
                        "SELECT {DELIVERY_COLUMNS} FROM push_deliveries WHERE endpoint_id = $1 \
                         AND (created_at < $2 OR (created_at = $2 AND id < $3)) \
                         ORDER BY created_at DESC, id DESC LIMIT $4"
                    );
                    let rows = sqlx::query(&sql)
                        .bind(endpoint_id.0)
                        .bind(at)
                        .bind(id)
                        .bind(i64::from(page.fetch))
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(delivery).collect()
                }

                async fn endpoint_backlog(&self, endpoint_id: EndpointId) -> Result<u64, StoreError> {
                    let count: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM push_deliveries WHERE endpoint_id = $1 AND status = 'pending'",
                    )
                    .bind(endpoint_id.0)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(u64::try_from(count).unwrap_or(0))
                }

                async fn endpoint_backlogs(&self) -> Result<Vec<(EndpointId, u64)>, StoreError> {
                    let rows = sqlx::query(
                        "SELECT e.id, (SELECT COUNT(*) FROM push_deliveries d \
                         WHERE d.endpoint_id = e.id AND d.status = 'pending') AS backlog \
                         FROM push_endpoints e",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            let count: i64 = row.try_get("backlog")?;
                            Ok((EndpointId(row.try_get::<Uuid, _>("id")?), u64::try_from(count).unwrap_or(0)))
                        })
                        .collect()
                }

                async fn outbox_waiting(&self) -> Result<u64, StoreError> {
                    let one_writer: bool = $one_writer;
                    let past = "SELECT COUNT(*) FROM push_events \
                                WHERE seq > (SELECT through_seq FROM push_fan_out)";
                    let mut waiting: i64 = sqlx::query_scalar(past).fetch_one(&self.pool).await?;
                    if !one_writer {
                        let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM push_events_unnumbered")
                            .fetch_one(&self.pool)
                            .await?;
                        waiting = waiting.saturating_add(queued);
                    }
                    Ok(u64::try_from(waiting).unwrap_or(0))
                }

                async fn replay(
                    &self,
                    target: &Endpoint,
                    from: &ReplayFrom,
                    limit: u32,
                    now: Timestamp,
                ) -> Result<Option<u64>, StoreError> {
                    let query = replay_query(from, &target.filter);
                    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
                    let mut tx = self.pool.begin().await?;
                    let mut anchored = false;
                    let mut picks: Vec<PushEvent> = Vec::new();
                    let mut after = i64::MIN;
                    loop {
                        let mut q = sqlx::query(&query.sql)
                            .bind(query.since)
                            .bind(target.tenant_id.0)
                            .bind(target.tenant_id == TenantId::NONE)
                            .bind(after)
                            .bind(i64::from(REPLAY_PAGE));
                        for text in &query.texts {
                            q = q.bind(text.as_str());
                        }
                        let rows = q.fetch_all(&mut *tx).await?;
                        let events = rows.iter().map(event).collect::<Result<Vec<_>, _>>()?;
                        let last_page = events.len() < usize::try_from(REPLAY_PAGE).unwrap_or(usize::MAX);
                        if let Some(last) = events.last() {
                            after = last.seq;
                        }
                        let room = cap.saturating_sub(picks.len());
                        picks.extend(replay_picks(events, from, &mut anchored).into_iter().take(room));
                        if last_page || (anchored && picks.len() >= cap) {
                            break;
                        }
                    }
                    if !anchored {
                        return Ok(None);
                    }
                    let rows: Vec<(EndpointId, &PushEvent)> = picks.iter().map(|e| (target.id, e)).collect();
                    insert_deliveries(&mut *tx, &rows, now).await?;
                    tx.commit().await?;
                    Ok(Some(u64::try_from(rows.len()).unwrap_or(u64::MAX)))
                }

                async fn purge_push(&self, before: Timestamp) -> Result<(u64, u64), StoreError> {
                    let before = to_micros(&before);
                    let deliveries = sqlx::query(
                        "DELETE FROM push_deliveries WHERE status <> 'pending' AND updated_at < $1",
                    )
                    .bind(before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    let events = sqlx::query(
                        "DELETE FROM push_events WHERE seq > 0 AND seq <= (SELECT through_seq FROM push_fan_out) \
                         AND created_at < $1 \
                         AND NOT EXISTS (SELECT 1 FROM push_deliveries d WHERE d.event_id = push_events.id)",
                    )
                    .bind(before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    Ok((deliveries, events))
                }
            }

            /// Rows per multi-row `INSERT`: twelve binds each, well under either database's limit.
            const INSERT_CHUNK: usize = 500;

            /// Inside the caller's write transaction, records each attempt on its delivery (only
            /// while it is still leased to the attempt) and the endpoints' health; per record,
            /// whether it was written ([`PushStore::record_attempts`]).
            async fn record_in(
                tx: &mut <$db as sqlx::Database>::Connection,
                records: &[AttemptRecord],
            ) -> Result<Vec<bool>, StoreError> {
                if records.is_empty() {
                    return Ok(Vec::new());
                }
                let finished = super::finish_deliveries(&mut *tx, records).await?;
                let kept: Vec<bool> = records.iter().map(|r| finished.contains(&r.delivery.0)).collect();
                // Endpoint rows in id order (each endpoint's writes in their own order), so
                // two recorders writing the same endpoints never wait on each other in a cycle.
                let mut writes = health_writes(records, &kept);
                writes.sort_by_key(|&i| records.get(i).map(|r| r.endpoint));
                for i in writes {
                    let Some(r) = records.get(i) else { continue };
                    let now = to_micros(&r.now);
                    match &r.health {
                        HealthChange::Healthy => {
                            sqlx::query(ENDPOINT_HEALTHY).bind(now).bind(r.endpoint.0).execute(&mut *tx).await?;
                        }
                        HealthChange::Failing { disable, failing_cutoff } => {
                            sqlx::query(ENDPOINT_FAILING)
                                .bind(now)
                                .bind(r.status_code.map(i64::from))
                                .bind(&r.error)
                                .bind(disable)
                                .bind(to_micros(failing_cutoff))
                                .bind(r.endpoint.0)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                Ok(kept)
            }

            /// [`PushStore::claim_deliveries`] on `executor`: a pool (its own transaction) or the
            /// caller's transaction.
            async fn claim_on<'e, E>(
                executor: E,
                owner: Uuid,
                now: Timestamp,
                lease_until: Timestamp,
                limit: u32,
            ) -> Result<Vec<Delivery>, StoreError>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let rows = sqlx::query(&$claim)
                    .bind(owner)
                    .bind(to_micros(&lease_until))
                    .bind(to_micros(&now))
                    .bind(i64::from(limit))
                    .fetch_all(executor)
                    .await?;
                rows.iter().map(delivery).collect()
            }

            /// Inside the caller's write transaction: takes the fan-out's lock (where there is
            /// one), then fans up to `limit` events past the watermark out to the active
            /// endpoints ([`PushStore::sequence_and_fan_out`]).
            async fn fan_out_in(
                tx: &mut <$db as sqlx::Database>::Connection,
                limit: u32,
                now: Timestamp,
            ) -> Result<(u64, u64), StoreError> {
                let lock: Option<&str> = $fan_out_lock;
                if let Some(lock) = lock {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM push_endpoints WHERE status = 'active'");
                let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
                let endpoints = rows.iter().map(endpoint).collect::<Result<Vec<Endpoint>, _>>()?;
                if endpoints.is_empty() {
                    // No endpoint receives anything: the watermark moves past every event
                    // numbered so far, none of them read.
                    let through: i64 = sqlx::query_scalar(FANNED_OUT_THROUGH).fetch_one(&mut *tx).await?;
                    let newest: i64 = sqlx::query_scalar(NEWEST_SEQ).fetch_one(&mut *tx).await?;
                    if newest > through {
                        sqlx::query(ADVANCE_FAN_OUT).bind(newest).execute(&mut *tx).await?;
                    }
                    return Ok((u64::try_from(newest - through).unwrap_or(0), 0));
                }
                let rows = sqlx::query(&events_past_sql())
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                let events = rows.iter().map(event).collect::<Result<Vec<PushEvent>, _>>()?;
                let Some(last) = events.last().map(|e| e.seq) else {
                    return Ok((0, 0));
                };
                let fan_out: Vec<(EndpointId, &PushEvent)> = events
                    .iter()
                    .flat_map(|e| endpoints.iter().filter(move |t| t.receives(e)).map(move |t| (t.id, e)))
                    .collect();
                insert_deliveries(&mut *tx, &fan_out, now).await?;
                let created = u64::try_from(fan_out.len()).unwrap_or(u64::MAX);
                sqlx::query(ADVANCE_FAN_OUT).bind(last).execute(&mut *tx).await?;
                Ok((u64::try_from(events.len()).unwrap_or(u64::MAX), created))
            }

            /// One pending delivery per (endpoint, event), a statement per [`INSERT_CHUNK`].
            async fn insert_deliveries(
                conn: &mut <$db as sqlx::Database>::Connection,
                rows: &[(EndpointId, &PushEvent)],
                now: Timestamp,
            ) -> Result<(), StoreError> {
                let at = to_micros(&now);
                for chunk in rows.chunks(INSERT_CHUNK) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO push_deliveries (id, endpoint_id, event_id, event_type, tenant_id, \
                         connection_id, seq, status, attempts, next_attempt_at, created_at, updated_at) ",
                    );
                    q.push_values(chunk, |mut b, (endpoint, e)| {
                        b.push_bind(DeliveryId::generate().0)
                            .push_bind(endpoint.0)
                            .push_bind(e.id.0)
                            .push_bind(e.event_type.as_str())
                            .push_bind(e.tenant_id.0)
                            .push_bind(e.connection_id.0)
                            .push_bind(e.seq)
                            .push_bind("pending")
                            .push_bind(0i64)
                            .push_bind(at)
                            .push_bind(at)
                            .push_bind(at);
                    });
                    q.build().execute(&mut *conn).await?;
                }
                Ok(())
            }
        }
    };
}

pub(crate) use push_store;

#[cfg(test)]
mod tests {
    use super::health_writes;
    use crate::domain::{now, DeliveryId, EndpointId};
    use crate::store::{AttemptRecord, HealthChange, NextStep};

    fn record(endpoint: EndpointId, healthy: bool) -> AttemptRecord {
        let at = now();
        AttemptRecord {
            delivery: DeliveryId::generate(),
            endpoint,
            owner: uuid::Uuid::new_v4(),
            now: at,
            status_code: Some(if healthy { 200 } else { 500 }),
            error: None,
            latency_ms: 1,
            response_body: None,
            next: if healthy {
                NextStep::Succeeded
            } else {
                NextStep::RetryAt(at)
            },
            health: if healthy {
                HealthChange::Healthy
            } else {
                HealthChange::Failing {
                    disable: None,
                    failing_cutoff: at,
                }
            },
        }
    }

    #[test]
    fn a_run_of_successes_writes_its_endpoint_once() {
        let (a, b) = (EndpointId::generate(), EndpointId::generate());
        let records = [
            record(a, true),
            record(b, true),
            record(a, true),
            record(a, true),
        ];
        assert_eq!(health_writes(&records, &[true; 4]), vec![1, 3]);
    }

    #[test]
    fn a_failure_between_successes_keeps_both_sides_in_order() {
        let a = EndpointId::generate();
        let records = [
            record(a, true),
            record(a, false),
            record(a, true),
            record(a, false),
        ];
        assert_eq!(health_writes(&records, &[true; 4]), vec![0, 1, 2, 3]);
    }

    #[test]
    fn an_outcome_whose_lease_was_lost_changes_no_health() {
        let a = EndpointId::generate();
        let records = [record(a, true), record(a, false), record(a, true)];
        assert_eq!(health_writes(&records, &[true, false, true]), vec![2]);
    }
}
