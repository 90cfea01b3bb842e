//! One run of a connection's `subscription` job: opens each pending subscription and renews
//! each one whose time has come, recording each under the job's lease. Every subscription is
//! tried, even after one fails; the run then reports the first failure, so the job retries
//! with backoff.

use std::time::Duration;

use url::Url;

use super::{renew_at, RETRY_FAILED_AFTER};
use crate::connector::{
    join_path, Connector, Opened, ProviderCallError, ProviderSecrets, SubscriptionContext,
};
use crate::crypto::Secret;
use crate::domain::{now, Connection, ConnectionStatus, Job, OpenedSubscription, Subscription};
use crate::services::{RegistryEntry, Services};
use crate::store::{Lease, Recorded, StoreError};
use crate::tokens::{self, TokenError};

/// How a run stopped short.
#[derive(Debug)]
pub enum StepError {
    /// Another worker holds the job now: write nothing more.
    LeaseLost,
    /// Worth retrying, not before `not_before`.
    Transient {
        error: String,
        not_before: Option<Duration>,
    },
    /// Retrying cannot help (the connection is gone or not active, the grant is lost).
    Permanent(String),
}

impl From<StoreError> for StepError {
    fn from(err: StoreError) -> Self {
        StepError::Transient {
            error: format!("storage failed: {err}"),
            not_before: None,
        }
    }
}

impl From<TokenError> for StepError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Missing | TokenError::NeedsReauth => StepError::Permanent(err.to_string()),
            TokenError::Provider(call) => provider_failure(call),
            TokenError::Internal(e) => StepError::Transient {
                error: format!("token storage failed: {e:#}"),
                not_before: None,
            },
        }
    }
}

fn provider_failure(err: ProviderCallError) -> StepError {
    match err {
        ProviderCallError::InvalidGrant(_) | ProviderCallError::Gone(_) => {
            StepError::Permanent(err.to_string())
        }
        ProviderCallError::RateLimited { retry_after } => StepError::Transient {
            error: err.to_string(),
            not_before: retry_after.map(Duration::from_secs),
        },
        _ => StepError::Transient {
            error: err.to_string(),
            not_before: None,
        },
    }
}

/// What a run works with.
struct Run<'a> {
    services: &'a Services,
    entry: &'a RegistryEntry,
    connection: Connection,
    secrets: ProviderSecrets,
    token: Secret,
    webhook_url: Url,
    lease: Lease<'a>,
}

/// Runs `job` (a `subscription` job, claimed under `lease`): opens or renews every
/// subscription of its connection that is due.
pub async fn run(services: &Services, job: &Job, lease: Lease<'_>) -> Result<(), StepError> {
    let connection = services
        .store
        .get_connection(job.tenant_id, job.connection_id)
        .await?
        .ok_or_else(|| StepError::Permanent("the connection no longer exists".into()))?;
    if connection.status != ConnectionStatus::Active {
        return Err(StepError::Permanent(format!(
            "the connection is {}, not active",
            connection.status
        )));
    }
    let entry = services
        .registry
        .get(&connection.provider)
        .ok_or_else(|| StepError::Permanent(format!("provider {} is not enabled", job.provider)))?;
    let due = services
        .store
        .subscriptions_due(connection.tenant_id, connection.id, now())
        .await?;
    if due.is_empty() {
        return Ok(());
    }
    let mut run = Run {
        services,
        entry,
        token: tokens::access_token(services, &connection).await?,
        secrets: tokens::open_secrets(services, &connection).await?,
        webhook_url: join_path(
            &services.config.public_base_url,
            &format!("/webhooks/{}/{}", connection.provider, connection.tenant_id),
        ),
        connection,
        lease,
    };
    let mut first_failure = None;
    for subscription in &due {
        match run.one(subscription).await {
            Ok(()) => {}
            Err(StepError::LeaseLost) => return Err(StepError::LeaseLost),
            Err(err) => {
                let text = match &err {
                    StepError::Transient { error, .. } | StepError::Permanent(error) => error,
                    StepError::LeaseLost => "",
                };
                services
                    .store
                    .note_subscription_error(subscription.id, text, now())
                    .await?;
                first_failure.get_or_insert(err);
            }
        }
    }
    first_failure.map_or(Ok(()), Err)
}

impl Run<'_> {
    fn connector(&self) -> &dyn Connector {
        self.entry.connector
    }

    fn context<'s>(&'s self, subscription: &'s Subscription) -> SubscriptionContext<'s> {
        SubscriptionContext {
            provider: self.services.provider_context(self.entry),
            connection: &self.connection,
            secrets: &self.secrets,
            access_token: &self.token,
            subscription,
            webhook_url: &self.webhook_url,
        }
    }

    /// Opens or renews one subscription and records it.
    async fn one(&mut self, subscription: &Subscription) -> Result<(), StepError> {
        let at = now();
        let lease_until = at + chrono::Duration::minutes(2);
        if !self
            .services
            .store
            .extend_sync_lease(self.lease, lease_until, at)
            .await?
        {
            return Err(StepError::LeaseLost);
        }
        // A subscription that is open and not yet lapsed is renewed; any other is opened.
        let renewing =
            subscription.external_id.is_some() && subscription.expires_at.is_none_or(|e| e > at);
        let opened = self.call(subscription, renewing).await;
        let kind = if renewing { "renewed" } else { "opened" };
        let outcome = opened
            .as_ref()
            .map_or_else(ProviderCallError::label, |_| "ok");
        metrics::counter!(
            "subscription_steps_total",
            "provider" => self.connection.provider.clone(),
            "step" => kind,
            "outcome" => outcome
        )
        .increment(1);
        let opened = opened.map_err(provider_failure)?;
        self.record(subscription, opened, at).await
    }

    /// Asks the provider, refreshing the token once if it is refused.
    async fn call(
        &mut self,
        subscription: &Subscription,
        renewing: bool,
    ) -> Result<Opened, ProviderCallError> {
        for attempt in 0..2 {
            let ctx = self.context(subscription);
            let result = if renewing {
                self.connector().renew_subscription(ctx).await
            } else {
                self.connector().open_subscription(ctx).await
            };
            match result {
                Err(ProviderCallError::Unauthorized) if attempt == 0 => {
                    self.token = tokens::refresh_after_unauthorized(
                        self.services,
                        &self.connection,
                        &self.token,
                    )
                    .await
                    .map_err(|e| ProviderCallError::Rejected(e.to_string()))?;
                }
                other => return other,
            }
        }
        Err(ProviderCallError::Unauthorized)
    }

    /// Records what the provider opened; closes at the provider what can no longer be kept.
    async fn record(
        &self,
        subscription: &Subscription,
        opened: Opened,
        opened_at: crate::domain::Timestamp,
    ) -> Result<(), StepError> {
        let record = OpenedSubscription {
            renew_at: renew_at(opened_at, opened.expires_at),
            external_id: opened.external_id.clone(),
            expires_at: opened.expires_at,
            state: opened.state.clone(),
        };
        let recorded = self
            .services
            .store
            .record_subscription_opened(self.lease, subscription.id, &record, now())
            .await?;
        let replaced = subscription
            .external_id
            .as_deref()
            .filter(|old| *old != opened.external_id);
        match recorded {
            Recorded::Stored => {
                if let Some(patch) = &opened.metadata {
                    self.services
                        .store
                        .patch_connection_metadata(
                            self.connection.tenant_id,
                            self.connection.id,
                            patch,
                            now(),
                        )
                        .await?;
                }
                if replaced.is_some() {
                    // The provider renewed by opening anew: the old one is closed.
                    self.close_quietly(subscription).await;
                }
                tracing::info!(
                    provider = %self.connection.provider,
                    connection_id = %self.connection.id,
                    subscription_id = %subscription.id,
                    "subscription open"
                );
                Ok(())
            }
            Recorded::Closed | Recorded::LeaseLost => {
                // Disconnected meanwhile, or another worker took over: what was just opened
                // would never be renewed nor closed by anyone else.
                let orphan = Subscription {
                    external_id: Some(opened.external_id),
                    state: opened.state,
                    ..subscription.clone()
                };
                self.close_quietly(&orphan).await;
                if recorded == Recorded::LeaseLost {
                    Err(StepError::LeaseLost)
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn close_quietly(&self, subscription: &Subscription) {
        let ctx = self.context(subscription);
        if let Err(err) = self.connector().close_subscription(ctx).await {
            tracing::warn!(
                provider = %self.connection.provider,
                subscription_id = %subscription.id,
                error = %err,
                "closing a subscription at the provider failed"
            );
        }
    }
}

/// After the job gave up: every subscription of its connection still due is `failed`, with
/// `error`, and tried again after [`RETRY_FAILED_AFTER`].
pub async fn give_up(services: &Services, job: &Job, error: &str) -> Result<(), StoreError> {
    let at = now();
    let retry =
        chrono::Duration::from_std(RETRY_FAILED_AFTER).unwrap_or(chrono::Duration::hours(1));
    for subscription in services
        .store
        .subscriptions_due(job.tenant_id, job.connection_id, at)
        .await?
    {
        tracing::warn!(
            provider = %subscription.provider,
            subscription_id = %subscription.id,
            error,
            "subscription failed"
        );
        services
            .store
            .fail_subscription(subscription.id, error, at + retry, at)
            .await?;
    }
    Ok(())
}
