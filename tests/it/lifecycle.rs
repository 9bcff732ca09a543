//! Start-up and shutdown: graceful drain loses nothing; a store in use is refused;
//! the proxy forwards while the store opens.

use super::util::*;
use std::time::Duration;

const SLOW_STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";

#[tokio::test]
async fn graceful_stop_keeps_every_answered_call() {
    let mock = MockUpstream::start(|req| {
        if req.path_and_query.contains("slow") {
            MockResponse::sse(
                &[SLOW_STREAM, SLOW_STREAM, "data: [DONE]\n\n"],
                Duration::from_millis(150),
            )
        } else {
            MockResponse::json(200, r#"{"ok":true}"#)
        }
    })
    .await;
    let dir = TempDir::new("drain");
    let config = test_config(dir.path(), &provider_toml("mock", "openai", &mock.url()));
    let running = start_llmtap(config.clone()).await;
    let addr = running.proxy_addr;
    let mut tasks = Vec::new();
    for i in 0..40 {
        tasks.push(tokio::spawn(async move {
            // Keep sending until the proxy stops answering.
            let mut ids = Vec::new();
            for j in 0..1000 {
                let path = if (i + j) % 5 == 0 {
                    "/mock/v1/slow"
                } else {
                    "/mock/v1/fast"
                };
                let request = http::Request::post(format!("http://{addr}{path}"))
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                    .unwrap();
                let Ok(response) = client().request(request).await else {
                    break;
                };
                let id = response
                    .headers()
                    .get("x-llmtap-call-id")
                    .map(|v| v.to_str().unwrap().to_string());
                use http_body_util::BodyExt;
                if response.into_body().collect().await.is_err() {
                    break;
                }
                ids.extend(id);
            }
            ids
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    running.shutdown().await.unwrap();
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert!(answered.len() > 40, "load too small: {}", answered.len());
    // Reopen the store as a new process would.
    let store = llmtap::store::Store::open(dir.path(), 64 << 20, 100).unwrap();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| store.get_call(id).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered calls lost",
        missing.len(),
        answered.len()
    );
}

#[tokio::test]
async fn a_store_in_use_is_refused_clearly() {
    let dir = TempDir::new("locked");
    let running = start_llmtap(test_config(dir.path(), "")).await;
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        llmtap::server::start(test_config(dir.path(), "")),
    )
    .await
    .expect("second open hung");
    let message = format!("{:#}", second.err().expect("second open succeeded"));
    assert!(
        message.contains("in use by another llmtap process"),
        "{message}"
    );
    running.shutdown().await.unwrap();
}

/// Opening a large store takes a while (sled's recovery, the facet cache): agents
/// must be forwarded meanwhile, and what they send is recorded once it is open; the
/// read API answers 503 until then.
#[tokio::test]
async fn the_proxy_forwards_while_the_store_opens_and_records_those_calls() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"ok":true}"#)).await;
    let dir = TempDir::new("opening");
    // Holding the store keeps llmtap's open waiting (it waits up to three seconds for a
    // handle that is closing), as a slow open would.
    let holder = llmtap::store::Store::open(dir.path(), 16 << 20, 50).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let mut config = test_config(dir.path(), &provider_toml("mock", "openai", &mock.url()));
    config.listen = free();
    config.api_listen = free();
    let (addr, api) = (config.listen, config.api_listen);
    let starting = tokio::spawn(llmtap::server::start(config));
    let mut answered = None;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            answered = Some(post_json(addr, "/mock/v1/chat/completions", &[], "{}").await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let answered = answered.expect("the proxy never listened");
    assert_eq!(answered.status, 200);
    // Alive (liveness 200) but not ready: readiness and reads say why.
    let live = send(api, "GET", "/healthz", &[], "").await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["store"], "opening");
    for path in ["/readyz", "/api/v1/calls"] {
        let opening = send(api, "GET", path, &[], "").await;
        assert_eq!(opening.status, 503, "{path}");
        assert_eq!(opening.json()["error"]["type"], "store_opening");
        assert_eq!(opening.header("retry-after"), Some("5"));
    }
    assert!(
        !starting.is_finished(),
        "the store opened before the test let it"
    );
    drop(holder);
    let running = tokio::time::timeout(Duration::from_secs(10), starting)
        .await
        .expect("start hung")
        .unwrap()
        .expect("start failed");
    wait_call(&running, &answered.call_id()).await;
    assert_eq!(send(api, "GET", "/healthz", &[], "").await.status, 200);
    let ready = send(api, "GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    running.shutdown().await.unwrap();
}
