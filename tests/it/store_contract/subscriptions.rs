//! The storage contract: subscriptions.

use super::*;

fn resources(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The connection's subscription job, claimed at `at` by worker `w` for a minute.
async fn subscription_job(
    store: &Arc<dyn Store>,
    conn: &Connection,
    at: Timestamp,
) -> anyhow::Result<Job> {
    claimed(
        store,
        conn,
        JobType::Subscription,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await
}

fn opened(external_id: &str, at: Timestamp) -> OpenedSubscription {
    OpenedSubscription {
        external_id: external_id.into(),
        expires_at: Some(at + Duration::days(1)),
        renew_at: Some(at + Duration::hours(20)),
        state: object(json!({ "resource_id": "res-9" })),
    }
}

#[tokio::test]
async fn ensuring_subscriptions_adds_a_pending_row_per_new_resource_once() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();

    let added = store
        .ensure_subscriptions(&conn, &resources(&["changes", "calendar:primary"]), at)
        .await?;
    let again = store
        .ensure_subscriptions(&conn, &resources(&["changes", "calendar:primary"]), at)
        .await?;
    let one_more = store
        .ensure_subscriptions(&conn, &resources(&["changes", "mail"]), at)
        .await?;

    assert_eq!((added, again, one_more), (2, 0, 1));
    let rows = store.connection_subscriptions(t, conn.id).await?;
    let mut names: Vec<_> = rows.iter().map(|s| s.resource.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["calendar:primary", "changes", "mail"]);
    for s in &rows {
        assert_eq!(s.status, SubscriptionStatus::Pending);
        assert_eq!((s.tenant_id, s.connection_id), (t, conn.id));
        assert_eq!(s.provider, "github");
        assert_eq!(s.renew_at, Some(at), "due at once");
        assert_eq!((s.external_id.as_ref(), s.expires_at), (None, None));
        assert!(s.state.is_empty());
        assert_eq!(s.last_error, None);
    }
    Ok(())
}

#[tokio::test]
async fn a_closed_subscription_becomes_pending_again_on_reconnect() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .ensure_subscriptions(&conn, &resources(&["changes"]), at)
        .await?;
    let job = subscription_job(&store, &conn, at).await?;
    let sub = store.connection_subscriptions(t, conn.id).await?.remove(0);
    store
        .record_subscription_opened(lease(&job, "w"), sub.id, &opened("ch-1", at), at)
        .await?;
    store.close_subscriptions(t, conn.id, at).await?;
    let reconnected = at + Duration::minutes(1);

    let pending = store
        .ensure_subscriptions(&conn, &resources(&["changes"]), reconnected)
        .await?;

    assert_eq!(pending, 1);
    let rows = store.connection_subscriptions(t, conn.id).await?;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.id, sub.id);
    assert_eq!(row.status, SubscriptionStatus::Pending);
    assert_eq!(row.renew_at, Some(reconnected));
    assert_eq!((row.external_id.as_ref(), row.expires_at), (None, None));
    assert!(row.state.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_connections_subscriptions_are_read_and_closed_for_its_tenant_only() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .ensure_subscriptions(&conn, &resources(&["changes"]), at)
        .await?;
    let stranger = tenant();

    let listed = store.connection_subscriptions(stranger, conn.id).await?;
    let due = store.subscriptions_due(stranger, conn.id, at).await?;
    let closed = store.close_subscriptions(stranger, conn.id, at).await?;

    assert!(listed.is_empty());
    assert!(due.is_empty());
    assert!(closed.is_empty());
    let rows = store.connection_subscriptions(t, conn.id).await?;
    assert_eq!(rows[0].status, SubscriptionStatus::Pending);
    Ok(())
}

#[tokio::test]
async fn subscriptions_due_are_the_live_ones_whose_renewal_time_came_oldest_first() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .ensure_subscriptions(&conn, &resources(&["pending"]), at)
        .await?;
    store
        .ensure_subscriptions(
            &conn,
            &resources(&["active", "failed"]),
            at + Duration::seconds(1),
        )
        .await?;
    let rows = store.connection_subscriptions(t, conn.id).await?;
    let id_of = |name: &str| rows.iter().find(|s| s.resource == name).expect("row").id;
    let job = subscription_job(&store, &conn, at).await?;
    store
        .record_subscription_opened(lease(&job, "w"), id_of("active"), &opened("ch", at), at)
        .await?;
    store
        .fail_subscription(id_of("failed"), "boom", at + Duration::minutes(10), at)
        .await?;
    let names = |list: Vec<connectors::domain::Subscription>| {
        list.into_iter().map(|s| s.resource).collect::<Vec<_>>()
    };

    let now_due = store.subscriptions_due(t, conn.id, at).await?;
    let soon = store
        .subscriptions_due(t, conn.id, at + Duration::minutes(10))
        .await?;
    let all_due = store
        .subscriptions_due(t, conn.id, at + Duration::hours(20))
        .await?;
    store.close_subscriptions(t, conn.id, at).await?;
    let after_close = store
        .subscriptions_due(t, conn.id, at + Duration::hours(20))
        .await?;

    assert_eq!(names(now_due), vec!["pending"]);
    assert_eq!(names(soon), vec!["pending", "failed"]);
    let mut all_due = names(all_due);
    all_due[1..].sort();
    assert_eq!(all_due, vec!["pending", "active", "failed"]);
    assert!(after_close.is_empty(), "closed ones are never due");
    Ok(())
}

#[tokio::test]
async fn connections_with_subscriptions_due_are_active_ones_only() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let due_a = app.connection(t, "github").await;
    let due_b = app.connection(tenant(), "slack").await;
    let later = app.connection(t, "github").await;
    let reauth = app.connection(t, "github").await;
    app.connection(t, "github").await;
    for conn in [&due_a, &due_b, &reauth] {
        store
            .ensure_subscriptions(conn, &resources(&["changes"]), at)
            .await?;
    }
    store
        .ensure_subscriptions(&later, &resources(&["changes"]), at + Duration::hours(1))
        .await?;
    store
        .set_connection_status(t, reauth.id, ConnectionStatus::NeedsReauth, None, at)
        .await?;
    let mut expected = vec![due_a.id, due_b.id];
    expected.sort();

    let due = store.connections_with_subscriptions_due(at, 10).await?;
    let limited = store.connections_with_subscriptions_due(at, 1).await?;

    let mut ids: Vec<_> = due.iter().map(|c| c.id).collect();
    ids.sort();
    assert_eq!(ids, expected);
    assert_eq!(limited.len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_opened_subscription_is_recorded_while_the_job_lease_is_held() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .ensure_subscriptions(&conn, &resources(&["changes"]), at)
        .await?;
    let sub = store.connection_subscriptions(t, conn.id).await?.remove(0);
    store
        .note_subscription_error(sub.id, "first try timed out", at)
        .await?;
    let job = subscription_job(&store, &conn, at).await?;
    let what = opened("ch-1", at);
    let recorded_at = at + Duration::seconds(1);

    let recorded = store
        .record_subscription_opened(lease(&job, "w"), sub.id, &what, recorded_at)
        .await?;

    assert_eq!(recorded, Recorded::Stored);
    let row = store.connection_subscriptions(t, conn.id).await?.remove(0);
    assert_eq!(row.status, SubscriptionStatus::Active);
    assert_eq!(row.external_id.as_deref(), Some("ch-1"));
    assert_eq!(row.expires_at, what.expires_at);
    assert_eq!(row.renew_at, what.renew_at);
    assert_eq!(row.state, what.state);
    assert_eq!(row.last_error, None);
    assert_eq!(row.updated_at, recorded_at);
    Ok(())
}

#[tokio::test]
async fn an_opened_subscription_is_not_recorded_once_the_lease_is_lost() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .ensure_subscriptions(&conn, &resources(&["changes"]), at)
        .await?;
    let sub = store.connection_subscriptions(t, conn.id).await?.remove(0);
    let job = claimed(
        &store,
        &conn,
        JobType::Subscription,
        "w",
        at,
        at + Duration::seconds(1),
    )
    .await?;
    let later = at + Duration::seconds(2);
    store
        .claim_sync_job("other", later, later + Duration::minutes(1))
        .await?
        .expect("taken over");

    let recorded = store
        .record_subscription_opened(lease(&job, "w"), sub.id, &opened("ch-1", at), later)
        .await?;

    assert_eq!(recorded, Recorded::LeaseLost);
    let row = store.connection_subscriptions(t, conn.id).await?.remove(0);
    assert_eq!(row, sub, "nothing written");
    Ok(())
}

#[tokio::test]
async fn a_subscription_closed_meanwhile_is_not_recorded() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .ensure_subscriptions(&conn, &resources(&["changes"]), at)
        .await?;
    let sub = store.connection_subscriptions(t, conn.id).await?.remove(0);
    let job = subscription_job(&store, &conn, at).await?;
    store.close_subscriptions(t, conn.id, at).await?;

    let recorded = store
        .record_subscription_opened(lease(&job, "w"), sub.id, &opened("ch-1", at), at)
        .await?;

    assert_eq!(recorded, Recorded::Closed);
    let row = store.connection_subscriptions(t, conn.id).await?.remove(0);
    assert_eq!(row.status, SubscriptionStatus::Closed);
    assert_eq!(row.external_id, None);
    Ok(())
}

#[tokio::test]
async fn a_subscription_of_a_connection_no_longer_active_is_not_recorded() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .ensure_subscriptions(&conn, &resources(&["changes"]), at)
        .await?;
    let sub = store.connection_subscriptions(t, conn.id).await?.remove(0);
    let job = subscription_job(&store, &conn, at).await?;
    store
        .set_connection_status(t, conn.id, ConnectionStatus::NeedsReauth, None, at)
        .await?;

    let recorded = store
        .record_subscription_opened(lease(&job, "w"), sub.id, &opened("ch-1", at), at)
        .await?;

    assert_eq!(recorded, Recorded::Closed);
    let row = store.connection_subscriptions(t, conn.id).await?.remove(0);
    assert_eq!(row, sub, "nothing written");
    Ok(())
}

#[tokio::test]
async fn noting_an_error_keeps_the_subscriptions_status_and_skips_closed_ones() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let open = app.connection(t, "github").await;
    let closed = app.connection(t, "github").await;
    let at = now();
    for conn in [&open, &closed] {
        store
            .ensure_subscriptions(conn, &resources(&["changes"]), at)
            .await?;
    }
    store.close_subscriptions(t, closed.id, at).await?;
    let sub = store.connection_subscriptions(t, open.id).await?.remove(0);
    let gone = store
        .connection_subscriptions(t, closed.id)
        .await?
        .remove(0);
    let noted_at = at + Duration::seconds(1);

    store
        .note_subscription_error(sub.id, "provider timed out", noted_at)
        .await?;
    store
        .note_subscription_error(gone.id, "provider timed out", noted_at)
        .await?;

    let row = store.connection_subscriptions(t, open.id).await?.remove(0);
    assert_eq!(row.status, SubscriptionStatus::Pending);
    assert_eq!(row.last_error.as_deref(), Some("provider timed out"));
    assert_eq!(row.renew_at, sub.renew_at);
    assert_eq!(row.updated_at, noted_at);
    let untouched = store
        .connection_subscriptions(t, closed.id)
        .await?
        .remove(0);
    assert_eq!(untouched, gone);
    Ok(())
}

#[tokio::test]
async fn a_failed_subscription_is_tried_again_later_and_closed_ones_stay_closed() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let open = app.connection(t, "github").await;
    let closed = app.connection(t, "github").await;
    let at = now();
    for conn in [&open, &closed] {
        store
            .ensure_subscriptions(conn, &resources(&["changes"]), at)
            .await?;
    }
    store.close_subscriptions(t, closed.id, at).await?;
    let sub = store.connection_subscriptions(t, open.id).await?.remove(0);
    let gone = store
        .connection_subscriptions(t, closed.id)
        .await?
        .remove(0);
    let retry_at = at + Duration::minutes(10);

    store
        .fail_subscription(sub.id, "provider answered garbage", retry_at, at)
        .await?;
    store
        .fail_subscription(gone.id, "provider answered garbage", retry_at, at)
        .await?;

    let row = store.connection_subscriptions(t, open.id).await?.remove(0);
    assert_eq!(row.status, SubscriptionStatus::Failed);
    assert_eq!(row.last_error.as_deref(), Some("provider answered garbage"));
    assert_eq!(row.renew_at, Some(retry_at));
    let untouched = store
        .connection_subscriptions(t, closed.id)
        .await?
        .remove(0);
    assert_eq!(untouched, gone);
    Ok(())
}

#[tokio::test]
async fn closing_subscriptions_returns_them_once() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .ensure_subscriptions(&conn, &resources(&["changes", "mail"]), at)
        .await?;
    let job = subscription_job(&store, &conn, at).await?;
    let mail = store
        .connection_subscriptions(t, conn.id)
        .await?
        .into_iter()
        .find(|s| s.resource == "mail")
        .expect("row");
    store
        .record_subscription_opened(lease(&job, "w"), mail.id, &opened("ch-mail", at), at)
        .await?;
    let closed_at = at + Duration::seconds(1);

    let closed = store.close_subscriptions(t, conn.id, closed_at).await?;
    let again = store.close_subscriptions(t, conn.id, closed_at).await?;

    let mut names: Vec<_> = closed.iter().map(|s| s.resource.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["changes", "mail"]);
    for s in &closed {
        assert_eq!(s.status, SubscriptionStatus::Closed);
        assert_eq!(s.renew_at, None);
        assert_eq!(s.updated_at, closed_at);
    }
    let mail = closed.iter().find(|s| s.resource == "mail").expect("mail");
    assert_eq!(
        mail.external_id.as_deref(),
        Some("ch-mail"),
        "kept, to close it at the provider"
    );
    assert!(again.is_empty());
    Ok(())
}

#[tokio::test]
async fn subscriptions_are_counted_by_provider_and_status() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let at = now();
    let github = app.connection(tenant(), "github").await;
    let slack = app.connection(tenant(), "slack").await;
    store
        .ensure_subscriptions(&github, &resources(&["a", "b", "c"]), at)
        .await?;
    store
        .ensure_subscriptions(&slack, &resources(&["x"]), at)
        .await?;
    let b = store
        .connection_subscriptions(github.tenant_id, github.id)
        .await?
        .into_iter()
        .find(|s| s.resource == "b")
        .expect("row");
    store.fail_subscription(b.id, "boom", at, at).await?;

    let mut counts: Vec<(String, &str, u64)> = store
        .count_subscriptions()
        .await?
        .into_iter()
        .map(|(provider, status, n)| (provider, status.as_str(), n))
        .collect();
    counts.sort();

    assert_eq!(
        counts,
        vec![
            ("github".to_string(), "failed", 1),
            ("github".to_string(), "pending", 2),
            ("slack".to_string(), "pending", 1),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_live_subscription_is_found_by_its_external_id_for_its_tenant_and_provider_only(
) -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .ensure_subscriptions(&conn, &resources(&["changes"]), at)
        .await?;
    let unopened = store.live_subscription(t, "github", "ch-1").await?;
    let job = subscription_job(&store, &conn, at).await?;
    let sub = store.connection_subscriptions(t, conn.id).await?.remove(0);
    store
        .record_subscription_opened(lease(&job, "w"), sub.id, &opened("ch-1", at), at)
        .await?;

    let found = store.live_subscription(t, "github", "ch-1").await?;
    let stranger = store.live_subscription(tenant(), "github", "ch-1").await?;
    let other_provider = store.live_subscription(t, "jira", "ch-1").await?;
    let other_id = store.live_subscription(t, "github", "ch-2").await?;
    store.close_subscriptions(t, conn.id, at).await?;
    let after_close = store.live_subscription(t, "github", "ch-1").await?;

    assert!(unopened.is_none(), "not opened yet");
    let found = found.expect("the open subscription");
    assert_eq!((found.id, found.connection_id), (sub.id, conn.id));
    assert_eq!(found.state["resource_id"], "res-9");
    assert!(stranger.is_none(), "another tenant's");
    assert!(other_provider.is_none());
    assert!(other_id.is_none());
    assert!(after_close.is_none(), "closed");
    Ok(())
}
