//! How both stores hand out pooled connections. By default the pool pings every connection
//! before handing it out: a round trip to PostgreSQL (or a hand-off to SQLite's worker thread)
//! on every request, which under load costs as much as the query it precedes. A connection
//! that has been busy moments ago is known to be alive, so only one that sat idle for a while
//! is pinged first; one that fails the ping is closed and another taken, as before.

use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::{Connection, Database};

/// A connection idle at least this long is pinged before it is handed out.
pub(crate) const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// `options`, pinging only connections that were idle [`PING_AFTER_IDLE`] or longer.
pub(crate) fn ping_when_idle<DB: Database>(options: PoolOptions<DB>) -> PoolOptions<DB> {
    options
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}
