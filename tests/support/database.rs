//! One database for one test, dropped with it: a SQLite file in a temporary directory, or a new
//! database on the PostgreSQL server `POBLYSH_TEST_DATABASE_URL` names. The one helper every
//! test that needs a database uses: the black-box suite (`tests/it/helpers.rs`, its process
//! tests and browser test) and the engine's unit tests (`src/ingest/sync/tests.rs`) include
//! this file.

use sqlx::{Connection as _, Executor, PgConnection};

/// A database that exists for one test.
pub struct TestDatabase {
    /// The URL the service connects to.
    pub url: String,
    /// A directory of the test's own (the SQLite file, a process's data directory), removed
    /// with the database.
    #[allow(
        dead_code,
        reason = "not every test reads it; it is held to live as long"
    )]
    pub dir: tempfile::TempDir,
    /// The PostgreSQL server and the database's name, to drop it afterwards.
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// On PostgreSQL when `POBLYSH_TEST_DATABASE_URL` is set, else on SQLite.
    pub async fn create() -> Self {
        match std::env::var("POBLYSH_TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => Self::postgres(&admin_url).await,
            _ => Self::sqlite(),
        }
    }

    /// A SQLite database in a fresh directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            url: format!("sqlite://{}", dir.path().join("connectors.db").display()),
            dir,
            postgres: None,
        }
    }

    /// A new database on the PostgreSQL server that `admin_url` reaches.
    pub async fn postgres(admin_url: &str) -> Self {
        let name = format!("poblysh_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|err| {
                panic!("no PostgreSQL at {admin_url} (POBLYSH_TEST_DATABASE_URL picks one): {err}")
            });
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("create test database");
        let mut url = url::Url::parse(admin_url).expect("valid database URL");
        url.set_path(&format!("/{name}"));
        Self {
            url: url.to_string(),
            dir: tempfile::tempdir().expect("temp dir"),
            postgres: Some((admin_url.to_string(), name)),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs inside the test's runtime; a fresh thread gets a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = admin.execute(sql.as_str()).await;
                }
            });
        })
        .join();
    }
}
