//! Crypto-shredding: how deleted content stops being recoverable from the disk.
//!
//! Both engines keep data in files that outlive a delete: sled's log keeps old
//! values until it cleans a segment, PostgreSQL keeps dead tuples until a vacuum
//! and pages after it. So every content value (body pieces, attachments, call
//! manifests) is sealed with the key of the *period* it was written in (a `Slot`,
//! an hour by default), and the keys live in a vault outside the engine's log: a
//! file per key beside sled, a small table that is rewritten on every destroy in
//! PostgreSQL. When content dies (retention, body retention), its period is marked
//! due; once the period is over, the content of that period that is still alive is
//! re-sealed into the current period and the period's key is destroyed. What the
//! engine's files still hold of that period is then ciphertext without a key.
//!
//! Value format (after the codec's flag byte, which has `FLAG_PERIOD`):
//! `slot (u32 BE) | nonce (12) | ciphertext | tag (16)`, the slot as associated
//! data. With `[store] encryption_key_file` the period keys are themselves sealed
//! with the store key in the vault, so both promises hold together.

use super::crypto::Keyring;
use super::StoreError;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A key period: `unix time / period length`.
pub type Slot = u32;
pub const SLOT_LEN: usize = 4;
const KEY_LEN: usize = 32;

/// Where period keys are kept, outside the engine's log.
pub trait KeyVault: Send + Sync {
    /// A period's stored key (sealed with the store key when there is one).
    fn load(&self, slot: Slot) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `stored` durably as the period's key unless the period has one;
    /// returns the key the vault holds afterwards (another writer may have won).
    fn create(&self, slot: Slot, stored: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Destroys a period's key durably, so nothing sealed with it opens again.
    fn destroy(&self, slot: Slot) -> Result<(), StoreError>;
}

/// The period keys of one store: which period it is, and sealing and opening
/// values with a period's key.
pub struct PeriodKeys {
    period_secs: u64,
    master: Option<Arc<Keyring>>,
    vault: Box<dyn KeyVault>,
    /// Keys used so far; `None` for a period whose key is gone.
    cache: RwLock<HashMap<Slot, Option<Arc<LessSafeKey>>>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for PeriodKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("PeriodKeys")
            .field("period_secs", &self.period_secs)
            .finish()
    }
}

impl PeriodKeys {
    pub fn new(
        period_secs: u64,
        master: Option<Arc<Keyring>>,
        vault: Box<dyn KeyVault>,
    ) -> PeriodKeys {
        PeriodKeys {
            period_secs: period_secs.max(1),
            master,
            vault,
            cache: RwLock::new(HashMap::new()),
            rng: SystemRandom::new(),
        }
    }

    pub fn period_secs(&self) -> u64 {
        self.period_secs
    }

    /// The period a time (µs since the UNIX epoch) falls in.
    pub fn slot_at(&self, unix_us: u64) -> Slot {
        u32::try_from(unix_us / 1_000_000 / self.period_secs).unwrap_or(u32::MAX)
    }

    /// The period now.
    pub fn current(&self) -> Slot {
        self.slot_at(crate::timefmt::now_unix_us())
    }

    fn cached(&self, slot: Slot) -> Option<Option<Arc<LessSafeKey>>> {
        match self.cache.read() {
            Ok(c) => c.get(&slot).cloned(),
            Err(p) => p.into_inner().get(&slot).cloned(),
        }
    }

    fn remember(&self, slot: Slot, key: Option<Arc<LessSafeKey>>) {
        match self.cache.write() {
            Ok(mut c) => c.insert(slot, key),
            Err(p) => p.into_inner().insert(slot, key),
        };
    }

    fn unwrap_stored(&self, slot: Slot, stored: &[u8]) -> Result<Arc<LessSafeKey>, StoreError> {
        let raw = match &self.master {
            Some(master) => master.open(stored)?,
            None => stored.to_vec(),
        };
        if raw.len() != KEY_LEN {
            return Err(StoreError::Corrupt {
                key: format!("period key {slot}"),
                reason: format!("{} bytes, expected {KEY_LEN}", raw.len()),
            });
        }
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, &raw).map_err(|_| StoreError::Corrupt {
                key: format!("period key {slot}"),
                reason: "not a ChaCha20-Poly1305 key".into(),
            })?;
        Ok(Arc::new(LessSafeKey::new(unbound)))
    }

    /// A period's key for opening: `None` once destroyed.
    fn key_for_open(&self, slot: Slot) -> Result<Option<Arc<LessSafeKey>>, StoreError> {
        if let Some(known) = self.cached(slot) {
            return Ok(known);
        }
        let key = match self.vault.load(slot)? {
            Some(stored) => Some(self.unwrap_stored(slot, &stored)?),
            None => None,
        };
        // A missing key is not remembered: another instance may create it.
        if key.is_some() {
            self.remember(slot, key.clone());
        }
        Ok(key)
    }

    /// A period's key for sealing, created (durably, before any value names it)
    /// when the period has none yet.
    fn key_for_seal(&self, slot: Slot) -> Result<Arc<LessSafeKey>, StoreError> {
        if let Some(key) = self.key_for_open(slot)? {
            return Ok(key);
        }
        let mut raw = [0u8; KEY_LEN];
        self.rng
            .fill(&mut raw)
            .map_err(|_| StoreError::Crypto(super::crypto::CryptoError::Seal))?;
        let stored = match &self.master {
            Some(master) => master.seal(&raw)?,
            None => raw.to_vec(),
        };
        let kept = self.vault.create(slot, &stored)?;
        let key = self.unwrap_stored(slot, &kept)?;
        self.remember(slot, Some(key.clone()));
        Ok(key)
    }

    /// `slot | nonce | ciphertext | tag`, sealed with the period's key.
    pub fn seal(&self, slot: Slot, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = self.key_for_seal(slot)?;
        let slot_bytes = slot.to_be_bytes();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| StoreError::Crypto(super::crypto::CryptoError::Seal))?;
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&slot_bytes),
            &mut body,
        )
        .map_err(|_| StoreError::Crypto(super::crypto::CryptoError::Seal))?;
        let mut out = Vec::with_capacity(SLOT_LEN + NONCE_LEN + body.len());
        out.extend_from_slice(&slot_bytes);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens what `seal` made; `StoreError::Shredded` when its period's key is gone.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let slot =
            slot_prefix(sealed).ok_or(StoreError::Crypto(super::crypto::CryptoError::Open))?;
        let key = self
            .key_for_open(slot)?
            .ok_or(StoreError::Shredded { slot })?;
        let rest = &sealed[SLOT_LEN..];
        if rest.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(super::crypto::CryptoError::Open.into());
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| super::crypto::CryptoError::Open)?;
        let mut body = body.to_vec();
        let len = key
            .open_in_place(nonce, Aad::from(&slot.to_be_bytes()), &mut body)
            .map_err(|_| super::crypto::CryptoError::Open)?
            .len();
        body.truncate(len);
        Ok(body)
    }

    /// Destroys a period's key: everything sealed with it is unreadable from now on.
    pub fn destroy(&self, slot: Slot) -> Result<(), StoreError> {
        self.vault.destroy(slot)?;
        self.remember(slot, None);
        Ok(())
    }
}

/// The period named at the start of a sealed value (after the codec's flag byte).
pub fn slot_prefix(sealed: &[u8]) -> Option<Slot> {
    Some(u32::from_be_bytes(sealed.get(..SLOT_LEN)?.try_into().ok()?))
}

/// The vault of an embedded store: one file per period key in a directory of its
/// own, outside sled's log. A key file is written to a temporary name, synced and
/// renamed (with its directory synced), so a period key that exists is whole; it is
/// destroyed by overwriting it with zeros, syncing, and removing it.
pub struct FileVault {
    dir: std::path::PathBuf,
}

impl FileVault {
    pub fn open(dir: std::path::PathBuf) -> std::io::Result<FileVault> {
        std::fs::create_dir_all(&dir)?;
        remove_temporary_files(&dir)?;
        Ok(FileVault { dir })
    }

    fn path(&self, slot: Slot) -> std::path::PathBuf {
        self.dir.join(format!("{slot:010}.key"))
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

fn remove_temporary_files(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

impl KeyVault for FileVault {
    fn load(&self, slot: Slot) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(self.path(slot)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn create(&self, slot: Slot, stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        if let Some(existing) = self.load(slot)? {
            return Ok(existing);
        }
        super::disk::write_durably(&self.path(slot), stored)?;
        Ok(stored.to_vec())
    }

    fn destroy(&self, slot: Slot) -> Result<(), StoreError> {
        use std::io::{Seek, Write};
        let path = self.path(slot);
        match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(mut file) => {
                // Overwritten in place first: an unlinked file's blocks keep their bytes.
                let len = file.metadata()?.len() as usize;
                file.seek(std::io::SeekFrom::Start(0))?;
                file.write_all(&vec![0u8; len])?;
                file.sync_all()?;
                drop(file);
                std::fs::remove_file(&path)?;
                self.sync_dir()?;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    fn keys(dir: &std::path::Path, master: Option<Arc<Keyring>>) -> PeriodKeys {
        PeriodKeys::new(
            3600,
            master,
            Box::new(FileVault::open(dir.join("keys")).unwrap()),
        )
    }

    #[test]
    fn sealed_values_open_until_their_period_key_is_destroyed() {
        let dir = TempDir::new("shred-destroyed");
        let periods = keys(&dir, None);
        let a = periods.seal(7, b"secret prompt").unwrap();
        let b = periods.seal(8, b"other prompt").unwrap();
        assert_eq!(slot_prefix(&a), Some(7));
        assert_eq!(periods.open(&a).unwrap(), b"secret prompt");
        // A second instance over the same vault reads the same keys.
        let again = keys(&dir, None);
        assert_eq!(again.open(&b).unwrap(), b"other prompt");
        periods.destroy(7).unwrap();
        assert!(matches!(
            periods.open(&a),
            Err(StoreError::Shredded { slot: 7 })
        ));
        assert!(matches!(
            keys(&dir, None).open(&a),
            Err(StoreError::Shredded { slot: 7 })
        ));
        assert_eq!(periods.open(&b).unwrap(), b"other prompt");
        assert_eq!(std::fs::read_dir(dir.join("keys")).unwrap().count(), 1);
    }

    #[test]
    fn period_keys_are_sealed_with_the_store_key_when_there_is_one() {
        let dir = TempDir::new("shred-master");
        let master = Arc::new(Keyring::from_text(&"cd".repeat(32)).unwrap());
        let periods = keys(&dir, Some(master.clone()));
        let sealed = periods.seal(3, b"x").unwrap();
        let stored = std::fs::read(dir.join("keys/0000000003.key")).unwrap();
        assert_ne!(stored.len(), KEY_LEN, "the key file holds a sealed key");
        assert!(keys(&dir, None).open(&sealed).is_err());
        assert_eq!(keys(&dir, Some(master)).open(&sealed).unwrap(), b"x");
    }

    #[test]
    fn slots_follow_the_period_length() {
        let dir = TempDir::new("shred-slots");
        let periods = keys(&dir, None);
        assert_eq!(periods.slot_at(3_599_999_999), 0);
        assert_eq!(periods.slot_at(3_600_000_000), 1);
    }
}
