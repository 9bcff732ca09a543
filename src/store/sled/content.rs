//! The content store: deduplicated, compressed, optionally encrypted pieces of
//! captured bodies ("chunks") and decoded attachments ("blobs"), with refcounts.
//!
//! A chunk is a *template*: a list of literal bytes, references to other chunks,
//! and references to blobs (rebuilt as their standard base64 text). A chunk's
//! address is the hash of the bytes it rebuilds to, so the same message, system
//! prompt or history prefix sent by a thousand calls is stored once.
//!
//! Refcounts: `chunk_refs[a]` / `blob_refs[a]` count the parents (call manifests
//! and chunk templates, once per occurrence) that reference `a`. Ordering keeps a
//! crash from ever losing live content:
//! - writing: values first, then refcount increments, then (in `mod.rs`) the call;
//! - deleting: the call first, then refcount decrements, then refcount entries of
//!   dead pieces, then their values.
//!
//! So after a crash a count can only be too high (a leak), and a refcount entry
//! always has its value. Writers and the retention sweeper serialise on one mutex.
//!
//! Blob values live in files (`blob_files.rs`), not sled, so they follow sled's
//! ordering by hand: a file is written and synced before anything names it, and
//! removed only after the refcount removal is flushed. A file with no refcount
//! (a crash between the two) is removed when the store next opens. Stores written
//! before blob files keep their blobs in the `blobs` tree, which is still read.

use super::blob_files::BlobFiles;
use super::writes::Writes;
use crate::store::content::{
    decode_blob, decode_template, encode_blob, encode_template, missing, template_of, Codec, Seg,
};
use crate::store::crypto::Addr;
use crate::store::shred::{Slot, SLOT_LEN};
use crate::store::StoreError;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
/// Kinds of sealed value in `sealed_in` (see `shred.rs`).
pub const SEALED_CHUNK: u8 = b'c';
pub const SEALED_BLOB: u8 = b'b';
pub const SEALED_MANIFEST: u8 = b'm';
/// Values re-sealed per hold of the content lock while a period is shredded, so
/// the writer waits for at most one such group.
const RESEAL_GROUP: usize = 256;

/// The sled trees of the content store.
#[derive(Clone)]
pub struct ContentTrees {
    /// Key period (u32 BE), kind, key → (): every value sealed with a period key,
    /// so shredding a period re-seals what is alive of it without reading the rest.
    pub sealed_in: sled::Tree,
    /// Key period (u32 BE) → (): periods in which content died; their keys are
    /// destroyed once the period is over (`shred`).
    pub shred_due: sled::Tree,
    pub chunks: sled::Tree,
    pub chunk_refs: sled::Tree,
    /// Blob values of stores written before blob files; read, never written.
    pub blobs: sled::Tree,
    pub blob_refs: sled::Tree,
    pub blob_files: BlobFiles,
    pub codec: Arc<Codec>,
    /// Flushed before blob files are removed (see the module doc).
    db: sled::Db,
    /// Serialises refcount read-modify-write between the writer and the sweeper.
    lock: Arc<Mutex<()>>,
    /// The engine's count of bytes stored since it opened (`SledStore::snapshot_due`).
    logged: Arc<AtomicU64>,
}

/// A `sealed_in` key: period, kind, the value's key.
fn sealed_key(slot: Slot, kind: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(SLOT_LEN + 1 + key.len());
    k.extend_from_slice(&slot.to_be_bytes());
    k.push(kind);
    k.extend_from_slice(key);
    k
}

fn count(value: Option<sled::IVec>) -> u64 {
    value
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

impl ContentTrees {
    pub fn open(
        db: &sled::Db,
        data_dir: &Path,
        codec: Codec,
        logged: Arc<AtomicU64>,
    ) -> Result<ContentTrees, StoreError> {
        let trees = ContentTrees {
            sealed_in: db.open_tree("sealed_in")?,
            shred_due: db.open_tree("shred_due")?,
            chunks: db.open_tree("chunks")?,
            chunk_refs: db.open_tree("chunk_refs")?,
            blobs: db.open_tree("blobs")?,
            blob_refs: db.open_tree("blob_refs")?,
            blob_files: BlobFiles::open(data_dir)?,
            codec: Arc::new(codec),
            db: db.clone(),
            lock: Arc::new(Mutex::new(())),
            logged,
        };
        trees.remove_orphan_blob_files()?;
        Ok(trees)
    }

    /// Counts bytes written toward the engine's next snapshot.
    fn note_logged(&self, bytes: u64) {
        self.logged.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Removes blob files no refcount names: written just before a crash that lost
    /// their references, or left when removing them failed.
    fn remove_orphan_blob_files(&self) -> Result<(), StoreError> {
        let _guard = self.lock();
        let mut removed = 0u64;
        for a in self.blob_files.addresses()? {
            if count(self.blob_refs.get(a)?) == 0 {
                self.blob_files.remove(&a)?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed attachment files that nothing references");
        }
        Ok(())
    }

    /// Notes where a value about to be written is sealed (before the value, so a
    /// sealed value is always found when its period is shredded).
    pub fn note_sealed(&self, kind: u8, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if let Some(slot) = Codec::sealed_in(value) {
            self.sealed_in
                .insert(sealed_key(slot, kind, key), &[] as &[u8])?;
        }
        Ok(())
    }

    /// Notes that a value about to be removed dies: its period becomes due for
    /// shredding (before the removal, so a crash cannot lose the note).
    pub fn note_dying(&self, kind: u8, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if let Some(slot) = Codec::sealed_in(value) {
            self.shred_due.insert(slot.to_be_bytes(), &[] as &[u8])?;
            self.sealed_in.remove(sealed_key(slot, kind, key))?;
        }
        Ok(())
    }

    /// Shreds every period that is due and over: re-seals what is still alive of
    /// it into the current period, makes that durable, then destroys the period's
    /// key. Returns (keys destroyed, values re-sealed).
    /// Periods are told by the wall clock, as values are sealed by it (a sweep's
    /// `now` may be any time).
    pub fn shred(&self, call_content: &sled::Tree) -> Result<(u64, u64), StoreError> {
        let Some(periods) = self.codec.periods.clone() else {
            return Ok((0, 0));
        };
        let current = periods.current();
        let mut destroyed = 0;
        let mut resealed = 0;
        for entry in self.shred_due.iter() {
            let (slot_key, _) = entry?;
            let Some(slot) = crate::store::shred::slot_prefix(&slot_key) else {
                self.shred_due.remove(&slot_key)?;
                continue;
            };
            if slot >= current {
                continue;
            }
            loop {
                let group: Vec<sled::IVec> = self
                    .sealed_in
                    .scan_prefix(slot.to_be_bytes())
                    .keys()
                    .take(RESEAL_GROUP)
                    .collect::<Result<_, _>>()?;
                if group.is_empty() {
                    break;
                }
                let _guard = self.lock();
                for entry in &group {
                    resealed += self.reseal_one(call_content, entry)?;
                    self.sealed_in.remove(entry)?;
                }
            }
            // Re-sealed values are durable before the only key to the old ones goes.
            self.db.flush()?;
            periods.destroy(slot)?;
            self.shred_due.remove(&slot_key)?;
            destroyed += 1;
            tracing::info!(
                period = slot,
                "content key of a period destroyed (crypto-shredding)"
            );
        }
        Ok((destroyed, resealed))
    }

    /// Re-seals the value one `sealed_in` entry names into the current period;
    /// 0 when the value is gone (died after the entry was read).
    fn reseal_one(&self, call_content: &sled::Tree, entry: &[u8]) -> Result<u64, StoreError> {
        let (kind, key) = match entry.get(SLOT_LEN..) {
            Some([kind, key @ ..]) => (*kind, key),
            _ => return Ok(0),
        };
        let stored = match kind {
            SEALED_CHUNK => self.chunks.get(key)?.map(|v| v.to_vec()),
            SEALED_MANIFEST => call_content.get(key)?.map(|v| v.to_vec()),
            SEALED_BLOB => match <Addr>::try_from(key) {
                Ok(a) => self.blob_files.read(&a)?,
                Err(_) => None,
            },
            _ => None,
        };
        let Some(stored) = stored else {
            return Ok(0);
        };
        let fresh = match self.codec.reseal(key, &stored) {
            Ok(v) => v,
            Err(StoreError::Shredded { slot }) => {
                tracing::warn!(
                    period = slot,
                    "a value outlived its period key; it stays unreadable"
                );
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        self.note_sealed(kind, key, &fresh)?;
        match kind {
            SEALED_CHUNK => {
                self.chunks.insert(key, fresh)?;
            }
            SEALED_MANIFEST => {
                call_content.insert(key, fresh)?;
            }
            _ => {
                if let Ok(a) = <Addr>::try_from(key) {
                    self.blob_files.write(&a, &fresh)?;
                }
            }
        }
        Ok(1)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        match self.lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Starts a change set; holds the content lock until committed or dropped.
    pub fn txn(&self) -> Txn<'_> {
        Txn {
            trees: self,
            _guard: self.lock(),
            chunk_delta: HashMap::new(),
            blob_delta: HashMap::new(),
            new_chunks: HashMap::new(),
            new_blobs: HashSet::new(),
        }
    }

    /// Rebuilds the bytes a chunk stands for.
    pub fn expand(&self, root: &Addr) -> Result<Vec<u8>, StoreError> {
        crate::store::content::expand(root, |a| self.template(a), |a| self.blob(a))
    }

    pub fn template(&self, a: &Addr) -> Result<Vec<Seg>, StoreError> {
        let stored = self.chunks.get(a)?.ok_or_else(|| missing(a, "chunk"))?;
        template_of(a, &self.codec.open(a, &stored)?)
    }

    /// A blob's media type and bytes.
    pub fn blob(&self, a: &Addr) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let stored = match self.blob_files.read(a)? {
            Some(bytes) => bytes,
            None => match self.blobs.get(a)? {
                Some(v) => v.to_vec(),
                None => return Ok(None),
            },
        };
        decode_blob(a, &self.codec.open(a, &stored)?).map(Some)
    }

    pub fn chunk_count(&self, a: &Addr) -> Result<u64, StoreError> {
        Ok(count(self.chunk_refs.get(a)?))
    }

    pub fn blob_count(&self, a: &Addr) -> Result<u64, StoreError> {
        Ok(count(self.blob_refs.get(a)?))
    }
}

/// Pieces removed by a commit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    pub chunks: u64,
    pub blobs: u64,
}

/// A set of content changes under the content lock.
pub struct Txn<'a> {
    pub trees: &'a ContentTrees,
    _guard: MutexGuard<'a, ()>,
    chunk_delta: HashMap<Addr, i64>,
    blob_delta: HashMap<Addr, i64>,
    new_chunks: HashMap<Addr, Vec<u8>>,
    /// Blob files written by this change set.
    new_blobs: HashSet<Addr>,
}

impl Txn<'_> {
    pub fn codec(&self) -> &Codec {
        &self.trees.codec
    }

    fn chunk_refs_now(&self, a: &Addr) -> Result<i64, StoreError> {
        let base = count(self.trees.chunk_refs.get(a)?) as i64;
        Ok(base + self.chunk_delta.get(a).copied().unwrap_or(0))
    }

    fn blob_refs_now(&self, a: &Addr) -> Result<i64, StoreError> {
        let base = count(self.trees.blob_refs.get(a)?) as i64;
        Ok(base + self.blob_delta.get(a).copied().unwrap_or(0))
    }

    /// True when the chunk is stored and live, or staged in this change set.
    pub fn has_chunk(&self, a: &Addr) -> Result<bool, StoreError> {
        Ok(self.new_chunks.contains_key(a) || self.chunk_refs_now(a)? > 0)
    }

    pub fn has_blob(&self, a: &Addr) -> Result<bool, StoreError> {
        Ok(self.new_blobs.contains(a) || self.blob_refs_now(a)? > 0)
    }

    /// Adds one reference to a stored or staged chunk.
    pub fn ref_chunk(&mut self, a: &Addr) {
        *self.chunk_delta.entry(*a).or_default() += 1;
    }

    pub fn ref_blob(&mut self, a: &Addr) {
        *self.blob_delta.entry(*a).or_default() += 1;
    }

    /// Stages a new chunk (with no reference yet: its parent takes one), and takes
    /// one reference on each piece its template names, which must be stored or staged.
    pub fn add_chunk(&mut self, a: Addr, segs: &[Seg]) -> Result<(), StoreError> {
        let value = self.trees.codec.seal(&encode_template(segs))?;
        for seg in segs {
            match seg {
                Seg::Chunk(c) => self.ref_chunk(c),
                Seg::Blob(b) => self.ref_blob(b),
                Seg::Lit(_) => {}
            }
        }
        self.new_chunks.insert(a, value);
        Ok(())
    }

    /// Stores a blob's file unless it is already stored; the chunk naming it takes
    /// the reference.
    pub fn ensure_blob(
        &mut self,
        a: Addr,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        if !self.has_blob(&a)? {
            let value = self.trees.codec.seal(&encode_blob(media_type, bytes))?;
            self.trees.note_sealed(SEALED_BLOB, &a, &value)?;
            self.trees.blob_files.write(&a, &value)?;
            self.new_blobs.insert(a);
        }
        Ok(())
    }

    /// Drops one reference to a chunk; dead chunks release what they reference.
    pub fn unref_chunk(&mut self, a: &Addr) -> Result<(), StoreError> {
        let mut work = vec![*a];
        while let Some(a) = work.pop() {
            *self.chunk_delta.entry(a).or_default() -= 1;
            if self.chunk_refs_now(&a)? == 0 {
                // Read the template before the value goes: its children lose a parent.
                let segs = match self.new_chunks.get(&a) {
                    Some(v) => decode_template(&self.trees.codec.open(&a, v)?),
                    None => match self.trees.chunks.get(a)? {
                        Some(v) => decode_template(&self.trees.codec.open(&a, &v)?),
                        None => Some(Vec::new()),
                    },
                };
                for seg in segs.unwrap_or_default() {
                    match seg {
                        Seg::Chunk(c) => work.push(c),
                        Seg::Blob(b) => *self.blob_delta.entry(b).or_default() -= 1,
                        Seg::Lit(_) => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies the change set: new values, then counts, then removals (see module doc).
    pub fn commit(self) -> Result<Freed, StoreError> {
        let mut freed = Freed::default();
        let mut values = Writes::default();
        for (a, v) in &self.new_chunks {
            self.trees.note_sealed(SEALED_CHUNK, a, v)?;
            values.insert(&a[..], &v[..]);
        }
        self.trees.note_logged(values.apply_to(&self.trees.chunks)?);

        let mut dead_chunks = Vec::new();
        let mut refs = Writes::default();
        for (a, delta) in &self.chunk_delta {
            if *delta == 0 {
                continue;
            }
            let now = count(self.trees.chunk_refs.get(a)?) as i64 + delta;
            if now > 0 {
                refs.insert(&a[..], &(now as u64).to_be_bytes()[..]);
            } else {
                refs.remove(&a[..]);
                dead_chunks.push(*a);
            }
        }
        self.trees
            .note_logged(refs.apply_to(&self.trees.chunk_refs)?);
        let mut dead_blobs = Vec::new();
        let mut refs = Writes::default();
        for (a, delta) in &self.blob_delta {
            if *delta == 0 {
                continue;
            }
            let now = count(self.trees.blob_refs.get(a)?) as i64 + delta;
            if now > 0 {
                refs.insert(&a[..], &(now as u64).to_be_bytes()[..]);
            } else {
                refs.remove(&a[..]);
                dead_blobs.push(*a);
            }
        }
        self.trees
            .note_logged(refs.apply_to(&self.trees.blob_refs)?);

        let mut gone = Writes::default();
        for a in &dead_chunks {
            if let Some(v) = self.trees.chunks.get(a)? {
                self.trees.note_dying(SEALED_CHUNK, a, &v)?;
            }
            gone.remove(&a[..]);
        }
        gone.apply_to(&self.trees.chunks)?;
        let mut gone = Writes::default();
        for a in &dead_blobs {
            gone.remove(&a[..]);
        }
        gone.apply_to(&self.trees.blobs)?;
        if !dead_blobs.is_empty() {
            // A file removed before its refcount removal is durable could be
            // named again by the store a crash leaves behind.
            for a in &dead_blobs {
                if let Some(v) = self.trees.blob_files.read(a)? {
                    self.trees.note_dying(SEALED_BLOB, a, &v)?;
                }
            }
            self.trees.db.flush()?;
            for a in &dead_blobs {
                if let Err(e) = self.trees.blob_files.remove(a) {
                    tracing::warn!(error = %e, "cannot remove an attachment file; it goes when the store next opens");
                }
            }
        }
        freed.chunks = dead_chunks.len() as u64;
        freed.blobs = dead_blobs.len() as u64;
        Ok(freed)
    }
}

impl crate::store::content::ContentSource for ContentTrees {
    fn expand(&self, root: &Addr) -> Result<Vec<u8>, StoreError> {
        ContentTrees::expand(self, root)
    }
}

impl crate::store::content::ContentSink for Txn<'_> {
    fn codec(&self) -> &Codec {
        Txn::codec(self)
    }
    fn has_chunk(&self, a: &Addr) -> Result<bool, StoreError> {
        Txn::has_chunk(self, a)
    }
    fn add_chunk(&mut self, a: Addr, segs: &[Seg]) -> Result<(), StoreError> {
        Txn::add_chunk(self, a, segs)
    }
    fn ensure_blob(&mut self, a: Addr, media_type: &str, bytes: &[u8]) -> Result<(), StoreError> {
        Txn::ensure_blob(self, a, media_type, bytes)
    }
    fn ref_chunk(&mut self, a: &Addr) {
        Txn::ref_chunk(self, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::content::SEG_CHUNK;
    use crate::store::crypto::Keyring;

    #[test]
    fn template_encoding_round_trips() {
        let segs = vec![
            Seg::Lit(b"{\"a\":".to_vec()),
            Seg::Chunk([7; 32]),
            Seg::Lit(vec![0; 300]),
            Seg::Blob([9; 32]),
        ];
        assert_eq!(decode_template(&encode_template(&segs)).unwrap(), segs);
        assert!(decode_template(&[SEG_CHUNK, 1, 2]).is_none());
        assert!(decode_template(&[9]).is_none());
    }

    #[test]
    fn codec_compresses_and_seals() {
        let text = "the same words again and again ".repeat(40);
        let plain = Codec {
            keys: None,
            zstd_level: 3,
            periods: None,
        };
        let stored = plain.seal(text.as_bytes()).unwrap();
        assert!(stored.len() < text.len() / 4);
        assert_eq!(plain.open(b"k", &stored).unwrap(), text.as_bytes());
        let keys = Keyring::from_text(&"ab".repeat(32)).unwrap();
        let sealed = Codec {
            keys: Some(Arc::new(keys)),
            zstd_level: 3,
            periods: None,
        };
        let stored = sealed.seal(text.as_bytes()).unwrap();
        assert_eq!(sealed.open(b"k", &stored).unwrap(), text.as_bytes());
        assert!(matches!(
            plain.open(b"k", &stored),
            Err(StoreError::KeyRequired)
        ));
    }
}
