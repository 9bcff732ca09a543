//! OpenTelemetry export against a real OTLP/HTTP receiver: a hyper server in the
//! test that decodes `ExportTraceServiceRequest` and `ExportMetricsServiceRequest`
//! protobuf with the OpenTelemetry protocol definitions. Recorded exchanges are
//! replayed through llmtap (mock upstream), and the exported spans and metrics are
//! checked against the stored records.

use super::util::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmtap::record::CallRecord;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    /// Every request body as received, for the "no secret anywhere" check.
    raw: Arc<Mutex<Vec<Bytes>>>,
    headers: Arc<Mutex<Vec<http::HeaderMap>>>,
    undecodable: Arc<Mutex<Vec<String>>>,
}

impl Received {
    fn spans(&self) -> Vec<Span> {
        self.traces
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|r| r.scope_spans.iter())
            .flat_map(|s| s.spans.iter().cloned())
            .collect()
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1:0. With `hang`, it accepts connections and
/// never answers (a collector that is up but stuck).
async fn start_receiver(hang: bool) -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Received::default();
    let shared = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let got = shared.clone();
            tokio::spawn(async move {
                if hang {
                    let _keep = stream;
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    return;
                }
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let got = got.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        got.raw.lock().unwrap().push(body.clone());
                        got.headers.lock().unwrap().push(parts.headers.clone());
                        let answer = match parts.uri.path() {
                            "/v1/traces" => {
                                match ExportTraceServiceRequest::decode(body.as_ref()) {
                                    Ok(r) => {
                                        got.traces.lock().unwrap().push(r);
                                        ExportTraceServiceResponse::default().encode_to_vec()
                                    }
                                    Err(e) => {
                                        got.undecodable.lock().unwrap().push(e.to_string());
                                        Vec::new()
                                    }
                                }
                            }
                            "/v1/metrics" => {
                                match ExportMetricsServiceRequest::decode(body.as_ref()) {
                                    Ok(r) => {
                                        got.metrics.lock().unwrap().push(r);
                                        ExportMetricsServiceResponse::default().encode_to_vec()
                                    }
                                    Err(e) => {
                                        got.undecodable.lock().unwrap().push(e.to_string());
                                        Vec::new()
                                    }
                                }
                            }
                            other => {
                                got.undecodable
                                    .lock()
                                    .unwrap()
                                    .push(format!("path {other}"));
                                Vec::new()
                            }
                        };
                        let response = Response::builder()
                            .status(200)
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(Bytes::from(answer)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, got)
}

/// The mock response a recorded exchange scripts, an SSE answer's events 2 ms apart.
fn scripted(fx: &serde_json::Value) -> MockResponse {
    let mut reply = fixture_reply(fx, None, &[]);
    let is_sse = reply
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.contains("event-stream"));
    if is_sse {
        reply.steps = std::mem::take(&mut reply.steps)
            .into_iter()
            .flat_map(|step| [step, Step::Sleep(Duration::from_millis(2))])
            .collect();
    }
    reply
}

/// A mock upstream that answers each request with the next scripted response.
async fn scripted_upstream(scripts: Vec<MockResponse>) -> MockUpstream {
    let queue = Arc::new(Mutex::new(VecDeque::from(scripts)));
    MockUpstream::start(move |_| {
        queue
            .lock()
            .unwrap()
            .pop_front()
            .expect("more requests than scripted responses")
    })
    .await
}

/// Sends a fixture's request through llmtap (provider `up`), returns the stored call.
async fn send_fixture(
    running: &llmtap::server::Running,
    fx: &serde_json::Value,
    extra: &[(&str, &str)],
) -> CallRecord {
    let url = fixture_url(fx);
    let path = format!("/up{}", url.path_and_query().unwrap());
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some(v) = fx["request"]["headers"]["anthropic-version"].as_str() {
        headers.push(("anthropic-version", v));
    }
    headers.extend_from_slice(extra);
    let body = fx["request"]["body"].as_str().unwrap_or_default();
    let got = send(running.proxy_addr, "POST", &path, &headers, body).await;
    assert_eq!(
        got.status,
        fx["response"]["status"].as_u64().unwrap() as u16,
        "forwarded"
    );
    wait_call(running, &got.call_id()).await
}

fn otel_toml(addr: SocketAddr, extra: &str) -> String {
    format!(
        "[otel]\nendpoint = \"http://{addr}\"\nservice_name = \"agents-test\"\nexport_delay_ms = 50\nheaders = {{ \"x-collector-key\" = \"collector-secret-1\" }}\n{extra}\n[capture]\ninject_include_usage = false\n"
    )
}

fn attr(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .clone()
}

fn text(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        AnyValue::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        AnyValue::IntValue(v) => Some(v),
        _ => None,
    }
}

fn float(span: &Span, key: &str) -> Option<f64> {
    match attr(span, key)? {
        AnyValue::DoubleValue(v) => Some(v),
        _ => None,
    }
}

fn span_of_call<'a>(spans: &'a [Span], call: &CallRecord) -> &'a Span {
    let matching: Vec<&Span> = spans
        .iter()
        .filter(|s| text(s, "llmtap.call.id").as_deref() == Some(call.id.as_str()))
        .collect();
    assert_eq!(matching.len(), 1, "one span for call {}", call.id);
    matching[0]
}

/// The inference span of a call matches its stored record.
fn check_call_span(span: &Span, call: &CallRecord, run: &Span) {
    let model = call.model.as_deref().unwrap();
    assert_eq!(span.name, format!("chat {model}"));
    assert_eq!(span.trace_id, run.trace_id, "same trace as its run");
    assert_eq!(span.parent_span_id, run.span_id, "child of its run");
    assert_eq!(span.start_time_unix_nano, call.started_at_us * 1000);
    assert_eq!(text(span, "gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(text(span, "gen_ai.request.model").as_deref(), Some(model));
    assert_eq!(
        text(span, "gen_ai.response.model"),
        call.response_model.clone()
    );
    assert_eq!(
        int(span, "gen_ai.usage.input_tokens"),
        call.usage.input_tokens.map(|v| v as i64)
    );
    assert_eq!(
        int(span, "gen_ai.usage.output_tokens"),
        call.usage.output_tokens.map(|v| v as i64)
    );
    assert_eq!(
        int(span, "gen_ai.usage.cache_read.input_tokens"),
        call.usage.cache_read_tokens.map(|v| v as i64)
    );
    assert_eq!(
        int(span, "gen_ai.usage.cache_creation.input_tokens"),
        call.usage.cache_creation_tokens.map(|v| v as i64)
    );
    assert_eq!(float(span, "llmtap.cost_usd"), call.cost_usd);
    assert_eq!(int(span, "llmtap.round"), Some(i64::from(call.round)));
    assert_eq!(
        text(span, "llmtap.invocation.id").as_deref(),
        Some(call.invocation_id.as_str())
    );
    assert_eq!(
        text(span, "server.address").as_deref(),
        Some("127.0.0.1"),
        "the upstream's host"
    );
}

/// Two tool rounds of one run, a prompt-caching call and a failed call, without a
/// traceparent: names, links, trace ids, attributes, tokens and cost against the
/// stored records; then a replay of the same store gives the same spans.
#[tokio::test]
async fn runs_tools_and_failures_export_as_genai_spans() {
    let (addr, got) = start_receiver(false).await;
    let tools0 = fixture("llm__test_tools__test_tool_use_basic__0.json");
    let tools1 = fixture("llm__test_tools__test_tool_use_basic__1.json");
    let caching =
        fixture("openllmetry__test_prompt_caching__test_anthropic_prompt_caching_legacy__1.json");
    let failing =
        fixture("mirascope__test_authentication_error_stream__openai_gpt_4o_completions.json");
    let mock = scripted_upstream(vec![
        scripted(&tools0),
        scripted(&tools1),
        scripted(&caching),
        scripted(&failing),
    ])
    .await;
    let dir = TempDir::new("otel-runs");
    // The provider is "openai" for the tool run's wire format; the caching call goes
    // through an anthropic provider pointed at the same mock.
    let config = test_config(
        dir.path(),
        &format!(
            "{}{}{}",
            provider_toml("up", "openai", &mock.url()),
            provider_toml("upa", "anthropic", &mock.url()),
            otel_toml(addr, "")
        ),
    );
    let running = start_llmtap(config.clone()).await;
    let run = [
        ("x-llmtap-invocation-id", "run-tools-1"),
        ("x-llmtap-agent", "calc-agent"),
        ("x-llmtap-session-id", "sess-9"),
        ("x-llmtap-tenant", "acme"),
        ("x-llmtap-prompt", "calc@v2"),
        ("authorization", "Bearer sk-test-secret-0123456789"),
    ];
    let first = send_fixture(&running, &tools0, &run).await;
    let second = send_fixture(&running, &tools1, &run).await;
    // The caching call, through the anthropic-kind provider.
    let url = fixture_url(&caching);
    let got_caching = send(
        running.proxy_addr,
        "POST",
        &format!("/upa{}", url.path_and_query().unwrap()),
        &[
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("x-llmtap-invocation-id", "run-cache-1"),
        ],
        caching["request"]["body"].as_str().unwrap(),
    )
    .await;
    let cached = wait_call(&running, &got_caching.call_id()).await;
    let failed = send_fixture(
        &running,
        &failing,
        &[("x-llmtap-invocation-id", "run-fail-1")],
    )
    .await;
    wait_invocation(&running, "run-tools-1@acme", 2).await;
    wait_invocation(&running, "run-fail-1", 1).await;
    let metrics = running.metrics.clone();
    running.shutdown().await.unwrap();

    assert!(got.undecodable.lock().unwrap().is_empty());
    let spans = got.spans();
    // Resource and headers.
    let resource = got.traces.lock().unwrap()[0].resource_spans[0]
        .resource
        .clone()
        .unwrap();
    assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"
        && kv.value.as_ref().unwrap().value == Some(AnyValue::StringValue("agents-test".into()))));
    assert!(got
        .headers
        .lock()
        .unwrap()
        .iter()
        .all(|h| h.get("x-collector-key").unwrap() == "collector-secret-1"));
    // No secret and, with content off, no prompt text anywhere in what was exported.
    for body in got.raw.lock().unwrap().iter() {
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains("sk-test-secret"), "API key exported");
        assert!(
            !text.contains("1231 * 2331"),
            "prompt exported with content off"
        );
    }
    assert!(spans
        .iter()
        .all(|s| attr(s, "gen_ai.input.messages").is_none()));

    // The tool run: invoke_agent, two rounds, one execute_tool between them.
    let runs: Vec<&Span> = spans
        .iter()
        .filter(|s| text(s, "gen_ai.operation.name").as_deref() == Some("invoke_agent"))
        .collect();
    assert_eq!(runs.len(), 3, "one invoke_agent span per run");
    let tool_run = runs
        .iter()
        .find(|s| text(s, "llmtap.invocation.id").as_deref() == Some("run-tools-1@acme"))
        .unwrap();
    assert_eq!(tool_run.name, "invoke_agent calc-agent");
    assert!(
        tool_run.parent_span_id.is_empty(),
        "a root span without traceparent"
    );
    assert_eq!(
        text(tool_run, "gen_ai.agent.name").as_deref(),
        Some("calc-agent")
    );
    assert_eq!(
        text(tool_run, "gen_ai.conversation.id").as_deref(),
        Some("sess-9")
    );
    assert_eq!(int(tool_run, "llmtap.rounds"), Some(2));
    assert_eq!(text(tool_run, "llmtap.tenant").as_deref(), Some("acme"));
    assert_eq!(tool_run.start_time_unix_nano, first.started_at_us * 1000);
    let stored_run = llmtap::store::Store::open_with(
        dir.path(),
        llmtap::server::store_options(&config).unwrap(),
    )
    .unwrap();
    let inv = stored_run
        .get_invocation("run-tools-1@acme")
        .unwrap()
        .unwrap();
    assert_eq!(tool_run.end_time_unix_nano, inv.ended_at_us * 1000);
    assert_eq!(
        int(tool_run, "gen_ai.usage.input_tokens"),
        inv.usage.input_tokens.map(|v| v as i64)
    );
    assert_eq!(float(tool_run, "llmtap.cost_usd"), inv.cost_usd);

    for call in [&first, &second] {
        let span = span_of_call(&spans, call);
        check_call_span(span, call, tool_run);
        assert_eq!(
            text(span, "gen_ai.conversation.id").as_deref(),
            Some("sess-9")
        );
        assert_eq!(text(span, "llmtap.prompt.name").as_deref(), Some("calc"));
        assert_eq!(text(span, "llmtap.prompt.version").as_deref(), Some("v2"));
        assert_eq!(text(span, "gen_ai.provider.name").as_deref(), Some("up"));
        assert!(span.status.is_none());
    }
    assert_eq!(
        span_of_call(&spans, &first)
            .attributes
            .iter()
            .find(|kv| kv.key == "gen_ai.response.finish_reasons")
            .is_some(),
        first.stop_reason.is_some()
    );
    let tools: Vec<&Span> = spans
        .iter()
        .filter(|s| text(s, "gen_ai.operation.name").as_deref() == Some("execute_tool"))
        .collect();
    assert_eq!(tools.len(), 1);
    let tool = tools[0];
    assert_eq!(tool.name, "execute_tool multiply");
    assert_eq!(tool.trace_id, tool_run.trace_id);
    assert_eq!(tool.parent_span_id, tool_run.span_id);
    assert_eq!(
        text(tool, "gen_ai.tool.call.id").as_deref(),
        Some("call_1EYWDzueHEp8OsB8jJSEp7WB")
    );
    let first_end_ns = (first.started_at_us + (first.latency_ms * 1000.0) as u64) * 1000;
    assert_eq!(tool.start_time_unix_nano, first_end_ns);
    assert_eq!(tool.end_time_unix_nano, second.started_at_us * 1000);

    // The caching call: cache tokens as the conventions name them.
    let cache_run = runs
        .iter()
        .find(|s| text(s, "llmtap.invocation.id").as_deref() == Some("run-cache-1"))
        .unwrap();
    let cache_span = span_of_call(&spans, &cached);
    check_call_span(cache_span, &cached, cache_run);
    assert!(
        cached.usage.cache_read_tokens.is_some() || cached.usage.cache_creation_tokens.is_some()
    );
    assert_eq!(
        text(cache_span, "gen_ai.provider.name").as_deref(),
        Some("upa")
    );
    assert_eq!(int(cache_span, "gen_ai.request.max_tokens"), Some(1024));

    // The failed call: error.type and an error status.
    let fail_span = span_of_call(&spans, &failed);
    let expected_error = failed
        .error
        .as_ref()
        .and_then(|e| e.error_type.clone())
        .unwrap_or_else(|| "401".into());
    assert_eq!(text(fail_span, "error.type"), Some(expected_error));
    assert_eq!(
        fail_span.status.as_ref().unwrap().code,
        2,
        "STATUS_CODE_ERROR"
    );
    let fail_run = runs
        .iter()
        .find(|s| text(s, "llmtap.invocation.id").as_deref() == Some("run-fail-1"))
        .unwrap();
    assert!(attr(fail_run, "error.type").is_some());

    // Trace ids differ between runs; every span of a run shares its trace.
    let traces: BTreeSet<Vec<u8>> = runs.iter().map(|s| s.trace_id.clone()).collect();
    assert_eq!(traces.len(), 3);
    assert_eq!(spans.len(), 3 + 4 + 1, "3 runs, 4 calls, 1 tool gap");
    assert_eq!(
        metrics
            .otel_exported
            .load(std::sync::atomic::Ordering::Relaxed),
        spans.len() as u64
    );
    assert_eq!(
        metrics
            .otel_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Metrics: token usage sums equal the stored calls' tokens.
    let exported = got.metrics.lock().unwrap().clone();
    let last = exported.last().expect("metrics exported at shutdown");
    let metric_list = &last.resource_metrics[0].scope_metrics[0].metrics;
    let usage = metric_list
        .iter()
        .find(|m| m.name == "gen_ai.client.token.usage")
        .unwrap();
    let Some(Data::Histogram(h)) = &usage.data else {
        panic!("token usage is a histogram")
    };
    let input_sum: f64 = h
        .data_points
        .iter()
        .filter(|p| {
            p.attributes.iter().any(|kv| {
                kv.key == "gen_ai.token.type"
                    && kv.value.as_ref().unwrap().value
                        == Some(AnyValue::StringValue("input".into()))
            })
        })
        .map(|p| p.sum.unwrap())
        .sum();
    let stored_input: u64 = [&first, &second, &cached, &failed]
        .iter()
        .filter_map(|c| c.usage.input_tokens)
        .sum();
    assert_eq!(input_sum, stored_input as f64);
    let duration = metric_list
        .iter()
        .find(|m| m.name == "gen_ai.client.operation.duration")
        .unwrap();
    let Some(Data::Histogram(d)) = &duration.data else {
        panic!("duration is a histogram")
    };
    assert_eq!(d.data_points.iter().map(|p| p.count).sum::<u64>(), 4);
    assert!(metric_list
        .iter()
        .any(|m| m.name == "gen_ai.client.operation.time_to_first_chunk"));

    // Replay of the same store into a fresh receiver: the same spans, same ids.
    let (replay_addr, replayed) = start_receiver(false).await;
    let mut replay_config = config.otel.clone().unwrap();
    replay_config.traces_url = format!("http://{replay_addr}/v1/traces").parse().unwrap();
    let client =
        llmtap::upstream::build_client(None, Duration::from_secs(5), Duration::from_secs(90))
            .unwrap();
    let report = llmtap::otel::replay(
        replay_config,
        llmtap::server::otel_span_options(&config),
        &stored_run,
        client,
        0,
        u64::MAX / 2,
    )
    .await
    .unwrap();
    assert_eq!(report.invocations, 3);
    assert_eq!(report.calls, 4);
    let key = |s: &Span| {
        (
            s.trace_id.clone(),
            s.span_id.clone(),
            s.parent_span_id.clone(),
            s.name.clone(),
            s.start_time_unix_nano,
            s.end_time_unix_nano,
        )
    };
    let live: BTreeSet<_> = spans.iter().map(key).collect();
    let again: BTreeSet<_> = replayed.spans().iter().map(key).collect();
    assert_eq!(live, again);
}

/// With a W3C traceparent, llmtap's spans join the agent's trace: the run is a
/// child of the agent's span, the call a child of the run. Content export on.
#[tokio::test]
async fn traceparent_joins_the_agents_trace() {
    let (addr, got) = start_receiver(false).await;
    let prompt = fixture("llm-anthropic__test_anthropic__test_prompt.json");
    let mock = scripted_upstream(vec![scripted(&prompt)]).await;
    let dir = TempDir::new("otel-traceparent");
    let config = test_config(
        dir.path(),
        &format!(
            "{}{}",
            provider_toml("up", "anthropic", &mock.url()),
            otel_toml(addr, "capture_content = true\ninvocation_idle_ms = 100")
        ),
    );
    let running = start_llmtap(config).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{parent}-01");
    let call = send_fixture(
        &running,
        &prompt,
        &[
            ("traceparent", &traceparent),
            ("x-api-key", "sk-ant-secret-abcdef0123"),
            ("x-llmtap-agent", "namer"),
        ],
    )
    .await;
    // The run is emitted after it has been idle (not only at shutdown).
    let mut emitted = false;
    for _ in 0..300 {
        if got.spans().iter().any(|s| s.name == "invoke_agent namer") {
            emitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(emitted, "invoke_agent span emitted once the run was idle");
    running.shutdown().await.unwrap();
    let spans = got.spans();
    assert_eq!(spans.len(), 2);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let run = spans
        .iter()
        .find(|s| s.name == "invoke_agent namer")
        .unwrap();
    assert_eq!(hex(&run.trace_id), trace);
    assert_eq!(
        hex(&run.parent_span_id),
        parent,
        "child of the agent's span"
    );
    let span = span_of_call(&spans, &call);
    check_call_span(span, &call, run);
    assert_eq!(text(span, "gen_ai.provider.name").as_deref(), Some("up"));
    assert_eq!(float(span, "gen_ai.request.temperature"), Some(1.0));
    assert_eq!(int(span, "gen_ai.request.max_tokens"), Some(8192));
    assert!(text(span, "gen_ai.response.id").is_some_and(|id| id.starts_with("msg_")));
    // Content is on: the user's message is there, structured as the conventions say.
    let input: serde_json::Value =
        serde_json::from_str(&text(span, "gen_ai.input.messages").unwrap()).unwrap();
    assert_eq!(input[0]["role"], "user");
    assert_eq!(
        input[0]["parts"][0]["content"],
        "Two names for a pet pelican, be brief"
    );
    assert!(text(span, "gen_ai.output.messages").is_some());
    for body in got.raw.lock().unwrap().iter() {
        assert!(!String::from_utf8_lossy(body).contains("sk-ant-secret"));
    }
}

/// A collector that is down (connection refused) or stuck (never answers): calls
/// are forwarded as usual, lost spans are counted, shutdown stays prompt.
#[tokio::test]
async fn collector_down_or_stuck_costs_counted_drops_only() {
    // A port that refuses connections: bound, then closed.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (stuck, _) = start_receiver(true).await;
    for (what, addr) in [("refused", refused), ("stuck", stuck)] {
        let prompt = fixture("llm-anthropic__test_anthropic__test_prompt.json");
        let scripts = (0..5).map(|_| scripted(&prompt)).collect();
        let mock = scripted_upstream(scripts).await;
        let dir = TempDir::new("otel-down");
        let config = test_config(
            dir.path(),
            &format!(
                "{}{}",
                provider_toml("up", "anthropic", &mock.url()),
                otel_toml(addr, "timeout_ms = 300\nshutdown_timeout_ms = 1000")
            ),
        );
        let running = start_llmtap(config).await;
        for i in 0..5 {
            let started = Instant::now();
            let id = format!("run-down-{i}");
            send_fixture(&running, &prompt, &[("x-llmtap-invocation-id", &id)]).await;
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{what}: forwarding waited on the collector"
            );
        }
        wait_records(&running, 5).await;
        let metrics = running.metrics.clone();
        let api = running.api_addr;
        // The five call spans fail to export (the runs are still open).
        let mut dropped = 0;
        for _ in 0..300 {
            dropped = metric(api, "llmtap_otel_dropped_total").await.unwrap();
            if dropped >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(dropped, 5, "{what}: every lost span counted");
        assert!(
            metric(api, "llmtap_otel_export_failures_total")
                .await
                .unwrap()
                >= 1
        );
        let stopping = Instant::now();
        running.shutdown().await.unwrap();
        assert!(
            stopping.elapsed() < Duration::from_millis(2500),
            "{what}: shutdown took {:?}",
            stopping.elapsed()
        );
        // The five runs' invoke_agent spans, emitted at shutdown, are lost and counted too.
        let ordering = std::sync::atomic::Ordering::Relaxed;
        assert_eq!(metrics.otel_dropped.load(ordering), 10, "{what}");
        assert_eq!(metrics.otel_exported.load(ordering), 0, "{what}");
    }
}
