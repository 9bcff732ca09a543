//! Exact `total`s for filter conjunctions no counter answers (three or more indexed
//! filters, or ORed values of an invocation's several models), from in-memory
//! posting bitmaps kept per UTC day.
//!
//! Why: counting such a conjunction with the index join reads every interleaving
//! index key, about 60 ms on a million calls; intersecting compressed bitmaps is a
//! few microseconds per day. The bitmaps hold only the low-cardinality facets the
//! pair counters also cover (agent, provider, model, status, tenant, trigger, prompt,
//! has_session); a conjunction naming a user or a session is short and the join
//! counts it quickly. Memory is about 10 bytes per record.
//!
//! Records of a day are numbered in the order the cache learns of them; a day's
//! bitmaps map (tag, value) to those numbers. The store is the truth and the cache a
//! view of it, kept in step by the store's own write and delete paths:
//! - `Store::open` loads every stored summary (about a second per million calls),
//!   before the writer starts, so the cache never races a build;
//! - the writer notes each record after storing it (`note`);
//! - a deletion forgets it (`forget`). Calls are never rewritten, so a call's day
//!   is a multiset of facet sets, and forgetting removes any one number with exactly
//!   the deleted call's facets: every count stays the same as if it were that one.
//!   Invocations are rewritten as rounds arrive, so their days keep id → number.

use super::index::{self, DAY_US};
use super::summary::tag;
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

/// The facets the bitmaps hold: the ones the pair counters count.
pub fn is_cached(t: u8) -> bool {
    index::is_paired(t)
}

pub fn day_of(time_us: u64) -> u32 {
    u32::try_from(time_us / DAY_US).unwrap_or(u32::MAX)
}

/// The cached (tag, value) pairs of a record with these summary pairs.
pub fn cached_pairs<'a>(pairs: &[(u8, &'a [u8])]) -> Vec<(u8, &'a [u8])> {
    let has = pairs.iter().any(|(t, _)| *t == tag::SESSION);
    let mut out: Vec<(u8, &'a [u8])> = pairs
        .iter()
        .filter(|(t, _)| is_cached(*t))
        .copied()
        .collect();
    out.push((tag::HAS_SESSION, index::has_session_value(has)));
    out.sort_unstable();
    out.dedup();
    out
}

/// One day's records.
#[derive(Default)]
struct Day {
    next: u32,
    postings: HashMap<(u8, Box<[u8]>), RoaringBitmap>,
    /// Invocations only: id → number, so a rewritten invocation moves its bits.
    numbers: HashMap<Box<[u8]>, u32>,
}

impl Day {
    fn add(&mut self, id: &[u8], pairs: &[(u8, &[u8])], keyed: bool) {
        let n = if keyed {
            match self.numbers.get(id) {
                Some(n) => {
                    let n = *n;
                    self.remove_number(n);
                    n
                }
                None => {
                    let n = self.next;
                    self.numbers.insert(id.into(), n);
                    self.next += 1;
                    n
                }
            }
        } else {
            let n = self.next;
            self.next += 1;
            n
        };
        for (t, v) in pairs {
            self.postings
                .entry((*t, (*v).into()))
                .or_default()
                .insert(n);
        }
    }

    fn remove_number(&mut self, n: u32) {
        self.postings.retain(|_, bits| {
            bits.remove(n);
            !bits.is_empty()
        });
    }

    fn forget(&mut self, id: &[u8], pairs: &[(u8, &[u8])], keyed: bool) {
        if keyed {
            if let Some(n) = self.numbers.remove(id) {
                self.remove_number(n);
            }
            return;
        }
        // Any number with exactly these facets: in every one of their bitmaps and
        // in no bitmap of a tag the call does not carry.
        let mut candidates: Option<RoaringBitmap> = None;
        for (t, v) in pairs {
            let Some(bits) = self.postings.get(&(*t, (*v).into())) else {
                return;
            };
            candidates = Some(match candidates {
                None => bits.clone(),
                Some(c) => c & bits,
            });
        }
        let Some(mut candidates) = candidates else {
            return;
        };
        for ((t, _), bits) in &self.postings {
            if !pairs.iter().any(|(pt, _)| pt == t) {
                candidates -= bits;
            }
        }
        if let Some(n) = candidates.min() {
            self.remove_number(n);
        }
    }

    /// Records matching every conjunct (a conjunct matches any of its values).
    fn count(&self, conjuncts: &[(u8, Vec<Vec<u8>>)]) -> u64 {
        let mut sets: Vec<RoaringBitmap> = Vec::with_capacity(conjuncts.len());
        for (t, values) in conjuncts {
            let mut set = RoaringBitmap::new();
            for v in values {
                if let Some(bits) = self.postings.get(&(*t, v.as_slice().into())) {
                    set |= bits;
                }
            }
            if set.is_empty() {
                return 0;
            }
            sets.push(set);
        }
        sets.sort_unstable_by_key(RoaringBitmap::len);
        let mut sets = sets.into_iter();
        let Some(mut acc) = sets.next() else {
            return 0;
        };
        for set in sets {
            acc &= set;
            if acc.is_empty() {
                return 0;
            }
        }
        acc.len()
    }
}

/// The cache for one kind of record (calls or invocations).
#[derive(Default)]
pub struct CountCache {
    days: Mutex<BTreeMap<u32, Day>>,
    /// Invocations are rewritten as rounds arrive, so their days keep id → number.
    keyed: bool,
}

impl CountCache {
    pub fn new(keyed: bool) -> CountCache {
        CountCache {
            days: Mutex::default(),
            keyed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, Day>> {
        match self.days.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Forgets everything (before a fresh load).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// A stored record with these summary pairs, after the store holds it.
    /// `replaced_time_us`: the time of the record it replaces (invocations).
    pub fn note(
        &self,
        time_us: u64,
        id: &[u8],
        pairs: &[(u8, &[u8])],
        replaced_time_us: Option<u64>,
    ) {
        let day = day_of(time_us);
        let mut days = self.lock();
        if let Some(old) = replaced_time_us.map(day_of).filter(|d| *d != day) {
            if let Some(d) = days.get_mut(&old) {
                d.forget(id, &[], true);
            }
        }
        days.entry(day)
            .or_default()
            .add(id, &cached_pairs(pairs), self.keyed);
    }

    /// A deleted record, with the summary pairs it was stored with.
    pub fn forget(&self, time_us: u64, id: &[u8], pairs: &[(u8, &[u8])]) {
        let mut days = self.lock();
        let day = day_of(time_us);
        if let Some(d) = days.get_mut(&day) {
            d.forget(id, &cached_pairs(pairs), self.keyed);
            if d.postings.is_empty() {
                days.remove(&day);
            }
        }
    }

    /// Records of the whole days in `days` matching every conjunct; `None` when a
    /// conjunct is not cached.
    pub fn count(&self, conjuncts: &[(u8, Vec<Vec<u8>>)], days: Range<u32>) -> Option<u64> {
        if conjuncts.iter().any(|(t, _)| !is_cached(*t)) {
            return None;
        }
        let state = self.lock();
        Some(state.range(days).map(|(_, d)| d.count(conjuncts)).sum())
    }

    /// (days, bitmap and value bytes): what the cache holds.
    pub fn usage(&self) -> (u64, u64) {
        let state = self.lock();
        let bytes = state
            .values()
            .flat_map(|d| d.postings.iter())
            .map(|((_, v), bits)| (v.len() + bits.serialized_size()) as u64)
            .sum();
        (state.len() as u64, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn counts_conjunctions_of_ored_values_over_whole_days() {
        let cache = CountCache::new(false);
        let day = DAY_US;
        let rows: [(u64, &str, &str, &str); 5] = [
            (day, "a1", "m1", "n1"),
            (day + 5, "a1", "m2", "n1"),
            (day + 9, "a2", "m1", "n1"),
            (2 * day, "a1", "m1", "n1"),
            (2 * day + 1, "a1", "m1", "n2"),
        ];
        for (i, (t, a, m, n)) in rows.iter().enumerate() {
            let pairs: [(u8, &[u8]); 3] = [
                (tag::AGENT, a.as_bytes()),
                (tag::MODEL, m.as_bytes()),
                (tag::TENANT, n.as_bytes()),
            ];
            cache.note(*t, format!("c{i}").as_bytes(), &pairs, None);
        }
        let q = |a: &[&str], m: &[&str], n: &[&str], days: Range<u32>| {
            cache.count(
                &[
                    (tag::AGENT, vals(a)),
                    (tag::MODEL, vals(m)),
                    (tag::TENANT, vals(n)),
                ],
                days,
            )
        };
        assert_eq!(q(&["a1"], &["m1"], &["n1"], 0..10), Some(2));
        assert_eq!(q(&["a1"], &["m1", "m2"], &["n1"], 0..10), Some(3));
        assert_eq!(q(&["a1"], &["m1"], &["n1", "n2"], 2..3), Some(2));
        assert_eq!(q(&["a3"], &["m1"], &["n1"], 0..10), Some(0));
        // has_session is derived: none of these records has a session.
        let no_session = [
            (tag::HAS_SESSION, vals(&["0"])),
            (tag::AGENT, vals(&["a1"])),
        ];
        assert_eq!(cache.count(&no_session, 0..10), Some(4));
        // Users and sessions are not cached: the caller must join.
        assert_eq!(cache.count(&[(tag::USER, vals(&["u"]))], 0..10), None);
    }

    #[test]
    fn forgetting_a_call_removes_one_with_exactly_its_facets() {
        let cache = CountCache::new(false);
        let plain: [(u8, &[u8]); 1] = [(tag::AGENT, b"a")];
        let with_tenant: [(u8, &[u8]); 2] = [(tag::AGENT, b"a"), (tag::TENANT, b"t")];
        cache.note(DAY_US, b"c1", &with_tenant, None);
        cache.note(DAY_US + 1, b"c2", &plain, None);
        cache.note(DAY_US + 2, b"c3", &with_tenant, None);
        let agent = [(tag::AGENT, vals(&["a"]))];
        let tenant = [(tag::TENANT, vals(&["t"]))];
        // c1 has the most numbers in common with `plain` but carries a tenant too.
        cache.forget(DAY_US + 1, b"c2", &plain);
        assert_eq!(cache.count(&agent, 0..10), Some(2));
        assert_eq!(cache.count(&tenant, 0..10), Some(2));
        cache.forget(DAY_US, b"c1", &with_tenant);
        assert_eq!(cache.count(&tenant, 0..10), Some(1));
        // Forgetting what is not there changes nothing; an emptied day goes.
        cache.forget(DAY_US, b"c9", &plain);
        assert_eq!(cache.count(&agent, 0..10), Some(1));
        cache.forget(DAY_US + 2, b"c3", &with_tenant);
        assert_eq!(cache.usage().0, 0);
    }

    #[test]
    fn a_rewritten_invocation_moves_its_bits() {
        let cache = CountCache::new(true);
        cache.note(DAY_US, b"i1", &[(tag::MODEL, b"m1")], None);
        cache.note(
            DAY_US,
            b"i1",
            &[(tag::MODEL, b"m1"), (tag::MODEL, b"m2")],
            Some(DAY_US),
        );
        let q = |m: &[&str]| cache.count(&[(tag::MODEL, vals(m))], 0..10);
        assert_eq!(q(&["m1", "m2"]), Some(1));
        assert_eq!(q(&["m2"]), Some(1));
        cache.note(DAY_US, b"i1", &[(tag::MODEL, b"m3")], Some(DAY_US));
        assert_eq!(q(&["m1", "m2"]), Some(0));
        assert_eq!(q(&["m3"]), Some(1));
        // Moved to another day (its start changed), it leaves the old one.
        cache.note(3 * DAY_US, b"i1", &[(tag::MODEL, b"m3")], Some(DAY_US));
        assert_eq!(cache.count(&[(tag::MODEL, vals(&["m3"]))], 0..2), Some(0));
        assert_eq!(q(&["m3"]), Some(1));
        cache.forget(3 * DAY_US, b"i1", &[]);
        assert_eq!(q(&["m3"]), Some(0));
    }
}
