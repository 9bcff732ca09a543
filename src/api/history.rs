//! Which leading messages of a call's request repeat earlier turns, derived here once
//! for `GET /api/v1/calls/{id}` (the page marks them): the **memory** a session's run
//! is sent again from the session's previous run, then the **earlier rounds** of its
//! own run (the previous round's request and answer), so only what is new in a round
//! reads as new.
//!
//! Bounded: the previous run of the session (the newest that started before this
//! run) and the previous round of this run are read, a few records each at most.
//! Messages compare by role, text, tool calls (id, name, arguments) and the tool
//! result's id; a response compares as the assistant message a client sends back.

use crate::record::{CallRecord, Message};
use crate::store::summary::{tag, Filter};
use crate::store::{PageRequest, Store, StoreError};
use serde::Serialize;
use serde_json::Value;

/// Call metadata read at most while looking for a run's last round or a round's
/// predecessor (tool calls and retries sit among them).
const MAX_READS: usize = 64;

/// The leading messages of a request that repeat earlier turns: `memory` of them from
/// the session's previous run, then `earlier_rounds` from this run's previous round.
#[derive(Debug, Default, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct History {
    /// The first `memory` messages repeat the session's previous run (its last
    /// round's request and answer): short-term memory. Never the run's new user turn.
    pub memory: usize,
    /// The run they repeat; null without memory.
    pub memory_run_id: Option<String>,
    /// The next `earlier_rounds` messages repeat this run's previous round (its
    /// request and answer); 0 in a run's first round.
    pub earlier_rounds: usize,
}

/// The history of an LLM call's request; `None` for a tool call or a call whose
/// request was not parsed.
pub fn of_call(store: &Store, call: &CallRecord) -> Result<Option<History>, StoreError> {
    if super::answers::is_tool_call(call) {
        return Ok(None);
    }
    let Some(request) = call.request.as_ref() else {
        return Ok(None);
    };
    let messages = &request.messages;
    let mut history = History::default();
    if let Some(session) = call.metadata.session_id.as_deref() {
        if let Some((run_id, turns)) = previous_run_turns(store, &call.invocation_id, session)? {
            history.memory = memory(messages, &turns);
            if history.memory > 0 {
                history.memory_run_id = Some(run_id);
            }
        }
    }
    if call.round > 1 {
        if let Some(turns) = previous_round_turns(store, call)? {
            let same = messages
                .iter()
                .zip(&turns)
                .take_while(|(a, b)| same_message(a, b))
                .count();
            history.earlier_rounds = same.saturating_sub(history.memory);
        }
    }
    Ok(Some(history))
}

/// How many leading messages repeat `earlier` (each found among its turns, so a
/// history the client trimmed still counts), stopping before the run's new user
/// turn: the request's last user message.
fn memory(messages: &[Message], earlier: &[Message]) -> usize {
    let new_turn = messages.iter().rposition(|m| m.role == "user").unwrap_or(0);
    messages[..new_turn]
        .iter()
        .take_while(|m| earlier.iter().any(|e| same_message(m, e)))
        .count()
}

/// A call's conversation as its client would send it next: the request's messages,
/// then the answer as an assistant message.
fn turns(call: &CallRecord) -> Vec<Message> {
    let mut out = call
        .request
        .as_ref()
        .map(|r| r.messages.clone())
        .unwrap_or_default();
    if let Some(r) = call.response.as_ref() {
        out.push(Message {
            role: "assistant".into(),
            text: r.text.clone(),
            tool_calls: r.tool_calls.clone(),
            ..Message::default()
        });
    }
    out
}

/// The newest run of `session` that started before `run_id`, and its last round's
/// turns.
fn previous_run_turns(
    store: &Store,
    run_id: &str,
    session: &str,
) -> Result<Option<(String, Vec<Message>)>, StoreError> {
    let Some(run) = store.get_invocation(run_id)? else {
        return Ok(None);
    };
    let filter = Filter {
        eq: vec![(tag::SESSION, vec![session.to_string()])],
        to_us: Some(run.started_at_us),
        ..Filter::default()
    };
    let page = store.list_invocations(
        &filter,
        &PageRequest {
            limit: 1,
            ..PageRequest::default()
        },
    )?;
    let Some(previous) = page.items.into_iter().next() else {
        return Ok(None);
    };
    // The last round's latest attempt is the last LLM call in round order (sled
    // lists tool calls first, PostgreSQL by start time).
    let ids = store.invocation_call_ids(&previous.id)?;
    for id in ids.iter().rev().take(MAX_READS) {
        match store.get_call_meta(id)? {
            Some(meta) if !super::answers::is_tool_call(&meta) => {
                return Ok(store
                    .get_call(id)?
                    .filter(|c| c.request.is_some())
                    .map(|c| (previous.id, turns(&c))));
            }
            _ => continue,
        }
    }
    Ok(None)
}

/// The turns of the previous round of `call`'s run (its latest attempt).
fn previous_round_turns(
    store: &Store,
    call: &CallRecord,
) -> Result<Option<Vec<Message>>, StoreError> {
    let ids = store.invocation_call_ids(&call.invocation_id)?;
    let Some(at) = ids.iter().position(|id| *id == call.id) else {
        return Ok(None);
    };
    // Before it: this round's earlier attempts, the tool calls between the rounds
    // (PostgreSQL lists by start time), then the previous round's attempts, the
    // latest last.
    for id in ids[..at].iter().rev().take(MAX_READS) {
        let Some(meta) = store.get_call_meta(id)? else {
            continue;
        };
        if super::answers::is_tool_call(&meta) {
            continue;
        }
        if meta.round + 1 == call.round {
            return Ok(store.get_call(id)?.map(|c| turns(&c)));
        }
        if meta.round + 1 < call.round {
            break;
        }
    }
    Ok(None)
}

/// The same turn: role, text, tool calls and the tool result's id (attachments are
/// summaries, not compared).
fn same_message(a: &Message, b: &Message) -> bool {
    a.role == b.role
        && a.text.as_deref().unwrap_or("") == b.text.as_deref().unwrap_or("")
        && a.tool_call_id == b.tool_call_id
        && a.tool_calls.len() == b.tool_calls.len()
        && a.tool_calls.iter().zip(&b.tool_calls).all(|(x, y)| {
            x.id == y.id && x.name == y.name && arguments(&x.arguments) == arguments(&y.arguments)
        })
}

/// Tool arguments as a value: OpenAI sends them as JSON text, others as an object.
fn arguments(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ToolCall;

    fn msg(role: &str, text: &str) -> Message {
        Message {
            role: role.into(),
            text: Some(text.into()),
            ..Message::default()
        }
    }

    #[test]
    fn memory_is_the_leading_turns_of_the_previous_run_never_the_new_user_turn() {
        let earlier = [msg("user", "hi"), msg("assistant", "hello")];
        // The same words again are the new turn, not memory.
        let asked_again = [
            msg("user", "hi"),
            msg("assistant", "hello"),
            msg("user", "hi"),
        ];
        assert_eq!(memory(&asked_again, &earlier), 2);
        // Few-shot examples that no earlier run sent are not memory.
        let few_shot = [
            msg("user", "2+2?"),
            msg("assistant", "4"),
            msg("user", "hi"),
        ];
        assert_eq!(memory(&few_shot, &earlier), 0);
        // A trimmed history: the turns kept still count.
        let trimmed = [msg("assistant", "hello"), msg("user", "next")];
        assert_eq!(memory(&trimmed, &earlier), 1);
        assert_eq!(memory(&[], &earlier), 0);
    }

    #[test]
    fn tool_arguments_compare_as_values_whatever_their_encoding() {
        let call = |arguments: Value| Message {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: Some("call_1".into()),
                name: "weather".into(),
                arguments,
            }],
            ..Message::default()
        };
        assert!(same_message(
            &call(Value::String("{\"city\": \"Oslo\"}".into())),
            &call(serde_json::json!({"city": "Oslo"}))
        ));
        assert!(!same_message(
            &call(serde_json::json!({"city": "Oslo"})),
            &call(serde_json::json!({"city": "Bergen"}))
        ));
    }
}
