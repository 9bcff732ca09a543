//! One batch's plan: what a batch of finished calls becomes in storage, derived
//! once, the same way for every engine. An engine persists what this module
//! derives and answers reads; it decides nothing about what a call stores.
//!
//! - `split_content`: each call split into its stored metadata and its content,
//!   the pieces staged in the engine's `ContentSink` (sled's content transaction,
//!   PostgreSQL's staging) and the manifest that names them, sealed. One rule set
//!   (`content_rule`): what has content, and what a nearly full disk skips.
//! - `rollup_deltas`: the `RollupCell` changes of a batch's new calls and the runs
//!   it created, per rollup scope (`index::scopes`) and 15-minute bucket, and all
//!   time. What a batch adds, retention and deletion take off with the same
//!   function, and repricing moves the cost of the same cells (`repriced_deltas`),
//!   so every path touches the cells a call was counted in.

use super::content::ContentSink;
use super::disk::DiskLevel;
use super::index::{self, RollupCell};
use super::manifest::store_content;
use super::stored::metadata_only;
use super::StoreStats;
use crate::record::{CallRecord, InvocationRecord};
use std::collections::BTreeMap;

/// A call as an engine stores it: its metadata record and, when it has content,
/// its sealed manifest (`manifest::Manifest`), whose pieces are staged in the sink
/// `split_content` was given.
#[derive(Debug, Clone)]
pub struct StoredCall {
    pub meta: CallRecord,
    pub manifest: Option<Vec<u8>>,
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
        out.push(StoredCall { meta, manifest });
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
}
