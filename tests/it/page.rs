//! The web page in a real headless Chromium (chromedriver), against an in-process
//! llmtap fed with recorded provider exchanges through the mock upstream.
//!
//! The README's screenshots are taken by `it::screenshots` on a data set of their own;
//! the benchmark at the end (ignored by default, BENCHMARKS.md gives its command)
//! writes `runs-1m.png` when `LLMTAP_SCREENSHOTS=DIR` is set.

use super::util::*;
use super::webdriver::Browser;
use bytes::Bytes;
use llmtap::server::Running;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running llmtap with providers `openai`, `anthropic` and `gemini`, all answered
/// by one mock whose next response the test sets.
pub(super) struct Scene {
    pub(super) running: Running,
    pub(super) script: Arc<Mutex<MockResponse>>,
    pub(super) mock: MockUpstream,
    _dir: TempDir,
}

impl Scene {
    pub(super) async fn start(extra_toml: &str) -> Scene {
        let script = Arc::new(Mutex::new(MockResponse::json(200, "{}")));
        let shared = script.clone();
        let mock = MockUpstream::start(move |_| shared.lock().unwrap().clone()).await;
        let dir = TempDir::new("page");
        let mut toml = String::new();
        for kind in ["openai", "anthropic", "gemini"] {
            toml.push_str(&provider_toml(kind, kind, &mock.url()));
        }
        // A tool's HTTP API, recorded as tool calls of the runs that name themselves.
        toml.push_str(&provider_toml("tool", "http", &mock.url()));
        toml.push_str(extra_toml);
        let running = start_llmtap(test_config(dir.path(), &toml)).await;
        Scene {
            running,
            script,
            mock,
            _dir: dir,
        }
    }

    pub(super) fn page_url(&self) -> String {
        format!("http://{}/", self.running.api_addr)
    }

    /// Replays a recorded exchange with the given llmtap headers, optionally with extra
    /// response headers or another status; returns the call id once it is stored.
    pub(super) async fn replay_with(
        &self,
        name: &str,
        headers: &[(&str, &str)],
        status: Option<u16>,
        extra_response_headers: &[(&str, &str)],
    ) -> String {
        let fx = fixture(name);
        *self.script.lock().unwrap() = fixture_reply(&fx, status, extra_response_headers);
        let url = fixture_url(&fx);
        let provider = match fx["provider"].as_str().unwrap() {
            "anthropic" => "anthropic",
            "gemini" => "gemini",
            _ => "openai",
        };
        let path = format!("/{provider}{}", url.path_and_query().unwrap());
        let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        let request_body = fx["request"]["body"].as_str().unwrap_or_default();
        let got = send(self.running.proxy_addr, "POST", &path, &all, request_body).await;
        let id = got.call_id();
        wait_call(&self.running, &id).await;
        id
    }

    pub(super) async fn replay(&self, name: &str, headers: &[(&str, &str)]) -> String {
        self.replay_with(name, headers, None, &[]).await
    }

    /// The recorded traffic every page test starts from: a two-round tool run, an
    /// Anthropic and a Gemini prompt, a refused key, and a rate-limited call.
    pub(super) async fn seed(&self) {
        let tool_run = [
            ("x-llmtap-agent", "support-bot"),
            ("x-llmtap-invocation-id", "run-tools"),
            ("x-llmtap-session-id", "conv-42"),
            ("x-llmtap-trigger", "user"),
            ("x-llmtap-prompt", "calculator@v2"),
            ("x-llmtap-tenant", "acme"),
        ];
        self.replay("llm__test_tools__test_tool_use_basic__0.json", &tool_run)
            .await;
        self.replay("llm__test_tools__test_tool_use_basic__1.json", &tool_run)
            .await;
        wait_invocation(&self.running, TOOL_RUN, 2).await;
        self.replay(
            "llm-anthropic__test_anthropic__test_prompt.json",
            &[
                ("x-llmtap-agent", "research-bot"),
                ("x-llmtap-trigger", "task"),
                ("x-api-key", "sk-ant-test-key-0001"),
            ],
        )
        .await;
        self.replay(
            "llm-gemini__test_gemini__test_prompt.json",
            &[
                ("x-llmtap-agent", "research-bot"),
                ("x-llmtap-trigger", "system"),
            ],
        )
        .await;
        self.replay(
            "mirascope__test_authentication_error_stream__openai_gpt_4o_completions.json",
            &[
                ("x-llmtap-agent", "billing-bot"),
                ("authorization", "Bearer sk-wrong-0002"),
            ],
        )
        .await;
        // The same Anthropic exchange answered 429 with a nearly exhausted window.
        self.replay_with(
            "llm-anthropic__test_anthropic__test_prompt.json",
            &[
                ("x-llmtap-agent", "research-bot"),
                ("x-api-key", "sk-ant-test-key-0001"),
            ],
            Some(429),
            &[
                ("anthropic-ratelimit-requests-remaining", "120"),
                ("anthropic-ratelimit-tokens-remaining", "96000"),
                ("retry-after", "17"),
            ],
        )
        .await;
    }
}

/// The tool run's id as stored: a tenant's client-chosen ids are scoped `id@tenant`.
pub(super) const TOOL_RUN: &str = "run-tools@acme";
pub(super) const TOOL_PROMPT: &str = "What is 1231 * 2331?";
const PELICAN_PROMPT: &str = "Two names for a pet pelican";

pub(super) async fn shot(browser: &Browser, name: &str) {
    if let Ok(dir) = std::env::var("LLMTAP_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        // Let transitions (the fresh-row highlight) settle first.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let png = browser.screenshot().await;
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

/// Errors the page logged to the console (network failures of its own requests too).
pub(super) async fn console_errors(browser: &Browser) -> Vec<String> {
    browser
        .console()
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn the_page_is_served_with_its_security_headers_and_no_token() {
    let scene = Scene::start(&tokens_toml()).await;
    let got = api_get(&scene.running, "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = got.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(got.header("referrer-policy"), Some("no-referrer"));
    let html = String::from_utf8(got.body.to_vec()).unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "no inline code"
    );
    let etag = got.header("etag").unwrap().to_string();
    let again = send(
        scene.running.api_addr,
        "GET",
        "/",
        &[("if-none-match", &etag)],
        "",
    )
    .await;
    assert_eq!(again.status, 304);
    let js = api_get(&scene.running, "/assets/app.js").await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    // The data still needs a token; whoami tells the page who it is.
    assert_eq!(api_get(&scene.running, "/api/v1/whoami").await.status, 401);
    let me = send(
        scene.running.api_addr,
        "GET",
        "/api/v1/whoami",
        &[("authorization", "Bearer viewer-token-1")],
        "",
    )
    .await;
    assert_eq!(
        me.json(),
        json!({"name": "watcher", "role": "viewer", "tenant": null, "tokens_required": true})
    );
    scene.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn runs_view_filters_opens_rounds_updates_live_and_exports_csv() {
    let scene = Scene::start("").await;
    scene.seed().await;
    let browser = Browser::start().await;
    browser.goto(&scene.page_url()).await;
    // Six calls in five runs (the tool run has two rounds).
    browser.wait_count("#runs-table tr.run", 5).await;
    browser.wait_text("#showing", "Showing 1 to 5 of 5").await;
    browser.wait_text("#stats-bar", "Total Runs").await;
    let table = browser.text("#runs-table").await;
    for needle in [
        "support-bot",
        "research-bot",
        "billing-bot",
        "unauthorized",
        "rate limited",
        "success",
    ] {
        assert!(table.contains(needle), "{needle} missing from:\n{table}");
    }

    // A filter narrows the list, lands in the URL and survives a reload.
    browser
        .js(
            "const i = document.querySelector('input[name=agent]'); i.value = 'support-bot'; i.dispatchEvent(new Event('change', {bubbles: true}))",
            json!([]),
        )
        .await;
    browser.wait_count("#runs-table tr.run", 1).await;
    let url = browser.js("return location.href", json!([])).await;
    assert!(url.as_str().unwrap().contains("agent=support-bot"), "{url}");
    browser.refresh().await;
    browser.wait_count("#runs-table tr.run", 1).await;
    let kept = browser
        .js(
            "return document.querySelector('input[name=agent]').value",
            json!([]),
        )
        .await;
    assert_eq!(kept, "support-bot");

    // Keyboard: j selects the row, Enter opens it into its rounds.
    browser.js("document.activeElement.blur()", json!([])).await;
    browser.keys("j").await;
    browser.wait_count("tr.run.selected", 1).await;
    browser.keys("\u{E007}").await;
    browser.wait_count("table.rounds tr.round", 2).await;
    let rounds = browser.text("table.rounds").await;
    assert!(rounds.contains("r1") && rounds.contains("r2"), "{rounds}");
    assert!(rounds.contains("multiply"), "tool call listed: {rounds}");
    assert_eq!(browser.count("svg.waterfall rect.bar").await, 2);
    assert_eq!(browser.count("svg.waterfall line.ttft").await, 2);

    // A round shows its prompt text, and the tool call's result from the next round.
    browser.click("table.rounds tr.round[data-round='1']").await;
    browser.wait_text(".tab-panel", TOOL_PROMPT).await;
    browser.wait_text(".tab-panel", "2869461").await;
    browser
        .js(
            "document.querySelector('.round-detail').scrollIntoView({block: 'start'}); window.scrollBy(0, -56)",
            json!([]),
        )
        .await;
    browser.click(".tab[data-tab='changes']").await;
    browser.wait_text(".tab-panel", "whole context").await;
    browser.click(".tab[data-tab='cost']").await;
    browser.wait_text(".tab-panel", "Price-table entry").await;
    browser
        .wait_text(
            ".tab-panel",
            "openai/gpt-4o-mini-2024-07-18 (USD per million tokens)",
        )
        .await;
    browser
        .js(
            "document.querySelector('.round-detail').scrollIntoView({block: 'start'}); window.scrollBy(0, -56)",
            json!([]),
        )
        .await;
    browser.click(".tab[data-tab='metadata']").await;
    browser.wait_text(".tab-panel", "calculator@v2").await;
    // Round 2: what it added to the context is the tool result.
    browser.click("table.rounds tr.round[data-round='2']").await;
    browser.wait_text(".tab-panel", "Request parameters").await;
    browser.click(".tab[data-tab='changes']").await;
    browser.wait_text(".tab-panel", "added").await;
    browser.wait_text(".tab-panel", "2869461").await;
    browser
        .js(
            "document.querySelector('.round-detail').scrollIntoView({block: 'start'}); window.scrollBy(0, -56)",
            json!([]),
        )
        .await;

    // A new call appears without a reload; the open run stays open.
    browser
        .js(
            "window.__sameDocument = true; window.scrollTo(0, 0)",
            json!([]),
        )
        .await;
    scene
        .replay(
            "llm__test_tools__test_tool_use_basic__0.json",
            &[
                ("x-llmtap-agent", "support-bot"),
                ("x-llmtap-invocation-id", "run-live"),
            ],
        )
        .await;
    browser.wait_count("#runs-table tr.run", 2).await;
    let first = browser
        .js(
            "return document.querySelector('#runs-table tr.run').dataset.id",
            json!([]),
        )
        .await;
    assert_eq!(first, "run-live", "the new run is on top");
    let state = browser
        .js(
            "return [window.__sameDocument === true, document.querySelector('tr.run-detail').dataset.id, !!document.querySelector('.round-detail')]",
            json!([]),
        )
        .await;
    assert_eq!(state, json!([true, TOOL_RUN, true]));
    browser.wait_text("#showing", "Showing 1 to 2 of 2").await;

    // Export CSV downloads the filtered runs.
    browser.click("#export-csv").await;
    let csv = {
        let mut found = None;
        for _ in 0..200 {
            let done: Vec<_> = std::fs::read_dir(&browser.downloads)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".csv"))
                .collect();
            if let Some(e) = done.first() {
                found = Some(std::fs::read_to_string(e.path()).unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found.expect("no CSV was downloaded")
    };
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,status"), "{csv}");
    assert_eq!(
        lines.len(),
        3,
        "header and the two support-bot runs:\n{csv}"
    );
    assert!(
        lines[1..].iter().all(|l| l.contains("support-bot")),
        "{csv}"
    );

    // The other views.
    browser
        .goto(&format!("{}?view=sessions", scene.page_url()))
        .await;
    browser.wait_text("main", TOOL_PROMPT).await;
    // (Calls that named no session are sessions of their conversations: pick conv-42.)
    browser.click("table.sessions a[href*='conv-42']").await;
    browser.wait_count("table.timeline tbody tr", 2).await;
    browser
        .goto(&format!("{}?view=agents", scene.page_url()))
        .await;
    browser.wait_text("table.agents", "research-bot").await;
    browser
        .goto(&format!("{}?view=stats&group_by=model", scene.page_url()))
        .await;
    browser.wait_text("table.stats", "gpt-4o-mini").await;
    assert!(browser.count("svg.bars rect").await >= 3);
    browser
        .goto(&format!("{}?view=ratelimits", scene.page_url()))
        .await;
    browser.wait_text(".rl-card", "anthropic").await;
    let card = browser.text(".rl-card").await;
    assert!(card.contains("120 of 20,000 left"), "{card}");
    assert!(card.contains("429s last hour"), "{card}");
    assert!(card.contains("17 s"), "last retry-after: {card}");
    assert!(browser.count(".rl-card svg.time path.line").await >= 1);

    let errors = console_errors(&browser).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    scene.running.shutdown().await.unwrap();
}

pub(super) fn tokens_toml() -> String {
    let token = |name: &str, raw: &str, role: &str| {
        format!(
            "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n",
            llmtap::config::token_sha256_hex(raw)
        )
    };
    token("root", "admin-token-1", "admin") + &token("watcher", "viewer-token-1", "viewer")
}

/// Signs in through the page's password field.
pub(super) async fn sign_in(browser: &Browser, token: &str) {
    browser.wait_count("#login:not(.hidden)", 1).await;
    browser.type_into("#token", token).await;
    browser.click("#login button[type=submit]").await;
    browser.wait_count("#login.hidden", 1).await;
}

/// Opens the tool run's first round and visits every tab; returns the DOM seen on each.
async fn open_every_tab(browser: &Browser) -> Vec<String> {
    browser.wait_count("#runs-table tr.run", 5).await;
    browser
        .click(&format!("#runs-table tr.run[data-id='{TOOL_RUN}']"))
        .await;
    browser.wait_count("table.rounds tr.round", 2).await;
    browser.click("table.rounds tr.round[data-round='1']").await;
    let mut seen = Vec::new();
    for tab in ["conversation", "changes", "prompt", "cost", "metadata"] {
        browser.click(&format!(".tab[data-tab='{tab}']")).await;
        browser
            .wait(
                "the tab to render",
                "const p = document.querySelector('.tab-panel'); return !!p && p.childElementCount > 0 && !p.querySelector('.loading')",
                json!([]),
            )
            .await;
        seen.push(browser.html().await);
    }
    seen
}

#[tokio::test]
async fn a_viewer_token_never_puts_prompt_text_in_the_page() {
    let scene = Scene::start(&tokens_toml()).await;
    scene.seed().await;
    let browser = Browser::start().await;
    browser.goto(&scene.page_url()).await;
    sign_in(&browser, "viewer-token-1").await;
    let mut pages = open_every_tab(&browser).await;
    browser
        .wait_text(".tab-panel", "not shown to viewer tokens")
        .await;
    for view in ["sessions", "agents", "stats", "ratelimits"] {
        browser
            .goto(&format!("{}?view={view}", scene.page_url()))
            .await;
        browser
            .wait(
                "the view to load",
                "return !!document.querySelector('main h2') && !document.querySelector('main .loading')",
                json!([]),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        pages.push(browser.html().await);
    }
    for html in &pages {
        for secret in [TOOL_PROMPT, PELICAN_PROMPT, "1231, \"b\"", "2869461"] {
            assert!(!html.contains(secret), "viewer page shows {secret:?}");
        }
    }
    // The token lives in session storage only: not in the URL, not in local storage.
    let storage = browser
        .js(
            "return [sessionStorage.getItem('llmtap.token'), localStorage.length, location.href, document.cookie]",
            json!([]),
        )
        .await;
    assert_eq!(storage[0], "viewer-token-1");
    assert_eq!(storage[1], 0);
    assert!(!storage[2].as_str().unwrap().contains("viewer-token"));
    assert_eq!(storage[3], "");

    // The same steps with an admin token do show the prompt: the check above can fail.
    browser.goto(&scene.page_url()).await;
    browser.click("#signout").await;
    sign_in(&browser, "admin-token-1").await;
    let admin_pages = open_every_tab(&browser).await;
    assert!(admin_pages[0].contains(TOOL_PROMPT));
    browser.close().await;
    scene.running.shutdown().await.unwrap();
}

/// A run of 500 rounds opens, draws every round and stays responsive.
#[tokio::test]
async fn a_run_of_500_rounds_opens_and_stays_responsive() {
    let scene = Scene::start("").await;
    let fx = fixture("llm-anthropic__test_anthropic__test_prompt.json");
    let body = fx["response"]["body"].as_str().unwrap().to_string();
    let headers: Vec<(String, String)> = vec![("content-type".into(), "text/event-stream".into())];
    *scene.script.lock().unwrap() = MockResponse {
        status: 200,
        headers,
        steps: vec![Step::Data(Bytes::from(body))],
        delay_head: Duration::ZERO,
    };
    let request = fx["request"]["body"].as_str().unwrap().to_string();
    let mut last = String::new();
    for _ in 0..500 {
        let got = send(
            scene.running.proxy_addr,
            "POST",
            "/anthropic/v1/messages",
            &[
                ("content-type", "application/json"),
                ("x-llmtap-invocation-id", "long-run"),
                ("x-llmtap-agent", "marathon"),
            ],
            &request,
        )
        .await;
        last = got.call_id();
    }
    wait_call(&scene.running, &last).await;
    wait_invocation(&scene.running, "long-run", 500).await;
    let browser = Browser::start().await;
    browser.goto(&scene.page_url()).await;
    browser.wait_count("#runs-table tr.run", 1).await;
    let started = std::time::Instant::now();
    browser.click("#runs-table tr.run").await;
    browser.wait_count("table.rounds tr.round", 500).await;
    let opened = started.elapsed();
    assert_eq!(browser.count("svg.waterfall rect.bar").await, 500);
    // Responsive: opening the last round and a keystroke answer promptly.
    let started = std::time::Instant::now();
    browser
        .click("table.rounds tr.round[data-round='500']")
        .await;
    browser.wait_text(".tab-panel", PELICAN_PROMPT).await;
    let round = started.elapsed();
    assert!(
        opened < Duration::from_secs(5) && round < Duration::from_secs(3),
        "opening took {opened:?}, the last round {round:?}"
    );
    let errors = console_errors(&browser).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    scene.running.shutdown().await.unwrap();
}

/// The runs view's first screen on a big store, measured in the browser: from
/// navigation start to the table drawn (a `performance.mark` the page sets).
/// `LLMTAP_PAGE_BENCH_URL` points at a running llmtap; see BENCHMARKS.md.
#[tokio::test]
#[ignore = "benchmark: needs LLMTAP_PAGE_BENCH_URL (see BENCHMARKS.md)"]
async fn runs_first_screen_benchmark() {
    let url = std::env::var("LLMTAP_PAGE_BENCH_URL").expect("set LLMTAP_PAGE_BENCH_URL");
    let loads: usize = std::env::var("LLMTAP_PAGE_BENCH_LOADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let browser = Browser::start().await;
    let mut times = Vec::new();
    let mut lists = Vec::new();
    for i in 0..=loads {
        browser.goto(&url).await;
        let ms = browser
            .wait(
                "the runs table",
                "const m = performance.getEntriesByName('runs-table-drawn'); return m.length ? m[0].startTime : 0",
                json!([]),
            )
            .await
            .as_f64()
            .unwrap();
        let rows = browser.count("#runs-table tr.run").await;
        assert_eq!(rows, 20, "one page of rows");
        // When the list's answer had arrived, from navigation start.
        let list = browser
            .js(
                "const r = performance.getEntriesByType('resource').find(e => e.name.includes('/api/v1/invocations?')); return r ? [r.startTime, r.responseEnd] : null",
                json!([]),
            )
            .await;
        if i > 0 {
            times.push(ms); // the first load warms the browser's cache of the assets
            lists.push((list[0].as_f64().unwrap(), list[1].as_f64().unwrap()));
        }
    }
    shot(&browser, "runs-1m").await;
    times.sort_by(f64::total_cmp);
    lists.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (sent, arrived) = lists[lists.len() / 2];
    println!("median load: list request sent at {sent:.0} ms, answer complete at {arrived:.0} ms");
    let showing = browser.text("#showing").await;
    println!(
        "first screen (navigation start → table drawn) over {loads} loads: median {:.0} ms, p90 {:.0} ms, max {:.0} ms; {showing}",
        times[times.len() / 2],
        times[(times.len() * 9 / 10).min(times.len() - 1)],
        times[times.len() - 1]
    );
    browser.close().await;
}

/// The page's code never parses text as HTML: every value reaches the DOM as text.
#[test]
fn web_assets_never_parse_data_as_html() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        if name.ends_with(".js") {
            checked += 1;
            for banned in [
                "innerHTML",
                "outerHTML =",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setAttribute(\"style\"",
                "localStorage.setItem",
            ] {
                assert!(!text.contains(banned), "{name} uses {banned}");
            }
        }
        if name.ends_with(".html") {
            assert!(
                !text.contains(" style=") && !text.contains("<style"),
                "{name}: inline style"
            );
            assert!(!text.contains("<script>"), "{name}: inline script");
            let handler = text.split(" on").skip(1).any(|rest| {
                let word: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !word.is_empty() && rest[word.len()..].starts_with('=')
            });
            assert!(!handler, "{name}: inline event handler");
        }
    }
    assert!(checked >= 5, "the page's modules are in web/");
}
