//! The README's screenshots, taken of a realistic data set: several agents and tenants,
//! sessions with memory, a tool loop with a tool HTTP call between its rounds, a tool
//! call on a stdio MCP server (as `llmtap mcp` reports it), a rate-limited round
//! retried, an overloaded and a refused call, an image attachment, prompt versions. Ignored by default (it only takes pictures); one command rewrites
//! every screenshot in docs/screenshots/ but `runs-1m.png` (BENCHMARKS.md's benchmark):
//!
//! `LLMTAP_SCREENSHOTS=docs/screenshots cargo test --test tests it::screenshots -- --ignored`

use super::page::{shot, Scene, TOOL_RUN};
use super::page_details::{chat, open_round, show_tab};
use super::util::*;
use super::webdriver::Browser;
use serde_json::json;
use std::time::Duration;

/// A 160×96 PNG bar chart (four rising bars): the attachment a vision agent sends.
fn chart_png() -> Vec<u8> {
    rgb_png(160, 96, |x, y| {
        let bar = x / 40;
        let top = 80 - bar * 18;
        let inside = x % 40 >= 8 && x % 40 < 32 && y >= top && y < 88;
        if inside {
            [37, 99, 235]
        } else if y == 88 {
            [90, 90, 90]
        } else {
            [250, 250, 250]
        }
    })
}

/// An OpenAI chat answer of `model` with `text`, the given token counts, after `ms`
/// milliseconds.
fn answer(model: &str, text: &str, input: u64, output: u64, ms: u64) -> MockResponse {
    let body = json!({
        "id": "chatcmpl-shot", "object": "chat.completion", "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
    });
    MockResponse {
        delay_head: Duration::from_millis(ms),
        ..MockResponse::json(200, &body.to_string())
    }
}

/// Posts `body` to `path` on the proxy, answered by `reply`; returns the stored call's id.
async fn post(
    scene: &Scene,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
    reply: MockResponse,
) -> String {
    *scene.script.lock().unwrap() = reply;
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let got = send(scene.running.proxy_addr, "POST", path, &all, body).await;
    let id = got.call_id();
    wait_call(&scene.running, &id).await;
    id
}

/// The data set: every kind of thing the page draws.
async fn seed(scene: &Scene) {
    let pause = || tokio::time::sleep(Duration::from_millis(40));
    // Writers and triage: plain runs with prompt versions, users and tenants.
    let topics = [
        (
            "writer-bot",
            "summarise@v3",
            "globex",
            "u-2201",
            "Summarise the quarterly report in three bullet points.",
        ),
        (
            "triage-bot",
            "triage@v5",
            "acme",
            "u-1042",
            "Classify this ticket: the export button does nothing.",
        ),
        (
            "writer-bot",
            "summarise@v4",
            "globex",
            "u-2201",
            "Summarise the meeting notes for the team channel.",
        ),
        (
            "triage-bot",
            "triage@v5",
            "acme",
            "u-1077",
            "Classify this ticket: I was charged twice.",
        ),
        (
            "writer-bot",
            "headline@v1",
            "globex",
            "u-2305",
            "Write a headline for the product launch post.",
        ),
    ];
    for (i, (agent, prompt, tenant, user, text)) in topics.iter().enumerate() {
        let run = format!("{agent}-{i}");
        let body = json!({"model": if i % 2 == 0 { "gpt-4o-mini" } else { "gpt-4o" }, "messages": [
            {"role": "system", "content": "You are a concise assistant for the operations team."},
            {"role": "user", "content": text}
        ]});
        chat(
            scene,
            &body.to_string(),
            &[
                ("x-llmtap-agent", agent),
                ("x-llmtap-invocation-id", &run),
                ("x-llmtap-prompt", prompt),
                ("x-llmtap-tenant", tenant),
                ("x-llmtap-user-id", user),
                ("x-llmtap-trigger", if i % 2 == 0 { "task" } else { "user" }),
                ("user-agent", "OpenAI/Python 1.82.0"),
                ("authorization", "Bearer sk-proj-demo-key-000000000001"),
            ],
            answer(
                if i % 2 == 0 { "gpt-4o-mini-2024-07-18" } else { "gpt-4o-2024-08-06" },
                "Done: see the three points below.\n- Revenue up 12 %\n- Costs flat\n- Hiring paused",
                640 + 410 * i as u64,
                90 + 55 * i as u64,
                350 + 170 * i as u64,
            ),
        )
        .await;
        pause().await;
    }
    // research-bot on Anthropic: a round rate-limited, then retried with the same body.
    let research = [
        ("x-llmtap-agent", "research-bot"),
        ("x-llmtap-invocation-id", "research-7"),
        ("x-llmtap-trigger", "task"),
        ("x-llmtap-prompt", "pelican-names@v2"),
        ("x-api-key", "sk-ant-demo-key-0001"),
    ];
    // The recording's windows reset long ago: these reset a minute from now.
    let reset = llmtap::timefmt::format_rfc3339_us(llmtap::timefmt::now_unix_us() + 60_000_000);
    let windows = |requests: &'static str, tokens: &'static str| {
        let mut h: Vec<(&str, String)> = vec![
            ("anthropic-ratelimit-requests-limit", "50".into()),
            ("anthropic-ratelimit-requests-remaining", requests.into()),
            ("anthropic-ratelimit-tokens-limit", "400000".into()),
            ("anthropic-ratelimit-tokens-remaining", tokens.into()),
            ("anthropic-ratelimit-input-tokens-limit", "300000".into()),
            (
                "anthropic-ratelimit-input-tokens-remaining",
                "212000".into(),
            ),
            ("anthropic-ratelimit-output-tokens-limit", "100000".into()),
            (
                "anthropic-ratelimit-output-tokens-remaining",
                "61000".into(),
            ),
        ];
        for name in [
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-tokens-reset",
            "anthropic-ratelimit-input-tokens-reset",
            "anthropic-ratelimit-output-tokens-reset",
        ] {
            h.push((name, reset.clone()));
        }
        h
    };
    let limited = windows("0", "273000");
    let mut limited: Vec<(&str, &str)> = limited.iter().map(|(k, v)| (*k, v.as_str())).collect();
    limited.push(("retry-after", "2"));
    scene
        .replay_with(
            "llm-anthropic__test_anthropic__test_prompt.json",
            &research,
            Some(429),
            &limited,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answered = windows("7", "268000");
    let answered: Vec<(&str, &str)> = answered.iter().map(|(k, v)| (*k, v.as_str())).collect();
    scene
        .replay_with(
            "llm-anthropic__test_anthropic__test_prompt.json",
            &research,
            None,
            &answered,
        )
        .await;
    wait_invocation(&scene.running, "research-7", 1).await;
    scene
        .replay(
            "llm-gemini__test_gemini__test_prompt.json",
            &[
                ("x-llmtap-agent", "research-bot"),
                ("x-llmtap-trigger", "system"),
            ],
        )
        .await;
    // billing-bot: Anthropic overloaded, and a refused key.
    post(
        scene,
        "/anthropic/v1/messages",
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": "Draft the invoice reminder for account 7781."}]}).to_string(),
        &[("x-llmtap-agent", "billing-bot"), ("x-llmtap-invocation-id", "billing-3"), ("x-api-key", "sk-ant-demo-key-0002")],
        MockResponse::json(529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
    )
    .await;
    scene
        .replay(
            "mirascope__test_authentication_error_stream__openai_gpt_4o_completions.json",
            &[
                ("x-llmtap-agent", "billing-bot"),
                ("authorization", "Bearer sk-wrong-0002"),
            ],
        )
        .await;
    // vision-bot: a chart sent as an image.
    let png = chart_png();
    use base64::Engine;
    let image = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    chat(
        scene,
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What does this sales chart show? Answer in one sentence."},
            {"type": "image_url", "image_url": {"url": image}}
        ]}]})
        .to_string(),
        &[
            ("x-llmtap-agent", "vision-bot"),
            ("x-llmtap-invocation-id", "vision-1"),
            ("x-llmtap-tenant", "acme"),
        ],
        answer(
            "gpt-4o-2024-08-06",
            "Sales rose in each of the four quarters, the last one highest.",
            1_140,
            38,
            1_450,
        ),
    )
    .await;
    // support-bot: a session of two runs; the second sends the first one's turns again.
    let system = json!({"role": "system", "content": "You are Acme's support assistant. Be brief and kind."});
    let question = json!({"role": "user", "content": "My order #4411 has not arrived yet."});
    let reply = json!({"role": "assistant", "content": "Sorry about that! Order #4411 left the warehouse on Monday; it should arrive by Thursday."});
    let support = |run: &'static str| {
        [
            ("x-llmtap-agent", "support-bot"),
            ("x-llmtap-invocation-id", run),
            ("x-llmtap-session-id", "conv-77"),
            ("x-llmtap-tenant", "acme"),
            ("x-llmtap-user-id", "u-1042"),
            ("x-llmtap-trigger", "user"),
            ("x-llmtap-prompt", "support@v9"),
            (
                "x-llmtap-prompt-variables",
                r#"{"customer_tier":"gold","locale":"en-GB"}"#,
            ),
        ]
    };
    chat(
        scene,
        &json!({"model": "gpt-4o-mini", "messages": [system, question]}).to_string(),
        &support("support-41"),
        answer(
            "gpt-4o-mini-2024-07-18",
            reply["content"].as_str().unwrap(),
            212,
            41,
            620,
        ),
    )
    .await;
    pause().await;
    chat(
        scene,
        &json!({"model": "gpt-4o-mini", "messages": [system, question, reply, {"role": "user", "content": "It is Friday now and still nothing. Can you check again?"}]}).to_string(),
        &support("support-42"),
        answer("gpt-4o-mini-2024-07-18", "I checked: the carrier lost the parcel. A replacement ships today by express, and I refunded the delivery fee.", 298, 52, 840),
    )
    .await;
    // docs-bot: round 1 asks for a tool, the agent calls it on a stdio MCP server
    // (reported by `llmtap mcp`), round 2 answers from its result.
    let docs = [
        ("x-llmtap-agent", "docs-bot"),
        ("x-llmtap-invocation-id", "docs-5"),
        ("x-llmtap-trigger", "user"),
        ("x-llmtap-prompt", "docs-answer@v1"),
    ];
    let docs_system = json!({"role": "system", "content": "Answer from the product documentation; cite the page."});
    let docs_question =
        json!({"role": "user", "content": "How do I rotate an API key without downtime?"});
    let search = json!({"id": "call_docs", "type": "function",
        "function": {"name": "search_docs", "arguments": "{\"query\":\"rotate API key\"}"}});
    let asks = json!({
        "id": "chatcmpl-docs", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [search]},
                     "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 420, "completion_tokens": 22, "total_tokens": 442}
    });
    chat(
        scene,
        &json!({"model": "gpt-4o", "messages": [docs_system, docs_question],
                "tools": [{"type": "function", "function": {"name": "search_docs", "parameters": {"type": "object"}}}]})
        .to_string(),
        &docs,
        MockResponse {
            delay_head: Duration::from_millis(520),
            ..MockResponse::json(200, &asks.to_string())
        },
    )
    .await;
    let found = "Keys › Rotation: create a second key, deploy it, then revoke the first (docs/keys#rotation).";
    for (method, request, response, ms) in [
        (
            "initialize",
            r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"docs-bot","version":"1.4.0"}}}"#.to_string(),
            r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"docs-search","version":"0.9.2"}}}"#.to_string(),
            35,
        ),
        (
            "tools/list",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_string(),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search_docs","description":"Full-text search of the product docs","inputSchema":{"type":"object","properties":{"query":{"type":"string"}}}},{"name":"open_page","description":"A docs page as Markdown","inputSchema":{"type":"object","properties":{"path":{"type":"string"}}}}]}}"#.to_string(),
            20,
        ),
        (
            "tools/call",
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search_docs","arguments":{"query":"rotate API key"}}}"#.to_string(),
            json!({"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": found}]}}).to_string(),
            240,
        ),
    ] {
        let report = json!({
            "server": "docs-search",
            "session_id": "stdio_docs",
            "started_at_us": llmtap::timefmt::now_unix_us(),
            "duration_us": ms * 1000,
            "request": request,
            "response": response,
        });
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let taken = post_json(
            scene.running.api_addr,
            "/api/v1/ingest/mcp",
            &[("x-llmtap-invocation-id", "docs-5"), ("x-llmtap-agent", "docs-bot")],
            &report.to_string(),
        )
        .await;
        assert_eq!(taken.status, 200, "{method}: {:?}", taken.body);
        let id = taken.json()["call_id"].as_str().unwrap().to_string();
        wait_call(&scene.running, &id).await;
    }
    chat(
        scene,
        &json!({"model": "gpt-4o", "messages": [docs_system, docs_question,
            {"role": "assistant", "content": null, "tool_calls": [search]},
            {"role": "tool", "tool_call_id": "call_docs", "content": found}]})
        .to_string(),
        &docs,
        answer(
            "gpt-4o-2024-08-06",
            "Create a second key, deploy it everywhere, then revoke the old one: no request fails in between (docs/keys#rotation).",
            510,
            34,
            780,
        ),
    )
    .await;
    wait_invocation(&scene.running, "docs-5", 2).await;
    pause().await;
    // The calculator tool run last, so it is on top: round 1 asks for multiply, the
    // agent calls a tool over HTTP, round 2 answers.
    let tool_run = [
        ("x-llmtap-agent", "support-bot"),
        ("x-llmtap-invocation-id", "run-tools"),
        ("x-llmtap-session-id", "conv-42"),
        ("x-llmtap-trigger", "user"),
        ("x-llmtap-prompt", "calculator@v2"),
        ("x-llmtap-tenant", "acme"),
    ];
    scene
        .replay("llm__test_tools__test_tool_use_basic__0.json", &tool_run)
        .await;
    *scene.script.lock().unwrap() = MockResponse::json(200, r#"{"result": 2869461}"#);
    let got = send(
        scene.running.proxy_addr,
        "GET",
        "/tool/v1/multiply?a=1231&b=2331",
        &[
            ("x-llmtap-invocation-id", "run-tools"),
            ("x-llmtap-session-id", "conv-42"),
            ("x-llmtap-tenant", "acme"),
            ("x-llmtap-agent", "support-bot"),
        ],
        "",
    )
    .await;
    wait_call(&scene.running, &got.call_id()).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    scene
        .replay("llm__test_tools__test_tool_use_basic__1.json", &tool_run)
        .await;
    wait_invocation(&scene.running, TOOL_RUN, 2).await;
}

/// The runs the data set holds.
const RUNS: u64 = 14;

/// Scrolls so the open round's detail starts under the sticky header.
async fn to_round(browser: &Browser) {
    browser
        .js(
            "document.querySelector('tr.round-detail, .round-box').scrollIntoView({block: 'start'}); window.scrollBy(0, -56)",
            json!([]),
        )
        .await;
}

#[tokio::test]
#[ignore = "writes the README's screenshots: LLMTAP_SCREENSHOTS=docs/screenshots"]
async fn readme_screenshots() {
    assert!(
        std::env::var("LLMTAP_SCREENSHOTS").is_ok(),
        "set LLMTAP_SCREENSHOTS=docs/screenshots"
    );
    let scene = Scene::start("").await;
    seed(&scene).await;
    let browser = Browser::start().await;
    browser.goto(&scene.page_url()).await;
    browser.wait_count("#runs-table tr.run", RUNS).await;
    shot(&browser, "runs").await;

    // The tool run: waterfall with the tool HTTP call, then its rounds' tabs.
    open_round(&browser, TOOL_RUN, 1).await;
    browser.wait_text(".tab-panel", "1231").await;
    show_tab(&browser, "cost").await;
    browser.wait_text(".tab-panel", "Price-table entry").await;
    to_round(&browser).await;
    shot(&browser, "round-cost").await;
    browser
        .js(
            "document.querySelector(\"table.rounds tr.round[data-round='2']\").scrollIntoView({block: 'center'})",
            json!([]),
        )
        .await;
    browser.click("table.rounds tr.round[data-round='2']").await;
    browser.wait_count(".round-box .tab-panel", 1).await;
    show_tab(&browser, "changes").await;
    browser.wait_text(".tab-panel", "2869461").await;
    to_round(&browser).await;
    shot(&browser, "round-changes").await;
    // Closes the round (a click under the sticky header, so from script).
    browser
        .js(
            "document.querySelector(\"table.rounds tr.round[data-round='2']\").click(); window.scrollTo(0, 0)",
            json!([]),
        )
        .await;
    browser.wait_count("tr.round-detail", 0).await;
    shot(&browser, "run-expanded").await;

    // The session's second run: the first run's turns marked memory.
    browser.goto(&scene.page_url()).await;
    browser.wait_count("#runs-table tr.run", RUNS).await;
    open_round(&browser, "support-42@acme", 1).await;
    show_tab(&browser, "conversation").await;
    browser.wait_count(".tab-panel .msg-memory", 2).await;
    to_round(&browser).await;
    shot(&browser, "round-conversation").await;

    // The MCP run: the tool call on a stdio MCP server in the waterfall and joined to
    // the round that asked for it.
    browser.goto(&scene.page_url()).await;
    browser.wait_count("#runs-table tr.run", RUNS).await;
    browser.click("#runs-table tr.run[data-id='docs-5']").await;
    browser
        .wait_count("tr.round[data-round='1'] .tool-mcp", 1)
        .await;
    browser
        .wait(
            "the MCP bars",
            "return document.querySelectorAll('g.wf-mcp').length >= 1",
            json!([]),
        )
        .await;
    browser
        .js(
            "document.querySelector('tr.run-detail').scrollIntoView({block: 'start'}); window.scrollBy(0, -90)",
            json!([]),
        )
        .await;
    shot(&browser, "run-mcp").await;

    // The vision run: the attachment with its preview.
    browser.goto(&scene.page_url()).await;
    browser.wait_count("#runs-table tr.run", RUNS).await;
    open_round(&browser, "vision-1@acme", 1).await;
    browser
        .wait(
            "the preview",
            "const i = document.querySelector('img.attachment-image'); return i && i.complete && i.naturalWidth > 0",
            json!([]),
        )
        .await;
    to_round(&browser).await;
    shot(&browser, "round-attachment").await;

    browser
        .goto(&format!("{}?view=sessions", scene.page_url()))
        .await;
    browser.wait_text("main", "My order #4411").await;
    shot(&browser, "sessions").await;
    browser.click("table.sessions a[href*='conv-42']").await;
    browser.wait_count("table.timeline tbody tr", 3).await;
    shot(&browser, "session-timeline").await;
    browser
        .goto(&format!("{}?view=agents", scene.page_url()))
        .await;
    browser.wait_text("table.agents", "vision-bot").await;
    shot(&browser, "agents").await;
    browser
        .goto(&format!("{}?view=stats&group_by=model", scene.page_url()))
        .await;
    browser.wait_text("table.stats", "gpt-4o-mini").await;
    shot(&browser, "stats").await;
    browser
        .goto(&format!("{}?view=ratelimits", scene.page_url()))
        .await;
    browser.wait_text(".rl-card", "anthropic").await;
    shot(&browser, "ratelimits").await;
    browser.close().await;
    scene.running.shutdown().await.unwrap();
}
