//! The agent loop told right, through the real proxy against the mock upstream:
//! retries are attempts of one round, tool steps sit between rounds, a run ends as
//! its last round did, and calls that name no run are grouped by their conversation.

use super::util::*;
use llmtap::record::{CallRecord, CallStatus, InvocationRecord};
use llmtap::server::Running;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CHAT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_RESPONSE: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
const RATE_LIMITED: &str =
    r#"{"error":{"type":"rate_limit_exceeded","message":"Rate limit reached for requests"}}"#;

async fn start(
    extra_providers: &[(&str, &str)],
    mock: &MockUpstream,
    tag: &str,
) -> (Running, TempDir) {
    let dir = TempDir::new(tag);
    let mut toml = provider_toml("mock", "openai", &mock.url());
    toml.push_str(&provider_toml("mockant", "anthropic", &mock.url()));
    for (name, kind) in extra_providers {
        toml.push_str(&provider_toml(name, kind, &mock.url()));
    }
    let mut config = test_config(dir.path(), &toml);
    on_test_engine(&mut config, tag).await;
    (start_llmtap(config).await, dir)
}

on_both_engines!(
    a_429_then_success_is_one_round_of_two_attempts,
    an_anthropic_529_then_success_is_one_round_without_headers,
    three_500s_then_the_sdk_gives_up_is_one_failed_round,
    parallel_tool_calls_join_the_tool_http_calls_in_their_gap,
    a_headerless_conversation_is_grouped_into_runs_of_one_session,
    a_coding_agents_session_header_is_the_session_and_explicit_headers_win,
    the_session_list_filters_by_active_days_agent_and_model,
    headerless_tool_calls_join_the_run_whose_round_asked_for_them,
    responses_follow_ups_by_previous_response_id_continue_their_run,
    an_earlier_started_call_stored_last_renumbers_its_run_by_start_time,
);

/// Waits until the run has rolled up `llm_calls` LLM calls and `tool_calls` tool calls.
async fn wait_run(
    running: &Running,
    id: &str,
    llm_calls: u32,
    tool_calls: u32,
) -> InvocationRecord {
    for _ in 0..500 {
        if let Some(inv) = invocation(running, id).filter(|inv| {
            inv.rounds + inv.agent_loop.retries >= llm_calls
                && inv.agent_loop.tool_calls >= tool_calls
        }) {
            return inv;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "run {id} never reached {llm_calls} LLM calls: {:?}",
        invocation(running, id)
    );
}

async fn run_detail(running: &Running, id: &str) -> Value {
    let got = api_get(running, &format!("/api/v1/invocations/{id}")).await;
    assert_eq!(got.status, 200);
    got.json()
}

fn attempts(detail: &Value, round: usize) -> Vec<(u64, String)> {
    detail["rounds"][round]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Answers `failures` times with `status` and `body`, then `success`.
fn failing_then(
    failures: usize,
    status: u16,
    body: &'static str,
    success: &'static str,
) -> impl Fn(&SeenRequest) -> MockResponse + Send + Sync + 'static {
    let seen = Arc::new(AtomicUsize::new(0));
    move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) < failures {
            MockResponse::json(status, body).header("retry-after", "0")
        } else {
            MockResponse::json(200, success)
        }
    }
}

async fn a_429_then_success_is_one_round_of_two_attempts() {
    let mock = MockUpstream::start(failing_then(1, 429, RATE_LIMITED, CHAT_RESPONSE)).await;
    let (running, _dir) = start(&[], &mock, "loop429").await;
    let mut ids = Vec::new();
    for retry in ["0", "1"] {
        let got = post_json(
            running.proxy_addr,
            "/mock/v1/chat/completions",
            &[
                ("x-llmtap-invocation-id", "run-429"),
                ("x-stainless-retry-count", retry),
            ],
            CHAT_BODY,
        )
        .await;
        ids.push(got.call_id());
        // The SDK's backoff.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let inv = wait_run(&running, "run-429", 2, 0).await;
    assert_eq!(inv.rounds, 1);
    assert_eq!(inv.agent_loop.retries, 1);
    assert_eq!(inv.status, Some(CallStatus::Success));
    for (id, attempt) in ids.iter().zip([1, 2]) {
        let call = wait_call(&running, id).await;
        assert_eq!((call.round, call.retry), (1, attempt - 1), "{id}");
    }
    let v = run_detail(&running, "run-429").await;
    assert_eq!(v["round_count"], 1, "{v}");
    assert_eq!(v["llm_calls"], 2);
    assert_eq!(v["rounds"].as_array().unwrap().len(), 1);
    assert_eq!(
        attempts(&v, 0),
        vec![(1, "rate_limited".to_string()), (2, "success".to_string())]
    );
    let second = &v["rounds"][0]["attempts"][1];
    assert_eq!(second["retry_hint"], 1);
    assert!(second["backoff_ms"].as_f64().unwrap() >= 40.0, "{second}");
    assert!(v["rounds"][0]["attempts"][0]["hint"]
        .as_str()
        .unwrap()
        .contains("rate limit hit (429)"));
    assert_eq!(v["outcome"]["status"], "success");
    assert_eq!(v["outcome"]["text"], "success, recovered after 1 retry");
    assert_eq!(v["outcome"]["failed"], false);
    let gaps = v["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0]["kind"], "backoff");
    assert_eq!(gaps[0]["label"], "backoff");
    // The run recovered: no run error, one failed LLM call.
    let summary = api_get(&running, "/api/v1/summary").await.json();
    assert_eq!(summary["errors_24h"], 0, "{summary}");
    assert_eq!(summary["failed_calls_24h"], 1);
    assert_eq!(summary["total_runs"], 1);
    assert_eq!(summary["total_calls"], 2);
    // CSV: one run of one round and one retry; the calls with their attempts.
    let csv = String::from_utf8(
        api_get(&running, "/api/v1/invocations.csv")
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    assert_eq!(
        (row[col("rounds")], row[col("retries")], row[col("status")]),
        ("1", "1", "success"),
        "{csv}"
    );
    let csv =
        String::from_utf8(api_get(&running, "/api/v1/calls.csv").await.body.to_vec()).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let (round, attempt) = (
        header.iter().position(|h| *h == "round").unwrap(),
        header.iter().position(|h| *h == "attempt").unwrap(),
    );
    let mut places: Vec<(String, String)> = csv
        .lines()
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            (cells[round].to_string(), cells[attempt].to_string())
        })
        .collect();
    places.sort();
    assert_eq!(
        places,
        vec![("1".into(), "1".into()), ("1".into(), "2".into())]
    );
    // OpenTelemetry: the run span says how it ended; each call its attempt.
    let inv = invocation(&running, "run-429").unwrap();
    let calls: Vec<CallRecord> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(wait_call(&running, id).await);
        }
        v
    };
    let spans = llmtap::otel::spans::invocation_spans(
        &inv,
        &calls,
        &llmtap::otel::spans::SpanOptions::default(),
    );
    let attr = |span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    assert_eq!(
        attr(&spans[0], "llmtap.outcome"),
        Some(Any::StringValue("success, recovered after 1 retry".into()))
    );
    assert_eq!(attr(&spans[0], "llmtap.retries"), Some(Any::IntValue(1)));
    assert_eq!(attr(&spans[2], "llmtap.attempt"), Some(Any::IntValue(2)));
    running.shutdown().await.unwrap();
}

const ANTHROPIC_BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const ANTHROPIC_RESPONSE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":1}}"#;
const OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;

/// Without any run header: the retry repeats the failed request, so the
/// conversation grouping keeps it in the same run and the loop makes it an attempt.
async fn an_anthropic_529_then_success_is_one_round_without_headers() {
    let mock = MockUpstream::start(failing_then(1, 529, OVERLOADED, ANTHROPIC_RESPONSE)).await;
    let (running, _dir) = start(&[], &mock, "loop529").await;
    let first = post_json(
        running.proxy_addr,
        "/mockant/v1/messages",
        &[("x-stainless-retry-count", "0")],
        ANTHROPIC_BODY,
    )
    .await;
    assert_eq!(first.status, 529);
    let second = post_json(
        running.proxy_addr,
        "/mockant/v1/messages",
        &[("x-stainless-retry-count", "1")],
        ANTHROPIC_BODY,
    )
    .await;
    assert_eq!(second.status, 200);
    let run = first.header("x-llmtap-invocation-id").unwrap().to_string();
    let inv = wait_run(&running, &run, 2, 0).await;
    assert_eq!(inv.rounds, 1);
    assert_eq!(inv.status, Some(CallStatus::Success));
    let retry = wait_call(&running, &second.call_id()).await;
    assert_eq!(retry.invocation_id, run);
    assert_eq!((retry.round, retry.retry), (1, 1));
    assert_eq!(retry.grouped_by_conversation.as_deref(), Some("continued"));
    let v = run_detail(&running, &run).await;
    assert_eq!(
        attempts(&v, 0),
        vec![(1, "failed".to_string()), (2, "success".to_string())]
    );
    assert_eq!(v["rounds"][0]["attempts"][0]["http_status"], 529);
    assert_eq!(v["outcome"]["text"], "success, recovered after 1 retry");
    running.shutdown().await.unwrap();
}

async fn three_500s_then_the_sdk_gives_up_is_one_failed_round() {
    let mock = MockUpstream::start(|_| {
        MockResponse::json(500, r#"{"error":{"type":"server_error","message":"boom"}}"#)
    })
    .await;
    let (running, _dir) = start(&[], &mock, "loop500").await;
    for retry in ["0", "1", "2"] {
        let got = post_json(
            running.proxy_addr,
            "/mock/v1/chat/completions",
            &[
                ("x-llmtap-invocation-id", "run-500"),
                ("x-stainless-retry-count", retry),
            ],
            CHAT_BODY,
        )
        .await;
        assert_eq!(got.status, 500);
    }
    let inv = wait_run(&running, "run-500", 3, 0).await;
    assert_eq!(inv.rounds, 1);
    assert_eq!(inv.agent_loop.retries, 2);
    assert_eq!(inv.status, Some(CallStatus::Failed));
    let v = run_detail(&running, "run-500").await;
    assert_eq!(v["round_count"], 1);
    assert_eq!(
        attempts(&v, 0),
        vec![
            (1, "failed".to_string()),
            (2, "failed".to_string()),
            (3, "failed".to_string())
        ]
    );
    assert_eq!(v["outcome"]["status"], "failed");
    assert_eq!(v["outcome"]["failed"], true);
    assert_eq!(
        v["outcome"]["text"],
        "failed after 3 attempts of its last round"
    );
    let kinds: Vec<&str> = v["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["backoff", "backoff"]);
    let summary = api_get(&running, "/api/v1/summary").await.json();
    assert_eq!(summary["errors_24h"], 1, "{summary}");
    assert_eq!(summary["failed_calls_24h"], 3);
    let agents = api_get(&running, "/api/v1/agents").await.json();
    let row = &agents["items"][0];
    assert_eq!(
        (row["runs"].clone(), row["failed_runs"].clone()),
        (json!(1), json!(1)),
        "{agents}"
    );
    assert_eq!(row["run_error_rate"], 1.0);
    assert_eq!(row["llm_calls"], 3);
    running.shutdown().await.unwrap();
}

const TWO_TOOLS: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_paris","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_tokyo","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Tokyo\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

async fn parallel_tool_calls_join_the_tool_http_calls_in_their_gap() {
    let mock = MockUpstream::start(|req| {
        let body = String::from_utf8_lossy(&req.body);
        if req.path_and_query.starts_with("/weather") {
            let mut r = MockResponse::json(200, r#"{"temp":20}"#);
            r.delay_head = Duration::from_millis(20);
            r
        } else if body.contains("call_paris") {
            MockResponse::json(200, CHAT_RESPONSE)
        } else {
            MockResponse::json(200, TWO_TOOLS)
        }
    })
    .await;
    let (running, _dir) = start(&[("tool", "http")], &mock, "looptools").await;
    let run = [("x-llmtap-invocation-id", "run-tools")];
    let r1 = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &run,
        CHAT_BODY,
    )
    .await;
    let (tokyo, paris) = tokio::join!(
        send(
            running.proxy_addr,
            "GET",
            "/tool/weather?city=Tokyo",
            &run,
            ""
        ),
        send(
            running.proxy_addr,
            "GET",
            "/tool/weather?city=Paris",
            &run,
            ""
        ),
    );
    let second = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_paris","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_tokyo","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Tokyo\"}"}}]},{"role":"tool","tool_call_id":"call_paris","content":"20C in Paris"},{"role":"tool","tool_call_id":"call_tokyo","content":"20C in Tokyo"}]}"#;
    let r2 = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &run,
        second,
    )
    .await;
    let inv = wait_run(&running, "run-tools", 2, 2).await;
    assert_eq!(inv.rounds, 2);
    assert_eq!(inv.agent_loop.retries, 0);
    assert_eq!(inv.agent_loop.tool_calls, 2);
    assert_eq!(inv.status, Some(CallStatus::Success));
    let v = run_detail(&running, "run-tools").await;
    assert_eq!(v["round_count"], 2);
    assert_eq!(v["tool_calls"], 2);
    let tools = v["rounds"][0]["tool_calls"].as_array().unwrap();
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0]["id"], "call_paris");
    assert_eq!(tools[0]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(tools[0]["result"], "20C in Paris");
    assert_eq!(tools[0]["result_round"], 2);
    assert_eq!(tools[0]["result_call_id"], r2.call_id());
    assert_eq!(tools[0]["http_call_ids"], json!([paris.call_id()]));
    assert_eq!(tools[1]["id"], "call_tokyo");
    assert_eq!(tools[1]["result"], "20C in Tokyo");
    assert_eq!(tools[1]["http_call_ids"], json!([tokyo.call_id()]));
    let gaps = v["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{v}");
    assert_eq!(gaps[0]["kind"], "tool");
    assert_eq!(gaps[0]["label"], "tool time");
    assert_eq!(gaps[0]["tool_calls"].as_array().unwrap().len(), 2);
    for seen in gaps[0]["tool_calls"].as_array().unwrap() {
        let expected = if seen["call_id"] == paris.call_id() {
            "call_paris"
        } else {
            "call_tokyo"
        };
        assert_eq!(seen["joined_to"], expected, "{seen}");
        assert_eq!(seen["method"], "GET");
        assert_eq!(seen["http_status"], 200);
    }
    assert!(gaps[0]["duration_ms"].as_f64().unwrap() >= 20.0);
    let _ = r1;
    // Counts: runs, LLM calls and tool calls apart; no model group of tool calls.
    let by_model = api_get(&running, "/api/v1/stats?group_by=model")
        .await
        .json();
    let items = by_model["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{by_model}");
    assert_eq!(items[0]["group"], "gpt-4o-mini");
    assert_eq!(
        (
            items[0]["runs"].clone(),
            items[0]["llm_calls"].clone(),
            items[0]["tool_calls"].clone()
        ),
        (json!(1), json!(2), json!(0))
    );
    assert!(items[0]["p50_latency_ms"].as_f64().is_some());
    let by_agent = api_get(&running, "/api/v1/stats?group_by=agent")
        .await
        .json();
    let items = by_agent["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{by_agent}");
    assert_eq!(
        (
            items[0]["runs"].clone(),
            items[0]["llm_calls"].clone(),
            items[0]["tool_calls"].clone()
        ),
        (json!(1), json!(2), json!(2))
    );
    assert_eq!(items[0]["llm_call_error_rate"], 0.0);
    let by_tool = api_get(&running, "/api/v1/stats?group_by=tool")
        .await
        .json();
    let items = by_tool["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{by_tool}");
    assert_eq!(items[0]["tool"], "tool");
    assert_eq!(
        (items[0]["calls"].clone(), items[0]["failures"].clone()),
        (json!(2), json!(0))
    );
    assert!(items[0]["p95_duration_ms"].as_f64().unwrap() >= 20.0);
    let summary = api_get(&running, "/api/v1/summary").await.json();
    assert_eq!(
        summary["total_calls"], 2,
        "tool calls are not LLM calls: {summary}"
    );
    running.shutdown().await.unwrap();
}

const TOOL_ASK: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_N","type":"function","function":{"name":"search","arguments":"{\"q\":\"N\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

fn tool_turn(n: u32) -> Value {
    json!({"role":"assistant","content":null,"tool_calls":[{"id":format!("call_{n}"),"type":"function","function":{"name":"search","arguments":format!("{{\"q\":\"{n}\"}}")}}]})
}

/// A coding agent with no headers: three rounds continued by tool results, then a
/// new user turn that starts a second run in the same session.
async fn a_headerless_conversation_is_grouped_into_runs_of_one_session() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let mock = MockUpstream::start(move |req| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        // Ask for a tool after the first user turn and after the first tool result.
        if last["role"] == "user" && last["content"] == "fix the bug"
            || last["role"] == "tool" && last["tool_call_id"] == "call_1"
        {
            MockResponse::json(
                200,
                &TOOL_ASK
                    .replace("call_N", &format!("call_{n}"))
                    .replace("\\\"N\\\"", &format!("\\\"{n}\\\"")),
            )
        } else {
            MockResponse::json(200, CHAT_RESPONSE)
        }
    })
    .await;
    let (running, _dir) = start(&[], &mock, "loopconv").await;
    let system = json!({"role":"system","content":"You are a coding agent."});
    let user = json!({"role":"user","content":"fix the bug"});
    let mut messages = vec![system.clone(), user];
    let mut ids = Vec::new();
    let send_turn = |messages: &Vec<Value>| {
        let body = json!({"model":"gpt-4o-mini","messages":messages}).to_string();
        let addr = running.proxy_addr;
        async move { post_json(addr, "/mock/v1/chat/completions", &[], &body).await }
    };
    // Round 1: asks for call_1.
    ids.push(send_turn(&messages).await.call_id());
    messages.push(tool_turn(1));
    messages.push(json!({"role":"tool","tool_call_id":"call_1","content":"found it"}));
    // Round 2: asks for call_2.
    ids.push(send_turn(&messages).await.call_id());
    messages.push(tool_turn(2));
    messages.push(json!({"role":"tool","tool_call_id":"call_2","content":"patched"}));
    // Round 3: answers.
    ids.push(send_turn(&messages).await.call_id());
    messages.push(json!({"role":"assistant","content":"hello"}));
    messages.push(json!({"role":"user","content":"now add a test"}));
    // A new user turn: a new run of the same session.
    ids.push(send_turn(&messages).await.call_id());
    wait_records(&running, 4).await;
    let calls: Vec<CallRecord> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(wait_call(&running, id).await);
        }
        v
    };
    let first_run = calls[0].invocation_id.clone();
    let places: Vec<(String, u32, Option<&str>)> = calls
        .iter()
        .map(|c| {
            (
                c.invocation_id.clone(),
                c.round,
                c.grouped_by_conversation.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        places[..3],
        [
            (first_run.clone(), 1, Some("new")),
            (first_run.clone(), 2, Some("continued")),
            (first_run.clone(), 3, Some("continued")),
        ]
    );
    let second_run = calls[3].invocation_id.clone();
    assert_ne!(second_run, first_run);
    assert_eq!(
        (calls[3].round, calls[3].grouped_by_conversation.as_deref()),
        (1, Some("new_turn"))
    );
    let session = calls[0].metadata.session_id.clone().unwrap();
    assert!(session.starts_with("conv_"), "{session}");
    for c in &calls {
        assert_eq!(c.metadata.session_id.as_deref(), Some(session.as_str()));
    }
    let inv = wait_run(&running, &first_run, 3, 0).await;
    assert_eq!(inv.rounds, 3);
    assert_eq!(inv.session_id.as_deref(), Some(session.as_str()));
    let v = run_detail(&running, &first_run).await;
    let kinds: Vec<&str> = v["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["tool", "tool"]);
    assert_eq!(v["rounds"][0]["tool_calls"][0]["result"], "found it");
    let s = api_get(&running, &format!("/api/v1/sessions/{session}")).await;
    assert_eq!(s.status, 200);
    let s = s.json();
    let timeline: Vec<(String, u64)> = s["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["invocation_id"].as_str().unwrap().to_string(),
                e["round"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        timeline,
        vec![
            (first_run.clone(), 1),
            (first_run.clone(), 2),
            (first_run.clone(), 3),
            (second_run.clone(), 1),
        ]
    );
    // The session as a conversation: each run's user turn, tool calls with their
    // arguments and results, replies; every entry names the round it opens.
    let c = api_get(
        &running,
        &format!("/api/v1/sessions/{session}?conversation=true"),
    )
    .await;
    assert_eq!(c.status, 200);
    let c = c.json();
    let turns: Vec<(String, u64, Value)> = c["conversation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_string(),
                t["round"].as_u64().unwrap(),
                t["text"].clone(),
            )
        })
        .collect();
    assert_eq!(
        turns,
        vec![
            ("user".to_string(), 1, json!("fix the bug")),
            ("tool_call".to_string(), 1, json!("found it")),
            ("tool_call".to_string(), 2, json!("patched")),
            ("reply".to_string(), 3, json!("hello")),
            ("user".to_string(), 1, json!("now add a test")),
            ("reply".to_string(), 1, json!("hello")),
        ],
        "{c}"
    );
    assert_eq!(c["conversation"][1]["name"], "search");
    assert_eq!(c["conversation"][1]["arguments"], "{\"q\":\"1\"}");
    assert_eq!(c["conversation"][4]["invocation_id"], second_run.as_str());
    running.shutdown().await.unwrap();
}

async fn a_coding_agents_session_header_is_the_session_and_explicit_headers_win() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, CHAT_RESPONSE)).await;
    let (running, _dir) = start(&[], &mock, "loopcc").await;
    let cc = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[("x-claude-code-session-id", "cc-session-1")],
        CHAT_BODY,
    )
    .await;
    let explicit = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[
            ("x-claude-code-session-id", "cc-session-1"),
            ("x-llmtap-session-id", "mine"),
            ("x-llmtap-invocation-id", "run-explicit"),
        ],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"other"}]}"#,
    )
    .await;
    let cc = wait_call(&running, &cc.call_id()).await;
    assert_eq!(cc.metadata.session_id.as_deref(), Some("cc-session-1"));
    assert_eq!(cc.grouped_by_conversation.as_deref(), Some("new"));
    let explicit = wait_call(&running, &explicit.call_id()).await;
    assert_eq!(explicit.metadata.session_id.as_deref(), Some("mine"));
    assert_eq!(explicit.invocation_id, "run-explicit");
    assert_eq!(explicit.grouped_by_conversation, None);
    let s = api_get(&running, "/api/v1/sessions/cc-session-1").await;
    assert_eq!(s.status, 200);
    assert_eq!(s.json()["timeline"].as_array().unwrap().len(), 1);
    running.shutdown().await.unwrap();
}

/// The page in a real headless Chromium: a round's attempts with their backoff, the
/// Tools section of the stats view, and a session read as a conversation.
#[tokio::test]
async fn the_page_shows_attempts_tools_and_the_session_as_a_conversation() {
    let failures = Arc::new(AtomicUsize::new(0));
    let seen = failures.clone();
    let mock = MockUpstream::start(move |req| {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        if req.path_and_query.starts_with("/weather") {
            MockResponse::json(200, r#"{"temp":20}"#)
        } else if body.contains("retry me") && seen.fetch_add(1, Ordering::SeqCst) == 0 {
            MockResponse::json(429, RATE_LIMITED)
        } else if body.contains("\"tool\"") || body.contains("retry me") {
            MockResponse::json(200, CHAT_RESPONSE)
        } else {
            MockResponse::json(200, &TOOL_ASK.replace("call_N", "call_1"))
        }
    })
    .await;
    let (running, _dir) = start(&[("tool", "http")], &mock, "looppage").await;
    let retry_body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"retry me"}]}"#;
    for n in ["0", "1"] {
        post_json(
            running.proxy_addr,
            "/mock/v1/chat/completions",
            &[
                ("x-llmtap-invocation-id", "run-retry"),
                ("x-stainless-retry-count", n),
            ],
            retry_body,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // A headerless conversation: the user turn, a tool call and its HTTP call, the reply.
    let first =
        json!({"model":"gpt-4o-mini","messages":[{"role":"user","content":"what is the weather"}]});
    let r1 = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[],
        &first.to_string(),
    )
    .await;
    send(
        running.proxy_addr,
        "GET",
        "/tool/weather?city=Paris",
        &[],
        "",
    )
    .await;
    let second = json!({"model":"gpt-4o-mini","messages":[
        {"role":"user","content":"what is the weather"},
        tool_turn(1),
        {"role":"tool","tool_call_id":"call_1","content":"sunny, 20C"}]});
    let r2 = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[],
        &second.to_string(),
    )
    .await;
    wait_run(&running, "run-retry", 2, 0).await;
    let session = wait_call(&running, &r1.call_id())
        .await
        .metadata
        .session_id
        .unwrap();
    wait_call(&running, &r2.call_id()).await;
    wait_records(&running, 5).await;

    let browser = super::webdriver::Browser::start().await;
    let page = format!("http://{}/", running.api_addr);
    browser.goto(&format!("{page}?run=run-retry")).await;
    browser.wait_count("table.rounds tr.round", 1).await;
    browser.wait_text("table.rounds .attempts", "backoff").await;
    assert_eq!(browser.count("table.rounds .attempts .attempt").await, 2);
    assert_eq!(browser.count("svg.waterfall rect.bar").await, 2);
    assert_eq!(browser.count("svg.waterfall .gap-backoff").await, 1);
    browser
        .wait_text(".run-head", "recovered after 1 retry")
        .await;

    browser.goto(&format!("{page}?view=stats")).await;
    browser.wait_text(".tools-section table", "tool").await;
    let tools = browser.text(".tools-section table").await;
    assert!(tools.contains("Failures"), "{tools}");
    // The Agents view counts tool calls apart from LLM calls.
    browser.goto(&format!("{page}?view=agents")).await;
    browser.wait_count("table.agents td.tool-calls", 1).await;
    assert_eq!(browser.text("table.agents td.tool-calls").await.trim(), "1");
    assert_eq!(
        browser.text("table.agents td.tool-failures").await.trim(),
        "0"
    );

    // The session list's filters, from the address and from the form.
    browser
        .goto(&format!(
            "{page}?view=sessions&model=gpt-4o-mini&from=2020-01-01"
        ))
        .await;
    browser.wait_count("table.sessions tr.session", 1).await;
    assert_eq!(
        browser
            .js(
                "return document.querySelector('.session-filters input[name=model]').value",
                json!([]),
            )
            .await,
        json!("gpt-4o-mini")
    );
    browser
        .goto(&format!("{page}?view=sessions&agent=nobody"))
        .await;
    browser
        .wait_text("main", "No session matches these filters")
        .await;
    browser
        .goto(&format!(
            "{page}?view=sessions&session={}",
            urlencode(&session)
        ))
        .await;
    // (The tool's HTTP call named no run: it stays a run of its own, README.)
    browser.wait_count("ol.conversation li", 3).await;
    let kinds = browser
        .js(
            "return [...document.querySelectorAll('ol.conversation li')].map((li) => li.className)",
            json!([]),
        )
        .await;
    assert_eq!(kinds, json!(["turn-user", "turn-tool_call", "turn-reply"]));
    assert!(browser
        .text("ol.conversation li.turn-user")
        .await
        .contains("what is the weather"));
    let tool_call = browser.text("ol.conversation li.turn-tool_call").await;
    assert!(
        tool_call.contains("search") && tool_call.contains("sunny, 20C"),
        "{tool_call}"
    );
    assert!(browser
        .text("ol.conversation li.turn-reply")
        .await
        .contains("hello"));
    // Each entry opens its round.
    browser.click("ol.conversation li.turn-reply").await;
    browser.wait_count("table.rounds tr.round", 2).await;
    browser.close().await;
    running.shutdown().await.unwrap();
}

/// Writes `calls` as the writer would (each run rolled up from its calls).
fn write_calls(running: &Running, calls: &[CallRecord]) {
    let mut runs: std::collections::HashMap<String, InvocationRecord> = Default::default();
    for c in calls {
        let prior = runs
            .remove(&c.invocation_id)
            .or_else(|| running.store.get_invocation(&c.invocation_id).unwrap());
        runs.insert(c.invocation_id.clone(), llmtap::record::roll_up(prior, c));
    }
    let runs: Vec<InvocationRecord> = runs.into_values().collect();
    running.store.write_batch(calls, &runs).unwrap();
}

fn session_ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The session list's filters: days a session was active (UTC, `to` exclusive),
/// its agent, one of its models; with paging and exact totals, on both engines.
async fn the_session_list_filters_by_active_days_agent_and_model() {
    use super::synthetic::synthetic_call;
    let mock = MockUpstream::start(|_| MockResponse::json(200, CHAT_RESPONSE)).await;
    let (running, _dir) = start(&[], &mock, "loopsessions").await;
    let at = |text: &str| llmtap::timefmt::parse_rfc3339_us(text).unwrap();
    let call = |run: &str, t: &str, agent: &str, session: &str, model: usize| {
        synthetic_call(
            run,
            1,
            at(t),
            agent,
            "t",
            Some(session),
            model,
            CallStatus::Success,
            10,
            1,
        )
    };
    // Models by index: 0 gpt-4o-mini, 1 gpt-4o, 2 claude-sonnet-4, 3 claude-haiku-4.
    let mut tool = call("r-span-2", "2026-05-29T00:30:00Z", "coder", "s-span", 4);
    tool.kind = "http".into();
    tool.model = Some("not-a-model".into());
    write_calls(
        &running,
        &[
            call("r-c", "2026-05-27T10:00:00Z", "coder", "s-c", 0),
            call("r-a", "2026-05-28T20:00:00Z", "coder", "s-a", 0),
            call("r-a", "2026-05-28T21:00:00Z", "coder", "s-a", 0),
            call("r-span", "2026-05-28T23:00:00Z", "coder", "s-span", 1),
            tool,
            call("r-span-2", "2026-05-29T01:00:00Z", "coder", "s-span", 2),
            call("r-b", "2026-05-30T09:00:00Z", "support", "s-b", 3),
        ],
    );
    let list = |query: &str| {
        let running = &running;
        let path = format!("/api/v1/sessions?{query}");
        async move {
            let got = api_get(running, &path).await;
            assert_eq!(
                got.status,
                200,
                "{path}: {}",
                String::from_utf8_lossy(&got.body)
            );
            got.json()
        }
    };
    let all = list("").await;
    assert_eq!(session_ids(&all), ["s-b", "s-span", "s-a", "s-c"]);
    assert_eq!(all["total"], 4);
    let span = &all["items"][1];
    // The tool call's model is no model of the session's.
    assert_eq!(
        span["models"],
        json!(["gpt-4o", "claude-sonnet-4"]),
        "{span}"
    );
    for (query, expected) in [
        // Active on the 29th: the session that crossed midnight only.
        ("from=2026-05-29&to=2026-05-30", vec!["s-span"]),
        ("from=2026-05-28&to=2026-05-29", vec!["s-span", "s-a"]),
        ("from=2026-05-29", vec!["s-b", "s-span"]),
        ("to=2026-05-28", vec!["s-c"]),
        ("agent=coder", vec!["s-span", "s-a", "s-c"]),
        ("agent=support", vec!["s-b"]),
        ("model=claude-sonnet-4", vec!["s-span"]),
        ("model=not-a-model", vec![]),
        ("agent=coder&model=gpt-4o-mini", vec!["s-a", "s-c"]),
        (
            "agent=coder&model=gpt-4o-mini&from=2026-05-28T20:30:00Z",
            vec!["s-a"],
        ),
    ] {
        let page = list(query).await;
        assert_eq!(session_ids(&page), expected, "{query}: {page}");
        assert_eq!(page["total"], expected.len(), "{query}: {page}");
        assert_eq!(page["total_is_lower_bound"], false, "{query}");
    }
    // Pages of a filtered list walk every match once.
    let first = list("agent=coder&limit=2").await;
    assert_eq!(session_ids(&first), ["s-span", "s-a"]);
    assert_eq!(first["total"], 3);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = list(&format!("agent=coder&limit=2&cursor={cursor}")).await;
    assert_eq!(session_ids(&second), ["s-c"]);
    assert!(second["next_cursor"].is_null(), "{second}");
    let bad = api_get(&running, "/api/v1/sessions?from=2026-05-30&to=2026-05-29").await;
    assert_eq!(bad.status, 400);
    let bad = api_get(&running, "/api/v1/sessions?from=yesterday").await;
    assert_eq!(bad.status, 400);
    running.shutdown().await.unwrap();
}

/// Tool HTTP calls that name no run join the run whose round asked for them, by
/// their argument values, in the gap after that round; one that matches no
/// requested tool call stays a run of its own.
async fn headerless_tool_calls_join_the_run_whose_round_asked_for_them() {
    let mock = MockUpstream::start(|req| {
        let body = String::from_utf8_lossy(&req.body);
        if req.path_and_query.starts_with("/weather") {
            MockResponse::json(200, r#"{"temp":20}"#)
        } else if req.path_and_query.starts_with("/news") {
            MockResponse::json(404, r#"{"error":"no news"}"#)
        } else if body.contains("call_paris") {
            MockResponse::json(200, CHAT_RESPONSE)
        } else {
            MockResponse::json(200, TWO_TOOLS)
        }
    })
    .await;
    let (running, _dir) = start(&[("tool", "http")], &mock, "looptooljoin").await;
    let first = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"weather in Paris and Tokyo?"}]}"#;
    let r1 = post_json(running.proxy_addr, "/mock/v1/chat/completions", &[], first).await;
    let tokyo = send(
        running.proxy_addr,
        "GET",
        "/tool/weather?city=Tokyo",
        &[],
        "",
    )
    .await;
    let paris = send(
        running.proxy_addr,
        "GET",
        "/tool/weather?city=Paris",
        &[],
        "",
    )
    .await;
    let other = send(running.proxy_addr, "GET", "/tool/news?topic=rust", &[], "").await;
    let second = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"weather in Paris and Tokyo?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_paris","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_tokyo","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Tokyo\"}"}}]},{"role":"tool","tool_call_id":"call_paris","content":"20C in Paris"},{"role":"tool","tool_call_id":"call_tokyo","content":"20C in Tokyo"}]}"#;
    let r2 = post_json(running.proxy_addr, "/mock/v1/chat/completions", &[], second).await;
    let run = wait_call(&running, &r1.call_id()).await.invocation_id;
    let inv = wait_run(&running, &run, 2, 2).await;
    assert_eq!(
        (
            inv.rounds,
            inv.agent_loop.tool_calls,
            inv.agent_loop.tool_failures
        ),
        (2, 2, 0)
    );
    assert_eq!(wait_call(&running, &r2.call_id()).await.invocation_id, run);
    for got in [&tokyo, &paris] {
        let call = wait_call(&running, &got.call_id()).await;
        assert_eq!(call.invocation_id, run, "{}", call.path);
        assert_eq!(call.grouped_by_conversation.as_deref(), Some("tool"));
        assert_eq!(call.metadata.session_id, inv.session_id);
    }
    let lone = wait_call(&running, &other.call_id()).await;
    assert_ne!(lone.invocation_id, run);
    assert_eq!(lone.grouped_by_conversation, None);
    let v = run_detail(&running, &run).await;
    assert_eq!(v["tool_calls"], 2, "{v}");
    let tools = v["rounds"][0]["tool_calls"].as_array().unwrap();
    assert_eq!(tools[0]["http_call_ids"], json!([paris.call_id()]));
    assert_eq!(tools[1]["http_call_ids"], json!([tokyo.call_id()]));
    let gaps = v["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{v}");
    assert_eq!(gaps[0]["kind"], "tool");
    let joined: Vec<&str> = gaps[0]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["joined_to"].as_str().unwrap())
        .collect();
    assert_eq!(joined, ["call_tokyo", "call_paris"]);
    // Per agent (none named here): LLM calls, and tool calls with their failures.
    let agents = api_get(&running, "/api/v1/agents").await.json();
    let row = &agents["items"][0];
    assert_eq!(agents["items"].as_array().unwrap().len(), 1, "{agents}");
    assert_eq!(
        (
            row["llm_calls"].clone(),
            row["tool_calls"].clone(),
            row["tool_failures"].clone()
        ),
        (json!(2), json!(3), json!(1)),
        "{agents}"
    );
    running.shutdown().await.unwrap();
}

/// OpenAI Responses requests that send only `previous_response_id` (the server keeps
/// the history): a tool result continues the run of the response it names; a new
/// user message starts a new run of the same session.
async fn responses_follow_ups_by_previous_response_id_continue_their_run() {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    let mock = MockUpstream::start(move |req| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let body = String::from_utf8_lossy(&req.body);
        let output = if n == 1 && !body.contains("previous_response_id") {
            r#"[{"type":"function_call","id":"fc_1","call_id":"call_1","name":"weather","arguments":"{\"city\":\"Paris\"}","status":"completed"}]"#
        } else {
            r#"[{"type":"message","id":"msg_1","role":"assistant","status":"completed","content":[{"type":"output_text","text":"sunny","annotations":[]}]}]"#
        };
        MockResponse::json(
            200,
            &format!(
                r#"{{"id":"resp_{n}","object":"response","status":"completed","model":"gpt-4o-mini","output":{output},"usage":{{"input_tokens":5,"output_tokens":1,"total_tokens":6}}}}"#
            ),
        )
    })
    .await;
    let (running, _dir) = start(&[], &mock, "loopprevresp").await;
    let post = |body: Value| {
        let addr = running.proxy_addr;
        async move { post_json(addr, "/mock/v1/responses", &[], &body.to_string()).await }
    };
    let r1 = post(json!({"model":"gpt-4o-mini","input":"weather in Paris?"})).await;
    let r2 = post(
        json!({"model":"gpt-4o-mini","previous_response_id":"resp_1",
        "input":[{"type":"function_call_output","call_id":"call_1","output":"20C"}]}),
    )
    .await;
    let r3 = post(
        json!({"model":"gpt-4o-mini","previous_response_id":"resp_2",
        "input":[{"role":"user","content":"and tomorrow?"}]}),
    )
    .await;
    // A response llmtap never saw: a conversation of its own.
    let r4 = post(
        json!({"model":"gpt-4o-mini","previous_response_id":"resp_unknown",
        "input":[{"type":"function_call_output","call_id":"call_9","output":"x"}]}),
    )
    .await;
    let calls = [
        wait_call(&running, &r1.call_id()).await,
        wait_call(&running, &r2.call_id()).await,
        wait_call(&running, &r3.call_id()).await,
        wait_call(&running, &r4.call_id()).await,
    ];
    let run = calls[0].invocation_id.clone();
    let got: Vec<(bool, u32, Option<&str>)> = calls
        .iter()
        .map(|c| {
            (
                c.invocation_id == run,
                c.round,
                c.grouped_by_conversation.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (true, 1, Some("new")),
            (true, 2, Some("continued")),
            (false, 1, Some("new_turn")),
            (false, 1, Some("new")),
        ]
    );
    assert_ne!(calls[3].invocation_id, calls[2].invocation_id);
    let session = calls[0].metadata.session_id.clone();
    assert!(session.is_some());
    assert_eq!(calls[1].metadata.session_id, session);
    assert_eq!(calls[2].metadata.session_id, session);
    assert_ne!(calls[3].metadata.session_id, session);
    let inv = wait_run(&running, &run, 2, 0).await;
    assert_eq!((inv.rounds, inv.status), (2, Some(CallStatus::Success)));
    let v = run_detail(&running, &run).await;
    assert_eq!(v["gaps"][0]["kind"], "tool", "{v}");
    running.shutdown().await.unwrap();
}

/// Two overlapping LLM calls of one run: the one that started first (round 1 by
/// start time) finishes last, after the other's round has been stored with a retry.
/// The writer renumbers the run when it arrives: on both engines the read API shows
/// it as round 1 and the other round's two attempts as round 2, attempts 1 and 2.
async fn an_earlier_started_call_stored_last_renumbers_its_run_by_start_time() {
    const SLOW: &str =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"slow question"}]}"#;
    const FAST: &str =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"fast question"}]}"#;
    let fast_seen = Arc::new(AtomicUsize::new(0));
    let mock = MockUpstream::start(move |req: &SeenRequest| {
        if String::from_utf8_lossy(&req.body).contains("slow question") {
            // The head at once, the body only when the test releases it.
            let mut answer = MockResponse::json(200, CHAT_RESPONSE);
            answer.steps.insert(0, Step::Hold);
            answer
        } else if fast_seen.fetch_add(1, Ordering::SeqCst) == 0 {
            MockResponse::json(429, RATE_LIMITED).header("retry-after", "0")
        } else {
            MockResponse::json(200, CHAT_RESPONSE)
        }
    })
    .await;
    let (running, _dir) = start(&[], &mock, "looplate").await;
    let proxy = running.proxy_addr;
    let slow = tokio::spawn(async move {
        post_json(
            proxy,
            "/mock/v1/chat/completions",
            &[("x-llmtap-invocation-id", "run-late")],
            SLOW,
        )
        .await
    });
    // The slow call has reached the provider (it started first).
    for _ in 0..500 {
        if !mock.seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.seen.lock().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut fast_ids = Vec::new();
    for retry in ["0", "1"] {
        let got = post_json(
            proxy,
            "/mock/v1/chat/completions",
            &[
                ("x-llmtap-invocation-id", "run-late"),
                ("x-stainless-retry-count", retry),
            ],
            FAST,
        )
        .await;
        fast_ids.push(got.call_id());
    }
    // Stored before the slow call ends: for now they are the run's only round.
    let before = wait_run(&running, "run-late", 2, 0).await;
    assert_eq!((before.rounds, before.agent_loop.retries), (1, 1));
    mock.release();
    let slow_id = slow.await.unwrap().call_id();
    let inv = wait_run(&running, "run-late", 3, 0).await;
    assert_eq!(
        (inv.rounds, inv.agent_loop.retries, inv.status),
        (2, 1, Some(CallStatus::Success))
    );
    let v = run_detail(&running, "run-late").await;
    assert_eq!(v["round_count"], 2, "{v}");
    assert_eq!(v["llm_calls"], 3, "{v}");
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{v}");
    assert_eq!(rounds[0]["round"], 1);
    assert_eq!(rounds[0]["attempts"][0]["call_id"], json!(slow_id), "{v}");
    assert_eq!(attempts(&v, 0), vec![(1, "success".to_string())]);
    assert_eq!(rounds[1]["round"], 2);
    assert_eq!(
        attempts(&v, 1),
        vec![(1, "rate_limited".to_string()), (2, "success".to_string())]
    );
    let ids: Vec<&Value> = rounds[1]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["call_id"])
        .collect();
    assert_eq!(ids, vec![&json!(fast_ids[0]), &json!(fast_ids[1])]);
    assert_eq!(
        v["outcome"]["text"], "success, recovered after 1 retry",
        "{v}"
    );
    // Every call reads its new place, in the run's timeline and on its own.
    let places: Vec<(String, u64, u64)> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["call_id"].as_str().unwrap().to_string(),
                e["round"].as_u64().unwrap(),
                e["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = vec![
        (slow_id.clone(), 1, 1),
        (fast_ids[0].clone(), 2, 1),
        (fast_ids[1].clone(), 2, 2),
    ];
    let mut got = places.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{v}");
    for (id, round, attempt) in &expected {
        let call = wait_call(&running, id).await;
        assert_eq!(
            (call.round, call.retry + 1),
            (*round as u32, *attempt as u32),
            "{id}"
        );
    }
    running.shutdown().await.unwrap();
}
