//! The OpenAI Responses API (`/v1/responses`): item-list input and output,
//! `event:` + `data:` streams whose usage arrives only with the terminal
//! `response.completed` / `response.failed` / `response.incomplete` event.

use super::common::{
    append, decoded_size, error_from_object, event_json, mark_content, note, params_except, str_at,
    value_text, Texts,
};
use super::openai;
use super::Accumulator;
use crate::record::{Message, ParsedExchange, RequestView, ResponseView, ToolCall};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn content_text(content: Option<&Value>, attachments: &mut Vec<Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut texts = Texts::default();
            for part in parts {
                match str_at(part, "type").unwrap_or("") {
                    "input_text" | "output_text" | "text" => {
                        if let Some(t) = str_at(part, "text") {
                            texts.push(t);
                        }
                    }
                    "refusal" => {}
                    "input_image" => match str_at(part, "image_url") {
                        Some(url) => attachments.push(super::common::url_attachment("image", url)),
                        None => attachments
                            .push(json!({"type": "image", "file_id": str_at(part, "file_id")})),
                    },
                    "input_file" => attachments.push(json!({
                        "type": "file",
                        "filename": str_at(part, "filename"),
                        "file_id": str_at(part, "file_id"),
                        "url": str_at(part, "file_url"),
                        "size": str_at(part, "file_data").map(decoded_size),
                    })),
                    other => attachments.push(json!({ "type": other })),
                }
            }
            texts.join("\n")
        }
        Value::Null => None,
        other => Some(value_text(other)),
    }
}

fn summary_text(item: &Value) -> Option<String> {
    let mut texts = Texts::default();
    for key in ["summary", "content"] {
        for part in item
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = str_at(part, "text") {
                texts.push(t);
            }
        }
    }
    texts.join("\n")
}

pub fn parse_request(req: &Value, view: &mut RequestView) {
    let mut system = Texts::default();
    if let Some(instr) = str_at(req, "instructions") {
        system.push(instr);
    }
    match req.get("input") {
        Some(Value::String(s)) => view.messages.push(Message {
            role: "user".into(),
            text: Some(s.clone()),
            ..Message::default()
        }),
        Some(Value::Array(items)) => {
            for item in items {
                let kind = str_at(item, "type").unwrap_or("message");
                let mut msg = Message::default();
                match kind {
                    "message" => {
                        msg.role = str_at(item, "role").unwrap_or("user").to_owned();
                        msg.text = content_text(item.get("content"), &mut msg.attachments);
                        if msg.role == "system" || msg.role == "developer" {
                            if let Some(t) = &msg.text {
                                system.push(t);
                            }
                            continue;
                        }
                    }
                    "function_call" | "custom_tool_call" => {
                        msg.role = "assistant".into();
                        msg.tool_calls.push(ToolCall {
                            id: str_at(item, "call_id").map(str::to_owned),
                            name: str_at(item, "name").unwrap_or("").to_owned(),
                            arguments: item
                                .get("arguments")
                                .or_else(|| item.get("input"))
                                .cloned()
                                .unwrap_or(Value::Null),
                        });
                    }
                    "reasoning" => {
                        msg.role = "assistant".into();
                        msg.attachments.push(json!({
                            "type": "reasoning",
                            "summary": summary_text(item),
                            "encrypted": item.get("encrypted_content").is_some_and(|e| !e.is_null()),
                        }));
                    }
                    other if other.ends_with("_output") => {
                        msg.role = "tool".into();
                        msg.tool_call_id = str_at(item, "call_id").map(str::to_owned);
                        msg.text = match item.get("output") {
                            Some(Value::Array(_)) => {
                                content_text(item.get("output"), &mut msg.attachments)
                            }
                            Some(v) => Some(value_text(v)),
                            None => None,
                        };
                    }
                    other => {
                        msg.role = "assistant".into();
                        msg.attachments.push(json!({ "type": other }));
                    }
                }
                view.messages.push(msg);
            }
        }
        _ => {}
    }
    view.system = system.join("\n");
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        view.tools = tools.clone();
    }
    view.params = params_except(req, &["model", "input", "instructions", "tools"]);
    if let Some(effort) = req.pointer("/reasoning/effort").filter(|e| !e.is_null()) {
        view.params
            .insert("reasoning_effort".into(), effort.clone());
    }
}

#[derive(Debug, Default, Clone)]
struct Item {
    kind: String,
    text: Option<String>,
    refusal: Option<String>,
    thinking: Option<String>,
    call: Option<ToolCall>,
}

impl Item {
    fn from_output(item: &Value) -> Item {
        let kind = str_at(item, "type").unwrap_or("").to_owned();
        let mut out = Item {
            kind: kind.clone(),
            ..Item::default()
        };
        match kind.as_str() {
            "message" => {
                let mut texts = Texts::default();
                let mut refusals = Texts::default();
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = str_at(part, "text") {
                        texts.push(t);
                    }
                    if let Some(t) = str_at(part, "refusal") {
                        refusals.push(t);
                    }
                }
                out.text = texts.join("");
                out.refusal = refusals.join("");
            }
            "reasoning" => out.thinking = summary_text(item),
            "function_call" | "custom_tool_call" => {
                out.call = Some(ToolCall {
                    id: str_at(item, "call_id").map(str::to_owned),
                    name: str_at(item, "name").unwrap_or("").to_owned(),
                    arguments: item
                        .get("arguments")
                        .or_else(|| item.get("input"))
                        .cloned()
                        .unwrap_or(Value::Null),
                })
            }
            k if k.ends_with("_call") => {
                // Hosted tools (web search, file search, code interpreter, MCP) run
                // server-side; recorded as calls named after the tool.
                out.call = Some(ToolCall {
                    id: str_at(item, "id").map(str::to_owned),
                    name: str_at(item, "name")
                        .map(str::to_owned)
                        .unwrap_or_else(|| k.trim_end_matches("_call").to_owned()),
                    arguments: item
                        .get("action")
                        .or_else(|| item.get("arguments"))
                        .cloned()
                        .unwrap_or(Value::Null),
                })
            }
            _ => {}
        }
        out
    }
}

fn view_of(items: &[Item]) -> ResponseView {
    let mut text = Texts::default();
    let mut refusal = Texts::default();
    let mut thinking = Texts::default();
    let mut tool_calls = Vec::new();
    for item in items {
        if let Some(t) = &item.text {
            text.push(t);
        }
        if let Some(t) = &item.refusal {
            refusal.push(t);
        }
        if let Some(t) = &item.thinking {
            thinking.push(t);
        }
        if let Some(c) = &item.call {
            tool_calls.push(c.clone());
        }
    }
    ResponseView {
        text: text.join("\n"),
        thinking: thinking.join("\n"),
        refusal: refusal.join("\n"),
        tool_calls,
    }
}

/// Reads a full response object (the non-streamed body, or the one a terminal
/// stream event carries): model, status, usage, error and, when `with_output`, the output.
fn apply_response(resp: &Value, out: &mut ParsedExchange, with_output: bool) {
    if let Some(m) = str_at(resp, "model") {
        out.response_model = Some(m.to_owned());
    }
    if let Some(status) = str_at(resp, "status") {
        out.stop_reason = Some(status.to_owned());
        if status == "failed" {
            out.failed_in_body = true;
        }
    }
    if let Some(err) = resp.get("error").and_then(Value::as_object) {
        out.error = Some(error_from_object(err));
        out.failed_in_body = true;
    }
    if let Some(u) = resp.get("usage").filter(|u| u.is_object()) {
        out.usage = openai::usage(u);
        out.raw_usage = Some(u.clone());
    }
    if with_output {
        let items: Vec<Item> = resp
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(Item::from_output)
            .collect();
        out.response = view_of(&items);
    }
}

pub fn parse_response(v: &Value, out: &mut ParsedExchange) {
    if v.get("output").is_none() && v.get("error").is_some_and(|e| !e.is_null()) {
        out.error = super::common::error_from_body(v);
        out.failed_in_body = true;
        return;
    }
    apply_response(v, out, true);
}

/// Streamed Responses API events, accumulated per `output_index`.
#[derive(Debug, Default)]
pub struct ResponsesStream {
    items: BTreeMap<u64, Item>,
    terminal: Option<Value>,
    unknown: Vec<String>,
}

impl ResponsesStream {
    fn item(&mut self, v: &Value) -> &mut Item {
        let index = super::common::u64_at(v, &["output_index"]).unwrap_or(0);
        self.items.entry(index).or_default()
    }
}

/// Event types that carry nothing the record needs (their content also arrives
/// in deltas or in the terminal event).
fn ignorable(kind: &str) -> bool {
    matches!(
        kind,
        "response.content_part.added"
            | "response.content_part.done"
            | "response.output_text.done"
            | "response.refusal.done"
            | "response.reasoning_summary_part.added"
            | "response.reasoning_summary_part.done"
            | "response.reasoning_summary_text.done"
            | "response.reasoning_text.done"
            | "response.output_text.annotation.added"
            | "response.custom_tool_call_input.delta"
            | "response.custom_tool_call_input.done"
    ) || kind.contains("_call.")
        || kind.contains("_call_")
        || kind.starts_with("response.audio")
        || kind.starts_with("response.mcp")
}

impl Accumulator for ResponsesStream {
    fn event(&mut self, name: Option<&str>, data: &str, end: usize, out: &mut ParsedExchange) {
        let Some(v) = event_json(data, end, out) else {
            return;
        };
        let kind = str_at(&v, "type").or(name).unwrap_or("").to_owned();
        let delta = str_at(&v, "delta").unwrap_or("");
        match kind.as_str() {
            "response.created" | "response.in_progress" | "response.queued" => {
                if let Some(m) = v.pointer("/response/model").and_then(Value::as_str) {
                    out.response_model = Some(m.to_owned());
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                let item = Item::from_output(v.get("item").unwrap_or(&Value::Null));
                let has_call = item.call.is_some();
                let slot = self.item(&v);
                if kind.ends_with(".added") {
                    // Calls are announced with their name; text arrives as deltas.
                    slot.kind = item.kind;
                    if let Some(call) = item.call {
                        slot.call = Some(call);
                    }
                } else {
                    *slot = item;
                }
                if has_call {
                    mark_content(out, end);
                }
            }
            "response.output_text.delta" => {
                append(&mut self.item(&v).text, delta);
                if !delta.is_empty() {
                    mark_content(out, end);
                }
            }
            "response.refusal.delta" => {
                append(&mut self.item(&v).refusal, delta);
                if !delta.is_empty() {
                    mark_content(out, end);
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                append(&mut self.item(&v).thinking, delta);
                if !delta.is_empty() {
                    mark_content(out, end);
                }
            }
            "response.function_call_arguments.delta" => {
                let slot = self.item(&v);
                let call = slot.call.get_or_insert_with(ToolCall::default);
                let mut args = match &call.arguments {
                    Value::String(s) => s.clone(),
                    _ => String::new(),
                };
                args.push_str(delta);
                call.arguments = Value::String(args);
                mark_content(out, end);
            }
            "response.function_call_arguments.done" => {
                if let Some(args) = v.get("arguments") {
                    let slot = self.item(&v);
                    slot.call.get_or_insert_with(ToolCall::default).arguments = args.clone();
                }
            }
            "response.completed" | "response.failed" | "response.incomplete" => {
                if let Some(resp) = v.get("response") {
                    self.terminal = Some(resp.clone());
                }
            }
            "error" => {
                let obj = v.get("error").and_then(Value::as_object).or(v.as_object());
                if let Some(obj) = obj {
                    out.error = Some(error_from_object(obj));
                }
                out.failed_in_body = true;
            }
            k if ignorable(k) => {}
            k => {
                if !self.unknown.iter().any(|u| u == k) {
                    self.unknown.push(k.to_owned());
                    note(out, format!("unknown Responses stream event {k}"));
                }
            }
        }
    }

    fn finish(&mut self, out: &mut ParsedExchange) {
        let items: Vec<Item> = std::mem::take(&mut self.items).into_values().collect();
        out.response = view_of(&items);
        match self.terminal.take() {
            Some(resp) => {
                let has_output = resp
                    .get("output")
                    .and_then(Value::as_array)
                    .is_some_and(|o| !o.is_empty());
                // The terminal event repeats the whole output; it is the authority
                // when present, the deltas are the fallback.
                apply_response(&resp, out, has_output);
            }
            None => note(out, "stream ended without response.completed"),
        }
    }
}
