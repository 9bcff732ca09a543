//! What the page shows beyond its lists (issue 35's "complete what the product
//! documents list"), in a real headless Chromium against an in-process llmtap: the
//! runs table's Version and Tokens columns, page count and user, session and tenant
//! filters; a round's cards, metadata (key id, client, user agent), copy buttons and
//! its request copied as curl and as Python, each run against the mock provider;
//! attachments (size, source, image preview from the blob endpoint); memory turns;
//! failure hints.

use super::page::{console_errors, sign_in, tokens_toml, Scene, TOOL_RUN};
use super::util::*;
use super::webdriver::Browser;
use base64::Engine;
use serde_json::{json, Value};
use std::time::Duration;

/// A plain OpenAI chat answer with the given text and 12 + 5 tokens.
pub(super) fn chat_reply(text: &str) -> MockResponse {
    let body = json!({
        "id": "chatcmpl-page", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    });
    MockResponse::json(200, &body.to_string())
}

/// Sends `body` to the OpenAI provider with `headers`, answered by `reply`; returns the
/// call id once it is stored.
pub(super) async fn chat(
    scene: &Scene,
    body: &str,
    headers: &[(&str, &str)],
    reply: MockResponse,
) -> String {
    *scene.script.lock().unwrap() = reply;
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let got = send(
        scene.running.proxy_addr,
        "POST",
        "/openai/v1/chat/completions",
        &all,
        body,
    )
    .await;
    let id = got.call_id();
    wait_call(&scene.running, &id).await;
    id
}

fn user_body(text: &str) -> String {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}).to_string()
}

async fn api_as(scene: &Scene, path: &str, token: &str) -> Got {
    send(
        scene.running.api_addr,
        "GET",
        path,
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await
}

/// Sets a filter field as a person would (type, then the change event).
async fn set_filter(browser: &Browser, name: &str, value: &str) {
    browser
        .js(
            "const i = document.querySelector(`#filters [name=${arguments[0]}]`); i.value = arguments[1]; i.dispatchEvent(new Event('change', {bubbles: true}))",
            json!([name, value]),
        )
        .await;
}

/// Replaces the clipboard with a recorder: what the page copies lands in `window.__copied`.
async fn record_clipboard(browser: &Browser) {
    browser
        .js(
            "window.__copied = []; Object.defineProperty(navigator.clipboard, 'writeText', {configurable: true, value: async (t) => { window.__copied.push(t); }})",
            json!([]),
        )
        .await;
}

/// Clicks `css` and returns the text the page copied.
async fn copied_by(browser: &Browser, css: &str) -> String {
    let before = browser
        .js("return window.__copied.length", json!([]))
        .await
        .as_u64()
        .unwrap();
    browser.click(css).await;
    browser
        .wait(
            "the copy",
            "return window.__copied.length > arguments[0] ? window.__copied[window.__copied.length - 1] : null",
            json!([before]),
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
}

pub(super) async fn open_round(browser: &Browser, run: &str, round: u32) {
    browser
        .click(&format!("#runs-table tr.run[data-id='{run}']"))
        .await;
    let row = format!("table.rounds tr.round[data-round='{round}']");
    browser.wait_count(&row, 1).await;
    browser.click(&row).await;
    browser.wait_count(".round-box .tab-panel", 1).await;
}

pub(super) async fn show_tab(browser: &Browser, tab: &str) {
    browser.click(&format!(".tab[data-tab='{tab}']")).await;
    browser
        .wait(
            "the tab to render",
            "const p = document.querySelector('.tab-panel'); return !!p && p.childElementCount > 0 && !p.querySelector('.loading')",
            json!([]),
        )
        .await;
}

#[tokio::test]
async fn runs_show_version_and_total_tokens_count_pages_and_filter_by_user_session_and_tenant() {
    let scene = Scene::start("").await;
    scene.seed().await;
    // 17 more runs: 22 in all, two pages of 20. Two belong to user u-7, three to session s-9.
    for i in 0..17 {
        let run = format!("bulk-{i}");
        let mut headers = vec![
            ("x-llmtap-invocation-id", run.as_str()),
            ("x-llmtap-agent", "bulk-bot"),
        ];
        if i < 2 {
            headers.push(("x-llmtap-user-id", "u-7"));
        }
        if (5..8).contains(&i) {
            headers.push(("x-llmtap-session-id", "s-9"));
        }
        chat(
            &scene,
            &user_body(&format!("question {i}")),
            &headers,
            chat_reply("ok"),
        )
        .await;
    }
    wait_invocation(&scene.running, "bulk-16", 1).await;
    let browser = Browser::start().await;
    browser.goto(&scene.page_url()).await;
    browser.wait_count("#runs-table tr.run", 20).await;
    browser
        .wait_text("#showing", "Showing 1 to 20 of 22 · page 1 of 2")
        .await;
    let heads = browser.text("#runs-table thead").await;
    assert!(
        heads.contains("Version") && heads.contains("Tokens"),
        "{heads}"
    );

    // The tool run is the oldest: page 2 shows it with its prompt version and total tokens.
    browser.click("#next-page").await;
    browser
        .wait_text("#showing", "Showing 21 to 22 of 22 · page 2 of 2")
        .await;
    let selector = format!("#runs-table tr.run[data-id='{TOOL_RUN}']");
    browser.wait_count(&selector, 1).await;
    let inv = api_get(
        &scene.running,
        "/api/v1/invocations?limit=50&agent=support-bot",
    )
    .await
    .json();
    let item = &inv["items"][0];
    let total = item["input_tokens"].as_u64().unwrap() + item["output_tokens"].as_u64().unwrap();
    let cells = browser
        .js(
            "const r = document.querySelector(arguments[0]); return [r.querySelector('td.version').textContent, Number(r.querySelector('td.tokens-total').textContent.replace(/[^0-9]/g, ''))]",
            json!([selector]),
        )
        .await;
    assert_eq!(cells, json!(["v2", total]));

    // User, session and tenant filters, each in the URL and against the API's answer.
    for (name, value, rows) in [
        ("user_id", "u-7", 2),
        ("session_id", "s-9", 3),
        ("tenant", "acme", 1),
    ] {
        browser.goto(&scene.page_url()).await;
        browser.wait_count("#runs-table tr.run", 20).await;
        set_filter(&browser, name, value).await;
        browser.wait_count("#runs-table tr.run", rows).await;
        browser
            .wait_text("#showing", &format!("of {rows} · page 1 of 1"))
            .await;
        let url = browser.js("return location.search", json!([])).await;
        assert!(
            url.as_str().unwrap().contains(&format!("{name}={value}")),
            "{url}"
        );
        let api = api_get(
            &scene.running,
            &format!("/api/v1/invocations?{name}={value}"),
        )
        .await
        .json();
        let mut expected: Vec<String> = api["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        let shown = browser
            .js("return [...document.querySelectorAll('#runs-table tr.run')].map(r => r.dataset.id)", json!([]))
            .await;
        let mut shown: Vec<String> = serde_json::from_value(shown).unwrap();
        expected.sort();
        shown.sort();
        assert_eq!(shown, expected, "{name}={value}");
    }
    // The filter survives a reload.
    browser.refresh().await;
    browser.wait_count("#runs-table tr.run", 1).await;
    let kept = browser
        .js(
            "return document.querySelector('#filters [name=tenant]').value",
            json!([]),
        )
        .await;
    assert_eq!(kept, "acme");
    let errors = console_errors(&browser).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    scene.running.shutdown().await.unwrap();
}

/// Runs a copied snippet in `dir` with the key in the environment (and no proxy
/// settings that could send it elsewhere), off the runtime the mock provider serves on.
async fn run_in(dir: &std::path::Path, program: &str, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env("OPENAI_API_KEY", "sk-from-the-environment")
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1");
    for name in [
        "OPENAI_BASE_URL",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(name);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// A prompt no shell or Python string may take for code.
const HOSTILE: &str =
    "it's $(touch MARK) `touch MARK`; touch MARK \\' \" \\\" %s {0}\n\ttabbed ''' \"\"\" end";
const REAL_KEY: &str = "sk-live-do-not-copy-0123456789abcdef";

#[tokio::test]
async fn a_round_shows_its_cards_client_and_key_id_and_copies_a_request_that_replays() {
    let scene = Scene::start(&tokens_toml()).await;
    let body = json!({
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": HOSTILE}]
    })
    .to_string();
    let reply = "Done: it's fine.\nSecond line.";
    let id = chat(
        &scene,
        &body,
        &[
            ("authorization", &format!("Bearer {REAL_KEY}")),
            ("user-agent", "replay-test/1.0"),
            ("x-llmtap-invocation-id", "run-replay"),
            ("x-llmtap-prompt", "terse@v7"),
            ("x-llmtap-prompt-variables", r#"{"tone":"terse","n":3}"#),
            ("x-llmtap-user-prompt", "ask@v3"),
            ("x-llmtap-user-prompt-variables", r#"{"question":"why"}"#),
        ],
        chat_reply(reply),
    )
    .await;
    let admin_view = api_as(&scene, &format!("/api/v1/calls/{id}"), "admin-token-1")
        .await
        .json();
    assert_eq!(admin_view["client"]["ip"], "127.0.0.1");
    let fingerprint = admin_view["api_key_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    // The client's address is personal data: a viewer gets the user agent, not the address.
    let viewer_view = api_as(&scene, &format!("/api/v1/calls/{id}"), "viewer-token-1")
        .await
        .json();
    assert_eq!(viewer_view["metadata"]["user_prompt"], "ask@v3");
    assert!(
        viewer_view["metadata"]
            .get("user_prompt_variables")
            .is_none(),
        "{viewer_view}"
    );
    assert!(
        viewer_view["metadata"]["prompt_variables"].is_null(),
        "{viewer_view}"
    );
    assert_eq!(
        viewer_view["client"],
        json!({"ip": null, "user_agent": "replay-test/1.0"})
    );
    assert!(viewer_view.get("upstream_url").is_none(), "{viewer_view}");

    let browser = Browser::start().await;
    browser.goto(&scene.page_url()).await;
    sign_in(&browser, "admin-token-1").await;
    browser.wait_count("#runs-table tr.run", 1).await;
    open_round(&browser, "run-replay", 1).await;
    let cards = browser.text(".round-cards").await;
    for needle in [
        "Model",
        "gpt-4o-mini",
        "answered by gpt-4o-mini-2024-07-18",
        "Latency",
        "Tokens",
        "17",
        "12 in / 5 out",
        "Cost",
        "$",
    ] {
        assert!(cards.contains(needle), "{needle:?} not in cards: {cards}");
    }
    show_tab(&browser, "metadata").await;
    let meta = browser.text(".tab-panel").await;
    for needle in [
        "Key id",
        fingerprint.as_str(),
        "Client IP",
        "127.0.0.1",
        "User agent",
        "replay-test/1.0",
    ] {
        assert!(meta.contains(needle), "{needle:?} not in metadata: {meta}");
    }

    record_clipboard(&browser).await;
    show_tab(&browser, "conversation").await;
    assert_eq!(copied_by(&browser, "#copy-output").await, reply);
    show_tab(&browser, "prompt").await;
    let prompt = browser.text(".tab-panel").await;
    for needle in ["System prompt", "terse", "v7", "User prompt", "ask", "v3"] {
        assert!(prompt.contains(needle), "{needle:?} not in {prompt}");
    }
    let variables: Value =
        serde_json::from_str(&copied_by(&browser, "#copy-variables").await).unwrap();
    assert_eq!(variables, json!({"tone": "terse", "n": 3}));
    let variables: Value =
        serde_json::from_str(&copied_by(&browser, "#copy-user-variables").await).unwrap();
    assert_eq!(variables, json!({"question": "why"}));

    // The curl command, run by a shell, sends the recorded body byte for byte, with the
    // key from the environment; nothing in the prompt runs.
    let curl = copied_by(&browser, "#copy-curl").await;
    assert!(
        !curl.contains(REAL_KEY) && !curl.contains("sk-live"),
        "{curl}"
    );
    assert!(curl.contains("$OPENAI_API_KEY"), "{curl}");
    let work = TempDir::new("replay");
    let seen_before = scene.mock.seen.lock().unwrap().len();
    *scene.script.lock().unwrap() = chat_reply("replayed");
    let out = run_in(work.path(), "sh", &["-c", &curl]).await;
    assert!(
        out.status.success(),
        "{curl}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed"));
    {
        let seen = scene.mock.seen.lock().unwrap();
        assert_eq!(seen.len(), seen_before + 1);
        let replayed = seen.last().unwrap();
        assert_eq!(replayed.path_and_query, "/v1/chat/completions");
        assert_eq!(
            std::str::from_utf8(&replayed.body).unwrap(),
            body,
            "the body byte for byte"
        );
        assert_eq!(
            replayed.headers["authorization"],
            "Bearer sk-from-the-environment"
        );
    }
    assert!(
        !work.path().join("MARK").exists(),
        "the prompt ran as shell code"
    );

    // The Python snippet (the OpenAI SDK) sends the same JSON.
    let python = copied_by(&browser, "#copy-python").await;
    assert!(!python.contains(REAL_KEY), "{python}");
    let out = run_in(work.path(), "python3", &["-c", &python]).await;
    assert!(
        out.status.success(),
        "{python}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        let seen = scene.mock.seen.lock().unwrap();
        assert_eq!(seen.len(), seen_before + 2);
        let replayed = seen.last().unwrap();
        let sent: Value = serde_json::from_slice(&replayed.body).unwrap();
        assert_eq!(sent, serde_json::from_str::<Value>(&body).unwrap());
        assert_eq!(
            replayed.headers["authorization"],
            "Bearer sk-from-the-environment"
        );
    }
    assert!(!work.path().join("MARK").exists(), "the prompt ran as code");

    // A viewer sees no copy-as buttons (no body to copy) and no client address.
    browser.goto(&scene.page_url()).await;
    browser.click("#signout").await;
    sign_in(&browser, "viewer-token-1").await;
    browser.wait_count("#runs-table tr.run", 1).await;
    open_round(&browser, "run-replay", 1).await;
    assert_eq!(browser.count("#copy-curl").await, 0);
    show_tab(&browser, "metadata").await;
    let meta = browser.text(".tab-panel").await;
    assert!(
        meta.contains("admins only") && !meta.contains("127.0.0.1"),
        "{meta}"
    );
    assert!(meta.contains("replay-test/1.0"), "{meta}");
    let errors = console_errors(&browser).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    scene.running.shutdown().await.unwrap();
}

/// A 1×1 PNG followed by `padding` zero bytes (still a PNG a browser draws).
fn png(padding: usize) -> Vec<u8> {
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
        .unwrap();
    bytes.extend(vec![0u8; padding]);
    bytes
}

#[tokio::test]
async fn attachments_show_size_source_and_an_image_preview_from_the_blob_endpoint() {
    let scene = Scene::start(&tokens_toml()).await;
    let image = png(2000);
    let data_url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&image)
    );
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in these pictures?"},
            {"type": "image_url", "image_url": {"url": data_url}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
        ]}]
    })
    .to_string();
    let id = chat(
        &scene,
        &body,
        &[("x-llmtap-invocation-id", "run-pictures")],
        chat_reply("A dot."),
    )
    .await;
    let record = api_as(&scene, &format!("/api/v1/calls/{id}"), "admin-token-1")
        .await
        .json();
    let attachments = record["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 2, "{record}");
    let sha = attachments
        .iter()
        .find_map(|a| a["sha256"].as_str())
        .unwrap()
        .to_string();
    // The blob is served with its type, unsniffable and sandboxed.
    let blob = api_as(&scene, &format!("/api/v1/blobs/{sha}"), "admin-token-1").await;
    assert_eq!(blob.status, 200);
    assert_eq!(blob.body.len(), image.len());
    assert_eq!(blob.header("content-type"), Some("image/png"));
    assert_eq!(blob.header("x-content-type-options"), Some("nosniff"));
    assert!(blob
        .header("content-security-policy")
        .unwrap()
        .contains("sandbox"));

    let browser = Browser::start().await;
    browser.goto(&scene.page_url()).await;
    sign_in(&browser, "admin-token-1").await;
    browser.wait_count("#runs-table tr.run", 1).await;
    open_round(&browser, "run-pictures", 1).await;
    browser
        .wait_count("table.attachments tr.attachment", 2)
        .await;
    let rows = browser
        .js(
            "return [...document.querySelectorAll('table.attachments tr.attachment')].map(r => [...r.cells].slice(1, 4).map(c => c.textContent))",
            json!([]),
        )
        .await;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows).unwrap();
    assert!(
        rows.contains(&vec![
            "image/png".into(),
            "2.0 KB".into(),
            "mirrored".into()
        ]),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r[2] == "URL only"), "{rows:?}");
    // The preview is drawn from a blob: URL of the bytes fetched with the token.
    let drawn = browser
        .wait(
            "the preview",
            "const i = document.querySelector('img.attachment-image'); return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.src.startsWith('blob:')] : null",
            json!([]),
        )
        .await;
    assert_eq!(drawn, json!([1, true]));
    let errors = console_errors(&browser).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    scene.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn memory_turns_are_marked_and_every_failure_has_a_hint_saying_what_to_do() {
    let scene = Scene::start("").await;
    let system = json!({"role": "system", "content": "You remember."});
    let in_session = |run: &'static str| {
        [
            ("x-llmtap-invocation-id", run),
            ("x-llmtap-session-id", "mem-1"),
        ]
    };
    let first = json!({"model": "gpt-4o-mini", "messages": [system, {"role": "user", "content": "first question"}]});
    chat(
        &scene,
        &first.to_string(),
        &in_session("mem-run-1"),
        chat_reply("first answer"),
    )
    .await;
    // The second run of the session carries the first run's turns as history, asks
    // its own question, and takes two rounds (a tool call between them).
    let memory = [
        json!({"role": "user", "content": "first question"}),
        json!({"role": "assistant", "content": "first answer"}),
    ];
    let question = json!({"role": "user", "content": "second question"});
    let round_1 = json!({"model": "gpt-4o-mini", "messages": [
        system, memory[0], memory[1], question
    ]});
    let tool_call = json!({"id": "call_w", "type": "function",
        "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}});
    let asks_for_weather = json!({
        "id": "chatcmpl-tool", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [tool_call]},
                     "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38}
    });
    chat(
        &scene,
        &round_1.to_string(),
        &in_session("mem-run-2"),
        MockResponse::json(200, &asks_for_weather.to_string()),
    )
    .await;
    let round_2 = json!({"model": "gpt-4o-mini", "messages": [
        system, memory[0], memory[1], question,
        {"role": "assistant", "content": null, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_w", "content": "sunny"}
    ]});
    let round_2_id = chat(
        &scene,
        &round_2.to_string(),
        &in_session("mem-run-2"),
        chat_reply("second answer"),
    )
    .await;
    // A session's first run whose prompt holds few-shot examples: not memory.
    let few_shot = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "example question"},
        {"role": "assistant", "content": "example answer"},
        {"role": "user", "content": "real question"}
    ]});
    chat(
        &scene,
        &few_shot.to_string(),
        &[
            ("x-llmtap-invocation-id", "few-shot"),
            ("x-llmtap-session-id", "mem-2"),
        ],
        chat_reply("real answer"),
    )
    .await;
    // The API says which turns repeat what, derived once.
    let detail = send(
        scene.running.api_addr,
        "GET",
        &format!("/api/v1/calls/{round_2_id}"),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(
        detail["history"],
        json!({"memory": 2, "memory_run_id": "mem-run-1", "earlier_rounds": 2})
    );
    // Failures, one run each.
    let failures = [
        (
            "fail-500",
            500,
            r#"{"error":{"type":"server_error","message":"The server had an error"}}"#,
            "retry with backoff",
        ),
        (
            "fail-529",
            529,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            "fall back to another model",
        ),
        (
            "fail-403",
            403,
            r#"{"error":{"type":"permission_error","message":"no access"}}"#,
            "model access",
        ),
        (
            "fail-504",
            504,
            r#"{"error":{"message":"gateway timeout"}}"#,
            "raise the timeout",
        ),
    ];
    for (run, status, body, _) in failures {
        chat(
            &scene,
            &user_body("fails"),
            &[
                ("x-llmtap-invocation-id", run),
                ("authorization", "Bearer sk-test-hint-key"),
            ],
            MockResponse::json(status, body),
        )
        .await;
    }
    let browser = Browser::start().await;
    browser.goto(&scene.page_url()).await;
    browser.wait_count("#runs-table tr.run", 7).await;

    let marks = "return [...document.querySelectorAll('.tab-panel h4 ~ .msg')].map(m => [m.querySelector('.role').textContent, m.classList.contains('msg-memory') ? 'memory' : m.classList.contains('msg-earlier') ? 'earlier' : ''])";
    open_round(&browser, "mem-run-2", 1).await;
    browser.wait_count(".tab-panel .msg-memory", 2).await;
    // The system prompt is the run's own; the earlier question and answer are memory;
    // the new question is not.
    assert_eq!(
        browser.js(marks, json!([])).await,
        json!([
            ["system", ""],
            ["user", "memory"],
            ["assistant", "memory"],
            ["user", ""],
            ["assistant", ""]
        ])
    );
    browser
        .wait_text(".memory-note", "run mem-run-1 of session mem-1")
        .await;
    // Round 2: the memory, then round 1's question and tool call, then the new tool
    // result.
    browser.click("table.rounds tr.round[data-round='2']").await;
    browser
        .wait_count(".round-detail[data-round='2'] .tab-panel", 1)
        .await;
    browser.wait_count(".tab-panel .msg-earlier", 2).await;
    assert_eq!(
        browser.js(marks, json!([])).await,
        json!([
            ["system", ""],
            ["user", "memory"],
            ["assistant", "memory"],
            ["user", "earlier"],
            ["assistant", "earlier"],
            ["tool", ""],
            ["assistant", ""]
        ])
    );
    // The session's first run has no memory, and neither have few-shot examples.
    open_round(&browser, "mem-run-1", 1).await;
    browser.wait_text(".tab-panel", "first question").await;
    assert_eq!(browser.count(".tab-panel .msg-memory").await, 0);
    open_round(&browser, "few-shot", 1).await;
    browser.wait_text(".tab-panel", "real question").await;
    assert_eq!(browser.count(".tab-panel .msg-memory").await, 0);

    for (run, status, _, advice) in failures {
        browser
            .click(&format!("#runs-table tr.run[data-id='{run}']"))
            .await;
        browser
            .wait_count(&format!("tr.run-detail[data-id='{run}'] p.hint"), 1)
            .await;
        let hint = browser
            .text(&format!("tr.run-detail[data-id='{run}'] p.hint"))
            .await;
        assert!(
            hint.contains(&status.to_string()) && hint.contains(advice),
            "{run}: {hint}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let errors = console_errors(&browser).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    scene.running.shutdown().await.unwrap();
}
