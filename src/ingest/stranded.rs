//! Claims the inbox worker made but could not record outcomes for, because the database went
//! away, given back as soon as the store answers again.

use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::domain::{now, StoredWebhookEvent, Timestamp};
use crate::services::Services;
use crate::store::StoreError;

/// Stranded claims remembered at most (see [`Stranded`]).
const MAX_STRANDED: usize = 64;

/// Claims this process made but could not record outcomes for, because the database went
/// away: the lease each claim set, with the events it returned (`None` when the claim's answer
/// was lost). They are given back as soon as the store answers again, rather than left until
/// their leases expire. Bounded: past [`MAX_STRANDED`] claims, later ones are not remembered
/// (the first are those the outage interrupted; their leases expire either way). A lease
/// stands for its claim: another claim setting the very same microsecond is too unlikely to
/// matter, and an event processed twice still yields each signal once.
#[derive(Clone, Default)]
pub(super) struct Stranded(Arc<Mutex<Vec<StrandedClaim>>>);

/// The lease a claim set, and the events it returned if its answer arrived.
type StrandedClaim = (Timestamp, Option<Vec<Uuid>>);

impl Stranded {
    /// Remembers `events` of the claim that set `lease`.
    pub(super) fn keep<'a>(
        &self,
        lease: Timestamp,
        events: impl IntoIterator<Item = &'a StoredWebhookEvent>,
    ) {
        self.hold(lease, Some(events.into_iter().map(|e| e.id).collect()));
    }

    /// Remembers a claim whose answer was lost: whatever it leased is given back.
    pub(super) fn keep_lost(&self, lease: Timestamp) {
        self.hold(lease, None);
    }

    fn hold(&self, lease: Timestamp, ids: Option<Vec<Uuid>>) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() < MAX_STRANDED {
            held.push((lease, ids));
        }
    }

    /// Gives every held claim back; keeps those not given back for the next try.
    pub(super) async fn release(&self, state: &Services) -> Result<(), StoreError> {
        let mut claims = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let mut released = 0;
        while let Some((lease, ids)) = claims.first() {
            match state
                .store
                .release_webhook_events(*lease, ids.as_deref(), now())
                .await
            {
                Ok(n) => {
                    released += n;
                    claims.remove(0);
                }
                Err(err) => {
                    // Ahead of any kept meanwhile: these are older.
                    let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
                    held.splice(0..0, claims);
                    held.truncate(MAX_STRANDED);
                    return Err(err);
                }
            }
        }
        if released > 0 {
            tracing::info!(
                released,
                "events claimed before the database went away are due again"
            );
        }
        Ok(())
    }
}
