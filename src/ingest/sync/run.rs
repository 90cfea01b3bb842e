//! Running one claimed job: page by page, each page's signals committed with the cursor that
//! follows it, and every way a step can fail sorted into "retry", "come back later" or "give
//! up".

use std::time::Duration;

use serde_json::Value;

use super::backoff;
use super::worker::SyncWorker;
use crate::connector::Metadata;
use crate::connector::{
    declared_signals, Connector, ProviderCallError, ProviderContext, ProviderSecrets,
    ProviderSettings, RateLimitPolicy, SyncContext, SyncPage,
};
use crate::crypto::Secret;
use crate::domain::{
    merge_metadata, now, Connection, ConnectionId, ConnectionStatus, Job, JobType, NewSignal,
    Timestamp,
};
use crate::services::Services;
use crate::store::{Lease, PageCommit, StoreError, SyncCommit};
use crate::subscriptions::{self, StepError};
use crate::tokens::{self, TokenError};

/// A job stops after this many pages; its cursor is kept and the next run goes on from it.
pub const MAX_PAGES_PER_JOB: u32 = 500;

/// What the pages done so far added up to.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Progress {
    pub pages: u32,
    pub new_signals: u64,
}

/// Why a run stopped before the last page.
#[derive(Debug)]
pub(super) enum Stop {
    /// Another worker holds the job now; write nothing more.
    LeaseLost,
    /// Not a failure: come back after `wait` without counting the attempt.
    Defer {
        wait: Duration,
        note: Option<&'static str>,
    },
    /// The attempt failed.
    Failed(Failure),
}

/// A failed attempt.
#[derive(Debug)]
pub(super) struct Failure {
    pub error: String,
    /// `None`: retrying cannot help (the grant is gone, the connection is not active).
    pub retry: Option<RetryAfter>,
}

/// When a retry may happen at the earliest.
#[derive(Debug, Default)]
pub(super) struct RetryAfter(pub Option<Duration>);

impl Failure {
    fn permanent(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            retry: None,
        }
    }

    fn transient(error: impl Into<String>, not_before: Option<Duration>) -> Self {
        Self {
            error: error.into(),
            retry: Some(RetryAfter(not_before)),
        }
    }

    /// The store failed; the job is retried (or, if the store stays down, its lease expires
    /// and another worker takes it over).
    pub(super) fn store(err: StoreError) -> Self {
        Self::transient(format!("storage failed: {err}"), None)
    }
}

impl From<StoreError> for Stop {
    fn from(err: StoreError) -> Self {
        Stop::Failed(Failure::store(err))
    }
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Self {
        Stop::Failed(failure)
    }
}

fn token_failure(err: TokenError) -> Failure {
    match err {
        TokenError::Missing | TokenError::NeedsReauth => Failure::permanent(err.to_string()),
        TokenError::Provider(ProviderCallError::RateLimited { retry_after }) => {
            Failure::transient(err.to_string(), retry_after.map(Duration::from_secs))
        }
        TokenError::Provider(ProviderCallError::InvalidGrant(_)) => {
            Failure::permanent(err.to_string())
        }
        TokenError::Provider(_) => Failure::transient(err.to_string(), None),
        TokenError::Internal(e) => Failure::transient(format!("token storage failed: {e:#}"), None),
    }
}

/// What a run reads once, before its first page.
struct Run<'a> {
    connector: &'a dyn Connector,
    settings: &'a ProviderSettings,
    policy: RateLimitPolicy,
    connection: Connection,
    secrets: ProviderSecrets,
    cursor: Option<Value>,
    token: Secret,
    /// When this run last set the lease: its claim (the job's `started_at`), a page commit or
    /// an extension. `None` when unknown: the first page then extends the lease, checking it
    /// is still ours, before calling the provider.
    leased_at: Option<Timestamp>,
}

impl SyncWorker {
    /// Runs `job` (claimed by this worker) page by page with `connector`.
    pub(super) async fn execute(
        &self,
        state: &Services,
        connector: Option<&dyn Connector>,
        job: &Job,
        progress: &mut Progress,
    ) -> Result<(), Stop> {
        let lease = Lease {
            job: job.id,
            owner: self.owner(),
        };
        if job.job_type == JobType::Subscription {
            return subscriptions::run(state, job, lease)
                .await
                .map_err(|err| match err {
                    StepError::LeaseLost => Stop::LeaseLost,
                    StepError::Transient { error, not_before } => {
                        Failure::transient(error, not_before).into()
                    }
                    StepError::Permanent(error) => Failure::permanent(error).into(),
                });
        }
        let mut run = prepare(state, connector, job).await?;
        let mut refreshed = false;
        if state.is_shutting_down() {
            return Err(shutting_down());
        }
        let mut fetched = self.fetch_page(state, lease, &mut run).await?;
        loop {
            let page = match fetched {
                Ok(page) => page,
                Err(ProviderCallError::Unauthorized) if !refreshed => {
                    // One refresh, then this page once more.
                    run.token =
                        tokens::refresh_after_unauthorized(state, &run.connection, &run.token)
                            .await
                            .map_err(token_failure)?;
                    refreshed = true;
                    if state.is_shutting_down() {
                        return Err(shutting_down());
                    }
                    fetched = self.fetch_page(state, lease, &mut run).await?;
                    continue;
                }
                Err(err) => return Err(call_failure(state, &run.connection, err).await.into()),
            };
            refreshed = false;
            let more = page.more && progress.pages.saturating_add(1) < MAX_PAGES_PER_JOB;
            let staged = stage(&mut run, page, self.lease_chrono(state));
            if !more || state.is_shutting_down() {
                self.store_page(state, lease, &staged, progress).await?;
                return if more { Err(shutting_down()) } else { Ok(()) };
            }
            // The next page is read while this one is stored, so a job's provider calls follow
            // each other without waiting for the database. The commit extends the lease the
            // next call runs under; the page read meanwhile is kept only if this one is stored.
            let (stored, next) = futures::join!(
                self.store_page(state, lease, &staged, progress),
                self.fetch_page(state, lease, &mut run),
            );
            stored?;
            fetched = next?;
        }
    }

    /// Keeps the lease, waits for the client-side rate limit, and asks the connector for the
    /// page after the run's cursor.
    async fn fetch_page(
        &self,
        state: &Services,
        lease: Lease<'_>,
        run: &mut Run<'_>,
    ) -> Result<Result<SyncPage, ProviderCallError>, Stop> {
        // Keep the lease through the wait for the limiter and the call. After the first page,
        // the commit of the page before extended it already: one set that recently still
        // covers both, and the write spared is a commit per provider call.
        let at = now();
        if self.lease_needs_extending(state, run.leased_at, at) {
            if !state
                .store
                .extend_sync_lease(lease, at + self.lease_chrono(state), at)
                .await?
            {
                return Err(Stop::LeaseLost);
            }
            run.leased_at = Some(at);
        }
        let slug = run.connection.provider.as_str();
        let permit = self
            .limiters()
            .acquire(
                slug,
                run.connection.id,
                run.policy,
                self.max_limiter_wait(state),
            )
            .await
            .map_err(|wait| Stop::Defer {
                wait,
                note: Some("waiting for the client-side rate limit"),
            })?;
        let ctx = SyncContext {
            provider: ProviderContext {
                http: &state.http,
                settings: run.settings,
            },
            connection: &run.connection,
            secrets: &run.secrets,
            access_token: &run.token,
        };
        let result = run.connector.sync_page(ctx, run.cursor.as_ref()).await;
        drop(permit);
        let outcome = result
            .as_ref()
            .map_or_else(ProviderCallError::label, |_| "ok");
        metrics::counter!("provider_calls_total", "provider" => slug.to_string(), "outcome" => outcome)
            .increment(1);
        Ok(result)
    }

    /// Stores a staged page's signals with the cursor (and metadata) that follow them, while
    /// the lease is ours and the connection active.
    async fn store_page(
        &self,
        state: &Services,
        lease: Lease<'_>,
        staged: &Staged,
        progress: &mut Progress,
    ) -> Result<(), Stop> {
        let committed = state
            .store
            .commit_sync_page(
                lease,
                staged.connection,
                &SyncCommit {
                    signals: &staged.signals,
                    cursor: &staged.cursor,
                    metadata: staged.metadata.as_ref(),
                },
                staged.lease_until,
                staged.at,
            )
            .await?;
        let new =
            match committed {
                PageCommit::Stored(new) => new,
                PageCommit::LeaseLost => return Err(Stop::LeaseLost),
                PageCommit::ConnectionInactive => return Err(Failure::permanent(
                    "the connection stopped being active during the sync (disconnected, or its \
                     authorization refused); the page read after that was not stored",
                )
                .into()),
            };
        progress.pages += 1;
        progress.new_signals += new;
        Ok(())
    }
}

/// A page read from the provider, ready to be stored.
struct Staged {
    connection: ConnectionId,
    signals: Vec<NewSignal>,
    cursor: Value,
    metadata: Option<Metadata>,
    at: Timestamp,
    lease_until: Timestamp,
}

/// Turns `page` into what its commit writes, and moves `run` past it: the next call reads
/// from its cursor, with its metadata, under the lease its commit sets.
fn stage(run: &mut Run<'_>, page: SyncPage, lease: chrono::Duration) -> Staged {
    let signals = declared_signals(run.connector.descriptor(), page.signals, &run.connection);
    let at = now();
    if let Some(patch) = &page.metadata {
        merge_metadata(&mut run.connection.metadata, patch.clone());
    }
    run.cursor = Some(page.cursor.clone());
    run.leased_at = Some(at);
    Staged {
        connection: run.connection.id,
        signals,
        cursor: page.cursor,
        metadata: page.metadata,
        at,
        lease_until: at + lease,
    }
}

/// The run stops for shutdown; the job goes back to the queue as it is.
fn shutting_down() -> Stop {
    Stop::Defer {
        wait: Duration::ZERO,
        note: None,
    }
}

/// Checks that the job can run and reads what its run needs.
async fn prepare<'a>(
    state: &'a Services,
    connector: Option<&'a dyn Connector>,
    job: &Job,
) -> Result<Run<'a>, Stop> {
    if job.attempts > job.max_attempts {
        // Only a job whose workers kept dying gets here: each takeover counted an attempt.
        return Err(Failure::permanent(format!(
            "abandoned after {} attempts whose workers stopped before finishing",
            job.max_attempts
        ))
        .into());
    }
    let slug = job.provider.as_str();
    let connector =
        connector.ok_or_else(|| Failure::permanent(format!("provider {slug} is not enabled")))?;
    if !connector.descriptor().sync {
        return Err(Failure::permanent(format!("provider {slug} does not sync")).into());
    }
    let settings = state
        .config
        .provider(slug)
        .ok_or_else(|| Failure::permanent(format!("provider {slug} has no settings")))?;
    let policy = state
        .registry
        .get(slug)
        .map_or(connector.descriptor().rate_limit, |e| e.rate_limit);
    let connection = state
        .store
        .get_connection(job.tenant_id, job.connection_id)
        .await?
        .ok_or_else(|| Failure::permanent("the connection no longer exists"))?;
    if connection.status != ConnectionStatus::Active {
        return Err(Failure::permanent(format!(
            "the connection is {}, not active",
            connection.status
        ))
        .into());
    }
    let cursor = state.store.sync_cursor(connection.id).await?;
    let token = tokens::access_token(state, &connection)
        .await
        .map_err(token_failure)?;
    let secrets = tokens::open_secrets(state, &connection)
        .await
        .map_err(token_failure)?;
    Ok(Run {
        connector,
        settings,
        policy,
        connection,
        secrets,
        cursor,
        token,
        // The claim that started this run set the lease: a run started right after its claim
        // calls the provider at once, as after a page commit, with no write in between.
        leased_at: job.started_at,
    })
}

async fn call_failure(
    state: &Services,
    connection: &Connection,
    err: ProviderCallError,
) -> Failure {
    let error = err.to_string();
    match err {
        ProviderCallError::InvalidGrant(_) => {
            match tokens::mark_needs_reauth(state, connection, &error).await {
                Ok(message) => Failure::permanent(message),
                Err(e) => {
                    tracing::warn!(connection_id = %connection.id, error = %e, "could not mark the connection");
                    Failure::permanent(format!("reauthorization needed: {error}"))
                }
            }
        }
        ProviderCallError::Gone(_) => {
            tracing::warn!(provider = %connection.provider, connection_id = %connection.id, "the provider says the connection's resource is gone");
            if let Err(e) = state
                .store
                .set_connection_status(
                    connection.tenant_id,
                    connection.id,
                    ConnectionStatus::Error,
                    Some(&error),
                    now(),
                )
                .await
            {
                tracing::warn!(connection_id = %connection.id, error = %e, "could not mark the connection");
            }
            Failure::permanent(error)
        }
        ProviderCallError::RateLimited { retry_after } => {
            Failure::transient(error, retry_after.map(Duration::from_secs))
        }
        ProviderCallError::Unauthorized
        | ProviderCallError::Unavailable(_)
        | ProviderCallError::Rejected(_) => Failure::transient(error, None),
    }
}

/// The delay before the retry of a job that has made `attempts` attempts.
pub(super) fn retry_delay(attempts: i32, retry: &RetryAfter) -> Duration {
    backoff::retry_delay(attempts, retry.0)
}
