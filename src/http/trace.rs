//! The request's trace id, reachable from anywhere inside the request without threading it
//! through every call (error bodies need it).

use std::future::Future;

tokio::task_local! {
    static TRACE_ID: String;
}

/// Runs `fut` with `trace_id` as the current request's id.
pub async fn scope<F: Future>(trace_id: String, fut: F) -> F::Output {
    TRACE_ID.scope(trace_id, fut).await
}

/// The current request's trace id, if inside a request.
pub fn current() -> Option<String> {
    TRACE_ID.try_with(Clone::clone).ok()
}
