//! zstd block compression with one reused context per thread, for the capture
//! buffers on the forward path and the content store's values.
//!
//! A zstd context costs a large allocation and a reset; creating one per value was
//! once the writer's biggest single cost, so each thread keeps one of each kind.

use std::cell::RefCell;

thread_local! {
    static COMPRESSOR: RefCell<zstd::block::Compressor> =
        RefCell::new(zstd::block::Compressor::new());
    static DECOMPRESSOR: RefCell<zstd::block::Decompressor> =
        RefCell::new(zstd::block::Decompressor::new());
}

/// A zstd frame of `plain` at `level`.
pub fn compress(plain: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| c.borrow_mut().compress(plain, level))
}

/// The bytes of a frame whose plain size is at most `capacity`.
pub fn decompress(frame: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| d.borrow_mut().decompress(frame, capacity))
}
