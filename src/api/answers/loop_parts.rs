//! The parts of a run's loop as the API answers them (`GET /invocations/{id}`'s
//! outcome, gaps and attempts, a session's conversation): one answer type per
//! `agent_loop` description, each built by one `of` that names every field, so a
//! field added to the description is a compile error here until it is answered or
//! left out on purpose. Each serializes as the description always has; their schema
//! names are the descriptions'.
//!
//! `GapKind` is a value enum whose wire names are the API's (`tool`, `backoff`,
//! `agent`): answered as `agent_loop` has it, as `CallStatus` is.

use super::without_query;
use crate::agent_loop::{self, GapKind};
use crate::record::CallStatus;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// How a run ended, in words and numbers.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RunOutcome {
    /// The status of the run's last round's last attempt; null while it runs.
    pub status: Option<CallStatus>,
    /// Attempts beyond each round's first, over the run.
    pub retries: u32,
    /// `true` when the run counts as an error (it ended on a failure).
    pub failed: bool,
    /// "success", "success, recovered after 1 retry", "rate_limited after 3 attempts", ...
    pub text: String,
}

impl RunOutcome {
    pub fn of(outcome: agent_loop::RunOutcome) -> RunOutcome {
        let agent_loop::RunOutcome {
            status,
            retries,
            failed,
            text,
        } = outcome;
        RunOutcome {
            status,
            retries,
            failed,
            text,
        }
    }
}

/// One attempt of a round.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Attempt {
    /// The attempt within its round (1 the first try).
    pub attempt: u32,
    /// The attempt's call.
    pub call_id: String,
    /// When its request arrived, RFC 3339 UTC.
    pub started_at: String,
    /// From its request's arrival to its answer's last byte (ms).
    pub duration_ms: f64,
    /// How it ended.
    pub status: Option<CallStatus>,
    /// The upstream's HTTP status; null when none arrived.
    pub http_status: Option<u16>,
    /// The SDK's retry count header, when it sent one.
    pub retry_hint: Option<u32>,
    /// The wait before this attempt since the previous one ended (the client's backoff).
    pub backoff_ms: Option<f64>,
}

impl Attempt {
    pub fn of(attempt: agent_loop::Attempt) -> Attempt {
        let agent_loop::Attempt {
            attempt,
            call_id,
            started_at,
            duration_ms,
            status,
            http_status,
            retry_hint,
            backoff_ms,
        } = attempt;
        Attempt {
            attempt,
            call_id,
            started_at,
            duration_ms,
            status,
            http_status,
            retry_hint,
            backoff_ms,
        }
    }
}

/// The time between one LLM call's end and the next one's start.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Gap {
    /// `tool` (after a round that asked for tools), `backoff` (between attempts of a
    /// round) or `agent` (the agent's own work).
    pub kind: GapKind,
    /// "tool time", "backoff" or "agent time".
    pub label: String,
    /// The round before the gap.
    pub after_round: u32,
    /// The round after the gap.
    pub before_round: u32,
    /// The gap's length (ms).
    pub duration_ms: f64,
    /// Tool calls captured in it.
    pub tool_calls: Vec<ToolCallSeen>,
    /// Of its duration, the time no captured tool call covers.
    pub unexplained_ms: f64,
}

impl Gap {
    /// A gap as `admin` may see it: its tool calls' paths without their query
    /// strings (the tools' arguments) for viewers.
    pub fn of(gap: agent_loop::Gap, admin: bool) -> Gap {
        let agent_loop::Gap {
            kind,
            label,
            after_round,
            before_round,
            duration_ms,
            tool_calls,
            unexplained_ms,
        } = gap;
        Gap {
            kind,
            label,
            after_round,
            before_round,
            duration_ms,
            tool_calls: tool_calls
                .into_iter()
                .map(|seen| ToolCallSeen::of(seen, admin))
                .collect(),
            unexplained_ms,
        }
    }
}

/// A tool's captured call (HTTP, MCP) in a gap.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ToolCallSeen {
    /// The tool call's id.
    pub call_id: String,
    /// The MCP tool it called (`tools/call`), when it is an MCP exchange.
    pub tool: Option<String>,
    /// The HTTP method.
    pub method: String,
    /// The host it was forwarded to.
    pub host: String,
    /// Its path; a viewer gets it without its query string (the tool's arguments).
    pub path: String,
    /// How it ended.
    pub status: Option<CallStatus>,
    /// The upstream's HTTP status; null when none arrived.
    pub http_status: Option<u16>,
    /// Its own duration (ms).
    pub duration_ms: f64,
    /// The requested tool call it was joined to, when the evidence allows.
    pub joined_to: Option<String>,
}

impl ToolCallSeen {
    /// A tool call as `admin` may see it: its path without its query string for viewers.
    pub fn of(seen: agent_loop::ToolCallSeen, admin: bool) -> ToolCallSeen {
        let agent_loop::ToolCallSeen {
            call_id,
            tool,
            method,
            host,
            path,
            status,
            http_status,
            duration_ms,
            joined_to,
        } = seen;
        ToolCallSeen {
            call_id,
            tool,
            method,
            host,
            path: if admin {
                path
            } else {
                without_query(&path).to_string()
            },
            status,
            http_status,
            duration_ms,
            joined_to,
        }
    }
}

/// One entry of a session read as a conversation.
#[derive(Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Turn {
    /// `user` (a run's new user message), `reply` (a round's answer), `tool_call` (a
    /// tool the model asked for, with its result from the next round), `tool` (a
    /// captured tool call: HTTP or MCP), `failure` (an attempt that failed).
    pub kind: String,
    /// The run of the entry.
    pub invocation_id: String,
    /// The round the entry opens (for `tool`: the round it followed).
    pub round: u32,
    /// The call the entry was read from.
    pub call_id: String,
    /// When that call started, RFC 3339 UTC.
    pub at: String,
    /// Admins only (null for viewers): the user message, the reply, the tool result.
    pub text: Option<String>,
    /// `tool_call`: its name; `tool`: the MCP tool, or method and path (a viewer
    /// gets the path without its query string).
    pub name: Option<String>,
    /// Admins only (null for viewers), `tool_call`: its arguments.
    pub arguments: Option<Value>,
    /// How the entry's call ended.
    pub status: Option<CallStatus>,
    /// The upstream's HTTP status; null when none arrived.
    pub http_status: Option<u16>,
}

impl Turn {
    /// A turn as `admin` may see it: texts and arguments for admins only, and a
    /// captured tool call named without its query string (its arguments) for a
    /// viewer.
    pub fn of(turn: agent_loop::Turn, admin: bool) -> Turn {
        let agent_loop::Turn {
            kind,
            invocation_id,
            round,
            call_id,
            at,
            text,
            name,
            arguments,
            status,
            http_status,
        } = turn;
        let name = if !admin && kind == "tool" {
            name.as_deref().map(|n| without_query(n).to_string())
        } else {
            name
        };
        Turn {
            kind,
            invocation_id,
            round,
            call_id,
            at,
            text: text.filter(|_| admin),
            name,
            arguments: arguments.filter(|_| admin),
            status,
            http_status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap()
    }

    /// An admin's answer is the description as it serializes, field for field; a
    /// viewer's leaves out the content and a tool call's query string.
    #[test]
    fn loop_parts_answer_the_descriptions_json() {
        let seen = agent_loop::ToolCallSeen {
            call_id: "c_2".into(),
            tool: Some("weather".into()),
            method: "GET".into(),
            host: "tools.example".into(),
            path: "/weather?city=paris".into(),
            status: Some(CallStatus::Success),
            http_status: Some(200),
            duration_ms: 12.5,
            joined_to: Some("call_1".into()),
        };
        let gap = agent_loop::Gap {
            kind: GapKind::Tool,
            label: "tool time".into(),
            after_round: 1,
            before_round: 2,
            duration_ms: 20.0,
            tool_calls: vec![seen],
            unexplained_ms: 7.5,
        };
        assert_eq!(json(&Gap::of(gap.clone(), true)), json(&gap));
        let viewer = json(&Gap::of(gap, false));
        assert_eq!(viewer["tool_calls"][0]["path"], "/weather");

        let turn = agent_loop::Turn {
            kind: "tool".into(),
            invocation_id: "i_1".into(),
            round: 1,
            call_id: "c_2".into(),
            at: "2026-01-01T00:00:00Z".into(),
            text: Some("sunny".into()),
            name: Some("GET /weather?city=paris".into()),
            arguments: Some(serde_json::json!({"city": "paris"})),
            status: None,
            http_status: None,
        };
        assert_eq!(json(&Turn::of(turn.clone(), true)), json(&turn));
        let viewer = json(&Turn::of(turn, false));
        assert!(viewer["text"].is_null() && viewer["arguments"].is_null());
        assert_eq!(viewer["name"], "GET /weather");

        let attempt = agent_loop::Attempt {
            attempt: 2,
            call_id: "c_3".into(),
            started_at: "2026-01-01T00:00:01Z".into(),
            duration_ms: 3.0,
            status: Some(CallStatus::RateLimited),
            http_status: Some(429),
            retry_hint: Some(1),
            backoff_ms: Some(500.0),
        };
        assert_eq!(json(&Attempt::of(attempt.clone())), json(&attempt));
        let outcome = agent_loop::RunOutcome {
            status: Some(CallStatus::Success),
            retries: 1,
            failed: false,
            text: "success, recovered after 1 retry".into(),
        };
        assert_eq!(json(&RunOutcome::of(outcome.clone())), json(&outcome));
    }
}
