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
