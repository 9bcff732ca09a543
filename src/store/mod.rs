//! The only module that knows sled: key layout, encoding, batch writes and reads.
//!
//! Key layout (all keys are bytes; ids are time-ordered ASCII):
//! - `calls`:        call id → CallRecord (JSON)
//! - `invocations`:  invocation id → InvocationRecord (JSON)
//! - `inv_rounds`:   invocation id, 0x00, round (u32 big-endian), call id → ()
//!   lists an invocation's calls in round order with one prefix scan
//! - `meta`:         `schema` → version; `encrypted` → key id; `body_sweep_cursor`
//! - `call_content`: call id → sealed manifest naming the call's content roots
//! - `chunks`, `chunk_refs`, `blobs`, `blob_refs`: the content store (see `content.rs`)
//!
//! The `calls` value is the record's metadata only (clear JSON, decodable as a
//! `CallRecord`); `get_call` puts bodies and parsed views back from the content
//! store, `get_call_meta` does not. Writes come from the single writer thread, plus
//! the retention sweeper (deletions only, under the content lock); readers (the
//! API) share the handle.

pub mod bench;
mod body;
mod calls;
pub mod content;
pub mod crypto;
pub mod disk;
pub mod retention;
pub mod scan;

pub use calls::{ContentUsage, StoreStats};
pub use crypto::Keyring;
pub use disk::{DiskLevel, FreeSpaceProbe};
pub use retention::{Background, SweepReport};

use crate::record::{CallRecord, InvocationRecord};
use std::path::Path;
use std::sync::Arc;

const SCHEMA_VERSION: &[u8] = b"1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store in {dir} is in use by another llmtap process (sled holds a lock on it); stop that process or choose another --data-dir")]
    Locked { dir: String },
    #[error("cannot open the store in {dir}: {source}")]
    Open { dir: String, source: sled::Error },
    #[error("store schema {found} is not supported by this llmtap (expects {expected})")]
    Schema { found: String, expected: String },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
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
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
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
            flush_every_ms: 200,
            zstd_level: 3,
            keys: None,
            retention_days: 0,
            body_retention_days: 0,
            min_free_mb: 1024,
            critical_free_mb: 256,
            sled_compression: true,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    calls: sled::Tree,
    invocations: sled::Tree,
    inv_rounds: sled::Tree,
    meta: sled::Tree,
    call_content: sled::Tree,
    content: content::ContentTrees,
    disk: Arc<disk::DiskGuard>,
    stats: Arc<StoreStats>,
    options: Arc<StoreOptions>,
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

    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let shown = dir.display().to_string();
        let config = |compression: bool| {
            sled::Config::new()
                .path(dir)
                .cache_capacity(options.cache_bytes)
                .flush_every_ms(Some(options.flush_every_ms.max(1)))
                .use_compression(compression)
        };
        // sled fixes page compression when a store is created; a store made by an
        // earlier llmtap (or with the other setting) opens with the setting it has.
        let db = match config(options.sled_compression).open() {
            Err(sled::Error::Unsupported(why)) if why.contains("compression") => {
                tracing::info!(
                    compression = !options.sled_compression,
                    "opening the store with the page compression it was created with"
                );
                config(!options.sled_compression).open()
            }
            other => other,
        }
        .map_err(|source| match &source {
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::WouldBlock
                    || io.to_string().contains("lock") =>
            {
                StoreError::Locked { dir: shown.clone() }
            }
            _ => StoreError::Open {
                dir: shown.clone(),
                source,
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
        let codec = content::Codec {
            keys: options.keys.clone(),
            zstd_level: options.zstd_level,
        };
        Ok(Store {
            calls: db.open_tree("calls")?,
            invocations: db.open_tree("invocations")?,
            inv_rounds: db.open_tree("inv_rounds")?,
            call_content: db.open_tree("call_content")?,
            content: content::ContentTrees::open(&db, codec)?,
            disk: Arc::new(disk::DiskGuard::new(
                dir,
                options.min_free_mb,
                options.critical_free_mb,
            )),
            stats: Arc::new(StoreStats::default()),
            options: Arc::new(options),
            meta,
            db,
        })
    }

    /// Removes the index entries of a call being deleted (retention, `delete_call`).
    /// Index trees keyed by call id or by call fields add their removals here.
    pub fn unindex_call(&self, call: &CallRecord) -> Result<(), StoreError> {
        let _ = call;
        Ok(())
    }

    /// Stores a batch of calls and the invocations they changed.
    pub fn write_batch(
        &self,
        calls: &[CallRecord],
        invocations: &[InvocationRecord],
    ) -> Result<(), StoreError> {
        // Content first (values, then refcounts), so a stored call never names missing content.
        let (metas, manifests) = self.prepare_calls(calls)?;
        let mut content_batch = sled::Batch::default();
        for (id, manifest) in manifests {
            content_batch.insert(id.as_bytes(), manifest);
        }
        self.call_content.apply_batch(content_batch)?;
        let mut call_batch = sled::Batch::default();
        let mut round_batch = sled::Batch::default();
        for call in &metas {
            let value = serde_json::to_vec(call).map_err(StoreError::Encode)?;
            call_batch.insert(call.id.as_bytes(), value);
            round_batch.insert(
                round_key(&call.invocation_id, call.round, &call.id),
                &[] as &[u8],
            );
        }
        let mut inv_batch = sled::Batch::default();
        for inv in invocations {
            let value = serde_json::to_vec(inv).map_err(StoreError::Encode)?;
            inv_batch.insert(inv.id.as_bytes(), value);
        }
        // Calls first: an invocation never points at a call that is not stored.
        self.calls.apply_batch(call_batch)?;
        self.inv_rounds.apply_batch(round_batch)?;
        self.invocations.apply_batch(inv_batch)?;
        Ok(())
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

    pub fn get_invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        decode_opt(id, self.invocations.get(id.as_bytes())?)
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

    /// Invocations that ended at or after `since_us`, for seeding round counters at start-up.
    pub fn invocations_since(&self, since_us: u64) -> Result<Vec<InvocationRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in self.invocations.iter() {
            let (key, value) = entry?;
            let inv: InvocationRecord = decode(&key, &value)?;
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
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|source| StoreError::Decode {
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
