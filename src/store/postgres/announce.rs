//! Announcing news to every instance, coalesced and outside the transactions that made it.
//! A transaction that sends `NOTIFY` takes one cluster-wide lock at commit and holds it until
//! its commit is durable, so every such transaction commits after the one before it, each
//! with its own flush of the WAL: a notification per stored delivery, or per page of synced
//! signals, would cap those writes at the rate of that lock. Instead a writer marks its
//! channel as having news once its transaction has committed, and one task per channel sends
//! at most one notification per [`GAP`], on a connection of its own that writes nothing.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;

/// The shortest time between two notifications.
const GAP: Duration = Duration::from_millis(5);

/// The handle committed writes announce themselves through, one per channel.
#[derive(Clone, Debug)]
pub(super) struct Announcer {
    news: mpsc::Sender<()>,
}

impl Announcer {
    /// Starts the task announcing on `channel`; it ends when the last handle is dropped.
    pub(super) fn start(pool: PgPool, channel: &'static str) -> Self {
        let (news, pending) = mpsc::channel(1);
        tokio::spawn(announce(pool, channel, pending));
        Self { news }
    }

    /// Marks the channel as having news, to call once the write has committed (a no-op when
    /// news is already waiting).
    pub(super) fn news(&self) {
        let _ = self.news.try_send(());
    }
}

async fn announce(pool: PgPool, channel: &'static str, mut pending: mpsc::Receiver<()>) {
    while pending.recv().await.is_some() {
        if let Err(err) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel)
            .execute(&pool)
            .await
        {
            // Listeners fall back to polling; nothing is lost.
            tracing::debug!(error = %err, channel, "could not announce news");
        }
        tokio::time::sleep(GAP).await;
    }
}
