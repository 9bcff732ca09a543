//! The JSON endpoints: lists, records by id (with tool-call joins and failure hints),
//! sessions, summary, agents, stats, rate limits and the audit log; viewer redaction.

use super::answers;
use super::params::{self, bad, Params};
use super::{audit, confine, ok, ApiError, ApiResult, ApiState};
use crate::api::auth::Principal;
use crate::record::{CallRecord, CallStatus, LimitWindow};
use crate::store::index::{self as idx, RollupCell};
use crate::store::summary::{tag, FacetView, Filter};
use crate::store::{Page, PageRequest};
use crate::timefmt::{format_date, format_rfc3339_us, now_unix_us};
use serde::Serialize;
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

/// A page of stored items as the list answers it, each converted by `answer`.
fn page_json<S, T>(page: Page<S>, request: &PageRequest, answer: impl FnMut(S) -> T) -> PageOf<T> {
    let next_offset = (page.has_more && request.after.is_none())
        .then(|| request.offset + page.items.len())
        .filter(|n| *n <= params::MAX_OFFSET);
    PageOf {
        count: page.items.len(),
        items: page.items.into_iter().map(answer).collect(),
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
    if invocations {
        ok(&page_json(
            state.store.list_invocations(&filter, &request)?,
            &request,
            answers::RunListItem::of,
        ))
    } else {
        ok(&page_json(
            state.store.list_calls(&filter, &request)?,
            &request,
            answers::CallListItem::of,
        ))
    }
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
    let space = if invocation {
        crate::store::types::ScopedIdSpace::Runs
    } else {
        crate::store::types::ScopedIdSpace::Sessions
    };
    let mut scoped = state.store.tenant_scoped_ids(space, id, 11)?;
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

pub(super) fn call(
    state: &ApiState,
    who: &Principal,
    _params: &Params,
    id: &str,
    path: &str,
) -> ApiResult {
    check_access(state, who, false, id)?;
    let Some(call) = state.store.get_call(id)? else {
        return Err(ApiError::NotFound(format!("no call with id {id}")));
    };
    let admin = who.is_admin();
    if admin {
        audit(state, who, "read call bodies", path)?;
    }
    let (upstream_url, history) = if admin {
        // Only admins read the messages the history marks.
        (
            Some(upstream_url(state, &call)),
            super::history::of_call(&state.store, &call)?,
        )
    } else {
        (None, None)
    };
    ok(&answers::CallDetail {
        hint: hint(&call),
        price_entry: price_entry(state, &call),
        upstream_url,
        history,
        call: answers::RecordedCall::of(call, admin),
    })
}

/// Where the call went: the provider's base URL (its path prefix included) and the
/// call's path as recorded (secret query values already redacted), for the page's
/// "copy as curl". A provider no longer configured is taken to be HTTPS.
fn upstream_url(state: &ApiState, call: &CallRecord) -> String {
    match state.proxy.config.providers.get(&call.provider) {
        Some(p) if p.base.authority.as_str() == call.upstream_host => format!(
            "{}://{}{}{}",
            p.base.scheme, p.base.authority, p.base.path_prefix, call.path
        ),
        _ => format!("https://{}{}", call.upstream_host, call.path),
    }
}

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
    let Some(run) = state.store.invocation_with_calls(id)? else {
        return Err(ApiError::NotFound(format!("no invocation with id {id}")));
    };
    if who.is_admin() {
        audit(state, who, "read invocation messages and tool calls", path)?;
    }
    ok(&answers::InvocationDetail::of(
        run,
        who.is_admin(),
        include_calls,
    ))
}

/// The current price table's entry for the key that priced `call` (rates in USD per
/// million tokens), and whether the table is still the version that priced it.
fn price_entry(state: &ApiState, call: &CallRecord) -> Option<answers::PriceEntry> {
    use crate::cost::format_usd_per_million as per_m;
    use answers::{PriceEntry, PriceRates, PriceTier};
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

/// A one-line explanation of a failed call for a human: what happened, then what to
/// do about it. Every failed status has one; a success has none.
pub(super) fn hint(call: &CallRecord) -> Option<String> {
    let status = call.status?;
    let provider = &call.provider;
    let (what, todo) = match status {
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
            (
                s,
                "Wait for the reset and retry with backoff; send fewer or smaller requests at once, or ask the provider for a higher limit",
            )
        }
        CallStatus::Unauthorized => {
            let code = call.http_status.unwrap_or(401);
            let what = match &call.api_key_fingerprint {
                Some(fp) => format!("{provider} refused API key {fp} (HTTP {code})"),
                None => format!("{provider} refused the request: no API key was sent (HTTP {code})"),
            };
            let todo = match (&call.api_key_fingerprint, code) {
                (None, _) => "Set the provider's API key in the agent's environment or client",
                (Some(_), 403) => "The key is valid but may not do this: check the key's project, organisation and model access, or the region the provider allows",
                (Some(_), _) => "Check that the agent sends the right key for this provider (not revoked, not expired, not another provider's), then retry",
            };
            (with_error(what, call), todo)
        }
        CallStatus::Timeout => {
            let what = match call.http_status {
                Some(code @ (408 | 504)) => format!("{provider} answered HTTP {code}: it timed out"),
                _ => format!("no answer from {provider} in time"),
            };
            (
                with_error(what, call),
                "Retry with backoff; for long answers stream the response, lower max tokens, or raise the timeout (server.first_byte_timeout_ms and server.idle_timeout_ms in llmtap, the client's own timeout in the agent)",
            )
        }
        CallStatus::Canceled => (
            format!(
                "the client went away after {} before the response finished",
                format_seconds(call.latency_ms)
            ),
            "The agent closed the connection, not the provider: raise the client's timeout if it gave up on a long answer, or check why the agent stopped; tokens generated so far may still be billed",
        ),
        CallStatus::Failed => {
            let error_type = call.error.as_ref().and_then(|e| e.error_type.as_deref());
            let llmtap_answered = error_type == Some("upstream_unreachable");
            let overloaded = call.http_status == Some(529) || error_type == Some("overloaded_error");
            let tool_failure = matches!(error_type, Some("jsonrpc_error" | "tool_error"));
            let what = match call.http_status {
                _ if tool_failure => format!("a tool of {provider} failed"),
                // llmtap produced this status, not the provider.
                Some(code) if llmtap_answered => {
                    format!("{provider} could not be reached; llmtap answered HTTP {code}")
                }
                Some(529) => format!("{provider} is overloaded (HTTP 529)"),
                Some(code) => format!("{provider} answered HTTP {code}"),
                None => format!("{provider} could not be reached"),
            };
            let todo = match call.http_status {
                _ if tool_failure => "The tool reported the failure: read its message; the agent usually gets it as the tool result",
                _ if overloaded => "Not your limit: the provider has no capacity now. Retry with exponential backoff, or fall back to another model or provider",
                _ if llmtap_answered => "Check the provider's base URL in llmtap's configuration and that llmtap's host can resolve and reach it (DNS, firewall, proxy)",
                Some(500..=599) => "A failure on the provider's side: retry with backoff (the official SDKs do), and check the provider's status page if it persists",
                Some(400 | 422) => "The provider rejected the request: read the error message and check the request's parameters (Metadata tab) and the model name",
                Some(404) => "Check the model name and the endpoint path: the model may not exist, be retired, or not be available to this key",
                Some(413) => "The request is too large: shorten the context or the attachments",
                Some(400..=499) => "The provider refused the request: read the error message, fix the request, then retry",
                _ => "The exchange broke before the answer ended: retry; if it repeats, check the network between llmtap and the provider",
            };
            (with_error(what, call), todo)
        }
    };
    Some(format!("{}. {todo}.", idx::shorten(&what, 240)))
}

/// A hint's first part followed by the failure's error type and message.
fn with_error(mut what: String, call: &CallRecord) -> String {
    if let Some(e) = &call.error {
        for part in [&e.error_type, &e.message].into_iter().flatten() {
            what.push_str(": ");
            what.push_str(part);
        }
    }
    what
}

/// `1.5 s`, `250 ms`: a duration in a hint.
fn format_seconds(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// Calls of a session looked at for its subject: the first with a user message.
const SUBJECT_CALLS: usize = 3;

/// Fills a session's subject, its first user message shortened, from the content of
/// its first calls (the store keeps no subject: prompt text outside the sealed
/// content would outlive the calls' expiry). Sessions stored before keep theirs.
/// True when the session has a subject.
fn session_subject(state: &ApiState, s: &mut idx::SessionSummary) -> Result<bool, ApiError> {
    if s.subject.is_none() {
        for first in state.store.session_calls(&s.id, SUBJECT_CALLS)? {
            if let Some(call) = state.store.get_call(&first.id)? {
                if let Some(subject) = idx::subject_of(&call) {
                    s.subject = Some(subject);
                    break;
                }
            }
        }
    }
    Ok(s.subject.is_some())
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
    let text = |name: &str| p.get(name).filter(|v| !v.is_empty()).map(str::to_string);
    let filter = crate::store::index::SessionFilter {
        tenant,
        from_us: p.time("from")?,
        to_us: p.time("to")?,
        agent: text("agent"),
        model: text("model"),
    };
    if let (Some(a), Some(b)) = (filter.from_us, filter.to_us) {
        if a >= b {
            return Err(bad("to", "must be later than from").into());
        }
    }
    let request = params::page_request(p, true)?;
    let mut page = state.store.list_sessions(&filter, &request)?;
    let admin = who.is_admin();
    if admin {
        for s in &mut page.items {
            session_subject(state, s)?;
        }
        // Subjects are users' first messages: prompt text, so an admin's read is audited.
        if page.items.iter().any(|s| s.subject.is_some()) {
            audit(state, who, "read session subjects", "/api/v1/sessions")?;
        }
    }
    ok(&page_json(page, &request, |s| {
        answers::SessionListItem::of(s, admin)
    }))
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
    if who.is_admin() && session_subject(state, &mut s)? {
        audit(
            state,
            who,
            "read session subject",
            &format!("/api/v1/sessions/{id}"),
        )?;
    }
    let summaries: Vec<_> = state
        .store
        .session_calls(id, max)?
        .into_iter()
        .filter(|c| who.may_see(c.tenant.as_deref()))
        .collect();
    let conversation = if p.bool("conversation")?.unwrap_or(false) {
        Some(session_conversation(state, who, &summaries, id)?)
    } else {
        None
    };
    ok(&answers::SessionDetail {
        session: answers::SessionListItem::of(s, who.is_admin()),
        timeline: summaries
            .into_iter()
            .map(answers::SessionTimelineEntry::of)
            .collect(),
        conversation,
    })
}

/// Calls of a session read back whole for its conversation, the newest this many.
const CONVERSATION_CALLS: usize = 500;

/// The session as a conversation (`agent_loop::conversation`), each failure with its
/// hint; texts and arguments for admins only (the read is audited).
fn session_conversation(
    state: &ApiState,
    who: &Principal,
    summaries: &[crate::store::summary::CallSummary],
    id: &str,
) -> Result<Vec<answers::ConversationTurn>, ApiError> {
    let skip = summaries.len().saturating_sub(CONVERSATION_CALLS);
    let mut calls = Vec::with_capacity(summaries.len() - skip);
    for summary in &summaries[skip..] {
        if let Some(call) = state.store.get_call(&summary.id)? {
            calls.push(call);
        }
    }
    if who.is_admin() {
        audit(
            state,
            who,
            "read session conversation",
            &format!("/api/v1/sessions/{id}"),
        )?;
    }
    let hints: std::collections::HashMap<&str, Option<String>> =
        calls.iter().map(|c| (c.id.as_str(), hint(c))).collect();
    Ok(crate::agent_loop::conversation(&calls)
        .into_iter()
        .map(|turn| answers::ConversationTurn::of(turn, &hints, who.is_admin()))
        .collect())
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
    let scope = crate::store::RollupScope::all_or_tenant(tenant.as_deref());
    let now = now_unix_us();
    let (midnight, offset_s) = crate::timefmt::start_of_day_us(now, &zone)
        .ok_or_else(|| bad("tz", "cannot find the start of today in this zone"))?;
    let total = state.store.rollup_total(&scope)?;
    let in_window = crate::store::BucketRange::starting_in;
    let today = state
        .store
        .rollup_range(&scope, in_window(midnight, now + 1))?;
    let last_day = state
        .store
        .rollup_range(&scope, in_window(now.saturating_sub(DAY_US), now + 1))?;
    let mut runs_last_day = Filter {
        from_us: Some(now.saturating_sub(DAY_US)),
        ..Filter::default()
    };
    if let Some(t) = &tenant {
        runs_last_day.eq.push((tag::TENANT, vec![t.clone()]));
    }
    let errors_24h = failed_runs(state, runs_last_day)?;
    ok(&answers::Summary {
        tenant,
        tz_offset_s: offset_s,
        today_starts_at: format_rfc3339_us(midnight),
        total_runs: total.invocations,
        total_calls: total.calls,
        runs_today: today.invocations,
        calls_today: today.calls,
        errors_24h,
        failed_calls_24h: last_day.errors,
        cost_today_usd: today.cost_pusd as f64 / 1e12,
        tokens_today: answers::TokenTotals::of(&today),
        resolution: "errors_24h: runs started in the last 24 h that ended in failure; failed_calls_24h: failed LLM calls (every attempt) in the last 96 whole 15-minute buckets",
    })
}

/// Runs among those `filter` matches that ended in failure (`agent_loop::outcome`:
/// their last round's last attempt failed), counted by the store's run index (exact
/// for the status facet with a tenant or agent, on every engine).
fn failed_runs(state: &ApiState, mut filter: Filter) -> Result<u64, ApiError> {
    let failing: Vec<String> = CallStatus::ALL
        .iter()
        .filter(|s| **s != CallStatus::Success)
        .map(|s| s.as_str().to_string())
        .collect();
    filter.eq.retain(|(t, _)| *t != tag::STATUS);
    filter.eq.push((tag::STATUS, failing));
    let page = state.store.list_invocations(
        &filter,
        &PageRequest {
            limit: 1,
            after: None,
            offset: 0,
            count_total: true,
        },
    )?;
    Ok(page.total)
}

pub(super) fn agents(state: &ApiState, who: &Principal, p: &Params) -> ApiResult {
    let tenant = tenant_param(who, p)?;
    let mut rows: Vec<(String, RollupCell)> = state.store.rollup_agents(tenant.as_deref())?;
    rows.sort_by(|a, b| {
        (b.1.calls, b.1.tool_calls)
            .cmp(&(a.1.calls, a.1.tool_calls))
            .then(a.0.cmp(&b.0))
    });
    let scoped = |agent: Option<&str>| {
        let mut filter = Filter::default();
        if let Some(t) = &tenant {
            filter.eq.push((tag::TENANT, vec![t.clone()]));
        }
        if let Some(a) = agent {
            filter.eq.push((tag::AGENT, vec![a.to_string()]));
        }
        filter
    };
    // Runs without an agent: all failed runs less the named agents'.
    let mut unnamed_failed = failed_runs(state, scoped(None))?;
    let mut failed = Vec::with_capacity(rows.len());
    for (agent, _) in &rows {
        let n = if agent.is_empty() {
            0
        } else {
            failed_runs(state, scoped(Some(agent)))?
        };
        unnamed_failed = unnamed_failed.saturating_sub(n);
        failed.push(n);
    }
    let items: Vec<answers::AgentRow> = rows
        .iter()
        .zip(failed)
        .map(|((agent, cell), failed)| {
            let failed = if agent.is_empty() {
                unnamed_failed
            } else {
                failed
            };
            answers::AgentRow::of(agent, cell, failed)
        })
        .collect();
    ok(&answers::Agents {
        tenant,
        count: items.len(),
        items,
        latency_note: "p50/p95 from a log histogram (4 buckets per doubling), about ±9%",
    })
}

#[derive(Default)]
struct Group {
    /// LLM calls (every attempt), or tool calls with `group_by=tool`.
    calls: u64,
    tool_calls: u64,
    runs: u64,
    failed_runs: u64,
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
        "provider" | "tool" => Some(tag::PROVIDER),
        "prompt" => Some(tag::PROMPT),
        "trigger" => Some(tag::TRIGGER),
        "tenant" => Some(tag::TENANT),
        "day" | "hour" => None,
        _ => {
            return Err(bad(
                "group_by",
                "expected agent, model, provider, tool, prompt, trigger, tenant, day or hour",
            )
            .into())
        }
    };
    let by_tool = group_by == "tool";
    let filter = list_filter(who, p)?;
    let key_of = |v: &FacetView<'_>| match group_tag {
        Some(t) => v.get(t).map(str::to_string),
        None if group_by == "day" => Some(format_date(v.time_us)),
        None => Some(format!(
            "{}:00:00Z",
            &format_rfc3339_us(v.time_us - v.time_us % HOUR_US)[..13]
        )),
    };
    let mut groups: BTreeMap<Option<String>, Group> = BTreeMap::new();
    let mut tool_calls_without_group = 0u64;
    let mut truncated = false;
    let outcome = state
        .store
        .scan_facets(false, &filter, STATS_BUDGET, &mut |v: &FacetView<'_>| {
            // A tool call is no LLM call: counted apart, never in a model's group or
            // the LLM latency and error figures; `group_by=tool` counts only them.
            let tool = v
                .get(tag::KIND)
                .is_some_and(|k| !crate::record::is_round_kind(k));
            if by_tool != tool {
                if tool && group_tag != Some(tag::MODEL) && group_tag != Some(tag::PROVIDER) {
                    // A tool call that names no agent (prompt, tenant, ...) is counted
                    // apart, never as a group of tool calls alone (see below).
                    match key_of(v) {
                        Some(key) => groups.entry(Some(key)).or_default().tool_calls += 1,
                        None => tool_calls_without_group += 1,
                    }
                }
                return;
            }
            let g = groups.entry(key_of(v)).or_default();
            g.calls += 1;
            if v.get(tag::STATUS) == Some("success") {
                g.success += 1;
            }
            g.latencies_us.push(v.latency_us);
            g.input_tokens += v.input_tokens;
            g.output_tokens += v.output_tokens;
            g.cost_pusd += v.cost_pusd.unwrap_or(0);
        })?;
    truncated |= outcome == crate::store::ScanOutcome::Truncated;
    if !by_tool {
        // Runs, by the same facets (a run carries each model it used).
        let outcome =
            state
                .store
                .scan_facets(true, &filter, STATS_BUDGET, &mut |v: &FacetView<'_>| {
                    let keys: Vec<Option<String>> = match group_tag {
                        Some(t) if t == tag::MODEL || t == tag::PROVIDER => {
                            v.all(t).map(|s| Some(s.to_string())).collect()
                        }
                        _ => vec![key_of(v)],
                    };
                    for key in keys {
                        // A run carries its requested and its answering models: it
                        // counts in the groups its calls made (the requested model's).
                        let g = match groups.get_mut(&key) {
                            Some(g) => g,
                            None if group_tag == Some(tag::MODEL) => continue,
                            None => groups.entry(key).or_default(),
                        };
                        g.runs += 1;
                        if v.get(tag::STATUS).is_some_and(|s| s != "success") {
                            g.failed_runs += 1;
                        }
                    }
                })?;
        truncated |= outcome == crate::store::ScanOutcome::Truncated;
    }
    // Calls and runs without a value (no agent, ...) are a group of their own; such
    // tool calls join it when it exists, and are only counted apart otherwise.
    if let Some(g) = groups.get_mut(&None) {
        g.tool_calls += std::mem::take(&mut tool_calls_without_group);
    }
    let items: Vec<answers::StatsRow> = groups
        .into_iter()
        .filter(|(key, g)| !(key.is_none() && g.calls == 0 && g.runs == 0))
        .map(|(key, mut g)| {
            g.latencies_us.sort_unstable();
            let n = g.calls.max(1) as f64;
            let quantile = |q: f64| {
                g.latencies_us
                    .get(((g.latencies_us.len() as f64 * q).ceil() as usize).saturating_sub(1))
                    .map(|us| *us as f64 / 1000.0)
            };
            let (p50, p95) = (quantile(0.5), quantile(0.95));
            if by_tool {
                return answers::StatsRow::Tool(answers::ToolStatsRow {
                    group: key.clone(),
                    tool: key,
                    calls: g.calls,
                    failures: g.calls - g.success,
                    p50_duration_ms: p50,
                    p95_duration_ms: p95,
                });
            }
            answers::StatsRow::Group(answers::GroupStatsRow {
                group: key,
                runs: g.runs,
                failed_runs: g.failed_runs,
                run_error_rate: (g.runs > 0).then(|| g.failed_runs as f64 / g.runs as f64),
                calls: g.calls,
                llm_calls: g.calls,
                tool_calls: g.tool_calls,
                success_rate: g.success as f64 / n,
                llm_call_error_rate: (g.calls > 0).then(|| (g.calls - g.success) as f64 / n),
                avg_latency_ms: g.latencies_us.iter().sum::<u64>() as f64 / n / 1000.0,
                p50_latency_ms: p50,
                p95_latency_ms: p95,
                avg_input_tokens: g.input_tokens as f64 / n,
                avg_output_tokens: g.output_tokens as f64 / n,
                cost_usd: g.cost_pusd as f64 / 1e12,
            })
        })
        .collect();
    ok(&answers::Stats {
        group_by: group_by.to_string(),
        items,
        tool_calls_without_group,
        truncated,
    })
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
        let rate_limited = (
            state
                .store
                .count_429_since(&key, now.saturating_sub(HOUR_US))?,
            state
                .store
                .count_429_since(&key, now.saturating_sub(DAY_US))?,
        );
        let mut row = answers::RateLimitRow::of(s, now, rate_limited);
        if series {
            row.series = Some(
                state
                    .store
                    .ratelimit_series(&key, from, points)?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            );
        }
        items.push(row);
    }
    // The tightest headroom first; states with no headroom now (none reported, or
    // every window reset since) after them, the stale ones last.
    let order = |r: &answers::RateLimitRow| (r.stale, r.headroom_pct.unwrap_or(f64::INFINITY));
    items.sort_by(|a, b| {
        let (a, b) = (order(a), order(b));
        a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
    });
    ok(&answers::RateLimits {
        count: items.len(),
        items,
    })
}

/// `GET /whoami`: the caller's role and tenant, so a client (the page) knows what it
/// may ask for before asking.
pub(super) fn whoami(state: &ApiState, who: &Principal) -> ApiResult {
    ok(&answers::WhoAmI {
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
    ok(&answers::AuditLog {
        count: items.len(),
        items: items.into_iter().map(answers::AuditLogEntry::of).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ErrorInfo, RateLimit};

    fn failed(status: CallStatus, http: Option<u16>, error_type: Option<&str>) -> CallRecord {
        CallRecord {
            provider: "openai".into(),
            status: Some(status),
            http_status: http,
            latency_ms: 2500.0,
            api_key_fingerprint: Some("sha256:abcd…wxyz".into()),
            error: error_type.map(|t| ErrorInfo {
                error_type: Some(t.into()),
                message: Some("details".into()),
            }),
            ..CallRecord::default()
        }
    }

    /// Each failure gets a hint saying what happened and what to do about it.
    #[test]
    fn every_failed_status_has_a_hint_that_says_what_to_do() {
        let cases = [
            (
                failed(CallStatus::Failed, Some(500), Some("server_error")),
                "answered HTTP 500: server_error: details",
                "retry with backoff",
            ),
            (
                failed(CallStatus::Failed, Some(503), None),
                "answered HTTP 503",
                "status page",
            ),
            (
                failed(CallStatus::Failed, Some(529), Some("overloaded_error")),
                "is overloaded (HTTP 529)",
                "fall back to another model",
            ),
            (
                failed(CallStatus::Failed, Some(502), Some("upstream_unreachable")),
                "could not be reached; llmtap answered HTTP 502",
                "base URL",
            ),
            (
                failed(CallStatus::Failed, Some(400), Some("invalid_request_error")),
                "answered HTTP 400",
                "request's parameters",
            ),
            (
                failed(CallStatus::Failed, Some(404), None),
                "answered HTTP 404",
                "model name",
            ),
            (
                failed(CallStatus::Failed, Some(200), Some("tool_error")),
                "a tool of openai failed",
                "tool result",
            ),
            (
                failed(CallStatus::Unauthorized, Some(401), None),
                "refused API key sha256:abcd…wxyz (HTTP 401)",
                "right key",
            ),
            (
                failed(CallStatus::Unauthorized, Some(403), None),
                "(HTTP 403)",
                "model access",
            ),
            (
                failed(CallStatus::Timeout, None, Some("timeout")),
                "no answer from openai in time: timeout: details",
                "raise the timeout",
            ),
            (
                failed(CallStatus::Timeout, Some(504), None),
                "answered HTTP 504: it timed out",
                "stream the response",
            ),
            (
                failed(CallStatus::Canceled, None, Some("canceled")),
                "the client went away after 2.5 s",
                "client's timeout",
            ),
            (
                failed(CallStatus::RateLimited, Some(429), None),
                "rate limit hit (429)",
                "Wait for the reset",
            ),
        ];
        for (call, what, todo) in cases {
            let hint = hint(&call).unwrap_or_default();
            assert!(hint.contains(what), "{what:?} not in {hint:?}");
            assert!(hint.contains(todo), "{todo:?} not in {hint:?}");
        }
        let mut no_key = failed(CallStatus::Unauthorized, Some(401), None);
        no_key.api_key_fingerprint = None;
        assert!(hint(&no_key).unwrap().contains("no API key was sent"));
        assert_eq!(hint(&failed(CallStatus::Success, Some(200), None)), None);
    }

    /// A long provider message is shortened; the advice after it is kept whole.
    #[test]
    fn a_long_error_message_never_pushes_the_advice_out() {
        let mut call = failed(CallStatus::Failed, Some(500), None);
        call.error = Some(ErrorInfo {
            error_type: Some("server_error".into()),
            message: Some("x ".repeat(2000)),
        });
        call.rate_limit = Some(RateLimit::default());
        let hint = hint(&call).unwrap();
        assert!(
            hint.ends_with("check the provider's status page if it persists."),
            "{hint}"
        );
        assert!(hint.len() < 600, "{}", hint.len());
    }
}
