//! Gemini (`/v1beta/models/{model}:generateContent`, `:streamGenerateContent`,
//! `:embedContent`, `:batchEmbedContents`). Accepts camelCase and snake_case
//! field names, as the API does. Every streamed chunk is a full
//! `GenerateContentResponse` whose usage is a running total, so the last wins.

use super::common::{
    append, decoded_size, error_from_object, mark_content, note, params_except, str_at,
    sum_present, u64_at, value_text, Texts,
};
use super::Accumulator;
use crate::record::{Message, ParsedExchange, RequestView, ToolCall, Usage};
use serde_json::{json, Value};

/// A field under either spelling.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn count(v: &Value, camel: &str, snake: &str) -> Option<u64> {
    u64_at(v, &[camel]).or_else(|| u64_at(v, &[snake]))
}

/// Input = prompt + tool-use prompt; output = candidates + thoughts.
pub fn usage(u: &Value) -> Usage {
    let prompt = count(u, "promptTokenCount", "prompt_token_count");
    let tool_prompt = count(u, "toolUsePromptTokenCount", "tool_use_prompt_token_count");
    let candidates = count(u, "candidatesTokenCount", "candidates_token_count");
    let thoughts = count(u, "thoughtsTokenCount", "thoughts_token_count");
    let input = sum_present(&[prompt, tool_prompt]);
    let output = sum_present(&[candidates, thoughts]);
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: count(u, "cachedContentTokenCount", "cached_content_token_count"),
        cache_creation_tokens: None,
        cache_creation_1h_tokens: None,
        reasoning_tokens: thoughts,
        total_tokens: sum_present(&[input, output]),
    }
}

/// `/v1beta/models/gemini-2.0-flash:generateContent` → `gemini-2.0-flash`
/// (also Vertex's `.../publishers/google/models/{m}:...`).
pub fn model_from_path(path: &str) -> Option<String> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let (model, _) = last.split_once(':')?;
    (!model.is_empty()).then(|| model.to_owned())
}

fn parts_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        _ => {
            let mut texts = Texts::default();
            let parts = content.get("parts").and_then(Value::as_array);
            for p in parts.into_iter().flatten() {
                if let Some(t) = str_at(p, "text") {
                    texts.push(t);
                }
            }
            texts.join("\n")
        }
    }
}

pub fn parse_request(req: &Value, view: &mut RequestView) {
    if let Some(sys) = field(req, "systemInstruction", "system_instruction") {
        view.system = parts_text(sys);
    }
    let contents: Vec<&Value> = match req.get("contents") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single @ Value::Object(_)) => vec![single],
        _ => Vec::new(),
    };
    for c in contents {
        let role = match str_at(c, "role") {
            Some("model") => "assistant",
            Some("function") => "tool",
            Some(r) => r,
            None => "user",
        };
        let mut msg = Message {
            role: role.to_owned(),
            ..Message::default()
        };
        let mut texts = Texts::default();
        let mut responses = Vec::new();
        for p in c
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = str_at(p, "text") {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    msg.attachments.push(json!({"type": "thought"}));
                } else {
                    texts.push(t);
                }
            } else if let Some(d) = field(p, "inlineData", "inline_data") {
                msg.attachments.push(json!({
                    "type": "inline_data",
                    "media_type": field(d, "mimeType", "mime_type").and_then(Value::as_str),
                    "size": str_at(d, "data").map(decoded_size),
                }));
            } else if let Some(d) = field(p, "fileData", "file_data") {
                msg.attachments.push(json!({
                    "type": "file_data",
                    "media_type": field(d, "mimeType", "mime_type").and_then(Value::as_str),
                    "url": field(d, "fileUri", "file_uri").and_then(Value::as_str),
                }));
            } else if let Some(fc) = field(p, "functionCall", "function_call") {
                msg.tool_calls.push(function_call(fc));
            } else if let Some(fr) = field(p, "functionResponse", "function_response") {
                // Gemini matches results to calls by name (or id, when sent).
                responses.push(Message {
                    role: "tool".into(),
                    text: fr.get("response").map(value_text),
                    tool_call_id: str_at(fr, "id")
                        .or_else(|| str_at(fr, "name"))
                        .map(str::to_owned),
                    ..Message::default()
                });
            } else if let Some(key) = p.as_object().and_then(|o| o.keys().next()) {
                msg.attachments.push(json!({ "type": key }));
            }
        }
        msg.text = texts.join("\n");
        let has_own =
            msg.text.is_some() || !msg.tool_calls.is_empty() || !msg.attachments.is_empty();
        if has_own || responses.is_empty() {
            view.messages.push(msg);
        }
        view.messages.extend(responses);
    }
    for tool in req
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match field(tool, "functionDeclarations", "function_declarations").and_then(Value::as_array)
        {
            Some(decls) => view.tools.extend(decls.iter().cloned()),
            None => view.tools.push(tool.clone()),
        }
    }
    view.params = params_except(
        req,
        &[
            "model",
            "contents",
            "systemInstruction",
            "system_instruction",
            "tools",
            "generationConfig",
            "generation_config",
        ],
    );
    if let Some(cfg) =
        field(req, "generationConfig", "generation_config").and_then(Value::as_object)
    {
        for (k, v) in cfg {
            view.params.insert(k.clone(), v.clone());
        }
    }
}

pub fn parse_embed_request(req: &Value, view: &mut RequestView) {
    view.params = params_except(req, &["model", "content", "requests"]);
    let count = match req.get("requests") {
        Some(Value::Array(items)) => items.len(),
        _ => usize::from(req.get("content").is_some()),
    };
    view.params.insert("input_count".into(), json!(count));
}

fn function_call(fc: &Value) -> ToolCall {
    ToolCall {
        id: str_at(fc, "id").map(str::to_owned),
        name: str_at(fc, "name").unwrap_or("").to_owned(),
        arguments: fc.get("args").cloned().unwrap_or(Value::Null),
    }
}

/// Accumulates `GenerateContentResponse` objects: one for `generateContent`, one per
/// chunk for `streamGenerateContent` (SSE or JSON array).
#[derive(Debug, Default)]
pub struct GeminiStream {
    text: Option<String>,
    thinking: Option<String>,
    tool_calls: Vec<ToolCall>,
    block_reason: Option<String>,
    chunks: usize,
}

impl GeminiStream {
    fn chunk(&mut self, v: &Value, end: usize, out: &mut ParsedExchange) {
        self.chunks += 1;
        if let Some(err) = v.get("error").and_then(Value::as_object) {
            out.error = Some(error_from_object(err));
            out.failed_in_body = true;
            return;
        }
        if let Some(m) = field(v, "modelVersion", "model_version").and_then(Value::as_str) {
            out.response_model = Some(m.to_owned());
        }
        let candidate = v
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        if let Some(c) = candidate {
            let parts = c.pointer("/content/parts").and_then(Value::as_array);
            let mut content = false;
            for p in parts.into_iter().flatten() {
                if let Some(t) = str_at(p, "text") {
                    if p.get("thought").and_then(Value::as_bool) == Some(true) {
                        append(&mut self.thinking, t);
                    } else {
                        append(&mut self.text, t);
                    }
                    content |= !t.is_empty();
                } else if let Some(fc) = field(p, "functionCall", "function_call") {
                    self.tool_calls.push(function_call(fc));
                    content = true;
                }
            }
            if content {
                mark_content(out, end);
            }
            if let Some(r) = field(c, "finishReason", "finish_reason").and_then(Value::as_str) {
                out.stop_reason = Some(r.to_owned());
            }
        }
        let feedback = field(v, "promptFeedback", "prompt_feedback");
        if let Some(r) = feedback.and_then(|f| field(f, "blockReason", "block_reason")) {
            self.block_reason = Some(value_text(r));
        }
        if let Some(u) = field(v, "usageMetadata", "usage_metadata").filter(|u| u.is_object()) {
            out.usage = usage(u);
            out.raw_usage = Some(u.clone());
        }
    }
}

impl Accumulator for GeminiStream {
    fn event(&mut self, _name: Option<&str>, data: &str, end: usize, out: &mut ParsedExchange) {
        let data = data.trim();
        if data.is_empty() {
            return;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(Value::Array(items)) => {
                for item in &items {
                    self.chunk(item, end, out);
                }
            }
            Ok(v) => self.chunk(&v, end, out),
            Err(e) => note(
                out,
                format!("invalid JSON in stream chunk ending at {end}: {e}"),
            ),
        }
    }

    fn finish(&mut self, out: &mut ParsedExchange) {
        out.response.text = self.text.take();
        out.response.thinking = self.thinking.take();
        out.response.tool_calls = std::mem::take(&mut self.tool_calls);
        if out.stop_reason.is_none() {
            out.stop_reason = self.block_reason.take();
        }
        if self.chunks == 0 && out.error.is_none() {
            note(out, "no response chunks in body");
        }
    }
}

pub fn parse_response(v: &Value, out: &mut ParsedExchange) {
    let mut acc = GeminiStream::default();
    match v {
        Value::Array(items) => {
            for item in items {
                acc.chunk(item, 0, out);
            }
        }
        _ => acc.chunk(v, 0, out),
    }
    out.first_content_offset = None;
    acc.finish(out);
}

pub fn parse_embed_response(v: &Value, out: &mut ParsedExchange) {
    if let Some(err) = v.get("error").and_then(Value::as_object) {
        out.error = Some(error_from_object(err));
        out.failed_in_body = true;
    }
    if let Some(u) = field(v, "usageMetadata", "usage_metadata").filter(|u| u.is_object()) {
        out.usage = usage(u);
        out.raw_usage = Some(u.clone());
    }
}
