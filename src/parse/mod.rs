//! Provider wire formats: turn captured request/response bytes into `ParsedExchange`.
//!
//! Pure code: no I/O, no clocks, no globals. The only place that knows what an
//! OpenAI, Anthropic or Gemini body looks like.
//!
//! Everything goes through `StreamParser`: it is built from the request and the
//! response head, is fed the response body in chunks of any size, and produces the
//! `ParsedExchange` at the end. `parse_exchange` is that with the whole body as one
//! chunk, so the one-piece and the incremental paths cannot disagree.

mod anthropic;
mod common;
mod gemini;
pub mod include_usage;
pub mod jsonseq;
pub mod mcp;
mod openai;
pub mod ratelimit;
mod responses;
pub mod sse;

#[cfg(test)]
mod tests;

use crate::record::{Endpoint, ErrorInfo, ParsedExchange, ProviderKind, RequestView};
use common::note;
use jsonseq::JsonArraySplitter;
use serde_json::Value;
use sse::SseParser;

/// One captured exchange, bodies already decoded (no gzip/br), possibly truncated.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeInput<'a> {
    pub kind: ProviderKind,
    /// The route's provider name (`openai`, `groq`, `azure`, ...).
    pub provider: &'a str,
    /// The upstream path without the query, e.g. `/v1/chat/completions`.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub request_body: &'a [u8],
    /// `None` when no response arrived (connect error, timeout before headers).
    pub response_status: Option<u16>,
    pub response_content_type: Option<&'a str>,
    pub response_body: &'a [u8],
}

/// Reads everything the record needs from one exchange. Never fails: what cannot be
/// understood is noted in `parse_notes` and left as raw bytes in the record.
pub fn parse_exchange(input: &ExchangeInput<'_>) -> ParsedExchange {
    let mut parser = StreamParser::new(input);
    if matches!(parser.framing, Framing::Whole(_)) {
        // Already whole: parse in place rather than copy a possibly large body.
        parser.framing = Framing::Ignore;
        parser.body_len = input.response_body.len();
        parser.finish_whole(input.response_body);
    } else {
        parser.push(input.response_body);
    }
    parser.finish()
}

/// Which API a path addresses. `kind` only rules out parsing for plain HTTP routes;
/// the path alone says which wire format to expect.
pub fn detect_endpoint(kind: ProviderKind, path: &str) -> Endpoint {
    if !kind.is_round() {
        return Endpoint::Other;
    }
    let path = path.trim_end_matches('/');
    let last = path.rsplit('/').next().unwrap_or("");
    if let Some((_, method)) = last.split_once(':') {
        return match method {
            "generateContent" => Endpoint::GenerateContent,
            "streamGenerateContent" => Endpoint::StreamGenerateContent,
            "embedContent" | "batchEmbedContents" => Endpoint::Embed,
            _ => Endpoint::Other,
        };
    }
    if path.ends_with("/chat/completions") {
        Endpoint::ChatCompletions
    } else if path.ends_with("/responses") {
        Endpoint::Responses
    } else if path.ends_with("/embeddings") {
        Endpoint::Embeddings
    } else if path.ends_with("/messages") {
        Endpoint::Messages
    } else {
        Endpoint::Other
    }
}

/// Reads one streamed event (an SSE event or one element of a JSON array) into the
/// exchange being built. Implemented once per wire format.
pub(crate) trait Accumulator: Send {
    /// `name` is the SSE `event:` field; `end` the body offset just past the event.
    fn event(&mut self, name: Option<&str>, data: &str, end: usize, out: &mut ParsedExchange);
    /// Writes what was accumulated into `out`; called once, at the end of the body.
    fn finish(&mut self, out: &mut ParsedExchange);
}

enum Framing {
    /// Only whitespace seen so far and the content type did not say; the first
    /// real byte decides.
    Undecided(Vec<u8>),
    Sse(SseParser),
    JsonArray(JsonArraySplitter),
    /// One JSON document, parsed at the end.
    Whole(Vec<u8>),
    /// Nothing to parse (plain HTTP routes).
    Ignore,
}

/// The incremental parser: `new` with the request and response head, `push` each
/// body chunk as it arrives, `finish` for the result.
pub struct StreamParser {
    out: ParsedExchange,
    status: Option<u16>,
    framing: Framing,
    acc: Option<Box<dyn Accumulator>>,
    body_len: usize,
}

impl StreamParser {
    /// Parses the request right away; `input.response_body` is not read.
    pub fn new(input: &ExchangeInput<'_>) -> StreamParser {
        let mut out = ParsedExchange {
            endpoint: detect_endpoint(input.kind, input.path),
            ..ParsedExchange::default()
        };
        let endpoint = out.endpoint;
        if input.kind != ProviderKind::Http {
            parse_request(input, &mut out);
        }
        let content_type = input
            .response_content_type
            .unwrap_or("")
            .to_ascii_lowercase();
        let event_stream = content_type.contains("event-stream");
        if event_stream || endpoint == Endpoint::StreamGenerateContent {
            out.stream = true;
        }
        let acc = accumulator(endpoint);
        let status = input.response_status;
        let framing = if input.kind == ProviderKind::Http {
            Framing::Ignore
        } else if status.is_some_and(|s| s >= 400) {
            // Errors come back as one JSON document even for streamed requests.
            Framing::Whole(Vec::new())
        } else if event_stream {
            Framing::Sse(SseParser::new())
        } else if content_type.contains("json") {
            if endpoint == Endpoint::StreamGenerateContent {
                Framing::JsonArray(JsonArraySplitter::new())
            } else {
                Framing::Whole(Vec::new())
            }
        } else {
            Framing::Undecided(Vec::new())
        };
        StreamParser {
            out,
            status,
            framing,
            acc,
            body_len: 0,
        }
    }

    /// Feeds the next chunk of the (decoded) response body.
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.body_len += chunk.len();
        if let Framing::Undecided(pending) = &mut self.framing {
            let Some(&first) = chunk.iter().find(|b| !b.is_ascii_whitespace()) else {
                pending.extend_from_slice(chunk);
                return;
            };
            let pending = std::mem::take(pending);
            self.framing = match first {
                b'[' if self.out.endpoint == Endpoint::StreamGenerateContent => {
                    Framing::JsonArray(JsonArraySplitter::new())
                }
                b'{' | b'[' => Framing::Whole(Vec::new()),
                _ => {
                    self.out.stream = true;
                    Framing::Sse(SseParser::new())
                }
            };
            self.feed(&pending);
        }
        self.feed(chunk);
    }

    fn feed(&mut self, chunk: &[u8]) {
        match &mut self.framing {
            Framing::Sse(parser) => {
                for ev in parser.push(chunk) {
                    self.dispatch(ev.event.as_deref(), &ev.data, ev.end_offset);
                }
            }
            Framing::JsonArray(splitter) => {
                for el in splitter.push(chunk) {
                    self.dispatch(None, &el.text, el.end_offset);
                }
            }
            Framing::Whole(buf) => buf.extend_from_slice(chunk),
            Framing::Undecided(_) | Framing::Ignore => {}
        }
    }

    fn dispatch(&mut self, name: Option<&str>, data: &str, end: usize) {
        match &mut self.acc {
            Some(acc) => acc.event(name, data, end, &mut self.out),
            None => {
                let endpoint = self.out.endpoint;
                note(
                    &mut self.out,
                    format!("streamed body for endpoint {endpoint:?} is not understood"),
                );
            }
        }
    }

    /// Ends the body and returns everything read from the exchange.
    pub fn finish(mut self) -> ParsedExchange {
        match std::mem::replace(&mut self.framing, Framing::Ignore) {
            Framing::Sse(mut parser) => {
                if let Some(ev) = parser.finish() {
                    self.dispatch(ev.event.as_deref(), &ev.data, ev.end_offset);
                }
                self.finish_acc();
            }
            Framing::JsonArray(mut splitter) => {
                if let Some(rest) = splitter.finish() {
                    note(
                        &mut self.out,
                        format!(
                            "stream truncated inside a JSON element ({} bytes)",
                            rest.len()
                        ),
                    );
                }
                if splitter.stray_bytes() > 0 {
                    note(
                        &mut self.out,
                        "unexpected bytes between JSON array elements",
                    );
                }
                self.finish_acc();
            }
            Framing::Whole(buf) => self.finish_whole(&buf),
            Framing::Undecided(_) => {
                if self.status.is_some() && self.body_len == 0 && self.status != Some(204) {
                    note(&mut self.out, "empty response body");
                }
            }
            Framing::Ignore => {}
        }
        for absurd in discard_absurd_usage(&mut self.out.usage) {
            note(&mut self.out, absurd);
        }
        let usage = &mut self.out.usage;
        if usage.input_tokens.is_some() || usage.output_tokens.is_some() {
            usage.total_tokens = Some(
                usage
                    .input_tokens
                    .unwrap_or(0)
                    .saturating_add(usage.output_tokens.unwrap_or(0)),
            );
        }
        self.out
    }

    fn finish_acc(&mut self) {
        if let Some(acc) = &mut self.acc {
            acc.finish(&mut self.out);
        }
    }

    fn finish_whole(&mut self, buf: &[u8]) {
        let is_error_status = self.status.is_some_and(|s| s >= 400);
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            if is_error_status {
                self.out.error = Some(ErrorInfo::default());
            }
            note(&mut self.out, "empty response body");
            return;
        }
        match serde_json::from_slice::<Value>(buf) {
            Ok(v) if is_error_status => {
                self.out.error = Some(common::error_from_body(&v).unwrap_or_else(|| ErrorInfo {
                    error_type: None,
                    message: Some(common::clip(&String::from_utf8_lossy(buf))),
                }));
            }
            Ok(v) => parse_response(&v, &mut self.out),
            Err(e) if is_error_status => {
                self.out.error = Some(ErrorInfo {
                    error_type: None,
                    message: Some(common::clip(&String::from_utf8_lossy(buf))),
                });
                note(&mut self.out, format!("error body is not JSON: {e}"));
            }
            Err(e) => {
                let start = buf
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .unwrap_or(0);
                let head = &buf[start..];
                let looks_sse =
                    head.starts_with(b"data:") || head.starts_with(b"event:") || head[0] == b':';
                if looks_sse && self.acc.is_some() {
                    // Mislabelled stream (wrong content type): read it as SSE anyway.
                    self.out.stream = true;
                    let mut parser = SseParser::new();
                    let mut events = parser.push(buf);
                    events.extend(parser.finish());
                    for ev in events {
                        self.dispatch(ev.event.as_deref(), &ev.data, ev.end_offset);
                    }
                    self.finish_acc();
                } else {
                    note(
                        &mut self.out,
                        format!("response body is not valid JSON: {e}"),
                    );
                }
            }
        }
    }
}

fn accumulator(endpoint: Endpoint) -> Option<Box<dyn Accumulator>> {
    match endpoint {
        Endpoint::ChatCompletions => Some(Box::new(openai::ChatStream::default())),
        Endpoint::Responses => Some(Box::new(responses::ResponsesStream::default())),
        Endpoint::Messages => Some(Box::new(anthropic::MessagesStream::default())),
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
            Some(Box::new(gemini::GeminiStream::default()))
        }
        Endpoint::Embeddings | Endpoint::Embed | Endpoint::Other => None,
    }
}

fn parse_request(input: &ExchangeInput<'_>, out: &mut ParsedExchange) {
    let endpoint = out.endpoint;
    if endpoint == Endpoint::Other {
        note(out, format!("unrecognised endpoint {}", input.path));
    }
    parse_request_body(input.request_body, out);
    match endpoint {
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent | Endpoint::Embed => {
            // Gemini names the model in the path; the body's `model` (batch embeds) is prefixed.
            if let Some(m) = gemini::model_from_path(input.path) {
                out.model = Some(m);
            }
        }
        _ => {
            if out.model.is_none() {
                out.model = azure_deployment(input.path);
            }
        }
    }
}

/// The parsed request view of a captured request body, as `parse_exchange` makes
/// it. The store rebuilds views from raw bodies with this rather than keeping both.
pub fn request_view(endpoint: Endpoint, body: &[u8]) -> RequestView {
    let mut out = ParsedExchange {
        endpoint,
        ..ParsedExchange::default()
    };
    parse_request_body(body, &mut out);
    out.request
}

/// Reads `model`, `stream` and the request view from a request body.
fn parse_request_body(body: &[u8], out: &mut ParsedExchange) {
    let endpoint = out.endpoint;
    let req = if body.iter().all(|b| b.is_ascii_whitespace()) {
        None
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) if v.is_object() => Some(v),
            Ok(_) => {
                note(out, "request body is not a JSON object");
                None
            }
            Err(e) => {
                note(out, format!("request body is not valid JSON: {e}"));
                None
            }
        }
    };
    if let Some(req) = &req {
        out.model = common::str_at(req, "model").map(str::to_owned);
        if req.get("stream").and_then(Value::as_bool) == Some(true) {
            out.stream = true;
        }
        match endpoint {
            Endpoint::ChatCompletions => openai::parse_chat_request(req, &mut out.request),
            Endpoint::Embeddings => openai::parse_embeddings_request(req, &mut out.request),
            Endpoint::Responses => responses::parse_request(req, &mut out.request),
            Endpoint::Messages => anthropic::parse_request(req, &mut out.request),
            Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
                gemini::parse_request(req, &mut out.request)
            }
            Endpoint::Embed => gemini::parse_embed_request(req, &mut out.request),
            Endpoint::Other => {}
        }
    }
}

/// Azure names the deployment in the path and often sends no `model`.
fn azure_deployment(path: &str) -> Option<String> {
    let rest = path.split("/deployments/").nth(1)?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then(|| name.to_owned())
}

fn parse_response(v: &Value, out: &mut ParsedExchange) {
    match out.endpoint {
        Endpoint::ChatCompletions => openai::parse_chat_response(v, out),
        Endpoint::Embeddings => openai::parse_embeddings_response(v, out),
        Endpoint::Responses => responses::parse_response(v, out),
        Endpoint::Messages => anthropic::parse_response(v, out),
        Endpoint::GenerateContent | Endpoint::StreamGenerateContent => {
            gemini::parse_response(v, out)
        }
        Endpoint::Embed => gemini::parse_embed_response(v, out),
        Endpoint::Other => {
            if let Some(err) = common::error_from_body(v) {
                out.error = Some(err);
                out.failed_in_body = true;
            }
        }
    }
}

/// Most tokens one call can plausibly report for one count (no model reads or writes
/// a billion tokens in one call). Counts above it are provider bugs or hostile
/// upstreams; priced, they would make one call cost millions and wrap day totals.
pub const MAX_SANE_TOKENS: u64 = 1_000_000_000;

/// Sets each usage count above `MAX_SANE_TOKENS` to `None` (unknown); returns a note
/// for each, so the record says what the provider claimed.
pub fn discard_absurd_usage(usage: &mut crate::record::Usage) -> Vec<String> {
    let mut notes = Vec::new();
    for (name, value) in [
        ("input_tokens", &mut usage.input_tokens),
        ("output_tokens", &mut usage.output_tokens),
        ("cache_read_tokens", &mut usage.cache_read_tokens),
        ("cache_creation_tokens", &mut usage.cache_creation_tokens),
        (
            "cache_creation_1h_tokens",
            &mut usage.cache_creation_1h_tokens,
        ),
        ("reasoning_tokens", &mut usage.reasoning_tokens),
        ("total_tokens", &mut usage.total_tokens),
    ] {
        if let Some(v) = value.filter(|v| *v > MAX_SANE_TOKENS) {
            notes.push(format!(
                "provider reported {name} = {v}, above the sane bound of {MAX_SANE_TOKENS}; stored as unknown"
            ));
            *value = None;
        }
    }
    notes
}
