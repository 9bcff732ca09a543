//! Issue 33's operating limits: a read-API flood cannot stop the capture of agents
//! (connection caps on each listener, per address on the read API, the open-file
//! limit raised), idle upstream connections close on time, and `data_dir` is
//! private.

use super::process::write_config;
use super::util::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Finding 3: under an open-file limit of 256, 600 idle connections to the read
/// API (connecting needs no token) used to exhaust the descriptors, and the proxy
/// stopped answering agents. The API now holds its share and the rest wait in the
/// kernel's queue; the proxy answers every call.
#[tokio::test]
async fn a_flood_of_idle_api_connections_leaves_the_proxy_serving() {
    let mock = MockUpstream::start(|_| {
        MockResponse::json(
            200,
            r#"{"id":"x","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        )
    })
    .await;
    let dir = TempDir::new("flood");
    let config = write_config(dir.path(), &provider_toml("oa", "openai", &mock.url()));
    let log = dir.path().join("stderr.log");
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" serve --config \"$1\" --data-dir \"$2\"")
        .arg(env!("CARGO_BIN_EXE_llmtap"))
        .arg(&config)
        .arg(dir.path().join("data"))
        .env("LLMTAP_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    let mut proc = super::process::spawn_command(command);
    let (proxy, api) = (proc.proxy, proc.api);
    let pid = proc.child.id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };

    // Past the API's share and its accept queue the kernel holds further SYNs,
    // so connect in parallel and keep those that got through.
    let attempts: Vec<_> = (0..600)
        .map(|_| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(api),
            ))
        })
        .collect();
    let mut flood = Vec::new();
    for attempt in attempts {
        if let Ok(Ok(Ok(stream))) = attempt.await {
            flood.push(stream);
        }
    }
    assert!(flood.len() > 300, "{} connected", flood.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            post_json(
                proxy,
                "/oa/v1/chat/completions",
                &[],
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("call {i} not answered while the read API is flooded"));
        assert_eq!(got.status, 200);
    }
    let held = fds();
    assert!(held < 256, "llmtap holds {held} descriptors");
    drop(flood);
    super::process::terminate(&mut proc.child);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("Too many open files"), "{text}");
    assert!(text.contains("connection limits"), "{text}");
}

/// The read API caps connections per client address: one address over its share
/// is closed at once (and counted) while another address is still served.
#[tokio::test]
async fn one_address_cannot_take_every_read_api_connection() {
    let dir = TempDir::new("per-address");
    let mut config = test_config(dir.path(), "");
    config.api_max_connections = Some(40);
    config.api_max_connections_per_ip = Some(10);
    let running = start_llmtap(config).await;
    let api = running.api_addr;
    let mut held = Vec::new();
    for _ in 0..30 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        held.push(socket.connect(api).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Those over the share were closed by llmtap: a read ends at once.
    let mut closed = 0;
    for stream in &mut held {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte)).await;
        if let Ok(Ok(0)) = read {
            closed += 1;
        }
    }
    assert_eq!(closed, 20);
    // Another address is served.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(api).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), other.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let metrics = String::from_utf8(api_get(&running, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("llmtap_connections_refused_total{listener=\"api\"} 20"),
        "{metrics}"
    );
    drop(held);
    running.shutdown().await.unwrap();
}

/// Finding 8: pooled upstream connections close when idle for
/// `server.upstream_idle_timeout_ms` (they used to stay open until that host was
/// used again).
#[tokio::test]
async fn idle_upstream_connections_close_on_time() {
    // An upstream that counts its open connections.
    let open = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(
                            br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
                        )),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    let dir = TempDir::new("idle-pool");
    let mut config = test_config(
        dir.path(),
        &provider_toml("oa", "openai", &format!("http://{upstream}")),
    );
    config.upstream_idle_timeout = Duration::from_millis(400);
    let running = start_llmtap(config).await;
    let calls = (0..5).map(|_| {
        post_json(
            running.proxy_addr,
            "/oa/v1/chat/completions",
            &[],
            r#"{"model":"m","messages":[]}"#,
        )
    });
    for got in futures_join(calls).await {
        assert_eq!(got.status, 200);
    }
    assert!(
        open.load(Ordering::SeqCst) >= 1,
        "pooled connections stay for reuse"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(open.load(Ordering::SeqCst), 0, "idle connections closed");
    running.shutdown().await.unwrap();
}

async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::new();
    for f in handles {
        out.push(f.await);
    }
    out
}

/// Finding 8: `data_dir` is 0700 and what llmtap writes in it 0600 (it holds
/// prompts), also when the directory existed with 0755.
#[tokio::test]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"usage":{}}"#)).await;
    let dir = TempDir::new("private");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let running = start_llmtap(test_config(
        &data,
        &provider_toml("oa", "openai", &mock.url()),
    ))
    .await;
    let got = post_json(
        running.proxy_addr,
        "/oa/v1/chat/completions",
        &[],
        r#"{"model":"m"}"#,
    )
    .await;
    wait_call(&running, &got.call_id()).await;
    running.shutdown().await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let mut stack = vec![data.clone()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is {:o}",
                path.display(),
                mode(&path)
            );
            if path.is_dir() {
                stack.push(path);
            } else {
                files += 1;
            }
        }
    }
    assert!(files > 2);
}

/// Finding 7: on a nearly full volume the capture log appends nothing (it never
/// takes the last space itself), the proxy keeps forwarding, `/readyz` and
/// `/healthz` say capture is paused, and recording resumes by itself when space
/// is back.
#[tokio::test]
async fn a_nearly_full_disk_pauses_capture_and_it_resumes_by_itself() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"usage":{}}"#)).await;
    let dir = TempDir::new("log-disk");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("oa", "openai", &mock.url()),
    ))
    .await;
    let free = Arc::new(std::sync::atomic::AtomicU64::new(5 << 20));
    let probe = free.clone();
    running
        .log_disk
        .set_probe(Arc::new(move |_| Ok(probe.load(Ordering::Relaxed))));
    let call = || {
        post_json(
            running.proxy_addr,
            "/oa/v1/chat/completions",
            &[],
            r#"{"model":"m","messages":[]}"#,
        )
    };
    for _ in 0..10 {
        assert_eq!(call().await.status, 200, "forwarding goes on");
    }
    // The log thread takes each finished call a moment after its answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(running.api_addr, "llmtap_capture_paused_calls_total").await != Some(10) {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready = api_get(&running, "/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["error"]["type"], "capture_paused");
    let health = api_get(&running, "/healthz").await.json();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["capture_log"]["paused"], true);
    assert_eq!(health["capture_log"]["paused_calls"], 10);
    assert_eq!(
        metric(running.api_addr, "llmtap_capture_paused").await,
        Some(1)
    );
    assert_eq!(
        metric(running.api_addr, "llmtap_capture_paused_calls_total").await,
        Some(10)
    );
    // Space comes back: the next calls are recorded, without a restart.
    free.store(64 << 30, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(call().await.call_id());
    }
    for id in &ids {
        wait_call(&running, id).await;
    }
    assert_eq!(api_get(&running, "/readyz").await.status, 200);
    assert_eq!(
        metric(running.api_addr, "llmtap_capture_paused").await,
        Some(0)
    );
    assert_eq!(running.store.call_ids().unwrap().len(), 3);
    running.shutdown().await.unwrap();
}

/// Finding 6: one budget bounds what all in-flight captures hold together. Ten
/// concurrent 1 MiB streams against a 2 MiB budget: every client gets every byte,
/// the captures past the budget are cut and say so, the budget is never passed,
/// and it is all given back once the calls are logged.
#[tokio::test]
async fn one_memory_budget_bounds_every_capture_in_flight() {
    let event = format!("data: {{\"x\":\"{}\"}}\n\n", "y".repeat(64 * 1024 - 20));
    let events: Vec<String> = (0..16).map(|_| event.clone()).collect();
    let mock = MockUpstream::start(move |_| {
        let refs: Vec<&str> = events.iter().map(String::as_str).collect();
        MockResponse::sse(&refs, Duration::from_millis(15))
    })
    .await;
    let dir = TempDir::new("budget");
    let mut config = test_config(dir.path(), &provider_toml("tool", "http", &mock.url()));
    config.capture_memory_budget = 2 << 20;
    let running = start_llmtap(config).await;
    let api = running.api_addr;
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..60 {
            peak = peak.max(
                metric(api, "llmtap_capture_memory_bytes")
                    .await
                    .unwrap_or(0),
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    });
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let proxy = running.proxy_addr;
            tokio::spawn(async move { send(proxy, "GET", "/tool/stream", &[], "").await })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        let got = call.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(
            got.body.len(),
            16 * event.len(),
            "the client gets every byte"
        );
        ids.push(got.call_id());
    }
    let peak = watcher.await.unwrap();
    assert!(peak <= 2 << 20, "in-flight captures held {peak} bytes");
    let mut cut = 0;
    for id in &ids {
        let call = wait_call(&running, id).await;
        if call.parse_notes.iter().any(|n| n.contains("memory_budget")) {
            assert!(call.truncated);
            cut += 1;
        }
    }
    assert!(cut >= 5, "{cut} of 10 captures cut by a 2 MiB budget");
    assert!(
        metric(api, "llmtap_capture_budget_cuts_total")
            .await
            .unwrap()
            >= 5
    );
    assert_eq!(metric(api, "llmtap_capture_memory_bytes").await, Some(0));
    running.shutdown().await.unwrap();
}

fn rss_mb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb >> 10)
}

/// Finding 6's memory proof, on the real binary: 200 concurrent streamed 1 MiB
/// answers peak under 400 MB of RSS and are under 200 MB 30 s after; 500 of them
/// stay under 800 MB (the 256 MiB capture budget, the 64 MiB handoff to the
/// writer, group commits bounded to 8 MiB, connection buffers, and the batches the
/// writer holds while other tests share the cores: 569-716 MB measured). The store's page
/// cache is 16 MiB here, as in `it::chaos`, so what is measured is capture.
#[tokio::test]
async fn memory_stays_bounded_with_hundreds_of_1_mib_streams() {
    let event = format!("data: {{\"x\":\"{}\"}}\n\n", "y".repeat(64 * 1024 - 20));
    let answer_len = 16 * event.len();
    let mock = MockUpstream::start(move |_| {
        let refs: Vec<&str> = (0..16).map(|_| event.as_str()).collect();
        MockResponse::sse(&refs, Duration::from_millis(30))
    })
    .await;
    let dir = TempDir::new("memory");
    let config = write_config(
        dir.path(),
        &format!(
            "[store]\ncache_capacity_mb = 16\n{}",
            provider_toml("tool", "http", &mock.url())
        ),
    );
    let proc = super::process::spawn_llmtap(&config, &dir.path().join("data"), &[]);
    let (proxy, pid) = (proc.proxy, proc.child.id());
    let mut peaks = Vec::new();
    for streams in [200usize, 500] {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let sampler = tokio::spawn(async move {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_mb(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        });
        let calls: Vec<_> = (0..streams)
            .map(|_| tokio::spawn(async move { send(proxy, "GET", "/tool/s", &[], "").await }))
            .collect();
        for call in calls {
            let got = call.await.unwrap();
            assert_eq!(got.status, 200);
            assert_eq!(got.body.len(), answer_len);
        }
        done.store(true, Ordering::Relaxed);
        peaks.push((streams, sampler.await.unwrap()));
        if streams == 200 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let after = rss_mb(pid);
            eprintln!(
                "memory: 200 streams peak {} MB, 30 s after {after} MB",
                peaks[0].1
            );
            assert!(peaks[0].1 < 400, "200 streams: peak {} MB", peaks[0].1);
            assert!(after < 200, "30 s after 200 streams: {after} MB");
        }
    }
    eprintln!("memory: 500 streams peak {} MB", peaks[1].1);
    assert!(peaks[1].1 < 800, "500 streams: peak {} MB", peaks[1].1);
}
