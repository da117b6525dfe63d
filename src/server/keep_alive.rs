//! Two deadlines on an HTTP/1.1 connection where hyper has one: an idle keep-alive connection
//! may wait `keep_alive_timeout` for its next request, and a request head, once its first bytes
//! have arrived, must be complete within `header_read_timeout` (slow-loris).
//!
//! hyper 1's `header_read_timeout` starts as soon as it waits for a head, so with it alone an
//! idle keep-alive connection is closed after the (short) head deadline. A client that reuses a
//! pooled connection just then sends its request into a closed socket and gets a reset — for a
//! POST it cannot retry safely (measured: 5 resets in 400 reuses spread over the 20 ms around
//! the deadline; the MLflow client hit one in CI). Load balancers keep idle upstream connections
//! for 60 s or more, and expect the server to keep them longer still.
//!
//! hyper's head timer is the only use of its timer on an HTTP/1 server connection, so each
//! connection gets a [`ConnTimer`] whose sleeps follow the connection's own clock: hyper asks
//! for a sleep each time it starts waiting for a head (the connection is idle from then on),
//! and the connection's reader ([`Watched`]) notes when bytes arrive (a head has begun). The
//! sleep's deadline is `idle since + keep_alive_timeout` until then, and `first byte +
//! header_read_timeout` after.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One connection's clock: when it began waiting for a head, and when that head's first bytes
/// arrived (nanoseconds since `epoch`; `NONE` = not yet).
#[derive(Debug)]
pub struct ConnClock {
    epoch: Instant,
    waiting_since: AtomicU64,
    head_started: AtomicU64,
    keep_alive_timeout: Duration,
    header_read_timeout: Duration,
}

const NONE: u64 = u64::MAX;

impl ConnClock {
    pub fn new(keep_alive_timeout: Duration, header_read_timeout: Duration) -> Arc<ConnClock> {
        Arc::new(ConnClock {
            epoch: Instant::now(),
            waiting_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            keep_alive_timeout,
            header_read_timeout,
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(NONE - 1)
    }

    /// hyper starts waiting for a request head: the connection is idle from now.
    fn begin_wait(&self) {
        self.waiting_since.store(self.now(), Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
    }

    /// Bytes arrived: if the connection was idle, a head has begun.
    fn saw_bytes(&self) {
        if self.head_started.load(Ordering::Relaxed) == NONE {
            let _ = self.head_started.compare_exchange(NONE, self.now(), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// When the wait for the current head ends.
    pub fn deadline(&self) -> Instant {
        match self.head_started.load(Ordering::Relaxed) {
            NONE => {
                self.epoch + Duration::from_nanos(self.waiting_since.load(Ordering::Relaxed)) + self.keep_alive_timeout
            }
            started => self.epoch + Duration::from_nanos(started) + self.header_read_timeout,
        }
    }
}

/// hyper's timer for one connection (see the module's comment).
#[derive(Clone)]
pub struct ConnTimer(pub Arc<ConnClock>);

impl Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(Plain(Box::pin(tokio::time::sleep(duration))))
    }

    /// hyper's head deadline (`now + header_read_timeout`) is replaced by the clock's.
    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.0.begin_wait();
        let deadline = self.0.deadline();
        Box::pin(ClockSleep { clock: self.0.clone(), sleep: Box::pin(tokio::time::sleep_until(deadline.into())) })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<ClockSleep>() {
            Some(mut s) => {
                self.0.begin_wait();
                let deadline = self.0.deadline();
                s.sleep.as_mut().reset(deadline.into());
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A sleep that ends at its clock's deadline, however that moves.
struct ClockSleep {
    clock: Arc<ConnClock>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for ClockSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline: tokio::time::Instant = self.clock.deadline().into();
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl Sleep for ClockSleep {}

/// A plain tokio sleep (hyper does not ask an HTTP/1 server connection for one; here for
/// completeness of the trait).
struct Plain(Pin<Box<tokio::time::Sleep>>);

impl Future for Plain {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Sleep for Plain {}

/// A connection's stream, noting on its clock when bytes arrive.
pub struct Watched<S> {
    inner: S,
    clock: Arc<ConnClock>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, clock: Arc<ConnClock>) -> Self {
        Watched { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.saw_bytes();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_waits_the_keep_alive_timeout_and_a_begun_head_the_head_timeout() {
        let clock = ConnClock::new(Duration::from_secs(75), Duration::from_secs(10));
        clock.begin_wait();
        let idle = clock.deadline();
        let left = idle - Instant::now();
        assert!(left > Duration::from_secs(74) && left <= Duration::from_secs(75), "{left:?}");
        clock.saw_bytes();
        let head = clock.deadline() - Instant::now();
        assert!(head > Duration::from_secs(9) && head <= Duration::from_secs(10), "{head:?}");
        // More bytes of the same head do not move its deadline.
        let first = clock.deadline();
        std::thread::sleep(Duration::from_millis(5));
        clock.saw_bytes();
        assert_eq!(clock.deadline(), first);
        // The next wait is idle again.
        clock.begin_wait();
        assert!(clock.deadline() - Instant::now() > Duration::from_secs(74));
    }
}
