//! The `sessions` rows: one per conversation session, kept by every instance.
//!
//! Each batch folds its new calls into one delta per session with the same
//! `SessionSummary::add_call` sled uses, then upserts the deltas in one statement,
//! ordered by id (so two instances lock shared rows in one order): counters add,
//! the first and last times widen, and the subject is the earliest call's, as a
//! single writer would keep it. Reads rebuild the same `SessionSummary` JSON from
//! the columns.

use super::{text, PgError};
use crate::record::CallRecord;
use crate::store::index::{SessionFilter, SessionSummary, SESSION_MODELS_MAX};
use crate::store::summary::CallSummary;
use crate::store::types::{Page, PageRequest, Position, ScopedIdSpace, COUNT_CAP};
use crate::timefmt::format_rfc3339_us;
use std::collections::BTreeMap;
use tokio_postgres::{GenericClient, Row};

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

/// Folds the batch's new calls (in start order) into their sessions.
pub async fn add(client: &impl GenericClient, new_calls: &[&CallRecord]) -> Result<(), PgError> {
    let mut deltas: BTreeMap<&str, SessionSummary> = BTreeMap::new();
    let mut ordered: Vec<&&CallRecord> = new_calls.iter().collect();
    ordered.sort_by(|a, b| (a.started_at_us, &a.id).cmp(&(b.started_at_us, &b.id)));
    for call in ordered {
        let Some(id) = call.metadata.session_id.as_deref() else {
            continue;
        };
        deltas
            .entry(id)
            .or_insert_with(|| SessionSummary::starting(id, call))
            .add_call(call);
    }
    if deltas.is_empty() {
        return Ok(());
    }
    let n = deltas.len();
    let (mut ids, mut tenants, mut agents, mut subjects, mut models) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut calls, mut input, mut output, mut cost, mut first, mut last) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, s) in deltas {
        ids.push(text::owned(id.to_string()));
        tenants.push(text::opt(s.tenant));
        agents.push(text::opt(s.agent));
        subjects.push(text::opt(s.subject));
        // One text per session (a text[][] must be rectangular): models joined by
        // U+001F, which no model name holds, split again in SQL.
        models.push(text::owned(s.models.unwrap_or_default().join("\u{1f}")));
        calls.push(to_i64(s.calls));
        input.push(to_i64(s.input_tokens));
        output.push(to_i64(s.output_tokens));
        cost.push(to_i64(s.cost_pusd));
        first.push(to_i64(s.first_at_us));
        last.push(to_i64(s.last_at_us));
    }
    client
        .execute(
            "INSERT INTO sessions AS s (id, tenant, agent, subject, calls, input_tokens, \
             output_tokens, cost_pusd, first_us, last_us, models) \
             SELECT id, tenant, agent, subject, calls, input_tokens, output_tokens, cost_pusd, \
             first_us, last_us, CASE WHEN models = '' THEN '{}'::text[] \
             ELSE string_to_array(models, E'\\x1f') END \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
             $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[]) \
             AS d(id, tenant, agent, subject, calls, input_tokens, output_tokens, cost_pusd, \
             first_us, last_us, models) \
             ON CONFLICT (id) DO UPDATE SET \
             calls = llmtap_sat_add(s.calls, excluded.calls), \
             input_tokens = llmtap_sat_add(s.input_tokens, excluded.input_tokens), \
             output_tokens = llmtap_sat_add(s.output_tokens, excluded.output_tokens), \
             cost_pusd = llmtap_sat_add(s.cost_pusd, excluded.cost_pusd), \
             subject = CASE WHEN excluded.subject IS NOT NULL \
                 AND (excluded.first_us <= s.first_us OR s.subject IS NULL) \
                 THEN excluded.subject ELSE s.subject END, \
             first_us = LEAST(s.first_us, excluded.first_us), \
             last_us = GREATEST(s.last_us, excluded.last_us), \
             tenant = coalesce(s.tenant, excluded.tenant), \
             agent = coalesce(s.agent, excluded.agent), \
             models = (SELECT coalesce(array_agg(m ORDER BY o), '{}') FROM \
                 (SELECT m, min(o) AS o FROM unnest(s.models || excluded.models) \
                 WITH ORDINALITY AS u(m, o) GROUP BY m ORDER BY min(o) LIMIT $12) AS k)",
            &[
                &ids,
                &tenants,
                &agents,
                &subjects,
                &calls,
                &input,
                &output,
                &cost,
                &first,
                &last,
                &models,
                &(SESSION_MODELS_MAX as i64),
            ],
        )
        .await?;
    Ok(())
}

const COLUMNS: &str = "id, subject, agent, tenant, calls, input_tokens, output_tokens, \
                       cost_pusd, first_us, last_us, models";

fn from_row(row: &Row) -> SessionSummary {
    let cost_pusd = to_u64(row.get(7));
    let (first, last) = (to_u64(row.get(8)), to_u64(row.get(9)));
    SessionSummary {
        id: row.get(0),
        subject: row.get(1),
        agent: row.get(2),
        tenant: row.get(3),
        calls: to_u64(row.get(4)),
        input_tokens: to_u64(row.get(5)),
        output_tokens: to_u64(row.get(6)),
        cost_usd: cost_pusd as f64 / 1e12,
        cost_pusd,
        first_at: format_rfc3339_us(first),
        first_at_us: first,
        last_at: format_rfc3339_us(last),
        last_at_us: last,
        models: Some(row.get(10)),
    }
}

/// One session.
pub async fn get(client: &impl GenericClient, id: &str) -> Result<Option<SessionSummary>, PgError> {
    Ok(client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM sessions WHERE id = $1"),
            &[&id],
        )
        .await?
        .map(|r| from_row(&r)))
}

/// The conditions of `SessionFilter::matches` (index.rs) in SQL, on parameters $1
/// (tenant), $2 (from), $3 (to), $4 (agent), $5 (model).
const FILTER: &str = "($1::text IS NULL OR coalesce(tenant, '') = $1) \
                      AND ($2::bigint IS NULL OR last_us >= $2) \
                      AND ($3::bigint IS NULL OR first_us < $3) \
                      AND ($4::text IS NULL OR agent = $4) \
                      AND ($5::text IS NULL OR $5 = ANY(models))";

/// Sessions newest first (by first call) that `filter` matches.
pub async fn list(
    client: &impl GenericClient,
    filter: &SessionFilter,
    request: &PageRequest,
) -> Result<Page<SessionSummary>, PgError> {
    let limit = request.limit.clamp(1, 1000);
    let (after_us, after_id) = match &request.after {
        Some(p) => (to_i64(p.time_us), p.id.clone()),
        None => (i64::MAX, String::new()),
    };
    let tenant = filter.tenant.as_deref();
    let (from, to) = (filter.from_us.map(to_i64), filter.to_us.map(to_i64));
    let (agent, model) = (filter.agent.as_deref(), filter.model.as_deref());
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM sessions WHERE {FILTER} \
                 AND ($6 = '' AND first_us <= $7 OR (first_us, id) < ($7, $6)) \
                 ORDER BY first_us DESC, id DESC LIMIT $8 OFFSET $9"
            ),
            &[
                &tenant,
                &from,
                &to,
                &agent,
                &model,
                &after_id,
                &after_us,
                &((limit + 1) as i64),
                &(request.offset as i64),
            ],
        )
        .await?;
    let has_more = rows.len() > limit;
    let items: Vec<SessionSummary> = rows.iter().take(limit).map(from_row).collect();
    let next = match items.last() {
        Some(s) if has_more => Some(Position {
            time_us: s.first_at_us,
            id: s.id.clone(),
        }),
        _ => None,
    };
    let (total, total_is_lower_bound) = if !request.count_total {
        (0, true)
    } else if tenant.is_none() && !filter.narrows() {
        let n: i64 = client
            .query_one("SELECT count(*) FROM sessions", &[])
            .await?
            .get(0);
        (to_u64(n), false)
    } else {
        let n: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM (SELECT 1 FROM sessions WHERE {FILTER} LIMIT $6) AS capped"
                ),
                &[&tenant, &from, &to, &agent, &model, &to_i64(COUNT_CAP + 1)],
            )
            .await?
            .get(0);
        let n = to_u64(n);
        (n.min(COUNT_CAP), n > COUNT_CAP)
    };
    Ok(Page {
        items,
        total,
        total_is_lower_bound,
        has_more,
        next,
    })
}

/// Every call of a session, chronological, at most `max`: the calls carrying the
/// session id and the calls (tool HTTP calls too) of the session's runs.
pub async fn calls(
    client: &impl GenericClient,
    session_id: &str,
    max: usize,
) -> Result<Vec<CallSummary>, PgError> {
    let rows = client
        .query(
            "SELECT summary, id FROM calls WHERE session_id = $1 \
             OR invocation_id IN (SELECT id FROM invocations WHERE session_id = $1) \
             ORDER BY started_us, id LIMIT $2",
            &[&session_id, &to_i64(max as u64)],
        )
        .await?;
    super::lists::call_summaries(client, rows.iter().map(|r| (r.get(0), r.get(1))).collect()).await
}

/// The tenant-scoped ids (`id@tenant`) of a plain session id, at most `max`.
pub async fn scoped_ids(
    client: &impl GenericClient,
    space: ScopedIdSpace,
    id: &str,
    max: usize,
) -> Result<Vec<String>, PgError> {
    // As on sled: runs for a run id, sessions otherwise (call ids are never scoped).
    let table = match space {
        ScopedIdSpace::Runs => "invocations",
        ScopedIdSpace::Sessions => "sessions",
    };
    let escaped: String = id
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let pattern = format!("{escaped}{}%", crate::headers::TENANT_SCOPE);
    let rows = client
        .query(
            &format!("SELECT id FROM {table} WHERE id LIKE $1 ORDER BY id LIMIT $2"),
            &[&pattern, &to_i64(max as u64)],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
