//! The storage contract: the webhook inbox.

use super::*;

#[tokio::test]
async fn a_redelivery_is_a_duplicate_within_its_tenant_and_provider() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let original = delivery(t, "github", "key-1", at);
    let redelivery = delivery(t, "github", "key-1", at);
    let other_tenant = delivery(tenant(), "github", "key-1", at);
    let other_provider = delivery(t, "slack", "key-1", at);

    let stored = store.insert_webhook_event(&original).await?;
    let duplicate = store.insert_webhook_event(&redelivery).await?;
    let elsewhere = store.insert_webhook_event(&other_tenant).await?;
    let other = store.insert_webhook_event(&other_provider).await?;

    assert_eq!(stored, (original.id, false));
    assert_eq!(duplicate, (original.id, true));
    assert_eq!(elsewhere, (other_tenant.id, false));
    assert_eq!(other, (other_provider.id, false));
    assert!(store.get_webhook_event(t, redelivery.id).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn a_webhook_event_reads_back_for_its_tenant_only() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let new = NewWebhookEvent {
        connection_id: Some(conn.id),
        ..delivery(t, "github", "key-1", now())
    };
    store.insert_webhook_event(&new).await?;

    let read = store.get_webhook_event(t, new.id).await?.expect("stored");
    let elsewhere = store.get_webhook_event(tenant(), new.id).await?;

    assert!(elsewhere.is_none());
    assert_eq!(read.id, new.id);
    assert_eq!(read.tenant_id, t);
    assert_eq!(read.provider, "github");
    assert_eq!(read.connection_id, Some(conn.id));
    assert_eq!(read.dedupe_key, "key-1");
    assert_eq!(read.event_type, new.event_type);
    assert_eq!(read.headers, new.headers);
    assert_eq!(read.body, new.body);
    assert_eq!(read.status, EventStatus::Pending);
    assert_eq!(read.attempts, 0);
    assert_eq!(read.last_error, None);
    assert_eq!(read.received_at, new.received_at);
    assert_eq!(read.processed_at, None);
    Ok(())
}

#[tokio::test]
async fn claiming_leases_due_events_up_to_the_limit_and_counts_an_attempt() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let mut ids = Vec::new();
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        let new = delivery(t, "github", key, at - Duration::seconds(3 - i as i64));
        store.insert_webhook_event(&new).await?;
        ids.push(new.id);
    }
    let lease = at + Duration::seconds(60);
    let sorted = |mut ids: Vec<Uuid>| {
        ids.sort();
        ids
    };

    let first_claim = store.claim_webhook_events(at, lease, 2).await?;
    let second_claim = store.claim_webhook_events(at, lease, 10).await?;
    let while_leased = store.claim_webhook_events(at, lease, 10).await?;
    let after_expiry = lease + Duration::seconds(1);
    let taken_over = store
        .claim_webhook_events(after_expiry, after_expiry + Duration::seconds(60), 10)
        .await?;

    assert_eq!(first_claim.len(), 2);
    assert_eq!(second_claim.len(), 1);
    assert!(while_leased.is_empty());
    let claimed: Vec<Uuid> = first_claim
        .iter()
        .chain(&second_claim)
        .map(|e| e.id)
        .collect();
    assert_eq!(sorted(claimed), sorted(ids.clone()));
    assert!(first_claim
        .iter()
        .chain(&second_claim)
        .all(|e| e.attempts == 1 && e.status == EventStatus::Pending));
    assert_eq!(
        sorted(taken_over.iter().map(|e| e.id).collect()),
        sorted(ids)
    );
    assert!(taken_over.iter().all(|e| e.attempts == 2));
    Ok(())
}

#[tokio::test]
async fn completing_a_claim_records_each_outcome_with_its_signals() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let other = app.connection(t, "github").await;
    let at = now();
    let processed = delivery(t, "github", "a", at);
    let ignored = delivery(t, "github", "b", at);
    let failed = delivery(t, "github", "c", at);
    store.insert_webhook_event(&processed).await?;
    store.insert_webhook_event(&ignored).await?;
    store.insert_webhook_event(&failed).await?;
    let lease = at + Duration::seconds(60);
    store.claim_webhook_events(at, lease, 10).await?;
    let signals = vec![signal(&conn, "push", 0), signal(&conn, "push", 0)];
    let done_at = at + Duration::seconds(1);

    store
        .complete_webhook_events(
            &[
                EventCompletion {
                    id: processed.id,
                    outcome: EventStatus::Processed,
                    connection_id: Some(conn.id),
                    signals: signals.clone(),
                    error: None,
                },
                EventCompletion {
                    id: ignored.id,
                    outcome: EventStatus::Ignored,
                    connection_id: None,
                    signals: vec![],
                    error: None,
                },
                EventCompletion {
                    id: failed.id,
                    outcome: EventStatus::Failed,
                    connection_id: Some(other.id),
                    signals: vec![],
                    error: Some("the payload was not an issue".into()),
                },
            ],
            lease,
            done_at,
        )
        .await?;

    let read = store
        .get_webhook_event(t, processed.id)
        .await?
        .expect("there");
    assert_eq!(read.status, EventStatus::Processed);
    assert_eq!(read.connection_id, Some(conn.id));
    assert_eq!(read.processed_at, Some(done_at));
    let read = store
        .get_webhook_event(t, ignored.id)
        .await?
        .expect("there");
    assert_eq!(read.status, EventStatus::Ignored);
    assert_eq!(read.connection_id, None);
    assert_eq!(read.processed_at, Some(done_at));
    // Each event gets its own outcome, connection and error, though one batch records them.
    let read = store.get_webhook_event(t, failed.id).await?.expect("there");
    assert_eq!(read.status, EventStatus::Failed);
    assert_eq!(read.connection_id, Some(other.id));
    assert_eq!(
        read.last_error.as_deref(),
        Some("the payload was not an issue")
    );
    assert_eq!(read.processed_at, Some(done_at));
    for s in &signals {
        assert!(store.get_signal(t, s.id).await?.is_some(), "signal stored");
    }
    assert!(store
        .claim_webhook_events(
            lease + Duration::seconds(1),
            lease + Duration::seconds(60),
            10
        )
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn completing_one_event_records_its_outcome_and_error() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let new = delivery(t, "github", "a", at);
    store.insert_webhook_event(&new).await?;
    let lease = at + Duration::seconds(60);
    store.claim_webhook_events(at, lease, 10).await?;

    store
        .complete_webhook_event(
            new.id,
            EventStatus::Failed,
            None,
            &[],
            Some("undecodable body"),
            lease,
            at,
        )
        .await?;

    let read = store.get_webhook_event(t, new.id).await?.expect("there");
    assert_eq!(read.status, EventStatus::Failed);
    assert_eq!(read.last_error.as_deref(), Some("undecodable body"));
    assert_eq!(read.processed_at, Some(at));
    Ok(())
}

/// Claims `new` at `at` until `at + 1s`, then lets a second worker take it over once that
/// lease expired; returns `(stale lease, current lease)`.
async fn taken_over(
    store: &Arc<dyn Store>,
    new: &NewWebhookEvent,
    at: Timestamp,
) -> anyhow::Result<(Timestamp, Timestamp)> {
    store.insert_webhook_event(new).await?;
    let stale = at + Duration::seconds(1);
    assert_eq!(store.claim_webhook_events(at, stale, 10).await?.len(), 1);
    let later = at + Duration::seconds(2);
    let current = later + Duration::seconds(60);
    let again = store.claim_webhook_events(later, current, 10).await?;
    assert_eq!(again.len(), 1, "taken over");
    Ok((stale, current))
}

#[tokio::test]
async fn an_outcome_under_a_stale_lease_does_not_overwrite_the_new_workers() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    let new = delivery(t, "github", "a", at);
    let (stale, current) = taken_over(&store, &new, at).await?;
    let late = at + Duration::seconds(3);

    store
        .complete_webhook_event(
            new.id,
            EventStatus::Failed,
            None,
            &[],
            Some("late"),
            stale,
            late,
        )
        .await?;
    let after_stale = store.get_webhook_event(t, new.id).await?.expect("there");
    store
        .complete_webhook_event(
            new.id,
            EventStatus::Processed,
            Some(conn.id),
            &[signal(&conn, "push", 0)],
            None,
            current,
            late,
        )
        .await?;
    store
        .complete_webhook_event(
            new.id,
            EventStatus::Failed,
            None,
            &[],
            Some("late"),
            stale,
            late,
        )
        .await?;

    assert_eq!(after_stale.status, EventStatus::Pending);
    assert_eq!(after_stale.last_error, None);
    assert_eq!(after_stale.processed_at, None);
    let read = store.get_webhook_event(t, new.id).await?.expect("there");
    assert_eq!(read.status, EventStatus::Processed);
    assert_eq!(read.last_error, None);
    Ok(())
}

#[tokio::test]
async fn a_completion_under_a_stale_lease_stores_no_signals() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    let new = delivery(t, "github", "a", at);
    let (stale, _current) = taken_over(&store, &new, at).await?;
    let late_signal = signal(&conn, "push", 0);

    store
        .complete_webhook_event(
            new.id,
            EventStatus::Processed,
            Some(conn.id),
            std::slice::from_ref(&late_signal),
            None,
            stale,
            at + Duration::seconds(3),
        )
        .await?;

    assert_eq!(store.get_signal(t, late_signal.id).await?, None);
    Ok(())
}

#[tokio::test]
async fn a_retried_event_keeps_its_error_and_is_due_again_at_its_time() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let new = delivery(t, "github", "a", at);
    store.insert_webhook_event(&new).await?;
    let lease = at + Duration::seconds(60);
    store.claim_webhook_events(at, lease, 10).await?;
    let retry_at = at + Duration::minutes(5);

    store
        .retry_webhook_event(new.id, "provider answered 502", lease, retry_at)
        .await?;
    let early = store
        .claim_webhook_events(
            retry_at - Duration::seconds(1),
            retry_at + Duration::minutes(1),
            10,
        )
        .await?;
    let second_lease = retry_at + Duration::minutes(1);
    let due = store
        .claim_webhook_events(retry_at, second_lease, 10)
        .await?;
    store
        .retry_webhook_event(new.id, "stale worker", lease, retry_at + Duration::hours(1))
        .await?;

    assert!(early.is_empty(), "not due before its time");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, new.id);
    assert_eq!(due[0].attempts, 2);
    assert_eq!(due[0].last_error.as_deref(), Some("provider answered 502"));
    let read = store.get_webhook_event(t, new.id).await?.expect("there");
    assert_eq!(read.status, EventStatus::Pending);
    assert_eq!(
        read.last_error.as_deref(),
        Some("provider answered 502"),
        "a retry under another lease writes nothing"
    );
    Ok(())
}

#[tokio::test]
async fn releasing_a_claim_makes_its_pending_events_due_without_counting_the_attempt() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let [a, b, c] = ["a", "b", "c"].map(|key| delivery(t, "github", key, at));
    for new in [&a, &b, &c] {
        store.insert_webhook_event(new).await?;
    }
    let lease = at + Duration::seconds(60);
    assert_eq!(store.claim_webhook_events(at, lease, 10).await?.len(), 3);
    store
        .complete_webhook_event(b.id, EventStatus::Ignored, None, &[], None, lease, at)
        .await?;

    let other_lease = store
        .release_webhook_events(lease + Duration::microseconds(1), None, at)
        .await?;
    let named = store
        .release_webhook_events(lease, Some(&[a.id, b.id]), at)
        .await?;
    let none_named = store.release_webhook_events(lease, Some(&[]), at).await?;
    let second_lease = lease + Duration::seconds(1);
    let reclaimed = store.claim_webhook_events(at, second_lease, 10).await?;
    let the_rest = store.release_webhook_events(lease, None, at).await?;
    let reclaimed_rest = store
        .claim_webhook_events(at, second_lease + Duration::seconds(1), 10)
        .await?;
    let a_under_a_new_lease = store.release_webhook_events(lease, None, at).await?;

    assert_eq!((other_lease, named, none_named), (0, 1, 0));
    assert_eq!(reclaimed.len(), 1);
    assert_eq!((reclaimed[0].id, reclaimed[0].attempts), (a.id, 1));
    assert_eq!(the_rest, 1);
    assert_eq!(reclaimed_rest.len(), 1);
    assert_eq!(
        (reclaimed_rest[0].id, reclaimed_rest[0].attempts),
        (c.id, 1)
    );
    assert_eq!(a_under_a_new_lease, 0);
    let finished = store.get_webhook_event(t, b.id).await?.expect("there");
    assert_eq!(finished.status, EventStatus::Ignored);
    Ok(())
}

#[tokio::test]
async fn connections_for_an_account_are_the_active_ones_of_every_tenant() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let at = now();
    let (t1, t2, t3) = (tenant(), tenant(), tenant());
    let older = store
        .upsert_connection(&upsert(t2, "github", "org-1", at - Duration::minutes(2)))
        .await?
        .expect("new");
    let newer = store
        .upsert_connection(&upsert(t1, "github", "org-1", at - Duration::minutes(1)))
        .await?
        .expect("new");
    let revoked = store
        .upsert_connection(&upsert(t3, "github", "org-1", at))
        .await?
        .expect("new");
    store.revoke_connection(t3, revoked.id, at).await?;
    store
        .upsert_connection(&upsert(t1, "slack", "org-1", at))
        .await?
        .expect("new");
    store
        .upsert_connection(&upsert(t1, "github", "org-2", at))
        .await?
        .expect("new");

    let routed = store.connections_for_account("github", "org-1").await?;

    let ids: Vec<_> = routed.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![older.id, newer.id]);
    Ok(())
}

#[tokio::test]
async fn active_connections_are_the_tenants_active_ones_of_the_provider_oldest_first() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let t0 = now() - Duration::hours(1);
    let newer = app
        .connection_at(t, "github", t0 + Duration::minutes(1))
        .await;
    let older = app.connection_at(t, "github", t0).await;
    let reauth = app.connection_at(t, "github", t0).await;
    store
        .set_connection_status(t, reauth.id, ConnectionStatus::NeedsReauth, None, now())
        .await?;
    app.connection_at(t, "slack", t0).await;
    app.connection_at(tenant(), "github", t0).await;

    let candidates = store.active_connections(t, "github").await?;

    let ids: Vec<_> = candidates.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![older.id, newer.id]);
    Ok(())
}

#[tokio::test]
async fn a_batchs_candidates_are_read_at_once_for_every_tenant_and_provider() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let (t, u) = (tenant(), tenant());
    let t0 = now() - Duration::hours(1);
    let t_newer = app
        .connection_at(t, "github", t0 + Duration::minutes(1))
        .await;
    let t_older = app.connection_at(t, "github", t0).await;
    let revoked = app.connection_at(t, "github", t0).await;
    store
        .set_connection_status(t, revoked.id, ConnectionStatus::Revoked, None, now())
        .await?;
    let t_slack = app.connection_at(t, "slack", t0).await;
    let u_github = app.connection_at(u, "github", t0).await;
    app.connection_at(u, "slack", t0).await;
    app.connection_at(tenant(), "github", t0).await;
    let keys = [
        (t, "github".to_string()),
        (u, "github".to_string()),
        (t, "slack".to_string()),
        (u, "jira".to_string()),
    ];

    let found = store.active_connections_of(&keys).await?;

    let of = |tenant: TenantId, provider: &str| -> Vec<connectors::domain::ConnectionId> {
        found
            .iter()
            .filter(|c| c.tenant_id == tenant && c.provider == provider)
            .map(|c| c.id)
            .collect()
    };
    assert_eq!(of(t, "github"), vec![t_older.id, t_newer.id]);
    assert_eq!(of(u, "github"), vec![u_github.id]);
    assert_eq!(of(t, "slack"), vec![t_slack.id]);
    assert_eq!(found.len(), 4, "nothing of another pair: {found:?}");
    assert!(store.active_connections_of(&[]).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn purging_deletes_ended_events_received_before_the_cut_off_and_nothing_else() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let (ended, pending, recent) = (
        delivery(t, "github", "ended", at - Duration::days(10)),
        delivery(t, "github", "pending", at - Duration::days(10)),
        delivery(t, "github", "recent", at),
    );
    for event in [&ended, &pending, &recent] {
        store.insert_webhook_event(event).await?;
    }
    let claimed = store
        .claim_webhook_events(at, at + Duration::minutes(1), 10)
        .await?;
    assert_eq!(claimed.len(), 3);
    let lease = at + Duration::minutes(1);
    for event in [&ended, &recent] {
        store
            .complete_webhook_event(event.id, EventStatus::Ignored, None, &[], None, lease, at)
            .await?;
    }
    store
        .retry_webhook_event(pending.id, "later", lease, at)
        .await?;

    let purged = store.purge_webhook_events(at - Duration::days(7)).await?;

    assert_eq!(purged, 1);
    assert!(store.get_webhook_event(t, ended.id).await?.is_none());
    assert!(store.get_webhook_event(t, pending.id).await?.is_some());
    assert!(store.get_webhook_event(t, recent.id).await?.is_some());
    Ok(())
}
