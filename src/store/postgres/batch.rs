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
use crate::store::index;
use crate::store::manifest::store_content;
use crate::store::stored::metadata_only;
use crate::store::summary::CallSummary;
use crate::store::{BatchWritten, StoreStats};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio_postgres::GenericClient;

/// A batch ready for its transaction.
pub struct Prepared {
    /// The calls not stored yet, as captured.
    pub calls: Vec<CallRecord>,
    /// Their stored metadata, in the same order.
    pub metas: Vec<CallRecord>,
    /// `(started_us, call id, sealed manifest)` of the calls with content.
    pub manifests: Vec<(u64, String, Vec<u8>)>,
    pub staging: content::Staging,
}

/// The chunks cutting the batch's new calls could build on if they are stored (the
/// first pass; `content.rs` module doc). Nothing is staged or counted.
pub fn probe(
    codec: Arc<Codec>,
    batch: &[CallRecord],
    already_stored: &HashSet<String>,
) -> HashSet<Addr> {
    let mut probe = content::Probe::new(codec);
    let scratch = StoreStats::default();
    for call in batch.iter().filter(|c| !already_stored.contains(&c.id)) {
        let mut meta = metadata_only(call);
        // A failure here fails the same way when the batch is cut for real.
        let _ = store_content(&mut probe, &scratch, call, &mut meta);
    }
    probe.asked()
}

/// Splits the batch's new calls into metadata and staged content, building on the
/// chunks the database held (`stored`, from `probe` and `content::stored_among`).
/// Content failures fail open, as in sled: the call keeps its metadata and a note.
pub fn prepare(
    codec: Arc<Codec>,
    stats: &StoreStats,
    batch: &[CallRecord],
    already_stored: &HashSet<String>,
    stored: HashSet<Addr>,
) -> Prepared {
    let mut prepared = Prepared {
        calls: Vec::with_capacity(batch.len()),
        metas: Vec::with_capacity(batch.len()),
        manifests: Vec::new(),
        staging: content::Staging::with_stored(codec.clone(), stored),
    };
    let mut seen = HashSet::new();
    for call in batch {
        if already_stored.contains(&call.id) || !seen.insert(call.id.as_str()) {
            continue;
        }
        let mut meta = metadata_only(call);
        let has_content = call.request_body.is_some()
            || call.response_body.is_some()
            || call.request.is_some()
            || call.response.is_some()
            || call.metadata.has_prompt_variables();
        if has_content {
            match store_content(&mut prepared.staging, stats, call, &mut meta)
                .and_then(|m| codec.seal(&m.encode()))
            {
                Ok(sealed) => {
                    prepared
                        .manifests
                        .push((call.started_at_us, call.id.clone(), sealed))
                }
                Err(e) => {
                    StoreStats::add(&stats.content_errors, 1);
                    tracing::error!(error = %e, call = %call.id, "cannot store call content; keeping metadata only");
                    meta.parse_notes.push(format!("bodies not stored: {e}"));
                }
            }
        }
        prepared.calls.push(call.clone());
        prepared.metas.push(meta);
    }
    prepared
}

/// Writes a prepared batch in the caller's transaction; returns what the live
/// stream shows of it (the calls and runs this transaction stored or changed).
pub async fn write(
    tx: &impl GenericClient,
    prepared: &Prepared,
    instance: &str,
) -> Result<BatchWritten, PgError> {
    content::write(tx, &prepared.staging).await?;
    let rows: Vec<(&CallRecord, &CallRecord)> =
        prepared.calls.iter().zip(&prepared.metas).collect();
    let new = calls::insert(tx, &rows).await?;
    let manifests: Vec<(u64, String, Vec<u8>)> = prepared
        .manifests
        .iter()
        .filter(|(_, id, _)| new.contains(id))
        .cloned()
        .collect();
    calls::insert_manifests(tx, &manifests).await?;
    let new_calls: Vec<&CallRecord> = prepared
        .calls
        .iter()
        .filter(|c| new.contains(&c.id))
        .collect();
    facets::add(tx, &new_calls).await?;
    let runs = invocations::merge(tx, &new_calls).await?;
    let created: Vec<&InvocationRecord> = runs
        .iter()
        .filter(|r| r.created)
        .map(|r| &r.record)
        .collect();
    rollups::add(tx, &rollup_deltas(&new_calls, &created)).await?;
    sessions::add(tx, &new_calls).await?;
    ratelimits::add(tx, &new_calls).await?;
    let call_ids: Vec<String> = new_calls.iter().map(|c| c.id.clone()).collect();
    let run_ids: Vec<String> = runs.iter().map(|r| r.record.id.clone()).collect();
    if !call_ids.is_empty() {
        for payload in notify::payloads(instance, &call_ids, &run_ids) {
            notify::notify(tx, &payload).await?;
        }
    }
    Ok(BatchWritten {
        calls: new_calls
            .iter()
            .map(|c| CallSummary::from_record(c))
            .collect(),
        invocations: runs.into_iter().map(|r| r.summary).collect(),
    })
}

/// The rollup cells these calls and runs count in (what a batch adds for its new
/// calls and the runs it started; what retention takes off when they go).
pub fn rollup_deltas(
    new_calls: &[&CallRecord],
    new_runs: &[&InvocationRecord],
) -> Vec<rollups::RollupDelta> {
    let mut cells: HashMap<(Vec<u8>, Option<u64>), index::RollupCell> = HashMap::new();
    let bucket = |t: u64| Some(t - t % index::BUCKET_US);
    for call in new_calls {
        let m = &call.metadata;
        for scope in index::scopes(m.tenant.as_deref(), m.agent.as_deref()) {
            cells
                .entry((scope.clone(), bucket(call.started_at_us)))
                .or_default()
                .add_call(call, false);
            cells.entry((scope, None)).or_default().add_call(call, true);
        }
    }
    for inv in new_runs {
        for scope in index::scopes(inv.tenant.as_deref(), inv.agent.as_deref()) {
            cells
                .entry((scope.clone(), bucket(inv.started_at_us)))
                .or_default()
                .invocations += 1;
            cells.entry((scope, None)).or_default().invocations += 1;
        }
    }
    cells
        .into_iter()
        .map(|((scope, bucket_us), cell)| rollups::RollupDelta {
            scope,
            bucket_us,
            cell,
        })
        .collect()
}
