//! Wake-ups over `LISTEN/NOTIFY`. Enqueuing a job notifies a channel in the same statement, so
//! the notification goes out only if, and when, the write commits; stored deliveries and push
//! events are announced after their commit, coalesced ([`super::announce`]). A
//! listener holds one connection of its own (outside the pool) and turns each notification
//! into a [`WakeUp`]. When that connection is lost it reconnects with backoff, warning once
//! per outage, and announces every kind once it listens again, since notifications sent
//! meanwhile are gone.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::mpsc;

use crate::store::{WakeUp, WakeUps};

/// Notified when a delivery is stored in the inbox.
pub(super) const INBOX_CHANNEL: &str = "poblysh_inbox";
/// Notified when a sync job is enqueued.
pub(super) const JOBS_CHANNEL: &str = "poblysh_jobs";
/// Notified when push events have committed.
pub(super) const PUSH_CHANNEL: &str = "poblysh_push";

/// The first pause before reconnecting; doubled after each failure, up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(10);
/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts listening on every channel with connections made from `options`.
pub(super) fn listen(options: PgConnectOptions) -> WakeUps {
    let (sender, receiver) = mpsc::channel(64);
    let feeder = tokio::spawn(feed(options, sender));
    WakeUps::new(receiver, feeder)
}

/// Listens until `wake_ups` is closed, reconnecting whenever the connection is lost.
async fn feed(options: PgConnectOptions, wake_ups: mpsc::Sender<WakeUp>) {
    let mut retry = FIRST_RETRY;
    let mut away = false;
    loop {
        let error = match connect(&options).await {
            Ok(mut listener) => {
                if away {
                    tracing::info!("listening for wake-ups again");
                    away = false;
                } else {
                    tracing::info!("listening for wake-ups");
                }
                retry = FIRST_RETRY;
                if !announce_all(&wake_ups).await {
                    return;
                }
                loop {
                    let kind = match listener.try_recv().await {
                        Ok(Some(notification)) => match notification.channel() {
                            INBOX_CHANNEL => WakeUp::Inbox,
                            JOBS_CHANNEL => WakeUp::Jobs,
                            PUSH_CHANNEL => WakeUp::Push,
                            _ => continue,
                        },
                        // The connection dropped and was made again: anything in between is lost.
                        Ok(None) => {
                            if !announce_all(&wake_ups).await {
                                return;
                            }
                            continue;
                        }
                        Err(err) => break err,
                    };
                    if wake_ups.send(kind).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => err,
        };
        if wake_ups.is_closed() {
            return;
        }
        if !away {
            tracing::warn!(
                error = %error,
                "listening for wake-ups failed; polling until the database answers"
            );
            away = true;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// A listener on every channel, over a connection of its own.
async fn connect(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener
        .listen_all([INBOX_CHANNEL, JOBS_CHANNEL, PUSH_CHANNEL])
        .await?;
    Ok(listener)
}

/// Announces every kind of work; `false` once no one listens.
async fn announce_all(wake_ups: &mpsc::Sender<WakeUp>) -> bool {
    for kind in [WakeUp::Inbox, WakeUp::Jobs, WakeUp::Push] {
        if wake_ups.send(kind).await.is_err() {
            return false;
        }
    }
    true
}
