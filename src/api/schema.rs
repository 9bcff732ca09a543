//! The shapes of the JSON answers that handlers assemble (rather than serialize from
//! one stored type), as types whose derived JSON Schema goes into the OpenAPI document.
//!
//! Stored types (`CallSummary`, `CallRecord`, ...) derive their schema where they are
//! defined. The types here deny unknown fields, and the integration test checks real
//! answers against the document, so a field a handler adds without adding it here
//! fails that test instead of going undocumented.

use super::ApiState;
use crate::record::{CallRecord, CallStatus, Usage};
use crate::store::index::SessionSummary;
use crate::store::summary::InvocationSummary;
use crate::store::AuditEntry;
use schemars::JsonSchema;
use serde::Serialize;

/// `GET /healthz` (liveness). While the store opens the answer is also 200, with
/// `store` = `opening` and no `storage`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Health {
    /// `ok`, or `degraded` while the store's batch writes fail or it reopens after
    /// they did (calls wait in the capture log; `storage.last_write_error` says why).
    pub status: &'static str,
    /// `open`, or `opening` while the store opens (the proxy forwards meanwhile).
    pub store: &'static str,
    /// Finished calls handed over and not yet stored.
    pub backlog: u64,
    /// Bytes of capture log the store has not applied yet (bounded by `store.backlog`).
    pub log_unapplied_bytes: u64,
    pub capture_log: CaptureLogHealth,
    pub storage: crate::store::StorageHealth,
}

/// What the capture log lost since start: damage stepped over (`degraded` once
/// any), torn last records cut off after a crash.
#[derive(Serialize, JsonSchema)]
pub struct CaptureLogHealth {
    /// Damaged stretches in the middle of the log stepped over since start; their
    /// records are lost, the ones after them were kept.
    pub damaged: u64,
    pub damaged_bytes: u64,
    /// Torn records cut off the end of the log at start (a crash mid-write).
    pub torn: u64,
    /// True while the log records nothing because its volume is nearly full
    /// (`store.critical_free_mb`); calls are forwarded and counted meanwhile.
    pub paused: bool,
    /// Calls forwarded but not recorded while paused, since start.
    pub paused_calls: u64,
}

impl CaptureLogHealth {
    pub fn of(metrics: &crate::metrics::Metrics) -> CaptureLogHealth {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        CaptureLogHealth {
            damaged: get(&metrics.log_damaged),
            damaged_bytes: get(&metrics.log_damaged_bytes),
            torn: get(&metrics.log_torn),
            paused: get(&metrics.log_paused) != 0,
            paused_calls: get(&metrics.log_paused_calls),
        }
    }
}

impl Health {
    pub fn of(state: &ApiState) -> Health {
        let capture_log = CaptureLogHealth::of(&state.metrics);
        Health {
            // Degraded while batch writes fail (the proxy forwards, calls wait in
            // the log) and once the log lost records to damage.
            status: if state.store.last_write_error().is_some()
                || !state.store.is_open()
                || capture_log.damaged > 0
                || capture_log.paused
            {
                "degraded"
            } else {
                "ok"
            },
            store: if state.store.is_open() {
                "open"
            } else {
                "reopening"
            },
            backlog: state
                .metrics
                .backlog
                .load(std::sync::atomic::Ordering::Relaxed),
            log_unapplied_bytes: state.metrics.log_unapplied_bytes(),
            capture_log,
            storage: state.store.health(),
        }
    }
}

/// `GET /readyz` (readiness): 200 once the store is open; before, 503 `store_opening`;
/// while it reopens after failed writes, 503 `store_reopening`; while its writes fail
/// (a full disk, an unreachable database), 503 `store_writes_failing` with the error.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ready {
    /// `ready`.
    pub status: &'static str,
    /// `open`.
    pub store: &'static str,
}

/// `GET /calls/{id}`: the record plus a one-line failure hint.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct CallDetail {
    #[serde(flatten)]
    call: CallRecord,
    /// Why the call failed and what to do about it, for a human; null on success.
    hint: Option<String>,
    /// Admins only: where the call went (the provider's base URL and the recorded
    /// path, secret query values redacted), to replay it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream_url: Option<String>,
    /// Admins only, for an LLM call: how many leading messages of the request repeat
    /// the session's previous run (memory) and this run's previous round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history: Option<super::history::History>,
    /// The current price table's entry for the key that priced the call; null when
    /// the call is unpriced or the table no longer has that key.
    price_entry: Option<PriceEntry>,
}

/// A price-table entry as `GET /calls/{id}` shows it; rates in USD per million tokens.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PriceEntry {
    /// `provider/model` as the table names it (the call's `cost.price_key`).
    pub key: String,
    /// Always `USD per million tokens`.
    pub unit: &'static str,
    pub rates: PriceRates,
    /// Long-context tiers: their rates apply to a whole request above the threshold.
    pub tiers: Vec<PriceTier>,
    pub note: Option<String>,
    /// The table file and line that define the entry.
    pub defined_at: String,
    /// The current table's version.
    pub table_version: String,
    /// Whether the current table is the version that priced the call.
    pub same_version_as_call: bool,
}

/// Rates of one entry or tier; a null rate bills at the base rate (input for cache
/// reads and writes, cache write for 1-hour writes, output for reasoning).
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PriceRates {
    pub input: String,
    pub output: String,
    pub cache_read: Option<String>,
    pub cache_write: Option<String>,
    pub cache_write_1h: Option<String>,
    pub reasoning: Option<String>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PriceTier {
    pub above_input_tokens: u64,
    pub rates: PriceRates,
}

/// `GET /whoami`: who the token is, so a client knows what it may ask for.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WhoAmI {
    /// The token's name (`local` without tokens).
    pub name: String,
    /// `admin` or `viewer`.
    pub role: &'static str,
    /// The tenant the token is confined to.
    pub tenant: Option<String>,
    /// Whether the read API requires tokens (false: loopback without tokens).
    pub tokens_required: bool,
}

/// `GET /access`: whether reads need a token, asked without one.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AccessInfo {
    /// Whether the read API requires tokens (false: loopback without tokens).
    pub tokens_required: bool,
}

/// `GET /invocations/{id}`.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct InvocationDetail {
    #[serde(flatten)]
    summary: InvocationSummary,
    /// Distinct rounds (a retry is an attempt of its round, not a round).
    round_count: u32,
    /// LLM calls, every attempt counted.
    llm_calls: u32,
    /// Tool calls captured (tool HTTP calls).
    tool_calls: u32,
    /// How the run ended (`agent_loop::outcome`).
    outcome: crate::agent_loop::RunOutcome,
    /// The time between consecutive LLM calls: tool time, backoff or agent time,
    /// with the tool calls captured in it.
    gaps: Vec<crate::agent_loop::Gap>,
    /// Total cost in picodollars (exact sum).
    cost_pusd: u64,
    unpriced_calls: u32,
    usage: Usage,
    rounds: Vec<Round>,
    /// Every call of the run in the order it started: the LLM rounds and, between
    /// them, the tool HTTP calls (which are not rounds).
    timeline: Vec<RunTimelineEntry>,
    /// The MCP servers the run talked to and the tools each offered.
    mcp_servers: Vec<McpServerOffer>,
    /// The full call records in round order (bodies for admins only); absent with
    /// `calls=false`.
    calls: Option<Vec<CallRecord>>,
}

/// `POST /ingest/mcp`.
#[derive(serde::Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ingested {
    /// The call the exchange is recorded under.
    pub call_id: String,
}

/// One call of a run's timeline.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RunTimelineEntry {
    /// `llm` (a round), `http` (a tool HTTP call between rounds) or `mcp` (an MCP
    /// exchange between rounds).
    kind: String,
    call_id: String,
    /// The round number, for LLM calls.
    round: Option<u32>,
    /// The attempt within the round, for LLM calls.
    attempt: Option<u32>,
    /// The round a tool HTTP call followed.
    after_round: Option<u32>,
    started_at: String,
    ended_at: String,
    duration_ms: f64,
    provider: String,
    method: String,
    path: String,
    model: Option<String>,
    status: Option<CallStatus>,
    http_status: Option<u16>,
    /// For an MCP exchange.
    #[serde(default)]
    mcp: Option<McpTimelineEntry>,
}

/// An MCP server of a run and the tools it offered (names, from its latest
/// `tools/list` answer; the list itself is stored once per distinct list).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct McpServerOffer {
    /// The provider (or `llmtap mcp --name`) it was reached through.
    provider: String,
    /// As its `initialize` answer named it.
    server: Option<crate::record::McpServer>,
    /// `http` or `stdio`.
    transport: String,
    /// Distinct MCP sessions with it.
    sessions: u64,
    /// Exchanges with it.
    calls: u64,
    /// How often the client asked for its tools.
    tools_list_calls: u64,
    tools_offered: Vec<String>,
}

/// What a joined MCP `tools/call` says of a requested tool call.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct JoinedMcpCall {
    call_id: String,
    provider: String,
    server: Option<crate::record::McpServer>,
    transport: String,
    tool: Option<String>,
    /// The MCP exchange's own duration (not the gap's).
    duration_ms: f64,
    status: Option<CallStatus>,
    is_error: bool,
    error: Option<crate::record::JsonRpcError>,
    /// Admins only.
    #[serde(default)]
    result_text: Option<String>,
    /// Admins only.
    #[serde(default)]
    structured_content: Option<serde_json::Value>,
}

/// What a run's timeline says of an MCP exchange.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct McpTimelineEntry {
    /// `http` or `stdio`.
    transport: String,
    method: Option<String>,
    tool: Option<String>,
    /// The resource URI or prompt name.
    target: Option<String>,
    server: Option<crate::record::McpServer>,
    session_id: Option<String>,
    is_error: bool,
    error: Option<crate::record::JsonRpcError>,
    /// `client_to_server` or `server_to_client` (a server request the client
    /// answered, a server notification, the GET event stream).
    direction: String,
    /// Methods of what the server sent in the response (notifications, requests).
    server_messages: Vec<String>,
    /// The requests among them, with their ids.
    server_requests: Vec<crate::record::McpServerRequest>,
    /// The tools a `tools/list` answer offered.
    tools_offered: Vec<String>,
    /// Admins only.
    #[serde(default)]
    arguments: Option<serde_json::Value>,
    /// Admins only.
    #[serde(default)]
    result_text: Option<String>,
    /// Admins only.
    #[serde(default)]
    structured_content: Option<serde_json::Value>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Round {
    round: u32,
    call_id: String,
    started_at: String,
    ended_at: String,
    latency_ms: f64,
    ttft_ms: Option<f64>,
    provider: String,
    kind: String,
    /// The requested model, else the answering one.
    model: Option<String>,
    /// The model the provider says answered (e.g. a dated version of the requested one).
    response_model: Option<String>,
    status: Option<CallStatus>,
    http_status: Option<u16>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cost_usd: Option<f64>,
    stop_reason: Option<String>,
    error: Option<crate::record::ErrorInfo>,
    hint: Option<String>,
    /// Every attempt of the round, the settling one last.
    attempts: Vec<RoundAttempt>,
    tool_calls: Vec<ToolCallJoin>,
}

/// One attempt of a round (`agent_loop::Attempt`) with its failure's hint.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RoundAttempt {
    attempt: u32,
    call_id: String,
    started_at: String,
    duration_ms: f64,
    status: Option<CallStatus>,
    http_status: Option<u16>,
    /// The SDK's retry count header, when it sent one.
    retry_hint: Option<u32>,
    /// The wait since the previous attempt ended: the client's backoff.
    backoff_ms: Option<f64>,
    hint: Option<String>,
}

/// A tool call the model asked for, joined to its result in the next round.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ToolCallJoin {
    id: Option<String>,
    name: Option<String>,
    result_round: Option<u32>,
    result_call_id: Option<String>,
    /// From this round's end to the next round's start: the tool's time.
    duration_ms: Option<f64>,
    /// Tool calls captured in that gap joined to this one (`agent_loop::describe`:
    /// the only one requested, else by tool name and arguments, else by argument
    /// values in the call's path).
    http_call_ids: Vec<String>,
    /// The MCP `tools/call` among them: its server, own duration, status.
    mcp: Option<JoinedMcpCall>,
    /// Admins only.
    #[serde(default)]
    arguments: Option<serde_json::Value>,
    /// Admins only: the tool result's text.
    #[serde(default)]
    result: Option<String>,
}

/// `GET /sessions/{id}`.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct SessionDetail {
    #[serde(flatten)]
    session: SessionSummary,
    timeline: Vec<TimelineEntry>,
    /// With `conversation=true`: the session as a conversation, in order.
    conversation: Option<Vec<ConversationTurn>>,
}

/// One entry of a session's conversation (`agent_loop::Turn`), with a failure's hint.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ConversationTurn {
    /// `user`, `reply`, `tool_call`, `tool` or `failure`.
    kind: String,
    invocation_id: String,
    /// The round it opens.
    round: u32,
    call_id: String,
    at: String,
    /// Admins only: the user message, the reply, the tool result.
    text: Option<String>,
    name: Option<String>,
    /// Admins only.
    arguments: Option<serde_json::Value>,
    status: Option<CallStatus>,
    http_status: Option<u16>,
    /// Failures: a one-line explanation.
    #[serde(default)]
    hint: Option<String>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TimelineEntry {
    /// `llm`, `http` (a tool HTTP call) or `mcp` (an MCP exchange).
    kind: String,
    call_id: String,
    invocation_id: String,
    /// The LLM round; null for a tool HTTP call or MCP exchange, which are not rounds.
    round: Option<u32>,
    /// The attempt within the round; null for a tool HTTP call or MCP exchange.
    attempt: Option<u32>,
    /// For an MCP exchange: its JSON-RPC method, and the tool of a `tools/call`.
    mcp_method: Option<String>,
    tool: Option<String>,
    started_at: String,
    ended_at: String,
    provider: String,
    model: Option<String>,
    status: Option<CallStatus>,
    http_status: Option<u16>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cost_usd: Option<f64>,
    duration_ms: f64,
    stop_reason: Option<String>,
}

/// `GET /summary`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Summary {
    tenant: Option<String>,
    /// Seconds east of UTC of the `tz` that defines today.
    tz_offset_s: i64,
    today_starts_at: String,
    total_runs: u64,
    total_calls: u64,
    runs_today: u64,
    calls_today: u64,
    /// Runs started in the last 24 h that ended in failure (their last round's last
    /// attempt failed).
    errors_24h: u64,
    /// Failed LLM calls (every attempt) in the last 24 h.
    failed_calls_24h: u64,
    cost_today_usd: f64,
    tokens_today: TokenTotals,
    resolution: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TokenTotals {
    input: u64,
    output: u64,
    total: u64,
}

/// `GET /agents`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Agents {
    tenant: Option<String>,
    items: Vec<AgentRow>,
    count: usize,
    latency_note: String,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AgentRow {
    agent: Option<String>,
    invocations: u64,
    /// The same as `invocations`.
    runs: u64,
    /// Runs that ended in failure.
    failed_runs: u64,
    run_error_rate: Option<f64>,
    /// LLM calls, every attempt (tool calls are not counted).
    calls: u64,
    llm_calls: u64,
    /// Failed LLM calls.
    errors: u64,
    failed_llm_calls: u64,
    error_rate: Option<f64>,
    llm_call_error_rate: Option<f64>,
    /// Tool calls (HTTP and MCP) of the agent's runs.
    tool_calls: u64,
    /// Tool calls that failed.
    tool_failures: u64,
    cost_usd: f64,
    avg_cost_per_invocation_usd: Option<f64>,
    avg_cost_per_call_usd: Option<f64>,
    input_tokens: u64,
    output_tokens: u64,
    avg_latency_ms: Option<f64>,
    p50_latency_ms: Option<f64>,
    p95_latency_ms: Option<f64>,
}

/// `GET /stats`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Stats {
    group_by: String,
    items: Vec<StatsRow>,
    /// Tool calls that carry no value of the grouping (no agent, prompt, ...) when no
    /// LLM call or run lacks one too: counted here, not as a group of tool calls alone
    /// (else in that null group; 0 with `group_by` model, provider or tool).
    tool_calls_without_group: u64,
    /// True when the scan budget ran out: the rows cover the newest part only.
    truncated: bool,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct StatsRow {
    /// The group's value; null for records without one.
    group: Option<String>,
    /// `group_by=tool`: the tool (its `kind = "http"` provider's name).
    #[serde(default)]
    tool: Option<String>,
    /// `group_by=tool`: tool calls that failed.
    #[serde(default)]
    failures: Option<u64>,
    #[serde(default)]
    p50_duration_ms: Option<f64>,
    #[serde(default)]
    p95_duration_ms: Option<f64>,
    /// Runs of the group (a run counts in each model group its calls made).
    #[serde(default)]
    runs: Option<u64>,
    #[serde(default)]
    failed_runs: Option<u64>,
    #[serde(default)]
    run_error_rate: Option<f64>,
    /// LLM calls (every attempt); tool calls with `group_by=tool`.
    calls: u64,
    #[serde(default)]
    llm_calls: Option<u64>,
    /// Tool calls of the group (not in model or provider groups).
    #[serde(default)]
    tool_calls: Option<u64>,
    #[serde(default)]
    success_rate: Option<f64>,
    #[serde(default)]
    llm_call_error_rate: Option<f64>,
    #[serde(default)]
    avg_latency_ms: Option<f64>,
    #[serde(default)]
    p50_latency_ms: Option<f64>,
    #[serde(default)]
    p95_latency_ms: Option<f64>,
    #[serde(default)]
    avg_input_tokens: Option<f64>,
    #[serde(default)]
    avg_output_tokens: Option<f64>,
    #[serde(default)]
    cost_usd: Option<f64>,
}

/// `GET /ratelimits`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RateLimits {
    items: Vec<RateLimitRow>,
    count: usize,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RateLimitRow {
    provider: String,
    key_fingerprint: Option<String>,
    model: Option<String>,
    /// When the provider last reported this state.
    at: String,
    requests: Option<LimitWindowState>,
    tokens: Option<LimitWindowState>,
    input_tokens: Option<LimitWindowState>,
    output_tokens: Option<LimitWindowState>,
    /// The smallest remaining/limit percentage of the windows that have not reset
    /// since they were reported: the headroom now (null when none is known).
    headroom_pct: Option<f64>,
    /// The smallest remaining/limit percentage as reported at `at`.
    reported_headroom_pct: Option<f64>,
    /// Every window that reported a headroom has reset since: the state is history,
    /// not headroom now (such rows come last).
    stale: bool,
    retry_after_s: Option<f64>,
    rate_limited_1h: u64,
    rate_limited_24h: u64,
    last_429_at: Option<String>,
    last_retry_after_s: Option<f64>,
    /// With `series=true` only.
    #[serde(default)]
    series: Option<Vec<RateLimitSeriesPoint>>,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LimitWindowState {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset_s: Option<f64>,
    reset_at: Option<String>,
    headroom_pct: Option<f64>,
    /// The window's reset time has passed since it was reported.
    has_reset: bool,
}

#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RateLimitSeriesPoint {
    at: String,
    status: Option<CallStatus>,
    requests_remaining: Option<u64>,
    tokens_remaining: Option<u64>,
    input_tokens_remaining: Option<u64>,
    output_tokens_remaining: Option<u64>,
}

/// `GET /audit`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AuditLog {
    items: Vec<AuditEntry>,
    count: usize,
}
