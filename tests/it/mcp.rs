//! MCP capture with real peers: the official Rust SDK (`rmcp`) as server and client,
//! over streamable HTTP through a `kind = "mcp"` provider (JSON answers and SSE
//! answers with sessions) and over stdio through `llmtap mcp --`.

use super::mcp_tools::TestTools;
use super::util::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmtap::record::{CallRecord, CallStatus};
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::{
    session::local::LocalSessionManager, StreamableHttpServerConfig, StreamableHttpService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Serves `TestTools` over streamable HTTP at `http://addr/mcp` (hyper, no framework).
pub async fn serve_tools(config: StreamableHttpServerConfig) -> SocketAddr {
    let service: StreamableHttpService<TestTools, LocalSessionManager> =
        StreamableHttpService::new(|| Ok(TestTools::new()), Default::default(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Stateless, answering with `application/json` when it can.
pub fn json_answers() -> StreamableHttpServerConfig {
    StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
}

/// An llmtap with the tool server as provider `tools` (`kind = "mcp"`).
pub async fn llmtap_before(
    server: SocketAddr,
    dir: &TempDir,
    extra: &str,
) -> llmtap::server::Running {
    start_llmtap(mcp_config(server, dir, extra)).await
}

fn mcp_config(server: SocketAddr, dir: &TempDir, extra: &str) -> llmtap::config::Config {
    let toml = format!(
        "{}{extra}",
        provider_toml("tools", "mcp", &format!("http://{server}"))
    );
    test_config(dir.path(), &toml)
}

/// The same llmtap recording into a fresh database of the tests' PostgreSQL.
async fn llmtap_on_postgres(
    server: SocketAddr,
    dir: &TempDir,
) -> (llmtap::server::Running, super::pg::TestDb) {
    let db = super::pg::fresh_db("mcp").await;
    let mut config = mcp_config(server, dir, "");
    let url = llmtap::config::RawConfig::from_toml(&format!("[store]\nurl = \"{}\"", db.url()))
        .unwrap()
        .validate(&Default::default())
        .map(|c| c.engine)
        .unwrap();
    config.engine = url;
    (start_llmtap(config).await, db)
}

/// The streamable HTTP config of an rmcp client reaching `uri`, its calls grouped
/// into `run`.
pub fn transport_config(uri: String, run: &str) -> StreamableHttpClientTransportConfig {
    let mut headers = HashMap::new();
    headers.insert(
        http::HeaderName::from_static("x-llmtap-invocation-id"),
        http::HeaderValue::from_str(run).unwrap(),
    );
    StreamableHttpClientTransportConfig::with_uri(uri).custom_headers(headers)
}

/// An rmcp client through llmtap, its calls grouped into `run`.
pub async fn client_through(
    running: &llmtap::server::Running,
    run: &str,
    version: Option<ProtocolVersion>,
) -> rmcp::service::RunningService<rmcp::RoleClient, ClientConfig> {
    let config = transport_config(format!("http://{}/tools/mcp", running.proxy_addr), run);
    let transport = StreamableHttpClientTransport::from_config(config);
    let mut info = ClientConfig::default();
    if let Some(v) = version {
        info = info.with_protocol_version(v);
    }
    info.serve(transport)
        .await
        .expect("client connects through llmtap")
}

pub fn call(name: &str, arguments: Value) -> CallToolRequestParams {
    let params = CallToolRequestParams::new(name.to_string());
    match arguments {
        Value::Object(map) => params.with_arguments(map),
        _ => params,
    }
}

/// The stored calls of a run, in start order, once `tool_calls` MCP `tools/call`
/// exchanges of it are stored.
pub async fn run_calls(
    running: &llmtap::server::Running,
    run: &str,
    tool_calls: usize,
) -> Vec<CallRecord> {
    for _ in 0..500 {
        let calls = running.store.invocation_calls(run).unwrap_or_default();
        let stored_tool_calls = calls
            .iter()
            .filter(|c| c.mcp.as_ref().is_some_and(|m| m.tool.is_some()))
            .count();
        if stored_tool_calls >= tool_calls {
            let mut full: Vec<CallRecord> = calls
                .iter()
                .map(|c| running.store.get_call(&c.id).unwrap().unwrap())
                .collect();
            full.sort_by_key(|c| c.started_at_us);
            return full;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {run} never had {tool_calls} tool calls");
}

fn tool_call<'a>(calls: &'a [CallRecord], tool: &str) -> &'a CallRecord {
    calls
        .iter()
        .find(|c| c.mcp.as_ref().and_then(|m| m.tool.as_deref()) == Some(tool))
        .unwrap_or_else(|| panic!("no tools/call of {tool} among {calls:#?}"))
}

/// JSON answers: success, `isError`, a JSON-RPC error, a 2 s tool in parallel with a
/// quick one; each a failed or successful tool call with its arguments and result.
#[tokio::test]
async fn mcp_over_http_with_json_answers_records_each_tool_call() {
    let server = serve_tools(json_answers()).await;
    let dir = TempDir::new("mcpjson");
    json_answers_recorded(llmtap_before(server, &dir, "").await).await;
}

/// The same exchanges stored in PostgreSQL read back the same.
#[tokio::test]
async fn mcp_tool_calls_are_stored_in_postgres_too() {
    let server = serve_tools(json_answers()).await;
    let dir = TempDir::new("mcpjsonpg");
    let (running, _db) = llmtap_on_postgres(server, &dir).await;
    json_answers_recorded(running).await;
}

async fn json_answers_recorded(running: llmtap::server::Running) {
    let client = client_through(&running, "run-json", None).await;

    let ok = client
        .call_tool(call("add", json!({"a": 2, "b": 3})))
        .await
        .unwrap();
    assert_eq!(ok.is_error, Some(false).filter(|_| ok.is_error.is_some()));
    let failed = client.call_tool(call("fail", json!({}))).await.unwrap();
    assert_eq!(failed.is_error, Some(true));
    let rejected = client.call_tool(call("reject", json!({}))).await;
    assert!(
        rejected.is_err(),
        "a JSON-RPC error reaches the client as one"
    );
    let started = std::time::Instant::now();
    let (slow, quick) = tokio::join!(
        client.call_tool(call("sleep", json!({"ms": 2000}))),
        client.call_tool(call("add", json!({"a": 40, "b": 2}))),
    );
    slow.unwrap();
    quick.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "calls ran in parallel"
    );
    client.cancel().await.unwrap();

    let calls = run_calls(&running, "run-json", 5).await;
    for c in &calls {
        assert_eq!(c.kind, "mcp");
        assert_eq!(c.round, 0, "MCP exchanges are not rounds");
        assert_eq!(c.provider, "tools");
    }
    let adds: Vec<&CallRecord> = calls
        .iter()
        .filter(|c| c.mcp.as_ref().and_then(|m| m.tool.as_deref()) == Some("add"))
        .collect();
    assert_eq!(adds.len(), 2);
    let add = adds[0].mcp.as_ref().unwrap();
    assert_eq!(adds[0].status, Some(CallStatus::Success));
    assert_eq!(add.method.as_deref(), Some("tools/call"));
    assert_eq!(add.arguments, Some(json!({"a": 2, "b": 3})));
    assert_eq!(add.result_text.as_deref(), Some("5"));
    assert_eq!(add.transport, "http");
    assert_eq!(
        adds[1].mcp.as_ref().unwrap().result_text.as_deref(),
        Some("42")
    );

    let fail = tool_call(&calls, "fail");
    assert_eq!(
        fail.status,
        Some(CallStatus::Failed),
        "isError is a failure"
    );
    let m = fail.mcp.as_ref().unwrap();
    assert!(m.is_error);
    assert_eq!(m.result_text.as_deref(), Some("disk full"));
    assert_eq!(
        fail.error.as_ref().unwrap().error_type.as_deref(),
        Some("tool_error")
    );

    let reject = tool_call(&calls, "reject");
    assert_eq!(
        reject.status,
        Some(CallStatus::Failed),
        "a JSON-RPC error is a failure"
    );
    let e = reject.mcp.as_ref().unwrap().error.clone().unwrap();
    assert_eq!(
        (e.code, e.message.as_str()),
        (-32602, "rejected on purpose")
    );

    let slow = tool_call(&calls, "sleep");
    assert!(slow.latency_ms >= 2000.0, "{}", slow.latency_ms);
    assert_eq!(
        slow.mcp.as_ref().unwrap().result_text.as_deref(),
        Some("slept 2000 ms")
    );
    assert_eq!(slow.status, Some(CallStatus::Success));
    running.shutdown().await.unwrap();
}

/// SSE answers in a session (protocol 2025-11-25): `initialize` names the server and
/// the session, later calls carry both; the GET event stream is forwarded and
/// recorded when it closes.
#[tokio::test]
async fn mcp_over_http_with_sse_answers_keeps_the_session_and_server() {
    let server = serve_tools(StreamableHttpServerConfig::default()).await;
    let dir = TempDir::new("mcpsse");
    let running = llmtap_before(server, &dir, "").await;
    let client = client_through(&running, "run-sse", Some(ProtocolVersion::V_2025_11_25)).await;
    let result = client
        .call_tool(call("weather", json!({"city": "Oslo"})))
        .await
        .unwrap();
    assert_eq!(
        result.content[0].as_text().map(|t| t.text.as_str()),
        Some("sunny in Oslo")
    );
    let failed = client.call_tool(call("fail", json!({}))).await.unwrap();
    assert_eq!(failed.is_error, Some(true));
    client.cancel().await.unwrap();

    let calls = run_calls(&running, "run-sse", 2).await;
    let init = calls
        .iter()
        .find(|c| c.mcp.as_ref().and_then(|m| m.method.as_deref()) == Some("initialize"))
        .expect("initialize recorded");
    let init_mcp = init.mcp.as_ref().unwrap();
    let server_info = init_mcp.server.clone().expect("serverInfo read");
    assert_eq!(server_info.name, "rmcp");
    let session = init_mcp.session_id.clone().expect("Mcp-Session-Id read");
    let weather = tool_call(&calls, "weather");
    assert_eq!(
        weather
            .response_headers
            .get("content-type")
            .map(String::as_str),
        Some("text/event-stream")
    );
    let m = weather.mcp.as_ref().unwrap();
    assert_eq!(m.result_text.as_deref(), Some("sunny in Oslo"));
    assert_eq!(m.session_id.as_deref(), Some(session.as_str()));
    assert_eq!(
        m.server.as_ref(),
        Some(&server_info),
        "the session's server, remembered"
    );
    let fail = tool_call(&calls, "fail");
    assert_eq!(fail.status, Some(CallStatus::Failed));
    // The client's GET event stream (ended by the client: canceled) and its closing
    // DELETE went through too.
    let mut methods = Vec::new();
    for _ in 0..300 {
        methods = running
            .store
            .invocation_calls("run-sse")
            .unwrap()
            .iter()
            .map(|c| c.method.clone())
            .collect::<Vec<_>>();
        if methods.iter().any(|m| m == "GET") && methods.iter().any(|m| m == "DELETE") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(methods.iter().any(|m| m == "GET"), "{methods:?}");
    assert!(methods.iter().any(|m| m == "DELETE"), "{methods:?}");
    running.shutdown().await.unwrap();
}

/// What the client receives is exactly what the server sent, SSE framing included:
/// the same raw request straight to the server and through llmtap gets the same
/// bytes, and llmtap's stored copy is those bytes.
#[tokio::test]
async fn mcp_answers_pass_through_byte_for_byte() {
    let server = serve_tools(StreamableHttpServerConfig::default()).await;
    let dir = TempDir::new("mcpbytes");
    let running = llmtap_before(server, &dir, "").await;
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
    let accept = [("accept", "application/json, text/event-stream")];
    let direct = post_json(server, "/mcp", &accept, init).await;
    let proxied = post_json(running.proxy_addr, "/tools/mcp", &accept, init).await;
    assert_eq!(direct.status, 200);
    assert_eq!(proxied.header("content-type"), Some("text/event-stream"));
    assert!(proxied.header("mcp-session-id").is_some());
    assert_eq!(proxied.body, direct.body, "the SSE answer is unchanged");
    let stored = wait_call(&running, &proxied.call_id()).await;
    assert_eq!(
        stored.response_body.as_deref().map(str::as_bytes),
        Some(&proxied.body[..])
    );
    assert_eq!(
        stored.mcp.as_ref().unwrap().method.as_deref(),
        Some("initialize")
    );

    // A stateless JSON answer.
    let server = serve_tools(json_answers()).await;
    let dir2 = TempDir::new("mcpbytes2");
    let running2 = llmtap_before(server, &dir2, "").await;
    let list = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let headers = [
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ];
    let direct = post_json(server, "/mcp", &headers, list).await;
    let proxied = post_json(running2.proxy_addr, "/tools/mcp", &headers, list).await;
    assert_eq!(direct.status, 200, "{:?}", direct.body);
    assert_eq!(proxied.body, direct.body);
    assert_eq!(
        proxied.header("content-type"),
        direct.header("content-type")
    );
    let stored = wait_call(&running2, &proxied.call_id()).await;
    assert_eq!(
        stored.response_body.as_deref().map(str::as_bytes),
        Some(&proxied.body[..])
    );
    let m = stored.mcp.unwrap();
    assert_eq!(m.method.as_deref(), Some("tools/list"));
    assert!(m.result.unwrap()["tools"].as_array().unwrap().len() >= 5);
    running.shutdown().await.unwrap();
    running2.shutdown().await.unwrap();
}

/// The stdio test server (`examples/mcp_test_server.rs`), which `cargo test` builds
/// with the examples.
fn stdio_test_server() -> std::path::PathBuf {
    let llmtap = std::path::Path::new(env!("CARGO_BIN_EXE_llmtap"));
    let path = llmtap
        .parent()
        .unwrap()
        .join("examples")
        .join("mcp_test_server");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --example mcp_test_server`",
        path.display()
    );
    path
}

/// `llmtap mcp --api … --name calc -- mcp_test_server`, as an MCP client starts it.
fn wrapped_server(api: &str, env: &[(&str, &str)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_llmtap"));
    command
        .args(["mcp", "--api", api, "--name", "calc", "--"])
        .arg(stdio_test_server())
        .env_remove("LLMTAP_API_TOKEN")
        .env_remove("LLMTAP_INVOCATION_ID")
        .env_remove("LLMTAP_SESSION_ID")
        .env_remove("LLMTAP_AGENT");
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// An rmcp client runs the stdio server through `llmtap mcp --`: every exchange is
/// recorded in the run the environment names, with the same failures and durations
/// as over HTTP.
#[tokio::test]
async fn mcp_over_stdio_through_the_wrapper_records_each_exchange() {
    let dir = TempDir::new("mcpstdio");
    let running = start_llmtap(test_config(dir.path(), "")).await;
    let api = format!("http://{}", running.api_addr);
    let command = wrapped_server(
        &api,
        &[
            ("LLMTAP_INVOCATION_ID", "run-stdio"),
            ("LLMTAP_AGENT", "tester"),
            ("LLMTAP_SESSION_ID", "sess-stdio"),
        ],
    );
    let transport = rmcp::transport::TokioChildProcess::new(command).unwrap();
    let client = ClientConfig::default()
        .with_protocol_version(ProtocolVersion::V_2025_11_25)
        .serve(transport)
        .await
        .expect("the wrapped server answers");
    let ok = client
        .call_tool(call("add", json!({"a": 20, "b": 22})))
        .await
        .unwrap();
    assert_eq!(ok.content[0].as_text().map(|t| t.text.as_str()), Some("42"));
    assert_eq!(
        client
            .call_tool(call("fail", json!({})))
            .await
            .unwrap()
            .is_error,
        Some(true)
    );
    assert!(client.call_tool(call("reject", json!({}))).await.is_err());
    let (slow, quick) = tokio::join!(
        client.call_tool(call("sleep", json!({"ms": 2000}))),
        client.call_tool(call("weather", json!({"city": "Bergen"}))),
    );
    slow.unwrap();
    quick.unwrap();
    client.cancel().await.unwrap();

    let calls = run_calls(&running, "run-stdio", 5).await;
    for c in &calls {
        assert_eq!(
            (c.kind.as_str(), c.provider.as_str(), c.round),
            ("mcp", "calc", 0)
        );
        assert_eq!(c.metadata.agent.as_deref(), Some("tester"));
        assert_eq!(c.metadata.session_id.as_deref(), Some("sess-stdio"));
        let m = c.mcp.as_ref().unwrap();
        assert_eq!(m.transport, "stdio");
        assert!(m.session_id.as_deref().unwrap().starts_with("stdio_"));
    }
    let init = calls
        .iter()
        .find(|c| c.mcp.as_ref().unwrap().method.as_deref() == Some("initialize"))
        .expect("initialize recorded");
    assert_eq!(
        init.mcp.as_ref().unwrap().server.as_ref().unwrap().name,
        "rmcp"
    );
    let add = tool_call(&calls, "add");
    assert_eq!(add.status, Some(CallStatus::Success));
    let m = add.mcp.as_ref().unwrap();
    assert_eq!(m.arguments, Some(json!({"a": 20, "b": 22})));
    assert_eq!(m.result_text.as_deref(), Some("42"));
    assert_eq!(
        m.server.as_ref().unwrap().name,
        "rmcp",
        "the session's server"
    );
    assert_eq!(tool_call(&calls, "fail").status, Some(CallStatus::Failed));
    assert!(tool_call(&calls, "fail").mcp.as_ref().unwrap().is_error);
    let reject = tool_call(&calls, "reject");
    assert_eq!(reject.status, Some(CallStatus::Failed));
    assert_eq!(
        reject.mcp.as_ref().unwrap().error.as_ref().unwrap().code,
        -32602
    );
    let slow = tool_call(&calls, "sleep");
    assert!(slow.latency_ms >= 2000.0, "{}", slow.latency_ms);
    assert!(slow.latency_ms < 3000.0, "{}", slow.latency_ms);
    let weather = tool_call(&calls, "weather");
    assert!(
        weather.latency_ms < 1000.0,
        "ran beside the slow one: {}",
        weather.latency_ms
    );
    running.shutdown().await.unwrap();
}

/// Raw lines through the wrapper: the client reads exactly what the server wrote, and
/// with no llmtap to report to the server still works and the wrapper says once that
/// capture is off.
#[tokio::test]
async fn the_stdio_wrapper_passes_bytes_unchanged_and_works_without_llmtap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let input = concat!(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"fail","arguments":{}}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"reject","arguments":{}}}"#,
        "\n",
    );
    async fn run(mut command: tokio::process::Command, input: &str) -> (Vec<u8>, String) {
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        // Read the three answers, then close stdin: the server exits.
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.iter().filter(|b| **b == b'\n').count() < 4 {
            let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf))
                .await
                .expect("the server answers")
                .unwrap();
            assert!(
                n > 0,
                "stdout closed early: {}",
                String::from_utf8_lossy(&out)
            );
            out.extend_from_slice(&buf[..n]);
        }
        drop(stdin);
        let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        out.extend_from_slice(&output.stdout);
        assert!(output.status.success(), "{:?}", output.status);
        (out, String::from_utf8_lossy(&output.stderr).into_owned())
    }
    let (direct, _) = run(tokio::process::Command::new(stdio_test_server()), input).await;
    // Port 9 on loopback: nothing listens.
    let (wrapped, stderr) = run(wrapped_server("http://127.0.0.1:9", &[]), input).await;
    assert_eq!(
        String::from_utf8_lossy(&wrapped),
        String::from_utf8_lossy(&direct)
    );
    assert_eq!(wrapped, direct, "the client reads the server's bytes");
    assert_eq!(stderr.matches("capture is off").count(), 1, "{stderr}");
    assert!(
        stderr.contains("mcp_test_server: ready"),
        "the server's stderr passes: {stderr}"
    );
}

/// The report endpoint takes tokens like the read API, confines a tenant token's
/// reports to its tenant, and bounds what it reads.
#[tokio::test]
async fn the_report_endpoint_is_authenticated_tenant_confined_and_bounded() {
    let sha = llmtap::config::token_sha256_hex;
    let toml = format!(
        "[[api.tokens]]\nname = \"acme-agent\"\nrole = \"viewer\"\nsha256 = \"{}\"\ntenant = \"acme\"\n",
        sha("acme-token")
    );
    let dir = TempDir::new("mcpingest");
    let running = start_llmtap(test_config(dir.path(), &toml)).await;
    let report = json!({
        "server": "calc",
        "session_id": "stdio_x",
        "started_at_us": llmtap::timefmt::now_unix_us(),
        "duration_us": 1500,
        "request": r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":1}}}"#,
        "response": r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"2"}]}}"#,
    })
    .to_string();
    let path = "/api/v1/ingest/mcp";
    let anonymous = post_json(running.api_addr, path, &[], &report).await;
    assert_eq!(anonymous.status, 401);
    let auth = ("authorization", "Bearer acme-token");
    let taken = post_json(
        running.api_addr,
        path,
        &[
            auth,
            ("x-llmtap-tenant", "globex"),
            ("x-llmtap-invocation-id", "run-t"),
        ],
        &report,
    )
    .await;
    assert_eq!(taken.status, 200, "{:?}", taken.body);
    let id = taken.json()["call_id"].as_str().unwrap().to_string();
    let call = wait_call(&running, &id).await;
    assert_eq!(
        call.metadata.tenant.as_deref(),
        Some("acme"),
        "the token's tenant wins"
    );
    assert_eq!(call.invocation_id, "run-t@acme");
    assert_eq!(call.latency_ms, 1.5);
    assert_eq!(call.mcp.as_ref().unwrap().result_text.as_deref(), Some("2"));
    // A viewer reading it back sees the tool, never its arguments or result.
    let seen = send(
        running.api_addr,
        "GET",
        &format!("/api/v1/calls/{id}"),
        &[auth],
        "",
    )
    .await;
    let seen = seen.json();
    assert_eq!(seen["mcp"]["tool"], "add");
    assert!(
        seen["mcp"].get("arguments").is_none_or(Value::is_null),
        "{seen}"
    );
    assert!(
        seen["mcp"].get("result_text").is_none_or(Value::is_null),
        "{seen}"
    );
    assert!(seen["request_body"].is_null());
    // The same in the run's timeline: the tool, its duration and status, no content.
    wait_invocation(&running, "run-t@acme", 0).await;
    let run = send(
        running.api_addr,
        "GET",
        "/api/v1/invocations/run-t",
        &[auth],
        "",
    )
    .await;
    assert_eq!(run.status, 200, "{:?}", run.body);
    let entry = &run.json()["timeline"][0];
    assert_eq!(entry["kind"], "mcp");
    assert_eq!(entry["mcp"]["tool"], "add");
    assert_eq!(entry["duration_ms"], 1.5);
    assert_eq!(entry["status"], "success");
    assert!(entry["mcp"].get("arguments").is_none(), "{entry}");
    assert!(entry["mcp"].get("result_text").is_none(), "{entry}");

    let bad = post_json(running.api_addr, path, &[auth], r#"{"server":"no spaces allowed","session_id":"s","started_at_us":1,"duration_us":1,"request":"{}"}"#).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["type"], "bad_body");
    let huge = "x".repeat(llmtap::ingest::MAX_REPORT_BYTES + 1);
    let too_large = post_json(running.api_addr, path, &[auth], &huge).await;
    assert_eq!(too_large.status, 413);
    running.shutdown().await.unwrap();
}

/// One agent run: the model asks for two tools, the agent calls them on an MCP server
/// through llmtap, and sends their results in the next round. The run shows both
/// tool calls, in order, between the two rounds, with their durations and results, in
/// the read API (which the page and the CLI's `show` read), the CSV export and the
/// OpenTelemetry spans.
#[tokio::test]
async fn an_agent_run_shows_its_mcp_tool_calls_between_the_rounds() {
    const ASKS_FOR_TOOLS: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_w","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}},{"id":"call_t","type":"function","function":{"name":"time","arguments":"{\"city\":\"Oslo\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":10,"total_tokens":30}}"#;
    const ANSWERS: &str = r#"{"id":"y","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Sunny, noon."},"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"completion_tokens":4,"total_tokens":44}}"#;
    let llm = MockUpstream::start(|req| {
        if String::from_utf8_lossy(&req.body).contains("call_w") {
            MockResponse::json(200, ANSWERS)
        } else {
            MockResponse::json(200, ASKS_FOR_TOOLS)
        }
    })
    .await;
    let server = serve_tools(json_answers()).await;
    let dir = TempDir::new("mcpe2e");
    let running = llmtap_before(server, &dir, &provider_toml("llm", "openai", &llm.url())).await;
    let run = [
        ("x-llmtap-invocation-id", "run-e2e"),
        ("x-llmtap-agent", "planner"),
    ];
    let r1 = post_json(
        running.proxy_addr,
        "/llm/v1/chat/completions",
        &run,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Weather and time in Oslo?"}]}"#,
    )
    .await;
    assert_eq!(r1.status, 200);
    let client = client_through(&running, "run-e2e", None).await;
    let weather = client
        .call_tool(call("weather", json!({"city": "Oslo"})))
        .await
        .unwrap();
    let time = client
        .call_tool(call("time", json!({"city": "Oslo"})))
        .await
        .unwrap();
    client.cancel().await.unwrap();
    let text = |r: &rmcp::model::CallToolResult| r.content[0].as_text().unwrap().text.clone();
    let second = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "Weather and time in Oslo?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_w", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
            {"id": "call_t", "type": "function", "function": {"name": "time", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_w", "content": text(&weather)},
        {"role": "tool", "tool_call_id": "call_t", "content": text(&time)}]});
    let r2 = post_json(
        running.proxy_addr,
        "/llm/v1/chat/completions",
        &run,
        &second.to_string(),
    )
    .await;
    assert_eq!(r2.status, 200);
    wait_invocation(&running, "run-e2e", 2).await;
    run_calls(&running, "run-e2e", 2).await;

    let v = api_get(&running, "/api/v1/invocations/run-e2e")
        .await
        .json();
    let steps: Vec<(String, Option<String>)> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "llm" || t["mcp"]["method"] == "tools/call")
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_string(),
                t["mcp"]["tool"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("llm".to_string(), None),
            ("mcp".to_string(), Some("weather".to_string())),
            ("mcp".to_string(), Some("time".to_string())),
            ("llm".to_string(), None),
        ],
        "{v}"
    );
    let tools: Vec<&Value> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["mcp"]["method"] == "tools/call")
        .collect();
    for (t, result) in tools.iter().zip(["sunny in Oslo", "12:00 in Oslo"]) {
        assert_eq!(t["after_round"], 1);
        assert_eq!(t["status"], "success");
        assert!(t["duration_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(t["mcp"]["arguments"], json!({"city": "Oslo"}));
        assert_eq!(t["mcp"]["result_text"], result);
        // Stateless (protocol 2026-07-28): no initialize names the server; the provider does.
        assert_eq!(t["provider"], "tools");
    }
    // The round that asked for them joins each MCP call made in its gap to the tool
    // call it answers, by tool name and arguments (`agent_loop::describe`).
    for (i, t) in tools.iter().enumerate() {
        assert_eq!(
            v["rounds"][0]["tool_calls"][i]["http_call_ids"],
            json!([t["call_id"]]),
            "{v}"
        );
    }
    let gap = &v["gaps"][0];
    assert_eq!(gap["kind"], "tool");
    let joined: Vec<(&str, &str)> = gap["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| Some((t["tool"].as_str()?, t["joined_to"].as_str()?)))
        .collect();
    assert_eq!(joined, [("weather", "call_w"), ("time", "call_t")], "{gap}");
    assert_eq!(v["round_count"], 2);
    // Two tool calls, whatever else the MCP session sent (`agent_loop::is_tool_step`):
    // in the run's loop and in the agent's rollups alike.
    let others = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "mcp" && t["mcp"]["method"] != "tools/call")
        .count();
    assert!(others > 0, "the client's handshake is in the run: {v}");
    assert_eq!(v["tool_calls"], 2, "{v}");
    let listed = api_get(&running, "/api/v1/invocations?limit=5")
        .await
        .json();
    let row = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "run-e2e")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(row["tool_calls"], 2, "{row}");
    // The MCP client names no agent: its calls count under the unnamed one.
    let agents = api_get(&running, "/api/v1/agents").await.json();
    let sum = |field: &str| -> u64 {
        agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a[field].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!((sum("llm_calls"), sum("tool_calls")), (2, 2), "{agents}");

    // CSV: the MCP calls carry their tool.
    let csv = api_get(&running, "/api/v1/calls.csv?provider=tools").await;
    let csv_text = String::from_utf8_lossy(&csv.body);
    assert!(
        csv_text
            .lines()
            .next()
            .unwrap()
            .ends_with("kind,error_type,mcp_method,tool,input"),
        "{csv_text}"
    );
    assert!(csv_text.contains(",mcp,,tools/call,weather,"), "{csv_text}");

    // OpenTelemetry: each MCP tool call is its tool's span, with the MCP timing.
    let inv = invocation(&running, "run-e2e").unwrap();
    let mut calls = run_calls(&running, "run-e2e", 2).await;
    calls.sort_by_key(|c| c.started_at_us);
    let spans = llmtap::otel::spans::invocation_spans(&inv, &calls, &Default::default());
    let tool_spans: Vec<&str> = spans
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| n.starts_with("execute_tool"))
        .collect();
    assert_eq!(tool_spans, ["execute_tool weather", "execute_tool time"]);

    running.shutdown().await.unwrap();
}

/// The server's GET event stream is not cut by the idle timeout that guards response
/// frames: with `idle_timeout_ms = 300` and a server that sends no keep-alives, the
/// stream is still open (not recorded as timed out) after a second of silence, and it
/// ends when the client closes it.
#[tokio::test]
async fn the_mcp_event_stream_outlives_the_idle_timeout() {
    let server = serve_tools(StreamableHttpServerConfig::default().with_sse_keep_alive(None)).await;
    let dir2 = TempDir::new("mcpidle");
    // Lands in the test config's `[server]` table.
    let toml = format!(
        "idle_timeout_ms = 300\n{}",
        provider_toml("tools", "mcp", &format!("http://{server}"))
    );
    let running2 = start_llmtap(test_config(dir2.path(), &toml)).await;
    let client = client_through(&running2, "run-idle", Some(ProtocolVersion::V_2025_11_25)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let get_calls = |running: &llmtap::server::Running| {
        running
            .store
            .invocation_calls("run-idle")
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.method == "GET")
            .collect::<Vec<_>>()
    };
    assert!(get_calls(&running2).is_empty(), "the event stream was cut");
    let result = client
        .call_tool(call("add", json!({"a": 1, "b": 1})))
        .await
        .unwrap();
    assert_eq!(
        result.content[0].as_text().map(|t| t.text.as_str()),
        Some("2")
    );
    client.cancel().await.unwrap();
    let mut gets = Vec::new();
    for _ in 0..300 {
        gets = get_calls(&running2);
        if !gets.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(gets.len(), 1);
    assert_eq!(
        gets[0].status,
        Some(CallStatus::Canceled),
        "closed by the client, not timed out"
    );
    assert!(gets[0].latency_ms >= 1200.0, "{}", gets[0].latency_ms);
    running2.shutdown().await.unwrap();
}

/// An MCP client that answers the server's requests (protocol 2025-11-25): its roots,
/// a sampled message (model `client-model-7`) and an accepted elicitation.
#[derive(Clone)]
struct AnsweringClient;

// Sampling and roots are deprecated from protocol 2026-07-28 on, still what clients
// of 2025-11-25 servers answer.
#[allow(deprecated)]
impl rmcp::ClientHandler for AnsweringClient {
    async fn create_message(
        &self,
        _params: rmcp::model::CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        Ok(serde_json::from_value(json!({
            "role": "assistant",
            "content": {"type": "text", "text": "hi"},
            "model": "client-model-7",
            "stopReason": "endTurn"
        }))
        .unwrap())
    }

    async fn list_roots(
        &self,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, rmcp::ErrorData> {
        Ok(
            serde_json::from_value(json!({"roots": [{"uri": "file:///work", "name": "work"}]}))
                .unwrap(),
        )
    }

    async fn create_elicitation(
        &self,
        _request: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        Ok(
            serde_json::from_value(json!({"action": "accept", "content": {"name": "Ada"}}))
                .unwrap(),
        )
    }

    fn get_info(&self) -> ClientConfig {
        serde_json::from_value(json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}, "roots": {}, "elicitation": {"form": {}}},
            "clientInfo": {"name": "answering-client", "version": "1"}
        }))
        .unwrap()
    }
}

/// The server's requests a client answers, as `ask_client` sends them.
const SERVER_REQUESTS: [&str; 3] = ["roots/list", "sampling/createMessage", "elicitation/create"];
const ASKED: &str = "roots 1 · model client-model-7 · name Ada";

/// The calls of `run`, whole, once `done` holds for them (polled for 5 s).
async fn calls_once(
    running: &llmtap::server::Running,
    run: &str,
    done: impl Fn(&[CallRecord]) -> bool,
) -> Vec<CallRecord> {
    let mut calls = Vec::new();
    for _ in 0..500 {
        calls = running
            .store
            .invocation_calls(run)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| running.store.get_call(&c.id).unwrap())
            .collect();
        if done(&calls) {
            calls.sort_by_key(|c| c.started_at_us);
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {run} never got there: {calls:#?}");
}

fn direction(c: &CallRecord) -> Option<&str> {
    c.mcp.as_ref().and_then(|m| m.direction.as_deref())
}

fn method(c: &CallRecord) -> Option<&str> {
    c.mcp.as_ref().and_then(|m| m.method.as_deref())
}

/// The client's answers to the server's requests, by method.
fn answers(calls: &[CallRecord]) -> Vec<&CallRecord> {
    calls
        .iter()
        .filter(|c| direction(c) == Some("server_to_client"))
        .filter(|c| method(c).is_some_and(|m| SERVER_REQUESTS.contains(&m)))
        .collect()
}

/// Over streamable HTTP the server asks the client mid-call (its requests ride the
/// call's SSE stream or the GET stream, and the client answers each in a POST): every
/// request and notification of the server is recorded in the stream that carried it,
/// each answer as an exchange `server_to_client` whose id and method match the
/// request's, and the run's timeline shows the direction.
#[tokio::test]
async fn server_requests_over_http_are_recorded_with_their_direction() {
    let server = serve_tools(StreamableHttpServerConfig::default()).await;
    let dir = TempDir::new("mcpasks");
    let running = llmtap_before(server, &dir, "").await;
    let transport = StreamableHttpClientTransport::from_config(transport_config(
        format!("http://{}/tools/mcp", running.proxy_addr),
        "run-asks",
    ));
    let client = AnsweringClient.serve(transport).await.unwrap();
    let asked = client
        .call_tool(call("ask_client", json!({})))
        .await
        .unwrap();
    assert_eq!(
        asked.content[0].as_text().map(|t| t.text.as_str()),
        Some(ASKED)
    );
    client.cancel().await.unwrap();

    let calls = calls_once(&running, "run-asks", |calls| {
        answers(calls).len() == 3 && calls.iter().any(|c| c.method == "GET")
    })
    .await;
    // Every request the server sent, with its id, from the streams that carried it.
    let sent: Vec<(Value, String)> = calls
        .iter()
        .filter_map(|c| c.mcp.as_ref())
        .flat_map(|m| {
            m.server_requests
                .iter()
                .map(|r| (r.id.clone(), r.method.clone()))
        })
        .collect();
    for answer in answers(&calls) {
        let m = answer.mcp.as_ref().unwrap();
        assert_eq!(answer.method, "POST");
        assert_eq!(answer.status, Some(CallStatus::Success));
        assert_eq!(m.transport, "http");
        let id = m.request_id.clone().expect("the answer's id");
        assert!(
            sent.contains(&(id.clone(), m.method.clone().unwrap())),
            "answer {id} to {:?} matches a request the server sent: {sent:?}",
            m.method
        );
        match m.method.as_deref() {
            Some("sampling/createMessage") => {
                assert_eq!(m.result.as_ref().unwrap()["model"], "client-model-7")
            }
            Some("elicitation/create") => {
                assert_eq!(m.result.as_ref().unwrap()["content"]["name"], "Ada")
            }
            Some("roots/list") => {
                assert_eq!(
                    m.result.as_ref().unwrap()["roots"][0]["uri"],
                    "file:///work"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    let mut methods: Vec<&str> = answers(&calls).iter().filter_map(|c| method(c)).collect();
    methods.sort_unstable();
    assert_eq!(
        methods,
        ["elicitation/create", "roots/list", "sampling/createMessage"]
    );
    // The requests rode the tool call's SSE answer, in the order the server sent them.
    let ask = tool_call(&calls, "ask_client");
    assert_eq!(
        ask.mcp.as_ref().unwrap().server_messages,
        SERVER_REQUESTS,
        "{ask:#?}"
    );
    assert_eq!(direction(ask), Some("client_to_server"));
    assert_eq!(
        ask.mcp.as_ref().unwrap().result_text.as_deref(),
        Some(ASKED)
    );
    let get = calls.iter().find(|c| c.method == "GET").unwrap();
    assert_eq!(
        direction(get),
        Some("server_to_client"),
        "the event stream is the server's"
    );

    // The run's timeline (what the page and `llmtap show` read) says who asked.
    let v = api_get(&running, "/api/v1/invocations/run-asks")
        .await
        .json();
    let shown: Vec<(String, String)> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["mcp"]["direction"] == "server_to_client")
        .filter_map(|t| {
            Some((
                t["mcp"]["method"].as_str()?.to_string(),
                t["method"].as_str()?.to_string(),
            ))
        })
        .collect();
    for m in SERVER_REQUESTS {
        assert!(
            shown.contains(&(m.to_string(), "POST".to_string())),
            "{shown:?}"
        );
    }
    running.shutdown().await.unwrap();
}

/// Over stdio (`llmtap mcp --`) the wrapper pairs the server's requests with the
/// client's answers and reports the server's notifications: each is an exchange
/// `server_to_client` with the server's exact method, the client's answer as its
/// result, and the tool call that caused them succeeds with their answers.
#[tokio::test]
async fn server_requests_over_stdio_are_recorded_with_their_direction() {
    let dir = TempDir::new("mcpasksstdio");
    let running = start_llmtap(test_config(dir.path(), "")).await;
    let api = format!("http://{}", running.api_addr);
    let command = wrapped_server(&api, &[("LLMTAP_INVOCATION_ID", "run-asks-stdio")]);
    let transport = rmcp::transport::TokioChildProcess::new(command).unwrap();
    let client = AnsweringClient.serve(transport).await.unwrap();
    let asked = client
        .call_tool(call("ask_client", json!({})))
        .await
        .unwrap();
    assert_eq!(
        asked.content[0].as_text().map(|t| t.text.as_str()),
        Some(ASKED)
    );
    client.cancel().await.unwrap();

    let calls = calls_once(&running, "run-asks-stdio", |calls| {
        answers(calls).len() == 3
            && calls
                .iter()
                .any(|c| method(c) == Some("notifications/message"))
            && calls.iter().any(|c| method(c) == Some("tools/call"))
    })
    .await;
    for answer in answers(&calls) {
        let m = answer.mcp.as_ref().unwrap();
        assert_eq!(
            (answer.method.as_str(), m.transport.as_str()),
            ("STDIO", "stdio")
        );
        assert_eq!(answer.status, Some(CallStatus::Success));
        // The request is the server's line, the response the client's.
        let request: Value = serde_json::from_str(answer.request_body.as_deref().unwrap()).unwrap();
        assert_eq!(request["method"].as_str(), m.method.as_deref());
        let response: Value =
            serde_json::from_str(answer.response_body.as_deref().unwrap()).unwrap();
        assert_eq!(response["id"], request["id"]);
        assert_eq!(m.result.as_ref(), Some(&response["result"]));
    }
    let sampled = answers(&calls)
        .into_iter()
        .find(|c| method(c) == Some("sampling/createMessage"))
        .unwrap();
    assert_eq!(
        sampled.mcp.as_ref().unwrap().result.as_ref().unwrap()["model"],
        "client-model-7"
    );
    let log = calls
        .iter()
        .find(|c| method(c) == Some("notifications/message"))
        .unwrap();
    assert_eq!(direction(log), Some("server_to_client"));
    let ask = tool_call(&calls, "ask_client");
    assert_eq!(direction(ask), Some("client_to_server"));
    assert_eq!(ask.status, Some(CallStatus::Success));
    assert_eq!(
        ask.mcp.as_ref().unwrap().result_text.as_deref(),
        Some(ASKED)
    );
    // The client's own notification stays the client's.
    let initialized = calls
        .iter()
        .find(|c| method(c) == Some("notifications/initialized"))
        .expect("the client's notification");
    assert_eq!(direction(initialized), Some("client_to_server"));
    running.shutdown().await.unwrap();
}

/// A client asks for the server's tools in each session, twice: the list is stored
/// once (one content chunk, referenced by every answer), every answer still reads
/// back byte for byte, and the run names the server and the tools it offered.
#[tokio::test]
async fn a_tools_list_is_stored_once_and_shown_per_server() {
    let server = serve_tools(StreamableHttpServerConfig::default()).await;
    let dir = TempDir::new("mcplists");
    let running = llmtap_before(server, &dir, "").await;
    let mut offered = Vec::new();
    for _session in 0..3 {
        let client =
            client_through(&running, "run-lists", Some(ProtocolVersion::V_2025_11_25)).await;
        for _ in 0..2 {
            let tools = client.list_tools(None).await.unwrap();
            offered = tools
                .tools
                .iter()
                .map(|t| t.name.to_string())
                .collect::<Vec<_>>();
        }
        client.cancel().await.unwrap();
    }
    assert!(offered.len() >= 7, "{offered:?}");
    let lists = |calls: &[CallRecord]| -> usize {
        calls
            .iter()
            .filter(|c| method(c) == Some("tools/list"))
            .count()
    };
    let calls = calls_once(&running, "run-lists", |calls| lists(calls) == 6).await;
    let mut list_bytes = None;
    for c in calls.iter().filter(|c| method(c) == Some("tools/list")) {
        let m = c.mcp.as_ref().unwrap();
        assert_eq!(m.tools_offered, offered);
        let body = c.response_body.clone().unwrap();
        // Read back exactly: the answer parses as the server's list.
        let raw = running.store.get_raw(&c.id, true).unwrap().unwrap();
        assert_eq!(raw, body.as_bytes());
        let ranges = llmtap::store::body::mcp_list_ranges(body.as_bytes());
        assert_eq!(ranges.len(), 1, "{body}");
        let list = body.as_bytes()[ranges[0].clone()].to_vec();
        assert!(
            list.starts_with(b"[{") && list.len() > 1000,
            "{}",
            list.len()
        );
        match &list_bytes {
            None => list_bytes = Some(list),
            Some(first) => assert_eq!(first, &list, "the same list each time"),
        }
    }
    let list = list_bytes.unwrap();
    let addr: String = ring::digest::digest(&ring::digest::SHA256, &list)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Each distinct answer (they differ in their JSON-RPC and SSE ids) is a small
    // chunk naming the one stored list.
    let distinct_answers: std::collections::HashSet<&str> = calls
        .iter()
        .filter(|c| method(c) == Some("tools/list"))
        .filter_map(|c| c.response_body.as_deref())
        .collect();
    assert_eq!(
        running.store.chunk_refs(&addr).unwrap(),
        distinct_answers.len() as u64,
        "one stored list, referenced by each distinct answer"
    );

    // Which tools were offered by which server: on the run, for viewers too.
    let v = api_get(&running, "/api/v1/invocations/run-lists")
        .await
        .json();
    let servers = v["mcp_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{v}");
    assert_eq!(servers[0]["provider"], "tools");
    assert_eq!(servers[0]["server"]["name"], "rmcp");
    assert_eq!(servers[0]["sessions"], 3);
    assert_eq!(servers[0]["tools_list_calls"], 6);
    assert_eq!(servers[0]["tools_offered"], json!(offered));
    running.shutdown().await.unwrap();
}

/// An MCP client that names no run (no `x-llmtap-*` header) still lands in the run
/// whose round asked for its tool, by time and the requested tool call (name and
/// arguments), and the round joins it.
#[tokio::test]
async fn an_mcp_tool_call_naming_no_run_joins_the_run_that_asked_for_it() {
    const ASKS: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_b","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Bergen\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":10,"total_tokens":30}}"#;
    let llm = MockUpstream::start(|_| MockResponse::json(200, ASKS)).await;
    let server = serve_tools(json_answers()).await;
    let dir = TempDir::new("mcptimejoin");
    let running = llmtap_before(server, &dir, &provider_toml("llm", "openai", &llm.url())).await;
    let r1 = post_json(
        running.proxy_addr,
        "/llm/v1/chat/completions",
        &[("x-llmtap-invocation-id", "run-asker")],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Weather in Bergen?"}]}"#,
    )
    .await;
    assert_eq!(r1.status, 200);
    wait_invocation(&running, "run-asker", 1).await;
    // No grouping header at all.
    let transport =
        StreamableHttpClientTransport::from_config(StreamableHttpClientTransportConfig::with_uri(
            format!("http://{}/tools/mcp", running.proxy_addr),
        ));
    let client = ClientConfig::default().serve(transport).await.unwrap();
    client
        .call_tool(call("weather", json!({"city": "Bergen"})))
        .await
        .unwrap();
    client.cancel().await.unwrap();
    let calls = run_calls(&running, "run-asker", 1).await;
    let weather = tool_call(&calls, "weather");
    assert_eq!(weather.invocation_id, "run-asker");
    let v = api_get(&running, "/api/v1/invocations/run-asker")
        .await
        .json();
    assert_eq!(
        v["rounds"][0]["tool_calls"][0]["mcp"]["call_id"],
        json!(weather.id),
        "{v}"
    );
    running.shutdown().await.unwrap();
}
