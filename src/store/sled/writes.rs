//! A set of key writes for one sled tree, and the one transaction that applies a
//! stored batch's writes to every tree at once.
//!
//! sled's own `Batch` makes each `apply_batch` atomic by sealing and writing its log
//! buffer twice (`pin_log`), even for an empty batch: one batch per tree was about
//! forty log writes, each waking sled's whole I/O thread pool, per stored batch.
//! A transaction over all the batch's trees pins the log once and sled recovers it
//! whole or not at all. That matters beyond a crash: after a failed flush (a full
//! disk) the store is reopened from what reached the disk, and the writer skips
//! replayed calls the store already holds. A batch recovered in part (its call
//! records without its runs' rollups) would leave those calls out of their run for
//! good, so records and everything derived from them go in one transaction.

use std::collections::BTreeMap;

/// Inserts and removals for one tree; the last write to a key wins.
#[derive(Debug, Default)]
pub struct Writes(BTreeMap<Vec<u8>, Option<Vec<u8>>>);

impl Writes {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0
            .insert(key.as_ref().to_vec(), Some(value.as_ref().to_vec()));
    }

    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.0.insert(key.as_ref().to_vec(), None);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of keys and values: what sled's log grows by before its own framing.
    pub fn bytes(&self) -> u64 {
        self.0
            .iter()
            .map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64)
            .sum()
    }

    /// Applies the writes in key order, key by key (not atomic: for writes whose
    /// partial recovery is harmless, such as content values before any reference);
    /// returns the bytes written.
    pub fn apply_to(self, tree: &sled::Tree) -> Result<u64, sled::Error> {
        let mut bytes = 0;
        for (key, value) in self.0 {
            bytes += key.len() as u64;
            match value {
                Some(v) => {
                    bytes += v.len() as u64;
                    tree.insert(key, v)?
                }
                None => tree.remove(key)?,
            };
        }
        Ok(bytes)
    }
}

/// Applies each tree's writes in one sled transaction (one log reservation, recovered
/// whole or not at all); returns the bytes written. Trees with nothing to write are
/// left out of the transaction.
pub fn apply_atomically(parts: &[(&sled::Tree, Writes)]) -> Result<u64, sled::Error> {
    use sled::transaction::{TransactionError, Transactional};
    let parts: Vec<&(&sled::Tree, Writes)> = parts.iter().filter(|(_, w)| !w.is_empty()).collect();
    if parts.is_empty() {
        return Ok(0);
    }
    let trees: Vec<&sled::Tree> = parts.iter().map(|(tree, _)| *tree).collect();
    let outcome = trees.as_slice().transaction(
        |views| -> sled::transaction::ConflictableTransactionResult<(), std::convert::Infallible> {
            for (view, (_, writes)) in views.iter().zip(&parts) {
                for (key, value) in &writes.0 {
                    match value {
                        Some(v) => view.insert(key.as_slice(), v.as_slice())?,
                        None => view.remove(key.as_slice())?,
                    };
                }
            }
            Ok(())
        },
    );
    match outcome {
        Ok(()) => Ok(parts.iter().map(|(_, w)| w.bytes()).sum()),
        Err(TransactionError::Storage(e)) => Err(e),
        Err(TransactionError::Abort(never)) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_write_wins_and_removals_apply() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert("gone", "x").unwrap();
        let mut w = Writes::default();
        w.insert("a", "1");
        w.insert("a", "2");
        w.insert("b", "1");
        w.remove("b");
        w.remove("gone");
        assert_eq!(w.apply_to(&tree).unwrap(), 1 + 1 + 1 + 4);
        assert_eq!(tree.get("a").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(tree.get("b").unwrap(), None);
        assert_eq!(tree.get("gone").unwrap(), None);
    }

    #[test]
    fn one_transaction_writes_every_tree() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let a = db.open_tree("a").unwrap();
        let b = db.open_tree("b").unwrap();
        let c = db.open_tree("c").unwrap();
        b.insert("old", "x").unwrap();
        let mut wa = Writes::default();
        wa.insert("k", "va");
        let mut wb = Writes::default();
        wb.insert("k", "vb");
        wb.remove("old");
        let written = apply_atomically(&[(&a, wa), (&b, wb), (&c, Writes::default())]).unwrap();
        assert_eq!(written, 3 + 3 + 3);
        assert_eq!(a.get("k").unwrap().as_deref(), Some(&b"va"[..]));
        assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"vb"[..]));
        assert_eq!(b.get("old").unwrap(), None);
        assert!(c.is_empty());
    }
}
