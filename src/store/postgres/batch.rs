//! One batch's write to PostgreSQL, in one transaction.
//!
//! `probe` and `prepare` run on the writer's thread, off the engine's runtime:
//! `probe` lists the stored pieces cutting could build on, and once the database
//! said which of those it holds, `prepare` splits each call that is not stored yet
//! into metadata and content (`manifest::store_content`, the same split as sled's)
//! and stages the pieces. `write` then stores, in one
//! transaction: the content pieces and their references (`content.rs`), the call
//! rows (`ON CONFLICT DO NOTHING RETURNING id`: only the calls this transaction
//! inserted count from here on), their manifests, their per-day facet counts
//! (`facets.rs`), the runs they change merged with
//! what other instances wrote (`invocations.rs`), the rollup deltas of those calls and
//! of the runs they started, their sessions (`sessions.rs`) and rate-limit state
//! (`ratelimits.rs`), and a notice on the live-stream channel (`notify.rs`),
//! delivered to every instance when the transaction commits. So a batch is all
//! there or not at all, and replaying it (the capture log after a crash) adds
//! nothing twice.

use super::{calls, content, facets, invocations, notify, ratelimits, rollups, sessions, PgError};
use crate::record::{CallRecord, InvocationRecord};
use crate::store::content::Codec;
use crate::store::crypto::Addr;
use crate::store::plan::{self, StoredCall};
use crate::store::DiskLevel;
use crate::store::{BatchWritten, StoreStats};
use std::collections::HashSet;
use std::sync::Arc;
use tokio_postgres::GenericClient;

/// A batch ready for its transaction.
pub struct Prepared {
    /// The calls not stored yet, as captured.
    pub calls: Vec<CallRecord>,
    /// Their stored form (`plan::split_content`), in the same order.
    pub stored: Vec<StoredCall>,
    pub staging: content::Staging,
}

/// The calls of `batch` to cut: not stored yet, each id once.
fn new_calls<'a>(
    batch: &'a [CallRecord],
    already_stored: &'a HashSet<String>,
) -> impl Iterator<Item = &'a CallRecord> {
    let mut seen = HashSet::new();
    batch
        .iter()
        .filter(move |c| !already_stored.contains(&c.id) && seen.insert(c.id.as_str()))
}

/// Content goes to the database server, whose disk the data directory's guard does
/// not measure, and skipping it would free no byte of the local disk (the capture
/// log holds the bodies either way): the disk rule of `plan::split_content` is
/// given `Ok`.
const CONTENT_DISK: DiskLevel = DiskLevel::Ok;

/// The chunks cutting the batch's new calls could build on if they are stored (the
/// first pass; `content.rs` module doc). Nothing is staged or counted.
pub fn probe(
    codec: Arc<Codec>,
    batch: &[CallRecord],
    already_stored: &HashSet<String>,
) -> HashSet<Addr> {
    let mut probe = content::Probe::new(codec);
    plan::probe_content(&mut probe, CONTENT_DISK, new_calls(batch, already_stored));
    probe.asked()
}

/// Splits the batch's new calls into metadata and staged content, building on the
/// chunks the database held (`stored`, from `probe` and `content::stored_among`).
pub fn prepare(
    codec: Arc<Codec>,
    stats: &StoreStats,
    batch: &[CallRecord],
    already_stored: &HashSet<String>,
    stored: HashSet<Addr>,
) -> Prepared {
    let mut staging = content::Staging::with_stored(codec, stored);
    let calls: Vec<CallRecord> = new_calls(batch, already_stored).cloned().collect();
    let stored = plan::split_content(&mut staging, stats, CONTENT_DISK, &calls);
    Prepared {
        calls,
        stored,
        staging,
    }
}

/// Writes a prepared batch in the caller's transaction; returns what the live
/// stream shows of it (the calls and runs this transaction stored or changed).
pub async fn write(
    tx: &impl GenericClient,
    prepared: &Prepared,
    instance: &str,
) -> Result<BatchWritten, PgError> {
    content::write(tx, &prepared.staging).await?;
    let new = calls::insert(tx, &prepared.stored).await?;
    let manifests: Vec<(u64, &str, &[u8])> = prepared
        .stored
        .iter()
        .filter(|s| new.contains(&s.meta.id))
        .filter_map(|s| {
            Some((
                s.meta.started_at_us,
                s.meta.id.as_str(),
                s.manifest.as_deref()?,
            ))
        })
        .collect();
    calls::insert_manifests(tx, &manifests).await?;
    let new_calls: Vec<&CallRecord> = prepared
        .calls
        .iter()
        .filter(|c| new.contains(&c.id))
        .collect();
    let new_summaries: Vec<&crate::store::summary::CallSummary> = prepared
        .stored
        .iter()
        .filter(|s| new.contains(&s.meta.id))
        .map(|s| &s.listed.summary)
        .collect();
    facets::add(tx, &new_summaries).await?;
    let runs = invocations::merge(tx, &new_calls).await?;
    let created: Vec<&InvocationRecord> = runs
        .iter()
        .filter(|r| r.created)
        .map(|r| &r.record)
        .collect();
    let derived = plan::derive(new_calls.iter().copied(), created);
    rollups::add(tx, &derived.rollups).await?;
    sessions::add(tx, &derived.sessions).await?;
    ratelimits::add(tx, &derived.rate_limits).await?;
    let call_ids: Vec<String> = new_calls.iter().map(|c| c.id.clone()).collect();
    let run_ids: Vec<String> = runs.iter().map(|r| r.record.id.clone()).collect();
    if !call_ids.is_empty() {
        for payload in notify::payloads(instance, &call_ids, &run_ids) {
            notify::notify(tx, &payload).await?;
        }
    }
    Ok(BatchWritten {
        calls: new_summaries.into_iter().cloned().collect(),
        invocations: runs.into_iter().map(|r| r.summary).collect(),
    })
}
