//! The storage contract: tenants take turns at the job queue and the inbox, so one tenant's
//! backlog never starves another's work.

use super::*;

/// Queues an incremental sync for each of `connections`, due at `at`.
async fn queue_jobs(store: &Arc<dyn Store>, connections: &[Connection], at: Timestamp) -> Outcome {
    for conn in connections {
        store
            .enqueue_sync(
                &NewJob::queued(conn, JobType::Incremental, at),
                IfRunning::Join,
            )
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_tenant_with_one_queued_job_is_served_within_a_turn_of_a_tenant_with_fifty() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let (big, small) = (tenant(), tenant());
    let at = now() - Duration::minutes(10);
    let mut many = Vec::new();
    for _ in 0..50 {
        many.push(app.connection(big, "github").await);
    }
    // The big tenant's jobs are all older than the small tenant's one.
    queue_jobs(&store, &many, at).await?;
    let one = app.connection(small, "github").await;
    queue_jobs(
        &store,
        std::slice::from_ref(&one),
        at + Duration::minutes(5),
    )
    .await?;

    let lease = now() + Duration::minutes(1);
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let job = store
            .claim_sync_job("w", now(), lease)
            .await?
            .expect("a job");
        claimed.push(job.tenant_id);
    }

    assert!(
        claimed[..2].contains(&small),
        "the small tenant waits at most one turn: {claimed:?}"
    );
    assert_eq!(claimed.iter().filter(|t| **t == big).count(), 2);
    Ok(())
}

#[tokio::test]
async fn tenants_alternate_while_each_has_jobs_and_each_tenant_goes_oldest_first() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let (a, b) = (tenant(), tenant());
    let base = now() - Duration::minutes(30);
    let mut expected = std::collections::HashMap::new();
    for (i, t) in [a, a, a, b, b, b].into_iter().enumerate() {
        let conn = app.connection(t, "github").await;
        let at = base + Duration::minutes(i64::try_from(i)?);
        queue_jobs(&store, std::slice::from_ref(&conn), at).await?;
        expected.entry(t).or_insert_with(Vec::new).push(conn.id);
    }

    let lease = now() + Duration::minutes(1);
    let mut order = Vec::new();
    while let Some(job) = store.claim_sync_job("w", now(), lease).await? {
        order.push((job.tenant_id, job.connection_id));
    }

    assert_eq!(order.len(), 6);
    for pair in order.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "turns alternate: {order:?}");
    }
    for (t, connections) in expected {
        let served: Vec<_> = order
            .iter()
            .filter(|(o, _)| *o == t)
            .map(|(_, c)| *c)
            .collect();
        assert_eq!(served, connections, "oldest first within a tenant");
    }
    Ok(())
}

#[tokio::test]
async fn an_abandoned_job_is_taken_over_before_any_queued_one() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now() - Duration::minutes(10);
    let stalled = app.connection(t, "github").await;
    queue_jobs(&store, std::slice::from_ref(&stalled), at).await?;
    let dead = store
        .claim_sync_job("dead", at, at + Duration::seconds(30))
        .await?
        .expect("the stalled job");
    let other = app.connection(tenant(), "github").await;
    queue_jobs(
        &store,
        std::slice::from_ref(&other),
        at - Duration::minutes(5),
    )
    .await?;

    let taken = store
        .claim_sync_job("alive", now(), now() + Duration::minutes(1))
        .await?
        .expect("a job");

    assert_eq!(taken.id, dead.id, "the lapsed lease is taken over first");
    Ok(())
}

#[tokio::test]
async fn a_tenants_one_event_is_in_the_next_batch_behind_another_tenants_backlog() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let (big, small) = (tenant(), tenant());
    let at = now() - Duration::minutes(10);
    for i in 0..300 {
        store
            .insert_webhook_event(&delivery(big, "github", &format!("big-{i}"), at))
            .await?;
    }
    store
        .insert_webhook_event(&delivery(small, "github", "small-1", now()))
        .await?;

    let batch = store
        .claim_webhook_events(now(), now() + Duration::minutes(1), 128)
        .await?;

    assert_eq!(batch.len(), 128, "shares and the fill make a whole batch");
    assert_eq!(
        batch.iter().filter(|e| e.tenant_id == small).count(),
        1,
        "the small tenant's event is not left behind 300 older ones"
    );
    Ok(())
}

#[tokio::test]
async fn tenants_with_backlogs_share_each_batch_equally() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let tenants = [tenant(), tenant(), tenant()];
    let at = now() - Duration::minutes(10);
    for (n, t) in tenants.iter().enumerate() {
        // The first tenant's events are the oldest and the most numerous.
        for i in 0..(60 - 20 * n) {
            let when = at + Duration::seconds(i64::try_from(n * 100 + i)?);
            store
                .insert_webhook_event(&delivery(*t, "github", &format!("e-{n}-{i}"), when))
                .await?;
        }
    }

    let batch = store
        .claim_webhook_events(now(), now() + Duration::minutes(1), 30)
        .await?;

    for t in tenants {
        assert_eq!(batch.iter().filter(|e| e.tenant_id == t).count(), 10);
    }
    Ok(())
}

#[tokio::test]
async fn a_lone_tenant_still_fills_whole_batches_oldest_first() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now() - Duration::minutes(10);
    for i in 0..40 {
        let when = at + Duration::seconds(i);
        store
            .insert_webhook_event(&delivery(t, "github", &format!("e-{i:02}"), when))
            .await?;
    }

    let batch = store
        .claim_webhook_events(now(), now() + Duration::minutes(1), 25)
        .await?;

    let mut keys: Vec<_> = batch.iter().map(|e| e.dedupe_key.clone()).collect();
    keys.sort();
    let oldest: Vec<_> = (0..25).map(|i| format!("e-{i:02}")).collect();
    assert_eq!(keys, oldest);
    Ok(())
}

#[tokio::test]
async fn the_fill_after_the_shares_takes_the_oldest_left_and_no_event_twice() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let (big, small) = (tenant(), tenant());
    let at = now() - Duration::minutes(10);
    // The small tenant's deliveries are stored first but arrived last.
    for i in 0..2 {
        let when = at + Duration::minutes(1) + Duration::seconds(i);
        store
            .insert_webhook_event(&delivery(small, "github", &format!("small-{i}"), when))
            .await?;
    }
    for i in (0..10).rev() {
        let when = at + Duration::seconds(i);
        store
            .insert_webhook_event(&delivery(big, "github", &format!("big-{i}"), when))
            .await?;
    }
    let lease = now() + Duration::minutes(1);

    // Shares of 4 each: the big tenant's 4 oldest and the small tenant's 2; the 2 left of the
    // batch go to the oldest of anyone's, the big tenant's next 2.
    let first = store.claim_webhook_events(now(), lease, 8).await?;
    let second = store.claim_webhook_events(now(), lease, 8).await?;

    let keys = |batch: &[connectors::domain::StoredWebhookEvent]| {
        let mut keys: Vec<String> = batch.iter().map(|e| e.dedupe_key.clone()).collect();
        keys.sort();
        keys
    };
    let mut expected: Vec<String> = (0..6).map(|i| format!("big-{i}")).collect();
    expected.extend(["small-0".to_string(), "small-1".to_string()]);
    expected.sort();
    assert_eq!(keys(&first), expected);
    let rest: Vec<String> = (6..10).map(|i| format!("big-{i}")).collect();
    assert_eq!(keys(&second), rest);
    // Each batch comes in the order its events arrived, whatever order they were stored or
    // leased in: the batch's signals are written in this order.
    let arrival = |batch: &[connectors::domain::StoredWebhookEvent]| {
        batch
            .iter()
            .map(|e| e.dedupe_key.clone())
            .collect::<Vec<_>>()
    };
    let mut in_order: Vec<String> = (0..6).map(|i| format!("big-{i}")).collect();
    in_order.extend(["small-0".to_string(), "small-1".to_string()]);
    assert_eq!(arrival(&first), in_order);
    assert_eq!(arrival(&second), rest);
    assert!(
        first.iter().chain(&second).all(|e| e.attempts == 1),
        "each claimed event counts one attempt"
    );
    Ok(())
}
