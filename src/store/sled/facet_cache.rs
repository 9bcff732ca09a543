//! In-memory posting bitmaps per UTC day of the facets lists filter on most, for
//! exact `total`s and fast pages of any conjunction of them.
//!
//! Why: the index join (`join.rs`) reads every key of the filters' interleaving, so
//! counting three filters on a million calls took about 60 ms, and a page of a rare
//! conjunction read most of the indexes to find 20 matches. Intersecting compressed
//! bitmaps is a few microseconds per day, and each number's time says where a match
//! sits, so a page reads only the records it shows. The bitmaps hold the
//! low-cardinality facets the pair counters cover (agent, provider, model, status,
//! tenant, trigger, prompt, has_session); a conjunction naming a user or a session is
//! short, and the join handles it. Memory: about 10 bytes of bitmaps and 8 of time
//! per record (14.5 MB for a million calls and their invocations).
//!
//! Records of a day are numbered in the order the cache learns of them; a day's
//! bitmaps map (tag, value) to those numbers. The store is the truth and the cache a
//! view of it, kept in step by the store's own write and delete paths:
//! - `SledStore::open` loads every stored summary (about a second per million calls),
//!   before the writer starts, so the cache never races a build;
//! - the writer notes each record after storing it (`note`);
//! - a deletion forgets it (`forget`). Calls are never rewritten, so a call's day
//!   is a multiset of facet sets, and forgetting removes any one number with exactly
//!   the deleted call's facets: every count stays the same as if it were that one.
//!   Invocations are rewritten as rounds arrive, so their days keep id → number.

use crate::store::index::{self, DAY_US};
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

/// The facets the bitmaps hold: the ones the pair counters count.
pub fn is_cached(t: u8) -> bool {
    index::is_paired(t)
}

pub fn day_of(time_us: u64) -> u32 {
    u32::try_from(time_us / DAY_US).unwrap_or(u32::MAX)
}

/// The cached (tag, value) pairs of a record with these summary pairs.
fn cached_pairs<'a>(pairs: &[(u8, &'a [u8])]) -> Vec<(u8, &'a [u8])> {
    index::paired_facets(pairs)
}

/// One day's records.
#[derive(Default)]
struct Day {
    /// Each number's time (µs), so windows and pages need no index read.
    times: Vec<u64>,
    postings: HashMap<(u8, Box<[u8]>), RoaringBitmap>,
    /// Invocations only: id → number, so a rewritten invocation moves its bits.
    numbers: HashMap<Box<[u8]>, u32>,
}

impl Day {
    fn add(&mut self, time_us: u64, id: &[u8], pairs: &[(u8, &[u8])], keyed: bool) {
        let known = if keyed {
            self.numbers.get(id).copied()
        } else {
            None
        };
        let n = match known {
            Some(n) => {
                self.remove_number(n);
                self.times[n as usize] = time_us;
                n
            }
            None => {
                let n = u32::try_from(self.times.len()).unwrap_or(u32::MAX);
                self.times.push(time_us);
                if keyed {
                    self.numbers.insert(id.into(), n);
                }
                n
            }
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

    fn forget(&mut self, time_us: u64, id: &[u8], pairs: &[(u8, &[u8])], keyed: bool) {
        if keyed {
            if let Some(n) = self.numbers.remove(id) {
                self.remove_number(n);
            }
            return;
        }
        // Any number with exactly these facets and this time: in every one of their
        // bitmaps and in no bitmap of a tag the call does not carry.
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
        let same_time = candidates
            .iter()
            .find(|n| self.times.get(*n as usize) == Some(&time_us));
        if let Some(n) = same_time {
            self.remove_number(n);
        }
    }

    /// Numbers matching every conjunct (a conjunct matches any of its values).
    fn matching(&self, conjuncts: &[(u8, Vec<Vec<u8>>)]) -> RoaringBitmap {
        let mut sets: Vec<RoaringBitmap> = Vec::with_capacity(conjuncts.len());
        for (t, values) in conjuncts {
            let mut set = RoaringBitmap::new();
            for v in values {
                if let Some(bits) = self.postings.get(&(*t, v.as_slice().into())) {
                    set |= bits;
                }
            }
            if set.is_empty() {
                return RoaringBitmap::new();
            }
            sets.push(set);
        }
        sets.sort_unstable_by_key(RoaringBitmap::len);
        let mut sets = sets.into_iter();
        let Some(mut acc) = sets.next() else {
            return RoaringBitmap::new();
        };
        for set in sets {
            acc &= set;
            if acc.is_empty() {
                break;
            }
        }
        acc
    }

    fn is_empty(&self) -> bool {
        self.postings.is_empty()
    }
}

/// A half-open time window in µs; `None` ends are open.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub from_us: Option<u64>,
    pub to_us: Option<u64>,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        self.from_us.is_none_or(|f| t >= f) && self.to_us.is_none_or(|to| t < to)
    }

    /// The days it touches, and whether day `d` lies wholly inside it.
    fn days(&self) -> (std::ops::RangeInclusive<u32>, impl Fn(u32) -> bool + '_) {
        let first = self.from_us.map_or(0, day_of);
        let last = self.to_us.map_or(u32::MAX, |t| day_of(t.saturating_sub(1)));
        let whole = move |d: u32| {
            let start = u64::from(d) * DAY_US;
            self.from_us.is_none_or(|f| f <= start)
                && self.to_us.is_none_or(|t| start + DAY_US <= t)
        };
        (first..=last, whole)
    }
}

/// The cache for one kind of record (calls or invocations).
#[derive(Default)]
pub struct FacetCache {
    days: Mutex<BTreeMap<u32, Day>>,
    /// Invocations are rewritten as rounds arrive, so their days keep id → number.
    keyed: bool,
}

impl FacetCache {
    pub fn new(keyed: bool) -> FacetCache {
        FacetCache {
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
                d.forget(0, id, &[], true);
            }
        }
        days.entry(day)
            .or_default()
            .add(time_us, id, &cached_pairs(pairs), self.keyed);
    }

    /// A deleted record, with the time and summary pairs it was stored with.
    pub fn forget(&self, time_us: u64, id: &[u8], pairs: &[(u8, &[u8])]) {
        let mut days = self.lock();
        let day = day_of(time_us);
        if let Some(d) = days.get_mut(&day) {
            d.forget(time_us, id, &cached_pairs(pairs), self.keyed);
            if d.is_empty() {
                days.remove(&day);
            }
        }
    }

    /// Records in `window` matching every conjunct; `None` when a conjunct is not
    /// cached.
    pub fn count(&self, conjuncts: &[(u8, Vec<Vec<u8>>)], window: Window) -> Option<u64> {
        if conjuncts.iter().any(|(t, _)| !is_cached(*t)) {
            return None;
        }
        let state = self.lock();
        let (range, whole) = window.days();
        let mut total = 0;
        for (n, d) in state.range(range) {
            let hits = d.matching(conjuncts);
            total += if whole(*n) {
                hits.len()
            } else {
                hits.iter()
                    .filter(|h| window.contains(d.times[*h as usize]))
                    .count() as u64
            };
        }
        Some(total)
    }

    /// Times of the newest matching records in `window` at or before `at_or_before_us`,
    /// newest first: at least `want` of them when there are, plus every further one
    /// sharing the last one's time (the caller tells records of one time apart).
    /// `None` when a conjunct is not cached.
    pub fn newest(
        &self,
        conjuncts: &[(u8, Vec<Vec<u8>>)],
        window: Window,
        at_or_before_us: Option<u64>,
        want: usize,
    ) -> Option<Vec<u64>> {
        if conjuncts.iter().any(|(t, _)| !is_cached(*t)) {
            return None;
        }
        let window = Window {
            from_us: window.from_us,
            to_us: match (window.to_us, at_or_before_us.map(|t| t.saturating_add(1))) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        };
        let state = self.lock();
        let (range, _) = window.days();
        let mut out: Vec<u64> = Vec::new();
        for (_, d) in state.range(range).rev() {
            let mut day: Vec<u64> = d
                .matching(conjuncts)
                .iter()
                .map(|h| d.times[h as usize])
                .filter(|t| window.contains(*t))
                .collect();
            day.sort_unstable_by(|a, b| b.cmp(a));
            out.extend(day);
            if out.len() >= want {
                break;
            }
        }
        if let Some(&last) = out.get(want.saturating_sub(1)) {
            let keep = want + out[want..].iter().take_while(|t| **t == last).count();
            out.truncate(keep);
        }
        Some(out)
    }

    /// (days, bytes of bitmaps, values and times): what the cache holds.
    pub fn usage(&self) -> (u64, u64) {
        let state = self.lock();
        let bytes = state
            .values()
            .flat_map(|d| d.postings.iter())
            .map(|((_, v), bits)| (v.len() + bits.serialized_size()) as u64)
            .sum::<u64>()
            + state
                .values()
                .map(|d| d.times.len() as u64 * 8)
                .sum::<u64>();
        (state.len() as u64, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::summary::tag;

    fn days(first: u64, end: u64) -> Window {
        Window {
            from_us: Some(first * DAY_US),
            to_us: Some(end * DAY_US),
        }
    }

    fn vals(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn counts_conjunctions_of_ored_values_over_whole_days() {
        let cache = FacetCache::new(false);
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
        let q = |a: &[&str], m: &[&str], n: &[&str], window: Window| {
            cache.count(
                &[
                    (tag::AGENT, vals(a)),
                    (tag::MODEL, vals(m)),
                    (tag::TENANT, vals(n)),
                ],
                window,
            )
        };
        assert_eq!(q(&["a1"], &["m1"], &["n1"], days(0, 10)), Some(2));
        assert_eq!(q(&["a1"], &["m1", "m2"], &["n1"], days(0, 10)), Some(3));
        assert_eq!(q(&["a1"], &["m1"], &["n1", "n2"], days(2, 3)), Some(2));
        assert_eq!(q(&["a3"], &["m1"], &["n1"], days(0, 10)), Some(0));
        // has_session is derived: none of these records has a session.
        let no_session = [
            (tag::HAS_SESSION, vals(&["0"])),
            (tag::AGENT, vals(&["a1"])),
        ];
        assert_eq!(cache.count(&no_session, days(0, 10)), Some(4));
        // Users and sessions are not cached: the caller must join.
        assert_eq!(cache.count(&[(tag::USER, vals(&["u"]))], days(0, 10)), None);
    }

    #[test]
    fn forgetting_a_call_removes_one_with_exactly_its_facets() {
        let cache = FacetCache::new(false);
        let plain: [(u8, &[u8]); 1] = [(tag::AGENT, b"a")];
        let with_tenant: [(u8, &[u8]); 2] = [(tag::AGENT, b"a"), (tag::TENANT, b"t")];
        cache.note(DAY_US, b"c1", &with_tenant, None);
        cache.note(DAY_US + 1, b"c2", &plain, None);
        cache.note(DAY_US + 2, b"c3", &with_tenant, None);
        let agent = [(tag::AGENT, vals(&["a"]))];
        let tenant = [(tag::TENANT, vals(&["t"]))];
        // c1 has the most numbers in common with `plain` but carries a tenant too.
        cache.forget(DAY_US + 1, b"c2", &plain);
        assert_eq!(cache.count(&agent, days(0, 10)), Some(2));
        assert_eq!(cache.count(&tenant, days(0, 10)), Some(2));
        cache.forget(DAY_US, b"c1", &with_tenant);
        assert_eq!(cache.count(&tenant, days(0, 10)), Some(1));
        // Forgetting what is not there changes nothing; an emptied day goes.
        cache.forget(DAY_US, b"c9", &plain);
        assert_eq!(cache.count(&agent, days(0, 10)), Some(1));
        cache.forget(DAY_US + 2, b"c3", &with_tenant);
        assert_eq!(cache.usage().0, 0);
    }

    #[test]
    fn a_rewritten_invocation_moves_its_bits() {
        let cache = FacetCache::new(true);
        cache.note(DAY_US, b"i1", &[(tag::MODEL, b"m1")], None);
        cache.note(
            DAY_US,
            b"i1",
            &[(tag::MODEL, b"m1"), (tag::MODEL, b"m2")],
            Some(DAY_US),
        );
        let q = |m: &[&str]| cache.count(&[(tag::MODEL, vals(m))], days(0, 10));
        assert_eq!(q(&["m1", "m2"]), Some(1));
        assert_eq!(q(&["m2"]), Some(1));
        cache.note(DAY_US, b"i1", &[(tag::MODEL, b"m3")], Some(DAY_US));
        assert_eq!(q(&["m1", "m2"]), Some(0));
        assert_eq!(q(&["m3"]), Some(1));
        // Moved to another day (its start changed), it leaves the old one.
        cache.note(3 * DAY_US, b"i1", &[(tag::MODEL, b"m3")], Some(DAY_US));
        assert_eq!(
            cache.count(&[(tag::MODEL, vals(&["m3"]))], days(0, 2)),
            Some(0)
        );
        assert_eq!(q(&["m3"]), Some(1));
        cache.forget(3 * DAY_US, b"i1", &[]);
        assert_eq!(q(&["m3"]), Some(0));
    }

    #[test]
    fn partial_days_and_newest_first_use_each_records_time() {
        let cache = FacetCache::new(false);
        let pairs: [(u8, &[u8]); 2] = [(tag::AGENT, b"a"), (tag::STATUS, b"failed")];
        let other: [(u8, &[u8]); 2] = [(tag::AGENT, b"b"), (tag::STATUS, b"failed")];
        // Out of time order, two sharing a time, across two days.
        let times = [
            DAY_US + 50,
            DAY_US + 10,
            2 * DAY_US + 5,
            DAY_US + 50,
            2 * DAY_US + 1,
        ];
        for (i, t) in times.iter().enumerate() {
            cache.note(*t, format!("c{i}").as_bytes(), &pairs, None);
        }
        cache.note(2 * DAY_US + 9, b"x", &other, None);
        let q = [(tag::AGENT, vals(&["a"])), (tag::STATUS, vals(&["failed"]))];
        let window = Window {
            from_us: Some(DAY_US + 20),
            to_us: Some(2 * DAY_US + 3),
        };
        assert_eq!(cache.count(&q, window), Some(3));
        assert_eq!(cache.count(&q, Window::default()), Some(5));
        let all = cache.newest(&q, Window::default(), None, 100).unwrap();
        assert_eq!(
            all,
            vec![
                2 * DAY_US + 5,
                2 * DAY_US + 1,
                DAY_US + 50,
                DAY_US + 50,
                DAY_US + 10
            ]
        );
        // Cut after three, but the fourth shares the third's time.
        let top = cache.newest(&q, Window::default(), None, 3).unwrap();
        assert_eq!(
            top,
            vec![2 * DAY_US + 5, 2 * DAY_US + 1, DAY_US + 50, DAY_US + 50]
        );
        let below = cache.newest(&q, window, Some(DAY_US + 50), 10).unwrap();
        assert_eq!(below, vec![DAY_US + 50, DAY_US + 50]);
        // Forgetting takes the one with the deleted call's time.
        cache.forget(DAY_US + 10, b"c1", &pairs);
        assert_eq!(
            cache
                .newest(&q, Window::default(), None, 100)
                .unwrap()
                .last(),
            Some(&(DAY_US + 50))
        );
    }
}
