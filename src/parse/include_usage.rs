//! `stream_options.include_usage` support: the proxy asks OpenAI-format streams
//! for usage (so every streamed call is counted) and removes, on the way back, the
//! extra usage-only chunk the client did not ask for.
//!
//! Pure byte transforms: the request rewrite keeps every other byte of the body,
//! and the response filter is byte-identical except for the one removed event.

use serde_json::Value;

const INJECTED: &[u8] = br#","stream_options":{"include_usage":true}"#;

/// For a streamed OpenAI-format chat completions request that does not already
/// ask for usage, the body with `stream_options.include_usage = true`; else `None`.
pub fn inject_include_usage(request_body: &[u8]) -> Option<Vec<u8>> {
    let mut req: Value = serde_json::from_slice(request_body).ok()?;
    let obj = req.as_object_mut()?;
    if obj.get("stream").and_then(Value::as_bool) != Some(true)
        || !obj.get("messages").is_some_and(Value::is_array)
    {
        return None;
    }
    match obj.get_mut("stream_options") {
        None => {
            // Splice before the closing brace so the rest of the body stays byte-identical.
            let end = request_body
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())?;
            if request_body[end] != b'}' {
                return None;
            }
            let mut out = Vec::with_capacity(request_body.len() + INJECTED.len());
            out.extend_from_slice(&request_body[..end]);
            out.extend_from_slice(INJECTED);
            out.extend_from_slice(&request_body[end..]);
            Some(out)
        }
        Some(Value::Object(opts)) => {
            if opts.get("include_usage").and_then(Value::as_bool) == Some(true) {
                return None;
            }
            opts.insert("include_usage".into(), Value::Bool(true));
            serde_json::to_vec(&req).ok()
        }
        Some(other) => {
            *other = serde_json::json!({"include_usage": true});
            serde_json::to_vec(&req).ok()
        }
    }
}

/// Most bytes of one incomplete SSE event the filter holds back. A usage-only chunk
/// is a few hundred bytes; a stream whose events grow past this (no blank lines) is
/// passed through unfiltered from then on rather than buffered.
pub const MAX_HELD_EVENT: usize = 64 << 10;

/// Removes the usage-only chunk (`choices: []` plus `usage`) from an OpenAI SSE
/// stream, passing every other byte through unchanged as soon as its event is
/// complete. Holds at most the current incomplete event, and at most
/// `MAX_HELD_EVENT` bytes of it.
#[derive(Debug, Default)]
pub struct UsageChunkStripper {
    /// The current, incomplete event.
    pending: Vec<u8>,
    /// Where the current line starts in `pending`.
    line_start: usize,
    /// The last line ended with CR; an LF next belongs to that line break.
    after_cr: bool,
    /// The pending LF of a CRLF belongs to the event that was removed.
    drop_lf: bool,
    /// The chunk was removed; everything after passes straight through.
    stripped: bool,
    /// An event outgrew `MAX_HELD_EVENT`: everything from it on passes unfiltered.
    gave_up: bool,
}

impl UsageChunkStripper {
    pub fn new() -> UsageChunkStripper {
        UsageChunkStripper::default()
    }

    /// Feeds the next upstream chunk; returns the bytes to send downstream now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut rest = chunk;
        if self.drop_lf && !rest.is_empty() {
            self.drop_lf = false;
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        if (self.stripped && self.pending.is_empty()) || self.gave_up {
            return rest.to_vec();
        }
        let mut out = Vec::new();
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    if self.pending.is_empty() {
                        // The LF closing an event that was already sent.
                        out.push(b'\n');
                    } else {
                        self.pending.push(b'\n');
                        self.line_start = self.pending.len();
                    }
                    rest = &rest[1..];
                    continue;
                }
            }
            let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.pending.extend_from_slice(rest);
                if self.pending.len() > MAX_HELD_EVENT {
                    self.give_up(&mut out);
                }
                break;
            };
            self.pending.extend_from_slice(&rest[..=pos]);
            let is_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            let line_len = self.pending.len() - 1 - self.line_start;
            if is_cr {
                self.after_cr = true;
            }
            if line_len > 0 {
                self.line_start = self.pending.len();
                if self.pending.len() > MAX_HELD_EVENT {
                    self.give_up(&mut out);
                    out.extend_from_slice(rest);
                    return out;
                }
                continue;
            }
            // A blank line: the event is complete.
            let event = std::mem::take(&mut self.pending);
            self.line_start = 0;
            if !self.stripped && is_usage_only(&event) {
                self.stripped = true;
                if is_cr {
                    self.after_cr = false;
                    if rest.is_empty() {
                        self.drop_lf = true;
                    } else if rest[0] == b'\n' {
                        rest = &rest[1..];
                    }
                }
                out.extend_from_slice(rest);
                return out;
            }
            out.extend_from_slice(&event);
        }
        out
    }

    /// Sends what is held and stops filtering: the stream's events are too large to hold.
    fn give_up(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.pending);
        self.line_start = 0;
        self.gave_up = true;
    }

    /// Whether the filter stopped filtering because an event outgrew `MAX_HELD_EVENT`.
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Ends the stream; returns what is still held (an event without its blank line).
    pub fn finish(&mut self) -> Vec<u8> {
        self.drop_lf = false;
        self.after_cr = false;
        self.line_start = 0;
        let event = std::mem::take(&mut self.pending);
        if !self.stripped && is_usage_only(&event) {
            self.stripped = true;
            return Vec::new();
        }
        event
    }
}

/// Whether an SSE event's data is a chat chunk with empty `choices` and a `usage` object.
fn is_usage_only(event: &[u8]) -> bool {
    // Cheap screen first: most events are content deltas and never get parsed twice.
    let has = |needle: &[u8]| event.windows(needle.len()).any(|w| w == needle);
    if !has(b"\"usage\"") || !has(b"\"choices\"") {
        return false;
    }
    let mut data = Vec::new();
    for line in event.split(|&b| b == b'\n' || b == b'\r') {
        if let Some(v) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(v.strip_prefix(b" ").unwrap_or(v));
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(&data) else {
        return false;
    };
    v.get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.is_empty())
        && v.get("usage").is_some_and(Value::is_object)
}
