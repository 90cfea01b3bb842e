//! The `push_endpoint_backlog` gauge: pending deliveries per endpoint, counted in one
//! statement when metrics are scraped rather than after every attempt. Read from the store
//! each time, it has a series for every endpoint that exists and none for one deleted.

use std::fmt::Write;

use crate::store::{Store, StoreError};

/// The gauge in the Prometheus text format, one line per endpoint.
pub async fn render(store: &dyn Store) -> Result<String, StoreError> {
    let backlogs = store.endpoint_backlogs().await?;
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
    Ok(text)
}
