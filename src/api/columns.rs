//! The one definition of the CSV columns of calls and of runs: `GET /api/v1/calls.csv`
//! and `/invocations.csv` (`export.rs`) write their header and rows from these tables;
//! the CLI's `llmtap export --format csv` writes those answers as sent, page by page.
//!
//! Each column is a name and how its cell reads the list's answer type (`CallListItem`,
//! `RunListItem`: a CSV row and a JSON list item are the same answer); the last column,
//! `input` (the first user message of a run, the last of a call), is not in it and is
//! passed in by the writer (empty for viewers).

use super::answers::{CallListItem, RunListItem};
use crate::record::CallStatus;

/// One CSV column: its header and its cell.
pub struct Column<T> {
    pub name: &'static str,
    pub cell: fn(&T) -> String,
}

/// The name of the last column of both tables, whose text the writer supplies.
pub const INPUT: &str = "input";

const fn column<T>(name: &'static str, cell: fn(&T) -> String) -> Column<T> {
    Column { name, cell }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn status(s: &Option<CallStatus>) -> String {
    s.map(|s| s.as_str().to_string()).unwrap_or_default()
}

/// The version part of `name@version`; empty without one.
pub fn prompt_version(prompt: &Option<String>) -> String {
    prompt
        .as_deref()
        .and_then(|p| p.rsplit_once('@'))
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

/// The columns of a call, `input` excepted.
pub static CALL: &[Column<CallListItem>] = &[
    column("id", |s| s.id.clone()),
    column("invocation_id", |s| s.invocation_id.clone()),
    column("round", |s| s.round.to_string()),
    // Attempt within the round (1 the first try); empty for a tool call.
    column("attempt", |s| opt(&s.attempt())),
    column("status", |s| status(&s.status)),
    column("http_status", |s| opt(&s.http_status)),
    column("trigger", |s| opt(&s.trigger)),
    column("agent", |s| opt(&s.agent)),
    column("tenant", |s| opt(&s.tenant)),
    column("provider", |s| s.provider.clone()),
    column("model", |s| opt(&s.model)),
    column("started_at", |s| s.started_at.clone()),
    column("latency_ms", |s| s.latency_ms.to_string()),
    column("input_tokens", |s| opt(&s.input_tokens)),
    column("output_tokens", |s| opt(&s.output_tokens)),
    column("cache_read_tokens", |s| opt(&s.cache_read_tokens)),
    column("cache_creation_tokens", |s| opt(&s.cache_creation_tokens)),
    column("cost_usd", |s| opt(&s.cost_usd)),
    column("ttft_ms", |s| opt(&s.ttft_ms)),
    column("stop_reason", |s| opt(&s.stop_reason)),
    column("prompt", |s| opt(&s.prompt)),
    column("prompt_version", |s| prompt_version(&s.prompt)),
    column("session_id", |s| opt(&s.session_id)),
    column("user_id", |s| opt(&s.user_id)),
    column("task_id", |s| opt(&s.task_id)),
    column("kind", |s| s.kind.clone()),
    column("error_type", |s| opt(&s.error_type)),
    column("mcp_method", |s| opt(&s.mcp_method)),
    column("tool", |s| opt(&s.tool)),
];

/// The columns of a run (invocation), `input` excepted.
pub static INVOCATION: &[Column<RunListItem>] = &[
    column("id", |s| s.run.id.clone()),
    column("status", |s| status(&s.run.status)),
    column("trigger", |s| opt(&s.run.trigger)),
    column("agent", |s| opt(&s.run.agent)),
    column("tenant", |s| opt(&s.run.tenant)),
    column("started_at", |s| s.run.started_at.clone()),
    column("latency_ms", |s| s.run.latency_ms.to_string()),
    column("input_tokens", |s| opt(&s.run.input_tokens)),
    column("output_tokens", |s| opt(&s.run.output_tokens)),
    column("cost_usd", |s| opt(&s.run.cost_usd)),
    column("model", |s| opt(&s.run.model)),
    column("prompt", |s| opt(&s.run.prompt)),
    column("prompt_version", |s| prompt_version(&s.run.prompt)),
    column("rounds", |s| s.rounds.to_string()),
    column("retries", |s| s.run.retries.to_string()),
    column("tool_calls", |s| s.tool_calls.to_string()),
    column("session_id", |s| opt(&s.run.session_id)),
    column("user_id", |s| opt(&s.run.user_id)),
    column("task_id", |s| opt(&s.run.task_id)),
];

/// The header row: every column's name, then `input`.
pub fn header<T>(columns: &[Column<T>]) -> Vec<String> {
    columns
        .iter()
        .map(|c| c.name.to_string())
        .chain(std::iter::once(INPUT.to_string()))
        .collect()
}

/// One row, in header order; `input` last.
pub fn row<T>(columns: &[Column<T>], summary: &T, input: String) -> Vec<String> {
    columns
        .iter()
        .map(|c| (c.cell)(summary))
        .chain(std::iter::once(input))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_has_a_cell_per_header_and_the_prompt_version_is_split_off() {
        let s = CallListItem::of(crate::store::summary::CallSummary {
            id: "c_1".into(),
            kind: "openai".into(),
            prompt: Some("summarise@v3".into()),
            cache_read_tokens: Some(12),
            task_id: Some("t-9".into()),
            ..Default::default()
        });
        let header = header(CALL);
        let row = row(CALL, &s, "hello".into());
        assert_eq!(header.len(), row.len());
        let cell = |name: &str| row[header.iter().position(|h| h == name).unwrap()].clone();
        assert_eq!(cell("prompt_version"), "v3");
        assert_eq!(cell("cache_read_tokens"), "12");
        assert_eq!(cell("task_id"), "t-9");
        assert_eq!(cell("attempt"), "1");
        assert_eq!(cell("input"), "hello");
        assert_eq!(header.last().map(String::as_str), Some(INPUT));
        let runs = header_of_runs();
        assert!(runs.contains(&"prompt_version".to_string()));
    }

    fn header_of_runs() -> Vec<String> {
        header(INVOCATION)
    }
}
