//! Announcing stored deliveries to the other instances, coalesced. `NOTIFY` makes committing
//! transactions take turns on one cluster-wide lock, so a notification per delivery would cap
//! ingest at the rate of that lock. Instead each stored delivery marks the inbox as having
//! news, and one task sends at most one notification per [`GAP`], after the deliveries it
//! announces have committed.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;

use super::notify::INBOX_CHANNEL;

/// The shortest time between two notifications.
const GAP: Duration = Duration::from_millis(5);

/// The handle stored deliveries announce themselves through.
#[derive(Clone, Debug)]
pub(super) struct Announcer {
    news: mpsc::Sender<()>,
}

impl Announcer {
    /// Starts the announcing task; it ends when the last handle is dropped.
    pub(super) fn start(pool: PgPool) -> Self {
        let (news, pending) = mpsc::channel(1);
        tokio::spawn(announce(pool, pending));
        Self { news }
    }

    /// Marks the inbox as having news (a no-op when news is already waiting).
    pub(super) fn inbox(&self) {
        let _ = self.news.try_send(());
    }
}

async fn announce(pool: PgPool, mut pending: mpsc::Receiver<()>) {
    while pending.recv().await.is_some() {
        if let Err(err) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(INBOX_CHANNEL)
            .execute(&pool)
            .await
        {
            // Listeners fall back to polling; nothing is lost.
            tracing::debug!(error = %err, "could not announce new deliveries");
        }
        tokio::time::sleep(GAP).await;
    }
}
