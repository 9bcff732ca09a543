//! The JSON endpoints: lists, records by id (with tool-call joins and failure hints),
//! sessions, summary, agents, stats, rate limits and the audit log; viewer redaction.

use super::params::{self, bad, Params};
use super::{audit, confine, ok, ApiError, ApiResult, ApiState};
use crate::api::auth::Principal;
use crate::record::{CallRecord, CallStatus, LimitWindow};
use crate::store::index::{self as idx, RollupCell};
use crate::store::summary::{tag, FacetView, Filter};
use crate::store::{Page, PageRequest};
use crate::timefmt::{format_date, format_rfc3339_us, now_unix_us};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const DAY_US: u64 = 86_400_000_000;
const HOUR_US: u64 = 3_600_000_000;
/// Most records `/stats` aggregates in one request.
const STATS_BUDGET: usize = 1_000_000;

/// Parses and checks the list filters for `who`.
pub(super) fn list_filter(who: &Principal, params: &Params) -> Result<Filter, ApiError> {
    let mut filter = params::filter(params)?;
    if filter.text.is_some() && !who.is_admin() {
        return Err(ApiError::Forbidden(
            "q searches prompts and needs an admin token".into(),
        ));
    }
    confine(who, &mut filter)?;
    scope_session_filter(&mut filter);
    Ok(filter)
}

/// A plain `session_id` filter within one tenant also matches that tenant's scoped
/// session id (`id@tenant`, see `headers::tenant_scoped`); a filter's values are ORed.
fn scope_session_filter(filter: &mut Filter) {
    let tenant = match filter.eq.iter().find(|(t, _)| *t == tag::TENANT) {
        Some((_, values)) if values.len() == 1 => values[0].clone(),
        _ => return,
    };
    if let Some((_, values)) = filter.eq.iter_mut().find(|(t, _)| *t == tag::SESSION) {
        let scoped: Vec<String> = values
            .iter()
            .filter(|v| !v.contains(crate::headers::TENANT_SCOPE))
            .map(|v| crate::headers::tenant_scoped(v, Some(&tenant)))
            .collect();
        values.extend(scoped);
    }
}

/// One page of a list, as every list endpoint answers it.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "{T}Page", deny_unknown_fields)]
pub struct PageOf<T> {
    pub items: Vec<T>,
    pub count: usize,
    /// Exact up to 10000 matches (and 20000 examined candidates), then a lower bound.
    pub total: u64,
    pub total_is_lower_bound: bool,
    pub has_more: bool,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Pass as `offset` for the next page when paging by offset.
    pub next_offset: Option<usize>,
}

fn page_json<T>(page: Page<T>, request: &PageRequest) -> PageOf<T> {
    let next_offset = (page.has_more && request.after.is_none())
        .then(|| request.offset + page.items.len())
        .filter(|n| *n <= params::MAX_OFFSET);
    PageOf {
        count: page.items.len(),
        items: page.items,
        total: page.total,
        total_is_lower_bound: page.total_is_lower_bound,
        has_more: page.has_more,
        next_cursor: page.next.as_ref().map(params::encode_cursor),
        next_offset,
    }
}

pub(super) fn list(
    state: &ApiState,
    who: &Principal,
    p: &Params,
    invocations: bool,
    target: &str,
) -> ApiResult {
    let filter = list_filter(who, p)?;
    let request = params::page_request(p, true)?;
    if filter.text.is_some() {
        // The request as sent (path and query string), not a debug rendering.
        audit(state, who, "search prompts", target)?;
    }
    let body = if invocations {
        serde_json::to_value(page_json(
            state.store.list_invocations(&filter, &request)?,
            &request,
        ))
    } else {
        serde_json::to_value(page_json(
            state.store.list_calls(&filter, &request)?,
            &request,
        ))
    }
    .unwrap_or_default();
    ok(&body)
}

/// The stored id a principal means by a client-chosen invocation or session id.
///
/// A tenant's calls store such ids scoped, as `id@tenant` (`headers::tenant_scoped`),
/// so two tenants that pick the same id never share a record. A scoped id is taken
/// as written; a plain one resolves within the token's tenant, or the `tenant`
/// parameter's, falling back to the plain id (records stored before scoping; access is
/// checked after). An unconfined token without `tenant` gets the plain id, or the one
/// tenant's record of that id, or 409 when several tenants used it.
pub(super) fn resolve_scoped_id(
    state: &ApiState,
    who: &Principal,
    p: &Params,
    invocation: bool,
    id: &str,
) -> Result<String, ApiError> {
    use crate::headers::{tenant_scoped, TENANT_SCOPE};
    if id.contains(TENANT_SCOPE) {
        return Ok(id.to_string());
    }
    let exists = |candidate: &str| -> Result<bool, ApiError> {
        Ok(if invocation {
            state.store.record_tenant(true, candidate)?.is_some()
        } else {
            state.store.session(candidate)?.is_some()
        })
    };
    if let Some(tenant) = tenant_param(who, p)? {
        let scoped = tenant_scoped(id, Some(&tenant));
        return Ok(if exists(&scoped)? {
            scoped
        } else {
            id.to_string()
        });
    }
    if exists(id)? {
        return Ok(id.to_string());
    }
    let mut scoped = state.store.tenant_scoped_ids(invocation, id, 11)?;
    match scoped.len() {
        0 => Ok(id.to_string()),
        1 => Ok(scoped.remove(0)),
        _ => Err(ApiError::Ambiguous(format!(
            "several tenants used the id {id}: {}; ask for one with ?tenant= or by its scoped id",
            scoped.join(", ")
        ))),
    }
}

/// Unknown id → 404, except for tenant-confined tokens, which get 403 for both
/// "unknown" and "another tenant's" so existence does not leak.
pub(super) fn check_access(
    state: &ApiState,
    who: &Principal,
    invocation: bool,
    id: &str,
) -> Result<(), ApiError> {
    let what = if invocation { "invocation" } else { "call" };
    match state.store.record_tenant(invocation, id)? {
        Some(tenant) if who.may_see(tenant.as_deref()) => Ok(()),
        None if who.tenant.is_none() => Err(ApiError::NotFound(format!("no {what} with id {id}"))),
        _ => Err(ApiError::Forbidden(format!(
            "this token may not read {what} {id}"
        ))),
    }
}

/// Removes what a viewer may not see: bodies, messages, prompts, tool arguments
/// (a tool call's query string is its arguments).
fn redact_call(call: &mut CallRecord) {
    if is_tool_http(call) {
        call.path = path_for_viewer(call).to_string();
    }
    call.request = None;
    call.response = None;
    call.request_body = None;
    call.response_body = None;
    call.metadata.prompt_variables = None;
    if let Some(mcp) = call.mcp.as_mut() {
        *mcp = mcp.without_content();
    }
}

pub(super) fn call(
    state: &ApiState,
    who: &Principal,
    _params: &Params,
    id: &str,
    path: &str,
) -> ApiResult {
    check_access(state, who, false, id)?;
    let Some(mut call) = state.store.get_call(id)? else {
        return Err(ApiError::NotFound(format!("no call with id {id}")));
    };
    if who.is_admin() {
        audit(state, who, "read call bodies", path)?;
    } else {
        redact_call(&mut call);
    }
    let mut value = serde_json::to_value(&call).unwrap_or_default();
    value["hint"] = json!(hint(&call));
    value["price_entry"] = json!(price_entry(state, &call));
    ok(&value)
}

/// Reads of a run and its calls until they agree on its rounds (`invocation`).
const RUN_READ_ATTEMPTS: u32 = 3;

pub(super) fn invocation(
    state: &ApiState,
    who: &Principal,
    p: &Params,
    id: &str,
    path: &str,
) -> ApiResult {
    // `calls=false` leaves out the full call records: a page showing a 500-round run
    // lists its rounds and fetches one call's messages when that round is opened.
    let include_calls = p.bool("calls")?.unwrap_or(true);
    let id = resolve_scoped_id(state, who, p, true, id)?;
    let id = id.as_str();
    check_access(state, who, true, id)?;
    // The run and its calls are separate reads, and a writer stores a batch's calls
    // before the run's roll-up (PostgreSQL instances in separate transactions too),
    // so a read racing a batch can see a round the run does not count yet. Read
    // again while the two disagree, a few times at most (a run that is busy for
    // good, or whose calls retention removed, is answered as read).
    let mut attempts = 0;
    let (inv, summary, mut calls) = loop {
        let (Some(inv), Some(summary)) = (
            state.store.get_invocation(id)?,
            state.store.invocation_summary(id)?,
        ) else {
            return Err(ApiError::NotFound(format!("no invocation with id {id}")));
        };
        let calls = state.store.invocation_calls(id)?;
        let rounds_read = calls.iter().filter(|c| !is_tool_http(c)).count();
        attempts += 1;
        if rounds_read == inv.rounds as usize || attempts == RUN_READ_ATTEMPTS {
            break (inv, summary, calls);
        }
    };
    // In the order they happened: tool HTTP calls (round 0) between the LLM rounds.
    calls.sort_by(|a, b| (a.started_at_us, a.round, &a.id).cmp(&(b.started_at_us, b.round, &b.id)));
    if who.is_admin() {
        audit(state, who, "read invocation messages and tool calls", path)?;
    }
    let (llm, http): (Vec<&CallRecord>, Vec<&CallRecord>) =
        calls.iter().partition(|c| !is_tool_http(c));
    let mut llm = llm;
    llm.sort_by_key(|c| (c.round, c.started_at_us));
    let mut value = serde_json::to_value(&summary).unwrap_or_default();
    value["round_count"] = json!(inv.rounds);
    value["cost_pusd"] = json!(inv.cost_pusd);
    value["unpriced_calls"] = json!(inv.unpriced_calls);
    value["usage"] = serde_json::to_value(&inv.usage).unwrap_or_default();
    value["rounds"] = Value::Array(rounds(&llm, &http, who.is_admin()));
    value["timeline"] = Value::Array(timeline(&calls, who.is_admin()));
    if !include_calls {
        return ok(&value);
    }
    let calls: Vec<CallRecord> = calls
        .into_iter()
        .map(|mut c| {
            if !who.is_admin() {
                redact_call(&mut c);
            }
            c
        })
        .collect();
    value["calls"] = serde_json::to_value(&calls).unwrap_or_default();
    ok(&value)
}

/// The current price table's entry for the key that priced `call` (rates in USD per
/// million tokens), and whether the table is still the version that priced it.
fn price_entry(state: &ApiState, call: &CallRecord) -> Option<super::schema::PriceEntry> {
    use super::schema::{PriceEntry, PriceRates, PriceTier};
    use crate::cost::format_usd_per_million as per_m;
    let cost = call.cost.as_ref().filter(|c| c.priced)?;
    let key = cost.price_key.as_deref()?;
    let table = state.prices.read().ok()?.clone();
    let entry = table.entries().iter().find(|e| e.key() == key)?;
    let rates = |r: &crate::cost::Rates| PriceRates {
        input: per_m(r.input),
        output: per_m(r.output),
        cache_read: r.cache_read.map(per_m),
        cache_write: r.cache_write.map(per_m),
        cache_write_1h: r.cache_write_1h.map(per_m),
        reasoning: r.reasoning.map(per_m),
    };
    Some(PriceEntry {
        key: key.to_string(),
        unit: "USD per million tokens",
        rates: rates(&entry.rates),
        tiers: entry
            .tiers
            .iter()
            .map(|t| PriceTier {
                above_input_tokens: t.above_input_tokens,
                rates: rates(&t.rates),
            })
            .collect(),
        note: entry.note.clone(),
        defined_at: format!("{}:{}", entry.file, entry.line),
        table_version: table.version().to_string(),
        same_version_as_call: cost.table_version.as_deref() == Some(table.version()),
    })
}

/// A call through a `kind = "http"` provider (a tool's HTTP call) or an MCP exchange
/// (`kind = "mcp"`): tool traffic, not an LLM round.
fn is_tool_http(call: &CallRecord) -> bool {
    !crate::record::is_round_kind(&call.kind)
}

/// A tool call's path without its query string (its arguments: `?city=paris`),
/// as a viewer sees it; an LLM call's path as it is.
fn path_for_viewer(call: &CallRecord) -> &str {
    if is_tool_http(call) {
        call.path.split('?').next().unwrap_or("")
    } else {
        &call.path
    }
}

/// The timeline's `kind` of a call: `llm`, `http` or `mcp`.
fn timeline_kind(kind: &str) -> &'static str {
    match crate::record::ProviderKind::parse(kind) {
        Some(k) if !k.is_round() => k.as_str(),
        _ => "llm",
    }
}

fn ended_us(call: &CallRecord) -> u64 {
    call.started_at_us + (call.latency_ms * 1000.0) as u64
}

/// Every call of a run in the order it started: the LLM rounds and, between them,
/// the tool HTTP calls and MCP exchanges (with the round they followed). An MCP
/// exchange names its method, tool, server and failure; its arguments and result
/// only for admins.
fn timeline(calls: &[CallRecord], admin: bool) -> Vec<Value> {
    let mut last_round = 0;
    calls
        .iter()
        .map(|c| {
            let http = is_tool_http(c);
            if !http {
                last_round = c.round;
            }
            let mut entry = json!({
                "kind": timeline_kind(&c.kind),
                "call_id": c.id,
                "round": (!http).then_some(c.round),
                "after_round": http.then_some(last_round),
                "started_at": c.started_at,
                "ended_at": c.ended_at,
                "duration_ms": c.latency_ms,
                "provider": c.provider,
                "method": c.method,
                "path": if admin { c.path.as_str() } else { path_for_viewer(c) },
                "model": (!http).then(|| c.model.as_ref().or(c.response_model.as_ref())).flatten(),
                "status": c.status,
                "http_status": c.http_status,
            });
            if let Some(mcp) = &c.mcp {
                entry["mcp"] = json!({
                    "transport": mcp.transport,
                    "method": mcp.method,
                    "tool": mcp.tool,
                    "target": mcp.target,
                    "server": mcp.server,
                    "session_id": mcp.session_id,
                    "is_error": mcp.is_error,
                    "error": mcp.error,
                });
                if admin {
                    entry["mcp"]["arguments"] = json!(mcp.arguments);
                    entry["mcp"]["result_text"] = json!(mcp.result_text);
                    entry["mcp"]["structured_content"] = json!(mcp.structured_content);
                }
            }
            entry
        })
        .collect()
}

/// Each LLM round with its tool calls joined to their results in the next round
/// (tool HTTP calls in between are not rounds; they are listed with the tool call
/// whose gap they fall in).
fn rounds(calls: &[&CallRecord], http: &[&CallRecord], admin: bool) -> Vec<Value> {
    let mut out = Vec::with_capacity(calls.len());
    for (i, call) in calls.iter().enumerate() {
        let call: &CallRecord = call;
        let next: Option<&CallRecord> = calls.get(i + 1).copied();
        let ended_us = ended_us(call);
        let gap_http: Vec<&str> = http
            .iter()
            .filter(|h| {
                h.started_at_us >= ended_us
                    && next.is_none_or(|n| h.started_at_us < n.started_at_us)
            })
            .map(|h| h.id.as_str())
            .collect();
        let tools: Vec<Value> = call
            .response
            .iter()
            .flat_map(|r| r.tool_calls.iter())
            .map(|tc| {
                let result = next.and_then(|n| {
                    let id = tc.id.as_deref()?;
                    n.request
                        .as_ref()?
                        .messages
                        .iter()
                        .find(|m| m.tool_call_id.as_deref() == Some(id))
                });
                let duration_ms = match (result, next) {
                    (Some(_), Some(n)) => {
                        Some(n.started_at_us.saturating_sub(ended_us) as f64 / 1000.0)
                    }
                    _ => None,
                };
                let mut t = json!({
                    "id": tc.id,
                    "name": tc.name,
                    "result_round": result.and(next).map(|n| n.round),
                    "result_call_id": result.and(next).map(|n| n.id.clone()),
                    "duration_ms": duration_ms,
                    "http_call_ids": gap_http,
                });
                if admin {
                    t["arguments"] = tc.arguments.clone();
                    t["result"] = json!(result.and_then(|m| m.text.clone()));
                }
                t
            })
            .collect();
        out.push(json!({
            "round": call.round,
            "call_id": call.id,
            "started_at": call.started_at,
            "ended_at": call.ended_at,
            "latency_ms": call.latency_ms,
            "ttft_ms": call.ttft_ms,
            "provider": call.provider,
            "kind": call.kind,
            "model": call.model.as_ref().or(call.response_model.as_ref()),
            "response_model": call.response_model,
            "status": call.status,
            "http_status": call.http_status,
            "input_tokens": call.usage.input_tokens,
            "output_tokens": call.usage.output_tokens,
            "cost_usd": call.cost_usd,
            "stop_reason": call.stop_reason,
            "error": call.error,
            "hint": hint(call),
            "tool_calls": tools,
        }));
    }
    out
}

fn window_text(name: &str, w: &LimitWindow) -> String {
    let mut s = name.to_string();
    match (w.remaining, w.limit) {
        (Some(r), Some(l)) => s.push_str(&format!(" ({r} of {l} left")),
        (Some(r), None) => s.push_str(&format!(" ({r} left")),
        _ => s.push_str(" ("),
    }
    if let Some(at) = &w.reset_at {
        s.push_str(&format!(", resets {at}"));
    } else if let Some(r) = w.reset_s {
        s.push_str(&format!(", resets in {r}s"));
    }
    s.push(')');
    s.replace(" ()", "")
}

/// A one-line explanation of a failed call, for a human.
pub(super) fn hint(call: &CallRecord) -> Option<String> {
    let status = call.status?;
    let provider = &call.provider;
    let text = match status {
        CallStatus::Success => return None,
        CallStatus::RateLimited => {
            let rl = call.rate_limit.clone().unwrap_or_default();
            let windows = [
                ("requests", &rl.requests),
                ("tokens", &rl.tokens),
                ("input tokens", &rl.input_tokens),
                ("output tokens", &rl.output_tokens),
            ];
            let out = windows
                .iter()
                .filter_map(|(n, w)| w.as_ref().map(|w| (n, w)))
                .min_by(|a, b| {
                    let frac = |w: &LimitWindow| match (w.remaining, w.limit) {
                        (Some(r), Some(l)) if l > 0 => r as f64 / l as f64,
                        (Some(0), _) => 0.0,
                        _ => 2.0,
                    };
                    frac(a.1).total_cmp(&frac(b.1))
                });
            let mut s = format!("{provider} rate limit hit (429)");
            if let Some((name, w)) = out {
                s.push_str(&format!(": {} limit ran out", window_text(name, w)));
            }
            if let Some(r) = rl.retry_after_s {
                s.push_str(&format!("; retry after {r}s"));
            }
            s
        }
        CallStatus::Unauthorized => match &call.api_key_fingerprint {
            Some(fp) => format!(
                "{provider} refused API key {fp} (HTTP {})",
                call.http_status.unwrap_or(401)
            ),
            None => format!("{provider} refused the request: no API key was sent"),
        },
        CallStatus::Timeout => format!("no answer from {provider} in time"),
        CallStatus::Canceled => "the client went away before the response finished".into(),
        CallStatus::Failed => {
            let llmtap_answered = call.error.as_ref().and_then(|e| e.error_type.as_deref())
                == Some("upstream_unreachable");
            let mut s = match call.http_status {
                // llmtap produced this status, not the provider.
                Some(code) if llmtap_answered => {
                    format!("{provider} could not be reached; llmtap answered HTTP {code}")
                }
                Some(code) => format!("{provider} answered HTTP {code}"),
                None => format!("{provider} could not be reached"),
            };
            if let Some(e) = &call.error {
                for part in [&e.error_type, &e.message].into_iter().flatten() {
                    s.push_str(": ");
                    s.push_str(part);
                }
            }
            s
        }
    };
    Some(idx::shorten(&text, 300))
}

pub(super) fn sessions(state: &ApiState, who: &Principal, p: &Params) -> ApiResult {
    let mut tenant = p.get("tenant").map(str::to_string);
    if let Some(mine) = &who.tenant {
        if tenant.as_ref().is_some_and(|t| t != mine) {
            return Err(ApiError::Forbidden(
                "this token may read its own tenant only".into(),
            ));
        }
        tenant = Some(mine.clone());
    }
    let request = params::page_request(p, true)?;
    let mut page = state.store.list_sessions(tenant.as_deref(), &request)?;
    if who.is_admin() {
        // Subjects are users' first messages: prompt text, so an admin's read is audited.
        if page.items.iter().any(|s| s.subject.is_some()) {
            audit(state, who, "read session subjects", "/api/v1/sessions")?;
        }
    } else {
        for s in &mut page.items {
            s.subject = None;
        }
    }
    ok(&page_json(page, &request))
}

pub(super) fn session(state: &ApiState, who: &Principal, p: &Params, id: &str) -> ApiResult {
    let max = p.usize_in("limit", 2000, 1, 10_000)?;
    let id = resolve_scoped_id(state, who, p, false, id)?;
    let id = id.as_str();
    let Some(mut s) = state.store.session(id)? else {
        return Err(if who.tenant.is_some() {
            ApiError::Forbidden(format!("this token may not read session {id}"))
        } else {
            ApiError::NotFound(format!("no session with id {id}"))
        });
    };
    if !who.may_see(s.tenant.as_deref()) {
        return Err(ApiError::Forbidden(format!(
            "this token may not read session {id}"
        )));
    }
    if !who.is_admin() {
        s.subject = None;
    } else if s.subject.is_some() {
        audit(
            state,
            who,
            "read session subject",
            &format!("/api/v1/sessions/{id}"),
        )?;
    }
    let timeline: Vec<Value> = state
        .store
        .session_calls(id, max)?
        .into_iter()
        .filter(|c| who.may_see(c.tenant.as_deref()))
        .map(|c| {
            json!({
                "kind": timeline_kind(&c.kind),
                "call_id": c.id,
                "invocation_id": c.invocation_id,
                "round": crate::record::is_round_kind(&c.kind).then_some(c.round),
                "mcp_method": c.mcp_method,
                "tool": c.tool,
                "started_at": c.started_at,
                "ended_at": c.ended_at,
                "provider": c.provider,
                "model": c.model,
                "status": c.status,
                "http_status": c.http_status,
                "input_tokens": c.input_tokens,
                "output_tokens": c.output_tokens,
                "cost_usd": c.cost_usd,
                "duration_ms": c.latency_ms,
                "stop_reason": c.stop_reason,
            })
        })
        .collect();
    let mut value = serde_json::to_value(&s).unwrap_or_default();
    value["timeline"] = Value::Array(timeline);
    ok(&value)
}

fn tenant_param(who: &Principal, p: &Params) -> Result<Option<String>, ApiError> {
    let asked = p
        .get("tenant")
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    match (&who.tenant, asked) {
        (Some(mine), Some(t)) if &t != mine => Err(ApiError::Forbidden(
            "this token may read its own tenant only".into(),
        )),
        (Some(mine), _) => Ok(Some(mine.clone())),
        (None, t) => Ok(t),
    }
}

pub(super) fn summary(state: &ApiState, who: &Principal, p: &Params) -> ApiResult {
    let tenant = tenant_param(who, p)?;
    let zone = params::time_zone(p)?;
    let scope = match &tenant {
        Some(t) => idx::scope_tenant(t),
        None => b"*".to_vec(),
    };
    let now = now_unix_us();
    let (midnight, offset_s) = crate::timefmt::start_of_day_us(now, &zone)
        .ok_or_else(|| bad("tz", "cannot find the start of today in this zone"))?;
    let total = state.store.rollup_total(&scope)?;
    let today = state.store.rollup_range(&scope, midnight, now + 1)?;
    let last_day = state
        .store
        .rollup_range(&scope, now.saturating_sub(DAY_US), now + 1)?;
    ok(&json!({
        "tenant": tenant,
        "tz_offset_s": offset_s,
        "today_starts_at": format_rfc3339_us(midnight),
        "total_runs": total.invocations,
        "total_calls": total.calls,
        "runs_today": today.invocations,
        "calls_today": today.calls,
        "errors_24h": last_day.errors,
        "cost_today_usd": today.cost_pusd as f64 / 1e12,
        "tokens_today": {
            "input": today.input_tokens,
            "output": today.output_tokens,
            "total": today.input_tokens.saturating_add(today.output_tokens),
        },
        "resolution": "rollups in 15-minute buckets: errors_24h covers the last 96 whole buckets",
    }))
}

fn cell_json(cell: &RollupCell) -> Value {
    let avg = |sum: f64, n: u64| if n == 0 { None } else { Some(sum / n as f64) };
    json!({
        "invocations": cell.invocations,
        "calls": cell.calls,
        "errors": cell.errors,
        "error_rate": avg(cell.errors as f64, cell.calls),
        "cost_usd": cell.cost_pusd as f64 / 1e12,
        "avg_cost_per_invocation_usd": avg(cell.cost_pusd as f64 / 1e12, cell.invocations),
        "avg_cost_per_call_usd": avg(cell.cost_pusd as f64 / 1e12, cell.calls),
        "input_tokens": cell.input_tokens,
        "output_tokens": cell.output_tokens,
        "avg_latency_ms": avg(cell.latency_sum_us as f64 / 1000.0, cell.calls),
        "p50_latency_ms": cell.latency_quantile_ms(0.5),
        "p95_latency_ms": cell.latency_quantile_ms(0.95),
    })
}

pub(super) fn agents(state: &ApiState, who: &Principal, p: &Params) -> ApiResult {
    let tenant = tenant_param(who, p)?;
    let prefix = match &tenant {
        Some(t) => idx::scope_agent(Some(t), ""),
        None => b"A".to_vec(),
    };
    let mut rows: Vec<(String, RollupCell)> = state
        .store
        .rollup_scopes(&prefix)?
        .into_iter()
        .map(|(k, c)| (String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), c))
        .collect();
    rows.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(&b.0)));
    let items: Vec<Value> = rows
        .iter()
        .map(|(agent, cell)| {
            let mut v = cell_json(cell);
            v["agent"] = json!((!agent.is_empty()).then_some(agent));
            v
        })
        .collect();
    ok(
        &json!({"tenant": tenant, "items": items, "count": items.len(),
        "latency_note": "p50/p95 from a log histogram (4 buckets per doubling), about ±9%"}),
    )
}

#[derive(Default)]
struct Group {
    calls: u64,
    success: u64,
    latencies_us: Vec<u64>,
    input_tokens: u64,
    output_tokens: u64,
    cost_pusd: u64,
}

pub(super) fn stats(state: &ApiState, who: &Principal, p: &Params) -> ApiResult {
    let group_by = p.get("group_by").unwrap_or("agent");
    let group_tag = match group_by {
        "agent" => Some(tag::AGENT),
        "model" => Some(tag::MODEL),
        "provider" => Some(tag::PROVIDER),
        "prompt" => Some(tag::PROMPT),
        "trigger" => Some(tag::TRIGGER),
        "tenant" => Some(tag::TENANT),
        "day" | "hour" => None,
        _ => {
            return Err(bad(
                "group_by",
                "expected agent, model, provider, prompt, trigger, tenant, day or hour",
            )
            .into())
        }
    };
    let filter = list_filter(who, p)?;
    let mut groups: BTreeMap<Option<String>, Group> = BTreeMap::new();
    let outcome = state
        .store
        .scan_facets(false, &filter, STATS_BUDGET, &mut |v: &FacetView<'_>| {
            let key = match group_tag {
                Some(t) => v.get(t).map(str::to_string),
                None if group_by == "day" => Some(format_date(v.time_us)),
                None => Some(format!(
                    "{}:00:00Z",
                    &format_rfc3339_us(v.time_us - v.time_us % HOUR_US)[..13]
                )),
            };
            let g = groups.entry(key).or_default();
            g.calls += 1;
            if v.get(tag::STATUS) == Some("success") {
                g.success += 1;
            }
            g.latencies_us.push(v.latency_us);
            g.input_tokens += v.input_tokens;
            g.output_tokens += v.output_tokens;
            g.cost_pusd += v.cost_pusd.unwrap_or(0);
        })?;
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(key, mut g)| {
            g.latencies_us.sort_unstable();
            let n = g.calls.max(1) as f64;
            let p95 = g
                .latencies_us
                .get(((g.latencies_us.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
                .map(|us| *us as f64 / 1000.0);
            json!({
                "group": key,
                "calls": g.calls,
                "success_rate": g.success as f64 / n,
                "avg_latency_ms": g.latencies_us.iter().sum::<u64>() as f64 / n / 1000.0,
                "p95_latency_ms": p95,
                "avg_input_tokens": g.input_tokens as f64 / n,
                "avg_output_tokens": g.output_tokens as f64 / n,
                "cost_usd": g.cost_pusd as f64 / 1e12,
            })
        })
        .collect();
    ok(&json!({
        "group_by": group_by,
        "items": items,
        "truncated": outcome == crate::store::ScanOutcome::Truncated,
    }))
}

fn window_json(w: &Option<LimitWindow>) -> Value {
    match w {
        None => Value::Null,
        Some(w) => json!({
            "limit": w.limit,
            "remaining": w.remaining,
            "reset_s": w.reset_s,
            "reset_at": w.reset_at,
            "headroom_pct": headroom(w),
        }),
    }
}

fn headroom(w: &LimitWindow) -> Option<f64> {
    match (w.remaining, w.limit) {
        (Some(r), Some(l)) if l > 0 => Some((r as f64 / l as f64 * 1000.0).round() / 10.0),
        _ => None,
    }
}

pub(super) fn ratelimits(state: &ApiState, who: &Principal, p: &Params) -> ApiResult {
    // Limits belong to provider API keys, which tenants may share: remaining capacity
    // and 429 counts would show other tenants' traffic, and the state is not kept per
    // tenant, so a confined token is refused rather than shown a partial truth.
    if who.tenant.is_some() {
        return Err(ApiError::Forbidden(
            "rate-limit state is kept per provider API key, not per tenant; it needs a token that is not confined to a tenant".into(),
        ));
    }
    let series = p.bool("series")?.unwrap_or(false);
    let now = now_unix_us();
    let from = p.time("from")?.unwrap_or(now.saturating_sub(DAY_US));
    let points = p.usize_in("points", 200, 1, 5000)?;
    let provider = p.get("provider");
    let mut items = Vec::new();
    for (key, s) in state.store.ratelimit_states()? {
        if provider.is_some_and(|want| want != s.provider) {
            continue;
        }
        let windows = [&s.requests, &s.tokens, &s.input_tokens, &s.output_tokens];
        let head = windows
            .iter()
            .filter_map(|w| w.as_ref().and_then(headroom))
            .min_by(f64::total_cmp);
        let mut v = json!({
            "provider": s.provider,
            "key_fingerprint": s.key_fingerprint,
            "model": s.model,
            "at": s.at,
            "requests": window_json(&s.requests),
            "tokens": window_json(&s.tokens),
            "input_tokens": window_json(&s.input_tokens),
            "output_tokens": window_json(&s.output_tokens),
            "headroom_pct": head,
            "retry_after_s": s.retry_after_s,
            "rate_limited_1h": state.store.count_429_since(&key, now.saturating_sub(HOUR_US))?,
            "rate_limited_24h": state.store.count_429_since(&key, now.saturating_sub(DAY_US))?,
            "last_429_at": s.last_429_at,
            "last_retry_after_s": s.last_retry_after_s,
        });
        if series {
            let pts: Vec<Value> = state
                .store
                .ratelimit_series(&key, from, points)?
                .into_iter()
                .map(|pt| {
                    json!({
                        "at": format_rfc3339_us(pt.at_us),
                        "status": pt.status,
                        "requests_remaining": pt.requests_remaining,
                        "tokens_remaining": pt.tokens_remaining,
                        "input_tokens_remaining": pt.input_tokens_remaining,
                        "output_tokens_remaining": pt.output_tokens_remaining,
                    })
                })
                .collect();
            v["series"] = Value::Array(pts);
        }
        items.push(v);
    }
    ok(&json!({"items": items, "count": items.len()}))
}

/// `GET /whoami`: the caller's role and tenant, so a client (the page) knows what it
/// may ask for before asking.
pub(super) fn whoami(state: &ApiState, who: &Principal) -> ApiResult {
    ok(&super::schema::WhoAmI {
        name: who.name.clone(),
        role: who.role.as_str(),
        tenant: who.tenant.clone(),
        tokens_required: state.auth.enabled(),
    })
}

pub(super) fn audit_log(state: &ApiState, who: &Principal, p: &Params) -> ApiResult {
    if !who.is_admin() || who.tenant.is_some() {
        return Err(ApiError::Forbidden(
            "the audit log needs an admin token that is not confined to a tenant".into(),
        ));
    }
    let limit = p.usize_in("limit", 100, 1, 1000)?;
    let before = p.time("before")?;
    let items = state.store.audit_entries(before, limit)?;
    ok(&json!({"items": items, "count": items.len()}))
}
