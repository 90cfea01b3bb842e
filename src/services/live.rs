//! The open live signal streams of this process (`GET /signals/stream`): counted against
//! the configured cap, and woken together when new events were numbered (by the feed loop in
//! `crate::push::live`).

use std::sync::Arc;

use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The open streams of this process and the news they wait for.
#[derive(Clone)]
pub struct LiveSignals {
    inner: Arc<Inner>,
}

struct Inner {
    /// Notified after new events were numbered.
    sequenced: Notify,
    slots: Arc<Semaphore>,
    max_open: usize,
}

/// One open stream's place; the stream is counted until this is dropped.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
}

/// The gauge of streams open in this process.
const OPEN_GAUGE: &str = "signal_streams_open";

impl LiveSignals {
    /// Room for `max_open` streams at once.
    pub fn new(max_open: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                sequenced: Notify::new(),
                slots: Arc::new(Semaphore::new(max_open)),
                max_open,
            }),
        }
    }

    /// A place for one more stream, or `None` when the cap is reached.
    pub fn open(&self) -> Option<StreamSlot> {
        let permit = self.inner.slots.clone().try_acquire_owned().ok()?;
        metrics::gauge!(OPEN_GAUGE).increment(1.0);
        Some(StreamSlot { _permit: permit })
    }

    /// How many streams are open.
    pub fn open_count(&self) -> usize {
        self.inner
            .max_open
            .saturating_sub(self.inner.slots.available_permits())
    }

    /// A wake-up for the next time new events are numbered; enable it before reading so that
    /// news during the read is not missed.
    pub fn next_sequenced(&self) -> Notified<'_> {
        self.inner.sequenced.notified()
    }

    /// Wakes every stream waiting for news.
    pub fn announce(&self) {
        self.inner.sequenced.notify_waiters();
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_GAUGE).decrement(1.0);
    }
}
