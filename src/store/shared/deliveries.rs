//! Storing webhook deliveries by group commit, once for both databases. A commit costs a
//! durable write (an fsync of SQLite's file or of PostgreSQL's WAL) whatever it holds, so
//! committing each delivery alone caps ingest at the rate of those writes. Instead, writer tasks
//! take every delivery waiting at that moment (up to a group's size), store them in one
//! statement and answer each caller after the commit: a delivery is still durable before it is
//! acknowledged, and the cost of a commit is shared by the group.
//!
//! Groups form by themselves: while every writer is busy committing, arriving deliveries wait in
//! the queue, and the next free writer takes them all. Under a light load a delivery is written
//! at once, under a heavy one groups grow up to their limit, with no timer in between.
//! Each store supplies the SQL ([`GroupCommit`]); the rules for failures are here.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use crate::domain::NewWebhookEvent;
use crate::store::StoreError;

/// Deliveries that may wait for a writer before senders wait for room.
const QUEUE: usize = 4096;

/// What a caller learns: the stored event's id, and whether its delivery was a duplicate.
pub(crate) type Stored = (Uuid, bool);

type Reply = oneshot::Sender<Result<Stored, StoreError>>;
type Waiting = Arc<Mutex<mpsc::Receiver<(NewWebhookEvent, Reply)>>>;

/// The SQL of a group commit, in one store's dialect.
#[async_trait]
pub(crate) trait GroupCommit: Send + Sync + 'static {
    /// Stores every delivery of `group` unless its `(tenant, provider, dedupe key)` is there,
    /// all in one transaction, and returns each one's outcome in the order of `group`: its own
    /// id and `false` when it was stored, the stored event's id and `true` when it was a
    /// duplicate (of an event stored before or of another delivery of the same group). Nothing
    /// of the group is stored when it fails.
    async fn commit_group(&self, group: &[&NewWebhookEvent]) -> Result<Vec<Stored>, StoreError>;

    /// Stores one delivery alone, as [`GroupCommit::commit_group`] would.
    async fn commit_one(&self, new: &NewWebhookEvent) -> Result<Stored, StoreError>;

    /// Called after a commit that stored at least one new delivery.
    fn stored_new(&self) {}
}

/// The handle callers store deliveries through.
#[derive(Clone, Debug)]
pub(crate) struct Deliveries {
    queue: mpsc::Sender<(NewWebhookEvent, Reply)>,
}

impl Deliveries {
    /// Starts `writers` writer tasks, each committing up to `max_group` deliveries at a time
    /// through `sql`; they end when the last handle is dropped.
    pub(crate) fn start<C: GroupCommit>(sql: C, writers: usize, max_group: usize) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting: Waiting = Arc::new(Mutex::new(waiting));
        let sql = Arc::new(sql);
        for _ in 0..writers.max(1) {
            tokio::spawn(write(sql.clone(), waiting.clone(), max_group.max(1)));
        }
        Self { queue }
    }

    /// Stores `new` unless its dedupe key is there; answers once the commit holding it is done.
    pub(crate) async fn insert(&self, new: &NewWebhookEvent) -> Result<Stored, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((new.clone(), reply))
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

/// The same "unavailable" for each caller of a failed group.
fn unavailable(err: &StoreError) -> StoreError {
    StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(error_chain(err))))
}

fn error_chain(err: &StoreError) -> String {
    match std::error::Error::source(err) {
        Some(source) => format!("{err}: {source}"),
        None => err.to_string(),
    }
}

/// One writer: takes a group from the queue, commits it, answers its callers, and again.
async fn write<C: GroupCommit>(sql: Arc<C>, waiting: Waiting, max_group: usize) {
    let mut group = Vec::with_capacity(max_group);
    loop {
        // One writer waits on the queue at a time; it lets go as soon as it has its group,
        // so the next one gathers while this one commits.
        if take_group(&waiting, &mut group, max_group).await == 0 {
            return;
        }
        commit(sql.as_ref(), &mut group).await;
    }
}

/// Waits for a delivery, then takes every one waiting behind it, up to `max_group`.
async fn take_group(
    waiting: &Waiting,
    group: &mut Vec<(NewWebhookEvent, Reply)>,
    max_group: usize,
) -> usize {
    let mut waiting = waiting.lock().await;
    if waiting.recv_many(group, max_group).await == 0 {
        return 0;
    }
    if group.len() < max_group {
        // Deliveries whose requests are being read right now join this group rather than
        // paying for the next commit.
        tokio::task::yield_now().await;
        while group.len() < max_group {
            match waiting.try_recv() {
                Ok(delivery) => group.push(delivery),
                Err(_) => break,
            }
        }
    }
    group.len()
}

/// Commits `group` and answers (and empties) it.
async fn commit<C: GroupCommit>(sql: &C, group: &mut Vec<(NewWebhookEvent, Reply)>) {
    let deliveries: Vec<&NewWebhookEvent> = group.iter().map(|(new, _)| new).collect();
    let committed = sql.commit_group(&deliveries).await;
    match committed {
        Ok(outcomes) => {
            if outcomes.iter().any(|(_, duplicate)| !duplicate) {
                sql.stored_new();
            }
            for ((_, reply), outcome) in group.drain(..).zip(outcomes) {
                // A caller that gave up still has its delivery stored; a redelivery is a
                // duplicate.
                let _ = reply.send(Ok(outcome));
            }
        }
        // The database is away: every caller hears so, and its provider redelivers.
        Err(err) if err.is_unavailable() => {
            tracing::warn!(error = %error_chain(&err), deliveries = group.len(), "could not store deliveries");
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(unavailable(&err)));
            }
        }
        // One delivery's failure must not fail the others: each goes again on its own.
        Err(err) => {
            tracing::debug!(error = %error_chain(&err), deliveries = group.len(), "storing deliveries one by one");
            for (new, reply) in group.drain(..) {
                let outcome = sql.commit_one(&new).await;
                if matches!(outcome, Ok((_, false))) {
                    sql.stored_new();
                }
                let _ = reply.send(outcome);
            }
        }
    }
}
