//! Wake-ups from the database: work that another instance sharing it has just stored.

use tokio::sync::futures::Notified;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// What kind of work was announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WakeUp {
    /// A webhook delivery was stored in the inbox.
    Inbox,
    /// A sync job was enqueued.
    Jobs,
    /// Push events were committed to the outbox.
    Push,
}

/// This process's dispatchers, woken when push events are stored here or announced by another
/// instance. Shared by the whole process: an extra wake-up costs one empty pass.
static PUSH_NEWS: Notify = Notify::const_new();

/// Wakes every dispatcher of this process waiting for push events.
pub fn push_news() {
    PUSH_NEWS.notify_waiters();
}

/// A wake-up for the next [`push_news`]; enable it before looking for work so news that
/// arrives during the look is not missed.
pub fn next_push_news() -> Notified<'static> {
    PUSH_NEWS.notified()
}

/// A stream of wake-ups, fed by a task of the store's that ends when this is dropped.
/// Wake-ups are hints: one may be lost (the connection that carries them dropped), so whoever
/// listens keeps polling too. After such a loss, every kind is announced once.
pub struct WakeUps {
    receiver: mpsc::Receiver<WakeUp>,
    feeder: JoinHandle<()>,
}

impl WakeUps {
    /// The wake-ups `feeder` sends to `receiver`'s sender.
    pub(crate) fn new(receiver: mpsc::Receiver<WakeUp>, feeder: JoinHandle<()>) -> Self {
        Self { receiver, feeder }
    }

    /// The next wake-up; `None` once the feeding task has ended.
    pub async fn recv(&mut self) -> Option<WakeUp> {
        self.receiver.recv().await
    }
}

impl Drop for WakeUps {
    fn drop(&mut self) {
        self.feeder.abort();
    }
}
