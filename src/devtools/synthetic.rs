//! Synthetic records for load tests and benchmarks (`llmtap dev seed`, `dev writer-bench`).
//! Also compiled into the tests (by path), which build records with it.
//!
//! Records are built directly (no proxy, no parsing) and written through
//! `Store::write_batch`, the writer's own entry point, so every index, summary and
//! rollup is maintained exactly as in production.

use llmtap::ids::new_id;
use llmtap::record::roll_up;
use llmtap::record::{
    CallRecord, CallStatus, Cost, InvocationRecord, LimitWindow, Message, Metadata, RateLimit,
    RequestView, ResponseView, ToolCall, Usage,
};
use llmtap::store::{Store, StoreError};
use llmtap::timefmt::format_rfc3339_us;
use std::collections::HashMap;

pub const AGENTS: usize = 20;
pub const TENANTS: usize = 10;
const MODELS: [(&str, &str); 6] = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4"),
    ("anthropic", "claude-haiku-4"),
    ("gemini", "gemini-2.5-flash"),
    ("openai", "o3-mini"),
];

/// Deterministic xorshift so seeded stores are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One synthetic call. `round` > 1 replays a tool result for the previous round's tool call.
#[allow(clippy::too_many_arguments)]
pub fn synthetic_call(
    invocation_id: &str,
    round: u32,
    started_at_us: u64,
    agent: &str,
    tenant: &str,
    session: Option<&str>,
    model_index: usize,
    status: CallStatus,
    input_tokens: u64,
    output_tokens: u64,
) -> CallRecord {
    let (provider, model) = MODELS[model_index % MODELS.len()];
    let latency_ms = 200.0 + (input_tokens % 1800) as f64;
    let cost_pusd = input_tokens * 150_000 + output_tokens * 600_000;
    let mut messages = vec![Message {
        role: "user".into(),
        text: Some(format!(
            "Please summarise ticket #{} for {tenant}",
            started_at_us % 100_000
        )),
        ..Message::default()
    }];
    if round > 1 {
        messages.push(Message {
            role: "tool".into(),
            text: Some("{\"ok\":true}".into()),
            tool_call_id: Some(format!("call_{invocation_id}_{}", round - 1)),
            ..Message::default()
        });
    }
    let success = status == CallStatus::Success;
    CallRecord {
        id: new_id("c_", started_at_us),
        invocation_id: invocation_id.to_string(),
        round,
        started_at: format_rfc3339_us(started_at_us),
        ended_at: format_rfc3339_us(started_at_us + (latency_ms * 1000.0) as u64),
        started_at_us,
        latency_ms,
        ttft_ms: Some(latency_ms / 3.0),
        first_byte_ms: Some(latency_ms / 4.0),
        provider: provider.into(),
        kind: provider.into(),
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        upstream_host: format!("api.{provider}.com"),
        http_status: Some(match status {
            CallStatus::Success => 200,
            CallStatus::RateLimited => 429,
            CallStatus::Unauthorized => 401,
            CallStatus::Timeout => 504,
            _ => 500,
        }),
        status: Some(status),
        model: Some(model.into()),
        usage: Usage {
            input_tokens: success.then_some(input_tokens),
            output_tokens: success.then_some(output_tokens),
            ..Usage::default()
        },
        cost_usd: success.then_some(cost_pusd as f64 / 1e12),
        cost: success.then(|| Cost {
            priced: true,
            total_pusd: cost_pusd,
            total_usd: Some(cost_pusd as f64 / 1e12),
            ..Cost::default()
        }),
        stop_reason: success.then(|| "tool_calls".to_string()),
        request: Some(RequestView {
            system: Some(format!("You are {agent}, a helpful support agent.")),
            messages,
            ..RequestView::default()
        }),
        response: Some(ResponseView {
            text: success.then(|| "Done.".to_string()),
            tool_calls: vec![ToolCall {
                id: Some(format!("call_{invocation_id}_{round}")),
                name: "lookup_ticket".into(),
                arguments: serde_json::json!({"ticket": round}),
            }],
            ..ResponseView::default()
        }),
        rate_limit: Some(RateLimit {
            requests: Some(LimitWindow {
                limit: Some(10_000),
                remaining: Some(10_000 - started_at_us % 10_000),
                reset_s: Some(6.0),
                reset_at: None,
            }),
            tokens: Some(LimitWindow {
                limit: Some(2_000_000),
                remaining: Some(if status == CallStatus::RateLimited {
                    0
                } else {
                    1_500_000
                }),
                reset_s: Some(30.0),
                reset_at: None,
            }),
            retry_after_s: (status == CallStatus::RateLimited).then_some(20.0),
            ..RateLimit::default()
        }),
        metadata: Metadata {
            agent: Some(agent.into()),
            trigger: Some(["user", "system", "task"][(started_at_us % 3) as usize].into()),
            tenant: Some(tenant.into()),
            session_id: session.map(str::to_string),
            prompt: Some(format!("{agent}-prompt@v{}", model_index % 3 + 1)),
            user_id: Some(format!("user-{}", started_at_us % 500)),
            ..Metadata::default()
        },
        api_key_fingerprint: Some(format!(
            "sha256:{:08x}…{:04}",
            model_index * 7919,
            tenant.len()
        )),
        ..CallRecord::default()
    }
}

/// Writes `calls` synthetic calls spread over `days` days ending at `end_us`, in
/// batches, and returns how many were written. `progress` is called after each batch.
pub fn seed(
    store: &Store,
    calls: usize,
    days: u64,
    end_us: u64,
    mut progress: impl FnMut(usize),
) -> Result<usize, StoreError> {
    const BATCH: usize = 2000;
    let span = days.max(1) * 86_400_000_000;
    let start = end_us.saturating_sub(span);
    let step = (span / calls.max(1) as u64).max(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut written = 0;
    let mut batch: Vec<CallRecord> = Vec::with_capacity(BATCH + 8);
    let mut invocations: HashMap<String, InvocationRecord> = HashMap::new();
    while written < calls {
        let rounds = (1 + rng.below(4) as usize).min(calls - written);
        let t0 = start + written as u64 * step;
        let inv_id = new_id("i_", t0);
        let agent = format!("agent-{:02}", rng.below(AGENTS as u64));
        let tenant = format!("tenant-{}", rng.below(TENANTS as u64));
        let session = (rng.below(10) < 3).then(|| format!("s_{}", rng.below(calls as u64 / 8 + 1)));
        let model = rng.below(MODELS.len() as u64) as usize;
        for round in 1..=rounds as u32 {
            let status = match rng.below(100) {
                0..=89 => CallStatus::Success,
                90..=93 => CallStatus::Failed,
                94..=96 => CallStatus::RateLimited,
                97..=98 => CallStatus::Timeout,
                _ => CallStatus::Unauthorized,
            };
            let t = t0 + (round as u64 - 1) * step;
            let call = synthetic_call(
                &inv_id,
                round,
                t,
                &agent,
                &tenant,
                session.as_deref(),
                model,
                status,
                200 + rng.below(4000),
                20 + rng.below(800),
            );
            let inv = roll_up(invocations.remove(&inv_id), &call);
            invocations.insert(inv_id.clone(), inv);
            batch.push(call);
        }
        written += rounds;
        if batch.len() >= BATCH || written >= calls {
            let invs: Vec<InvocationRecord> = invocations.drain().map(|(_, v)| v).collect();
            store.write_batch(&batch, &invs)?;
            // As the writer does: a seeded store opens as fast as a captured one.
            store.maintain()?;
            batch.clear();
            progress(written);
        }
    }
    Ok(written)
}

/// A finished OpenAI chat call as the forward path would hand it to the writer:
/// a request of about `body_bytes` (distinct text per call, so nothing deduplicates
/// that would not in real traffic) and a JSON answer with usage and rate limits.
pub fn synthetic_finished_call(i: usize, body_bytes: usize) -> llmtap::capture::FinishedCall {
    use bytes::Bytes;
    use llmtap::capture::{CallFacts, Capture, FinishedCall, Outcome};
    use llmtap::headers::CallMeta;
    let now = llmtap::timefmt::now_unix_us();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ i as u64);
    let mut text = String::with_capacity(body_bytes);
    while text.len() + 12 < body_bytes.saturating_sub(200) {
        text.push_str(&format!("w{:x} ", rng.next() % 1_000_000));
    }
    let request = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are agent {a}."}},{{"role":"user","content":"{text}"}}],"temperature":0.2}}"#,
        a = i % AGENTS
    );
    let response = format!(
        r#"{{"id":"chatcmpl-{i}","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"Answer number {i}."}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{p},"completion_tokens":12,"total_tokens":{t}}}}}"#,
        p = body_bytes / 4,
        t = body_bytes / 4 + 12
    );
    let mut request_headers = http::HeaderMap::new();
    request_headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    request_headers.insert(
        "authorization",
        http::HeaderValue::from_static("Bearer sk-bench-0000000000000000"),
    );
    let mut response_headers = http::HeaderMap::new();
    response_headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response_headers.insert(
        "x-ratelimit-remaining-requests",
        http::HeaderValue::from_static("499"),
    );
    response_headers.insert(
        "x-ratelimit-reset-requests",
        http::HeaderValue::from_static("6m0s"),
    );
    let (mut req, mut resp) = (Capture::default(), Capture::default());
    req.push(&Bytes::from(request), usize::MAX);
    resp.push(&Bytes::from(response), usize::MAX);
    let mut meta = CallMeta::default();
    meta.metadata.agent = Some(format!("agent-{}", i % AGENTS));
    FinishedCall {
        facts: CallFacts {
            id: new_id("c_", now),
            invocation_id: new_id("i_", now),
            arrival_round: 1,
            started_at_us: now,
            latency: std::time::Duration::from_millis(800),
            first_byte: Some(std::time::Duration::from_millis(700)),
            provider: "openai".into(),
            price_as: "openai".into(),
            kind: llmtap::record::ProviderKind::Openai,
            method: "POST".into(),
            rest_path: "/v1/chat/completions".into(),
            upstream_host: "api.openai.com".into(),
            http_status: Some(200),
            outcome: Outcome::Completed,
            chunk_times: Vec::new(),
            meta,
            client_ip: Some("127.0.0.1".into()),
            user_agent: Some("bench".into()),
            delivered_bytes: 0,
            notes: Vec::new(),
        },
        query: None,
        request_headers,
        response_headers,
        request_body: req,
        response_body: resp,
        injected_include_usage: false,
    }
}
