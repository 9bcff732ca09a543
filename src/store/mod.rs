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
pub mod postgres;
pub mod scan;
pub mod sled;
pub mod stored;
pub mod summary;

pub use self::sled::{
    AuditEntry, ContentUsage, Page, PageRequest, Position, RepriceReport, ScanOutcome, SweepReport,
    COUNT_CAP,
};
pub use background::Background;
pub use crypto::Keyring;
pub use disk::{DiskGuard, DiskLevel, FreeSpaceProbe};
pub use engine::Engine;
pub use health::{StorageHealth, StoreStats};

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use summary::{CallSummary, InvocationSummary};
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store in {dir} is in use by another llmtap process (sled holds a lock on it); stop that process or choose another --data-dir")]
    Locked { dir: String },
    #[error("cannot open the store in {dir}: {source}")]
    Open { dir: String, source: ::sled::Error },
    #[error("store schema {found} is not supported by this llmtap (expects {expected})")]
    Schema { found: String, expected: String },
    #[error("store error: {0}")]
    Sled(#[from] ::sled::Error),
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
    #[error("attachment files: {0}")]
    Files(#[from] std::io::Error),
    #[error("the store is reopening after a failed write; try again shortly")]
    Closed,
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
    /// An operation the PostgreSQL engine does not have yet (issue 17 is in progress).
    #[error("{operation} is not yet available on the PostgreSQL store")]
    NotOnPostgres { operation: &'static str },
}

impl StoreError {
    /// An I/O failure of the engine (a full disk, a failing device, a database that
    /// cannot be reached or is shutting down): reopening the engine once the cause is
    /// gone resumes writes, so the writer keeps the batch in the capture log. Other
    /// errors (a record that cannot be encoded, corrupt data) would fail the same way
    /// again.
    pub fn is_io(&self) -> bool {
        match self {
            StoreError::Sled(::sled::Error::Io(_)) | StoreError::Files(_) | StoreError::Closed => {
                true
            }
            StoreError::Postgres(e) => e.is_transient(),
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
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 256 << 20,
            flush_every_ms: 50,
            zstd_level: 3,
            keys: None,
            retention_days: 0,
            body_retention_days: 0,
            min_free_mb: 1024,
            critical_free_mb: 256,
            sled_compression: false,
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
        })
    }

    /// The open engine (or `engine::Closed` while it reopens).
    fn engine(&self) -> Arc<dyn Engine> {
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
