//! Push delivery to Core, signed per Standard Webhooks: the engine below the endpoints API.
//!
//! # The outbox and its order
//!
//! Every change Core hears of (`signal.created`, `connection.created`,
//! `connection.status_changed`, `subscription.failed`) is written to `push_events` by the
//! store in the same transaction as the change itself, so an event exists exactly when its
//! change committed. Dispatch and live streams read events in `seq` order, so `seq` order must
//! be commit order: nothing numbered may be overtaken by a row that commits later.
//!
//! On **PostgreSQL** sequence values are handed out at insert time, not at commit, so a row
//! numbered 7 by a sequence could commit after a row numbered 8 has been read; ordering by
//! such a number would let a reader pass 7 for good. Instead a transaction that writes events
//! takes the **outbox lock**, a transaction-scoped advisory lock, just before it inserts them,
//! as its last write, and holds it to its commit. Its insert numbers the rows after the
//! highest number ever given (`push_numbering.last_seq`, which it moves to its last; the
//! highest `seq` stored would give a number again once the newest events were deleted), read
//! after the lock was granted, and the lock is released only once the commit is visible: so
//! each numbering transaction sees every number given before it, and numbers commit in the
//! order they were given. A reader that sees a number sees every lower one that will ever
//! exist. The lock is held for the insert and the commit only: the signals of a transaction
//! are inserted before it, so a signal waiting on a duplicate another transaction has not yet
//! committed waits without the lock. A session that sits idle for 30 s while holding it is
//! ended, so a client gone silent does not stop every writer. The lock's key is that of the
//! sequencer of earlier releases, which numbered events after they committed; an instance of
//! such a release beside this one (a rolling upgrade) inserts events with `seq` NULL, or at
//! `seq = -pos` with its `pos` queued in `push_events_unnumbered`, and this release numbers
//! those under the same lock, in a transaction of their own before each fan-out, after every
//! number given before. It also keeps the outbox's floor for them, a row numbered 0 that no
//! reader takes. Readers take only `seq > 0`.
//!
//! On **SQLite** writers are serialized: inside the inserting transaction no other writer can
//! commit, so the insert numbers its rows the same way with no lock of its own.
//!
//! # Fan-out and delivery
//!
//! Fan-out reads the events past a watermark, `push_fan_out.through_seq` (every event with
//! `seq <= through_seq` has been fanned out), in `seq` order, a batch at a time, and fans each
//! out to every active endpoint that receives it (its tenant's or an operator-wide endpoint,
//! its event types, providers and kinds) as one `push_deliveries` row; then it moves the
//! watermark to the last event it read. Events are not written again. On PostgreSQL a fan-out
//! holds a lock of its own (not the outbox lock: writers number events meanwhile), so one
//! instance at a time fans out. When no endpoint is active it reads no events and only moves
//! the watermark to the highest `seq`: an endpoint created, or enabled again, receives the
//! events fanned out after that, not those before (`POST /endpoints/{id}/replay` sends those). On SQLite a pass takes the write lock before it
//! reads, even with nothing to do: a writer wakes the dispatcher before it commits, and the
//! lock is what makes the pass wait for that commit. The fan-out, claims and outcomes of this
//! process take their turn with its other writers instead of meeting in SQLite's busy handler.
//! Each step of the dispatcher records the outcomes of the attempts that came back since the
//! last, fans out and claims, in that order (a line whose head was just recorded has its next
//! delivery claimed in the same step): one transaction of the one writer on SQLite, where the
//! outcomes had one of their own; on PostgreSQL three (the outcomes written while the fan-out
//! runs), the claim out of the fan-out's lock.
//! Retention deletes only events at or below the watermark.
//!
//! Events are still inserted with the older `fanned_out` column set: an instance of the
//! previous release, which fans out what is not marked, may run beside this one on one
//! PostgreSQL during a rolling upgrade, and so leaves this release's events alone. This release
//! fans out that instance's events too (they are past the watermark), which it may also do: an
//! event may then be delivered twice, with the same `webhook-id`, during the upgrade only. So
//! may an event fanned out at once by this release and by one that fanned out under the outbox
//! lock, before fan-out had a lock of its own. Such an instance's fan-out holds the outbox lock
//! while it writes deliveries, so this release's writers wait for it; and when that fan-out
//! waits for a transaction (a connection being deleted, say) that waits for such a writer, the
//! three are in a deadlock, which PostgreSQL ends by failing one of them, to be retried.
//!
//! Deliveries of one endpoint and one connection go one at a time in `seq` order: only the
//! pending delivery with the lowest `seq` of its line may be claimed, so a failing head holds
//! back its own line until it succeeds or is given up, and nothing else. Claims take a lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL); an instance killed mid-attempt leaves a lease that
//! runs out, and the delivery is attempted again with the same `webhook-id` (the event's id):
//! delivery is at least once. See [`dispatch`] for attempts, [`schedule`] for retries, [`egress`] for where
//! deliveries may go, [`clients`] for the connections kept to them and [`signing`] for the
//! signatures. [`live`] feeds the same outbox to the live signal stream.

pub mod backlog;
pub mod clients;
pub mod clock;
pub mod dispatch;
pub mod egress;
pub mod live;
pub mod schedule;
pub mod signing;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dispatch::{run, Dispatcher, Pass};
pub use egress::{EgressError, EgressPolicy};
pub use signing::SigningSecret;
