//! Push delivery to Core, signed per Standard Webhooks: the engine below the endpoints API.
//!
//! # The outbox and its order
//!
//! Every change Core hears of (`signal.created`, `connection.created`,
//! `connection.status_changed`, `subscription.failed`) is written to `push_events` by the
//! store in the same transaction as the change itself, so an event exists exactly when its
//! change committed. Rows are inserted with `seq` NULL. PostgreSQL sequence values are handed
//! out at insert time, not at commit, so a row numbered 7 can commit after a row numbered 8
//! has been read; ordering by such a number would let a reader pass 7 for good. Instead a
//! **sequencer** numbers rows after they commit: under a transaction-scoped advisory lock
//! (one sequencer at a time across every instance), one statement gives every visible
//! unsequenced row `MAX(seq) + ROW_NUMBER()` in insertion order. A row that commits later is
//! numbered by a later run, higher. Dispatch reads only numbered rows, so `seq` order is commit
//! order and nothing numbered can be overtaken. SQLite serializes writers, and the same
//! statements hold there without the lock.
//!
//! # Fan-out and delivery
//!
//! In the same locked transaction the sequencer fans each numbered event out to every active
//! endpoint that receives it (its tenant's or an operator-wide endpoint, its event types,
//! providers and kinds) as one `push_deliveries` row. Deliveries of one endpoint and one
//! connection go one at a time in `seq` order: only the pending delivery with the lowest `seq`
//! of its line may be claimed, so a failing head holds back its own line until it succeeds or
//! is given up, and nothing else. Claims take a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL); an instance killed mid-attempt leaves a lease that runs out, and the
//! delivery is attempted again with the same `webhook-id` (the event's id): delivery is at
//! least once. See [`dispatch`] for attempts, [`schedule`] for retries, [`egress`] for where
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
