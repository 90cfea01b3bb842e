//! The storage contract: signals.

use super::*;

#[tokio::test]
async fn inserting_signals_skips_known_dedupe_keys_and_counts_the_new_ones() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let other = app.connection(t, "github").await;
    let (a, b) = (signal(&conn, "push", 2), signal(&conn, "push", 1));
    let redelivered_a = NewSignal {
        id: connectors::domain::SignalId::generate(),
        title: Some("changed".into()),
        ..a.clone()
    };
    let c = signal(&conn, "push", 0);
    let same_key_elsewhere = NewSignal {
        dedupe_key: a.dedupe_key.clone(),
        ..signal(&other, "push", 0)
    };

    let first_batch = store.insert_signals(&[a.clone(), b.clone()]).await?;
    let second_batch = store
        .insert_signals(&[redelivered_a.clone(), b.clone(), c.clone()])
        .await?;
    let other_connection = store
        .insert_signals(std::slice::from_ref(&same_key_elsewhere))
        .await?;
    let nothing = store.insert_signals(&[]).await?;

    assert_eq!(
        (first_batch, second_batch, other_connection, nothing),
        (2, 1, 1, 0)
    );
    assert_eq!(store.get_signal(t, redelivered_a.id).await?, None);
    let kept = store.get_signal(t, a.id).await?.expect("first one kept");
    assert_eq!(kept.title, a.title);
    assert!(store.get_signal(t, same_key_elsewhere.id).await?.is_some());
    Ok(())
}

#[tokio::test]
async fn a_signal_reads_back_with_its_payload_for_its_tenant_only() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let new = signal(&conn, "pull_request", 3);
    store.insert_signals(std::slice::from_ref(&new)).await?;

    let read = store.get_signal(t, new.id).await?.expect("stored");
    let elsewhere = store.get_signal(tenant(), new.id).await?;

    assert_eq!(elsewhere, None);
    assert_eq!(read.id, new.id);
    assert_eq!(read.tenant_id, t);
    assert_eq!(read.connection_id, conn.id);
    assert_eq!(read.provider, "github");
    assert_eq!(read.kind, "pull_request");
    assert_eq!(read.occurred_at, new.occurred_at);
    assert_eq!(read.received_at, new.received_at);
    assert_eq!(read.actor, new.actor);
    assert_eq!(
        (read.title, read.url, read.external_id),
        (new.title, new.url, new.external_id)
    );
    assert_eq!(read.dedupe_key, new.dedupe_key);
    assert_eq!(read.payload, Some(new.payload));
    Ok(())
}

#[tokio::test]
async fn signals_list_newest_first_by_keyset_with_inclusive_bounds_and_filters() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let github = app.connection(t, "github").await;
    let slack = app.connection(t, "slack").await;
    let t0 = now() - Duration::hours(1);
    let oldest = signal_at(&github, "push", t0);
    let tie_x = signal_at(&github, "push", t0 + Duration::minutes(1));
    let tie_y = signal_at(&github, "push", t0 + Duration::minutes(1));
    let issue = signal_at(&github, "issue", t0 + Duration::minutes(2));
    let message = signal_at(&slack, "message", t0 + Duration::minutes(3));
    let stranger = app.connection(tenant(), "github").await;
    store
        .insert_signals(&[
            oldest.clone(),
            tie_x.clone(),
            tie_y.clone(),
            issue.clone(),
            message.clone(),
            signal_at(&stranger, "push", t0),
        ])
        .await?;
    let mut tied = [tie_x.id, tie_y.id];
    tied.sort();
    let ids = |list: &[connectors::domain::Signal]| list.iter().map(|s| s.id).collect::<Vec<_>>();
    let all = SignalFilter::default();

    let page_one = store.list_signals(t, &all, first(3)).await?;
    let last = page_one.last().expect("a full page");
    let page_two = store
        .list_signals(t, &all, after(last.occurred_at, last.id.0, 10))
        .await?;
    let list = |filter: SignalFilter| {
        let store = store.clone();
        async move { store.list_signals(t, &filter, first(10)).await }
    };

    assert_eq!(ids(&page_one), vec![message.id, issue.id, tied[1]]);
    assert_eq!(ids(&page_two), vec![tied[0], oldest.id]);
    assert!(page_one.iter().all(|s| s.payload.is_none()));
    let by_provider = list(SignalFilter {
        provider: Some("github".into()),
        ..Default::default()
    })
    .await?;
    assert_eq!(
        ids(&by_provider),
        vec![issue.id, tied[1], tied[0], oldest.id]
    );
    let by_connection = list(SignalFilter {
        connection_id: Some(slack.id),
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&by_connection), vec![message.id]);
    let by_kind = list(SignalFilter {
        kind: Some("issue".into()),
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&by_kind), vec![issue.id]);
    let between = list(SignalFilter {
        occurred_after: Some(tie_x.occurred_at),
        occurred_before: Some(issue.occurred_at),
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&between), vec![issue.id, tied[1], tied[0]], "inclusive");
    let with_payload = list(SignalFilter {
        kind: Some("message".into()),
        include_payload: true,
        ..Default::default()
    })
    .await?;
    assert_eq!(with_payload[0].payload, Some(message.payload.clone()));
    Ok(())
}
