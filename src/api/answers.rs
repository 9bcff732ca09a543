//! The read API's answer types: what each JSON route answers, built by its handler,
//! serialized as is, and described in the OpenAPI document by the schema each type
//! derives (`openapi.rs`), so the document and the answers cannot drift apart.
//!
//! Each answer type is converted from the store's types (`CallRecord`, `CallSummary`,
//! `InvocationSummary`, `RollupCell`, `agent_loop` descriptions, ...) in one place: its
//! `of` function here. That is also where a viewer's answer is redacted (`admin`):
//! viewers never see prompt text, bodies, tool arguments or results, nor a tool
//! call's query string (its arguments). A field that only admins get is written
//! `Option<Option<T>>`, absent for viewers and null or a value for admins, as the
//! wire format has always had it. The types deny unknown fields, and the
//! integration test checks real answers against the document field by field.

use super::history::History;
use super::ApiState;
use crate::agent_loop::{self, RunLoop};
use crate::record::{self, CallRecord, CallStatus, Endpoint};
use crate::store::index::{RateLimitPoint, RateLimitState, RollupCell, SessionSummary};
use crate::store::summary::{CallSummary, InvocationSummary};
use crate::store::{AuditEntry, RunWithCalls, StorageState};
use crate::timefmt::format_rfc3339_us;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

pub mod call_parts;
pub mod loop_parts;
use call_parts::{
    Attachment, ClientInfo, Cost, ErrorInfo, JsonRpcError, McpExchange, McpServer,
    McpServerRequest, Metadata, RateLimit, RequestView, ResponseView, Usage,
};
use loop_parts::{Attempt, Gap, RunOutcome, Turn};

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
    /// Absent while the store opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_log: Option<CaptureLogHealth>,
    /// Absent while the store opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageHealth>,
}

/// The `storage` part of `/healthz`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StorageHealth {
    /// `open`, or `reopening` while the store is reopened after failed writes (reads
    /// answer 503 `store_reopening` meanwhile).
    pub store: &'static str,
    /// `ok`, `bodies_paused` or `capture_paused`.
    pub disk: &'static str,
    /// Free space on the store's volume in MiB; null when unknown.
    pub free_mb: Option<u64>,
    /// Whether captured bodies are being stored (false while disk space, failed writes or a reopen pause them).
    pub storing_bodies: bool,
    /// False while capture is paused for disk space, batch writes fail or the store
    /// reopens (calls wait in the capture log meanwhile).
    pub storing_calls: bool,
    /// Whether content is sealed at rest.
    pub encrypted: bool,
    /// Whether the last batch write failed (or the store is reopening after one).
    pub writes_failing: bool,
    /// That failure's error, while writes fail.
    pub last_write_error: Option<String>,
    /// When it happened (RFC 3339).
    pub last_write_error_at: Option<String>,
    /// Times the store was reopened after failed writes since llmtap started.
    pub reopens: u64,
}

impl StorageHealth {
    pub fn of(state: StorageState) -> StorageHealth {
        let (last_write_error, last_write_error_at) = match state.last_write_error {
            Some((error, at_us)) => (Some(error), Some(format_rfc3339_us(at_us))),
            None => (None, None),
        };
        StorageHealth {
            store: if state.open { "open" } else { "reopening" },
            disk: state.disk.as_str(),
            free_mb: state.free_bytes.map(|b| b >> 20),
            storing_bodies: state.storing_bodies,
            storing_calls: state.storing_calls,
            encrypted: state.encrypted,
            writes_failing: last_write_error.is_some() || !state.open,
            last_write_error,
            last_write_error_at,
            reopens: state.reopens,
        }
    }
}

/// What the capture log lost since start: damage stepped over (`degraded` once
/// any), torn last records cut off after a crash.
#[derive(Serialize, JsonSchema)]
pub struct CaptureLogHealth {
    /// Damaged stretches in the middle of the log stepped over since start; their
    /// records are lost, the ones after them were kept.
    pub damaged: u64,
    /// Bytes of those damaged stretches.
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
            capture_log: Some(capture_log),
            storage: Some(StorageHealth::of(state.store.health())),
        }
    }

    /// While the store opens: alive, the proxy forwards and the capture log records.
    pub fn while_the_store_opens(metrics: &crate::metrics::Metrics) -> Health {
        Health {
            status: "ok",
            store: "opening",
            backlog: metrics.backlog.load(std::sync::atomic::Ordering::Relaxed),
            log_unapplied_bytes: metrics.log_unapplied_bytes(),
            capture_log: None,
            storage: None,
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

/// A price-table entry as `GET /calls/{id}` shows it; rates in USD per million tokens.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PriceEntry {
    /// `provider/model` as the table names it (the call's `cost.price_key`).
    pub key: String,
    /// Always `USD per million tokens`.
    pub unit: &'static str,
    /// The entry's base rates.
    pub rates: PriceRates,
    /// Long-context tiers: their rates apply to a whole request above the threshold.
    pub tiers: Vec<PriceTier>,
    /// The table's note on the entry.
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
    /// Input tokens.
    pub input: String,
    /// Output tokens.
    pub output: String,
    /// Input tokens read from the cache.
    pub cache_read: Option<String>,
    /// Input tokens written to the cache.
    pub cache_write: Option<String>,
    /// Input tokens written to the cache for 1 hour.
    pub cache_write_1h: Option<String>,
    /// Reasoning tokens.
    pub reasoning: Option<String>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PriceTier {
    /// The tier applies to a request with more input tokens than this.
    pub above_input_tokens: u64,
    /// The tier's rates.
    pub rates: PriceRates,
}

/// Every error answer (`#/components/schemas/Error`): what went wrong, as a type a
/// client can switch on and a message for a human.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Error", deny_unknown_fields)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ErrorDetail<'a> {
    /// `bad_parameter`, `unauthorized`, `forbidden`, `not_found`, `store_opening`, ...
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// What went wrong, for a human.
    pub message: &'a str,
    /// The parameter a 400 `bad_parameter` is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<&'a str>,
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

/// A field only admins get: absent for viewers, the value (or null) for admins.
fn admin_only<T>(admin: bool, value: impl FnOnce() -> T) -> Option<T> {
    admin.then(value)
}

/// A call through a `kind = "http"` provider (a tool's HTTP call) or an MCP exchange
/// (`kind = "mcp"`): tool traffic, not an LLM round.
pub fn is_tool_call(call: &CallRecord) -> bool {
    !crate::record::is_round_kind(&call.kind)
}

/// The attempt within its round (1 the first try) of a call of `kind` that is its
/// round's `retry`; none for tool traffic, which is no round's attempt.
pub fn attempt(kind: &str, retry: u32) -> Option<u32> {
    crate::record::is_round_kind(kind).then_some(retry + 1)
}

/// A path or URL up to its query string: a tool call's path as a viewer sees it
/// (the query string is the tool's arguments: `?city=paris`).
pub fn without_query(path: &str) -> &str {
    path.split('?').next().unwrap_or("")
}

/// A call's path as `admin` may see it: a viewer gets a tool call's without its
/// query string; an LLM call's path is as it is.
fn path_as_seen(call: &CallRecord, admin: bool) -> &str {
    if admin || !is_tool_call(call) {
        &call.path
    } else {
        without_query(&call.path)
    }
}

/// The timeline's `kind` of a call: `llm`, `http` or `mcp`.
fn timeline_kind(kind: &str) -> &'static str {
    match crate::record::ProviderKind::parse(kind) {
        Some(k) if !k.is_round() => k.as_str(),
        _ => "llm",
    }
}

/// A call as the calls list answers it (`GET /calls`), and as the live stream's
/// `call` events and the calls CSV export read it.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CallListItem {
    /// The call's id, as answered to the client in `x-llmtap-call-id`.
    pub id: String,
    /// The run the call belongs to (`x-llmtap-invocation-id`, or found by conversation).
    pub invocation_id: String,
    /// The LLM round; 0 for a tool HTTP call or MCP exchange.
    pub round: u32,
    /// Which retry of its round the call is (0 the first try).
    pub retry: u32,
    /// When the request arrived, RFC 3339 UTC with microseconds.
    pub started_at: String,
    /// The same instant in microseconds since the Unix epoch (sort and cursor key).
    pub started_at_us: u64,
    /// When the last byte of the answer was relayed, RFC 3339 UTC.
    pub ended_at: String,
    /// From the request's arrival to the answer's last byte, in milliseconds.
    pub latency_ms: f64,
    /// Time to the first content token for streams, to the first byte otherwise (ms).
    pub ttft_ms: Option<f64>,
    /// The configured provider (route) the call went through, e.g. `openai`.
    pub provider: String,
    /// The provider's wire format: `openai` (and compatibles), `anthropic`, `gemini`,
    /// `http` (a tool's HTTP call) or `mcp`.
    pub kind: String,
    /// The model the request asked for (the response's when the request named none).
    pub model: Option<String>,
    /// The model the provider says answered (often a dated name of `model`).
    pub response_model: Option<String>,
    /// How the call ended: `success`, `failed`, `timeout`, `rate_limited`, `canceled` or `unauthorized`.
    pub status: Option<CallStatus>,
    /// The upstream's HTTP status; null when none arrived.
    pub http_status: Option<u16>,
    /// Whether the answer was streamed (SSE).
    pub stream: bool,
    /// Input (prompt) tokens as the provider counted them.
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens as the provider counted them.
    pub output_tokens: Option<u64>,
    /// Absent for calls stored before these counts were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    /// Priced cost in USD; null when the model has no price.
    pub cost_usd: Option<f64>,
    /// Why generation stopped, as the provider said it (`stop`, `end_turn`, `tool_calls`, ...).
    pub stop_reason: Option<String>,
    /// The provider's error type or code for a failed call.
    pub error_type: Option<String>,
    /// The agent that made the call (`x-llmtap-agent`).
    pub agent: Option<String>,
    /// What started the run (`x-llmtap-trigger`): `user`, `system` or `task`.
    pub trigger: Option<String>,
    /// The tenant (`x-llmtap-tenant`); a tenant's token reads only its own.
    pub tenant: Option<String>,
    /// The end user the agent acted for (`x-llmtap-user-id`).
    pub user_id: Option<String>,
    /// The session grouping runs (`x-llmtap-session-id`, or a client's own session header).
    pub session_id: Option<String>,
    /// The task the run worked on (`x-llmtap-task-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// `x-llmtap-prompt`: the system prompt's template as `name@version`.
    pub prompt: Option<String>,
    /// A short fingerprint of the API key used (never the key), to tell keys apart.
    pub api_key_fingerprint: Option<String>,
    /// Free-form `x-llmtap-property-*` labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// For an MCP exchange: the JSON-RPC method, and the tool of a `tools/call`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    /// The tool an MCP `tools/call` named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

impl CallListItem {
    /// A stored call summary as the list answers it (viewers see it whole: it holds
    /// no prompt text, bodies or tool arguments).
    pub fn of(summary: CallSummary) -> CallListItem {
        let CallSummary {
            id,
            invocation_id,
            round,
            retry,
            started_at,
            started_at_us,
            ended_at,
            latency_ms,
            ttft_ms,
            provider,
            kind,
            model,
            response_model,
            status,
            http_status,
            stream,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            cost_usd,
            stop_reason,
            error_type,
            agent,
            trigger,
            tenant,
            user_id,
            session_id,
            task_id,
            prompt,
            api_key_fingerprint,
            properties,
            mcp_method,
            tool,
        } = summary;
        CallListItem {
            id,
            invocation_id,
            round,
            retry,
            started_at,
            started_at_us,
            ended_at,
            latency_ms,
            ttft_ms,
            provider,
            kind,
            model,
            response_model,
            status,
            http_status,
            stream,
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            cost_usd,
            stop_reason,
            error_type,
            agent,
            trigger,
            tenant,
            user_id,
            session_id,
            task_id,
            prompt,
            api_key_fingerprint,
            properties,
            mcp_method,
            tool,
        }
    }

    /// The attempt within its round (1 the first try); none for a tool call.
    pub fn attempt(&self) -> Option<u32> {
        attempt(&self.kind, self.retry)
    }
}

/// What a run's list item and its detail both answer of the stored run summary: all
/// of it but `rounds` and `tool_calls`, which the detail answers from the calls it
/// read (its round list, its tool calls counted).
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunFields {
    /// The run's id (`x-llmtap-invocation-id`, or generated when the run was found by conversation).
    pub id: String,
    /// When the run's first call arrived, RFC 3339 UTC.
    pub started_at: String,
    /// The same instant in microseconds since the Unix epoch (sort and cursor key).
    pub started_at_us: u64,
    /// When the run's latest call ended, RFC 3339 UTC.
    pub ended_at: String,
    /// From the first call's arrival to the latest call's end (ms).
    pub latency_ms: f64,
    /// The agent that made the call (`x-llmtap-agent`).
    pub agent: Option<String>,
    /// What started the run (`x-llmtap-trigger`): `user`, `system` or `task`.
    pub trigger: Option<String>,
    /// The tenant (`x-llmtap-tenant`); a tenant's token reads only its own.
    pub tenant: Option<String>,
    /// The end user the agent acted for (`x-llmtap-user-id`).
    pub user_id: Option<String>,
    /// The session grouping runs (`x-llmtap-session-id`, or a client's own session header).
    pub session_id: Option<String>,
    /// `x-llmtap-prompt` of the run's calls: the system prompt's template as
    /// `name@version`.
    pub prompt: Option<String>,
    /// The task the run worked on (`x-llmtap-task-id`).
    pub task_id: Option<String>,
    /// The providers the run's calls went through.
    pub providers: Vec<String>,
    /// The models the run's requests asked for, in order of first use.
    pub models: Vec<String>,
    /// The models the provider says answered.
    pub response_models: Vec<String>,
    /// The first model, for tables with one model column.
    pub model: Option<String>,
    /// The status of the run's latest round's last attempt, so a run that recovered from
    /// an error or a retry reads `success`; a tool call decides it only while the run
    /// has no LLM round.
    pub status: Option<CallStatus>,
    /// Attempts beyond each round's first; 0 for runs stored before retries were
    /// told apart.
    pub retries: u32,
    /// Input tokens of the run's calls, summed.
    pub input_tokens: Option<u64>,
    /// Output tokens of the run's calls, summed.
    pub output_tokens: Option<u64>,
    /// Priced cost of the run's calls in USD.
    pub cost_usd: Option<f64>,
    /// Free-form `x-llmtap-property-*` labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// A run (invocation) as the runs list answers it (`GET /invocations`), and as the
/// live stream's `invocation` events and the runs CSV export read it.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunListItem {
    #[serde(flatten)]
    pub run: RunFields,
    /// Distinct rounds.
    pub rounds: u32,
    /// Tool calls captured in the run; 0 for runs stored before they were counted.
    pub tool_calls: u32,
}

impl RunListItem {
    /// A stored run summary as the list answers it (viewers see it whole: it holds
    /// no prompt text).
    pub fn of(summary: InvocationSummary) -> RunListItem {
        let InvocationSummary {
            id,
            started_at,
            started_at_us,
            ended_at,
            latency_ms,
            agent,
            trigger,
            tenant,
            user_id,
            session_id,
            prompt,
            task_id,
            providers,
            models,
            response_models,
            model,
            status,
            rounds,
            retries,
            tool_calls,
            input_tokens,
            output_tokens,
            cost_usd,
            properties,
        } = summary;
        RunListItem {
            run: RunFields {
                id,
                started_at,
                started_at_us,
                ended_at,
                latency_ms,
                agent,
                trigger,
                tenant,
                user_id,
                session_id,
                prompt,
                task_id,
                providers,
                models,
                response_models,
                model,
                status,
                retries,
                input_tokens,
                output_tokens,
                cost_usd,
                properties,
            },
            rounds,
            tool_calls,
        }
    }
}

/// A session as the sessions list answers it (`GET /sessions`), and the head of its
/// detail.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SessionListItem {
    /// The session id as the client gave it.
    pub id: String,
    /// Admins only (null for viewers): the first user message, shortened.
    pub subject: Option<String>,
    /// The agent of the session's first call.
    pub agent: Option<String>,
    /// The tenant (`x-llmtap-tenant`); a tenant's token reads only its own.
    pub tenant: Option<String>,
    /// Calls captured in the session.
    pub calls: u64,
    /// Input tokens of the session's calls, summed.
    pub input_tokens: u64,
    /// Output tokens of the session's calls, summed.
    pub output_tokens: u64,
    /// `cost_pusd` as USD, for display.
    pub cost_usd: f64,
    /// The exact sum of the calls' costs in picodollars.
    pub cost_pusd: u64,
    /// The session's first call, RFC 3339 UTC.
    pub first_at: String,
    /// The same instant in microseconds since the Unix epoch.
    pub first_at_us: u64,
    /// The session's latest call, RFC 3339 UTC.
    pub last_at: String,
    /// The same instant in microseconds since the Unix epoch.
    pub last_at_us: u64,
    /// The models its LLM calls asked for or were answered by, in order of first use
    /// (at most 16; sessions stored before they were kept get them from their calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

impl SessionListItem {
    /// A stored session as `admin` may see it: its subject (prompt text) for admins
    /// only.
    pub fn of(session: SessionSummary, admin: bool) -> SessionListItem {
        let SessionSummary {
            id,
            subject,
            agent,
            tenant,
            calls,
            input_tokens,
            output_tokens,
            cost_usd,
            cost_pusd,
            first_at,
            first_at_us,
            last_at,
            last_at_us,
            models,
        } = session;
        SessionListItem {
            id,
            subject: subject.filter(|_| admin),
            agent,
            tenant,
            calls,
            input_tokens,
            output_tokens,
            cost_usd,
            cost_pusd,
            first_at,
            first_at_us,
            last_at,
            last_at_us,
            models,
        }
    }
}

/// A call record as `admin` may see it (`GET /calls/{id}`, a run's `calls`). A viewer
/// gets it without bodies, messages, prompt variables, the client's address, an MCP
/// exchange's content, nor a tool call's query string.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RecordedCall {
    /// The call's id, as answered to the client in `x-llmtap-call-id`.
    pub id: String,
    /// The run the call belongs to (`x-llmtap-invocation-id`, or found by conversation).
    pub invocation_id: String,
    /// The LLM round (1, 2, ...); 0 for a tool HTTP call (`kind = "http"`) or an
    /// MCP exchange (`kind = "mcp"`), which sit between rounds in the run's timeline.
    pub round: u32,
    /// Which retry of its round the call is: 0 the first try (and a tool call).
    pub retry: u32,
    /// SHA-256 (128 bits, hex) of the request body: a retry repeats it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<String>,
    /// How the call's run was found when the client named none: `new`, `continued`,
    /// `new_turn`, or `tool` (a tool's call joined to the run whose round asked for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grouped_by_conversation: Option<String>,
    /// When the request arrived, RFC 3339 UTC with microseconds.
    pub started_at: String,
    /// When the last byte of the answer was relayed, RFC 3339 UTC.
    pub ended_at: String,
    /// When the writer stored the call; absent on calls stored before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<String>,
    /// Microseconds since the Unix epoch of `started_at`.
    pub started_at_us: u64,
    /// From the request's arrival to the answer's last byte, in milliseconds.
    pub latency_ms: f64,
    /// Time to the first content token for streams, to the first byte otherwise.
    pub ttft_ms: Option<f64>,
    /// Time to the answer's first byte (ms).
    pub first_byte_ms: Option<f64>,
    /// The configured provider (route) the call went through, e.g. `openai`.
    pub provider: String,
    /// The provider's wire format: `openai` (and compatibles), `anthropic`, `gemini`,
    /// `http` (a tool's HTTP call) or `mcp`.
    pub kind: String,
    /// The API the path addresses (`chat_completions`, `messages`, `responses`, ...).
    pub endpoint: Option<Endpoint>,
    /// The HTTP method.
    pub method: String,
    /// A viewer gets a tool call's path without its query string (its arguments).
    pub path: String,
    /// The host the call was forwarded to.
    pub upstream_host: String,
    /// The upstream's HTTP status; null when none arrived.
    pub http_status: Option<u16>,
    /// How the call ended: `success`, `failed`, `timeout`, `rate_limited`, `canceled` or `unauthorized`.
    pub status: Option<CallStatus>,
    /// Whether the answer was streamed (SSE).
    pub stream: bool,
    /// The model the request asked for (the answer's when the request named none).
    pub model: Option<String>,
    /// The model the provider says answered (often a dated name of `model`).
    pub response_model: Option<String>,
    /// Token counts as parsed from the answer.
    pub usage: Usage,
    /// The provider's usage object as it sent it.
    pub raw_usage: Option<Value>,
    /// Priced cost in USD; null when the model has no price.
    pub cost_usd: Option<f64>,
    /// The cost itemised in picodollars (input, output, cache reads and writes) and the
    /// price-table entry it was priced with.
    pub cost: Option<Cost>,
    /// Why generation stopped, as the provider said it (`stop`, `end_turn`, `tool_calls`, ...).
    pub stop_reason: Option<String>,
    /// The provider's error, for a failed call.
    pub error: Option<ErrorInfo>,
    /// Admins only (null for viewers).
    pub request: Option<RequestView>,
    /// Admins only (null for viewers).
    pub response: Option<ResponseView>,
    /// The rate-limit headers of the answer, parsed (limits, remaining, resets).
    pub rate_limit: Option<RateLimit>,
    /// Prompt variables for admins only.
    pub metadata: Metadata,
    /// A short fingerprint of the API key used (never the key), to tell keys apart.
    pub api_key_fingerprint: Option<String>,
    /// The client's address for admins only.
    pub client: ClientInfo,
    /// Size of the request body in bytes.
    pub request_bytes: u64,
    /// Size of the answer body in bytes.
    pub response_bytes: u64,
    /// Whether a stored body was cut at the capture limit.
    pub truncated: bool,
    /// Which bodies were cut (`request`, `response`): their stored bytes are a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated_parts: Vec<String>,
    /// Request headers as forwarded, secrets redacted.
    pub request_headers: BTreeMap<String, String>,
    /// Response headers as received.
    pub response_headers: BTreeMap<String, String>,
    /// Admins only (null for viewers).
    pub request_body: Option<String>,
    /// Admins only (null for viewers).
    pub response_body: Option<String>,
    /// What the parser could not read and skipped (empty when it read everything).
    pub parse_notes: Vec<String>,
    /// Attachments found in the request (`GET /api/v1/blobs/{sha256}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// For an MCP exchange; its content (arguments, results) for admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpExchange>,
}

impl RecordedCall {
    /// The stored record as `admin` may see it: the one place a viewer's call is
    /// redacted. Every field of the record is named, so a field added to the stored
    /// form is a compile error here until it is answered or left out on purpose.
    pub fn of(call: CallRecord, admin: bool) -> RecordedCall {
        let path = path_as_seen(&call, admin).to_string();
        let CallRecord {
            id,
            invocation_id,
            round,
            retry,
            request_digest,
            grouped_by_conversation,
            started_at,
            ended_at,
            stored_at,
            started_at_us,
            latency_ms,
            ttft_ms,
            first_byte_ms,
            provider,
            kind,
            endpoint,
            method,
            path: _,
            upstream_host,
            http_status,
            status,
            stream,
            model,
            response_model,
            usage,
            raw_usage,
            cost_usd,
            cost,
            stop_reason,
            error,
            request,
            response,
            rate_limit,
            metadata,
            api_key_fingerprint,
            client,
            request_bytes,
            response_bytes,
            truncated,
            truncated_parts,
            request_headers,
            response_headers,
            request_body,
            response_body,
            parse_notes,
            attachments,
            request_body_bytes: _,
            response_body_bytes: _,
            mcp,
        } = call;
        RecordedCall {
            id,
            invocation_id,
            round,
            retry,
            request_digest,
            grouped_by_conversation,
            started_at,
            ended_at,
            stored_at,
            started_at_us,
            latency_ms,
            ttft_ms,
            first_byte_ms,
            provider,
            kind,
            endpoint,
            method,
            path,
            upstream_host,
            http_status,
            status,
            stream,
            model,
            response_model,
            usage: Usage::of(usage),
            raw_usage,
            cost_usd,
            cost: cost.map(Cost::of),
            stop_reason,
            error: error.map(ErrorInfo::of),
            request: request.filter(|_| admin).map(RequestView::of),
            response: response.filter(|_| admin).map(ResponseView::of),
            rate_limit: rate_limit.map(RateLimit::of),
            metadata: Metadata::of(metadata, admin),
            api_key_fingerprint,
            client: ClientInfo::of(client, admin),
            request_bytes,
            response_bytes,
            truncated,
            truncated_parts,
            request_headers,
            response_headers,
            request_body: request_body.filter(|_| admin),
            response_body: response_body.filter(|_| admin),
            parse_notes,
            attachments: attachments.into_iter().map(Attachment::of).collect(),
            mcp: mcp.map(|m| McpExchange::of(m, admin)),
        }
    }
}

/// `GET /calls/{id}`: the record plus a one-line failure hint.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CallDetail {
    #[serde(flatten)]
    pub call: RecordedCall,
    /// Why the call failed and what to do about it, for a human; null on success.
    pub hint: Option<String>,
    /// Admins only: where the call went (the provider's base URL and the recorded
    /// path, secret query values redacted), to replay it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_url: Option<String>,
    /// Admins only, for an LLM call: how many leading messages of the request repeat
    /// the session's previous run (memory) and this run's previous round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
    /// The current price table's entry for the key that priced the call; null when
    /// the call is unpriced or the table no longer has that key.
    pub price_entry: Option<PriceEntry>,
}

/// `GET /invocations/{id}`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct InvocationDetail {
    /// The stored run summary (`RunFields`: its list item without `rounds` and
    /// `tool_calls`, answered below from the calls read).
    #[serde(flatten)]
    pub run: RunFields,
    /// Distinct rounds (a retry is an attempt of its round, not a round), among the
    /// calls read (`RunWithCalls::round_count`).
    pub round_count: u32,
    /// LLM calls, every attempt counted.
    pub llm_calls: usize,
    /// Tool calls captured: tool HTTP calls and MCP `tools/call` exchanges
    /// (`agent_loop::is_tool_step`; an MCP session's handshake and lists are not).
    pub tool_calls: usize,
    /// How the run ended (`agent_loop::outcome`).
    pub outcome: RunOutcome,
    /// The time between consecutive LLM calls: tool time, backoff or agent time,
    /// with the tool calls captured in it.
    pub gaps: Vec<Gap>,
    /// Total cost in picodollars (exact sum).
    pub cost_pusd: u64,
    /// Calls with usage but no price (the run's `cost_usd` is then null).
    pub unpriced_calls: u32,
    /// The token counts of the run's calls, summed.
    pub usage: Usage,
    /// The run's LLM rounds, in order.
    pub rounds: Vec<Round>,
    /// Every call of the run in the order it started: the LLM rounds and, between
    /// them, the tool HTTP calls (which are not rounds).
    pub timeline: Vec<RunTimelineEntry>,
    /// The MCP servers the run talked to and the tools each offered.
    pub mcp_servers: Vec<McpServerOffer>,
    /// The full call records in round order (bodies for admins only); absent with
    /// `calls=false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<RecordedCall>>,
}

impl InvocationDetail {
    /// The run read once (`Store::invocation_with_calls`) as `admin` may see it, with
    /// its call records when `include_calls`.
    pub fn of(run: RunWithCalls, admin: bool, include_calls: bool) -> InvocationDetail {
        let round_count = run.round_count();
        let RunWithCalls {
            record,
            summary,
            mut calls,
        } = run;
        // In the order they happened: tool calls (round 0) between the LLM rounds.
        calls.sort_by(|a, b| {
            (a.started_at_us, a.round, &a.id).cmp(&(b.started_at_us, b.round, &b.id))
        });
        let described = crate::agent_loop::describe(&calls);
        let by_id: HashMap<&str, &CallRecord> = calls.iter().map(|c| (c.id.as_str(), c)).collect();
        let rounds = Round::all_of(&described, &by_id, admin);
        InvocationDetail {
            run: RunListItem::of(summary).run,
            round_count,
            llm_calls: calls
                .iter()
                .filter(|c| crate::agent_loop::is_llm(c))
                .count(),
            tool_calls: calls
                .iter()
                .filter(|c| crate::agent_loop::is_tool_step(c))
                .count(),
            outcome: RunOutcome::of(crate::agent_loop::outcome(&record)),
            cost_pusd: record.cost_pusd,
            unpriced_calls: record.unpriced_calls,
            usage: Usage::of(record.usage),
            rounds,
            timeline: RunTimelineEntry::all_of(&calls, admin),
            mcp_servers: McpServerOffer::all_of(&calls),
            // The gaps name each tool call they hold by its path: a viewer gets it
            // without its query string (the tool's arguments), as in the timeline.
            gaps: described
                .gaps
                .into_iter()
                .map(|gap| Gap::of(gap, admin))
                .collect(),
            calls: include_calls.then(|| {
                calls
                    .into_iter()
                    .map(|c| RecordedCall::of(c, admin))
                    .collect()
            }),
        }
    }
}

/// `POST /ingest/mcp`.
#[derive(serde::Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Ingested {
    /// The call the exchange is recorded under.
    pub call_id: String,
}

/// One call of a run's timeline.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunTimelineEntry {
    /// `llm` (a round), `http` (a tool HTTP call between rounds) or `mcp` (an MCP
    /// exchange between rounds).
    pub kind: &'static str,
    /// The call's id.
    pub call_id: String,
    /// The round number, for LLM calls.
    pub round: Option<u32>,
    /// The attempt within the round, for LLM calls.
    pub attempt: Option<u32>,
    /// The round a tool HTTP call followed.
    pub after_round: Option<u32>,
    /// When the request arrived, RFC 3339 UTC.
    pub started_at: String,
    /// When the answer's last byte was relayed, RFC 3339 UTC.
    pub ended_at: String,
    /// From the request's arrival to the answer's last byte (ms).
    pub duration_ms: f64,
    /// The configured provider (route) the call went through.
    pub provider: String,
    /// The HTTP method.
    pub method: String,
    /// The call's path; a viewer gets a tool call's without its query string.
    pub path: String,
    /// The requested model, else the answering one; null for a tool call.
    pub model: Option<String>,
    /// How the call ended: `success`, `failed`, `timeout`, `rate_limited`, `canceled` or `unauthorized`.
    pub status: Option<CallStatus>,
    /// The upstream's HTTP status; null when none arrived.
    pub http_status: Option<u16>,
    /// For an MCP exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpTimelineEntry>,
}

impl RunTimelineEntry {
    /// Every call of a run in the order it started: the LLM rounds and, between them,
    /// the tool HTTP calls and MCP exchanges (with the round they followed).
    fn all_of(calls: &[CallRecord], admin: bool) -> Vec<RunTimelineEntry> {
        let mut last_round = 0;
        calls
            .iter()
            .map(|c| {
                let tool = is_tool_call(c);
                if !tool {
                    last_round = c.round;
                }
                RunTimelineEntry {
                    kind: timeline_kind(&c.kind),
                    call_id: c.id.clone(),
                    round: (!tool).then_some(c.round),
                    attempt: attempt(&c.kind, c.retry),
                    after_round: tool.then_some(last_round),
                    started_at: c.started_at.clone(),
                    ended_at: c.ended_at.clone(),
                    duration_ms: c.latency_ms,
                    provider: c.provider.clone(),
                    method: c.method.clone(),
                    path: path_as_seen(c, admin).to_string(),
                    model: (!tool)
                        .then(|| c.model.clone().or_else(|| c.response_model.clone()))
                        .flatten(),
                    status: c.status,
                    http_status: c.http_status,
                    mcp: c.mcp.as_ref().map(|m| McpTimelineEntry::of(m, admin)),
                }
            })
            .collect()
    }
}

/// An MCP server of a run and the tools it offered (names, from its latest
/// `tools/list` answer; the list itself is stored once per distinct list).
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct McpServerOffer {
    /// The provider (or `llmtap mcp --name`) it was reached through.
    pub provider: String,
    /// As its `initialize` answer named it.
    pub server: Option<McpServer>,
    /// `http` or `stdio`.
    pub transport: String,
    /// Distinct MCP sessions with it.
    pub sessions: usize,
    /// Exchanges with it.
    pub calls: u64,
    /// How often the client asked for its tools.
    pub tools_list_calls: u64,
    /// The tools its latest `tools/list` answer offered, by name.
    pub tools_offered: Vec<String>,
}

impl McpServerOffer {
    /// The MCP servers a run talked to: one entry per server (the provider it was
    /// reached through, one base URL or wrapped command; named as its latest answer
    /// that named it), the tools of its latest `tools/list` answer, how many sessions
    /// it had and how often the list was asked for. Names only: viewers see them too.
    fn all_of(calls: &[CallRecord]) -> Vec<McpServerOffer> {
        let mut out: Vec<(McpServerOffer, std::collections::BTreeSet<&str>)> = Vec::new();
        for c in calls {
            let Some(mcp) = &c.mcp else {
                continue;
            };
            let at = match out.iter().position(|(s, _)| s.provider == c.provider) {
                Some(at) => at,
                None => {
                    out.push((
                        McpServerOffer {
                            provider: c.provider.clone(),
                            server: mcp.server.clone().map(McpServer::of),
                            transport: mcp.transport.clone(),
                            sessions: 0,
                            calls: 0,
                            tools_list_calls: 0,
                            tools_offered: Vec::new(),
                        },
                        Default::default(),
                    ));
                    out.len() - 1
                }
            };
            let (offer, sessions) = &mut out[at];
            offer.calls += 1;
            if mcp.server.is_some() {
                offer.server = mcp.server.clone().map(McpServer::of);
            }
            if let Some(session) = &mcp.session_id {
                sessions.insert(session);
            }
            if mcp.method.as_deref() == Some("tools/list") && !mcp.failed() {
                offer.tools_list_calls += 1;
                offer.tools_offered = mcp.tools_offered.clone();
            }
        }
        out.into_iter()
            .map(|(mut offer, sessions)| {
                offer.sessions = sessions.len();
                offer
            })
            .collect()
    }
}

/// What a joined MCP `tools/call` says of a requested tool call.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JoinedMcpCall {
    /// The MCP exchange's call id.
    pub call_id: String,
    /// The provider (or `llmtap mcp --name`) the server was reached through.
    pub provider: String,
    /// The MCP server, as its `initialize` answer named it.
    pub server: Option<McpServer>,
    /// `http` or `stdio`.
    pub transport: String,
    /// The tool the `tools/call` named.
    pub tool: Option<String>,
    /// The MCP exchange's own duration (not the gap's).
    pub duration_ms: f64,
    /// How the exchange ended.
    pub status: Option<CallStatus>,
    /// The tool reported a failure (`isError: true`).
    pub is_error: bool,
    /// A JSON-RPC error answer.
    pub error: Option<JsonRpcError>,
    /// Admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_text: Option<Option<String>>,
    /// Admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<Option<Value>>,
}

impl JoinedMcpCall {
    /// The MCP `tools/call` among the tool calls joined to a requested one: its
    /// server, real duration and status (and, for admins, its result).
    fn of(
        ids: &[String],
        by_id: &HashMap<&str, &CallRecord>,
        admin: bool,
    ) -> Option<JoinedMcpCall> {
        let (call, mcp) = ids
            .iter()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .find_map(|c| Some((c, c.mcp.as_ref().filter(|m| m.tool.is_some())?)))?;
        Some(JoinedMcpCall {
            call_id: call.id.clone(),
            provider: call.provider.clone(),
            server: mcp.server.clone().map(McpServer::of),
            transport: mcp.transport.clone(),
            tool: mcp.tool.clone(),
            duration_ms: call.latency_ms,
            status: call.status,
            is_error: mcp.is_error,
            error: mcp.error.clone().map(JsonRpcError::of),
            result_text: admin_only(admin, || mcp.result_text.clone()),
            structured_content: admin_only(admin, || mcp.structured_content.clone()),
        })
    }
}

/// What a run's timeline says of an MCP exchange.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct McpTimelineEntry {
    /// `http` or `stdio`.
    pub transport: String,
    /// The JSON-RPC method of the request; null for the GET event stream or a DELETE.
    pub method: Option<String>,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
    /// The resource URI or prompt name.
    pub target: Option<String>,
    /// The MCP server, as its `initialize` answer named it.
    pub server: Option<McpServer>,
    /// The `Mcp-Session-Id` of the exchange (for stdio: one per wrapped process).
    pub session_id: Option<String>,
    /// The tool reported a failure (`isError: true`).
    pub is_error: bool,
    /// A JSON-RPC error answer.
    pub error: Option<JsonRpcError>,
    /// `client_to_server` or `server_to_client` (a server request the client
    /// answered, a server notification, the GET event stream).
    pub direction: String,
    /// Methods of what the server sent in the response (notifications, requests).
    pub server_messages: Vec<String>,
    /// The requests among them, with their ids.
    pub server_requests: Vec<McpServerRequest>,
    /// The tools a `tools/list` answer offered.
    pub tools_offered: Vec<String>,
    /// Admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Option<Value>>,
    /// Admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_text: Option<Option<String>>,
    /// Admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<Option<Value>>,
}

impl McpTimelineEntry {
    /// An exchange's method, tool, server and failure; its arguments and result only
    /// for admins.
    fn of(mcp: &record::McpExchange, admin: bool) -> McpTimelineEntry {
        McpTimelineEntry {
            transport: mcp.transport.clone(),
            method: mcp.method.clone(),
            tool: mcp.tool.clone(),
            target: mcp.target.clone(),
            server: mcp.server.clone().map(McpServer::of),
            session_id: mcp.session_id.clone(),
            is_error: mcp.is_error,
            error: mcp.error.clone().map(JsonRpcError::of),
            direction: mcp
                .direction
                .clone()
                .unwrap_or_else(|| crate::record::MCP_CLIENT_TO_SERVER.to_string()),
            server_messages: mcp.server_messages.clone(),
            server_requests: mcp
                .server_requests
                .iter()
                .cloned()
                .map(McpServerRequest::of)
                .collect(),
            tools_offered: mcp.tools_offered.clone(),
            arguments: admin_only(admin, || mcp.arguments.clone()),
            result_text: admin_only(admin, || mcp.result_text.clone()),
            structured_content: admin_only(admin, || mcp.structured_content.clone()),
        }
    }
}

/// One LLM round: the call that settled it, its attempts, and the tool calls its
/// answer asked for.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Round {
    /// The round number (1, 2, ...).
    pub round: u32,
    /// The call that settled the round (its last attempt).
    pub call_id: String,
    /// When the settling call's request arrived, RFC 3339 UTC.
    pub started_at: String,
    /// When the settling call's answer ended, RFC 3339 UTC.
    pub ended_at: String,
    /// From the request's arrival to the answer's last byte (ms).
    pub latency_ms: f64,
    /// Time to the first content token for streams, to the first byte otherwise (ms).
    pub ttft_ms: Option<f64>,
    /// The configured provider (route) the call went through.
    pub provider: String,
    /// The provider's wire format (`openai`, `anthropic`, `gemini`).
    pub kind: String,
    /// The requested model, else the answering one.
    pub model: Option<String>,
    /// The model the provider says answered (e.g. a dated version of the requested one).
    pub response_model: Option<String>,
    /// How the call ended: `success`, `failed`, `timeout`, `rate_limited`, `canceled` or `unauthorized`.
    pub status: Option<CallStatus>,
    /// The upstream's HTTP status; null when none arrived.
    pub http_status: Option<u16>,
    /// Input (prompt) tokens as the provider counted them.
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens as the provider counted them.
    pub output_tokens: Option<u64>,
    /// Priced cost in USD; null when the model has no price.
    pub cost_usd: Option<f64>,
    /// Why generation stopped, as the provider said it.
    pub stop_reason: Option<String>,
    /// The provider's error, for a failed round.
    pub error: Option<ErrorInfo>,
    /// Why the round failed and what to do about it; null on success.
    pub hint: Option<String>,
    /// Every attempt of the round, the settling one last.
    pub attempts: Vec<RoundAttempt>,
    /// The tool calls the round's answer asked for, joined to their results.
    pub tool_calls: Vec<ToolCallJoin>,
}

impl Round {
    /// Each LLM round (`agent_loop::describe`): the call that settled it, its
    /// attempts, and the tool calls its answer asked for, joined to their results in
    /// the next round and to the tool calls captured in the gap.
    fn all_of(described: &RunLoop, by_id: &HashMap<&str, &CallRecord>, admin: bool) -> Vec<Round> {
        let mut out = Vec::with_capacity(described.rounds.len());
        for (i, round) in described.rounds.iter().enumerate() {
            let Some(call) = by_id.get(round.call_id.as_str()).copied() else {
                continue;
            };
            let next = described.rounds.get(i + 1);
            let gap = described
                .gaps
                .iter()
                .find(|g| g.after_round == round.round && g.before_round != round.round);
            let tool_calls = round
                .requested_tools
                .iter()
                .map(|tc| ToolCallJoin {
                    id: tc.id.clone(),
                    name: tc.name.clone(),
                    result_round: tc.result_round,
                    result_call_id: tc
                        .result_round
                        .and(next)
                        .and_then(|n| n.attempts.first())
                        .map(|a| a.call_id.clone()),
                    duration_ms: tc.result_round.and(gap).map(|g| g.duration_ms),
                    http_call_ids: tc.tool_call_ids.clone(),
                    mcp: JoinedMcpCall::of(&tc.tool_call_ids, by_id, admin),
                    arguments: admin_only(admin, || tc.arguments.clone()),
                    result: admin_only(admin, || tc.result.clone()),
                })
                .collect();
            out.push(Round {
                round: call.round,
                call_id: call.id.clone(),
                started_at: call.started_at.clone(),
                ended_at: call.ended_at.clone(),
                latency_ms: call.latency_ms,
                ttft_ms: call.ttft_ms,
                provider: call.provider.clone(),
                kind: call.kind.clone(),
                model: call.model.clone().or_else(|| call.response_model.clone()),
                response_model: call.response_model.clone(),
                status: call.status,
                http_status: call.http_status,
                input_tokens: call.usage.input_tokens,
                output_tokens: call.usage.output_tokens,
                cost_usd: call.cost_usd,
                stop_reason: call.stop_reason.clone(),
                error: call.error.clone().map(ErrorInfo::of),
                hint: super::views::hint(call),
                attempts: round
                    .attempts
                    .iter()
                    .map(|a| RoundAttempt {
                        attempt: Attempt::of(a.clone()),
                        hint: by_id
                            .get(a.call_id.as_str())
                            .and_then(|c| super::views::hint(c)),
                    })
                    .collect(),
                tool_calls,
            });
        }
        out
    }
}

/// One attempt of a round (`agent_loop::Attempt`) with its failure's hint.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RoundAttempt {
    #[serde(flatten)]
    pub attempt: Attempt,
    /// Why the attempt failed and what to do about it; null on success.
    pub hint: Option<String>,
}

/// A tool call the model asked for, joined to its result in the next round.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ToolCallJoin {
    /// The provider's id of the tool call, when it gives one.
    pub id: Option<String>,
    /// The tool's name.
    pub name: String,
    /// The round that carried the tool's result back, when one did.
    pub result_round: Option<u32>,
    /// The call of that round's first attempt.
    pub result_call_id: Option<String>,
    /// From this round's end to the next round's start: the tool's time.
    pub duration_ms: Option<f64>,
    /// Tool calls captured in that gap joined to this one (`agent_loop::describe`:
    /// the only one requested, else by tool name and arguments, else by argument
    /// values in the call's path).
    pub http_call_ids: Vec<String>,
    /// The MCP `tools/call` among them: its server, own duration, status.
    pub mcp: Option<JoinedMcpCall>,
    /// Admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Admins only: the tool result's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Option<String>>,
}

/// `GET /sessions/{id}`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionListItem,
    /// The session's calls in the order they started.
    pub timeline: Vec<SessionTimelineEntry>,
    /// With `conversation=true`: the session as a conversation, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Vec<ConversationTurn>>,
}

/// One entry of a session's conversation (`agent_loop::Turn`), with a failure's hint.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ConversationTurn {
    #[serde(flatten)]
    pub turn: Turn,
    /// Failures: a one-line explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<Option<String>>,
}

impl ConversationTurn {
    /// A turn as `admin` may see it: texts and arguments for admins only, and a
    /// captured tool call named without its query string (its arguments) for a
    /// viewer; a failure with its hint.
    pub fn of(turn: agent_loop::Turn, hints: &HashMap<&str, Option<String>>, admin: bool) -> Self {
        let turn = Turn::of(turn, admin);
        let hint =
            (turn.kind == "failure").then(|| hints.get(turn.call_id.as_str()).cloned().flatten());
        ConversationTurn { turn, hint }
    }
}

/// One call of a session's timeline.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SessionTimelineEntry {
    /// `llm`, `http` (a tool HTTP call) or `mcp` (an MCP exchange).
    pub kind: &'static str,
    /// The call's id.
    pub call_id: String,
    /// The run the call belongs to.
    pub invocation_id: String,
    /// The LLM round; null for a tool HTTP call or MCP exchange, which are not rounds.
    pub round: Option<u32>,
    /// The attempt within the round; null for a tool HTTP call or MCP exchange.
    pub attempt: Option<u32>,
    /// For an MCP exchange: its JSON-RPC method, and the tool of a `tools/call`.
    pub mcp_method: Option<String>,
    /// The tool an MCP `tools/call` named.
    pub tool: Option<String>,
    /// When the request arrived, RFC 3339 UTC.
    pub started_at: String,
    /// When the answer's last byte was relayed, RFC 3339 UTC.
    pub ended_at: String,
    /// The configured provider (route) the call went through.
    pub provider: String,
    /// The model the request asked for.
    pub model: Option<String>,
    /// How the call ended: `success`, `failed`, `timeout`, `rate_limited`, `canceled` or `unauthorized`.
    pub status: Option<CallStatus>,
    /// The upstream's HTTP status; null when none arrived.
    pub http_status: Option<u16>,
    /// Input (prompt) tokens as the provider counted them.
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens as the provider counted them.
    pub output_tokens: Option<u64>,
    /// Priced cost in USD; null when the model has no price.
    pub cost_usd: Option<f64>,
    /// From the request's arrival to the answer's last byte (ms).
    pub duration_ms: f64,
    /// Why generation stopped, as the provider said it.
    pub stop_reason: Option<String>,
}

impl SessionTimelineEntry {
    /// A call of the session as its stored summary has it.
    pub fn of(c: CallSummary) -> SessionTimelineEntry {
        let round = crate::record::is_round_kind(&c.kind);
        SessionTimelineEntry {
            kind: timeline_kind(&c.kind),
            round: round.then_some(c.round),
            attempt: attempt(&c.kind, c.retry),
            call_id: c.id,
            invocation_id: c.invocation_id,
            mcp_method: c.mcp_method,
            tool: c.tool,
            started_at: c.started_at,
            ended_at: c.ended_at,
            provider: c.provider,
            model: c.model,
            status: c.status,
            http_status: c.http_status,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            cost_usd: c.cost_usd,
            duration_ms: c.latency_ms,
            stop_reason: c.stop_reason,
        }
    }
}

/// `GET /summary`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Summary {
    /// The tenant the numbers are confined to; null for all.
    pub tenant: Option<String>,
    /// Seconds east of UTC of the `tz` that defines today.
    pub tz_offset_s: i64,
    /// When today began in `tz`, RFC 3339 UTC.
    pub today_starts_at: String,
    /// Runs ever recorded.
    pub total_runs: u64,
    /// LLM calls ever recorded (every attempt).
    pub total_calls: u64,
    /// Runs started today.
    pub runs_today: u64,
    /// LLM calls started today.
    pub calls_today: u64,
    /// Runs started in the last 24 h that ended in failure (their last round's last
    /// attempt failed).
    pub errors_24h: u64,
    /// Failed LLM calls (every attempt) in the last 24 h.
    pub failed_calls_24h: u64,
    /// Priced cost of today's calls in USD.
    pub cost_today_usd: f64,
    /// Tokens of today's calls.
    pub tokens_today: TokenTotals,
    /// How the 24-hour counts are taken, for a human.
    pub resolution: &'static str,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TokenTotals {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input and output tokens together.
    pub total: u64,
}

impl TokenTotals {
    pub fn of(cell: &RollupCell) -> TokenTotals {
        TokenTotals {
            input: cell.input_tokens,
            output: cell.output_tokens,
            total: cell.input_tokens.saturating_add(cell.output_tokens),
        }
    }
}

/// `GET /agents`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Agents {
    /// The tenant the rows are confined to; null for all.
    pub tenant: Option<String>,
    /// One row per agent (null: calls without an agent).
    pub items: Vec<AgentRow>,
    /// Rows in `items`.
    pub count: usize,
    /// How the latency quantiles are estimated, for a human.
    pub latency_note: &'static str,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AgentRow {
    /// The agent (`x-llmtap-agent`); null for calls without one.
    pub agent: Option<String>,
    /// Runs of the agent.
    pub invocations: u64,
    /// The same as `invocations`.
    pub runs: u64,
    /// Runs that ended in failure.
    pub failed_runs: u64,
    /// `failed_runs` over `runs`; null without runs.
    pub run_error_rate: Option<f64>,
    /// LLM calls, every attempt (tool calls are not counted).
    pub calls: u64,
    /// The same as `calls`.
    pub llm_calls: u64,
    /// Failed LLM calls.
    pub errors: u64,
    /// The same as `errors`.
    pub failed_llm_calls: u64,
    /// `errors` over `calls`; null without calls.
    pub error_rate: Option<f64>,
    /// The same as `error_rate`.
    pub llm_call_error_rate: Option<f64>,
    /// Tool calls (HTTP and MCP) of the agent's runs.
    pub tool_calls: u64,
    /// Tool calls that failed.
    pub tool_failures: u64,
    /// Priced cost of the agent's calls in USD.
    pub cost_usd: f64,
    /// `cost_usd` per run; null without runs.
    pub avg_cost_per_invocation_usd: Option<f64>,
    /// `cost_usd` per LLM call; null without calls.
    pub avg_cost_per_call_usd: Option<f64>,
    /// Input tokens of the agent's calls, summed.
    pub input_tokens: u64,
    /// Output tokens of the agent's calls, summed.
    pub output_tokens: u64,
    /// Mean latency of the agent's LLM calls (ms); null without calls.
    pub avg_latency_ms: Option<f64>,
    /// Median latency (ms), estimated (`latency_note`).
    pub p50_latency_ms: Option<f64>,
    /// 95th-percentile latency (ms), estimated (`latency_note`).
    pub p95_latency_ms: Option<f64>,
}

impl AgentRow {
    /// An agent's all-time rollup cell (`""`: calls without an agent) and its failed
    /// runs.
    pub fn of(agent: &str, cell: &RollupCell, failed_runs: u64) -> AgentRow {
        let avg = |sum: f64, n: u64| if n == 0 { None } else { Some(sum / n as f64) };
        let cost_usd = cell.cost_pusd as f64 / 1e12;
        AgentRow {
            agent: (!agent.is_empty()).then(|| agent.to_string()),
            invocations: cell.invocations,
            runs: cell.invocations,
            failed_runs,
            run_error_rate: (cell.invocations > 0)
                .then(|| failed_runs as f64 / cell.invocations as f64),
            calls: cell.calls,
            llm_calls: cell.calls,
            errors: cell.errors,
            failed_llm_calls: cell.errors,
            error_rate: avg(cell.errors as f64, cell.calls),
            llm_call_error_rate: avg(cell.errors as f64, cell.calls),
            // A tool's calls (HTTP, MCP), kept apart from the LLM calls in the rollups.
            tool_calls: cell.tool_calls,
            tool_failures: cell.tool_failures,
            cost_usd,
            avg_cost_per_invocation_usd: avg(cost_usd, cell.invocations),
            avg_cost_per_call_usd: avg(cost_usd, cell.calls),
            input_tokens: cell.input_tokens,
            output_tokens: cell.output_tokens,
            avg_latency_ms: avg(cell.latency_sum_us as f64 / 1000.0, cell.calls),
            p50_latency_ms: cell.latency_quantile_ms(0.5),
            p95_latency_ms: cell.latency_quantile_ms(0.95),
        }
    }
}

/// `GET /stats`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Stats {
    /// The grouping asked for.
    pub group_by: String,
    /// One row per group.
    pub items: Vec<StatsRow>,
    /// Tool calls that carry no value of the grouping (no agent, prompt, ...) when no
    /// LLM call or run lacks one too: counted here, not as a group of tool calls alone
    /// (else in that null group; 0 with `group_by` model, provider or tool).
    pub tool_calls_without_group: u64,
    /// True when the scan budget ran out: the rows cover the newest part only.
    pub truncated: bool,
}

/// A row of `/stats`: a tool's (`group_by=tool`) or a group's of LLM calls and runs.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
pub enum StatsRow {
    Tool(ToolStatsRow),
    Group(GroupStatsRow),
}

/// `group_by=tool`: one tool (its `kind = "http"` or `"mcp"` provider's name).
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ToolStatsRow {
    /// The same as `tool`.
    pub group: Option<String>,
    /// The tool (its provider's name).
    pub tool: Option<String>,
    /// Tool calls.
    pub calls: u64,
    /// Tool calls that failed.
    pub failures: u64,
    /// Median duration of its calls (ms).
    pub p50_duration_ms: Option<f64>,
    /// 95th-percentile duration of its calls (ms).
    pub p95_duration_ms: Option<f64>,
}

/// One group's LLM calls (every attempt) and runs.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GroupStatsRow {
    /// The group's value; null for records without one.
    pub group: Option<String>,
    /// Runs of the group (a run counts in each model group its calls made).
    pub runs: u64,
    /// Runs that ended in failure.
    pub failed_runs: u64,
    /// `failed_runs` over `runs`; null without runs.
    pub run_error_rate: Option<f64>,
    /// LLM calls (every attempt).
    pub calls: u64,
    /// The same as `calls`.
    pub llm_calls: u64,
    /// Tool calls of the group (not in model or provider groups).
    pub tool_calls: u64,
    /// Successful LLM calls over `calls`.
    pub success_rate: f64,
    /// Failed LLM calls over `calls`; null without calls.
    pub llm_call_error_rate: Option<f64>,
    /// Mean latency of the LLM calls (ms).
    pub avg_latency_ms: f64,
    /// Median latency of the LLM calls (ms).
    pub p50_latency_ms: Option<f64>,
    /// 95th-percentile latency of the LLM calls (ms).
    pub p95_latency_ms: Option<f64>,
    /// Mean input tokens per LLM call.
    pub avg_input_tokens: f64,
    /// Mean output tokens per LLM call.
    pub avg_output_tokens: f64,
    /// Priced cost of the group's calls in USD.
    pub cost_usd: f64,
}

/// `GET /ratelimits`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RateLimits {
    /// One row per provider, API key and model: least headroom first, stale ones last.
    pub items: Vec<RateLimitRow>,
    /// Rows in `items`.
    pub count: usize,
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RateLimitRow {
    /// The provider the limits are of.
    pub provider: String,
    /// The API key's fingerprint (never the key).
    pub key_fingerprint: Option<String>,
    /// The model the limits are of, when the provider limits per model.
    pub model: Option<String>,
    /// When the provider last reported this state.
    pub at: String,
    /// The requests window.
    pub requests: Option<LimitWindowState>,
    /// The tokens window (input and output together).
    pub tokens: Option<LimitWindowState>,
    /// The input-tokens window.
    pub input_tokens: Option<LimitWindowState>,
    /// The output-tokens window.
    pub output_tokens: Option<LimitWindowState>,
    /// The smallest remaining/limit percentage of the windows that have not reset
    /// since they were reported: the headroom now (null when none is known).
    pub headroom_pct: Option<f64>,
    /// The smallest remaining/limit percentage as reported at `at`.
    pub reported_headroom_pct: Option<f64>,
    /// Every window that reported a headroom has reset since: the state is history,
    /// not headroom now (such rows come last).
    pub stale: bool,
    /// `retry-after` of the latest answer, in seconds.
    pub retry_after_s: Option<f64>,
    /// Calls answered 429 in the last hour.
    pub rate_limited_1h: u64,
    /// Calls answered 429 in the last 24 hours.
    pub rate_limited_24h: u64,
    /// When the latest 429 happened, RFC 3339 UTC.
    pub last_429_at: Option<String>,
    /// `retry-after` of the latest 429, in seconds.
    pub last_retry_after_s: Option<f64>,
    /// With `series=true` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<RateLimitSeriesPoint>>,
}

impl RateLimitRow {
    /// A key's latest state as it stands at `now_us`, with its 429 counts (last hour,
    /// last day).
    pub fn of(s: RateLimitState, now_us: u64, rate_limited: (u64, u64)) -> RateLimitRow {
        let (headroom_pct, reported_headroom_pct, stale) = headroom_now(&s, now_us);
        let window = |w: &Option<record::LimitWindow>| {
            w.as_ref().map(|w| LimitWindowState::of(w, s.at_us, now_us))
        };
        RateLimitRow {
            requests: window(&s.requests),
            tokens: window(&s.tokens),
            input_tokens: window(&s.input_tokens),
            output_tokens: window(&s.output_tokens),
            headroom_pct,
            reported_headroom_pct,
            stale,
            retry_after_s: s.retry_after_s,
            rate_limited_1h: rate_limited.0,
            rate_limited_24h: rate_limited.1,
            last_retry_after_s: s.last_retry_after_s,
            provider: s.provider,
            key_fingerprint: s.key_fingerprint,
            model: s.model,
            at: s.at,
            last_429_at: s.last_429_at,
            series: None,
        }
    }
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LimitWindowState {
    /// The window's limit.
    pub limit: Option<u64>,
    /// What remained of it when reported.
    pub remaining: Option<u64>,
    /// Seconds from the report until the window resets.
    pub reset_s: Option<f64>,
    /// The reset as an absolute RFC 3339 time.
    pub reset_at: Option<String>,
    /// `remaining` over `limit`, in percent.
    pub headroom_pct: Option<f64>,
    /// The window's reset time has passed since it was reported.
    pub has_reset: bool,
}

impl LimitWindowState {
    fn of(w: &record::LimitWindow, at_us: u64, now_us: u64) -> LimitWindowState {
        LimitWindowState {
            limit: w.limit,
            remaining: w.remaining,
            reset_s: w.reset_s,
            reset_at: w.reset_at.clone(),
            headroom_pct: headroom(w),
            has_reset: has_reset(w, at_us, now_us),
        }
    }
}

fn headroom(w: &record::LimitWindow) -> Option<f64> {
    match (w.remaining, w.limit) {
        (Some(r), Some(l)) if l > 0 => Some((r as f64 / l as f64 * 1000.0).round() / 10.0),
        _ => None,
    }
}

/// Whether a window reported at `at_us` has reset by `now_us` (its reset time, or
/// the report plus its reset delay, has passed): its remaining count is history.
fn has_reset(w: &record::LimitWindow, at_us: u64, now_us: u64) -> bool {
    let reset_us = w
        .reset_at
        .as_deref()
        .and_then(crate::timefmt::parse_rfc3339_us)
        .or_else(|| {
            w.reset_s
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| at_us.saturating_add((s * 1e6) as u64))
        });
    reset_us.is_some_and(|reset| reset <= now_us)
}

/// The headroom of a rate-limit state now: the lowest of its windows that have not
/// reset since they were reported, and whether every window that had one has reset
/// (`stale`: the state is history, not headroom now).
fn headroom_now(s: &RateLimitState, now_us: u64) -> (Option<f64>, Option<f64>, bool) {
    let windows = [&s.requests, &s.tokens, &s.input_tokens, &s.output_tokens];
    let mut reported: Option<f64> = None;
    let mut current: Option<f64> = None;
    for w in windows.into_iter().flatten() {
        let Some(h) = headroom(w) else { continue };
        reported = Some(reported.map_or(h, |r| r.min(h)));
        if !has_reset(w, s.at_us, now_us) {
            current = Some(current.map_or(h, |c| c.min(h)));
        }
    }
    let stale = reported.is_some() && current.is_none();
    (current, reported, stale)
}

#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RateLimitSeriesPoint {
    /// When the call started, RFC 3339 UTC.
    pub at: String,
    /// How the call ended.
    pub status: Option<CallStatus>,
    /// Requests remaining after it.
    pub requests_remaining: Option<u64>,
    /// Tokens remaining after it.
    pub tokens_remaining: Option<u64>,
    /// Input tokens remaining after it.
    pub input_tokens_remaining: Option<u64>,
    /// Output tokens remaining after it.
    pub output_tokens_remaining: Option<u64>,
}

impl From<RateLimitPoint> for RateLimitSeriesPoint {
    fn from(p: RateLimitPoint) -> RateLimitSeriesPoint {
        RateLimitSeriesPoint {
            at: format_rfc3339_us(p.at_us),
            status: p.status,
            requests_remaining: p.requests_remaining,
            tokens_remaining: p.tokens_remaining,
            input_tokens_remaining: p.input_tokens_remaining,
            output_tokens_remaining: p.output_tokens_remaining,
        }
    }
}

/// `GET /audit`.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AuditLog {
    /// The entries, newest first.
    pub items: Vec<AuditLogEntry>,
    /// Entries in `items`.
    pub count: usize,
}

/// An entry of the audit log: an admin read of bodies or prompts.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AuditLogEntry {
    /// When the read happened, RFC 3339 UTC.
    pub at: String,
    /// The same instant in microseconds since the Unix epoch.
    pub at_us: u64,
    /// Token name, or the first 12 hex digits of its SHA-256.
    pub who: String,
    /// The reader's role: `admin` or `viewer`.
    pub role: String,
    /// The reader's tenant, if the token is a tenant's.
    pub tenant: Option<String>,
    /// What was read: `read call bodies`, `read raw body`, `read attachment`,
    /// `read prompt logs`, `search prompts` or `export with prompts`.
    pub action: String,
    /// The request as sent (path and query string).
    pub path: String,
}

impl AuditLogEntry {
    pub fn of(entry: AuditEntry) -> AuditLogEntry {
        let AuditEntry {
            at,
            at_us,
            who,
            role,
            tenant,
            action,
            path,
        } = entry;
        AuditLogEntry {
            at,
            at_us,
            who,
            role,
            tenant,
            action,
            path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ClientInfo, McpExchange, Metadata, RequestView, ResponseView};

    /// A tool call with every piece of content a viewer must not get.
    fn tool_call_with_content() -> CallRecord {
        CallRecord {
            id: "c_1".into(),
            kind: "mcp".into(),
            path: "/weather?city=paris".into(),
            usage: record::Usage {
                input_tokens: Some(10),
                cache_creation_1h_tokens: Some(4),
                ..record::Usage::default()
            },
            cost: Some(record::Cost {
                priced: true,
                total_pusd: 7,
                tier_above_input_tokens: Some(200_000),
                ..record::Cost::default()
            }),
            error: Some(record::ErrorInfo {
                error_type: Some("overloaded".into()),
                message: None,
            }),
            rate_limit: Some(record::RateLimit {
                requests: Some(record::LimitWindow {
                    limit: Some(100),
                    reset_at: Some("2026-01-01T00:00:00Z".into()),
                    ..record::LimitWindow::default()
                }),
                raw: [("x-ratelimit-limit-requests".to_string(), "100".to_string())].into(),
                ..record::RateLimit::default()
            }),
            attachments: vec![record::Attachment {
                source: "url".into(),
                url: Some("https://example.com/a.png".into()),
                ..record::Attachment::default()
            }],
            request: Some(RequestView {
                system: Some("secret system prompt".into()),
                messages: vec![
                    record::Message {
                        role: "assistant".into(),
                        tool_calls: vec![record::ToolCall {
                            id: Some("call_1".into()),
                            name: "weather".into(),
                            arguments: serde_json::json!("{\"city\":\"paris\"}"),
                        }],
                        ..record::Message::default()
                    },
                    record::Message {
                        role: "tool".into(),
                        text: Some("sunny".into()),
                        tool_call_id: Some("call_1".into()),
                        ..record::Message::default()
                    },
                ],
                ..RequestView::default()
            }),
            response: Some(ResponseView {
                text: Some("answer".into()),
                ..ResponseView::default()
            }),
            request_body: Some("{\"q\":1}".into()),
            response_body: Some("{\"a\":2}".into()),
            metadata: Metadata {
                agent: Some("bot".into()),
                prompt_variables: Some(serde_json::json!({"name": "Ada"})),
                user_prompt_variables: Some(serde_json::json!({"city": "Paris"})),
                ..Metadata::default()
            },
            client: ClientInfo {
                ip: Some("192.0.2.7".into()),
                user_agent: Some("sdk/1".into()),
            },
            mcp: Some(McpExchange {
                tool: Some("weather".into()),
                arguments: Some(serde_json::json!({"city": "paris"})),
                result_text: Some("sunny".into()),
                structured_content: Some(serde_json::json!({"sky": "clear"})),
                server: Some(record::McpServer {
                    name: "weather".into(),
                    version: Some("1.0".into()),
                }),
                error: Some(record::JsonRpcError {
                    code: -32000,
                    message: "busy".into(),
                }),
                server_requests: vec![record::McpServerRequest {
                    id: serde_json::json!(7),
                    method: "roots/list".into(),
                }],
                ..McpExchange::default()
            }),
            ..CallRecord::default()
        }
    }

    #[test]
    fn a_viewer_gets_a_call_without_its_content_and_an_admin_whole() {
        let viewer =
            serde_json::to_value(RecordedCall::of(tool_call_with_content(), false)).unwrap();
        for field in ["request", "response", "request_body", "response_body"] {
            assert!(viewer[field].is_null(), "{field}: {viewer}");
        }
        assert_eq!(viewer["path"], "/weather");
        assert!(viewer["metadata"]["prompt_variables"].is_null());
        assert!(viewer["metadata"].get("user_prompt_variables").is_none());
        assert_eq!(viewer["metadata"]["agent"], "bot");
        assert!(viewer["client"]["ip"].is_null());
        assert_eq!(viewer["client"]["user_agent"], "sdk/1");
        assert_eq!(viewer["mcp"]["tool"], "weather");
        assert!(viewer["mcp"]["arguments"].is_null());
        assert!(viewer["mcp"]["result_text"].is_null());
        assert!(viewer["mcp"].get("structured_content").is_none());
        assert_eq!(viewer["mcp"]["server"]["name"], "weather");

        let call = tool_call_with_content();
        let admin = serde_json::to_value(RecordedCall::of(call.clone(), true)).unwrap();
        // An admin's answer is the stored record as it serializes, field for field.
        assert_eq!(admin, serde_json::to_value(&call).unwrap());
    }

    #[test]
    fn an_llm_calls_path_keeps_its_query_string_for_a_viewer() {
        let call = CallRecord {
            kind: "openai".into(),
            path: "/v1/chat/completions?api-version=2024".into(),
            ..CallRecord::default()
        };
        let viewer = RecordedCall::of(call, false);
        assert_eq!(viewer.path, "/v1/chat/completions?api-version=2024");
    }

    /// List items answer what the stored summaries serialized as (the wire format
    /// before they had types of their own); a viewer's session has no subject.
    #[test]
    fn list_items_answer_the_stored_summaries_json() {
        let call = CallSummary {
            id: "c_1".into(),
            kind: "http".into(),
            cache_read_tokens: Some(3),
            task_id: Some("t".into()),
            properties: [("team".to_string(), "a".to_string())].into(),
            tool: Some("weather".into()),
            ..CallSummary::default()
        };
        let item = CallListItem::of(call.clone());
        assert_eq!(item.attempt(), None);
        assert_eq!(
            serde_json::to_value(item).unwrap(),
            serde_json::to_value(&call).unwrap()
        );
        let bare = CallSummary::default();
        assert_eq!(
            serde_json::to_value(CallListItem::of(bare.clone())).unwrap(),
            serde_json::to_value(&bare).unwrap()
        );

        let run = InvocationSummary {
            id: "i_1".into(),
            rounds: 3,
            retries: 1,
            tool_calls: 2,
            models: vec!["m".into()],
            ..InvocationSummary::default()
        };
        assert_eq!(
            serde_json::to_value(RunListItem::of(run.clone())).unwrap(),
            serde_json::to_value(&run).unwrap()
        );

        let session = SessionSummary {
            id: "s".into(),
            subject: Some("hello".into()),
            models: Some(vec!["m".into()]),
            ..SessionSummary::default()
        };
        assert_eq!(
            serde_json::to_value(SessionListItem::of(session.clone(), true)).unwrap(),
            serde_json::to_value(&session).unwrap()
        );
        let viewer = serde_json::to_value(SessionListItem::of(session, false)).unwrap();
        assert!(viewer["subject"].is_null() && viewer.get("subject").is_some());
    }
}
