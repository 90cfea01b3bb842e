//! The storage contract: the store itself.

use super::*;

#[tokio::test]
async fn the_store_names_its_backend_and_stays_ready_when_migrated_twice() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let expected = if app.database_url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };

    store.migrate().await?;

    assert_eq!(store.backend(), expected);
    assert_eq!(
        store.readiness().await,
        Readiness {
            reachable: true,
            migrated: true
        }
    );
    Ok(())
}

#[tokio::test]
async fn wake_ups_are_announced_by_postgres_only() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();

    let wake_ups = store.wake_ups();

    match (store.backend(), wake_ups) {
        (Backend::Sqlite, wake_ups) => assert!(wake_ups.is_none(), "SQLite wakes in-process"),
        (Backend::Postgres, None) => panic!("PostgreSQL announces wake-ups"),
        (Backend::Postgres, Some(mut wake_ups)) => {
            // The listener connects on its own: enqueue until one announcement is heard.
            let heard = tokio::time::timeout(StdDuration::from_secs(5), async {
                loop {
                    let conn = app.connection(tenant(), "github").await;
                    store
                        .enqueue_sync(
                            &NewJob::queued(&conn, JobType::Incremental, now()),
                            IfRunning::Join,
                        )
                        .await?;
                    let next = tokio::time::timeout(StdDuration::from_millis(200), wake_ups.recv());
                    if let Ok(Some(WakeUp::Jobs)) = next.await {
                        return anyhow::Ok(());
                    }
                }
            })
            .await;
            heard.expect("a Jobs wake-up within 5 s")?;
        }
    }
    Ok(())
}

/// Waits up to `within` for a `Push` wake-up, skipping other kinds.
async fn heard_push(wake_ups: &mut WakeUps, within: StdDuration) -> bool {
    tokio::time::timeout(within, async {
        while let Some(kind) = wake_ups.recv().await {
            if kind == WakeUp::Push {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[tokio::test]
async fn postgres_announces_committed_push_events_to_every_instance() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let mut wake_ups = match (store.backend(), store.wake_ups()) {
        (Backend::Postgres, Some(wake_ups)) => wake_ups,
        (Backend::Postgres, None) => panic!("PostgreSQL announces wake-ups"),
        // One process: its writers wake its dispatchers and streams directly (`push_wake.rs`).
        (Backend::Sqlite, wake_ups) => {
            assert!(wake_ups.is_none(), "SQLite wakes in-process");
            return Ok(());
        }
    };
    let t = tenant();
    let conn = app.connection(t, "github").await;
    // The listener connects on its own: store signals until one announcement is heard.
    let heard = tokio::time::timeout(StdDuration::from_secs(5), async {
        loop {
            app.signals(vec![signal(&conn, "pr_opened", 1)]).await;
            if heard_push(&mut wake_ups, StdDuration::from_millis(200)).await {
                return;
            }
        }
    })
    .await;
    assert!(heard.is_ok(), "committed signals are announced within 5 s");
    // Listening now: a status change is announced, and so is each later page of signals.
    while heard_push(&mut wake_ups, StdDuration::from_millis(100)).await {}
    store
        .set_connection_status(t, conn.id, ConnectionStatus::NeedsReauth, None, now())
        .await?;
    assert!(
        heard_push(&mut wake_ups, StdDuration::from_secs(2)).await,
        "a status change"
    );
    while heard_push(&mut wake_ups, StdDuration::from_millis(100)).await {}
    app.signals(vec![signal(&conn, "pr_merged", 2)]).await;
    assert!(
        heard_push(&mut wake_ups, StdDuration::from_secs(2)).await,
        "a later signal"
    );
    // Nothing stored, nothing announced: a status set to what it was writes no event.
    while heard_push(&mut wake_ups, StdDuration::from_millis(100)).await {}
    store
        .set_connection_status(t, conn.id, ConnectionStatus::NeedsReauth, None, now())
        .await?;
    assert!(
        !heard_push(&mut wake_ups, StdDuration::from_millis(300)).await,
        "no news"
    );
    Ok(())
}

#[tokio::test]
async fn a_closed_store_answers_unavailable() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();

    store.close().await;
    let read = store
        .get_connection(tenant(), connectors::domain::ConnectionId::generate())
        .await;

    let err = read.expect_err("the pool is closed");
    assert!(err.is_unavailable(), "{err:?}");
    Ok(())
}

/// Marks a migration this release does not have as applied, as a newer release would.
async fn apply_a_newer_migration(database_url: &str) -> Outcome {
    let sql = "INSERT INTO _sqlx_migrations \
               (version, description, success, checksum, execution_time) \
               VALUES (9999, 'from a newer release', TRUE, $1, 0)";
    let checksum = vec![0u8; 48];
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await?;
        sqlx::query(sql).bind(checksum).execute(&pool).await?;
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(database_url).await?;
        sqlx::query(sql).bind(checksum).execute(&pool).await?;
        pool.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_release_is_migrated_again_and_ready() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    apply_a_newer_migration(&app.database_url).await?;

    let migrated = store.migrate().await;

    assert!(
        migrated.is_ok(),
        "an older release starts beside a newer one: {migrated:?}"
    );
    assert_eq!(
        store.readiness().await,
        Readiness {
            reachable: true,
            migrated: true
        }
    );
    Ok(())
}
