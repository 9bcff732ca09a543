//! Anthropic messages (`/v1/messages`): content blocks in requests and responses,
//! and the `message_start` / `content_block_*` / `message_delta` / `message_stop`
//! stream, including `event: error` in the middle of a 200 stream.

use super::common::{
    decoded_size, error_from_object, event_json, mark_content, note, params_except, str_at,
    sum_present, u64_at, value_text, Texts,
};
use super::Accumulator;
use crate::record::{Message, ParsedExchange, RequestView, ResponseView, ToolCall, Usage};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// `input_tokens` excludes cached tokens at Anthropic; the normalised input is
/// their sum with cache reads and writes.
pub fn usage(u: &Value) -> Usage {
    let base = u64_at(u, &["input_tokens"]);
    let cache_read = u64_at(u, &["cache_read_input_tokens"]);
    let cache_creation = u64_at(u, &["cache_creation_input_tokens"]);
    let input = sum_present(&[base, cache_read, cache_creation]);
    let output = u64_at(u, &["output_tokens"]);
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_creation_tokens: cache_creation,
        cache_creation_1h_tokens: u64_at(u, &["cache_creation", "ephemeral_1h_input_tokens"]),
        reasoning_tokens: None,
        total_tokens: sum_present(&[input, output]),
    }
}

fn source_attachment(kind: &str, block: &Value) -> Value {
    let src = block.get("source").unwrap_or(&Value::Null);
    let mut summary = Map::new();
    summary.insert("type".into(), json!(kind));
    if let Some(mt) = str_at(src, "media_type") {
        summary.insert("media_type".into(), json!(mt));
    }
    match str_at(src, "type") {
        Some("url") => {
            summary.insert("url".into(), json!(str_at(src, "url")));
        }
        Some("file") => {
            summary.insert("file_id".into(), json!(str_at(src, "file_id")));
        }
        _ => {
            if let Some(data) = src.get("data") {
                summary.insert("size".into(), json!(decoded_size(&value_text(data))));
            }
        }
    }
    if let Some(title) = str_at(block, "title") {
        summary.insert("title".into(), json!(title));
    }
    Value::Object(summary)
}

fn blocks_text(content: Option<&Value>, attachments: &mut Vec<Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => {
            let mut texts = Texts::default();
            for b in blocks {
                match str_at(b, "type").unwrap_or("") {
                    "text" => {
                        if let Some(t) = str_at(b, "text") {
                            texts.push(t);
                        }
                    }
                    kind @ ("image" | "document") => attachments.push(source_attachment(kind, b)),
                    other => attachments.push(json!({ "type": other })),
                }
            }
            texts.join("\n")
        }
        Value::Null => None,
        other => Some(value_text(other)),
    }
}

fn is_empty(m: &Message) -> bool {
    m.text.is_none() && m.tool_calls.is_empty() && m.attachments.is_empty()
}

pub fn parse_request(req: &Value, view: &mut RequestView) {
    let mut ignored = Vec::new();
    view.system = blocks_text(req.get("system"), &mut ignored);
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = str_at(m, "role").unwrap_or("user").to_owned();
        let blocks = match m.get("content") {
            Some(Value::Array(blocks)) => blocks,
            other => {
                let mut msg = Message {
                    role,
                    ..Message::default()
                };
                msg.text = blocks_text(other, &mut msg.attachments);
                view.messages.push(msg);
                continue;
            }
        };
        // Tool results ride in user messages; each becomes its own `tool` message so
        // every provider's history reads the same way.
        let mut cur = Message {
            role: role.clone(),
            ..Message::default()
        };
        let mut texts = Texts::default();
        let mut emitted = false;
        for b in blocks {
            let kind = str_at(b, "type").unwrap_or("");
            match kind {
                "text" => {
                    if let Some(t) = str_at(b, "text") {
                        texts.push(t);
                    }
                }
                "image" | "document" => cur.attachments.push(source_attachment(kind, b)),
                "tool_use" | "server_tool_use" => cur.tool_calls.push(ToolCall {
                    id: str_at(b, "id").map(str::to_owned),
                    name: str_at(b, "name").unwrap_or("").to_owned(),
                    arguments: b.get("input").cloned().unwrap_or(Value::Null),
                }),
                k if k == "tool_result" || k.ends_with("_tool_result") => {
                    cur.text = std::mem::take(&mut texts).join("\n");
                    if !is_empty(&cur) {
                        view.messages.push(std::mem::replace(
                            &mut cur,
                            Message {
                                role: role.clone(),
                                ..Message::default()
                            },
                        ));
                    }
                    let mut msg = Message {
                        role: "tool".into(),
                        tool_call_id: str_at(b, "tool_use_id").map(str::to_owned),
                        ..Message::default()
                    };
                    msg.text = blocks_text(b.get("content"), &mut msg.attachments);
                    view.messages.push(msg);
                    emitted = true;
                }
                other => cur.attachments.push(json!({ "type": other })),
            }
        }
        cur.text = texts.join("\n");
        if !is_empty(&cur) || !emitted {
            view.messages.push(cur);
        }
    }
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
        view.tools = tools.clone();
    }
    view.params = params_except(req, &["model", "messages", "system", "tools"]);
}

#[derive(Debug, Default, Clone)]
struct Block {
    kind: String,
    text: String,
    call: Option<ToolCall>,
    /// Concatenated `input_json_delta` pieces of a tool_use block.
    json: String,
}

fn view_of(blocks: &[Block], out: &mut ParsedExchange) -> ResponseView {
    let mut text = Texts::default();
    let mut thinking = Texts::default();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.kind.as_str() {
            "text" => text.push(&b.text),
            "thinking" => thinking.push(&b.text),
            "redacted_thinking" => thinking.push("[redacted thinking]"),
            _ => {}
        }
        if let Some(call) = &b.call {
            let mut call = call.clone();
            if !b.json.is_empty() {
                call.arguments = match serde_json::from_str(&b.json) {
                    Ok(v) => v,
                    Err(e) => {
                        note(out, format!("tool_use input is not valid JSON: {e}"));
                        Value::String(b.json.clone())
                    }
                };
            }
            tool_calls.push(call);
        }
    }
    ResponseView {
        text: text.join("\n"),
        thinking: thinking.join("\n"),
        refusal: None,
        tool_calls,
    }
}

fn block_of(b: &Value) -> Block {
    let kind = str_at(b, "type").unwrap_or("").to_owned();
    let text = str_at(b, "text")
        .or_else(|| str_at(b, "thinking"))
        .unwrap_or("")
        .to_owned();
    let call = matches!(kind.as_str(), "tool_use" | "server_tool_use").then(|| ToolCall {
        id: str_at(b, "id").map(str::to_owned),
        name: str_at(b, "name").unwrap_or("").to_owned(),
        arguments: b.get("input").cloned().unwrap_or(Value::Null),
    });
    Block {
        kind,
        text,
        call,
        json: String::new(),
    }
}

pub fn parse_response(v: &Value, out: &mut ParsedExchange) {
    if str_at(v, "type") == Some("error") {
        if let Some(e) = v.get("error").and_then(Value::as_object) {
            out.error = Some(error_from_object(e));
        }
        out.failed_in_body = true;
        return;
    }
    if let Some(m) = str_at(v, "model") {
        out.response_model = Some(m.to_owned());
    }
    let blocks: Vec<Block> = v
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(block_of)
        .collect();
    out.response = view_of(&blocks, out);
    out.stop_reason = str_at(v, "stop_reason").map(str::to_owned);
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        out.usage = usage(u);
        out.raw_usage = Some(u.clone());
    }
}

/// Streamed message events, blocks accumulated per `index`.
#[derive(Debug, Default)]
pub struct MessagesStream {
    blocks: BTreeMap<u64, Block>,
    /// message_start's usage with each message_delta's (cumulative) fields laid over it,
    /// because message_delta may omit the input counts.
    usage: Option<Map<String, Value>>,
    stopped: bool,
}

impl Accumulator for MessagesStream {
    fn event(&mut self, name: Option<&str>, data: &str, end: usize, out: &mut ParsedExchange) {
        let Some(v) = event_json(data, end, out) else {
            return;
        };
        let kind = str_at(&v, "type").or(name).unwrap_or("").to_owned();
        let index = u64_at(&v, &["index"]).unwrap_or(0);
        match kind.as_str() {
            "message_start" => {
                let msg = v.get("message").unwrap_or(&Value::Null);
                if let Some(m) = str_at(msg, "model") {
                    out.response_model = Some(m.to_owned());
                }
                if let Some(u) = msg.get("usage").and_then(Value::as_object) {
                    self.usage = Some(u.clone());
                }
            }
            "content_block_start" => {
                let block = block_of(v.get("content_block").unwrap_or(&Value::Null));
                if block.call.is_some()
                    || block.kind == "redacted_thinking"
                    || !block.text.is_empty()
                {
                    mark_content(out, end);
                }
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                let block = self.blocks.entry(index).or_default();
                match str_at(delta, "type").unwrap_or("") {
                    "text_delta" | "thinking_delta" => {
                        let piece = str_at(delta, "text")
                            .or_else(|| str_at(delta, "thinking"))
                            .unwrap_or("");
                        block.text.push_str(piece);
                        if !piece.is_empty() {
                            mark_content(out, end);
                        }
                    }
                    "input_json_delta" => {
                        block
                            .json
                            .push_str(str_at(delta, "partial_json").unwrap_or(""));
                    }
                    "signature_delta" | "citations_delta" => {}
                    other => note(out, format!("unknown Anthropic delta type {other}")),
                }
            }
            "content_block_stop" | "ping" => {}
            "message_delta" => {
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.stop_reason = Some(reason.to_owned());
                }
                if let Some(u) = v.get("usage").and_then(Value::as_object) {
                    let merged = self.usage.get_or_insert_with(Map::new);
                    for (k, val) in u {
                        if !val.is_null() {
                            merged.insert(k.clone(), val.clone());
                        }
                    }
                }
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let err = v.get("error").and_then(Value::as_object);
                out.error = Some(err.map(error_from_object).unwrap_or_default());
                out.failed_in_body = true;
            }
            other => note(out, format!("unknown Anthropic stream event {other}")),
        }
    }

    fn finish(&mut self, out: &mut ParsedExchange) {
        let blocks: Vec<Block> = std::mem::take(&mut self.blocks).into_values().collect();
        out.response = view_of(&blocks, out);
        if let Some(u) = self.usage.take() {
            let u = Value::Object(u);
            out.usage = usage(&u);
            out.raw_usage = Some(u);
        }
        if !self.stopped && !out.failed_in_body {
            note(out, "stream ended without message_stop");
        }
    }
}
