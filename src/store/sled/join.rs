//! Conjunctions of indexed filters: a newest-first zigzag join of index key streams.
//!
//! Under one index prefix the keys are ordered by (time, id), so a record matches a
//! conjunction when its (time, id) appears under a prefix of every conjunct (the
//! values of one conjunct are ORed, i.e. merged). The join never looks at summaries:
//! it takes the oldest head among the conjuncts as the target and moves every stream
//! to at or below it, so a sparse intersection of two large indexes costs about the
//! keys of the denser interleaving, not one summary lookup per candidate.
//!
//! Moving a stream first tries a few sequential steps (cheap when streams interleave
//! densely, as they do for attributes spread over the same traffic) and only then
//! reopens its range at the target (cheap when one stream must skip far, e.g. a
//! rare agent against a common status).

use super::StoreError;
use crate::store::index;

/// A place in an index stream: (time µs, id).
pub type Key = (u64, Vec<u8>);

/// Sequential steps before a stream reopens its range at the target. A reopened
/// range costs a tree descent, a few key reads' worth.
const STEPS_BEFORE_SEEK: usize = 8;

/// One reverse range scan over a single index prefix. Heads are compared by their
/// suffix (time BE, id), which orders exactly like (time, id), so the join moves
/// without copying keys.
struct Scan {
    tree: sled::Tree,
    prefix_len: usize,
    lo: Vec<u8>,
    iter: std::iter::Rev<sled::Iter>,
    head: Option<sled::IVec>,
}

impl Scan {
    fn head(&self) -> Option<&[u8]> {
        self.head.as_ref().map(|k| &k[self.prefix_len..])
    }

    fn read(&mut self, work: &mut usize) -> Result<(), StoreError> {
        self.head = None;
        for entry in self.iter.by_ref() {
            *work += 1;
            let (key, _) = entry?;
            // Shorter keys cannot hold a time: not an index entry of this prefix.
            if key.len() >= self.prefix_len + 8 {
                self.head = Some(key);
                break;
            }
        }
        Ok(())
    }

    /// Moves the head to the newest key at or below `target` (a suffix).
    fn seek_le(&mut self, target: &[u8], work: &mut usize) -> Result<(), StoreError> {
        for _ in 0..STEPS_BEFORE_SEEK {
            match self.head() {
                Some(h) if h > target => self.read(work)?,
                _ => return Ok(()),
            }
        }
        if self.head().is_some_and(|h| h > target) {
            let mut at = self.lo[..self.prefix_len].to_vec();
            at.extend_from_slice(target);
            self.iter = self.tree.range(self.lo.clone()..=at).rev();
            *work += 1;
            self.read(work)?;
        }
        Ok(())
    }
}

/// The ORed values of one tag: a merge of scans, newest first, without duplicates.
struct Union {
    scans: Vec<Scan>,
}

impl Union {
    fn head(&self) -> Option<&[u8]> {
        self.scans.iter().filter_map(Scan::head).max()
    }

    fn seek_le(&mut self, target: &[u8], work: &mut usize) -> Result<(), StoreError> {
        for s in &mut self.scans {
            s.seek_le(target, work)?;
        }
        Ok(())
    }

    /// Steps past `key` in every scan that stands on it.
    fn step_past(&mut self, key: &[u8], work: &mut usize) -> Result<(), StoreError> {
        for s in &mut self.scans {
            if s.head() == Some(key) {
                s.read(work)?;
            }
        }
        Ok(())
    }
}

fn split(suffix: &[u8]) -> Key {
    let mut time = [0u8; 8];
    time.copy_from_slice(&suffix[..8]);
    (u64::from_be_bytes(time), suffix[8..].to_vec())
}

/// Bounds shared by every stream of a join.
#[derive(Debug, Clone, Default)]
pub struct Bounds<'a> {
    /// Inclusive.
    pub from_us: Option<u64>,
    /// Exclusive.
    pub to_us: Option<u64>,
    /// Exclusive: only keys strictly older than this (time, id).
    pub before: Option<(u64, &'a [u8])>,
}

/// Newest-first (time, id) of the records present in every conjunct.
pub struct Join {
    unions: Vec<Union>,
    /// Index keys read plus ranges (re)opened (callers add their own lookups): what
    /// `budget` limits.
    pub work: usize,
    /// `next` gives up once `work` exceeds this.
    pub budget: usize,
    /// Set when `next` stopped for the budget; every key strictly newer than this
    /// has been decided, so a scan can resume at it (inclusive).
    pub stopped_at: Option<Key>,
    /// The current target suffix, reused so moving the join allocates nothing.
    target: Vec<u8>,
}

impl Join {
    /// `conjuncts`: (tag, values) pairs, ANDed; the values of one pair are ORed.
    /// An empty list of conjuncts yields nothing (callers pass the time index).
    pub fn new(
        tree: &sled::Tree,
        conjuncts: &[(u8, Vec<Vec<u8>>)],
        bounds: &Bounds<'_>,
    ) -> Result<Join, StoreError> {
        let mut work = 0;
        let mut unions = Vec::with_capacity(conjuncts.len());
        for (tag, values) in conjuncts {
            let mut scans = Vec::with_capacity(values.len());
            for value in values {
                let prefix = index::index_prefix(*tag, value);
                let mut lo = prefix.clone();
                lo.extend_from_slice(&bounds.from_us.unwrap_or(0).to_be_bytes());
                let mut hi = prefix.clone();
                hi.extend_from_slice(&bounds.to_us.unwrap_or(u64::MAX).to_be_bytes());
                if bounds.to_us.is_none() {
                    hi.push(0xff);
                }
                if let Some((time, id)) = bounds.before {
                    let mut at = prefix.clone();
                    at.extend_from_slice(&time.to_be_bytes());
                    at.extend_from_slice(id);
                    if at < hi {
                        hi = at;
                    }
                }
                if lo >= hi {
                    continue;
                }
                let mut scan = Scan {
                    tree: tree.clone(),
                    iter: tree.range(lo.clone()..hi).rev(),
                    prefix_len: prefix.len(),
                    lo,
                    head: None,
                };
                work += 1;
                scan.read(&mut work)?;
                scans.push(scan);
            }
            unions.push(Union { scans });
        }
        Ok(Join {
            unions,
            work,
            budget: usize::MAX,
            stopped_at: None,
            target: Vec::new(),
        })
    }

    pub fn next(&mut self) -> Result<Option<Key>, StoreError> {
        if self.unions.is_empty() {
            return Ok(None);
        }
        loop {
            // A common key can be no newer than the oldest head.
            let mut oldest: Option<&[u8]> = None;
            for u in &self.unions {
                match u.head() {
                    None => return Ok(None),
                    Some(h) => {
                        if oldest.is_none_or(|o| h < o) {
                            oldest = Some(h);
                        }
                    }
                }
            }
            let Some(oldest) = oldest else {
                return Ok(None);
            };
            self.target.clear();
            self.target.extend_from_slice(oldest);
            if self.work > self.budget {
                self.stopped_at = Some(split(&self.target));
                return Ok(None);
            }
            let mut all_on_target = true;
            for u in &mut self.unions {
                u.seek_le(&self.target, &mut self.work)?;
                match u.head() {
                    None => return Ok(None),
                    Some(h) => all_on_target &= h == self.target.as_slice(),
                }
            }
            if all_on_target {
                for u in &mut self.unions {
                    u.step_past(&self.target, &mut self.work)?;
                }
                return Ok(Some(split(&self.target)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const A: u8 = b'a';
    const S: u8 = b's';

    fn tree() -> sled::Tree {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .expect("temporary sled");
        db.open_tree("idx").expect("tree")
    }

    fn put(tree: &sled::Tree, tag: u8, value: &str, time: u64, id: &str) {
        tree.insert(index::index_key(tag, value.as_bytes(), time, id), &[])
            .expect("insert");
    }

    fn all(join: &mut Join) -> Vec<Key> {
        let mut out = Vec::new();
        while let Some(k) = join.next().expect("next") {
            out.push(k);
        }
        out
    }

    fn vals(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    /// Pseudo-random records with agent in 0..agents and status in 0..statuses;
    /// returns the join's answer and a brute-force filter of the same records.
    fn check(n: u64, agents: u64, statuses: u64, want_agents: &[&str], want_status: &[&str]) {
        let t = tree();
        let mut expected = BTreeSet::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Several records share a time, so ids break ties.
            let time = 1_000 + i / 3;
            let id = format!("c_{:06}", x % 1_000_000);
            let agent = format!("a{}", x % agents);
            let status = format!("s{}", (x >> 20) % statuses);
            put(&t, A, &agent, time, &id);
            put(&t, S, &status, time, &id);
            if want_agents.contains(&agent.as_str()) && want_status.contains(&status.as_str()) {
                expected.insert((time, id.into_bytes()));
            }
        }
        let expected: Vec<Key> = expected.into_iter().rev().collect();
        let conj = vec![(A, vals(want_agents)), (S, vals(want_status))];
        let got = all(&mut Join::new(&t, &conj, &Bounds::default()).expect("join"));
        assert_eq!(got, expected);
        // A walk in pages of 7, each resuming strictly below the last key seen.
        let mut walked = Vec::new();
        let mut before: Option<Key> = None;
        loop {
            let bounds = Bounds {
                before: before.as_ref().map(|(t, id)| (*t, id.as_slice())),
                ..Bounds::default()
            };
            let mut j = Join::new(&t, &conj, &bounds).expect("join");
            let mut page = Vec::new();
            while page.len() < 7 {
                match j.next().expect("next") {
                    Some(k) => page.push(k),
                    None => break,
                }
            }
            if page.is_empty() {
                break;
            }
            before = page.last().cloned();
            walked.extend(page);
        }
        assert_eq!(walked, expected);
        // A time window is a sub-range of every stream.
        let (from, to) = (1_000 + n / 9, 1_000 + n / 5);
        let bounds = Bounds {
            from_us: Some(from),
            to_us: Some(to),
            before: None,
        };
        let got = all(&mut Join::new(&t, &conj, &bounds).expect("join"));
        let want: Vec<Key> = expected
            .iter()
            .filter(|(time, _)| (from..to).contains(time))
            .cloned()
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn sparse_intersection_of_dense_streams_matches_brute_force() {
        check(3_000, 5, 20, &["a1"], &["s3"]);
    }

    #[test]
    fn rare_stream_against_common_stream() {
        check(3_000, 200, 2, &["a7"], &["s0"]);
    }

    #[test]
    fn ored_values_are_merged_without_duplicates() {
        check(2_000, 6, 5, &["a1", "a4"], &["s0", "s2", "s3"]);
    }

    #[test]
    fn a_join_stopped_by_its_budget_resumes_without_gaps_or_repeats() {
        let t = tree();
        let mut expected = Vec::new();
        for i in 0..400u64 {
            let id = format!("c_{i:04}");
            put(&t, A, if i % 2 == 0 { "x" } else { "y" }, i / 4, &id);
            put(
                &t,
                S,
                if i % 7 == 0 { "rare" } else { "common" },
                i / 4,
                &id,
            );
            if i % 2 == 0 && i % 7 == 0 {
                expected.push((i / 4, id.into_bytes()));
            }
        }
        expected.reverse();
        let conj = vec![(A, vals(&["x"])), (S, vals(&["rare"]))];
        let mut got = Vec::new();
        let mut before: Option<Key> = None;
        let mut stops = 0;
        loop {
            let bounds = Bounds {
                before: before.as_ref().map(|(t, id)| (*t, id.as_slice())),
                ..Bounds::default()
            };
            let mut j = Join::new(&t, &conj, &bounds).expect("join");
            j.budget = 25;
            while let Some(k) = j.next().expect("next") {
                got.push(k);
            }
            match j.stopped_at.take() {
                // Resume just above the stop key, as `query::resume_at` does.
                Some((time, mut id)) => {
                    id.extend_from_slice("\u{10FFFF}".as_bytes());
                    before = Some((time, id));
                    stops += 1;
                }
                None => break,
            }
        }
        assert!(stops > 3, "the budget cut the scan {stops} times");
        assert_eq!(got, expected);
    }

    #[test]
    fn one_conjunct_is_a_merge_and_disjoint_ones_are_empty() {
        let t = tree();
        put(&t, A, "x", 5, "c_1");
        put(&t, A, "y", 6, "c_2");
        put(&t, A, "x", 7, "c_3");
        put(&t, S, "ok", 6, "c_2");
        let one = vec![(A, vals(&["x", "y"]))];
        let got = all(&mut Join::new(&t, &one, &Bounds::default()).expect("join"));
        let ids: Vec<&[u8]> = got.iter().map(|(_, id)| id.as_slice()).collect();
        assert_eq!(ids, vec![&b"c_3"[..], b"c_2", b"c_1"]);
        let disjoint = vec![(A, vals(&["x"])), (S, vals(&["ok"]))];
        assert!(all(&mut Join::new(&t, &disjoint, &Bounds::default()).expect("join")).is_empty());
        let missing = vec![(A, vals(&["x"])), (S, vals(&["nope"]))];
        assert!(all(&mut Join::new(&t, &missing, &Bounds::default()).expect("join")).is_empty());
    }
}
