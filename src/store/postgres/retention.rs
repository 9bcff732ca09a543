//! Retention on PostgreSQL: whole UTC days at a time, by dropping partitions.
//!
//! `retention_days`: once a day lies wholly before the cutoff, one transaction per
//! day takes the content sweep lock alone (`content::SWEEP_LOCK`; writers share it),
//! releases the content references of the day's manifests (`content::release`,
//! freeing pieces at zero), takes the day's calls off the rollups, drops the day's
//! partitions of `calls`, `call_content` and `ratelimit_points`
//! (`llmtap_drop_partitions_before`; rows of the default partitions older than that
//! are deleted) with the day's facet counts, and deletes the runs that ended before
//! it and kept no call. No large DELETE, no index bloat: the data goes with its
//! table. Calls are kept up to
//! one day longer than `retention_days` says, since their day must end first.
//!
//! `body_retention_days`: calls older than that lose their content (bodies, parsed
//! views, `q` texts) and keep their metadata, with a note, 500 per transaction.
//! Both are safe to run while instances write, and from several instances at once
//! (the sweep lock serialises them; a day already dropped is not found again).

use super::{content, rollups, PgError};
use crate::record::{CallRecord, InvocationRecord};
use crate::store::content::Codec;
use crate::store::crypto::Addr;
use crate::store::plan::rollup_deltas;
use crate::store::types::SweepReport;
use crate::store::StoreError;
use std::collections::HashMap;

const DAY_US: u64 = 86_400_000_000;
/// Manifests read per query.
const CHUNK: i64 = 1000;
/// Calls whose bodies one transaction drops.
const BODY_BATCH: i64 = 500;

/// The note a call whose bodies were dropped carries (as on sled).
pub const BODIES_REMOVED: &str = "bodies removed by store.body_retention_days";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: serde_json::Value) -> Result<T, PgError> {
    serde_json::from_value(v).map_err(|e| PgError::Decode(format!("{what}: {e}")))
}

/// Adds each manifest's roots to `roots` (one reference per root and manifest).
fn count_roots(
    codec: &Codec,
    manifests: &[(String, Vec<u8>)],
    roots: &mut HashMap<Addr, i64>,
) -> Result<(), StoreError> {
    for (id, sealed) in manifests {
        let m = super::engine::open_manifest(codec, id, sealed)?;
        for root in m.roots() {
            *roots.entry(*root).or_default() += 1;
        }
    }
    Ok(())
}

/// One retention pass as of `now_us`.
pub async fn sweep(
    client: &mut tokio_postgres::Client,
    codec: &Codec,
    now_us: u64,
    retention_days: u64,
    body_retention_days: u64,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    if retention_days > 0 {
        let cutoff = now_us.saturating_sub(retention_days * DAY_US);
        let cutoff_day = cutoff - cutoff % DAY_US;
        loop {
            let oldest: Option<i64> = client
                .query_one(
                    "SELECT min(started_us) FROM calls WHERE started_us < $1",
                    &[&to_i64(cutoff_day)],
                )
                .await
                .map_err(PgError::from)?
                .get(0);
            let Some(oldest) = oldest else { break };
            let oldest = oldest.max(0) as u64;
            let day_end = (oldest - oldest % DAY_US + DAY_US).min(cutoff_day);
            drop_day(client, codec, day_end, &mut report).await?;
        }
        // Runs that ended before the cutoff with no call left (their calls went with
        // earlier days, or they had none here).
        let tx = client.transaction().await.map_err(PgError::from)?;
        let runs = delete_runs(&tx, cutoff_day).await?;
        report.invocations_deleted += runs;
        tx.commit().await.map_err(PgError::from)?;
    }
    if body_retention_days > 0 && (retention_days == 0 || body_retention_days < retention_days) {
        let cutoff = to_i64(now_us.saturating_sub(body_retention_days * DAY_US));
        loop {
            let tx = client.transaction().await.map_err(PgError::from)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&content::SWEEP_LOCK])
                .await
                .map_err(PgError::from)?;
            let manifests: Vec<(String, Vec<u8>)> = tx
                .query(
                    "DELETE FROM call_content WHERE (started_us, call_id) IN \
                     (SELECT started_us, call_id FROM call_content WHERE started_us < $1 \
                      ORDER BY started_us, call_id LIMIT $2) RETURNING call_id, manifest",
                    &[&cutoff, &BODY_BATCH],
                )
                .await
                .map_err(PgError::from)?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            if manifests.is_empty() {
                break;
            }
            let mut roots = HashMap::new();
            count_roots(codec, &manifests, &mut roots)?;
            let freed = content::release(&tx, codec, roots).await?;
            let ids: Vec<&str> = manifests.iter().map(|m| m.0.as_str()).collect();
            tx.execute(
                "UPDATE calls SET record = jsonb_set(record, '{parse_notes}', \
                 coalesce(record->'parse_notes', '[]'::jsonb) || to_jsonb($2::text)) \
                 WHERE id = ANY($1)",
                &[&ids, &BODIES_REMOVED],
            )
            .await
            .map_err(PgError::from)?;
            tx.commit().await.map_err(PgError::from)?;
            report.bodies_dropped += manifests.len() as u64;
            report.chunks_freed += freed.chunks;
            report.blobs_freed += freed.blobs;
        }
    }
    // What died above, and in earlier periods, leaves the disk with its period key.
    let (keys, values) = super::shred::shred(client, codec).await?;
    report.keys_shredded += keys;
    report.values_resealed += values;
    Ok(report)
}

/// Drops everything of the calls that started before `day_end` (one day's worth,
/// the earlier days being gone already), in one transaction.
async fn drop_day(
    client: &mut tokio_postgres::Client,
    codec: &Codec,
    day_end: u64,
    report: &mut SweepReport,
) -> Result<(), StoreError> {
    let end = to_i64(day_end);
    let tx = client.transaction().await.map_err(PgError::from)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&content::SWEEP_LOCK])
        .await
        .map_err(PgError::from)?;
    // The content references of the day's manifests, read by keyset.
    let mut roots: HashMap<Addr, i64> = HashMap::new();
    let mut after = (i64::MIN, String::new());
    loop {
        let rows: Vec<(i64, String, Vec<u8>)> = tx
            .query(
                "SELECT started_us, call_id, manifest FROM call_content WHERE started_us < $1 \
                 AND (started_us, call_id) > ($2, $3) ORDER BY started_us, call_id LIMIT $4",
                &[&end, &after.0, &after.1, &CHUNK],
            )
            .await
            .map_err(PgError::from)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let Some(last) = rows.last() else { break };
        after = (last.0, last.1.clone());
        let manifests: Vec<(String, Vec<u8>)> =
            rows.into_iter().map(|(_, id, m)| (id, m)).collect();
        count_roots(codec, &manifests, &mut roots)?;
    }
    // What the day's calls added to the rollups, read the same way.
    let mut deltas = Vec::new();
    let mut after = (i64::MIN, String::new());
    loop {
        let rows = tx
            .query(
                "SELECT started_us, id, record FROM calls WHERE started_us < $1 \
                 AND (started_us, id) > ($2, $3) ORDER BY started_us, id LIMIT $4",
                &[&end, &after.0, &after.1, &CHUNK],
            )
            .await
            .map_err(PgError::from)?;
        let Some(last) = rows.last() else { break };
        after = (last.get(0), last.get(1));
        let calls = rows
            .into_iter()
            .map(|r| decode::<CallRecord>("call", r.get(2)))
            .collect::<Result<Vec<_>, _>>()?;
        report.calls_deleted += calls.len() as u64;
        deltas.extend(rollup_deltas(&calls, []));
    }
    let freed = content::release(&tx, codec, roots).await?;
    rollups::subtract(&tx, &deltas).await?;
    // Dropped partitions fire no delete trigger: their periods become due here.
    tx.execute(
        "INSERT INTO content_shred_due (slot) SELECT DISTINCT sealed_in FROM call_content \
         WHERE started_us < $1 AND sealed_in IS NOT NULL ON CONFLICT DO NOTHING",
        &[&end],
    )
    .await
    .map_err(PgError::from)?;
    tx.execute("SELECT llmtap_drop_partitions_before($1)", &[&end])
        .await
        .map_err(PgError::from)?;
    super::facets::drop_before(&tx, end).await?;
    tx.commit().await.map_err(PgError::from)?;
    report.chunks_freed += freed.chunks;
    report.blobs_freed += freed.blobs;
    tracing::info!(
        day_end_us = day_end,
        deleted = report.calls_deleted,
        "retention: dropped a day of calls"
    );
    Ok(())
}

/// Deletes the runs that ended before the time and have no call left, and takes
/// them off the rollups.
async fn delete_runs(
    client: &impl tokio_postgres::GenericClient,
    before: u64,
) -> Result<u64, StoreError> {
    let rows = client
        .query(
            "DELETE FROM invocations i WHERE ended_us < $1 \
             AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.invocation_id = i.id) RETURNING record",
            &[&to_i64(before)],
        )
        .await
        .map_err(PgError::from)?;
    let runs = rows
        .into_iter()
        .map(|r| decode::<InvocationRecord>("run", r.get(0)))
        .collect::<Result<Vec<_>, _>>()?;
    rollups::subtract(client, &rollup_deltas([], &runs)).await?;
    Ok(runs.len() as u64)
}

/// Deletes one call and what is keyed by it, as `SledStore::delete_call` does: its
/// row and manifest, its content references (pieces at zero are freed), and what it
/// added to the rollups and the facet counts. Its run keeps its totals and its
/// rate-limit points stay, as on sled. Under the sweep lock, like retention, so no
/// writer references a piece this frees. Returns false when there was no such call.
pub async fn delete_call(
    client: &mut tokio_postgres::Client,
    codec: &Codec,
    id: &str,
) -> Result<bool, StoreError> {
    let tx = client.transaction().await.map_err(PgError::from)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&content::SWEEP_LOCK])
        .await
        .map_err(PgError::from)?;
    let Some(row) = tx
        .query_opt(
            "DELETE FROM calls WHERE id = $1 RETURNING started_us, record",
            &[&id],
        )
        .await
        .map_err(PgError::from)?
    else {
        return Ok(false);
    };
    let started: i64 = row.get(0);
    let call = decode::<CallRecord>("call", row.get(1))?;
    let manifests: Vec<(String, Vec<u8>)> = tx
        .query(
            "DELETE FROM call_content WHERE started_us = $1 AND call_id = $2 RETURNING manifest",
            &[&started, &id],
        )
        .await
        .map_err(PgError::from)?
        .into_iter()
        .map(|r| (id.to_string(), r.get(0)))
        .collect();
    let mut roots = HashMap::new();
    count_roots(codec, &manifests, &mut roots)?;
    content::release(&tx, codec, roots).await?;
    rollups::subtract(&tx, &rollup_deltas([&call], [])).await?;
    let listed = crate::store::plan::Listed::of(&call);
    super::facets::subtract(&tx, &[&listed.summary]).await?;
    tx.commit().await.map_err(PgError::from)?;
    Ok(true)
}
