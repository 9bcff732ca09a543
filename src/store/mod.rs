//! The store: what llmtap keeps of every call, behind one handle.
//!
//! `Store` is the handle the writer, the read API, the storage thread and the
//! OpenTelemetry exporter hold. It owns what outlives an engine (the live-stream
//! channel, the disk guard, the storage counters and write health, see
//! `health.rs`) and holds the open engine (`engine.rs`). When an engine's writes
//! fail with an I/O error (sled refuses every write after one, e.g. a full disk,
//! until it is reopened), the writer asks the handle to `reopen` it: the handle
//! swaps in `engine::Closed` (reads answer `StoreError::Closed`, `/readyz` 503),
//! drops the failed engine and opens it again, so capture resumes without a
//! restart.
//!
//! The rooms: this folder is engine-independent (summaries and filters, content
//! cutting and encoding, the JSON scanner, encryption, packed metadata, index and
//! rollup types, the disk guard, the storage thread); `sled/` is the embedded
//! engine and the only code that knows sled.

pub mod background;
pub mod body;
pub mod content;
pub mod crypto;
pub mod disk;
pub mod engine;
mod health;
pub mod index;
pub mod manifest;
mod packed;
pub mod plan;
pub mod postgres;
pub mod scan;
pub mod shred;
pub mod sled;
pub mod stored;
pub mod summary;
pub mod types;

pub use background::Background;
pub use crypto::Keyring;
pub use disk::{DiskGuard, DiskLevel, FreeSpaceProbe};
pub use engine::Engine;
pub use health::{StorageState, StoreStats};
pub use types::{
    AuditEntry, BucketRange, ContentUsage, Page, PageRequest, Position, RateLimitKey,
    RepriceReport, RollupScope, RunWithCalls, ScanOutcome, SweepReport, COUNT_CAP,
};

use crate::config::defaults;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use summary::{CallSummary, InvocationSummary};
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store in {dir} is in use by another llmtap process (sled holds a lock on it); stop that process or choose another --data-dir")]
    Locked { dir: String },
    #[error("cannot open the store in {dir}: {source}")]
    Open { dir: String, source: BackendError },
    #[error("store schema {found} is not supported by this llmtap (expects {expected})")]
    Schema { found: String, expected: String },
    /// The engine's own failure (sled's, PostgreSQL's), converted where the engine
    /// meets it (`From` impls in `sled/` and `postgres/`), its source kept.
    #[error("{prefix}{source}")]
    Backend {
        prefix: &'static str,
        /// An I/O failure: reopening the engine once the cause is gone resumes writes.
        io: bool,
        source: BackendError,
    },
    #[error("stored record {key} is corrupt: {source}")]
    Decode {
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot encode record: {0}")]
    Encode(serde_json::Error),
    #[error("stored value {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the store holds encrypted content: set [store] encryption_key_file or LLMTAP_ENCRYPTION_KEY")]
    KeyRequired,
    #[error("the encryption key cannot open the content of the store in {dir} (it was sealed with key id {sealed_with}, this keyring has {have}): use the key the store was written with; to rotate, list the new key first and keep the old one after it")]
    WrongKey {
        dir: String,
        sealed_with: String,
        have: String,
    },
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    #[error("content sealed in key period {slot} was shredded: its key is destroyed")]
    Shredded { slot: u32 },
    #[error("attachment files: {0}")]
    Files(#[from] std::io::Error),
    #[error("the store is reopening after a failed write; try again shortly")]
    Closed,
    /// An operation an engine does not have (yet): the API answers 501.
    #[error("{operation} is not yet available on the {engine} store")]
    Unsupported {
        engine: &'static str,
        operation: &'static str,
    },
}

/// An engine's error as `StoreError` keeps it: the interface names no engine.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl StoreError {
    /// An I/O failure of the engine (a full disk, a failing device, a database that
    /// cannot be reached or is shutting down): reopening the engine once the cause is
    /// gone resumes writes, so the writer keeps the batch in the capture log. Other
    /// errors (a record that cannot be encoded, corrupt data) would fail the same way
    /// again.
    pub fn is_io(&self) -> bool {
        match self {
            StoreError::Backend { io, .. } => *io,
            StoreError::Files(_) | StoreError::Closed => true,
            _ => false,
        }
    }
}

/// How the store keeps content (the `[store]` keys of the config).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub cache_bytes: u64,
    pub flush_every_ms: u64,
    /// zstd level for stored content; 0 disables compression.
    pub zstd_level: i32,
    /// Seals content with AEAD and keys addresses with HMAC when set.
    pub keys: Option<Arc<Keyring>>,
    /// 0 keeps calls forever.
    pub retention_days: u64,
    /// 0 keeps bodies as long as their calls.
    pub body_retention_days: u64,
    pub min_free_mb: u64,
    pub critical_free_mb: u64,
    /// sled's own zstd compression of pages (metadata, refcounts, manifests).
    pub sled_compression: bool,
    /// Bytes the writer stores before the engine is reopened to write its snapshot
    /// (`Store::maintain`); 0 never. sled 0.34 writes a snapshot only while it opens
    /// and replays every log byte written since the last one when it next opens, so
    /// this bounds how long a restart takes to open the store.
    pub snapshot_every_bytes: u64,
    /// Length of a content key period (`shred.rs`): deleted content becomes
    /// unrecoverable at the first retention sweep after its period is over.
    pub key_period_secs: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: defaults::STORE_CACHE_BYTES,
            flush_every_ms: defaults::FLUSH_EVERY_MS,
            zstd_level: defaults::COMPRESSION_LEVEL,
            keys: None,
            retention_days: 0,
            body_retention_days: 0,
            min_free_mb: defaults::MIN_FREE_MB,
            critical_free_mb: defaults::CRITICAL_FREE_MB,
            sled_compression: false,
            snapshot_every_bytes: defaults::SNAPSHOT_EVERY_BYTES,
            key_period_secs: defaults::KEY_PERIOD_SECS,
        }
    }
}

/// What the live stream carries: the summaries of one stored batch.
#[derive(Debug, Clone, Default)]
pub struct BatchWritten {
    pub calls: Vec<CallSummary>,
    pub invocations: Vec<InvocationSummary>,
}

/// What an engine shares with the handle and keeps across a reopen.
#[derive(Clone)]
pub struct EngineContext {
    pub events: broadcast::Sender<Arc<BatchWritten>>,
    pub disk: Arc<DiskGuard>,
    pub stats: Arc<StoreStats>,
}

impl EngineContext {
    /// A fresh context for the store in `dir`.
    pub fn new(dir: &Path, options: &StoreOptions) -> EngineContext {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        EngineContext {
            events,
            disk: Arc::new(DiskGuard::new(
                dir,
                options.min_free_mb,
                options.critical_free_mb,
            )),
            stats: Arc::default(),
        }
    }
}

/// Live-stream buffer per subscriber; a slower reader skips ahead (and is told).
const EVENT_BUFFER: usize = 4096;

/// Opens an engine: at start, and again after its writes failed.
type Opener = dyn Fn(&EngineContext) -> Result<Arc<dyn Engine>, StoreError> + Send + Sync;

#[derive(Clone)]
pub struct Store {
    engine: Arc<RwLock<Arc<dyn Engine>>>,
    opener: Arc<Opener>,
    context: EngineContext,
    options: Arc<StoreOptions>,
    snapshotting: Arc<Snapshotting>,
}

/// Readers wait (up to `SNAPSHOT_READ_WAIT`) while the handle reopens its engine for
/// a snapshot, rather than be told the store is closed: it is a routine pause.
#[derive(Default)]
struct Snapshotting {
    active: std::sync::atomic::AtomicBool,
    lock: std::sync::Mutex<()>,
    done: std::sync::Condvar,
}

/// How long a read waits for a snapshot's reopen before it is answered as closed. A
/// reader that holds the old engine while it asks for the engine again (none does
/// today) would hold sled's lock that long, then let the reopen go on.
const SNAPSHOT_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Snapshotting {
    fn set(&self, active: bool) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.active
            .store(active, std::sync::atomic::Ordering::Release);
        if !active {
            self.done.notify_all();
        }
    }

    fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Acquire)
    }

    fn wait(&self) {
        use std::sync::atomic::Ordering;
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let deadline = std::time::Instant::now() + SNAPSHOT_READ_WAIT;
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        while self.active.load(Ordering::Acquire) {
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            guard = match self.done.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl Store {
    pub fn open(dir: &Path, cache_bytes: u64, flush_every_ms: u64) -> Result<Store, StoreError> {
        Store::open_with(
            dir,
            StoreOptions {
                cache_bytes,
                flush_every_ms,
                ..StoreOptions::default()
            },
        )
    }

    /// Opens the embedded sled store in `dir`.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let context = EngineContext::new(dir, &options);
        let dir: PathBuf = dir.to_path_buf();
        let engine_options = options.clone();
        let opener = move |context: &EngineContext| -> Result<Arc<dyn Engine>, StoreError> {
            let engine = sled::SledStore::open_with(&dir, engine_options.clone(), context)?;
            Ok(Arc::new(engine))
        };
        Store::open_engine(context, options, opener)
    }

    /// A handle on an engine that `opener` opens (now, and again after failed writes),
    /// e.g. `postgres::PostgresStore`.
    pub fn open_engine(
        context: EngineContext,
        options: StoreOptions,
        opener: impl Fn(&EngineContext) -> Result<Arc<dyn Engine>, StoreError> + Send + Sync + 'static,
    ) -> Result<Store, StoreError> {
        let engine = opener(&context)?;
        Ok(Store {
            engine: Arc::new(RwLock::new(engine)),
            opener: Arc::new(opener),
            context,
            options: Arc::new(options),
            snapshotting: Arc::default(),
        })
    }

    /// The open engine (or `engine::Closed` while it reopens).
    fn engine(&self) -> Arc<dyn Engine> {
        self.snapshotting.wait();
        let engine = self.current_engine();
        // A snapshot that began as we took it: we may hold the stand-in, or the old
        // engine, which must drop for sled's open to get its lock. Wait for the new one.
        if self.snapshotting.is_active() {
            drop(engine);
            self.snapshotting.wait();
            return self.current_engine();
        }
        engine
    }

    fn current_engine(&self) -> Arc<dyn Engine> {
        match self.engine.read() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_engine(&self, engine: Arc<dyn Engine>) {
        match self.engine.write() {
            Ok(mut e) => *e = engine,
            Err(p) => *p.into_inner() = engine,
        }
    }

    /// False while the handle reopens a failed engine.
    pub fn is_open(&self) -> bool {
        self.context
            .stats
            .reopening
            .load(std::sync::atomic::Ordering::Acquire)
            == 0
    }

    /// Closes the engine and opens it again (after its writes failed with an I/O
    /// error). Reads answer `StoreError::Closed` meanwhile. On failure the handle
    /// stays closed; call again later.
    pub fn reopen(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        self.context.stats.reopening.store(1, Ordering::Release);
        // Our reference to the failed engine goes here; readers holding one finish
        // their request and drop theirs, and sled's open waits for its lock.
        self.set_engine(Arc::new(engine::Closed));
        match (self.opener)(&self.context) {
            Ok(engine) => {
                self.set_engine(engine);
                self.context.stats.reopening.store(0, Ordering::Release);
                StoreStats::add(&self.context.stats.reopens, 1);
                tracing::warn!("store reopened: writes resume");
                Ok(())
            }
            Err(e) => {
                StoreStats::add(&self.context.stats.reopen_failures, 1);
                Err(e)
            }
        }
    }

    /// Closes and reopens the engine when it asks (`Engine::snapshot_due`: sled,
    /// every `store.snapshot_every` bytes stored), so sled writes its snapshot and the
    /// next start replays a bounded log. Called by the writer between batches (calls
    /// wait in the capture log); reads wait for it. True when it reopened. On failure
    /// the handle is left closed and the caller reopens it as after a failed write.
    pub fn maintain(&self) -> Result<bool, StoreError> {
        let Some(reopen) = self.engine().snapshot_due() else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        self.snapshotting.set(true);
        // Readers in flight finish with the old engine and drop it; sled's open waits
        // for its lock meanwhile.
        self.set_engine(Arc::new(engine::Closed));
        let closed = started.elapsed();
        let reopened = reopen(&self.context);
        let outcome = match reopened {
            Ok(engine) => {
                self.set_engine(engine);
                let us = started.elapsed().as_micros() as u64;
                StoreStats::add(&self.context.stats.snapshots, 1);
                StoreStats::add(&self.context.stats.snapshot_us, us);
                tracing::info!(
                    seconds = us as f64 / 1e6,
                    closing_seconds = closed.as_secs_f64(),
                    "store reopened to write its snapshot"
                );
                Ok(true)
            }
            Err(e) => Err(e),
        };
        self.snapshotting.set(false);
        outcome
    }

    /// Every stored batch's summaries, for the live stream and the exporter. The
    /// channel belongs to the handle, so subscribers outlive a reopen.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BatchWritten>> {
        self.context.events.subscribe()
    }

    pub fn disk(&self) -> &DiskGuard {
        &self.context.disk
    }

    pub fn stats(&self) -> &StoreStats {
        &self.context.stats
    }

    pub fn options(&self) -> &StoreOptions {
        &self.options
    }
}
