//! The client commands: each reads the read API and prints a table (terminal) or JSON.

use super::client::{Client, ClientError, Query};
use super::output::{
    self, ago, col, field, ms, status_col, table, text, usd, Column, Paint, Style,
};
use super::{
    ExportArgs, ExportFormat, ListArgs, RatelimitArgs, SessionsArgs, ShowArgs, StatsArgs,
    SummaryArgs, TailArgs, TailKind,
};
use anyhow::Context;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

fn now_us() -> u64 {
    llmtap::timefmt::now_unix_us()
}

fn tokens(item: &Value) -> String {
    format!(
        "{}/{}",
        text(&item["input_tokens"]),
        text(&item["output_tokens"])
    )
}

const LIST_COLUMNS: &[Column] = &[
    col("ID", true, false),
    col("WHEN", false, false),
    col("AGENT", true, false),
    col("MODEL", true, false),
    col("TOKENS IN/OUT", false, true),
    col("COST", false, true),
    col("LATENCY", false, true),
    col("TRIGGER", true, false),
    status_col("STATUS"),
];

/// The paging token `--next` takes: how many rows came before, and the API's cursor.
fn next_token(shown_before: u64, cursor: &str) -> String {
    format!("{shown_before}.{cursor}")
}

fn parse_next(token: &str) -> (u64, String) {
    match token.split_once('.') {
        Some((n, c)) if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
            (n.parse().unwrap_or(0), c.to_string())
        }
        _ => (0, token.to_string()),
    }
}

/// A list command's query: its filters, the page size and the `--next` cursor;
/// with the count of items shown before this page (for the footer).
fn page_query(args: &ListArgs) -> (Query, u64) {
    let mut query = Query::default();
    query.filters(&args.filter, now_us());
    query.push("limit", args.limit.to_string());
    let (before, cursor) = args
        .next
        .as_deref()
        .map(parse_next)
        .unwrap_or((0, String::new()));
    if !cursor.is_empty() {
        query.push("cursor", cursor);
    }
    (query, before)
}

/// `llmtap runs` / `llmtap calls`.
pub fn list(args: &ListArgs, runs: bool) -> anyhow::Result<()> {
    let style = Style::detect(args.api.json);
    let client = Client::new(&args.api)?;
    let (query, before) = page_query(args);
    let path = if runs {
        "/api/v1/invocations"
    } else {
        "/api/v1/calls"
    };
    let page = client.get_json(path, &query)?;
    if style.json {
        output::emit_json(&page);
        return Ok(());
    }
    let items = page["items"].as_array().cloned().unwrap_or_default();
    let now = now_us();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                text(&i["id"]),
                ago(&i["started_at"], now),
                text(&i["agent"]),
                text(&i["model"]),
                tokens(i),
                usd(&i["cost_usd"]),
                ms(&i["latency_ms"]),
                text(&i["trigger"]),
                text(&i["status"]),
            ]
        })
        .collect();
    let what = if runs { "runs" } else { "calls" };
    let mut out = table(&style, LIST_COLUMNS, &rows, &format!("no {what} match"));
    out.push_str(&page_footer(&style, &page, before, items.len(), what));
    output::emit(&out);
    Ok(())
}

/// A list page's footer: which rows of how many, and the `--next` token of the next page.
fn page_footer(style: &Style, page: &Value, before: u64, shown: usize, what: &str) -> String {
    let mut out = String::new();
    let total = page["total"].as_u64().unwrap_or(0);
    let bound = if page["total_is_lower_bound"] == true {
        "more than "
    } else {
        ""
    };
    if shown > 0 {
        out.push_str(&style.dim(&format!(
            "showing {}–{} of {bound}{total} {what}\n",
            before + 1,
            before + shown as u64
        )));
    }
    if let Some(c) = page["next_cursor"].as_str() {
        out.push_str(&style.dim(&format!(
            "next page: llmtap {what} --next {} (with the same filters)\n",
            next_token(before + shown as u64, c)
        )));
    }
    out
}

const SESSION_COLUMNS: &[Column] = &[
    col("ID", true, false),
    col("FIRST", false, false),
    col("LAST", false, false),
    col("AGENT", true, false),
    col("MODELS", true, false),
    col("CALLS", false, true),
    col("TOKENS IN/OUT", false, true),
    col("COST", false, true),
];

/// `llmtap sessions`, or `llmtap sessions ID`: one session as a conversation.
pub fn sessions(args: &SessionsArgs) -> anyhow::Result<()> {
    let list = &args.list;
    let style = Style::detect(list.api.json);
    let client = Client::new(&list.api)?;
    if let Some(id) = &args.id {
        return session(&style, &client, id);
    }
    let (query, before) = page_query(list);
    let page = client.get_json("/api/v1/sessions", &query)?;
    if style.json {
        output::emit_json(&page);
        return Ok(());
    }
    let now = now_us();
    let shown = page["items"].as_array().map_or(0, Vec::len);
    let mut out = items_table(
        &style,
        &page,
        SESSION_COLUMNS,
        |i| {
            let models: Vec<String> = i["models"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![
                text(&i["id"]),
                ago(&i["first_at"], now),
                ago(&i["last_at"], now),
                text(&i["agent"]),
                if models.is_empty() {
                    "-".to_string()
                } else {
                    models.join(", ")
                },
                text(&i["calls"]),
                tokens(i),
                usd(&i["cost_usd"]),
            ]
        },
        "no sessions match",
    );
    out.push_str(&page_footer(&style, &page, before, shown, "sessions"));
    output::emit(&out);
    Ok(())
}

/// One session: its totals, then each run in order with its status and cost, and the
/// run's conversation (`conversation=true`: user turn, replies, tool calls with their
/// results, captured tool calls, failures), each entry with its round.
fn session(style: &Style, client: &Client, id: &str) -> anyhow::Result<()> {
    let mut query = Query::default();
    query.push("conversation", "true");
    let path = format!("/api/v1/sessions/{}", encode_segment(id));
    let detail = match client.get_json(&path, &query) {
        Err(e) if not_found(&e) => anyhow::bail!("no session {id}"),
        other => other?,
    };
    if style.json {
        output::emit_json(&detail);
        return Ok(());
    }
    // The session's fields sit at the top level, beside its timeline.
    let s = &detail;
    let mut out = String::new();
    out.push_str(&style.bold(&format!("session {}\n", text(&s["id"]))));
    field(style, &mut out, "agent", text(&s["agent"]));
    field(
        style,
        &mut out,
        "active",
        format!("{} – {}", text(&s["first_at"]), text(&s["last_at"])),
    );
    field(style, &mut out, "calls", text(&s["calls"]));
    field(style, &mut out, "tokens in/out", tokens(s));
    field(style, &mut out, "cost", usd(&s["cost_usd"]));
    let timeline = detail["timeline"].as_array().cloned().unwrap_or_default();
    let turns = detail["conversation"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // Runs in the order their first entry appears.
    let mut runs: Vec<String> = Vec::new();
    for e in turns.iter().chain(&timeline) {
        let run = text(&e["invocation_id"]);
        if !runs.contains(&run) {
            runs.push(run);
        }
    }
    for run in &runs {
        let entries: Vec<&Value> = timeline
            .iter()
            .filter(|e| text(&e["invocation_id"]) == *run)
            .collect();
        let cost: f64 = entries.iter().filter_map(|e| e["cost_usd"].as_f64()).sum();
        let priced = entries.iter().any(|e| e["cost_usd"].is_number());
        // How the run ended: its latest-started LLM call's status.
        let status = entries
            .iter()
            .filter(|e| e["kind"] == "llm")
            .max_by(|a, b| text(&a["started_at"]).cmp(&text(&b["started_at"])))
            .map_or_else(|| "-".to_string(), |e| text(&e["status"]));
        out.push('\n');
        out.push_str(&style.bold(&format!("run {run}")));
        out.push_str(&format!(
            "  {}  {}\n",
            style.status(&status),
            if priced {
                usd(&serde_json::json!(cost))
            } else {
                "-".to_string()
            }
        ));
        for t in turns.iter().filter(|t| text(&t["invocation_id"]) == *run) {
            out.push_str(&turn_line(style, t));
        }
    }
    if runs.is_empty() {
        out.push_str(&style.dim("no calls\n"));
    }
    output::emit(&out);
    Ok(())
}

/// One conversation entry: `r2 reply: ...`, `r1 tool_call search {"q":"x"} → result`.
fn turn_line(style: &Style, t: &Value) -> String {
    let kind = t["kind"].as_str().unwrap_or("");
    let label = match kind {
        "user" => "user",
        "reply" => "reply",
        "tool_call" => "tool call",
        "tool" => "tool",
        "failure" => "failed",
        other => other,
    };
    let mut line = format!("  r{} {}", text(&t["round"]), style.bold(label));
    if let Some(name) = t["name"].as_str() {
        line.push(' ');
        line.push_str(name);
    }
    if !t["arguments"].is_null() {
        line.push(' ');
        line.push_str(&clip(&arguments_json(&t["arguments"])));
    }
    match kind {
        "tool" | "failure" => {
            let status = t["status"].as_str().unwrap_or("-");
            line.push_str(&format!(" {}", style.status(status)));
            if let Some(code) = t["http_status"].as_u64() {
                line.push_str(&format!(" ({code})"));
            }
        }
        _ => {}
    }
    if let Some(body) = t["text"].as_str() {
        let sep = if kind == "tool_call" { " → " } else { ": " };
        line.push_str(sep);
        line.push_str(&clip(body));
    }
    if let Some(hint) = t["hint"].as_str() {
        line.push_str(&style.dim(&format!("  {}", clip(hint))));
    }
    line.push('\n');
    line
}

fn not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 404, .. })
}

/// `llmtap show ID [--round N]`.
pub fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let style = Style::detect(args.api.json);
    let client = Client::new(&args.api)?;
    let none = Query::default();
    let id = encode_segment(&args.id);
    let invocation = match client.get_json(&format!("/api/v1/invocations/{id}"), &none) {
        Ok(v) => Some(v),
        Err(e) if not_found(&e) => None,
        Err(e) => return Err(e.into()),
    };
    let (run, call) = match invocation {
        Some(run) => (Some(run), None),
        None => (
            None,
            Some(client.get_json(&format!("/api/v1/calls/{id}"), &none)?),
        ),
    };
    if let Some(n) = args.round {
        let call_id = match (&run, &call) {
            (Some(run), _) => run["rounds"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["round"] == n))
                .and_then(|r| r["call_id"].as_str())
                .map(str::to_string)
                .with_context(|| format!("run {} has no round {n}", args.id))?,
            (None, Some(c)) => c["id"].as_str().unwrap_or_default().to_string(),
            _ => unreachable!("one of them is set"),
        };
        let record = client.get_json(
            &format!("/api/v1/calls/{}", encode_segment(&call_id)),
            &none,
        )?;
        if style.json {
            output::emit_json(&record);
        } else {
            output::emit(&round_text(&style, &record, args.full));
        }
        return Ok(());
    }
    match (run, call) {
        (Some(run), _) if style.json => output::emit_json(&run),
        (Some(run), _) => output::emit(&run_text(&style, &run)),
        (None, Some(call)) if style.json => output::emit_json(&call),
        (None, Some(call)) => output::emit(&call_text(&style, &call)),
        _ => unreachable!("one of them is set"),
    }
    Ok(())
}

fn encode_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `value`, or nothing when it is null or empty: optional facts are printed only
/// when the record has them.
fn present(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        v => Some(text(v)),
    }
}

/// Input/output tokens, and the prompt-cache tokens when there are any.
fn tokens_with_cache(input: &Value, output: &Value, read: &Value, written: &Value) -> String {
    let mut out = format!("{}/{}", text(input), text(output));
    let read = read.as_u64().unwrap_or(0);
    let written = written.as_u64().unwrap_or(0);
    if read > 0 || written > 0 {
        out.push_str(&format!(" (cache read {read}, cache write {written})"));
    }
    out
}

/// Who and what a run or call belongs to: session, user, prompt (always, `-` when
/// absent: a reader looks for them), tenant and task when set.
fn belongs_to(style: &Style, out: &mut String, record: &Value, prompt: &Value) {
    field(style, out, "session", text(&record["session_id"]));
    field(style, out, "user", text(&record["user_id"]));
    field(style, out, "prompt", text(prompt));
    if let Some(t) = present(&record["tenant"]) {
        field(style, out, "tenant", t);
    }
    if let Some(t) = present(&record["task_id"]) {
        field(style, out, "task", t);
    }
}

fn run_text(style: &Style, run: &Value) -> String {
    let mut out = String::new();
    out.push_str(&style.bold(&format!("run {}", text(&run["id"]))));
    out.push('\n');
    field(
        style,
        &mut out,
        "status",
        style.status(&text(&run["status"])),
    );
    if let Some(outcome) = run["outcome"]["text"].as_str() {
        field(style, &mut out, "outcome", outcome);
    }
    let timeline = run["timeline"].as_array().cloned().unwrap_or_default();
    let tool_http: Vec<&Value> = timeline.iter().filter(|t| t["kind"] == "http").collect();
    let tool_http_failed = tool_http
        .iter()
        .filter(|t| t["status"] != "success")
        .count();
    let failed = if tool_http_failed > 0 {
        format!(" ({tool_http_failed} failed)")
    } else {
        String::new()
    };
    field(
        style,
        &mut out,
        "calls",
        format!(
            "{} rounds, {} LLM calls, {} tool calls{failed}",
            text(&run["round_count"]),
            text(&run["llm_calls"]),
            text(&run["tool_calls"])
        ),
    );
    field(style, &mut out, "agent", text(&run["agent"]));
    field(style, &mut out, "trigger", text(&run["trigger"]));
    belongs_to(style, &mut out, run, &run["prompt"]);
    field(style, &mut out, "started", text(&run["started_at"]));
    field(style, &mut out, "latency", ms(&run["latency_ms"]));
    let usage = &run["usage"];
    field(
        style,
        &mut out,
        "tokens",
        tokens_with_cache(
            &run["input_tokens"],
            &run["output_tokens"],
            &usage["cache_read_tokens"],
            &usage["cache_creation_tokens"],
        ),
    );
    field(style, &mut out, "cost", usd(&run["cost_usd"]));
    if let Some(models) = run["models"].as_array() {
        let m: Vec<String> = models.iter().map(text).collect();
        field(style, &mut out, "models", m.join(", "));
    }
    out.push('\n');
    let rounds = run["rounds"].as_array().cloned().unwrap_or_default();
    let columns = [
        col("ROUND", false, true),
        col("CALL", true, false),
        col("MODEL", true, false),
        col("TOKENS IN/OUT", false, true),
        col("COST", false, true),
        col("LATENCY", false, true),
        col("STOP", true, false),
        col("ATTEMPTS", false, true),
        status_col("STATUS"),
    ];
    let rows: Vec<Vec<String>> = rounds
        .iter()
        .map(|r| {
            vec![
                format!("r{}", text(&r["round"])),
                text(&r["call_id"]),
                text(&r["model"]),
                tokens(r),
                usd(&r["cost_usd"]),
                ms(&r["latency_ms"]),
                text(&r["stop_reason"]),
                r["attempts"].as_array().map_or(1, Vec::len).to_string(),
                text(&r["status"]),
            ]
        })
        .collect();
    out.push_str(&table(style, &columns, &rows, "no LLM rounds"));
    for r in &rounds {
        let attempts = r["attempts"].as_array().cloned().unwrap_or_default();
        if attempts.len() > 1 {
            for a in &attempts {
                let backoff = match &a["backoff_ms"] {
                    Value::Null => String::new(),
                    d => format!(" after {} backoff", ms(d)),
                };
                out.push_str(&format!(
                    "  r{} attempt {}{backoff}: {} (HTTP {}) {}\n",
                    text(&r["round"]),
                    text(&a["attempt"]),
                    style.status(&text(&a["status"])),
                    text(&a["http_status"]),
                    text(&a["call_id"]),
                ));
            }
        }
        for tc in r["tool_calls"].as_array().into_iter().flatten() {
            let result = match (&tc["result_round"], &tc["duration_ms"]) {
                (Value::Null, _) => "no result".to_string(),
                (round, d) => format!("result in r{} after {}", text(round), ms(d)),
            };
            out.push_str(&format!(
                "  r{} tool {} ({}): {result}\n",
                text(&r["round"]),
                text(&tc["name"]),
                text(&tc["id"]),
            ));
        }
        if let Some(h) = r["hint"].as_str() {
            out.push_str(&format!(
                "  r{} {}\n",
                text(&r["round"]),
                style.paint("31", h)
            ));
        }
    }
    out.push_str(&tool_http_text(style, &tool_http));
    out.push_str(&mcp_steps_text(style, run));
    out.push_str(&style.dim(&format!(
        "a round in full: llmtap show {} --round N\n",
        text(&run["id"])
    )));
    out
}

/// The run's tool HTTP calls (an agent's calls to a `kind = "http"` provider), in
/// order, with the round they followed; a failed one says how it failed.
fn tool_http_text(style: &Style, calls: &[&Value]) -> String {
    if calls.is_empty() {
        return String::new();
    }
    let columns = [
        col("AFTER", false, true),
        col("TOOL", true, false),
        col("REQUEST", true, false),
        col("CALL", true, false),
        col("DURATION", false, true),
        col("HTTP", false, true),
        status_col("STATUS"),
    ];
    let rows: Vec<Vec<String>> = calls
        .iter()
        .map(|t| {
            vec![
                format!("r{}", text(&t["after_round"])),
                text(&t["provider"]),
                format!("{} {}", text(&t["method"]), text(&t["path"])),
                text(&t["call_id"]),
                ms(&t["duration_ms"]),
                text(&t["http_status"]),
                text(&t["status"]),
            ]
        })
        .collect();
    let mut out = String::from("\n");
    out.push_str(&table(style, &columns, &rows, "no tool HTTP calls"));
    let failed: Vec<&&Value> = calls.iter().filter(|t| t["status"] != "success").collect();
    if !failed.is_empty() {
        out.push_str(&style.paint(
            "31",
            &format!(
                "  {} of {} tool HTTP calls failed: {}\n",
                failed.len(),
                calls.len(),
                failed
                    .iter()
                    .map(|t| format!(
                        "{} {} (HTTP {})",
                        text(&t["provider"]),
                        text(&t["status"]),
                        text(&t["http_status"])
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    out
}

/// The run's MCP requests (not notifications or event streams), in order, with the
/// round they followed; arguments and results when the token may see them.
fn mcp_steps_text(style: &Style, run: &Value) -> String {
    let steps: Vec<&Value> = run["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["kind"] == "mcp")
        .filter(|t| {
            t["mcp"]["method"]
                .as_str()
                .is_some_and(|m| !m.starts_with("notifications/"))
        })
        .collect();
    if steps.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n");
    let columns = [
        col("AFTER", false, true),
        col("MCP", true, false),
        col("SERVER", true, false),
        col("DURATION", false, true),
        status_col("STATUS"),
    ];
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|t| {
            let m = &t["mcp"];
            let what = match (&m["tool"], &m["target"]) {
                (Value::String(tool), _) => format!("{} {tool}", text(&m["method"])),
                (_, Value::String(target)) => format!("{} {target}", text(&m["method"])),
                _ => text(&m["method"]),
            };
            // A request of the server, answered by the client.
            let what = if m["direction"] == "server_to_client" {
                format!("← {what}")
            } else {
                what
            };
            let server = match &m["server"]["name"] {
                Value::String(name) => name.clone(),
                _ => text(&t["provider"]),
            };
            vec![
                format!("r{}", text(&t["after_round"])),
                what,
                server,
                ms(&t["duration_ms"]),
                text(&t["status"]),
            ]
        })
        .collect();
    out.push_str(&table(style, &columns, &rows, "no MCP requests"));
    for t in steps {
        let m = &t["mcp"];
        let tool = text(&m["tool"]);
        if let Some(e) = m["error"].as_object() {
            out.push_str(&format!(
                "  {tool}: {}\n",
                style.paint(
                    "31",
                    &format!(
                        "JSON-RPC error {}: {}",
                        text(&e["code"]),
                        text(&e["message"])
                    )
                )
            ));
        }
        if !m["arguments"].is_null() {
            out.push_str(&format!(
                "  {tool} arguments: {}\n",
                clip(&m["arguments"].to_string())
            ));
        }
        if let Some(result) = m["result_text"].as_str() {
            let label = if m["is_error"] == true {
                "error"
            } else {
                "result"
            };
            out.push_str(&format!("  {tool} {label}: {}\n", clip(result)));
        }
    }
    for server in run["mcp_servers"].as_array().into_iter().flatten() {
        let tools: Vec<String> = server["tools_offered"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        if tools.is_empty() {
            continue;
        }
        let name = match &server["server"]["name"] {
            Value::String(name) => name.clone(),
            _ => text(&server["provider"]),
        };
        out.push_str(&format!("  {name} offered: {}\n", clip(&tools.join(", "))));
    }
    out
}

/// A value cut to one screen line's worth.
fn clip(text: &str) -> String {
    const MAX: usize = 160;
    let flat = text.replace('\n', " ");
    match flat.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

fn call_text(style: &Style, call: &Value) -> String {
    let mut out = String::new();
    let tool_http = call["kind"] == "http";
    let title = if tool_http { "tool call" } else { "call" };
    out.push_str(&style.bold(&format!("{title} {}", text(&call["id"]))));
    out.push('\n');
    field(
        style,
        &mut out,
        "status",
        style.status(&text(&call["status"])),
    );
    let place = if tool_http || call["kind"] == "mcp" {
        format!("{} (between rounds)", text(&call["invocation_id"]))
    } else {
        format!(
            "{} round {}",
            text(&call["invocation_id"]),
            text(&call["round"])
        )
    };
    field(style, &mut out, "run", place);
    field(style, &mut out, "provider", text(&call["provider"]));
    if tool_http {
        field(
            style,
            &mut out,
            "request",
            format!("{} {}", text(&call["method"]), text(&call["path"])),
        );
    } else {
        field(style, &mut out, "model", text(&call["model"]));
    }
    field(style, &mut out, "http status", text(&call["http_status"]));
    let metadata = &call["metadata"];
    field(style, &mut out, "agent", text(&metadata["agent"]));
    belongs_to(style, &mut out, metadata, &metadata["prompt"]);
    field(style, &mut out, "started", text(&call["started_at"]));
    field(style, &mut out, "latency", ms(&call["latency_ms"]));
    if !tool_http {
        field(style, &mut out, "ttft", ms(&call["ttft_ms"]));
        let usage = &call["usage"];
        field(
            style,
            &mut out,
            "tokens",
            tokens_with_cache(
                &usage["input_tokens"],
                &usage["output_tokens"],
                &usage["cache_read_tokens"],
                &usage["cache_creation_tokens"],
            ),
        );
        field(style, &mut out, "cost", usd(&call["cost_usd"]));
        field(style, &mut out, "stop reason", text(&call["stop_reason"]));
    }
    if let Some(e) = call["error"].as_object() {
        let message = [text(&e["type"]), text(&e["message"])]
            .into_iter()
            .filter(|t| t != "-")
            .collect::<Vec<_>>()
            .join(": ");
        if !message.is_empty() {
            field(style, &mut out, "error", style.paint("31", &message));
        }
    }
    if let Some(m) = call["mcp"].as_object() {
        field(
            style,
            &mut out,
            "mcp",
            format!("{} over {}", text(&m["method"]), text(&m["transport"])),
        );
        field(style, &mut out, "tool", text(&m["tool"]));
        field(style, &mut out, "server", text(&m["server"]["name"]));
        field(style, &mut out, "mcp session", text(&m["session_id"]));
        if let Some(e) = m["error"].as_object() {
            field(
                style,
                &mut out,
                "json-rpc error",
                style.paint(
                    "31",
                    &format!("{} {}", text(&e["code"]), text(&e["message"])),
                ),
            );
        }
        if !m["arguments"].is_null() {
            field(
                style,
                &mut out,
                "arguments",
                clip(&m["arguments"].to_string()),
            );
        }
        if let Some(result) = m["result_text"].as_str() {
            let label = if m["is_error"] == true {
                "tool error"
            } else {
                "result"
            };
            field(style, &mut out, label, clip(result));
        }
    }
    if let Some(h) = call["hint"].as_str() {
        field(style, &mut out, "hint", style.paint("31", h));
    }
    out
}

const ELIDE_CHARS: usize = 1200;

fn part(style: &Style, out: &mut String, label: &str, body: &str, full: bool) {
    out.push_str(&style.bold(label));
    out.push('\n');
    let n = body.chars().count();
    let shown = if full || n <= ELIDE_CHARS {
        body.to_string()
    } else {
        let head: String = body.chars().take(ELIDE_CHARS).collect();
        format!(
            "{head} […{} more characters; --full shows them]",
            n - ELIDE_CHARS
        )
    };
    out.push_str(&output::wrap(&shown, style.width, "  "));
}

/// Tool arguments as JSON: OpenAI sends them as a JSON text, Anthropic and Gemini as
/// an object; both print as the pretty JSON they stand for (a text that is not JSON,
/// as the model wrote it).
fn arguments_json(arguments: &Value) -> String {
    let parsed;
    let value = match arguments {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v) => {
                parsed = v;
                &parsed
            }
            Err(_) => return s.clone(),
        },
        other => other,
    };
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// An attachment in one line: what it is, how big, where it is (mirrored blob or URL).
fn attachment_line(a: &Value) -> String {
    let what = present(&a["media_type"])
        .or_else(|| present(&a["type"]))
        .unwrap_or_else(|| "attachment".into());
    let mut parts = vec![what];
    if let Some(name) = present(&a["filename"]) {
        parts.push(name);
    }
    if let Some(size) = a["size"].as_u64().or_else(|| a["bytes"].as_u64()) {
        parts.push(bytes_text(size));
    }
    match (present(&a["sha256"]), present(&a["url"])) {
        (Some(sha), _) => parts.push(format!("blob {sha}")),
        (None, Some(url)) => parts.push(format!("url {}", clip(&url))),
        _ => {}
    }
    if let Some(source) = present(&a["source"]) {
        parts.push(format!("({source})"));
    }
    parts.join("  ")
}

/// A size as B, KB or MB (1024-based).
fn bytes_text(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KB", n as f64 / 1024.0),
        _ => format!("{:.1} MB", n as f64 / 1_048_576.0),
    }
}

/// One round as the model saw it: system prompt, messages, tool calls, reply.
fn round_text(style: &Style, call: &Value, full: bool) -> String {
    let mut out = call_text(style, call);
    out.push('\n');
    let attachments = call["attachments"].as_array().cloned().unwrap_or_default();
    if !attachments.is_empty() {
        out.push_str(&style.bold(&format!("attachments ({})", attachments.len())));
        out.push('\n');
        for a in &attachments {
            out.push_str(&format!("  {}\n", attachment_line(a)));
        }
    }
    let request = &call["request"];
    if request.is_null() {
        out.push_str(
            &style.dim("(no messages: the token is a viewer's, or the body was not captured)\n"),
        );
        return out;
    }
    if let Some(system) = request["system"].as_str() {
        part(style, &mut out, "system", system, full);
    }
    for m in request["messages"].as_array().into_iter().flatten() {
        let role = text(&m["role"]);
        let label = match m["tool_call_id"].as_str() {
            Some(id) => format!("{role} (result of {id})"),
            None => role,
        };
        if let Some(t) = m["text"].as_str() {
            part(style, &mut out, &label, t, full);
        }
        for a in m["attachments"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{}\n",
                style.dim(&format!("  {label} attachment: {}", attachment_line(a)))
            ));
        }
        for tc in m["tool_calls"].as_array().into_iter().flatten() {
            part(
                style,
                &mut out,
                &format!("{label} → tool {}", text(&tc["name"])),
                &arguments_json(&tc["arguments"]),
                full,
            );
        }
    }
    let response = &call["response"];
    if let Some(thinking) = response["thinking"].as_str().filter(|t| !t.is_empty()) {
        part(style, &mut out, "reply: thinking", thinking, full);
    }
    if let Some(t) = response["text"].as_str() {
        part(style, &mut out, "reply", t, full);
    }
    for tc in response["tool_calls"].as_array().into_iter().flatten() {
        part(
            style,
            &mut out,
            &format!("reply → tool {} ({})", text(&tc["name"]), text(&tc["id"])),
            &arguments_json(&tc["arguments"]),
            full,
        );
    }
    out
}

/// `llmtap tail`: the live stream, one line per record; reconnects when it drops.
///
/// `--type runs` prints a run when its state changes (`RunStates`), so it reads the
/// calls too: a round that asked for tools leaves its run `running`.
pub fn tail(args: &TailArgs) -> anyhow::Result<()> {
    let style = Style::detect(args.api.json);
    let client = Client::new(&args.api)?;
    let mut query = Query::default();
    query.filters(&args.filter, now_us());
    query.push(
        "type",
        match args.kind {
            TailKind::All | TailKind::Runs => "all",
            TailKind::Calls => "calls",
        },
    );
    let mut runs = RunStates::default();
    let mut backoff = Duration::from_millis(250);
    let mut connected_once = false;
    loop {
        match client.send("/api/v1/stream", &query, None) {
            Ok(response) => {
                if !connected_once && !style.json {
                    eprintln!("{}", style.dim("waiting for new records (Ctrl-C to stop)"));
                }
                connected_once = true;
                backoff = Duration::from_millis(250);
                read_events(&style, args.kind, &mut runs, response);
                eprintln!("{}", style.dim("stream ended; reconnecting"));
            }
            // Bad filters or a refused token will not get better by retrying.
            Err(e @ ClientError::Api { .. }) => return Err(e.into()),
            Err(e) if !connected_once => return Err(e.into()),
            Err(e) => {
                eprintln!("{}", style.dim(&format!("{e}; retrying in {backoff:?}")));
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn read_events(
    style: &Style,
    kind: TailKind,
    runs: &mut RunStates,
    response: reqwest::blocking::Response,
) {
    let reader = BufReader::new(response);
    let mut event = String::new();
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let Ok(mut value) = serde_json::from_str::<Value>(data) else {
                continue;
            };
            if let Some(shown) = tail_event(style, kind, runs, &event, &mut value) {
                output::emit(&shown);
            }
        }
    }
}

/// What `tail` prints for one event, if anything: every call (`all`, `calls`), and a
/// run only when its state changed (`all`, `runs`).
fn tail_event(
    style: &Style,
    kind: TailKind,
    runs: &mut RunStates,
    event: &str,
    value: &mut Value,
) -> Option<String> {
    let is_run = event == "invocation";
    if is_run {
        let state = runs.run_changed(value)?;
        value["state"] = Value::String(state);
    } else {
        runs.note_call(value);
        if kind == TailKind::Runs {
            return None;
        }
    }
    if style.json {
        value["event"] = Value::String(event.to_string());
        return Some(format!("{value}\n"));
    }
    Some(tail_line(style, event, value))
}

/// Stop reasons of a round whose answer asks for tools: the run goes on.
const WANTS_TOOLS: &[&str] = &["tool_calls", "tool_use", "function_call"];

/// Where each run seen on the stream stands, to print a run once per change of
/// state: `running` while its last round asked for tools, then its status.
#[derive(Default)]
struct RunStates {
    /// Run id → whether its latest LLM round asked for tools.
    wants_tools: std::collections::HashMap<String, bool>,
    /// Run id → the state last printed.
    printed: std::collections::HashMap<String, String>,
}

/// Runs remembered at most; a tail that runs for weeks forgets the oldest at once.
const RUNS_REMEMBERED: usize = 10_000;

impl RunStates {
    fn note_call(&mut self, call: &Value) {
        let kind = call["kind"].as_str().unwrap_or("");
        if !llmtap::record::is_round_kind(kind) {
            return;
        }
        let Some(run) = call["invocation_id"].as_str() else {
            return;
        };
        let wants = call["stop_reason"]
            .as_str()
            .is_some_and(|r| WANTS_TOOLS.contains(&r));
        if self.wants_tools.len() >= RUNS_REMEMBERED {
            self.wants_tools.clear();
        }
        self.wants_tools.insert(run.to_string(), wants);
    }

    /// The run's state when it differs from the one printed last, else `None`.
    fn run_changed(&mut self, run: &Value) -> Option<String> {
        let id = run["id"].as_str()?.to_string();
        let status = run["status"].as_str().unwrap_or("running");
        let state = if status == "success" && self.wants_tools.get(&id) == Some(&true) {
            "running".to_string()
        } else {
            status.to_string()
        };
        if self.printed.get(&id) == Some(&state) {
            return None;
        }
        if self.printed.len() >= RUNS_REMEMBERED {
            self.printed.clear();
        }
        self.printed.insert(id, state.clone());
        Some(state)
    }
}

fn tail_line(style: &Style, event: &str, v: &Value) -> String {
    let time = text(&v["started_at"]);
    if event == "invocation" {
        return format!(
            "{time}  run {}  {}  {}  {} rounds  {}  {}  {}  {}\n",
            text(&v["id"]),
            text(&v["agent"]),
            text(&v["model"]),
            text(&v["rounds"]),
            tokens(v),
            usd(&v["cost_usd"]),
            ms(&v["latency_ms"]),
            style.status(&text(&v["state"])),
        );
    }
    let run = text(&v["invocation_id"]);
    let kind = v["kind"].as_str().unwrap_or("");
    if !llmtap::record::is_round_kind(kind) {
        // A tool's call: which tool, no model, tokens or cost.
        let tool = match (&v["mcp_method"], &v["tool"]) {
            (_, Value::String(t)) => format!("{} {t}", text(&v["provider"])),
            (Value::String(m), _) => format!("{} {m}", text(&v["provider"])),
            _ => text(&v["provider"]),
        };
        return format!(
            "{time}  call {}  run {run}  tool {tool}  {}  {}  HTTP {}  {}\n",
            text(&v["id"]),
            text(&v["agent"]),
            ms(&v["latency_ms"]),
            text(&v["http_status"]),
            style.status(&text(&v["status"])),
        );
    }
    format!(
        "{time}  call {}  run {run} r{}  {}  {}  {}  {}  {}  {}\n",
        text(&v["id"]),
        text(&v["round"]),
        text(&v["agent"]),
        text(&v["model"]),
        tokens(v),
        usd(&v["cost_usd"]),
        ms(&v["latency_ms"]),
        style.status(&text(&v["status"])),
    )
}

fn window(w: &Value) -> String {
    if w.is_null() {
        return "-".into();
    }
    format!("{}/{}", text(&w["remaining"]), text(&w["limit"]))
}

/// Headroom now: `reset` when every window has reset since the provider reported
/// (the API's `stale`: that state is history, not headroom now).
fn headroom_cell(row: &Value) -> String {
    match (row["stale"] == true, row["headroom_pct"].as_f64()) {
        (true, _) => "reset".into(),
        (false, Some(h)) => format!("{h:.1}%"),
        (false, None) => "-".into(),
    }
}

/// `llmtap ratelimits [--watch]`.
pub fn ratelimits(args: &RatelimitArgs) -> anyhow::Result<()> {
    let style = Style::detect(args.api.json);
    let client = Client::new(&args.api)?;
    let mut query = Query::default();
    query.opt("provider", &args.provider);
    loop {
        let state = client.get_json("/api/v1/ratelimits", &query)?;
        if style.json {
            output::emit(&format!("{state}\n"));
        } else {
            let columns = [
                col("PROVIDER", true, false),
                col("KEY", true, false),
                col("MODEL", true, false),
                col("REQUESTS", false, true),
                col("TOKENS", false, true),
                col("HEADROOM", false, true).painted(Paint::LowPercent),
                col("429s 1h", false, true),
                col("RETRY-AFTER", false, true),
                col("AT", false, false),
            ];
            let mut out = String::new();
            if args.watch.is_some() && style.color {
                out.push_str("\x1b[2J\x1b[H");
            }
            out.push_str(&items_table(
                &style,
                &state,
                &columns,
                |r| {
                    vec![
                        text(&r["provider"]),
                        text(&r["key_fingerprint"]),
                        text(&r["model"]),
                        window(&r["requests"]),
                        window(&r["tokens"]),
                        headroom_cell(r),
                        text(&r["rate_limited_1h"]),
                        r["last_retry_after_s"]
                            .as_f64()
                            .map_or("-".into(), |s| format!("{s}s")),
                        text(&r["at"]),
                    ]
                },
                "no rate-limit state reported by any provider yet",
            ));
            output::emit(&out);
        }
        match args.watch {
            Some(s) => std::thread::sleep(Duration::from_secs(s.max(1))),
            None => return Ok(()),
        }
    }
}

/// A table of an answer's `items`, one row each.
fn items_table(
    style: &Style,
    answer: &Value,
    columns: &[output::Column],
    cells: impl Fn(&Value) -> Vec<String>,
    empty: &str,
) -> String {
    let rows: Vec<Vec<String>> = answer["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cells)
        .collect();
    table(style, columns, &rows, empty)
}

/// `llmtap stats --group-by ...`.
pub fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    let style = Style::detect(args.api.json);
    let client = Client::new(&args.api)?;
    let mut query = Query::default();
    query.filters(&args.filter, now_us());
    let group = format!("{:?}", args.group_by).to_lowercase();
    query.push("group_by", group.clone());
    let stats = client.get_json("/api/v1/stats", &query)?;
    if style.json {
        output::emit_json(&stats);
        return Ok(());
    }
    if group == "tool" {
        let columns = [
            col("TOOL", true, false),
            col("CALLS", false, true),
            col("FAILURES", false, true),
            col("P50", false, true),
            col("P95", false, true),
        ];
        output::emit(&items_table(
            &style,
            &stats,
            &columns,
            |r| {
                vec![
                    text(&r["tool"]),
                    text(&r["calls"]),
                    text(&r["failures"]),
                    ms(&r["p50_duration_ms"]),
                    ms(&r["p95_duration_ms"]),
                ]
            },
            "no tool calls match",
        ));
        return Ok(());
    }
    let columns = [
        col("GROUP", true, false),
        col("RUNS", false, true),
        col("FAILED RUNS", false, true),
        col("LLM CALLS", false, true),
        col("TOOL CALLS", false, true),
        col("SUCCESS", false, true),
        col("AVG LATENCY", false, true),
        col("P95 LATENCY", false, true),
        col("AVG IN", false, true),
        col("AVG OUT", false, true),
        col("COST", false, true),
    ];
    let mut out = items_table(
        &style,
        &stats,
        &columns,
        |r| {
            vec![
                text(&r["group"]),
                text(&r["runs"]),
                text(&r["failed_runs"]),
                text(&r["calls"]),
                text(&r["tool_calls"]),
                r["success_rate"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{:.1}%", x * 100.0)),
                ms(&r["avg_latency_ms"]),
                ms(&r["p95_latency_ms"]),
                r["avg_input_tokens"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{x:.0}")),
                r["avg_output_tokens"]
                    .as_f64()
                    .map_or("-".into(), |x| format!("{x:.0}")),
                usd(&r["cost_usd"]),
            ]
        },
        "no calls match",
    );
    if let Some(n) = stats["tool_calls_without_group"]
        .as_u64()
        .filter(|n| *n > 0)
    {
        out.push_str(&style.dim(&format!(
            "{n} tool calls name no {group}: not in any group above\n"
        )));
    }
    if stats["truncated"] == true {
        out.push_str(&style.dim("(the scan budget ran out: newest records only)\n"));
    }
    output::emit(&out);
    Ok(())
}

/// `llmtap summary`.
pub fn summary(args: &SummaryArgs) -> anyhow::Result<()> {
    let style = Style::detect(args.api.json);
    let client = Client::new(&args.api)?;
    let mut query = Query::default();
    query.opt("tenant", &args.tenant).opt("tz", &args.tz);
    let s = client.get_json("/api/v1/summary", &query)?;
    if style.json {
        output::emit_json(&s);
        return Ok(());
    }
    let mut out = String::new();
    field(&style, &mut out, "total runs", text(&s["total_runs"]));
    field(&style, &mut out, "LLM calls", text(&s["total_calls"]));
    field(&style, &mut out, "runs today", text(&s["runs_today"]));
    field(&style, &mut out, "calls today", text(&s["calls_today"]));
    let errors = text(&s["errors_24h"]);
    let painted = if s["errors_24h"].as_u64().unwrap_or(0) > 0 {
        style.paint("31", &errors)
    } else {
        errors
    };
    field(&style, &mut out, "failed runs 24h", painted);
    field(
        &style,
        &mut out,
        "failed calls 24h",
        text(&s["failed_calls_24h"]),
    );
    field(&style, &mut out, "cost today", usd(&s["cost_today_usd"]));
    field(
        &style,
        &mut out,
        "tokens today",
        format!(
            "{} in, {} out",
            text(&s["tokens_today"]["input"]),
            text(&s["tokens_today"]["output"])
        ),
    );
    field(&style, &mut out, "today since", text(&s["today_starts_at"]));
    output::emit(&out);
    Ok(())
}

/// Where an interrupted export stands: written alongside the file as `FILE.resume`.
#[derive(serde::Serialize, serde::Deserialize)]
struct ExportState {
    /// The cursor of the next page to fetch.
    cursor: Option<String>,
    /// Bytes of the file that hold complete rows up to that cursor.
    bytes: u64,
    rows: u64,
    /// The query the export began with (filters, fixed time bounds); a resume reuses it.
    query: String,
}

/// `llmtap export --format csv|jsonl --out FILE [--resume]`.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let state_path = {
        let mut p = args.out.clone().into_os_string();
        p.push(".resume");
        std::path::PathBuf::from(p)
    };
    let mut state = if args.resume {
        let text = std::fs::read_to_string(&state_path).with_context(|| {
            format!(
                "nothing to resume: {} is missing (the export finished or never started)",
                state_path.display()
            )
        })?;
        serde_json::from_str::<ExportState>(&text)
            .with_context(|| format!("{} is not an export state", state_path.display()))?
    } else {
        // The time bounds are fixed now, so a resumed export covers the same records.
        let now = now_us();
        let mut query = Query::default();
        query.filters(
            &super::FilterArgs {
                to: None,
                ..args.filter.clone()
            },
            now,
        );
        let to = args
            .filter
            .to
            .clone()
            .unwrap_or_else(|| llmtap::timefmt::format_rfc3339_us(now + 1));
        query
            .push("to", to)
            .push("limit", args.page_size.to_string());
        ExportState {
            cursor: None,
            bytes: 0,
            rows: 0,
            query: query.encode(),
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(!args.resume)
        .open(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    // Rows written after the last checkpoint are dropped: the checkpoint's cursor
    // fetches them again.
    file.set_len(state.bytes)?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(state.bytes))?;
    let query = Query::encoded(&state.query);
    // CSV is the API's own (`calls.csv`, `invocations.csv`, a page at a time), so its
    // cells are the API's: `input` for admins, formulas neutralised. JSON lines of calls
    // are their prompt logs (the exchange as text, admins only); of runs, summaries.
    let path = match (args.runs, args.format) {
        (true, ExportFormat::Csv) => "/api/v1/invocations.csv",
        (false, ExportFormat::Csv) => "/api/v1/calls.csv",
        (true, ExportFormat::Jsonl) => "/api/v1/invocations",
        (false, ExportFormat::Jsonl) => "/api/v1/prompt-logs",
    };
    // The header row of a CSV file being continued: every page must have the same.
    let mut csv_header = if args.resume && args.format == ExportFormat::Csv {
        Some(first_line(&args.out)?)
    } else {
        None
    };
    let progress = Progress::new();
    let mut pages = 0u64;
    loop {
        let mut q = query.clone();
        if let Some(c) = &state.cursor {
            q.push("cursor", c.clone());
        }
        let page = match args.format {
            ExportFormat::Csv => csv_page(&client, path, &q, &mut csv_header)?,
            ExportFormat::Jsonl => jsonl_page(&client, path, &q)?,
        };
        if state.rows == 0 {
            progress.total(page.total);
        }
        let chunk = page.bytes;
        file.write_all(&chunk)?;
        file.sync_data()?;
        state.bytes += chunk.len() as u64;
        state.rows += page.rows;
        state.cursor = page.next_cursor;
        progress.set(state.rows);
        if state.cursor.is_none() {
            break;
        }
        std::fs::write(&state_path, serde_json::to_vec(&state)?)?;
        pages += 1;
        if args.stop_after_pages.is_some_and(|n| pages >= n) {
            progress.finish();
            anyhow::bail!(
                "stopped after {pages} pages; continue with --resume ({} rows so far)",
                state.rows
            );
        }
    }
    let _ = std::fs::remove_file(&state_path);
    progress.finish();
    eprintln!("wrote {} rows to {}", state.rows, args.out.display());
    Ok(())
}

/// One page of an export, as it goes into the file.
struct ExportPage {
    bytes: Vec<u8>,
    rows: u64,
    /// How many rows match, when the API says (first page).
    total: Option<u64>,
    next_cursor: Option<String>,
}

/// A page of the API's CSV. The file's first page keeps the header row; a later
/// page's header is dropped after checking that it is the file's (the columns did not
/// change between pages, or between an interrupted export and its resume).
fn csv_page(
    client: &Client,
    path: &str,
    query: &Query,
    file_header: &mut Option<Vec<u8>>,
) -> anyhow::Result<ExportPage> {
    let (headers, body) = client.get_bytes(path, query)?;
    let header_end = body
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| i + 2)
        .ok_or_else(|| anyhow::anyhow!("{path} answered no CSV header row"))?;
    let header = &body[..header_end];
    let rows = csv::Reader::from_reader(&body[..])
        .records()
        .try_fold(0u64, |n, r| r.map(|_| n + 1))
        .with_context(|| format!("{path} answered CSV this CLI cannot read"))?;
    let header_value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let page = |bytes: &[u8]| ExportPage {
        bytes: bytes.to_vec(),
        rows,
        total: header_value(llmtap::api::TOTAL_HEADER).and_then(|t| t.parse().ok()),
        next_cursor: header_value(llmtap::api::NEXT_CURSOR_HEADER).map(str::to_string),
    };
    match file_header {
        None => {
            *file_header = Some(header.to_vec());
            Ok(page(&body))
        }
        Some(h) if h[..] == *header => Ok(page(&body[header_end..])),
        Some(_) => anyhow::bail!(
            "the read API's CSV columns differ from the file's header row (the server changed \
             since the export began); export again without --resume"
        ),
    }
}

/// A page of JSON lines: one item a line.
fn jsonl_page(client: &Client, path: &str, query: &Query) -> anyhow::Result<ExportPage> {
    let page = match client.get_json(path, query) {
        Err(ClientError::Api { status: 403, .. }) if path.ends_with("prompt-logs") => {
            anyhow::bail!(
                "export --format jsonl writes the calls' prompt logs (GET /api/v1/prompt-logs), \
                 which need an admin token; --format csv exports call summaries with any token"
            )
        }
        page => page?,
    };
    let items = page["items"].as_array().cloned().unwrap_or_default();
    let mut bytes = Vec::new();
    for item in &items {
        serde_json::to_writer(&mut bytes, item)?;
        bytes.push(b'\n');
    }
    Ok(ExportPage {
        bytes,
        rows: items.len() as u64,
        total: page["total"].as_u64(),
        next_cursor: page["next_cursor"].as_str().map(str::to_string),
    })
}

/// The first line of a file, its CRLF included (a CSV header row).
fn first_line(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    let end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| i + 2)
        .ok_or_else(|| {
            anyhow::anyhow!("{} has no CSV header row to resume after", path.display())
        })?;
    head.truncate(end);
    Ok(head)
}

/// Count and rate (and total when known) on stderr, only when it is a terminal.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new() -> Progress {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos} rows ({per_sec}) {wide_bar} {percent}% eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        Progress(Some(bar))
    }

    fn total(&self, total: Option<u64>) {
        if let (Some(bar), Some(t)) = (&self.0, total) {
            bar.set_length(t);
        }
    }

    fn set(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn headroom_of_a_state_whose_windows_reset_is_not_now() {
        assert_eq!(headroom_cell(&json!({"headroom_pct": 12.34})), "12.3%");
        assert_eq!(
            headroom_cell(
                &json!({"headroom_pct": null, "stale": true, "reported_headroom_pct": 0.0})
            ),
            "reset"
        );
        assert_eq!(headroom_cell(&json!({"headroom_pct": null})), "-");
    }

    #[test]
    fn show_lists_a_runs_mcp_tool_calls_after_their_round() {
        let style = Style {
            color: false,
            json: false,
            width: 120,
        };
        let run = json!({
            "id": "run-1", "status": "success", "rounds": [],
            "timeline": [
                {"kind": "llm", "round": 1},
                {"kind": "mcp", "after_round": 1, "provider": "tools", "duration_ms": 12.5, "status": "success",
                 "mcp": {"method": "notifications/initialized"}},
                {"kind": "mcp", "after_round": 1, "provider": "tools", "duration_ms": 12.5, "status": "success",
                 "mcp": {"method": "tools/call", "tool": "weather", "server": {"name": "rmcp"},
                         "arguments": {"city": "Oslo"}, "result_text": "sunny", "is_error": false}},
                {"kind": "mcp", "after_round": 1, "provider": "tools", "duration_ms": 3.0, "status": "failed",
                 "mcp": {"method": "tools/call", "tool": "reject", "error": {"code": -32602, "message": "no"}}},
            ]
        });
        let text = run_text(&style, &run);
        assert!(text.contains("tools/call weather"), "{text}");
        assert!(text.contains("rmcp"), "{text}");
        assert!(
            text.contains("weather arguments: {\"city\":\"Oslo\"}"),
            "{text}"
        );
        assert!(text.contains("weather result: sunny"), "{text}");
        assert!(text.contains("reject: JSON-RPC error -32602: no"), "{text}");
        assert!(!text.contains("notifications/initialized"), "{text}");
    }
}
