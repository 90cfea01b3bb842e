//! The live feed behind `GET /signals/stream`. Signals reach a stream through the outbox:
//! every stored signal has a `signal.created` event there, and a stream reads the events of
//! its tenant in `seq` order, which is commit order (see the module above). [`run`] is this
//! process's feed loop: woken like the dispatcher (events stored here, or announced by another
//! instance sharing the database, which a process with the worker role listens for) or by its
//! poll interval, it reads the newest number while any stream is open (having numbered what an
//! instance of an earlier release left unnumbered, on PostgreSQL; on SQLite under the write
//! lock, so a writer that woke it before committing has committed), then wakes every stream
//! ([`crate::services::LiveSignals`]) to read the new events.

use crate::services::Services;

/// The feed loop: reads the newest number while streams are open and wakes them, when events are
/// stored (here, or announced by another instance) or the poll interval passes.
pub async fn run(services: Services) {
    let poll = services.config.worker_poll_interval;
    let live = services.live.clone();
    let mut announced = 0;
    while !services.is_shutting_down() {
        let news = crate::store::wake::next_push_news();
        tokio::pin!(news);
        news.as_mut().enable();
        if live.open_count() > 0 {
            match services.store.sequence_events().await {
                // Numbered here or by another instance since the last look.
                Ok(newest) if newest != announced => {
                    announced = newest;
                    live.announce();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading new events for live streams failed"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = &mut news => {}
        }
    }
    // Shutting down: the streams wake, see it and end, so connections can close.
    live.announce();
}
