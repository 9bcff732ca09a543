//! `GET /api/v1/prompt-logs`: an audit read of prompts in one request. Each entry is
//! one LLM call's exchange as text (system prompt, the history as role/content
//! messages, the assembled prompt, the model's answer, the tools offered), with its
//! run, session, round and times, newest first.
//!
//! Admins only (the dispatcher refuses viewers), tenant-confined tokens see their
//! tenant's calls, and every read is audited before anything is read. With no run,
//! session or time filter the window is the last `DEFAULT_WINDOW_DAYS` days, and the
//! answer says so. Paging is by `offset` (up to `params::MAX_OFFSET`) or, past that,
//! by `cursor`; both engines answer through the same store operations (`list_calls`,
//! `invocation_call_ids`, `get_call_meta`, `get_call`).

use super::params::{self, bad, ParamKind, ParamSpec, Params};
use super::views::{check_access, list_filter, resolve_scoped_id};
use super::{audit, ok, ApiError, ApiResult, ApiState};
use crate::api::auth::Principal;
use crate::record::{CallRecord, Endpoint, Message, ProviderKind};
use crate::store::summary::{tag, Filter};
use crate::store::{PageRequest, Position};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// The window when the request names no run, session or time.
pub const DEFAULT_WINDOW_DAYS: u64 = 7;
const DAY_US: u64 = 86_400_000_000;
/// Summaries read per store page while walking.
const WALK_PAGE: usize = 200;
/// Most summaries one request examines when an `endpoint` filter rules many out;
/// past it the page ends early and `next_cursor` continues where it stopped.
const WALK_BUDGET: usize = 50_000;

const ENDPOINTS: &[&str] = &[
    "chat_completions",
    "responses",
    "messages",
    "generate_content",
    "stream_generate_content",
    "embeddings",
    "embed",
    "other",
];

/// The parameters `GET /prompt-logs` accepts besides the list filters
/// (`params::FILTER_PARAMS`: session_id, from, to, tenant, agent, model, status, ...).
pub const PARAMS: &[ParamSpec] = &[
    ParamSpec::query(
        "limit",
        "entries per page",
        ParamKind::Integer {
            min: 1,
            max: params::MAX_LIMIT as u64,
            default: Some(params::DEFAULT_LIMIT as u64),
        },
    ),
    ParamSpec::query(
        "offset",
        "entries to skip (next_offset of the previous page)",
        ParamKind::Integer {
            min: 0,
            max: params::MAX_OFFSET as u64,
            default: Some(0),
        },
    ),
    ParamSpec::text(
        "cursor",
        "next_cursor of the previous page: continues past the offset limit (not with offset)",
    ),
    ParamSpec::text(
        "run_id",
        "the run (invocation) id; a tenant's run by its plain id with tenant, or as id@tenant",
    ),
    ParamSpec::query(
        "endpoint",
        "the provider API the call hit",
        ParamKind::OneOf(ENDPOINTS),
    ),
];

/// One message of the history.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PromptMessage {
    /// system | developer | user | assistant | tool.
    pub role: String,
    /// The message's text; its tool calls as `name(arguments)` lines, and its
    /// attachments as `[media type]`, so the content reads as what was sent.
    pub content: String,
}

/// A tool call in the model's answer.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AnswerToolCall {
    pub name: String,
    /// The arguments as JSON (OpenAI's JSON text parsed; a text that is not JSON as is).
    pub arguments: Value,
}

/// One LLM call's exchange.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PromptLog {
    /// The call id (`GET /calls/{id}` has the whole record).
    pub id: String,
    pub run_id: String,
    pub session_id: Option<String>,
    /// The round of the run (1, 2, ...): the turn index.
    pub turn_index: u32,
    /// Which attempt of its round (1 the first try).
    pub attempt: u32,
    /// The provider API (`chat_completions`, `messages`, ...); null when not parsed.
    pub endpoint: Option<Endpoint>,
    pub provider: String,
    pub model: Option<String>,
    pub agent: Option<String>,
    pub tenant: Option<String>,
    pub user_id: Option<String>,
    pub prompt_name: Option<String>,
    pub status: Option<crate::record::CallStatus>,
    /// When the call started.
    pub occurred_at: String,
    /// When the writer stored it; null for calls stored before this was recorded.
    pub stored_at: Option<String>,
    pub system_prompt: Option<String>,
    /// The conversation as sent, in order (the system prompt apart).
    pub messages: Vec<PromptMessage>,
    /// The prompt as one text: the system prompt and each message as `role: content`,
    /// separated by blank lines.
    pub prompt: String,
    /// The model's answer text (null when it answered with tool calls only, failed,
    /// or could not be read).
    pub response: Option<String>,
    pub response_tool_calls: Vec<AnswerToolCall>,
    /// The names of the tools the request offered.
    pub tool_names: Vec<String>,
    pub tools_offered: bool,
    /// True when the exchange could not be fully parsed: a body missing, cut at the
    /// capture cap, or with parts the parser did not understand (`parse_notes`).
    pub parse_incomplete: bool,
    pub parse_notes: Vec<String>,
}

/// `GET /prompt-logs`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PromptLogs {
    pub items: Vec<PromptLog>,
    pub count: usize,
    pub limit: usize,
    pub offset: usize,
    pub has_more: bool,
    /// Pass as `offset` for the next page; null on the last page, when paging by
    /// cursor, or past the offset limit (then use `next_cursor`).
    pub next_offset: Option<usize>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// Set when the request named no run, session or time: the days of the window
    /// that was applied (ending now).
    pub applied_time_window_days: Option<u64>,
    /// The window's bounds as applied (null when open).
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What the request asks for, validated.
struct Query {
    limit: usize,
    offset: usize,
    cursor: Option<Position>,
    run_id: Option<String>,
    endpoint: Option<Endpoint>,
    filter: Filter,
    window_days: Option<u64>,
}

fn query(who: &Principal, p: &Params, now_us: u64) -> Result<Query, ApiError> {
    let limit = p.usize_in("limit", params::DEFAULT_LIMIT, 1, params::MAX_LIMIT)?;
    let offset = p.usize_in("offset", 0, 0, params::MAX_OFFSET)?;
    let cursor = match p.get("cursor") {
        None | Some("") => None,
        Some(c) => Some(params::decode_cursor(c).ok_or_else(|| {
            bad(
                "cursor",
                "not a cursor from this API; pass next_cursor from a previous page unchanged",
            )
        })?),
    };
    if cursor.is_some() && offset > 0 {
        return Err(bad("offset", "use either cursor or offset, not both").into());
    }
    let endpoint = match p.get("endpoint") {
        None | Some("") => None,
        Some(e) => Some(
            serde_json::from_value::<Endpoint>(Value::String(e.to_string())).map_err(|_| {
                bad(
                    "endpoint",
                    format!("unknown endpoint {e:?}; accepted: {}", ENDPOINTS.join(", ")),
                )
            })?,
        ),
    };
    let run_id = p
        .get("run_id")
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    // The list filters as every list reads them: tenant confinement, scoped session
    // ids, `q` for admins (which this route's callers are).
    let mut filter = list_filter(who, p)?;
    let session = filter.eq.iter().any(|(t, _)| *t == tag::SESSION);
    // LLM rounds only: tool HTTP calls and MCP exchanges carry no prompt.
    filter.eq.push((
        tag::KIND,
        [
            ProviderKind::Openai,
            ProviderKind::Anthropic,
            ProviderKind::Gemini,
        ]
        .iter()
        .map(|k| k.as_str().to_string())
        .collect(),
    ));
    let window_days =
        (run_id.is_none() && !session && filter.from_us.is_none() && filter.to_us.is_none())
            .then_some(DEFAULT_WINDOW_DAYS);
    if let Some(days) = window_days {
        filter.from_us = Some(now_us.saturating_sub(days * DAY_US));
    }
    Ok(Query {
        limit,
        offset,
        cursor,
        run_id,
        endpoint,
        filter,
        window_days,
    })
}

/// The ids of the page's calls, newest first, whether more follow, and where the
/// walk stopped (the next page's cursor).
struct Selected {
    ids: Vec<String>,
    has_more: bool,
    next: Option<Position>,
}

/// Keeps the matches after `offset`, up to `limit`, and notes whether one more exists.
struct Pager {
    skip: usize,
    limit: usize,
    ids: Vec<String>,
    last: Option<Position>,
    has_more: bool,
}

impl Pager {
    fn new(q: &Query) -> Pager {
        Pager {
            skip: q.offset,
            limit: q.limit,
            ids: Vec::with_capacity(q.limit),
            last: None,
            has_more: false,
        }
    }

    /// Takes one match; false once the page is full and one more was seen.
    fn take(&mut self, time_us: u64, id: &str) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return true;
        }
        if self.ids.len() == self.limit {
            self.has_more = true;
            return false;
        }
        self.ids.push(id.to_string());
        self.last = Some(Position {
            time_us,
            id: id.to_string(),
        });
        true
    }

    fn done(self) -> Selected {
        Selected {
            next: if self.has_more { self.last } else { None },
            ids: self.ids,
            has_more: self.has_more,
        }
    }
}

fn endpoint_matches(state: &ApiState, want: Option<Endpoint>, id: &str) -> Result<bool, ApiError> {
    let Some(want) = want else {
        return Ok(true);
    };
    Ok(state
        .store
        .get_call_meta(id)?
        .is_some_and(|c| c.endpoint == Some(want)))
}

/// `q`: the text in the call's system prompt or last user message (as lists match it).
fn text_matches(state: &ApiState, filter: &Filter, id: &str) -> Result<bool, ApiError> {
    let Some(want) = &filter.text else {
        return Ok(true);
    };
    let Some(text) = state.store.call_text(id)? else {
        return Ok(false);
    };
    Ok([text.system, text.last_user]
        .iter()
        .flatten()
        .any(|t| t.to_lowercase().contains(want.as_str())))
}

/// A run's calls: read by its id, filtered here (a run has a few hundred at most).
fn select_in_run(
    state: &ApiState,
    who: &Principal,
    p: &Params,
    q: &Query,
    run_id: &str,
) -> Result<Selected, ApiError> {
    let run = resolve_scoped_id(state, who, p, true, run_id)?;
    check_access(state, who, true, &run)?;
    let mut calls: Vec<CallRecord> = Vec::new();
    for id in state.store.invocation_call_ids(&run)? {
        if let Some(meta) = state.store.get_call_meta(&id)? {
            let summary = crate::store::summary::CallSummary::from_record(&meta);
            let kept = q.filter.matches_facets(&summary.facets())
                && q.endpoint.is_none_or(|e| meta.endpoint == Some(e))
                && text_matches(state, &q.filter, &id)?;
            if kept {
                calls.push(meta);
            }
        }
    }
    calls.sort_by(|a, b| (b.started_at_us, &b.id).cmp(&(a.started_at_us, &a.id)));
    let mut pager = Pager::new(q);
    for c in calls.iter().filter(|c| {
        q.cursor
            .as_ref()
            .is_none_or(|at| (c.started_at_us, c.id.as_str()) < (at.time_us, at.id.as_str()))
    }) {
        if !pager.take(c.started_at_us, &c.id) {
            break;
        }
    }
    Ok(pager.done())
}

/// Every other query: the store's list walk, newest first, page by page.
fn select_by_walk(state: &ApiState, q: &Query) -> Result<Selected, ApiError> {
    let mut pager = Pager::new(q);
    let mut request = PageRequest {
        limit: WALK_PAGE,
        after: q.cursor.clone(),
        offset: 0,
        count_total: false,
    };
    let mut examined = 0usize;
    loop {
        let page = state.store.list_calls(&q.filter, &request)?;
        for s in &page.items {
            examined += 1;
            if endpoint_matches(state, q.endpoint, &s.id)? && !pager.take(s.started_at_us, &s.id) {
                return Ok(pager.done());
            }
            if examined >= WALK_BUDGET {
                // The page ends here; the cursor continues after this record.
                let mut selected = pager.done();
                selected.has_more = true;
                selected.next = Some(Position {
                    time_us: s.started_at_us,
                    id: s.id.clone(),
                });
                return Ok(selected);
            }
        }
        match page.next {
            Some(next) if page.has_more => request.after = Some(next),
            _ => return Ok(pager.done()),
        }
    }
}

/// `GET /api/v1/prompt-logs`.
pub(super) fn prompt_logs(
    state: &ApiState,
    who: &Principal,
    p: &Params,
    target: &str,
) -> ApiResult {
    let now_us = crate::timefmt::now_unix_us();
    let q = query(who, p, now_us)?;
    audit(state, who, "read prompt logs", target)?;
    let selected = match &q.run_id {
        Some(run) => select_in_run(state, who, p, &q, run)?,
        None => select_by_walk(state, &q)?,
    };
    let mut items = Vec::with_capacity(selected.ids.len());
    for id in &selected.ids {
        // A call that retention removed since it was listed is left out.
        if let Some(call) = state.store.get_call(id)? {
            items.push(entry(&call));
        }
    }
    let next_offset = (selected.has_more && q.cursor.is_none())
        .then(|| q.offset + selected.ids.len())
        .filter(|n| *n <= params::MAX_OFFSET);
    let format = |us: Option<u64>| us.map(crate::timefmt::format_rfc3339_us);
    ok(&PromptLogs {
        count: items.len(),
        items,
        limit: q.limit,
        offset: q.offset,
        has_more: selected.has_more,
        next_offset,
        next_cursor: selected.next.as_ref().map(params::encode_cursor),
        applied_time_window_days: q.window_days,
        from: format(q.filter.from_us),
        to: format(q.filter.to_us),
    })
}

/// A message's content as text: its text, its tool calls, its attachments.
fn content(m: &Message) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(t) = &m.text {
        parts.push(t.clone());
    }
    for tc in &m.tool_calls {
        parts.push(format!("{}({})", tc.name, arguments_text(&tc.arguments)));
    }
    for a in &m.attachments {
        let what = a["media_type"]
            .as_str()
            .or_else(|| a["type"].as_str())
            .unwrap_or("attachment");
        parts.push(format!("[{what}]"));
    }
    parts.join("\n")
}

fn arguments_json(arguments: &Value) -> Value {
    match arguments {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| arguments.clone()),
        other => other.clone(),
    }
}

fn arguments_text(arguments: &Value) -> String {
    match arguments_json(arguments) {
        Value::String(s) => s,
        v => v.to_string(),
    }
}

/// The names of the tools a request offers, in every provider's shape: OpenAI chat
/// (`function.name`), OpenAI responses and Anthropic (`name`), Gemini
/// (`functionDeclarations[].name`).
pub fn tool_names(tools: &[Value]) -> Vec<String> {
    let mut names = Vec::new();
    for t in tools {
        if let Some(n) = t["function"]["name"]
            .as_str()
            .or_else(|| t["name"].as_str())
        {
            names.push(n.to_string());
        }
        for key in ["functionDeclarations", "function_declarations"] {
            for d in t[key].as_array().into_iter().flatten() {
                if let Some(n) = d["name"].as_str() {
                    names.push(n.to_string());
                }
            }
        }
    }
    names
}

fn entry(call: &CallRecord) -> PromptLog {
    let request = call.request.as_ref();
    let response = call.response.as_ref();
    let system_prompt = request.and_then(|r| r.system.clone());
    let messages: Vec<PromptMessage> = request
        .map(|r| {
            r.messages
                .iter()
                .map(|m| PromptMessage {
                    role: m.role.clone(),
                    content: content(m),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut prompt_parts: Vec<String> = Vec::new();
    if let Some(s) = &system_prompt {
        prompt_parts.push(format!("system: {s}"));
    }
    for m in &messages {
        prompt_parts.push(format!("{}: {}", m.role, m.content));
    }
    let tools: &[Value] = request.map(|r| r.tools.as_slice()).unwrap_or(&[]);
    let parse_incomplete = request.is_none()
        || (response.is_none() && call.status == Some(crate::record::CallStatus::Success))
        || !call.parse_notes.is_empty()
        || !call.truncated_parts.is_empty()
        || call.truncated;
    PromptLog {
        id: call.id.clone(),
        run_id: call.invocation_id.clone(),
        session_id: call.metadata.session_id.clone(),
        turn_index: call.round,
        attempt: call.retry + 1,
        endpoint: call.endpoint,
        provider: call.provider.clone(),
        model: call.model.clone().or_else(|| call.response_model.clone()),
        agent: call.metadata.agent.clone(),
        tenant: call.metadata.tenant.clone(),
        user_id: call.metadata.user_id.clone(),
        prompt_name: call.metadata.prompt.clone(),
        status: call.status,
        occurred_at: call.started_at.clone(),
        stored_at: call.stored_at.clone(),
        system_prompt,
        messages,
        prompt: prompt_parts.join("\n\n"),
        response: response.and_then(|r| r.text.clone()),
        response_tool_calls: response
            .map(|r| {
                r.tool_calls
                    .iter()
                    .map(|tc| AnswerToolCall {
                        name: tc.name.clone(),
                        arguments: arguments_json(&tc.arguments),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        tools_offered: !tools.is_empty(),
        tool_names: tool_names(tools),
        parse_incomplete,
        parse_notes: call.parse_notes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::is_round_kind;
    use serde_json::json;

    /// `is_round_kind` stays the one rule: the kinds the filter lists are the round kinds.
    #[test]
    fn the_kind_filter_lists_exactly_the_round_kinds() {
        for k in ["openai", "anthropic", "gemini", "http", "mcp"] {
            let listed = [
                ProviderKind::Openai,
                ProviderKind::Anthropic,
                ProviderKind::Gemini,
            ]
            .iter()
            .any(|p| p.as_str() == k);
            assert_eq!(listed, is_round_kind(k), "{k}");
        }
    }

    #[test]
    fn tool_names_are_read_from_every_providers_shape() {
        let tools = vec![
            json!({"type": "function", "function": {"name": "multiply"}}),
            json!({"type": "function", "name": "search"}),
            json!({"name": "get_weather", "input_schema": {}}),
            json!({"functionDeclarations": [{"name": "a"}, {"name": "b"}]}),
        ];
        assert_eq!(
            tool_names(&tools),
            ["multiply", "search", "get_weather", "a", "b"]
        );
    }

    #[test]
    fn an_entry_carries_the_conversation_as_text() {
        let call = CallRecord {
            id: "c_1".into(),
            invocation_id: "run".into(),
            round: 2,
            kind: "openai".into(),
            status: Some(crate::record::CallStatus::Success),
            request: Some(crate::record::RequestView {
                system: Some("be brief".into()),
                messages: vec![
                    Message {
                        role: "user".into(),
                        text: Some("6 times 7?".into()),
                        ..Message::default()
                    },
                    Message {
                        role: "assistant".into(),
                        tool_calls: vec![crate::record::ToolCall {
                            id: Some("t1".into()),
                            name: "multiply".into(),
                            arguments: json!("{\"a\":6,\"b\":7}"),
                        }],
                        ..Message::default()
                    },
                ],
                tools: vec![json!({"type": "function", "function": {"name": "multiply"}})],
                ..Default::default()
            }),
            response: Some(crate::record::ResponseView {
                text: Some("42".into()),
                ..Default::default()
            }),
            ..CallRecord::default()
        };
        let e = entry(&call);
        assert_eq!(e.turn_index, 2);
        assert_eq!(e.messages[1].content, "multiply({\"a\":6,\"b\":7})");
        assert_eq!(
            e.prompt,
            "system: be brief\n\nuser: 6 times 7?\n\nassistant: multiply({\"a\":6,\"b\":7})"
        );
        assert_eq!(e.response.as_deref(), Some("42"));
        assert!(e.tools_offered && e.tool_names == ["multiply"]);
        assert!(!e.parse_incomplete);
        let bare = entry(&CallRecord {
            request: None,
            ..call
        });
        assert!(bare.parse_incomplete);
    }
}
