//! Tests of the provider parsers: recorded fixtures, documented shapes, chunking.

mod fixtures;
mod include_usage;
mod ratelimit;
mod shapes;
mod sse;

/// The proxy keeps these across awaits on a multi-threaded runtime.
#[test]
fn incremental_types_are_send() {
    fn send<T: Send>() {}
    send::<super::StreamParser>();
    send::<super::include_usage::UsageChunkStripper>();
    send::<super::sse::SseParser>();
}
