//! The embedded engine, and the only code that knows sled: key layout, encoding,
//! batch writes and reads.
//!
//! Key layout (all keys are bytes; ids are time-ordered ASCII; "time" is u64 BE µs):
//! - `calls`:        call id → CallRecord metadata (JSON, packed by `packed.rs`)
//! - `invocations`:  invocation id → InvocationRecord (JSON)
//! - `inv_rounds`:   invocation id, 0x00, round (u32 BE), call id → ()
//!   lists an invocation's calls in round order with one prefix scan
//! - `call_sum` / `inv_sum`: id → summary (facet header + JSON, see `summary.rs`)
//! - `call_idx` / `inv_idx`: tag, value, 0x00, time, id → () (see `index.rs`);
//!   tag `t` (empty value) is the time index of every record, tag `h` (`1`/`0`)
//!   whether it has a session
//! - `idx_counts`: `c`|`i`, tag, value → entries under that index prefix (u64 BE);
//!   `C`|`I`, tag, tag, value, 0x00, value [, 0x00, day u32 BE] → records with both, all
//!   time or that UTC day (see `index::pair_count_key`)
//! - `call_text`: call id → system prompt and last user message (JSON), for `q`;
//!   legacy: calls now name these texts in their manifest (see `calls.rs`)
//! - `rollup`:       scope, 0x00, 15-minute bucket start → counters (`RollupCell`)
//! - `rollup_all`:   scope → all-time counters with a latency histogram
//! - `sessions`:     session id → SessionSummary JSON; `session_list`: first time, id → tenant
//! - `ratelimits`:   provider, 0, key fingerprint, 0, model → latest RateLimitState JSON
//! - `rl_series`:    that key, 0x00, time, call id → RateLimitPoint JSON
//! - `rl_429`:       that key, 0x00, time, call id → retry-after seconds (JSON)
//! - `audit`:        time, sequence (u32 BE) → audit entry JSON (written by the API)
//! - `meta`:         `schema` → version; `encrypted` → key id; `body_sweep_cursor`;
//!   `journal_applied` → capture log position applied (u64 BE, see `journal/`);
//!   `read_indexes` → 1 once derived trees exist; `index_v3` → 1 once tag `h` and the
//!   pair counters exist (stores of that time also hold per-day pair counters,
//!   no longer read)
//! - `call_content`: call id → sealed manifest naming the call's content roots
//! - `chunks`, `chunk_refs`, `blobs`, `blob_refs`: the content store (see `content.rs`);
//!   attachment values are files under `attachments/` (`blob_files.rs`), the `blobs`
//!   tree holds those of older stores
//!
//! The `calls` value is the record's metadata only (a `CallRecord` as JSON, packed
//! with a zstd dictionary but not sealed); `get_call` puts bodies and parsed views back from the content
//! store, `get_call_meta` does not. Derived trees (summaries, indexes, rollups) are
//! computed from the full record before its content is split off.
//!
//! Writes come from the single writer thread (plus the append-only audit log,
//! written by API handlers, and the retention sweeper, which only deletes under the
//! content lock); readers share the handle. After each
//! batch the store publishes its summaries on a broadcast channel (`subscribe`) for
//! the live stream; sending never blocks.

mod blob_files;
mod calls;
pub(crate) mod content;
mod engine;
mod facet_cache;
mod join;
mod query;
mod reprice;
mod retention;
mod writes;

// The shared rooms, by the short names the engine's modules use.
use super::plan::{self, Listed, RollupDelta, StoredCall};
use super::{crypto, disk, index, packed, summary};
pub use super::{BatchWritten, EngineContext, StoreError, StoreOptions, StoreStats};

use crate::record::{CallRecord, InvocationRecord};
use index::{CallText, RollupCell, SessionSummary};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use summary::{FacetView, InvocationSummary};
use tokio::sync::broadcast;
use writes::Writes;

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> StoreError {
        StoreError::Backend {
            prefix: "store error: ",
            io: matches!(e, ::sled::Error::Io(_)),
            source: Box::new(e),
        }
    }
}

const SCHEMA_VERSION: &[u8] = b"1";
/// The period keys' directory under the data directory (`shred.rs`).
const KEY_DIR: &str = "keys";
/// `meta` key of a value sealed with the store's key, checked at open.
const META_KEY_CHECK: &[u8] = b"key_check";
const KEY_CHECK_TEXT: &[u8] = b"llmtap key check v1";

/// sled's log segment size. Measured with `llmtap dev storage-bench`: sled cleans a
/// segment only once half of it is dead, and with its default 512 KiB segments the
/// store took 16.2 KB per call against 10.1 KB with 2 MiB (1000 conversations).
const SEGMENT_SIZE: usize = 4 << 20;
/// zstd level of sled's page compression. Our values are mostly compressed
/// already (content, packed metadata); level 1 keeps what sled's pages add
/// (keys, counters, summaries' headers) small at a third of level 5's cost:
/// writer-bench 691 calls/s against 439 at sled's default level 5.
const SLED_COMPRESSION_LEVEL: i32 = 1;
/// What stores created before `SEGMENT_SIZE` was set use.
const LEGACY_SEGMENT_SIZE: usize = 512 << 10;

#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    calls: sled::Tree,
    invocations: sled::Tree,
    inv_rounds: sled::Tree,
    call_sum: sled::Tree,
    inv_sum: sled::Tree,
    call_idx: sled::Tree,
    inv_idx: sled::Tree,
    idx_counts: sled::Tree,
    call_text: sled::Tree,
    rollup: sled::Tree,
    rollup_all: sled::Tree,
    sessions: sled::Tree,
    session_list: sled::Tree,
    ratelimits: sled::Tree,
    rl_series: sled::Tree,
    rl_429: sled::Tree,
    audit: sled::Tree,
    audit_seq: Arc<AtomicU32>,
    events: broadcast::Sender<Arc<BatchWritten>>,
    meta: sled::Tree,
    call_content: sled::Tree,
    content: content::ContentTrees,
    disk: Arc<disk::DiskGuard>,
    search_texts: Arc<calls::SearchTexts>,
    /// Exact totals of filter conjunctions no counter answers (`facet_cache.rs`).
    call_facets: Arc<facet_cache::FacetCache>,
    inv_facets: Arc<facet_cache::FacetCache>,
    stats: Arc<StoreStats>,
    options: Arc<StoreOptions>,
    /// Held by whoever read-modify-writes the counters and rollups (`idx_counts`,
    /// `rollup`, `rollup_all`): the writer and the retention sweeper run on two
    /// threads, and sled has no atomic add, so each update is read and written
    /// under this lock or one of them would be lost.
    counters: Arc<std::sync::Mutex<()>>,
    /// The data directory, to open the store again (`snapshot_due`).
    dir: Arc<Path>,
    /// Bytes the writer stored since this engine opened (`Writes::apply_to`): what
    /// sled's next open would replay, as sled snapshots only while opening.
    logged: Arc<AtomicU64>,
}

/// What a reopen for a snapshot carries over: the in-memory state built from the
/// trees, which the reopened trees hold unchanged.
struct Carried {
    call_facets: Arc<facet_cache::FacetCache>,
    inv_facets: Arc<facet_cache::FacetCache>,
    search_texts: Arc<calls::SearchTexts>,
    audit_seq: Arc<AtomicU32>,
}

fn round_key(invocation_id: &str, round: u32, call_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(invocation_id.len() + 5 + call_id.len());
    key.extend_from_slice(invocation_id.as_bytes());
    key.push(0);
    key.extend_from_slice(&round.to_be_bytes());
    key.extend_from_slice(call_id.as_bytes());
    key
}

fn round_prefix(invocation_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(invocation_id.len() + 1);
    key.extend_from_slice(invocation_id.as_bytes());
    key.push(0);
    key
}

impl SledStore {
    /// Opens the store. A lock held by a handle that is closing (sled releases it from
    /// its flusher thread shortly after the last handle drops) is waited out for up
    /// to three seconds; a lock held by another live process fails with `Locked`.
    pub fn open_with(
        dir: &Path,
        options: StoreOptions,
        context: &EngineContext,
    ) -> Result<SledStore, StoreError> {
        SledStore::open_waiting(dir, options, context, None)
    }

    fn open_waiting(
        dir: &Path,
        options: StoreOptions,
        context: &EngineContext,
        carried: Option<&Carried>,
    ) -> Result<SledStore, StoreError> {
        let mut attempts = 0;
        let started = std::time::Instant::now();
        loop {
            match SledStore::open_once(dir, options.clone(), context, carried) {
                Err(StoreError::Locked { .. }) if attempts < 60 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => {
                    tracing::debug!(
                        lock_waits = attempts,
                        seconds = started.elapsed().as_secs_f64(),
                        "sled store opened"
                    );
                    return other;
                }
            }
        }
    }

    fn open_once(
        dir: &Path,
        options: StoreOptions,
        context: &EngineContext,
        carried: Option<&Carried>,
    ) -> Result<SledStore, StoreError> {
        let shown = dir.display().to_string();
        let config = |compression: bool, segment_size: usize| {
            sled::Config::new()
                .path(dir)
                .cache_capacity(options.cache_bytes)
                .flush_every_ms(Some(options.flush_every_ms.max(1)))
                .use_compression(compression)
                .compression_factor(SLED_COMPRESSION_LEVEL)
                .segment_size(segment_size)
        };
        // sled fixes page compression and segment size when a store is created; a
        // store made by an earlier llmtap (or with the other setting) opens with the
        // settings it has.
        let (mut compression, mut segment_size) = (options.sled_compression, SEGMENT_SIZE);
        let mut opened = config(compression, segment_size).open();
        for _ in 0..2 {
            match &opened {
                Err(sled::Error::Unsupported(why)) if why.contains("compression") => {
                    compression = !compression;
                }
                Err(sled::Error::Unsupported(why)) if why.contains("io buffer size") => {
                    segment_size = LEGACY_SEGMENT_SIZE;
                }
                _ => break,
            }
            tracing::info!(
                compression,
                segment_size,
                "opening the store with the settings it was created with"
            );
            opened = config(compression, segment_size).open();
        }
        let db = opened.map_err(|source| match &source {
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                StoreError::Locked { dir: shown.clone() }
            }
            _ => StoreError::Open {
                dir: shown.clone(),
                source: Box::new(source),
            },
        })?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema")? {
            None => {
                meta.insert("schema", SCHEMA_VERSION)?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(StoreError::Schema {
                    found: String::from_utf8_lossy(&v).into_owned(),
                    expected: String::from_utf8_lossy(SCHEMA_VERSION).into_owned(),
                })
            }
        }
        // Once a store holds sealed content it cannot be opened without a key.
        match (meta.get("encrypted")?, &options.keys) {
            (Some(_), None) => return Err(StoreError::KeyRequired),
            (None, Some(keys)) => {
                meta.insert("encrypted", keys.current_id().as_bytes())?;
            }
            _ => {}
        }
        let vault = crate::store::shred::FileVault::open(dir.join(KEY_DIR))?;
        let codec = crate::store::content::Codec::for_store(&options, Box::new(vault));
        let logged = Arc::new(AtomicU64::new(0));
        let store = SledStore {
            calls: db.open_tree("calls")?,
            invocations: db.open_tree("invocations")?,
            inv_rounds: db.open_tree("inv_rounds")?,
            call_sum: db.open_tree("call_sum")?,
            inv_sum: db.open_tree("inv_sum")?,
            call_idx: db.open_tree("call_idx")?,
            inv_idx: db.open_tree("inv_idx")?,
            idx_counts: db.open_tree("idx_counts")?,
            call_text: db.open_tree("call_text")?,
            rollup: db.open_tree("rollup")?,
            rollup_all: db.open_tree("rollup_all")?,
            sessions: db.open_tree("sessions")?,
            session_list: db.open_tree("session_list")?,
            ratelimits: db.open_tree("ratelimits")?,
            rl_series: db.open_tree("rl_series")?,
            rl_429: db.open_tree("rl_429")?,
            audit: db.open_tree("audit")?,
            audit_seq: carried.map_or_else(Arc::default, |c| c.audit_seq.clone()),
            events: context.events.clone(),
            call_content: db.open_tree("call_content")?,
            content: content::ContentTrees::open(&db, dir, codec, logged.clone())?,
            disk: context.disk.clone(),
            search_texts: carried.map_or_else(Arc::default, |c| c.search_texts.clone()),
            call_facets: carried.map_or_else(
                || Arc::new(facet_cache::FacetCache::new(false)),
                |c| c.call_facets.clone(),
            ),
            inv_facets: carried.map_or_else(
                || Arc::new(facet_cache::FacetCache::new(true)),
                |c| c.inv_facets.clone(),
            ),
            stats: context.stats.clone(),
            options: Arc::new(options),
            counters: Arc::default(),
            meta: meta.clone(),
            dir: Arc::from(dir),
            logged,
            db,
        };
        let fresh = meta.get("read_indexes")?.is_none();
        if fresh {
            if !store.calls.is_empty() {
                tracing::info!("building read-API indexes for an older store");
                store.reindex()?;
            }
            meta.insert("read_indexes", b"1")?;
        }
        if meta.get("index_v3")?.is_none() {
            if !fresh {
                tracing::info!("adding the has_session index and pair counters to an older store");
                store.backfill_indexes()?;
            }
            meta.insert("index_v3", b"1")?;
        }
        if meta.get("no_session_subjects")?.is_none() {
            store.drop_session_subjects()?;
            meta.insert("no_session_subjects", b"1")?;
        }
        if meta.get(META_SESSION_MODELS)?.is_none() {
            store.backfill_session_models()?;
        }
        store.check_keyring(&shown)?;
        if carried.is_none() {
            store.load_facet_caches()?;
        }
        if meta.get(META_ROLLUP_TOOL_COUNTS)?.is_none() {
            // A reindexed store's rollups were built with the tool counts already.
            if !fresh {
                tracing::info!("adding tool-call counts to an older store's rollups");
            }
            store.backfill_tool_counts(!fresh)?;
        }
        Ok(store)
    }

    /// Adds the tool calls (HTTP, MCP) of a store written before rollup cells
    /// counted them (`count` false: only marks the store as counting them). The cells
    /// and the mark go in one transaction, so a crash between them cannot count twice.
    fn backfill_tool_counts(&self, count: bool) -> Result<(), StoreError> {
        let mut buckets: HashMap<Vec<u8>, RollupCell> = HashMap::new();
        let mut all_time: HashMap<Vec<u8>, RollupCell> = HashMap::new();
        if count {
            // Every call's facet header names its kind; only an MCP exchange's record
            // is read, for its method (`agent_loop::is_tool_step`).
            for entry in self.call_sum.iter() {
                let (id, stored) = entry?;
                let key = String::from_utf8_lossy(&id);
                let v = stored_view(&key, &stored)?;
                let tool_step = match v.get(summary::tag::KIND) {
                    Some("http") => true,
                    Some("mcp") => self
                        .get_call_meta(&key)?
                        .is_some_and(|call| crate::agent_loop::is_tool_step(&call)),
                    _ => false,
                };
                if !tool_step {
                    continue;
                }
                let failed = u64::from(v.get(summary::tag::STATUS) != Some("success"));
                let scopes = index::scopes(v.get(summary::tag::TENANT), v.get(summary::tag::AGENT));
                for scope in scopes {
                    let bucket = buckets
                        .entry(index::bucket_key(&scope, v.time_us))
                        .or_default();
                    bucket.tool_calls += 1;
                    bucket.tool_failures += failed;
                    let all = all_time.entry(scope).or_default();
                    all.tool_calls += 1;
                    all.tool_failures += failed;
                }
            }
        }
        let _counters = self.lock_counters();
        let mut parts = Vec::with_capacity(3);
        for (tree, cells) in [(&self.rollup, buckets), (&self.rollup_all, all_time)] {
            let mut writes = Writes::default();
            for (key, cell) in cells {
                let mut stored = tree
                    .get(&key)?
                    .map(|v| RollupCell::decode(&v))
                    .unwrap_or_default();
                stored.merge(&cell);
                writes.insert(key, stored.encode());
            }
            parts.push((tree, writes));
        }
        let mut mark = Writes::default();
        mark.insert(META_ROLLUP_TOOL_COUNTS, b"1");
        parts.push((&self.meta, mark));
        writes::apply_atomically(&parts)?;
        Ok(())
    }

    /// Takes the subjects (first user messages, prompt text in the clear) out of
    /// sessions stored before subjects were read from the content on demand.
    fn drop_session_subjects(&self) -> Result<(), StoreError> {
        let mut batch = Writes::default();
        for entry in self.sessions.iter() {
            let (key, value) = entry?;
            let mut session: SessionSummary = decode(&key, &value)?;
            if session.subject.take().is_some() {
                batch.insert(
                    key,
                    serde_json::to_vec(&session).map_err(StoreError::Encode)?,
                );
            }
        }
        batch.apply_to(&self.sessions)?;
        Ok(())
    }

    /// Gives the sessions stored before sessions kept their models (`models` absent)
    /// the models of their stored LLM calls, in start order (`SessionSummary::note_models`,
    /// the rule each batch applies), as PostgreSQL's migration 0008 filled its
    /// sessions: once, at open, so both engines answer and filter every session by
    /// its models alike. Calls already swept are not counted (as on PostgreSQL). The
    /// sessions and the mark go in one transaction: a run cut short reruns whole.
    fn backfill_session_models(&self) -> Result<(), StoreError> {
        let mut sessions = Writes::default();
        let mut filled = 0u64;
        for entry in self.sessions.iter() {
            let (key, value) = entry?;
            let mut session: SessionSummary = decode(&key, &value)?;
            if session.models.is_some() {
                continue;
            }
            session.models = Some(Vec::new());
            // The session index lists its calls by start time.
            let prefix = index::index_prefix(summary::tag::SESSION, &key);
            for entry in self.call_idx.scan_prefix(&prefix) {
                let (index_key, _) = entry?;
                let Some((_, id)) = index::split_index_key(&index_key, prefix.len()) else {
                    continue;
                };
                if let Some(call) = self.get_call_meta(&String::from_utf8_lossy(id))? {
                    session.note_models(&call);
                }
            }
            sessions.insert(
                key,
                serde_json::to_vec(&session).map_err(StoreError::Encode)?,
            );
            filled += 1;
        }
        if filled > 0 {
            tracing::info!(
                sessions = filled,
                "adding their models to an older store's sessions"
            );
        }
        let mut mark = Writes::default();
        mark.insert(META_SESSION_MODELS, b"1");
        writes::apply_atomically(&[(&self.sessions, sessions), (&self.meta, mark)])?;
        Ok(())
    }

    /// Once `snapshot_every_bytes` have been stored since this engine opened: flushes
    /// it and answers how to open it again with the facet caches it built, so the
    /// reopen costs what sled's open costs (replaying its log since the last snapshot
    /// and writing a new one), not a reload of every summary.
    pub fn snapshot_due(&self) -> Option<super::engine::Reopen> {
        let every = self.options.snapshot_every_bytes;
        if every == 0 || self.logged.load(std::sync::atomic::Ordering::Relaxed) < every {
            return None;
        }
        if let Err(e) = self.db.flush() {
            tracing::warn!(error = %e, "store flush before a snapshot failed; not reopening now");
            return None;
        }
        let carried = Carried {
            call_facets: self.call_facets.clone(),
            inv_facets: self.inv_facets.clone(),
            search_texts: self.search_texts.clone(),
            audit_seq: self.audit_seq.clone(),
        };
        let dir = self.dir.clone();
        let options = (*self.options).clone();
        Some(Box::new(move |context: &EngineContext| {
            let store = SledStore::open_waiting(&dir, options, context, Some(&carried))?;
            Ok(Arc::new(store) as Arc<dyn super::Engine>)
        }))
    }

    /// Refuses a keyring that cannot open what the store holds, before any traffic is
    /// recorded: a sealed check value in `meta` (`key_check`), or, in stores written
    /// before it existed, the first manifest. The check value is written with the
    /// current key when the store has none yet.
    fn check_keyring(&self, dir: &str) -> Result<(), StoreError> {
        let Some(keys) = self.options.keys.as_deref() else {
            return Ok(());
        };
        let wrong = |sealed: &[u8]| StoreError::WrongKey {
            dir: dir.to_string(),
            sealed_with: sealed
                .get(..4)
                .map_or_else(|| "unknown".into(), crypto::hex),
            have: keys.ids().join(", "),
        };
        if let Some(sealed) = self.meta.get(META_KEY_CHECK)? {
            return match keys.open(&sealed) {
                Ok(plain) if plain == KEY_CHECK_TEXT => Ok(()),
                _ => Err(wrong(&sealed)),
            };
        }
        if let Some(entry) = self.call_content.iter().next() {
            let (id, stored) = entry?;
            match self.content.codec.open(&id, &stored) {
                Ok(_) => {}
                Err(StoreError::Crypto(_)) => {
                    return Err(wrong(stored.get(1..).unwrap_or_default()));
                }
                Err(e) => return Err(e),
            }
        }
        self.meta
            .insert(META_KEY_CHECK, keys.seal(KEY_CHECK_TEXT)?)?;
        Ok(())
    }

    /// Bytes the facet caches hold (bitmaps and values), for calls and invocations.
    pub fn facet_cache_bytes(&self) -> (u64, u64) {
        (self.call_facets.usage().1, self.inv_facets.usage().1)
    }

    /// Fills the facet caches from every stored summary (before the writer starts).
    fn load_facet_caches(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        for (sums, cache) in [
            (&self.call_sum, &self.call_facets),
            (&self.inv_sum, &self.inv_facets),
        ] {
            cache.clear();
            for entry in sums.iter() {
                let (id, stored) = entry?;
                let view = stored_view(&String::from_utf8_lossy(&id), &stored)?;
                cache.note(view.time_us, &id, &index::view_pairs(&view), None);
            }
        }
        let (call_days, call_bytes) = self.call_facets.usage();
        let (_, inv_bytes) = self.inv_facets.usage();
        tracing::info!(
            days = call_days,
            bytes = call_bytes + inv_bytes,
            seconds = started.elapsed().as_secs_f64(),
            "facet cache loaded"
        );
        Ok(())
    }

    /// Stores a batch of calls and the invocations they changed.
    pub fn write_batch(
        &self,
        calls: &[CallRecord],
        invocations: &[InvocationRecord],
    ) -> Result<(), StoreError> {
        self.write_batch_moving(calls, invocations, &[])
    }

    /// `write_batch`, rewriting the places of stored calls the batch's late calls
    /// moved (`agent_loop::fold_run`) in the same transaction.
    pub fn write_batch_moving(
        &self,
        calls: &[CallRecord],
        invocations: &[InvocationRecord],
        moved: &[crate::agent_loop::Moved],
    ) -> Result<(), StoreError> {
        let stored = self.prepare_calls(calls)?;
        let written = self.write_batch_derived(calls, Some(stored), invocations, moved)?;
        if self.events.receiver_count() > 0 {
            // Never blocks: a full buffer drops the oldest event for lagging readers.
            let _ = self.events.send(Arc::new(written));
        }
        Ok(())
    }

    /// Rebuilds every derived tree from `calls` and `invocations` (stores written
    /// before the read indexes existed).
    fn reindex(&self) -> Result<(), StoreError> {
        let mut batch = Vec::with_capacity(1000);
        for entry in self.calls.iter() {
            let (key, value) = entry?;
            batch.push(decode::<CallRecord>(&key, &value)?);
            if batch.len() == 1000 {
                self.write_batch_derived(&batch, None, &[], &[])?;
                batch.clear();
            }
        }
        self.write_batch_derived(&batch, None, &[], &[])?;
        let mut invs = Vec::with_capacity(1000);
        for entry in self.invocations.iter() {
            let (key, value) = entry?;
            invs.push(decode::<InvocationRecord>(&key, &value)?);
            if invs.len() == 1000 {
                self.write_batch_derived(&[], None, &invs, &[])?;
                invs.clear();
            }
        }
        self.write_batch_derived(&[], None, &invs, &[])?;
        Ok(())
    }

    /// Adds what a store indexed before them lacks: the `has_session` index entries
    /// (tag `h`) and the pair counters. Counters are set, not added, so a run cut short
    /// can simply rerun.
    fn backfill_indexes(&self) -> Result<(), StoreError> {
        for (kind, sums, idx) in [
            (b'c', &self.call_sum, &self.call_idx),
            (b'i', &self.inv_sum, &self.inv_idx),
        ] {
            let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
            let mut batch = Writes::default();
            let mut pending = 0;
            for entry in sums.iter() {
                let (id, stored) = entry?;
                let key = String::from_utf8_lossy(&id);
                let view = stored_view(&key, &stored)?;
                let pairs = index::view_pairs(&view);
                let has = pairs.iter().any(|(t, _)| *t == summary::tag::SESSION);
                let value = index::has_session_value(has);
                *counts
                    .entry(index::count_key(kind, summary::tag::HAS_SESSION, value))
                    .or_default() += 1;
                for count in index::pair_counts(kind, &pairs) {
                    *counts.entry(count).or_default() += 1;
                }
                batch.insert(
                    index::index_key(summary::tag::HAS_SESSION, value, view.time_us, &key),
                    &[] as &[u8],
                );
                pending += 1;
                if pending == 10_000 {
                    std::mem::take(&mut batch).apply_to(idx)?;
                    pending = 0;
                }
            }
            batch.apply_to(idx)?;
            let mut count_batch = Writes::default();
            for (key, n) in counts {
                count_batch.insert(key, n.to_be_bytes());
            }
            count_batch.apply_to(&self.idx_counts)?;
        }
        Ok(())
    }

    /// The batch write: records, then summaries, indexes, counters, rollups,
    /// sessions and rate-limit state. Each tree's part is applied key by key (`writes.rs`);
    /// records go first so derived data never points at a missing record.
    ///
    /// `stored` is the batch's plan of `calls` (`plan::split_content`, in the same
    /// order): their records and content are written, and their summaries and
    /// facets indexed as the plan made them. `None` when the records are stored
    /// already (a reindex of an older store): the summaries are made from them.
    fn write_batch_derived(
        &self,
        calls: &[CallRecord],
        stored: Option<Vec<StoredCall>>,
        invocations: &[InvocationRecord],
        moved: &[crate::agent_loop::Moved],
    ) -> Result<BatchWritten, StoreError> {
        let mut call_batch = Writes::default();
        let mut round_batch = Writes::default();
        let mut sum_batch = Writes::default();
        let mut idx_batch = Writes::default();
        let mut text_batch = Writes::default();
        let mut counts: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut new_runs: Vec<&InvocationRecord> = Vec::new();
        // Each invocation's calls in this batch (its prompt name and properties).
        let mut run_calls: HashMap<&str, Vec<&CallRecord>> = HashMap::new();
        let mut written = BatchWritten::default();
        // What the facet caches learn once the trees hold it: (time, id, pairs).
        let mut noted_calls: Vec<(u64, &str, OwnedPairs)> = Vec::with_capacity(calls.len());
        let mut noted_invs: Vec<(u64, &str, OwnedPairs, Option<u64>)> =
            Vec::with_capacity(invocations.len());

        let reindex = stored.is_none();
        let listed: Vec<Listed> = match stored {
            Some(stored) => {
                // Content first (values, then refcounts), so a stored call never names missing content.
                let mut content_batch = Writes::default();
                for call in &stored {
                    let id = call.meta.id.as_bytes();
                    if let Some(manifest) = &call.manifest {
                        self.content
                            .note_sealed(content::SEALED_MANIFEST, id, manifest)?;
                        content_batch.insert(id, manifest.as_slice());
                    }
                }
                self.logged.fetch_add(
                    content_batch.apply_to(&self.call_content)?,
                    std::sync::atomic::Ordering::Relaxed,
                );
                for call in &stored {
                    call_batch.insert(call.meta.id.as_bytes(), encode_call_meta(&call.meta)?);
                }
                stored.into_iter().map(|s| s.listed).collect()
            }
            None => calls.iter().map(Listed::of).collect(),
        };
        // Stored calls a late call moved: their records and round keys, in the batch.
        for m in moved {
            let Some(mut meta) = self.get_call_meta(&m.call_id)? else {
                continue;
            };
            meta.round = m.to.round;
            meta.retry = m.to.retry();
            call_batch.insert(m.call_id.as_bytes(), encode_call_meta(&meta)?);
            round_batch.remove(round_key(&m.invocation_id, m.from.round, &m.call_id));
            round_batch.insert(
                round_key(&m.invocation_id, m.to.round, &m.call_id),
                &[] as &[u8],
            );
        }
        for (call, Listed { summary, facets }) in calls.iter().zip(listed) {
            round_batch.insert(
                round_key(&call.invocation_id, call.round, &call.id),
                &[] as &[u8],
            );
            sum_batch.insert(call.id.as_bytes(), summary::encode_header_only(&facets));
            let pairs = index::facet_pairs(&facets);
            noted_calls.push((facets.time_us, call.id.as_str(), owned_pairs(&pairs)));
            for (key, count) in index::index_entries(b'c', facets.time_us, &call.id, &pairs) {
                idx_batch.insert(key, &[] as &[u8]);
                *counts.entry(count).or_default() += 1;
            }
            for count in index::pair_counts(b'c', &pairs) {
                *counts.entry(count).or_default() += 1;
            }
            // Prompt text in the clear would defeat encryption at rest: with a key,
            // session subjects are not kept. New calls keep their `q` texts in the
            // content store (`prepare_calls`); only a reindex of an old store, whose
            // records still hold their views, writes the legacy `call_text` tree.
            let plaintext_ok = self.options.keys.is_none();
            if plaintext_ok && reindex {
                if let Some(text) = CallText::of(call) {
                    text_batch.insert(
                        call.id.as_bytes(),
                        serde_json::to_vec(&text).map_err(StoreError::Encode)?,
                    );
                }
            }
            run_calls
                .entry(call.invocation_id.as_str())
                .or_default()
                .push(call);
            written.calls.push(summary);
        }

        let mut inv_batch = Writes::default();
        let mut inv_sum_batch = Writes::default();
        let mut inv_idx_batch = Writes::default();
        for inv in invocations {
            if !reindex {
                inv_batch.insert(inv.id.as_bytes(), encode_invocation(inv)?);
            }
            let old_stored = self.inv_sum.get(inv.id.as_bytes())?;
            let old = match &old_stored {
                Some(bytes) => {
                    let (header, json) = summary::split_stored(bytes)
                        .ok_or_else(|| corrupt(&inv.id, "summary header"))?;
                    let view = FacetView::parse(header)
                        .ok_or_else(|| corrupt(&inv.id, "summary header"))?;
                    let old_summary: InvocationSummary = decode(inv.id.as_bytes(), json)?;
                    Some((view, old_summary))
                }
                None => None,
            };
            let batch_calls = run_calls.get(inv.id.as_str()).into_iter().flatten();
            let Listed { summary, facets } =
                plan::list_run(inv, old.as_ref().map(|(_, s)| s), batch_calls.copied());
            let new_facet_pairs = index::facet_pairs(&facets);
            let new_entries = index::index_entries(b'i', facets.time_us, &inv.id, &new_facet_pairs);
            let old_entries = match &old {
                Some((view, _)) => {
                    index::index_entries(b'i', view.time_us, &inv.id, &index::view_pairs(view))
                }
                None => Vec::new(),
            };
            let old_keys: HashSet<&Vec<u8>> = old_entries.iter().map(|(k, _)| k).collect();
            let new_keys: HashSet<&Vec<u8>> = new_entries.iter().map(|(k, _)| k).collect();
            for (key, count) in &old_entries {
                if !new_keys.contains(key) {
                    inv_idx_batch.remove(key.as_slice());
                    *counts.entry(count.clone()).or_default() -= 1;
                }
            }
            for (key, count) in &new_entries {
                if !old_keys.contains(key) {
                    inv_idx_batch.insert(key.as_slice(), &[] as &[u8]);
                    *counts.entry(count.clone()).or_default() += 1;
                }
            }
            let old_pairs: HashSet<Vec<u8>> = match &old {
                Some((view, _)) => index::pair_counts(b'i', &index::view_pairs(view))
                    .into_iter()
                    .collect(),
                None => HashSet::new(),
            };
            let new_pairs: HashSet<Vec<u8>> = index::pair_counts(b'i', &new_facet_pairs)
                .into_iter()
                .collect();
            for key in old_pairs.difference(&new_pairs) {
                *counts.entry(key.clone()).or_default() -= 1;
            }
            for key in new_pairs.difference(&old_pairs) {
                *counts.entry(key.clone()).or_default() += 1;
            }
            if old.is_none() {
                new_runs.push(inv);
            }
            inv_sum_batch.insert(
                inv.id.as_bytes(),
                summary::encode_stored(&facets, &summary).map_err(StoreError::Encode)?,
            );
            noted_invs.push((
                facets.time_us,
                inv.id.as_str(),
                owned_pairs(&new_facet_pairs),
                old.as_ref().map(|(view, _)| view.time_us),
            ));
            written.invocations.push(summary);
        }

        let derived = plan::derive(calls, new_runs);
        // No session subject is stored: it is prompt text outside the sealed content,
        // which would outlive the call's expiry; the API reads it from the session's
        // first call (`api::views::session_subject`).
        let mut session_batch = Writes::default();
        let mut session_list_batch = Writes::default();
        for delta in &derived.sessions {
            let id = &delta.id;
            let old: Option<SessionSummary> = decode_opt(id, self.sessions.get(id.as_bytes())?)?;
            let new = match &old {
                Some(old) => {
                    let mut merged = old.clone();
                    merged.merge(delta);
                    merged
                }
                None => delta.clone(),
            };
            if let Some(old) = old.filter(|old| old.first_at_us != new.first_at_us) {
                session_list_batch.remove(index::session_list_key(old.first_at_us, id));
            }
            session_list_batch.insert(
                index::session_list_key(new.first_at_us, id),
                new.tenant.as_deref().unwrap_or("").as_bytes(),
            );
            session_batch.insert(
                id.as_bytes(),
                serde_json::to_vec(&new).map_err(StoreError::Encode)?,
            );
        }
        let mut limit_batch = Writes::default();
        let mut series_batch = Writes::default();
        let mut r429_batch = Writes::default();
        for notes in &derived.rate_limits {
            let key = notes.key.as_slice();
            let stored = decode_opt(&String::from_utf8_lossy(key), self.ratelimits.get(key)?)?;
            let (state, noted) = notes.fold(stored);
            for (call, noted) in notes.calls.iter().zip(noted) {
                let series_key = index::series_key(key, call.started_at_us, &call.id);
                if let Some(retry_after_s) = noted.limited {
                    r429_batch.insert(
                        &series_key,
                        serde_json::to_vec(&retry_after_s).map_err(StoreError::Encode)?,
                    );
                }
                series_batch.insert(
                    series_key,
                    serde_json::to_vec(&noted.point).map_err(StoreError::Encode)?,
                );
            }
            limit_batch.insert(key, serde_json::to_vec(&state).map_err(StoreError::Encode)?);
        }
        // Counters and rollups are read and written under the counter lock (the
        // sweeper updates them too), until they are applied below.
        let counters_guard = self.lock_counters();
        let mut count_batch = Writes::default();
        for (key, delta) in counts {
            if delta == 0 {
                continue;
            }
            let now = self.idx_counts.get(&key)?.map_or(0, |v| be_u64(&v));
            count_batch.insert(key, (now as i64 + delta).max(0).to_be_bytes());
        }
        let [bucket_batch, all_batch] = self.rollup_writes(&derived.rollups, RollupCell::merge)?;

        // Records and everything derived from them in one transaction: sled recovers
        // it whole or not at all (`writes.rs`), so a replayed call the store holds
        // is in its run, its rollups and its indexes too. The counter lock is held
        // until it is applied (the sweeper read-modify-writes the same cells).
        let logged = writes::apply_atomically(&[
            (&self.calls, call_batch),
            (&self.inv_rounds, round_batch),
            (&self.invocations, inv_batch),
            (&self.call_text, text_batch),
            (&self.call_sum, sum_batch),
            (&self.inv_sum, inv_sum_batch),
            (&self.call_idx, idx_batch),
            (&self.inv_idx, inv_idx_batch),
            (&self.idx_counts, count_batch),
            (&self.rollup, bucket_batch),
            (&self.rollup_all, all_batch),
            (&self.sessions, session_batch),
            (&self.session_list, session_list_batch),
            (&self.ratelimits, limit_batch),
            (&self.rl_series, series_batch),
            (&self.rl_429, r429_batch),
        ])?;
        drop(counters_guard);
        self.logged
            .fetch_add(logged, std::sync::atomic::Ordering::Relaxed);
        for (time_us, id, pairs) in &noted_calls {
            self.call_facets
                .note(*time_us, id.as_bytes(), &borrowed_pairs(pairs), None);
        }
        for (time_us, id, pairs, replaced) in &noted_invs {
            self.inv_facets
                .note(*time_us, id.as_bytes(), &borrowed_pairs(pairs), *replaced);
        }
        Ok(written)
    }

    /// A call with its bodies and parsed views.
    pub fn get_call(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let Some(mut call) = self.get_call_meta(id)? else {
            return Ok(None);
        };
        self.hydrate(&mut call)?;
        Ok(Some(call))
    }

    /// A call's metadata only: no bodies, no parsed views (cheap; for lists and indexes).
    pub fn get_call_meta(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        decode_opt(id, self.calls.get(id.as_bytes())?)
    }

    /// Removes the derived entries of a call being deleted (retention, `delete_call`):
    /// its summary, text and index entries, with their counters. Rollups are taken
    /// down by the sweeper (`change_rollups`); rate-limit history is kept.
    pub fn unindex_call(&self, call: &CallRecord) -> Result<(), StoreError> {
        let id = call.id.as_bytes();
        self.unindex(b'c', id)?;
        self.call_text.remove(id)?;
        Ok(())
    }

    fn lock_counters(&self) -> std::sync::MutexGuard<'_, ()> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writes that `change` each delta's stored cell, to the bucket and
    /// all-time trees; a cell left empty is removed. One delta per cell (as
    /// `plan::rollup_deltas` and `plan::RollupSum` give them): each is read from the
    /// tree. The caller holds the counter lock until they are applied.
    fn rollup_writes(
        &self,
        deltas: &[RollupDelta],
        change: fn(&mut RollupCell, &RollupCell),
    ) -> Result<[Writes; 2], StoreError> {
        let mut writes: [Writes; 2] = Default::default();
        for d in deltas {
            let (tree, batch, key) = match d.bucket_us {
                Some(bucket) => (
                    &self.rollup,
                    &mut writes[0],
                    index::bucket_key(&d.scope, bucket),
                ),
                None => (&self.rollup_all, &mut writes[1], d.scope.clone()),
            };
            let mut stored = tree
                .get(&key)?
                .map_or_else(RollupCell::default, |v| RollupCell::decode(&v));
            change(&mut stored, &d.cell);
            if stored.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, stored.encode());
            }
        }
        Ok(writes)
    }

    /// Changes the rollups (`/summary`, `/agents`) by the deltas, under the counter
    /// lock: `RollupCell::subtract` for deleted records, `RollupCell::merge` for
    /// repriced ones.
    pub(super) fn change_rollups(
        &self,
        deltas: &[RollupDelta],
        change: fn(&mut RollupCell, &RollupCell),
    ) -> Result<(), StoreError> {
        let _guard = self.lock_counters();
        let [buckets, all_time] = self.rollup_writes(deltas, change)?;
        buckets.apply_to(&self.rollup)?;
        all_time.apply_to(&self.rollup_all)?;
        Ok(())
    }

    /// Removes the derived entries of an invocation being deleted: its summary and
    /// index entries, with their counters.
    pub fn unindex_invocation(&self, id: &[u8]) -> Result<(), StoreError> {
        self.unindex(b'i', id)
    }

    /// A record's summary, index entries, counters and count-cache entry.
    fn unindex(&self, kind: u8, id: &[u8]) -> Result<(), StoreError> {
        let (sums, idx, cache) = match kind {
            b'c' => (&self.call_sum, &self.call_idx, &self.call_facets),
            _ => (&self.inv_sum, &self.inv_idx, &self.inv_facets),
        };
        let Some(stored) = sums.get(id)? else {
            return Ok(());
        };
        let key = String::from_utf8_lossy(id).into_owned();
        let view = stored_view(&key, &stored)?;
        let pairs = index::view_pairs(&view);
        let entries = index::index_entries(kind, view.time_us, &key, &pairs);
        for (entry, _) in &entries {
            idx.remove(entry.as_slice())?;
        }
        cache.forget(view.time_us, id, &pairs);
        let counters = entries.into_iter().map(|(_, count)| count);
        let _guard = self.lock_counters();
        for count in counters.chain(index::pair_counts(kind, &pairs)) {
            let now = self.idx_counts.get(&count)?.map_or(0, |v| be_u64(&v));
            self.idx_counts
                .insert(count, &now.saturating_sub(1).to_be_bytes())?;
        }
        sums.remove(id)?;
        Ok(())
    }

    pub fn get_invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        decode_opt(id, self.invocations.get(id.as_bytes())?)
    }

    pub fn get_invocations(&self, ids: &[String]) -> Result<Vec<InvocationRecord>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.get_invocation(id)?);
        }
        Ok(out)
    }

    /// A run's stored LLM calls that started at or after `from_us`, and the latest
    /// one before (`agent_loop::late_from`): read from the end of the run's round
    /// index (rounds follow start order) until a round wholly before `from_us`.
    pub fn run_loop_calls(
        &self,
        invocation_id: &str,
        from_us: u64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let prefix = round_prefix(invocation_id);
        let mut out = Vec::new();
        let mut before_round: Option<u32> = None;
        for entry in self.inv_rounds.scan_prefix(&prefix).rev() {
            let (key, _) = entry?;
            let rest = &key[prefix.len()..];
            if rest.len() < 4 {
                continue;
            }
            let round = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            if round == 0 || before_round.is_some_and(|r| round < r) {
                // Tool calls (round 0) are no rounds; past the round before `from_us`.
                break;
            }
            let id = String::from_utf8_lossy(&rest[4..]).into_owned();
            let Some(call) = self.get_call_meta(&id)? else {
                continue;
            };
            if !crate::agent_loop::is_llm(&call) {
                continue;
            }
            if call.started_at_us < from_us && before_round.is_none() {
                before_round = Some(round);
            }
            out.push(call);
        }
        Ok(out)
    }

    /// The calls of an invocation in round order.
    pub fn invocation_calls(&self, invocation_id: &str) -> Result<Vec<CallRecord>, StoreError> {
        let prefix = round_prefix(invocation_id);
        let mut out = Vec::new();
        for entry in self.inv_rounds.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let call_id = String::from_utf8_lossy(&key[prefix.len() + 4..]).into_owned();
            if let Some(call) = self.get_call(&call_id)? {
                out.push(call);
            }
        }
        Ok(out)
    }

    /// Invocations that ended at or after `since_us` and started at most a day before
    /// it, for seeding round counters at start-up: read from the time index, so the
    /// start does not decode every stored run (2.4 s at a million calls). A run that
    /// started earlier still gets its rounds right: the writer takes their base from
    /// the store.
    pub fn invocations_since(&self, since_us: u64) -> Result<Vec<InvocationRecord>, StoreError> {
        const LOOKBACK_US: u64 = 86_400_000_000;
        let prefix = index::index_prefix(summary::tag::ALL, b"");
        let mut from = prefix.clone();
        from.extend_from_slice(&since_us.saturating_sub(LOOKBACK_US).to_be_bytes());
        let mut out = Vec::new();
        for entry in self.inv_idx.range(from..) {
            let (key, _) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            let Some(id) = key.get(prefix.len() + 8..) else {
                continue;
            };
            let Some(value) = self.invocations.get(id)? else {
                continue;
            };
            let inv: InvocationRecord = decode(id, &value)?;
            if inv.ended_at_us >= since_us {
                out.push(inv);
            }
        }
        Ok(out)
    }

    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Every stored call id, oldest first.
    pub fn call_ids(&self) -> Result<Vec<String>, StoreError> {
        self.calls
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    pub fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }

    /// Whether a call with this id is stored (replaying the capture log skips it).
    pub fn contains_call(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.calls.contains_key(id.as_bytes())?)
    }

    /// The capture log position up to which the store holds every record (None for
    /// a store that never applied the log).
    pub fn journal_applied(&self) -> Result<Option<u64>, StoreError> {
        match self.meta.get(META_JOURNAL_APPLIED)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: "meta/journal_applied".into(),
                    reason: format!("{} bytes, expected 8", v.len()),
                })?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    /// Records the capture log position the store now holds everything before.
    /// Written after the batch it ends, so sled's prefix recovery never keeps the
    /// position without the records.
    pub fn set_journal_applied(&self, position: u64) -> Result<(), StoreError> {
        self.meta
            .insert(META_JOURNAL_APPLIED, &position.to_be_bytes())?;
        Ok(())
    }
}

/// `meta` key set once rollup cells count tool calls (`backfill_tool_counts`).
const META_ROLLUP_TOOL_COUNTS: &str = "rollup_tool_counts";

/// `meta` key set once every session lists its models (`backfill_session_models`).
const META_SESSION_MODELS: &str = "session_models";

/// `meta` key of the capture log position applied (u64 BE).
const META_JOURNAL_APPLIED: &str = "journal_applied";

/// A call's metadata as the `calls` tree keeps it (packed JSON, see `packed.rs`).
fn encode_call_meta(meta: &CallRecord) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(meta).map_err(StoreError::Encode)?;
    Ok(packed::pack(json))
}

/// An invocation as the `invocations` tree keeps it (packed JSON, like `calls`;
/// stores written before hold plain JSON, which reads the same).
fn encode_invocation(inv: &InvocationRecord) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(inv).map_err(StoreError::Encode)?;
    Ok(packed::pack(json))
}

/// Decodes a stored JSON value, packed or plain.
fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    let json = packed::unpack(value).map_err(|reason| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    })?;
    serde_json::from_slice(&json).map_err(|source| StoreError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn decode_opt<T: serde::de::DeserializeOwned>(
    key: &str,
    value: Option<sled::IVec>,
) -> Result<Option<T>, StoreError> {
    value.map(|v| decode(key.as_bytes(), &v)).transpose()
}

/// The facet header of a stored summary.
fn stored_view<'a>(key: &str, stored: &'a [u8]) -> Result<FacetView<'a>, StoreError> {
    summary::split_stored(stored)
        .and_then(|(header, _)| FacetView::parse(header))
        .ok_or_else(|| corrupt(key, "summary header"))
}

fn corrupt(key: &str, what: &str) -> StoreError {
    StoreError::Decode {
        key: key.to_string(),
        source: serde::de::Error::custom(format!("bad {what}")),
    }
}

fn be_u64(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// A record's (tag, value) pairs, kept past the borrow of its facets.
type OwnedPairs = Vec<(u8, Vec<u8>)>;

fn owned_pairs(pairs: &[(u8, &[u8])]) -> OwnedPairs {
    pairs.iter().map(|(t, v)| (*t, v.to_vec())).collect()
}

fn borrowed_pairs(pairs: &[(u8, Vec<u8>)]) -> Vec<(u8, &[u8])> {
    pairs.iter().map(|(t, v)| (*t, v.as_slice())).collect()
}

/// The engine alone, with a context of its own, for the engine's unit tests.
#[cfg(test)]
impl SledStore {
    pub(crate) fn open_alone(dir: &Path, options: StoreOptions) -> Result<SledStore, StoreError> {
        let context = EngineContext::new(dir, &options);
        SledStore::open_with(dir, options, &context)
    }

    pub(crate) fn open(
        dir: &Path,
        cache_bytes: u64,
        flush_every_ms: u64,
    ) -> Result<SledStore, StoreError> {
        let options = StoreOptions {
            cache_bytes,
            flush_every_ms,
            ..StoreOptions::default()
        };
        SledStore::open_alone(dir, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own for one test's store.
    fn fresh_dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "llmtap-{name}-{}-{}",
            std::process::id(),
            crate::timefmt::now_unix_us()
        ))
    }

    /// A store written before rollup cells counted tool calls gets them counted once
    /// at open (old cell encoding read as no tool calls), and never twice.
    #[test]
    fn an_older_store_gets_its_tool_calls_counted_in_the_rollups_once() {
        use crate::record::CallStatus;
        use crate::store::types::RollupScope;
        let dir = crate::test_support::TempDir::new("sled-tool-rollups");
        let call = |id: &str, kind: &str, status: CallStatus, agent: &str| {
            let mut call = CallRecord {
                id: id.into(),
                invocation_id: "i_1".into(),
                kind: kind.into(),
                status: Some(status),
                started_at_us: 1_796_000_000_000_000,
                ..CallRecord::default()
            };
            call.metadata.agent = Some(agent.into());
            call
        };
        let mcp = |id: &str, method: &str, status: CallStatus| {
            let mut c = call(id, "mcp", status, "bot");
            c.mcp = Some(crate::record::McpExchange {
                method: Some(method.into()),
                ..Default::default()
            });
            c
        };
        // An MCP handshake is no tool call: only the tools/call counts.
        let calls = [
            call("c_1", "openai", CallStatus::Success, "bot"),
            call("c_2", "http", CallStatus::Success, "bot"),
            mcp("c_3", "tools/call", CallStatus::Failed),
            mcp("c_4", "initialize", CallStatus::Failed),
            mcp("c_5", "tools/list", CallStatus::Success),
        ];
        let bot = RollupScope::Agent {
            tenant: None,
            agent: "bot".into(),
        };
        {
            let store = SledStore::open_alone(&dir, StoreOptions::default()).unwrap();
            store.write_batch(&calls, &[]).unwrap();
            let cell = store.rollup_total(&bot).unwrap();
            assert_eq!((cell.calls, cell.tool_calls, cell.tool_failures), (1, 2, 1));
            // As an older release left it: cells without tool counts, no mark.
            for tree in [&store.rollup, &store.rollup_all] {
                for entry in tree.iter() {
                    let (key, value) = entry.unwrap();
                    tree.insert(key, &value[..value.len() - 16]).unwrap();
                }
            }
            store.meta.remove(META_ROLLUP_TOOL_COUNTS).unwrap();
            let old = store.rollup_total(&bot).unwrap();
            assert_eq!((old.calls, old.tool_calls), (1, 0));
        }
        for _ in 0..2 {
            let store = SledStore::open_alone(&dir, StoreOptions::default()).unwrap();
            let cell = store.rollup_total(&bot).unwrap();
            assert_eq!((cell.calls, cell.tool_calls, cell.tool_failures), (1, 2, 1));
            let all = store.rollup_total(&RollupScope::All).unwrap();
            assert_eq!((all.tool_calls, all.tool_failures), (2, 1));
        }
    }

    /// Content written across key periods reads back whole (each value names its
    /// period; a new period's key is made once, before anything is sealed with it).
    #[test]
    fn content_written_across_key_periods_reads_back() {
        let dir = fresh_dir("periods");
        let options = StoreOptions {
            key_period_secs: 1,
            ..StoreOptions::default()
        };
        let store = SledStore::open_alone(&dir, options.clone()).unwrap();
        let started = std::time::Instant::now();
        let mut n = 0;
        while started.elapsed() < std::time::Duration::from_millis(2_500) {
            let call = CallRecord {
                id: format!("c_{n:06}"),
                invocation_id: "i_1".into(),
                request_body: Some(format!(
                    "{{\"n\":{n},\"text\":\"{}\"}}",
                    "x".repeat(200 + n)
                )),
                response_body: Some(format!("answer {n}")),
                ..CallRecord::default()
            };
            store.write_batch(&[call], &[]).unwrap();
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(store);
        let store = SledStore::open_alone(&dir, options).unwrap();
        for i in 0..n {
            let call = store.get_call(&format!("c_{i:06}")).unwrap().unwrap();
            assert_eq!(
                call.response_body.as_deref(),
                Some(format!("answer {i}").as_str()),
                "{:?}",
                call.parse_notes
            );
        }
        assert!(std::fs::read_dir(dir.join(KEY_DIR)).unwrap().count() >= 3);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Sessions stored with a subject (a user's first message, in the clear) by an
    /// earlier release lose it when the store next opens; new sessions never have one.
    #[test]
    fn stored_session_subjects_are_dropped_at_open() {
        let dir = fresh_dir("session-subjects");
        let store = SledStore::open_alone(&dir, StoreOptions::default()).unwrap();
        let old = SessionSummary {
            id: "s-1".into(),
            subject: Some("my bank password is hunter2".into()),
            calls: 1,
            ..SessionSummary::default()
        };
        store
            .sessions
            .insert("s-1", serde_json::to_vec(&old).unwrap())
            .unwrap();
        store.meta.remove("no_session_subjects").unwrap();
        store.db.flush().unwrap();
        drop(store);
        let store = SledStore::open_alone(&dir, StoreOptions::default()).unwrap();
        let s = store.session("s-1").unwrap().unwrap();
        assert_eq!((s.subject, s.calls), (None, 1));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A session stored before sessions kept their models gets those of its stored
    /// LLM calls at open, in start order (tool calls name none), as a batch adds them.
    #[test]
    fn sessions_stored_without_models_get_them_from_their_calls_at_open() {
        let dir = fresh_dir("session-models");
        let store = SledStore::open_alone(&dir, StoreOptions::default()).unwrap();
        let call = |id: &str, at: u64, kind: &str, model: &str, answered: Option<&str>| {
            let mut c = CallRecord {
                id: id.into(),
                invocation_id: "i-1".into(),
                kind: kind.into(),
                started_at_us: at,
                model: Some(model.into()),
                response_model: answered.map(str::to_string),
                ..CallRecord::default()
            };
            c.metadata.session_id = Some("s-1".into());
            c
        };
        // Written out of start order; the tool call's "model" is no model.
        let calls = [
            call("c-2", 20, "openai_chat", "big", None),
            call("c-1", 10, "openai_chat", "small", Some("small-2024")),
            call("c-3", 30, "http", "not-a-model", None),
        ];
        store.write_batch(&calls, &[]).unwrap();
        let kept = store.session("s-1").unwrap().unwrap();
        let mut old = kept.clone();
        old.models = None;
        store
            .sessions
            .insert("s-1", serde_json::to_vec(&old).unwrap())
            .unwrap();
        store.meta.remove(META_SESSION_MODELS).unwrap();
        store.db.flush().unwrap();
        drop(store);
        let store = SledStore::open_alone(&dir, StoreOptions::default()).unwrap();
        let filled = store.session("s-1").unwrap().unwrap();
        assert_eq!(
            filled.models.as_deref(),
            Some(&["small", "small-2024", "big"].map(String::from)[..])
        );
        assert_eq!(filled, kept, "the same list the batch made");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Stores made before llmtap chose sled's segment size and page compression
    /// keep the settings they were created with.
    #[test]
    fn a_store_with_older_sled_settings_opens() {
        for compression in [false, true] {
            let dir = std::env::temp_dir().join(format!(
                "llmtap-legacy-sled-{}-{compression}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let db = sled::Config::new()
                .path(&dir)
                .use_compression(compression)
                .segment_size(LEGACY_SEGMENT_SIZE)
                .open()
                .unwrap();
            db.flush().unwrap();
            drop(db);
            let store = SledStore::open_alone(&dir, StoreOptions::default()).unwrap();
            let call = CallRecord {
                id: "c_1".into(),
                invocation_id: "i_1".into(),
                response_body: Some("ok".into()),
                ..CallRecord::default()
            };
            store.write_batch(&[call], &[]).unwrap();
            assert_eq!(store.get_raw("c_1", true).unwrap().unwrap(), b"ok");
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// Stores written before blob files kept attachment values in the `blobs` tree:
    /// they still rebuild, and retention removes them there.
    #[test]
    fn blobs_kept_in_sled_by_older_stores_still_read_and_expire() {
        use base64::Engine;
        let dir = std::env::temp_dir().join(format!("llmtap-legacy-blobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open_alone(
            &dir,
            StoreOptions {
                retention_days: 1,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let image: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{b64}"}}}}]}}]}}"#
        );
        let call = CallRecord {
            id: "c_1".into(),
            invocation_id: "i_1".into(),
            started_at_us: 1,
            request_body: Some(body.clone()),
            ..CallRecord::default()
        };
        store.write_batch(&[call], &[]).unwrap();
        let sha = store.content_address(&image);
        let addr: crypto::Addr = (0..32)
            .map(|i| u8::from_str_radix(&sha[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
            .try_into()
            .unwrap();
        // Move the value from its file into the tree, as an older llmtap kept it.
        let value = store.content.blob_files.read(&addr).unwrap().unwrap();
        store.content.blob_files.remove(&addr).unwrap();
        store.content.blobs.insert(addr, value).unwrap();
        assert_eq!(
            store.get_raw("c_1", false).unwrap().unwrap(),
            body.as_bytes()
        );
        assert_eq!(store.get_blob(&sha).unwrap().unwrap().1, image);
        let report = store.sweep(10 * 86_400_000_000).unwrap();
        assert_eq!((report.calls_deleted, report.blobs_freed), (1, 1));
        assert!(store.content.blobs.is_empty());
        assert!(store.get_blob(&sha).unwrap().is_none());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
