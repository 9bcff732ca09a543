//! Deadlines every client connection keeps, on both listeners.
//!
//! `GuardedIo` wraps the accepted socket (below TLS and hyper), so it also covers the
//! TLS handshake and HTTP version detection, which hyper's own header timeout does not:
//! - until its first request arrives, a connection has `header_read` to send one;
//! - with no request in flight, a connection on which no byte moved for `idle` is closed;
//! - a client that reads nothing of its response for `send` (its socket stays full)
//!   loses the connection, which drops the response body and with it the upstream
//!   connection, so a never-reading client holds neither for long.
//!
//! A request counts as in flight from the moment the service is called until hyper
//! drops its response body (`InFlight`); the proxy's own upstream timeouts bound
//! how long a request in flight can be silent.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The connection deadlines (`[server]` `header_read_timeout_ms`,
/// `client_idle_timeout_ms`, `client_send_timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read: Duration,
    pub idle: Duration,
    pub send: Duration,
}

/// What the service tells the connection's socket about its requests.
#[derive(Debug, Default)]
pub struct ConnActivity {
    in_flight: AtomicUsize,
    seen_request: AtomicBool,
}

impl ConnActivity {
    /// Marks a request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.seen_request.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            activity: self.clone(),
        }
    }
}

/// One request in flight; dropped with its response body.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<ConnActivity>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until hyper drops it.
    pub struct InFlightBody<B> {
        #[pin]
        inner: B,
        guard: InFlight,
    }
}

impl<B> InFlightBody<B> {
    pub fn new(inner: B, guard: InFlight) -> Self {
        InFlightBody { inner, guard }
    }
}

impl<B: Body<Data = Bytes>> Body for InFlightBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client socket with the deadlines of `ConnLimits`.
pub struct GuardedIo<T> {
    inner: T,
    limits: ConnLimits,
    activity: Arc<ConnActivity>,
    connected_at: Instant,
    last_progress: Instant,
    read_timer: Pin<Box<Sleep>>,
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl<T> GuardedIo<T> {
    pub fn new(inner: T, limits: ConnLimits, activity: Arc<ConnActivity>) -> Self {
        let now = Instant::now();
        GuardedIo {
            inner,
            limits,
            activity,
            connected_at: now,
            last_progress: now,
            read_timer: Box::pin(tokio::time::sleep_until(now + limits.header_read)),
            write_stall: None,
        }
    }

    /// When a pending read should give up, or `None` while a request is in flight.
    fn read_deadline(&self) -> Option<Instant> {
        if !self.activity.seen_request.load(Ordering::Acquire) {
            return Some(self.connected_at + self.limits.header_read);
        }
        if self.activity.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(self.last_progress + self.limits.idle)
    }

    fn progress(&mut self) {
        self.last_progress = Instant::now();
        self.write_stall = None;
    }

    /// A write that cannot proceed: fails once the client has read nothing for `send`.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let send = self.limits.send;
        let timer = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {send:?}; llmtap closed the connection"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_progress = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => loop {
                // Always armed: a connection whose last request just ended must be
                // woken to start its idle deadline even if nothing else happens.
                let deadline = this
                    .read_deadline()
                    .unwrap_or_else(|| Instant::now() + this.limits.idle);
                if this.read_timer.deadline() != deadline {
                    this.read_timer.as_mut().reset(deadline);
                }
                match this.read_timer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => {
                        if this.read_deadline().is_some_and(|d| d <= Instant::now()) {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the client sent no request in time; llmtap closed the connection",
                            )));
                        }
                    }
                }
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_stall(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.progress();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_stall(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => {
                this.write_stall = None;
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_stall(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
