//! The storage contract: every method of `Store` and of its parts `Inbox`, `SyncQueue` and
//! `SubscriptionStore`, asserted as `src/store` documents it, tenant scoping included.
//! Each test gets a fresh, migrated database: SQLite by default, PostgreSQL when
//! `POBLYSH_TEST_DATABASE_URL` is set.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use connectors::domain::{
    now, Connection, ConnectionStatus, ConnectionUpsert, EventStatus, Job, JobStatus, JobType,
    NewJob, NewOAuthState, NewSignal, NewWebhookEvent, OpenedSubscription, SealedField,
    SealedTokens, SealedValue, StateConsumption, SubscriptionStatus, TenantId, Timestamp,
};
use connectors::store::{
    Backend, ConnectionFilter, EventCompletion, Finished, IfRunning, JobFilter, JobFinish, Lease,
    PageCommit, PageKey, PageRequest, Readiness, Recorded, SignalFilter, Store, SyncCommit, WakeUp,
    WakeUps,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::helpers::{job, signal, tenant, TestApp};

type Outcome = anyhow::Result<()>;

/// The first `fetch` rows of a list.
fn first(fetch: u32) -> PageRequest {
    PageRequest { after: None, fetch }
}

/// The rows after `(at, id)`.
fn after(at: Timestamp, id: Uuid, fetch: u32) -> PageRequest {
    PageRequest {
        after: Some(PageKey { at, id }),
        fetch,
    }
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().expect("a JSON object")
}

fn tokens(access: &str, refresh: Option<&str>, expires_at: Option<Timestamp>) -> SealedTokens {
    SealedTokens {
        access_token: Some(access.as_bytes().to_vec()),
        refresh_token: refresh.map(|r| r.as_bytes().to_vec()),
        expires_at,
    }
}

/// What the OAuth callback stores for a first connect of `account`.
fn upsert(t: TenantId, provider: &str, account: &str, at: Timestamp) -> ConnectionUpsert {
    ConnectionUpsert {
        id: connectors::domain::ConnectionId::generate(),
        tenant_id: t,
        provider: provider.into(),
        external_account_id: account.into(),
        external_account_name: Some("octocat".into()),
        scopes: vec!["repo".into()],
        tokens: tokens("access-1", Some("refresh-1"), Some(at + Duration::hours(1))),
        metadata: object(json!({ "site": "eu", "team": "core" })),
        secrets_sealed: Some(b"secrets-1".to_vec()),
        now: at,
    }
}

/// An active connection with tokens and secrets, through the OAuth callback's upsert.
async fn connected(app: &TestApp, t: TenantId, provider: &str) -> anyhow::Result<Connection> {
    let new = upsert(t, provider, &Uuid::new_v4().to_string(), now());
    Ok(app
        .store()
        .upsert_connection(&new)
        .await?
        .expect("a new account"))
}

fn delivery(t: TenantId, provider: &str, key: &str, at: Timestamp) -> NewWebhookEvent {
    NewWebhookEvent {
        id: Uuid::now_v7(),
        tenant_id: t,
        provider: provider.into(),
        connection_id: None,
        dedupe_key: key.into(),
        event_type: Some("push".into()),
        headers: object(json!({ "x-github-event": "push" })),
        body: br#"{"ref":"main"}"#.to_vec(),
        received_at: at,
    }
}

fn oauth_state(t: TenantId, hash: &[u8], at: Timestamp, expires_at: Timestamp) -> NewOAuthState {
    NewOAuthState {
        state_hash: hash.to_vec(),
        tenant_id: t,
        provider: "github".into(),
        pkce_verifier_sealed: Some(b"pkce-1".to_vec()),
        scopes: vec!["repo".into(), "read:org".into()],
        redirect_uri: "https://connectors.example/callback".into(),
        return_to: Some("https://core.example/back".into()),
        created_at: at,
        expires_at,
    }
}

/// A signal of `connection` that occurred at `at`.
fn signal_at(connection: &Connection, kind: &str, at: Timestamp) -> NewSignal {
    NewSignal {
        occurred_at: at,
        ..signal(connection, kind, 0)
    }
}

fn lease<'a>(job: &Job, owner: &'a str) -> Lease<'a> {
    Lease { job: job.id, owner }
}

/// Enqueues a `job_type` job of `connection` due at `at` and claims it for `owner` until
/// `lease_until`.
async fn claimed(
    store: &Arc<dyn Store>,
    connection: &Connection,
    job_type: JobType,
    owner: &str,
    at: Timestamp,
    lease_until: Timestamp,
) -> anyhow::Result<Job> {
    let queued = store
        .enqueue_sync(&NewJob::queued(connection, job_type, at), IfRunning::Join)
        .await?;
    assert!(queued.created, "the lane was free");
    let job = store
        .claim_sync_job(owner, at, lease_until)
        .await?
        .expect("the queued job is due");
    assert_eq!(job.id, queued.job.id);
    Ok(job)
}

mod connections;
mod fairness;
mod inbox;
mod ingest;
mod jobs;
mod oauth_states;
mod push;
mod queue;
mod signals;
mod store;
mod subscriptions;
