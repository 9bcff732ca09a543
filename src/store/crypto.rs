//! Encryption at rest and content addresses: the keyring, AEAD sealing of stored
//! values, and the hash that names a piece of content.
//!
//! Everything comes from `ring` (already a dependency for TLS): ChaCha20-Poly1305
//! with a fresh random 96-bit nonce per value, HKDF to derive the address key, and
//! HMAC-SHA256 for addresses when encryption is on (a plain SHA-256 would let anyone
//! holding the data directory confirm a guessed prompt; the keyed hash still lets
//! equal texts deduplicate). Each sealed value starts with the 4-byte id of the key
//! that sealed it, so a keyring can hold old keys for reading while a new one writes.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hkdf, hmac};

pub const ADDR_LEN: usize = 32;
pub type Addr = [u8; ADDR_LEN];
const KEY_ID_LEN: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encryption key: {0}")]
    BadKey(String),
    #[error("cannot read encryption key file {path}: {source}")]
    ReadKey {
        path: String,
        source: std::io::Error,
    },
    #[error("value was sealed with key id {0}, which is not in the keyring")]
    UnknownKey(String),
    #[error("value failed authentication (corrupt, or sealed with another key)")]
    Open,
    #[error("cannot seal value (random source or AEAD failure)")]
    Seal,
}

struct Key {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
}

/// The keys a store seals and opens values with. The first key seals; all open.
pub struct Keyring {
    keys: Vec<Key>,
    addr_key: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .finish()
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses a 64-hex-digit address.
pub fn parse_addr(text: &str) -> Option<Addr> {
    hex_decode(text)?.try_into().ok()
}

impl Keyring {
    /// Keys as 64 hex digits (32 bytes) each, separated by newlines, commas or spaces;
    /// `#` starts a comment line. The first key is the current one.
    pub fn from_text(text: &str) -> Result<Keyring, CryptoError> {
        let mut raw = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            for word in line.split(|c: char| c == ',' || c.is_whitespace()) {
                if word.is_empty() {
                    continue;
                }
                let bytes = hex_decode(word)
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| CryptoError::BadKey("each key must be 64 hex digits (32 bytes), e.g. from `openssl rand -hex 32`".into()))?;
                raw.push(bytes);
            }
        }
        let first = raw
            .first()
            .ok_or_else(|| CryptoError::BadKey("no key found".into()))?;
        // The address key is derived, so addresses never reveal the sealing key.
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"llmtap-store-v1").extract(first);
        let okm = prk
            .expand(&[b"content-address"], hmac::HMAC_SHA256)
            .map_err(|_| CryptoError::BadKey("key derivation failed".into()))?;
        let addr_key = hmac::Key::from(okm);
        let mut keys = Vec::new();
        for bytes in &raw {
            let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
                .map_err(|_| CryptoError::BadKey("not a ChaCha20-Poly1305 key".into()))?;
            keys.push(Key {
                id: key_id(bytes),
                aead: LessSafeKey::new(unbound),
            });
        }
        Ok(Keyring {
            keys,
            addr_key,
            rng: SystemRandom::new(),
        })
    }

    pub fn from_file(path: &std::path::Path) -> Result<Keyring, CryptoError> {
        let text = std::fs::read_to_string(path).map_err(|source| CryptoError::ReadKey {
            path: path.display().to_string(),
            source,
        })?;
        Keyring::from_text(&text)
    }

    /// Every key's id, the current one first (for error messages; never key material).
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| hex(&k.id)).collect()
    }

    /// The current key's id, as stored beside each sealed value.
    pub fn current_id(&self) -> String {
        hex(&self.keys[0].id)
    }

    /// `key id (4) | nonce (12) | ciphertext | tag (16)`.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Seal)?;
        let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.id),
                &mut body,
            )
            .map_err(|_| CryptoError::Seal)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < KEY_ID_LEN + NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return Err(CryptoError::Open);
        }
        let (id, rest) = sealed.split_at(KEY_ID_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(hex(id)))?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
        let mut body = body.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(id), &mut body)
            .map_err(|_| CryptoError::Open)?;
        let len = plain.len();
        body.truncate(len);
        Ok(body)
    }
}

fn key_id(key: &[u8]) -> [u8; KEY_ID_LEN] {
    let d = digest::digest(
        &digest::SHA256,
        &[b"llmtap-key-id:".as_slice(), key].concat(),
    );
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&d.as_ref()[..KEY_ID_LEN]);
    id
}

/// Incremental content addressing: SHA-256, or HMAC-SHA256 under a keyring.
/// Cloneable, so prefix hashes of a growing array cost one pass.
#[derive(Clone)]
pub enum AddrHasher {
    Plain(digest::Context),
    Keyed(hmac::Context),
}

impl AddrHasher {
    pub fn new(keys: Option<&Keyring>) -> AddrHasher {
        match keys {
            Some(k) => AddrHasher::Keyed(hmac::Context::with_key(&k.addr_key)),
            None => AddrHasher::Plain(digest::Context::new(&digest::SHA256)),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            AddrHasher::Plain(c) => c.update(data),
            AddrHasher::Keyed(c) => c.update(data),
        }
    }

    pub fn finish(self) -> Addr {
        let mut out = [0u8; ADDR_LEN];
        match self {
            AddrHasher::Plain(c) => out.copy_from_slice(c.finish().as_ref()),
            AddrHasher::Keyed(c) => out.copy_from_slice(c.sign().as_ref()),
        }
        out
    }
}

pub fn address(keys: Option<&Keyring>, data: &[u8]) -> Addr {
    let mut h = AddrHasher::new(keys);
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let ring = Keyring::from_text(K1).unwrap();
        let a = ring.seal(b"secret prompt").unwrap();
        let b = ring.seal(b"secret prompt").unwrap();
        assert_ne!(a, b, "nonces must differ");
        assert_eq!(ring.open(&a).unwrap(), b"secret prompt");
        let mut bad = a.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(ring.open(&bad), Err(CryptoError::Open)));
    }

    #[test]
    fn rotated_keyring_opens_old_values() {
        let old = Keyring::from_text(K1).unwrap();
        let sealed = old.seal(b"x").unwrap();
        let rotated = Keyring::from_text(&format!("{K2}\n{K1}\n")).unwrap();
        assert_eq!(rotated.open(&sealed).unwrap(), b"x");
        let only_new = Keyring::from_text(K2).unwrap();
        assert!(matches!(
            only_new.open(&sealed),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn keyed_addresses_differ_from_sha256() {
        let ring = Keyring::from_text(K1).unwrap();
        assert_ne!(address(Some(&ring), b"a"), address(None, b"a"));
        assert_eq!(address(Some(&ring), b"a"), address(Some(&ring), b"a"));
        assert!(Keyring::from_text("abcd").is_err());
        assert!(Keyring::from_text("").is_err());
    }
}
