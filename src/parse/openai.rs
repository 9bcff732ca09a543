//! OpenAI chat completions and embeddings, and every OpenAI-compatible provider
//! (Azure, Groq, Mistral, DeepSeek, OpenRouter, Together, Ollama).
//!
//! Compatible providers drift from OpenAI in small ways, all accepted here: usage
//! on the finish chunk or under `x_groq`, reasoning as `delta.reasoning` or
//! `delta.reasoning_content`, DeepSeek's `prompt_cache_hit_tokens`, OpenRouter's
//! comment lines and error chunks inside a 200 stream.

use super::common::{
    append, decoded_size, error_from_body, error_from_object, event_json, mark_content, note,
    params_except, str_at, sum_present, u64_at, url_attachment, value_text, Texts,
};
use super::Accumulator;
use crate::record::{Message, ParsedExchange, RequestView, ToolCall, Usage};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Usage of chat completions, the Responses API and embeddings (same field family).
pub fn usage(u: &Value) -> Usage {
    let input = u64_at(u, &["prompt_tokens"]).or_else(|| u64_at(u, &["input_tokens"]));
    let output = u64_at(u, &["completion_tokens"]).or_else(|| u64_at(u, &["output_tokens"]));
    let cache_read = u64_at(u, &["prompt_tokens_details", "cached_tokens"])
        .or_else(|| u64_at(u, &["input_tokens_details", "cached_tokens"]))
        .or_else(|| u64_at(u, &["prompt_cache_hit_tokens"]));
    let reasoning = u64_at(u, &["completion_tokens_details", "reasoning_tokens"])
        .or_else(|| u64_at(u, &["output_tokens_details", "reasoning_tokens"]));
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: cache_read,
        cache_creation_tokens: None,
        cache_creation_1h_tokens: None,
        reasoning_tokens: reasoning,
        total_tokens: sum_present(&[input, output]),
    }
}

fn set_usage(out: &mut ParsedExchange, u: &Value) {
    out.usage = usage(u);
    out.raw_usage = Some(u.clone());
}

/// Text of a message `content`: a string, or an array of parts whose non-text
/// parts become attachment summaries.
fn content_text(content: Option<&Value>, attachments: &mut Vec<Value>) -> Option<String> {
    match content? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut texts = Texts::default();
            for part in parts {
                let kind = str_at(part, "type").unwrap_or("");
                match kind {
                    "text" | "input_text" | "output_text" => {
                        if let Some(t) = str_at(part, "text") {
                            texts.push(t);
                        }
                    }
                    "refusal" => {}
                    "image_url" => {
                        let url = part
                            .get("image_url")
                            .and_then(|i| str_at(i, "url").or_else(|| i.as_str()))
                            .unwrap_or("");
                        attachments.push(url_attachment("image", url));
                    }
                    "input_audio" => {
                        let audio = part.get("input_audio").unwrap_or(&Value::Null);
                        attachments.push(json!({
                            "type": "audio",
                            "format": str_at(audio, "format"),
                            "size": str_at(audio, "data").map(decoded_size),
                        }));
                    }
                    "file" => {
                        let file = part.get("file").unwrap_or(&Value::Null);
                        let mut summary = json!({
                            "type": "file",
                            "filename": str_at(file, "filename"),
                            "file_id": str_at(file, "file_id"),
                        });
                        if let (Some(data), Some(obj)) =
                            (str_at(file, "file_data"), summary.as_object_mut())
                        {
                            obj.insert("size".into(), json!(decoded_size(data)));
                        }
                        attachments.push(summary);
                    }
                    other => attachments.push(json!({ "type": other })),
                }
            }
            texts.join("\n")
        }
        Value::Null => None,
        other => Some(value_text(other)),
    }
}

fn tool_call(tc: &Value) -> ToolCall {
    let func = tc.get("function").unwrap_or(tc);
    ToolCall {
        id: str_at(tc, "id").map(str::to_owned),
        name: str_at(func, "name").unwrap_or("").to_owned(),
        arguments: func.get("arguments").cloned().unwrap_or(Value::Null),
    }
}

pub fn parse_chat_request(req: &Value, view: &mut RequestView) {
    let mut system = Texts::default();
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = str_at(m, "role").unwrap_or("user").to_owned();
        let mut attachments = Vec::new();
        let text = content_text(m.get("content"), &mut attachments);
        if role == "system" || role == "developer" {
            if let Some(t) = &text {
                system.push(t);
            }
            continue;
        }
        let mut tool_calls: Vec<ToolCall> = m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(tool_call)
            .collect();
        if let Some(fc) = m.get("function_call").filter(|v| v.is_object()) {
            tool_calls.push(tool_call(fc));
        }
        view.messages.push(Message {
            role,
            text,
            tool_calls,
            tool_call_id: str_at(m, "tool_call_id").map(str::to_owned),
            attachments,
        });
    }
    view.system = system.join("\n");
    for key in ["tools", "functions"] {
        if let Some(tools) = req.get(key).and_then(Value::as_array) {
            view.tools.extend(tools.iter().cloned());
        }
    }
    view.params = params_except(req, &["model", "messages", "tools", "functions"]);
}

pub fn parse_chat_response(v: &Value, out: &mut ParsedExchange) {
    if let Some(m) = str_at(v, "model") {
        out.response_model = Some(m.to_owned());
    }
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        out.error = error_from_body(&json!({ "error": err }));
        out.failed_in_body = true;
    }
    let choices = v.get("choices").and_then(Value::as_array);
    if let Some(choice) = choices.and_then(|c| c.first()) {
        if let Some(msg) = choice.get("message") {
            let mut ignored = Vec::new();
            out.response.text = content_text(msg.get("content"), &mut ignored);
            out.response.refusal = str_at(msg, "refusal").map(str::to_owned);
            out.response.thinking = str_at(msg, "reasoning_content")
                .or_else(|| str_at(msg, "reasoning"))
                .map(str::to_owned);
            out.response.tool_calls = msg
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(tool_call)
                .collect();
        }
        out.stop_reason = str_at(choice, "finish_reason").map(str::to_owned);
    } else if out.error.is_none() && choices.is_none() {
        note(out, "chat completion response has no choices");
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        set_usage(out, u);
    } else if let Some(u) = v.pointer("/x_groq/usage").filter(|u| u.is_object()) {
        set_usage(out, u);
    }
}

#[derive(Debug, Default)]
struct ToolAcc {
    id: Option<String>,
    name: String,
    args: String,
}

/// Streamed chat completion chunks (`data: {...}` ... `data: [DONE]`).
#[derive(Debug, Default)]
pub struct ChatStream {
    text: Option<String>,
    refusal: Option<String>,
    thinking: Option<String>,
    tools: Vec<ToolAcc>,
    /// The provider's tool-call `index` to our position in `tools`.
    tool_slots: BTreeMap<u64, usize>,
    done: bool,
}

impl ChatStream {
    fn tool_slot(&mut self, tc: &Value) -> usize {
        let index = u64_at(tc, &["index"]);
        let id = str_at(tc, "id");
        if let Some(i) = index {
            if let Some(&slot) = self.tool_slots.get(&i) {
                return slot;
            }
            self.tools.push(ToolAcc::default());
            self.tool_slots.insert(i, self.tools.len() - 1);
            return self.tools.len() - 1;
        }
        // No index (some compatible providers): a new id opens a new call,
        // anything else continues the last one.
        let known = id.and_then(|id| self.tools.iter().position(|t| t.id.as_deref() == Some(id)));
        match known {
            Some(slot) => slot,
            None if id.is_some() || self.tools.is_empty() => {
                self.tools.push(ToolAcc::default());
                self.tools.len() - 1
            }
            None => self.tools.len() - 1,
        }
    }

    fn chunk(&mut self, v: &Value, end: usize, out: &mut ParsedExchange) {
        if let Some(m) = str_at(v, "model").filter(|m| !m.is_empty()) {
            out.response_model = Some(m.to_owned());
        }
        if let Some(err) = v.get("error").and_then(Value::as_object) {
            out.error = Some(error_from_object(err));
            out.failed_in_body = true;
        }
        for choice in v
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if u64_at(choice, &["index"]).unwrap_or(0) != 0 {
                continue;
            }
            if let Some(delta) = choice.get("delta") {
                let mut content = false;
                if let Some(t) = str_at(delta, "content").filter(|t| !t.is_empty()) {
                    append(&mut self.text, t);
                    content = true;
                }
                if let Some(t) = str_at(delta, "refusal").filter(|t| !t.is_empty()) {
                    append(&mut self.refusal, t);
                    content = true;
                }
                let reasoning =
                    str_at(delta, "reasoning_content").or_else(|| str_at(delta, "reasoning"));
                if let Some(t) = reasoning.filter(|t| !t.is_empty()) {
                    append(&mut self.thinking, t);
                    content = true;
                }
                for tc in delta
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let slot = self.tool_slot(tc);
                    let acc = &mut self.tools[slot];
                    if let Some(id) = str_at(tc, "id").filter(|s| !s.is_empty()) {
                        acc.id = Some(id.to_owned());
                    }
                    if let Some(func) = tc.get("function") {
                        if let Some(name) = str_at(func, "name").filter(|s| !s.is_empty()) {
                            acc.name = name.to_owned();
                        }
                        match func.get("arguments") {
                            Some(Value::String(s)) => acc.args.push_str(s),
                            Some(Value::Null) | None => {}
                            Some(other) => acc.args.push_str(&other.to_string()),
                        }
                    }
                    content = true;
                }
                if content {
                    mark_content(out, end);
                }
            }
            if let Some(reason) = str_at(choice, "finish_reason") {
                out.stop_reason = Some(reason.to_owned());
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            set_usage(out, u);
        } else if let Some(u) = v.pointer("/x_groq/usage").filter(|u| u.is_object()) {
            set_usage(out, u);
        }
    }
}

impl Accumulator for ChatStream {
    fn event(&mut self, name: Option<&str>, data: &str, end: usize, out: &mut ParsedExchange) {
        let trimmed = data.trim();
        if trimmed == "[DONE]" {
            self.done = true;
            return;
        }
        let Some(v) = event_json(trimmed, end, out) else {
            return;
        };
        if name == Some("error") {
            out.error = error_from_body(&v).or_else(|| Some(Default::default()));
            out.failed_in_body = true;
        } else {
            self.chunk(&v, end, out);
        }
    }

    fn finish(&mut self, out: &mut ParsedExchange) {
        out.response.text = self.text.take();
        out.response.refusal = self.refusal.take();
        out.response.thinking = self.thinking.take();
        out.response.tool_calls = self
            .tools
            .drain(..)
            .map(|t| ToolCall {
                id: t.id,
                name: t.name,
                arguments: Value::String(t.args),
            })
            .collect();
        if !self.done && !out.failed_in_body {
            note(out, "stream ended without data: [DONE]");
        }
    }
}

pub fn parse_embeddings_request(req: &Value, view: &mut RequestView) {
    view.params = params_except(req, &["model", "input"]);
    let count = match req.get("input") {
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => 1,
        Some(Value::Array(items)) => items.len(),
        Some(Value::Null) | None => 0,
        Some(_) => 1,
    };
    view.params.insert("input_count".into(), json!(count));
}

pub fn parse_embeddings_response(v: &Value, out: &mut ParsedExchange) {
    if let Some(m) = str_at(v, "model") {
        out.response_model = Some(m.to_owned());
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        set_usage(out, u);
    }
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        out.error = error_from_body(&json!({ "error": err }));
        out.failed_in_body = true;
    }
}
