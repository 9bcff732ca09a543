//! Recomputing stored costs with the current price table (`llmtap reprice`) on
//! PostgreSQL, with sled's rules (`store/sled/reprice.rs`): only cost changes; each
//! changed call's row (record, summary, `cost_pusd`) is rewritten, its run is
//! rolled up again from its calls, and the 15-minute and all-time rollups move by
//! the difference. The pricer runs on the caller's thread (it is not `Send`), so the
//! engine reads calls a chunk at a time (`candidates`), prices them, and writes each
//! chunk's changes in one transaction (`apply`).

use super::{invocations, rollups, text, PgError};
use crate::record::CallRecord;
use crate::store::plan::{repriced_deltas, Listed, RollupSum};
use std::collections::BTreeSet;
use tokio_postgres::GenericClient;

/// Calls read and priced per step.
pub const CHUNK: i64 = 1000;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The next calls that started in `[from_us, to_us)`, after the position, in start
/// order.
pub async fn candidates(
    client: &impl GenericClient,
    from_us: u64,
    to_us: u64,
    after: &(i64, String),
) -> Result<Vec<CallRecord>, PgError> {
    client
        .query(
            "SELECT id, record FROM calls WHERE started_us >= $1 AND started_us < $2 \
             AND (started_us, id) > ($3, $4) ORDER BY started_us, id LIMIT $5",
            &[&to_i64(from_us), &to_i64(to_us), &after.0, &after.1, &CHUNK],
        )
        .await?
        .into_iter()
        .map(|row| {
            let id: &str = row.get(0);
            serde_json::from_value(row.get(1))
                .map_err(|e| PgError::Decode(format!("call {id}: {e}")))
        })
        .collect()
}

/// Stores the repriced calls (each with the picodollars it counted for before) and
/// rolls their runs up again; returns the runs rolled up.
pub async fn apply(
    client: &impl GenericClient,
    changed: &[(CallRecord, u64)],
) -> Result<u64, PgError> {
    let (mut added, mut taken) = (RollupSum::default(), RollupSum::default());
    let mut runs = BTreeSet::new();
    for (call, old_pusd) in changed {
        let summary = Listed::of(call).summary;
        client
            .execute(
                "UPDATE calls SET record = $3, summary = $4, cost_pusd = $5 \
                 WHERE started_us = $1 AND id = $2",
                &[
                    &to_i64(call.started_at_us),
                    &call.id,
                    &text::json(call)?,
                    &text::json(&summary)?,
                    &summary.cost_pusd().map(to_i64),
                ],
            )
            .await?;
        let (add, take) = repriced_deltas(call, *old_pusd);
        added.add(add);
        taken.add(take);
        runs.insert(call.invocation_id.clone());
    }
    rollups::add(client, &added.into_deltas()).await?;
    rollups::subtract(client, &taken.into_deltas()).await?;
    let mut rolled = 0;
    for id in &runs {
        if invocations::reroll(client, id).await? {
            rolled += 1;
        }
    }
    Ok(rolled)
}
