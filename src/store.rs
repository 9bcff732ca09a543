//! The only module that knows sled: key layout, encoding, batch writes and reads.
//!
//! Key layout (all keys are bytes; ids are time-ordered ASCII):
//! - `calls`:        call id → CallRecord (JSON)
//! - `invocations`:  invocation id → InvocationRecord (JSON)
//! - `inv_rounds`:   invocation id, 0x00, round (u32 big-endian), call id → ()
//!   lists an invocation's calls in round order with one prefix scan
//! - `meta`:         `schema` → version
//!
//! Writes come from the single writer thread only; readers (the API) share the handle.

use crate::record::{CallRecord, InvocationRecord};
use std::path::Path;

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
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    calls: sled::Tree,
    invocations: sled::Tree,
    inv_rounds: sled::Tree,
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
        let shown = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(flush_every_ms.max(1)))
            .open()
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
        Ok(Store {
            calls: db.open_tree("calls")?,
            invocations: db.open_tree("invocations")?,
            inv_rounds: db.open_tree("inv_rounds")?,
            db,
        })
    }

    /// Stores a batch of calls and the invocations they changed.
    pub fn write_batch(
        &self,
        calls: &[CallRecord],
        invocations: &[InvocationRecord],
    ) -> Result<(), StoreError> {
        let mut call_batch = sled::Batch::default();
        let mut round_batch = sled::Batch::default();
        for call in calls {
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

    pub fn get_call(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
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
