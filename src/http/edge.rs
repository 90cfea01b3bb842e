//! The middleware every request passes: trace id, one span and one access line per request,
//! request time-out, panics turned into `500`s, request line, header and body size limits,
//! metrics, `X-Content-Type-Options: nosniff`, and any bare error status from the router, an
//! extractor or a layer rewritten as problem+json.
//!
//! Metric labels take values from closed sets only (see [`method_label`]; the route is the
//! matched route template or `unmatched`), so no request can grow `/metrics`.
//!
//! # Limits hyper enforces before the service runs
//!
//! hyper parses the request line and headers before any of this runs, and answers a request
//! it cannot parse itself, with an empty body and `Connection: close`: a request target over
//! 65,534 bytes (a constant of hyper's) gets a bare `414`, and more than 100 headers or a head
//! over hyper's read buffer (about 400 KiB) a bare `431`. `axum::serve` exposes no hyper
//! settings, and no setting changes that answer's body. The service therefore applies tighter
//! limits of its own here, [`MAX_URI_BYTES`] and [`MAX_HEADER_BYTES`], and answers `414
//! URI_TOO_LONG` and `431 HEADERS_TOO_LARGE` as problem+json for everything between its limits
//! and hyper's.

use std::any::Any;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tracing::Instrument;

use super::error::{ApiError, ErrorCode, PROBLEM_JSON};
use super::trace;

/// The header carrying the trace id, in requests (optional) and every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request target (path and query) the service reads: longer ones answer `414`.
pub const MAX_URI_BYTES: usize = 32 * 1024;
/// The most header bytes (names, values and their separators) the service reads: more answer
/// `431`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Limits applied at the edge.
#[derive(Clone, Copy, Debug)]
pub struct EdgeSettings {
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
}

/// Wraps `router` in the edge middleware.
pub fn apply<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    settings: EdgeSettings,
) -> Router<S> {
    router.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(settings, edge))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(RequestBodyLimitLayer::new(settings.max_body_bytes))
            // Body extractors (`Bytes`, `Json`) have a limit of their own, 2 MiB by default,
            // which would otherwise apply below a larger configured limit.
            .layer(DefaultBodyLimit::max(settings.max_body_bytes)),
    )
}

/// The `method` metric label: a standard method, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Adds `X-Content-Type-Options: nosniff` to a response.
pub fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `414` or `431` when the request line or headers are over the service's own limits.
fn oversized_head(req: &Request) -> Option<ApiError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(ApiError::new(
            ErrorCode::UriTooLong,
            format!("the request target exceeds the limit of {MAX_URI_BYTES} bytes"),
        ));
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    (headers > MAX_HEADER_BYTES).then(|| {
        ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!("the request headers exceed the limit of {MAX_HEADER_BYTES} bytes"),
        )
    })
}

async fn edge(State(settings): State<EdgeSettings>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let trace_id =
        incoming_request_id(&req).unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        method = %method,
        route = %route,
        tenant_id = tracing::field::Empty,
    );
    let mut response = trace::scope(trace_id.clone(), async move {
        if let Some(refused) = oversized_head(&req) {
            return refused.into_response();
        }
        let response = match tokio::time::timeout(settings.request_timeout, next.run(req)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(ErrorCode::ServiceUnavailable, "the request took too long")
                .with_retry_after(1)
                .into_response(),
        };
        as_problem(response, settings)
    })
    .instrument(span.clone())
    .await;
    response = nosniff(response);

    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request completed"
        )
    });
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2])
        .record(elapsed.as_secs_f64());
    response
}

/// A caller-supplied request id, kept when it is short and plain.
fn incoming_request_id(req: &Request) -> Option<String> {
    let value = req.headers().get(REQUEST_ID)?.to_str().ok()?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    (!value.is_empty() && value.len() <= 128 && value.chars().all(plain)).then(|| value.to_string())
}

/// Rewrites an error response that is not yet problem+json (404 from the router, 405, 413
/// from the body limit, an axum extractor's rejection) so that every error a caller sees has
/// the same shape.
fn as_problem(response: Response, settings: EdgeSettings) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if status.as_u16() < 400 || is_problem {
        return response;
    }
    let code = ErrorCode::for_status(status);
    let message = match status {
        StatusCode::NOT_FOUND => "no route matches this path".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "this route does not accept this method".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body exceeds the limit of {} bytes",
            settings.max_body_bytes
        ),
        StatusCode::URI_TOO_LONG => "the request target is too long".to_string(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            "the request headers are too large".to_string()
        }
        other => other.canonical_reason().unwrap_or("error").to_string(),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut rewritten = ApiError::new(code, message).into_response();
    if let Some(allow) = allow {
        rewritten.headers_mut().insert(header::ALLOW, allow);
    }
    rewritten
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = what, "handler panicked");
    ApiError::new(ErrorCode::InternalError, "an internal error occurred").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    fn settings() -> EdgeSettings {
        EdgeSettings {
            request_timeout: Duration::from_millis(200),
            max_body_bytes: 1024,
        }
    }

    async fn call(router: Router, req: Request) -> (StatusCode, serde_json::Value, Response) {
        let response = router.oneshot(req).await.expect("infallible");
        let status = response.status();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json, Response::from_parts(parts, Body::empty()))
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_problem_json_with_the_trace_id() {
        let router = apply(
            Router::new().route(
                "/boom",
                get(|| async {
                    panic!("kaboom");
                    #[allow(unreachable_code)]
                    ""
                }),
            ),
            settings(),
        );
        let req = Request::get("/boom")
            .header("x-request-id", "abc-123")
            .body(Body::empty())
            .expect("request");
        let (status, body, response) = call(router, req).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(body["code"], "INTERNAL_ERROR");
        assert_eq!(body["trace_id"], "abc-123");
        assert_eq!(response.headers()["x-request-id"], "abc-123");
        assert!(
            !body.to_string().contains("kaboom"),
            "internals never reach the caller"
        );
    }

    #[tokio::test]
    async fn a_slow_handler_times_out_as_503() {
        let router = apply(
            Router::new().route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            ),
            settings(),
        );
        let (status, body, response) = call(
            router,
            Request::get("/slow").body(Body::empty()).expect("request"),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["code"], "SERVICE_UNAVAILABLE");
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[tokio::test]
    async fn a_malformed_incoming_request_id_is_replaced() {
        let router = apply(Router::new().route("/", get(|| async { "ok" })), settings());
        let req = Request::get("/")
            .header("x-request-id", "bad id with spaces")
            .body(Body::empty())
            .expect("request");
        let (_, _, response) = call(router, req).await;
        let id = response.headers()["x-request-id"].to_str().expect("ascii");
        assert_eq!(id.len(), 32);
    }
}
