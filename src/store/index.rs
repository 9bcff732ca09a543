//! Secondary-index keys, index counters, rollup cells, sessions and rate-limit state:
//! the derived data the writer maintains next to each batch so reads never scan.
//!
//! Index key: `tag, value, 0x00, time (u64 BE µs), id` (empty value). Tag `t` with an
//! empty value indexes every record by time. Newest first is a reverse range scan
//! over one prefix, and a time window is a sub-range of it. Values never contain NUL
//! (summaries strip it). Pure key arithmetic and plain data; sled is driven by `mod.rs`.

use super::summary::{tag, FacetView, Facets};
use crate::record::{CallRecord, CallStatus, LimitWindow};
use serde::{Deserialize, Serialize};

/// Rollup time bucket: 15 minutes, so any whole-quarter-hour UTC offset gives exact days.
pub const BUCKET_US: u64 = 15 * 60 * 1_000_000;
/// Latency histogram: 4 buckets per doubling from 1 ms.
pub const HIST_BUCKETS: usize = 96;

pub fn index_prefix(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(value.len() + 2);
    key.push(tag);
    key.extend_from_slice(value);
    key.push(0);
    key
}

pub fn index_key(tag: u8, value: &[u8], time_us: u64, id: &str) -> Vec<u8> {
    let mut key = index_prefix(tag, value);
    key.extend_from_slice(&time_us.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Every index key of one record, with the counter key it adds to.
pub fn index_entries(
    kind: u8,
    time_us: u64,
    id: &str,
    pairs: &[(u8, &[u8])],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(pairs.len() + 1);
    out.push((
        index_key(tag::ALL, b"", time_us, id),
        count_key(kind, tag::ALL, b""),
    ));
    for (t, v) in pairs {
        if tag::INDEXED.contains(t) {
            out.push((index_key(*t, v, time_us, id), count_key(kind, *t, v)));
        }
    }
    // Derived from the pairs, not stored in the header, so headers written before this
    // index existed still produce the same entries when a record is re-indexed.
    let session: &[u8] = has_session_value(pairs.iter().any(|(t, _)| *t == tag::SESSION));
    out.push((
        index_key(tag::HAS_SESSION, session, time_us, id),
        count_key(kind, tag::HAS_SESSION, session),
    ));
    out
}

/// Tags whose pairwise co-occurrence is counted, so a two-filter `total` needs no scan.
/// Sessions and users are left out: their indexes are short, so a join counts them
/// quickly, while their many values would multiply the counters.
const PAIRED: [u8; 8] = [
    tag::AGENT,
    tag::PROVIDER,
    tag::MODEL,
    tag::STATUS,
    tag::TENANT,
    tag::TRIGGER,
    tag::PROMPT,
    tag::HAS_SESSION,
];

/// Counter key of records carrying both (tag, value) pairs: `C`|`I`, the two tags in
/// order, first value, 0x00, second value. Uppercase kind keeps these apart from the
/// single-index counters (`c`|`i`).
pub fn pair_count_key(kind: u8, a: (u8, &[u8]), b: (u8, &[u8])) -> Vec<u8> {
    let (a, b) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut key = Vec::with_capacity(a.1.len() + b.1.len() + 4);
    key.push(kind.to_ascii_uppercase());
    key.push(a.0);
    key.push(b.0);
    key.extend_from_slice(a.1);
    key.push(0);
    key.extend_from_slice(b.1);
    key
}

/// A record's (tag, value) pairs of the paired tags, with its derived
/// `has_session` pair, sorted and without repeats.
pub fn paired_facets<'a>(pairs: &[(u8, &'a [u8])]) -> Vec<(u8, &'a [u8])> {
    let session = has_session_value(pairs.iter().any(|(t, _)| *t == tag::SESSION));
    let mut items: Vec<(u8, &'a [u8])> = pairs
        .iter()
        .filter(|(t, _)| PAIRED.contains(t))
        .copied()
        .collect();
    items.push((tag::HAS_SESSION, session));
    items.sort_unstable();
    items.dedup();
    items
}

/// Whether `pair_count_key` counts this tag.
pub fn is_paired(t: u8) -> bool {
    PAIRED.contains(&t)
}

/// A UTC day in µs.
pub const DAY_US: u64 = 86_400_000_000;

/// Every pair counter one record adds to. (Stores written before the facet cache
/// also hold per-day pair counters, keyed all-time key, 0x00, day; nothing reads
/// them now.)
pub fn pair_counts(kind: u8, pairs: &[(u8, &[u8])]) -> Vec<Vec<u8>> {
    let items = paired_facets(pairs);
    let mut out = Vec::with_capacity(items.len() * items.len() / 2);
    for (i, a) in items.iter().enumerate() {
        for b in &items[i + 1..] {
            if a.0 != b.0 {
                out.push(pair_count_key(kind, *a, *b));
            }
        }
    }
    out
}

/// The `has_session` index value.
pub fn has_session_value(has: bool) -> &'static [u8] {
    if has {
        b"1"
    } else {
        b"0"
    }
}

pub fn facet_pairs(f: &Facets) -> Vec<(u8, &[u8])> {
    f.pairs.iter().map(|(t, v)| (*t, v.as_bytes())).collect()
}

pub fn view_pairs<'a>(v: &FacetView<'a>) -> Vec<(u8, &'a [u8])> {
    v.pairs().collect()
}

/// `kind` is `c` (calls) or `i` (invocations).
pub fn count_key(kind: u8, tag: u8, value: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(value.len() + 2);
    key.push(kind);
    key.push(tag);
    key.extend_from_slice(value);
    key
}

/// The (time, id) at the end of an index key whose prefix is `prefix_len` long.
pub fn split_index_key(key: &[u8], prefix_len: usize) -> Option<(u64, &[u8])> {
    let time = u64::from_be_bytes(key.get(prefix_len..prefix_len + 8)?.try_into().ok()?);
    Some((time, key.get(prefix_len + 8..)?))
}

/// Rollup scopes a record counts in: everything, its tenant, its agent, and both.
pub fn scopes(tenant: Option<&str>, agent: Option<&str>) -> Vec<Vec<u8>> {
    let agent = agent.unwrap_or("");
    let mut out = vec![b"*".to_vec(), scope_agent(None, agent)];
    if let Some(t) = tenant {
        out.push(scope_tenant(t));
        out.push(scope_agent(Some(t), agent));
    }
    out
}

pub fn scope_tenant(tenant: &str) -> Vec<u8> {
    let mut s = b"T".to_vec();
    s.extend_from_slice(tenant.as_bytes());
    s
}

/// `A<agent>` or `X<tenant>\x1f<agent>`.
pub fn scope_agent(tenant: Option<&str>, agent: &str) -> Vec<u8> {
    match tenant {
        None => {
            let mut s = b"A".to_vec();
            s.extend_from_slice(agent.as_bytes());
            s
        }
        Some(t) => {
            let mut s = b"X".to_vec();
            s.extend_from_slice(t.as_bytes());
            s.push(0x1f);
            s.extend_from_slice(agent.as_bytes());
            s
        }
    }
}

pub fn bucket_key(scope: &[u8], time_us: u64) -> Vec<u8> {
    let mut key = scope.to_vec();
    key.push(0);
    key.extend_from_slice(&(time_us - time_us % BUCKET_US).to_be_bytes());
    key
}

/// Counters for one scope over one bucket (or all time, with the latency histogram).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupCell {
    pub calls: u64,
    pub errors: u64,
    pub invocations: u64,
    pub cost_pusd: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_sum_us: u64,
    pub hist: Vec<u64>,
    /// A tool's calls (HTTP, MCP), counted apart from the LLM calls above.
    pub tool_calls: u64,
    pub tool_failures: u64,
}

impl RollupCell {
    /// Counts an LLM call (every attempt). A tool's call (HTTP, MCP `tools/call`:
    /// `agent_loop::is_tool_step`) is no LLM call: it counts only in
    /// `tool_calls`/`tool_failures`, as its latency would mix into the LLM
    /// percentiles and its failures into the per-call error rate (per-tool figures:
    /// `/stats?group_by=tool`). Other MCP traffic counts in neither.
    pub fn add_call(&mut self, call: &CallRecord, with_hist: bool) {
        if !crate::agent_loop::is_llm(call) {
            if crate::agent_loop::is_tool_step(call) {
                self.tool_calls += 1;
                if call.status != Some(CallStatus::Success) {
                    self.tool_failures += 1;
                }
            }
            return;
        }
        self.calls += 1;
        if call.status != Some(CallStatus::Success) {
            self.errors += 1;
        }
        // Saturating: a total that stops at its maximum is wrong; one that wraps goes backwards.
        if let Some(c) = call.cost.as_ref().filter(|c| c.priced) {
            self.cost_pusd = self.cost_pusd.saturating_add(c.total_pusd);
        } else if let Some(usd) = call.cost_usd {
            self.cost_pusd = self.cost_pusd.saturating_add((usd * 1e12).round() as u64);
        }
        self.input_tokens = self
            .input_tokens
            .saturating_add(call.usage.input_tokens.unwrap_or(0));
        self.output_tokens = self
            .output_tokens
            .saturating_add(call.usage.output_tokens.unwrap_or(0));
        let latency_us = (call.latency_ms * 1000.0).max(0.0) as u64;
        self.latency_sum_us = self.latency_sum_us.saturating_add(latency_us);
        if with_hist {
            if self.hist.len() < HIST_BUCKETS {
                self.hist.resize(HIST_BUCKETS, 0);
            }
            self.hist[hist_bucket(latency_us)] += 1;
        }
    }

    pub fn merge(&mut self, other: &RollupCell) {
        self.calls = self.calls.saturating_add(other.calls);
        self.errors = self.errors.saturating_add(other.errors);
        self.invocations = self.invocations.saturating_add(other.invocations);
        self.cost_pusd = self.cost_pusd.saturating_add(other.cost_pusd);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.latency_sum_us = self.latency_sum_us.saturating_add(other.latency_sum_us);
        self.tool_calls = self.tool_calls.saturating_add(other.tool_calls);
        self.tool_failures = self.tool_failures.saturating_add(other.tool_failures);
        if self.hist.len() < other.hist.len() {
            self.hist.resize(other.hist.len(), 0);
        }
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a += b;
        }
    }

    /// Takes `other` (deleted records) out of this cell, never below zero.
    pub fn subtract(&mut self, other: &RollupCell) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.errors = self.errors.saturating_sub(other.errors);
        self.invocations = self.invocations.saturating_sub(other.invocations);
        self.cost_pusd = self.cost_pusd.saturating_sub(other.cost_pusd);
        self.input_tokens = self.input_tokens.saturating_sub(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_sub(other.output_tokens);
        self.latency_sum_us = self.latency_sum_us.saturating_sub(other.latency_sum_us);
        self.tool_calls = self.tool_calls.saturating_sub(other.tool_calls);
        self.tool_failures = self.tool_failures.saturating_sub(other.tool_failures);
        for (a, b) in self.hist.iter_mut().zip(&other.hist) {
            *a = a.saturating_sub(*b);
        }
    }

    /// Nothing left counted (a cell every record of which was deleted).
    pub fn is_empty(&self) -> bool {
        self.calls == 0 && self.invocations == 0 && self.tool_calls == 0
    }

    /// Seven counters, the histogram (none, or `HIST_BUCKETS` counts), then the two
    /// tool counters. Cells written before the tool counters end with the
    /// histogram; `decode` tells them apart by length (7 or 7 + 96 numbers, against
    /// 9 or 9 + 96) and reads their tool counters as 0.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(72 + self.hist.len() * 8);
        for n in [
            self.calls,
            self.errors,
            self.invocations,
            self.cost_pusd,
            self.input_tokens,
            self.output_tokens,
            self.latency_sum_us,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        for n in self
            .hist
            .iter()
            .chain([&self.tool_calls, &self.tool_failures])
        {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> RollupCell {
        let mut nums = bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])));
        let mut next = || nums.next().unwrap_or(0);
        let mut cell = RollupCell {
            calls: next(),
            errors: next(),
            invocations: next(),
            cost_pusd: next(),
            input_tokens: next(),
            output_tokens: next(),
            latency_sum_us: next(),
            ..RollupCell::default()
        };
        let mut rest: Vec<u64> = nums.collect();
        if rest.len() == 2 || rest.len() == HIST_BUCKETS + 2 {
            cell.tool_failures = rest.pop().unwrap_or(0);
            cell.tool_calls = rest.pop().unwrap_or(0);
        }
        cell.hist = rest;
        cell
    }

    /// Latency quantile in ms from the histogram (bucket geometric midpoint), if any calls.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.hist.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (lo, hi) = hist_bounds_ms(i);
                return Some(((lo * hi).sqrt() * 10.0).round() / 10.0);
            }
        }
        None
    }
}

fn hist_bucket(latency_us: u64) -> usize {
    let ms = latency_us as f64 / 1000.0;
    if ms <= 1.0 {
        return 0;
    }
    ((ms.log2() * 4.0).floor() as usize + 1).min(HIST_BUCKETS - 1)
}

fn hist_bounds_ms(i: usize) -> (f64, f64) {
    if i == 0 {
        return (0.5, 1.0);
    }
    (2f64.powf((i - 1) as f64 / 4.0), 2f64.powf(i as f64 / 4.0))
}

/// One conversation session, maintained by the writer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    /// The first user message, shortened.
    pub subject: Option<String>,
    pub agent: Option<String>,
    pub tenant: Option<String>,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `cost_pusd` as USD, for display.
    pub cost_usd: f64,
    /// The exact sum of the calls' costs in picodollars (as for calls and runs).
    #[serde(default)]
    pub cost_pusd: u64,
    pub first_at: String,
    pub first_at_us: u64,
    pub last_at: String,
    pub last_at_us: u64,
    /// The models its LLM calls asked for or were answered by, in order of first use,
    /// at most [`SESSION_MODELS_MAX`]. Absent from sessions stored before llmtap kept
    /// them; both engines fill those from the stored calls once (PostgreSQL's
    /// migration 0008, sled's `backfill_session_models` at open), so every session
    /// read answers them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// Models a session keeps for the model filter (a session of more is rare; past
/// this, later models are not kept).
pub const SESSION_MODELS_MAX: usize = 16;

/// Which sessions a session list shows (`GET /api/v1/sessions`): every field set must
/// match. One definition of the rule; sled applies [`SessionFilter::matches`], the
/// PostgreSQL engine the same conditions in SQL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub tenant: Option<String>,
    /// Active at or after this time: its last call started at or after it.
    pub from_us: Option<u64>,
    /// Active before this time: its first call started before it.
    pub to_us: Option<u64>,
    /// The session's agent (its first call's `x-llmtap-agent`).
    pub agent: Option<String>,
    /// One of the session's models (requested or answering).
    pub model: Option<String>,
}

impl SessionFilter {
    /// Whether a filter beyond the tenant is set (the list must read each session).
    pub fn narrows(&self) -> bool {
        self.from_us.is_some()
            || self.to_us.is_some()
            || self.agent.is_some()
            || self.model.is_some()
    }

    /// Whether `s` passes.
    pub fn matches(&self, s: &SessionSummary) -> bool {
        let models = s.models.as_deref().unwrap_or(&[]);
        self.tenant
            .as_ref()
            .is_none_or(|t| s.tenant.as_deref().unwrap_or("") == t)
            && self.from_us.is_none_or(|from| s.last_at_us >= from)
            && self.to_us.is_none_or(|to| s.first_at_us < to)
            && self
                .agent
                .as_ref()
                .is_none_or(|a| s.agent.as_ref() == Some(a))
            && self.model.as_ref().is_none_or(|m| models.contains(m))
    }
}

impl SessionSummary {
    /// A session first seen with `call` (before `add_call` adds it).
    pub fn starting(id: &str, call: &CallRecord) -> SessionSummary {
        SessionSummary {
            id: id.to_string(),
            first_at_us: call.started_at_us,
            models: Some(Vec::new()),
            ..SessionSummary::default()
        }
    }

    /// Adds a call of the session. The subject is not kept: it is prompt text in
    /// the clear, read from the content when asked (`subject_of`).
    pub fn add_call(&mut self, call: &CallRecord) {
        use crate::timefmt::format_rfc3339_us;
        let m = &call.metadata;
        self.calls += 1;
        self.input_tokens += call.usage.input_tokens.unwrap_or(0);
        self.output_tokens += call.usage.output_tokens.unwrap_or(0);
        // Integer picodollars, so the sum never drifts; sessions stored before
        // `cost_pusd` existed start from their float total.
        if self.cost_pusd == 0 && self.cost_usd > 0.0 {
            self.cost_pusd = (self.cost_usd * 1e12).round() as u64;
        }
        self.cost_pusd += call_cost_pusd(call);
        self.cost_usd = self.cost_pusd as f64 / 1e12;
        self.first_at_us = self.first_at_us.min(call.started_at_us);
        self.last_at_us = self.last_at_us.max(call.started_at_us);
        self.first_at = format_rfc3339_us(self.first_at_us);
        self.last_at = format_rfc3339_us(self.last_at_us);
        if self.agent.is_none() {
            self.agent.clone_from(&m.agent);
        }
        if self.tenant.is_none() {
            self.tenant.clone_from(&m.tenant);
        }
        self.note_models(call);
    }

    /// Adds the models of a call (an LLM call's requested, then answering model)
    /// that the session does not list yet, up to [`SESSION_MODELS_MAX`]. A session
    /// stored without its models gets none this way (a partial list would pass for
    /// the whole): sled's one-time fill (`backfill_session_models`) starts it from an
    /// empty list and folds its stored calls with this, in start order.
    pub fn note_models(&mut self, call: &CallRecord) {
        let Some(models) = self
            .models
            .as_mut()
            .filter(|_| crate::agent_loop::is_llm(call))
        else {
            return;
        };
        for model in [&call.model, &call.response_model].into_iter().flatten() {
            if !models.contains(model) && models.len() < SESSION_MODELS_MAX {
                models.push(model.clone());
            }
        }
    }
}

impl SessionSummary {
    /// Adds what a batch adds to this session (`plan::session_deltas`: a summary of
    /// its calls from `starting`) to it as stored: what folding those calls into it
    /// with `add_call` gives. PostgreSQL's session upsert is this in SQL.
    pub fn merge(&mut self, delta: &SessionSummary) {
        self.calls = self.calls.saturating_add(delta.calls);
        self.input_tokens = self.input_tokens.saturating_add(delta.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(delta.output_tokens);
        // As in `add_call`: a session stored before `cost_pusd` starts from its float total.
        if self.cost_pusd == 0 && self.cost_usd > 0.0 {
            self.cost_pusd = (self.cost_usd * 1e12).round() as u64;
        }
        self.cost_pusd = self.cost_pusd.saturating_add(delta.cost_pusd);
        self.cost_usd = self.cost_pusd as f64 / 1e12;
        self.first_at_us = self.first_at_us.min(delta.first_at_us);
        self.last_at_us = self.last_at_us.max(delta.last_at_us);
        self.first_at = crate::timefmt::format_rfc3339_us(self.first_at_us);
        self.last_at = crate::timefmt::format_rfc3339_us(self.last_at_us);
        if self.agent.is_none() {
            self.agent.clone_from(&delta.agent);
        }
        if self.tenant.is_none() {
            self.tenant.clone_from(&delta.tenant);
        }
        if let Some(models) = self.models.as_mut() {
            for model in delta.models.iter().flatten() {
                if !models.contains(model) && models.len() < SESSION_MODELS_MAX {
                    models.push(model.clone());
                }
            }
        }
    }
}

/// A call's cost in picodollars as sessions sum it: the exact priced total, else the
/// provider-reported USD.
pub fn call_cost_pusd(call: &CallRecord) -> u64 {
    match call.cost.as_ref().filter(|c| c.priced) {
        Some(cost) => cost.total_pusd,
        None => call.cost_usd.map_or(0, |usd| (usd * 1e12).round() as u64),
    }
}

/// Session list key: first time (u64 BE), session id. Value: tenant.
pub fn session_list_key(first_us: u64, id: &str) -> Vec<u8> {
    let mut key = first_us.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn subject_of(call: &CallRecord) -> Option<String> {
    let text = call
        .request
        .as_ref()?
        .messages
        .iter()
        .find(|m| m.role == "user")?
        .text
        .as_deref()?;
    Some(shorten(text, 80))
}

/// One line, at most `max` characters, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The latest rate-limit state of one provider, API key and model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimitState {
    pub provider: String,
    pub key_fingerprint: Option<String>,
    pub model: Option<String>,
    pub at: String,
    pub at_us: u64,
    pub requests: Option<LimitWindow>,
    pub tokens: Option<LimitWindow>,
    pub input_tokens: Option<LimitWindow>,
    pub output_tokens: Option<LimitWindow>,
    pub retry_after_s: Option<f64>,
    pub last_429_at: Option<String>,
    pub last_429_us: Option<u64>,
    pub last_retry_after_s: Option<f64>,
}

/// One point of the remaining-capacity series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimitPoint {
    pub at_us: u64,
    pub status: Option<CallStatus>,
    pub requests_remaining: Option<u64>,
    pub tokens_remaining: Option<u64>,
    pub input_tokens_remaining: Option<u64>,
    pub output_tokens_remaining: Option<u64>,
}

/// Whether a call adds to rate-limit state: it carried rate-limit headers or was a 429.
pub fn notes_rate_limit(call: &CallRecord) -> bool {
    call.rate_limit.is_some() || call.status == Some(CallStatus::RateLimited)
}

/// The model a call's limits are kept under: the requested one, else the answering
/// one. A call answered with an error names no answering model, so keying by the
/// answer filed one key and model under two names (`gpt-4o-mini` for its 429s,
/// `gpt-4o-mini-2024-07-18` for its successes).
fn limit_model(call: &CallRecord) -> Option<&str> {
    call.model.as_deref().or(call.response_model.as_deref())
}

/// The rate-limit key a call's limits are kept under.
pub fn ratelimit_key_of(call: &CallRecord) -> Vec<u8> {
    let (provider, fingerprint, model) = ratelimit_parts(call);
    ratelimit_key(provider, fingerprint, model)
}

/// The provider, key fingerprint and model a call's limits are kept under.
pub fn ratelimit_parts(call: &CallRecord) -> (&str, Option<&str>, Option<&str>) {
    (
        &call.provider,
        call.api_key_fingerprint.as_deref(),
        limit_model(call),
    )
}

/// What one call adds to its rate-limit key: a series point, and, for a 429, its
/// retry-after (`Some(retry_after_s)`).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitNoted {
    pub point: RateLimitPoint,
    pub limited: Option<Option<f64>>,
}

impl RateLimitState {
    /// The state of a key before its first call.
    pub fn first_for(call: &CallRecord) -> RateLimitState {
        RateLimitState {
            provider: call.provider.clone(),
            key_fingerprint: call.api_key_fingerprint.clone(),
            model: limit_model(call).map(str::to_string),
            ..RateLimitState::default()
        }
    }

    /// Folds a call into the state (the latest-started call's windows win, whatever
    /// order calls arrive in) and says what it adds to the series.
    pub fn note(&mut self, call: &CallRecord) -> RateLimitNoted {
        let rl = call.rate_limit.clone().unwrap_or_default();
        if call.started_at_us >= self.at_us {
            self.at_us = call.started_at_us;
            self.at.clone_from(&call.started_at);
            self.requests = rl.requests.clone().or(self.requests.take());
            self.tokens = rl.tokens.clone().or(self.tokens.take());
            self.input_tokens = rl.input_tokens.clone().or(self.input_tokens.take());
            self.output_tokens = rl.output_tokens.clone().or(self.output_tokens.take());
            self.retry_after_s = rl.retry_after_s;
        }
        let limited = call.status == Some(CallStatus::RateLimited);
        if limited && self.last_429_us.is_none_or(|t| t <= call.started_at_us) {
            self.last_429_us = Some(call.started_at_us);
            self.last_429_at = Some(call.started_at.clone());
            self.last_retry_after_s = rl.retry_after_s.or(self.last_retry_after_s);
        }
        let remaining =
            |w: &Option<crate::record::LimitWindow>| w.as_ref().and_then(|w| w.remaining);
        RateLimitNoted {
            point: RateLimitPoint {
                at_us: call.started_at_us,
                status: call.status,
                requests_remaining: remaining(&rl.requests),
                tokens_remaining: remaining(&rl.tokens),
                input_tokens_remaining: remaining(&rl.input_tokens),
                output_tokens_remaining: remaining(&rl.output_tokens),
            },
            limited: limited.then_some(rl.retry_after_s),
        }
    }
}

/// `provider, 0, key fingerprint, 0, model`.
pub fn ratelimit_key(provider: &str, fingerprint: Option<&str>, model: Option<&str>) -> Vec<u8> {
    let mut key = provider.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(fingerprint.unwrap_or("").as_bytes());
    key.push(0);
    key.extend_from_slice(model.unwrap_or("").as_bytes());
    key
}

pub fn series_key(rl_key: &[u8], time_us: u64, id: &str) -> Vec<u8> {
    let mut key = rl_key.to_vec();
    key.push(0);
    key.extend_from_slice(&time_us.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Text searched by `q`: the system prompt and the last user message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallText {
    pub system: Option<String>,
    pub last_user: Option<String>,
}

const TEXT_MAX: usize = 8192;

impl CallText {
    pub fn of(call: &CallRecord) -> Option<CallText> {
        let request = call.request.as_ref()?;
        // At most TEXT_MAX characters; a text of at most that many bytes is whole.
        let cut = |s: &str| {
            if s.len() <= TEXT_MAX {
                return s.to_string();
            }
            match s.char_indices().nth(TEXT_MAX) {
                Some((end, _)) => s[..end].to_string(),
                None => s.to_string(),
            }
        };
        let system = request.system.as_deref().map(cut).or_else(|| {
            request
                .messages
                .iter()
                .find(|m| m.role == "system" || m.role == "developer")
                .and_then(|m| m.text.as_deref().map(cut))
        });
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .and_then(|m| m.text.as_deref().map(cut));
        (system.is_some() || last_user.is_some()).then_some(CallText { system, last_user })
    }

    /// `needle` must already be lowercase.
    pub fn contains(&self, needle: &str) -> bool {
        [&self.system, &self.last_user]
            .into_iter()
            .flatten()
            .any(|t| t.to_lowercase().contains(needle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_cells_keep_tool_counts_and_read_cells_written_before_them() {
        let old = |with_hist: bool| {
            let mut bytes = Vec::new();
            for n in [3u64, 1, 2, 40, 500, 60, 7_000] {
                bytes.extend_from_slice(&n.to_be_bytes());
            }
            if with_hist {
                for i in 0..HIST_BUCKETS as u64 {
                    bytes.extend_from_slice(&(i % 3).to_be_bytes());
                }
            }
            bytes
        };
        for with_hist in [false, true] {
            let cell = RollupCell::decode(&old(with_hist));
            assert_eq!((cell.calls, cell.latency_sum_us), (3, 7_000));
            assert_eq!((cell.tool_calls, cell.tool_failures), (0, 0));
            assert_eq!(cell.hist.len(), if with_hist { HIST_BUCKETS } else { 0 });
            let mut new = cell.clone();
            new.tool_calls = 5;
            new.tool_failures = 2;
            assert_eq!(RollupCell::decode(&new.encode()), new);
        }
    }

    #[test]
    fn search_texts_keep_at_most_8192_characters() {
        let call = |text: String| CallRecord {
            request: Some(crate::record::RequestView {
                messages: vec![crate::record::Message {
                    role: "user".into(),
                    text: Some(text),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..CallRecord::default()
        };
        let last_user = |text: &str| CallText::of(&call(text.into())).unwrap().last_user.unwrap();
        assert_eq!(last_user("short"), "short");
        // Two bytes a character: 5,000 characters are 10,000 bytes, and kept whole.
        let wide = "é".repeat(5000);
        assert_eq!(last_user(&wide), wide);
        assert_eq!(last_user(&"é".repeat(9000)), "é".repeat(TEXT_MAX));
        assert_eq!(last_user(&"a".repeat(TEXT_MAX + 1)), "a".repeat(TEXT_MAX));
    }

    #[test]
    fn keys_sort_by_time_within_a_prefix() {
        let a = index_key(tag::AGENT, b"bot", 5, "c_b");
        let b = index_key(tag::AGENT, b"bot", 6, "c_a");
        let c = index_key(tag::AGENT, b"bot2", 1, "c_a");
        assert!(a < b);
        assert!(!c.starts_with(&index_prefix(tag::AGENT, b"bot")));
        assert_eq!(split_index_key(&b, 5), Some((6, &b"c_a"[..])));
    }

    #[test]
    fn pair_counters_cover_each_pair_of_distinct_tags_once() {
        let pairs: Vec<(u8, &[u8])> = vec![
            (tag::AGENT, b"bot"),
            (tag::MODEL, b"m1"),
            (tag::MODEL, b"m2"),
            (tag::SESSION, b"s1"),
            (tag::USER, b"u1"),
        ];
        let keys = pair_counts(b'i', &pairs);
        // agent×m1, agent×m2, agent×h, m1×h, m2×h: no model×model, session or user.
        assert_eq!(keys.len(), 5);
        let agent_m2 = pair_count_key(b'i', (tag::MODEL, b"m2"), (tag::AGENT, b"bot"));
        assert!(keys.contains(&agent_m2));
        assert!(keys.contains(&pair_count_key(
            b'i',
            (tag::HAS_SESSION, b"1"),
            (tag::AGENT, b"bot")
        )));
        assert_eq!(agent_m2[0], b'I');
    }

    #[test]
    fn rollup_cells_round_trip_and_give_quantiles() {
        let mut cell = RollupCell::default();
        for ms in [10.0, 20.0, 30.0, 1000.0] {
            let call = CallRecord {
                latency_ms: ms,
                status: Some(CallStatus::Success),
                ..CallRecord::default()
            };
            cell.add_call(&call, true);
        }
        let back = RollupCell::decode(&cell.encode());
        assert_eq!(back, cell);
        let p50 = back.latency_quantile_ms(0.5).unwrap();
        assert!((16.0..=24.0).contains(&p50), "{p50}");
        let p95 = back.latency_quantile_ms(0.95).unwrap();
        assert!((840.0..=1190.0).contains(&p95), "{p95}");
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("a  b\nc", 10), "a b c");
        assert_eq!(shorten("ééééé", 3), "éé…");
    }
}
