//! Every setting's default, defined once: `Config` falls back to these, and the
//! subsystems' own `Default`s (used by tests, benchmarks and the dev tools) are
//! built from them, so a default changed here changes everywhere.

use std::time::Duration;

/// `store.snapshot_every`: measured on the 1M-call seed, sled replays its log at
/// about 150 MB of stored bytes a second, so a restart replays at most ~2 s and a
/// snapshot pauses the writer for about as long (see BENCHMARKS.md).
pub const SNAPSHOT_EVERY_BYTES: u64 = 256 << 20;
/// `store.key_period_secs`: the length of a content key period (`store/shred.rs`).
pub const KEY_PERIOD_SECS: u64 = 3600;
/// `store.cache_capacity_mb`, in bytes.
pub const STORE_CACHE_BYTES: u64 = 256 << 20;
/// `store.flush_every_ms`.
pub const FLUSH_EVERY_MS: u64 = 50;
/// `store.compression_level` (zstd).
pub const COMPRESSION_LEVEL: i32 = 3;
/// `store.min_free_mb`: below it capture pauses.
pub const MIN_FREE_MB: u64 = 1024;
/// `store.critical_free_mb`.
pub const CRITICAL_FREE_MB: u64 = 256;
/// `store.batch_linger_ms`: how long a batch that is not full waits for company.
pub const BATCH_LINGER: Duration = Duration::from_millis(20);
/// `capture.memory_budget_bytes`: bytes of bodies held in flight, all calls together.
pub const CAPTURE_MEMORY_BUDGET: usize = 256 << 20;
/// `capture.max_decoded_bytes`: largest decoded size of one compressed body.
pub const MAX_DECODED_BYTES: u64 = 64 << 20;
/// `capture.decode_budget_bytes`: decoded body bytes one stored batch may hold.
pub const DECODE_BUDGET_BYTES: u64 = 256 << 20;
