//! The push gauges read from the store when metrics are scraped rather than kept after every
//! attempt: `push_endpoint_backlog`, pending deliveries per endpoint, counted in one statement
//! (a series for every endpoint that exists and none for one deleted), and
//! `push_outbox_waiting`, the recorded events fan-out has yet to reach.

use std::fmt::Write;

use crate::store::{Store, StoreError};

/// The gauges in the Prometheus text format: the backlog one line per endpoint, then the
/// outbox.
pub async fn render(store: &dyn Store) -> Result<String, StoreError> {
    let backlogs = store.endpoint_backlogs().await?;
    let waiting = store.outbox_waiting().await?;
    let mut text = String::from(
        "# HELP push_endpoint_backlog Deliveries pending per push endpoint.\n\
         # TYPE push_endpoint_backlog gauge\n",
    );
    for (endpoint, pending) in backlogs {
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "push_endpoint_backlog{{endpoint=\"{endpoint}\"}} {pending}"
        );
    }
    let _ = write!(
        text,
        "# HELP push_outbox_waiting Recorded events push fan-out has yet to reach.\n\
         # TYPE push_outbox_waiting gauge\n\
         push_outbox_waiting {waiting}\n"
    );
    Ok(text)
}
