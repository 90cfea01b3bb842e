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
