//! The storage contract: the sync queue.

use super::*;

#[tokio::test]
async fn a_connection_has_one_queued_job_per_lane() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let conn = app.connection(tenant(), "github").await;
    let other = app.connection(tenant(), "github").await;
    let at = now();

    let incremental = store
        .enqueue_sync(
            &NewJob::queued(&conn, JobType::Incremental, at),
            IfRunning::Join,
        )
        .await?;
    let full = store
        .enqueue_sync(
            &NewJob::queued(&conn, JobType::Full, at),
            IfRunning::FollowUp,
        )
        .await?;
    let subscription = store
        .enqueue_sync(
            &NewJob::queued(&conn, JobType::Subscription, at),
            IfRunning::Join,
        )
        .await?;
    let second_subscription = store
        .enqueue_sync(
            &NewJob::queued(&conn, JobType::Subscription, at),
            IfRunning::Join,
        )
        .await?;
    let other_connection = store
        .enqueue_sync(
            &NewJob::queued(&other, JobType::Incremental, at),
            IfRunning::Join,
        )
        .await?;

    assert!(incremental.created);
    assert_eq!(incremental.job.status, JobStatus::Queued);
    assert_eq!(incremental.job.job_type, JobType::Incremental);
    assert!(!full.created);
    assert_eq!(full.job, incremental.job, "the queued job answers");
    assert!(subscription.created, "its own lane");
    assert_eq!(subscription.job.job_type, JobType::Subscription);
    assert!(!second_subscription.created);
    assert_eq!(second_subscription.job.id, subscription.job.id);
    assert!(other_connection.created);
    Ok(())
}

#[tokio::test]
async fn enqueuing_beside_a_running_job_joins_it_or_asks_it_for_a_follow_up() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let conn = app.connection(tenant(), "github").await;
    let at = now();
    let running = claimed(
        &store,
        &conn,
        JobType::Incremental,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;

    let joined = store
        .enqueue_sync(&NewJob::queued(&conn, JobType::Full, at), IfRunning::Join)
        .await?;
    let followed = store
        .enqueue_sync(
            &NewJob::queued(&conn, JobType::Webhook, at),
            IfRunning::FollowUp,
        )
        .await?;

    assert!(!joined.created);
    assert_eq!(joined.job.id, running.id);
    assert_eq!(joined.job.follow_up, None);
    assert!(!followed.created);
    assert_eq!(followed.job.id, running.id);
    assert_eq!(followed.job.status, JobStatus::Running);
    assert_eq!(followed.job.follow_up, Some(JobType::Webhook));
    Ok(())
}

#[tokio::test]
async fn claiming_takes_a_due_job_marks_it_running_and_counts_an_attempt() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let due_conn = app.connection(t, "github").await;
    let later_conn = app.connection(t, "github").await;
    let at = now();
    let due = store
        .enqueue_sync(
            &NewJob::queued(&due_conn, JobType::Incremental, at - Duration::minutes(1)),
            IfRunning::Join,
        )
        .await?;
    let later = store
        .enqueue_sync(
            &NewJob::queued(&later_conn, JobType::Incremental, at + Duration::hours(1)),
            IfRunning::Join,
        )
        .await?;
    let lease_until = at + Duration::minutes(1);

    let claimed = store.claim_sync_job("worker-1", at, lease_until).await?;
    let nothing_else = store.claim_sync_job("worker-2", at, lease_until).await?;

    let claimed = claimed.expect("the due job");
    assert_eq!(claimed.id, due.job.id);
    assert_eq!(claimed.status, JobStatus::Running);
    assert_eq!(claimed.started_at, Some(at));
    assert_eq!(claimed.attempts, 1);
    assert!(nothing_else.is_none(), "the other job is not due");
    let still_queued = store.get_job(t, later.job.id).await?.expect("there");
    assert_eq!(still_queued.status, JobStatus::Queued);
    Ok(())
}

#[tokio::test]
async fn a_job_whose_lease_expired_is_taken_over_and_its_first_worker_loses_it() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    let first_lease = at + Duration::seconds(1);
    let job = claimed(
        &store,
        &conn,
        JobType::Incremental,
        "worker-a",
        at,
        first_lease,
    )
    .await?;
    let later = at + Duration::seconds(2);

    let before_expiry = store
        .claim_sync_job("worker-b", at, at + Duration::minutes(1))
        .await?;
    let taken = store
        .claim_sync_job("worker-b", later, later + Duration::minutes(1))
        .await?
        .expect("the expired lease is taken over");
    let extended = store
        .extend_sync_lease(lease(&job, "worker-a"), later + Duration::minutes(5), later)
        .await?;
    let signals = [signal(&conn, "push", 0)];
    let committed = store
        .commit_sync_page(
            lease(&job, "worker-a"),
            conn.id,
            &SyncCommit {
                signals: &signals,
                cursor: &json!({ "page": 2 }),
                metadata: Some(&object(json!({ "site": "us" }))),
            },
            later + Duration::minutes(5),
            later,
        )
        .await?;
    let finished = store
        .finish_sync_job(lease(&job, "worker-a"), JobFinish::Succeeded, later)
        .await?;

    assert!(before_expiry.is_none());
    assert_eq!(taken.id, job.id);
    assert_eq!(taken.attempts, 2);
    assert_eq!(taken.started_at, Some(later));
    assert!(!extended);
    assert_eq!(committed, PageCommit::LeaseLost);
    assert_eq!(finished, Finished::NotOurs);
    assert_eq!(store.sync_cursor(conn.id).await?, None);
    assert_eq!(store.get_signal(t, signals[0].id).await?, None);
    let read = store.get_connection(t, conn.id).await?.expect("there");
    assert!(read.metadata.is_empty());
    assert_eq!(read.last_synced_at, None);
    let job_now = store.get_job(t, job.id).await?.expect("there");
    assert_eq!(job_now.status, JobStatus::Running);
    Ok(())
}

#[tokio::test]
async fn a_lease_is_extended_only_while_it_is_ours() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let conn = app.connection(tenant(), "github").await;
    let at = now();
    let job = claimed(
        &store,
        &conn,
        JobType::Incremental,
        "w",
        at,
        at + Duration::seconds(10),
    )
    .await?;

    let ours = store
        .extend_sync_lease(lease(&job, "w"), at + Duration::minutes(10), at)
        .await?;
    let after_old_expiry = at + Duration::minutes(1);
    let contender = store
        .claim_sync_job(
            "other",
            after_old_expiry,
            after_old_expiry + Duration::minutes(1),
        )
        .await?;
    let not_ours = store
        .extend_sync_lease(lease(&job, "other"), at + Duration::minutes(10), at)
        .await?;
    store
        .finish_sync_job(lease(&job, "w"), JobFinish::Succeeded, at)
        .await?;
    let finished = store
        .extend_sync_lease(lease(&job, "w"), at + Duration::minutes(20), at)
        .await?;

    assert!(ours);
    assert!(contender.is_none(), "the extended lease still holds");
    assert!(!not_ours);
    assert!(!finished, "a finished job has no lease");
    Ok(())
}

#[tokio::test]
async fn committing_a_page_stores_signals_cursor_and_metadata_patch_and_extends_the_lease(
) -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = connected(&app, t, "github").await?;
    let at = now();
    let job = claimed(
        &store,
        &conn,
        JobType::Full,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;
    let cursor_before = store.sync_cursor(conn.id).await?;
    let signals = [signal(&conn, "push", 2), signal(&conn, "push", 1)];
    let patch = object(json!({ "team": null, "region": "us" }));

    let first_page = store
        .commit_sync_page(
            lease(&job, "w"),
            conn.id,
            &SyncCommit {
                signals: &signals,
                cursor: &json!({ "page": 2 }),
                metadata: Some(&patch),
            },
            at + Duration::minutes(10),
            at,
        )
        .await?;
    let after_page_one = store.get_connection(t, conn.id).await?.expect("there");
    let cursor_one = store.sync_cursor(conn.id).await?;
    let repeat = store
        .commit_sync_page(
            lease(&job, "w"),
            conn.id,
            &SyncCommit {
                signals: &signals,
                cursor: &json!({ "page": 3 }),
                metadata: None,
            },
            at + Duration::minutes(10),
            at,
        )
        .await?;
    let contender = store
        .claim_sync_job(
            "other",
            at + Duration::minutes(5),
            at + Duration::minutes(6),
        )
        .await?;

    assert_eq!(cursor_before, None);
    assert_eq!(first_page, PageCommit::Stored(2));
    assert_eq!(cursor_one, Some(json!({ "page": 2 })));
    assert_eq!(
        after_page_one.metadata,
        object(json!({ "site": "eu", "region": "us" })),
        "a null member removes its key"
    );
    for s in &signals {
        assert!(store.get_signal(t, s.id).await?.is_some());
    }
    assert_eq!(repeat, PageCommit::Stored(0), "known signals are skipped");
    assert_eq!(
        store.sync_cursor(conn.id).await?,
        Some(json!({ "page": 3 }))
    );
    let after_page_two = store.get_connection(t, conn.id).await?.expect("there");
    assert_eq!(after_page_two.metadata, after_page_one.metadata);
    assert!(contender.is_none(), "the commit extended the lease");
    Ok(())
}

#[tokio::test]
async fn a_page_of_a_revoked_connection_is_not_committed() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = connected(&app, t, "github").await?;
    let at = now();
    let job = claimed(
        &store,
        &conn,
        JobType::Incremental,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;
    store.revoke_connection(t, conn.id, at).await?;
    let signals = [signal(&conn, "push", 0)];

    let committed = store
        .commit_sync_page(
            lease(&job, "w"),
            conn.id,
            &SyncCommit {
                signals: &signals,
                cursor: &json!({ "page": 2 }),
                metadata: Some(&object(json!({ "site": "us" }))),
            },
            at + Duration::minutes(10),
            at,
        )
        .await?;
    let finished = store
        .finish_sync_job(lease(&job, "w"), JobFinish::Succeeded, at)
        .await?;

    assert_eq!(committed, PageCommit::ConnectionInactive);
    assert_eq!(store.get_signal(t, signals[0].id).await?, None);
    assert_eq!(store.sync_cursor(conn.id).await?, None);
    let read = store.get_connection(t, conn.id).await?.expect("there");
    assert_eq!(read.metadata, conn.metadata);
    assert_eq!(finished, Finished::Done, "the lease is still held");
    Ok(())
}

#[tokio::test]
async fn a_successful_sync_records_when_it_synced_and_clears_the_last_error() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .set_connection_status(t, conn.id, ConnectionStatus::Active, Some("old error"), at)
        .await?;
    let job = claimed(
        &store,
        &conn,
        JobType::Incremental,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;
    let done_at = at + Duration::seconds(5);

    let finished = store
        .finish_sync_job(lease(&job, "w"), JobFinish::Succeeded, done_at)
        .await?;

    assert_eq!(finished, Finished::Done);
    let read_job = store.get_job(t, job.id).await?.expect("there");
    assert_eq!(read_job.status, JobStatus::Succeeded);
    assert_eq!(read_job.finished_at, Some(done_at));
    assert_eq!(read_job.error, None);
    let read = store.get_connection(t, conn.id).await?.expect("there");
    assert_eq!(read.last_synced_at, Some(done_at));
    assert_eq!(read.last_error, None);
    Ok(())
}

#[tokio::test]
async fn a_successful_subscription_job_leaves_the_connections_sync_state_alone() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    store
        .set_connection_status(t, conn.id, ConnectionStatus::Active, Some("sync broke"), at)
        .await?;
    let job = claimed(
        &store,
        &conn,
        JobType::Subscription,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;

    let finished = store
        .finish_sync_job(
            lease(&job, "w"),
            JobFinish::Succeeded,
            at + Duration::seconds(5),
        )
        .await?;

    assert_eq!(finished, Finished::Done);
    let read_job = store.get_job(t, job.id).await?.expect("there");
    assert_eq!(read_job.status, JobStatus::Succeeded);
    let read = store.get_connection(t, conn.id).await?.expect("there");
    assert_eq!(read.last_synced_at, None);
    assert_eq!(read.last_error.as_deref(), Some("sync broke"));
    Ok(())
}

#[tokio::test]
async fn a_follow_up_requested_while_a_sync_ran_is_queued_when_it_succeeds() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    let job = claimed(
        &store,
        &conn,
        JobType::Full,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;
    store
        .enqueue_sync(
            &NewJob::queued(&conn, JobType::Webhook, at),
            IfRunning::FollowUp,
        )
        .await?;
    let done_at = at + Duration::seconds(5);

    let finished = store
        .finish_sync_job(lease(&job, "w"), JobFinish::Succeeded, done_at)
        .await?;

    let Finished::FollowedBy(id) = finished else {
        panic!("expected a follow-up, got {finished:?}");
    };
    let follow_up = store.get_job(t, id).await?.expect("queued");
    assert_eq!(follow_up.status, JobStatus::Queued);
    assert_eq!(follow_up.job_type, JobType::Webhook);
    assert_eq!(follow_up.connection_id, conn.id);
    assert_eq!(follow_up.attempts, 0);
    assert_eq!(follow_up.scheduled_at, done_at);
    let next = store
        .claim_sync_job("w", done_at, done_at + Duration::minutes(1))
        .await?
        .expect("the follow-up is due");
    assert_eq!(next.id, id);
    Ok(())
}

#[tokio::test]
async fn a_follow_up_requested_while_a_subscription_job_ran_is_queued_when_it_succeeds() -> Outcome
{
    let app = TestApp::spawn().await;
    let store = app.store();
    let conn = app.connection(tenant(), "github").await;
    let at = now();
    let job = claimed(
        &store,
        &conn,
        JobType::Subscription,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;
    let marked = store
        .enqueue_sync(
            &NewJob::queued(&conn, JobType::Subscription, at),
            IfRunning::FollowUp,
        )
        .await?;

    let finished = store
        .finish_sync_job(lease(&job, "w"), JobFinish::Succeeded, at)
        .await?;

    assert_eq!(marked.job.follow_up, Some(JobType::Subscription));
    assert!(matches!(finished, Finished::FollowedBy(_)), "{finished:?}");
    Ok(())
}

#[tokio::test]
async fn a_retried_job_goes_back_to_the_queue_with_its_error_and_without_its_follow_up() -> Outcome
{
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    let job = claimed(
        &store,
        &conn,
        JobType::Full,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;
    store
        .enqueue_sync(
            &NewJob::queued(&conn, JobType::Webhook, at),
            IfRunning::FollowUp,
        )
        .await?;
    let retry_at = at + Duration::minutes(5);

    let finished = store
        .finish_sync_job(
            lease(&job, "w"),
            JobFinish::Retry {
                at: retry_at,
                error: "provider answered 503",
            },
            at,
        )
        .await?;
    let early = store
        .claim_sync_job("w", retry_at - Duration::seconds(1), retry_at)
        .await?;
    let again = store
        .claim_sync_job("w", retry_at, retry_at + Duration::minutes(1))
        .await?;

    assert_eq!(finished, Finished::Done);
    assert!(early.is_none(), "not due before its time");
    let again = again.expect("due at its time");
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.scheduled_at, retry_at);
    assert_eq!(again.error.as_deref(), Some("provider answered 503"));
    assert_eq!(again.follow_up, None);
    let read = store.get_connection(t, conn.id).await?.expect("there");
    assert_eq!((read.last_synced_at, read.last_error), (None, None));
    Ok(())
}

#[tokio::test]
async fn a_deferred_job_goes_back_to_the_queue_without_counting_the_attempt() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    let job = claimed(
        &store,
        &conn,
        JobType::Full,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;
    store
        .finish_sync_job(
            lease(&job, "w"),
            JobFinish::Retry {
                at,
                error: "provider answered 503",
            },
            at,
        )
        .await?;
    let lease_until = at + Duration::minutes(1);
    store.claim_sync_job("w", at, lease_until).await?;
    let later = at + Duration::minutes(2);

    let kept_note = store
        .finish_sync_job(
            lease(&job, "w"),
            JobFinish::Defer {
                at: later,
                note: None,
            },
            at,
        )
        .await?;
    let after_first_defer = store.get_job(t, job.id).await?.expect("there");
    store
        .claim_sync_job("w", later, later + Duration::minutes(1))
        .await?;
    store
        .finish_sync_job(
            lease(&job, "w"),
            JobFinish::Defer {
                at: later,
                note: Some("shutting down"),
            },
            later,
        )
        .await?;

    assert_eq!(kept_note, Finished::Done);
    assert_eq!(after_first_defer.status, JobStatus::Queued);
    assert_eq!(
        after_first_defer.attempts, 1,
        "the deferred attempt is not counted"
    );
    assert_eq!(after_first_defer.scheduled_at, later);
    assert_eq!(
        after_first_defer.error.as_deref(),
        Some("provider answered 503")
    );
    let after_second = store.get_job(t, job.id).await?.expect("there");
    assert_eq!(after_second.attempts, 1);
    assert_eq!(after_second.error.as_deref(), Some("shutting down"));
    Ok(())
}

#[tokio::test]
async fn a_failed_job_ends_and_the_connection_shows_why() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let at = now();
    let job = claimed(
        &store,
        &conn,
        JobType::Full,
        "w",
        at,
        at + Duration::minutes(1),
    )
    .await?;
    let done_at = at + Duration::seconds(5);

    let stranger = store
        .finish_sync_job(
            lease(&job, "someone-else"),
            JobFinish::Failed { error: "x" },
            done_at,
        )
        .await?;
    let finished = store
        .finish_sync_job(
            lease(&job, "w"),
            JobFinish::Failed {
                error: "gave up after 5 attempts",
            },
            done_at,
        )
        .await?;
    let next = store
        .enqueue_sync(
            &NewJob::queued(&conn, JobType::Full, done_at),
            IfRunning::Join,
        )
        .await?;

    assert_eq!(stranger, Finished::NotOurs);
    assert_eq!(finished, Finished::Done);
    let read_job = store.get_job(t, job.id).await?.expect("there");
    assert_eq!(read_job.status, JobStatus::Failed);
    assert_eq!(read_job.finished_at, Some(done_at));
    assert_eq!(read_job.error.as_deref(), Some("gave up after 5 attempts"));
    let read = store.get_connection(t, conn.id).await?.expect("there");
    assert_eq!(read.last_error.as_deref(), Some("gave up after 5 attempts"));
    assert_eq!(read.last_synced_at, None);
    assert!(next.created, "the lane is free again");
    Ok(())
}

#[tokio::test]
async fn connections_due_for_sync_are_active_ones_of_the_providers_longest_waiting_first() -> Outcome
{
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let never = app.connection(t, "github").await;
    let waited_long = app.connection(t, "github").await;
    let waited_short = app.connection(t, "github").await;
    let not_yet = app.connection(t, "github").await;
    let other_provider = app.connection(t, "slack").await;
    let revoked = app.connection(t, "github").await;
    store.revoke_connection(t, revoked.id, at).await?;
    for (conn, next) in [
        (&waited_long, at - Duration::minutes(10)),
        (&waited_short, at - Duration::minutes(5)),
        (&not_yet, at + Duration::hours(1)),
    ] {
        assert!(store.advance_next_sync(conn.id, at, next).await?);
    }
    let ids = |list: Vec<Connection>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();

    let github = store.connections_due_for_sync(&["github"], at, 10).await?;
    let limited = store.connections_due_for_sync(&["github"], at, 2).await?;
    let both = store
        .connections_due_for_sync(&["github", "slack"], at, 10)
        .await?;
    let none = store.connections_due_for_sync(&[], at, 10).await?;

    assert_eq!(ids(github), vec![never.id, waited_long.id, waited_short.id]);
    assert_eq!(ids(limited), vec![never.id, waited_long.id]);
    let both = ids(both);
    assert_eq!(both.len(), 4);
    assert!(both.contains(&other_provider.id));
    assert_eq!(&both[2..], &[waited_long.id, waited_short.id]);
    assert!(none.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_connection_is_due_at_its_next_sync_not_a_microsecond_before() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let conn = app.connection(t, "github").await;
    let later = app.connection(t, "github").await;
    assert!(store.advance_next_sync(conn.id, at, at).await?);
    assert!(
        store
            .advance_next_sync(later.id, at, at + Duration::microseconds(1))
            .await?
    );
    let ids = |list: Vec<Connection>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();

    let just_before = store
        .connections_due_for_sync(&["github"], at - Duration::microseconds(1), 10)
        .await?;
    let on_time = store.connections_due_for_sync(&["github"], at, 10).await?;
    let both = store
        .connections_due_for_sync(&["github"], at + Duration::microseconds(1), 10)
        .await?;

    assert!(just_before.is_empty());
    assert_eq!(ids(on_time), vec![conn.id]);
    assert_eq!(ids(both), vec![conn.id, later.id]);
    Ok(())
}

#[tokio::test]
async fn the_next_sync_is_advanced_once_per_due_time() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let conn = app.connection(tenant(), "github").await;
    let at = now();
    let next = at + Duration::minutes(15);

    let first_scheduler = store.advance_next_sync(conn.id, at, next).await?;
    let second_scheduler = store
        .advance_next_sync(conn.id, at, at + Duration::minutes(30))
        .await?;
    let due_list = store.connections_due_for_sync(&["github"], at, 10).await?;
    let once_due = store
        .advance_next_sync(conn.id, next, next + Duration::minutes(15))
        .await?;

    assert!(first_scheduler);
    assert!(!second_scheduler, "another scheduler advanced it first");
    assert!(due_list.is_empty());
    assert!(once_due, "at its time it is due again");
    Ok(())
}

#[tokio::test]
async fn a_batch_moves_each_connection_still_due_to_its_own_next_sync() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let never = app.connection(t, "github").await;
    let waited = app.connection(t, "github").await;
    let not_yet = app.connection(t, "github").await;
    assert!(
        store
            .advance_next_sync(waited.id, at, at - Duration::minutes(5))
            .await?
    );
    assert!(
        store
            .advance_next_sync(not_yet.id, at, at + Duration::hours(1))
            .await?
    );
    let (soon, later) = (at + Duration::minutes(10), at + Duration::minutes(20));

    let mut moved = store
        .advance_next_syncs(
            &[
                (never.id, soon),
                (waited.id, later),
                (not_yet.id, at + Duration::minutes(1)),
            ],
            at,
        )
        .await?;
    let again = store
        .advance_next_syncs(&[(never.id, later), (waited.id, later)], at)
        .await?;
    let none = store.advance_next_syncs(&[], at).await?;
    let ids = |list: Vec<Connection>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let at_soon = ids(store
        .connections_due_for_sync(&["github"], soon, 10)
        .await?);
    let at_later = ids(store
        .connections_due_for_sync(&["github"], later, 10)
        .await?);

    moved.sort_by_key(|c| c.0);
    let mut expected = vec![never.id, waited.id];
    expected.sort_by_key(|c| c.0);
    assert_eq!(
        moved, expected,
        "the connection not yet due stays as it was"
    );
    assert!(
        again.is_empty(),
        "another pass at the same time moves nothing"
    );
    assert!(none.is_empty());
    assert_eq!(at_soon, vec![never.id], "each moved to its own next sync");
    assert_eq!(at_later, vec![never.id, waited.id]);
    Ok(())
}

#[tokio::test]
async fn a_batch_of_jobs_queues_each_unless_its_connection_has_one_active_in_the_lane() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let idle = app.connection(t, "github").await;
    let queued = app.connection(t, "github").await;
    let running = app.connection(t, "github").await;
    let full = app.connection(t, "github").await;
    let subscribing = app.connection(t, "github").await;
    let waiting = app
        .job(job(&queued, JobStatus::Queued, JobType::Incremental, 1))
        .await;
    let busy = app
        .job(job(&running, JobStatus::Running, JobType::Incremental, 1))
        .await;
    app.job(job(&full, JobStatus::Queued, JobType::Full, 1))
        .await;
    app.job(job(
        &subscribing,
        JobStatus::Running,
        JobType::Subscription,
        1,
    ))
    .await;
    let batch: Vec<NewJob> = [&idle, &queued, &running, &full, &subscribing]
        .into_iter()
        .map(|c| NewJob::queued(c, JobType::Incremental, at))
        .collect();

    let created = store.enqueue_syncs(&batch).await?;
    let again = store.enqueue_syncs(&batch).await?;
    let empty = store.enqueue_syncs(&[]).await?;

    assert_eq!(
        created, 2,
        "the idle connection and the one busy only in the subscription lane"
    );
    assert_eq!(again, 0);
    assert_eq!(empty, 0);
    let active = |c: &Connection| {
        let filter = JobFilter {
            connection_id: Some(c.id),
            job_type: Some(JobType::Incremental),
            ..JobFilter::default()
        };
        let store = store.clone();
        async move { store.list_jobs(t, &filter, first(10)).await }
    };
    let on_idle = active(&idle).await?;
    assert_eq!(on_idle.len(), 1);
    assert_eq!(on_idle[0].id, batch[0].id);
    assert_eq!(on_idle[0].status, JobStatus::Queued);
    let on_queued = active(&queued).await?;
    assert_eq!(
        on_queued.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![waiting.id]
    );
    let on_running = active(&running).await?;
    assert_eq!(
        on_running.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![busy.id]
    );
    assert_eq!(
        on_running[0].follow_up, None,
        "a running job is joined, not marked for a follow-up"
    );
    assert!(
        active(&full).await?.is_empty(),
        "a queued full sync holds the sync lane"
    );
    assert_eq!(active(&subscribing).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_batch_of_jobs_naming_a_deleted_connection_queues_none_of_them() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let kept = app.connection(t, "github").await;
    let deleted = app.connection(t, "github").await;
    let at = now();
    let batch: Vec<NewJob> = [&kept, &deleted]
        .into_iter()
        .map(|c| NewJob::queued(c, JobType::Incremental, at))
        .collect();
    store.delete_connection(t, deleted.id).await?;

    let failed = store.enqueue_syncs(&batch).await;
    let one_by_one = store.enqueue_sync(&batch[0], IfRunning::Join).await?;

    assert!(
        failed.is_err(),
        "the statement fails as a whole: {failed:?}"
    );
    assert!(
        one_by_one.created,
        "nothing of the failed batch was queued, so the kept connection's job is new"
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_another_writer_holds_is_left_due_for_the_next_pass() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let at = now();
    let free = app.connection(t, "github").await;
    let held = app.connection(t, "github").await;
    let next = at + Duration::minutes(15);
    let batch = [(free.id, next), (held.id, next)];

    let moved = if app.database_url.starts_with("postgres") {
        // Another transaction holds the row: the batch goes on without it instead of waiting.
        use sqlx::Connection as _;
        let mut other = sqlx::PgConnection::connect(&app.database_url).await?;
        let mut tx = other.begin().await?;
        sqlx::query("SELECT id FROM connections WHERE id = $1 FOR UPDATE")
            .bind(held.id.0)
            .execute(&mut *tx)
            .await?;
        let moved = tokio::time::timeout(
            StdDuration::from_secs(5),
            store.advance_next_syncs(&batch, at),
        )
        .await??;
        tx.rollback().await?;
        moved
    } else {
        // SQLite has one writer at a time: the other writer is a scheduler that moved the
        // connection first, and the batch does not move it again.
        assert!(store.advance_next_sync(held.id, at, next).await?);
        store.advance_next_syncs(&batch, at).await?
    };
    let due = store.connections_due_for_sync(&["github"], at, 10).await?;

    assert_eq!(moved, vec![free.id]);
    let due: Vec<_> = due.into_iter().map(|c| c.id).collect();
    if app.database_url.starts_with("postgres") {
        assert_eq!(
            due,
            vec![held.id],
            "the held connection is due at the next pass"
        );
    } else {
        assert!(due.is_empty(), "both were moved, each once");
    }
    Ok(())
}
