//! The process-wide budget for request bodies held in memory, shared by every connection.
//!
//! Every request body is wrapped in [`Metered`] by the [`meter`] middleware (installed by
//! [`serve`](super::serve) on every app). Bytes are charged to the budget as they arrive — or all
//! at once when the request declares a `Content-Length` no larger than one buffered body may be,
//! so a request the budget cannot hold is refused before it sends anything — and stay charged
//! until the request has been answered (the handler's buffer is gone by then). A handler that
//! streams its body somewhere else (the artifact proxy's upload, to disk) calls
//! [`BodyCharge::streaming`]: then only the frame in hand is charged.
//!
//! Past the budget the body yields an error, and the middleware answers 503 with `Retry-After`
//! whatever the handler made of that error. A body that is not complete within the body-read
//! deadline (for a streamed body: no frame within it) is cut the same way with 408, so a client
//! that stalls before the last byte — or a chunked upload that never ends — holds its bytes for
//! a bounded time only.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde_json::json;
use tokio::sync::Semaphore;

/// The budget: a byte-counting semaphore and the rules for charging it. A cheap `Clone` handle.
#[derive(Clone, Debug)]
pub struct BodyBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bytes: Semaphore,
    total: usize,
    /// The largest body one request may buffer: a declared `Content-Length` up to this is
    /// charged in full on the first read.
    max_body: usize,
    /// A buffered body must be complete within this; a streamed one must not pause longer.
    read_timeout: Duration,
}

impl BodyBudget {
    /// `total` bytes shared by all requests; `max_body` is the largest body a handler buffers.
    pub fn new(total: usize, max_body: usize, read_timeout: Duration) -> BodyBudget {
        // tokio's semaphore counts at most usize::MAX >> 3 permits.
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget { inner: Arc::new(Inner { bytes: Semaphore::new(total), total, max_body, read_timeout }) }
    }

    /// Bytes of the budget not charged to any request now.
    pub fn available(&self) -> usize {
        self.inner.bytes.available_permits()
    }

    pub fn total(&self) -> usize {
        self.inner.total
    }
}

/// Why a body was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The in-flight body budget is spent.
    OverBudget = 1,
    /// The body did not arrive within the body-read deadline.
    TimedOut = 2,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::OverBudget => {
                f.write_str("The server is holding as many request bodies as its memory budget allows; retry shortly")
            }
            Refusal::TimedOut => f.write_str("The request body did not arrive in time"),
        }
    }
}

impl std::error::Error for Refusal {}

/// One request's share of the budget; returned to the budget when the last holder drops it
/// (the middleware, once the request is answered, and the body).
#[derive(Debug)]
pub struct Charge {
    budget: BodyBudget,
    held: AtomicUsize,
    streaming: AtomicBool,
    refused: AtomicU8,
}

impl Charge {
    fn new(budget: BodyBudget) -> Charge {
        Charge { budget, held: AtomicUsize::new(0), streaming: AtomicBool::new(false), refused: AtomicU8::new(0) }
    }

    /// Take `n` bytes from the budget without waiting.
    fn take(&self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        // The semaphore takes at most u32::MAX permits at a time.
        let mut taken = 0;
        while taken < n {
            let step = (n - taken).min(u32::MAX as usize);
            match self.budget.inner.bytes.try_acquire_many(step as u32) {
                Ok(permit) => {
                    permit.forget();
                    taken += step;
                }
                Err(_) => {
                    self.budget.inner.bytes.add_permits(taken);
                    return false;
                }
            }
        }
        self.held.fetch_add(n, Ordering::AcqRel);
        true
    }

    fn give_back(&self, n: usize) {
        let n = n.min(self.held.load(Ordering::Acquire));
        if n > 0 {
            self.held.fetch_sub(n, Ordering::AcqRel);
            self.budget.inner.bytes.add_permits(n);
        }
    }

    fn refuse(&self, why: Refusal) {
        let _ = self.refused.compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    fn refusal(&self) -> Option<Refusal> {
        match self.refused.load(Ordering::Acquire) {
            1 => Some(Refusal::OverBudget),
            2 => Some(Refusal::TimedOut),
            _ => None,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let held = *self.held.get_mut();
        if held > 0 {
            self.budget.inner.bytes.add_permits(held);
        }
    }
}

/// The request's charge, in its extensions, for handlers that stream their body.
#[derive(Clone, Debug)]
pub struct BodyCharge(Arc<Charge>);

impl BodyCharge {
    /// Why the body was cut, if it was (read after the handler has answered).
    pub fn refusal(&self) -> Option<Refusal> {
        self.0.refusal()
    }

    /// The handler writes each frame elsewhere before reading the next: charge only the frame in
    /// hand, and apply the body-read deadline between frames instead of to the whole body.
    /// Call before the first read.
    pub fn streaming(&self) {
        self.0.streaming.store(true, Ordering::Release);
    }
}

/// A request body charged to the budget as it is read.
pub struct Metered {
    inner: Body,
    charge: Arc<Charge>,
    /// The declared `Content-Length`, charged on the first read when it is small enough.
    declared: Option<u64>,
    /// Bytes charged up front and not yet received.
    reserved: usize,
    /// In streaming mode: the charge of the frame handed out last.
    last_frame: usize,
    first: bool,
    done: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Metered {
    fn new(inner: Body, charge: Arc<Charge>, declared: Option<u64>) -> Metered {
        let deadline = Box::pin(tokio::time::sleep(charge.budget.inner.read_timeout));
        Metered { inner, charge, declared, reserved: 0, last_frame: 0, first: true, done: false, deadline }
    }

    fn fail(&mut self, why: Refusal) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.charge.refuse(why);
        self.done = true;
        Poll::Ready(Some(Err(axum::Error::new(why))))
    }
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let streaming = this.charge.streaming.load(Ordering::Acquire);
        if std::mem::take(&mut this.first) && !streaming {
            if let Some(n) = this.declared.filter(|n| *n <= this.charge.budget.inner.max_body as u64) {
                if !this.charge.take(n as usize) {
                    return this.fail(Refusal::OverBudget);
                }
                this.reserved = n as usize;
            }
        }
        if streaming {
            // The previous frame has been written out by now.
            this.charge.give_back(std::mem::take(&mut this.last_frame));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len();
                    let from_reserve = n.min(this.reserved);
                    this.reserved -= from_reserve;
                    if !this.charge.take(n - from_reserve) {
                        return this.fail(Refusal::OverBudget);
                    }
                    if streaming {
                        this.last_frame = n;
                        let next = tokio::time::Instant::now() + this.charge.budget.inner.read_timeout;
                        this.deadline.as_mut().reset(next);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.done = true;
                // Declared more than was sent (hyper refuses that; this is belt and braces).
                this.charge.give_back(std::mem::take(&mut this.reserved));
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => this.fail(Refusal::TimedOut),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `body` charged to `budget` frame by frame as it is read, for a server outside the axum apps
/// (the gRPC listener, whose requests declare no length); the charge is held until both the
/// body and the returned handle are dropped — the handle until the request is answered.
pub fn metered(budget: &BodyBudget, body: Body) -> (Body, BodyCharge) {
    let charge = Arc::new(Charge::new(budget.clone()));
    (Body::new(Metered::new(body, charge.clone(), None)), BodyCharge(charge))
}

/// Middleware: meter the request's body; answer 503 (over budget) or 408 (too slow) when the body
/// was cut, whatever the handler answered.
pub async fn meter(State(budget): State<BodyBudget>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let v2 = parts.uri.path().starts_with("/v2/");
    let charge = Arc::new(Charge::new(budget));
    parts.extensions.insert(BodyCharge(charge.clone()));
    let body = Body::new(Metered::new(body, charge.clone(), declared));
    let resp = next.run(Request::from_parts(parts, body)).await;
    match charge.refusal() {
        None => resp,
        Some(why) => {
            drop(resp);
            refusal_response(why, v2)
        }
    }
}

/// 503 + `Retry-After` or 408, in the protocol's error shape (`{"error"}` for the Open Inference
/// Protocol, MLflow's `{"error_code", "message"}` elsewhere). The connection is closed after it:
/// the rest of the body was not read.
fn refusal_response(why: Refusal, v2: bool) -> Response {
    let (status, code) = match why {
        Refusal::OverBudget => (StatusCode::SERVICE_UNAVAILABLE, "TEMPORARILY_UNAVAILABLE"),
        Refusal::TimedOut => (StatusCode::REQUEST_TIMEOUT, "DEADLINE_EXCEEDED"),
    };
    let message = why.to_string();
    let body = if v2 { json!({ "error": message }) } else { json!({ "error_code": code, "message": message }) };
    let mut resp = (status, Json(body)).into_response();
    if why == Refusal::OverBudget {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app(budget: BodyBudget) -> Router {
        Router::new()
            .route(
                "/buffer",
                post(|body: Body| async move {
                    match body.collect().await {
                        Ok(b) => (StatusCode::OK, b.to_bytes().len().to_string()),
                        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(budget, meter))
    }

    fn post_bytes(n: usize, declared: bool) -> Request {
        let mut b = Request::builder().method("POST").uri("/buffer");
        if declared {
            b = b.header(header::CONTENT_LENGTH, n);
        }
        b.body(Body::from(vec![b'x'; n])).unwrap()
    }

    #[tokio::test]
    async fn bodies_within_the_budget_pass_and_return_their_bytes() {
        let budget = BodyBudget::new(1000, 800, Duration::from_secs(5));
        for declared in [true, false] {
            let resp = app(budget.clone()).oneshot(post_bytes(700, declared)).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(budget.available(), 1000, "the charge is returned once answered");
        }
    }

    #[tokio::test]
    async fn a_body_beyond_the_budget_gets_503_and_the_budget_is_returned() {
        let budget = BodyBudget::new(1000, 2000, Duration::from_secs(5));
        for declared in [true, false] {
            let resp = app(budget.clone()).oneshot(post_bytes(1500, declared)).await.unwrap();
            assert_eq!(resp.status(), 503);
            assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error_code"], "TEMPORARILY_UNAVAILABLE");
            assert_eq!(budget.available(), 1000);
        }
    }

    #[tokio::test]
    async fn a_declared_length_is_charged_before_reading_and_blocks_others() {
        let budget = BodyBudget::new(1000, 1000, Duration::from_secs(5));
        // Someone else holds 600 bytes.
        let holder = Arc::new(Charge::new(budget.clone()));
        assert!(holder.take(600));
        let resp = app(budget.clone()).oneshot(post_bytes(500, true)).await.unwrap();
        assert_eq!(resp.status(), 503);
        drop(holder);
        let resp = app(budget.clone()).oneshot(post_bytes(500, true)).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(budget.available(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_at_the_deadline() {
        let budget = BodyBudget::new(1000, 1000, Duration::from_secs(2));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
        tx.send(Ok(Frame::data(Bytes::from_static(b"abc")))).await.unwrap();
        let body = Body::new(http_body_util::StreamBody::new(tokio_stream_from(rx)));
        let req = Request::builder().method("POST").uri("/v2/buffer").body(body).unwrap();
        let app = Router::new()
            .route(
                "/v2/buffer",
                post(|body: Body| async move { body.collect().await.map(|_| ()).map_err(|_| StatusCode::BAD_REQUEST) }),
            )
            .layer(axum::middleware::from_fn_with_state(budget.clone(), meter));
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 408);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("\"error\""), "the v2 error shape");
        assert_eq!(budget.available(), 1000);
        drop(tx);
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
