//! Prices in records: the cost of a call, streamed or not, and invocation totals.

use super::util::*;
use std::time::Duration;

fn chat_json(model: &str, prompt: u64, cached: u64, completion: u64) -> String {
    format!(
        r#"{{"id":"x","object":"chat.completion","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":{cached}}}}}}}"#,
        prompt + completion
    )
}

fn chat_stream(model: &str, prompt: u64, cached: u64, completion: u64) -> Vec<String> {
    vec![
        format!("data: {{\"id\":\"x\",\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"ok\"}}}}]}}\n\n"),
        format!("data: {{\"id\":\"x\",\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n"),
        format!(
            "data: {{\"id\":\"x\",\"model\":\"{model}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{cached}}}}}}}\n\n",
            prompt + completion
        ),
        "data: [DONE]\n\n".to_string(),
    ]
}

#[tokio::test]
async fn calls_are_priced_and_invocations_add_up() {
    let mock = MockUpstream::start(|req| {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let model = body["model"].as_str().unwrap().to_string();
        let (prompt, cached, completion) = (10_000, 6_000, 500);
        if body["stream"] == true {
            let events = chat_stream(&model, prompt, cached, completion);
            let refs: Vec<&str> = events.iter().map(String::as_str).collect();
            MockResponse::sse(&refs, Duration::ZERO)
        } else {
            MockResponse::json(200, &chat_json(&model, prompt, cached, completion))
        }
    })
    .await;
    let dir = TempDir::new("cost");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("oa", "openai", &mock.url()),
    ))
    .await;
    let inv = [("x-llmtap-invocation-id", "priced-run")];
    let plain = post_json(
        running.proxy_addr,
        "/oa/v1/chat/completions",
        &inv,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let streamed = post_json(
        running.proxy_addr,
        "/oa/v1/chat/completions",
        &inv,
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let mini = post_json(
        running.proxy_addr,
        "/oa/v1/chat/completions",
        &inv,
        r#"{"model":"gpt-4o-mini-2024-07-18","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    let plain = wait_call(&running, &plain.call_id()).await;
    let streamed = wait_call(&running, &streamed.call_id()).await;
    let mini = wait_call(&running, &mini.call_id()).await;

    // gpt-4o at $2.50 in / $1.25 cached / $10 out per million:
    // 4,000 × 2.5 + 6,000 × 1.25 + 500 × 10 = 10,000 + 7,500 + 5,000 = $0.0225 (22,500 µ$).
    let cost = plain.cost.clone().unwrap();
    assert!(cost.priced);
    assert_eq!(cost.total_pusd, 22_500_000_000);
    assert_eq!(plain.cost_usd, Some(0.0225));
    assert_eq!(
        streamed.cost.as_ref().unwrap().total_pusd,
        cost.total_pusd,
        "streamed and plain differ"
    );
    // gpt-4o-mini (dated name → base entry) at 0.15 / 0.075 / 0.6:
    // 4,000 × 0.15 + 6,000 × 0.075 + 500 × 0.6 = 600 + 450 + 300 = 1,350 µ$.
    assert_eq!(mini.cost.as_ref().unwrap().total_pusd, 1_350_000_000);

    let inv = wait_invocation(&running, "priced-run", 3).await;
    assert_eq!(inv.cost_pusd, 22_500_000_000 * 2 + 1_350_000_000);
    assert_eq!(inv.unpriced_calls, 0);

    // An unknown model: no cost (never 0), counted as unpriced, and the invocation total is unknown.
    let unknown = post_json(
        running.proxy_addr,
        "/oa/v1/chat/completions",
        &[("x-llmtap-invocation-id", "priced-run")],
        r#"{"model":"my-private-model-v9","messages":[]}"#,
    )
    .await;
    let unknown = wait_call(&running, &unknown.call_id()).await;
    assert_eq!(unknown.cost_usd, None);
    assert!(!unknown.cost.unwrap().priced);
    let inv = wait_invocation(&running, "priced-run", 4).await;
    assert_eq!(inv.unpriced_calls, 1);
    assert_eq!(inv.cost_usd, None);
    let metrics = String::from_utf8(api_get(&running, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("llmtap_unpriced_calls_total 1"),
        "{metrics}"
    );
    running.shutdown().await.unwrap();
}
