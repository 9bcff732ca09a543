//! The real `llmtap` binary's client commands against a real in-process llmtap with
//! recorded exchanges replayed through it: tables (on a pseudo-terminal, via
//! `script`) and JSON, paging, `show`, `tail`, `export` with resume, exit codes,
//! NO_COLOR. Also the regressions of issue 12 items 4 and 21 and of impossible dates.

use super::recorded::Recorded;
use super::util::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_llmtap");

fn api_url(recorded: &Recorded) -> String {
    format!("http://{}", recorded.running.api_addr)
}

/// Runs the binary with stdout piped (so JSON is the default).
fn run(recorded: &Recorded, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("LLMTAP_API_URL", api_url(recorded))
        .env_remove("NO_COLOR")
        .env_remove("LLMTAP_API_TOKEN")
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs the binary on a pseudo-terminal (`script`), as a person at a terminal would;
/// returns what the terminal showed and the exit code.
fn run_on_terminal(recorded: &Recorded, args: &[&str], no_color: bool) -> (String, i32) {
    // `--api` belongs to the subcommand: it goes after it.
    let mut line = format!("{BIN} {} --api {}", args[0], api_url(recorded));
    for a in &args[1..] {
        line.push(' ');
        line.push_str(&format!("'{}'", a.replace('\'', "'\\''")));
    }
    let mut command = Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .env("COLUMNS", "150")
        .env_remove("LLMTAP_API_URL")
        .stdin(Stdio::null());
    if no_color {
        command.env("NO_COLOR", "1");
    } else {
        command.env_remove("NO_COLOR");
    }
    let out = command.output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
        out.status.code().unwrap_or(-1),
    )
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_and_calls_print_tables_on_a_terminal_and_json_when_piped() {
    let recorded = Recorded::start("").await;
    let seeded = recorded.seed().await;

    let runs = json_of(&run(&recorded, &["runs"]));
    let mut listed = ids(&runs);
    listed.sort();
    let mut want: Vec<String> = recorded
        .running
        .store
        .list_invocations(
            &Default::default(),
            &llmtap::store::PageRequest {
                limit: 100,
                after: None,
                offset: 0,
                count_total: true,
            },
        )
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.id)
        .collect();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(runs["total"], 4);
    assert!(listed.contains(&seeded.tool_run));

    let calls = json_of(&run(&recorded, &["calls", "--agent", "planner"]));
    let mut planner = ids(&calls);
    planner.sort();
    let mut expected = seeded.tool_calls.clone();
    expected.push(seeded.refused.clone());
    expected.sort();
    assert_eq!(planner, expected);

    let (table, code) = run_on_terminal(&recorded, &["runs"], false);
    assert_eq!(code, 0, "{table}");
    let header = table.lines().next().unwrap();
    for column in [
        "ID",
        "WHEN",
        "AGENT",
        "MODEL",
        "TOKENS IN/OUT",
        "COST",
        "LATENCY",
        "TRIGGER",
        "STATUS",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(table.contains(&seeded.tool_run), "{table}");
    assert!(table.contains("planner") && table.contains("describer"));
    assert!(table.contains("showing 1–4 of 4 runs"), "{table}");
    assert!(
        table.contains("\x1b[32msuccess\x1b[0m"),
        "status coloured on a terminal"
    );
    assert!(table.contains("\x1b[35munauthorized\x1b[0m"));
    let visible = |l: &str| {
        let mut n = 0;
        let mut in_escape = false;
        for c in l.chars() {
            match (in_escape, c) {
                (_, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, c) if !c.is_control() => n += 1,
                _ => {}
            }
        }
        n
    };
    for l in table.lines() {
        assert!(visible(l) <= 150, "wider than COLUMNS=150: {l:?}");
    }
    // A narrow terminal shortens the table to fit.
    let narrow = Command::new("script")
        .args([
            "-qec",
            &format!("{BIN} calls --api {}", api_url(&recorded)),
            "/dev/null",
        ])
        .env("COLUMNS", "80")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let narrow = String::from_utf8_lossy(&narrow.stdout).replace("\r\n", "\n");
    let widest = narrow.lines().map(visible).max().unwrap();
    assert!(widest <= 100, "{narrow}");
    assert!(narrow.contains('…'), "long cells are cut: {narrow}");

    let (plain, code) = run_on_terminal(&recorded, &["runs"], true);
    assert_eq!(code, 0);
    assert!(
        !plain.contains('\x1b'),
        "NO_COLOR: no escape codes: {plain:?}"
    );
    assert!(plain.contains("success"));

    // Piped output is JSON, and never coloured.
    let piped = run(&recorded, &["calls"]);
    assert!(!String::from_utf8_lossy(&piped.stdout).contains('\x1b'));
    recorded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn next_walks_every_call_once_by_cursor() {
    let recorded = Recorded::start("").await;
    let seeded = recorded.seed().await;
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut args = vec!["calls", "--limit", "2"];
        if let Some(n) = &next {
            args.extend(["--next", n.as_str()]);
        }
        let page = json_of(&run(&recorded, &args));
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => break,
        }
    }
    let mut all = seeded.all_calls();
    all.sort();
    let mut walked = seen.clone();
    walked.sort();
    assert_eq!(walked, all, "every call exactly once");
    assert_eq!(seen.len(), 5);

    // On a terminal the footer names the next command, and it continues the count.
    let (first, _) = run_on_terminal(&recorded, &["calls", "--limit", "2"], true);
    assert!(first.contains("showing 1–2 of 5 calls"), "{first}");
    let token = first
        .lines()
        .find_map(|l| l.split("--next ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let (second, _) = run_on_terminal(
        &recorded,
        &["calls", "--limit", "2", "--next", &token],
        true,
    );
    assert!(second.contains("showing 3–4 of 5 calls"), "{second}");
    recorded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn show_prints_a_run_its_rounds_and_a_round_in_full() {
    let recorded = Recorded::start("").await;
    let seeded = recorded.seed().await;
    let (run_text, code) = run_on_terminal(&recorded, &["show", &seeded.tool_run], true);
    assert_eq!(code, 0, "{run_text}");
    assert!(run_text.contains(&format!("run {}", seeded.tool_run)));
    assert!(
        run_text.contains("r1") && run_text.contains("r2"),
        "{run_text}"
    );
    assert!(run_text.contains(&seeded.tool_calls[0]));
    assert!(run_text.contains("tool "), "tool calls joined: {run_text}");
    assert!(run_text.contains("result in r2"), "{run_text}");

    let round = recorded
        .running
        .store
        .get_call(&seeded.tool_calls[1])
        .unwrap()
        .unwrap();
    let (round_text, code) =
        run_on_terminal(&recorded, &["show", &seeded.tool_run, "--round", "2"], true);
    assert_eq!(code, 0, "{round_text}");
    let reply = round.response.as_ref().unwrap().text.clone().unwrap();
    let first_words: String = reply
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        round_text.contains(&first_words),
        "reply {first_words:?} in {round_text}"
    );
    assert!(
        round_text.contains("(result of"),
        "tool result message: {round_text}"
    );

    let json = json_of(&run(&recorded, &["show", &seeded.refused]));
    assert_eq!(json["id"], seeded.refused.as_str());
    assert_eq!(json["status"], "unauthorized");
    let (call_text, _) = run_on_terminal(&recorded, &["show", &seeded.refused], true);
    assert!(
        call_text.contains("refused API key"),
        "hint shown: {call_text}"
    );

    let missing = run(&recorded, &["show", "c_nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no call with id c_nope"));
    recorded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_sees_a_new_call_within_a_second() {
    let recorded = Recorded::start("").await;
    let mut child = Command::new(BIN)
        .args([
            "tail",
            "--json",
            "--type",
            "calls",
            "--api",
            &api_url(&recorded),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send((Instant::now(), line.unwrap_or_default())).is_err() {
                return;
            }
        }
    });
    // The stream is connected once the API has a subscriber; give the process a moment.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let sent = Instant::now();
    let got = recorded
        .replay(
            "llm__test_tools__test_tool_use_basic__0.json",
            &[("x-llmtap-agent", "tailed")],
        )
        .await;
    let (at, line) = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("tail printed nothing");
    let _ = child.kill();
    let _ = child.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"], "call");
    assert_eq!(event["id"], got.call_id().as_str());
    assert_eq!(event["agent"], "tailed");
    assert!(
        at.duration_since(sent) < Duration::from_secs(1),
        "seen after {:?}",
        at.duration_since(sent)
    );
    recorded.shutdown().await;
}

fn csv_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    csv::Reader::from_reader(text.as_bytes())
        .records()
        .map(|r| {
            r.unwrap_or_else(|e| panic!("{e}: {text}"))
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_writes_exactly_the_matching_rows_and_resumes_without_duplicates() {
    let recorded = Recorded::start("").await;
    let seeded = recorded.seed().await;
    let dir = TempDir::new("cli-export");
    let full = dir.path().join("full.csv");
    let out = run(
        &recorded,
        &[
            "export",
            "--format",
            "csv",
            "--out",
            full.to_str().unwrap(),
            "--agent",
            "planner",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "no progress bar when not on a terminal"
    );
    let rows = csv_rows(&full);
    let mut got: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    got.sort();
    let mut want = seeded.tool_calls.clone();
    want.push(seeded.refused.clone());
    want.sort();
    assert_eq!(got, want);
    assert!(!dir.path().join("full.csv.resume").exists());

    // JSON lines: one summary per line, every call.
    let jsonl = dir.path().join("all.jsonl");
    let out = run(
        &recorded,
        &[
            "export",
            "--format",
            "jsonl",
            "--out",
            jsonl.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    lines.sort();
    let mut all = seeded.all_calls();
    all.sort();
    assert_eq!(lines, all);

    // Interrupted after one page of two, with a torn row after the checkpoint; the
    // resume drops the torn bytes and writes each remaining row once.
    let part = dir.path().join("part.csv");
    let args = [
        "export",
        "--format",
        "csv",
        "--out",
        part.to_str().unwrap(),
        "--page-size",
        "2",
    ];
    let stopped = run(
        &recorded,
        &[&args[..], &["--stop-after-pages", "1"]].concat(),
    );
    assert_eq!(stopped.status.code(), Some(1));
    assert_eq!(csv_rows(&part).len(), 2);
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&part)
        .unwrap()
        .write_all(b"c_torn,row-that-was-half-writ")
        .unwrap();
    // A new call after the start is not part of this export (its time bound is fixed).
    recorded
        .replay("llm-gemini__test_gemini__test_prompt.json", &[])
        .await;
    let resumed = run(&recorded, &[&args[..], &["--resume"]].concat());
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let rows = csv_rows(&part);
    let mut ids: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids.len(), 5, "{ids:?}");
    ids.sort();
    assert_eq!(ids, all, "each call once");
    let header = std::fs::read_to_string(&part).unwrap();
    assert_eq!(header.matches("id,invocation_id").count(), 1);
    assert!(!dir.path().join("part.csv.resume").exists());
    recorded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exit_codes_say_ok_api_error_or_bad_usage() {
    let recorded = Recorded::start("").await;
    recorded.seed().await;
    for ok in [
        vec!["summary"],
        vec!["stats", "--group-by", "model"],
        vec!["ratelimits"],
        vec!["calls", "--since", "1h"],
    ] {
        let out = run(&recorded, &ok);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{ok:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap();
    }
    let stats = json_of(&run(&recorded, &["stats", "--group-by", "agent"]));
    let groups: Vec<&str> = stats["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["group"].as_str())
        .collect();
    assert!(groups.contains(&"planner") && groups.contains(&"describer"));
    let summary = json_of(&run(&recorded, &["summary", "--tz", "Europe/Berlin"]));
    assert_eq!(summary["total_calls"], 5);
    // An API error: exit 1 with the API's message.
    let out = run(&recorded, &["calls", "--from", "2026-02-31"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 400") && err.contains("not a date"),
        "{err}"
    );
    // Bad usage: exit 2, with a suggestion for a typo.
    for bad in [
        vec!["calls", "--limit", "0"],
        vec!["rnus"],
        vec!["calls", "--agnet", "x"],
        vec!["export"],
    ] {
        let out = run(&recorded, &bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    let typo = run(&recorded, &["rnus"]);
    assert!(String::from_utf8_lossy(&typo.stderr).contains("runs"));
    // Nothing listening: exit 1.
    let out = Command::new(BIN)
        .args(["summary", "--api", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    // Every command's help reads from one definition; completions generate.
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("ratelimits"));
    }
    recorded.shutdown().await;
}

// ------------------------------------------------------------- regressions

/// Issue 12 item 4: an agent name that is a formula is exported as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csv_cells_that_look_like_formulas_are_neutralised() {
    let recorded = Recorded::start("").await;
    let evil = "=HYPERLINK(\"http://evil\")";
    recorded
        .replay(
            "llm__test_tools__test_tool_use_basic__0.json",
            &[
                ("x-llmtap-agent", evil),
                ("x-llmtap-user-id", "@admin"),
                ("x-llmtap-task-id", "+1"),
            ],
        )
        .await;
    let got = send(
        recorded.running.api_addr,
        "GET",
        "/api/v1/calls.csv",
        &[],
        "",
    )
    .await;
    let mut reader = csv::Reader::from_reader(&got.body[..]);
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let row = reader.records().next().unwrap().unwrap();
    let cell = |name: &str| row[headers.iter().position(|h| h == name).unwrap()].to_string();
    assert_eq!(cell("agent"), format!("'{evil}"));
    assert_eq!(cell("user_id"), "'@admin");
    assert_eq!(cell("task_id"), "'+1");
    for column in [
        "cache_read_tokens",
        "cache_creation_tokens",
        "ttft_ms",
        "prompt_version",
    ] {
        assert!(
            headers.iter().any(|h| h == column),
            "{column} missing: {headers:?}"
        );
    }
    // The CLI's own CSV is guarded the same way.
    let dir = TempDir::new("cli-formula");
    let out_file = dir.path().join("x.csv");
    let out = run(
        &recorded,
        &[
            "export",
            "--format",
            "csv",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let rows = csv_rows(&out_file);
    assert!(rows[0].contains(&format!("'{evil}")), "{rows:?}");
    recorded.shutdown().await;
}

/// Issue 12 item 21: `tz=+02:00` as the README writes it (the `+` arrives as a space),
/// and named zones; impossible dates are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn summary_accepts_an_unencoded_offset_and_zone_names_and_dates_must_exist() {
    let recorded = Recorded::start("").await;
    let addr = recorded.running.api_addr;
    let got = send(addr, "GET", "/api/v1/summary?tz=+02:00", &[], "").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.json()["tz_offset_s"], 7200);
    let got = send(addr, "GET", "/api/v1/summary?tz=Asia/Kolkata", &[], "").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["tz_offset_s"], 19800);
    for bad in ["tz=%2B99:99", "tz=Mars/Olympus"] {
        let got = send(addr, "GET", &format!("/api/v1/summary?{bad}"), &[], "").await;
        assert_eq!(got.status, 400, "{bad}");
        assert_eq!(got.json()["error"]["parameter"], "tz");
    }
    for bad in [
        "from=2026-02-31",
        "to=2026-04-31T00:00:00Z",
        "from=2026-01-01T10:00:00%2B99:99",
    ] {
        let got = send(addr, "GET", &format!("/api/v1/calls?{bad}"), &[], "").await;
        assert_eq!(got.status, 400, "{bad}");
    }
    recorded.shutdown().await;
}

// ------------------------------------------------- issue 35: the printed forms

/// The escape codes of a terminal's output taken out: what a person reads.
fn visible_text(text: &str) -> String {
    let mut out = String::new();
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (_, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// The value of a `name: value` line, checking that a space follows the colon.
fn field_value(text: &str, name: &str) -> Option<String> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))?;
    assert!(rest.starts_with(' '), "no space after {name}: in {text}");
    Some(rest.trim().to_string())
}

/// Every `$` amount printed: below a cent it shows a significant digit (issue 35:
/// `$0.0000` hid a real cost).
fn assert_costs_significant(text: &str) {
    for amount in text.split('$').skip(1) {
        let number: String = amount
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let Ok(x) = number.parse::<f64>() else {
            continue;
        };
        assert!(
            number == "0.00" || x > 0.0,
            "a cost printed as ${number}, hiding its digits: {text}"
        );
    }
}

/// llmtap with a tool provider (`tools`, `kind = "http"`) on the replay mock beside
/// the LLM providers: a request naming a fixture gets its recorded answer (200), one
/// naming none the mock's 500.
async fn start_with_tools() -> Recorded {
    Recorded::start_with(|mock_url| provider_toml("tools", "http", mock_url)).await
}

/// A tool HTTP call of run `run`: a success, or (`fail`) the mock's 500.
async fn tool_call(recorded: &Recorded, run: &str, fail: bool) -> String {
    let mut headers = vec![("x-llmtap-invocation-id", run)];
    if !fail {
        headers.push((
            "x-test-fixture",
            "llm__test_tools__test_tool_use_basic__0.json",
        ));
    }
    let got = send(
        recorded.running.proxy_addr,
        "GET",
        "/tools/weather?city=paris",
        &headers,
        "",
    )
    .await;
    assert_eq!(got.status, if fail { 500 } else { 200 });
    let id = got.call_id();
    wait_call(&recorded.running, &id).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn show_prints_status_costs_tools_session_user_and_prompt_on_a_terminal_and_piped() {
    let recorded = start_with_tools().await;
    let seeded = recorded.seed().await;
    let ok_tool = tool_call(&recorded, &seeded.tool_run, false).await;
    let failed_tool = tool_call(&recorded, &seeded.tool_run, true).await;
    // The run's roll-up counts both tool calls before we read it.
    for _ in 0..200 {
        let run = invocation(&recorded.running, &seeded.tool_run).unwrap();
        if run.agent_loop.tool_calls >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // In colour, as a person sees it: the colour codes must not eat the padding.
    let (coloured, code) = run_on_terminal(&recorded, &["show", &seeded.tool_run], false);
    assert_eq!(code, 0, "{coloured}");
    assert!(coloured.contains('\x1b'), "coloured on a terminal");
    let shown = visible_text(&coloured);
    for (name, value) in [
        ("status", "success"),
        ("session", "sess-1"),
        ("user", "alice"),
        ("prompt", "plan@v2"),
        ("agent", "planner"),
    ] {
        assert_eq!(field_value(&shown, name).as_deref(), Some(value), "{shown}");
    }
    assert!(!shown.contains("status:success"), "{shown}");
    assert!(
        shown.contains("2 tool calls (1 failed)"),
        "tool calls counted with their failures: {shown}"
    );
    assert!(
        shown.contains("TOOL") && shown.contains("GET /weather"),
        "{shown}"
    );
    assert!(
        shown.contains(&ok_tool) && shown.contains(&failed_tool),
        "{shown}"
    );
    assert!(
        shown.contains("1 of 2 tool HTTP calls failed: tools failed (HTTP 500)"),
        "{shown}"
    );
    assert!(shown.contains('$'), "costs shown: {shown}");
    assert_costs_significant(&shown);
    let run_cost = json_of(&run(&recorded, &["show", &seeded.tool_run]))["cost_usd"]
        .as_f64()
        .unwrap();
    assert!(
        run_cost > 0.0 && run_cost < 0.01,
        "the seeded run costs under a cent ({run_cost}), the case issue 35 is about"
    );
    // Without colour the same text.
    let (plain, _) = run_on_terminal(&recorded, &["show", &seeded.tool_run], true);
    assert_eq!(visible_text(&plain), plain);
    assert_eq!(field_value(&plain, "status").as_deref(), Some("success"));

    // Piped: JSON with the same facts.
    let piped = json_of(&run(&recorded, &["show", &seeded.tool_run]));
    assert_eq!(piped["status"], "success");
    assert_eq!(piped["session_id"], "sess-1");
    assert_eq!(piped["user_id"], "alice");
    assert_eq!(piped["prompt"], "plan@v2");
    let http: Vec<&Value> = piped["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "http")
        .collect();
    assert_eq!(http.len(), 2, "{piped}");
    assert!(http
        .iter()
        .any(|t| t["status"] != "success" && t["http_status"] == 500));

    // A tool call by its id reads as a tool call: its request, no model or tokens.
    let (tool_text, _) = run_on_terminal(&recorded, &["show", &failed_tool], true);
    assert!(
        tool_text.contains(&format!("tool call {failed_tool}")),
        "{tool_text}"
    );
    assert_eq!(
        field_value(&tool_text, "request").as_deref(),
        Some("GET /weather?city=paris"),
        "{tool_text}"
    );
    assert!(!tool_text.contains("tokens:"), "{tool_text}");
    recorded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn show_round_prints_tool_arguments_as_json_attachments_and_cache_tokens() {
    let recorded = Recorded::start("").await;
    let seeded = recorded.seed().await;
    let cached = recorded
        .replay(
            "openllmetry__test_prompt_caching__test_anthropic_prompt_caching_legacy__1.json",
            &[("x-llmtap-agent", "cacher")],
        )
        .await
        .call_id();

    // Round 1 answered with a tool call whose arguments OpenAI sends as a JSON text.
    let (round, code) = run_on_terminal(
        &recorded,
        &["show", &seeded.tool_run, "--round", "1"],
        false,
    );
    assert_eq!(code, 0, "{round}");
    let round = visible_text(&round);
    assert!(round.contains("reply → tool multiply"), "{round}");
    assert!(
        !round.contains("\\\""),
        "arguments are JSON, not an escaped string: {round}"
    );
    let record = recorded
        .running
        .store
        .get_call(&seeded.tool_calls[0])
        .unwrap()
        .unwrap();
    let arguments = &record.response.as_ref().unwrap().tool_calls[0].arguments;
    let parsed: Value = serde_json::from_str(arguments.as_str().unwrap()).unwrap();
    for key in parsed.as_object().unwrap().keys() {
        assert!(round.contains(&format!("\"{key}\": ")), "{key} in {round}");
    }
    assert_eq!(field_value(&round, "status").as_deref(), Some("success"));

    // An image prompt: its attachment is listed.
    let (image, _) = run_on_terminal(&recorded, &["show", &seeded.image, "--round", "1"], true);
    assert!(image.contains("attachments (1)"), "{image}");
    assert!(image.contains("image/"), "{image}");

    // Prompt-cache tokens.
    let (cache, _) = run_on_terminal(&recorded, &["show", &cached, "--round", "1"], true);
    assert!(
        cache.contains("(cache read 1163, cache write 0)"),
        "{cache}"
    );

    // Piped: the record itself, arguments as the provider sent them.
    let piped = json_of(&run(&recorded, &["show", &cached, "--round", "1"]));
    assert_eq!(piped["usage"]["cache_read_tokens"], 1163);
    recorded.shutdown().await;
}

/// Reads a child's stdout lines on a thread; `next` waits for a line that matches.
struct Lines(std::sync::mpsc::Receiver<String>, Vec<String>);

impl Lines {
    fn of(stdout: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Lines(rx, Vec::new())
    }

    /// Every line until one contains `needle` (within 10 s), kept in `self.1`.
    fn until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    self.1.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw {:#?}", self.1),
            }
        }
    }

    /// What else arrives within `wait`.
    fn drain(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut more = Vec::new();
        while let Ok(line) = self
            .0
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            more.push(line);
        }
        more
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_names_the_run_on_every_call_and_prints_a_run_when_its_state_changes() {
    let recorded = start_with_tools().await;
    let api = api_url(&recorded);
    // On a terminal (script), every record.
    let mut terminal = Command::new("script");
    terminal
        .args(["-qec", &format!("{BIN} tail --api {api}"), "/dev/null"])
        .env("NO_COLOR", "1")
        .env("COLUMNS", "200")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut terminal = KillOnDrop(terminal.spawn().unwrap());
    let mut on_terminal = Lines::of(terminal.0.stdout.take().unwrap());
    // Piped: runs only, as JSON lines.
    let mut piped = KillOnDrop(
        Command::new(BIN)
            .args(["tail", "--type", "runs", "--api", &api])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut runs = Lines::of(piped.0.stdout.take().unwrap());
    // And runs on a terminal.
    let mut runs_terminal = KillOnDrop(
        Command::new("script")
            .args([
                "-qec",
                &format!("{BIN} tail --type runs --api {api}"),
                "/dev/null",
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut runs_on_terminal = Lines::of(runs_terminal.0.stdout.take().unwrap());
    on_terminal.until("waiting for new records");
    runs_on_terminal.until("waiting for new records");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let run_id = "run-tail";
    let headers = [
        ("x-llmtap-invocation-id", run_id),
        ("x-llmtap-agent", "tailer"),
    ];
    let first = recorded
        .replay("llm__test_tools__test_tool_use_basic__0.json", &headers)
        .await
        .call_id();
    let tool = tool_call(&recorded, run_id, false).await;
    let second = recorded
        .replay("llm__test_tools__test_tool_use_basic__1.json", &headers)
        .await
        .call_id();

    let line = on_terminal.until(&first);
    assert!(line.contains(&format!("run {run_id} r1")), "{line}");
    let line = on_terminal.until(&tool);
    assert!(
        line.contains(&format!("run {run_id}")) && line.contains("tool tools"),
        "a tool call shows as one: {line}"
    );
    assert!(line.contains("HTTP 200"), "{line}");
    let line = on_terminal.until(&second);
    assert!(line.contains(&format!("run {run_id} r2")), "{line}");

    // The run: running after round 1 (it asked for a tool), success after round 2,
    // and nothing more for the calls in between.
    let running = runs.until("running");
    let running: Value = serde_json::from_str(&running).unwrap();
    assert_eq!(running["event"], "invocation");
    assert_eq!(running["id"], run_id);
    let done = runs.until("\"state\":\"success\"");
    let done: Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done["id"], run_id);
    assert_eq!(done["rounds"], 2);
    let extra = runs.drain(Duration::from_millis(1500));
    assert!(
        extra.is_empty(),
        "a run printed again without a change: {extra:?}"
    );
    assert!(
        runs.1.iter().all(|l| l.contains("\"invocation\"")),
        "runs only: {:?}",
        runs.1
    );
    assert_eq!(runs.1.len(), 2, "{:?}", runs.1);

    let line = runs_on_terminal.until("running");
    assert!(line.contains(&format!("run {run_id}")), "{line}");
    let line = runs_on_terminal.until("success");
    assert!(line.contains("2 rounds"), "{line}");
    assert!(
        runs_on_terminal
            .drain(Duration::from_millis(500))
            .is_empty(),
        "{:?}",
        runs_on_terminal.1
    );
    drop((terminal, piped, runs_terminal));
    recorded.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_writes_the_api_csv_columns_and_stats_has_no_group_of_tool_calls() {
    let recorded = start_with_tools().await;
    let seeded = recorded.seed().await;
    // Tool calls that name no agent.
    tool_call(&recorded, &seeded.tool_run, false).await;
    tool_call(&recorded, &seeded.tool_run, true).await;

    let dir = TempDir::new("cli-columns");
    for (runs, path) in [
        (false, "/api/v1/calls.csv"),
        (true, "/api/v1/invocations.csv"),
    ] {
        let file = dir.path().join(format!("{runs}.csv"));
        let mut args = vec!["export", "--format", "csv", "--out", file.to_str().unwrap()];
        if runs {
            args.push("--runs");
        }
        let out = run(&recorded, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli = std::fs::read_to_string(&file).unwrap();
        let api = send(recorded.running.api_addr, "GET", path, &[], "").await;
        let api = String::from_utf8(api.body.to_vec()).unwrap();
        let header = |text: &str| text.lines().next().unwrap().trim_end().to_string();
        assert_eq!(header(&cli), header(&api), "{path}");
        for column in ["prompt_version", "task_id"] {
            assert!(header(&cli).contains(column), "{column}: {}", header(&cli));
        }
        if !runs {
            assert!(header(&cli).contains("cache_read_tokens"));
            // The same cells as the API's (the API also fills `input` for admins).
            let rows = csv_rows(&file);
            let names: Vec<String> = header(&cli).split(',').map(str::to_string).collect();
            let version = names.iter().position(|n| n == "prompt_version").unwrap();
            let first_round = rows.iter().find(|r| r[0] == seeded.tool_calls[0]).unwrap();
            assert_eq!(first_round[version], "v2");
        }
    }

    // JSON lines are the prompt logs: each LLM call's exchange, the tool calls not.
    let jsonl = dir.path().join("logs.jsonl");
    let out = run(
        &recorded,
        &[
            "export",
            "--format",
            "jsonl",
            "--out",
            jsonl.to_str().unwrap(),
            "--page-size",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut logged: Vec<String> = logs
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    logged.sort();
    let mut all = seeded.all_calls();
    all.sort();
    assert_eq!(logged, all, "every LLM call once, no tool call");
    let round_2 = logs
        .iter()
        .find(|l| l["id"] == seeded.tool_calls[1].as_str())
        .unwrap();
    assert_eq!(round_2["run_id"], seeded.tool_run.as_str());
    assert_eq!(round_2["turn_index"], 2);
    assert_eq!(round_2["tools_offered"], true);
    assert_eq!(round_2["tool_names"], serde_json::json!(["multiply"]));
    assert!(
        round_2["prompt"].as_str().unwrap().contains("user: "),
        "{round_2}"
    );
    assert!(round_2["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["role"] == "tool"));
    let occurred =
        llmtap::timefmt::parse_rfc3339_us(round_2["occurred_at"].as_str().unwrap()).unwrap();
    let stored = llmtap::timefmt::parse_rfc3339_us(round_2["stored_at"].as_str().unwrap()).unwrap();
    assert!(stored >= occurred, "stored after it happened: {round_2}");

    let stats = json_of(&run(&recorded, &["stats", "--group-by", "agent"]));
    let items = stats["items"].as_array().unwrap();
    assert!(
        items.iter().all(|i| !i["group"].is_null()),
        "no group of agentless tool calls: {stats}"
    );
    assert_eq!(stats["tool_calls_without_group"], 2, "{stats}");
    let (table, code) = run_on_terminal(&recorded, &["stats", "--group-by", "agent"], true);
    assert_eq!(code, 0, "{table}");
    assert!(
        !table.lines().any(|l| l.starts_with("- ")),
        "a '-' group: {table}"
    );
    assert!(table.contains("2 tool calls name no agent"), "{table}");
    recorded.shutdown().await;
}

/// A prompt a spreadsheet would run as a formula, with a comma, quotes and a line break.
const FORMULA_PROMPT: &str = "=SUM(1,2) says \"hi\",\nthen stops";

/// Issue 35: `export --format csv` writes the API's own CSV, a page at a time, so its
/// rows are the cells of `calls.csv` and `invocations.csv` for the same token: the
/// prompt text in `input` (neutralised) for an admin, none for a viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_csv_has_the_api_csv_cells_with_input_for_admins_and_none_for_viewers() {
    let token = |name: &str, raw: &str, role: &str| {
        format!(
            "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n",
            llmtap::config::token_sha256_hex(raw)
        )
    };
    let recorded = Recorded::start(
        &(token("root", "admin-token-35", "admin")
            + &token("watcher", "viewer-token-35", "viewer")),
    )
    .await;
    recorded.seed().await;
    let name = "llm__test_tools__test_tool_use_basic__0.json";
    let fx = fixture(name);
    let path = format!("/openai{}", fixture_url(&fx).path_and_query().unwrap());
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "messages": [{"role": "user", "content": FORMULA_PROMPT}],
    })
    .to_string();
    let got = send(
        recorded.running.proxy_addr,
        "POST",
        &path,
        &[
            ("content-type", "application/json"),
            ("x-test-fixture", name),
            ("x-llmtap-invocation-id", "run-formula"),
        ],
        &body,
    )
    .await;
    assert_eq!(got.status, 200);
    wait_call(&recorded.running, &got.call_id()).await;
    wait_invocation(&recorded.running, "run-formula", 1).await;

    let parse = |bytes: &[u8]| -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes)
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect()
    };
    let dir = TempDir::new("cli-csv-input");
    for (raw, admin) in [("admin-token-35", true), ("viewer-token-35", false)] {
        for (runs, api_path) in [
            (false, "/api/v1/calls.csv"),
            (true, "/api/v1/invocations.csv"),
        ] {
            let file = dir.path().join(format!("{admin}-{runs}.csv"));
            let mut args = vec![
                "export",
                "--format",
                "csv",
                "--out",
                file.to_str().unwrap(),
                // Several pages: the rows of every page, the header once.
                "--page-size",
                "2",
            ];
            if runs {
                args.push("--runs");
            }
            let out = Command::new(BIN)
                .args(&args)
                .env("LLMTAP_API_URL", api_url(&recorded))
                .env("LLMTAP_API_TOKEN", raw)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let cli_bytes = std::fs::read(&file).unwrap();
            let api = send(
                recorded.running.api_addr,
                "GET",
                api_path,
                &[("authorization", &format!("Bearer {raw}"))],
                "",
            )
            .await;
            assert_eq!(api.status, 200, "{api_path}");
            let cli = parse(&cli_bytes);
            let want = parse(&api.body);
            assert!(want.len() > 3, "{api_path}: {want:?}");
            assert_eq!(cli, want, "{raw} {api_path}: the CLI's rows are the API's");
            let input = cli[0].iter().position(|h| h == "input").unwrap();
            let inputs: Vec<&str> = cli[1..].iter().map(|r| r[input].as_str()).collect();
            let text = String::from_utf8_lossy(&cli_bytes);
            if admin {
                assert!(
                    inputs.contains(&format!("'{FORMULA_PROMPT}").as_str()),
                    "{api_path}: the prompt, neutralised: {inputs:?}"
                );
                if !runs {
                    assert!(inputs.contains(&"What is 1231 * 2331?"), "{inputs:?}");
                }
            } else {
                assert!(inputs.iter().all(|i| i.is_empty()), "{inputs:?}");
                assert!(!text.contains("SUM(") && !text.contains("1231 * 2331"));
            }
        }
    }
    recorded.shutdown().await;
}

/// `llmtap sessions` lists sessions with the API's filters (JSON when piped, a table
/// on a terminal), refuses the filters sessions do not take, and `sessions ID` prints
/// the session as a conversation: the run with its status and cost, the user turn,
/// the tool call the model asked for with its result, and the reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_lists_by_filters_and_shows_a_session_as_a_conversation() {
    let recorded = Recorded::start("").await;
    let seeded = recorded.seed().await;
    let all = json_of(&run(&recorded, &["sessions"]));
    let all_ids = ids(&all);
    assert!(all_ids.contains(&"sess-1".to_string()), "{all}");
    let planner = json_of(&run(&recorded, &["sessions", "--agent", "planner"]));
    let planner_ids = ids(&planner);
    assert!(planner_ids.contains(&"sess-1".to_string()), "{planner}");
    for item in planner["items"].as_array().unwrap() {
        assert_eq!(item["agent"], "planner", "{planner}");
    }
    let describer = json_of(&run(&recorded, &["sessions", "--agent", "describer"]));
    assert!(
        !ids(&describer).contains(&"sess-1".to_string()),
        "{describer}"
    );
    assert_eq!(
        ids(&describer).len() + planner_ids.len(),
        all_ids.len(),
        "every session is the planner's or the describer's: {all}"
    );
    // A model no session used, and a day before any: nothing.
    let none = json_of(&run(&recorded, &["sessions", "--model", "no-such-model"]));
    assert_eq!(none["items"], serde_json::json!([]));
    let old = json_of(&run(&recorded, &["sessions", "--to", "2020-01-01"]));
    assert_eq!(old["items"], serde_json::json!([]));
    // Paging: one per page, walked by the printed token, sees every session once.
    let first = json_of(&run(&recorded, &["sessions", "--limit", "1"]));
    assert_eq!(ids(&first).len(), 1);
    // A filter sessions do not take is the API's 400: exit 1, the reason on stderr.
    let refused = run(&recorded, &["sessions", "--status", "failed"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("status"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // The detail, piped: the API's session with its conversation.
    let detail = json_of(&run(&recorded, &["sessions", "sess-1"]));
    assert_eq!(detail["id"], "sess-1");
    let kinds: Vec<&str> = detail["conversation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"user"), "{detail}");
    assert!(
        kinds.contains(&"tool_call") && kinds.contains(&"reply"),
        "{kinds:?}"
    );
    // On a terminal: the list as a table, the session as a conversation.
    let (table, code) = run_on_terminal(&recorded, &["sessions", "--agent", "planner"], true);
    assert_eq!(code, 0, "{table}");
    let table = visible_text(&table);
    assert!(
        table.contains("MODELS") && table.contains("sess-1"),
        "{table}"
    );
    let (shown, code) = run_on_terminal(&recorded, &["sessions", "sess-1"], true);
    assert_eq!(code, 0, "{shown}");
    let shown = visible_text(&shown);
    assert!(shown.contains("session sess-1"), "{shown}");
    assert!(
        shown.contains(&format!("run {}  success  $", seeded.tool_run)),
        "{shown}"
    );
    let lines: Vec<&str> = shown.lines().collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}: {shown}"))
    };
    let (user, asked, reply) = (at("r1 user: "), at("r1 tool call "), at("r2 reply: "));
    assert!(user < asked && asked < reply, "{shown}");
    assert!(
        lines[asked].contains(" → "),
        "the tool call with its result: {shown}"
    );
    let (missing, code) = run_on_terminal(&recorded, &["sessions", "no-such-session"], true);
    assert_eq!(code, 1, "{missing}");
    assert!(missing.contains("no session no-such-session"), "{missing}");
}
