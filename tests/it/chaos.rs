//! Hostile conditions against the real binary: slowloris clients, thousands of
//! abandoned connections and streams, a 100 MB response. llmtap must stay up,
//! keep serving, give every call a record with the right status, and give its
//! memory back.

use super::process::{spawn_llmtap, write_config};
use super::util::*;
use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn calls_with_status(api: std::net::SocketAddr, status: &str) -> u64 {
    let text =
        String::from_utf8(send(api, "GET", "/metrics", &[], "").await.body.to_vec()).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("llmtap_requests_total{") && l.contains(&format!("status=\"{status}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

const STREAM_EVENT: &str =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tick\"}}]}\n\n";

#[tokio::test]
async fn llmtap_survives_hostile_clients_and_upstreams() {
    let hundred_mb = 100usize << 20;
    let mock = MockUpstream::start(move |req| {
        if req.path_and_query.contains("huge") {
            let chunk = Bytes::from(vec![b'a'; 1 << 20]);
            let mut r = MockResponse::json(200, "");
            r.steps = (0..hundred_mb >> 20)
                .map(|_| Step::Data(chunk.clone()))
                .collect();
            r
        } else if req.path_and_query.contains("stream") {
            MockResponse::sse(&[STREAM_EVENT; 400], Duration::from_millis(50))
        } else {
            MockResponse::json(200, r#"{"ok":true}"#)
        }
    })
    .await;
    let dir = TempDir::new("chaos");
    let config = write_config(
        dir.path(),
        &format!(
            "header_read_timeout_ms = 4000\n[store]\ncache_capacity_mb = 16\n{}",
            provider_toml("mock", "http", &mock.url())
        ),
    );
    let proc = spawn_llmtap(&config, &dir.path().join("data"), &[]);
    let (proxy, api) = (proc.proxy, proc.api);
    let pid = proc.child.id();
    // Warm up, then take the baseline.
    for _ in 0..20 {
        assert_eq!(post_json(proxy, "/mock/ok", &[], "{}").await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss_kb(pid);

    // 1. Slowloris: 300 clients trickle a request head; they are cut off, others are served.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
        s.write_all(b"POST /mock/ok HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let started = std::time::Instant::now();
    let fast = post_json(proxy, "/mock/ok", &[], "{}").await;
    assert_eq!(fast.status, 200);
    // Were others queued behind the slow clients, they would wait for the 4 s cut-off.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "slow clients delayed others"
    );
    let mut closed = 0;
    for mut s in slow {
        let _ = s.write_all(b"x-slow: 1\r\n").await;
        let mut buf = [0u8; 256];
        // EOF or a reset both mean llmtap dropped the connection; only a timeout means it did not.
        if tokio::time::timeout(Duration::from_secs(8), s.read(&mut buf))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 300, "slowloris connections were not cut off");

    // 2. 10,000 connections opened and abandoned without a request.
    for batch in 0..20 {
        let mut conns = Vec::new();
        for _ in 0..500 {
            if let Ok(s) = tokio::net::TcpStream::connect(proxy).await {
                conns.push(s);
            }
        }
        assert!(conns.len() >= 490, "batch {batch}: connect failed");
        drop(conns);
    }

    // 3. 1,000 streams abandoned by their clients mid-response: each is a canceled call.
    let canceled_before = calls_with_status(api, "canceled").await;
    let mut streams = Vec::new();
    for _ in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
        s.write_all(b"POST /mock/stream HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        streams.push(s);
    }
    for s in streams.iter_mut() {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
    }
    let peak_streams = rss_kb(pid);
    drop(streams);
    let mut canceled = 0;
    for _ in 0..300 {
        canceled = calls_with_status(api, "canceled").await - canceled_before;
        if canceled >= 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        canceled, 1000,
        "every abandoned stream must be recorded as canceled"
    );

    let after_streams = rss_kb(pid);
    // 4. A 100 MB response passes whole; its record is capped and says so.
    let got = post_json(proxy, "/mock/huge", &[], "{}").await;
    assert_eq!(got.body.len(), hundred_mb);
    let id = got.call_id();
    let mut record = serde_json::Value::Null;
    for _ in 0..600 {
        let r = send(api, "GET", &format!("/api/v1/calls/{id}"), &[], "").await;
        if r.status == 200 {
            record = r.json();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(record["truncated"], true);
    assert_eq!(record["response_bytes"], hundred_mb as u64);
    assert_eq!(record["status"], "success");
    drop(got);

    // Still serving, and memory comes back down.
    assert_eq!(post_json(proxy, "/mock/ok", &[], "{}").await.status, 200);
    let mut after = rss_kb(pid);
    for _ in 0..40 {
        if after < baseline + 64 * 1024 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss_kb(pid);
    }
    eprintln!(
        "chaos RSS: baseline {} MB, 1000 streams {} MB, after the streams {} MB, after all {} MB",
        baseline / 1024,
        peak_streams / 1024,
        after_streams / 1024,
        after / 1024
    );
    assert_eq!(
        metric(api, "llmtap_capture_failures_total")
            .await
            .unwrap_or(0),
        0
    );
    assert!(
        after < baseline + 64 * 1024,
        "memory did not return: baseline {baseline} kB, after {after} kB"
    );
}
