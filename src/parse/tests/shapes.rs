//! Exchanges built from the providers' documented shapes, for what the recorded
//! fixtures do not cover: rate limiting, overload, mid-stream errors, and the
//! quirks of OpenAI-compatible providers.

use super::super::{parse_exchange, ExchangeInput, StreamParser};
use super::fixtures::{random_pieces, XorShift};
use crate::record::{Endpoint, ParsedExchange, ProviderKind};
use serde_json::json;

fn input<'a>(
    kind: ProviderKind,
    path: &'a str,
    req: &'a str,
    status: u16,
    content_type: &'a str,
    body: &'a str,
) -> ExchangeInput<'a> {
    ExchangeInput {
        kind,
        provider: kind.as_str(),
        path,
        query: None,
        request_body: req.as_bytes(),
        response_status: Some(status),
        response_content_type: Some(content_type),
        response_body: body.as_bytes(),
    }
}

/// Parses whole and in random pieces, and insists both agree.
fn parse(input: &ExchangeInput<'_>) -> ParsedExchange {
    let whole = parse_exchange(input);
    for seed in 1..=20 {
        let mut rng = XorShift::new(seed);
        let mut p = StreamParser::new(input);
        for piece in random_pieces(input.response_body, &mut rng) {
            p.push(piece);
        }
        assert_eq!(p.finish(), whole, "seed {seed}");
    }
    whole
}

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";

#[test]
fn openai_429_rate_limited() {
    let body = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    let req = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let p = parse(&input(ProviderKind::Openai, CHAT, req, 429, JSON, body));
    let err = p.error.expect("error");
    assert_eq!(err.error_type.as_deref(), Some("rate_limit_exceeded"));
    assert!(err
        .message
        .unwrap_or_default()
        .starts_with("Rate limit reached"));
    assert!(!p.failed_in_body);
    assert_eq!(p.model.as_deref(), Some("gpt-4o"));
    assert!(p.usage.is_empty());
    assert!(p.parse_notes.is_empty(), "{:?}", p.parse_notes);
}

#[test]
fn anthropic_429_and_529() {
    let req = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"},"request_id":"req_1"}"#;
    let p = parse(&input(
        ProviderKind::Anthropic,
        MESSAGES,
        req,
        429,
        JSON,
        body,
    ));
    assert_eq!(
        p.error.and_then(|e| e.error_type).as_deref(),
        Some("rate_limit_error")
    );
    assert!(p.stream);

    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let p = parse(&input(
        ProviderKind::Anthropic,
        MESSAGES,
        req,
        529,
        JSON,
        body,
    ));
    let err = p.error.expect("error");
    assert_eq!(err.error_type.as_deref(), Some("overloaded_error"));
    assert_eq!(err.message.as_deref(), Some("Overloaded"));
    assert!(!p.failed_in_body);
    assert!(p.parse_notes.is_empty(), "{:?}", p.parse_notes);
}

#[test]
fn anthropic_error_event_mid_stream() {
    let body = concat!(
        "event: message_start\n",
        r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":100,"cache_creation_input_tokens":50,"cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":30},"output_tokens":1}}}"#,
        "\n\nevent: content_block_start\n",
        r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        "\n\nevent: content_block_delta\n",
        r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
        "\n\nevent: error\n",
        r#"data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        "\n\n"
    );
    let req = r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let p = parse(&input(
        ProviderKind::Anthropic,
        MESSAGES,
        req,
        200,
        SSE,
        body,
    ));
    assert!(p.failed_in_body);
    let err = p.error.expect("error");
    assert_eq!(err.error_type.as_deref(), Some("overloaded_error"));
    assert_eq!(p.response.text.as_deref(), Some("Hel"));
    assert_eq!(p.usage.input_tokens, Some(175));
    assert_eq!(p.usage.cache_read_tokens, Some(100));
    assert_eq!(p.usage.cache_creation_tokens, Some(50));
    assert_eq!(p.usage.cache_creation_1h_tokens, Some(30));
    assert_eq!(p.usage.output_tokens, Some(1));
    assert_eq!(p.usage.total_tokens, Some(176));
    let first = body
        .find("\"Hel\"")
        .and_then(|i| body[i..].find("\n\n").map(|j| i + j + 2));
    assert_eq!(p.first_content_offset, first);
    assert!(p.parse_notes.is_empty(), "{:?}", p.parse_notes);
}

#[test]
fn openai_parallel_tool_calls_and_usage_chunk() {
    let chunks = [
        json!({"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}),
        json!({"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}),
        json!({"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{\"tz\":"}}]},"finish_reason":null}]}),
        json!({"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}},{"index":1,"function":{"arguments":"\"CET\"}"}}]},"finish_reason":null}]}),
        json!({"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
        json!({"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":30,"total_tokens":130,"prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":0}}}),
    ];
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    let req = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"developer","content":"Use tools."},{"role":"user","content":[{"type":"text","text":"Weather?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"tools":[{"type":"function","function":{"name":"get_weather"}}],"tool_choice":"auto","temperature":0.2,"max_completion_tokens":50,"stream":true,"stream_options":{"include_usage":true},"parallel_tool_calls":true}"#;
    let p = parse(&input(ProviderKind::Openai, CHAT, req, 200, SSE, &body));
    let calls = &p.response.tool_calls;
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].id.as_deref(), calls[0].name.as_str()),
        (Some("call_a"), "get_weather")
    );
    assert_eq!(calls[0].arguments, json!("{\"city\":\"Paris\"}"));
    assert_eq!(calls[1].arguments, json!("{\"tz\":\"CET\"}"));
    assert_eq!(p.stop_reason.as_deref(), Some("tool_calls"));
    assert_eq!(p.usage.input_tokens, Some(100));
    assert_eq!(p.usage.cache_read_tokens, Some(64));
    assert_eq!(p.usage.reasoning_tokens, Some(0));
    assert_eq!(p.usage.cache_creation_tokens, None);
    assert_eq!(p.request.system.as_deref(), Some("Be brief.\nUse tools."));
    assert_eq!(p.request.messages.len(), 1);
    assert_eq!(p.request.messages[0].text.as_deref(), Some("Weather?"));
    assert_eq!(
        p.request.messages[0].attachments,
        // The decoded size: "AAAA" is 3 bytes.
        vec![json!({"type":"image","media_type":"image/png","size":3})]
    );
    assert_eq!(p.request.tools.len(), 1);
    for key in [
        "tool_choice",
        "temperature",
        "max_completion_tokens",
        "stream",
        "stream_options",
        "parallel_tool_calls",
    ] {
        assert!(p.request.params.contains_key(key), "{key}");
    }
    assert!(!p.request.params.contains_key("messages"));
    let first_end = body.find("\n\n").map(|i| i + 2);
    assert_eq!(p.first_content_offset, first_end);
    assert!(p.parse_notes.is_empty(), "{:?}", p.parse_notes);
}

#[test]
fn deepseek_reasoning_content_and_cache_hits() {
    let body = concat!(
        r#"data: {"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"Think"},"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":"Answer"},"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":9,"total_tokens":29,"prompt_cache_hit_tokens":16,"prompt_cache_miss_tokens":4,"completion_tokens_details":{"reasoning_tokens":5}}}"#,
        "\n\ndata: [DONE]\n\n"
    );
    let req =
        r#"{"model":"deepseek-reasoner","messages":[{"role":"user","content":"q"}],"stream":true}"#;
    let p = parse(&input(ProviderKind::Openai, CHAT, req, 200, SSE, body));
    assert_eq!(p.response.thinking.as_deref(), Some("Think"));
    assert_eq!(p.response.text.as_deref(), Some("Answer"));
    assert_eq!(p.usage.cache_read_tokens, Some(16));
    assert_eq!(p.usage.reasoning_tokens, Some(5));
    assert_eq!(p.usage.total_tokens, Some(29));
}

#[test]
fn gemini_sse_with_crlf_tools_and_cache() {
    let body = concat!(
        r#"data: {"candidates":[{"content":{"parts":[{"text":"Let me check.","thought":true}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":120,"totalTokenCount":120},"modelVersion":"gemini-2.5-pro"}"#,
        "\r\n\r\n",
        r#"data: {"candidates":[{"content":{"parts":[{"functionCall":{"name":"lookup","args":{"q":"x"}}}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":120,"candidatesTokenCount":10,"thoughtsTokenCount":30,"toolUsePromptTokenCount":7,"cachedContentTokenCount":64,"totalTokenCount":167},"modelVersion":"gemini-2.5-pro"}"#,
        "\r\n\r\n"
    );
    let req = r#"{"systemInstruction":{"parts":[{"text":"Be brief."}]},"contents":[{"role":"user","parts":[{"text":"hi"},{"inlineData":{"mimeType":"image/jpeg","data":"AAAA"}}]},{"role":"model","parts":[{"functionCall":{"name":"lookup","args":{}}}]},{"role":"user","parts":[{"functionResponse":{"name":"lookup","response":{"r":1}}}]}],"tools":[{"functionDeclarations":[{"name":"lookup"}]}],"generation_config":{"temperature":0.5,"max_output_tokens":100}}"#;
    let mut inp = input(
        ProviderKind::Gemini,
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
        req,
        200,
        SSE,
        body,
    );
    inp.query = Some("alt=sse");
    let p = parse(&inp);
    assert_eq!(p.endpoint, Endpoint::StreamGenerateContent);
    assert!(p.stream);
    assert_eq!(p.model.as_deref(), Some("gemini-2.5-pro"));
    assert_eq!(p.response.thinking.as_deref(), Some("Let me check."));
    assert_eq!(p.response.text, None);
    assert_eq!(p.response.tool_calls[0].arguments, json!({"q":"x"}));
    assert_eq!(p.usage.input_tokens, Some(127));
    assert_eq!(p.usage.output_tokens, Some(40));
    assert_eq!(p.usage.cache_read_tokens, Some(64));
    assert_eq!(p.usage.reasoning_tokens, Some(30));
    assert_eq!(p.usage.total_tokens, Some(167));
    assert_eq!(p.request.system.as_deref(), Some("Be brief."));
    let roles: Vec<&str> = p.request.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool"]);
    assert_eq!(p.request.params.get("temperature"), Some(&json!(0.5)));
    assert_eq!(p.request.tools, vec![json!({"name":"lookup"})]);
    // First content is the thought, whose event ends at the first CR of "\r\n\r\n".
    assert_eq!(p.first_content_offset, body.find("\r\n\r\n").map(|i| i + 3));
}

#[test]
fn responses_stream_failure_and_reasoning_summary() {
    let body = concat!(
        "event: response.created\n",
        r#"data: {"type":"response.created","response":{"model":"o4-mini","status":"in_progress","output":[]}}"#,
        "\n\nevent: response.reasoning_summary_text.delta\n",
        r#"data: {"type":"response.reasoning_summary_text.delta","output_index":0,"delta":"Thinking"}"#,
        "\n\nevent: response.failed\n",
        r#"data: {"type":"response.failed","response":{"model":"o4-mini","status":"failed","error":{"code":"server_error","message":"boom"},"output":[],"usage":{"input_tokens":10,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":3}}}}"#,
        "\n\n"
    );
    let req = r#"{"model":"o4-mini","instructions":"Sys","input":"hi","reasoning":{"effort":"medium","summary":"auto"},"stream":true}"#;
    let p = parse(&input(
        ProviderKind::Openai,
        "/v1/responses",
        req,
        200,
        SSE,
        body,
    ));
    assert!(p.failed_in_body);
    assert_eq!(
        p.error.and_then(|e| e.error_type).as_deref(),
        Some("server_error")
    );
    assert_eq!(p.stop_reason.as_deref(), Some("failed"));
    assert_eq!(p.response.thinking.as_deref(), Some("Thinking"));
    assert_eq!(p.usage.input_tokens, Some(10));
    assert_eq!(p.usage.cache_read_tokens, None);
    assert_eq!(p.request.system.as_deref(), Some("Sys"));
    assert_eq!(
        p.request.params.get("reasoning_effort"),
        Some(&json!("medium"))
    );
}

#[test]
fn broken_bodies_become_notes() {
    let req = r#"{"model":"gpt-4o","messages":[],"stream":true}"#;
    // Truncated stream: no [DONE], last event cut inside its JSON.
    let body =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choi";
    let p = parse(&input(ProviderKind::Openai, CHAT, req, 200, SSE, body));
    assert_eq!(p.response.text.as_deref(), Some("Hi"));
    assert!(p.parse_notes.iter().any(|n| n.contains("invalid JSON")));
    assert!(p.parse_notes.iter().any(|n| n.contains("[DONE]")));

    let p = parse(&input(
        ProviderKind::Openai,
        CHAT,
        "{not json",
        200,
        JSON,
        "{\"choices\":",
    ));
    assert_eq!(p.parse_notes.len(), 2, "{:?}", p.parse_notes);

    let p = parse(&input(
        ProviderKind::Anthropic,
        MESSAGES,
        "",
        200,
        SSE,
        "event: surprise\ndata: {\"type\":\"surprise\"}\n\n",
    ));
    assert!(p.parse_notes.iter().any(|n| n.contains("surprise")));

    let p = parse(&input(
        ProviderKind::Openai,
        "/v1/audio/speech",
        "{}",
        200,
        "audio/mpeg",
        "ID3\u{1}",
    ));
    assert_eq!(p.endpoint, Endpoint::Other);
    assert!(p
        .parse_notes
        .iter()
        .any(|n| n.contains("unrecognised endpoint")));

    let p = parse(&input(
        ProviderKind::Gemini,
        "/v1beta/models/g:streamGenerateContent",
        "{}",
        200,
        JSON,
        "[{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]},\n{\"cand",
    ));
    assert_eq!(p.response.text.as_deref(), Some("a"));
    assert!(p.parse_notes.iter().any(|n| n.contains("truncated")));

    let p = parse(&input(
        ProviderKind::Openai,
        CHAT,
        req,
        502,
        "text/html",
        "<html>Bad gateway</html>",
    ));
    assert_eq!(
        p.error.and_then(|e| e.message).as_deref(),
        Some("<html>Bad gateway</html>")
    );

    let p = parse(&input(
        ProviderKind::Http,
        "/anything",
        "x",
        200,
        JSON,
        "{}",
    ));
    assert_eq!(p, ParsedExchange::default());

    let none = ExchangeInput {
        response_status: None,
        response_content_type: None,
        response_body: b"",
        ..input(ProviderKind::Openai, CHAT, req, 0, "", "")
    };
    let p = parse_exchange(&none);
    assert_eq!(p.model.as_deref(), Some("gpt-4o"));
    assert!(p.parse_notes.is_empty(), "{:?}", p.parse_notes);
}

#[test]
fn embeddings_and_gemini_embed_requests() {
    let req = r#"{"model":"text-embedding-3-small","input":["a","b","c"],"dimensions":256}"#;
    let body = r#"{"object":"list","data":[],"model":"text-embedding-3-small","usage":{"prompt_tokens":3,"total_tokens":3}}"#;
    let p = parse(&input(
        ProviderKind::Openai,
        "/v1/embeddings",
        req,
        200,
        JSON,
        body,
    ));
    assert_eq!(p.request.params.get("input_count"), Some(&json!(3)));
    assert_eq!(p.request.params.get("dimensions"), Some(&json!(256)));
    assert_eq!(
        (
            p.usage.input_tokens,
            p.usage.output_tokens,
            p.usage.total_tokens
        ),
        (Some(3), None, Some(3))
    );

    let p = parse(&input(
        ProviderKind::Gemini,
        "/v1beta/models/text-embedding-004:embedContent",
        r#"{"content":{"parts":[{"text":"a"}]}}"#,
        200,
        JSON,
        r#"{"embedding":{"values":[0.1]}}"#,
    ));
    assert_eq!(p.endpoint, Endpoint::Embed);
    assert_eq!(p.model.as_deref(), Some("text-embedding-004"));
    assert_eq!(p.request.params.get("input_count"), Some(&json!(1)));
}

#[test]
fn azure_deployment_names_the_model() {
    let req = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let body = r#"{"model":"gpt-4o-2024-11-20","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#;
    let p = parse(&input(
        ProviderKind::Openai,
        "/openai/deployments/prod-4o/chat/completions",
        req,
        200,
        JSON,
        body,
    ));
    assert_eq!(p.model.as_deref(), Some("prod-4o"));
    assert_eq!(
        p.response.refusal.as_deref(),
        Some("I can't help with that.")
    );
    assert_eq!(p.first_content_offset, None);
}
