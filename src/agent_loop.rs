//! The agent loop of a run, decided in one place: which calls are rounds and which
//! are attempts of a round (retries), what happened between rounds (tool steps,
//! backoff, agent time), how the run ended, and which run and session a call
//! without an invocation id or traceparent belongs to (its conversation).
//!
//! Pure: no I/O, no clock. Rounds are numbered on the write side only, by start
//! time: [`fold_run`] places each batch's calls of a run (through [`place`],
//! [`advance`] and `record::roll_up`), renumbering the run's later calls when one
//! that started earlier arrives late ([`late_from`] says which stored calls the
//! engine reads). The writer runs it for sled, and PostgreSQL's merge under the
//! run's lock; reads take the rounds as stored. Headerless calls are grouped with
//! [`Conversations`]; the read API, the
//! CLI, CSV export and OpenTelemetry show a run through [`describe`] and
//! [`outcome`]. Nothing else decides a round number.

use crate::record::{CallRecord, CallStatus, InvocationRecord, Message, RequestView};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Request headers the official SDKs send on a retry with the attempt's number (0
/// for the first try). The Stainless-generated clients (openai, anthropic, in
/// Python, TypeScript, Go, Java) send `x-stainless-retry-count`; Google's genai and
/// api-core clients retry without saying so, so for them the digest alone decides.
pub const RETRY_HINT_HEADERS: [&str; 1] = ["x-stainless-retry-count"];

/// Where a call sits in its run's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The round (1, 2, ...); 0 for a tool call (not a round).
    pub round: u32,
    /// The attempt within the round (1 the first try); 0 for a tool call.
    pub attempt: u32,
}

impl Place {
    /// The call's `retry` (`CallRecord::retry`): attempts before it in its round.
    pub fn retry(self) -> u32 {
        self.attempt.saturating_sub(1)
    }
}

/// The place of a call no run numbering reached (a tool call's).
pub const NO_PLACE: Place = Place {
    round: 0,
    attempt: 0,
};

/// What a run's loop needs to place its next call, kept in the run's record
/// (absent from runs stored before it: they read as if each LLM call were a round,
/// which is how they were numbered).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopState {
    /// Request-body digest of the run's latest LLM call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_digest: Option<String>,
    /// Whether the latest LLM call's answer failed (a repeat of it is a retry).
    #[serde(default)]
    pub last_failed: bool,
    /// Attempts of the latest round so far.
    #[serde(default)]
    pub round_attempts: u32,
    /// Attempts beyond each round's first, over the run.
    #[serde(default)]
    pub retries: u32,
    /// Tool calls captured in the run (tool HTTP calls; MCP calls once recorded).
    #[serde(default)]
    pub tool_calls: u32,
    /// Of those, the ones that failed.
    #[serde(default)]
    pub tool_failures: u32,
    /// Start time (µs) and id of the run's latest-started LLM call: an LLM call that
    /// started before it and is stored after it renumbers the run from its start
    /// ([`late_from`], [`fold_run`]). Absent from runs stored before rounds were
    /// numbered by start time (their calls keep their arrival-order numbers).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_started_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_call_id: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The facts of one call the loop decides on.
#[derive(Debug, Clone, Copy)]
pub struct LoopCall<'a> {
    /// The call's place in start order: (start time µs, id).
    pub key: (u64, &'a str),
    pub llm: bool,
    /// A tool's execution (`is_tool_step`); a call neither LLM nor tool step is
    /// protocol around the tools (MCP `initialize`, lists, notifications).
    pub tool: bool,
    pub digest: Option<&'a str>,
    pub status: Option<CallStatus>,
    pub retry_hint: Option<u32>,
}

impl<'a> LoopCall<'a> {
    pub fn of(call: &'a CallRecord) -> LoopCall<'a> {
        LoopCall {
            key: (call.started_at_us, call.id.as_str()),
            llm: is_llm(call),
            tool: is_tool_step(call),
            digest: call.request_digest.as_deref(),
            status: call.status,
            retry_hint: retry_hint(&call.request_headers),
        }
    }
}

/// An LLM call, as opposed to a tool's call (`kind = "http"` or `"mcp"`).
pub fn is_llm(call: &CallRecord) -> bool {
    crate::record::is_round_kind(&call.kind)
}

/// A tool's execution, what "tool calls" count everywhere (a run's loop, the
/// rollups, `/agents`): a tool HTTP call, or an MCP `tools/call` the client sent.
/// The rest of MCP (`initialize`, `tools/list`, notifications, the server's own
/// requests) is the protocol around tools: a session's handshake is no tool call.
pub fn is_tool_step(call: &CallRecord) -> bool {
    match call.kind.as_str() {
        "http" => true,
        "mcp" => call.mcp.as_ref().is_some_and(|m| {
            m.method.as_deref() == Some("tools/call")
                && m.direction.as_deref() != Some("server_to_client")
        }),
        _ => false,
    }
}

/// The retry number an SDK put on the request (`x-stainless-retry-count`).
pub fn retry_hint(headers: &std::collections::BTreeMap<String, String>) -> Option<u32> {
    RETRY_HINT_HEADERS
        .iter()
        .find_map(|name| headers.get(*name)?.trim().parse().ok())
}

/// The digest a retry repeats: SHA-256 of the request body (hex, 128 bits), none
/// when the body was cut (two cut bodies with one prefix are not the same request).
pub fn request_digest(call: &CallRecord) -> Option<String> {
    if call.truncated_parts.iter().any(|p| p == "request") {
        return None;
    }
    let bytes: &[u8] = match (&call.request_body_bytes, &call.request_body) {
        (Some(raw), _) => raw,
        (None, Some(text)) => text.as_bytes(),
        (None, None) => return None,
    };
    if bytes.is_empty() {
        return None;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    Some(
        digest.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Where `call` goes in a run that has `rounds` rounds and `state`: a request that
/// repeats the run's latest LLM request after a failed answer (same body digest; or,
/// when a digest is missing, an SDK retry count above 0) is another attempt of that
/// round; any other LLM call opens the next round.
pub fn place(rounds: u32, state: &LoopState, call: &LoopCall) -> Place {
    if !call.llm {
        return Place {
            round: 0,
            attempt: 0,
        };
    }
    let same_request = match (call.digest, state.last_digest.as_deref()) {
        (Some(a), Some(b)) => a == b,
        _ => call.retry_hint.is_some_and(|n| n > 0),
    };
    if rounds > 0 && state.last_failed && same_request {
        Place {
            round: rounds,
            attempt: state.round_attempts.max(1) + 1,
        }
    } else {
        Place {
            round: rounds + 1,
            attempt: 1,
        }
    }
}

/// Takes a placed call into the run's round count and loop state. A call placed
/// before the run's latest round (it started earlier, reached the store later)
/// counts but does not move the state.
pub fn advance(rounds: &mut u32, state: &mut LoopState, call: &LoopCall, at: Place) {
    if !call.llm {
        if call.tool {
            state.tool_calls += 1;
            if call.status.is_some_and(|s| s != CallStatus::Success) {
                state.tool_failures += 1;
            }
        }
        return;
    }
    if at.attempt > 1 {
        state.retries += 1;
    }
    if at.round < *rounds {
        return;
    }
    if at.round > *rounds {
        state.round_attempts = 0;
    }
    *rounds = at.round;
    state.round_attempts = state.round_attempts.max(at.attempt);
    state.last_digest = call.digest.map(str::to_string);
    state.last_failed = call.status != Some(CallStatus::Success);
    if call.key
        >= (
            state.last_started_us,
            state.last_call_id.as_deref().unwrap_or(""),
        )
    {
        state.last_started_us = call.key.0;
        state.last_call_id = Some(call.key.1.to_string());
    }
}

/// Places a run's calls given in start order (time, id): the numbering every engine
/// reads. Returns each call's place, in the order given.
pub fn number_run<'a>(calls: impl IntoIterator<Item = LoopCall<'a>>) -> Vec<Place> {
    let mut rounds = 0;
    let mut state = LoopState::default();
    calls
        .into_iter()
        .map(|call| {
            let at = place(rounds, &state, &call);
            advance(&mut rounds, &mut state, &call, at);
            at
        })
        .collect()
}

/// Places `call` in `run` (as stored so far; `None` for a new run): sets its round
/// and attempt.
fn place_call(run: Option<&InvocationRecord>, call: &mut CallRecord) {
    let (rounds, state) = run.map_or((0, None), |r| (r.rounds, Some(&r.agent_loop)));
    let default = LoopState::default();
    let at = place(rounds, state.unwrap_or(&default), &LoopCall::of(call));
    call.round = at.round;
    call.retry = at.retry();
}

/// A call's place as stored.
fn stored_place(call: &CallRecord) -> Place {
    if is_llm(call) {
        Place {
            round: call.round,
            attempt: call.retry + 1,
        }
    } else {
        NO_PLACE
    }
}

/// A stored call whose place changes because a call of its run that started before
/// it was stored after it (`fold_run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub call_id: String,
    pub invocation_id: String,
    pub started_at_us: u64,
    pub from: Place,
    pub to: Place,
}

/// When some of a batch's calls of `run` are LLM calls that started before the run's
/// latest stored LLM call (they finished, or reached the store, later): the start
/// time from which the engine reads the run's stored LLM calls for [`fold_run`]
/// (those that started then or later, and the latest one before). `None` when the
/// batch only extends the run (the common case: nothing stored moves).
pub fn late_from(run: Option<&InvocationRecord>, calls: &[CallRecord]) -> Option<u64> {
    let state = &run?.agent_loop;
    let latest = (state.last_started_us, state.last_call_id.as_deref()?);
    calls
        .iter()
        .filter(|c| is_llm(c) && (c.started_at_us, c.id.as_str()) < latest)
        .map(|c| c.started_at_us)
        .min()
}

/// Places a batch's calls of one run and folds them into the run, the one numbering
/// of both engines: rounds and attempts by start time (start, id), as [`number_run`]
/// would number the run's calls from scratch. `calls` are the batch's calls of the
/// run (any order; sorted here, by start); `prior` the run as stored; `stored` the
/// run's stored LLM calls from [`late_from`]'s time (empty when it said `None`).
///
/// When a call arrives after a later-started one of its run, the calls of the run
/// that started after it are numbered again from the LLM call just before it, and
/// the stored ones whose place changes come back as [`Moved`] for the engine to
/// rewrite in the same batch; the run's round count, retries, loop state and status
/// follow. Bounded: only the run's calls since the late call's start are read.
pub fn fold_run(
    prior: Option<InvocationRecord>,
    calls: &mut [CallRecord],
    stored: &[CallRecord],
) -> (InvocationRecord, Vec<Moved>) {
    calls.sort_by(|a, b| (a.started_at_us, &a.id).cmp(&(b.started_at_us, &b.id)));
    let from = late_from(prior.as_ref(), calls);
    let mut run = prior;
    let Some(from_us) = from else {
        for call in calls.iter_mut() {
            place_call(run.as_ref(), call);
            run = Some(crate::record::roll_up(run.take(), call));
        }
        return (run.expect("a batch of a run has a call"), Vec::new());
    };
    // The earliest new LLM call: everything of the run from it on is numbered again.
    let first = calls
        .iter()
        .filter(|c| is_llm(c))
        .map(|c| (c.started_at_us, c.id.clone()))
        .min()
        .unwrap_or((from_us, String::new()));
    let new_ids: std::collections::HashSet<&str> = calls.iter().map(|c| c.id.as_str()).collect();
    let stored: Vec<&CallRecord> = stored
        .iter()
        .filter(|c| is_llm(c) && !new_ids.contains(c.id.as_str()))
        .collect();
    let key = |c: &CallRecord| (c.started_at_us, c.id.clone());
    let before = stored
        .iter()
        .filter(|c| key(c) < first)
        .max_by_key(|c| key(c));
    let mut rounds = 0;
    let mut state = LoopState::default();
    if let Some(b) = before {
        let at = stored_place(b);
        rounds = at.round;
        state.round_attempts = at.attempt;
        state.last_digest = b.request_digest.clone();
        state.last_failed = b.status != Some(CallStatus::Success);
    }
    // Stored calls (`Ok`) and new ones (`Err`: their index in `calls`), by key.
    type Entry<'c> = ((u64, String), Result<&'c CallRecord, usize>);
    let mut order: Vec<Entry<'_>> = stored
        .iter()
        .filter(|c| key(c) > first)
        .map(|c| (key(c), Ok(*c)))
        .collect();
    order.extend(
        calls
            .iter()
            .enumerate()
            .filter(|(_, c)| is_llm(c) && key(c) >= first)
            .map(|(i, c)| (key(c), Err(i))),
    );
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut moved = Vec::new();
    let mut new_places: HashMap<usize, Place> = HashMap::new();
    let mut last_status = None;
    for (_, call) in &order {
        let record = match call {
            Ok(c) => *c,
            Err(i) => &calls[*i],
        };
        let facts = LoopCall::of(record);
        let at = place(rounds, &state, &facts);
        advance(&mut rounds, &mut state, &facts, at);
        last_status = Some(record.status);
        match call {
            Ok(c) if stored_place(c) != at => moved.push(Moved {
                call_id: c.id.clone(),
                invocation_id: c.invocation_id.clone(),
                started_at_us: c.started_at_us,
                from: stored_place(c),
                to: at,
            }),
            Ok(_) => {}
            Err(i) => {
                new_places.insert(*i, at);
            }
        }
    }
    // Calls before the first new LLM call (tool calls) keep the run's own placing.
    for (i, call) in calls.iter_mut().enumerate() {
        match new_places.get(&i) {
            Some(at) => {
                call.round = at.round;
                call.retry = at.retry();
            }
            None => place_call(run.as_ref(), call),
        }
        run = Some(crate::record::roll_up(run.take(), call));
    }
    let mut run = run.expect("a batch of a run has a call");
    // `roll_up` counted the new calls' retries; the moved ones change by their difference.
    let retries = i64::from(run.agent_loop.retries)
        + moved
            .iter()
            .map(|m| i64::from(m.to.retry()) - i64::from(m.from.retry()))
            .sum::<i64>();
    run.rounds = rounds;
    run.agent_loop = LoopState {
        retries: u32::try_from(retries.max(0)).unwrap_or(u32::MAX),
        tool_calls: run.agent_loop.tool_calls,
        tool_failures: run.agent_loop.tool_failures,
        ..state
    };
    if let Some(status) = last_status {
        run.status = status;
    }
    (run, moved)
}

/// How a run ended, in words and numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// The status of the run's last round's last attempt.
    pub status: Option<CallStatus>,
    /// Attempts beyond each round's first, over the run.
    pub retries: u32,
    /// `true` when the run counts as an error (it ended on a failure).
    pub failed: bool,
    /// "success", "success, recovered after 1 retry", "rate_limited after 3 attempts", ...
    pub text: String,
}

/// The run's outcome from its record.
pub fn outcome(run: &InvocationRecord) -> RunOutcome {
    let retries = run.agent_loop.retries;
    let status = run.status;
    let failed = status.is_some_and(|s| s != CallStatus::Success);
    let plural = |n: u32, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let text = match status {
        None => "running".to_string(),
        Some(CallStatus::Success) if retries == 1 => "success, recovered after 1 retry".into(),
        Some(CallStatus::Success) if retries > 1 => {
            format!("success, recovered after {retries} retries")
        }
        Some(CallStatus::Success) => "success".to_string(),
        Some(s) if run.agent_loop.round_attempts > 1 => format!(
            "{} after {} of its last round",
            s.as_str(),
            plural(run.agent_loop.round_attempts, "attempt")
        ),
        Some(s) => s.as_str().to_string(),
    };
    RunOutcome {
        status,
        retries,
        failed,
        text,
    }
}

/// One attempt of a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    pub call_id: String,
    pub started_at: String,
    pub duration_ms: f64,
    pub status: Option<CallStatus>,
    pub http_status: Option<u16>,
    /// The SDK's retry count header, when it sent one.
    pub retry_hint: Option<u32>,
    /// The wait before this attempt since the previous one ended (the client's backoff).
    pub backoff_ms: Option<f64>,
}

/// A tool call the model asked for in a round, with what answered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestedTool {
    pub id: Option<String>,
    pub name: String,
    pub arguments: Value,
    /// The tool result the next round sent back, when it names this call.
    pub result: Option<String>,
    /// The round that carried the result.
    pub result_round: Option<u32>,
    /// Tool calls captured in the gap joined to this one (see [`describe`]).
    pub tool_call_ids: Vec<String>,
}

/// One LLM round: its attempts and the tools its answer asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub round: u32,
    /// The call that settled the round (its last attempt).
    pub call_id: String,
    pub status: Option<CallStatus>,
    pub attempts: Vec<Attempt>,
    pub requested_tools: Vec<RequestedTool>,
}

/// What a stretch of time between two LLM calls was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GapKind {
    /// After a round that asked for tools: the tools ran.
    Tool,
    /// Between attempts of a round: the client's retry wait.
    Backoff,
    /// Anything else: the agent's own work.
    Agent,
}

impl GapKind {
    pub fn label(self) -> &'static str {
        match self {
            GapKind::Tool => "tool time",
            GapKind::Backoff => "backoff",
            GapKind::Agent => "agent time",
        }
    }
}

/// A tool's captured call (HTTP, MCP) in a gap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallSeen {
    pub call_id: String,
    /// The MCP tool it called (`tools/call`), when it is an MCP exchange.
    pub tool: Option<String>,
    pub method: String,
    pub host: String,
    pub path: String,
    pub status: Option<CallStatus>,
    pub http_status: Option<u16>,
    pub duration_ms: f64,
    /// The requested tool call it was joined to, when the evidence allows.
    pub joined_to: Option<String>,
}

/// The time between one LLM call's end and the next one's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub kind: GapKind,
    /// "tool time", "backoff" or "agent time".
    pub label: String,
    pub after_round: u32,
    pub before_round: u32,
    pub duration_ms: f64,
    /// Tool calls captured in it.
    pub tool_calls: Vec<ToolCallSeen>,
    /// Of its duration, the time no captured tool call covers.
    pub unexplained_ms: f64,
}

/// A run's loop as every reader shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLoop {
    pub rounds: Vec<Round>,
    pub gaps: Vec<Gap>,
    /// Tool calls captured before the first round or after the last.
    pub outside_gaps: Vec<ToolCallSeen>,
}

fn ended_us(call: &CallRecord) -> u64 {
    call.started_at_us + (call.latency_ms * 1000.0) as u64
}

/// Strings inside a tool call's arguments (an OpenAI argument text is parsed first).
fn argument_strings(arguments: &Value, out: &mut Vec<String>) {
    match arguments {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(inner @ (Value::Object(_) | Value::Array(_))) => argument_strings(&inner, out),
            _ if s.len() >= 3 => out.push(s.to_lowercase()),
            _ => {}
        },
        Value::Array(items) => items.iter().for_each(|v| argument_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| argument_strings(v, out)),
        Value::Number(n) => out.push(n.to_string()),
        _ => {}
    }
}

/// The requested tool call a captured tool call answers, when the evidence allows:
/// the only one requested; else, for an MCP `tools/call` (`CallRecord.mcp`: `tool`,
/// `arguments`), the one whose name and arguments match, or the only one of that
/// name; else the only one whose argument values all appear in the call's path and
/// query. A join by name or arguments is exact; several candidates join none.
fn join_tool_call(requested: &[RequestedTool], seen: &CallRecord) -> Option<usize> {
    if seen.mcp.as_ref().is_some_and(|m| m.tool.is_none()) {
        // An MCP exchange that calls no tool (initialize, tools/list, notifications).
        return None;
    }
    if requested.len() == 1 {
        return Some(0);
    }
    if let Some(tool) = seen.mcp.as_ref().and_then(|m| m.tool.as_deref()) {
        let arguments = seen.mcp.as_ref().and_then(|m| m.arguments.as_ref());
        let by_name: Vec<usize> = (0..requested.len())
            .filter(|&i| requested[i].name == tool)
            .collect();
        let by_args: Vec<usize> = by_name
            .iter()
            .copied()
            .filter(|&i| arguments.is_some_and(|a| same_arguments(&requested[i].arguments, a)))
            .collect();
        return match (by_args.as_slice(), by_name.as_slice()) {
            ([one], _) | ([], [one]) => Some(*one),
            _ => None,
        };
    }
    let target = percent_decode(&seen.path).to_lowercase();
    let matching: Vec<usize> = (0..requested.len())
        .filter(|&i| arguments_in(&requested[i].arguments, &target))
        .collect();
    match matching.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// Whether every value of a tool call's arguments appears in `target` (a lowercased,
/// percent-decoded path and query); false when the arguments hold no value.
fn arguments_in(arguments: &Value, target: &str) -> bool {
    let mut values = Vec::new();
    argument_strings(arguments, &mut values);
    !values.is_empty() && values.iter().all(|v| target.contains(v.as_str()))
}

/// How strongly a captured tool call answers `requested`, with no other candidate
/// to go by (a headerless tool call joining a run): `Exact` for an MCP `tools/call`
/// of its name and arguments, `Named` for one of its name only (different or no
/// arguments), `Exact` for an HTTP call whose path and query hold every argument
/// value; `None` when nothing ties them.
fn evidence(requested: &RequestedTool, seen: &CallRecord) -> Option<Evidence> {
    match seen.mcp.as_ref() {
        Some(mcp) => {
            if mcp.tool.as_deref() != Some(requested.name.as_str()) {
                None
            } else if mcp
                .arguments
                .as_ref()
                .is_some_and(|a| same_arguments(&requested.arguments, a))
            {
                Some(Evidence::Exact)
            } else {
                Some(Evidence::Named)
            }
        }
        None => arguments_in(
            &requested.arguments,
            &percent_decode(&seen.path).to_lowercase(),
        )
        .then_some(Evidence::Exact),
    }
}

/// What ties a headerless tool call to a round's requested tool (`evidence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Evidence {
    /// An MCP tool of the requested name, its arguments not the requested ones.
    Named,
    /// The requested MCP tool and arguments, or an HTTP call carrying every argument value.
    Exact,
}

/// Arguments equal as JSON (an OpenAI argument text parsed first).
fn same_arguments(a: &Value, b: &Value) -> bool {
    let parsed = |v: &Value| match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        _ => v.clone(),
    };
    parsed(a) == parsed(b)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn seen(call: &CallRecord) -> ToolCallSeen {
    ToolCallSeen {
        call_id: call.id.clone(),
        tool: call.mcp.as_ref().and_then(|m| m.tool.clone()),
        method: call.method.clone(),
        host: call.upstream_host.clone(),
        path: call.path.clone(),
        status: call.status,
        http_status: call.http_status,
        duration_ms: call.latency_ms,
        joined_to: None,
    }
}

/// A run's rounds with their attempts, the gaps between its LLM calls with the tool
/// calls captured in them, from its calls (any order; numbered as stored).
pub fn describe(calls: &[CallRecord]) -> RunLoop {
    let mut ordered: Vec<&CallRecord> = calls.iter().collect();
    ordered.sort_by(|a, b| (a.started_at_us, &a.id).cmp(&(b.started_at_us, &b.id)));
    let (llm, tools): (Vec<&CallRecord>, Vec<&CallRecord>) =
        ordered.into_iter().partition(|c| is_llm(c));
    let mut llm = llm;
    llm.sort_by(|a, b| (a.round, a.started_at_us, &a.id).cmp(&(b.round, b.started_at_us, &b.id)));
    let mut rounds: Vec<Round> = Vec::new();
    let mut previous: Option<&CallRecord> = None;
    for call in &llm {
        let backoff_ms = previous
            .filter(|p| p.round == call.round)
            .map(|p| call.started_at_us.saturating_sub(ended_us(p)) as f64 / 1000.0);
        let attempt = Attempt {
            attempt: call.retry + 1,
            call_id: call.id.clone(),
            started_at: call.started_at.clone(),
            duration_ms: call.latency_ms,
            status: call.status,
            http_status: call.http_status,
            retry_hint: retry_hint(&call.request_headers),
            backoff_ms,
        };
        match rounds.last_mut() {
            Some(round) if round.round == call.round => {
                round.call_id = call.id.clone();
                round.status = call.status;
                round.attempts.push(attempt);
            }
            _ => rounds.push(Round {
                round: call.round,
                call_id: call.id.clone(),
                status: call.status,
                attempts: vec![attempt],
                requested_tools: Vec::new(),
            }),
        }
        previous = Some(call);
    }
    // The settling attempt's answer names the tools; the next round carries results.
    let settled: HashMap<&str, &CallRecord> = llm.iter().map(|c| (c.id.as_str(), *c)).collect();
    for i in 0..rounds.len() {
        let Some(call) = settled.get(rounds[i].call_id.as_str()) else {
            continue;
        };
        let next_first = rounds
            .get(i + 1)
            .and_then(|r| r.attempts.first())
            .and_then(|a| settled.get(a.call_id.as_str()));
        let next_round = rounds.get(i + 1).map(|r| r.round);
        rounds[i].requested_tools = call
            .response
            .iter()
            .flat_map(|r| r.tool_calls.iter())
            .map(|tc| {
                let result = next_first.and_then(|n| {
                    let id = tc.id.as_deref()?;
                    n.request
                        .as_ref()?
                        .messages
                        .iter()
                        .find(|m| m.tool_call_id.as_deref() == Some(id))
                });
                RequestedTool {
                    id: tc.id.clone(),
                    name: tc.name.clone(),
                    arguments: tc.arguments.clone(),
                    result: result.and_then(|m| m.text.clone()),
                    result_round: result.and(next_round),
                    tool_call_ids: Vec::new(),
                }
            })
            .collect();
    }
    // Gaps between consecutive LLM calls, in order.
    let mut gaps = Vec::new();
    let mut placed = vec![false; tools.len()];
    let mut round_index = 0;
    for pair in llm.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        while rounds.get(round_index).is_some_and(|r| r.round != a.round) {
            round_index += 1;
        }
        let (from, to) = (ended_us(a), b.started_at_us);
        let kind = if a.round == b.round {
            GapKind::Backoff
        } else if rounds
            .get(round_index)
            .is_some_and(|r| !r.requested_tools.is_empty())
        {
            GapKind::Tool
        } else {
            GapKind::Agent
        };
        let mut in_gap = Vec::new();
        let mut covered_until = from;
        let mut covered = 0u64;
        for (j, t) in tools.iter().enumerate() {
            if placed[j] || t.started_at_us < from || t.started_at_us >= to.max(from) {
                continue;
            }
            placed[j] = true;
            let mut entry = seen(t);
            if kind == GapKind::Tool {
                if let Some(round) = rounds.get_mut(round_index) {
                    if let Some(k) = join_tool_call(&round.requested_tools, t) {
                        let requested = &mut round.requested_tools[k];
                        requested.tool_call_ids.push(t.id.clone());
                        entry.joined_to = requested.id.clone().or(Some(requested.name.clone()));
                    }
                }
            }
            let (start, end) = (t.started_at_us.max(covered_until), ended_us(t).min(to));
            if end > start {
                covered += end - start;
                covered_until = end;
            }
            in_gap.push(entry);
        }
        let duration = to.saturating_sub(from);
        gaps.push(Gap {
            kind,
            label: kind.label().to_string(),
            after_round: a.round,
            before_round: b.round,
            duration_ms: duration as f64 / 1000.0,
            tool_calls: in_gap,
            unexplained_ms: duration.saturating_sub(covered) as f64 / 1000.0,
        });
    }
    let outside_gaps = tools
        .iter()
        .zip(&placed)
        .filter(|(_, p)| !**p)
        .map(|(t, _)| {
            let mut entry = seen(t);
            // After the last round that asked for tools: the tools still ran.
            if let Some(last) = rounds.last_mut() {
                if t.started_at_us >= llm.last().map_or(0, |c| ended_us(c)) {
                    if let Some(k) = join_tool_call(&last.requested_tools, t) {
                        last.requested_tools[k].tool_call_ids.push(t.id.clone());
                        entry.joined_to = last.requested_tools[k]
                            .id
                            .clone()
                            .or(Some(last.requested_tools[k].name.clone()));
                    }
                }
            }
            entry
        })
        .collect();
    RunLoop {
        rounds,
        gaps,
        outside_gaps,
    }
}

/// One entry of a session read as a conversation (`conversation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// `user` (a run's new user message), `reply` (a round's answer), `tool_call` (a
    /// tool the model asked for, with its result from the next round), `tool` (a
    /// captured tool call: HTTP or MCP), `failure` (an attempt that failed).
    pub kind: String,
    pub invocation_id: String,
    /// The round the entry opens (for `tool`: the round it followed).
    pub round: u32,
    pub call_id: String,
    pub at: String,
    /// The text: the user message, the reply, the tool result.
    pub text: Option<String>,
    /// `tool_call`: its name; `tool`: the MCP tool, or method and path.
    pub name: Option<String>,
    /// `tool_call`: its arguments.
    pub arguments: Option<Value>,
    pub status: Option<CallStatus>,
    pub http_status: Option<u16>,
}

/// A session's calls as a conversation, in order: for each run, its user turn; for
/// each round, its failed attempts, its reply and the tool calls it asked for (with
/// their results), and the tool calls captured after it.
pub fn conversation(calls: &[CallRecord]) -> Vec<Turn> {
    let mut runs: Vec<&str> = Vec::new();
    let mut by_run: HashMap<&str, Vec<CallRecord>> = HashMap::new();
    let mut ordered: Vec<&CallRecord> = calls.iter().collect();
    ordered.sort_by(|a, b| (a.started_at_us, &a.id).cmp(&(b.started_at_us, &b.id)));
    for c in ordered {
        if !by_run.contains_key(c.invocation_id.as_str()) {
            runs.push(&c.invocation_id);
        }
        by_run.entry(&c.invocation_id).or_default().push(c.clone());
    }
    let mut out = Vec::new();
    for run in runs {
        let calls = &by_run[run];
        let described = describe(calls);
        let by_id: HashMap<&str, &CallRecord> = calls.iter().map(|c| (c.id.as_str(), c)).collect();
        let turn = |kind: &str, call: &CallRecord, round: u32| Turn {
            kind: kind.to_string(),
            invocation_id: call.invocation_id.clone(),
            round,
            call_id: call.id.clone(),
            at: call.started_at.clone(),
            text: None,
            name: None,
            arguments: None,
            status: call.status,
            http_status: call.http_status,
        };
        if let Some(first) = described
            .rounds
            .first()
            .and_then(|r| r.attempts.first())
            .and_then(|a| by_id.get(a.call_id.as_str()))
        {
            let user = first
                .request
                .as_ref()
                .and_then(|v| v.messages.iter().rev().find(|m| is_user_turn(m)))
                .and_then(|m| m.text.clone());
            out.push(Turn {
                text: user,
                ..turn("user", first, 1)
            });
        }
        let tool_turn = |t: &ToolCallSeen, round: u32| -> Option<Turn> {
            let call = by_id.get(t.call_id.as_str())?;
            Some(Turn {
                name: Some(
                    t.tool
                        .clone()
                        .unwrap_or_else(|| format!("{} {}{}", t.method, t.host, t.path)),
                ),
                arguments: call.mcp.as_ref().and_then(|m| m.arguments.clone()),
                text: call.mcp.as_ref().and_then(|m| m.result_text.clone()),
                ..turn("tool", call, round)
            })
        };
        for round in &described.rounds {
            for a in &round.attempts {
                let Some(call) = by_id.get(a.call_id.as_str()) else {
                    continue;
                };
                if a.status != Some(CallStatus::Success) {
                    out.push(Turn {
                        text: call.error.as_ref().and_then(|e| e.message.clone()),
                        ..turn("failure", call, round.round)
                    });
                }
            }
            let Some(settled) = by_id.get(round.call_id.as_str()) else {
                continue;
            };
            if settled.status == Some(CallStatus::Success) {
                let text = settled.response.as_ref().and_then(|r| r.text.clone());
                if text.is_some() || round.requested_tools.is_empty() {
                    out.push(Turn {
                        text,
                        ..turn("reply", settled, round.round)
                    });
                }
            }
            for tool in &round.requested_tools {
                out.push(Turn {
                    name: Some(tool.name.clone()),
                    arguments: Some(tool.arguments.clone()),
                    text: tool.result.clone(),
                    ..turn("tool_call", settled, round.round)
                });
            }
            for gap in described
                .gaps
                .iter()
                .filter(|g| g.after_round == round.round && g.before_round != round.round)
            {
                out.extend(
                    gap.tool_calls
                        .iter()
                        .filter_map(|t| tool_turn(t, round.round)),
                );
            }
        }
        let last = described.rounds.last().map_or(0, |r| r.round);
        out.extend(
            described
                .outside_gaps
                .iter()
                .filter_map(|t| tool_turn(t, last)),
        );
    }
    out
}

/// Requests seen of each recent conversation of calls that named no run, at most
/// this many (the oldest forgotten first), each for at most `CONVERSATION_IDLE_US`.
pub const CONVERSATIONS_MAX: usize = 20_000;
/// A conversation quiet for longer is forgotten (its next request starts a new run).
pub const CONVERSATION_IDLE_US: u64 = 3_600 * 1_000_000;

/// The run and session a request of a conversation belongs to.
#[derive(Debug, Clone)]
struct ConversationEntry {
    run: String,
    session: String,
    seen_us: u64,
    /// Whether the request's answer failed (the same request again is a retry).
    failed: bool,
}

impl ConversationEntry {
    /// What the table remembers of `call`, grouped as `grouping`, seen at `now_us`.
    fn of(grouping: &Grouping, call: &CallRecord, now_us: u64) -> ConversationEntry {
        ConversationEntry {
            run: grouping.run.clone(),
            session: grouping.session.clone(),
            seen_us: now_us,
            failed: call.status != Some(CallStatus::Success),
        }
    }
}

/// How a headerless call was grouped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub run: String,
    pub session: String,
    /// `continued` (tool results or a repeat: the same run), `new_turn` (a new user
    /// message: a new run of the same session), or `new` (a conversation not seen).
    pub how: &'static str,
}

/// The recent conversations of calls that named no run (no invocation id, no
/// traceparent), keyed by a hash of each request's whole message list. Bounded:
/// at most [`CONVERSATIONS_MAX`] requests remembered.
#[derive(Default)]
pub struct Conversations {
    by_prefix: HashMap<u64, ConversationEntry>,
    /// Runs whose latest round asked for tools, oldest first (at most
    /// [`PENDING_TOOLS_MAX`]): where a tool call that names no run may belong.
    pending: std::collections::VecDeque<PendingTools>,
}

/// Runs waiting on the tools their latest round asked for, remembered at most.
pub const PENDING_TOOLS_MAX: usize = 1_000;
/// A tool call that names no run joins a round's requested tools only when it starts
/// within this long after the round ended.
pub const TOOL_JOIN_WINDOW_US: u64 = 10 * 60 * 1_000_000;

/// A round that asked for tools, as a headerless tool call is matched against it.
#[derive(Debug, Clone)]
struct PendingTools {
    run: String,
    session: Option<String>,
    tenant: Option<String>,
    client_ip: Option<String>,
    ended_us: u64,
    requested: Vec<RequestedTool>,
}

/// The run a tool call that named no run was joined to (`Conversations::join_tool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolJoin {
    pub run: String,
    pub session: Option<String>,
}

/// The key a response id is remembered under (`previous_response_id`).
fn response_key(call: &CallRecord, response_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    "previous_response_id".hash(&mut h);
    call.kind.hash(&mut h);
    call.metadata.tenant.hash(&mut h);
    response_id.hash(&mut h);
    h.finish()
}

/// The session of a conversation no header named: `conv_` and its first run's id.
fn derived_session(call: &CallRecord) -> String {
    format!("conv_{}", call.invocation_id.trim_start_matches("i_"))
}

/// One message's identity for the prefix hash.
fn hash_message(h: &mut DefaultHasher, m: &Message) {
    m.role.hash(h);
    m.text.hash(h);
    m.tool_call_id.hash(h);
    for tc in &m.tool_calls {
        tc.name.hash(h);
        // OpenAI's argument text and Anthropic's object hash alike once parsed.
        match &tc.arguments {
            Value::String(s) => serde_json::from_str::<Value>(s)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| s.clone())
                .hash(h),
            other => other.to_string().hash(h),
        }
    }
}

/// A new user turn: a user message with text (tool results are `tool` messages).
fn is_user_turn(m: &Message) -> bool {
    m.role == "user" && (m.text.is_some() || !m.attachments.is_empty())
}

impl Conversations {
    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// Groups an LLM call that named no run by its conversation: a request whose
    /// messages extend a remembered request's messages (same provider kind, tenant,
    /// system prompt and prefix) continues that request's run when the new messages
    /// are the assistant's reply and tool results, and starts a new run in the same
    /// session when they bring a new user message. `None` for a call with no
    /// messages (embeddings), which stays its own run.
    pub fn group(&mut self, call: &CallRecord, now_us: u64) -> Option<Grouping> {
        let grouping = self.group_by_messages(call, now_us)?;
        // A Responses answer's id, which a follow-up names as `previous_response_id`.
        if let Some(id) = crate::otel::spans::response_id(call) {
            self.remember(
                response_key(call, &id),
                ConversationEntry::of(&grouping, call, now_us),
            );
        }
        Some(grouping)
    }

    /// A request that names the response it follows (OpenAI Responses
    /// `previous_response_id`, the server keeping the history): the run of that
    /// response, continued by tool results or a retry, or a new run of its session
    /// when a new user message comes; `None` when that response is not remembered.
    fn follow_response(
        &self,
        call: &CallRecord,
        view: &RequestView,
        now_us: u64,
    ) -> Option<Grouping> {
        let previous = view.params.get("previous_response_id")?.as_str()?;
        let entry = self
            .by_prefix
            .get(&response_key(call, previous))
            .filter(|e| now_us.saturating_sub(e.seen_us) <= CONVERSATION_IDLE_US)?;
        Some(if view.messages.iter().any(is_user_turn) {
            Grouping {
                run: call.invocation_id.clone(),
                session: entry.session.clone(),
                how: "new_turn",
            }
        } else {
            Grouping {
                run: entry.run.clone(),
                session: entry.session.clone(),
                how: "continued",
            }
        })
    }

    fn group_by_messages(&mut self, call: &CallRecord, now_us: u64) -> Option<Grouping> {
        let view: &RequestView = call.request.as_ref()?;
        if let Some(grouping) = self.follow_response(call, view, now_us) {
            return Some(grouping);
        }
        if view.messages.is_empty() {
            return None;
        }
        let mut h = DefaultHasher::new();
        call.kind.hash(&mut h);
        call.metadata.tenant.hash(&mut h);
        view.system.hash(&mut h);
        let mut prefixes = Vec::with_capacity(view.messages.len());
        for m in &view.messages {
            hash_message(&mut h, m);
            prefixes.push(h.clone().finish());
        }
        let n = prefixes.len();
        let mut found = None;
        for k in (1..=n).rev() {
            if let Some(entry) = self.by_prefix.get(&prefixes[k - 1]) {
                if now_us.saturating_sub(entry.seen_us) <= CONVERSATION_IDLE_US {
                    found = Some((k, entry.clone()));
                    break;
                }
            }
        }
        let grouping = match found {
            // The same messages again after an answer: an independent request.
            Some((k, entry)) if k == n && !entry.failed => Grouping {
                run: call.invocation_id.clone(),
                session: call
                    .metadata
                    .session_id
                    .clone()
                    .unwrap_or_else(|| derived_session(call)),
                how: "new",
            },
            Some((k, entry)) if view.messages[k..].iter().any(is_user_turn) => Grouping {
                run: call.invocation_id.clone(),
                session: entry.session,
                how: "new_turn",
            },
            Some((_, entry)) => Grouping {
                run: entry.run,
                session: entry.session,
                how: "continued",
            },
            None => Grouping {
                run: call.invocation_id.clone(),
                session: call
                    .metadata
                    .session_id
                    .clone()
                    .unwrap_or_else(|| derived_session(call)),
                how: "new",
            },
        };
        self.remember(
            prefixes[n - 1],
            ConversationEntry::of(&grouping, call, now_us),
        );
        Some(grouping)
    }

    /// Takes an LLM call, placed in its run (named or grouped), as that run's latest
    /// round: when its answer asked for tools, a tool call that names no run may join
    /// it ([`Conversations::join_tool`]); otherwise the run waits on no tool.
    pub fn note_round(&mut self, call: &CallRecord) {
        if !is_llm(call) {
            return;
        }
        self.pending.retain(|p| p.run != call.invocation_id);
        let requested: Vec<RequestedTool> = call
            .response
            .iter()
            .flat_map(|r| r.tool_calls.iter())
            .map(|tc| RequestedTool {
                id: tc.id.clone(),
                name: tc.name.clone(),
                arguments: tc.arguments.clone(),
                result: None,
                result_round: None,
                tool_call_ids: Vec::new(),
            })
            .collect();
        if requested.is_empty() {
            return;
        }
        if self.pending.len() >= PENDING_TOOLS_MAX {
            self.pending.pop_front();
        }
        self.pending.push_back(PendingTools {
            run: call.invocation_id.clone(),
            session: call.metadata.session_id.clone(),
            tenant: call.metadata.tenant.clone(),
            client_ip: call.client.ip.clone(),
            ended_us: ended_us(call),
            requested,
        });
    }

    /// The run a tool call that named no run (no invocation id, no traceparent)
    /// belongs to, the one rule for HTTP tool calls and MCP `tools/call`s: a run
    /// whose latest round asked for a tool this call carries the evidence of
    /// ([`evidence`]), of the same tenant, the call started after that round ended
    /// and within [`TOOL_JOIN_WINDOW_US`].
    ///
    /// An HTTP call must come from the round's client address (when both are
    /// known), and joins only when one run fits: a URL is weak evidence, two runs
    /// asking alike are told apart by nothing. An MCP `tools/call` names its tool
    /// (over stdio its address is the wrapper's, not the agent's): it joins the run
    /// that asked for that tool with those arguments, else the latest run that
    /// asked for that tool. `None` when no run fits.
    pub fn join_tool(&self, call: &CallRecord) -> Option<ToolJoin> {
        if is_llm(call) || call.mcp.as_ref().is_some_and(|m| m.tool.is_none()) {
            return None;
        }
        let is_mcp = call.mcp.is_some();
        // Newest first: an MCP tool named by several runs goes to the latest.
        let fits: Vec<(&PendingTools, Evidence)> = self
            .pending
            .iter()
            .rev()
            .filter(|p| {
                p.tenant == call.metadata.tenant
                    && (is_mcp
                        || p.client_ip.is_none()
                        || call.client.ip.is_none()
                        || p.client_ip == call.client.ip)
                    && call.started_at_us >= p.ended_us
                    && call.started_at_us - p.ended_us <= TOOL_JOIN_WINDOW_US
            })
            .filter_map(|p| {
                let best = p.requested.iter().filter_map(|r| evidence(r, call)).max()?;
                Some((p, best))
            })
            .collect();
        let chosen = if is_mcp {
            fits.iter()
                .find(|(_, e)| *e == Evidence::Exact)
                .or_else(|| fits.first())
                .map(|(p, _)| *p)
        } else {
            match fits.as_slice() {
                [(one, _)] => Some(*one),
                _ => None,
            }
        }?;
        Some(ToolJoin {
            run: chosen.run.clone(),
            session: chosen.session.clone(),
        })
    }

    fn remember(&mut self, key: u64, entry: ConversationEntry) {
        if self.by_prefix.len() >= CONVERSATIONS_MAX && !self.by_prefix.contains_key(&key) {
            let cutoff = entry.seen_us.saturating_sub(CONVERSATION_IDLE_US);
            self.by_prefix.retain(|_, e| e.seen_us > cutoff);
            if self.by_prefix.len() >= CONVERSATIONS_MAX {
                // Still full of live conversations: forget the older half.
                let mut times: Vec<u64> = self.by_prefix.values().map(|e| e.seen_us).collect();
                times.sort_unstable();
                let median = times[times.len() / 2];
                self.by_prefix.retain(|_, e| e.seen_us > median);
            }
        }
        self.by_prefix.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ToolCall;

    fn llm(digest: &str, status: CallStatus) -> LoopCall<'_> {
        LoopCall {
            key: (0, ""),
            llm: true,
            tool: false,
            digest: Some(digest),
            status: Some(status),
            retry_hint: None,
        }
    }

    fn places(calls: Vec<LoopCall<'_>>) -> Vec<(u32, u32)> {
        number_run(calls)
            .into_iter()
            .map(|p| (p.round, p.attempt))
            .collect()
    }

    #[test]
    fn a_repeat_after_a_failure_is_an_attempt_and_after_a_success_a_round() {
        use CallStatus::*;
        assert_eq!(
            places(vec![
                llm("a", RateLimited),
                llm("a", Failed),
                llm("a", Success),
                llm("a", Success),
                llm("b", Failed),
                llm("c", Success),
            ]),
            vec![(1, 1), (1, 2), (1, 3), (2, 1), (3, 1), (4, 1)]
        );
    }

    #[test]
    fn without_digests_the_sdk_retry_count_decides_and_tools_are_no_rounds() {
        let retry = |hint| LoopCall {
            key: (0, ""),
            llm: true,
            tool: false,
            digest: None,
            status: Some(CallStatus::Failed),
            retry_hint: hint,
        };
        let tool = LoopCall {
            key: (0, ""),
            llm: false,
            tool: true,
            digest: None,
            status: Some(CallStatus::Failed),
            retry_hint: None,
        };
        assert_eq!(
            places(vec![retry(Some(0)), tool, retry(Some(1)), retry(None)]),
            vec![(1, 1), (0, 0), (1, 2), (2, 1)]
        );
        let mut rounds = 0;
        let mut state = LoopState::default();
        for call in [retry(Some(0)), tool, retry(Some(1))] {
            let at = place(rounds, &state, &call);
            advance(&mut rounds, &mut state, &call, at);
        }
        assert_eq!(
            (rounds, state.retries, state.tool_calls, state.tool_failures),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn outcomes_read_as_a_person_would_say_them() {
        let run = |status, retries, round_attempts| InvocationRecord {
            status: Some(status),
            agent_loop: LoopState {
                retries,
                round_attempts,
                ..LoopState::default()
            },
            ..InvocationRecord::default()
        };
        assert_eq!(outcome(&run(CallStatus::Success, 0, 1)).text, "success");
        assert_eq!(
            outcome(&run(CallStatus::Success, 2, 3)).text,
            "success, recovered after 2 retries"
        );
        let failed = outcome(&run(CallStatus::RateLimited, 2, 3));
        assert_eq!(
            failed.text,
            "rate_limited after 3 attempts of its last round"
        );
        assert!(failed.failed);
    }

    fn chat(kind: &str, run: &str, messages: Vec<Message>, status: CallStatus) -> CallRecord {
        CallRecord {
            invocation_id: run.into(),
            kind: kind.into(),
            status: Some(status),
            request: Some(RequestView {
                system: Some("sys".into()),
                messages,
                ..RequestView::default()
            }),
            ..CallRecord::default()
        }
    }

    fn msg(role: &str, text: &str) -> Message {
        Message {
            role: role.into(),
            text: Some(text.into()),
            ..Message::default()
        }
    }

    fn tool_result(id: &str) -> Message {
        Message {
            role: "tool".into(),
            text: Some("ok".into()),
            tool_call_id: Some(id.into()),
            ..Message::default()
        }
    }

    fn asked(id: &str, arguments: Value) -> Message {
        Message {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: Some(id.into()),
                name: "search".into(),
                arguments,
            }],
            ..Message::default()
        }
    }

    #[test]
    fn conversations_continue_on_tool_results_and_split_on_user_turns() {
        let mut c = Conversations::default();
        let ok = CallStatus::Success;
        let first = vec![msg("user", "fix it")];
        let g1 = c
            .group(&chat("anthropic", "i_1", first.clone(), ok), 1)
            .unwrap();
        assert_eq!((g1.run.as_str(), g1.how), ("i_1", "new"));
        // Anthropic's tool_use as an object, its tool_result as a tool message.
        let mut second = first.clone();
        second.push(asked("t1", serde_json::json!({"q": "x"})));
        second.push(tool_result("t1"));
        let g2 = c
            .group(&chat("anthropic", "i_2", second.clone(), ok), 2)
            .unwrap();
        assert_eq!(
            (g2.run.as_str(), g2.how, g2.session.as_str()),
            ("i_1", "continued", "conv_1")
        );
        let mut third = second.clone();
        third.push(msg("assistant", "done"));
        third.push(msg("user", "and a test"));
        let g3 = c.group(&chat("anthropic", "i_3", third, ok), 3).unwrap();
        assert_eq!(
            (g3.run.as_str(), g3.how, g3.session.as_str()),
            ("i_3", "new_turn", "conv_1")
        );
        // Another provider kind or system prompt is another conversation.
        let g4 = c.group(&chat("gemini", "i_4", second, ok), 4).unwrap();
        assert_eq!(g4.how, "new");
        // The same request again after a success is independent; after a failure, a retry.
        let g5 = c
            .group(
                &chat("anthropic", "i_5", first.clone(), CallStatus::Failed),
                5,
            )
            .unwrap();
        assert_eq!(g5.how, "new");
        let g6 = c.group(&chat("anthropic", "i_6", first, ok), 6).unwrap();
        assert_eq!((g6.run.as_str(), g6.how), ("i_5", "continued"));
        // Forgotten after an hour quiet.
        let later = 6 + CONVERSATION_IDLE_US + 1;
        let mut again = vec![msg("user", "fix it")];
        again.push(asked("t1", serde_json::json!({"q": "x"})));
        again.push(tool_result("t1"));
        assert_eq!(
            c.group(&chat("anthropic", "i_7", again, ok), later)
                .unwrap()
                .how,
            "new"
        );
    }

    #[test]
    fn the_conversation_table_stays_bounded() {
        let mut c = Conversations::default();
        for i in 0..(CONVERSATIONS_MAX as u64 + 500) {
            let call = chat(
                "openai",
                &format!("i_{i}"),
                vec![msg("user", &i.to_string())],
                CallStatus::Success,
            );
            c.group(&call, i);
        }
        assert!(c.len() <= CONVERSATIONS_MAX, "{}", c.len());
    }

    #[test]
    fn tool_calls_join_by_the_only_one_by_name_and_arguments_or_by_path_values() {
        let requested = |args: [&str; 2]| -> Vec<RequestedTool> {
            args.iter()
                .enumerate()
                .map(|(i, a)| RequestedTool {
                    id: Some(format!("c{i}")),
                    name: if i == 0 {
                        "weather".into()
                    } else {
                        "news".into()
                    },
                    arguments: Value::String(format!("{{\"city\":\"{a}\"}}")),
                    result: None,
                    result_round: None,
                    tool_call_ids: Vec::new(),
                })
                .collect()
        };
        let http = |path: &str| CallRecord {
            kind: "http".into(),
            path: path.into(),
            ..CallRecord::default()
        };
        let two = requested(["Paris", "São Paulo"]);
        assert_eq!(join_tool_call(&two, &http("/w?city=paris")), Some(0));
        assert_eq!(
            join_tool_call(&two, &http("/n?city=S%C3%A3o+Paulo")),
            Some(1)
        );
        assert_eq!(join_tool_call(&two, &http("/other")), None);
        assert_eq!(join_tool_call(&two[..1], &http("/other")), Some(0));
        let mcp = CallRecord {
            kind: "mcp".into(),
            mcp: Some(crate::record::McpExchange {
                method: Some("tools/call".into()),
                tool: Some("news".into()),
                arguments: Some(serde_json::json!({"city": "São Paulo"})),
                ..Default::default()
            }),
            ..http("/mcp")
        };
        assert_eq!(join_tool_call(&two, &mcp), Some(1));
    }

    #[test]
    fn one_rule_joins_headerless_http_and_mcp_tool_calls() {
        let asking = |run: &str, ip: &str, city: &str| CallRecord {
            invocation_id: run.into(),
            kind: "openai".into(),
            client: crate::record::ClientInfo {
                ip: Some(ip.into()),
                ..Default::default()
            },
            response: Some(crate::record::ResponseView {
                tool_calls: vec![ToolCall {
                    id: Some(format!("call_{run}")),
                    name: "weather".into(),
                    arguments: Value::String(format!("{{\"city\":\"{city}\"}}")),
                }],
                ..Default::default()
            }),
            ..CallRecord::default()
        };
        let mut c = Conversations::default();
        c.note_round(&asking("r1", "10.0.0.1", "Oslo"));
        c.note_round(&asking("r2", "10.0.0.2", "Bergen"));
        let http = |path: &str, ip: &str, at: u64| CallRecord {
            kind: "http".into(),
            path: path.into(),
            started_at_us: at,
            client: crate::record::ClientInfo {
                ip: Some(ip.into()),
                ..Default::default()
            },
            ..CallRecord::default()
        };
        let run = |j: Option<ToolJoin>| j.map(|j| j.run);
        assert_eq!(
            run(c.join_tool(&http("/w?city=oslo", "10.0.0.1", 5))),
            Some("r1".into())
        );
        // Another client address, or no argument value in the path: no join.
        assert_eq!(run(c.join_tool(&http("/w?city=oslo", "10.0.0.9", 5))), None);
        assert_eq!(run(c.join_tool(&http("/w", "10.0.0.1", 5))), None);
        // Past the window: no join.
        assert_eq!(
            run(c.join_tool(&http("/w?city=oslo", "10.0.0.1", TOOL_JOIN_WINDOW_US + 1))),
            None
        );
        let mcp = |tool: &str, args: Value| CallRecord {
            kind: "mcp".into(),
            mcp: Some(crate::record::McpExchange {
                method: Some("tools/call".into()),
                tool: Some(tool.into()),
                arguments: Some(args),
                ..Default::default()
            }),
            ..http("/mcp", "127.0.0.1", 5)
        };
        // MCP: the run that asked with these arguments, else the latest that asked.
        assert_eq!(
            run(c.join_tool(&mcp("weather", serde_json::json!({"city": "Oslo"})))),
            Some("r1".into())
        );
        assert_eq!(
            run(c.join_tool(&mcp("weather", serde_json::json!({"city": "Rome"})))),
            Some("r2".into())
        );
        assert_eq!(run(c.join_tool(&mcp("news", serde_json::json!({})))), None);
        // A run's next round that asks for nothing takes it off the waiting list.
        c.note_round(&CallRecord {
            invocation_id: "r2".into(),
            kind: "openai".into(),
            ..CallRecord::default()
        });
        assert_eq!(
            run(c.join_tool(&mcp("weather", serde_json::json!({"city": "Rome"})))),
            Some("r1".into())
        );
    }
}
