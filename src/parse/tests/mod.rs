//! Tests of the provider parsers: recorded fixtures, documented shapes, chunking.

mod fixtures;
mod include_usage;
mod ratelimit;
mod sse;
