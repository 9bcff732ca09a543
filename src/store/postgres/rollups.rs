//! Rollups in PostgreSQL: a batch's `RollupCell` deltas (`plan::rollup_deltas`) added with one
//! multi-row upsert (`x = llmtap_sat_add(x, excluded.x)`), so instances writing the
//! same cells at once lose no update and need no lock of ours; reads merge the stored
//! cells with `RollupCell::merge`, as the sled engine does.
//!
//! Rows are upserted in (scope, bucket) order, so two instances' batches lock shared
//! rows in the same order and cannot deadlock each other.

use super::PgError;
use crate::store::index::{RollupCell, BUCKET_US};
use crate::store::plan::RollupDelta;
use crate::store::types::BucketRange;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

/// The `bucket_us` of a scope's all-time cell (the one with the latency histogram).
pub const ALL_TIME: i64 = -1;

/// Parameters per row of the upsert; rows per statement stay far below PostgreSQL's
/// 65,535 parameters.
const COLUMNS: usize = 12;
const ROWS_PER_STATEMENT: usize = 1000;

fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_db(n: i64) -> u64 {
    n.max(0) as u64
}

fn bucket_of(delta: &RollupDelta) -> i64 {
    delta
        .bucket_us
        .map_or(ALL_TIME, |t| to_db(t - t % BUCKET_US))
}

/// One row of the upsert: scope, bucket, the nine counters, the histogram.
type Row<'a> = (&'a [u8], i64, [i64; 9], Vec<i64>);

/// Adds every delta to its stored cell (creating it), in one statement per 1,000 cells.
pub async fn add(client: &impl GenericClient, deltas: &[RollupDelta]) -> Result<(), PgError> {
    apply(client, deltas, 1).await
}

/// Takes every delta off its stored cell (retention: the calls are gone); counters
/// stop at zero.
pub async fn subtract(client: &impl GenericClient, deltas: &[RollupDelta]) -> Result<(), PgError> {
    apply(client, deltas, -1).await
}

async fn apply(
    client: &impl GenericClient,
    deltas: &[RollupDelta],
    sign: i64,
) -> Result<(), PgError> {
    let signed = |n: u64| to_db(n).saturating_mul(sign);
    let mut rows: Vec<Row<'_>> = deltas
        .iter()
        .map(|d| {
            let c = &d.cell;
            (
                d.scope.as_slice(),
                bucket_of(d),
                [
                    c.calls,
                    c.errors,
                    c.invocations,
                    c.cost_pusd,
                    c.input_tokens,
                    c.output_tokens,
                    c.latency_sum_us,
                    c.tool_calls,
                    c.tool_failures,
                ]
                .map(signed),
                c.hist.iter().map(|&n| signed(n)).collect(),
            )
        })
        .collect();
    rows.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    // Two deltas of one cell in a batch would make the upsert touch a row twice.
    rows.dedup_by(|later, first| {
        if (later.0, later.1) != (first.0, first.1) {
            return false;
        }
        for (a, b) in first.2.iter_mut().zip(later.2) {
            *a = a.saturating_add(b);
        }
        if first.3.len() < later.3.len() {
            first.3.resize(later.3.len(), 0);
        }
        for (a, b) in first.3.iter_mut().zip(&later.3) {
            *a = a.saturating_add(*b);
        }
        true
    });
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO rollups (scope, bucket_us, calls, errors, invocations, cost_pusd, \
             input_tokens, output_tokens, latency_sum_us, tool_calls, tool_failures, hist) \
             VALUES ",
        );
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * COLUMNS);
        for (i, (scope, bucket, counters, hist)) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            let base = i * COLUMNS;
            sql.push('(');
            for p in 1..=COLUMNS {
                if p > 1 {
                    sql.push(',');
                }
                sql.push_str(&format!("${}", base + p));
            }
            sql.push(')');
            params.push(scope);
            params.push(bucket);
            for n in counters {
                params.push(n);
            }
            params.push(hist);
        }
        sql.push_str(
            " ON CONFLICT (scope, bucket_us) DO UPDATE SET \
             calls = llmtap_sat_add(rollups.calls, excluded.calls), \
             errors = llmtap_sat_add(rollups.errors, excluded.errors), \
             invocations = llmtap_sat_add(rollups.invocations, excluded.invocations), \
             cost_pusd = llmtap_sat_add(rollups.cost_pusd, excluded.cost_pusd), \
             input_tokens = llmtap_sat_add(rollups.input_tokens, excluded.input_tokens), \
             output_tokens = llmtap_sat_add(rollups.output_tokens, excluded.output_tokens), \
             latency_sum_us = llmtap_sat_add(rollups.latency_sum_us, excluded.latency_sum_us), \
             tool_calls = llmtap_sat_add(rollups.tool_calls, excluded.tool_calls), \
             tool_failures = llmtap_sat_add(rollups.tool_failures, excluded.tool_failures), \
             hist = llmtap_hist_add(rollups.hist, excluded.hist)",
        );
        client.execute(sql.as_str(), &params).await?;
    }
    Ok(())
}

const SELECT: &str = "SELECT scope, calls, errors, invocations, cost_pusd, input_tokens, \
                      output_tokens, latency_sum_us, hist, tool_calls, tool_failures FROM rollups";

fn cell(row: &tokio_postgres::Row) -> RollupCell {
    let n = |i: usize| from_db(row.get::<_, i64>(i));
    RollupCell {
        calls: n(1),
        errors: n(2),
        invocations: n(3),
        cost_pusd: n(4),
        input_tokens: n(5),
        output_tokens: n(6),
        latency_sum_us: n(7),
        hist: row.get::<_, Vec<i64>>(8).into_iter().map(from_db).collect(),
        tool_calls: n(9),
        tool_failures: n(10),
    }
}

/// Sum of the buckets of `scope` in the range (sled's `rollup_range`).
pub async fn range(
    client: &impl GenericClient,
    scope: &[u8],
    buckets: BucketRange,
) -> Result<RollupCell, PgError> {
    let rows = client
        .query(
            &format!("{SELECT} WHERE scope = $1 AND bucket_us >= $2 AND bucket_us < $3"),
            &[&scope, &to_db(buckets.first_us), &to_db(buckets.end_us)],
        )
        .await?;
    let mut total = RollupCell::default();
    for row in &rows {
        total.merge(&cell(row));
    }
    Ok(total)
}

/// All-time counters of one scope (sled's `rollup_total`).
pub async fn total(client: &impl GenericClient, scope: &[u8]) -> Result<RollupCell, PgError> {
    let row = client
        .query_opt(
            &format!("{SELECT} WHERE scope = $1 AND bucket_us = $2"),
            &[&scope, &ALL_TIME],
        )
        .await?;
    Ok(row.as_ref().map(cell).unwrap_or_default())
}

/// All-time counters of every scope starting with `prefix`, in scope order (sled's
/// `rollup_scopes`).
pub async fn scopes(
    client: &impl GenericClient,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, RollupCell)>, PgError> {
    let rows = match prefix_end(prefix) {
        Some(end) => {
            client
                .query(
                    &format!(
                    "{SELECT} WHERE bucket_us = $1 AND scope >= $2 AND scope < $3 ORDER BY scope"
                ),
                    &[&ALL_TIME, &prefix, &end],
                )
                .await?
        }
        None => {
            client
                .query(
                    &format!("{SELECT} WHERE bucket_us = $1 AND scope >= $2 ORDER BY scope"),
                    &[&ALL_TIME, &prefix],
                )
                .await?
        }
    };
    Ok(rows
        .iter()
        .map(|row| (row.get::<_, Vec<u8>>(0), cell(row)))
        .collect())
}

/// The smallest byte string above every string that starts with `prefix` (none when
/// the prefix is empty or all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_string_after_the_prefix_range() {
        assert_eq!(prefix_end(b"A"), Some(b"B".to_vec()));
        assert_eq!(prefix_end(&[b'T', 0xff]), Some(b"U".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn counters_beyond_bigint_saturate_instead_of_wrapping() {
        assert_eq!(to_db(u64::MAX), i64::MAX);
        assert_eq!(from_db(-5), 0);
        let d = RollupDelta {
            scope: b"*".to_vec(),
            bucket_us: Some(BUCKET_US + 7),
            cell: RollupCell::default(),
        };
        assert_eq!(bucket_of(&d), BUCKET_US as i64);
        assert_eq!(
            bucket_of(&RollupDelta {
                bucket_us: None,
                ..d
            }),
            ALL_TIME
        );
    }
}
