//! Body wrappers that copy bytes for capture while passing them on unchanged.
//!
//! `RequestTee` sits between the client's body and the upstream connection;
//! `ResponseTee` sits between the upstream body and the client. Neither buffers:
//! each frame is forwarded the moment it is polled. `ResponseTee` also owns the
//! call's end: it finishes the `CallInFlight` exactly once, at end of stream, on an
//! upstream error, on an idle timeout, or (by dropping it) when the client goes away.

use crate::capture::{CallInFlight, Outcome, SharedCapture};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Rewrites response bytes on their way to the client (used to remove the usage
/// chunk llmtap asked for on the client's behalf). Must be incremental.
pub trait ChunkFilter: Send {
    fn push(&mut self, chunk: &[u8]) -> Vec<u8>;
    fn finish(&mut self) -> Vec<u8>;
    /// Why the filter stopped rewriting, if it did (noted on the record).
    fn note(&self) -> Option<String> {
        None
    }
}

pin_project_lite::pin_project! {
    pub struct RequestTee<B> {
        #[pin]
        inner: B,
        capture: SharedCapture,
        cap: usize,
    }
}

impl<B> RequestTee<B> {
    pub fn new(inner: B, capture: SharedCapture, cap: usize) -> Self {
        RequestTee {
            inner,
            capture,
            cap,
        }
    }
}

impl<B> Body for RequestTee<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Ok(mut capture) = this.capture.lock() {
                        capture.push(data, *this.cap);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An idle gap between response frames longer than the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?}; llmtap closed the stream")]
pub struct IdleTimeout(pub Duration);

pin_project_lite::pin_project! {
    pub struct ResponseTee<B> {
        #[pin]
        inner: B,
        #[pin]
        idle: Sleep,
        idle_timeout: Duration,
        call: CallInFlight,
        filter: Option<Box<dyn ChunkFilter>>,
        ended: bool,
    }
}

impl<B: Body> ResponseTee<B> {
    pub fn new(
        inner: B,
        mut call: CallInFlight,
        idle_timeout: Duration,
        filter: Option<Box<dyn ChunkFilter>>,
    ) -> Self {
        // An empty body (content-length: 0, a 204) is complete already. hyper writes
        // such a response without ever polling the body and then drops it, which
        // would record the call as canceled; finish it here with its real status.
        let ended = inner.is_end_stream();
        if ended {
            call.finish(Outcome::Completed);
        }
        ResponseTee {
            inner,
            idle: tokio::time::sleep(idle_timeout),
            idle_timeout,
            call,
            filter,
            ended,
        }
    }
}

impl<B> Body for ResponseTee<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    this.idle
                        .as_mut()
                        .reset(Instant::now() + *this.idle_timeout);
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            this.call.on_response_data(&data);
                            let data = match this.filter.as_mut() {
                                Some(filter) => {
                                    let out = Bytes::from(filter.push(&data));
                                    if let Some(note) = filter.note() {
                                        // Past its bound the filter is done: note it, drop it.
                                        this.call.add_note(note);
                                        *this.filter = None;
                                    }
                                    out
                                }
                                None => data,
                            };
                            if this.inner.is_end_stream() {
                                let data = flush_filter(this.filter, data);
                                this.call.on_delivered(data.len());
                                *this.ended = true;
                                this.call.finish_after_write(Outcome::Completed);
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                            if data.is_empty() {
                                continue;
                            }
                            this.call.on_delivered(data.len());
                            Frame::data(data)
                        }
                        Err(frame) => frame,
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    *this.ended = true;
                    this.call.finish(Outcome::UpstreamError {
                        message: format!("upstream body failed mid-response: {e}"),
                    });
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    *this.ended = true;
                    let rest = flush_filter(this.filter, Bytes::new());
                    this.call.finish_after_write(Outcome::Completed);
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.idle.as_mut().poll(cx).is_ready() {
                        *this.ended = true;
                        let timeout = *this.idle_timeout;
                        this.call.finish(Outcome::Timeout {
                            message: format!("no data from upstream for {timeout:?}"),
                        });
                        return Poll::Ready(Some(Err(Box::new(IdleTimeout(timeout)))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.call.is_finished()
    }

    fn size_hint(&self) -> SizeHint {
        if self.filter.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

fn flush_filter(filter: &mut Option<Box<dyn ChunkFilter>>, data: Bytes) -> Bytes {
    match filter.as_mut() {
        Some(f) => {
            let tail = f.finish();
            if tail.is_empty() {
                data
            } else {
                let mut joined = Vec::with_capacity(data.len() + tail.len());
                joined.extend_from_slice(&data);
                joined.extend_from_slice(&tail);
                Bytes::from(joined)
            }
        }
        None => data,
    }
}

impl ChunkFilter for crate::parse::include_usage::UsageChunkStripper {
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        crate::parse::include_usage::UsageChunkStripper::push(self, chunk)
    }

    fn finish(&mut self) -> Vec<u8> {
        crate::parse::include_usage::UsageChunkStripper::finish(self)
    }

    fn note(&self) -> Option<String> {
        self.gave_up().then(|| {
            format!(
                "usage-chunk filter stopped: an SSE event outgrew {} bytes, so the rest of the stream passed through unfiltered",
                crate::parse::include_usage::MAX_HELD_EVENT
            )
        })
    }
}
