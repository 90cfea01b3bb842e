//! The PostgreSQL store: for production and for several instances sharing one database.

mod connections;
mod jobs;
mod signals;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::{
    migrations, Backend, ConnectionFilter, JobFilter, PageRequest, Readiness, SignalFilter, Store,
    StoreError, StoreOptions,
};
use crate::domain::{
    Connection, ConnectionId, Job, JobId, NewConnection, NewJob, NewSignal, Signal, SignalId,
    TenantId,
};

/// A [`Store`] on a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url`, e.g. `postgres://user@127.0.0.1:5432/connectors`.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(Self { pool })
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
}
