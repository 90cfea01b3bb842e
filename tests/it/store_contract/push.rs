//! The storage contract: the push outbox. Fan-out moves a watermark past the events it has
//! read, in `seq` order; both databases number events in commit order as they insert them;
//! retention keeps what fan-out has not passed; migration 0009 starts the watermark right.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;

use connectors::domain::{
    from_micros, to_micros, ConnectionId, Delivery, DeliveryStatus, EndpointFilter, EndpointId,
    EndpointPatch, EndpointStatus, EventId, NewEndpoint,
};
use connectors::store::{AttemptRecord, ClaimRequest, HealthChange, NextStep, StoreOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::*;
use crate::helpers::TestDatabase;

/// Runs `$body` with `$pool` a pool of the test's own on the database at `$url` (a SQLite file
/// is created when missing), closed afterwards.
macro_rules! on_database {
    ($url:expr, |$pool:ident| $body:expr) => {{
        let url: &str = $url;
        if url.starts_with("sqlite:") {
            let options =
                sqlx::sqlite::SqliteConnectOptions::from_str(url)?.create_if_missing(true);
            let $pool = sqlx::SqlitePool::connect_with(options).await?;
            let out = $body;
            $pool.close().await;
            out
        } else {
            let $pool = sqlx::PgPool::connect(url).await?;
            let out = $body;
            $pool.close().await;
            out
        }
    }};
}

/// The one integer (or NULL) column of every row `sql` reads.
async fn column(url: &str, sql: &str) -> anyhow::Result<Vec<Option<i64>>> {
    Ok(on_database!(url, |pool| sqlx::query_scalar(sql)
        .fetch_all(&pool)
        .await?))
}

/// How far fan-out has gone, as stored.
async fn through_seq(url: &str) -> anyhow::Result<i64> {
    let rows = column(url, "SELECT through_seq FROM push_fan_out").await?;
    assert_eq!(rows.len(), 1, "one watermark row");
    Ok(rows[0].expect("a watermark"))
}

/// An active endpoint of `scope` receiving everything.
async fn endpoint(store: &Arc<dyn Store>, scope: TenantId) -> anyhow::Result<EndpointId> {
    let new = NewEndpoint {
        id: EndpointId::generate(),
        tenant_id: scope,
        url: "https://8.8.8.8/hooks".into(),
        description: None,
        filter: EndpointFilter::default(),
        include_payload: false,
        secret_sealed: b"sealed".to_vec(),
        created_at: now(),
    };
    Ok(store.insert_endpoint(&new).await?.id)
}

/// The `seq` of every delivery of `endpoint`, each once.
async fn delivered_seqs(store: &Arc<dyn Store>, endpoint: EndpointId) -> anyhow::Result<Vec<i64>> {
    let rows = store.list_deliveries(endpoint, first(1000)).await?;
    let mut seqs: Vec<i64> = rows.iter().map(|d| d.seq).collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// The `seq` of each signal's `signal.created` event, in order.
async fn event_seqs(
    store: &Arc<dyn Store>,
    t: TenantId,
    signals: &[NewSignal],
) -> anyhow::Result<Vec<i64>> {
    let mut seqs = Vec::with_capacity(signals.len());
    for s in signals {
        let seq = store.signal_event_seq(t, s.id).await?;
        seqs.push(seq.expect("the signal's event is numbered"));
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// `count` signals of `connection`.
fn signals(connection: &Connection, count: i64) -> Vec<NewSignal> {
    (0..count)
        .map(|n| signal(connection, "pr_opened", count - n))
        .collect()
}

#[tokio::test]
async fn fan_out_with_no_active_endpoint_delivers_nothing_then_or_later() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    let paused = endpoint(&store, t).await?;
    let disable = EndpointPatch {
        status: Some(EndpointStatus::Disabled),
        ..Default::default()
    };
    store.update_endpoint(t, paused, &disable, now()).await?;
    app.signals(signals(&connection, 3)).await;

    let passed = store.sequence_and_fan_out(64, now()).await?;
    let again = store.sequence_and_fan_out(64, now()).await?;

    assert_eq!(passed, (3, 0), "three events passed, no delivery written");
    assert_eq!(again, (0, 0), "nothing past the watermark");
    let enable = EndpointPatch {
        status: Some(EndpointStatus::Active),
        ..Default::default()
    };
    store.update_endpoint(t, paused, &enable, now()).await?;
    let created = endpoint(&store, t).await?;
    let later = app.signals(signals(&connection, 2)).await;
    let fanned = store.sequence_and_fan_out(64, now()).await?;
    assert_eq!(fanned, (2, 4), "the two later events, to both endpoints");
    let expected = event_seqs(&store, t, &later).await?;
    for id in [paused, created] {
        assert_eq!(
            delivered_seqs(&store, id).await?,
            expected,
            "only the events after the endpoint became active"
        );
    }
    Ok(())
}

#[tokio::test]
async fn fan_out_resumes_after_its_watermark_skipping_and_repeating_nothing() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    let id = endpoint(&store, t).await?;
    let mut stored = app.signals(signals(&connection, 7)).await;

    let mut passes = Vec::new();
    for _ in 0..3 {
        passes.push(store.sequence_and_fan_out(3, now()).await?);
    }
    stored.extend(app.signals(signals(&connection, 4)).await);
    for _ in 0..3 {
        passes.push(store.sequence_and_fan_out(3, now()).await?);
    }

    assert_eq!(
        passes,
        vec![(3, 3), (3, 3), (1, 1), (3, 3), (1, 1), (0, 0)],
        "three at a time, resuming where the last pass stopped"
    );
    let seqs = delivered_seqs(&store, id).await?;
    assert_eq!(
        seqs,
        event_seqs(&store, t, &stored).await?,
        "each event once"
    );
    assert_eq!(through_seq(&app.database_url).await?, seqs[seqs.len() - 1]);
    Ok(())
}

/// A claim by `owner` at `at`, of as many deliveries as `room` says, for a minute.
fn claim(owner: Uuid, at: Timestamp, room: &(dyn Fn() -> u32 + Send + Sync)) -> ClaimRequest<'_> {
    ClaimRequest {
        owner,
        now: at,
        lease_until: at + chrono::Duration::minutes(1),
        room,
    }
}

#[tokio::test]
async fn a_step_records_fans_out_and_claims_the_heads_it_freed_and_created() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let (first, second) = (
        app.connection(t, "github").await,
        app.connection(t, "github").await,
    );
    let id = endpoint(&store, t).await?;
    app.signals(signals(&first, 2)).await;
    app.signals(signals(&second, 1)).await;
    let owner = Uuid::new_v4();
    let at = now();
    // No room to claim: the events are fanned out and nothing is leased.
    let step = store
        .dispatch_step(&[], 2, &claim(owner, at, &|| 0))
        .await?;
    assert_eq!((step.fanned_out, step.claimed.len()), ((2, 2), 0));
    assert!(step.kept.is_empty());
    // The rest fanned out, and the head of each connection's line claimed in the same step,
    // the deliveries the step itself created among them.
    let step = store
        .dispatch_step(&[], 64, &claim(owner, at, &|| 10))
        .await?;
    assert_eq!(step.fanned_out, (1, 1));
    let claimed = step.claimed;
    let mut heads: Vec<ConnectionId> = claimed.iter().map(|d| d.connection_id).collect();
    heads.sort();
    let mut expected = vec![first.id, second.id];
    expected.sort();
    assert_eq!(
        heads, expected,
        "one delivery per line, the lowest seq of each"
    );
    assert!(claimed
        .iter()
        .all(|d| d.endpoint_id == id && d.attempts == 1));
    let seqs = delivered_seqs(&store, id).await?;
    let mut claimed_seqs: Vec<i64> = claimed.iter().map(|d| d.seq).collect();
    claimed_seqs.sort();
    assert_eq!(
        claimed_seqs,
        vec![seqs[0], seqs[2]],
        "the first connection's second waits"
    );
    // Leased: the next step claims nothing and fans out nothing.
    let step = store
        .dispatch_step(&[], 64, &claim(owner, at, &|| 10))
        .await?;
    assert_eq!((step.fanned_out, step.claimed.len()), ((0, 0), 0));
    // The first line's head delivered, and an attempt whose lease another owner holds: the
    // step records the first, refuses the second, and claims the line's next delivery.
    let head = claimed.iter().find(|d| d.seq == seqs[0]);
    let other = claimed.iter().find(|d| d.seq == seqs[2]);
    let (Some(head), Some(other)) = (head, other) else {
        anyhow::bail!("both heads were claimed above");
    };
    let records = [
        attempt(head, owner, Some(200), NextStep::Succeeded),
        attempt(other, Uuid::new_v4(), Some(200), NextStep::Succeeded),
    ];
    let step = store
        .dispatch_step(&records, 64, &claim(owner, at, &|| 10))
        .await?;
    assert_eq!(
        step.kept,
        vec![true, false],
        "only the attempt still leased"
    );
    assert_eq!(step.fanned_out, (0, 0));
    let next: Vec<i64> = step.claimed.iter().map(|d| d.seq).collect();
    assert_eq!(
        next,
        vec![seqs[1]],
        "the freed line's next, in the same step"
    );
    Ok(())
}

#[tokio::test]
async fn a_purge_keeps_the_events_past_the_fan_out_watermark() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    app.signals(signals(&connection, 3)).await;
    assert_eq!(store.sequence_and_fan_out(64, now()).await?, (3, 0));
    let waiting = app.signals(signals(&connection, 2)).await;
    // Numbered (on PostgreSQL by the sequencer) but not fanned out.
    let newest = store.sequence_events().await?;

    let purged = store.purge_push(now() + Duration::days(1)).await?;

    assert_eq!(
        purged,
        (0, 3),
        "the three events fan-out has passed, no more"
    );
    let id = endpoint(&store, t).await?;
    assert_eq!(store.sequence_and_fan_out(64, now()).await?, (2, 2));
    let seqs = delivered_seqs(&store, id).await?;
    assert_eq!(seqs, event_seqs(&store, t, &waiting).await?);
    assert_eq!(seqs.last().copied(), Some(newest));
    Ok(())
}

#[tokio::test]
async fn events_are_numbered_in_commit_order_as_they_are_inserted() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    // Writers in parallel, each storing its batches one transaction at a time.
    let writers = (0..6).map(|_| {
        let (store, connection) = (store.clone(), connection.clone());
        tokio::spawn(async move {
            let mut stored = Vec::new();
            for _ in 0..4 {
                let batch = signals(&connection, 5);
                store.insert_signals(&batch).await?;
                stored.extend(batch);
            }
            anyhow::Ok(stored)
        })
    });
    let mut stored = Vec::new();
    for writer in futures::future::join_all(writers).await {
        stored.extend(writer??);
    }
    let all: Vec<Option<i64>> = (1..=120).map(Some).collect();
    let url = app.database_url.as_str();
    let unmarked = column(url, "SELECT COUNT(*) FROM push_events WHERE NOT fanned_out").await?;
    assert_eq!(
        unmarked,
        vec![Some(0)],
        "marked, so an instance of the previous release does not fan them out"
    );
    // Before any dispatcher or stream: each event has its number, in the order the rows went
    // in, which is the order their transactions committed (one writer at a time on SQLite; on
    // PostgreSQL one numbering transaction at a time, holding the outbox lock to its commit).
    let by_insert = column(
        url,
        "SELECT seq FROM push_events WHERE seq <> 0 ORDER BY pos",
    )
    .await?;
    assert_eq!(by_insert, all);
    let first = store.signal_event_seq(t, stored[0].id).await?;
    assert!(first.is_some(), "readable by a stream at once");
    if store.backend() == Backend::Postgres {
        // Nothing is left for a sequencer: no queued position, no event without a number.
        let queued = column(url, "SELECT COUNT(*) FROM push_events_unnumbered").await?;
        assert_eq!(queued, vec![Some(0)]);
        let legacy = column(url, "SELECT COUNT(*) FROM push_events WHERE seq IS NULL").await?;
        assert_eq!(legacy, vec![Some(0)]);
    }
    assert_eq!(store.sequence_events().await?, 120);
    let seqs = event_seqs(&store, t, &stored).await?;
    assert_eq!(seqs, (1..=120).collect::<Vec<i64>>());
    Ok(())
}

/// The migrations of this release up to 0008, as an instance of the release before 0009
/// applied them.
fn migrations_through_0008(url: &str) -> anyhow::Result<Migrator> {
    let dir = if url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dir);
    let mut migrations = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a migration file name")
            .to_string();
        let (version, description) = name.split_once('_').expect("NNNN_description");
        let version: i64 = version.parse()?;
        if version > 8 {
            continue;
        }
        let sql = std::fs::read_to_string(&path)?;
        migrations.push(Migration::new(
            version,
            Cow::Owned(description.replace('_', " ")),
            MigrationType::Simple,
            Cow::Owned(sql),
            false,
        ));
    }
    migrations.sort_by_key(|m| m.version);
    assert_eq!(migrations.len(), 8);
    Ok(Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    })
}

/// One event as the release before 0009 left it: at `pos`, numbered `seq` or not yet, fanned
/// out or not; a `connection.status_changed` whose data is `{"pos": pos}`.
struct OldEvent {
    pos: i64,
    seq: Option<i64>,
    fanned_out: bool,
}

/// A database at migration 0008 holding `events` of tenant `t`.
async fn database_at_0008(t: TenantId, events: &[OldEvent]) -> anyhow::Result<TestDatabase> {
    let db = TestDatabase::create().await;
    let migrator = migrations_through_0008(&db.url)?;
    let insert = "INSERT INTO push_events (pos, id, seq, fanned_out, tenant_id, connection_id, \
                  provider, event_type, data, created_at) \
                  VALUES ($1, $2, $3, $4, $5, $6, 'github', 'connection.status_changed', $7, $8)";
    let connection = Uuid::new_v4();
    on_database!(&db.url, |pool| {
        migrator.run(&pool).await?;
        for e in events {
            sqlx::query(insert)
                .bind(e.pos)
                // Ids fall as `pos` rises: an order by id is not the order by `pos`.
                .bind(Uuid::from_u128(
                    u128::MAX - u128::from(e.pos.unsigned_abs()),
                ))
                .bind(e.seq)
                .bind(e.fanned_out)
                .bind(t.0)
                .bind(connection)
                .bind(json!({ "pos": e.pos }).to_string())
                .bind(now().timestamp_micros())
                .execute(&pool)
                .await?;
        }
    });
    Ok(db)
}

/// The `pos` in the data of each event an endpoint received, in `seq` order.
async fn delivered_positions(
    store: &Arc<dyn Store>,
    endpoint: EndpointId,
) -> anyhow::Result<Vec<(i64, i64)>> {
    let mut rows = store.list_deliveries(endpoint, first(1000)).await?;
    rows.sort_by_key(|d| d.seq);
    let ids: Vec<EventId> = rows.iter().map(|d| d.event_id).collect();
    let events = store.get_events(&ids).await?;
    let mut positions = Vec::with_capacity(rows.len());
    for d in rows {
        let event = events
            .iter()
            .find(|e| e.id == d.event_id)
            .expect("the event");
        positions.push((d.seq, event.data["pos"].as_i64().expect("a pos")));
    }
    Ok(positions)
}

#[tokio::test]
async fn migrating_from_0008_starts_the_watermark_after_the_fanned_out_prefix() -> Outcome {
    let t = tenant();
    let old = |pos, seq, fanned_out| OldEvent {
        pos,
        seq,
        fanned_out,
    };
    // Three fanned out, two numbered but not fanned out, two not numbered yet: inserted out of
    // `pos` order, so numbering follows `pos`, not insertion.
    let events = [
        old(1, Some(1), true),
        old(2, Some(2), true),
        old(3, Some(3), true),
        old(4, Some(4), false),
        old(5, Some(5), false),
        old(20, None, false),
        old(10, None, false),
    ];
    let db = database_at_0008(t, &events).await?;
    let store = connectors::store::connect(&db.url, &StoreOptions { max_connections: 2 }).await?;

    store.migrate().await?;

    assert_eq!(through_seq(&db.url).await?, 3);
    let unnumbered = column(&db.url, "SELECT pos FROM push_events WHERE seq IS NULL").await?;
    match store.backend() {
        // SQLite numbers events at insert from now on, so the migration numbers the rest.
        Backend::Sqlite => assert!(unnumbered.is_empty(), "{unnumbered:?}"),
        // PostgreSQL's sequencer numbers them on its next run.
        Backend::Postgres => assert_eq!(unnumbered.len(), 2),
    }
    let id = endpoint(&store, t).await?;
    assert_eq!(store.sequence_and_fan_out(64, now()).await?, (4, 4));
    assert_eq!(
        delivered_positions(&store, id).await?,
        vec![(4, 4), (5, 5), (6, 10), (7, 20)],
        "what was not fanned out yet, numbered in insertion order"
    );
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn migrating_from_0008_with_everything_or_nothing_fanned_out() -> Outcome {
    let t = tenant();
    let done = |pos| OldEvent {
        pos,
        seq: Some(pos),
        fanned_out: true,
    };
    let cases: [(&[OldEvent], i64); 2] = [(&[done(1), done(2), done(3)], 3), (&[], 0)];
    for (events, expected) in cases {
        let db = database_at_0008(t, events).await?;
        let store =
            connectors::store::connect(&db.url, &StoreOptions { max_connections: 2 }).await?;

        store.migrate().await?;

        assert_eq!(through_seq(&db.url).await?, expected);
        let id = endpoint(&store, t).await?;
        assert_eq!(store.sequence_and_fan_out(64, now()).await?, (0, 0));
        assert!(delivered_positions(&store, id).await?.is_empty());
        store.close().await;
    }
    Ok(())
}

/// One delivery of each of `count` connections of `t`, fanned out to a new endpoint and
/// claimed by `owner`: the endpoint and the claimed deliveries.
async fn claimed_heads(
    app: &TestApp,
    t: TenantId,
    count: usize,
    owner: Uuid,
) -> anyhow::Result<(EndpointId, Vec<Delivery>)> {
    let store = app.store();
    let id = endpoint(&store, t).await?;
    for _ in 0..count {
        let connection = app.connection(t, "github").await;
        app.signals(signals(&connection, 1)).await;
    }
    store.sequence_and_fan_out(100, now()).await?;
    let at = now();
    let claimed = store
        .claim_deliveries(owner, at, at + chrono::Duration::minutes(1), 100)
        .await?;
    assert_eq!(claimed.len(), count, "each connection's head is claimed");
    Ok((id, claimed))
}

/// What an attempt of `d` by `owner` leaves to record.
fn attempt(d: &Delivery, owner: Uuid, status: Option<u16>, next: NextStep) -> AttemptRecord {
    AttemptRecord {
        delivery: d.id,
        endpoint: d.endpoint_id,
        owner,
        now: now(),
        status_code: status,
        error: status.is_none().then(|| "timed out".to_string()),
        latency_ms: 12,
        response_body: status.map(|s| format!("answered {s}")),
        next,
        health: if next == NextStep::Succeeded {
            HealthChange::Healthy
        } else {
            HealthChange::Failing {
                disable: None,
                failing_cutoff: now() - chrono::Duration::days(5),
            }
        },
    }
}

#[tokio::test]
async fn a_batch_of_outcomes_writes_each_delivery_once_and_none_whose_lease_is_lost() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let owner = Uuid::new_v4();
    let (id, claimed) = claimed_heads(&app, t, 4, owner).await?;
    let retry_at = from_micros(to_micros(&(now() + chrono::Duration::minutes(5)))).expect("a time");

    let records = vec![
        attempt(&claimed[0], owner, Some(204), NextStep::Succeeded),
        attempt(&claimed[1], owner, None, NextStep::RetryAt(retry_at)),
        // Another owner's outcome: the lease is not its, nothing is written.
        attempt(&claimed[2], Uuid::new_v4(), Some(204), NextStep::Succeeded),
        attempt(&claimed[3], owner, Some(500), NextStep::GiveUp),
    ];
    let kept = store.record_attempts(&records).await?;
    assert_eq!(kept, vec![true, true, false, true]);

    let rows = store.list_deliveries(id, first(100)).await?;
    let row = |d: &Delivery| rows.iter().find(|r| r.id == d.id).expect("the delivery");
    let succeeded = row(&claimed[0]);
    assert_eq!(succeeded.status, DeliveryStatus::Succeeded);
    assert_eq!(succeeded.last_status_code, Some(204));
    assert_eq!(succeeded.last_latency_ms, Some(12));
    assert_eq!(
        succeeded.last_response_body.as_deref(),
        Some("answered 204")
    );
    assert!(succeeded.completed_at.is_some());
    let retried = row(&claimed[1]);
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(retried.next_attempt_at, Some(retry_at));
    assert_eq!(retried.last_error.as_deref(), Some("timed out"));
    assert_eq!(retried.last_status_code, None);
    assert!(retried.completed_at.is_none());
    let untouched = row(&claimed[2]);
    assert_eq!(untouched.status, DeliveryStatus::Pending);
    assert_eq!(
        untouched.last_status_code, None,
        "a lost lease writes nothing"
    );
    let failed = row(&claimed[3]);
    assert_eq!(failed.status, DeliveryStatus::Failed);
    assert_eq!(failed.last_status_code, Some(500));
    assert!(failed.completed_at.is_some());

    // The retried delivery and the one whose outcome was refused are leased still: neither is
    // claimed again before the lease ends; the retried one is claimable once due and free.
    let at = now();
    let again = store
        .claim_deliveries(owner, at, at + chrono::Duration::minutes(1), 100)
        .await?;
    assert!(again.is_empty(), "nothing is due and free: {again:?}");

    let endpoint = store.get_endpoint(t, id).await?.expect("the endpoint");
    assert!(
        endpoint.last_success_at.is_some(),
        "the success is remembered"
    );
    let failure = endpoint.last_failure.expect("the failures are remembered");
    assert_eq!(
        failure.status_code,
        Some(500),
        "the last failure of the batch"
    );
    Ok(())
}

#[tokio::test]
async fn events_are_read_together_each_once_and_only_those_that_exist() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let (_, claimed) = claimed_heads(&app, t, 3, Uuid::new_v4()).await?;
    let mut ids: Vec<EventId> = claimed.iter().map(|d| d.event_id).collect();
    ids.push(claimed[0].event_id);
    ids.push(EventId::generate());

    let mut events = store.get_events(&ids).await?;
    events.sort_by_key(|e| e.seq);
    // The same events as the tenant's outbox reads them, in `seq` order.
    let expected = store
        .signal_events_after(t, 0, &SignalFilter::default(), 100)
        .await?;
    assert_eq!(expected.len(), 3);
    assert_eq!(events, expected);
    assert!(store.get_events(&[]).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn postgres_leaves_room_on_delivery_pages_so_a_claim_writes_no_index() -> Outcome {
    let app = TestApp::spawn().await;
    match app.store().backend() {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&app.database_url).await?;
            let options: Option<Vec<String>> = sqlx::query_scalar(
                "SELECT reloptions FROM pg_class WHERE relname = 'push_deliveries'",
            )
            .fetch_one(&pool)
            .await?;
            pool.close().await;
            assert_eq!(options, Some(vec!["fillfactor=70".to_string()]));
        }
        // SQLite rewrites a row in place on its page: the setting, and its migration, are
        // PostgreSQL's alone.
        Backend::Sqlite => {}
    }
    let applied = column(
        &app.database_url,
        "SELECT version FROM _sqlx_migrations WHERE description = 'push fill factor'",
    )
    .await?;
    match app.store().backend() {
        Backend::Postgres => assert_eq!(applied, vec![Some(10)]),
        Backend::Sqlite => assert!(applied.is_empty(), "{applied:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn a_signals_event_is_found_near_when_it_was_received_and_not_far_from_it() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    // Other events of the tenant around it, so the search has something to skip.
    app.signals(signals(&connection, 50)).await;
    let received_as_usual = signal(&connection, "pr_opened", 1);
    // Received on a clock a minute ahead of the one its event was written by.
    let mut clock_ahead = signal(&connection, "pr_opened", 1);
    clock_ahead.received_at = now() + chrono::Duration::minutes(1);
    // Received an hour ahead: past the window the search reads.
    let mut far_ahead = signal(&connection, "pr_opened", 1);
    far_ahead.received_at = now() + chrono::Duration::hours(1);
    let stored = app
        .signals(vec![received_as_usual, clock_ahead, far_ahead])
        .await;
    app.signals(signals(&connection, 50)).await;
    store.sequence_events().await?;

    let found = [
        store.signal_event_seq(t, stored[0].id).await?,
        store.signal_event_seq(t, stored[1].id).await?,
    ];
    assert_eq!(found, [Some(51), Some(52)], "each by its own event");
    assert_eq!(store.signal_event_seq(t, stored[2].id).await?, None);
    assert_eq!(
        store.signal_event_seq(tenant(), stored[0].id).await?,
        None,
        "another tenant's"
    );
    assert_eq!(
        store
            .signal_event_seq(t, connectors::domain::SignalId::generate())
            .await?,
        None
    );
    Ok(())
}

/// The sequencer of the release before `0011_push_unnumbered`, as it ran: every event with
/// `seq` NULL, after the highest `seq`.
const SEQUENCE_BEFORE_0011: &str = "UPDATE push_events SET seq = numbered.n \
    FROM (SELECT pos, (SELECT COALESCE(MAX(seq), 0) FROM push_events) \
          + ROW_NUMBER() OVER (ORDER BY pos) AS n \
          FROM push_events WHERE seq IS NULL) AS numbered \
    WHERE push_events.pos = numbered.pos";

/// The columns an earlier release inserts an event with.
const OLD_EVENT_COLUMNS: &str =
    "id, tenant_id, connection_id, provider, event_type, data, created_at, fanned_out";

/// The values of a new event of `connection`, for [`OLD_EVENT_COLUMNS`].
fn old_event_values(t: TenantId, connection: &Connection) -> String {
    format!(
        "'{}', '{}', '{}', 'github', 'connection.status_changed', '{{}}', {}, TRUE",
        Uuid::new_v4(),
        t.0,
        connection.id.0,
        now().timestamp_micros()
    )
}

/// How an instance of a release from `0011_push_unnumbered` until events were numbered at
/// insert stores an event (PostgreSQL): at `seq = -pos`, its position queued for its sequencer.
fn queued_event(t: TenantId, connection: &Connection) -> String {
    format!(
        "WITH v ({OLD_EVENT_COLUMNS}) AS (VALUES ({})), \
         inserted AS (INSERT INTO push_events (pos, seq, {OLD_EVENT_COLUMNS}) \
         SELECT p.pos, -p.pos, p.id::uuid, p.tenant_id::uuid, p.connection_id::uuid, \
         p.provider, p.event_type, p.data, p.created_at, p.fanned_out \
         FROM (SELECT nextval('push_events_pos_seq') AS pos, v.* FROM v) AS p RETURNING pos) \
         INSERT INTO push_events_unnumbered (pos) SELECT pos FROM inserted",
        old_event_values(t, connection)
    )
}

/// That release's sequencer, under the outbox lock in its own transaction: takes the queue,
/// then numbers the queued events after the highest `seq` stored.
const TAKE_QUEUED_0011: &str = "DELETE FROM push_events_unnumbered RETURNING pos";
const SEQUENCE_QUEUED_0011: &str = "UPDATE push_events SET seq = numbered.n \
    FROM (SELECT q.pos, (SELECT COALESCE(MAX(seq), 0) FROM push_events WHERE seq > 0) \
          + ROW_NUMBER() OVER (ORDER BY q.pos) AS n FROM UNNEST($1::int8[]) AS q (pos)) AS numbered \
    WHERE push_events.pos = numbered.pos AND push_events.seq < 0";

/// A transaction of that release's sequencer on `pool` that has numbered what was queued and
/// not committed: it holds the outbox lock.
async fn old_sequencer_numbering(
    pool: &sqlx::PgPool,
) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query(OUTBOX_LOCK).execute(&mut *tx).await?;
    let queued: Vec<i64> = sqlx::query_scalar(TAKE_QUEUED_0011)
        .fetch_all(&mut *tx)
        .await?;
    sqlx::query(SEQUENCE_QUEUED_0011)
        .bind(&queued)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

#[tokio::test]
async fn postgres_numbers_the_events_of_both_releases_during_an_upgrade() -> Outcome {
    let app = TestApp::spawn().await;
    match app.store().backend() {
        Backend::Postgres => events_of_both_releases_are_numbered(&app).await,
        Backend::Sqlite => {
            // SQLite numbers events as it inserts them: no queue, no floor.
            let queue = "SELECT COUNT(*) FROM sqlite_master WHERE name = 'push_events_unnumbered'";
            assert_eq!(column(&app.database_url, queue).await?, vec![Some(0)]);
            let floor = "SELECT COUNT(*) FROM push_events WHERE seq = 0";
            assert_eq!(column(&app.database_url, floor).await?, vec![Some(0)]);
            Ok(())
        }
    }
}

/// On PostgreSQL: the events instances of earlier releases insert beside this one, those of a
/// release before `0011_push_unnumbered` (with `seq` NULL, numbered by its own sequencer) and
/// those of a release from it until events were numbered at insert (queued at `seq = -pos`),
/// are each numbered once, after this release's, which are numbered as they are inserted; and
/// the floor holds.
async fn events_of_both_releases_are_numbered(app: &TestApp) -> Outcome {
    let store = app.store();
    let url = app.database_url.as_str();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    let id = endpoint(&store, t).await?;
    // What instances of earlier releases run: inserts with `seq` NULL, or queued; the sequencer
    // of the release before `0011_push_unnumbered`; retention, which may delete the floor.
    let old = |sql: String| async move {
        on_database!(url, |pool| {
            sqlx::query(&sql).execute(&pool).await?;
        });
        anyhow::Ok(())
    };
    let legacy_event = || {
        format!(
            "INSERT INTO push_events ({OLD_EVENT_COLUMNS}) VALUES ({})",
            old_event_values(t, &connection)
        )
    };
    let queued = || queued_event(t, &connection);
    let first = app.signals(signals(&connection, 2)).await;
    old(legacy_event()).await?;
    old(queued()).await?;

    // This release's events are numbered at once; the old sequencer numbers its own event
    // after them and leaves the queued one waiting at a negative `seq`.
    old(SEQUENCE_BEFORE_0011.to_string()).await?;
    let seqs = "SELECT seq FROM push_events WHERE seq >= 0 ORDER BY seq";
    assert_eq!(
        column(url, seqs).await?,
        vec![Some(0), Some(1), Some(2), Some(3)]
    );
    let waiting = "SELECT COUNT(*) FROM push_events WHERE seq < 0 OR seq IS NULL";
    assert_eq!(column(url, waiting).await?, vec![Some(1)]);
    old("DELETE FROM push_events WHERE seq = 0".to_string()).await?;
    let second = app.signals(signals(&connection, 1)).await;
    old(legacy_event()).await?;
    old(queued()).await?;

    // The queued two in the order they went in, then the one with `seq` NULL.
    assert_eq!(store.sequence_and_fan_out(64, now()).await?, (7, 7));

    let all: Vec<Option<i64>> = (0..=7).map(Some).collect();
    assert_eq!(
        column(url, seqs).await?,
        all,
        "each once, the floor back, none waiting"
    );
    assert_eq!(column(url, waiting).await?, vec![Some(0)]);
    assert_eq!(
        delivered_seqs(&store, id).await?,
        (1..=7).collect::<Vec<i64>>()
    );
    let mut signal_seqs = event_seqs(&store, t, &first).await?;
    signal_seqs.extend(event_seqs(&store, t, &second).await?);
    assert_eq!(
        signal_seqs,
        vec![1, 2, 4],
        "this release's three as they were inserted, the old instance's first between them"
    );
    let queued = column(url, "SELECT COUNT(*) FROM push_events_unnumbered").await?;
    assert_eq!(queued, vec![Some(0)]);
    Ok(())
}

/// The earlier releases' sequencer lock, which this release's writers hold from just before
/// they insert events to their commit (PostgreSQL).
const OUTBOX_LOCK: &str = "SELECT pg_advisory_xact_lock(8103509995581302129)";

/// An event's row, numbered after the highest `seq` by the statement that inserts it; binds
/// its id, tenant, connection and `created_at`.
const NUMBERED_EVENT: &str = "INSERT INTO push_events (seq, id, tenant_id, connection_id, \
    provider, event_type, data, created_at, fanned_out) \
    SELECT COALESCE(MAX(seq), 0) + 1, $1, $2, $3, 'github', 'connection.status_changed', '{}', \
    $4, TRUE FROM push_events WHERE seq > 0";

/// A transaction on `$pool` that has numbered one event of `$connection` (of tenant `$t`) and
/// not committed: on PostgreSQL it holds the outbox lock, on SQLite the write lock.
macro_rules! numbering_one_event {
    ($pool:expr, $backend:expr, $t:expr, $connection:expr) => {{
        let mut tx = match $backend {
            Backend::Postgres => {
                let mut tx = $pool.begin().await?;
                sqlx::query(OUTBOX_LOCK).execute(&mut *tx).await?;
                tx
            }
            Backend::Sqlite => $pool.begin_with("BEGIN IMMEDIATE").await?,
        };
        sqlx::query(NUMBERED_EVENT)
            .bind(Uuid::new_v4())
            .bind($t.0)
            .bind($connection.id.0)
            .bind(now().timestamp_micros())
            .execute(&mut *tx)
            .await?;
        tx
    }};
}

/// Starts this release's writer of two signals of `connection` while `holder` holds the lock
/// it numbers under, checks the writer still waits 300 ms later (`why` if not), commits
/// `holder`; the writer's signals, once it has stored both.
async fn writer_waits_for<DB: sqlx::Database>(
    store: &Arc<dyn Store>,
    connection: &Connection,
    holder: sqlx::Transaction<'_, DB>,
    why: &str,
) -> anyhow::Result<Vec<NewSignal>> {
    let batch = signals(connection, 2);
    let writer = {
        let (store, batch) = (store.clone(), batch.clone());
        tokio::spawn(async move { store.insert_signals(&batch).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "{why}");
    holder.commit().await?;
    assert_eq!(writer.await??, 2);
    Ok(batch)
}

#[tokio::test]
async fn a_writer_numbers_its_events_after_the_transaction_numbering_before_it_commits() -> Outcome
{
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    let url = app.database_url.clone();
    let backend = store.backend();
    on_database!(&url, |pool| {
        // Another transaction numbers an event and has not committed.
        let numbering = numbering_one_event!(pool, backend, t, connection);
        let why = "a writer's events wait for the transaction numbering before them";
        let batch = writer_waits_for(&store, &connection, numbering, why).await?;
        // Numbered after the event committed first, though read while it was uncommitted
        // would have given them 1 and 2.
        assert_eq!(event_seqs(&store, t, &batch).await?, vec![2, 3]);
    });
    Ok(())
}

#[tokio::test]
async fn a_signal_waiting_on_another_transactions_duplicate_holds_up_no_other_writer() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    let url = app.database_url.clone();
    let backend = store.backend();
    let stored = signals(&connection, 1);
    store.insert_signals(&stored).await?;
    on_database!(&url, |pool| {
        // Another transaction stores a signal with the dedupe key of one the writer below
        // stores, and has not committed: the writer's insert waits for it.
        let waiting = signals(&connection, 2);
        let mut other = match backend {
            Backend::Postgres => pool.begin().await?,
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        };
        sqlx::query(
            "INSERT INTO signals (id, tenant_id, connection_id, provider, kind, occurred_at, \
             received_at, actor, title, url, external_id, dedupe_key, payload) \
             SELECT $1, tenant_id, connection_id, provider, kind, occurred_at, received_at, \
             actor, title, url, external_id, $2, payload FROM signals WHERE id = $3",
        )
        .bind(Uuid::new_v4())
        .bind(waiting[0].dedupe_key.as_str())
        .bind(stored[0].id.0)
        .execute(&mut *other)
        .await?;
        let writer = {
            let (store, waiting) = (store.clone(), waiting.clone());
            tokio::spawn(async move { store.insert_signals(&waiting).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!writer.is_finished(), "waits for the other transaction");
        let later = signals(&connection, 1);
        // The `seq` of the waiting writer's new signal's event, and of the later writer's.
        let (waiting_seq, later_seq) = match backend {
            Backend::Postgres => {
                // It waits without the outbox lock: another writer stores and numbers its
                // signal meanwhile, ahead of it.
                let done = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    store.insert_signals(&later),
                )
                .await;
                assert_eq!(done.expect("not held up by the waiting writer")?, 1);
                other.commit().await?;
                assert_eq!(writer.await??, 1, "the duplicate skipped");
                (3, 2)
            }
            Backend::Sqlite => {
                // One writer at a time: the waiting writer goes first once the lock is free.
                other.commit().await?;
                assert_eq!(writer.await??, 1, "the duplicate skipped");
                assert_eq!(store.insert_signals(&later).await?, 1);
                (2, 3)
            }
        };
        assert_eq!(
            event_seqs(&store, t, &waiting[1..]).await?,
            vec![waiting_seq]
        );
        assert_eq!(event_seqs(&store, t, &later).await?, vec![later_seq]);
        let duplicate = store.signal_event_seq(t, waiting[0].id).await?;
        assert_eq!(duplicate, None, "a skipped signal has no event");
    });
    Ok(())
}

#[tokio::test]
async fn a_number_is_never_given_twice_even_once_the_newest_events_are_deleted() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    let first = app.signals(signals(&connection, 3)).await;
    assert_eq!(event_seqs(&store, t, &first).await?, vec![1, 2, 3]);
    // No endpoint: fan-out moves its watermark past the three. A quiet spell longer than
    // retention keeps events, then retention deletes every one of them.
    assert_eq!(store.sequence_and_fan_out(64, now()).await?, (3, 0));
    assert_eq!(through_seq(&app.database_url).await?, 3);
    let later = now() + chrono::Duration::minutes(1);
    assert_eq!(store.purge_push(later).await?, (0, 3));
    let left = column(
        &app.database_url,
        "SELECT COUNT(*) FROM push_events WHERE seq > 0",
    )
    .await?;
    assert_eq!(left, vec![Some(0)]);

    // Numbered after the last number given, not after the highest left: past the watermark,
    // so they are pushed.
    let id = endpoint(&store, t).await?;
    let next = app.signals(signals(&connection, 2)).await;
    assert_eq!(event_seqs(&store, t, &next).await?, vec![4, 5]);
    assert_eq!(store.sequence_and_fan_out(64, now()).await?, (2, 2));
    assert_eq!(delivered_seqs(&store, id).await?, vec![4, 5]);

    // The same after the newest events go with their connection, before fan-out reached them.
    let other = app.connection(t, "github").await;
    app.signals(signals(&other, 2)).await;
    store.delete_connection(t, other.id).await?;
    let last = app.signals(signals(&connection, 1)).await;
    assert_eq!(event_seqs(&store, t, &last).await?, vec![8]);
    assert_eq!(store.sequence_and_fan_out(64, now()).await?, (1, 1));
    assert_eq!(delivered_seqs(&store, id).await?, vec![4, 5, 8]);
    Ok(())
}

#[tokio::test]
async fn fan_out_never_passes_an_event_a_writer_is_still_numbering() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    let id = endpoint(&store, t).await?;
    let url = app.database_url.clone();
    let backend = store.backend();
    on_database!(&url, |pool| {
        // A writer has numbered an event and not committed it.
        let numbering = numbering_one_event!(pool, backend, t, connection);
        let fan_out = {
            let store = store.clone();
            tokio::spawn(async move { store.sequence_and_fan_out(64, now()).await })
        };
        match backend {
            Backend::Postgres => {
                // Fan-out holds a lock of its own, not the writers': it runs meanwhile, sees
                // nothing committed past its watermark and stays where it was.
                let passed = tokio::time::timeout(std::time::Duration::from_secs(10), fan_out)
                    .await
                    .expect("fan-out does not wait for the writer")??;
                assert_eq!(passed, (0, 0));
                assert_eq!(through_seq(&url).await?, 0);
                numbering.commit().await?;
                assert_eq!(store.sequence_and_fan_out(64, now()).await?, (1, 1));
            }
            Backend::Sqlite => {
                // One writer at a time: fan-out waits for the commit, then takes the event.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                assert!(!fan_out.is_finished(), "waits for the writer's commit");
                numbering.commit().await?;
                assert_eq!(fan_out.await??, (1, 1));
            }
        }
        assert_eq!(
            delivered_seqs(&store, id).await?,
            vec![1],
            "once, not passed over"
        );
    });
    Ok(())
}

#[tokio::test]
async fn postgres_the_previous_releases_sequencer_and_this_releases_writers_take_turns() -> Outcome
{
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let connection = app.connection(t, "github").await;
    let url = app.database_url.clone();
    if store.backend() == Backend::Sqlite {
        // SQLite's releases numbered events as they inserted them: it never had a sequencer.
        let queue = "SELECT COUNT(*) FROM sqlite_master WHERE name = 'push_events_unnumbered'";
        assert_eq!(column(&url, queue).await?, vec![Some(0)]);
        return Ok(());
    }
    let pool = sqlx::PgPool::connect(&url).await?;
    let seqs = "SELECT seq FROM push_events WHERE seq > 0 ORDER BY seq";

    // The previous release's sequencer numbers its queued event and has not committed: this
    // release's writer waits for it, then numbers after it.
    sqlx::query(&queued_event(t, &connection))
        .execute(&pool)
        .await?;
    let sequencer = old_sequencer_numbering(&pool).await?;
    let why = "this release's writer waits for the previous release's sequencer";
    let batch = writer_waits_for(&store, &connection, sequencer, why).await?;
    assert_eq!(event_seqs(&store, t, &batch).await?, vec![2, 3]);

    // And the other way round: a transaction holds the outbox lock as this release's writers do
    // until their commit; the previous release's sequencer waits for it, then numbers its
    // queued event after that transaction's.
    sqlx::query(&queued_event(t, &connection))
        .execute(&pool)
        .await?;
    let numbering = numbering_one_event!(pool, Backend::Postgres, t, connection);
    let sequencer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            old_sequencer_numbering(&pool).await?.commit().await?;
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !sequencer.is_finished(),
        "the previous release's sequencer waits for this release's writer"
    );
    numbering.commit().await?;
    sequencer.await??;
    let numbered: Vec<Option<i64>> = (1..=5).map(Some).collect();
    assert_eq!(
        column(&url, seqs).await?,
        numbered,
        "each number given once"
    );
    let waiting = "SELECT COUNT(*) FROM push_events WHERE seq < 0 OR seq IS NULL";
    assert_eq!(column(&url, waiting).await?, vec![Some(0)]);
    pool.close().await;
    Ok(())
}
