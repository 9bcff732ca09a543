//! Hostile and everyday misuse (issue 12): tenants sharing client-chosen ids,
//! decompression bombs, stalled and never-reading clients, unbounded SSE, redaction
//! gaps, dot-segments, write errors and absurd usage numbers.

use super::util::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::Duration;

fn token_toml(name: &str, token: &str, role: &str, tenant: Option<&str>) -> String {
    let hash = llmtap::config::token_sha256_hex(token);
    let tenant = tenant
        .map(|t| format!("tenant = \"{t}\"\n"))
        .unwrap_or_default();
    format!("[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nrole = \"{role}\"\n{tenant}")
}

async fn get(running: &llmtap::server::Running, path: &str, token: &str) -> Got {
    let auth = format!("Bearer {token}");
    send(
        running.api_addr,
        "GET",
        path,
        &[("authorization", &auth)],
        "",
    )
    .await
}

/// A chat completion answered with the model the request named.
fn echo_model(seen: &SeenRequest) -> MockResponse {
    let request: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
    let model = request["model"].as_str().unwrap_or("unknown");
    MockResponse::json(
        200,
        &format!(
            r#"{{"id":"x","object":"chat.completion","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}}}"#
        ),
    )
}

async fn chat_as(
    running: &llmtap::server::Running,
    tenant: &str,
    model: &str,
    secret_text: &str,
) -> Got {
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"system","content":"{secret_text}"}},{{"role":"user","content":"hi"}}]}}"#
    );
    let got = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[
            ("x-llmtap-tenant", tenant),
            ("x-llmtap-invocation-id", "shared-run-1"),
            ("x-llmtap-session-id", "shared-session"),
            ("x-llmtap-agent", "bot"),
        ],
        &body,
    )
    .await;
    assert_eq!(got.status, 200);
    got
}

#[tokio::test]
async fn tenants_that_pick_the_same_invocation_and_session_ids_never_share_them() {
    let mock = MockUpstream::start(echo_model).await;
    let dir = TempDir::new("tenants");
    let toml = [
        provider_toml("mock", "openai", &mock.url()),
        token_toml("root", "admin-token", "admin", None),
        token_toml("acme-admin", "acme-token", "admin", Some("acme")),
    ]
    .concat();
    let running = start_llmtap(test_config(dir.path(), &toml)).await;

    // acme watches its live stream while both tenants call with the same ids.
    let request = http::Request::get(format!(
        "http://{}/api/v1/stream?type=invocations",
        running.api_addr
    ))
    .header("authorization", "Bearer acme-token")
    .body(http_body_util::Full::new(Bytes::new()))
    .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();

    let acme = chat_as(&running, "acme", "acme-model", "acme system prompt").await;
    wait_call(&running, &acme.call_id()).await;
    let globex = chat_as(&running, "globex", "globex-model", "globex secret prompt").await;
    wait_call(&running, &globex.call_id()).await;
    // A second acme round after globex's call: its invocation event must be acme's alone.
    let acme2 = chat_as(&running, "acme", "acme-model", "acme system prompt").await;
    wait_call(&running, &acme2.call_id()).await;
    wait_invocation(&running, "shared-run-1@acme", 2).await;
    wait_invocation(&running, "shared-run-1@globex", 1).await;
    assert_eq!(
        acme.header("x-llmtap-invocation-id"),
        Some("shared-run-1@acme")
    );

    // The acme-confined admin reads its own run under the id it chose, and nothing of globex's.
    let got = get(&running, "/api/v1/invocations/shared-run-1", "acme-token").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let text = String::from_utf8_lossy(&got.body).to_string();
    assert!(!text.contains("globex"), "acme reads globex's call: {text}");
    let inv = got.json();
    assert_eq!(inv["round_count"], 2);
    assert_eq!(inv["models"], serde_json::json!(["acme-model"]));
    assert_eq!(inv["calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        get(
            &running,
            "/api/v1/invocations/shared-run-1@globex",
            "acme-token"
        )
        .await
        .status,
        403
    );
    assert_eq!(
        get(
            &running,
            "/api/v1/invocations/shared-run-1?tenant=globex",
            "acme-token"
        )
        .await
        .status,
        403
    );

    // The list's models and the session totals are per tenant too.
    let list = get(&running, "/api/v1/invocations", "acme-token")
        .await
        .json();
    assert_eq!(list["count"], 1);
    assert_eq!(
        list["items"][0]["models"],
        serde_json::json!(["acme-model"])
    );
    let session = get(&running, "/api/v1/sessions/shared-session", "acme-token").await;
    assert_eq!(session.status, 200);
    let session = session.json();
    assert_eq!(session["calls"], 2);
    assert_eq!(session["input_tokens"], 10);
    assert_eq!(session["timeline"].as_array().unwrap().len(), 2);
    let calls = get(
        &running,
        "/api/v1/calls?session_id=shared-session",
        "acme-token",
    )
    .await
    .json();
    assert_eq!(calls["count"], 2);

    // An unconfined admin sees each tenant's run separately.
    let all = get(&running, "/api/v1/invocations", "admin-token")
        .await
        .json();
    let mut ids: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["shared-run-1@acme", "shared-run-1@globex"]);
    let ambiguous = get(&running, "/api/v1/invocations/shared-run-1", "admin-token").await;
    assert_eq!(ambiguous.status, 409);
    let theirs = get(
        &running,
        "/api/v1/invocations/shared-run-1?tenant=globex",
        "admin-token",
    )
    .await
    .json();
    assert_eq!(theirs["models"], serde_json::json!(["globex-model"]));
    assert_eq!(theirs["round_count"], 1);
    let theirs = get(
        &running,
        "/api/v1/sessions/shared-session@globex",
        "admin-token",
    )
    .await
    .json();
    assert_eq!(theirs["calls"], 1);

    // The live stream never carried globex's call to acme.
    let mut seen = String::new();
    while seen.matches("event: invocation").count() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), stream.frame())
            .await
            .expect("no stream event")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }
    assert!(
        !seen.contains("globex"),
        "acme's stream shows globex: {seen}"
    );
    running.shutdown().await.unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A process's resident set (`VmRSS`) or its peak (`VmHWM`), in bytes.
fn proc_memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn a_batch_of_decompression_bombs_is_decoded_within_a_total_budget_and_marked_cut() {
    const CAP: usize = 8 << 20;
    let bomb = Bytes::from(gzip(&vec![0u8; CAP + 4096]));
    let response_bomb = bomb.clone();
    let mock = MockUpstream::start(move |_| MockResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("content-encoding".into(), "gzip".into()),
        ],
        steps: vec![Step::Data(response_bomb.clone())],
        delay_head: Duration::ZERO,
    })
    .await;
    let dir = TempDir::new("bombs");
    let config = super::process::write_config(
        dir.path(),
        &format!(
            "[capture]\nmax_decoded_bytes = {CAP}\ndecode_budget_bytes = {}\n{}",
            2 * CAP,
            provider_toml("mock", "openai", &mock.url())
        ),
    );
    let data = dir.path().join("data");
    let proc = super::process::spawn_llmtap(&config, &data, &[]);
    let pid = proc.child.id();
    let ok = send(proc.proxy, "POST", "/mock/v1/embeddings", &[], "{}").await;
    assert_eq!(ok.status, 200);
    let baseline = proc_memory(pid, "VmRSS");

    // 30 bombs at once: each inflates to 8 MiB twice (request and response).
    let sends = (0..30).map(|_| {
        let body = bomb.clone();
        let addr = proc.proxy;
        tokio::spawn(async move {
            let request = http::Request::post(format!("http://{addr}/mock/v1/embeddings"))
                .header("content-type", "application/json")
                .header("content-encoding", "gzip")
                .body(http_body_util::Full::new(body))
                .unwrap();
            let response = client().request(request).await.unwrap();
            let id = response.headers()["x-llmtap-call-id"]
                .to_str()
                .unwrap()
                .to_string();
            response.into_body().collect().await.unwrap();
            id
        })
    });
    let mut ids = Vec::new();
    for s in sends {
        ids.push(s.await.unwrap());
    }
    for _ in 0..1200 {
        let got = send(proc.api, "GET", "/api/v1/calls?limit=1", &[], "").await;
        if got.status == 200 && got.json()["total"].as_u64() == Some(31) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = proc_memory(pid, "VmHWM");
    let grown = peak.saturating_sub(baseline);
    eprintln!("decode peak growth: {} MiB", grown >> 20);
    // All at once would be 30 × 16 MiB = 480 MiB of decoded bodies; the budget is 16 MiB.
    assert!(
        grown < 120 << 20,
        "decoding grew the process by {} MiB",
        grown >> 20
    );

    let call = send(
        proc.api,
        "GET",
        &format!("/api/v1/calls/{}", ids[0]),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(call["truncated"], true);
    assert_eq!(
        call["truncated_parts"],
        serde_json::json!(["request", "response"])
    );
    let notes = call["parse_notes"].to_string();
    assert!(notes.contains("stored cut at"), "{notes}");
    let raw = send(
        proc.api,
        "GET",
        &format!("/api/v1/calls/{}/raw?part=response", ids[0]),
        &[],
        "",
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("x-llmtap-truncated"), Some("true"));
    assert_eq!(raw.body.len(), CAP);
    assert!(
        metric(proc.api, "llmtap_truncated_bodies_total")
            .await
            .unwrap()
            >= 60
    );
}

/// Opens a raw connection and sends a chat request head plus `sent` body bytes of a
/// body announced as `announced` bytes long; the caller decides whether to finish it.
async fn partial_chat_request(
    proxy: std::net::SocketAddr,
    announced: usize,
    sent: &[u8],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST /mock/v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {announced}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream
}

fn streaming_chat_body(len: usize) -> String {
    let head = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":""#;
    let tail = r#""}]}"#;
    format!("{head}{}{tail}", "a".repeat(len - head.len() - tail.len()))
}

#[tokio::test]
async fn a_stalled_request_body_is_given_up_and_held_bodies_share_a_bound() {
    use tokio::io::AsyncReadExt;
    let mock =
        MockUpstream::start(|_| MockResponse::sse(&["data: [DONE]\n\n"], Duration::ZERO)).await;
    let dir = TempDir::new("stalled-body");
    let toml = format!(
        "[server]\nrequest_body_timeout_ms = 400\n[capture]\nrequest_buffer_total_bytes = 1000000\n{}",
        provider_toml("mock", "openai", &mock.url())
    );
    // test_config writes its own [server] table: merge by replacing it.
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 3000\n{}",
        toml.replacen("[server]\n", "", 1)
    );
    let config = llmtap::config::RawConfig::from_toml(&text)
        .unwrap()
        .validate(&llmtap::config::Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        })
        .unwrap();
    let running = start_llmtap(config).await;

    // A client that stops sending its body gets a 408 instead of holding it forever.
    let mut stalled = partial_chat_request(running.proxy_addr, 1000, b"{\"model\":").await;
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut answer))
        .await
        .expect("a stalled request body was held past its timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_body_timeout"), "{answer}");
    assert!(
        mock.seen.lock().unwrap().is_empty(),
        "nothing was forwarded"
    );

    // While one client holds 600 kB of a body (it keeps trickling, so it is not idle),
    // the next body past the shared bound is forwarded as sent instead of held to rewrite.
    let prefix = vec![b' '; 600_000];
    let mut holder = partial_chat_request(running.proxy_addr, 2_000_000, &prefix).await;
    let trickle = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if holder.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = streaming_chat_body(600_000);
    let got = post_json(running.proxy_addr, "/mock/v1/chat/completions", &[], &body).await;
    assert_eq!(got.status, 200);
    let seen = mock.last_seen();
    assert_eq!(seen.body.len(), body.len(), "forwarded unmodified");
    assert!(!String::from_utf8_lossy(&seen.body).contains("include_usage"));
    trickle.abort();
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_usage_chunk_filter_passes_an_sse_stream_without_blank_lines_through() {
    // 256 KiB of `data:` lines and never a blank line, then the upstream holds.
    let line = format!("data: {}\n", "x".repeat(1017));
    let lines = line.repeat(256);
    let steps = vec![Step::Data(Bytes::from(lines.clone())), Step::Hold];
    let mock = MockUpstream::start(move |_| MockResponse {
        status: 200,
        headers: vec![("content-type".into(), "text/event-stream".into())],
        steps: steps.clone(),
        delay_head: Duration::ZERO,
    })
    .await;
    let dir = TempDir::new("sse-no-blank");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("mock", "openai", &mock.url()),
    ))
    .await;
    let request = http::Request::post(format!(
        "http://{}/mock/v1/chat/completions",
        running.proxy_addr
    ))
    .header("content-type", "application/json")
    .body(http_body_util::Full::new(Bytes::from_static(
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#,
    )))
    .unwrap();
    let response = client().request(request).await.unwrap();
    let call_id = response.headers()["x-llmtap-call-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        mock.last_seen()
            .body
            .windows(13)
            .any(|w| w == b"include_usage"),
        "the filter is on for this call"
    );
    let mut body = response.into_body();
    let mut received = Vec::new();
    while received.len() < lines.len() {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the filter held the stream back")
            .unwrap()
            .unwrap();
        received.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(received, lines.as_bytes(), "passed through byte for byte");
    mock.release();
    drop(body);
    let call = wait_call(&running, &call_id).await;
    assert!(
        call.parse_notes
            .iter()
            .any(|n| n.contains("passed through unfiltered")),
        "{:?}",
        call.parse_notes
    );
    running.shutdown().await.unwrap();
}

/// Waits until the peer closes `stream` (EOF or reset); panics after `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("the connection was still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

fn config_with_server(dir: &std::path::Path, server: &str, rest: &str) -> llmtap::config::Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 3000\n{server}\n{rest}"
    );
    llmtap::config::RawConfig::from_toml(&text)
        .unwrap()
        .validate(&llmtap::config::Overrides {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        })
        .unwrap()
}

#[tokio::test]
async fn silent_slow_and_never_reading_clients_lose_their_connections() {
    use tokio::io::AsyncWriteExt;
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    let mock = MockUpstream::start(move |_| MockResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        steps: vec![Step::Data(chunk.clone()); 64],
        delay_head: Duration::ZERO,
    })
    .await;
    let dir = TempDir::new("conn-limits");
    let running = start_llmtap(config_with_server(
        dir.path(),
        "header_read_timeout_ms = 300\nclient_idle_timeout_ms = 600\nclient_send_timeout_ms = 500",
        &provider_toml("mock", "http", &mock.url()),
    ))
    .await;

    for addr in [running.proxy_addr, running.api_addr] {
        // Sends nothing at all (not even enough to tell HTTP/1 from HTTP/2).
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        closed_within(&mut silent, Duration::from_secs(3)).await;
        // Sends half a request head and stops (slowloris).
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /api/v1/calls HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        closed_within(&mut slow, Duration::from_secs(3)).await;
    }
    // Idle after a request: closed once nothing moved for the idle timeout.
    let mut idle = tokio::net::TcpStream::connect(running.api_addr)
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    closed_within(&mut idle, Duration::from_secs(3)).await;

    // Asks for 64 MiB and never reads: the connection goes, and the call is recorded.
    let mut deaf = tokio::net::TcpStream::connect(running.proxy_addr)
        .await
        .unwrap();
    deaf.write_all(b"GET /mock/big HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut recorded = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let list = send(running.api_addr, "GET", "/api/v1/calls", &[], "")
            .await
            .json();
        if list["count"] == 1 {
            recorded = Some(list["items"][0].clone());
            break;
        }
    }
    let call = recorded.expect("a client that never reads held its call open");
    assert_eq!(call["status"], "canceled");
    let call = send(
        running.api_addr,
        "GET",
        &format!("/api/v1/calls/{}", call["id"].as_str().unwrap()),
        &[],
        "",
    )
    .await
    .json();
    assert!(
        call["response_bytes"].as_u64().unwrap() < 64 << 20,
        "the upstream body was not read to its end"
    );
    drop(deaf);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn secrets_in_tool_api_headers_and_encoded_query_names_are_redacted() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"ok":true}"#)).await;
    let dir = TempDir::new("redaction");
    let toml = format!(
        "[capture]\nredact_headers = [\"X-My-Credential-Id\"]\nredact_query_params = [\"SessionKey\"]\n{}",
        provider_toml("tool", "http", &mock.url())
    );
    let running = start_llmtap(test_config(dir.path(), &toml)).await;
    let secrets = [
        "SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5", "SECRET6", "SECRET7", "SECRET8",
    ];
    let got = send(
        running.proxy_addr,
        "GET",
        "/tool/search?access_token=SECRET1&token=SECRET2&api-key=SECRET3&%6Bey=SECRET4&SessionKey=SECRET8&q=rust",
        &[
            ("x-auth-token", "SECRET5"),
            ("openai-api-key", "SECRET6"),
            ("x-my-credential-id", "SECRET7"),
        ],
        "",
    )
    .await;
    assert_eq!(got.status, 200);
    // Forwarded untouched: redaction is for what llmtap keeps, not for the call.
    let seen = mock.last_seen();
    assert!(seen.path_and_query.contains("%6Bey=SECRET4"));
    assert_eq!(seen.headers["x-auth-token"], "SECRET5");
    let call = wait_call(&running, &got.call_id()).await;
    let stored = serde_json::to_string(&call).unwrap();
    for secret in secrets {
        assert!(!stored.contains(secret), "{secret} stored: {stored}");
    }
    assert!(call.path.contains("q=rust"), "{}", call.path);
    assert_eq!(call.request_headers["openai-api-key"], "[redacted]");
    running.shutdown().await.unwrap();
    // Nor anywhere in the data directory.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else {
            let bytes = std::fs::read(&path).unwrap();
            for secret in secrets {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} in {}",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn dot_segments_never_leave_the_providers_base_path() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"ok":true}"#)).await;
    let dir = TempDir::new("dot-segments");
    let base = format!("{}/prefix", mock.url());
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("tool", "http", &base),
    ))
    .await;
    for path in [
        "/tool/../../x",
        "/tool/%2e%2e/%2E%2E/x",
        "/tool/a/..%2f..%2fx",
        "/tool/./x",
    ] {
        let got = send(running.proxy_addr, "GET", path, &[], "").await;
        assert_eq!(got.status, 400, "{path}");
        assert_eq!(got.json()["error"]["type"], "bad_path", "{path}");
    }
    assert!(
        mock.seen.lock().unwrap().is_empty(),
        "nothing was forwarded"
    );
    let got = send(running.proxy_addr, "GET", "/tool/a..b/x", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(mock.last_seen().path_and_query, "/prefix/a..b/x");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn absurd_provider_usage_is_stored_as_unknown_and_never_wraps_totals() {
    let mock = MockUpstream::start(|seen| {
        let huge = String::from_utf8_lossy(&seen.body).contains("huge");
        let prompt = if huge { "18446744073709551615" } else { "1000" };
        MockResponse::json(
            200,
            &format!(
                r#"{{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":10,"total_tokens":{prompt}}}}}"#
            ),
        )
    })
    .await;
    let dir = TempDir::new("absurd-usage");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("mock", "openai", &mock.url()),
    ))
    .await;
    let normal = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    wait_call(&running, &normal.call_id()).await;
    let huge = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"huge"}]}"#,
    )
    .await;
    let call = wait_call(&running, &huge.call_id()).await;
    assert_eq!(call.usage.input_tokens, None, "{:?}", call.usage);
    assert_eq!(call.usage.output_tokens, Some(10));
    assert_eq!(call.usage.total_tokens, Some(10));
    assert!(
        call.parse_notes
            .iter()
            .any(|n| n.contains("above the sane bound")),
        "{:?}",
        call.parse_notes
    );
    assert!(call.cost_usd.unwrap_or(0.0) < 1.0, "{:?}", call.cost_usd);
    let mut summary = Value::Null;
    for _ in 0..200 {
        summary = send(running.api_addr, "GET", "/api/v1/summary", &[], "")
            .await
            .json();
        if summary["calls_today"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(summary["tokens_today"]["input"], 1000);
    assert_eq!(summary["tokens_today"]["output"], 20);
    assert!(
        summary["cost_today_usd"].as_f64().unwrap() < 1.0,
        "{summary}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_disk_that_fills_between_checks_pauses_capture_and_healthz_tells_the_truth() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"ok":true}"#)).await;
    let dir = TempDir::new("disk-fast-fill");
    let running = start_llmtap(test_config(
        dir.path(),
        &format!(
            "{}[store]\nmin_free_mb = 1000\ncritical_free_mb = 100\n",
            provider_toml("tool", "http", &mock.url())
        ),
    ))
    .await;
    let free = Arc::new(AtomicU64::new(5_000 << 20));
    let f = free.clone();
    running
        .store
        .disk()
        .set_probe(Arc::new(move |_| Ok(f.load(Ordering::Relaxed))));
    running.store.disk().check();

    // The disk fills right after a check: the next batch must see it, not the next check.
    free.store(10 << 20, Ordering::Relaxed);
    let got = send(running.proxy_addr, "GET", "/tool/a", &[], "").await;
    assert_eq!(got.status, 200, "forwarding goes on");
    let skipped = got.call_id();
    for _ in 0..200 {
        if running.metrics.backlog.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        running.store.get_call(&skipped).unwrap().is_none(),
        "stored on a full disk: the writer did not look"
    );
    let health = send(running.api_addr, "GET", "/healthz", &[], "")
        .await
        .json();
    assert_eq!(health["storage"]["storing_calls"], false);

    // Space is back: the next call is stored, without a restart or a storage-thread check.
    free.store(5_000 << 20, Ordering::Relaxed);
    let got = send(running.proxy_addr, "GET", "/tool/b", &[], "").await;
    wait_call(&running, &got.call_id()).await;

    // While batch writes fail, /healthz says so; the next good write clears it.
    running
        .store
        .note_write_outcome(Some("No space left on device (os error 28)".into()));
    let health = send(running.api_addr, "GET", "/healthz", &[], "")
        .await
        .json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["storage"]["writes_failing"], true);
    assert_eq!(health["storage"]["storing_calls"], false);
    assert!(health["storage"]["last_write_error"]
        .as_str()
        .unwrap()
        .contains("No space left"));
    let got = send(running.proxy_addr, "GET", "/tool/c", &[], "").await;
    wait_call(&running, &got.call_id()).await;
    let mut health = Value::Null;
    for _ in 0..200 {
        health = send(running.api_addr, "GET", "/healthz", &[], "")
            .await
            .json();
        if health["status"] == "ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(health["status"], "ok", "{health}");
    assert!(health["storage"]["last_write_error"].is_null());
    running.shutdown().await.unwrap();
}

/// A real small file system for a test: a tmpfs of `size_mb` mounted on a fresh
/// directory (tests run as root, as CI does), unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(at: &std::path::Path, size_mb: u64) {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount(8) runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {}: the test runs as root",
            at.display()
        );
    }

    fn new(tag: &str, size_mb: u64) -> Tmpfs {
        let dir = TempDir::new(tag);
        Tmpfs::mount(dir.path(), size_mb);
        Tmpfs(dir)
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, with any mount below it: the store's files may still be closing.
        let _ = std::process::Command::new("umount")
            .args(["-R", "-l"])
            .arg(self.0.path())
            .status();
    }
}

/// Writes a file until its file system is full; returns its path.
fn fill_disk(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; 64 << 10];
    loop {
        match file.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = file.sync_all();
    path
}

fn libc_enospc() -> i32 {
    28
}

async fn health(running: &llmtap::server::Running) -> serde_json::Value {
    send(running.api_addr, "GET", "/healthz", &[], "")
        .await
        .json()
}

/// One chat round of the run (the mock answers 5 input and 1 output tokens).
async fn round(running: &llmtap::server::Running, invocation: &str) -> String {
    let got = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[("x-llmtap-invocation-id", invocation)],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(got.status, 200, "forwarding goes on whatever the disk");
    got.call_id()
}

/// Issue 12 item 9: a store disk that fills between the disk guard's checks makes
/// sled fail every later write (it keeps the first I/O error until reopened).
/// The writer reopens the store once space is back, reads the capture log again
/// from the store's position and applies each call exactly once, without a restart;
/// `/healthz` and `/readyz` tell the truth meanwhile, and `/metrics` counts it.
#[tokio::test]
async fn a_full_store_disk_is_recovered_from_without_a_restart_and_nothing_logged_is_lost() {
    let data = Tmpfs::new("store-enospc", 48);
    // The capture log on a file system of its own, as a separate volume would be:
    // calls are logged while the store's disk is full.
    Tmpfs::mount(&data.path().join("journal"), 64);
    let mock = MockUpstream::start(echo_model).await;
    let running = start_llmtap(test_config(
        data.path(),
        &format!(
            // The disk guard is off, as when the disk fills faster than its checks.
            "{}[store]\nmin_free_mb = 0\ncritical_free_mb = 0\n",
            provider_toml("mock", "openai", &mock.url())
        ),
    ))
    .await;
    let mut before = Vec::new();
    for _ in 0..5 {
        before.push(round(&running, "run-before").await);
    }
    for id in &before {
        wait_call(&running, id).await;
    }
    assert_eq!(health(&running).await["status"], "ok");

    let filler = fill_disk(data.path());
    let mut during = Vec::new();
    let mut failing = false;
    for _ in 0..200 {
        during.push(round(&running, "run-full").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let h = health(&running).await;
        if h["storage"]["writes_failing"] == true {
            failing = true;
            assert_eq!(h["status"], "degraded", "{h}");
            assert_eq!(h["storage"]["storing_calls"], false, "{h}");
            break;
        }
    }
    assert!(failing, "the store never failed on a full disk");
    for _ in 0..5 {
        during.push(round(&running, "run-full").await);
    }

    // Space comes back: capture resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(round(&running, "run-after").await);
    }
    for id in before.iter().chain(&during).chain(&after) {
        wait_call(&running, id).await;
    }
    let h = health(&running).await;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["storage"]["store"], "open", "{h}");
    assert_eq!(h["storage"]["storing_calls"], true, "{h}");
    assert!(h["storage"]["reopens"].as_u64().unwrap() >= 1, "{h}");
    let ready = send(running.api_addr, "GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 200);
    assert!(
        metric(running.api_addr, "llmtap_store_reopens_total")
            .await
            .unwrap()
            >= 1
    );
    assert_eq!(
        metric(running.api_addr, "llmtap_capture_failures_total").await,
        Some(0),
        "a logged call was dropped"
    );

    // Exactly once: each run's rollup counts its calls once, rounds are 1..n.
    for (run, ids) in [
        ("run-before", &before),
        ("run-full", &during),
        ("run-after", &after),
    ] {
        let inv = invocation(&running, run).expect("run stored");
        assert_eq!(inv.rounds as usize, ids.len(), "{run}: {inv:?}");
        assert_eq!(inv.usage.input_tokens, Some(5 * ids.len() as u64), "{run}");
        let mut rounds: Vec<u32> = ids
            .iter()
            .map(|id| running.store.get_call_meta(id).unwrap().unwrap().round)
            .collect();
        rounds.sort_unstable();
        assert_eq!(rounds, (1..=ids.len() as u32).collect::<Vec<_>>(), "{run}");
    }
    assert_eq!(
        running.store.call_count(),
        before.len() + during.len() + after.len()
    );
    running.shutdown().await.unwrap();
    drop(data);
}

/// The capture log's own disk fills: calls are forwarded and counted as not
/// recorded, and logging resumes by itself once space is back.
#[tokio::test]
async fn a_full_capture_log_disk_loses_only_what_it_could_not_write_and_resumes() {
    let data = TempDir::new("log-enospc");
    let journal = data.path().join("journal");
    Tmpfs::mount(&journal, 8);
    let _unmount = Tmpfs(TempDir(journal.clone()));
    let mock = MockUpstream::start(echo_model).await;
    let running = start_llmtap(test_config(
        data.path(),
        &format!(
            "{}[store]\nmin_free_mb = 0\ncritical_free_mb = 0\n",
            provider_toml("mock", "openai", &mock.url())
        ),
    ))
    .await;
    let first = round(&running, "log-run").await;
    wait_call(&running, &first).await;
    let filler = fill_disk(&journal);
    // The segment's last page may still take a few records.
    for _ in 0..30 {
        round(&running, "log-run").await;
    }
    let mut lost = 0;
    for _ in 0..200 {
        lost = metric(running.api_addr, "llmtap_capture_failures_total")
            .await
            .unwrap_or(0);
        if lost > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        lost > 0 && lost <= 30,
        "calls the log could not write are counted: {lost}"
    );
    std::fs::remove_file(&filler).unwrap();
    let later = round(&running, "log-run").await;
    wait_call(&running, &later).await;
    running.shutdown().await.unwrap();
}
