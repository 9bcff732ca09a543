//! The call and invocation records: the one shape every stage agrees on.
//!
//! The forward path fills the transport fields (times, status, headers),
//! the parsers fill the LLM fields (`ParsedExchange`), pricing fills `cost`,
//! and the writer turns finished calls into invocation rollups. Everything
//! here is plain data with serde; no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// How a call ended, from the agent's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Success,
    Failed,
    Timeout,
    RateLimited,
    Canceled,
    Unauthorized,
}

impl CallStatus {
    /// The status a finished HTTP exchange maps to, before any stream-level error is considered.
    pub fn from_http(status: u16) -> CallStatus {
        match status {
            200..=399 => CallStatus::Success,
            401 | 403 => CallStatus::Unauthorized,
            429 => CallStatus::RateLimited,
            408 | 504 => CallStatus::Timeout,
            _ => CallStatus::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Success => "success",
            CallStatus::Failed => "failed",
            CallStatus::Timeout => "timeout",
            CallStatus::RateLimited => "rate_limited",
            CallStatus::Canceled => "canceled",
            CallStatus::Unauthorized => "unauthorized",
        }
    }

    pub fn parse(text: &str) -> Option<CallStatus> {
        Some(match text {
            "success" => CallStatus::Success,
            "failed" => CallStatus::Failed,
            "timeout" => CallStatus::Timeout,
            "rate_limited" => CallStatus::RateLimited,
            "canceled" => CallStatus::Canceled,
            "unauthorized" => CallStatus::Unauthorized,
            _ => return None,
        })
    }

    pub const ALL: [CallStatus; 6] = [
        CallStatus::Success,
        CallStatus::Failed,
        CallStatus::Timeout,
        CallStatus::RateLimited,
        CallStatus::Canceled,
        CallStatus::Unauthorized,
    ];
}

/// Normalised token counts (see README, "Token semantics").
///
/// `cache_read_tokens` and `cache_creation_tokens` are parts of `input_tokens`;
/// `reasoning_tokens` is part of `output_tokens`. A count the provider did not
/// report is `None`, never 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    pub cache_creation_tokens: Option<u64>,
    /// Anthropic splits cache writes by lifetime; priced differently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_1h_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        self.input_tokens.is_none() && self.output_tokens.is_none()
    }

    /// Adds `other` into `self`; a field stays `None` only if both are `None`.
    pub fn accumulate(&mut self, other: &Usage) {
        fn add(a: &mut Option<u64>, b: Option<u64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0).saturating_add(b));
            }
        }
        add(&mut self.input_tokens, other.input_tokens);
        add(&mut self.output_tokens, other.output_tokens);
        add(&mut self.cache_read_tokens, other.cache_read_tokens);
        add(&mut self.cache_creation_tokens, other.cache_creation_tokens);
        add(
            &mut self.cache_creation_1h_tokens,
            other.cache_creation_1h_tokens,
        );
        add(&mut self.reasoning_tokens, other.reasoning_tokens);
        add(&mut self.total_tokens, other.total_tokens);
    }
}

/// An error reported by the provider (body or mid-stream event) or by llmtap itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    #[serde(rename = "type")]
    pub error_type: Option<String>,
    pub message: Option<String>,
}

/// One message of the conversation as sent in the request, normalised across providers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// system | developer | user | assistant | tool (Gemini "model" becomes "assistant").
    pub role: String,
    /// The text parts joined with "\n"; `None` when the message has no text.
    pub text: Option<String>,
    /// Tool calls the assistant made in this message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For tool results: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Non-text parts (images, documents, audio), summarised: type, media type, url or size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Value>,
}

/// A tool call made by the model (in the response) or replayed in the history (in the request).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: Option<String>,
    pub name: String,
    /// The arguments as the model produced them: a JSON text for OpenAI, an object for Anthropic/Gemini.
    pub arguments: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
    pub system: Option<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Value>,
    /// Sampling and control parameters (temperature, max_tokens, tool_choice, reasoning, ...).
    pub params: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseView {
    pub text: Option<String>,
    pub thinking: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

/// Which API of a provider a call hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    ChatCompletions,
    Responses,
    Embeddings,
    Messages,
    GenerateContent,
    StreamGenerateContent,
    Embed,
    Other,
}

/// What the parsers read out of one exchange. Produced by `parse::parse_exchange`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParsedExchange {
    pub endpoint: Endpoint,
    pub stream: bool,
    pub model: Option<String>,
    pub response_model: Option<String>,
    pub usage: Usage,
    /// The provider's own usage object, unchanged.
    pub raw_usage: Option<Value>,
    pub stop_reason: Option<String>,
    pub error: Option<ErrorInfo>,
    /// True when the body reported a failure even though the HTTP status was 2xx
    /// (an `event: error` mid-stream, a `response.failed`).
    pub failed_in_body: bool,
    pub request: RequestView,
    pub response: ResponseView,
    /// Byte offset in the (decoded) response body just past the event that carried
    /// the first content token (text, tool call or thinking). Maps to ttft.
    pub first_content_offset: Option<usize>,
    /// What could not be understood (invalid JSON, unknown event types, ...); the raw body stays in the record.
    pub parse_notes: Vec<String>,
}

impl Default for ParsedExchange {
    fn default() -> Self {
        ParsedExchange {
            endpoint: Endpoint::Other,
            stream: false,
            model: None,
            response_model: None,
            usage: Usage::default(),
            raw_usage: None,
            stop_reason: None,
            error: None,
            failed_in_body: false,
            request: RequestView::default(),
            response: ResponseView::default(),
            first_content_offset: None,
            parse_notes: Vec::new(),
        }
    }
}

/// Normalised rate-limit state from response headers. Missing headers are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: Option<LimitWindow>,
    pub tokens: Option<LimitWindow>,
    pub input_tokens: Option<LimitWindow>,
    pub output_tokens: Option<LimitWindow>,
    pub retry_after_s: Option<f64>,
    /// Every rate-limit related header, as received.
    pub raw: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitWindow {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Seconds from the response until the window resets.
    pub reset_s: Option<f64>,
    /// The reset as an absolute RFC 3339 time.
    pub reset_at: Option<String>,
}

/// Cost of one call. Amounts are integer picodollars (1e-12 USD) so sums never drift;
/// `total_usd` is the same total as a float for display.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub priced: bool,
    pub price_key: Option<String>,
    pub table_version: Option<String>,
    pub input_pusd: u64,
    pub output_pusd: u64,
    pub cache_read_pusd: u64,
    pub cache_creation_pusd: u64,
    pub total_pusd: u64,
    pub total_usd: Option<f64>,
    /// The part of `output_pusd` paid for reasoning tokens (already included in it).
    #[serde(default)]
    pub reasoning_pusd: u64,
    /// Set when a long-context tier applied: the input-token threshold it is "above".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_above_input_tokens: Option<u64>,
    /// Why `priced` is false (model not in the table, no usage reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced_reason: Option<String>,
}

/// Agent-supplied metadata from `x-llmtap-*` headers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub agent: Option<String>,
    pub trigger: Option<String>,
    pub user_id: Option<String>,
    pub tenant: Option<String>,
    pub session_id: Option<String>,
    /// `x-llmtap-prompt`: the system prompt's template as `name@version`.
    pub prompt: Option<String>,
    /// `x-llmtap-prompt-variables`: what the system prompt was rendered with (content).
    pub prompt_variables: Option<Value>,
    pub task_id: Option<String>,
    pub properties: BTreeMap<String, String>,
    /// `x-llmtap-user-prompt`: the user prompt's template as `name@version`, when the
    /// agent renders its user message from a template too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_prompt: Option<String>,
    /// `x-llmtap-user-prompt-variables`: what the user prompt was rendered with (content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_prompt_variables: Option<Value>,
}

impl Metadata {
    /// Whether either set of prompt variables was sent: content, stored and sealed
    /// with the bodies, never in the clear metadata.
    pub fn has_prompt_variables(&self) -> bool {
        self.prompt_variables.is_some() || self.user_prompt_variables.is_some()
    }
}

/// The agent's side of the connection, as llmtap saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The client's address. Personal data: the read API gives it to admin tokens only.
    pub ip: Option<String>,
    /// The `User-Agent` request header (usually the SDK and its version).
    pub user_agent: Option<String>,
}

/// One captured call, as the writer stores it; the read API answers it as
/// `api::answers::RecordedCall`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: String,
    pub invocation_id: String,
    /// The LLM round (1, 2, ...); 0 for a tool HTTP call (`kind = "http"`) or an
    /// MCP exchange (`kind = "mcp"`), which sit between rounds in the run's timeline.
    pub round: u32,
    /// Which retry of its round the call is: 0 the first try (and a tool call), 1 the
    /// first retry, ... (`agent_loop`). Calls stored before retries were told apart
    /// read 0: each was its own round's first try, as it was numbered.
    #[serde(default)]
    pub retry: u32,
    /// SHA-256 (128 bits, hex) of the request body: a retry repeats it (`agent_loop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<String>,
    /// How the call's run was found when the client named none (`agent_loop::Grouping`):
    /// `new`, `continued` or `new_turn`; for a tool's call, `tool` (joined to the run
    /// whose round asked for it, `Conversations::join_tool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grouped_by_conversation: Option<String>,
    pub started_at: String,
    pub ended_at: String,
    /// When the writer stored the call (RFC 3339, the batch's time); absent on calls
    /// stored before it was recorded. `ended_at` is when it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_at: Option<String>,
    /// Microseconds since the Unix epoch of `started_at`; the sort and index key.
    pub started_at_us: u64,
    pub latency_ms: f64,
    /// Time to the first content token for streams, to the first byte otherwise.
    pub ttft_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
    pub provider: String,
    pub kind: String,
    pub endpoint: Option<Endpoint>,
    pub method: String,
    pub path: String,
    pub upstream_host: String,
    pub http_status: Option<u16>,
    pub status: Option<CallStatus>,
    pub stream: bool,
    pub model: Option<String>,
    pub response_model: Option<String>,
    pub usage: Usage,
    pub raw_usage: Option<Value>,
    pub cost_usd: Option<f64>,
    pub cost: Option<Cost>,
    pub stop_reason: Option<String>,
    pub error: Option<ErrorInfo>,
    pub request: Option<RequestView>,
    pub response: Option<ResponseView>,
    pub rate_limit: Option<RateLimit>,
    pub metadata: Metadata,
    pub api_key_fingerprint: Option<String>,
    pub client: ClientInfo,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub truncated: bool,
    /// Which bodies were cut (`request`, `response`): at the capture cap, or at the
    /// decode cap of a compressed body. Their stored bytes are a prefix, not exact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated_parts: Vec<String>,
    /// Request headers as forwarded, secrets redacted.
    pub request_headers: BTreeMap<String, String>,
    /// Response headers as received.
    pub response_headers: BTreeMap<String, String>,
    /// Captured bodies (decoded), kept raw so nothing is lost when parsing fails.
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    pub parse_notes: Vec<String>,
    /// Attachments found in the request: base64 payloads mirrored into the blob
    /// store (`GET /api/v1/blobs/{sha256}`), or URLs recorded as URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// The exact captured bytes when they are not valid UTF-8 (the `*_body` strings
    /// above are then lossy). Not serialised: the store keeps the bytes in its
    /// content store and rebuilds them for `/calls/{id}/raw`.
    #[serde(skip)]
    pub request_body_bytes: Option<Vec<u8>>,
    #[serde(skip)]
    pub response_body_bytes: Option<Vec<u8>>,
    /// For `kind = "mcp"` calls (an MCP server over streamable HTTP, or a stdio server
    /// wrapped by `llmtap mcp`): the JSON-RPC exchange read out of the bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpExchange>,
}

/// One MCP exchange (an HTTP POST, GET or DELETE of the streamable HTTP transport, or
/// one request and its response on a stdio server), read by `parse::mcp`.
///
/// The fields a tool step needs are flat: `tool`, `arguments`, `result_text`,
/// `structured_content`, `is_error`, `error`, `server`. `arguments`, `result`,
/// `result_text` and `structured_content` are content: stored in the call's bodies
/// (sealed when the store is encrypted), put back when the call is read, and never
/// shown to viewer tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpExchange {
    /// `http` (streamable HTTP) or `stdio`.
    pub transport: String,
    /// The JSON-RPC method of the request (`initialize`, `tools/list`, `tools/call`,
    /// `resources/read`, `prompts/get`, `notifications/...`); `None` for the GET event
    /// stream, a DELETE, or a POST that carried only responses.
    pub method: Option<String>,
    /// The JSON-RPC id of the request (a number or a string, as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Value>,
    /// The `Mcp-Session-Id` of the exchange (for stdio: one id per wrapped process).
    pub session_id: Option<String>,
    /// The server, from its `initialize` answer (on later calls of the session, as
    /// remembered by the writer).
    pub server: Option<McpServer>,
    /// `protocolVersion` of an `initialize` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
    /// The resource URI of a `resources/read`, the prompt name of a `prompts/get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `params.arguments` of a `tools/call` or `prompts/get` (content).
    pub arguments: Option<Value>,
    /// The text parts of a `tools/call` result joined with "\n" (content).
    pub result_text: Option<String>,
    /// `structuredContent` of a `tools/call` result (content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<Value>,
    /// The JSON-RPC `result` of any other method, as sent (content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The tool reported a failure (`isError: true`): the call's status is `failed`.
    pub is_error: bool,
    /// A JSON-RPC error answer: the call's status is `failed`.
    pub error: Option<JsonRpcError>,
    /// JSON-RPC messages in the request (more than 1 for a batch).
    pub request_messages: u32,
    /// JSON-RPC messages in the response (an SSE answer may carry notifications and
    /// server requests before the response).
    pub response_messages: u32,
    /// Methods of the notifications and requests the server sent in the response
    /// (progress, logging, list changes), at most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_messages: Vec<String>,
    /// Who started the exchange: `client_to_server` (a request or notification of
    /// the client, answered by the server) or `server_to_client` (a request of the
    /// server answered by the client: `sampling/createMessage`, `roots/list`,
    /// `elicitation/create`, `ping`; a server notification; the GET event stream,
    /// which carries only what the server pushes). Absent in calls stored before it
    /// was recorded, which were all the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The requests the server sent in the response (they have an id the client
    /// answers in a later exchange), at most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_requests: Vec<McpServerRequest>,
    /// The names of the tools a `tools/list` answer offered, in its order (at most
    /// 1,000). Names only, which viewers may see; the list itself (descriptions,
    /// schemas) is content, stored once per distinct list (`store::manifest`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools_offered: Vec<String>,
}

/// The direction of an exchange the client started (`McpExchange::direction`).
pub const MCP_CLIENT_TO_SERVER: &str = "client_to_server";
/// The direction of an exchange the server started.
pub const MCP_SERVER_TO_CLIENT: &str = "server_to_client";

/// A request the server sent the client inside a response stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpServerRequest {
    /// Its JSON-RPC id, as sent (the client's answer carries it back).
    pub id: Value,
    pub method: String,
}

/// An MCP server as its `initialize` answer names it (`serverInfo`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct McpServer {
    pub name: String,
    pub version: Option<String>,
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JsonRpcError {
    pub code: i64,
    pub message: String,
}

impl McpExchange {
    /// The exchange without its content (what the engines keep in a call's metadata).
    pub fn without_content(&self) -> McpExchange {
        McpExchange {
            arguments: None,
            result_text: None,
            structured_content: None,
            result: None,
            ..self.clone()
        }
    }

    /// Takes the content fields of `parsed` (the same exchange, read again from the
    /// stored bodies).
    pub fn restore_content(&mut self, parsed: McpExchange) {
        self.arguments = parsed.arguments;
        self.result_text = parsed.result_text;
        self.structured_content = parsed.structured_content;
        self.result = parsed.result;
    }

    /// Whether the exchange failed at the MCP level (a tool error or a JSON-RPC error).
    pub fn failed(&self) -> bool {
        self.is_error || self.error.is_some()
    }
}

/// One attachment of a request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// `mirrored` (decoded and stored once by content address) or `url`.
    pub source: String,
    /// The blob's content address: SHA-256 of the decoded bytes (HMAC-SHA256 when
    /// the store is encrypted). `None` for URLs.
    pub sha256: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub filename: Option<String>,
    pub url: Option<String>,
}

/// One agent run: the rollup of its calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub id: String,
    pub agent: Option<String>,
    pub trigger: Option<String>,
    pub user_id: Option<String>,
    pub tenant: Option<String>,
    pub session_id: Option<String>,
    /// `x-llmtap-task-id` of its first call that had one.
    #[serde(default)]
    pub task_id: Option<String>,
    pub started_at: String,
    pub ended_at: String,
    pub started_at_us: u64,
    pub ended_at_us: u64,
    pub latency_ms: f64,
    pub rounds: u32,
    pub status: Option<CallStatus>,
    /// Where its loop stands: retries, tool calls, the latest request (`agent_loop`).
    #[serde(default)]
    pub agent_loop: crate::agent_loop::LoopState,
    pub usage: Usage,
    pub cost_usd: Option<f64>,
    pub cost_pusd: u64,
    pub unpriced_calls: u32,
    /// The models the run's requests asked for (the response's when a request named none).
    pub models: Vec<String>,
    /// The models the provider says answered (dated names, routed models).
    #[serde(default)]
    pub response_models: Vec<String>,
    pub providers: Vec<String>,
}

/// The wire format a provider speaks; decides which parser reads its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    /// Any HTTP API: forwarded and recorded without LLM parsing (agent tool calls).
    Http,
    /// An MCP server (streamable HTTP, or stdio through `llmtap mcp`): its JSON-RPC
    /// read by `parse::mcp`; tool traffic, not rounds.
    Mcp,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Http => "http",
            ProviderKind::Mcp => "mcp",
        }
    }

    /// Whether calls of this kind are LLM rounds; tool traffic (`http`, `mcp`) sits
    /// between rounds (round 0).
    pub fn is_round(self) -> bool {
        !matches!(self, ProviderKind::Http | ProviderKind::Mcp)
    }

    pub fn parse(text: &str) -> Option<ProviderKind> {
        Some(match text {
            "openai" => ProviderKind::Openai,
            "anthropic" => ProviderKind::Anthropic,
            "gemini" => ProviderKind::Gemini,
            "http" => ProviderKind::Http,
            "mcp" => ProviderKind::Mcp,
            _ => return None,
        })
    }
}

/// Whether a stored call's `kind` is an LLM round (`ProviderKind::is_round`).
/// The kinds of tool traffic, as stored (`ProviderKind::is_round` is false for them).
pub const NOT_ROUND_KINDS: [&str; 2] = ["http", "mcp"];

pub fn is_round_kind(kind: &str) -> bool {
    ProviderKind::parse(kind).is_none_or(ProviderKind::is_round)
}

/// Adds one call to its invocation's rollup.
pub fn roll_up(existing: Option<InvocationRecord>, call: &CallRecord) -> InvocationRecord {
    let ended_at_us = call.started_at_us + (call.latency_ms * 1000.0) as u64;
    let mut inv = existing.unwrap_or_else(|| InvocationRecord {
        id: call.invocation_id.clone(),
        started_at_us: call.started_at_us,
        ended_at_us,
        ..InvocationRecord::default()
    });
    let m = &call.metadata;
    for (slot, value) in [
        (&mut inv.agent, &m.agent),
        (&mut inv.trigger, &m.trigger),
        (&mut inv.user_id, &m.user_id),
        (&mut inv.tenant, &m.tenant),
        (&mut inv.session_id, &m.session_id),
        (&mut inv.task_id, &m.task_id),
    ] {
        if slot.is_none() {
            slot.clone_from(value);
        }
    }
    inv.started_at_us = inv.started_at_us.min(call.started_at_us);
    inv.ended_at_us = inv.ended_at_us.max(ended_at_us);
    inv.started_at = crate::timefmt::format_rfc3339_us(inv.started_at_us);
    inv.ended_at = crate::timefmt::format_rfc3339_us(inv.ended_at_us);
    inv.latency_ms = (inv.ended_at_us - inv.started_at_us) as f64 / 1000.0;
    // Rounds are the LLM calls (a retry is an attempt of its round, placed by
    // `agent_loop::place_call`); a tool call between them (round 0) decides the run's
    // status only while the run has no LLM round.
    let llm_round = crate::agent_loop::is_llm(call);
    if (llm_round && call.round >= inv.rounds) || (!llm_round && inv.rounds == 0) {
        inv.status = call.status;
    }
    let at = crate::agent_loop::Place {
        round: call.round,
        attempt: if llm_round { call.retry + 1 } else { 0 },
    };
    crate::agent_loop::advance(
        &mut inv.rounds,
        &mut inv.agent_loop,
        &crate::agent_loop::LoopCall::of(call),
        at,
    );
    inv.usage.accumulate(&call.usage);
    // A run has a cost once one of its calls has one (`cost_usd` is kept `None` until then).
    let mut priced = inv.cost_usd.is_some();
    match &call.cost {
        Some(cost) if cost.priced => {
            inv.cost_pusd = inv.cost_pusd.saturating_add(cost.total_pusd);
            priced = true;
        }
        _ if !call.usage.is_empty() => inv.unpriced_calls += 1,
        _ => {}
    }
    // A partial sum would understate the bill: any unpriced call makes the total unknown,
    // and a run none of whose calls has a cost (failed before usage) costs null, like them.
    inv.cost_usd = (inv.unpriced_calls == 0 && priced).then(|| inv.cost_pusd as f64 / 1e12);
    if let Some(model) = call.model.as_ref().or(call.response_model.as_ref()) {
        if !inv.models.contains(model) {
            inv.models.push(model.clone());
        }
    }
    if let Some(model) = &call.response_model {
        if !inv.response_models.contains(model) {
            inv.response_models.push(model.clone());
        }
    }
    if !inv.providers.contains(&call.provider) {
        inv.providers.push(call.provider.clone());
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_without_usage() -> CallRecord {
        CallRecord {
            id: "c_1".into(),
            invocation_id: "i_1".into(),
            round: 1,
            provider: "openai".into(),
            kind: "openai".into(),
            status: Some(CallStatus::Failed),
            http_status: Some(500),
            ..CallRecord::default()
        }
    }

    #[test]
    fn a_run_without_a_priced_call_costs_null_like_its_calls() {
        let failed = failed_without_usage();
        assert_eq!(failed.cost_usd, None);
        let inv = roll_up(None, &failed);
        assert_eq!(inv.cost_usd, None);
        assert_eq!(inv.cost_pusd, 0);
        // A priced round later gives the run a cost.
        let mut priced = failed_without_usage();
        priced.id = "c_2".into();
        priced.round = 2;
        priced.status = Some(CallStatus::Success);
        priced.usage.input_tokens = Some(10);
        priced.usage.output_tokens = Some(2);
        priced.cost = Some(Cost {
            priced: true,
            total_pusd: 3_000_000,
            ..Cost::default()
        });
        priced.cost_usd = Some(3e-6);
        let inv = roll_up(Some(inv), &priced);
        assert_eq!(inv.cost_usd, Some(3e-6));
        // And a failed call after it keeps the cost.
        let mut again = failed_without_usage();
        again.round = 3;
        let inv = roll_up(Some(inv), &again);
        assert_eq!(inv.cost_usd, Some(3e-6));
        assert_eq!(inv.cost_pusd, 3_000_000);
    }

    #[test]
    fn tool_http_calls_are_not_rounds() {
        let mut llm = failed_without_usage();
        llm.status = Some(CallStatus::Success);
        let inv = roll_up(None, &llm);
        let mut tool = failed_without_usage();
        tool.id = "c_2".into();
        tool.kind = "http".into();
        tool.round = 0;
        let inv = roll_up(Some(inv), &tool);
        assert_eq!(inv.rounds, 1);
        assert_eq!(inv.status, Some(CallStatus::Success));
    }
}
