//! Reads for the API: filtered, newest-first pages over the secondary indexes, counts,
//! rollups, sessions, rate-limit state and the audit log.
//!
//! A list query joins the indexes of all its indexed filters (`join.rs`; the time
//! index when none is indexed), each range-scanned backwards inside the time window
//! and below the cursor, and checks any remaining filters (properties, `min_cost`,
//! `q`) on each match's summary header. Pages never decode full records. Every scan
//! has a budget so no request reads the whole store.

use super::facet_cache::{FacetCache, Window};
use super::join::{Bounds, Join};
use super::{be_u64, decode, decode_opt, round_prefix, SledStore, StoreError};
use crate::store::index::{self, RateLimitPoint, RateLimitState, RollupCell, SessionSummary};
use crate::store::summary::{self, tag, FacetView, Filter};
use crate::store::types::{
    AuditEntry, BucketRange, Page, PageRequest, Position, RateLimitKey, RollupScope, RunWithCalls,
    ScanOutcome, ScopedIdSpace, COUNT_CAP,
};

/// Sessions a filtered session list reads per page, and per total.
const SESSION_SCAN_BUDGET: usize = 200_000;
use serde::de::DeserializeOwned;
use std::sync::atomic::Ordering;

/// Most work (index keys read, ranges reopened, summaries read for residual filters)
/// one page request does; beyond it the page ends early with `has_more` and a cursor
/// to continue from.
const PAGE_BUDGET: usize = 200_000;
/// Most work spent counting `total` when no counter answers it; beyond it `total` is
/// a lower bound.
const COUNT_BUDGET: usize = 100_000;

/// A summary as lists show it, from its stored JSON or, for calls stored without
/// one (the summary is a function of the record's metadata), from the record.
pub(super) trait StoredSummary: DeserializeOwned {
    fn derive(store: &SledStore, id: &[u8]) -> Result<Option<Self>, StoreError>;
}

impl StoredSummary for summary::CallSummary {
    fn derive(store: &SledStore, id: &[u8]) -> Result<Option<Self>, StoreError> {
        let meta = store.get_call_meta(&String::from_utf8_lossy(id))?;
        Ok(meta.map(|call| summary::CallSummary::from_record(&call)))
    }
}

/// Either kind as plain JSON (tests walk both with one helper).
impl StoredSummary for serde_json::Value {
    fn derive(store: &SledStore, id: &[u8]) -> Result<Option<Self>, StoreError> {
        summary::CallSummary::derive(store, id)?
            .map(|s| serde_json::to_value(s).map_err(StoreError::Encode))
            .transpose()
    }
}

impl StoredSummary for summary::InvocationSummary {
    fn derive(_: &SledStore, id: &[u8]) -> Result<Option<Self>, StoreError> {
        Err(super::corrupt(
            &String::from_utf8_lossy(id),
            "invocation summary without JSON",
        ))
    }
}

/// The summary behind a stored header's JSON part (`None`: its record is gone).
fn load_summary<T: StoredSummary>(
    store: &SledStore,
    id: &[u8],
    json: &[u8],
) -> Result<Option<T>, StoreError> {
    if json.is_empty() {
        T::derive(store, id)
    } else {
        decode(id, json).map(Some)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Calls,
    Invocations,
}

/// How a list query reads: the index streams it joins and what it checks afterwards.
struct Plan {
    /// ANDed (tag, ORed values); the time index alone when no filter is indexed.
    conjuncts: Vec<(u8, Vec<Vec<u8>>)>,
    /// Filters the join does not cover, checked on each match's summary header.
    residual: bool,
    exact_total: Option<u64>,
}

fn bounds<'a>(filter: &Filter, before: Option<&'a Position>) -> Bounds<'a> {
    Bounds {
        from_us: filter.from_us,
        to_us: filter.to_us,
        before: before.map(|p| (p.time_us, p.id.as_bytes())),
    }
}

fn window(filter: &Filter) -> Window {
    Window {
        from_us: filter.from_us,
        to_us: filter.to_us,
    }
}

/// Where a scan cut short by its budget resumes: just above `key`, so the exclusive
/// cursor still includes it (ids are ASCII, so no id continues with U+10FFFF).
fn resume_at(key: (u64, Vec<u8>)) -> Position {
    let mut id = String::from_utf8_lossy(&key.1).into_owned();
    id.push('\u{10FFFF}');
    Position { time_us: key.0, id }
}

impl SledStore {
    fn trees(&self, kind: Kind) -> (&sled::Tree, &sled::Tree, u8) {
        match kind {
            Kind::Calls => (&self.call_idx, &self.call_sum, b'c'),
            Kind::Invocations => (&self.inv_idx, &self.inv_sum, b'i'),
        }
    }

    fn index_count(&self, kind: u8, tag: u8, value: &[u8]) -> Result<u64, StoreError> {
        Ok(self
            .idx_counts
            .get(index::count_key(kind, tag, value))?
            .map_or(0, |v| be_u64(&v)))
    }

    fn plan(&self, kind: Kind, filter: &Filter) -> Result<Plan, StoreError> {
        let (_, _, k) = self.trees(kind);
        let mut conjuncts: Vec<(u8, Vec<Vec<u8>>)> = Vec::new();
        let mut estimates = Vec::new();
        let mut unindexed = false;
        for (t, values) in &filter.eq {
            if !tag::INDEXED.contains(t) {
                unindexed = true;
                continue;
            }
            let mut estimate = 0;
            for v in values {
                estimate += self.index_count(k, *t, v.as_bytes())?;
            }
            estimates.push(estimate);
            conjuncts.push((*t, values.iter().map(|v| v.as_bytes().to_vec()).collect()));
        }
        if let Some(want) = filter.has_session {
            let value = index::has_session_value(want);
            estimates.push(self.index_count(k, tag::HAS_SESSION, value)?);
            conjuncts.push((tag::HAS_SESSION, vec![value.to_vec()]));
        }
        let residual = unindexed
            || !filter.properties.is_empty()
            || filter.min_cost_pusd.is_some()
            || filter.text.is_some();
        let timeless = filter.from_us.is_none() && filter.to_us.is_none();
        if conjuncts.is_empty() {
            let all = self.index_count(k, tag::ALL, b"")?;
            return Ok(Plan {
                conjuncts: vec![(tag::ALL, vec![Vec::new()])],
                residual,
                exact_total: (!residual && timeless).then_some(all),
            });
        }
        // Counters give exact totals (one index, or a pair of them), unless ORed values
        // can share a record (an invocation has several models and providers; a call
        // has its requested and its response model).
        let single_valued = |(t, values): &(u8, Vec<Vec<u8>>)| {
            values.len() == 1
                || !(*t == tag::MODEL || (*t == tag::PROVIDER && kind == Kind::Invocations))
        };
        let countable = !residual && conjuncts.iter().all(single_valued);
        let exact = countable && timeless;
        let paired = |a: u8, b: u8| a != b && index::is_paired(a) && index::is_paired(b);
        let exact_total = match conjuncts.as_slice() {
            [_] if exact => Some(estimates[0]),
            [(ta, va), (tb, vb)] if exact && paired(*ta, *tb) => {
                let mut n = 0;
                for a in va {
                    for b in vb {
                        let key = index::pair_count_key(k, (*ta, a), (*tb, b));
                        n += self.idx_counts.get(key)?.map_or(0, |v| be_u64(&v));
                    }
                }
                Some(n)
            }
            _ => None,
        };
        Ok(Plan {
            conjuncts,
            residual,
            exact_total,
        })
    }

    fn cache(&self, kind: Kind) -> &FacetCache {
        match kind {
            Kind::Calls => &self.call_facets,
            Kind::Invocations => &self.inv_facets,
        }
    }

    /// `total` from the facet cache (`facet_cache.rs`): any conjunction of cached
    /// filters without residual ones, exact.
    fn cached_total(
        &self,
        kind: Kind,
        filter: &Filter,
        plan: &Plan,
    ) -> Result<Option<(u64, bool)>, StoreError> {
        if plan.residual {
            return Ok(None);
        }
        Ok(self
            .cache(kind)
            .count(&plan.conjuncts, window(filter))
            .map(|n| (n, false)))
    }

    /// A page of two or more cached filters: the matching records' times come from
    /// the facet cache's bitmaps, newest first, and each time's ids from the time
    /// index, checked on their summary header. The join would read every key of the
    /// filters' interleaving between matches, which for a rare conjunction is most
    /// of the indexes. `total` is left for the caller; `None` when the cache cannot
    /// answer.
    fn cached_items<T: StoredSummary>(
        &self,
        kind: Kind,
        filter: &Filter,
        plan: &Plan,
        request: &PageRequest,
    ) -> Result<Option<Page<T>>, StoreError> {
        if plan.residual || plan.conjuncts.len() < 2 {
            return Ok(None);
        }
        let cache = self.cache(kind);
        let window = window(filter);
        let cursor = request.after.as_ref();
        let limit = request.limit.max(1);
        let want = request.offset + limit + 1;
        let at_or_before = cursor.map(|p| p.time_us);
        let Some(mut times) = cache.newest(&plan.conjuncts, window, at_or_before, want) else {
            return Ok(None);
        };
        // Records at the cursor's own time may already have been shown: ask for
        // as many more.
        let shared = times.iter().filter(|t| Some(**t) == at_or_before).count();
        if shared > 0 {
            match cache.newest(&plan.conjuncts, window, at_or_before, want + shared) {
                Some(more) => times = more,
                None => return Ok(None),
            }
        }
        times.dedup();
        let (idx, sums, _) = self.trees(kind);
        let prefix = index::index_prefix(tag::ALL, b"");
        let mut items = Vec::with_capacity(limit);
        let mut next = None;
        let mut matched = 0usize;
        for time_us in times {
            let mut lo = prefix.clone();
            lo.extend_from_slice(&time_us.to_be_bytes());
            let mut hi = lo.clone();
            hi.push(0xff);
            for entry in idx.range(lo..hi).rev() {
                let (key, _) = entry?;
                let id = &key[prefix.len() + 8..];
                if cursor.is_some_and(|c| c.time_us == time_us && id >= c.id.as_bytes()) {
                    continue;
                }
                let Some(stored) = sums.get(id)? else {
                    continue;
                };
                let Some((header, json)) = summary::split_stored(&stored) else {
                    continue;
                };
                if !FacetView::parse(header).is_some_and(|v| filter.matches(&v)) {
                    continue;
                }
                matched += 1;
                if matched <= request.offset {
                    continue;
                }
                if items.len() == limit {
                    return Ok(Some(Page {
                        items,
                        total: 0,
                        total_is_lower_bound: true,
                        has_more: true,
                        next,
                    }));
                }
                let Some(item) = load_summary::<T>(self, id, json)? else {
                    continue;
                };
                items.push(item);
                next = Some(Position {
                    time_us,
                    id: String::from_utf8_lossy(id).into_owned(),
                });
            }
        }
        Ok(Some(Page {
            items,
            total: 0,
            total_is_lower_bound: true,
            has_more: false,
            next: None,
        }))
    }

    /// Checks the filters the driving index does not cover.
    fn residual_ok(
        &self,
        kind: Kind,
        filter: &Filter,
        stored: &[u8],
        id: &[u8],
    ) -> Result<bool, StoreError> {
        let view = summary::split_stored(stored).and_then(|(h, _)| FacetView::parse(h));
        let Some(view) = view else { return Ok(false) };
        if !filter.matches(&view) {
            return Ok(false);
        }
        let Some(needle) = &filter.text else {
            return Ok(true);
        };
        match kind {
            Kind::Calls => self.text_matches(id, needle),
            Kind::Invocations => {
                let mut prefix = id.to_vec();
                prefix.push(0);
                for entry in self.inv_rounds.scan_prefix(&prefix) {
                    let (key, _) = entry?;
                    if self.text_matches(&key[prefix.len() + 4..], needle)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    fn page<T: StoredSummary>(
        &self,
        kind: Kind,
        filter: &Filter,
        request: &PageRequest,
    ) -> Result<Page<T>, StoreError> {
        let (idx, sums, _) = self.trees(kind);
        let plan = self.plan(kind, filter)?;
        let limit = request.limit.max(1);
        let counted = match plan.exact_total {
            Some(n) => Some((n, false)),
            None if request.count_total => self.cached_total(kind, filter, &plan)?,
            None => None,
        };
        if let Some(mut page) = self.cached_items::<T>(kind, filter, &plan, request)? {
            (page.total, page.total_is_lower_bound) = match counted {
                Some(c) => c,
                None if !request.count_total => (0, true),
                None => self.count_in(kind, filter, &plan, filter.from_us, filter.to_us)?,
            };
            return Ok(page);
        }
        let mut join = Join::new(
            idx,
            &plan.conjuncts,
            &bounds(filter, request.after.as_ref()),
        )?;
        let count_here = request.count_total && request.after.is_none() && counted.is_none();
        let mut items = Vec::with_capacity(limit);
        let mut next = None;
        let mut has_more = false;
        let mut matched: u64 = 0;
        let mut truncated = false;
        loop {
            join.budget = if items.len() < limit {
                PAGE_BUDGET
            } else {
                COUNT_BUDGET
            };
            let Some((time_us, id)) = join.next()? else {
                if let Some(at) = join.stopped_at.take() {
                    // Unknown beyond this point, so there may be more: say so, and
                    // resume after the last item (or where the scan stopped).
                    truncated = true;
                    has_more = true;
                    if items.len() < limit {
                        next = Some(resume_at(at));
                    }
                }
                break;
            };
            let mut stored = None;
            if plan.residual {
                join.work += 1;
                let Some(bytes) = sums.get(&id)? else {
                    continue;
                };
                if !self.residual_ok(kind, filter, &bytes, &id)? {
                    continue;
                }
                stored = Some(bytes);
            }
            matched += 1;
            if matched <= request.offset as u64 {
                continue;
            }
            if items.len() < limit {
                let bytes = match stored {
                    Some(b) => b,
                    None => match sums.get(&id)? {
                        Some(b) => b,
                        None => continue,
                    },
                };
                let json = summary::split_stored(&bytes).map(|(_, j)| j).unwrap_or(&[]);
                let Some(item) = load_summary::<T>(self, &id, json)? else {
                    continue;
                };
                items.push(item);
                next = Some(Position {
                    time_us,
                    id: String::from_utf8_lossy(&id).into_owned(),
                });
                continue;
            }
            has_more = true;
            if !count_here || matched > COUNT_CAP {
                break;
            }
        }
        if !has_more {
            next = None;
        }
        let (total, lower) = if let Some(counted) = counted {
            counted
        } else if !request.count_total {
            (0, true)
        } else if count_here {
            (matched.min(COUNT_CAP), matched > COUNT_CAP || truncated)
        } else {
            self.count_in(kind, filter, &plan, filter.from_us, filter.to_us)?
        };
        Ok(Page {
            items,
            total,
            total_is_lower_bound: lower,
            has_more,
            next,
        })
    }

    /// Matches in [from, to) from the newest, exact up to `COUNT_CAP`; (count, is a
    /// lower bound).
    fn count_in(
        &self,
        kind: Kind,
        filter: &Filter,
        plan: &Plan,
        from_us: Option<u64>,
        to_us: Option<u64>,
    ) -> Result<(u64, bool), StoreError> {
        let (idx, sums, _) = self.trees(kind);
        let window = Bounds {
            from_us,
            to_us,
            before: None,
        };
        let mut join = Join::new(idx, &plan.conjuncts, &window)?;
        join.budget = COUNT_BUDGET;
        let mut matched = 0u64;
        while let Some((_, id)) = join.next()? {
            if plan.residual {
                join.work += 1;
                let Some(bytes) = sums.get(&id)? else {
                    continue;
                };
                if !self.residual_ok(kind, filter, &bytes, &id)? {
                    continue;
                }
            }
            matched += 1;
            if matched > COUNT_CAP {
                return Ok((COUNT_CAP, true));
            }
        }
        Ok((matched, join.stopped_at.is_some()))
    }

    pub fn list_calls(
        &self,
        filter: &Filter,
        request: &PageRequest,
    ) -> Result<Page<summary::CallSummary>, StoreError> {
        self.page(Kind::Calls, filter, request)
    }

    pub fn list_invocations(
        &self,
        filter: &Filter,
        request: &PageRequest,
    ) -> Result<Page<summary::InvocationSummary>, StoreError> {
        self.page(Kind::Invocations, filter, request)
    }

    /// Visits the facet header of every matching record, newest first, up to `budget`
    /// index entries (for aggregate endpoints such as `/stats`).
    pub fn scan_facets(
        &self,
        invocations: bool,
        filter: &Filter,
        budget: usize,
        mut visit: impl FnMut(&FacetView<'_>),
    ) -> Result<ScanOutcome, StoreError> {
        let kind = if invocations {
            Kind::Invocations
        } else {
            Kind::Calls
        };
        let (idx, sums, _) = self.trees(kind);
        let plan = self.plan(kind, filter)?;
        let mut join = Join::new(idx, &plan.conjuncts, &bounds(filter, None))?;
        join.budget = budget;
        while let Some((_, id)) = join.next()? {
            let Some(bytes) = sums.get(&id)? else {
                continue;
            };
            if plan.residual && !self.residual_ok(kind, filter, &bytes, &id)? {
                continue;
            }
            if let Some(view) = summary::split_stored(&bytes).and_then(|(h, _)| FacetView::parse(h))
            {
                visit(&view);
            }
        }
        if join.stopped_at.is_some() {
            return Ok(ScanOutcome::Truncated);
        }
        Ok(ScanOutcome::Complete)
    }

    pub fn call_summary(&self, id: &str) -> Result<Option<summary::CallSummary>, StoreError> {
        self.stored_summary(&self.call_sum, id)
    }

    pub fn invocation_summary(
        &self,
        id: &str,
    ) -> Result<Option<summary::InvocationSummary>, StoreError> {
        self.stored_summary(&self.inv_sum, id)
    }

    /// A run with its calls, read once. The writer stores a batch's calls, their
    /// round index entries, the runs they change and those runs' summaries in one
    /// sled transaction (`writes::apply_atomically`). The record and summary are read
    /// in one read-only transaction, so they agree with each other. The calls cannot
    /// be read in it: a sled transaction reads keys but cannot scan (the round index
    /// is a prefix scan), and it holds sled's global write lock, under which a scan
    /// would deadlock. So they are read after the record; a run's batches only add
    /// calls, so the calls read hold every round the record counts and possibly a
    /// newer batch's, and the answer's round count is taken from the calls
    /// (`RunWithCalls::round_count`), never from the record: it always agrees with
    /// the rounds listed, which is the disagreement the API used to read again for.
    pub fn invocation_with_calls(&self, id: &str) -> Result<Option<RunWithCalls>, StoreError> {
        use ::sled::transaction::{ConflictableTransactionResult, TransactionError, Transactional};
        let read = (&self.invocations, &self.inv_sum).transaction(
            |(invocations, summaries)| -> ConflictableTransactionResult<_, std::convert::Infallible> {
                Ok((invocations.get(id.as_bytes())?, summaries.get(id.as_bytes())?))
            },
        );
        let (record, summary) = match read {
            Ok(pair) => pair,
            Err(TransactionError::Storage(e)) => return Err(e.into()),
            Err(TransactionError::Abort(never)) => match never {},
        };
        let (Some(record), Some(summary)) = (record, summary) else {
            return Ok(None);
        };
        let record = decode(id.as_bytes(), &record)?;
        let json = summary::split_stored(&summary)
            .map(|(_, j)| j)
            .unwrap_or(&[]);
        let Some(summary) = load_summary(self, id.as_bytes(), json)? else {
            return Ok(None);
        };
        Ok(Some(RunWithCalls {
            record,
            summary,
            calls: self.invocation_calls(id)?,
        }))
    }

    fn stored_summary<T: StoredSummary>(
        &self,
        tree: &sled::Tree,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        match tree.get(id.as_bytes())? {
            Some(bytes) => {
                let json = summary::split_stored(&bytes).map(|(_, j)| j).unwrap_or(&[]);
                load_summary(self, id.as_bytes(), json)
            }
            None => Ok(None),
        }
    }

    /// The tenant-scoped forms (`id@tenant`) stored for a client-chosen run or
    /// session id, at most `max`, without decoding records.
    pub fn tenant_scoped_ids(
        &self,
        space: ScopedIdSpace,
        id: &str,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        // The summary trees are keyed by id alone: a prefix scan finds the scoped forms.
        let tree = match space {
            ScopedIdSpace::Runs => &self.inv_sum,
            ScopedIdSpace::Sessions => &self.sessions,
        };
        let mut prefix = id.as_bytes().to_vec();
        prefix.push(crate::headers::TENANT_SCOPE as u8);
        let mut out = Vec::new();
        for entry in tree.scan_prefix(&prefix).take(max) {
            let (key, _) = entry?;
            out.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(out)
    }

    /// The tenant of a call or invocation, without decoding it; `None` if unknown id.
    pub fn record_tenant(
        &self,
        invocation: bool,
        id: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        let tree = if invocation {
            &self.inv_sum
        } else {
            &self.call_sum
        };
        Ok(tree.get(id.as_bytes())?.map(|bytes| {
            summary::split_stored(&bytes)
                .and_then(|(h, _)| FacetView::parse(h))
                .and_then(|v| v.get(tag::TENANT).map(str::to_string))
        }))
    }

    /// Call ids of an invocation in round order (no record decoding).
    pub fn invocation_call_ids(&self, invocation_id: &str) -> Result<Vec<String>, StoreError> {
        let prefix = round_prefix(invocation_id);
        let mut out = Vec::new();
        for entry in self.inv_rounds.scan_prefix(&prefix) {
            let (key, _) = entry?;
            out.push(String::from_utf8_lossy(&key[prefix.len() + 4..]).into_owned());
        }
        Ok(out)
    }

    /// Sessions newest first (by first activity) that `filter` matches. A filter
    /// beyond the tenant reads each session's summary: at most
    /// `SESSION_SCAN_BUDGET` per page (then the page ends early with a cursor to go on
    /// from) and per total (then a lower bound).
    pub fn list_sessions(
        &self,
        filter: &index::SessionFilter,
        request: &PageRequest,
    ) -> Result<Page<SessionSummary>, StoreError> {
        let mut top = u64::MAX.to_be_bytes().to_vec();
        top.push(0xff);
        if let Some(to) = filter.to_us {
            // Sessions that start at or after `to` are not active before it.
            top = index::session_list_key(to, "");
        }
        let hi = match &request.after {
            Some(p) => index::session_list_key(p.time_us, &p.id).min(top.clone()),
            None => top.clone(),
        };
        let tenant = filter.tenant.as_deref();
        let narrows = filter.narrows();
        let limit = request.limit.max(1);
        let mut items = Vec::new();
        let mut matched = 0u64;
        let mut examined = 0usize;
        let mut has_more = false;
        let mut next = None;
        for entry in self.session_list.range(..hi).rev() {
            let (key, value) = entry?;
            if tenant.is_some_and(|t| t.as_bytes() != value.as_ref()) {
                continue;
            }
            let id = String::from_utf8_lossy(key.get(8..).unwrap_or(&[])).into_owned();
            let mut found = None;
            if narrows {
                examined += 1;
                if examined > SESSION_SCAN_BUDGET {
                    // Out of budget: the next page goes on from the last session read.
                    has_more = true;
                    break;
                }
                next = Some(Position {
                    time_us: be_u64(&key[..8]),
                    id: id.clone(),
                });
                match self.matching_session(filter, &id)? {
                    Some(s) => found = Some(s),
                    None => continue,
                }
            }
            matched += 1;
            if matched <= request.offset as u64 {
                continue;
            }
            if items.len() == limit {
                has_more = true;
                next = items.last().map(|s: &SessionSummary| Position {
                    time_us: s.first_at_us,
                    id: s.id.clone(),
                });
                break;
            }
            let s = match found {
                Some(s) => Some(s),
                None => decode_opt::<SessionSummary>(&id, self.sessions.get(id.as_bytes())?)?,
            };
            if let Some(s) = s {
                items.push(s);
            }
        }
        if !has_more {
            next = None;
        }
        let (total, lower) = if !request.count_total {
            (0, true)
        } else if !narrows && tenant.is_none() {
            (self.sessions.len() as u64, false)
        } else {
            let (mut n, mut examined, mut cut) = (0u64, 0usize, false);
            for entry in self.session_list.range(..top).rev() {
                let (key, value) = entry?;
                if tenant.is_some_and(|t| t.as_bytes() != value.as_ref()) {
                    continue;
                }
                if narrows {
                    examined += 1;
                    if examined > SESSION_SCAN_BUDGET {
                        cut = true;
                        break;
                    }
                    let id = String::from_utf8_lossy(key.get(8..).unwrap_or(&[])).into_owned();
                    if self.matching_session(filter, &id)?.is_none() {
                        continue;
                    }
                }
                n += 1;
                if n > COUNT_CAP {
                    break;
                }
            }
            (n.min(COUNT_CAP), cut || n > COUNT_CAP)
        };
        Ok(Page {
            items,
            total,
            total_is_lower_bound: lower,
            has_more,
            next,
        })
    }

    /// The session `id` when `filter` matches it.
    fn matching_session(
        &self,
        filter: &index::SessionFilter,
        id: &str,
    ) -> Result<Option<SessionSummary>, StoreError> {
        let Some(s) = decode_opt::<SessionSummary>(id, self.sessions.get(id.as_bytes())?)? else {
            return Ok(None);
        };
        Ok(filter.matches(&s).then_some(s))
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionSummary>, StoreError> {
        decode_opt(id, self.sessions.get(id.as_bytes())?)
    }

    /// Every call of a session, chronological: calls carrying the session id, and the
    /// calls (tool HTTP calls included) of the session's invocations. At most `max`.
    pub fn session_calls(
        &self,
        session_id: &str,
        max: usize,
    ) -> Result<Vec<summary::CallSummary>, StoreError> {
        let mut ids = std::collections::BTreeSet::new();
        let prefix = index::index_prefix(tag::SESSION, session_id.as_bytes());
        for entry in self.call_idx.scan_prefix(&prefix).take(max) {
            let (key, _) = entry?;
            if let Some((_, id)) = index::split_index_key(&key, prefix.len()) {
                ids.insert(String::from_utf8_lossy(id).into_owned());
            }
        }
        for entry in self.inv_idx.scan_prefix(&prefix).take(max) {
            let (key, _) = entry?;
            if let Some((_, inv)) = index::split_index_key(&key, prefix.len()) {
                for id in self.invocation_call_ids(&String::from_utf8_lossy(inv))? {
                    ids.insert(id);
                }
            }
            if ids.len() >= max {
                break;
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.into_iter().take(max) {
            if let Some(s) = self.call_summary(&id)? {
                out.push(s);
            }
        }
        out.sort_by(|a, b| (a.started_at_us, &a.id).cmp(&(b.started_at_us, &b.id)));
        Ok(out)
    }

    /// Sum of the rollup buckets of `scope` in the range.
    pub fn rollup_range(
        &self,
        scope: &RollupScope,
        buckets: BucketRange,
    ) -> Result<RollupCell, StoreError> {
        let scope = scope.key();
        let mut total = RollupCell::default();
        let lo = index::bucket_key(&scope, buckets.first_us);
        // Not `bucket_key`, which would round the end down to its bucket's start.
        let mut hi = scope.clone();
        hi.push(0);
        hi.extend_from_slice(&buckets.end_us.to_be_bytes());
        for entry in self.rollup.range(lo..hi) {
            let (_, value) = entry?;
            total.merge(&RollupCell::decode(&value));
        }
        Ok(total)
    }

    /// All-time counters of one scope.
    pub fn rollup_total(&self, scope: &RollupScope) -> Result<RollupCell, StoreError> {
        Ok(self
            .rollup_all
            .get(scope.key())?
            .map(|v| RollupCell::decode(&v))
            .unwrap_or_default())
    }

    /// All-time counters of every agent of the tenant (or across tenants), by agent.
    pub fn rollup_agents(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<(String, RollupCell)>, StoreError> {
        let prefix = RollupScope::agents_prefix(tenant);
        let mut out = Vec::new();
        for entry in self.rollup_all.scan_prefix(&prefix) {
            let (key, value) = entry?;
            out.push((
                RollupScope::agent_of(&prefix, &key),
                RollupCell::decode(&value),
            ));
        }
        Ok(out)
    }

    /// Latest rate-limit state of every provider, key and model.
    pub fn ratelimit_states(&self) -> Result<Vec<(RateLimitKey, RateLimitState)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.ratelimits.iter() {
            let (key, value) = entry?;
            out.push((RateLimitKey::from_key(&key), decode(&key, &value)?));
        }
        Ok(out)
    }

    /// 429s of one rate-limit key since `since_us`.
    pub fn count_429_since(&self, key: &RateLimitKey, since_us: u64) -> Result<u64, StoreError> {
        let key = key.key();
        let lo = index::series_key(&key, since_us, "");
        let mut hi = key.to_vec();
        hi.push(1);
        let mut n = 0;
        for entry in self.rl_429.range(lo..hi) {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// The newest `max` points of one key's remaining-capacity series, chronological.
    pub fn ratelimit_series(
        &self,
        key: &RateLimitKey,
        from_us: u64,
        max: usize,
    ) -> Result<Vec<RateLimitPoint>, StoreError> {
        let key = key.key();
        let lo = index::series_key(&key, from_us, "");
        let mut hi = key.to_vec();
        hi.push(1);
        let mut out = Vec::new();
        for entry in self.rl_series.range(lo..hi).rev().take(max) {
            let (k, value) = entry?;
            out.push(decode(&k, &value)?);
        }
        out.reverse();
        Ok(out)
    }

    pub fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let seq = self.audit_seq.fetch_add(1, Ordering::Relaxed);
        let mut key = entry.at_us.to_be_bytes().to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        let value = serde_json::to_vec(entry).map_err(StoreError::Encode)?;
        self.audit.insert(key, value)?;
        Ok(())
    }

    /// Audit entries newest first, strictly before `before_us` when given.
    pub fn audit_entries(
        &self,
        before_us: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let hi = before_us.unwrap_or(u64::MAX).to_be_bytes().to_vec();
        let mut out = Vec::new();
        for entry in self.audit.range(..hi).rev().take(limit) {
            let (key, value) = entry?;
            out.push(decode(&key, &value)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::synthetic_call;
    use crate::record::{roll_up, CallStatus};

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            Dir(std::env::temp_dir().join(format!(
                "llmtap-{tag}-{}-{}",
                std::process::id(),
                crate::timefmt::now_unix_us()
            )))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ids<T>(page: &Page<T>, id: impl Fn(&T) -> &str) -> Vec<String> {
        page.items.iter().map(|i| id(i).to_string()).collect()
    }

    #[test]
    fn windowed_two_filter_pages_and_totals_are_exact() {
        let dir = Dir::new("days");
        let day = index::DAY_US;
        let t0 = 20_000 * day;
        // 5 days, a call every 97 minutes, so calls fall at varied times of day.
        let calls: Vec<_> = (0..75u64)
            .map(|i| {
                let status = if i % 3 == 0 {
                    CallStatus::Failed
                } else {
                    CallStatus::Success
                };
                synthetic_call(
                    &format!("inv-{i}"),
                    1,
                    t0 + i * 97 * 60_000_000,
                    &format!("agent-{}", i % 2),
                    "t",
                    None,
                    0,
                    status,
                    10,
                    1,
                )
            })
            .collect();
        let invs: Vec<_> = calls.iter().map(|c| roll_up(None, c)).collect();
        let store = SledStore::open(&dir.0, 16 << 20, 100).expect("open");
        store.write_batch(&calls, &invs).expect("write");
        let windows = [
            (None, Some(t0 + 3 * day + day / 3)),
            (Some(t0 + day + 7), None),
            (Some(t0 + day / 2), Some(t0 + 4 * day + 5)),
            (Some(t0 + day), Some(t0 + 3 * day)),
            (Some(t0 + 2 * day + 100), Some(t0 + 2 * day + day / 2)),
        ];
        for (from_us, to_us) in windows {
            let want: Vec<String> = calls
                .iter()
                .rev()
                .filter(|c| c.metadata.agent.as_deref() == Some("agent-1"))
                .filter(|c| c.status == Some(CallStatus::Failed))
                .filter(|c| from_us.is_none_or(|f| c.started_at_us >= f))
                .filter(|c| to_us.is_none_or(|t| c.started_at_us < t))
                .map(|c| c.id.clone())
                .collect();
            let filter = Filter {
                eq: vec![
                    (tag::AGENT, vec!["agent-1".into()]),
                    (tag::STATUS, vec!["failed".into()]),
                ],
                from_us,
                to_us,
                ..Filter::default()
            };
            let request = PageRequest {
                limit: 100,
                count_total: true,
                ..PageRequest::default()
            };
            let page = store.list_calls(&filter, &request).expect("list");
            assert_eq!(ids(&page, |s| &s.id), want, "{from_us:?}..{to_us:?}");
            assert_eq!(page.total, want.len() as u64, "{from_us:?}..{to_us:?}");
            assert!(!page.total_is_lower_bound);
        }
    }

    /// Every `total` the facet cache gives equals the join's exact count, for calls
    /// and for invocations (rewritten round by round, several models each), with and
    /// without windows, after deletions, and after a reopen loads the cache again.
    #[test]
    fn facet_cache_totals_and_pages_equal_the_join() {
        let dir = Dir::new("facet-cache");
        let day = index::DAY_US;
        let t0 = 20_000 * day + day / 3;
        let options = || super::super::StoreOptions {
            retention_days: 2,
            ..super::super::StoreOptions::default()
        };
        let store = SledStore::open_alone(&dir.0, options()).expect("open");
        let statuses = [
            CallStatus::Success,
            CallStatus::Failed,
            CallStatus::RateLimited,
        ];
        let mut calls = Vec::new();
        let mut invs: std::collections::HashMap<String, crate::record::InvocationRecord> =
            std::collections::HashMap::new();
        for i in 0..480u64 {
            let inv_id = format!("inv-{}", i / 3);
            let session = (i % 5 == 0).then(|| format!("s{}", i % 7));
            let call = synthetic_call(
                &inv_id,
                (i % 3 + 1) as u32,
                t0 + (i / 2) * 34 * 60_000_000,
                &format!("agent-{}", (i / 3) % 3),
                &format!("tenant-{}", (i / 9) % 4),
                session.as_deref(),
                (i % 4) as usize,
                statuses[(i % 7 % 3) as usize],
                10,
                1,
            );
            let inv = roll_up(invs.remove(&inv_id), &call);
            store
                .write_batch(std::slice::from_ref(&call), std::slice::from_ref(&inv))
                .expect("write");
            invs.insert(inv_id, inv);
            calls.push(call);
        }
        let windows = [
            (None, None),
            (Some(t0 + day / 2), Some(t0 + 4 * day + 5)),
            (Some(t0), Some(t0 + 3 * day)),
            (Some(t0 + day + 1), None),
        ];
        // Every id a list walk returns, in pages of 7 by cursor; checks that an
        // offset page agrees with the walk.
        let walk = |store: &SledStore, kind: Kind, filter: &Filter| -> Vec<String> {
            let mut out = Vec::new();
            let mut after = None;
            loop {
                let request = PageRequest {
                    limit: 7,
                    after: after.clone(),
                    count_total: true,
                    ..PageRequest::default()
                };
                let page: Page<serde_json::Value> =
                    store.page(kind, filter, &request).expect("page");
                out.extend(
                    page.items
                        .iter()
                        .map(|i| i["id"].as_str().unwrap_or("").to_string()),
                );
                if !page.has_more {
                    break;
                }
                after = page.next;
            }
            let request = PageRequest {
                limit: 5,
                offset: 3,
                ..PageRequest::default()
            };
            let page: Page<serde_json::Value> = store.page(kind, filter, &request).expect("page");
            let ids: Vec<String> = page
                .items
                .iter()
                .map(|i| i["id"].as_str().unwrap_or("").to_string())
                .collect();
            let expected: Vec<String> = out.iter().skip(3).take(5).cloned().collect();
            assert_eq!(ids, expected);
            out
        };
        let check = |store: &SledStore, stage: &str| {
            let mut cached = 0;
            for (from_us, to_us) in windows {
                for agent in ["agent-0", "agent-2"] {
                    for tenant in [vec!["tenant-1"], vec!["tenant-0", "tenant-3"]] {
                        for models in [vec!["gpt-4o"], vec!["gpt-4o-mini", "claude-sonnet-4"]] {
                            for status in [None, Some("failed")] {
                                let mut eq = vec![
                                    (tag::AGENT, vec![agent.to_string()]),
                                    (tag::TENANT, tenant.iter().map(|t| t.to_string()).collect()),
                                    (tag::MODEL, models.iter().map(|m| m.to_string()).collect()),
                                ];
                                if let Some(s) = status {
                                    eq.push((tag::STATUS, vec![s.to_string()]));
                                }
                                let filter = Filter {
                                    eq,
                                    from_us,
                                    to_us,
                                    ..Filter::default()
                                };
                                for kind in [Kind::Calls, Kind::Invocations] {
                                    let plan = store.plan(kind, &filter).expect("plan");
                                    let joined = store
                                        .count_in(kind, &filter, &plan, from_us, to_us)
                                        .expect("join");
                                    let Some(got) =
                                        store.cached_total(kind, &filter, &plan).expect("cache")
                                    else {
                                        continue;
                                    };
                                    cached += 1;
                                    assert_eq!(got, joined, "{stage} {kind:?} {filter:?}");
                                    let window = Bounds {
                                        from_us,
                                        to_us,
                                        before: None,
                                    };
                                    let (idx, _, _) = store.trees(kind);
                                    let mut join =
                                        Join::new(idx, &plan.conjuncts, &window).expect("join");
                                    let mut want = Vec::new();
                                    while let Some((_, id)) = join.next().expect("next") {
                                        want.push(String::from_utf8(id).expect("id"));
                                    }
                                    assert_eq!(
                                        walk(store, kind, &filter),
                                        want,
                                        "{stage} {kind:?} {filter:?}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
            // Every timeless query (a quarter of them) was answered by the cache.
            assert!(cached >= 2 * 2 * 2 * 2 * 2, "{stage}: {cached}");
        };
        check(&store, "written");
        for c in calls.iter().step_by(11) {
            assert!(store.delete_call(&c.id).expect("delete"));
        }
        check(&store, "after deletes");
        let report = store.sweep(t0 + 5 * day).expect("sweep");
        assert!(
            report.calls_deleted > 0 && report.invocations_deleted > 0,
            "{report:?}"
        );
        check(&store, "after retention");
        drop(store);
        let store = SledStore::open_alone(&dir.0, options()).expect("reopen");
        check(&store, "reopened");
    }

    #[test]
    fn an_older_store_gets_the_has_session_index_and_pair_counters_at_open() {
        let dir = Dir::new("backfill");
        let calls: Vec<_> = (0..60u64)
            .map(|i| {
                let session = (i % 3 == 0).then(|| format!("s{}", i % 4));
                synthetic_call(
                    &format!("inv-{i}"),
                    1,
                    1_000_000 + i,
                    &format!("agent-{}", i % 2),
                    "t",
                    session.as_deref(),
                    0,
                    CallStatus::Success,
                    10,
                    1,
                )
            })
            .collect();
        let invs: Vec<_> = calls.iter().map(|c| roll_up(None, c)).collect();
        let expect = |want: bool| -> Vec<String> {
            calls
                .iter()
                .rev()
                .filter(|c| c.metadata.agent.as_deref() == Some("agent-0"))
                .filter(|c| c.metadata.session_id.is_some() == want)
                .map(|c| c.id.clone())
                .collect()
        };
        {
            let store = SledStore::open(&dir.0, 16 << 20, 100).expect("open");
            store.write_batch(&calls, &invs).expect("write");
            // Make it look like a store indexed before tag `h` and pair counters existed.
            for tree in [&store.call_idx, &store.inv_idx] {
                for entry in tree.scan_prefix([tag::HAS_SESSION]) {
                    let (key, _) = entry.expect("scan");
                    tree.remove(key).expect("remove");
                }
            }
            for kind in [b'c', b'i'] {
                for v in [true, false] {
                    let key = index::count_key(kind, tag::HAS_SESSION, index::has_session_value(v));
                    store.idx_counts.remove(key).expect("remove");
                }
            }
            for upper in [b'C', b'I'] {
                for entry in store.idx_counts.scan_prefix([upper]) {
                    let (key, _) = entry.expect("scan");
                    store.idx_counts.remove(key).expect("remove");
                }
            }
            store.meta.remove("index_v3").expect("remove");
            store.flush().expect("flush");
        }
        let store = SledStore::open(&dir.0, 16 << 20, 100).expect("reopen");
        for want in [true, false] {
            let filter = Filter {
                eq: vec![(tag::AGENT, vec!["agent-0".into()])],
                has_session: Some(want),
                ..Filter::default()
            };
            let request = PageRequest {
                limit: 100,
                count_total: true,
                ..PageRequest::default()
            };
            let page = store.list_calls(&filter, &request).expect("list");
            assert_eq!(ids(&page, |s| &s.id), expect(want));
            // Two filters, no window: the pair counter, which the backfill set.
            assert_eq!(page.total, expect(want).len() as u64);
            assert!(!page.total_is_lower_bound);
            // Alone, has_session is answered from its counter, which the backfill set.
            let alone = Filter {
                has_session: Some(want),
                ..Filter::default()
            };
            let page = store.list_invocations(&alone, &request).expect("list");
            assert_eq!(page.total, if want { 20 } else { 40 });
            assert!(!page.total_is_lower_bound);
        }
    }
}
