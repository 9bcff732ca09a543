//! The forward path: streaming, header passthrough, statuses, grouping, errors.

use super::util::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use llmtap::record::CallStatus;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHAT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_RESPONSE: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;

async fn setup(
    responder: impl Fn(&SeenRequest) -> MockResponse + Send + Sync + 'static,
    extra: &str,
) -> (MockUpstream, llmtap::server::Running, TempDir) {
    let mock = MockUpstream::start(responder).await;
    let dir = TempDir::new("proxy");
    let toml = format!(
        "{extra}\n{}{}",
        provider_toml("mock", "openai", &mock.url()),
        provider_toml("mockant", "anthropic", &mock.url())
    );
    let running = start_llmtap(test_config(dir.path(), &toml)).await;
    (mock, running, dir)
}

#[tokio::test]
async fn response_bytes_reach_the_client_before_the_upstream_finishes() {
    let first = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n";
    let (mock, running, _dir) = setup(
        move |_| {
            let mut r = MockResponse::sse(&[first], Duration::ZERO);
            r.steps.push(Step::Hold);
            r.steps.push(Step::Data(Bytes::from_static(
                b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            )));
            r
        },
        "",
    )
    .await;
    let request = http::Request::post(format!("http://{}/mockant/v1/messages", running.proxy_addr))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"model":"claude-x","stream":true,"messages":[]}"#,
        )))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let call_id = response.headers()["x-llmtap-call-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = response.into_body();
    // The upstream is holding after its first event: the client must already have it.
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first event was buffered by the proxy")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), Bytes::from(first));
    assert!(
        running.store.get_call(&call_id).unwrap().is_none(),
        "recorded before the end"
    );
    mock.release();
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(rest.starts_with(b"event: message_stop"));
    let call = wait_call(&running, &call_id).await;
    assert_eq!(call.status, Some(CallStatus::Success));
    assert!(call.response_body.unwrap().contains("message_stop"));
    assert!(call.first_byte_ms.unwrap() <= call.latency_ms);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_bodies_are_streamed_upstream() {
    // The upstream answers as soon as it has the head; the client is still sending.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (got_head_tx, got_head_rx) = tokio::sync::oneshot::channel::<Vec<u8>>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut seen = Vec::new();
        // Read until we have the first body chunk.
        loop {
            let n = s.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(5).any(|w| w == b"part1") {
                break;
            }
        }
        let _ = got_head_tx.send(seen.clone());
        // Drain the rest, then answer.
        loop {
            let n = s.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(5).any(|w| w == b"part2") {
                break;
            }
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}",
        )
        .await
        .unwrap();
    });
    let dir = TempDir::new("reqstream");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("up", "http", &format!("http://{upstream}")),
    ))
    .await;
    let mut client = tokio::net::TcpStream::connect(running.proxy_addr)
        .await
        .unwrap();
    client
        .write_all(b"POST /up/upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\npart1\r\n")
        .await
        .unwrap();
    // The upstream sees part1 while the client has not sent part2 yet.
    let seen = tokio::time::timeout(Duration::from_secs(5), got_head_rx)
        .await
        .expect("request body was buffered by the proxy")
        .unwrap();
    assert!(!seen.windows(5).any(|w| w == b"part2"));
    client.write_all(b"5\r\npart2\r\n0\r\n\r\n").await.unwrap();
    let mut response = vec![0u8; 4096];
    let n = client.read(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("x-llmtap-call-id: "))
        .unwrap()
        .trim()
        .to_string();
    let call = wait_call(&running, &id).await;
    assert_eq!(call.request_body.as_deref(), Some("part1part2"));
    assert_eq!(call.request_bytes, 10);
    assert_eq!(call.kind, "http");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn headers_pass_through_both_ways() {
    let (mock, running, _dir) = setup(
        |req| {
            let base = match req.path_and_query.as_str() {
                p if p.contains("429") => MockResponse::json(
                    429,
                    r#"{"error":{"type":"rate_limit_exceeded","message":"slow down"}}"#,
                )
                .header("retry-after", "7")
                .header("retry-after-ms", "7000"),
                p if p.contains("stream") => MockResponse::sse(
                    &["data: {\"choices\":[]}\n\n", "data: [DONE]\n\n"],
                    Duration::ZERO,
                ),
                _ => MockResponse::json(200, CHAT_RESPONSE),
            };
            base.header("x-ratelimit-limit-requests", "500")
                .header("x-ratelimit-remaining-requests", "499")
                .header("x-ratelimit-reset-requests", "6m0s")
                .header("anthropic-ratelimit-tokens-remaining", "1000")
                .header("x-custom-upstream", "kept")
                .header("connection", "keep-alive")
        },
        "",
    )
    .await;
    for path in [
        "/mock/v1/chat/completions",
        "/mock/v1/429",
        "/mock/v1/stream",
    ] {
        let got = post_json(
            running.proxy_addr,
            path,
            &[
                ("x-llmtap-agent", "tester"),
                ("x-llmtap-invocation-id", "inv-headers"),
                ("x-custom-client", "also-kept"),
                ("openai-organization", "org-1"),
            ],
            CHAT_BODY,
        )
        .await;
        assert_eq!(
            got.header("x-ratelimit-remaining-requests"),
            Some("499"),
            "{path}"
        );
        assert_eq!(got.header("x-ratelimit-reset-requests"), Some("6m0s"));
        assert_eq!(
            got.header("anthropic-ratelimit-tokens-remaining"),
            Some("1000")
        );
        assert_eq!(got.header("x-custom-upstream"), Some("kept"));
        assert!(got.header("x-llmtap-call-id").unwrap().starts_with("c_"));
        assert_eq!(got.header("x-llmtap-invocation-id"), Some("inv-headers"));
        if path.contains("429") {
            assert_eq!(got.status, 429);
            assert_eq!(got.header("retry-after"), Some("7"));
            assert_eq!(got.header("retry-after-ms"), Some("7000"));
        }
        let seen = mock.last_seen();
        assert_eq!(seen.headers["x-custom-client"], "also-kept");
        assert_eq!(seen.headers["openai-organization"], "org-1");
        assert_eq!(seen.headers["host"], mock.addr.to_string());
        assert!(seen
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-llmtap-")));
        let call = wait_call(&running, &got.call_id()).await;
        assert_eq!(call.response_headers["x-ratelimit-limit-requests"], "500");
        assert_eq!(call.metadata.agent.as_deref(), Some("tester"));
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_status_is_recorded() {
    let (_mock, running, _dir) = setup(
        |req| {
            let p = req.path_and_query.as_str();
            let mut r = if p.ends_with("/ok") {
                MockResponse::json(200, CHAT_RESPONSE)
            } else if p.ends_with("/500") {
                MockResponse::json(500, r#"{"error":{"message":"boom","type":"server_error"}}"#)
            } else if p.ends_with("/429") {
                MockResponse::json(429, r#"{"error":{"message":"limit","type":"rate_limit"}}"#)
            } else if p.ends_with("/401") {
                MockResponse::json(401, r#"{"error":{"message":"bad key","type":"auth"}}"#)
            } else if p.ends_with("/403") {
                MockResponse::json(403, r#"{"error":{"message":"forbidden"}}"#)
            } else if p.ends_with("/slowhead") {
                let mut r = MockResponse::json(200, "{}");
                r.delay_head = Duration::from_secs(5);
                r
            } else if p.ends_with("/idle") {
                let mut r = MockResponse::sse(&["data: {}\n\n"], Duration::ZERO);
                r.steps.push(Step::Sleep(Duration::from_secs(5)));
                r
            } else if p.ends_with("/reset") {
                let mut r = MockResponse::sse(&["data: {}\n\n"], Duration::from_millis(100));
                r.steps.push(Step::Reset);
                r
            } else {
                MockResponse::sse(&["data: {}\n\n"], Duration::from_secs(5))
            };
            r.headers.push(("x-test".into(), "1".into()));
            r
        },
        "first_byte_timeout_ms = 400\nidle_timeout_ms = 400",
    )
    .await;
    // first_byte/idle timeouts live under [server]; the extra TOML above is appended there.
    let cases: [(&str, u16, CallStatus); 7] = [
        ("ok", 200, CallStatus::Success),
        ("500", 500, CallStatus::Failed),
        ("429", 429, CallStatus::RateLimited),
        ("401", 401, CallStatus::Unauthorized),
        ("403", 403, CallStatus::Unauthorized),
        ("slowhead", 504, CallStatus::Timeout),
        ("idle", 200, CallStatus::Timeout),
    ];
    for (path, http_status, status) in cases {
        let got = post_json(
            running.proxy_addr,
            &format!("/mock/v1/{path}"),
            &[],
            CHAT_BODY,
        )
        .await;
        assert_eq!(got.status, http_status, "{path}");
        let call = wait_call(&running, &got.call_id()).await;
        assert_eq!(call.status, Some(status), "{path}");
        assert_eq!(call.http_status, Some(http_status), "{path}");
        if http_status == 504 {
            let body = got.json();
            assert_eq!(body["error"]["source"], "llmtap");
            assert_eq!(body["error"]["type"], "upstream_timeout");
        }
    }

    // Upstream reset mid-stream: the client sees the stream break; the call is failed.
    let request = http::Request::post(format!("http://{}/mock/v1/reset", running.proxy_addr))
        .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let id = response.headers()["x-llmtap-call-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(response.into_body().collect().await.is_err());
    let call = wait_call(&running, &id).await;
    assert_eq!(call.status, Some(CallStatus::Failed));
    assert!(call
        .error
        .unwrap()
        .message
        .unwrap()
        .contains("mid-response"));

    // Client hangs up mid-stream: canceled.
    let request = http::Request::post(format!("http://{}/mock/v1/slowstream", running.proxy_addr))
        .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let id = response.headers()["x-llmtap-call-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = response.into_body();
    let _ = body.frame().await;
    drop(body);
    let call = wait_call(&running, &id).await;
    assert_eq!(call.status, Some(CallStatus::Canceled));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn empty_bodied_responses_keep_their_status() {
    // OpenRouter's bare 429, a 204 and an empty 500 all come with content-length: 0.
    let (_mock, running, _dir) = setup(
        |req| {
            let status = req
                .path_and_query
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(200);
            let mut r = MockResponse {
                status,
                headers: vec![],
                steps: vec![],
                delay_head: Duration::ZERO,
            };
            if status != 204 {
                r = r.header("content-length", "0");
            }
            if status == 429 {
                r = r.header("retry-after", "7");
            }
            r
        },
        "",
    )
    .await;
    for (code, status) in [
        (429, CallStatus::RateLimited),
        (204, CallStatus::Success),
        (500, CallStatus::Failed),
    ] {
        let got = post_json(
            running.proxy_addr,
            &format!("/mock/v1/{code}"),
            &[],
            CHAT_BODY,
        )
        .await;
        assert_eq!(got.status, code);
        assert!(got.body.is_empty());
        let call = wait_call(&running, &got.call_id()).await;
        assert_eq!(call.status, Some(status), "HTTP {code}");
        assert_eq!(call.http_status, Some(code));
        let error_type = call.error.as_ref().and_then(|e| e.error_type.as_deref());
        assert_ne!(error_type, Some("canceled"), "HTTP {code}");
        let api = api_get(&running, &format!("/api/v1/calls/{}", call.id)).await;
        let hint = api.json()["hint"].as_str().map(str::to_string);
        assert!(
            !hint.as_deref().unwrap_or("").contains("went away"),
            "HTTP {code}: {hint:?}"
        );
    }
    // The bare 429 counts in the rate-limit views.
    let limited = api_get(&running, "/api/v1/calls?status=rate_limited").await;
    assert_eq!(limited.json()["total"], 1);
    let rl = api_get(&running, "/api/v1/ratelimits").await.json();
    assert_eq!(rl["items"][0]["rate_limited_1h"], 1, "{rl}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_upstream_is_a_recorded_502() {
    // Bind then drop: nothing listens on this port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = TempDir::new("refused");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("dead", "openai", &format!("http://127.0.0.1:{port}")),
    ))
    .await;
    let got = post_json(
        running.proxy_addr,
        "/dead/v1/chat/completions",
        &[],
        CHAT_BODY,
    )
    .await;
    assert_eq!(got.status, 502);
    assert_eq!(got.json()["error"]["source"], "llmtap");
    let call = wait_call(&running, &got.call_id()).await;
    assert_eq!(call.status, Some(CallStatus::Failed));
    assert_eq!(call.http_status, Some(502));
    assert_eq!(call.request_body.as_deref(), Some(CHAT_BODY));
    // The record names what the client got, and the hint says who answered.
    let error = call.error.clone().unwrap();
    assert_eq!(error.error_type.as_deref(), Some("upstream_unreachable"));
    let hint = api_get(&running, &format!("/api/v1/calls/{}", call.id))
        .await
        .json()["hint"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        hint.starts_with("dead could not be reached; llmtap answered HTTP 502"),
        "{hint}"
    );
    assert!(!hint.contains("dead answered"), "{hint}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn calls_group_into_invocations_with_rounds() {
    let (_mock, running, _dir) = setup(|_| MockResponse::json(200, CHAT_RESPONSE), "").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let got = post_json(
            running.proxy_addr,
            "/mock/v1/chat/completions",
            &[
                ("x-llmtap-invocation-id", "run-1"),
                ("x-llmtap-agent", "planner"),
            ],
            CHAT_BODY,
        )
        .await;
        ids.push(got.call_id());
    }
    let traced: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            let got = post_json(
                running.proxy_addr,
                "/mock/v1/chat/completions",
                &[(
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                )],
                CHAT_BODY,
            )
            .await;
            assert_eq!(
                got.header("x-llmtap-invocation-id"),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            v.push(got.call_id());
        }
        v
    };
    let lone_a = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[],
        CHAT_BODY,
    )
    .await;
    let lone_b = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[],
        CHAT_BODY,
    )
    .await;
    assert_ne!(
        lone_a.header("x-llmtap-invocation-id"),
        lone_b.header("x-llmtap-invocation-id")
    );
    wait_records(&running, 7).await;
    for (i, id) in ids.iter().enumerate() {
        let call = running.store.get_call(id).unwrap().unwrap();
        assert_eq!(call.round, i as u32 + 1);
        assert_eq!(call.invocation_id, "run-1");
    }
    let inv = wait_invocation(&running, "run-1", 3).await;
    assert_eq!(inv.rounds, 3);
    assert_eq!(inv.agent.as_deref(), Some("planner"));
    assert_eq!(inv.usage.input_tokens, Some(15));
    assert_eq!(inv.usage.output_tokens, Some(3));
    assert_eq!(inv.status, Some(CallStatus::Success));

    let api = api_get(&running, "/api/v1/invocations/run-1").await;
    assert_eq!(api.status, 200);
    let rounds: Vec<u64> = api.json()["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds, vec![1, 2, 3]);
    let traced_call = running.store.get_call(&traced[1]).unwrap().unwrap();
    assert_eq!(traced_call.round, 2);
    let lone = running.store.get_call(&lone_a.call_id()).unwrap().unwrap();
    assert_eq!(lone.round, 1);
    assert_eq!(api_get(&running, "/api/v1/calls/nope").await.status, 404);
    assert_eq!(
        api_get(&running, "/api/v1/invocations/nope").await.status,
        404
    );
    assert_eq!(api_get(&running, "/healthz").await.status, 200);
    let metrics = String::from_utf8(api_get(&running, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("llmtap_requests_total{provider=\"mock\",status=\"success\"} 7"),
        "{metrics}"
    );
    assert!(metrics.contains("llmtap_records_written_total 7"));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn rounds_continue_after_a_restart() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, CHAT_RESPONSE)).await;
    let dir = TempDir::new("restart");
    let toml = provider_toml("mock", "openai", &mock.url());
    for expected_round in [1u32, 2] {
        let running = start_llmtap(test_config(dir.path(), &toml)).await;
        let got = post_json(
            running.proxy_addr,
            "/mock/v1/chat/completions",
            &[("x-llmtap-invocation-id", "long-run")],
            CHAT_BODY,
        )
        .await;
        let call = wait_call(&running, &got.call_id()).await;
        assert_eq!(call.round, expected_round);
        running.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (_mock, running, _dir) = setup(|_| MockResponse::json(200, "{}"), "").await;
    let got = post_json(running.proxy_addr, "/nowhere/v1/x", &[], "{}").await;
    assert_eq!(got.status, 404);
    let body = got.json();
    assert_eq!(body["error"]["type"], "unknown_provider");
    assert!(body["error"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "mock"));
    let got = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[("x-llmtap-prompt-variables", "not json")],
        "{}",
    )
    .await;
    assert_eq!(got.status, 400);
    assert!(got.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x-llmtap-prompt-variables"));
    running.shutdown().await.unwrap();
}

/// With the store stalled, calls go on being captured into the log until its
/// unapplied bytes reach `store.backlog`; then `on_backlog` applies.
#[tokio::test]
async fn a_stalled_store_fills_the_log_bound_then_on_backlog_applies() {
    const BOUND: u64 = 16 * 1024;
    for (mode, expect_status) in [("reject", 503u16), ("pass", 200u16)] {
        let mock = MockUpstream::start(|_| MockResponse::json(200, CHAT_RESPONSE)).await;
        let dir = TempDir::new("backlog");
        let toml = format!(
            "[store]\nbacklog = \"16KiB\"\non_backlog = \"{mode}\"\n{}",
            provider_toml("mock", "openai", &mock.url())
        );
        // [store] must not land inside [server]: build the config by hand.
        let config = llmtap::config::RawConfig::from_toml(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n{toml}"
        ))
        .unwrap()
        .validate(&llmtap::config::Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
        let running = start_llmtap(config).await;
        running
            .writer_control
            .paused
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let unapplied = || running.metrics.log_unapplied_bytes();
        let mut captured = 0u64;
        let mut refused_at = None;
        for _ in 0..200 {
            let before = unapplied();
            let got = post_json(
                running.proxy_addr,
                "/mock/v1/chat/completions",
                &[],
                CHAT_BODY,
            )
            .await;
            if got.header("x-llmtap-call-id").is_none() {
                assert_eq!(got.status, expect_status, "{mode}");
                refused_at = Some(before);
                break;
            }
            assert_eq!(got.status, 200, "{mode}");
            captured += 1;
            // Let the log thread append it before the next call is admitted.
            for _ in 0..200 {
                if running
                    .metrics
                    .log_queue
                    .load(std::sync::atomic::Ordering::SeqCst)
                    == 0
                    && unapplied() > before
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let refused_at = refused_at.expect("the bound never applied");
        // Refused exactly when the log held the bound, not before.
        assert!(refused_at >= BOUND, "{mode}: refused at {refused_at} B");
        let per_call = refused_at / captured;
        assert!(
            refused_at < BOUND + per_call,
            "{mode}: {captured} calls captured, {refused_at} B"
        );
        assert!(
            captured >= 3,
            "{mode}: only {captured} calls before the bound"
        );
        let counter = if mode == "reject" {
            "llmtap_rejected_backlog_total"
        } else {
            "llmtap_passed_uncaptured_total"
        };
        assert_eq!(metric(running.api_addr, counter).await, Some(1), "{mode}");
        running
            .writer_control
            .paused
            .store(false, std::sync::atomic::Ordering::SeqCst);
        wait_records(&running, captured as usize).await;
        for _ in 0..200 {
            if unapplied() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(unapplied(), 0, "{mode}: the writer caught up");
        running.shutdown().await.unwrap();
        let store = llmtap::store::Store::open(dir.path(), 16 << 20, 100).unwrap();
        assert_eq!(store.call_count() as u64, captured, "{mode}");
    }
}

const USAGE_CHUNK: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";

fn stream_events(with_usage: bool) -> Vec<String> {
    let mut events = vec![
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n".to_string(),
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n".to_string(),
    ];
    if with_usage {
        events.push(USAGE_CHUNK.to_string());
    }
    events.push("data: [DONE]\n\n".to_string());
    events
}

#[tokio::test]
async fn streaming_usage_is_requested_and_hidden_from_clients_that_did_not_ask() {
    // The mock behaves like OpenAI: a usage chunk only when include_usage is set.
    let (mock, running, _dir) = setup(
        |req| {
            let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            let asked = body["stream_options"]["include_usage"] == true;
            let events = stream_events(asked);
            let refs: Vec<&str> = events.iter().map(String::as_str).collect();
            MockResponse::sse(&refs, Duration::from_millis(2))
        },
        "",
    )
    .await;
    let without =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let with = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

    // The client did not ask: upstream is asked, the client sees exactly the stream it asked for.
    let got = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[],
        without,
    )
    .await;
    let seen: serde_json::Value = serde_json::from_slice(&mock.last_seen().body).unwrap();
    assert_eq!(seen["stream_options"]["include_usage"], true);
    assert_eq!(got.body, Bytes::from(stream_events(false).concat()));
    let call = wait_call(&running, &got.call_id()).await;
    assert_eq!(call.usage.input_tokens, Some(9));
    assert_eq!(call.usage.output_tokens, Some(2));
    assert_eq!(
        call.request_body.as_deref(),
        Some(without),
        "the record keeps what the client sent"
    );
    assert_eq!(call.response.unwrap().text.as_deref(), Some("Hello"));
    assert!(call.ttft_ms.is_some());

    // The client asked: everything passes through byte for byte.
    let got = post_json(running.proxy_addr, "/mock/v1/chat/completions", &[], with).await;
    assert_eq!(mock.last_seen().body, Bytes::from(with));
    assert_eq!(got.body, Bytes::from(stream_events(true).concat()));
    let call = wait_call(&running, &got.call_id()).await;
    assert_eq!(call.usage.total_tokens, Some(11));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn compressed_bodies_pass_untouched_and_are_decoded_for_capture() {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(CHAT_RESPONSE.as_bytes()).unwrap();
    let gzipped = Bytes::from(encoder.finish().unwrap());
    let sent = gzipped.clone();
    let (mock, running, _dir) = setup(
        move |_| {
            let mut r = MockResponse::json(200, "");
            r.steps = vec![Step::Data(sent.clone())];
            r.header("content-encoding", "gzip")
        },
        "",
    )
    .await;
    let got = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[("accept-encoding", "gzip")],
        CHAT_BODY,
    )
    .await;
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(
        got.body, gzipped,
        "the compressed bytes must reach the client as sent"
    );
    assert_eq!(mock.last_seen().headers["accept-encoding"], "gzip");
    let call = wait_call(&running, &got.call_id()).await;
    assert_eq!(call.usage.input_tokens, Some(5));
    assert_eq!(call.response_body.as_deref(), Some(CHAT_RESPONSE));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn captures_are_capped_but_forwarding_is_not() {
    let big = "x".repeat(300_000);
    let dir = TempDir::new("cap");
    let mock = MockUpstream::start({
        let chunk = Bytes::from(big.clone());
        move |_| {
            let mut r = MockResponse::json(200, "");
            r.steps = (0..4).map(|_| Step::Data(chunk.clone())).collect();
            r
        }
    })
    .await;
    let config = llmtap::config::RawConfig::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n[capture]\nmax_body_bytes = 100000\n{}",
        provider_toml("mock", "openai", &mock.url())
    ))
    .unwrap()
    .validate(&llmtap::config::Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let running = start_llmtap(config).await;
    let request_body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "y".repeat(150_000)
    );
    let got = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[],
        &request_body,
    )
    .await;
    assert_eq!(got.body.len(), 1_200_000);
    let call = wait_call(&running, &got.call_id()).await;
    assert!(call.truncated);
    assert_eq!(call.response_bytes, 1_200_000);
    assert_eq!(call.request_bytes, request_body.len() as u64);
    assert_eq!(call.response_body.unwrap().len(), 100_000);
    assert_eq!(call.request_body.unwrap().len(), 100_000);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn tool_http_calls_sit_between_rounds_without_being_rounds() {
    const TOOL_ROUND: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{\"id\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}"#;
    let mock = MockUpstream::start(|req| {
        if req.path_and_query.starts_with("/lookup") {
            let mut r = MockResponse::json(200, r#"{"found":true}"#);
            r.delay_head = Duration::from_millis(30);
            r
        } else if String::from_utf8_lossy(&req.body).contains("call_1") {
            MockResponse::json(200, CHAT_RESPONSE)
        } else {
            MockResponse::json(200, TOOL_ROUND)
        }
    })
    .await;
    let dir = TempDir::new("toolhttp");
    let toml = format!(
        "{}{}",
        provider_toml("mock", "openai", &mock.url()),
        provider_toml("tool", "http", &mock.url())
    );
    let running = start_llmtap(test_config(dir.path(), &toml)).await;
    let run = [("x-llmtap-invocation-id", "run-tool")];
    let r1 = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &run,
        CHAT_BODY,
    )
    .await;
    let tool = send(running.proxy_addr, "GET", "/tool/lookup?id=1", &run, "").await;
    assert_eq!(tool.status, 200);
    let second = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"lookup","arguments":"{\"id\":1}"}}]},{"role":"tool","tool_call_id":"call_1","content":"{\"found\":true}"}]}"#;
    let r2 = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &run,
        second,
    )
    .await;
    for (id, round) in [(r1.call_id(), 1), (tool.call_id(), 0), (r2.call_id(), 2)] {
        assert_eq!(wait_call(&running, &id).await.round, round);
    }
    let inv = wait_invocation(&running, "run-tool", 2).await;
    assert_eq!(inv.rounds, 2);
    assert_eq!(inv.status, Some(CallStatus::Success));
    let v = api_get(&running, "/api/v1/invocations/run-tool")
        .await
        .json();
    let rounds: Vec<u64> = v["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["round"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds, vec![1, 2], "{v}");
    let joined = &v["rounds"][0]["tool_calls"][0];
    assert_eq!(joined["name"], "lookup");
    assert_eq!(joined["result_round"], 2);
    assert_eq!(joined["result_call_id"], r2.call_id());
    assert_eq!(joined["result"], "{\"found\":true}");
    assert!(joined["duration_ms"].as_f64().unwrap() >= 30.0, "{joined}");
    assert_eq!(joined["http_call_ids"], serde_json::json!([tool.call_id()]));
    let timeline: Vec<(String, String)> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["call_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        timeline,
        vec![
            ("llm".to_string(), r1.call_id()),
            ("http".to_string(), tool.call_id()),
            ("llm".to_string(), r2.call_id()),
        ]
    );
    assert_eq!(v["timeline"][1]["after_round"], 1);
    assert_eq!(v["timeline"][1]["round"], serde_json::Value::Null);
    assert!(v["timeline"][1]["duration_ms"].as_f64().unwrap() >= 30.0);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stream_without_a_content_token_has_no_ttft() {
    let (_mock, running, _dir) = setup(
        |req| {
            let mut r = MockResponse::sse(
                &["data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n"],
                Duration::ZERO,
            );
            if req.path_and_query.contains("stall") {
                // Stalls after the role chunk: the idle timeout ends it.
                r.steps.push(Step::Sleep(Duration::from_secs(5)));
            } else {
                r.steps.push(Step::Sleep(Duration::from_millis(50)));
                r.steps.push(Step::Data(Bytes::from_static(
                    b"data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
                )));
            }
            r
        },
        "idle_timeout_ms = 300\n[capture]\ninject_include_usage = false",
    )
    .await;
    let body =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let stalled = post_json(
        running.proxy_addr,
        "/mock/v1/stall/chat/completions",
        &[],
        body,
    )
    .await;
    let call = wait_call(&running, &stalled.call_id()).await;
    assert_eq!(call.status, Some(CallStatus::Timeout));
    assert!(call.stream);
    assert!(call.first_byte_ms.is_some());
    assert_eq!(call.ttft_ms, None, "no content token, no ttft");
    // Control: a content token 50 ms after the first byte is the ttft.
    let fine = post_json(running.proxy_addr, "/mock/v1/chat/completions", &[], body).await;
    let call = wait_call(&running, &fine.call_id()).await;
    assert_eq!(call.status, Some(CallStatus::Success));
    let ttft = call.ttft_ms.unwrap();
    assert!(ttft >= call.first_byte_ms.unwrap() + 40.0, "{ttft}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn task_ids_reach_the_run_and_filter_and_triggers_are_checked() {
    let (_mock, running, _dir) = setup(|_| MockResponse::json(200, CHAT_RESPONSE), "").await;
    let bad = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[("x-llmtap-trigger", "cron")],
        CHAT_BODY,
    )
    .await;
    assert_eq!(bad.status, 400);
    let message = bad.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("x-llmtap-trigger") && message.contains("user, system, task"),
        "{message}"
    );
    let mut ids = Vec::new();
    for (run, task, trigger) in [("run-a", "T-1", "task"), ("run-b", "T-2", "user")] {
        let got = post_json(
            running.proxy_addr,
            "/mock/v1/chat/completions",
            &[
                ("x-llmtap-invocation-id", run),
                ("x-llmtap-task-id", task),
                ("x-llmtap-trigger", trigger),
            ],
            CHAT_BODY,
        )
        .await;
        assert_eq!(got.status, 200);
        ids.push(got.call_id());
    }
    for id in &ids {
        wait_call(&running, id).await;
    }
    let inv = wait_invocation(&running, "run-a", 1).await;
    assert_eq!(inv.task_id.as_deref(), Some("T-1"));
    // A batch stores its calls before its runs' roll-ups: wait for run-b's too.
    wait_invocation(&running, "run-b", 1).await;
    let calls = api_get(&running, "/api/v1/calls?task=T-1").await.json();
    assert_eq!(calls["total"], 1, "{calls}");
    assert_eq!(calls["items"][0]["id"], ids[0].as_str());
    assert_eq!(calls["items"][0]["task_id"], "T-1");
    let runs = api_get(&running, "/api/v1/invocations?task=T-2")
        .await
        .json();
    assert_eq!(runs["total"], 1, "{runs}");
    assert_eq!(runs["items"][0]["id"], "run-b");
    assert_eq!(runs["items"][0]["task_id"], "T-2");
    let doc = api_get(&running, "/api/v1/openapi.json").await.json();
    let params = doc["paths"]["/api/v1/calls"]["get"]["parameters"].to_string();
    assert!(params.contains("\"task\""), "{params}");
    running.shutdown().await.unwrap();
}
