//! The PostgreSQL store: for production and for several instances sharing one database.

mod announce;
mod connections;
mod credentials;
mod deliveries;
mod inbox;
mod jobs;
mod notify;
mod oauth_states;
mod push;
mod queue;
mod signals;
mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool, Postgres};

use super::shared::turns::Turns;
use super::shared::{self, Dialect};
use super::{
    migrations, Backend, ConnectionFilter, ConnectionLock, JobFilter, PageRequest, Readiness,
    SignalFilter, Store, StoreError, StoreOptions, WakeUps,
};
use crate::domain::{
    Connection, ConnectionId, ConnectionStatus, ConnectionUpsert, Job, JobId, NewConnection,
    NewJob, NewOAuthState, NewSignal, SealedField, SealedTokens, SealedValue, Signal, SignalId,
    StateConsumption, TenantId, Timestamp,
};

/// A [`Store`] on a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    deliveries: super::shared::deliveries::Deliveries,
    /// Announces committed push events to every instance.
    push_news: announce::Announcer,
    turns: Arc<Turns>,
}

impl PostgresStore {
    /// Connects to `url`, e.g. `postgres://user@127.0.0.1:5432/connectors`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let pool = super::pool::ping_when_idle(PgPoolOptions::new())
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        let inbox = announce::Announcer::start(pool.clone(), notify::INBOX_CHANNEL);
        let deliveries = deliveries::start(pool.clone(), inbox, options.max_connections);
        Ok(Self {
            push_news: announce::Announcer::start(pool.clone(), notify::PUSH_CHANNEL),
            pool,
            deliveries,
            turns: Arc::default(),
        })
    }
}

#[async_trait]
impl Dialect for PostgresStore {
    type Db = Postgres;

    fn write_pool(&self) -> &PgPool {
        &self.pool
    }

    fn turns(&self) -> &Turns {
        &self.turns
    }

    async fn insert_signals(
        &self,
        conn: &mut PgConnection,
        new: &[NewSignal],
    ) -> Result<u64, StoreError> {
        signals::insert_in(conn, new).await
    }

    async fn insert_push_events(
        &self,
        conn: &mut PgConnection,
        events: &[crate::domain::NewPushEvent],
    ) -> Result<(), StoreError> {
        push::insert_events_in(conn, events).await
    }

    fn push_events_committed(&self) {
        self.push_news.news();
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        migrations::postgres().run(&self.pool).await?;
        Ok(())
    }

    async fn readiness(&self) -> Readiness {
        let latest = migrations::latest_version(&migrations::postgres());
        let applied: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
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
    }

    fn wake_ups(&self) -> Option<WakeUps> {
        Some(notify::listen(self.pool.connect_options().as_ref().clone()))
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
        let inserted = signals::insert(&self.pool, signals).await?;
        if inserted > 0 {
            self.push_events_committed();
        }
        Ok(inserted)
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
