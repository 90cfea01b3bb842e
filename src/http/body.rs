//! Reading a public route's body within two bounds: the body's own size limit, and a budget of
//! bytes held in memory by every such body at once, so a flood of large deliveries is answered
//! `503` with `Retry-After` (providers redeliver) instead of growing the process.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ApiError, ErrorCode};

/// The budget is counted in units of this many bytes.
const UNIT: usize = 1024;

/// Bytes of request bodies that may be held at once.
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
}

impl BodyBudget {
    /// A budget of `bytes` (rounded up to whole KiB).
    pub fn new(bytes: usize) -> Self {
        let units = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(units)),
        }
    }

    /// Bytes not held by any body now.
    pub fn available(&self) -> usize {
        self.permits.available_permits().saturating_mul(UNIT)
    }
}

/// A body read in full, holding its share of the budget until dropped.
pub struct HeldBody {
    pub bytes: Bytes,
    _held: Option<OwnedSemaphorePermit>,
}

/// Reads `body` up to `limit` bytes, taking budget as the bytes arrive; refuses at once when the
/// budget is spent (`503`) or the body exceeds `limit` (`413`).
pub async fn read(body: Body, limit: usize, budget: &BodyBudget) -> Result<HeldBody, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buffer: Vec<u8> = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut held_units = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let too_large = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if too_large {
                too_large_error(limit)
            } else {
                ApiError::invalid_field("body", "could not be read to its end")
            }
        })?;
        let total = buffer.len().saturating_add(chunk.len());
        if total > limit {
            return Err(too_large_error(limit));
        }
        let units = total.div_ceil(UNIT);
        if units > held_units {
            let more = u32::try_from(units - held_units).map_err(|_| too_large_error(limit))?;
            let permit = budget
                .permits
                .clone()
                .try_acquire_many_owned(more)
                .map_err(|_| busy())?;
            match held.as_mut() {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            held_units = units;
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(HeldBody {
        bytes: Bytes::from(buffer),
        _held: held,
    })
}

fn too_large_error(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the body exceeds {limit} bytes"),
    )
}

fn busy() -> ApiError {
    metrics::counter!("webhook_bodies_shed_total").increment(1);
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        "too many webhook bodies are being received at once; redeliver shortly",
    )
    .with_retry_after(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_takes_budget_until_dropped_and_a_spent_budget_sheds() {
        let budget = BodyBudget::new(8 * UNIT);
        let first = read(Body::from(vec![1u8; 5 * UNIT]), 1 << 20, &budget)
            .await
            .map_err(|e| e.code())
            .expect("fits");
        assert_eq!(first.bytes.len(), 5 * UNIT);
        assert_eq!(budget.available(), 3 * UNIT);
        let shed = read(Body::from(vec![1u8; 4 * UNIT]), 1 << 20, &budget).await;
        assert_eq!(
            shed.map(|_| ()).map_err(|e| e.code()),
            Err(ErrorCode::ServiceUnavailable)
        );
        // What the refused body took is given back.
        assert_eq!(budget.available(), 3 * UNIT);
        drop(first);
        assert_eq!(budget.available(), 8 * UNIT);
        let big = read(Body::from(vec![1u8; 2 * UNIT]), UNIT, &budget).await;
        assert_eq!(
            big.map(|_| ()).map_err(|e| e.code()),
            Err(ErrorCode::PayloadTooLarge)
        );
        assert_eq!(budget.available(), 8 * UNIT);
    }
}
