//! A set of key writes for one sled tree, applied key by key.
//!
//! sled's own `Batch` makes each `apply_batch` atomic by sealing and writing its log
//! buffer twice (`pin_log`), even for an empty batch. With one batch per tree that
//! was about forty log writes, each waking sled's whole I/O thread pool, per stored
//! batch: most of the writer's CPU at a modest call rate. Our write order already
//! tolerates a crash between trees (values before references, records before derived
//! data, see `content.rs` and `mod.rs`), and sled recovers a prefix of its log, so
//! applying a tree's writes one key at a time keeps the same guarantee.

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

    /// Applies the writes in key order; returns the bytes written (keys and values),
    /// what sled's log grows by before its own framing.
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
}
