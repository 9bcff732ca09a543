//! One batch's plan: what a batch of finished calls becomes in storage, derived
//! once, the same way for every engine. An engine persists what this module
//! derives and answers reads; it decides nothing about what a call stores.
//!
//! - `split_content`: each call split into its stored metadata and its content,
//!   the pieces staged in the engine's `ContentSink` (sled's content transaction,
//!   PostgreSQL's staging) and the manifest that names them, sealed. One rule set
//!   (`content_rule`): what has content, and what a nearly full disk skips. Each
//!   call also carries its list summary and facets (`Listed`), made here once:
//!   sled stores them as its summary header and index entries, PostgreSQL as its
//!   `summary` column and per-day facet counts, and both publish the summary to the
//!   live stream.
//! - `list_run`: a run's list summary and facets once the writer (sled) or the
//!   merge under the run's lock (PostgreSQL) folded a batch into its record: the
//!   prompt name and properties it had, completed from the batch's calls.
//! - `rollup_deltas`: the `RollupCell` changes of a batch's new calls and the runs
//!   it created, per rollup scope (`index::scopes`) and 15-minute bucket, and all
//!   time. What a batch adds, retention and deletion take off with the same
//!   function, and repricing moves the cost of the same cells (`repriced_deltas`),
//!   so every path touches the cells a call was counted in.
//! - `session_deltas` and `rate_limit_notes`: what the batch adds to each session
//!   (its calls folded with `SessionSummary::add_call`) and to each rate-limit key
//!   (its calls, to fold with `RateLimitState::note`), both in start order; an
//!   engine merges them with what it stores (`SessionSummary::merge`,
//!   `RateLimitNotes::fold`).
//!
//! `derive` makes the derived part of the plan for a batch's new calls and the
//! runs they created. The engines call it where they know which calls are new:
//! sled in its batch transaction, PostgreSQL in its batch's database transaction
//! after the insert said which rows another instance had not stored already.

use super::content::ContentSink;
use super::disk::DiskLevel;
use super::index::{self, RateLimitNoted, RateLimitState, RollupCell, SessionSummary};
use super::manifest::store_content;
use super::stored::metadata_only;
use super::summary::{CallSummary, Facets, InvocationSummary};
use super::StoreStats;
use crate::record::{CallRecord, InvocationRecord};
use std::collections::BTreeMap;

/// A call as an engine stores it: its metadata record, its list summary and facets,
/// and, when it has content, its sealed manifest (`manifest::Manifest`), whose
/// pieces are staged in the sink `split_content` was given.
#[derive(Debug, Clone)]
pub struct StoredCall {
    pub meta: CallRecord,
    pub manifest: Option<Vec<u8>>,
    pub listed: Listed,
}

/// A call or run as lists show it (`summary`) and filters test it (`facets`, made
/// from the summary): derived once, here, and stored by every engine as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed<S = CallSummary> {
    pub summary: S,
    pub facets: Facets,
}

impl Listed {
    /// A call's summary and facets (what sled's reindex of an old store and the
    /// engines' repricing and deletion also use, so every path derives them alike).
    pub fn of(call: &CallRecord) -> Listed {
        let summary = CallSummary::from_record(call);
        let facets = summary.facets();
        Listed { summary, facets }
    }
}

/// A run as lists show it and filters test it.
pub type ListedRun = Listed<InvocationSummary>;

/// A run's summary and facets once a batch is folded into its record (`run`):
/// the prompt name and properties it was stored with (`stored`, `None` for a run
/// the batch created) are kept, and what they lack comes from the batch's calls of
/// it (`calls`, in batch order: the first prompt name, each property's first value).
/// The record does not keep them; the run's calls do.
pub fn list_run<'a>(
    run: &InvocationRecord,
    stored: Option<&InvocationSummary>,
    calls: impl IntoIterator<Item = &'a CallRecord>,
) -> ListedRun {
    let mut prompt = stored.and_then(|s| s.prompt.clone());
    let mut properties = stored.map(|s| s.properties.clone()).unwrap_or_default();
    for call in calls {
        let m = &call.metadata;
        if prompt.is_none() {
            prompt.clone_from(&m.prompt);
        }
        for (k, v) in &m.properties {
            properties.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let summary = InvocationSummary::from_record(run, prompt, properties);
    let facets = summary.facets();
    Listed { summary, facets }
}

/// The note of a call whose content was not stored because the disk is nearly full.
pub const BODIES_SKIPPED_DISK: &str = "bodies not stored: the data directory's disk is nearly full";

/// What becomes of a call's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentRule {
    /// Nothing to store (no bodies, views or prompt variables).
    None,
    /// Bodies or views the disk level says not to store: the call keeps its
    /// metadata and a note (`BODIES_SKIPPED_DISK`).
    SkipForDisk,
    Store,
}

/// The one rule: a call with bodies or parsed views stores them unless the disk is
/// nearly full (`DiskLevel` below `Ok`: then none of its content is stored, prompt
/// variables included); a call with prompt variables alone stores them whatever
/// the disk level (a few bytes, and what the call's prompt was made from).
fn content_rule(call: &CallRecord, disk: DiskLevel) -> ContentRule {
    let has_bodies = call.request_body.is_some()
        || call.response_body.is_some()
        || call.request.is_some()
        || call.response.is_some();
    if has_bodies && disk != DiskLevel::Ok {
        ContentRule::SkipForDisk
    } else if has_bodies || call.metadata.has_prompt_variables() {
        ContentRule::Store
    } else {
        ContentRule::None
    }
}

/// Splits each call into metadata and content staged in `sink`, in order.
/// Content failures fail open: the call keeps its metadata and a note, and the
/// failure is counted. `disk` is the level of the disk the engine writes content
/// to (an engine whose content goes elsewhere passes `DiskLevel::Ok`).
pub fn split_content<'a>(
    sink: &mut dyn ContentSink,
    stats: &StoreStats,
    disk: DiskLevel,
    calls: impl IntoIterator<Item = &'a CallRecord>,
) -> Vec<StoredCall> {
    let calls = calls.into_iter();
    let mut out = Vec::with_capacity(calls.size_hint().0);
    for call in calls {
        let mut meta = metadata_only(call);
        let mut manifest = None;
        let listed = Listed::of(call);
        match content_rule(call, disk) {
            ContentRule::None => {}
            ContentRule::SkipForDisk => {
                StoreStats::add(&stats.bodies_skipped_disk, 1);
                meta.parse_notes.push(BODIES_SKIPPED_DISK.into());
            }
            ContentRule::Store => match store_content(sink, stats, call, &mut meta)
                .and_then(|m| sink.codec().seal(&m.encode()))
            {
                Ok(sealed) => manifest = Some(sealed),
                Err(e) => {
                    StoreStats::add(&stats.content_errors, 1);
                    tracing::error!(error = %e, call = %call.id, "cannot store call content; keeping metadata only");
                    meta.parse_notes.push(format!("bodies not stored: {e}"));
                }
            },
        }
        out.push(StoredCall {
            meta,
            manifest,
            listed,
        });
    }
    out
}

/// Cuts the calls as `split_content` would, into a sink that only watches (a
/// first pass that learns which pieces the cutting asks about), counting and
/// sealing nothing. A failure here fails the same way when the batch is cut for real.
pub fn probe_content<'a>(
    sink: &mut dyn ContentSink,
    disk: DiskLevel,
    calls: impl IntoIterator<Item = &'a CallRecord>,
) {
    let scratch = StoreStats::default();
    for call in calls {
        if content_rule(call, disk) == ContentRule::Store {
            let mut meta = metadata_only(call);
            let _ = store_content(sink, &scratch, call, &mut meta);
        }
    }
}

/// One rollup cell's change: a scope's 15-minute bucket or its all-time cell.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupDelta {
    /// The scope's bytes (`index::scopes`: everything, a tenant, an agent, both).
    pub scope: Vec<u8>,
    /// Start of the bucket, or `None` for the all-time cell (the one that keeps
    /// the latency histogram).
    pub bucket_us: Option<u64>,
    pub cell: RollupCell,
}

/// The cells a record that started at `time_us` counts in: each scope's bucket
/// and its all-time cell.
fn cells_of(
    tenant: Option<&str>,
    agent: Option<&str>,
    time_us: u64,
) -> impl Iterator<Item = (Vec<u8>, Option<u64>)> {
    let bucket = time_us - time_us % index::BUCKET_US;
    index::scopes(tenant, agent)
        .into_iter()
        .flat_map(move |scope| [(scope.clone(), Some(bucket)), (scope, None)])
}

/// Rollup deltas summed per cell as they come, so a pass over many records holds
/// one delta per cell.
#[derive(Debug, Default)]
pub struct RollupSum(BTreeMap<(Vec<u8>, Option<u64>), RollupCell>);

impl RollupSum {
    pub fn add(&mut self, deltas: impl IntoIterator<Item = RollupDelta>) {
        for d in deltas {
            self.0
                .entry((d.scope, d.bucket_us))
                .or_default()
                .merge(&d.cell);
        }
    }

    /// One delta per cell, in (scope, bucket) order.
    pub fn into_deltas(self) -> Vec<RollupDelta> {
        self.0
            .into_iter()
            .map(|((scope, bucket_us), cell)| RollupDelta {
                scope,
                bucket_us,
                cell,
            })
            .collect()
    }
}

/// What these calls and runs count in the rollups, one delta per cell, in (scope,
/// bucket) order: a batch adds it for its new calls and the runs it created;
/// retention and deletion take it off when they go.
pub fn rollup_deltas<'a, 'b>(
    calls: impl IntoIterator<Item = &'a CallRecord>,
    runs: impl IntoIterator<Item = &'b InvocationRecord>,
) -> Vec<RollupDelta> {
    let mut sum = RollupSum::default();
    for call in calls {
        let m = &call.metadata;
        for (scope, bucket) in cells_of(m.tenant.as_deref(), m.agent.as_deref(), call.started_at_us)
        {
            let all_time = bucket.is_none();
            sum.0
                .entry((scope, bucket))
                .or_default()
                .add_call(call, all_time);
        }
    }
    for run in runs {
        for cell in cells_of(
            run.tenant.as_deref(),
            run.agent.as_deref(),
            run.started_at_us,
        ) {
            sum.0.entry(cell).or_default().invocations += 1;
        }
    }
    sum.into_deltas()
}

/// What repricing a call moves in the rollups: `(added, taken)`, its new cost and
/// the cost it counted for before (`old_pusd`), in each cell it counts in.
pub fn repriced_deltas(call: &CallRecord, old_pusd: u64) -> (Vec<RollupDelta>, Vec<RollupDelta>) {
    let new_pusd = super::stored::priced_pusd(&call.cost);
    let m = &call.metadata;
    let cost = |(scope, bucket_us): &(Vec<u8>, Option<u64>), pusd| RollupDelta {
        scope: scope.clone(),
        bucket_us: *bucket_us,
        cell: RollupCell {
            cost_pusd: pusd,
            ..RollupCell::default()
        },
    };
    cells_of(m.tenant.as_deref(), m.agent.as_deref(), call.started_at_us)
        .map(|cell| (cost(&cell, new_pusd), cost(&cell, old_pusd)))
        .unzip()
}

/// What a batch's new calls and created runs add to the derived data.
#[derive(Debug)]
pub struct Derived<'a> {
    pub rollups: Vec<RollupDelta>,
    pub sessions: Vec<SessionSummary>,
    pub rate_limits: Vec<RateLimitNotes<'a>>,
}

/// The derived part of a batch's plan (see the module doc).
pub fn derive<'a, 'b>(
    new_calls: impl IntoIterator<Item = &'a CallRecord>,
    new_runs: impl IntoIterator<Item = &'b InvocationRecord>,
) -> Derived<'a> {
    let calls = in_start_order(new_calls);
    Derived {
        rollups: rollup_deltas(calls.iter().copied(), new_runs),
        sessions: session_deltas(&calls),
        rate_limits: rate_limit_notes(&calls),
    }
}

/// The calls by start time (then id): the order sessions and rate limits fold
/// them in, whatever order the batch holds them in.
fn in_start_order<'a>(calls: impl IntoIterator<Item = &'a CallRecord>) -> Vec<&'a CallRecord> {
    let mut calls: Vec<&CallRecord> = calls.into_iter().collect();
    calls.sort_by(|a, b| (a.started_at_us, &a.id).cmp(&(b.started_at_us, &b.id)));
    calls
}

/// What the calls (in start order) add to each of their sessions, in session id
/// order: a summary that starts with its first call and folds each in with
/// `SessionSummary::add_call`.
fn session_deltas(calls: &[&CallRecord]) -> Vec<SessionSummary> {
    let mut sessions: BTreeMap<&str, SessionSummary> = BTreeMap::new();
    for call in calls {
        if let Some(id) = call.metadata.session_id.as_deref() {
            sessions
                .entry(id)
                .or_insert_with(|| SessionSummary::starting(id, call))
                .add_call(call);
        }
    }
    sessions.into_values().collect()
}

/// One rate-limit key's calls in a batch, in start order.
#[derive(Debug)]
pub struct RateLimitNotes<'a> {
    /// `index::ratelimit_key_of` (`RateLimitKey::from_key` reads it back).
    pub key: Vec<u8>,
    pub calls: Vec<&'a CallRecord>,
}

impl RateLimitNotes<'_> {
    /// The key's state once the batch's calls are noted into the stored one (a
    /// key's first state when none is stored), and what each call adds to its
    /// series, in the order of `calls`.
    pub fn fold(&self, stored: Option<RateLimitState>) -> (RateLimitState, Vec<RateLimitNoted>) {
        let mut state = match (stored, self.calls.first()) {
            (Some(state), _) => state,
            (None, Some(first)) => RateLimitState::first_for(first),
            (None, None) => RateLimitState::default(),
        };
        let noted = self.calls.iter().map(|call| state.note(call)).collect();
        (state, noted)
    }
}

/// The calls (in start order) that add to rate-limit state (`index::notes_rate_limit`),
/// by key, in key order.
fn rate_limit_notes<'a>(calls: &[&'a CallRecord]) -> Vec<RateLimitNotes<'a>> {
    let mut keys: BTreeMap<Vec<u8>, Vec<&CallRecord>> = BTreeMap::new();
    for call in calls.iter().filter(|c| index::notes_rate_limit(c)) {
        keys.entry(index::ratelimit_key_of(call))
            .or_default()
            .push(call);
    }
    keys.into_iter()
        .map(|(key, calls)| RateLimitNotes { key, calls })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::content::{Codec, Seg};
    use crate::store::crypto::Addr;
    use crate::store::StoreError;
    use std::collections::HashMap;

    /// A content sink in memory: chunks and blobs by address.
    struct Memory {
        codec: Codec,
        chunks: HashMap<Addr, Vec<Seg>>,
        roots: Vec<Addr>,
    }

    impl ContentSink for Memory {
        fn codec(&self) -> &Codec {
            &self.codec
        }
        fn has_chunk(&self, a: &Addr) -> Result<bool, StoreError> {
            Ok(self.chunks.contains_key(a))
        }
        fn add_chunk(&mut self, a: Addr, segs: &[Seg]) -> Result<(), StoreError> {
            self.chunks.insert(a, segs.to_vec());
            Ok(())
        }
        fn ensure_blob(&mut self, _: Addr, _: &str, _: &[u8]) -> Result<(), StoreError> {
            Ok(())
        }
        fn ref_chunk(&mut self, a: &Addr) {
            self.roots.push(*a);
        }
    }

    fn memory() -> Memory {
        Memory {
            codec: Codec {
                keys: None,
                zstd_level: 1,
                periods: None,
            },
            chunks: HashMap::new(),
            roots: Vec::new(),
        }
    }

    fn call(id: &str, body: bool, variables: bool) -> CallRecord {
        let mut call = CallRecord {
            id: id.into(),
            ..CallRecord::default()
        };
        if body {
            call.request_body = Some("x".repeat(10_000));
        }
        if variables {
            call.metadata.prompt_variables = Some(serde_json::json!({"city": "Paris"}));
        }
        call
    }

    #[test]
    fn a_nearly_full_disk_skips_bodies_but_keeps_prompt_variables_alone() {
        let calls = [
            call("a", true, true),
            call("b", false, true),
            call("c", false, false),
        ];
        for (disk, stored_a) in [(DiskLevel::Ok, true), (DiskLevel::BodiesPaused, false)] {
            let stats = StoreStats::default();
            let mut sink = memory();
            let split = split_content(&mut sink, &stats, disk, &calls);
            let ids: Vec<&str> = split.iter().map(|s| s.meta.id.as_str()).collect();
            assert_eq!(ids, ["a", "b", "c"]);
            assert_eq!(split[0].manifest.is_some(), stored_a);
            assert_eq!(
                split[0]
                    .meta
                    .parse_notes
                    .contains(&BODIES_SKIPPED_DISK.to_string()),
                !stored_a
            );
            assert_eq!(
                stats
                    .bodies_skipped_disk
                    .load(std::sync::atomic::Ordering::Relaxed),
                u64::from(!stored_a)
            );
            assert!(
                split[1].manifest.is_some(),
                "prompt variables alone are stored"
            );
            assert!(split[1].meta.metadata.prompt_variables.is_none());
            assert!(split[2].manifest.is_none());
            // The probe asks about what the split stores, and nothing when it skips.
            let mut probe = memory();
            probe_content(&mut probe, disk, &calls);
            assert_eq!(probe.chunks.len(), sink.chunks.len());
        }
    }

    #[test]
    fn a_stored_call_carries_the_summary_and_facets_of_the_call_it_was_cut_from() {
        let mut captured = call("a", true, true);
        captured.model = Some("m".into());
        captured.metadata.agent = Some("bot".into());
        let split = split_content(
            &mut memory(),
            &StoreStats::default(),
            DiskLevel::Ok,
            [&captured],
        );
        assert_eq!(split[0].listed, Listed::of(&captured));
        // The metadata alone lists the same: what a reindex or a reprice derives.
        assert_eq!(Listed::of(&split[0].meta), split[0].listed);
        assert!(split[0]
            .listed
            .facets
            .pairs
            .contains(&(crate::store::summary::tag::AGENT, "bot".into())));
    }

    #[test]
    fn a_run_keeps_its_stored_prompt_and_properties_and_completes_them_from_its_calls() {
        let mut first = call("a", false, false);
        first.metadata.prompt = Some("triage".into());
        first.metadata.properties = [("env".to_string(), "prod".to_string())].into();
        let run = InvocationRecord {
            id: "r".into(),
            ..InvocationRecord::default()
        };
        let created = list_run(&run, None, [&first]);
        assert_eq!(created.summary.prompt.as_deref(), Some("triage"));
        assert_eq!(created.facets, created.summary.facets());
        let mut later = call("b", false, false);
        later.metadata.prompt = Some("other".into());
        later.metadata.properties = [
            ("env".to_string(), "dev".to_string()),
            ("team".to_string(), "ops".to_string()),
        ]
        .into();
        let merged = list_run(&run, Some(&created.summary), [&later]);
        assert_eq!(merged.summary.prompt.as_deref(), Some("triage"));
        let props: Vec<(&str, &str)> = merged
            .summary
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(props, [("env", "prod"), ("team", "ops")]);
        // Rolled up again with no calls (repricing), it keeps what it had.
        assert_eq!(list_run(&run, Some(&merged.summary), []), merged);
    }

    #[test]
    fn rollup_deltas_count_calls_in_buckets_and_all_time_and_runs_once() {
        let at = 7 * index::BUCKET_US + 5;
        let llm = |id: &str| CallRecord {
            id: id.into(),
            kind: "openai_chat".into(),
            started_at_us: at,
            latency_ms: 12.0,
            ..CallRecord::default()
        };
        let mut calls = [llm("a"), llm("b")];
        calls[1].metadata.tenant = Some("acme".into());
        let run = InvocationRecord {
            started_at_us: at,
            ..InvocationRecord::default()
        };
        let deltas = rollup_deltas(&calls, [&run]);
        let cell = |scope: &[u8], bucket_us| {
            deltas
                .iter()
                .find(|d| d.scope == scope && d.bucket_us == bucket_us)
                .map(|d| d.cell.clone())
                .unwrap_or_default()
        };
        // Everything and the agentless agent: both calls and the run; the tenant one call.
        assert_eq!(deltas.len(), 2 * 2 + 2 * 2);
        let all = cell(b"*", None);
        assert_eq!(
            (all.calls, all.invocations, all.hist.iter().sum::<u64>()),
            (2, 1, 2)
        );
        let bucket = cell(b"*", Some(7 * index::BUCKET_US));
        assert_eq!((bucket.calls, bucket.invocations), (2, 1));
        assert!(
            bucket.hist.is_empty(),
            "only the all-time cell keeps the histogram"
        );
        assert_eq!(cell(&index::scope_tenant("acme"), None).calls, 1);
        // Retention takes off exactly what the batch added.
        let mut sum = RollupSum::default();
        sum.add(rollup_deltas(&calls[..1], []));
        sum.add(rollup_deltas(&calls[1..], [&run]));
        assert_eq!(sum.into_deltas(), deltas);
    }

    #[test]
    fn a_merged_session_delta_is_the_calls_folded_one_by_one() {
        let call = |id: &str, at: u64, model: &str, agent: Option<&str>| {
            let mut c = CallRecord {
                id: id.into(),
                kind: "openai_chat".into(),
                started_at_us: at,
                model: Some(model.into()),
                cost_usd: Some(0.25),
                ..CallRecord::default()
            };
            c.metadata.session_id = Some("s".into());
            c.metadata.agent = agent.map(str::to_string);
            c.usage.input_tokens = Some(10);
            c
        };
        let calls = [
            call("1", 50, "m1", None),
            call("2", 60, "m2", None),
            // Arriving later but started earlier, with the session's first agent.
            call("3", 10, "m3", Some("bot")),
            call("4", 70, "m1", Some("other")),
        ];
        let mut one_by_one = SessionSummary::starting("s", &calls[0]);
        for c in &calls {
            one_by_one.add_call(c);
        }
        let stored = derive(&calls[..2], []).sessions;
        let delta = derive(&calls[2..], []).sessions;
        let mut merged = stored[0].clone();
        merged.merge(&delta[0]);
        assert_eq!(merged, one_by_one);
        assert_eq!(
            merged.models.as_deref(),
            Some(&["m1", "m2", "m3"].map(String::from)[..])
        );
        assert_eq!((merged.first_at_us, merged.calls), (10, 4));
    }

    #[test]
    fn rate_limit_notes_fold_a_key_in_start_order() {
        let call = |id: &str, at: u64, status| CallRecord {
            id: id.into(),
            provider: "openai".into(),
            model: Some("m".into()),
            started_at_us: at,
            started_at: format!("t{at}"),
            status: Some(status),
            rate_limit: Some(Default::default()),
            ..CallRecord::default()
        };
        use crate::record::CallStatus::{RateLimited, Success};
        let calls = [
            call("b", 20, Success),
            call("a", 10, RateLimited),
            call("c", 5, Success),
        ];
        let notes = derive(&calls, []).rate_limits;
        assert_eq!(notes.len(), 1);
        let ids: Vec<&str> = notes[0].calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
        let (state, noted) = notes[0].fold(None);
        assert_eq!((state.at_us, state.last_429_us), (20, Some(10)));
        let limited: Vec<bool> = noted.iter().map(|n| n.limited.is_some()).collect();
        assert_eq!(limited, [false, true, false]);
        // Folded again into what is stored, a later batch keeps the latest state.
        let (again, _) = notes[0].fold(Some(state.clone()));
        assert_eq!(again, state);
    }
}
