//! The list queries: a `Filter` and a `PageRequest` as SQL over `calls` or
//! `invocations`, answering the same `Page` the sled engine does.
//!
//! Order is newest first by (started_us, id), the key every index ends with, and a
//! cursor is the last item's (started_us, id): the next page is a row comparison
//! `(started_us, id) < (t, id)`, a keyset seek rather than an OFFSET walk. Each
//! facet of `summary::tag` maps onto a column (calls) or a column, the
//! `invocation_models` table or the stored JSON (runs), ORing a facet's values and
//! ANDing the facets, as `Filter::matches` does on a header. `total` is exact from
//! the rollups when the filter is one of their scopes (nothing, a tenant, an agent,
//! or both, over all time), else a count capped at `COUNT_CAP` like sled's, beyond
//! which it is a lower bound. Text search (`q`) reads content: `search.rs`.

use super::PgError;
use crate::store::index;
use crate::store::sled::{Page, PageRequest, Position, COUNT_CAP};
use crate::store::summary::{tag, CallSummary, Facets, Filter, InvocationSummary};
use std::collections::HashMap;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

/// Longest page a request may ask for (the API caps it lower).
const MAX_LIMIT: usize = 1000;

type Param = Box<dyn ToSql + Sync + Send>;

/// A WHERE clause under construction, with its parameters.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Where {
    fn param(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    fn push(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            "TRUE".into()
        } else {
            self.clauses.join(" AND ")
        }
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A call's list summary from its stored JSON and its round as read.
pub fn call_summary(json: serde_json::Value, round: i64, id: &str) -> Result<CallSummary, PgError> {
    let mut summary: CallSummary = decode(id, json)?;
    summary.round = u32::try_from(round).unwrap_or(u32::MAX);
    Ok(summary)
}

/// Which table a list reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Calls,
    Invocations,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Calls => "calls",
            Table::Invocations => "invocations",
        }
    }
}

/// The filter's conditions on table alias `r`.
fn conditions(table: Table, filter: &Filter, w: &mut Where) -> Result<(), PgError> {
    if filter.text.is_some() {
        return Err(PgError::Unsupported("text search (q)"));
    }
    if let Some(from) = filter.from_us {
        let p = w.param(to_i64(from));
        w.push(format!("r.started_us >= {p}"));
    }
    if let Some(to) = filter.to_us {
        let p = w.param(to_i64(to));
        w.push(format!("r.started_us < {p}"));
    }
    if let Some(min) = filter.min_cost_pusd {
        let p = w.param(to_i64(min));
        w.push(match table {
            Table::Calls => format!("r.cost_pusd >= {p}"),
            // A run's cost is known only once none of its calls is unpriced.
            Table::Invocations => {
                format!("r.cost_pusd >= {p} AND r.summary->>'cost_usd' IS NOT NULL")
            }
        });
    }
    if let Some(want) = filter.has_session {
        w.push(format!(
            "r.session_id IS {}NULL",
            if want { "NOT " } else { "" }
        ));
    }
    for (t, values) in &filter.eq {
        // `$V` stands for the values' parameter, bound only where the facet applies
        // (PostgreSQL refuses a parameter no clause uses).
        let template = match (table, *t) {
            (_, tag::AGENT) => "r.agent = ANY($V)",
            (_, tag::STATUS) => "r.status = ANY($V)",
            (_, tag::TENANT) => "r.tenant = ANY($V)",
            (_, tag::USER) => "r.user_id = ANY($V)",
            (_, tag::SESSION) => "r.session_id = ANY($V)",
            (_, tag::TRIGGER) => "r.trigger = ANY($V)",
            (_, tag::PROMPT) => "r.prompt = ANY($V)",
            (Table::Calls, tag::PROVIDER) => "r.provider = ANY($V)",
            (Table::Calls, tag::MODEL) => "(r.model = ANY($V) OR r.response_model = ANY($V))",
            (Table::Calls, tag::KEY) => "r.key_fingerprint = ANY($V)",
            (Table::Calls, tag::KIND) => "r.kind = ANY($V)",
            (Table::Calls, tag::TASK) => "r.task_id = ANY($V)",
            (Table::Invocations, tag::PROVIDER) => "(r.record->'providers') ?| $V",
            (Table::Invocations, tag::MODEL) => {
                "EXISTS (SELECT 1 FROM invocation_models m \
                 WHERE m.invocation_id = r.id AND m.model = ANY($V))"
            }
            (Table::Invocations, tag::TASK) => "r.record->>'task_id' = ANY($V)",
            // Facets a run does not carry (key, kind) match no run, as on sled.
            _ => {
                w.push("FALSE".into());
                continue;
            }
        };
        let p = w.param(values.clone());
        w.push(template.replace("$V", &format!("{p}::text[]")));
    }
    for (k, v) in &filter.properties {
        let (pk, pv) = (w.param(k.clone()), w.param(v.clone()));
        w.push(match table {
            Table::Calls => format!("r.properties->>({pk}::text) = {pv}::text"),
            Table::Invocations => {
                format!("r.summary->'properties'->>({pk}::text) = {pv}::text")
            }
        });
    }
    Ok(())
}

/// The rollup scope that counts exactly what the filter matches, when there is one.
fn rollup_scope(filter: &Filter) -> Option<Vec<u8>> {
    if filter.from_us.is_some()
        || filter.to_us.is_some()
        || filter.min_cost_pusd.is_some()
        || filter.has_session.is_some()
        || filter.text.is_some()
        || !filter.properties.is_empty()
    {
        return None;
    }
    let (mut tenant, mut agent) = (None, None);
    for (t, values) in &filter.eq {
        let [value] = values.as_slice() else {
            return None;
        };
        match *t {
            tag::TENANT if tenant.is_none() => tenant = Some(value.as_str()),
            tag::AGENT if agent.is_none() => agent = Some(value.as_str()),
            _ => return None,
        }
    }
    Some(match (tenant, agent) {
        (None, None) => b"*".to_vec(),
        (Some(t), None) => index::scope_tenant(t),
        (t, Some(a)) => index::scope_agent(t, a),
    })
}

/// The filter's total: (count, is a lower bound).
async fn total(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
) -> Result<(u64, bool), PgError> {
    if let Some(scope) = rollup_scope(filter) {
        let cell = super::rollups::total(client, &scope).await?;
        let n = match table {
            Table::Calls => cell.calls,
            Table::Invocations => cell.invocations,
        };
        return Ok((n, false));
    }
    let mut w = Where::default();
    conditions(table, filter, &mut w)?;
    let cap = w.param(to_i64(COUNT_CAP + 1));
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM {} r WHERE {} LIMIT {cap}) AS capped",
        table.name(),
        w.sql()
    );
    let n = client
        .query_one(&sql, &w.refs())
        .await?
        .get::<_, i64>(0)
        .max(0) as u64;
    Ok((n.min(COUNT_CAP), n > COUNT_CAP))
}

/// One page of rows: (stored summary JSON, started_us, id).
pub(super) async fn rows(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
    request: &PageRequest,
    limit: usize,
) -> Result<Vec<(serde_json::Value, i64, String)>, PgError> {
    let mut w = Where::default();
    conditions(table, filter, &mut w)?;
    if let Some(after) = &request.after {
        let (t, id) = (w.param(to_i64(after.time_us)), w.param(after.id.clone()));
        w.push(format!("(r.started_us, r.id) < ({t}, {id})"));
    }
    let lim = w.param((limit + 1) as i64);
    let off = w.param(request.offset as i64);
    let sql = format!(
        "SELECT r.summary, r.started_us, r.id FROM {} r WHERE {} \
         ORDER BY r.started_us DESC, r.id DESC LIMIT {lim} OFFSET {off}",
        table.name(),
        w.sql()
    );
    Ok(client
        .query(&sql, &w.refs())
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// The rounds of call rows (stored summary JSON), read over their runs in one query
/// (`calls::rounds_of`); none for runs.
pub(super) async fn rounds_for<'a>(
    client: &impl GenericClient,
    table: Table,
    summaries: impl Iterator<Item = &'a serde_json::Value>,
) -> Result<HashMap<String, i64>, PgError> {
    if table == Table::Invocations {
        return Ok(HashMap::new());
    }
    let runs: Vec<String> = summaries
        .filter_map(|json| json.get("invocation_id")?.as_str().map(str::to_string))
        .collect();
    super::calls::rounds_of(client, &runs).await
}

/// Call summaries from their rows (stored summary JSON, id), with their rounds.
pub async fn call_summaries(
    client: &impl GenericClient,
    rows: Vec<(serde_json::Value, String)>,
) -> Result<Vec<CallSummary>, PgError> {
    let rounds = rounds_for(client, Table::Calls, rows.iter().map(|r| &r.0)).await?;
    rows.into_iter()
        .map(|(json, id)| call_summary(json, rounds.get(&id).copied().unwrap_or(0), &id))
        .collect()
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    id: &str,
    json: serde_json::Value,
) -> Result<T, PgError> {
    serde_json::from_value(json).map_err(|e| PgError::Decode(format!("summary of {id}: {e}")))
}

/// A newest-first page of `table`, each row made an item by `item` (stored summary
/// JSON, round as read, id).
pub(super) async fn page<T>(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
    request: &PageRequest,
    mut item: impl FnMut(serde_json::Value, i64, &str) -> Result<T, PgError>,
) -> Result<Page<T>, PgError> {
    let limit = request.limit.clamp(1, MAX_LIMIT);
    let mut found = rows(client, table, filter, request, limit).await?;
    let has_more = found.len() > limit;
    found.truncate(limit);
    let rounds = rounds_for(client, table, found.iter().map(|r| &r.0)).await?;
    let mut items = Vec::with_capacity(limit);
    let mut next = None;
    for (json, started, id) in found {
        let round = rounds.get(&id).copied().unwrap_or(0);
        items.push(item(json, round, &id)?);
        next = Some(Position {
            time_us: started.max(0) as u64,
            id,
        });
    }
    let (total, total_is_lower_bound) = if request.count_total {
        total(client, table, filter).await?
    } else {
        (0, true)
    };
    Ok(Page {
        items,
        total,
        total_is_lower_bound,
        has_more,
        next: if has_more { next } else { None },
    })
}

/// A newest-first page of call summaries.
pub async fn calls(
    client: &impl GenericClient,
    filter: &Filter,
    request: &PageRequest,
) -> Result<Page<CallSummary>, PgError> {
    page(client, Table::Calls, filter, request, call_summary).await
}

/// A newest-first page of run summaries.
pub async fn invocations(
    client: &impl GenericClient,
    filter: &Filter,
    request: &PageRequest,
) -> Result<Page<InvocationSummary>, PgError> {
    page(
        client,
        Table::Invocations,
        filter,
        request,
        |json, _, id| decode(id, json),
    )
    .await
}

/// Up to `limit` records the filter matches, newest first, after the position: each
/// as its facets (what `/stats` and summaries group by) with its position.
pub async fn facets(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
    after: Option<Position>,
    limit: usize,
) -> Result<Vec<(Facets, Position)>, PgError> {
    let request = PageRequest {
        after,
        limit,
        ..PageRequest::default()
    };
    // `rows` reads one beyond the limit it is given (to tell whether more follow).
    rows(client, table, filter, &request, limit.saturating_sub(1))
        .await?
        .into_iter()
        .map(|(json, started, id)| {
            let facets = match table {
                Table::Calls => decode::<CallSummary>(&id, json)?.facets(),
                Table::Invocations => decode::<InvocationSummary>(&id, json)?.facets(),
            };
            let position = Position {
                time_us: started.max(0) as u64,
                id,
            };
            Ok((facets, position))
        })
        .collect()
}
