//! Small helpers shared by the format parsers: JSON field access, notes,
//! error-body reading and attachment summaries.

use crate::record::{ErrorInfo, ParsedExchange};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// More notes than this say nothing new and bloat the record.
const MAX_NOTES: usize = 20;

pub fn note(out: &mut ParsedExchange, text: impl Into<String>) {
    let text = text.into();
    if out.parse_notes.len() < MAX_NOTES {
        if !out.parse_notes.contains(&text) {
            out.parse_notes.push(text);
        }
    } else if out.parse_notes.len() == MAX_NOTES {
        out.parse_notes.push("further notes omitted".to_owned());
    }
}

/// The JSON of one stream event; `None` (with a note) for an empty or invalid one.
pub fn event_json(data: &str, end: usize, out: &mut ParsedExchange) -> Option<Value> {
    let data = data.trim();
    if data.is_empty() {
        return None;
    }
    match serde_json::from_str::<Value>(data) {
        Ok(v) => Some(v),
        Err(e) => {
            note(
                out,
                format!("invalid JSON in stream event ending at {end}: {e}"),
            );
            None
        }
    }
}

/// Bounds a raw text kept in an error message.
pub fn clip(text: &str) -> String {
    const MAX: usize = 2000;
    let text = text.trim();
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

pub fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A count at a path of object keys; `None` when absent, null or not a number.
pub fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_u64()
        .or_else(|| cur.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// The sum of the counts that are present; `None` when none is.
pub fn sum_present(parts: &[Option<u64>]) -> Option<u64> {
    parts
        .iter()
        .flatten()
        .copied()
        .reduce(|a, b| a.saturating_add(b))
}

/// A JSON value as text: strings unquoted, anything else serialised.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The request object minus the keys a view already holds elsewhere.
pub fn params_except(req: &Value, skip: &[&str]) -> BTreeMap<String, Value> {
    req.as_object()
        .map(|obj| {
            obj.iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads the error shapes providers use:
/// OpenAI `{error:{type,code,message}}`, Anthropic `{type:"error",error:{type,message}}`,
/// Gemini `{error:{code,status,message}}`, OpenRouter `{error:{code,message}}`,
/// Ollama `{error:"text"}`, Mistral `{object:"error",type,message}`.
pub fn error_from_body(v: &Value) -> Option<ErrorInfo> {
    // Gemini sends its errors as a one-element array on streamed endpoints.
    if let Some(first) = v.as_array().and_then(|a| a.first()) {
        return error_from_body(first);
    }
    match v.get("error") {
        Some(Value::Object(e)) => return Some(error_from_object(e)),
        Some(Value::String(s)) => {
            return Some(ErrorInfo {
                error_type: None,
                message: Some(s.clone()),
            })
        }
        _ => {}
    }
    let flagged = str_at(v, "object") == Some("error") || str_at(v, "type") == Some("error");
    if flagged {
        let obj = v.as_object()?;
        let mut info = error_from_object(obj);
        if info.error_type.as_deref() == Some("error") {
            info.error_type = obj.get("code").map(value_text);
        }
        return Some(info);
    }
    if let Some(detail) = v.get("detail") {
        return Some(ErrorInfo {
            error_type: None,
            message: Some(value_text(detail)),
        });
    }
    None
}

/// The most specific name available: OpenAI's string `code` (`rate_limit_exceeded`
/// says more than the type `requests`), else `type` (Anthropic), else Gemini's
/// `status`, else a numeric `code`. `message` as is.
pub fn error_from_object(e: &Map<String, Value>) -> ErrorInfo {
    let pick = |k: &str| e.get(k).filter(|v| !v.is_null()).map(value_text);
    let string_code = e.get("code").and_then(Value::as_str).map(str::to_owned);
    ErrorInfo {
        error_type: string_code
            .or_else(|| pick("type"))
            .or_else(|| pick("status"))
            .or_else(|| pick("code")),
        message: pick("message"),
    }
}

/// The decoded size in bytes of a base64 payload (or of a `data:` URL's payload),
/// the size the mirrored attachment reports, not the length of its text.
pub fn decoded_size(text: &str) -> usize {
    let (base64, data) = match text.strip_prefix("data:") {
        Some(rest) => {
            let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
            (meta.ends_with(";base64"), data)
        }
        None => (true, text),
    };
    if !base64 {
        return data.len();
    }
    let symbols = data
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .count();
    symbols * 3 / 4
}

/// Summarises a URL attachment: data URLs become media type and size, so no
/// payload is copied into the record.
pub fn url_attachment(kind: &str, url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:") {
        let meta = rest.split_once(',').map_or(rest, |(meta, _)| meta);
        let media_type = meta.split(';').next().unwrap_or("");
        json!({"type": kind, "media_type": media_type, "size": decoded_size(url)})
    } else {
        json!({"type": kind, "url": url})
    }
}

/// Accumulates text pieces and yields `None` when there were none.
#[derive(Debug, Default, Clone)]
pub struct Texts(Vec<String>);

impl Texts {
    pub fn push(&mut self, s: &str) {
        self.0.push(s.to_owned());
    }
    pub fn join(self, sep: &str) -> Option<String> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0.join(sep))
        }
    }
}

/// Records the first content token's offset; later calls keep the first.
pub fn mark_content(out: &mut ParsedExchange, end: usize) {
    if out.first_content_offset.is_none() {
        out.first_content_offset = Some(end);
    }
}

/// Appends to an optional string, creating it on first use.
pub fn append(target: &mut Option<String>, piece: &str) {
    match target {
        Some(s) => s.push_str(piece),
        None => *target = Some(piece.to_owned()),
    }
}

#[cfg(test)]
mod size_tests {
    use super::decoded_size;

    #[test]
    fn attachment_sizes_are_decoded_sizes() {
        // 70 bytes are 96 base64 characters (with padding).
        let b64 = format!("{}AA==", "A".repeat(92));
        assert_eq!(b64.len(), 96);
        assert_eq!(decoded_size(&b64), 70);
        assert_eq!(decoded_size("aGk="), 2);
        assert_eq!(decoded_size("data:image/png;base64,aGVsbG8="), 5);
        assert_eq!(decoded_size("data:text/plain,hello"), 5);
        assert_eq!(decoded_size(""), 0);
    }
}
