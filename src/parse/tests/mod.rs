//! Tests of the provider parsers: recorded fixtures, documented shapes, chunking.

mod fixtures;
