//! The MCP display on the page in a real headless Chromium: a run whose first round
//! asked for two tools, run on an MCP server (`rmcp`) through llmtap, one of them
//! failing with `isError`. The waterfall draws each MCP tool call (the failed one
//! red), the round's tool calls name the MCP server, real duration and status, the
//! run lists the server's offered tools, and a viewer token sees none of the
//! arguments or results.

use super::mcp::{call, client_through, json_answers, llmtap_before, run_calls, serve_tools};
use super::util::*;
use super::webdriver::Browser;
use serde_json::json;

const ASKS_FOR_TOOLS: &str = r#"{"id":"x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_w","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Tromsø\"}"}},{"id":"call_f","type":"function","function":{"name":"fail","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":10,"total_tokens":30}}"#;
const ANSWERS: &str = r#"{"id":"y","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Sunny, but the disk is full."},"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"completion_tokens":4,"total_tokens":44}}"#;
const RUN: &str = "run-mcp-page";
/// What only an admin may see: the tool's argument and results.
const WEATHER_RESULT: &str = "sunny in Tromsø";
const FAIL_RESULT: &str = "disk full";

fn tokens_toml() -> String {
    let token = |name: &str, raw: &str, role: &str| {
        format!(
            "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n",
            llmtap::config::token_sha256_hex(raw)
        )
    };
    token("root", "admin-token-9", "admin") + &token("watcher", "viewer-token-9", "viewer")
}

async fn sign_in(browser: &Browser, token: &str) {
    browser.wait_count("#login:not(.hidden)", 1).await;
    browser.type_into("#token", token).await;
    browser.click("#login button[type=submit]").await;
    browser.wait_count("#login.hidden", 1).await;
}

/// Opens the run and waits for its rounds; returns the page's HTML.
async fn open_run(browser: &Browser, page: &str) -> String {
    browser.goto(&format!("{page}?view=runs&run={RUN}")).await;
    browser.wait_count("table.rounds tr.round", 2).await;
    // The MCP exchanges' rows: at least the two tool calls.
    browser
        .wait(
            "the MCP rows",
            "return document.querySelectorAll('g.wf-mcp').length >= 2",
            json!([]),
        )
        .await;
    browser.html().await
}

#[tokio::test]
async fn the_page_shows_mcp_tool_calls_in_their_run() {
    let llm = MockUpstream::start(|req| {
        if String::from_utf8_lossy(&req.body).contains("call_w") {
            MockResponse::json(200, ANSWERS)
        } else {
            MockResponse::json(200, ASKS_FOR_TOOLS)
        }
    })
    .await;
    let server = serve_tools(json_answers()).await;
    let dir = TempDir::new("mcppage");
    let extra = provider_toml("llm", "openai", &llm.url()) + &tokens_toml();
    let running = llmtap_before(server, &dir, &extra).await;
    let headers = [("x-llmtap-invocation-id", RUN)];
    let r1 = post_json(
        running.proxy_addr,
        "/llm/v1/chat/completions",
        &headers,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Weather in Tromsø?"}]}"#,
    )
    .await;
    assert_eq!(r1.status, 200);
    let client = client_through(&running, RUN, None).await;
    client.list_tools(None).await.unwrap();
    let weather = client
        .call_tool(call("weather", json!({"city": "Tromsø"})))
        .await
        .unwrap();
    let failed = client.call_tool(call("fail", json!({}))).await.unwrap();
    assert_eq!(failed.is_error, Some(true));
    client.cancel().await.unwrap();
    let second = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "Weather in Tromsø?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_w", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Tromsø\"}"}},
            {"id": "call_f", "type": "function", "function": {"name": "fail", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_w", "content": weather.content[0].as_text().unwrap().text},
        {"role": "tool", "tool_call_id": "call_f", "content": "error"}]});
    let r2 = post_json(
        running.proxy_addr,
        "/llm/v1/chat/completions",
        &headers,
        &second.to_string(),
    )
    .await;
    assert_eq!(r2.status, 200);
    wait_invocation(&running, RUN, 2).await;
    let calls = run_calls(&running, RUN, 2).await;
    let id_of = |tool: &str| {
        calls
            .iter()
            .find(|c| c.mcp.as_ref().and_then(|m| m.tool.as_deref()) == Some(tool))
            .unwrap()
            .id
            .clone()
    };
    let (weather_id, fail_id) = (id_of("weather"), id_of("fail"));

    let page = format!("http://{}/", running.api_addr);
    let browser = Browser::start().await;
    browser.goto(&page).await;
    sign_in(&browser, "admin-token-9").await;
    open_run(&browser, &page).await;
    // The waterfall: each MCP tool call its own bar, the failed one drawn failed.
    let bar = |id: &str| format!("g.wf-mcp[data-call='{id}'] rect");
    browser
        .wait_count(&format!("{}.status-success", bar(&weather_id)), 1)
        .await;
    assert_eq!(
        browser
            .count(&format!("{}.status-failed", bar(&fail_id)))
            .await,
        1
    );
    let fail_title = browser.text(&format!("{} title", bar(&fail_id))).await;
    assert!(
        fail_title.contains("fail") && fail_title.contains("tool error"),
        "{fail_title}"
    );
    // The first round's tool calls: joined to their MCP calls, with server and status.
    let joined = |id: &str| format!("tr.round[data-round='1'] .tool-mcp[data-call='{id}']");
    let weather_tool = browser.text(&joined(&weather_id)).await;
    assert!(
        weather_tool.contains("weather") && weather_tool.contains("tools"),
        "{weather_tool}"
    );
    assert_eq!(
        browser
            .count(&format!("{}.tool-failed", joined(&fail_id)))
            .await,
        1
    );
    assert!(browser.text(&joined(&fail_id)).await.contains("failed"));
    assert_eq!(
        browser
            .count(&format!("{}.tool-failed", joined(&weather_id)))
            .await,
        0
    );
    // The server and the tools it offered.
    browser
        .wait_text(".mcp-server[data-provider='tools']", "weather")
        .await;
    assert_eq!(
        browser.count(".mcp-server").await,
        1,
        "one server, one entry"
    );
    let offered = browser.text(".mcp-server[data-provider='tools']").await;
    assert!(
        offered.contains("ask_client") && offered.contains("fail"),
        "{offered}"
    );
    // The round's detail: the tool call block shows the MCP call's result (admin).
    browser.click("table.rounds tr.round[data-round='1']").await;
    browser.click(".tab[data-tab='conversation']").await;
    browser
        .wait_text(
            &format!(".tool-result.tool-mcp[data-call='{weather_id}']"),
            WEATHER_RESULT,
        )
        .await;
    browser
        .wait_text(
            &format!(".tool-result.tool-mcp.tool-failed[data-call='{fail_id}']"),
            "isError",
        )
        .await;
    let admin_html = browser.html().await;
    assert!(
        admin_html.contains(FAIL_RESULT),
        "the admin sees the failed tool's text"
    );

    // A viewer: the same tool calls, servers, durations and statuses, no content.
    browser.click("#signout").await;
    sign_in(&browser, "viewer-token-9").await;
    let mut viewer_pages = vec![open_run(&browser, &page).await];
    assert_eq!(
        browser
            .count(&format!("{}.status-failed", bar(&fail_id)))
            .await,
        1
    );
    assert_eq!(
        browser
            .count(&format!("{}.tool-failed", joined(&fail_id)))
            .await,
        1
    );
    browser
        .wait_text(".mcp-server[data-provider='tools']", "weather")
        .await;
    browser.click("table.rounds tr.round[data-round='1']").await;
    browser.click(".tab[data-tab='conversation']").await;
    browser
        .wait_text(".tab-panel", "not shown to viewer tokens")
        .await;
    viewer_pages.push(browser.html().await);
    for html in &viewer_pages {
        for secret in [WEATHER_RESULT, FAIL_RESULT, "Tromsø"] {
            assert!(!html.contains(secret), "a viewer's page shows {secret:?}");
        }
    }
    browser.close().await;
    running.shutdown().await.unwrap();
}
