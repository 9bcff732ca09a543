//! One batch's plan: what a batch of finished calls becomes in storage, derived
//! once, the same way for every engine. An engine persists what this module
//! derives and answers reads; it decides nothing about what a call stores.
//!
//! - `split_content`: each call split into its stored metadata and its content,
//!   the pieces staged in the engine's `ContentSink` (sled's content transaction,
//!   PostgreSQL's staging) and the manifest that names them, sealed. One rule set
//!   (`content_rule`): what has content, and what a nearly full disk skips.

use super::content::ContentSink;
use super::disk::DiskLevel;
use super::manifest::store_content;
use super::stored::metadata_only;
use super::StoreStats;
use crate::record::CallRecord;

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
}
