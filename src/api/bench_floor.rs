//! `GET /bench/floor`: a fixed JSON body of `POBLYSH_BENCH_FLOOR_BYTES` bytes behind the same
//! authentication as `GET /signals` (operator token and `X-Tenant-Id`). Benchmarks drive it in
//! the same run as a real route and read that route's figures against it: what this server
//! answers for a response of the same size when a request costs authentication, the edge
//! middleware and the bytes, but no database and no serialization.
//!
//! Off unless the variable is set; then the path is not routed at all (`404 NOT_FOUND`) and the
//! route is never in the OpenAPI document, since it is not part of the API.

use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;
use axum::Router;

use crate::http::{AppState, Tenant};

/// Where the floor is served.
pub const PATH: &str = "/bench/floor";

/// The floor route answering a body of `bytes` bytes, built once here and shared by every
/// answer.
pub fn router(bytes: usize) -> Router<AppState> {
    let body = body(bytes);
    Router::new().route(
        PATH,
        get(move |Tenant(_): Tenant| {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    )
}

/// `{"floor":"xxx..."}` padded to exactly `bytes` bytes (at least the 12 of `{"floor":""}`,
/// which configuration guarantees).
fn body(bytes: usize) -> Bytes {
    const OPEN: &str = "{\"floor\":\"";
    const CLOSE: &str = "\"}";
    let filler = bytes.saturating_sub(OPEN.len() + CLOSE.len());
    let mut text = String::with_capacity(bytes);
    text.push_str(OPEN);
    text.push_str(&"x".repeat(filler));
    text.push_str(CLOSE);
    Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_json_of_exactly_the_size_asked() {
        for size in [12, 13, 100, 17_000] {
            let body = body(size);
            assert_eq!(body.len(), size);
            let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(value["floor"].as_str().map(str::len), Some(size - 12));
        }
    }
}
