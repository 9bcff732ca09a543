//! The parts of a recorded call as the API answers them (`RecordedCall`'s nested
//! objects, and the MCP pieces a run's timeline repeats): one answer type per stored
//! type of `record.rs`, each built by one `of` that names every stored field, so a
//! field added to the stored form is a compile error here until it is answered or
//! left out on purpose. Each serializes as the stored type always has (same names,
//! same fields left out when empty); their schema names are the stored types'.
//!
//! Where a viewer's answer differs (prompt variables, the client's address, an MCP
//! exchange's content), `of` takes `admin` and leaves the content out.

use crate::record;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Token counts as parsed from the answer: cache reads and writes are parts of
/// `input_tokens`, reasoning of `output_tokens`; a count the provider did not
/// report is null, never 0.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Usage {
    /// Input (prompt) tokens, cached ones included.
    pub input_tokens: Option<u64>,
    /// Output (completion) tokens, reasoning included.
    pub output_tokens: Option<u64>,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache.
    pub cache_creation_tokens: Option<u64>,
    /// Of those, the ones written with a 1-hour lifetime (Anthropic; priced apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_1h_tokens: Option<u64>,
    /// Output tokens spent reasoning.
    pub reasoning_tokens: Option<u64>,
    /// The total as the provider reported it.
    pub total_tokens: Option<u64>,
}

impl Usage {
    pub fn of(usage: record::Usage) -> Usage {
        let record::Usage {
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            cache_creation_1h_tokens,
            reasoning_tokens,
            total_tokens,
        } = usage;
        Usage {
            input_tokens,
            output_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            cache_creation_1h_tokens,
            reasoning_tokens,
            total_tokens,
        }
    }
}

/// A call's cost: amounts in integer picodollars (1e-12 USD), so sums never drift.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Cost {
    /// Whether the call was priced (false: see `unpriced_reason`).
    pub priced: bool,
    /// The price-table entry that priced it, `provider/model`.
    pub price_key: Option<String>,
    /// The price table's version that priced it.
    pub table_version: Option<String>,
    /// Cost of the uncached input tokens.
    pub input_pusd: u64,
    /// Cost of the output tokens, reasoning included.
    pub output_pusd: u64,
    /// Cost of the input tokens read from the cache.
    pub cache_read_pusd: u64,
    /// Cost of the input tokens written to the cache.
    pub cache_creation_pusd: u64,
    /// The sum of the parts.
    pub total_pusd: u64,
    /// `total_pusd` in USD, for display.
    pub total_usd: Option<f64>,
    /// The part of `output_pusd` paid for reasoning tokens (already included in it).
    #[serde(default)]
    pub reasoning_pusd: u64,
    /// Set when a long-context tier applied: the input-token threshold it is above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_above_input_tokens: Option<u64>,
    /// Why `priced` is false (model not in the table, no usage reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced_reason: Option<String>,
}

impl Cost {
    pub fn of(cost: record::Cost) -> Cost {
        let record::Cost {
            priced,
            price_key,
            table_version,
            input_pusd,
            output_pusd,
            cache_read_pusd,
            cache_creation_pusd,
            total_pusd,
            total_usd,
            reasoning_pusd,
            tier_above_input_tokens,
            unpriced_reason,
        } = cost;
        Cost {
            priced,
            price_key,
            table_version,
            input_pusd,
            output_pusd,
            cache_read_pusd,
            cache_creation_pusd,
            total_pusd,
            total_usd,
            reasoning_pusd,
            tier_above_input_tokens,
            unpriced_reason,
        }
    }
}

/// An error the provider reported (in the body or mid-stream), or llmtap's own.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ErrorInfo {
    /// The provider's error type or code.
    #[serde(rename = "type")]
    pub error_type: Option<String>,
    /// The error's message, as sent.
    pub message: Option<String>,
}

impl ErrorInfo {
    pub fn of(error: record::ErrorInfo) -> ErrorInfo {
        let record::ErrorInfo {
            error_type,
            message,
        } = error;
        ErrorInfo {
            error_type,
            message,
        }
    }
}

/// What the agent said of the call in its `x-llmtap-*` headers.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Metadata {
    /// The agent that made the call (`x-llmtap-agent`).
    pub agent: Option<String>,
    /// What started the run (`x-llmtap-trigger`): `user`, `system` or `task`.
    pub trigger: Option<String>,
    /// The end user the agent acted for (`x-llmtap-user-id`).
    pub user_id: Option<String>,
    /// The tenant (`x-llmtap-tenant`); a tenant's token reads only its own.
    pub tenant: Option<String>,
    /// The session grouping runs (`x-llmtap-session-id`, or a client's own session header).
    pub session_id: Option<String>,
    /// `x-llmtap-prompt`: the system prompt's template as `name@version`.
    pub prompt: Option<String>,
    /// Admins only (null for viewers): what the system prompt was rendered with.
    pub prompt_variables: Option<Value>,
    /// The task the run worked on (`x-llmtap-task-id`).
    pub task_id: Option<String>,
    /// Free-form `x-llmtap-property-*` labels.
    pub properties: BTreeMap<String, String>,
    /// `x-llmtap-user-prompt`: the user prompt's template as `name@version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_prompt: Option<String>,
    /// Admins only: what the user prompt was rendered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_prompt_variables: Option<Value>,
}

impl Metadata {
    /// The call's metadata as `admin` may see it: prompt variables (content) for
    /// admins only.
    pub fn of(metadata: record::Metadata, admin: bool) -> Metadata {
        let record::Metadata {
            agent,
            trigger,
            user_id,
            tenant,
            session_id,
            prompt,
            prompt_variables,
            task_id,
            properties,
            user_prompt,
            user_prompt_variables,
        } = metadata;
        Metadata {
            agent,
            trigger,
            user_id,
            tenant,
            session_id,
            prompt,
            prompt_variables: prompt_variables.filter(|_| admin),
            task_id,
            properties,
            user_prompt,
            user_prompt_variables: user_prompt_variables.filter(|_| admin),
        }
    }
}

/// The agent's side of the connection, as llmtap saw it.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClientInfo {
    /// Admins only (null for viewers): the client's address, personal data.
    pub ip: Option<String>,
    /// The `User-Agent` request header (usually the SDK and its version).
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// The client as `admin` may see it: its address names a person's machine or
    /// network, so admins only; the user agent names the agent's SDK and stays.
    pub fn of(client: record::ClientInfo, admin: bool) -> ClientInfo {
        let record::ClientInfo { ip, user_agent } = client;
        ClientInfo {
            ip: ip.filter(|_| admin),
            user_agent,
        }
    }
}

/// The rate-limit headers of an answer, parsed; a header not sent is null.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RateLimit {
    /// The requests window.
    pub requests: Option<LimitWindow>,
    /// The tokens window (input and output together).
    pub tokens: Option<LimitWindow>,
    /// The input-tokens window.
    pub input_tokens: Option<LimitWindow>,
    /// The output-tokens window.
    pub output_tokens: Option<LimitWindow>,
    /// `retry-after`, in seconds.
    pub retry_after_s: Option<f64>,
    /// Every rate-limit related header, as received.
    pub raw: BTreeMap<String, String>,
}

impl RateLimit {
    pub fn of(rate_limit: record::RateLimit) -> RateLimit {
        let record::RateLimit {
            requests,
            tokens,
            input_tokens,
            output_tokens,
            retry_after_s,
            raw,
        } = rate_limit;
        RateLimit {
            requests: requests.map(LimitWindow::of),
            tokens: tokens.map(LimitWindow::of),
            input_tokens: input_tokens.map(LimitWindow::of),
            output_tokens: output_tokens.map(LimitWindow::of),
            retry_after_s,
            raw,
        }
    }
}

/// One rate-limit window as the answer's headers reported it.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LimitWindow {
    /// The window's limit.
    pub limit: Option<u64>,
    /// What remained of it after the call.
    pub remaining: Option<u64>,
    /// Seconds from the response until the window resets.
    pub reset_s: Option<f64>,
    /// The reset as an absolute RFC 3339 time.
    pub reset_at: Option<String>,
}

impl LimitWindow {
    pub fn of(window: record::LimitWindow) -> LimitWindow {
        let record::LimitWindow {
            limit,
            remaining,
            reset_s,
            reset_at,
        } = window;
        LimitWindow {
            limit,
            remaining,
            reset_s,
            reset_at,
        }
    }
}

/// The request as parsed, normalised across providers (admins only).
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RequestView {
    /// The system prompt (instructions).
    pub system: Option<String>,
    /// The conversation as sent, in order.
    pub messages: Vec<Message>,
    /// The tools the request offered, as sent.
    pub tools: Vec<Value>,
    /// Sampling and control parameters (temperature, max_tokens, tool_choice, reasoning, ...).
    pub params: BTreeMap<String, Value>,
}

impl RequestView {
    pub fn of(request: record::RequestView) -> RequestView {
        let record::RequestView {
            system,
            messages,
            tools,
            params,
        } = request;
        RequestView {
            system,
            messages: messages.into_iter().map(Message::of).collect(),
            tools,
            params,
        }
    }
}

/// The answer as parsed, normalised across providers (admins only).
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ResponseView {
    /// The answer's text.
    pub text: Option<String>,
    /// The model's reasoning text, when the provider returned it.
    pub thinking: Option<String>,
    /// The model's refusal, when it refused.
    pub refusal: Option<String>,
    /// The tool calls the model asked for.
    pub tool_calls: Vec<ToolCall>,
}

impl ResponseView {
    pub fn of(response: record::ResponseView) -> ResponseView {
        let record::ResponseView {
            text,
            thinking,
            refusal,
            tool_calls,
        } = response;
        ResponseView {
            text,
            thinking,
            refusal,
            tool_calls: tool_calls.into_iter().map(ToolCall::of).collect(),
        }
    }
}

/// One message of the request's conversation.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Message {
    /// system | developer | user | assistant | tool (Gemini "model" becomes "assistant").
    pub role: String,
    /// The text parts joined with "\n"; null when the message has no text.
    pub text: Option<String>,
    /// Tool calls the assistant made in this message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Non-text parts (images, documents, audio), summarised: type, media type, url or size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Value>,
}

impl Message {
    pub fn of(message: record::Message) -> Message {
        let record::Message {
            role,
            text,
            tool_calls,
            tool_call_id,
            attachments,
        } = message;
        Message {
            role,
            text,
            tool_calls: tool_calls.into_iter().map(ToolCall::of).collect(),
            tool_call_id,
            attachments,
        }
    }
}

/// A tool call the model made (in the answer) or that the request's history replays.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ToolCall {
    /// The provider's id of the call, when it gives one.
    pub id: Option<String>,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model produced them: a JSON text for OpenAI, an object for Anthropic/Gemini.
    pub arguments: Value,
}

impl ToolCall {
    pub fn of(call: record::ToolCall) -> ToolCall {
        let record::ToolCall {
            id,
            name,
            arguments,
        } = call;
        ToolCall {
            id,
            name,
            arguments,
        }
    }
}

/// An attachment of the request (`GET /api/v1/blobs/{sha256}` serves a mirrored one).
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Attachment {
    /// `mirrored` (decoded and stored once by content address) or `url`.
    pub source: String,
    /// The blob's content address (SHA-256 of the decoded bytes, HMAC-SHA256 when the
    /// store is encrypted); null for URLs.
    pub sha256: Option<String>,
    /// Its media type, as sent.
    pub media_type: Option<String>,
    /// Its decoded size in bytes.
    pub size: Option<u64>,
    /// Its file name, as sent.
    pub filename: Option<String>,
    /// The URL, for an attachment sent by URL.
    pub url: Option<String>,
}

impl Attachment {
    pub fn of(attachment: record::Attachment) -> Attachment {
        let record::Attachment {
            source,
            sha256,
            media_type,
            size,
            filename,
            url,
        } = attachment;
        Attachment {
            source,
            sha256,
            media_type,
            size,
            filename,
            url,
        }
    }
}

/// One MCP exchange (a request and its answer) read out of the bodies; its content
/// (`arguments`, `result_text`, `structured_content`, `result`) for admins only.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct McpExchange {
    /// `http` (streamable HTTP) or `stdio`.
    pub transport: String,
    /// The JSON-RPC method of the request; null for the GET event stream, a DELETE,
    /// or a POST that carried only responses.
    pub method: Option<String>,
    /// The JSON-RPC id of the request (a number or a string, as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Value>,
    /// The `Mcp-Session-Id` of the exchange (for stdio: one id per wrapped process).
    pub session_id: Option<String>,
    /// The server, as its `initialize` answer named it.
    pub server: Option<McpServer>,
    /// `protocolVersion` of an `initialize` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
    /// The resource URI of a `resources/read`, the prompt name of a `prompts/get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Admins only (null for viewers): `params.arguments` of a `tools/call` or `prompts/get`.
    pub arguments: Option<Value>,
    /// Admins only (null for viewers): the text parts of a `tools/call` result.
    pub result_text: Option<String>,
    /// Admins only: `structuredContent` of a `tools/call` result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<Value>,
    /// Admins only: the JSON-RPC `result` of any other method, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The tool reported a failure (`isError: true`): the call's status is `failed`.
    pub is_error: bool,
    /// A JSON-RPC error answer: the call's status is `failed`.
    pub error: Option<JsonRpcError>,
    /// JSON-RPC messages in the request (more than 1 for a batch).
    pub request_messages: u32,
    /// JSON-RPC messages in the response (notifications and server requests included).
    pub response_messages: u32,
    /// Methods of the notifications and requests the server sent in the response, at most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_messages: Vec<String>,
    /// `client_to_server` or `server_to_client`; absent on calls stored before it was
    /// recorded, which were all the client's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The requests the server sent in the response, at most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_requests: Vec<McpServerRequest>,
    /// The names of the tools a `tools/list` answer offered, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools_offered: Vec<String>,
}

impl McpExchange {
    /// The exchange as `admin` may see it: its content for admins only.
    pub fn of(exchange: record::McpExchange, admin: bool) -> McpExchange {
        let record::McpExchange {
            transport,
            method,
            request_id,
            session_id,
            server,
            protocol_version,
            tool,
            target,
            arguments,
            result_text,
            structured_content,
            result,
            is_error,
            error,
            request_messages,
            response_messages,
            server_messages,
            direction,
            server_requests,
            tools_offered,
        } = exchange;
        McpExchange {
            transport,
            method,
            request_id,
            session_id,
            server: server.map(McpServer::of),
            protocol_version,
            tool,
            target,
            arguments: arguments.filter(|_| admin),
            result_text: result_text.filter(|_| admin),
            structured_content: structured_content.filter(|_| admin),
            result: result.filter(|_| admin),
            is_error,
            error: error.map(JsonRpcError::of),
            request_messages,
            response_messages,
            server_messages,
            direction,
            server_requests: server_requests
                .into_iter()
                .map(McpServerRequest::of)
                .collect(),
            tools_offered,
        }
    }
}

/// A request the MCP server sent the client inside a response stream.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct McpServerRequest {
    /// Its JSON-RPC id, as sent (the client's answer carries it back).
    pub id: Value,
    /// Its JSON-RPC method.
    pub method: String,
}

impl McpServerRequest {
    pub fn of(request: record::McpServerRequest) -> McpServerRequest {
        let record::McpServerRequest { id, method } = request;
        McpServerRequest { id, method }
    }
}

/// An MCP server as its `initialize` answer names it (`serverInfo`).
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct McpServer {
    /// The server's name.
    pub name: String,
    /// The server's version.
    pub version: Option<String>,
}

impl McpServer {
    pub fn of(server: record::McpServer) -> McpServer {
        let record::McpServer { name, version } = server;
        McpServer { name, version }
    }
}

/// A JSON-RPC error object.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct JsonRpcError {
    /// The JSON-RPC error code.
    pub code: i64,
    /// The error's message, as sent.
    pub message: String,
}

impl JsonRpcError {
    pub fn of(error: record::JsonRpcError) -> JsonRpcError {
        let record::JsonRpcError { code, message } = error;
        JsonRpcError { code, message }
    }
}
