//! MCP (Model Context Protocol) exchanges: JSON-RPC 2.0 read out of the captured
//! bodies of one streamable HTTP exchange (a POST answered with JSON, with an SSE
//! stream or with 202, the GET event stream, a DELETE) or of one stdio request and
//! its response.
//!
//! Pure: bytes in, `McpExchange` out. The request may be one message or a batch
//! (an array); the exchange is described by its first request (else its first
//! notification), and the answer to it is found by JSON-RPC id among the response's
//! messages, whatever else the server sent first (progress, logging, its own
//! requests).
//!
//! Either side may start an exchange. Over streamable HTTP the server's requests and
//! notifications travel inside a response stream (a POST's SSE answer, the GET event
//! stream) and are listed there (`server_messages`, `server_requests`); the client
//! answers each request in a POST of its own, which is an exchange `server_to_client`
//! whose method is read from the answer's shape. Over stdio `llmtap mcp` reports a
//! server request with the client's answer, and a server notification, as exchanges
//! `server_to_client` (`McpInput::from_server`).

use super::sse::SseParser;
use crate::record::{
    JsonRpcError, McpExchange, McpServer, McpServerRequest, MCP_CLIENT_TO_SERVER,
    MCP_SERVER_TO_CLIENT,
};
use serde_json::Value;

/// Server messages listed per exchange at most (`McpExchange::server_messages`,
/// `server_requests`).
const MAX_SERVER_MESSAGES: usize = 32;
/// Tool names a `tools/list` answer is read for at most (`McpExchange::tools_offered`).
const MAX_TOOLS_OFFERED: usize = 1000;

/// Where 2026-07-28 requests name their protocol version and answers their server.
const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
const SERVER_INFO_META: &str = "io.modelcontextprotocol/serverInfo";

/// The streamable HTTP transport's session header (also set by `llmtap mcp` on the
/// exchanges it reports, one id per wrapped process).
pub const SESSION_HEADER: &str = "mcp-session-id";

/// The `method` of a call reported by `llmtap mcp` (a stdio exchange has no HTTP
/// method); it is how a stored call says which transport it came over.
pub const STDIO_METHOD: &str = "STDIO";

/// `stdio` for exchanges `llmtap mcp` reported, `http` otherwise.
pub fn transport_of(method: &str) -> &'static str {
    if method == STDIO_METHOD {
        "stdio"
    } else {
        "http"
    }
}

/// One captured MCP exchange, bodies decoded.
#[derive(Debug, Clone, Copy)]
pub struct McpInput<'a> {
    /// `http` or `stdio`.
    pub transport: &'a str,
    pub request_body: &'a [u8],
    pub response_content_type: Option<&'a str>,
    pub response_body: &'a [u8],
    /// `Mcp-Session-Id`: of the response (set by an `initialize` answer), else of
    /// the request.
    pub session_id: Option<&'a str>,
    /// The request body is the server's message and the response the client's answer
    /// (a stdio exchange the server started, `FROM_SERVER_HEADER`).
    pub from_server: bool,
}

/// The header `llmtap mcp`'s reports put on a stdio exchange the server started
/// (its request or notification, and the client's answer).
pub const FROM_SERVER_HEADER: &str = "llmtap-mcp-from";

/// Reads one exchange. Never fails: bodies that are not JSON-RPC give an exchange
/// with no method and no answer, and `notes` says why.
pub fn parse_mcp(input: &McpInput<'_>) -> (McpExchange, Vec<String>) {
    let mut notes = Vec::new();
    let mut out = McpExchange {
        transport: input.transport.to_string(),
        session_id: input.session_id.map(str::to_string),
        ..McpExchange::default()
    };
    let requests = messages_of_json(input.request_body, "request", &mut notes);
    out.request_messages = requests.len() as u32;
    let primary = requests
        .iter()
        .find(|m| m.get("method").is_some() && m.get("id").is_some())
        .or_else(|| requests.iter().find(|m| m.get("method").is_some()));
    // A POST that carries only answers: the client answering the server's requests.
    let client_answer = match primary {
        None => requests.iter().find(|m| {
            m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
        }),
        Some(_) => None,
    };
    if let Some(request) = primary {
        read_request(request, &mut out);
    }
    let server_started = input.from_server
        || client_answer.is_some()
        // The GET event stream: no request, only what the server pushes.
        || (requests.is_empty() && !input.response_body.is_empty());
    out.direction = Some(
        if server_started {
            MCP_SERVER_TO_CLIENT
        } else {
            MCP_CLIENT_TO_SERVER
        }
        .to_string(),
    );
    if let Some(answer) = client_answer {
        out.request_id = answer.get("id").cloned();
        out.method = answer
            .get("result")
            .and_then(server_request_answered)
            .map(str::to_string);
        read_answer(answer, &mut out);
    }

    let is_sse = input
        .response_content_type
        .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
    let responses = if is_sse {
        messages_of_sse(input.response_body, &mut notes)
    } else {
        messages_of_json(input.response_body, "response", &mut notes)
    };
    out.response_messages = responses.len() as u32;
    if !input.from_server {
        for message in &responses {
            let Some(method) = message.get("method").and_then(Value::as_str) else {
                continue;
            };
            if out.server_messages.len() < MAX_SERVER_MESSAGES {
                out.server_messages.push(method.to_string());
            }
            if let Some(id) = message.get("id") {
                if out.server_requests.len() < MAX_SERVER_MESSAGES {
                    out.server_requests.push(McpServerRequest {
                        id: id.clone(),
                        method: method.to_string(),
                    });
                }
            }
        }
    }
    let answer = match (&out.request_id, client_answer) {
        (Some(id), None) => responses
            .iter()
            .find(|m| m.get("id") == Some(id) && m.get("method").is_none()),
        _ => None,
    };
    if let Some(answer) = answer {
        read_answer(answer, &mut out);
    } else if out.request_id.is_some() && !input.response_body.is_empty() {
        notes.push("no JSON-RPC answer to the request in the response".into());
    }
    (out, notes)
}

/// The server request a client's answer answers, from the answer's shape (the
/// request itself went out in another exchange): `roots/list`, `elicitation/create`,
/// `sampling/createMessage`, or `ping` (an empty result). `None` when it says nothing.
fn server_request_answered(result: &Value) -> Option<&'static str> {
    let has = |key: &str| result.get(key).is_some();
    if has("roots") {
        Some("roots/list")
    } else if has("action") {
        Some("elicitation/create")
    } else if has("role") && has("content") && has("model") {
        Some("sampling/createMessage")
    } else if result.as_object().is_some_and(|o| o.is_empty()) {
        Some("ping")
    } else {
        None
    }
}

/// Reads `method`, `id` and the parameters worth naming.
fn read_request(request: &Value, out: &mut McpExchange) {
    let method = request.get("method").and_then(Value::as_str);
    out.method = method.map(str::to_string);
    out.request_id = request.get("id").cloned();
    let params = request.get("params");
    let param = |key: &str| params.and_then(|p| p.get(key));
    // From protocol 2026-07-28 on there is no `initialize`: each request names its
    // version in `_meta`.
    out.protocol_version = param("_meta")
        .and_then(|m| m.get(PROTOCOL_VERSION_META))
        .and_then(Value::as_str)
        .map(str::to_string);
    match method {
        Some("tools/call") => {
            out.tool = param("name").and_then(Value::as_str).map(str::to_string);
            out.arguments = param("arguments").cloned();
        }
        Some("prompts/get") => {
            out.target = param("name").and_then(Value::as_str).map(str::to_string);
            out.arguments = param("arguments").cloned();
        }
        Some("resources/read") | Some("resources/subscribe") | Some("resources/unsubscribe") => {
            out.target = param("uri").and_then(Value::as_str).map(str::to_string);
        }
        _ => {}
    }
}

/// Reads the answer to the request: an error, or a result (tool content for
/// `tools/call`, server info for `initialize`, the result as sent otherwise).
fn read_answer(answer: &Value, out: &mut McpExchange) {
    if let Some(error) = answer.get("error") {
        out.error = Some(JsonRpcError {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
        return;
    }
    let Some(result) = answer.get("result") else {
        return;
    };
    // `initialize` names the server in `serverInfo`; from 2026-07-28 on, any answer
    // may name it in its `_meta`.
    out.server = result
        .get("serverInfo")
        .or_else(|| result.get("_meta").and_then(|m| m.get(SERVER_INFO_META)))
        .and_then(|info| {
            Some(McpServer {
                name: info.get("name")?.as_str()?.to_string(),
                version: info
                    .get("version")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        });
    match out.method.as_deref() {
        Some("tools/call") => {
            out.is_error = result.get("isError").and_then(Value::as_bool) == Some(true);
            out.structured_content = result.get("structuredContent").cloned();
            let texts: Vec<&str> = result
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect();
            if !texts.is_empty() {
                out.result_text = Some(texts.join("\n"));
            }
        }
        Some("tools/list") => {
            out.tools_offered = result
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|tool| tool.get("name").and_then(Value::as_str))
                .take(MAX_TOOLS_OFFERED)
                .map(str::to_string)
                .collect();
            out.result = Some(result.clone());
        }
        Some("initialize") => {
            out.protocol_version = result
                .get("protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            out.result = Some(result.clone());
        }
        _ => out.result = Some(result.clone()),
    }
}

/// The messages of a JSON body: one object, or the objects of a batch; else one
/// message (or batch) per line, as a stdio server writes them.
fn messages_of_json(body: &[u8], part: &str, notes: &mut Vec<String>) -> Vec<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let whole = serde_json::from_slice::<Value>(body);
    let values = match whole {
        Ok(value) => vec![value],
        Err(e) => {
            let lines: Vec<Result<Value, _>> = body
                .split(|b| *b == b'\n')
                .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                .map(serde_json::from_slice::<Value>)
                .collect();
            if lines.len() < 2 || lines.iter().any(Result::is_err) {
                notes.push(format!("{part} body is not JSON: {e}"));
                return Vec::new();
            }
            lines.into_iter().flatten().collect()
        }
    };
    let mut out = Vec::new();
    for value in values {
        match value {
            Value::Array(items) => out.extend(items.into_iter().filter(Value::is_object)),
            value @ Value::Object(_) => out.push(value),
            _ => notes.push(format!("{part} body is JSON but not JSON-RPC")),
        }
    }
    out
}

/// The messages of an SSE body: each event's data is one message (or a batch).
fn messages_of_sse(body: &[u8], notes: &mut Vec<String>) -> Vec<Value> {
    let mut parser = SseParser::new();
    let mut events = parser.push(body);
    events.extend(parser.finish());
    let mut out = Vec::new();
    let mut unreadable = 0;
    for event in events {
        if event.data.trim().is_empty() {
            // Priming events and keep-alives carry no message.
            continue;
        }
        match serde_json::from_str::<Value>(&event.data) {
            Ok(Value::Array(items)) => out.extend(items.into_iter().filter(Value::is_object)),
            Ok(value @ Value::Object(_)) => out.push(value),
            _ => unreadable += 1,
        }
    }
    if unreadable > 0 {
        notes.push(format!("{unreadable} SSE event(s) are not JSON-RPC"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(request: &str, content_type: &str, response: &str) -> McpExchange {
        let (exchange, _notes) = parse_mcp(&McpInput {
            transport: "http",
            request_body: request.as_bytes(),
            response_content_type: Some(content_type),
            response_body: response.as_bytes(),
            session_id: Some("s1"),
            from_server: false,
        });
        exchange
    }

    #[test]
    fn a_tool_call_answered_with_json() {
        let e = check(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#,
            "application/json",
            r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"3"}],"structuredContent":{"sum":3},"isError":false}}"#,
        );
        assert_eq!(e.method.as_deref(), Some("tools/call"));
        assert_eq!(e.tool.as_deref(), Some("add"));
        assert_eq!(e.arguments, Some(json!({"a": 1, "b": 2})));
        assert_eq!(e.result_text.as_deref(), Some("3"));
        assert_eq!(e.structured_content, Some(json!({"sum": 3})));
        assert_eq!(e.request_id, Some(json!(3)));
        assert_eq!(e.session_id.as_deref(), Some("s1"));
        assert!(!e.failed());
    }

    #[test]
    fn a_tool_error_in_an_sse_answer_after_progress_is_a_failure() {
        let e = check(
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"boom"}}"#,
            "text/event-stream",
            "id: 0\nretry: 3000\ndata: \n\n\
             data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n\
             data: {\"jsonrpc\":\"2.0\",\"id\":\"a\",\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"no\"},{\"type\":\"text\",\"text\":\"disk\"}],\"isError\":true}}\n\n",
        );
        assert!(e.is_error);
        assert!(e.failed());
        assert_eq!(e.result_text.as_deref(), Some("no\ndisk"));
        assert_eq!(e.server_messages, ["notifications/progress"]);
        assert_eq!(e.response_messages, 2);
    }

    #[test]
    fn a_json_rpc_error_is_a_failure() {
        let e = check(
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"nope","arguments":{}}}"#,
            "application/json",
            r#"{"jsonrpc":"2.0","id":9,"error":{"code":-32602,"message":"tool not found"}}"#,
        );
        assert_eq!(
            e.error,
            Some(JsonRpcError {
                code: -32602,
                message: "tool not found".into()
            })
        );
        assert!(e.failed());
    }

    #[test]
    fn initialize_names_the_server() {
        let e = check(
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
            "application/json",
            r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"calc","version":"0.3.1"}}}"#,
        );
        assert_eq!(
            e.server,
            Some(McpServer {
                name: "calc".into(),
                version: Some("0.3.1".into())
            })
        );
        assert_eq!(e.protocol_version.as_deref(), Some("2025-06-18"));
    }

    #[test]
    fn who_started_an_exchange() {
        // A client's request: the server's requests in its SSE answer are listed.
        let e = check(
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"ask"}}"#,
            "text/event-stream",
            "data: {\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"roots/list\"}\n\n\
             data: {\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{\"content\":[]}}\n\n",
        );
        assert_eq!(e.direction.as_deref(), Some(MCP_CLIENT_TO_SERVER));
        assert_eq!(
            e.server_requests,
            [McpServerRequest {
                id: json!(0),
                method: "roots/list".into()
            }]
        );
        // The client's answer to it, POSTed on its own: the server's exchange.
        for (result, method) in [
            (r#"{"roots":[]}"#, Some("roots/list")),
            (r#"{"action":"decline"}"#, Some("elicitation/create")),
            (
                r#"{"role":"assistant","content":{"type":"text","text":"hi"},"model":"m"}"#,
                Some("sampling/createMessage"),
            ),
            ("{}", Some("ping")),
            (r#"{"other":1}"#, None),
        ] {
            let e = check(
                &format!(r#"{{"jsonrpc":"2.0","id":0,"result":{result}}}"#),
                "",
                "",
            );
            assert_eq!(e.direction.as_deref(), Some(MCP_SERVER_TO_CLIENT));
            assert_eq!(e.method.as_deref(), method, "{result}");
            assert_eq!(e.request_id, Some(json!(0)));
            assert!(e.result.is_some());
        }
        let refused = check(
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"no"}}"#,
            "",
            "",
        );
        assert!(refused.failed());
        // A stdio server request with the client's answer.
        let (e, _) = parse_mcp(&McpInput {
            transport: "stdio",
            request_body:
                br#"{"jsonrpc":"2.0","id":3,"method":"sampling/createMessage","params":{}}"#,
            response_content_type: None,
            response_body: br#"{"jsonrpc":"2.0","id":3,"result":{"model":"m"}}"#,
            session_id: None,
            from_server: true,
        });
        assert_eq!(e.direction.as_deref(), Some(MCP_SERVER_TO_CLIENT));
        assert_eq!(e.method.as_deref(), Some("sampling/createMessage"));
        assert_eq!(e.result, Some(json!({"model": "m"})));
        assert!(e.server_messages.is_empty(), "the answer is the client's");
        // A tools/list answer names its tools.
        let e = check(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            "application/json",
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"a"},{"name":"b"}]}}"#,
        );
        assert_eq!(e.tools_offered, ["a", "b"]);
    }

    #[test]
    fn notifications_batches_and_streams() {
        // A notification answered 202 with no body.
        let e = check(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            "",
            "",
        );
        assert_eq!(e.method.as_deref(), Some("notifications/initialized"));
        assert_eq!(e.request_id, None);
        assert!(!e.failed());
        // A batch: described by its first request, answered by id in a JSON array.
        let e = check(
            r#"[{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
            "application/json",
            r#"[{"jsonrpc":"2.0","id":2,"result":{"tools":[]}},{"jsonrpc":"2.0","id":1,"result":{"contents":[]}}]"#,
        );
        assert_eq!(e.method.as_deref(), Some("resources/read"));
        assert_eq!(e.target.as_deref(), Some("file:///a"));
        assert_eq!(e.result, Some(json!({"contents": []})));
        assert_eq!((e.request_messages, e.response_messages), (3, 2));
        // The GET event stream: no request, the server's messages listed.
        let e = check(
            "",
            "text/event-stream",
            ": keep-alive\n\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n",
        );
        assert_eq!(e.method, None);
        assert_eq!(e.server_messages, ["notifications/tools/list_changed"]);
        // A stdio answer: the server's lines, a progress notification before it.
        let (e, _) = parse_mcp(&McpInput {
            transport: "stdio",
            request_body: br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t"}}"#,
            response_content_type: None,
            response_body: b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}}",
            session_id: None,
            from_server: false,
        });
        assert_eq!(e.result_text.as_deref(), Some("ok"));
        assert_eq!(e.server_messages, ["notifications/progress"]);
        // Not JSON at all: nothing read, nothing failed.
        let (e, notes) = parse_mcp(&McpInput {
            transport: "http",
            request_body: b"hello",
            response_content_type: None,
            response_body: b"<html>",
            session_id: None,
            from_server: false,
        });
        assert_eq!(e.method, None);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
