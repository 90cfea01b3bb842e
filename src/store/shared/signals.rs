//! What follows storing signals, once for both databases.

use std::collections::HashSet;

use uuid::Uuid;

use crate::domain::{NewPushEvent, NewSignal};

/// The push events (`signal.created`) of the signals in `chunk` that were new (`new_ids`),
/// to write in the same transaction that stored them.
pub(crate) fn created_events(chunk: &[NewSignal], new_ids: &HashSet<Uuid>) -> Vec<NewPushEvent> {
    let now = crate::domain::now();
    chunk
        .iter()
        .filter(|s| new_ids.contains(&s.id.0))
        .map(|s| NewPushEvent::signal_created(s, now))
        .collect()
}
