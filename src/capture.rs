//! The in-flight call: everything the forward path learns about one call, and the
//! guarantee that exactly one `FinishedCall` is handed to the capture log for it.
//!
//! `CallInFlight` is moved along the request's life (service future, then the
//! response body). Whoever holds it last either calls `finish` or drops it; the drop
//! handler records the call as `canceled`, as linkerd's end-of-stream body does, so
//! a client hang-up at any point still yields its record. Handing over is a
//! non-blocking channel send: the forward path never waits for the log or the store.

use crate::headers::CallMeta;
use crate::metrics::Metrics;
use crate::record::ProviderKind;
use bytes::Bytes;
use http::HeaderMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Runs `work` on one call in a capture thread (the log thread's redaction and
/// encoding, the writer's parsing): a panic there, a bug on some odd input, costs
/// that call only. It is counted in `capture_failures_total` and logged by id, and
/// the thread goes on with the next call; unguarded, one prompt could stop every
/// later call from being recorded. `None` when `work` panicked.
pub fn contain_panic<T>(
    metrics: &Metrics,
    stage: &'static str,
    call_id: &str,
    work: impl FnOnce() -> T,
) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(done) => Some(done),
        Err(_) => {
            Metrics::add(&metrics.capture_failures);
            tracing::error!(
                stage,
                call = call_id,
                "a capture step panicked on this call; it is not recorded and capture goes on"
            );
            None
        }
    }
}

/// Most chunk arrival times kept per call; enough to place the first content token.
const MAX_CHUNK_TIMES: usize = 4096;

/// A capped copy of a body. Large chunks are kept as the received `Bytes` (no
/// copy); small ones (SSE events) are copied into blocks of up to 16 KiB that are
/// never reallocated, because a small `Bytes` would pin the whole read buffer it
/// was cut from. A full block of at least 4 KiB is zstd-compressed (level 1, about
/// 40 µs per block) when that saves a quarter: a long stream's events repeat the
/// same JSON envelope, so a thousand slow streams hold a fraction of what they
/// received rather than all of it. The log thread joins the pieces once, off the
/// forward path.
#[derive(Debug, Default)]
pub struct Capture {
    pieces: Vec<Piece>,
    block: Vec<u8>,
    kept: usize,
    /// Bytes seen, including those beyond the cap.
    pub total: u64,
    pub truncated: bool,
    /// Cut because every in-flight capture together held the memory budget.
    pub over_budget: bool,
    /// The budget this capture's bytes count against, and how many it holds.
    budget: Option<Arc<MemoryBudget>>,
    charged: usize,
}

impl Clone for Capture {
    /// A copy counts against no budget (tests and the journal's own copies).
    fn clone(&self) -> Self {
        Capture {
            pieces: self.pieces.clone(),
            block: self.block.clone(),
            kept: self.kept,
            total: self.total,
            truncated: self.truncated,
            over_budget: self.over_budget,
            budget: None,
            charged: 0,
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.held.fetch_sub(self.charged, Ordering::AcqRel);
        }
    }
}

/// One bound on the bytes all in-flight captures hold together
/// (`capture.memory_budget_bytes`), whatever clients and upstreams send: past it a
/// capture keeps no more bytes (the record says `truncated`, with a note) while
/// forwarding goes on untouched. Bytes go back when the log thread has encoded the
/// call; after that the capture log's own bounds apply.
#[derive(Debug)]
pub struct MemoryBudget {
    pub limit: usize,
    held: std::sync::atomic::AtomicUsize,
    /// Captures cut by the budget.
    pub cuts: std::sync::atomic::AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            held: std::sync::atomic::AtomicUsize::new(0),
            cuts: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Bytes held now by in-flight captures.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    fn reserve(&self, bytes: usize) -> bool {
        let mut held = self.held.load(Ordering::Acquire);
        loop {
            if held + bytes > self.limit {
                return false;
            }
            match self.held.compare_exchange_weak(
                held,
                held + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Shared(Bytes),
    Packed { len: usize, frame: Vec<u8> },
}

impl Piece {
    fn held(&self) -> usize {
        match self {
            Piece::Shared(b) => b.len(),
            Piece::Packed { frame, .. } => frame.capacity(),
        }
    }
}

/// Chunks at least this large are kept by reference.
const SHARE_AT_LEAST: usize = 8 * 1024;
const MAX_BLOCK: usize = 16 * 1024;
/// Sealed blocks at least this large are worth a zstd frame.
const PACK_AT_LEAST: usize = 4 * 1024;

fn pack(block: &[u8]) -> Option<Vec<u8>> {
    let mut frame = crate::zblock::compress(block, 1).ok()?;
    // The frame comes with room for the worst case; keep only what it uses.
    frame.shrink_to_fit();
    (frame.len() < block.len() / 4 * 3).then_some(frame)
}

impl Capture {
    /// An empty capture whose bytes count against `budget`.
    pub fn within(budget: &Arc<MemoryBudget>) -> Capture {
        let mut capture = Capture::default();
        capture.budget = Some(budget.clone());
        capture
    }

    pub fn push(&mut self, data: &Bytes, cap: usize) {
        self.total += data.len() as u64;
        if self.over_budget {
            return;
        }
        let room = cap.saturating_sub(self.kept);
        if data.len() > room {
            self.truncated = true;
        }
        let take = data.len().min(room);
        if take == 0 {
            return;
        }
        if let Some(budget) = &self.budget {
            if !budget.reserve(take) {
                self.truncated = true;
                self.over_budget = true;
                budget.cuts.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.charged += take;
        }
        self.kept += take;
        if take >= SHARE_AT_LEAST {
            self.seal_block();
            self.pieces.push(Piece::Shared(data.slice(..take)));
            return;
        }
        if self.block.capacity() - self.block.len() < take {
            self.seal_block();
            let size = (self.kept.next_power_of_two())
                .clamp(1024, MAX_BLOCK)
                .max(take);
            self.block = Vec::with_capacity(size);
        }
        self.block.extend_from_slice(&data[..take]);
    }

    fn seal_block(&mut self) {
        if self.block.is_empty() {
            return;
        }
        let block = std::mem::take(&mut self.block);
        let packed = (block.len() >= PACK_AT_LEAST)
            .then(|| pack(&block))
            .flatten();
        self.pieces.push(match packed {
            Some(frame) => Piece::Packed {
                len: block.len(),
                frame,
            },
            None => Piece::Shared(Bytes::from(block)),
        });
    }

    /// Bytes held in memory for this capture (for tests and accounting).
    pub fn held(&self) -> usize {
        self.pieces.iter().map(Piece::held).sum::<usize>() + self.block.capacity()
    }

    /// The captured bytes in one piece (a copy only when there are several pieces
    /// or some are compressed).
    pub fn contiguous(&self) -> std::borrow::Cow<'_, [u8]> {
        match (self.pieces.as_slice(), self.block.is_empty()) {
            ([], true) => return std::borrow::Cow::Borrowed(&[]),
            ([], false) => return std::borrow::Cow::Borrowed(&self.block),
            ([Piece::Shared(one)], true) => return std::borrow::Cow::Borrowed(one),
            _ => {}
        }
        let mut joined = Vec::with_capacity(self.kept);
        for piece in &self.pieces {
            match piece {
                Piece::Shared(b) => joined.extend_from_slice(b),
                Piece::Packed { len, frame } => match crate::zblock::decompress(frame, *len) {
                    Ok(plain) => joined.extend_from_slice(&plain),
                    Err(e) => {
                        // Our own frame; failing here is a bug, not bad input.
                        tracing::error!(error = %e, "cannot unpack a captured block");
                        joined.resize(joined.len() + len, 0);
                    }
                },
            }
        }
        joined.extend_from_slice(&self.block);
        std::borrow::Cow::Owned(joined)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_on_one_call_costs_that_call_only_and_is_counted() {
        let metrics = Metrics::default();
        assert_eq!(contain_panic(&metrics, "test", "c_1", || 7), Some(7));
        assert_eq!(metrics.capture_failures.load(Ordering::Relaxed), 0);
        let text = "Keys › Rotation";
        let cut = || text[..6].len(); // inside the multi-byte '›'
        assert_eq!(contain_panic(&metrics, "test", "c_2", cut), None);
        assert_eq!(metrics.capture_failures.load(Ordering::Relaxed), 1);
        assert_eq!(contain_panic(&metrics, "test", "c_3", || 8), Some(8));
    }

    fn in_flight(
        i: usize,
    ) -> (
        CallInFlight,
        tokio::sync::mpsc::UnboundedReceiver<Box<FinishedCall>>,
    ) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let sink = Arc::new(CallSink {
            sender,
            metrics: Arc::new(Metrics::default()),
            budget: MemoryBudget::new(1 << 20),
        });
        let call = Box::new(crate::dev::synthetic_finished_call(i, 100));
        (
            CallInFlight::new(call, Instant::now(), sink, 1 << 20),
            receiver,
        )
    }

    #[test]
    fn a_call_finished_after_the_write_reaches_the_log_once_the_task_yields() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (mut call, mut receiver) = in_flight(1);
        let id = call.id().to_string();
        runtime.block_on(async {
            call.finish_after_write(Outcome::Completed);
            // Not yet: the hand-off waits for the answering task to yield.
            assert!(receiver.try_recv().is_err());
            tokio::task::yield_now().await;
            let sent = receiver
                .try_recv()
                .expect("handed to the log after the yield");
            assert_eq!(sent.facts.id, id);
        });
        assert!(call.is_finished());
    }

    #[test]
    fn a_call_finished_after_the_write_is_not_lost_when_the_runtime_stops_first() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (mut call, mut receiver) = in_flight(2);
        let id = call.id().to_string();
        {
            let _inside = runtime.enter();
            call.finish_after_write(Outcome::Completed);
        }
        // The task never runs: dropping the runtime drops it unpolled.
        drop(runtime);
        let sent = receiver
            .try_recv()
            .expect("handed to the log when its task was dropped");
        assert_eq!(sent.facts.id, id);
        assert!(receiver.try_recv().is_err(), "exactly once");
    }

    #[test]
    fn capture_keeps_bytes_in_order_up_to_the_cap() {
        let mut capture = Capture::default();
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let piece = if i % 97 == 0 {
                vec![(i % 251) as u8; 9000]
            } else {
                format!("data: {{\"n\":{i}}}\n\n").into_bytes()
            };
            expected.extend_from_slice(&piece);
            capture.push(&Bytes::from(piece), 100_000);
        }
        expected.truncate(100_000);
        assert_eq!(&capture.contiguous()[..], &expected[..]);
        assert!(capture.truncated);
        assert!(capture.total > 100_000);
        // Blocks do not double: what is held is close to what was kept.
        let held = capture.held();
        assert!(held < 100_000 + MAX_BLOCK, "{held}");
    }

    #[test]
    fn a_long_stream_is_held_compressed_and_rebuilt_exactly() {
        let mut capture = Capture::default();
        let mut expected = Vec::new();
        let mut noise = 0x2545_f491_4f6c_dd1du64;
        for i in 0..20_000u32 {
            // Mostly a repeated SSE envelope; every 50th event incompressible bytes.
            let piece = if i % 50 == 0 {
                (0..300)
                    .map(|_| {
                        noise ^= noise << 13;
                        noise ^= noise >> 7;
                        noise ^= noise << 17;
                        noise as u8
                    })
                    .collect()
            } else {
                format!(
                    "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i}\"}}}}]}}\n\n"
                )
                .into_bytes()
            };
            expected.extend_from_slice(&piece);
            capture.push(&Bytes::from(piece), usize::MAX);
        }
        assert_eq!(&capture.contiguous()[..], &expected[..]);
        assert!(!capture.truncated);
        let held = capture.held();
        assert!(held * 4 < expected.len(), "{held} of {}", expected.len());
    }
}

/// How the exchange ended, as seen by the proxy.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The response was delivered whole (whatever its HTTP status).
    Completed,
    /// A response cut short because of the upstream.
    UpstreamError { message: String },
    /// No connection to the upstream at all: llmtap answered 502 `upstream_unreachable` itself.
    Unreachable { message: String },
    /// Connect, first-byte or idle timeout.
    Timeout { message: String },
    /// The client went away before the response was delivered.
    Canceled,
}

/// What the forward path knows of a finished exchange besides its headers, query
/// and bodies: the part of a call that redaction leaves as it is, shared by the
/// call as handed over (`FinishedCall`) and as the capture log holds it
/// (`recorder::RedactedCall`).
#[derive(Debug, Clone, PartialEq)]
pub struct CallFacts {
    pub id: String,
    pub invocation_id: String,
    /// Round in arrival order since this process started (the writer offsets it by
    /// rounds stored before a restart). 1 for ungrouped calls; 0 for tool HTTP calls
    /// (`kind = "http"`), which are not rounds.
    pub arrival_round: u32,
    pub started_at_us: u64,
    pub latency: Duration,
    pub first_byte: Option<Duration>,
    pub provider: String,
    /// The price-table provider for this call (see `config::Provider::price_as`).
    pub price_as: String,
    pub kind: ProviderKind,
    pub method: String,
    pub rest_path: String,
    pub upstream_host: String,
    /// The status the client received (llmtap's own 502/504 included).
    pub http_status: Option<u16>,
    pub outcome: Outcome,
    /// (bytes of response body received so far, time since start) per chunk.
    pub chunk_times: Vec<(usize, Duration)>,
    pub meta: CallMeta,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Bytes the client received (differs from what upstream sent when a usage chunk was removed).
    pub delivered_bytes: u64,
    /// What the forward path wants said on the record (e.g. a filter that gave up);
    /// they become parse notes.
    pub notes: Vec<String>,
}

/// What the forward path hands to the capture log (`journal/`), which redacts it
/// (`recorder::redact_with`); parsing and pricing happen on the writer.
#[derive(Debug, Clone)]
pub struct FinishedCall {
    pub facts: CallFacts,
    pub query: Option<String>,
    pub request_headers: HeaderMap,
    pub response_headers: HeaderMap,
    pub request_body: Capture,
    pub response_body: Capture,
    pub injected_include_usage: bool,
}

/// Where finished calls go (the capture log's queue), and the counters that say what
/// happened to them.
pub struct CallSink {
    pub sender: UnboundedSender<Box<FinishedCall>>,
    pub metrics: Arc<Metrics>,
    /// What every in-flight capture's bytes count against.
    pub budget: Arc<MemoryBudget>,
}

impl CallSink {
    /// An empty capture within this sink's memory budget.
    pub fn capture(&self) -> Capture {
        Capture::within(&self.budget)
    }

    pub fn send(&self, call: Box<FinishedCall>) {
        self.metrics.backlog.fetch_add(1, Ordering::Relaxed);
        self.metrics.log_queue.fetch_add(1, Ordering::Relaxed);
        if self.sender.send(call).is_err() {
            // Only possible while shutting down after the log thread has gone: count it.
            self.metrics.backlog.fetch_sub(1, Ordering::Relaxed);
            self.metrics.log_queue.fetch_sub(1, Ordering::Relaxed);
            Metrics::add(&self.metrics.capture_failures);
            tracing::error!("capture log is gone; a call record was lost during shutdown");
        }
    }
}

/// Request body bytes, shared between the upstream body (which fills it) and the call.
pub type SharedCapture = Arc<Mutex<Capture>>;

/// A finished call on its way to the capture log: sent when dropped, whether the
/// task holding it ran or was dropped unpolled.
struct HandOff {
    call: Option<Box<FinishedCall>>,
    sink: Arc<CallSink>,
}

impl Drop for HandOff {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            self.sink.send(call);
        }
    }
}

pub struct CallInFlight {
    call: Option<Box<FinishedCall>>,
    start: Instant,
    sink: Arc<CallSink>,
    request_capture: Option<SharedCapture>,
    cap: usize,
}

impl CallInFlight {
    pub fn new(call: Box<FinishedCall>, start: Instant, sink: Arc<CallSink>, cap: usize) -> Self {
        CallInFlight {
            call: Some(call),
            start,
            sink,
            request_capture: None,
            cap,
        }
    }

    pub fn id(&self) -> &str {
        self.call.as_ref().map_or("", |c| c.facts.id.as_str())
    }

    pub fn invocation_id(&self) -> &str {
        self.call
            .as_ref()
            .map_or("", |c| c.facts.invocation_id.as_str())
    }

    pub fn set_request_capture(&mut self, capture: SharedCapture) {
        self.request_capture = Some(capture);
    }

    pub fn set_request_body(&mut self, bytes: &Bytes) {
        if let Some(call) = self.call.as_mut() {
            call.request_body.push(bytes, self.cap);
        }
    }

    pub fn set_injected_include_usage(&mut self) {
        if let Some(call) = self.call.as_mut() {
            call.injected_include_usage = true;
        }
    }

    pub fn injected_include_usage(&self) -> bool {
        self.call.as_ref().is_some_and(|c| c.injected_include_usage)
    }

    pub fn on_response_head(&mut self, status: u16, headers: &HeaderMap) {
        let elapsed = self.start.elapsed();
        if let Some(call) = self.call.as_mut() {
            call.facts.http_status = Some(status);
            call.response_headers = headers.clone();
            call.facts.first_byte = Some(elapsed);
        }
    }

    pub fn on_response_data(&mut self, data: &Bytes) {
        let elapsed = self.start.elapsed();
        let cap = self.cap;
        if let Some(call) = self.call.as_mut() {
            call.response_body.push(data, cap);
            if call.facts.chunk_times.len() < MAX_CHUNK_TIMES {
                call.facts
                    .chunk_times
                    .push((call.response_body.total as usize, elapsed));
            }
        }
    }

    pub fn add_note(&mut self, note: String) {
        if let Some(call) = self.call.as_mut() {
            call.facts.notes.push(note);
        }
    }

    pub fn on_delivered(&mut self, len: usize) {
        if let Some(call) = self.call.as_mut() {
            call.facts.delivered_bytes += len as u64;
        }
    }

    /// Marks the status the client got when llmtap answered itself (502, 504).
    pub fn set_http_status(&mut self, status: u16) {
        if let Some(call) = self.call.as_mut() {
            call.facts.http_status = Some(status);
        }
    }

    pub fn is_finished(&self) -> bool {
        self.call.is_none()
    }

    /// Ends the call and hands it to the capture log. Later calls are no-ops.
    pub fn finish(&mut self, outcome: Outcome) {
        if let Some(call) = self.finished(outcome) {
            self.sink.send(call);
        }
    }

    /// Like `finish`, but hands the call to the capture log only after the task
    /// polling the answer has yielded: the last bytes are then written to the client
    /// before the log thread is woken, so the wake-up is not on the answer's path.
    /// Why: a futex wake of the log thread cost the client its latency on every call.
    pub fn finish_after_write(&mut self, outcome: Outcome) {
        let Some(call) = self.finished(outcome) else {
            return;
        };
        let handoff = HandOff {
            call: Some(call),
            sink: self.sink.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            // A runtime shutting down drops the task unpolled: `HandOff`'s drop
            // sends the call then too, so none is lost.
            Ok(runtime) => drop(runtime.spawn(async move { drop(handoff) })),
            Err(_) => drop(handoff),
        }
    }

    fn finished(&mut self, outcome: Outcome) -> Option<Box<FinishedCall>> {
        let mut call = self.call.take()?;
        call.facts.latency = self.start.elapsed();
        call.facts.outcome = outcome;
        if let Some(shared) = self.request_capture.take() {
            let taken = match shared.lock() {
                Ok(mut guard) => std::mem::take(&mut *guard),
                Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
            };
            call.request_body = taken;
        }
        Some(call)
    }
}

impl Drop for CallInFlight {
    fn drop(&mut self) {
        if self.call.is_some() {
            self.finish(Outcome::Canceled);
        }
    }
}
