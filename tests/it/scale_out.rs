//! Scale-out: three `llmtap serve` processes on one PostgreSQL behave, through the
//! read API, like one llmtap. One agent run's rounds go through all three; each
//! instance reads it back whole and in start order, with the totals of what was
//! sent, and shows the others' calls in its live stream; with one instance killed
//! (`kill -9`), the other two go on recording and reading.

use super::pg;
use super::process::{spawn_llmtap, write_config, Proc};
use super::util::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const RUN: &str = "fleet-run";
const SESSION: &str = "fleet-session";

/// A chat completion answer with usage: 10 prompt and 3 completion tokens.
fn answer() -> MockResponse {
    MockResponse::json(
        200,
        r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}"#,
    )
}

/// Sends round `i` of the run through an instance; returns its call id.
async fn send_round(proxy: SocketAddr, i: usize) -> String {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"fleet step {i}"}}]}}"#
    );
    let got = post_json(
        proxy,
        "/mock/v1/chat/completions",
        &[
            ("x-llmtap-invocation-id", RUN),
            ("x-llmtap-agent", "fleet"),
            ("x-llmtap-session-id", SESSION),
        ],
        &body,
    )
    .await;
    assert_eq!(got.status, 200, "round {i}");
    got.call_id()
}

async fn api_json(api: SocketAddr, path: &str) -> (u16, Value) {
    let got = send(api, "GET", path, &[], "").await;
    let v = serde_json::from_slice(&got.body).unwrap_or(Value::Null);
    (got.status, v)
}

/// The run as an instance reads it, once it shows `rounds` rounds (within 20 s).
async fn run_with_rounds(api: SocketAddr, rounds: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = api_json(api, &format!("/api/v1/invocations/{RUN}")).await;
        if status == 200 && v["rounds"].as_array().map_or(0, Vec::len) == rounds {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{api}: the run never showed {rounds} rounds: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks what one instance answers about the run after `sent` rounds.
async fn check_instance(p: &Proc, sent: &[String]) {
    let v = run_with_rounds(p.api, sent.len()).await;
    let rounds = v["rounds"].as_array().unwrap();
    let ids: Vec<&str> = rounds
        .iter()
        .map(|r| r["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        sent.iter().map(String::as_str).collect::<Vec<_>>(),
        "{}: start order",
        p.api
    );
    let numbers: Vec<u64> = rounds
        .iter()
        .map(|r| r["round"].as_u64().unwrap())
        .collect();
    assert_eq!(
        numbers,
        (1..=sent.len() as u64).collect::<Vec<_>>(),
        "{}",
        p.api
    );
    assert_eq!(v["round_count"], sent.len(), "{}: {v}", p.api);
    let n = sent.len() as u64;
    // Totals are the sums of what was sent, whichever instance recorded each call.
    let (_, calls) = api_json(p.api, "/api/v1/calls?agent=fleet").await;
    assert_eq!(calls["total"], n, "{}: {calls}", p.api);
    let (_, session) = api_json(p.api, &format!("/api/v1/sessions/{SESSION}")).await;
    assert_eq!(session["calls"], n, "{}: {session}", p.api);
    assert_eq!(session["input_tokens"], 10 * n, "{}: {session}", p.api);
    assert_eq!(session["output_tokens"], 3 * n, "{}: {session}", p.api);
    let (_, runs) = api_json(p.api, "/api/v1/invocations?agent=fleet").await;
    assert_eq!(runs["total"], 1, "{}: {runs}", p.api);
    assert_eq!(runs["items"][0]["id"], RUN, "{}: {runs}", p.api);
}

#[tokio::test]
async fn three_instances_on_one_database_read_one_run_whole_and_survive_a_kill() {
    use http_body_util::BodyExt;
    let db = pg::fresh_db("scale_out").await;
    let mock = MockUpstream::start(|_| answer()).await;
    let dir = TempDir::new("scale-out");
    let config = write_config(
        dir.path(),
        &format!(
            "{}[store]\nurl = \"{}\"\n",
            provider_toml("mock", "openai", &mock.url()),
            db.url()
        ),
    );
    let mut procs: Vec<Proc> = (0..3)
        .map(|i| spawn_llmtap(&config, &dir.path().join(format!("instance-{i}")), &[]))
        .collect();
    for p in &procs {
        let deadline = Instant::now() + Duration::from_secs(20);
        while send(p.api, "GET", "/readyz", &[], "").await.status != 200 {
            assert!(Instant::now() < deadline, "{} never became ready", p.api);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Instance 2's live stream, opened before anything is sent.
    let request = http::Request::get(format!("http://{}/api/v1/stream?agent=fleet", procs[2].api))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();

    // Nine rounds, one after another, round-robin over the instances.
    let mut sent = Vec::new();
    for i in 0..9 {
        sent.push(send_round(procs[i % 3].proxy, i).await);
    }
    for p in &procs {
        check_instance(p, &sent).await;
    }
    // The stream of instance 2 shows the calls that went through 0 and 1 too.
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sent.iter().all(|id| text.contains(id.as_str())) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, stream.frame())
            .await
            .unwrap_or_else(|_| panic!("the stream missed calls; it sent: {text}"))
            .expect("stream open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }

    // Instance 0 dies without a word; the others record and answer on.
    let mut dead = procs.remove(0);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    for i in 9..12 {
        sent.push(send_round(procs[i % 2].proxy, i).await);
    }
    for p in &procs {
        check_instance(p, &sent).await;
    }
    for mut p in procs {
        super::process::terminate(&mut p.child);
    }
}
