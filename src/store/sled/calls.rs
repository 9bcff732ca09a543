//! A call's content: what `write_batch` keeps out of the `calls` tree, and how
//! `get_call` puts it back.
//!
//! The `calls` tree holds the record's metadata in clear JSON (times, agent,
//! model, status, tokens, cost: what filters and indexes need). The bodies and the
//! parsed request/response views go to the content store; the record's manifest in
//! `call_content` (sealed like every other content value) names their root chunks.

use super::{SledStore, StoreError};
use crate::record::CallRecord;
use crate::store::crypto::Addr;
use crate::store::index::CallText;
use crate::store::manifest::{hydrate, lossy, search_text, Manifest};
use crate::store::plan::{split_content, StoredCall};
use crate::store::types::ContentUsage;
use std::sync::Arc;

impl SledStore {
    /// Splits each call into metadata (for the `calls` tree) and content, committed
    /// to the content store here (`plan::split_content`, the disk level of the
    /// data directory applying: sled's content is on it).
    pub(super) fn prepare_calls(
        &self,
        calls: &[CallRecord],
    ) -> Result<Vec<StoredCall>, StoreError> {
        let mut txn = self.content.txn();
        let stored = split_content(&mut txn, &self.stats, self.disk.level(), calls);
        txn.commit()?;
        Ok(stored)
    }

    pub(super) fn manifest(&self, id: &str) -> Result<Option<Manifest>, StoreError> {
        let Some(stored) = self.call_content.get(id.as_bytes())? else {
            return Ok(None);
        };
        let plain = self.content.codec.open(id.as_bytes(), &stored)?;
        Manifest::decode(&plain)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                key: id.to_string(),
                reason: "bad manifest".into(),
            })
    }

    /// Puts a stored call's content back into its record.
    pub(super) fn hydrate(&self, call: &mut CallRecord) -> Result<(), StoreError> {
        match self.manifest(&call.id)? {
            Some(m) => hydrate(&m, &self.content, call),
            None => Ok(()),
        }
    }

    /// The texts `q` searches and the CSV export shows: system prompt and last
    /// user message. `Ok(None)` when the call has none stored.
    pub fn call_text(&self, id: &str) -> Result<Option<CallText>, StoreError> {
        if let Some(m) = self.manifest(id)? {
            if let Some(text) = search_text(&m, &self.content)? {
                return Ok(Some(text));
            }
        }
        // Stores written before the texts moved into the content store.
        super::decode_opt(id, self.call_text.get(id.as_bytes())?)
    }

    /// Whether a call's system prompt or last user message contains `needle`
    /// (already lowercase). Lowercased texts are cached by address, so a system
    /// prompt shared by many calls is read and lowercased once.
    pub(super) fn text_matches(&self, call_id: &[u8], needle: &str) -> Result<bool, StoreError> {
        let id = String::from_utf8_lossy(call_id);
        let Some(m) = self.manifest(&id)?.filter(Manifest::has_search_text) else {
            return self.legacy_text_matches(call_id, needle);
        };
        for inline in [&m.inline.search_system, &m.inline.search_user]
            .into_iter()
            .flatten()
        {
            if String::from_utf8_lossy(inline)
                .to_lowercase()
                .contains(needle)
            {
                return Ok(true);
            }
        }
        for addr in [m.search_system, m.search_user].into_iter().flatten() {
            let text = match self.search_texts.get(&addr) {
                Some(t) => t,
                None => {
                    let lower: Arc<str> = lossy(self.content.expand(&addr)?).to_lowercase().into();
                    self.search_texts.put(addr, lower.clone());
                    lower
                }
            };
            if text.contains(needle) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn legacy_text_matches(&self, call_id: &[u8], needle: &str) -> Result<bool, StoreError> {
        Ok(match self.call_text.get(call_id)? {
            Some(bytes) => super::decode::<CallText>(call_id, &bytes)?.contains(needle),
            None => false,
        })
    }

    /// The exact captured (decoded) request or response body of a call.
    /// `Ok(None)` when the call or that body is not stored.
    pub fn get_raw(&self, id: &str, response: bool) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(m) = self.manifest(id)? {
            return m.body(&self.content, response);
        }
        // Records written before content addressing keep their bodies inline.
        let Some(call) = self.get_call_meta(id)? else {
            return Ok(None);
        };
        let body = if response {
            call.response_body
        } else {
            call.request_body
        };
        Ok(body.map(String::into_bytes))
    }

    /// An attachment by its address (hex): its media type and bytes.
    pub fn get_blob(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        match super::crypto::parse_addr(sha256) {
            Some(a) => self.content.blob(&a),
            None => Ok(None),
        }
    }

    /// References held on a content chunk (by address, hex); 0 when absent.
    pub fn chunk_refs(&self, addr: &str) -> Result<u64, StoreError> {
        match super::crypto::parse_addr(addr) {
            Some(a) => self.content.chunk_count(&a),
            None => Ok(0),
        }
    }

    /// References held on a blob; 0 when absent.
    pub fn blob_refs(&self, addr: &str) -> Result<u64, StoreError> {
        match super::crypto::parse_addr(addr) {
            Some(a) => self.content.blob_count(&a),
            None => Ok(0),
        }
    }

    /// The content address of `bytes` in this store (SHA-256, or the keyed hash).
    pub fn content_address(&self, bytes: &[u8]) -> String {
        super::crypto::hex(&self.content.codec.addr(bytes))
    }

    /// How much the content store holds (stored, i.e. compressed/sealed, sizes).
    pub fn content_usage(&self) -> Result<ContentUsage, StoreError> {
        let (chunks, chunk_bytes) = tree_size(&self.content.chunks)?;
        let (legacy_blobs, legacy_blob_bytes) = tree_size(&self.content.blobs)?;
        let (file_blobs, file_blob_bytes) = self.content.blob_files.usage()?;
        let (blobs, blob_bytes) = (
            legacy_blobs + file_blobs,
            legacy_blob_bytes + file_blob_bytes,
        );
        let (calls, call_bytes) = tree_size(&self.calls)?;
        let (_, manifest_bytes) = tree_size(&self.call_content)?;
        Ok(ContentUsage {
            calls,
            call_bytes,
            manifest_bytes,
            chunks,
            chunk_bytes,
            blobs,
            blob_bytes,
            ref_entries: (self.content.chunk_refs.len() + self.content.blob_refs.len()) as u64,
        })
    }

    /// Logical size (entries, key + value bytes) of every sled tree, by name.
    pub fn tree_usage(&self) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            let (entries, bytes) = tree_size(&self.db.open_tree(&name)?)?;
            out.push((String::from_utf8_lossy(&name).into_owned(), entries, bytes));
        }
        Ok(out)
    }

    /// Whether content is sealed with a key.
    /// Content lives in `data_dir`, on the disk the guard measures.
    pub fn content_on_local_disk(&self) -> bool {
        true
    }

    pub fn encrypted(&self) -> bool {
        self.content.codec.keys.is_some()
    }
}

/// A few lowercased search texts by address: the system prompts of the agents a
/// `q` query walks through.
#[derive(Default)]
pub(super) struct SearchTexts(std::sync::Mutex<std::collections::VecDeque<(Addr, Arc<str>)>>);

const SEARCH_TEXTS_KEPT: usize = 32;

impl SearchTexts {
    fn get(&self, addr: &Addr) -> Option<Arc<str>> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().find(|(a, _)| a == addr).map(|(_, t)| t.clone())
    }

    fn put(&self, addr: Addr, text: Arc<str>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == SEARCH_TEXTS_KEPT {
            kept.pop_back();
        }
        kept.push_front((addr, text));
    }
}

/// Entries and key + value bytes of a tree (a full scan).
fn tree_size(tree: &sled::Tree) -> Result<(u64, u64), StoreError> {
    let (mut entries, mut bytes) = (0, 0);
    for entry in tree.iter() {
        let (k, v) = entry?;
        entries += 1;
        bytes += (k.len() + v.len()) as u64;
    }
    Ok((entries, bytes))
}
