//! The list queries: a `Filter` and a `PageRequest` as SQL over `calls` or
//! `invocations`, answering the same `Page` the sled engine does.
//!
//! Order is newest first by (started_us, id), the key every index ends with, and a
//! cursor is the last item's (started_us, id): the next page is a row comparison
//! `(started_us, id) < (t, id)`, a keyset seek rather than an OFFSET walk. Each
//! facet of `summary::tag` maps onto a column (calls) or a column, the
//! `invocation_models` table or the stored JSON (runs), ORing a facet's values and
//! ANDing the facets, as `Filter::matches` does on a header. Text search (`q`)
//! reads content: `search.rs`.
//!
//! `total` is exact from the rollups when the filter is one of their scopes
//! (nothing, a tenant, an agent, or both, over all time); else, for a call filter of
//! one or two facets that `call_facet_days` and `call_facet_pair_days` count
//! (`facets.rs`: the facets sled's facet cache holds), exact from those per-day
//! counts plus a count of the partial days a time window cuts; for a longer
//! conjunction of them, exact as sled's (a count, capped only while the counts say
//! it stays under the cap); else a count capped at `COUNT_CAP` like sled's, beyond
//! which it is a lower bound, except over counted facets only (runs, which have no
//! per-day counts yet), which sled counts exactly at any size: counted whole.
//!
//! Why the per-day counts also bound call pages: a query over all of `calls` is
//! planned over every day partition and its indexes (about 4 ms at 40 partitions,
//! more than the page's execution). The counts say from which day on the newest
//! `limit + 1` matches lie (at most, for a conjunction, whose matches they bound
//! from above), so the page query names that window and the planner prunes every
//! older partition. When the window holds fewer, the page is read again without it.

use super::facets::Days;
use super::PgError;
use crate::store::index::{self, DAY_US};
use crate::store::summary::{tag, CallSummary, Facets, Filter, InvocationSummary};
use crate::store::types::{Page, PageRequest, Position, COUNT_CAP};
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

/// A call's list summary from its stored JSON (its round and attempt as the
/// writer numbered them, `agent_loop::fold_run`).
pub fn call_summary(json: serde_json::Value, id: &str) -> Result<CallSummary, PgError> {
    decode(id, json)
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

/// Every match of the filter, counted in the table.
async fn count_all(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
) -> Result<u64, PgError> {
    let mut w = Where::default();
    conditions(table, filter, &mut w)?;
    let sql = format!("SELECT count(*) FROM {} r WHERE {}", table.name(), w.sql());
    Ok(client
        .query_one(&sql, &w.refs())
        .await?
        .get::<_, i64>(0)
        .max(0) as u64)
}

/// The exact total of a filter whose per-day counts are exact (`Days::exact`):
/// whole days as counted, the (at most two) days the window cuts counted in the
/// table.
async fn counted_total(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
    days: &[(u64, u64)],
) -> Result<u64, PgError> {
    let mut total = 0u64;
    for &(day, n) in days {
        let from = filter.from_us.filter(|f| *f > day);
        let to = filter.to_us.filter(|t| *t < day + DAY_US);
        if from.is_none() && to.is_none() {
            total = total.saturating_add(n);
            continue;
        }
        let part = Filter {
            from_us: Some(from.unwrap_or(day)),
            to_us: Some(to.unwrap_or(day + DAY_US)),
            ..filter.clone()
        };
        total = total.saturating_add(count_all(client, table, &part).await?);
    }
    Ok(total)
}

/// The earliest start a page must read from so that it holds `need` matches, by
/// the per-day counts; `None` when the counts cannot say (too few days counted, or
/// the window's first day is cut, so its count may overstate). Days not wholly
/// before the page's upper end (the cursor, the window's `to`) are not counted,
/// since part of their matches lie above it.
fn window_start(
    days: &[(u64, u64)],
    filter: &Filter,
    after: Option<&Position>,
    need: usize,
) -> Option<u64> {
    let upper = match (filter.to_us, after.map(|p| p.time_us.saturating_add(1))) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let cut_first_day = filter
        .from_us
        .filter(|f| f % DAY_US != 0)
        .map(|f| f - f % DAY_US);
    let mut have = 0u64;
    for &(day, n) in days {
        if upper.is_some_and(|u| day + DAY_US > u) {
            continue;
        }
        if Some(day) == cut_first_day {
            return None;
        }
        have = have.saturating_add(n);
        if have >= need as u64 {
            return Some(day);
        }
    }
    None
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

/// The filter's total: (count, is a lower bound); `days` are its per-day counts
/// when there are any (`facets::days`).
async fn total(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
    days: Option<&Days>,
) -> Result<(u64, bool), PgError> {
    if let Some(scope) = rollup_scope(filter) {
        let cell = super::rollups::total(client, &scope).await?;
        let n = match table {
            Table::Calls => cell.calls,
            Table::Invocations => cell.invocations,
        };
        return Ok((n, false));
    }
    if let Some(days) = days.filter(|d| d.exact) {
        return Ok((
            counted_total(client, table, filter, &days.days).await?,
            false,
        ));
    }
    // Facets sled's facet cache counts are counted exactly at any size there, so
    // here too: whole, once the count passes the cap, or straight away when the
    // per-day counts say it may.
    let counted_only = super::facets::counted_only(filter);
    let bound = days.map(|d| {
        d.days
            .iter()
            .map(|(_, n)| *n)
            .fold(0u64, u64::saturating_add)
    });
    if counted_only && bound.is_some_and(|b| b > COUNT_CAP) {
        return Ok((count_all(client, table, filter).await?, false));
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
    if n > COUNT_CAP && counted_only {
        return Ok((count_all(client, table, filter).await?, false));
    }
    Ok((n.min(COUNT_CAP), n > COUNT_CAP))
}

/// One page of rows: (stored summary JSON, started_us, id), up to `limit + 1`.
pub(super) async fn rows(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
    request: &PageRequest,
    limit: usize,
) -> Result<Vec<(serde_json::Value, i64, String)>, PgError> {
    rows_within(client, table, filter, request, limit, None, None).await
}

/// `rows`, reading only rows that started in [since, until) where given.
async fn rows_within(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
    request: &PageRequest,
    limit: usize,
    since: Option<u64>,
    until: Option<u64>,
) -> Result<Vec<(serde_json::Value, i64, String)>, PgError> {
    let mut w = Where::default();
    conditions(table, filter, &mut w)?;
    if let Some(since) = since {
        let p = w.param(to_i64(since));
        w.push(format!("r.started_us >= {p}"));
    }
    if let Some(until) = until {
        let p = w.param(to_i64(until));
        w.push(format!("r.started_us < {p}"));
    }
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

/// `rows` in the window the per-day counts give (module doc), with those counts.
async fn windowed_rows(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
    request: &PageRequest,
    limit: usize,
) -> Result<(Vec<(serde_json::Value, i64, String)>, Option<Days>), PgError> {
    if table != Table::Calls {
        return Ok((rows(client, table, filter, request, limit).await?, None));
    }
    let days = super::facets::days(client, filter).await?;
    let need = request.offset + limit + 1;
    let since = window_start(&days.days, filter, request.after.as_ref(), need)
        .filter(|since| filter.from_us.is_none_or(|from| *since > from));
    // No match started after the newest day the counts have one on (they commit
    // with the calls): naming its end prunes the partitions made ahead for days to
    // come and the default one.
    let until = days.end();
    let mut found = rows_within(client, table, filter, request, limit, since, until).await?;
    if found.len() <= limit && since.is_some() {
        // Fewer than the window should hold (the counts bound a conjunction's
        // matches only from above, or a sweep ran meanwhile): read without it.
        found = rows_within(client, table, filter, request, limit, None, None).await?;
    }
    Ok((found, Some(days)))
}

/// Call summaries from their rows (stored summary JSON, id).
pub async fn call_summaries(
    _client: &impl GenericClient,
    rows: Vec<(serde_json::Value, String)>,
) -> Result<Vec<CallSummary>, PgError> {
    rows.into_iter()
        .map(|(json, id)| call_summary(json, &id))
        .collect()
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(
    id: &str,
    json: serde_json::Value,
) -> Result<T, PgError> {
    serde_json::from_value(json).map_err(|e| PgError::Decode(format!("summary of {id}: {e}")))
}

/// A newest-first page of `table`, each row made an item by `item` (stored summary
/// JSON, id).
pub(super) async fn page<T>(
    client: &impl GenericClient,
    table: Table,
    filter: &Filter,
    request: &PageRequest,
    mut item: impl FnMut(serde_json::Value, &str) -> Result<T, PgError>,
) -> Result<Page<T>, PgError> {
    let limit = request.limit.clamp(1, MAX_LIMIT);
    let (found, days) = windowed_rows(client, table, filter, request, limit).await?;
    let mut found = found;
    let has_more = found.len() > limit;
    found.truncate(limit);
    let mut items = Vec::with_capacity(limit);
    let mut next = None;
    for (json, started, id) in found {
        items.push(item(json, &id)?);
        next = Some(Position {
            time_us: started.max(0) as u64,
            id,
        });
    }
    let (total, total_is_lower_bound) = if request.count_total {
        total(client, table, filter, days.as_ref()).await?
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
    page(client, Table::Invocations, filter, request, |json, id| {
        decode(id, json)
    })
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
    windowed_rows(client, table, filter, &request, limit.saturating_sub(1))
        .await?
        .0
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
