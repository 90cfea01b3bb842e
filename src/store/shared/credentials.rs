//! A connection's status changes, once for both databases: each write reads the status it
//! replaces (locked until the transaction ends) and reports a change to push endpoints in the
//! same transaction. [`CredentialsDialect`] is the SQL each store runs for the steps.

use async_trait::async_trait;

use super::{Conn, Dialect};
use crate::domain::{
    Connection, ConnectionId, ConnectionStatus, ConnectionUpsert, NewPushEvent, TenantId, Timestamp,
};
use crate::store::StoreError;

/// What a status write does to the connection row.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StatusWrite<'a> {
    /// Sets the status and the last error.
    Set {
        status: ConnectionStatus,
        last_error: Option<&'a str>,
    },
    /// Sets `revoked` and forgets every token, secret and scheduled sync.
    Revoke,
}

/// The statements of a connection's status changes, in one store's SQL.
#[async_trait]
pub(crate) trait CredentialsDialect: Dialect {
    /// Inside the caller's transaction, the status of the tenant's connection to `u`'s provider
    /// account, locked until the transaction ends.
    async fn account_status(
        &self,
        conn: &mut Conn<Self>,
        u: &ConnectionUpsert,
    ) -> Result<Option<ConnectionStatus>, StoreError>;

    /// Inside the caller's transaction, the status of the tenant's connection `id`, locked
    /// until the transaction ends.
    async fn status_of(
        &self,
        conn: &mut Conn<Self>,
        tenant: TenantId,
        id: ConnectionId,
    ) -> Result<Option<ConnectionStatus>, StoreError>;

    /// Inside the caller's transaction, inserts or refreshes the connection `u` describes
    /// (`active`, keeping the refresh token and secrets held when `u` brings none); `None`
    /// when the account is connected under another id.
    async fn upsert_row(
        &self,
        conn: &mut Conn<Self>,
        u: &ConnectionUpsert,
    ) -> Result<Option<Connection>, StoreError>;

    /// Inside the caller's transaction, applies `write` to the tenant's connection `id`.
    async fn write_status(
        &self,
        conn: &mut Conn<Self>,
        tenant: TenantId,
        id: ConnectionId,
        write: StatusWrite<'_>,
        now: Timestamp,
    ) -> Result<Option<Connection>, StoreError>;
}

/// [`crate::store::Store::upsert_connection`]: a new connection is reported as created, a
/// reconnected one as changed when its status was another.
pub(crate) async fn upsert<S: CredentialsDialect>(
    store: &S,
    u: &ConnectionUpsert,
) -> Result<Option<Connection>, StoreError> {
    let mut tx = store.begin_write().await?;
    let previous = store.account_status(&mut tx, u).await?;
    let connection = store.upsert_row(&mut tx, u).await?;
    let mut wrote_events = false;
    if let Some(c) = &connection {
        let event = match previous {
            None => Some(NewPushEvent::connection_created(c)),
            Some(previous) if previous != c.status => {
                Some(NewPushEvent::connection_status_changed(c, previous))
            }
            Some(_) => None,
        };
        wrote_events = event.is_some();
        store.insert_push_events(&mut tx, event.as_slice()).await?;
    }
    tx.commit().await?;
    if wrote_events {
        store.push_events_committed();
    }
    Ok(connection)
}

/// A status change or revocation of the tenant's connection `id`, reported to push endpoints
/// when the status is not the one it replaced.
pub(crate) async fn write_status<S: CredentialsDialect>(
    store: &S,
    tenant: TenantId,
    id: ConnectionId,
    write: StatusWrite<'_>,
    now: Timestamp,
) -> Result<Option<Connection>, StoreError> {
    let mut tx = store.begin_write().await?;
    let previous = store.status_of(&mut tx, tenant, id).await?;
    let connection = store.write_status(&mut tx, tenant, id, write, now).await?;
    let mut wrote_events = false;
    if let (Some(c), Some(previous)) = (&connection, previous) {
        if c.status != previous {
            wrote_events = true;
            let event = NewPushEvent::connection_status_changed(c, previous);
            store.insert_push_events(&mut tx, &[event]).await?;
        }
    }
    tx.commit().await?;
    if wrote_events {
        store.push_events_committed();
    }
    Ok(connection)
}

/// Reads a stored status column.
pub(crate) fn parse_status(status: Option<String>) -> Result<Option<ConnectionStatus>, StoreError> {
    status
        .map(|s| s.parse().map_err(|e| StoreError::corrupt("status", e)))
        .transpose()
}
