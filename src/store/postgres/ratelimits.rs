//! Rate-limit state and series: `ratelimits` (latest state per provider, key
//! fingerprint and model) and `ratelimit_points` (each call's remaining capacity,
//! and its 429s).
//!
//! A batch's calls with rate-limit headers or a 429 (`plan::derive`'s notes, by
//! key) are folded into their keys' states with `RateLimitNotes::fold`, as sled
//! does, under one transaction advisory lock per key (sorted, taken after the
//! runs' locks, so instances never wait on each other in a cycle): read, fold in
//! start order, upsert. Since `note`
//! lets the latest-started call win whatever order calls arrive in, the state is
//! what one writer would keep. Points are inserted once per (key, time, call).

use super::{text, PgError};
use crate::record::CallRecord;
use crate::store::index::{RateLimitPoint, RateLimitState};
use crate::store::plan::RateLimitNotes;
use crate::store::types::RateLimitKey;
use std::collections::BTreeMap;
use tokio_postgres::GenericClient;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: serde_json::Value) -> Result<T, PgError> {
    serde_json::from_value(v).map_err(|e| PgError::Decode(format!("{what}: {e}")))
}

/// Folds the batch's rate-limit notes (`plan::derive`, in key order) into the
/// stored state and series.
pub async fn add(client: &impl GenericClient, notes: &[RateLimitNotes<'_>]) -> Result<(), PgError> {
    if notes.is_empty() {
        return Ok(());
    }
    let locks = notes
        .iter()
        .map(|n| {
            let mut named = b"ratelimit\0".to_vec();
            named.extend_from_slice(&n.key);
            super::invocations::lock_key(&String::from_utf8_lossy(&named))
        })
        .collect();
    super::invocations::lock_in_order(client, locks).await?;
    // A rate-limit key's columns: provider, key fingerprint, model (`""` when none).
    let keys: Vec<(String, String, String)> = notes
        .iter()
        .map(|n| {
            let key = RateLimitKey::from_key(&n.key);
            (key.provider, key.key_fingerprint, key.model)
        })
        .collect();
    let (providers, fingerprints, models): (Vec<String>, Vec<String>, Vec<String>) = (
        keys.iter().map(|k| text::owned(k.0.clone())).collect(),
        keys.iter().map(|k| text::owned(k.1.clone())).collect(),
        keys.iter().map(|k| text::owned(k.2.clone())).collect(),
    );
    let mut stored: BTreeMap<(String, String, String), RateLimitState> = BTreeMap::new();
    for row in client
        .query(
            "SELECT r.provider, r.key_fingerprint, r.model, r.state FROM ratelimits r \
             JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(p, f, m) \
             ON r.provider = k.p AND r.key_fingerprint = k.f AND r.model = k.m",
            &[&providers, &fingerprints, &models],
        )
        .await?
    {
        let key = (row.get(0), row.get(1), row.get(2));
        stored.insert(key, decode("rate-limit state", row.get(3))?);
    }
    let mut state_rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut points = PointRows::default();
    for (key_notes, cols) in notes.iter().zip(keys) {
        let cleaned = (
            text::owned(cols.0.clone()),
            text::owned(cols.1.clone()),
            text::owned(cols.2.clone()),
        );
        let (state, noted) = key_notes.fold(stored.remove(&cleaned));
        for (call, noted) in key_notes.calls.iter().zip(noted) {
            points.push(&cleaned, call, noted.limited, &noted.point)?;
        }
        state_rows.0.push(cleaned.0);
        state_rows.1.push(cleaned.1);
        state_rows.2.push(cleaned.2);
        state_rows.3.push(to_i64(state.at_us));
        state_rows.4.push(text::json(&state)?);
    }
    client
        .execute(
            "INSERT INTO ratelimits (provider, key_fingerprint, model, at_us, state) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::jsonb[]) \
             ON CONFLICT (provider, key_fingerprint, model) DO UPDATE \
             SET at_us = excluded.at_us, state = excluded.state",
            &[
                &state_rows.0,
                &state_rows.1,
                &state_rows.2,
                &state_rows.3,
                &state_rows.4,
            ],
        )
        .await?;
    client
        .execute(
            "INSERT INTO ratelimit_points (provider, key_fingerprint, model, at_us, call_id, \
             is_429, retry_after_s, point) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
             $6::boolean[], $7::float8[], $8::jsonb[]) ON CONFLICT DO NOTHING",
            &[
                &points.providers,
                &points.fingerprints,
                &points.models,
                &points.at,
                &points.call_ids,
                &points.limited,
                &points.retry_after,
                &points.points,
            ],
        )
        .await?;
    Ok(())
}

#[derive(Default)]
struct PointRows {
    providers: Vec<String>,
    fingerprints: Vec<String>,
    models: Vec<String>,
    at: Vec<i64>,
    call_ids: Vec<String>,
    limited: Vec<bool>,
    retry_after: Vec<Option<f64>>,
    points: Vec<serde_json::Value>,
}

impl PointRows {
    fn push(
        &mut self,
        key: &(String, String, String),
        call: &CallRecord,
        limited: Option<Option<f64>>,
        point: &RateLimitPoint,
    ) -> Result<(), PgError> {
        self.providers.push(key.0.clone());
        self.fingerprints.push(key.1.clone());
        self.models.push(key.2.clone());
        self.at.push(to_i64(call.started_at_us));
        self.call_ids.push(call.id.clone());
        self.limited.push(limited.is_some());
        self.retry_after.push(limited.flatten());
        self.points.push(text::json(point)?);
        Ok(())
    }
}

/// The latest state of every key, in key order (as sled iterates them).
pub async fn states(
    client: &impl GenericClient,
) -> Result<Vec<(RateLimitKey, RateLimitState)>, PgError> {
    let mut out = Vec::new();
    for row in client
        .query(
            "SELECT provider, key_fingerprint, model, state FROM ratelimits",
            &[],
        )
        .await?
    {
        let (p, f, m): (&str, &str, &str) = (row.get(0), row.get(1), row.get(2));
        let key = RateLimitKey::new(p, Some(f), Some(m));
        out.push((key, decode("rate-limit state", row.get(3))?));
    }
    out.sort_by_cached_key(|(key, _)| key.key());
    Ok(out)
}

/// 429 answers of one key since the time.
pub async fn count_429_since(
    client: &impl GenericClient,
    key: &RateLimitKey,
    since_us: u64,
) -> Result<u64, PgError> {
    let (p, f, m) = (&key.provider, &key.key_fingerprint, &key.model);
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM ratelimit_points WHERE provider = $1 AND key_fingerprint = $2 \
             AND model = $3 AND is_429 AND at_us >= $4",
            &[&p, &f, &m, &to_i64(since_us)],
        )
        .await?
        .get(0);
    Ok(n.max(0) as u64)
}

/// The newest `max` points of one key from the time, chronological.
pub async fn series(
    client: &impl GenericClient,
    key: &RateLimitKey,
    from_us: u64,
    max: usize,
) -> Result<Vec<RateLimitPoint>, PgError> {
    let (p, f, m) = (&key.provider, &key.key_fingerprint, &key.model);
    let rows = client
        .query(
            "SELECT point FROM ratelimit_points WHERE provider = $1 AND key_fingerprint = $2 \
             AND model = $3 AND at_us >= $4 ORDER BY at_us DESC, call_id DESC LIMIT $5",
            &[&p, &f, &m, &to_i64(from_us), &to_i64(max as u64)],
        )
        .await?;
    let mut out = rows
        .into_iter()
        .map(|r| decode("rate-limit point", r.get(0)))
        .collect::<Result<Vec<RateLimitPoint>, PgError>>()?;
    out.reverse();
    Ok(out)
}
