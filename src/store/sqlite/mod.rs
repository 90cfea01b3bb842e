//! The SQLite store: the embedded default. WAL journal so readers never wait for the writer,
//! a busy timeout so concurrent writers queue instead of failing. On Unix the database and its
//! `-wal`/`-shm` files are 0600 and a data directory created here 0700 ([`private_files`]):
//! they hold sealed tokens and tenants' signals.

mod checkpoint;
mod connections;
mod credentials;
mod deliveries;
mod inbox;
mod jobs;
mod oauth_states;
mod pages;
mod push;
mod queue;
mod signals;
mod subscriptions;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool};

use super::shared::turns::Turns;
use super::shared::{self, Dialect};
use super::{
    migrations, Backend, ConnectionFilter, ConnectionLock, JobFilter, PageRequest, Readiness,
    SignalFilter, Store, StoreError, StoreOptions,
};
use crate::domain::{
    from_micros, Connection, ConnectionId, ConnectionStatus, ConnectionUpsert, Job, JobId,
    NewConnection, NewJob, NewOAuthState, NewSignal, SealedField, SealedTokens, SealedValue,
    Signal, SignalId, StateConsumption, TenantId, Timestamp,
};

/// A [`Store`] on one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection, kept open, for the writes that take turns on `gate` (and every shared
    /// write transaction). SQLite drops a connection's page cache whenever another connection
    /// has committed since it last read, and the pool hands out its idle connections in turn:
    /// writing always on this one keeps the pages of the tables and indexes being written
    /// cached from one commit to the next, and its prepared statements with them.
    writer: SqlitePool,
    /// Taken by this process's busiest writers (the inbox's deliveries, claims and outcomes; a
    /// sync job's claim, lease, pages, subscription records and finish; push fan-out, claims and
    /// outcomes), so they take turns in order instead of racing for SQLite's lock in its busy
    /// handler, whose sleeps (1, 2, 5, 10 ms and longer) outlast most commits.
    gate: WriteGate,
    deliveries: super::shared::deliveries::Deliveries,
    pages: pages::Pages,
    turns: Arc<Turns>,
    /// Keeps the background checkpoints going while any clone of the store lives.
    _alive: Arc<()>,
}

/// `PRAGMA cache_size`: 16 MiB of page cache per connection, in KiB.
const CACHE_KIB: &str = "-16384";

/// One turn at writing, on the connection kept for writes.
type WriteGate = Arc<tokio::sync::Mutex<()>>;

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`, e.g. `sqlite://data/connectors.db`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Each commit reaches the disk before it returns: a `202` answered after it holds
            // through a power loss, not only a crash of the process. The inbox's group commit
            // shares that sync among the deliveries waiting at the time.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            // The worker thread streams rows through this channel; room for a whole page
            // (the API reads up to 101 rows) spares a thread hand-off per row.
            .row_buffer_size(256)
            .pragma("wal_autocheckpoint", checkpoint::AUTOCHECKPOINT_PAGES)
            // Each connection keeps up to this many KiB of pages (negative: KiB, not pages),
            // so the indexes a write walks stay cached across commits.
            .pragma("cache_size", CACHE_KIB)
            // Temporary tables and statement journals in memory: a multi-row statement inside
            // a transaction (an inbox batch's outcomes, say) journals the pages it changes in
            // case it must be undone alone, and past 64 KiB SQLite spilled that journal into a
            // new temporary file, opened, written and deleted within the statement.
            .pragma("temp_store", "memory");
        private_files(connect.get_filename())
            .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))?;
        let pool = super::pool::ping_when_idle(SqlitePoolOptions::new())
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect.clone())
            .await?;
        let writer = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect)
            .await?;
        let gate = WriteGate::default();
        let deliveries = deliveries::start(writer.clone(), gate.clone());
        let pages = pages::start(writer.clone(), gate.clone());
        let alive = Arc::new(());
        checkpoint::start(pool.clone(), Arc::downgrade(&alive));
        Ok(Self {
            pool,
            writer,
            gate,
            deliveries,
            pages,
            turns: Arc::default(),
            _alive: alive,
        })
    }
}

/// Prepares the files of the database at `path` before SQLite opens it: creates a missing
/// directory with mode 0700 and a missing database file with mode 0600, and narrows an existing
/// database, `-wal` or `-shm` file to 0600 (databases created before this rule were 0644).
///
/// SQLite creates `-wal` and `-shm` with the permissions of the database file (its Unix VFS
/// copies them), so a 0600 database file is what makes those 0600 too. That is more reliable
/// than the process umask, which is shared by every thread and would have to be set before
/// any of them creates a file. An in-memory database has no files and is left alone.
fn private_files(path: &std::path::Path) -> std::io::Result<()> {
    let name = path.to_string_lossy();
    if name.is_empty() || name == ":memory:" || name.starts_with("file:") {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            match std::fs::metadata(&file) {
                Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                    // Best effort: a file another user owns cannot be narrowed by us, and is
                    // not a reason to refuse to start.
                    if let Err(e) =
                        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    {
                        tracing::warn!(file = %file.display(), error = %e, "cannot make the database file private");
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Dialect for SqliteStore {
    type Db = Sqlite;

    fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    fn turns(&self) -> &Turns {
        &self.turns
    }

    async fn insert_signals(
        &self,
        conn: &mut SqliteConnection,
        new: &[NewSignal],
    ) -> Result<u64, StoreError> {
        signals::insert_in(conn, new).await
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'_, Sqlite>, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.gate.lock().await)
    }

    async fn insert_push_events(
        &self,
        conn: &mut SqliteConnection,
        events: &[crate::domain::NewPushEvent],
    ) -> Result<(), StoreError> {
        push::insert_events_in(conn, events).await
    }
}

/// Reads an optional microsecond column back into a timestamp.
fn opt_time(column: &'static str, micros: Option<i64>) -> Result<Option<Timestamp>, StoreError> {
    micros.map(|m| time(column, m)).transpose()
}

/// Reads a microsecond column back into a timestamp.
fn time(column: &'static str, micros: i64) -> Result<Timestamp, StoreError> {
    from_micros(micros).ok_or_else(|| StoreError::corrupt(column, "timestamp out of range"))
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        migrations::sqlite().run(&self.pool).await?;
        Ok(())
    }

    async fn readiness(&self) -> Readiness {
        let latest = migrations::latest_version(&migrations::sqlite());
        let applied: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = 1")
                .fetch_one(&self.pool)
                .await;
        match applied {
            Ok(version) => Readiness {
                reachable: true,
                migrated: version.unwrap_or(0) >= latest,
            },
            Err(sqlx::Error::Database(_)) => Readiness {
                reachable: true,
                migrated: false,
            },
            Err(_) => Readiness {
                reachable: false,
                migrated: false,
            },
        }
    }

    async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    async fn insert_connection(&self, new: &NewConnection) -> Result<Connection, StoreError> {
        connections::insert(&self.pool, new).await
    }

    async fn get_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<Connection>, StoreError> {
        connections::get(&self.pool, tenant, id).await
    }

    async fn list_connections(
        &self,
        tenant: TenantId,
        filter: &ConnectionFilter,
        page: PageRequest,
    ) -> Result<Vec<Connection>, StoreError> {
        connections::list(&self.pool, tenant, filter, page).await
    }

    async fn insert_signals(&self, signals: &[NewSignal]) -> Result<u64, StoreError> {
        signals::insert(&self.pool, signals).await
    }

    async fn get_signal(
        &self,
        tenant: TenantId,
        id: SignalId,
    ) -> Result<Option<Signal>, StoreError> {
        signals::get(&self.pool, tenant, id).await
    }

    async fn list_signals(
        &self,
        tenant: TenantId,
        filter: &SignalFilter,
        page: PageRequest,
    ) -> Result<Vec<Signal>, StoreError> {
        signals::list(&self.pool, tenant, filter, page).await
    }

    async fn insert_job(&self, new: &NewJob) -> Result<Job, StoreError> {
        jobs::insert(&self.pool, new).await
    }

    async fn get_job(&self, tenant: TenantId, id: JobId) -> Result<Option<Job>, StoreError> {
        jobs::get(&self.pool, tenant, id).await
    }

    async fn list_jobs(
        &self,
        tenant: TenantId,
        filter: &JobFilter,
        page: PageRequest,
    ) -> Result<Vec<Job>, StoreError> {
        jobs::list(&self.pool, tenant, filter, page).await
    }
    async fn insert_oauth_state(&self, new: &NewOAuthState) -> Result<(), StoreError> {
        oauth_states::insert(&self.pool, new).await
    }

    async fn consume_oauth_state(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> Result<StateConsumption, StoreError> {
        oauth_states::consume(&self.pool, state_hash, now).await
    }

    async fn open_oauth_state(
        &self,
        state_hash: &[u8],
        now: Timestamp,
    ) -> Result<StateConsumption, StoreError> {
        oauth_states::open(&self.pool, state_hash, now).await
    }

    async fn purge_oauth_states(&self, before: Timestamp) -> Result<u64, StoreError> {
        oauth_states::purge(&self.pool, before).await
    }

    async fn find_connection_id(
        &self,
        tenant: TenantId,
        provider: &str,
        external_account_id: &str,
    ) -> Result<Option<ConnectionId>, StoreError> {
        credentials::find_id(&self.pool, tenant, provider, external_account_id).await
    }

    async fn upsert_connection(
        &self,
        upsert: &ConnectionUpsert,
    ) -> Result<Option<Connection>, StoreError> {
        shared::credentials::upsert(self, upsert).await
    }

    async fn connection_tokens(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<SealedTokens>, StoreError> {
        credentials::tokens(&self.pool, tenant, id).await
    }

    async fn patch_connection_metadata(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        patch: &serde_json::Map<String, serde_json::Value>,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        crate::store::shared::queue::patch_metadata(self, tenant, id, patch, now).await
    }

    async fn connection_secrets(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        credentials::secrets(&self.pool, tenant, id).await
    }

    async fn replace_tokens(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        tokens: &SealedTokens,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        credentials::replace_tokens(&self.pool, tenant, id, tokens, now).await
    }

    async fn set_connection_status(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        status: ConnectionStatus,
        last_error: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Connection>, StoreError> {
        let write = shared::credentials::StatusWrite::Set { status, last_error };
        shared::credentials::write_status(self, tenant, id, write, now).await
    }

    async fn revoke_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
        now: Timestamp,
    ) -> Result<Option<Connection>, StoreError> {
        let write = shared::credentials::StatusWrite::Revoke;
        shared::credentials::write_status(self, tenant, id, write, now).await
    }

    async fn erase_tenant(
        &self,
        tenant: TenantId,
    ) -> Result<crate::store::TenantErasure, StoreError> {
        credentials::erase_tenant(&self.pool, tenant).await
    }

    async fn delete_connection(
        &self,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<bool, StoreError> {
        credentials::delete(&self.pool, tenant, id).await
    }

    async fn connections_needing_refresh(
        &self,
        expiring_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<Connection>, StoreError> {
        credentials::needing_refresh(&self.pool, expiring_before, limit).await
    }

    async fn lock_connection(&self, id: ConnectionId) -> Result<ConnectionLock, StoreError> {
        credentials::lock(&self.pool, id).await
    }

    async fn sealed_values(
        &self,
        field: SealedField,
        after_row: Option<&[u8]>,
        limit: u32,
    ) -> Result<Vec<SealedValue>, StoreError> {
        credentials::sealed_values(&self.pool, field, after_row, limit).await
    }

    async fn replace_sealed(
        &self,
        value: &SealedValue,
        resealed: &[u8],
    ) -> Result<bool, StoreError> {
        credentials::replace_sealed(&self.pool, value, resealed).await
    }
}

/// What the tests of the statements' plans share.
#[cfg(test)]
pub(crate) mod plans {
    use sqlx::Row;

    use super::SqliteStore;
    use crate::store::{Store, StoreOptions};

    /// Checks that a walk over tenants (`store::shared::turns::walk_tenants`), as `walk`
    /// writes it unanchored and anchored, reads `index` and sorts nothing.
    pub(crate) async fn assert_walks_through(walk: fn(bool) -> String, index: &str) {
        for anchored in [false, true] {
            let plan = plan_of(&walk(anchored), anchored.then(uuid::Uuid::nil)).await;
            assert!(plan.contains(&format!("INDEX {index}")), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    /// SQLite's plan for `sql` on a new database, with `?1` bound to 0 (an instant or a
    /// count), `?2` to 128 (a limit) and, when given, `?3` to `third`.
    pub(crate) async fn plan_of(sql: &str, third: Option<uuid::Uuid>) -> String {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = SqliteStore::connect(&url, &StoreOptions { max_connections: 1 })
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&explain).bind(0_i64).bind(128_i64);
        if let Some(third) = third {
            query = query.bind(third);
        }
        let rows = query.fetch_all(&store.pool).await.expect("a plan");
        store.close().await;
        rows.iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    #[tokio::test]
    async fn the_database_and_a_new_data_directory_are_private() {
        let root = tempfile::tempdir().expect("temp dir");
        let data = root.path().join("data");
        let db = data.join("connectors.db");
        let url = format!("sqlite://{}", db.display());
        let store = SqliteStore::connect(&url, &StoreOptions { max_connections: 2 })
            .await
            .expect("opened");
        store.migrate().await.expect("migrated");
        assert_eq!(mode(&data), 0o700);
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        store.close().await;
    }

    #[tokio::test]
    async fn an_existing_database_is_narrowed_to_the_owner() {
        let root = tempfile::tempdir().expect("temp dir");
        let db = root.path().join("connectors.db");
        for suffix in ["", "-wal"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            std::fs::write(&file, b"").expect("written");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        private_files(&db).expect("prepared");
        assert_eq!(mode(&db), 0o600);
        assert_eq!(
            mode(&std::path::PathBuf::from(format!("{}-wal", db.display()))),
            0o600
        );
    }
}
