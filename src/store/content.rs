//! Content encoding shared by every engine: templates (literal bytes and references
//! to other pieces), varints, and the value codec (zstd, then AEAD) with content
//! addresses. How pieces are stored and counted is the engine's (`sled/content.rs`).

use super::crypto::{address, Addr, AddrHasher, Keyring, ADDR_LEN};
use super::shred::{slot_prefix, PeriodKeys, Slot};
use super::StoreError;
use crate::zblock::{compress, decompress};
use std::sync::Arc;

const FLAG_ZSTD: u8 = 1;
const FLAG_SEALED: u8 = 2;
/// Sealed with a period key (`shred.rs`), which replaces `FLAG_SEALED`.
const FLAG_PERIOD: u8 = 4;
/// Values smaller than this are not worth a zstd frame.
const MIN_COMPRESS: usize = 96;
/// Longest rebuild, as a guard against a corrupt template referencing itself.
pub(crate) const MAX_EXPAND_STEPS: usize = 10_000_000;
const MAX_DECOMPRESSED: usize = 1 << 30;

const SEG_LIT: u8 = 0;
pub(crate) const SEG_CHUNK: u8 = 1;
const SEG_BLOB: u8 = 2;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Lit(Vec<u8>),
    Chunk(Addr),
    /// Rebuilt as the blob's bytes in standard, padded base64.
    Blob(Addr),
}

pub fn encode_template(segs: &[Seg]) -> Vec<u8> {
    let mut out = Vec::new();
    for seg in segs {
        match seg {
            Seg::Lit(bytes) => {
                out.push(SEG_LIT);
                put_varint(&mut out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
            Seg::Chunk(a) => {
                out.push(SEG_CHUNK);
                out.extend_from_slice(a);
            }
            Seg::Blob(a) => {
                out.push(SEG_BLOB);
                out.extend_from_slice(a);
            }
        }
    }
    out
}

pub fn decode_template(mut data: &[u8]) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    while let Some((&tag, rest)) = data.split_first() {
        data = rest;
        match tag {
            SEG_LIT => {
                let (len, rest) = get_varint(data)?;
                let len = usize::try_from(len).ok()?;
                segs.push(Seg::Lit(rest.get(..len)?.to_vec()));
                data = &rest[len..];
            }
            SEG_CHUNK | SEG_BLOB => {
                let a: Addr = data.get(..ADDR_LEN)?.try_into().ok()?;
                data = &data[ADDR_LEN..];
                segs.push(if tag == SEG_CHUNK {
                    Seg::Chunk(a)
                } else {
                    Seg::Blob(a)
                });
            }
            _ => return None,
        }
    }
    Some(segs)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_varint(data: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, b) in data.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &data[i + 1..]));
        }
    }
    None
}

/// How values are sealed before they reach an engine.
pub struct Codec {
    /// The store key: content addresses are keyed with it, and without period
    /// keys it seals values itself.
    pub keys: Option<Arc<Keyring>>,
    /// zstd level; 0 disables compression.
    pub zstd_level: i32,
    /// Period keys (crypto-shredding): when set, every value is sealed with the
    /// current period's key (itself sealed with `keys` in its vault).
    pub periods: Option<Arc<PeriodKeys>>,
}

impl Codec {
    /// The codec an engine opens with: the store key and zstd level of `options`,
    /// and period keys kept in the engine's `vault` (outside its log, see `shred.rs`).
    pub fn for_store(
        options: &super::StoreOptions,
        vault: Box<dyn super::shred::KeyVault>,
    ) -> Codec {
        Codec {
            keys: options.keys.clone(),
            zstd_level: options.zstd_level,
            periods: Some(Arc::new(super::shred::PeriodKeys::new(
                options.key_period_secs,
                options.keys.clone(),
                vault,
            ))),
        }
    }

    /// `flags | [u32 LE plain length | zstd frame] or plain`, then AEAD-sealed after the flag byte.
    /// Compression comes before encryption: ciphertext does not compress.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut flags = 0u8;
        let mut payload = None;
        if self.zstd_level > 0 && plain.len() >= MIN_COMPRESS {
            if let Ok(z) = compress(plain, self.zstd_level) {
                if z.len() + 4 < plain.len() {
                    let mut p = Vec::with_capacity(z.len() + 4);
                    p.extend_from_slice(&(plain.len() as u32).to_le_bytes());
                    p.extend_from_slice(&z);
                    payload = Some(p);
                    flags |= FLAG_ZSTD;
                }
            }
        }
        let payload = payload.as_deref().unwrap_or(plain);
        let mut out;
        if let Some(periods) = &self.periods {
            let sealed = periods.seal(periods.current(), payload)?;
            out = Vec::with_capacity(sealed.len() + 1);
            out.push(flags | FLAG_PERIOD);
            out.extend_from_slice(&sealed);
            return Ok(out);
        }
        match &self.keys {
            Some(keys) => {
                flags |= FLAG_SEALED;
                let sealed = keys.seal(payload)?;
                out = Vec::with_capacity(sealed.len() + 1);
                out.push(flags);
                out.extend_from_slice(&sealed);
            }
            None => {
                out = Vec::with_capacity(payload.len() + 1);
                out.push(flags);
                out.extend_from_slice(payload);
            }
        }
        Ok(out)
    }

    pub fn open(&self, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt {
            key: super::crypto::hex(key),
            reason: why.to_string(),
        };
        let (&flags, rest) = stored.split_first().ok_or_else(|| corrupt("empty value"))?;
        let opened;
        let payload = if flags & FLAG_PERIOD != 0 {
            let periods = self
                .periods
                .as_ref()
                .ok_or_else(|| corrupt("sealed with a period key, but the store has none"))?;
            opened = periods.open(rest)?;
            &opened[..]
        } else if flags & FLAG_SEALED != 0 {
            let keys = self.keys.as_ref().ok_or(StoreError::KeyRequired)?;
            opened = keys.open(rest)?;
            &opened[..]
        } else {
            rest
        };
        if flags & FLAG_ZSTD != 0 {
            let len: [u8; 4] = payload
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt("short zstd header"))?;
            let len = (u32::from_le_bytes(len) as usize).min(MAX_DECOMPRESSED);
            decompress(&payload[4..], len).map_err(|e| corrupt(&e.to_string()))
        } else {
            Ok(payload.to_vec())
        }
    }

    /// The key period a stored value is sealed in, if it is sealed with one.
    pub fn sealed_in(stored: &[u8]) -> Option<Slot> {
        let (&flags, rest) = stored.split_first()?;
        (flags & FLAG_PERIOD != 0)
            .then(|| slot_prefix(rest))
            .flatten()
    }

    /// A stored value sealed again with the current period's key, unchanged
    /// otherwise (compressed stays compressed). Values of stores written before
    /// period keys are sealed with one too.
    pub fn reseal(&self, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        let Some(periods) = &self.periods else {
            return Ok(stored.to_vec());
        };
        let corrupt = |why: &str| StoreError::Corrupt {
            key: super::crypto::hex(key),
            reason: why.to_string(),
        };
        let (&flags, rest) = stored.split_first().ok_or_else(|| corrupt("empty value"))?;
        let payload = if flags & FLAG_PERIOD != 0 {
            periods.open(rest)?
        } else if flags & FLAG_SEALED != 0 {
            self.keys
                .as_ref()
                .ok_or(StoreError::KeyRequired)?
                .open(rest)?
        } else {
            rest.to_vec()
        };
        let sealed = periods.seal(periods.current(), &payload)?;
        let mut out = Vec::with_capacity(sealed.len() + 1);
        out.push((flags & FLAG_ZSTD) | FLAG_PERIOD);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn addr(&self, data: &[u8]) -> Addr {
        address(self.keys.as_deref(), data)
    }

    pub fn hasher(&self) -> AddrHasher {
        AddrHasher::new(self.keys.as_deref())
    }
}

/// Where `body.rs` stages the pieces it cuts a body into: an engine's content
/// transaction (the sled engine's is `sled::content::Txn`).
pub trait ContentSink {
    fn codec(&self) -> &Codec;
    /// True when the chunk is stored and live, or staged in this change set.
    fn has_chunk(&self, a: &Addr) -> Result<bool, StoreError>;
    /// Stages a new chunk, taking one reference on each piece its template names.
    fn add_chunk(&mut self, a: Addr, segs: &[Seg]) -> Result<(), StoreError>;
    /// Stores an attachment unless it is already stored.
    fn ensure_blob(&mut self, a: Addr, media_type: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Takes one reference on a stored or staged chunk (a manifest's root).
    fn ref_chunk(&mut self, a: &Addr);
}

/// Where `manifest::hydrate` reads pieces back: an engine's content store.
pub trait ContentSource {
    /// The bytes a chunk (with every piece its template names) rebuilds to.
    fn expand(&self, root: &Addr) -> Result<Vec<u8>, StoreError>;
}

/// Rebuilds the bytes a chunk stands for from an engine's `template` and `blob`
/// lookups (a blob is rebuilt as its standard, padded base64 text).
pub fn expand(
    root: &Addr,
    template: impl Fn(&Addr) -> Result<Vec<Seg>, StoreError>,
    blob: impl Fn(&Addr) -> Result<Option<(String, Vec<u8>)>, StoreError>,
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    let mut stack: Vec<std::vec::IntoIter<Seg>> = vec![vec![Seg::Chunk(*root)].into_iter()];
    let mut steps = 0usize;
    let mut b64 = Vec::new();
    while let Some(top) = stack.last_mut() {
        let Some(seg) = top.next() else {
            stack.pop();
            continue;
        };
        steps += 1;
        if steps > MAX_EXPAND_STEPS {
            return Err(StoreError::Corrupt {
                key: super::crypto::hex(root),
                reason: "template does not terminate".into(),
            });
        }
        match seg {
            Seg::Lit(bytes) => out.extend_from_slice(&bytes),
            Seg::Chunk(a) => stack.push(template(&a)?.into_iter()),
            Seg::Blob(a) => {
                let (_, bytes) = blob(&a)?.ok_or_else(|| missing(&a, "blob"))?;
                use base64::Engine;
                b64.clear();
                b64.resize(bytes.len().div_ceil(3) * 4, 0);
                let n = base64::engine::general_purpose::STANDARD
                    .encode_slice(&bytes, &mut b64)
                    .map_err(|e| StoreError::Corrupt {
                        key: super::crypto::hex(&a),
                        reason: e.to_string(),
                    })?;
                out.extend_from_slice(&b64[..n]);
            }
        }
    }
    Ok(out)
}

/// A blob value's plain form: varint media-type length, media type, bytes.
pub fn encode_blob(media_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(bytes.len() + media_type.len() + 2);
    put_varint(&mut plain, media_type.len() as u64);
    plain.extend_from_slice(media_type.as_bytes());
    plain.extend_from_slice(bytes);
    plain
}

/// A blob's media type and bytes from its plain form (`encode_blob`).
pub fn decode_blob(a: &Addr, plain: &[u8]) -> Result<(String, Vec<u8>), StoreError> {
    let bad = || StoreError::Corrupt {
        key: super::crypto::hex(a),
        reason: "bad blob header".into(),
    };
    let (len, rest) = get_varint(plain).ok_or_else(bad)?;
    let len = usize::try_from(len).map_err(|_| bad())?;
    let media = rest.get(..len).ok_or_else(bad)?;
    Ok((
        String::from_utf8_lossy(media).into_owned(),
        rest[len..].to_vec(),
    ))
}

/// A template's pieces from a chunk's plain value.
pub fn template_of(a: &Addr, plain: &[u8]) -> Result<Vec<Seg>, StoreError> {
    decode_template(plain).ok_or_else(|| StoreError::Corrupt {
        key: super::crypto::hex(a),
        reason: "bad template".into(),
    })
}

pub fn missing(a: &Addr, what: &str) -> StoreError {
    StoreError::Corrupt {
        key: super::crypto::hex(a),
        reason: format!("referenced {what} is missing"),
    }
}
