//! A subscription's failure, once for both databases: the first failure after it was fine is
//! reported to push endpoints (`subscription.failed`) in the same transaction; a repeated one
//! only refreshes the error and the retry time. [`SubscriptionsDialect`] is each store's SQL.

use async_trait::async_trait;
use uuid::Uuid;

use super::{Conn, Dialect};
use crate::domain::{ConnectionId, NewPushEvent, SubscriptionId, TenantId, Timestamp};
use crate::store::StoreError;

/// A failure to record on a subscription.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure<'a> {
    pub id: SubscriptionId,
    pub error: &'a str,
    pub retry_at: Timestamp,
    pub now: Timestamp,
}

/// Whose subscription became `failed`: tenant, connection, provider and resource.
pub(crate) type Failed = (Uuid, Uuid, String, String);

/// The statements of a subscription's failure, in one store's SQL.
#[async_trait]
pub(crate) trait SubscriptionsDialect: Dialect {
    /// Inside the caller's transaction, marks `failed` a subscription neither `closed` nor
    /// `failed` yet; returns whose it is when it did.
    async fn mark_failed(
        &self,
        conn: &mut Conn<Self>,
        f: &Failure<'_>,
    ) -> Result<Option<Failed>, StoreError>;

    /// Inside the caller's transaction, refreshes the error and retry time of a subscription
    /// already `failed`.
    async fn refresh_failure(
        &self,
        conn: &mut Conn<Self>,
        f: &Failure<'_>,
    ) -> Result<(), StoreError>;
}

/// [`crate::store::SubscriptionStore::fail_subscription`].
pub(crate) async fn fail<S: SubscriptionsDialect>(
    store: &S,
    f: &Failure<'_>,
) -> Result<(), StoreError> {
    let mut tx = store.write_pool().begin().await?;
    let failed = store.mark_failed(&mut tx, f).await?;
    let wrote_event = failed.is_some();
    match failed {
        Some((tenant, connection, provider, resource)) => {
            let event = NewPushEvent::subscription_failed(
                TenantId(tenant),
                ConnectionId(connection),
                &provider,
                &resource,
                f.error,
                f.now,
            );
            store.insert_push_events(&mut tx, &[event]).await?;
        }
        None => store.refresh_failure(&mut tx, f).await?,
    }
    tx.commit().await?;
    if wrote_event {
        store.push_events_committed();
    }
    Ok(())
}
