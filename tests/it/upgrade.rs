//! Stores written by the previous release open and read the same (issue 38).
//!
//! `tests/fixtures/stores/1d0bd15-sled/` is a sled data directory written by the
//! release binary of commit 1d0bd15 (the last commit that landed through CI before the
//! store refactoring), and `1d0bd15-sled.expected.json` what that same binary's read
//! API answered on it: every list, filter, page, call, raw body, blob, run, session,
//! statistic and rate limit of the data set. The test starts the current binary on a
//! copy of the fixture and asks it the same requests: any answer that differs, a body
//! that no longer reconstructs byte for byte, a round renumbered, a counter lost,
//! fails it, naming the request and the JSON path. The same for PostgreSQL:
//! `1d0bd15-postgres.sql` is `pg_dump` of the database the release wrote the same
//! traffic into, restored into a fresh database and migrated by the current binary at
//! start. On both engines the upgraded store then takes a new round of a release run,
//! numbered after the stored rounds, with every total grown by exactly that call.
//!
//! The data set (`write_traffic`): OpenAI chat calls of a session's two runs with
//! rate-limit headers and a tenant; a streamed Anthropic answer; a run of three rounds
//! whose first round is rate-limited (429) then retried with the same body, a tool
//! HTTP call and an MCP `tools/call` over HTTP between rounds, a streamed OpenAI
//! round, a round of a model priced by the user's price file; a stdio MCP exchange
//! reported through the ingest endpoint; an image attachment; a Gemini call; a refused
//! key; a raw-body read (an audit entry).
//!
//! To write a fixture for another release: build that release's binary, then
//! `LLMTAP_UPGRADE_BIN=/path/to/llmtap cargo test --test tests
//! it::upgrade::write_the_previous_release_fixtures -- --ignored` (and change `RELEASE`);
//! it rewrites every fixture file of both engines.

use super::process::{spawn_command, terminate, wait_ready, Proc};
use super::util::*;
use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The release that wrote the fixture.
const RELEASE: &str = "1d0bd15";

fn stores_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stores")
}

/// The engines a fixture is written for.
#[derive(Clone, Copy, Debug)]
enum Engine {
    Sled,
    Postgres,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Postgres => "postgres",
        }
    }

    /// The data directory the release left (sled: the whole store; PostgreSQL: the
    /// capture log, whose applied position the database holds).
    fn data_dir(self) -> PathBuf {
        stores_dir().join(format!("{RELEASE}-{}", self.name()))
    }

    /// The release's answers.
    fn expected(self) -> PathBuf {
        stores_dir().join(format!("{RELEASE}-{}.expected.json", self.name()))
    }
}

/// `pg_dump`'s plain SQL of the release's PostgreSQL database.
fn postgres_dump() -> PathBuf {
    stores_dir().join(format!("{RELEASE}-postgres.sql"))
}

/// A PostgreSQL client program next to the test server's binaries.
fn pg_program(name: &str) -> PathBuf {
    super::pg::bin_dir()
        .expect("no PostgreSQL binaries (initdb in PATH or /usr/lib/postgresql/*/bin)")
        .join(name)
}

fn run(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?} exited with {status}");
}

/// A fresh database of the test server holding the release's dump.
async fn restored_postgres() -> super::pg::TestDb {
    let db = super::pg::fresh_db("upgrade").await;
    // pg_dump's `\restrict` lines (from 15.14) are left out so an older psql reads
    // the dump too; they only guard against a hostile server's dump.
    let dump = std::fs::read_to_string(postgres_dump()).unwrap();
    let dump: String = dump
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .flat_map(|line| [line, "\n"])
        .collect();
    let mut psql = Command::new(pg_program("psql"))
        .args(["--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1"])
        .arg(db.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    psql.stdin
        .take()
        .unwrap()
        .write_all(dump.as_bytes())
        .unwrap();
    let status = psql.wait().unwrap();
    assert!(
        status.success(),
        "psql restoring the dump exited with {status}"
    );
    db
}

/// The price file both binaries read: `house-model` is priced here, not in the
/// built-in table, so its cost depends on nothing that moves between releases.
const PRICES: &str = "[models.openai]\n\"house-model\" = { input = \"2\", output = \"4\" }\n";

/// The config of both runs (on PostgreSQL when `store_url` is given): the providers the traffic uses, all answered by `upstream`
/// (the reading run points them nowhere; nothing is forwarded then).
fn write_setup(dir: &Path, upstream: &str, store_url: Option<&str>) -> PathBuf {
    let prices = dir.join("prices.toml");
    std::fs::write(&prices, PRICES).unwrap();
    let mut toml = format!("[prices]\nfile = \"{}\"\n", prices.display());
    if let Some(url) = store_url {
        toml.push_str(&format!("[store]\nurl = \"{url}\"\n"));
    }
    for (name, kind) in [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("gemini", "gemini"),
        ("tool", "http"),
        ("tools", "mcp"),
    ] {
        toml.push_str(&provider_toml(name, kind, upstream));
    }
    super::process::write_config(dir, &toml)
}

fn serve(binary: &Path, config: &Path, data: &Path) -> Proc {
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("LLMTAP_LOG", "warn")
        .stderr(Stdio::inherit());
    spawn_command(command)
}

/// Stops llmtap gracefully and checks it exited cleanly (the store flushed).
fn stop(mut proc: Proc) {
    terminate(&mut proc.child);
    let status = proc.child.wait().unwrap();
    assert!(status.success(), "llmtap exited with {status}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The running llmtap that writes the data set, and the mock's next answer.
struct Writer {
    proxy: SocketAddr,
    api: SocketAddr,
    script: Arc<Mutex<MockResponse>>,
}

impl Writer {
    /// Sends one request through the proxy, answered by `reply`; returns the stored
    /// call's id once the read API has it.
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        reply: MockResponse,
    ) -> String {
        *self.script.lock().unwrap() = reply;
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        let got = send(self.proxy, method, path, &all, body).await;
        let id = got.call_id();
        self.wait_stored(&id).await;
        id
    }

    async fn wait_stored(&self, id: &str) {
        for _ in 0..1000 {
            if send(self.api, "GET", &format!("/api/v1/calls/{id}"), &[], "")
                .await
                .status
                == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("call {id} was never recorded");
    }

    /// Replays a recorded exchange of tests/fixtures/exchanges, with other response
    /// headers if given.
    async fn replay(
        &self,
        name: &str,
        headers: &[(&str, &str)],
        extra_response_headers: &[(&str, &str)],
    ) -> String {
        let fx = fixture(name);
        let reply = fixture_reply(&fx, None, extra_response_headers);
        let provider = fx["provider"].as_str().unwrap();
        let path = format!("/{provider}{}", fixture_url(&fx).path_and_query().unwrap());
        let request = fx["request"]["body"].as_str().unwrap_or_default();
        self.call("POST", &path, headers, request, reply).await
    }
}

/// An OpenAI chat answer with `text` and the given token counts.
fn chat_answer(model: &str, text: &str, input: u64, output: u64) -> MockResponse {
    let body = json!({
        "id": "chatcmpl-upgrade", "object": "chat.completion", "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
    });
    MockResponse::json(200, &body.to_string())
}

/// OpenAI's rate-limit headers (Go-style durations).
fn openai_limits(reply: MockResponse, requests_left: &str, tokens_left: &str) -> MockResponse {
    reply
        .header("x-ratelimit-limit-requests", "500")
        .header("x-ratelimit-remaining-requests", requests_left)
        .header("x-ratelimit-reset-requests", "120ms")
        .header("x-ratelimit-limit-tokens", "30000")
        .header("x-ratelimit-remaining-tokens", tokens_left)
        .header("x-ratelimit-reset-tokens", "6m0s")
}

/// A 16×8 PNG (two colour bands): the attachment of the vision call.
fn small_png() -> Vec<u8> {
    rgb_png(16, 8, |_, y| {
        if y < 4 {
            [37, 99, 235]
        } else {
            [250, 250, 250]
        }
    })
}

/// The data set: every kind of thing the store keeps.
async fn write_traffic(w: &Writer) {
    let pause = || tokio::time::sleep(Duration::from_millis(30));
    // A session of two runs (the second sends the first one's turns again), a tenant,
    // a user, a prompt version and variables, OpenAI rate-limit headers.
    let system =
        json!({"role": "system", "content": "You are Acme's support assistant. Be brief."});
    let question = json!({"role": "user", "content": "Where is my order #4411?"});
    let reply =
        json!({"role": "assistant", "content": "Order #4411 left the warehouse on Monday."});
    let support = |run: &'static str| {
        [
            ("x-llmtap-agent", "support-bot"),
            ("x-llmtap-invocation-id", run),
            ("x-llmtap-session-id", "conv-77"),
            ("x-llmtap-tenant", "acme"),
            ("x-llmtap-user-id", "u-1042"),
            ("x-llmtap-trigger", "user"),
            ("x-llmtap-prompt", "support@v9"),
            ("x-llmtap-prompt-variables", r#"{"tier":"gold"}"#),
            ("authorization", "Bearer sk-proj-fake-upgrade-0001"),
            ("user-agent", "OpenAI/Python 1.82.0"),
        ]
    };
    w.call(
        "POST",
        "/openai/v1/chat/completions",
        &support("support-41"),
        &json!({"model": "gpt-4o-mini", "messages": [system, question]}).to_string(),
        openai_limits(
            chat_answer(
                "gpt-4o-mini-2024-07-18",
                reply["content"].as_str().unwrap(),
                212,
                41,
            ),
            "499",
            "29700",
        ),
    )
    .await;
    pause().await;
    w.call(
        "POST",
        "/openai/v1/chat/completions",
        &support("support-42"),
        &json!({"model": "gpt-4o-mini", "messages": [system, question, reply,
            {"role": "user", "content": "Still nothing on Friday. Can you check?"}]})
        .to_string(),
        openai_limits(
            chat_answer(
                "gpt-4o-mini-2024-07-18",
                "The carrier lost it; a replacement ships today.",
                298,
                52,
            ),
            "498",
            "29350",
        ),
    )
    .await;
    pause().await;

    // A streamed Anthropic answer with Anthropic's rate-limit headers.
    let reset = "2026-12-07T21:30:00Z";
    w.replay(
        "llm-anthropic__test_anthropic__test_stream_events_text.json",
        &[
            ("x-llmtap-agent", "research-bot"),
            ("x-llmtap-invocation-id", "research-7"),
            ("x-llmtap-tenant", "globex"),
            ("x-api-key", "sk-ant-fake-upgrade-0001"),
        ],
        &[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", reset),
            ("anthropic-ratelimit-tokens-limit", "400000"),
            ("anthropic-ratelimit-tokens-remaining", "391000"),
            ("anthropic-ratelimit-tokens-reset", reset),
        ],
    )
    .await;
    pause().await;

    // The agent loop: round 1 rate-limited, retried with the same body, asks for two
    // tools; a tool HTTP call and an MCP tools/call; round 2 streamed, asks for
    // nothing more than a check; round 3 on the house model.
    let run = [
        ("x-llmtap-agent", "calc-bot"),
        ("x-llmtap-invocation-id", "loop-1"),
        ("x-llmtap-session-id", "conv-42"),
        ("x-llmtap-tenant", "acme"),
        ("x-llmtap-trigger", "task"),
        ("x-llmtap-prompt", "calculator@v2"),
        ("authorization", "Bearer sk-proj-fake-upgrade-0002"),
    ];
    let tools = json!([
        {"type": "function", "function": {"name": "multiply", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "lookup_rate", "parameters": {"type": "object"}}}
    ]);
    let ask =
        json!({"role": "user", "content": "What is 1231 times 2331, in euros at today's rate?"});
    let round1 = json!({"model": "gpt-4o-mini", "messages": [ask], "tools": tools}).to_string();
    let limited = MockResponse::json(
        429,
        r#"{"error":{"message":"Rate limit reached for gpt-4o-mini","type":"requests","code":"rate_limit_exceeded"}}"#,
    )
    .header("retry-after-ms", "250");
    w.call(
        "POST",
        "/openai/v1/chat/completions",
        &run,
        &round1,
        openai_limits(limited, "0", "12000"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let multiply = json!({"id": "call_mul", "type": "function",
        "function": {"name": "multiply", "arguments": "{\"a\":1231,\"b\":2331}"}});
    let lookup = json!({"id": "call_rate", "type": "function",
        "function": {"name": "lookup_rate", "arguments": "{\"currency\":\"EUR\"}"}});
    let asks = json!({
        "id": "chatcmpl-loop", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [multiply, lookup]},
                     "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}
    });
    w.call(
        "POST",
        "/openai/v1/chat/completions",
        &[&run[..], &[("x-stainless-retry-count", "1")]].concat(),
        &round1,
        openai_limits(MockResponse::json(200, &asks.to_string()), "497", "29000"),
    )
    .await;
    pause().await;
    w.call(
        "GET",
        "/tool/v1/multiply?a=1231&b=2331",
        &run[..6],
        "",
        MockResponse::json(200, r#"{"result": 2869461}"#),
    )
    .await;
    pause().await;
    let mcp_call = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "lookup_rate", "arguments": {"currency": "EUR"}}});
    let mcp_result = json!({"jsonrpc": "2.0", "id": 7,
        "result": {"content": [{"type": "text", "text": "1 USD = 0.92 EUR"}], "isError": false}});
    w.call(
        "POST",
        "/tools/mcp",
        &[
            &run[..6],
            &[
                ("accept", "application/json, text/event-stream"),
                ("mcp-session-id", "mcp-sess-1"),
                ("mcp-protocol-version", "2025-06-18"),
            ],
        ]
        .concat(),
        &mcp_call.to_string(),
        MockResponse::json(200, &mcp_result.to_string()).header("mcp-session-id", "mcp-sess-1"),
    )
    .await;
    pause().await;
    let round2 = json!({"model": "gpt-4o-mini", "stream": true, "messages": [ask,
        {"role": "assistant", "content": null, "tool_calls": [multiply, lookup]},
        {"role": "tool", "tool_call_id": "call_mul", "content": "2869461"},
        {"role": "tool", "tool_call_id": "call_rate", "content": "1 USD = 0.92 EUR"}],
        "tools": tools})
    .to_string();
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-loop2", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let events = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "1231 × 2331 = 2,869,461, "}), Value::Null),
        chunk(json!({"content": "about 2,639,904 EUR."}), Value::Null),
        chunk(json!({}), json!("stop")),
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-loop2", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-mini-2024-07-18", "choices": [],
                "usage": {"prompt_tokens": 210, "completion_tokens": 24, "total_tokens": 234}})
        ),
        "data: [DONE]\n\n".to_string(),
    ];
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    w.call(
        "POST",
        "/openai/v1/chat/completions",
        &run,
        &round2,
        MockResponse::sse(&events, Duration::from_millis(5)),
    )
    .await;
    pause().await;
    w.call(
        "POST",
        "/openai/v1/chat/completions",
        &run,
        &json!({"model": "house-model", "messages": [ask,
            {"role": "assistant", "content": "About 2,639,904 EUR."},
            {"role": "user", "content": "Check the rounding."}]})
        .to_string(),
        chat_answer("house-model", "Checked: 2,639,904.12 EUR.", 1_000, 500),
    )
    .await;
    pause().await;

    // A stdio MCP server's tools/call, as `llmtap mcp` reports it.
    let report = json!({
        "server": "docs-search",
        "session_id": "stdio_docs",
        "started_at_us": llmtap::timefmt::now_unix_us(),
        "duration_us": 42_000,
        "request": r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search_docs","arguments":{"query":"rotate API key"}}}"#,
        "response": r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"Create a second key, then revoke the first."}]}}"#,
    });
    let taken = post_json(
        w.api,
        "/api/v1/ingest/mcp",
        &[
            ("x-llmtap-invocation-id", "docs-5"),
            ("x-llmtap-agent", "docs-bot"),
        ],
        &report.to_string(),
    )
    .await;
    assert_eq!(taken.status, 200, "{:?}", taken.body);
    w.wait_stored(taken.json()["call_id"].as_str().unwrap())
        .await;
    pause().await;

    // An image attachment.
    let image = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(small_png())
    );
    w.call(
        "POST",
        "/openai/v1/chat/completions",
        &[
            ("x-llmtap-agent", "vision-bot"),
            ("x-llmtap-invocation-id", "vision-1"),
            ("x-llmtap-tenant", "acme"),
        ],
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What does this chart show?"},
            {"type": "image_url", "image_url": {"url": image}}
        ]}]})
        .to_string(),
        chat_answer("gpt-4o-2024-08-06", "Two bands: blue over white.", 300, 9),
    )
    .await;
    pause().await;

    // Gemini, and a refused key (no run headers: grouped by the writer).
    w.replay(
        "llm-gemini__test_gemini__test_prompt.json",
        &[
            ("x-llmtap-agent", "research-bot"),
            ("x-llmtap-trigger", "system"),
        ],
        &[],
    )
    .await;
    pause().await;
    let refused = w
        .replay(
            "mirascope__test_authentication_error_stream__openai_gpt_4o_completions.json",
            &[
                ("x-llmtap-agent", "billing-bot"),
                ("authorization", "Bearer sk-wrong-fake-0002"),
            ],
            &[],
        )
        .await;
    // An admin read of a body: the audit log's entry.
    let raw = send(
        w.api,
        "GET",
        &format!("/api/v1/calls/{refused}/raw?part=response"),
        &[],
        "",
    )
    .await;
    assert_eq!(raw.status, 200);
}

/// One answer of the read API, as compared: JSON answers as JSON, other bodies as
/// text when they are UTF-8, else base64.
fn answer_of(got: &Got) -> Value {
    let content_type = got.header("content-type").unwrap_or_default().to_string();
    let body = if content_type.starts_with("application/json") {
        serde_json::from_slice(&got.body)
            .unwrap_or_else(|_| json!({"unparsed": String::from_utf8_lossy(&got.body)}))
    } else {
        match std::str::from_utf8(&got.body) {
            Ok(text) => json!({"text": text}),
            Err(_) => {
                json!({"base64": base64::engine::general_purpose::STANDARD.encode(&got.body)})
            }
        }
    };
    json!({"status": got.status, "content_type": content_type, "body": body})
}

async fn ask(api: SocketAddr, path: &str) -> Value {
    answer_of(&send(api, "GET", path, &[], "").await)
}

/// Every string value under `key` anywhere in `value`.
fn strings_named(value: &Value, key: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k == key => out.push(s.clone()),
                    _ => strings_named(v, key, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_named(v, key, out)),
        _ => {}
    }
}

fn ids_of(page: &Value) -> Vec<String> {
    page["body"]["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Requests the release did not accept (its session list had no such filters): asked
/// of the current binary only and checked by `session_filters_match_the_release_sessions`.
const NEW_REQUESTS: &[&str] = &[
    "/api/v1/sessions?model=house-model",
    "/api/v1/sessions?model=gpt-4o-mini",
    "/api/v1/sessions?agent=support-bot",
];

/// Asks a llmtap serving the fixture every request the comparison makes, finding the
/// ids in its lists; `from` is a time before the data set (the rate-limit series).
async fn read_everything(api: SocketAddr, from: &str) -> BTreeMap<String, Value> {
    let mut answers = BTreeMap::new();
    // First, before this reading's own raw reads add entries.
    let mut paths = vec!["/api/v1/audit".to_string()];
    for path in [
        "/api/v1/calls?limit=200",
        "/api/v1/invocations?limit=200",
        "/api/v1/sessions?limit=200",
    ] {
        paths.push(path.to_string());
    }
    for filter in [
        "tenant=acme",
        "agent=calc-bot",
        "status=rate_limited",
        "provider=anthropic",
        "model=gpt-4o-mini",
        "session_id=conv-42",
        "session_id=conv-42&tenant=acme",
        "prompt=support%40v9",
        "trigger=task",
        "user_id=u-1042",
        "q=order",
        "q=2869461",
        "min_cost=0.001",
    ] {
        paths.push(format!("/api/v1/calls?{filter}&limit=200"));
        paths.push(format!("/api/v1/invocations?{filter}&limit=200"));
    }
    paths.push("/api/v1/sessions?tenant=acme".to_string());
    for group in [
        "agent", "model", "provider", "tool", "prompt", "trigger", "tenant", "day", "hour",
    ] {
        paths.push(format!("/api/v1/stats?group_by={group}"));
    }
    paths.push("/api/v1/stats?group_by=model&tenant=acme".to_string());
    paths.push("/api/v1/summary".to_string());
    paths.push("/api/v1/agents".to_string());
    paths.push("/api/v1/agents?tenant=acme".to_string());
    paths.push(format!("/api/v1/ratelimits?series=true&from={from}"));
    paths.push("/api/v1/calls.csv".to_string());
    paths.push("/api/v1/invocations.csv".to_string());
    paths.extend(NEW_REQUESTS.iter().map(|p| p.to_string()));
    for path in paths {
        let answer = ask(api, &path).await;
        answers.insert(path, answer);
    }
    // Pages of three, following the cursors.
    for list in ["calls", "invocations"] {
        let mut path = format!("/api/v1/{list}?limit=3");
        loop {
            let page = ask(api, &path).await;
            let next = page["body"]["next_cursor"].as_str().map(str::to_string);
            answers.insert(path, page);
            match next {
                Some(cursor) => path = format!("/api/v1/{list}?limit=3&cursor={cursor}"),
                None => break,
            }
        }
    }
    let calls = ids_of(&answers["/api/v1/calls?limit=200"]);
    let runs = ids_of(&answers["/api/v1/invocations?limit=200"]);
    let sessions = ids_of(&answers["/api/v1/sessions?limit=200"]);
    assert!(calls.len() >= 10 && runs.len() >= 5 && sessions.len() >= 2);
    let mut blobs = Vec::new();
    for id in calls {
        let detail = ask(api, &format!("/api/v1/calls/{id}")).await;
        strings_named(&detail, "sha256", &mut blobs);
        answers.insert(format!("/api/v1/calls/{id}"), detail);
        for part in ["request", "response"] {
            let path = format!("/api/v1/calls/{id}/raw?part={part}");
            answers.insert(path.clone(), ask(api, &path).await);
        }
    }
    for id in runs {
        let path = format!("/api/v1/invocations/{id}");
        answers.insert(path.clone(), ask(api, &path).await);
    }
    for id in sessions {
        for path in [
            format!("/api/v1/sessions/{id}"),
            format!("/api/v1/sessions/{id}?conversation=true"),
        ] {
            answers.insert(path.clone(), ask(api, &path).await);
        }
    }
    blobs.sort();
    blobs.dedup();
    assert!(!blobs.is_empty(), "the data set's attachment was not found");
    for sha in blobs {
        let path = format!("/api/v1/blobs/{sha}");
        answers.insert(path.clone(), ask(api, &path).await);
    }
    answers
}

/// Starts `binary` on a copy of `data` (and the database `store_url` names) and reads
/// everything.
async fn read_with(
    binary: &Path,
    data: &Path,
    store_url: Option<&str>,
    from: &str,
) -> BTreeMap<String, Value> {
    let dir = TempDir::new("upgrade-read");
    let copy = dir.path().join("data");
    copy_dir(data, &copy);
    let config = write_setup(dir.path(), "http://127.0.0.1:9", store_url);
    let proc = serve(binary, &config, &copy);
    wait_ready(proc.api).await;
    let mut answers = read_everything(proc.api, from).await;
    stop(proc);
    // The price file's path (`price_entry.defined_at`) is this reading's temporary
    // directory: the config's place, not the store's.
    let dir_text = dir.path().display().to_string();
    answers
        .values_mut()
        .for_each(|answer| replace_text(answer, &dir_text, "$CONFIG_DIR"));
    answers
}

fn replace_text(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s.contains(from) => *s = s.replace(from, to),
        Value::Object(map) => map.values_mut().for_each(|v| replace_text(v, from, to)),
        Value::Array(items) => items.iter_mut().for_each(|v| replace_text(v, from, to)),
        _ => {}
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Expected {
    /// How the fixture was written.
    written_by: String,
    /// The `from` of the rate-limit series request (before the data set).
    from: String,
    /// Request path → `{status, content_type, body}`.
    answers: BTreeMap<String, Value>,
}

/// Fields the read API answers since the release, by request path prefix and name:
/// absent from the release's answers, so only their presence is new. Why each:
const ADDED_SINCE: &[(&str, &str)] = &[
    // The call's upstream URL for "copy as curl": the reading config's provider base
    // URL and the stored path (the reading config points nowhere, hence https).
    ("/api/v1/calls/", "upstream_url"),
    // Which of a call's messages are memory from earlier runs of its session.
    ("/api/v1/calls/", "history"),
    // A run's MCP servers, and an MCP exchange's direction, server requests and
    // messages and the tools a `tools/list` offered (issue 36's fields), read from
    // the stored MCP exchange.
    ("/api/v1/invocations/", "mcp_servers"),
    ("/api/v1/invocations/", "mcp"),
    ("/api/v1/invocations/", "direction"),
    ("/api/v1/invocations/", "server_requests"),
    ("/api/v1/invocations/", "server_messages"),
    ("/api/v1/invocations/", "tools_offered"),
    // The models of a session's LLM calls, filled for the release's sessions from
    // their stored calls by both engines (PostgreSQL's migration 0008, sled at open);
    // their values are checked by `release_sessions_list_their_models`.
    ("/api/v1/sessions", "models"),
    // Tool calls counted apart from LLM calls (their values for this store are
    // checked by `tool_counts_of_the_release_cells`).
    ("/api/v1/stats", "tool_calls_without_group"),
    ("/api/v1/agents", "tool_calls"),
    ("/api/v1/agents", "tool_failures"),
    // Whether a rate-limit window has reset by now, and whether a whole state has:
    // both depend on the time of the request.
    ("/api/v1/ratelimits", "has_reset"),
    ("/api/v1/ratelimits", "stale"),
    // The run's prompt version and task id, new CSV columns.
    ("/api/v1/invocations.csv", "prompt_version"),
    ("/api/v1/invocations.csv", "task_id"),
];

/// Answers made comparable: the parts that depend on when they are asked, not on
/// what the store holds, are taken out of both sides; CSV is read into rows of named
/// cells, so a new column is an added field.
fn comparable(path: &str, answer: &mut Value, current: bool) {
    let body = &mut answer["body"];
    if path.starts_with("/api/v1/summary") {
        // Today and the last 24 hours are relative to the time of the request; the
        // totals are compared (and the day buckets by `stats?group_by=day`).
        if let Some(map) = body.as_object_mut() {
            for windowed in [
                "calls_today",
                "runs_today",
                "cost_today_usd",
                "tokens_today",
                "today_starts_at",
                "errors_24h",
                "failed_calls_24h",
            ] {
                map.remove(windowed);
            }
        }
    }
    if path.starts_with("/api/v1/ratelimits") {
        if let Some(items) = body["items"].as_array_mut() {
            for item in items.iter_mut() {
                let Some(map) = item.as_object_mut() else {
                    continue;
                };
                // 429s in the hour and the day before the request.
                map.remove("rate_limited_1h");
                map.remove("rate_limited_24h");
                // The release's `headroom_pct` was the lowest reported headroom,
                // which is `reported_headroom_pct` now; `headroom_pct` is now that of
                // the windows not reset by the time of the request.
                if current {
                    if let Some(reported) = map.remove("reported_headroom_pct") {
                        map.insert("headroom_pct".into(), reported);
                    }
                }
            }
            // The order is by headroom now (time-dependent since); compared as a set.
            items.sort_by_key(|i| {
                format!("{}|{}|{}", i["provider"], i["key_fingerprint"], i["model"])
            });
        }
    }
    if path.ends_with(".csv") {
        if let Some(text) = body["text"].as_str() {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            let header = reader.headers().unwrap().clone();
            let rows: Vec<Value> = reader
                .records()
                .map(|row| {
                    let row = row.unwrap();
                    let mut cells: serde_json::Map<String, Value> = header
                        .iter()
                        .zip(row.iter())
                        .map(|(k, v)| (k.to_string(), json!(v)))
                        .collect();
                    // The attempt column is empty for every tool call since, MCP
                    // exchanges included (the release wrote 1 for them).
                    if cells.get("kind").and_then(Value::as_str) == Some("mcp") {
                        cells.remove("attempt");
                    }
                    Value::Object(cells)
                })
                .collect();
            *body = json!({"rows": rows});
        }
    }
}

/// Whether a difference at `at` (request path, then JSON path) is an allowed one.
fn allowed_addition(at: &str) -> bool {
    let name = at.rsplit('/').next().unwrap_or_default();
    ADDED_SINCE
        .iter()
        .any(|(prefix, field)| at.starts_with(prefix) && name == *field)
}

/// Every JSON path where `now` differs from `was`, but for fields added since and
/// hints that now say more after the same words.
fn differences(at: &str, was: &Value, now: &Value, out: &mut Vec<String>) {
    match (was, now) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => differences(&format!("{at}/{k}"), v, w, out),
                    None => out.push(format!("{at}/{k}: gone (was {v})")),
                }
            }
            for (k, v) in b {
                let here = format!("{at}/{k}");
                if !a.contains_key(k) && !allowed_addition(&here) {
                    out.push(format!("{here}: added ({v})"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                differences(&format!("{at}/{i}"), v, w, out);
            }
        }
        // A failure hint now goes on with advice after the release's sentence.
        (Value::String(a), Value::String(b))
            if at.ends_with("/hint") && b.starts_with(a.as_str()) => {}
        _ if was != now => out.push(format!("{at}: was {was}, now {now}")),
        _ => {}
    }
}

/// Writes the data set with the release's binary on `engine` and records what that
/// binary answers on it.
async fn write_fixture(binary: &Path, engine: Engine) {
    let script = Arc::new(Mutex::new(MockResponse::json(200, "{}")));
    let shared = script.clone();
    let mock = MockUpstream::start(move |_| shared.lock().unwrap().clone()).await;
    let dir = TempDir::new("upgrade-write");
    let db = match engine {
        Engine::Sled => None,
        Engine::Postgres => Some(super::pg::fresh_db("upgrade_write").await),
    };
    let url = db.as_ref().map(|db| db.url());
    let config = write_setup(dir.path(), &mock.url(), url.as_deref());
    let data = dir.path().join("data");
    let from = llmtap::timefmt::format_rfc3339_us(llmtap::timefmt::now_unix_us() - 60_000_000);
    let proc = serve(binary, &config, &data);
    wait_ready(proc.api).await;
    let writer = Writer {
        proxy: proc.proxy,
        api: proc.api,
        script,
    };
    write_traffic(&writer).await;
    stop(proc);

    let fixture = engine.data_dir();
    let _ = std::fs::remove_dir_all(&fixture);
    copy_dir(&data, &fixture);
    let restored = match engine {
        Engine::Sled => None,
        Engine::Postgres => {
            run(Command::new(pg_program("pg_dump"))
                .args(["--no-owner", "--no-privileges", "--file"])
                .arg(postgres_dump())
                .arg(url.as_deref().unwrap()));
            // Read from the dump, as the test does.
            Some(restored_postgres().await)
        }
    };
    let answers = read_with(
        binary,
        &fixture,
        restored.as_ref().map(|db| db.url()).as_deref(),
        &from,
    )
    .await;
    let expected = Expected {
        written_by: format!(
            "llmtap {RELEASE} on {} (`LLMTAP_UPGRADE_BIN=... cargo test --test tests it::upgrade::write_the_previous_release_fixtures -- --ignored`)",
            engine.name()
        ),
        from,
        answers,
    };
    std::fs::write(
        engine.expected(),
        serde_json::to_string_pretty(&expected).unwrap() + "\n",
    )
    .unwrap();
}

#[tokio::test]
#[ignore = "writes tests/fixtures/stores/ with the binary LLMTAP_UPGRADE_BIN names"]
async fn write_the_previous_release_fixtures() {
    let binary = PathBuf::from(
        std::env::var("LLMTAP_UPGRADE_BIN")
            .expect("set LLMTAP_UPGRADE_BIN to the release's llmtap"),
    );
    for engine in [Engine::Sled, Engine::Postgres] {
        write_fixture(&binary, engine).await;
    }
}

/// Compares what `binary` answers on a copy of the fixture with what the release
/// answered; returns the differences, one line each, and the answers.
async fn compare(binary: &Path, engine: Engine) -> (Vec<String>, BTreeMap<String, Value>) {
    let expected: Expected =
        serde_json::from_str(&std::fs::read_to_string(engine.expected()).unwrap()).unwrap();
    let db = match engine {
        Engine::Sled => None,
        Engine::Postgres => Some(restored_postgres().await),
    };
    let url = db.as_ref().map(|db| db.url());
    let answers = read_with(binary, &engine.data_dir(), url.as_deref(), &expected.from).await;
    let mut out = Vec::new();
    for (path, was) in &expected.answers {
        if NEW_REQUESTS.contains(&path.as_str()) {
            continue;
        }
        let Some(now) = answers.get(path) else {
            out.push(format!("{path}: not asked any more (a list lost an id?)"));
            continue;
        };
        let (mut was, mut now) = (was.clone(), now.clone());
        comparable(path, &mut was, false);
        comparable(path, &mut now, true);
        differences(path, &was, &now, &mut out);
    }
    for path in answers.keys() {
        if !expected.answers.contains_key(path) && !NEW_REQUESTS.contains(&path.as_str()) {
            out.push(format!(
                "{path}: asked now, not by the release (a list gained an id?)"
            ));
        }
    }
    (out, answers)
}

/// The release stored rollup cells without tool counters; they are counted at open
/// (`backfill_tool_counts`): calc-bot's run made a tool HTTP call and an MCP
/// `tools/call`, docs-bot's a stdio MCP `tools/call`, nobody else a tool call.
fn tool_counts_of_the_release_cells(answers: &BTreeMap<String, Value>) {
    let agents = &answers["/api/v1/agents"]["body"]["items"];
    let counted: BTreeMap<&str, (u64, u64)> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent"].as_str().unwrap(),
                (
                    a["tool_calls"].as_u64().unwrap(),
                    a["tool_failures"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    for (agent, (calls, failures)) in &counted {
        let want = match *agent {
            "calc-bot" => 2,
            "docs-bot" => 1,
            _ => 0,
        };
        assert_eq!((*calls, *failures), (want, 0), "{agent}'s tool calls");
    }
}

/// The session list's model and agent filters (added since) find the release's
/// sessions: by the models their LLM calls used, and by their first call's agent.
fn session_filters_match_the_release_sessions(answers: &BTreeMap<String, Value>) {
    let found = |path: &str| {
        let mut ids = ids_of(&answers[path]);
        ids.sort();
        ids
    };
    assert_eq!(
        found("/api/v1/sessions?model=house-model"),
        ["conv-42@acme"]
    );
    assert_eq!(
        found("/api/v1/sessions?model=gpt-4o-mini"),
        ["conv-42@acme", "conv-77@acme"]
    );
    assert_eq!(
        found("/api/v1/sessions?agent=support-bot"),
        ["conv-77@acme"]
    );
}

/// Every release session lists the models of its LLM calls (requested, then
/// answering, in order of first use; the tool calls between name none), filled once
/// from the stored calls: the same answer on both engines.
fn release_sessions_list_their_models(answers: &BTreeMap<String, Value>) {
    let sessions = answers["/api/v1/sessions?limit=200"]["body"]["items"]
        .as_array()
        .unwrap();
    let models = |id: &str| -> Vec<&str> {
        let session = sessions.iter().find(|s| s["id"] == id).unwrap();
        let Some(models) = session["models"].as_array() else {
            panic!("session {id} answers no models: {session}");
        };
        models.iter().map(|m| m.as_str().unwrap()).collect()
    };
    assert_eq!(
        models("conv-42@acme"),
        ["gpt-4o-mini", "gpt-4o-mini-2024-07-18", "house-model"]
    );
    assert_eq!(
        models("conv-77@acme"),
        ["gpt-4o-mini", "gpt-4o-mini-2024-07-18"]
    );
    for session in sessions {
        let id = session["id"].as_str().unwrap();
        assert!(!models(id).is_empty(), "{session}");
    }
}

/// The binary under test: the current one, or (to check the comparison itself: the
/// release reading its own store again must find no difference) the one
/// `LLMTAP_UPGRADE_READER` names.
fn reader() -> (PathBuf, bool) {
    match std::env::var("LLMTAP_UPGRADE_READER") {
        Ok(path) => (PathBuf::from(path), false),
        Err(_) => (PathBuf::from(env!("CARGO_BIN_EXE_llmtap")), true),
    }
}

async fn reads_the_same(engine: Engine) {
    let (binary, current) = reader();
    let (differ, answers) = compare(&binary, engine).await;
    assert!(
        differ.is_empty(),
        "{} differences on {} from what release {RELEASE} answered on its own store:\n{}\n\
         A stored form that changed must be read as before or migrated at open (never \
         edit the fixture); a field added to an answer on purpose goes in ADDED_SINCE \
         with its reason.",
        differ.len(),
        engine.name(),
        differ.join("\n")
    );
    if current {
        tool_counts_of_the_release_cells(&answers);
        session_filters_match_the_release_sessions(&answers);
        release_sessions_list_their_models(&answers);
    }
}

#[tokio::test]
async fn a_store_written_by_the_previous_release_opens_and_reads_the_same() {
    reads_the_same(Engine::Sled).await;
}

/// The release's PostgreSQL database, restored from its dump: the current binary runs
/// its migrations at start, then answers as the release did.
#[tokio::test]
async fn a_postgres_store_written_by_the_previous_release_migrates_and_reads_the_same() {
    reads_the_same(Engine::Postgres).await;
}

/// The release's store takes new calls after the upgrade: a fourth round of the
/// release's three-round run is numbered after its stored rounds (read from the
/// release's records), which keep their numbers, and the run's, agent's and store's
/// totals grow by exactly that call.
async fn takes_a_new_round_of_a_release_run(engine: Engine) {
    let expected: Expected =
        serde_json::from_str(&std::fs::read_to_string(engine.expected()).unwrap()).unwrap();
    let was = |path: &str| expected.answers[path]["body"].clone();
    let run_before = was("/api/v1/invocations/loop-1@acme");
    let calc_before = was("/api/v1/agents")["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "calc-bot")
        .unwrap()
        .clone();
    let total_before = was("/api/v1/summary")["total_calls"].as_u64().unwrap();

    let script = Arc::new(Mutex::new(MockResponse::json(200, "{}")));
    let shared = script.clone();
    let mock = MockUpstream::start(move |_| shared.lock().unwrap().clone()).await;
    let dir = TempDir::new("upgrade-write-on");
    let data = dir.path().join("data");
    copy_dir(&engine.data_dir(), &data);
    let db = match engine {
        Engine::Sled => None,
        Engine::Postgres => Some(restored_postgres().await),
    };
    let url = db.as_ref().map(|db| db.url());
    let config = write_setup(dir.path(), &mock.url(), url.as_deref());
    let proc = serve(Path::new(env!("CARGO_BIN_EXE_llmtap")), &config, &data);
    wait_ready(proc.api).await;
    let writer = Writer {
        proxy: proc.proxy,
        api: proc.api,
        script,
    };
    let new_call = writer
        .call(
            "POST",
            "/openai/v1/chat/completions",
            &[
                ("x-llmtap-agent", "calc-bot"),
                ("x-llmtap-invocation-id", "loop-1"),
                ("x-llmtap-session-id", "conv-42"),
                ("x-llmtap-tenant", "acme"),
                ("x-llmtap-trigger", "task"),
                ("x-llmtap-prompt", "calculator@v2"),
            ],
            &json!({"model": "house-model", "messages": [
                {"role": "user", "content": "Round it to whole euros."}]})
            .to_string(),
            chat_answer("house-model", "2,639,904 EUR.", 1_000, 100),
        )
        .await;
    // The run's roll-up may land a batch after the call: wait for the fourth round.
    let mut run = Value::Null;
    for _ in 0..500 {
        run = send(proc.api, "GET", "/api/v1/invocations/loop-1@acme", &[], "")
            .await
            .json();
        if run["round_count"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let agents = send(proc.api, "GET", "/api/v1/agents", &[], "")
        .await
        .json();
    let summary = send(proc.api, "GET", "/api/v1/summary", &[], "")
        .await
        .json();
    stop(proc);

    assert_eq!(run["round_count"], 4, "{run}");
    let rounds = run["rounds"].as_array().unwrap();
    let before = run_before["rounds"].as_array().unwrap();
    for (i, old) in before.iter().enumerate() {
        assert_eq!(rounds[i]["round"], old["round"]);
        assert_eq!(rounds[i]["call_id"], old["call_id"]);
        assert_eq!(
            rounds[i]["attempts"].as_array().unwrap().len(),
            old["attempts"].as_array().unwrap().len()
        );
    }
    assert_eq!(rounds[3]["round"], 4);
    assert_eq!(rounds[3]["call_id"], new_call.as_str());
    // $2/M input and $4/M output of the price file: 2,400,000,000 picodollars.
    let added_pusd = 1_000 * 2_000_000 + 100 * 4_000_000;
    assert_eq!(
        run["cost_pusd"].as_u64().unwrap(),
        run_before["cost_pusd"].as_u64().unwrap() + added_pusd
    );
    for (field, more) in [("llm_calls", 1), ("tool_calls", 0), ("retries", 0)] {
        assert_eq!(
            run[field].as_u64().unwrap(),
            run_before[field].as_u64().unwrap() + more,
            "the run's {field}"
        );
    }
    let calc = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "calc-bot")
        .unwrap();
    for (field, more) in [
        ("llm_calls", 1),
        ("runs", 0),
        ("input_tokens", 1_000),
        ("output_tokens", 100),
    ] {
        assert_eq!(
            calc[field].as_u64().unwrap(),
            calc_before[field].as_u64().unwrap() + more,
            "calc-bot's {field}"
        );
    }
    assert_eq!(calc["tool_calls"], 2, "calc-bot's tool calls");
    assert_eq!(summary["total_calls"].as_u64().unwrap(), total_before + 1);
}

#[tokio::test]
async fn a_store_written_by_the_previous_release_takes_a_new_round_of_its_run() {
    takes_a_new_round_of_a_release_run(Engine::Sled).await;
}

#[tokio::test]
async fn a_postgres_store_written_by_the_previous_release_takes_a_new_round_of_its_run() {
    takes_a_new_round_of_a_release_run(Engine::Postgres).await;
}
