//! Retention and the storage background thread.
//!
//! `retention_days` deletes calls (with their round and index entries, and what
//! they added to the rollups) and invocations older than that; `body_retention_days` drops only the content of
//! calls older than that and keeps their metadata and cost. Content pieces go when
//! their last reference does (refcounts, see `content.rs`), so an attachment or a
//! prompt still used by a surviving call is never deleted.
//!
//! The sweeper works in batches of `BATCH` calls, taking the content lock once per
//! batch, so the writer waits at most one batch; capture never waits for a whole
//! sweep. The same thread checks free disk space every few seconds.
//!
//! Deleting a call: `SledStore::delete_call` is the one way to remove a call and
//! everything keyed by it. Index trees keyed by call add their removals to
//! `SledStore::unindex_call` (in `mod.rs`), which every deletion path calls.

use super::writes::Writes;
use super::{SledStore, StoreError};
use crate::record::{CallRecord, InvocationRecord};
use crate::store::index::RollupCell;
use crate::store::plan::rollup_deltas;
use crate::store::types::SweepReport;
use std::sync::atomic::Ordering;
use std::time::Instant;

const BATCH: usize = 256;
const DAY_US: u64 = 86_400_000_000;
const META_BODY_CURSOR: &[u8] = b"body_sweep_cursor";

impl SledStore {
    /// Deletes one call, its round entry, its index entries and its content
    /// references. Returns false when there was no such call.
    pub fn delete_call(&self, id: &str) -> Result<bool, StoreError> {
        let mut report = SweepReport::default();
        let n = self.delete_calls(&[id.to_string()], &mut report)?;
        Ok(n == 1)
    }

    fn delete_calls(&self, ids: &[String], report: &mut SweepReport) -> Result<u64, StoreError> {
        let mut txn = self.content.txn();
        let mut deleted = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(call) = self.get_call_meta(id)? else {
                continue;
            };
            let manifest = self.manifest(id)?;
            // The call goes before its content references (see content.rs).
            self.unindex_call(&call)?;
            self.inv_rounds
                .remove(super::round_key(&call.invocation_id, call.round, &call.id))?;
            self.calls.remove(id.as_bytes())?;
            self.remove_manifest(id)?;
            for root in manifest.iter().flat_map(|m| m.roots()) {
                txn.unref_chunk(root)?;
            }
            deleted.push(call);
        }
        let freed = txn.commit()?;
        // The calls are gone: so is what they added to /summary and /agents.
        self.change_rollups(&rollup_deltas(&deleted, []), RollupCell::subtract)?;
        let deleted = deleted.len() as u64;
        report.calls_deleted += deleted;
        report.chunks_freed += freed.chunks;
        report.blobs_freed += freed.blobs;
        Ok(deleted)
    }

    /// Removes a call's manifest, noting its key period as due for shredding.
    fn remove_manifest(&self, id: &str) -> Result<(), StoreError> {
        if let Some(v) = self.call_content.get(id.as_bytes())? {
            self.content
                .note_dying(super::content::SEALED_MANIFEST, id.as_bytes(), &v)?;
            self.call_content.remove(id.as_bytes())?;
        }
        Ok(())
    }

    /// Drops a call's content but keeps its metadata and cost.
    fn drop_bodies(&self, ids: &[String], report: &mut SweepReport) -> Result<(), StoreError> {
        let mut txn = self.content.txn();
        for id in ids {
            let Some(manifest) = self.manifest(id)? else {
                continue;
            };
            if let Some(mut call) = self.get_call_meta(id)? {
                call.parse_notes
                    .push("bodies removed by store.body_retention_days".into());
                self.calls
                    .insert(id.as_bytes(), super::encode_call_meta(&call)?)?;
            }
            self.remove_manifest(id)?;
            for root in manifest.roots() {
                txn.unref_chunk(root)?;
            }
            report.bodies_dropped += 1;
        }
        let freed = txn.commit()?;
        report.chunks_freed += freed.chunks;
        report.blobs_freed += freed.blobs;
        Ok(())
    }

    /// One full retention pass as of `now_us`. Safe to run while the writer writes.
    pub fn sweep(&self, now_us: u64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let started = Instant::now();
        let days = self.options.retention_days;
        if days > 0 {
            let cutoff = now_us.saturating_sub(days * DAY_US);
            // Call ids are time-ordered, so the oldest come first.
            loop {
                let mut batch = Vec::new();
                for entry in self.calls.iter() {
                    let (key, value) = entry?;
                    let call: CallRecord = super::decode(&key, &value)?;
                    if call.started_at_us >= cutoff {
                        break;
                    }
                    batch.push(call.id);
                    if batch.len() == BATCH {
                        break;
                    }
                }
                if batch.is_empty() {
                    break;
                }
                self.delete_calls(&batch, &mut report)?;
                tracing::info!(
                    deleted = report.calls_deleted,
                    "retention: deleting old calls"
                );
            }
            let mut doomed = Vec::new();
            for entry in self.invocations.iter() {
                let (key, value) = entry?;
                let inv: InvocationRecord = super::decode(&key, &value)?;
                if inv.ended_at_us < cutoff {
                    doomed.push(key);
                }
                if doomed.len() == BATCH {
                    report.invocations_deleted += self.delete_invocations(&doomed)?;
                    doomed.clear();
                }
            }
            report.invocations_deleted += self.delete_invocations(&doomed)?;
        }
        let body_days = self.options.body_retention_days;
        if body_days > 0 && (days == 0 || body_days < days) {
            let cutoff = now_us.saturating_sub(body_days * DAY_US);
            let mut cursor = self.meta.get(META_BODY_CURSOR)?.map(|v| v.to_vec());
            loop {
                let mut batch = Vec::new();
                let range = match &cursor {
                    Some(c) => self.call_content.range::<&[u8], _>((
                        std::ops::Bound::Excluded(&c[..]),
                        std::ops::Bound::Unbounded,
                    )),
                    None => self.call_content.iter(),
                };
                let mut done = true;
                for entry in range {
                    let (key, _) = entry?;
                    let id = String::from_utf8_lossy(&key).into_owned();
                    match self.get_call_meta(&id)? {
                        Some(call) if call.started_at_us >= cutoff => break,
                        _ => batch.push(id),
                    }
                    if batch.len() == BATCH {
                        done = false;
                        break;
                    }
                }
                if let Some(last) = batch.last() {
                    self.drop_bodies(&batch, &mut report)?;
                    self.meta.insert(META_BODY_CURSOR, last.as_bytes())?;
                    cursor = Some(last.as_bytes().to_vec());
                    tracing::info!(
                        dropped = report.bodies_dropped,
                        "retention: dropping old bodies"
                    );
                }
                if done {
                    break;
                }
            }
        }
        // What died above, and in earlier periods, leaves the disk with its period key.
        let (keys, values) = self.content.shred(&self.call_content)?;
        report.keys_shredded += keys;
        report.values_resealed += values;
        let s = &self.stats;
        s.retention_calls_deleted
            .fetch_add(report.calls_deleted, Ordering::Relaxed);
        s.retention_bodies_dropped
            .fetch_add(report.bodies_dropped, Ordering::Relaxed);
        s.retention_invocations_deleted
            .fetch_add(report.invocations_deleted, Ordering::Relaxed);
        s.chunks_freed
            .fetch_add(report.chunks_freed, Ordering::Relaxed);
        s.blobs_freed
            .fetch_add(report.blobs_freed, Ordering::Relaxed);
        if report != SweepReport::default() {
            tracing::info!(
                ?report,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "retention sweep done"
            );
        }
        Ok(report)
    }

    fn delete_invocations(&self, keys: &[sled::IVec]) -> Result<u64, StoreError> {
        let mut batch = Writes::default();
        let mut n = 0;
        let mut runs = Vec::new();
        for key in keys {
            // An invocation with a call left (a late round) keeps its rollup.
            let mut prefix = key.to_vec();
            prefix.push(0);
            if self.inv_rounds.scan_prefix(&prefix).next().is_some() {
                continue;
            }
            if let Some(value) = self.invocations.get(key)? {
                // Taken off the cells the writer counted it in when it was new.
                runs.push(super::decode::<InvocationRecord>(key, &value)?);
            }
            // The record goes first, then what is derived from it (as for calls).
            batch.remove(key.clone());
            n += 1;
        }
        batch.apply_to(&self.invocations)?;
        self.change_rollups(&rollup_deltas([], &runs), RollupCell::subtract)?;
        for key in keys {
            if self.invocations.get(key)?.is_none() {
                self.unindex_invocation(key)?;
            }
        }
        Ok(n)
    }
}
