//! Stored records → OTLP spans, following the OpenTelemetry GenAI semantic
//! conventions (see `otel/mod.rs` for the version). Pure: no clock, no I/O.
//!
//! Every id is derived from llmtap's own ids (SHA-256, truncated), so the live
//! export and a later `llmtap otel export` replay of the same records produce the
//! same trace and span ids, and children can name their `invoke_agent` parent
//! before that span is emitted.
//!
//! Shape of one agent run: an `invoke_agent {agent}` span (parent: the agent's own
//! span when its first call carried a W3C `traceparent`, else a root span), with one
//! client inference span per call (`{operation} {model}`) and one `execute_tool
//! {name}` span per tool call whose result came back in the next round (the gap
//! between the two rounds; the same join as the read API's invocation view).

use crate::record::{CallRecord, CallStatus, Endpoint, InvocationRecord, Message, ToolCall};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Longest message-content attribute exported (when content export is on).
pub const MAX_CONTENT_ATTRIBUTE: usize = 64 << 10;

/// What a span builder needs beyond the record.
#[derive(Debug, Clone, Default)]
pub struct SpanOptions {
    /// Export system instructions and input/output messages (opt-in).
    pub capture_content: bool,
    /// Provider name → upstream port, for `server.port` when the host has none.
    pub provider_ports: BTreeMap<String, u16>,
}

/// The trace an invocation's spans belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The agent's span, from the first call's `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// The agent's `tracestate`, carried on every span.
    pub trace_state: String,
    /// W3C trace flags (sampled bit) of the agent's context; 1 when llmtap starts the trace.
    pub flags: u8,
    /// The `invoke_agent` span's id, derived from the invocation id.
    pub invocation_span_id: [u8; 8],
}

/// A parsed W3C `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids and version `ff` are invalid.
pub fn parse_traceparent(text: &str) -> Option<TraceParent> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") || hex_bytes::<1>(version).is_none()
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = hex_bytes::<16>(trace)?;
    let span_id = hex_bytes::<8>(span)?;
    let flags = hex_bytes::<1>(flags)?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        span_id,
        flags,
    })
}

fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn digest(parts: &[&str]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn id8(parts: &[&str]) -> [u8; 8] {
    let d = digest(parts);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    if out == [0; 8] {
        out[7] = 1;
    }
    out
}

pub fn call_span_id(call_id: &str) -> [u8; 8] {
    id8(&["llmtap.call", call_id])
}

pub fn invocation_span_id(invocation_id: &str) -> [u8; 8] {
    id8(&["llmtap.invocation", invocation_id])
}

pub fn tool_span_id(result_call_id: &str, tool_call_id: &str) -> [u8; 8] {
    id8(&["llmtap.tool", result_call_id, tool_call_id])
}

/// The trace id llmtap gives a run the agent sent no `traceparent` for.
pub fn derived_trace_id(invocation_id: &str) -> [u8; 16] {
    let d = digest(&["llmtap.trace", invocation_id]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    if out == [0; 16] {
        out[15] = 1;
    }
    out
}

fn call_traceparent(call: &CallRecord) -> Option<TraceParent> {
    parse_traceparent(call.request_headers.get("traceparent")?)
}

/// The trace of an invocation, decided by its first call: the agent's trace when
/// that call carried a `traceparent`, else one derived from the invocation id.
pub fn trace_context(invocation_id: &str, first_call: Option<&CallRecord>) -> TraceContext {
    let parent = first_call.and_then(call_traceparent);
    let trace_state = first_call
        .and_then(|c| c.request_headers.get("tracestate"))
        .filter(|_| parent.is_some())
        .map(|s| s.chars().take(512).collect())
        .unwrap_or_default();
    TraceContext {
        trace_id: parent.map_or_else(|| derived_trace_id(invocation_id), |p| p.trace_id),
        parent_span_id: parent.map(|p| p.span_id),
        trace_state,
        flags: parent.map_or(1, |p| p.flags),
        invocation_span_id: invocation_span_id(invocation_id),
    }
}

/// `gen_ai.operation.name` for an API, `None` for calls that are not inference.
pub fn operation_name(endpoint: Option<Endpoint>) -> Option<&'static str> {
    Some(match endpoint? {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => "chat",
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => "generate_content",
        Endpoint::Embeddings | Endpoint::Embed => "embeddings",
        Endpoint::Other => return None,
    })
}

/// `gen_ai.provider.name`: the conventions' well-known value for providers that
/// have one, else llmtap's provider name (a custom value, as the conventions allow).
pub fn provider_name(provider: &str) -> &str {
    match provider {
        "gemini" => "gcp.gemini",
        "mistral" => "mistral_ai",
        "azure" => "azure.ai.openai",
        "xai" => "x_ai",
        other => other,
    }
}

/// `server.address` and `server.port` from the upstream authority.
pub fn server_address(call: &CallRecord, options: &SpanOptions) -> (String, Option<u16>) {
    let host = call.upstream_host.as_str();
    // An IPv6 literal keeps its brackets off; a trailing `:digits` is the port.
    if let Some((h, p)) = host.rsplit_once(':') {
        if let (Ok(port), false) = (p.parse::<u16>(), h.ends_with(':')) {
            return (h.trim_matches(['[', ']']).to_string(), Some(port));
        }
    }
    (
        host.to_string(),
        options.provider_ports.get(&call.provider).copied(),
    )
}

/// `error.type` for a call that failed: the provider's error type, else the HTTP
/// status, else llmtap's status (`timeout`, `canceled`, ...).
pub fn error_type(call: &CallRecord) -> Option<String> {
    let status = call.status?;
    if status == CallStatus::Success {
        return None;
    }
    if let Some(t) = call.error.as_ref().and_then(|e| e.error_type.clone()) {
        return Some(t);
    }
    match call.http_status {
        Some(code) if code >= 400 => Some(code.to_string()),
        _ => Some(status.as_str().to_string()),
    }
}

/// The response id: top-level `id` (OpenAI, Anthropic), `responseId` (Gemini), or
/// the same inside the first stream events (`message.id`, `response.id`).
pub fn response_id(call: &CallRecord) -> Option<String> {
    let body = call.response_body.as_deref()?;
    let pick = |v: &Value| -> Option<String> {
        for pointer in ["/id", "/responseId", "/message/id", "/response/id"] {
            if let Some(s) = v.pointer(pointer).and_then(Value::as_str) {
                if !s.is_empty() && s.len() <= 256 {
                    return Some(s.to_string());
                }
            }
        }
        None
    };
    if !call.stream {
        return serde_json::from_str::<Value>(body)
            .ok()
            .as_ref()
            .and_then(pick);
    }
    // Streams: the first few `data:` lines (bounded), skipping `[DONE]`.
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .take(8)
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find_map(|v| pick(&v))
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        key_strindex: 0,
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

fn kv_f64(key: &str, value: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(value))
}

fn kv_strs(key: &str, values: &[String]) -> KeyValue {
    kv(
        key,
        any_value::Value::ArrayValue(ArrayValue {
            values: values
                .iter()
                .map(|v| AnyValue {
                    value: Some(any_value::Value::StringValue(v.clone())),
                })
                .collect(),
        }),
    )
}

fn u64_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn us_to_ns(us: u64) -> u64 {
    us.saturating_mul(1000)
}

fn call_end_us(call: &CallRecord) -> u64 {
    call.started_at_us + (call.latency_ms.max(0.0) * 1000.0) as u64
}

/// The session id as the agent sent it: llmtap stores a tenant's ids as
/// `id@tenant` (so tenants never share one); `gen_ai.conversation.id` carries the
/// agent's own id, to match the agent's telemetry (`llmtap.tenant` says whose).
pub fn client_session_id(stored: &str, tenant: Option<&str>) -> String {
    tenant
        .and_then(|t| stored.strip_suffix(t)?.strip_suffix('@'))
        .unwrap_or(stored)
        .to_string()
}

/// `llmtap.prompt.name` and `llmtap.prompt.version` from `name@version`.
fn prompt_parts(prompt: &str) -> (&str, Option<&str>) {
    match prompt.rsplit_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => (name, Some(version)),
        _ => (prompt, None),
    }
}

/// The request parameters the conventions name, from the parsed request view.
fn request_params(params: &BTreeMap<String, Value>, attrs: &mut Vec<KeyValue>) {
    let int = |keys: &[&str]| keys.iter().find_map(|k| params.get(*k)?.as_i64());
    let float = |keys: &[&str]| keys.iter().find_map(|k| params.get(*k)?.as_f64());
    if let Some(v) = int(&[
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "maxOutputTokens",
    ]) {
        attrs.push(kv_int("gen_ai.request.max_tokens", v));
    }
    for (attr, keys) in [
        ("gen_ai.request.temperature", &["temperature"][..]),
        ("gen_ai.request.top_p", &["top_p", "topP"][..]),
        ("gen_ai.request.top_k", &["top_k", "topK"][..]),
        (
            "gen_ai.request.frequency_penalty",
            &["frequency_penalty", "frequencyPenalty"][..],
        ),
        (
            "gen_ai.request.presence_penalty",
            &["presence_penalty", "presencePenalty"][..],
        ),
    ] {
        if let Some(v) = float(keys) {
            attrs.push(kv_f64(attr, v));
        }
    }
    if let Some(v) = int(&["seed"]) {
        attrs.push(kv_int("gen_ai.request.seed", v));
    }
    if let Some(n) = int(&["n", "candidateCount"]).filter(|n| *n != 1) {
        attrs.push(kv_int("gen_ai.request.choice.count", n));
    }
    let stops: Vec<String> = ["stop", "stop_sequences", "stopSequences"]
        .iter()
        .find_map(|k| params.get(*k))
        .map(|v| match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        })
        .unwrap_or_default();
    if !stops.is_empty() {
        attrs.push(kv_strs("gen_ai.request.stop_sequences", &stops));
    }
}

fn truncated(mut text: String) -> String {
    if text.len() > MAX_CONTENT_ATTRIBUTE {
        let mut cut = MAX_CONTENT_ATTRIBUTE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

fn tool_call_part(tc: &ToolCall) -> Value {
    json!({"type": "tool_call", "id": tc.id, "name": tc.name, "arguments": tc.arguments})
}

/// A message in the conventions' `gen_ai.input.messages` shape (role, parts).
fn message_json(m: &Message) -> Value {
    let mut parts = Vec::new();
    if m.role == "tool" {
        parts.push(json!({"type": "tool_call_response", "id": m.tool_call_id, "response": m.text}));
    } else if let Some(text) = &m.text {
        parts.push(json!({"type": "text", "content": text}));
    }
    parts.extend(m.tool_calls.iter().map(tool_call_part));
    json!({"role": m.role, "parts": parts})
}

/// The opt-in content attributes: system instructions, input and output messages.
fn content_attributes(call: &CallRecord, attrs: &mut Vec<KeyValue>) {
    if let Some(request) = &call.request {
        if let Some(system) = &request.system {
            let v = json!([{"type": "text", "content": system}]);
            attrs.push(kv_str(
                "gen_ai.system_instructions",
                truncated(v.to_string()),
            ));
        }
        let input: Vec<Value> = request.messages.iter().map(message_json).collect();
        if !input.is_empty() {
            attrs.push(kv_str(
                "gen_ai.input.messages",
                truncated(Value::Array(input).to_string()),
            ));
        }
    }
    if let Some(response) = &call.response {
        let mut parts = Vec::new();
        if let Some(text) = &response.text {
            parts.push(json!({"type": "text", "content": text}));
        }
        parts.extend(response.tool_calls.iter().map(tool_call_part));
        if !parts.is_empty() {
            let out =
                json!([{"role": "assistant", "parts": parts, "finish_reason": call.stop_reason}]);
            attrs.push(kv_str("gen_ai.output.messages", truncated(out.to_string())));
        }
    }
}

/// llmtap's own attributes of a call (`llmtap.` prefix).
fn llmtap_call_attributes(call: &CallRecord, attrs: &mut Vec<KeyValue>) {
    attrs.push(kv_str("llmtap.call.id", call.id.clone()));
    attrs.push(kv_str("llmtap.invocation.id", call.invocation_id.clone()));
    attrs.push(kv_int("llmtap.round", i64::from(call.round)));
    if crate::agent_loop::is_llm(call) {
        // The attempt within the round (`agent_loop`): 2 and up are retries.
        attrs.push(kv_int("llmtap.attempt", i64::from(call.retry) + 1));
    }
    attrs.push(kv_str("llmtap.provider", call.provider.clone()));
    if let Some(status) = call.status {
        attrs.push(kv_str("llmtap.status", status.as_str()));
    }
    if let Some(cost) = call.cost_usd {
        attrs.push(kv_f64("llmtap.cost_usd", cost));
    }
    if let Some(ttft) = call.ttft_ms {
        attrs.push(kv_f64("llmtap.ttft_ms", ttft));
    }
    if let Some(rl) = &call.rate_limit {
        for (name, window) in [
            ("requests", &rl.requests),
            ("tokens", &rl.tokens),
            ("input_tokens", &rl.input_tokens),
            ("output_tokens", &rl.output_tokens),
        ] {
            if let Some(remaining) = window.as_ref().and_then(|w| w.remaining) {
                attrs.push(kv_int(
                    &format!("llmtap.ratelimit.{name}.remaining"),
                    u64_i64(remaining),
                ));
            }
        }
    }
    metadata_attributes(
        call.metadata.agent.as_deref(),
        call.metadata.tenant.as_deref(),
        call.metadata.trigger.as_deref(),
        call.metadata.prompt.as_deref(),
        attrs,
    );
}

fn metadata_attributes(
    agent: Option<&str>,
    tenant: Option<&str>,
    trigger: Option<&str>,
    prompt: Option<&str>,
    attrs: &mut Vec<KeyValue>,
) {
    if let Some(agent) = agent {
        attrs.push(kv_str("llmtap.agent", agent));
    }
    if let Some(tenant) = tenant {
        attrs.push(kv_str("llmtap.tenant", tenant));
    }
    if let Some(trigger) = trigger {
        attrs.push(kv_str("llmtap.trigger", trigger));
    }
    if let Some(prompt) = prompt {
        let (name, version) = prompt_parts(prompt);
        attrs.push(kv_str("llmtap.prompt.name", name));
        if let Some(version) = version {
            attrs.push(kv_str("llmtap.prompt.version", version));
        }
    }
}

fn status_of(error: Option<&str>) -> Option<Status> {
    error.map(|e| Status {
        message: e.to_string(),
        code: status::StatusCode::Error as i32,
    })
}

/// Span flags: the W3C trace flags, plus whether the parent is remote (the
/// agent's span, from its `traceparent`) or local (llmtap's `invoke_agent` span).
fn base_span(
    ctx: &TraceContext,
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    remote_parent: bool,
) -> Span {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    Span {
        trace_id: ctx.trace_id.to_vec(),
        span_id: span_id.to_vec(),
        trace_state: ctx.trace_state.clone(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(ctx.flags) | HAS_IS_REMOTE | if remote_parent { IS_REMOTE } else { 0 },
        ..Span::default()
    }
}

/// The span of one call: a GenAI client inference span, or an HTTP client span
/// for calls that are not inference (kind `http`, unknown endpoints).
pub fn call_span(call: &CallRecord, ctx: &TraceContext, options: &SpanOptions) -> Span {
    let mut s = base_span(
        ctx,
        call_span_id(&call.id),
        Some(ctx.invocation_span_id),
        false,
    );
    s.kind = span::SpanKind::Client as i32;
    s.start_time_unix_nano = us_to_ns(call.started_at_us);
    s.end_time_unix_nano = us_to_ns(call_end_us(call));
    let (address, port) = server_address(call, options);
    let error = error_type(call);
    let mut attrs = Vec::with_capacity(32);
    match operation_name(call.endpoint).filter(|_| crate::record::is_round_kind(&call.kind)) {
        Some(operation) => {
            let model = call.model.as_deref().or(call.response_model.as_deref());
            s.name = match model {
                Some(model) => format!("{operation} {model}"),
                None => operation.to_string(),
            };
            attrs.push(kv_str("gen_ai.operation.name", operation));
            attrs.push(kv_str(
                "gen_ai.provider.name",
                provider_name(&call.provider),
            ));
            if let Some(model) = &call.model {
                attrs.push(kv_str("gen_ai.request.model", model.clone()));
            }
            if let Some(model) = &call.response_model {
                attrs.push(kv_str("gen_ai.response.model", model.clone()));
            }
            if let Some(id) = response_id(call) {
                attrs.push(kv_str("gen_ai.response.id", id));
            }
            if let Some(reason) = &call.stop_reason {
                attrs.push(kv_strs(
                    "gen_ai.response.finish_reasons",
                    std::slice::from_ref(reason),
                ));
            }
            let u = &call.usage;
            for (key, value) in [
                ("gen_ai.usage.input_tokens", u.input_tokens),
                ("gen_ai.usage.output_tokens", u.output_tokens),
                ("gen_ai.usage.cache_read.input_tokens", u.cache_read_tokens),
                (
                    "gen_ai.usage.cache_creation.input_tokens",
                    u.cache_creation_tokens,
                ),
            ] {
                if let Some(v) = value {
                    attrs.push(kv_int(key, u64_i64(v)));
                }
            }
            if let Some(request) = &call.request {
                request_params(&request.params, &mut attrs);
            }
            if let Some(session) = &call.metadata.session_id {
                let id = client_session_id(session, call.metadata.tenant.as_deref());
                attrs.push(kv_str("gen_ai.conversation.id", id));
            }
            if let Some(agent) = &call.metadata.agent {
                attrs.push(kv_str("gen_ai.agent.name", agent.clone()));
            }
            if options.capture_content {
                content_attributes(call, &mut attrs);
            }
        }
        None if call.mcp.is_some() => {
            if let Some(mcp) = &call.mcp {
                mcp_attributes(call, mcp, options, &mut s, &mut attrs);
            }
        }
        None => {
            s.name = call.method.clone();
            attrs.push(kv_str("http.request.method", call.method.clone()));
            if let Some(code) = call.http_status {
                attrs.push(kv_int("http.response.status_code", i64::from(code)));
            }
            // The path without its query: queries can carry keys even after redaction.
            let path = call.path.split('?').next().unwrap_or_default();
            attrs.push(kv_str("url.path", path));
        }
    }
    attrs.push(kv_str("server.address", address));
    if let Some(port) = port {
        attrs.push(kv_int("server.port", i64::from(port)));
    }
    if let Some(e) = &error {
        attrs.push(kv_str("error.type", e.clone()));
    }
    llmtap_call_attributes(call, &mut attrs);
    s.attributes = attrs;
    s.status = status_of(error.as_deref());
    // A call the agent sent from another span of its own is linked to that span.
    if let Some(tp) = call_traceparent(call) {
        if ctx.parent_span_id != Some(tp.span_id) || ctx.trace_id != tp.trace_id {
            s.links.push(span::Link {
                trace_id: tp.trace_id.to_vec(),
                span_id: tp.span_id.to_vec(),
                flags: u32::from(tp.flags) | 0x300,
                ..span::Link::default()
            });
        }
    }
    s
}

/// An MCP exchange's span: `execute_tool {tool}` (internal, as the GenAI conventions
/// name tool execution) for a `tools/call`, with the MCP call's own timing; a client
/// span named by the JSON-RPC method for the others.
fn mcp_attributes(
    call: &CallRecord,
    mcp: &crate::record::McpExchange,
    options: &SpanOptions,
    s: &mut Span,
    attrs: &mut Vec<KeyValue>,
) {
    let method = mcp.method.clone().unwrap_or_else(|| call.method.clone());
    match (&mcp.tool, mcp.method.as_deref()) {
        (Some(tool), Some("tools/call")) => {
            s.name = format!("execute_tool {tool}");
            s.kind = span::SpanKind::Internal as i32;
            attrs.push(kv_str("gen_ai.operation.name", "execute_tool"));
            attrs.push(kv_str("gen_ai.tool.name", tool.clone()));
            attrs.push(kv_str("gen_ai.tool.type", "extension"));
            if options.capture_content {
                if let Some(arguments) = &mcp.arguments {
                    attrs.push(kv_str(
                        "gen_ai.tool.call.arguments",
                        truncated(arguments.to_string()),
                    ));
                }
                if let Some(result) = &mcp.result_text {
                    attrs.push(kv_str("gen_ai.tool.call.result", truncated(result.clone())));
                }
            }
        }
        _ => s.name = method.clone(),
    }
    attrs.push(kv_str("mcp.method.name", method));
    if let Some(session) = &mcp.session_id {
        attrs.push(kv_str("mcp.session.id", session.clone()));
    }
    if let Some(version) = &mcp.protocol_version {
        attrs.push(kv_str("mcp.protocol.version", version.clone()));
    }
    if let Some(server) = &mcp.server {
        attrs.push(kv_str("llmtap.mcp.server.name", server.name.clone()));
        if let Some(version) = &server.version {
            attrs.push(kv_str("llmtap.mcp.server.version", version.clone()));
        }
    }
    attrs.push(kv_str(
        "network.transport",
        if mcp.transport == "stdio" {
            "pipe"
        } else {
            "tcp"
        },
    ));
    if let Some(e) = &mcp.error {
        attrs.push(kv_int("rpc.jsonrpc.error_code", e.code));
        attrs.push(kv_str("rpc.jsonrpc.error_message", e.message.clone()));
    }
    if let Some(code) = call.http_status {
        attrs.push(kv_int("http.response.status_code", i64::from(code)));
    }
}

/// The tool of an MCP `tools/call` (whose own span times the tool).
pub fn mcp_tool_name(call: &CallRecord) -> Option<&str> {
    let mcp = call.mcp.as_ref()?;
    (mcp.method.as_deref() == Some("tools/call"))
        .then_some(mcp.tool.as_deref())
        .flatten()
}

/// The gaps no MCP `tools/call` of the run already spans: the MCP call's own
/// `execute_tool` span has the real timing, so the gap's estimate for the same tool
/// is left out (one gap per MCP call of that name). `mcp_tools` are the tools called
/// over MCP since the previous round; it is emptied.
pub fn gaps_not_spanned(gaps: Vec<ToolGap>, mcp_tools: &mut Vec<String>) -> Vec<ToolGap> {
    let out = gaps
        .into_iter()
        .filter(|g| match mcp_tools.iter().position(|t| *t == g.name) {
            Some(i) => {
                mcp_tools.remove(i);
                false
            }
            None => true,
        })
        .collect();
    mcp_tools.clear();
    out
}

/// A tool call of one round answered in the next: the gap between the two.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolGap {
    pub tool_call_id: String,
    pub name: String,
    pub start_us: u64,
    pub end_us: u64,
    pub call_round: u32,
    pub result_round: u32,
    pub result_call_id: String,
    /// The arguments the model produced (exported only with content on).
    pub arguments: Value,
    pub result: Option<String>,
}

/// What of a round the next round's tool join needs (kept by the live exporter).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundTools {
    pub round: u32,
    pub ended_us: u64,
    pub tool_calls: Vec<ToolCall>,
}

impl RoundTools {
    /// Arguments are kept only when content is exported (open runs stay small).
    pub fn of(call: &CallRecord, keep_arguments: bool) -> RoundTools {
        let tool_calls = call.response.as_ref().map_or_else(Vec::new, |r| {
            r.tool_calls
                .iter()
                .map(|tc| ToolCall {
                    id: tc.id.clone(),
                    name: tc.name.clone(),
                    arguments: if keep_arguments {
                        tc.arguments.clone()
                    } else {
                        Value::Null
                    },
                })
                .collect()
        });
        RoundTools {
            round: call.round,
            ended_us: call_end_us(call),
            tool_calls,
        }
    }
}

/// Tool calls of `previous` whose results `next` sends back (matched by tool-call
/// id, as the read API's invocation view joins them).
pub fn tool_gaps(previous: &RoundTools, next: &CallRecord) -> Vec<ToolGap> {
    let Some(request) = &next.request else {
        return Vec::new();
    };
    previous
        .tool_calls
        .iter()
        .filter_map(|tc| {
            let id = tc.id.as_deref()?;
            let result = request
                .messages
                .iter()
                .find(|m| m.tool_call_id.as_deref() == Some(id))?;
            Some(ToolGap {
                tool_call_id: id.to_string(),
                name: tc.name.clone(),
                start_us: previous.ended_us,
                end_us: next.started_at_us.max(previous.ended_us),
                call_round: previous.round,
                result_round: next.round,
                result_call_id: next.id.clone(),
                arguments: tc.arguments.clone(),
                result: result.text.clone(),
            })
        })
        .collect()
}

/// The `execute_tool {name}` span of a tool gap.
pub fn tool_span(gap: &ToolGap, ctx: &TraceContext, options: &SpanOptions) -> Span {
    let mut s = base_span(
        ctx,
        tool_span_id(&gap.result_call_id, &gap.tool_call_id),
        Some(ctx.invocation_span_id),
        false,
    );
    s.name = format!("execute_tool {}", gap.name);
    s.kind = span::SpanKind::Internal as i32;
    s.start_time_unix_nano = us_to_ns(gap.start_us);
    s.end_time_unix_nano = us_to_ns(gap.end_us);
    let mut attrs = vec![
        kv_str("gen_ai.operation.name", "execute_tool"),
        kv_str("gen_ai.tool.name", gap.name.clone()),
        kv_str("gen_ai.tool.call.id", gap.tool_call_id.clone()),
        kv_str("gen_ai.tool.type", "function"),
        kv_int("llmtap.tool.call_round", i64::from(gap.call_round)),
        kv_int("llmtap.tool.result_round", i64::from(gap.result_round)),
        kv_f64(
            "llmtap.tool.duration_ms",
            gap.end_us.saturating_sub(gap.start_us) as f64 / 1000.0,
        ),
    ];
    if options.capture_content {
        let arguments = match &gap.arguments {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        attrs.push(kv_str("gen_ai.tool.call.arguments", truncated(arguments)));
        if let Some(result) = &gap.result {
            attrs.push(kv_str("gen_ai.tool.call.result", truncated(result.clone())));
        }
    }
    s.attributes = attrs;
    s
}

/// The `invoke_agent {agent}` span of a run, from its rollup.
pub fn invocation_span(inv: &InvocationRecord, ctx: &TraceContext) -> Span {
    let remote = ctx.parent_span_id.is_some();
    let mut s = base_span(ctx, ctx.invocation_span_id, ctx.parent_span_id, remote);
    s.name = match &inv.agent {
        Some(agent) => format!("invoke_agent {agent}"),
        None => "invoke_agent".to_string(),
    };
    s.kind = span::SpanKind::Internal as i32;
    s.start_time_unix_nano = us_to_ns(inv.started_at_us);
    s.end_time_unix_nano = us_to_ns(inv.ended_at_us.max(inv.started_at_us));
    let mut attrs = vec![kv_str("gen_ai.operation.name", "invoke_agent")];
    if let [provider] = inv.providers.as_slice() {
        attrs.push(kv_str("gen_ai.provider.name", provider_name(provider)));
    }
    if let Some(agent) = &inv.agent {
        attrs.push(kv_str("gen_ai.agent.name", agent.clone()));
    }
    if let Some(session) = &inv.session_id {
        let id = client_session_id(session, inv.tenant.as_deref());
        attrs.push(kv_str("gen_ai.conversation.id", id));
    }
    if let [model] = inv.models.as_slice() {
        attrs.push(kv_str("gen_ai.request.model", model.clone()));
    }
    if let Some(v) = inv.usage.input_tokens {
        attrs.push(kv_int("gen_ai.usage.input_tokens", u64_i64(v)));
    }
    if let Some(v) = inv.usage.output_tokens {
        attrs.push(kv_int("gen_ai.usage.output_tokens", u64_i64(v)));
    }
    let error = match inv.status {
        Some(CallStatus::Success) | None => None,
        Some(other) => Some(other.as_str().to_string()),
    };
    if let Some(e) = &error {
        attrs.push(kv_str("error.type", e.clone()));
    }
    attrs.push(kv_str("llmtap.invocation.id", inv.id.clone()));
    attrs.push(kv_int("llmtap.rounds", i64::from(inv.rounds)));
    let outcome = crate::agent_loop::outcome(inv);
    attrs.push(kv_int("llmtap.retries", i64::from(outcome.retries)));
    attrs.push(kv_int(
        "llmtap.tool_calls",
        i64::from(inv.agent_loop.tool_calls),
    ));
    attrs.push(kv_str("llmtap.outcome", outcome.text));
    if let Some(cost) = inv.cost_usd {
        attrs.push(kv_f64("llmtap.cost_usd", cost));
    }
    if !inv.models.is_empty() {
        attrs.push(kv_strs("llmtap.models", &inv.models));
    }
    metadata_attributes(
        inv.agent.as_deref(),
        inv.tenant.as_deref(),
        inv.trigger.as_deref(),
        None,
        &mut attrs,
    );
    s.attributes = attrs;
    s.status = status_of(error.as_deref());
    s
}

/// Every span of one stored run (for replay): the run, its calls in round order,
/// and the tool gaps between them.
pub fn invocation_spans(
    inv: &InvocationRecord,
    calls: &[CallRecord],
    options: &SpanOptions,
) -> Vec<Span> {
    let ctx = trace_context(&inv.id, calls.first());
    let mut spans = Vec::with_capacity(calls.len() * 2 + 1);
    spans.push(invocation_span(inv, &ctx));
    let mut previous: Option<RoundTools> = None;
    let mut mcp_tools: Vec<String> = Vec::new();
    for call in calls {
        if let Some(tool) = mcp_tool_name(call) {
            mcp_tools.push(tool.to_string());
        }
        let round = crate::record::is_round_kind(&call.kind);
        if let Some(prev) = previous.as_ref().filter(|_| round) {
            spans.extend(
                gaps_not_spanned(tool_gaps(prev, call), &mut mcp_tools)
                    .iter()
                    .map(|g| tool_span(g, &ctx, options)),
            );
        }
        spans.push(call_span(call, &ctx, options));
        // Tool traffic between rounds is not the round whose tool calls the next answers.
        if round || previous.is_none() {
            previous = Some(RoundTools::of(call, options.capture_content));
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ErrorInfo, LimitWindow, RateLimit, RequestView, ResponseView, Usage};

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn text(span: &Span, key: &str) -> Option<String> {
        match attr(span, key)? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn int(span: &Span, key: &str) -> Option<i64> {
        match attr(span, key)? {
            any_value::Value::IntValue(v) => Some(*v),
            _ => None,
        }
    }

    fn call(id: &str, round: u32, start_us: u64) -> CallRecord {
        CallRecord {
            id: id.into(),
            invocation_id: "inv1".into(),
            round,
            started_at_us: start_us,
            latency_ms: 100.0,
            ttft_ms: Some(40.0),
            provider: "openai".into(),
            kind: "openai".into(),
            endpoint: Some(Endpoint::ChatCompletions),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            upstream_host: "api.openai.com".into(),
            http_status: Some(200),
            status: Some(CallStatus::Success),
            model: Some("gpt-4o-mini".into()),
            response_model: Some("gpt-4o-mini-2024-07-18".into()),
            usage: Usage {
                input_tokens: Some(120),
                output_tokens: Some(30),
                cache_read_tokens: Some(100),
                ..Usage::default()
            },
            cost_usd: Some(0.0012),
            stop_reason: Some("tool_calls".into()),
            response_body: Some(r#"{"id":"chatcmpl-9","object":"chat.completion"}"#.into()),
            request: Some(RequestView {
                system: Some("be brief".into()),
                messages: vec![Message {
                    role: "user".into(),
                    text: Some("hi".into()),
                    ..Message::default()
                }],
                params: [
                    ("max_tokens".to_string(), json!(256)),
                    ("temperature".to_string(), json!(0.2)),
                ]
                .into_iter()
                .collect(),
                ..RequestView::default()
            }),
            rate_limit: Some(RateLimit {
                requests: Some(LimitWindow {
                    remaining: Some(99),
                    ..LimitWindow::default()
                }),
                ..RateLimit::default()
            }),
            ..CallRecord::default()
        }
    }

    fn options() -> SpanOptions {
        SpanOptions {
            capture_content: false,
            provider_ports: [("openai".to_string(), 443)].into_iter().collect(),
        }
    }

    #[test]
    fn traceparent_parsing() {
        let tp =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.trace_id[0], 0x4b);
        assert_eq!(tp.span_id[7], 0xb7);
        assert_eq!(tp.flags, 1);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn inference_span_follows_the_conventions() {
        let c = call("c_1", 1, 1_000_000);
        let ctx = trace_context("inv1", Some(&c));
        let s = call_span(&c, &ctx, &options());
        assert_eq!(s.name, "chat gpt-4o-mini");
        assert_eq!(s.kind, span::SpanKind::Client as i32);
        assert_eq!(s.parent_span_id, invocation_span_id("inv1").to_vec());
        assert_eq!(s.trace_id, derived_trace_id("inv1").to_vec());
        assert_eq!(s.start_time_unix_nano, 1_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_100_000_000);
        assert_eq!(text(&s, "gen_ai.operation.name").as_deref(), Some("chat"));
        assert_eq!(text(&s, "gen_ai.provider.name").as_deref(), Some("openai"));
        assert_eq!(
            text(&s, "gen_ai.response.model").as_deref(),
            Some("gpt-4o-mini-2024-07-18")
        );
        assert_eq!(
            text(&s, "gen_ai.response.id").as_deref(),
            Some("chatcmpl-9")
        );
        assert_eq!(int(&s, "gen_ai.usage.input_tokens"), Some(120));
        assert_eq!(int(&s, "gen_ai.usage.cache_read.input_tokens"), Some(100));
        assert_eq!(int(&s, "gen_ai.usage.cache_creation.input_tokens"), None);
        assert_eq!(int(&s, "gen_ai.request.max_tokens"), Some(256));
        assert_eq!(int(&s, "server.port"), Some(443));
        assert_eq!(int(&s, "llmtap.ratelimit.requests.remaining"), Some(99));
        assert_eq!(int(&s, "llmtap.round"), Some(1));
        assert!(attr(&s, "error.type").is_none());
        assert!(s.status.is_none());
        // Content is opt-in.
        assert!(text(&s, "gen_ai.input.messages").is_none());
        assert!(text(&s, "gen_ai.system_instructions").is_none());
        let with_content = call_span(
            &c,
            &ctx,
            &SpanOptions {
                capture_content: true,
                ..options()
            },
        );
        let input = text(&with_content, "gen_ai.input.messages").unwrap();
        let parsed: Value = serde_json::from_str(&input).unwrap();
        assert_eq!(parsed[0]["parts"][0]["content"], "hi");
    }

    #[test]
    fn failures_carry_error_type_and_status() {
        let mut c = call("c_1", 1, 0);
        c.status = Some(CallStatus::RateLimited);
        c.http_status = Some(429);
        let s = call_span(&c, &trace_context("inv1", None), &options());
        assert_eq!(text(&s, "error.type").as_deref(), Some("429"));
        assert_eq!(s.status.unwrap().code, status::StatusCode::Error as i32);
        c.error = Some(ErrorInfo {
            error_type: Some("overloaded_error".into()),
            message: None,
        });
        let s = call_span(&c, &trace_context("inv1", None), &options());
        assert_eq!(text(&s, "error.type").as_deref(), Some("overloaded_error"));
    }

    #[test]
    fn traceparent_makes_the_run_a_child_of_the_agent_span() {
        let mut c = call("c_1", 1, 0);
        c.request_headers.insert(
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        let ctx = trace_context("inv1", Some(&c));
        let inv = crate::record::roll_up(None, &c);
        let run = invocation_span(&inv, &ctx);
        assert_eq!(
            run.parent_span_id,
            hex_bytes::<8>("00f067aa0ba902b7").unwrap()
        );
        assert_eq!(
            run.trace_id,
            hex_bytes::<16>("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        let s = call_span(&c, &ctx, &options());
        assert_eq!(s.trace_id, run.trace_id);
        assert_eq!(s.parent_span_id, run.span_id);
        assert!(s.links.is_empty());
        // A later round sent from another agent span links to it.
        let mut c2 = call("c_2", 2, 500_000);
        c2.request_headers.insert(
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01".into(),
        );
        let s2 = call_span(&c2, &ctx, &options());
        assert_eq!(s2.parent_span_id, run.span_id);
        assert_eq!(s2.links.len(), 1);
    }

    #[test]
    fn tool_calls_joined_to_results_become_gap_spans() {
        let mut first = call("c_1", 1, 0);
        first.response = Some(ResponseView {
            tool_calls: vec![
                ToolCall {
                    id: Some("call_a".into()),
                    name: "multiply".into(),
                    arguments: json!("{\"a\":2}"),
                },
                ToolCall {
                    id: Some("call_unanswered".into()),
                    name: "search".into(),
                    arguments: json!({}),
                },
            ],
            ..ResponseView::default()
        });
        let mut second = call("c_2", 2, 400_000);
        second.request.as_mut().unwrap().messages.push(Message {
            role: "tool".into(),
            text: Some("4".into()),
            tool_call_id: Some("call_a".into()),
            ..Message::default()
        });
        let inv = crate::record::roll_up(Some(crate::record::roll_up(None, &first)), &second);
        let spans = invocation_spans(&inv, &[first, second], &options());
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "invoke_agent",
                "chat gpt-4o-mini",
                "execute_tool multiply",
                "chat gpt-4o-mini"
            ]
        );
        let tool = &spans[2];
        assert_eq!(tool.start_time_unix_nano, 100_000_000);
        assert_eq!(tool.end_time_unix_nano, 400_000_000);
        assert_eq!(text(tool, "gen_ai.tool.call.id").as_deref(), Some("call_a"));
        assert_eq!(tool.parent_span_id, spans[0].span_id);
        assert!(text(tool, "gen_ai.tool.call.arguments").is_none());
        // Ids are deterministic: a replay gives the same spans.
        let again = tool_span_id("c_2", "call_a");
        assert_eq!(tool.span_id, again.to_vec());
        assert!(spans[0].parent_span_id.is_empty());
    }

    #[test]
    fn an_mcp_tool_call_is_the_tool_span_with_its_own_timing() {
        let mut first = call("c_1", 1, 0);
        first.response = Some(ResponseView {
            tool_calls: vec![ToolCall {
                id: Some("call_a".into()),
                name: "weather".into(),
                arguments: json!({"city": "Oslo"}),
            }],
            ..ResponseView::default()
        });
        let mut mcp = call("c_m", 0, 150_000);
        mcp.kind = "mcp".into();
        mcp.endpoint = None;
        mcp.latency_ms = 120.0;
        mcp.status = Some(CallStatus::Failed);
        mcp.error = Some(ErrorInfo {
            error_type: Some("tool_error".into()),
            message: None,
        });
        mcp.mcp = Some(crate::record::McpExchange {
            transport: "http".into(),
            method: Some("tools/call".into()),
            tool: Some("weather".into()),
            session_id: Some("s1".into()),
            is_error: true,
            ..crate::record::McpExchange::default()
        });
        let mut second = call("c_2", 2, 400_000);
        second.request.as_mut().unwrap().messages.push(Message {
            role: "tool".into(),
            text: Some("rain".into()),
            tool_call_id: Some("call_a".into()),
            ..Message::default()
        });
        let inv = crate::record::roll_up(None, &first);
        let spans = invocation_spans(&inv, &[first, mcp, second], &options());
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        // The MCP call's span replaces the gap's estimate for the same tool.
        assert_eq!(
            names,
            [
                "invoke_agent",
                "chat gpt-4o-mini",
                "execute_tool weather",
                "chat gpt-4o-mini"
            ]
        );
        let tool = &spans[2];
        assert_eq!(tool.start_time_unix_nano, 150_000_000);
        assert_eq!(tool.end_time_unix_nano, 270_000_000);
        assert_eq!(
            text(tool, "gen_ai.operation.name").as_deref(),
            Some("execute_tool")
        );
        assert_eq!(text(tool, "mcp.method.name").as_deref(), Some("tools/call"));
        assert_eq!(text(tool, "mcp.session.id").as_deref(), Some("s1"));
        assert_eq!(text(tool, "error.type").as_deref(), Some("tool_error"));
        assert_eq!(
            tool.status.as_ref().map(|s| s.code),
            Some(status::StatusCode::Error as i32)
        );
    }

    #[test]
    fn http_calls_are_http_client_spans_without_query() {
        let mut c = call("c_1", 1, 0);
        c.kind = "http".into();
        c.endpoint = Some(Endpoint::Other);
        c.path = "/search?key=[redacted]&q=x".into();
        c.upstream_host = "127.0.0.1:9000".into();
        let s = call_span(&c, &trace_context("inv1", None), &options());
        assert_eq!(s.name, "POST");
        assert_eq!(text(&s, "url.path").as_deref(), Some("/search"));
        assert_eq!(text(&s, "server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(int(&s, "server.port"), Some(9000));
        assert!(text(&s, "gen_ai.operation.name").is_none());
    }

    #[test]
    fn conversation_id_is_the_agents_own() {
        assert_eq!(client_session_id("sess-9@acme", Some("acme")), "sess-9");
        assert_eq!(
            client_session_id("sess-9@acme", Some("other")),
            "sess-9@acme"
        );
        assert_eq!(client_session_id("sess-9", None), "sess-9");
    }

    #[test]
    fn prompt_name_and_version_split() {
        assert_eq!(prompt_parts("summarise@v3"), ("summarise", Some("v3")));
        assert_eq!(prompt_parts("plain"), ("plain", None));
        assert_eq!(prompt_parts("@v1"), ("@v1", None));
    }

    #[test]
    fn stream_response_ids() {
        let mut c = call("c_1", 1, 0);
        c.stream = true;
        c.response_body = Some(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\n\n"
                .into(),
        );
        assert_eq!(response_id(&c).as_deref(), Some("msg_1"));
    }
}
