//! Content in PostgreSQL: the `chunks` and `blobs` rows that `manifest::store_content`
//! cuts calls into, shared by every instance on the database.
//!
//! Writing: a batch's pieces are staged in memory (`Staging`, the engine's
//! `ContentSink`), then written in the batch's transaction by `write`: values with
//! `INSERT ... ON CONFLICT DO NOTHING RETURNING addr`, so a piece two instances cut
//! from the same system prompt is stored once and only the transaction that
//! inserted it takes references on the pieces its template names; then every
//! reference delta (manifest roots, children of new chunks) in one update per table.
//! Staging cannot ask the database piece by piece (one round trip each), yet what is
//! stored changes how a body is cut: a round's history names the previous round's
//! stored history and holds only what it added (`body.rs`). So the engine first cuts
//! the batch with a `Probe` that records every piece the cutting asks about, asks
//! the database once which of them are stored (`stored_among`), and stages with
//! that answer (`Staging::with_stored`). Should one of those be freed before the
//! batch's transaction holds the sweep lock (a retention sweep in between), the
//! reference update finds it missing and `write` answers `ContentGone`: the engine
//! cuts the batch again. Pieces not known stored are staged and the insert sorts out
//! which are new. Rows are written in address order; two instances that still lock the same
//! rows in a different order get a deadlock error, and the engine retries the batch.
//!
//! Reading: `load` fetches a call's pieces breadth first, one query per template
//! level (a round's history chunk names the previous round's), into a `Loaded`
//! set that is the `ContentSource` `manifest::hydrate` reads.

use super::PgError;
use crate::store::content::{
    decode_blob, encode_blob, encode_template, expand, missing, template_of, Codec, ContentSink,
    ContentSource, Seg,
};
use crate::store::crypto::Addr;
use crate::store::StoreError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio_postgres::GenericClient;

/// A staged chunk: its sealed value and the pieces its template names.
struct StagedChunk {
    value: Vec<u8>,
    chunks: Vec<Addr>,
    blobs: Vec<Addr>,
}

/// One batch's content, staged before its transaction.
pub struct Staging {
    codec: Arc<Codec>,
    chunks: BTreeMap<Addr, StagedChunk>,
    blobs: BTreeMap<Addr, Vec<u8>>,
    /// References the batch's manifests take on their roots.
    roots: HashMap<Addr, i64>,
    /// Chunks the database held when the batch was cut.
    stored: HashSet<Addr>,
}

impl Staging {
    pub fn new(codec: Arc<Codec>) -> Staging {
        Staging::with_stored(codec, HashSet::new())
    }

    /// Staging that builds on these stored chunks (`stored_among`).
    pub fn with_stored(codec: Arc<Codec>, stored: HashSet<Addr>) -> Staging {
        Staging {
            codec,
            chunks: BTreeMap::new(),
            blobs: BTreeMap::new(),
            roots: HashMap::new(),
            stored,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.blobs.is_empty() && self.roots.is_empty()
    }
}

impl ContentSink for Staging {
    fn codec(&self) -> &Codec {
        &self.codec
    }

    /// What this batch staged or the database held when asked (see the module doc).
    fn has_chunk(&self, a: &Addr) -> Result<bool, StoreError> {
        Ok(self.chunks.contains_key(a) || self.stored.contains(a))
    }

    fn add_chunk(&mut self, a: Addr, segs: &[Seg]) -> Result<(), StoreError> {
        if self.chunks.contains_key(&a) {
            return Ok(());
        }
        let mut staged = StagedChunk {
            value: self.codec.seal(&encode_template(segs))?,
            chunks: Vec::new(),
            blobs: Vec::new(),
        };
        for seg in segs {
            match seg {
                Seg::Chunk(c) => staged.chunks.push(*c),
                Seg::Blob(b) => staged.blobs.push(*b),
                Seg::Lit(_) => {}
            }
        }
        self.chunks.insert(a, staged);
        Ok(())
    }

    fn ensure_blob(&mut self, a: Addr, media_type: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if !self.blobs.contains_key(&a) {
            let value = self.codec.seal(&encode_blob(media_type, bytes))?;
            self.blobs.insert(a, value);
        }
        Ok(())
    }

    fn ref_chunk(&mut self, a: &Addr) {
        *self.roots.entry(*a).or_default() += 1;
    }
}

/// A sink that stores nothing and records every chunk the cutting asks about (the
/// first pass of a batch, see the module doc).
pub struct Probe {
    codec: Arc<Codec>,
    asked: std::cell::RefCell<HashSet<Addr>>,
}

impl Probe {
    pub fn new(codec: Arc<Codec>) -> Probe {
        Probe {
            codec,
            asked: Default::default(),
        }
    }

    /// Every chunk the cutting asked about.
    pub fn asked(self) -> HashSet<Addr> {
        self.asked.into_inner()
    }
}

impl ContentSink for Probe {
    fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Nothing is known stored here, so the cutting asks about every piece it might
    /// build on.
    fn has_chunk(&self, a: &Addr) -> Result<bool, StoreError> {
        self.asked.borrow_mut().insert(*a);
        Ok(false)
    }

    fn add_chunk(&mut self, _a: Addr, _segs: &[Seg]) -> Result<(), StoreError> {
        Ok(())
    }

    fn ensure_blob(&mut self, _a: Addr, _media: &str, _bytes: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }

    fn ref_chunk(&mut self, _a: &Addr) {}
}

/// Which of these chunks the database holds.
pub async fn stored_among(
    client: &impl GenericClient,
    asked: &HashSet<Addr>,
) -> Result<HashSet<Addr>, PgError> {
    if asked.is_empty() {
        return Ok(HashSet::new());
    }
    let keys = addrs(asked.iter().copied());
    client
        .query("SELECT addr FROM chunks WHERE addr = ANY($1)", &[&keys])
        .await?
        .iter()
        .map(|row| to_addr(row.get::<_, &[u8]>(0)))
        .collect()
}

/// What `write` stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub new_chunks: u64,
    pub new_blobs: u64,
}

fn addrs(list: impl IntoIterator<Item = Addr>) -> Vec<Vec<u8>> {
    list.into_iter().map(|a| a.to_vec()).collect()
}

fn to_addr(bytes: &[u8]) -> Result<Addr, PgError> {
    bytes
        .try_into()
        .map_err(|_| PgError::Decode(format!("a content address of {} bytes", bytes.len())))
}

/// Writers share this advisory lock for their transaction; retention holds it alone
/// while it releases content, so a piece is never freed at refs 0 while a batch
/// finds it stored and adds a reference to it.
pub const SWEEP_LOCK: i64 = 0x6c6c_6d74_6170_0001;

/// Stores the staged pieces and their references (in the caller's transaction).
pub async fn write(client: &impl GenericClient, staging: &Staging) -> Result<Written, PgError> {
    let mut written = Written::default();
    if staging.is_empty() {
        return Ok(written);
    }
    client
        .execute("SELECT pg_advisory_xact_lock_shared($1)", &[&SWEEP_LOCK])
        .await?;
    let mut new_blobs: HashSet<Addr> = HashSet::new();
    if !staging.blobs.is_empty() {
        let keys = addrs(staging.blobs.keys().copied());
        let values: Vec<&[u8]> = staging.blobs.values().map(Vec::as_slice).collect();
        for row in client
            .query(
                "INSERT INTO blobs (addr, value) \
                 SELECT a, v FROM unnest($1::bytea[], $2::bytea[]) AS t(a, v) ORDER BY a \
                 ON CONFLICT DO NOTHING RETURNING addr",
                &[&keys, &values],
            )
            .await?
        {
            new_blobs.insert(to_addr(row.get::<_, &[u8]>(0))?);
        }
    }
    let mut chunk_delta: BTreeMap<Addr, i64> = BTreeMap::new();
    let mut blob_delta: BTreeMap<Addr, i64> = BTreeMap::new();
    if !staging.chunks.is_empty() {
        let keys = addrs(staging.chunks.keys().copied());
        let values: Vec<&[u8]> = staging
            .chunks
            .values()
            .map(|c| c.value.as_slice())
            .collect();
        let rows = client
            .query(
                "INSERT INTO chunks (addr, value) \
                 SELECT a, v FROM unnest($1::bytea[], $2::bytea[]) AS t(a, v) ORDER BY a \
                 ON CONFLICT DO NOTHING RETURNING addr",
                &[&keys, &values],
            )
            .await?;
        written.new_chunks = rows.len() as u64;
        for row in rows {
            let a = to_addr(row.get::<_, &[u8]>(0))?;
            // Only the transaction that stored a template counts what it names.
            if let Some(staged) = staging.chunks.get(&a) {
                for c in &staged.chunks {
                    *chunk_delta.entry(*c).or_default() += 1;
                }
                for b in &staged.blobs {
                    *blob_delta.entry(*b).or_default() += 1;
                }
            }
        }
    }
    written.new_blobs = new_blobs.len() as u64;
    for (a, n) in &staging.roots {
        *chunk_delta.entry(*a).or_default() += n;
    }
    for (table, delta) in [("chunks", &chunk_delta), ("blobs", &blob_delta)] {
        if delta.is_empty() {
            continue;
        }
        let keys = addrs(delta.keys().copied());
        let counts: Vec<i64> = delta.values().copied().collect();
        let updated = client
            .execute(
                &format!(
                    "UPDATE {table} SET refs = refs + d.n \
                     FROM (SELECT a, n FROM unnest($1::bytea[], $2::bigint[]) AS t(a, n) ORDER BY a) AS d \
                     WHERE {table}.addr = d.a"
                ),
                &[&keys, &counts],
            )
            .await?;
        if updated != keys.len() as u64 {
            // A reference to a piece that is not stored: one the batch was cut on was
            // freed before this transaction held the sweep lock (or the store is wrong,
            // which cutting the batch again against the database also sorts out).
            return Err(PgError::ContentGone {
                missing: keys.len() as u64 - updated,
                named: keys.len() as u64,
            });
        }
    }
    Ok(written)
}

/// What `release` freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    pub chunks: u64,
    pub blobs: u64,
}

/// Takes references off chunks (retention: the manifests naming them are gone) and
/// deletes each piece whose count reaches zero, releasing in turn what its template
/// names, level by level. Call it holding `SWEEP_LOCK` alone, in the transaction
/// that deletes the manifests.
pub async fn release(
    client: &impl GenericClient,
    codec: &Codec,
    roots: HashMap<Addr, i64>,
) -> Result<Freed, StoreError> {
    let mut freed = Freed::default();
    let mut chunk_delta: BTreeMap<Addr, i64> = roots.into_iter().collect();
    let mut blob_delta: BTreeMap<Addr, i64> = BTreeMap::new();
    while !chunk_delta.is_empty() {
        let zero = unref(client, "chunks", &chunk_delta).await?;
        chunk_delta.clear();
        if zero.is_empty() {
            break;
        }
        let rows = client
            .query(
                "DELETE FROM chunks WHERE addr = ANY($1) AND refs <= 0 RETURNING addr, value",
                &[&addrs(zero)],
            )
            .await
            .map_err(PgError::from)?;
        freed.chunks += rows.len() as u64;
        for row in rows {
            let a = to_addr(row.get::<_, &[u8]>(0))?;
            for seg in template_of(&a, &codec.open(&a, row.get::<_, &[u8]>(1))?)? {
                match seg {
                    Seg::Chunk(c) => *chunk_delta.entry(c).or_default() += 1,
                    Seg::Blob(b) => *blob_delta.entry(b).or_default() += 1,
                    Seg::Lit(_) => {}
                }
            }
        }
    }
    if !blob_delta.is_empty() {
        let zero = unref(client, "blobs", &blob_delta).await?;
        if !zero.is_empty() {
            freed.blobs = client
                .execute(
                    "DELETE FROM blobs WHERE addr = ANY($1) AND refs <= 0",
                    &[&addrs(zero)],
                )
                .await
                .map_err(PgError::from)?;
        }
    }
    Ok(freed)
}

/// Subtracts the deltas from `table`'s refs (rows in address order); the addresses
/// left at zero or below.
async fn unref(
    client: &impl GenericClient,
    table: &str,
    delta: &BTreeMap<Addr, i64>,
) -> Result<Vec<Addr>, PgError> {
    let keys = addrs(delta.keys().copied());
    let counts: Vec<i64> = delta.values().copied().collect();
    let rows = client
        .query(
            &format!(
                "UPDATE {table} SET refs = refs - d.n \
                 FROM (SELECT a, n FROM unnest($1::bytea[], $2::bigint[]) AS t(a, n) ORDER BY a) AS d \
                 WHERE {table}.addr = d.a RETURNING {table}.addr, {table}.refs"
            ),
            &[&keys, &counts],
        )
        .await?;
    let mut zero = Vec::new();
    for row in rows {
        if row.get::<_, i64>(1) <= 0 {
            zero.push(to_addr(row.get::<_, &[u8]>(0))?);
        }
    }
    Ok(zero)
}

/// A call's pieces, fetched for `manifest::hydrate`.
pub struct Loaded {
    codec: Arc<Codec>,
    templates: HashMap<Addr, Vec<Seg>>,
    blobs: HashMap<Addr, (String, Vec<u8>)>,
}

/// Fetches every piece the roots name, one query per template level.
pub async fn load(
    client: &impl GenericClient,
    codec: Arc<Codec>,
    roots: &[Addr],
) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded {
        codec,
        templates: HashMap::new(),
        blobs: HashMap::new(),
    };
    let mut want: Vec<Addr> = roots.to_vec();
    let mut blob_want: HashSet<Addr> = HashSet::new();
    while !want.is_empty() {
        want.sort_unstable();
        want.dedup();
        let rows = client
            .query(
                "SELECT addr, value FROM chunks WHERE addr = ANY($1)",
                &[&addrs(want.iter().copied())],
            )
            .await
            .map_err(PgError::from)?;
        let mut next = Vec::new();
        for row in rows {
            let a = to_addr(row.get::<_, &[u8]>(0))?;
            let segs = template_of(&a, &loaded.codec.open(&a, row.get::<_, &[u8]>(1))?)?;
            for seg in &segs {
                match seg {
                    Seg::Chunk(c) if !loaded.templates.contains_key(c) => next.push(*c),
                    Seg::Blob(b) => {
                        blob_want.insert(*b);
                    }
                    _ => {}
                }
            }
            loaded.templates.insert(a, segs);
        }
        if let Some(absent) = want.iter().find(|a| !loaded.templates.contains_key(*a)) {
            return Err(missing(absent, "chunk"));
        }
        next.retain(|c| !loaded.templates.contains_key(c));
        want = next;
    }
    if !blob_want.is_empty() {
        let rows = client
            .query(
                "SELECT addr, value FROM blobs WHERE addr = ANY($1)",
                &[&addrs(blob_want.iter().copied())],
            )
            .await
            .map_err(PgError::from)?;
        for row in rows {
            let a = to_addr(row.get::<_, &[u8]>(0))?;
            let blob = decode_blob(&a, &loaded.codec.open(&a, row.get::<_, &[u8]>(1))?)?;
            loaded.blobs.insert(a, blob);
        }
    }
    Ok(loaded)
}

impl Loaded {
    /// An attachment's media type and bytes, when it was fetched.
    pub fn blob(&self, a: &Addr) -> Option<&(String, Vec<u8>)> {
        self.blobs.get(a)
    }
}

impl ContentSource for Loaded {
    fn expand(&self, root: &Addr) -> Result<Vec<u8>, StoreError> {
        expand(
            root,
            |a| {
                self.templates
                    .get(a)
                    .cloned()
                    .ok_or_else(|| missing(a, "chunk"))
            },
            |a| Ok(self.blobs.get(a).cloned()),
        )
    }
}

/// An attachment by address: its media type and bytes.
pub async fn blob(
    client: &impl GenericClient,
    codec: &Codec,
    a: &Addr,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    let row = client
        .query_opt("SELECT value FROM blobs WHERE addr = $1", &[&a.as_slice()])
        .await
        .map_err(PgError::from)?;
    match row {
        Some(row) => Ok(Some(decode_blob(
            a,
            &codec.open(a, row.get::<_, &[u8]>(0))?,
        )?)),
        None => Ok(None),
    }
}

/// References held on a chunk or blob row; 0 when absent.
pub async fn refs(client: &impl GenericClient, blobs: bool, a: &Addr) -> Result<u64, PgError> {
    let sql = if blobs {
        "SELECT refs FROM blobs WHERE addr = $1"
    } else {
        "SELECT refs FROM chunks WHERE addr = $1"
    };
    Ok(client
        .query_opt(sql, &[&a.as_slice()])
        .await?
        .map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
}
