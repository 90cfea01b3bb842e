//! Group commit, once for both databases and for whatever is committed that way (webhook
//! deliveries, sync pages). A commit costs a durable write (an fsync of SQLite's file or of
//! PostgreSQL's WAL) whatever it holds, so committing each item alone caps a writer at the rate
//! of those writes. Instead, writer tasks take every item waiting at that moment (up to a
//! group's size), store them in one transaction and answer each caller after the commit: an
//! item is still durable before its caller hears so, and the cost of a commit is shared by the
//! group.
//!
//! Groups form by themselves: while every writer is busy committing, arriving items wait in the
//! queue, and the next free writer takes them all. Under a light load an item is written at
//! once, under a heavy one groups grow up to their limit, with no timer in between.
//! Each use supplies the SQL ([`GroupCommit`]); the rules for failures are here.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::store::StoreError;

/// Items that may wait for a writer before callers wait for room.
const QUEUE: usize = 4096;

type Reply<O> = oneshot::Sender<Result<O, StoreError>>;
type Waiting<I, O> = Arc<Mutex<mpsc::Receiver<(I, Reply<O>)>>>;

/// The SQL of a group commit, in one store's dialect.
#[async_trait]
pub(crate) trait GroupCommit: Send + Sync + 'static {
    /// What callers hand in.
    type Item: Send + Sync + 'static;
    /// What each caller hears back.
    type Outcome: Send + 'static;

    /// Commits every item of `group` in one transaction and returns each one's outcome in the
    /// order of `group`. Nothing of the group is stored when it fails.
    async fn commit_group(&self, group: &[&Self::Item]) -> Result<Vec<Self::Outcome>, StoreError>;

    /// Commits one item alone, as [`GroupCommit::commit_group`] would.
    async fn commit_one(&self, item: &Self::Item) -> Result<Self::Outcome, StoreError>;

    /// Called after each commit with the outcomes it answers.
    fn committed(&self, _outcomes: &[Self::Outcome]) {}
}

/// The handle callers commit items through.
#[derive(Debug)]
pub(crate) struct Group<I, O> {
    queue: mpsc::Sender<(I, Reply<O>)>,
}

impl<I, O> Clone for Group<I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<I: Send + Sync + 'static, O: Send + 'static> Group<I, O> {
    /// Starts `writers` writer tasks, each committing up to `max_group` items at a time
    /// through `sql`; they end when the last handle is dropped.
    pub(crate) fn start<C>(sql: C, writers: usize, max_group: usize) -> Self
    where
        C: GroupCommit<Item = I, Outcome = O>,
    {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let waiting: Waiting<I, O> = Arc::new(Mutex::new(waiting));
        let sql = Arc::new(sql);
        for _ in 0..writers.max(1) {
            tokio::spawn(write(sql.clone(), waiting.clone(), max_group.max(1)));
        }
        Self { queue }
    }

    /// Commits `item`; answers once the commit holding it is done.
    pub(crate) async fn commit(&self, item: I) -> Result<O, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
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
async fn write<C: GroupCommit>(
    sql: Arc<C>,
    waiting: Waiting<C::Item, C::Outcome>,
    max_group: usize,
) {
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

/// Waits for an item, then takes every one waiting behind it, up to `max_group`.
async fn take_group<I, O>(
    waiting: &Waiting<I, O>,
    group: &mut Vec<(I, Reply<O>)>,
    max_group: usize,
) -> usize {
    let mut waiting = waiting.lock().await;
    if waiting.recv_many(group, max_group).await == 0 {
        return 0;
    }
    if group.len() < max_group {
        // Items whose callers are handing them in right now join this group rather than
        // paying for the next commit.
        tokio::task::yield_now().await;
        while group.len() < max_group {
            match waiting.try_recv() {
                Ok(item) => group.push(item),
                Err(_) => break,
            }
        }
    }
    group.len()
}

/// Commits `group` and answers (and empties) it.
async fn commit<C: GroupCommit>(sql: &C, group: &mut Vec<(C::Item, Reply<C::Outcome>)>) {
    let items: Vec<&C::Item> = group.iter().map(|(item, _)| item).collect();
    let committed = sql.commit_group(&items).await;
    match committed {
        Ok(outcomes) => {
            sql.committed(&outcomes);
            for ((_, reply), outcome) in group.drain(..).zip(outcomes) {
                // A caller that gave up still has its item committed.
                let _ = reply.send(Ok(outcome));
            }
        }
        // The database is away: every caller hears so.
        Err(err) if err.is_unavailable() => {
            tracing::warn!(error = %error_chain(&err), items = group.len(), "could not commit a group");
            for (_, reply) in group.drain(..) {
                let _ = reply.send(Err(unavailable(&err)));
            }
        }
        // One item's failure must not fail the others: each goes again on its own.
        Err(err) => {
            tracing::debug!(error = %error_chain(&err), items = group.len(), "committing a group one by one");
            for (item, reply) in group.drain(..) {
                let outcome = sql.commit_one(&item).await;
                if let Ok(outcome) = &outcome {
                    sql.committed(std::slice::from_ref(outcome));
                }
                let _ = reply.send(outcome);
            }
        }
    }
}
