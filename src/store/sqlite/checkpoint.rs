//! WAL checkpoints off the write path. SQLite's automatic checkpoint runs inside whichever
//! commit crosses its threshold, and copying the log into the database (with its `fsync`)
//! then holds up that writer and every writer queued behind it. A background task checkpoints
//! instead, without blocking writers (`PASSIVE`); the automatic checkpoint stays as a backstop
//! at a higher threshold, should the log outgrow the task.

use std::sync::Weak;
use std::time::Duration;

use sqlx::SqlitePool;

/// Log pages (4 KiB each) after which a commit checkpoints by itself.
pub(super) const AUTOCHECKPOINT_PAGES: &str = "16384";
/// How often the background task checkpoints.
const EVERY: Duration = Duration::from_millis(250);

/// Checkpoints `pool`'s database until the store that `alive` belongs to is dropped or closed.
pub(super) fn start(pool: SqlitePool, alive: Weak<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 || pool.is_closed() {
                break;
            }
            if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %err, "background checkpoint failed");
            }
        }
    });
}
