//! The accept loop: hyper HTTP/1.1 connections served by an axum router, with the limits a
//! server on a production path needs, and one shutdown path.
//!
//! - at most `max_connections` open connections; past them up to `health_connections` more are
//!   accepted that answer only the health routes ([`HEALTH_PATHS`]; anything else gets 503), one
//!   request each with a short head deadline, so `/ping` answers while every ordinary slot is
//!   held (further clients wait in the listen backlog);
//! - a client must send its request head within `header_read_timeout` of its first byte
//!   (slow-loris), and heads larger than `max_header_bytes` are refused; an idle keep-alive
//!   connection waits up to `keep_alive_timeout` for its next request (see
//!   [`keep_alive`](super::keep_alive));
//! - request bodies held in memory share one budget of `inflight_body_bytes` (503 beyond it) and
//!   must arrive within `body_read_timeout` (408 otherwise): see [`body_budget`](super::body_budget);
//! - each request must complete within `request_timeout` (503 otherwise);
//! - on shutdown: stop accepting, let in-flight requests finish for up to `shutdown_grace`,
//!   then return.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::body_budget::{self, BodyBudget};
use super::error::ApiError;
use super::keep_alive::{ConnClock, ConnTimer, Watched};

/// The routes a health-only connection answers (`serve`'s and `server`'s health checks).
pub const HEALTH_PATHS: &[&str] = &["/ping", "/health", "/v2/health/live", "/v2/health/ready", "/version"];

/// Longest a health-only connection may take to send its request head.
const HEALTH_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Default of `--keep-alive-timeout`: longer than the 60 s idle timeout of common load balancers,
/// so that the balancer, not the server, closes an idle upstream connection.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// Connection and request limits.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_connections: usize,
    /// Connections accepted past `max_connections` that answer only [`HEALTH_PATHS`].
    pub health_connections: usize,
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection may wait for its next request.
    pub keep_alive_timeout: Duration,
    pub max_header_bytes: usize,
    /// The largest body one request buffers (a declared length up to it is charged up front).
    pub max_body_bytes: usize,
    /// Bytes of request bodies all connections together may hold in memory.
    pub inflight_body_bytes: usize,
    /// A buffered body must arrive within this (a streamed one may not pause longer).
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 4096,
            health_connections: 16,
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_header_bytes: 64 << 10,
            max_body_bytes: 64 << 20,
            inflight_body_bytes: 256 << 20,
            body_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// On a health-only connection: health routes pass, anything else gets 503.
async fn health_only(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) && HEALTH_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let mut resp = ApiError::from(crate::runtime::ScoringError::unavailable(
        "The server is at its connection limit (--max-connections); this connection answers only health checks",
    ))
    .into_response();
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Serve `app` on an already-bound listener until `shutdown` resolves, then stop accepting and
/// let in-flight requests finish within `limits.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let budget = limits.body_budget();
    serve_with_budget(listener, app, limits, budget, shutdown).await
}

impl HttpLimits {
    /// The budget of request bodies in memory these limits describe (`--max-inflight-body-size`),
    /// for [`serve_with_budget`] and any other listener of the process that reads bodies (gRPC).
    pub fn body_budget(&self) -> BodyBudget {
        BodyBudget::new(self.inflight_body_bytes, self.max_body_bytes, self.body_read_timeout.min(self.request_timeout))
    }
}

/// [`serve`], charging bodies to `budget`, which other listeners may share (`serve`'s HTTP and
/// gRPC listeners hold one budget between them).
pub async fn serve_with_budget(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    budget: BodyBudget,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(budget, body_budget::meter))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ));
    let health_app = app.clone().layer(axum::middleware::from_fn(health_only));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let mut health_builder = builder.clone();
    health_builder.header_read_timeout(limits.header_read_timeout.min(HEALTH_HEAD_TIMEOUT)).keep_alive(false);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let health_permits = Arc::new(Semaphore::new(limits.health_connections));
    tokio::pin!(shutdown);
    loop {
        // Wait for a free slot of either kind, then accept.
        let mut permit = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed; this is a bug"),
            p = health_permits.clone().acquire_owned() => p.expect("the semaphore is never closed; this is a bug"),
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // An ordinary slot may have come free while waiting for the client.
        if Arc::ptr_eq(permit.semaphore(), &health_permits) {
            if let Ok(p) = permits.clone().try_acquire_owned() {
                permit = p;
            }
        }
        let health_only = Arc::ptr_eq(permit.semaphore(), &health_permits);
        let _ = stream.set_nodelay(true);
        let clock = ConnClock::new(limits.keep_alive_timeout, limits.header_read_timeout);
        let io = TokioIo::new(Watched::new(stream, clock.clone()));
        let conn = if health_only {
            graceful.watch(health_builder.serve_connection(io, TowerToHyperService::new(health_app.clone())))
        } else {
            let mut builder = builder.clone();
            builder.timer(ConnTimer(clock));
            graceful.watch(builder.serve_connection(io, TowerToHyperService::new(app.clone())))
        };
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(grace = ?limits.shutdown_grace, "stopped accepting; waiting for in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(limits.shutdown_grace) => tracing::warn!("shutdown grace period over; closing the remaining connections"),
    }
    Ok(())
}
