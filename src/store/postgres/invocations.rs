//! The `invocations` rows: one per agent run, merged from the calls every instance
//! writes.
//!
//! An instance's writer rolls a run up from what it saw; with several instances
//! each sees only some rounds. So the engine merges in the database: in the
//! batch's transaction it takes a transaction-level advisory lock per run (keys
//! sorted, so two instances lock shared runs in one order), reads the stored rows,
//! numbers and folds the batch's new calls into them with `agent_loop::fold_run`
//! (rounds and attempts by start time; a call that started before the run's latest
//! stored round renumbers the run's later calls, whose rows are updated in the same
//! transaction), and upserts them. Only calls the batch inserted are folded (a
//! replayed call adds nothing). Reads take the rounds as stored; the run's status
//! is that of its latest-started round, whichever instance wrote it last.
//!
//! The batch's calls are the run's delta, not the writer's rolled-up run: a call's
//! place (round, attempt) depends on the run's loop state when it is placed (rounds
//! so far, the latest attempt's digest and outcome, the latest LLM call), so a run
//! the writer folded against what it read before the transaction cannot be added
//! to a row another instance changed since; placing the same calls against the
//! locked row gives what one writer would have. Nothing is derived again from the
//! run's stored calls (they are read only from a late call's start). The places
//! the writer gave the calls (the same `fold_run`) are what the insert writes;
//! the merge rewrites only those that differ, none while one instance writes the run.

use super::PgError;
use crate::record::{roll_up, CallRecord, InvocationRecord};
use crate::store::plan::list_run;
use crate::store::summary::InvocationSummary;
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::GenericClient;

/// A run after the batch: its record, its list summary, and whether the batch made it.
#[derive(Debug, Clone)]
pub struct Merged {
    pub record: InvocationRecord,
    pub summary: InvocationSummary,
    pub created: bool,
}

/// The advisory-lock key of a run: the first 8 bytes of SHA-256 of its id, so every
/// instance (whatever its version) derives the same key.
pub fn lock_key(id: &str) -> i64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest.as_ref()[..8]);
    i64::from_be_bytes(key)
}

/// Takes the transaction-level advisory locks, sorted and once each, so transactions
/// that share keys take them in one order and never wait on each other in a cycle.
pub async fn lock_in_order(client: &impl GenericClient, mut keys: Vec<i64>) -> Result<(), PgError> {
    keys.sort_unstable();
    keys.dedup();
    client
        .execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM \
             (SELECT k FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, o) ORDER BY o) AS s",
            &[&keys],
        )
        .await?;
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// JSON for a `jsonb` column (NUL replaced, see `text.rs`).
fn encode(value: &impl serde::Serialize) -> Result<serde_json::Value, PgError> {
    super::text::json(value)
}

fn decode<T: serde::de::DeserializeOwned>(
    id: &str,
    value: serde_json::Value,
) -> Result<T, PgError> {
    serde_json::from_value(value).map_err(|e| PgError::Decode(format!("invocation {id}: {e}")))
}

fn is_round(call: &CallRecord) -> bool {
    crate::record::is_round_kind(&call.kind)
}

/// What a stored run carries besides its record.
struct Stored {
    record: InvocationRecord,
    summary: InvocationSummary,
    last_round: (i64, String),
}

/// Folds `calls` (the batch's new calls) into their runs; returns every run changed.
pub async fn merge(
    client: &impl GenericClient,
    calls: &[&CallRecord],
) -> Result<Vec<Merged>, PgError> {
    let mut runs: BTreeMap<&str, Vec<&CallRecord>> = BTreeMap::new();
    for call in calls {
        runs.entry(call.invocation_id.as_str())
            .or_default()
            .push(call);
    }
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = runs.keys().copied().collect();
    lock_in_order(client, ids.iter().map(|id| lock_key(id)).collect()).await?;
    let mut stored: HashMap<String, Stored> = HashMap::new();
    for row in client
        .query(
            "SELECT id, record, summary, last_round_us, last_round_id FROM invocations WHERE id = ANY($1)",
            &[&ids],
        )
        .await?
    {
        let id: String = row.get(0);
        let record = decode(&id, row.get(1))?;
        let summary = decode(&id, row.get(2))?;
        let last_round = (row.get(3), row.get(4));
        stored.insert(
            id,
            Stored {
                record,
                summary,
                last_round,
            },
        );
    }
    let mut merged = Vec::with_capacity(runs.len());
    let mut last_rounds = Vec::with_capacity(runs.len());
    let mut places = Vec::new();
    for (id, new_calls) in runs {
        let prior = stored.remove(id);
        let created = prior.is_none();
        let (record, stored_summary, mut last_round) = match prior {
            Some(s) => (Some(s.record), Some(s.summary), s.last_round),
            None => (None, None, (-1, String::new())),
        };
        // Numbered here, under the run's lock, with what every instance stored: the
        // one numbering (`agent_loop::fold_run`), which the writer also ran on what
        // it had read before the transaction (its places are the rows' as inserted;
        // its rolled-up run is not used, see the module doc).
        let mut numbered: Vec<CallRecord> = new_calls
            .iter()
            .map(|c| crate::store::stored::metadata_only(c))
            .collect();
        let context = match crate::agent_loop::late_from(record.as_ref(), &numbered) {
            Some(from_us) => super::calls::run_loop_calls(client, id, from_us).await?,
            None => Vec::new(),
        };
        let (record, moved) = crate::agent_loop::fold_run(record, &mut numbered, &context);
        let as_written: HashMap<&str, (u32, u32)> = new_calls
            .iter()
            .map(|c| (c.id.as_str(), (c.round, c.retry)))
            .collect();
        for call in &numbered {
            if as_written.get(call.id.as_str()) != Some(&(call.round, call.retry)) {
                let place = crate::agent_loop::Place {
                    round: call.round,
                    attempt: if is_round(call) { call.retry + 1 } else { 0 },
                };
                places.push((call.id.clone(), call.started_at_us, place));
            }
            if is_round(call) {
                last_round = last_round.max((to_i64(call.started_at_us), call.id.clone()));
            }
        }
        places.extend(
            moved
                .into_iter()
                .map(|m| (m.call_id, m.started_at_us, m.to)),
        );
        let summary = list_run(&record, stored_summary.as_ref(), new_calls.iter().copied()).summary;
        last_rounds.push(last_round);
        merged.push(Merged {
            record,
            summary,
            created,
        });
    }
    super::calls::set_places(client, &places).await?;
    upsert(client, &merged, &last_rounds).await?;
    Ok(merged)
}

async fn upsert(
    client: &impl GenericClient,
    runs: &[Merged],
    last_rounds: &[(i64, String)],
) -> Result<(), PgError> {
    let n = runs.len();
    let mut ids = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut ended = Vec::with_capacity(n);
    let mut text: [Vec<Option<String>>; 7] = Default::default();
    let mut cost = Vec::with_capacity(n);
    let mut records = Vec::with_capacity(n);
    let mut summaries = Vec::with_capacity(n);
    let mut last_us = Vec::with_capacity(n);
    let mut last_id = Vec::with_capacity(n);
    let mut model_runs = Vec::new();
    let mut models = Vec::new();
    for (run, (round_us, round_id)) in runs.iter().zip(last_rounds) {
        let r = &run.record;
        ids.push(r.id.clone());
        started.push(to_i64(r.started_at_us));
        ended.push(to_i64(r.ended_at_us));
        let columns = [
            r.tenant.clone(),
            r.agent.clone(),
            r.status.map(|s| s.as_str().to_string()),
            r.trigger.clone(),
            r.user_id.clone(),
            r.session_id.clone(),
            run.summary.prompt.clone(),
        ];
        for (column, value) in text.iter_mut().zip(columns) {
            column.push(super::text::opt(value));
        }
        cost.push(to_i64(r.cost_pusd));
        records.push(encode(r)?);
        summaries.push(encode(&run.summary)?);
        last_us.push(*round_us);
        last_id.push(round_id.clone());
        for model in r.models.iter().chain(&r.response_models) {
            model_runs.push(r.id.clone());
            models.push(super::text::owned(model.clone()));
        }
    }
    let [tenant, agent, status, trigger, user_id, session_id, prompt] = &text;
    client
        .execute(
            "INSERT INTO invocations (id, started_us, ended_us, tenant, agent, status, trigger, \
             user_id, session_id, prompt, cost_pusd, record, summary, last_round_us, last_round_id) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], \
             $12::jsonb[], $13::jsonb[], $14::bigint[], $15::text[]) \
             ON CONFLICT (id) DO UPDATE SET started_us = excluded.started_us, \
             ended_us = excluded.ended_us, tenant = excluded.tenant, agent = excluded.agent, \
             status = excluded.status, trigger = excluded.trigger, user_id = excluded.user_id, \
             session_id = excluded.session_id, prompt = excluded.prompt, \
             cost_pusd = excluded.cost_pusd, record = excluded.record, summary = excluded.summary, \
             last_round_us = excluded.last_round_us, last_round_id = excluded.last_round_id",
            &[
                &ids, &started, &ended, tenant, agent, status, trigger, user_id, session_id,
                prompt, &cost, &records, &summaries, &last_us, &last_id,
            ],
        )
        .await?;
    if !models.is_empty() {
        client
            .execute(
                "INSERT INTO invocation_models (invocation_id, model) \
                 SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                &[&model_runs, &models],
            )
            .await?;
    }
    Ok(())
}

/// Rolls a run up again from its stored calls, in start order, as a merge from
/// nothing would (repricing changed their costs); keeps its prompt and properties.
/// Takes the run's advisory lock, so it cannot interleave with a batch's merge.
pub async fn reroll(client: &impl GenericClient, id: &str) -> Result<bool, PgError> {
    lock_in_order(client, vec![lock_key(id)]).await?;
    let calls = super::calls::of_invocation(client, id).await?;
    let Some(row) = client
        .query_opt("SELECT summary FROM invocations WHERE id = $1", &[&id])
        .await?
    else {
        return Ok(false);
    };
    let old: InvocationSummary = decode(id, row.get(0))?;
    let mut record = None;
    let mut last_round = (-1, String::new());
    for call in &calls {
        if is_round(call) {
            last_round = (to_i64(call.started_at_us), call.id.clone());
        }
        record = Some(roll_up(record, call));
    }
    let Some(record) = record else {
        return Ok(false);
    };
    let summary = list_run(&record, Some(&old), []).summary;
    upsert(
        client,
        &[Merged {
            record,
            summary,
            created: false,
        }],
        &[last_round],
    )
    .await?;
    Ok(true)
}

/// A run's record.
pub async fn get(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<InvocationRecord>, PgError> {
    client
        .query_opt("SELECT record FROM invocations WHERE id = $1", &[&id])
        .await?
        .map(|row| decode(id, row.get(0)))
        .transpose()
}

/// The stored runs among these ids.
pub async fn get_many(
    client: &impl GenericClient,
    ids: &[String],
) -> Result<Vec<InvocationRecord>, PgError> {
    client
        .query(
            "SELECT id, record FROM invocations WHERE id = ANY($1)",
            &[&ids],
        )
        .await?
        .into_iter()
        .map(|row| decode(row.get::<_, &str>(0), row.get(1)))
        .collect()
}

/// A run's list summary.
pub async fn summary(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<InvocationSummary>, PgError> {
    client
        .query_opt("SELECT summary FROM invocations WHERE id = $1", &[&id])
        .await?
        .map(|row| decode(id, row.get(0)))
        .transpose()
}

/// Runs that started at or after the time, oldest first.
pub async fn since(
    client: &impl GenericClient,
    since_us: u64,
) -> Result<Vec<InvocationRecord>, PgError> {
    client
        .query(
            "SELECT id, record FROM invocations WHERE started_us >= $1 ORDER BY started_us, id",
            &[&to_i64(since_us)],
        )
        .await?
        .into_iter()
        .map(|row| decode(row.get::<_, &str>(0), row.get(1)))
        .collect()
}

/// The tenant of a stored run: `None` when there is no such run.
pub async fn tenant(
    client: &impl GenericClient,
    id: &str,
) -> Result<Option<Option<String>>, PgError> {
    Ok(client
        .query_opt("SELECT tenant FROM invocations WHERE id = $1", &[&id])
        .await?
        .map(|r| r.get(0)))
}
