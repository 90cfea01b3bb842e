//! Accepting and serving connections, with the limits `axum::serve` does not offer: a time
//! limit on the request head, an idle time-out, and a bound on open connections.
//!
//! - **Header-read time-out.** hyper closes an HTTP/1 connection whose request head is not
//!   complete within [`ServeSettings::header_read_timeout`] (hyper's `header_read_timeout`,
//!   started when it begins reading a head, so it also bounds the wait for the next request on
//!   a kept-alive connection). Before hyper knows the protocol it reads without a time limit,
//!   so a connection that has sent no byte at all within the same time is dropped here.
//! - **Idle time-out.** A connection with no request in flight and no byte read or written for
//!   [`ServeSettings::idle_timeout`] is shut down gracefully (HTTP/2 gets a `GOAWAY`); if it is
//!   still open one more idle period later it is dropped.
//! - **Connection bound.** Each accepted connection takes one of
//!   [`ServeSettings::max_connections`] permits for its whole life. Over the bound the
//!   connection is answered at once, without reading the request, with a fixed HTTP/1.1 `503
//!   SERVICE_UNAVAILABLE` problem+json carrying `Retry-After`, and closed. Writing those bytes
//!   ourselves keeps shedding cheap (no hyper connection, no router, no time-outs to wait for)
//!   and still gives a probe a definite answer instead of a hung socket. At most
//!   [`SHED_CONCURRENCY`] connections are being answered that way at once; beyond that a
//!   connection is closed unanswered. So the service holds at most `max_connections +
//!   SHED_CONCURRENCY` sockets, which must stay below the process's descriptor limit.
//!
//! Graceful shutdown is as with `axum::serve`: the listener stops accepting and is closed,
//! every connection is told to finish its in-flight requests and close, and serving returns
//! once all have.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use super::error::{ApiError, ErrorCode, PROBLEM_JSON};

/// Connections over the bound being answered `503` at once; more are closed unanswered.
pub const SHED_CONCURRENCY: usize = 64;
/// Seconds a client shed over the bound is told to wait (`Retry-After`).
const SHED_RETRY_AFTER_SECS: u64 = 1;
/// How long answering one shed connection may take.
const SHED_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct ServeSettings {
    /// Time to send a complete request head.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open with nothing in flight and no traffic.
    pub idle_timeout: Duration,
    /// Open connections served at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` completes, then shuts down gracefully.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let shedding = Arc::new(Semaphore::new(SHED_CONCURRENCY));
    let overload = overload_response().await;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let (close_tx, close_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` returns `None` once all have ended.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Typically out of descriptors: back off rather than spin.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let connection = Connection {
                    builder: builder.clone(),
                    router: router.clone(),
                    settings,
                    close: close_rx.clone(),
                    _permit: permit,
                    _done: done_tx.clone(),
                };
                tokio::spawn(connection.run(stream));
            }
            Err(_) => shed(stream, &shedding, overload.clone()),
        }
    }
    drop(listener);
    let _ = close_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The bytes of the `503` a connection over the bound gets.
async fn overload_response() -> Bytes {
    let response = ApiError::new(
        ErrorCode::ServiceUnavailable,
        "the service is at its connection limit; retry shortly",
    )
    .with_retry_after(SHED_RETRY_AFTER_SECS)
    .into_response();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let mut bytes = format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         content-type: {PROBLEM_JSON}\r\n\
         retry-after: {SHED_RETRY_AFTER_SECS}\r\n\
         x-content-type-options: nosniff\r\n\
         cache-control: no-store\r\n\
         connection: close\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    Bytes::from(bytes)
}

/// Answers a connection over the bound with `overload` and closes it, or closes it at once
/// when [`SHED_CONCURRENCY`] others are being answered.
fn shed(stream: TcpStream, shedding: &Arc<Semaphore>, overload: Bytes) {
    let Ok(permit) = shedding.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(SHED_TIMEOUT, async {
            stream.write_all(&overload).await?;
            stream.shutdown().await?;
            // Read what the client sent until it closes: closing with unread bytes would reset
            // the connection, and the client could lose the answer.
            let mut buf = [0u8; 1024];
            while stream.read(&mut buf).await? > 0 {}
            Ok::<_, io::Error>(())
        })
        .await;
    });
}

/// One accepted connection within the bound.
struct Connection {
    builder: Arc<Builder<TokioExecutor>>,
    router: Router,
    settings: ServeSettings,
    close: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
    _done: mpsc::Sender<()>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let service = {
            let router = self.router.clone();
            let in_flight = in_flight.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let guard = InFlight::enter(&in_flight);
                let call = router.clone().oneshot(req.map(Body::new));
                async move {
                    let response = call.await;
                    drop(guard);
                    response
                }
            })
        };
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let ServeSettings {
            header_read_timeout,
            idle_timeout,
            ..
        } = self.settings;
        let tick = (header_read_timeout.min(idle_timeout) / 4).max(Duration::from_millis(100));
        let mut closing_since: Option<Instant> = None;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = self.close.wait_for(|c| *c), if closing_since.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
                () = tokio::time::sleep(tick) => {
                    if !activity.read_any() && activity.started.elapsed() >= header_read_timeout {
                        tracing::debug!("closing a connection that sent nothing");
                        break;
                    }
                    let idle = in_flight.load(Ordering::Acquire) == 0
                        && activity.idle_for() >= idle_timeout;
                    match closing_since {
                        _ if !idle => {}
                        None => {
                            conn.as_mut().graceful_shutdown();
                            closing_since = Some(Instant::now());
                        }
                        Some(since) if since.elapsed() >= idle_timeout => {
                            tracing::debug!("dropping an idle connection that did not close");
                            break;
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
}

/// Counts a request in flight on its connection until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When a connection last moved bytes, and whether it ever sent any.
struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last read or write.
    last_ms: AtomicU64,
    read_any: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            read_any: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn read_any(&self) -> bool {
        self.read_any.load(Ordering::Relaxed)
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

/// A stream that records its traffic in an [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_any.store(true, Ordering::Relaxed);
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
