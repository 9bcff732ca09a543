//! Exchanges llmtap did not forward itself but is told of: the stdio MCP exchanges
//! `llmtap mcp -- COMMAND` sees (`POST /api/v1/ingest/mcp` on the read API listener).
//!
//! A report becomes a `FinishedCall` of kind `mcp` on the capture log's queue, the
//! same path a forwarded call takes, so it is redacted, journaled, parsed, grouped and
//! stored like one. Admission follows the proxy's backlog rule; what a report may
//! carry is bounded (`MAX_REPORT_BYTES`, then the capture cap per body).

use crate::capture::{CallFacts, FinishedCall, Outcome};
use crate::forward::ProxyState;
use crate::headers;
use crate::ids::new_id;
use crate::record::ProviderKind;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The largest report body the API reads; a larger one is refused (413).
pub const MAX_REPORT_BYTES: usize = 8 << 20;

/// The provider name a wrapped server is recorded under when the report names none.
pub const DEFAULT_STDIO_SERVER: &str = "stdio";

/// One stdio MCP exchange as `llmtap mcp` reports it. Grouping and metadata travel as
/// the usual `x-llmtap-*` headers of the report request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpReport {
    /// The name the server is recorded under (the call's provider): letters, digits,
    /// `-`, `_` and `.`, at most 64 bytes.
    pub server: String,
    /// The wrapper's id for the server process (the exchange's MCP session).
    pub session_id: String,
    /// When the client's request line was read, in µs since the Unix epoch.
    pub started_at_us: u64,
    /// Until the server's answer line (or the server's exit), in µs.
    pub duration_us: u64,
    /// The JSON-RPC line that started the exchange, without its line break: the
    /// client's, or the server's when `from_server`.
    pub request: String,
    /// The answering side's lines for this exchange, joined by "\n": for a client
    /// request, what the server sent for it (progress, logging) and then its answer;
    /// for a server request, the client's answer. Empty for a notification.
    #[serde(default)]
    pub response: String,
    /// The server started the exchange (a request the client answers, such as
    /// `sampling/createMessage` or `roots/list`, or a notification).
    #[serde(default)]
    pub from_server: bool,
    /// Set when the server exited (or closed its output) before answering.
    #[serde(default)]
    pub server_exited: bool,
}

/// Why a report was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("{0}")]
    Invalid(String),
    /// The capture backlog is full (`on_backlog` = reject): try again later.
    #[error("llmtap cannot record more calls until its store catches up; retry shortly")]
    BacklogFull,
}

/// Puts a reported stdio MCP exchange on the capture path; returns its call id.
/// `headers` are the report request's (its `x-llmtap-*` metadata); `tenant`, when the
/// API token is confined to one, overrides any tenant the headers name.
pub fn mcp_exchange(
    state: &ProxyState,
    report: McpReport,
    mut headers: HeaderMap,
    tenant: Option<&str>,
    client_ip: Option<String>,
) -> Result<String, IngestError> {
    let server = if report.server.is_empty() {
        DEFAULT_STDIO_SERVER.to_string()
    } else {
        report.server
    };
    if server.len() > 64
        || !server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(IngestError::Invalid(
            "server: use letters, digits, '-', '_' and '.', at most 64 bytes".into(),
        ));
    }
    let session = HeaderValue::from_str(&report.session_id)
        .ok()
        .filter(|_| !report.session_id.is_empty() && report.session_id.len() <= 128)
        .ok_or_else(|| IngestError::Invalid("session_id: 1 to 128 visible characters".into()))?;
    let mut meta = headers::take_llmtap_headers(&mut headers)
        .map_err(|e| IngestError::Invalid(e.to_string()))?;
    if let Some(tenant) = tenant {
        meta.metadata.tenant = Some(tenant.to_string());
    }
    headers::scope_session_to_tenant(&mut meta);
    if crate::forward::backlog_full(state) {
        match state.config.on_backlog {
            crate::config::OnBacklog::Reject => {
                crate::metrics::Metrics::add(&state.metrics.rejected_backlog);
                return Err(IngestError::BacklogFull);
            }
            crate::config::OnBacklog::Pass => {
                crate::metrics::Metrics::add(&state.metrics.passed_uncaptured);
                return Ok(String::new());
            }
        }
    }
    let started_at_us = report.started_at_us;
    let invocation_id = match &meta.invocation_id {
        Some(id) => headers::tenant_scoped(id, meta.metadata.tenant.as_deref()),
        None => new_id("i_", started_at_us),
    };
    let cap = state.config.max_body_bytes;
    let capture = |text: String| {
        let mut c = state.sink.capture();
        c.push(&Bytes::from(text), cap);
        c
    };
    let mut request_headers = HeaderMap::new();
    request_headers.insert(crate::parse::mcp::SESSION_HEADER, session);
    if report.from_server {
        request_headers.insert(
            crate::parse::mcp::FROM_SERVER_HEADER,
            HeaderValue::from_static("server"),
        );
    }
    let latency = Duration::from_micros(report.duration_us);
    let outcome = if report.server_exited {
        Outcome::UpstreamError {
            message: "the MCP server exited before answering".into(),
        }
    } else {
        Outcome::Completed
    };
    let delivered = report.response.len() as u64;
    let call_id = new_id("c_", started_at_us);
    let call = Box::new(FinishedCall {
        facts: CallFacts {
            id: call_id.clone(),
            invocation_id,
            // Tool traffic: never a round.
            arrival_round: 0,
            started_at_us,
            latency,
            first_byte: (!report.response.is_empty()).then_some(latency),
            provider: server,
            price_as: ProviderKind::Mcp.as_str().to_string(),
            kind: ProviderKind::Mcp,
            method: crate::parse::mcp::STDIO_METHOD.to_string(),
            rest_path: String::new(),
            upstream_host: "stdio".to_string(),
            http_status: None,
            outcome,
            chunk_times: Vec::new(),
            meta,
            client_ip,
            user_agent: headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            delivered_bytes: delivered,
            notes: Vec::new(),
        },
        query: None,
        request_headers,
        response_headers: HeaderMap::new(),
        request_body: capture(report.request),
        response_body: capture(report.response),
        injected_include_usage: false,
    });
    state.sink.send(call);
    Ok(call_id)
}
