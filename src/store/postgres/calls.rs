//! The `calls` rows: one per call, with the columns the list filters need, the
//! call's metadata (`store::stored::metadata_only`, the same JSON sled keeps) and
//! its list summary (`CallSummary`), both as the batch's plan made them
//! (`plan::StoredCall`). Inserted for a whole batch in one statement
//! (`unnest` over column arrays); a call already stored (the capture log replayed,
//! by this instance or another) is left as it is, so writes are idempotent by id.
//!
//! An invocation's calls are read in (started_us, id) order, with the rounds the
//! batch that stored them numbered (`agent_loop::fold_run`, in `invocations::merge`,
//! under the run's lock, so every instance agrees).

use super::PgError;
use crate::agent_loop::Place;
use crate::record::CallRecord;
use crate::store::plan::StoredCall;
use std::collections::HashSet;
use tokio_postgres::GenericClient;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// JSON for a `jsonb` column (NUL replaced, see `text.rs`).
fn encode(value: &impl serde::Serialize) -> Result<serde_json::Value, PgError> {
    super::text::json(value)
}

/// Inserts the batch's calls as planned (the columns read from the stored
/// metadata, the summary as the plan made it); returns the ids that were new.
pub async fn insert(
    client: &impl GenericClient,
    calls: &[StoredCall],
) -> Result<HashSet<String>, PgError> {
    if calls.is_empty() {
        return Ok(HashSet::new());
    }
    let n = calls.len();
    let mut started = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    let mut invocations = Vec::with_capacity(n);
    let mut rounds = Vec::with_capacity(n);
    let mut text: [Vec<Option<String>>; 12] = Default::default();
    let mut providers = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut http = Vec::with_capacity(n);
    let mut latency = Vec::with_capacity(n);
    let mut cost = Vec::with_capacity(n);
    let mut input = Vec::with_capacity(n);
    let mut output = Vec::with_capacity(n);
    let mut properties = Vec::with_capacity(n);
    let mut records = Vec::with_capacity(n);
    let mut summaries = Vec::with_capacity(n);
    for StoredCall {
        meta: call, listed, ..
    } in calls
    {
        let summary = &listed.summary;
        started.push(to_i64(call.started_at_us));
        ids.push(call.id.clone());
        invocations.push(call.invocation_id.clone());
        rounds.push(i32::try_from(call.round).unwrap_or(i32::MAX));
        let m = &call.metadata;
        let columns = [
            m.tenant.clone(),
            m.agent.clone(),
            call.model.clone(),
            call.response_model.clone(),
            call.status.map(|s| s.as_str().to_string()),
            m.trigger.clone(),
            m.user_id.clone(),
            m.session_id.clone(),
            m.prompt.clone(),
            m.task_id.clone(),
            call.api_key_fingerprint.clone(),
            None,
        ];
        for (column, value) in text.iter_mut().zip(columns) {
            column.push(super::text::opt(value));
        }
        providers.push(super::text::owned(call.provider.clone()));
        kinds.push(super::text::owned(call.kind.clone()));
        http.push(call.http_status.map(i32::from));
        latency.push((call.latency_ms * 1000.0).round().max(0.0) as i64);
        cost.push(summary.cost_pusd().map(to_i64));
        input.push(call.usage.input_tokens.map(to_i64));
        output.push(call.usage.output_tokens.map(to_i64));
        properties.push(encode(&m.properties)?);
        records.push(encode(call)?);
        summaries.push(encode(summary)?);
    }
    let [tenant, agent, model, response_model, status, trigger, user_id, session_id, prompt, task_id, fingerprint, _] =
        &text;
    let inserted = client
        .query(
            "INSERT INTO calls (started_us, id, invocation_id, round, tenant, agent, provider, kind, \
             model, response_model, status, http_status, trigger, user_id, session_id, prompt, \
             task_id, key_fingerprint, latency_us, cost_pusd, input_tokens, output_tokens, \
             properties, record, summary) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int[], \
             $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], \
             $19::bigint[], $20::bigint[], $21::bigint[], $22::bigint[], $23::jsonb[], \
             $24::jsonb[], $25::jsonb[]) \
             ON CONFLICT DO NOTHING RETURNING id",
            &[
                &started,
                &ids,
                &invocations,
                &rounds,
                tenant,
                agent,
                &providers,
                &kinds,
                model,
                response_model,
                status,
                &http,
                trigger,
                user_id,
                session_id,
                prompt,
                task_id,
                fingerprint,
                &latency,
                &cost,
                &input,
                &output,
                &properties,
                &records,
                &summaries,
            ],
        )
        .await?;
    Ok(inserted.iter().map(|r| r.get(0)).collect())
}

/// Stores the sealed content manifests of new calls: (started_us, id, manifest).
pub async fn insert_manifests(
    client: &impl GenericClient,
    manifests: &[(u64, &str, &[u8])],
) -> Result<(), PgError> {
    if manifests.is_empty() {
        return Ok(());
    }
    let started: Vec<i64> = manifests.iter().map(|m| to_i64(m.0)).collect();
    let ids: Vec<&str> = manifests.iter().map(|m| m.1).collect();
    let values: Vec<&[u8]> = manifests.iter().map(|m| m.2).collect();
    client
        .execute(
            "INSERT INTO call_content (started_us, call_id, manifest) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bytea[]) ON CONFLICT DO NOTHING",
            &[&started, &ids, &values],
        )
        .await?;
    Ok(())
}

/// A call's sealed manifest.
pub async fn manifest(client: &impl GenericClient, id: &str) -> Result<Option<Vec<u8>>, PgError> {
    Ok(client
        .query_opt(
            "SELECT manifest FROM call_content WHERE call_id = $1",
            &[&id],
        )
        .await?
        .map(|r| r.get(0)))
}

/// The sealed manifests of these calls (those that have content).
pub async fn manifests(
    client: &impl GenericClient,
    ids: &[String],
) -> Result<Vec<(String, Vec<u8>)>, PgError> {
    Ok(client
        .query(
            "SELECT call_id, manifest FROM call_content WHERE call_id = ANY($1)",
            &[&ids],
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Of these ids, the calls already stored (a replayed capture log).
pub async fn stored_ids(
    client: &impl GenericClient,
    ids: &[&str],
) -> Result<HashSet<String>, PgError> {
    Ok(client
        .query("SELECT id FROM calls WHERE id = ANY($1)", &[&ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// A run's stored LLM calls (metadata) that started at or after `from_us`, and the
/// latest one before (`agent_loop::late_from`), for the batch's merge.
pub async fn run_loop_calls(
    client: &impl GenericClient,
    invocation_id: &str,
    from_us: u64,
) -> Result<Vec<CallRecord>, PgError> {
    let from = i64::try_from(from_us).unwrap_or(i64::MAX);
    let not_rounds: Vec<&str> = crate::record::NOT_ROUND_KINDS.to_vec();
    let rows = client
        .query(
            "(SELECT id, record FROM calls WHERE invocation_id = $1 AND started_us >= $2 \
              AND kind <> ALL($3)) \
             UNION ALL \
             (SELECT id, record FROM calls WHERE invocation_id = $1 AND started_us < $2 \
              AND kind <> ALL($3) ORDER BY started_us DESC, id DESC LIMIT 1)",
            &[&invocation_id, &from, &not_rounds],
        )
        .await?;
    rows.into_iter()
        .map(|row| decode(row.get::<_, &str>(0), row.get(1)))
        .collect()
}

/// Sets the places of stored calls (`agent_loop::fold_run` moved them, or numbered a
/// new call otherwise than its writer did): the `round` column and the record's and
/// summary's `round` and `retry`.
pub async fn set_places(
    client: &impl GenericClient,
    places: &[(String, u64, Place)],
) -> Result<(), PgError> {
    if places.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = places.iter().map(|p| p.0.as_str()).collect();
    let started: Vec<i64> = places.iter().map(|p| to_i64(p.1)).collect();
    let rounds: Vec<i32> = places
        .iter()
        .map(|p| i32::try_from(p.2.round).unwrap_or(i32::MAX))
        .collect();
    let retries: Vec<i32> = places
        .iter()
        .map(|p| i32::try_from(p.2.retry()).unwrap_or(i32::MAX))
        .collect();
    client
        .execute(
            "UPDATE calls AS c SET round = u.round, \
             record = jsonb_set(jsonb_set(c.record, '{round}', to_jsonb(u.round)), '{retry}', to_jsonb(u.retry)), \
             summary = jsonb_set(jsonb_set(c.summary, '{round}', to_jsonb(u.round)), '{retry}', to_jsonb(u.retry)) \
             FROM unnest($1::text[], $2::bigint[], $3::int[], $4::int[]) AS u(id, started_us, round, retry) \
             WHERE c.id = u.id AND c.started_us = u.started_us",
            &[&ids, &started, &rounds, &retries],
        )
        .await?;
    Ok(())
}

/// An invocation's calls' metadata in round order.
pub async fn of_invocation(
    client: &impl GenericClient,
    invocation_id: &str,
) -> Result<Vec<CallRecord>, PgError> {
    let calls = client
        .query(
            "SELECT id, record FROM calls WHERE invocation_id = $1 ORDER BY started_us, id",
            &[&invocation_id],
        )
        .await?
        .into_iter()
        .map(|row| decode(row.get::<_, &str>(0), row.get(1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(calls)
}

fn decode(id: &str, value: serde_json::Value) -> Result<CallRecord, PgError> {
    serde_json::from_value(value).map_err(|e| PgError::Decode(format!("call {id}: {e}")))
}

/// A call's metadata (no bodies), as `insert` stored it.
pub async fn meta(client: &impl GenericClient, id: &str) -> Result<Option<CallRecord>, PgError> {
    client
        .query_opt("SELECT record FROM calls WHERE id = $1", &[&id])
        .await?
        .map(|row| decode(id, row.get(0)))
        .transpose()
}

/// Every stored call id, oldest first.
pub async fn ids(client: &impl GenericClient) -> Result<Vec<String>, PgError> {
    Ok(client
        .query("SELECT id FROM calls ORDER BY started_us, id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// An invocation's call ids in round order: (started_us, id), whichever instance
/// wrote them.
pub async fn invocation_ids(
    client: &impl GenericClient,
    invocation_id: &str,
) -> Result<Vec<String>, PgError> {
    Ok(client
        .query(
            "SELECT id FROM calls WHERE invocation_id = $1 ORDER BY started_us, id",
            &[&invocation_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The tenant of a stored call: `None` when there is no such call.
pub async fn tenant(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<Option<String>>, PgError> {
    Ok(client
        .query_opt("SELECT tenant FROM calls WHERE id = $1", &[&id])
        .await?
        .map(|r| r.get(0)))
}
