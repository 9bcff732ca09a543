//! Turns a `FinishedCall` (raw bytes and timings) into a `CallRecord`: decodes
//! compressed copies, runs the parsers, reads rate limits, prices the call, and
//! redacts secrets. Runs off the forward path: `redact_with` on the capture log's
//! thread (so no secret reaches the log), `build_redacted_with` on the writer thread.

use crate::capture::{CallFacts, FinishedCall, Outcome};
use crate::cost::PriceTable;
use crate::headers;
use crate::parse::{self, ExchangeInput};
use crate::record::{CallRecord, CallStatus, ClientInfo, ErrorInfo, ParsedExchange, ProviderKind};
use crate::timefmt::format_rfc3339_us;
// The default decoded-size cap (`[capture] max_decoded_bytes`) guards against
// decompression bombs where no configured cap is passed in.
use crate::config::defaults::MAX_DECODED_BYTES as MAX_DECODED;
use http::HeaderMap;
use std::io::Read;
use std::time::Duration;

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// A captured body in one piece, with what the capture knew about the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CapturedBody {
    /// The bytes kept (up to the capture cap).
    pub bytes: Vec<u8>,
    /// Bytes seen, including those beyond the cap.
    pub total: u64,
    pub truncated: bool,
}

/// A finished call with its secrets taken out: what the capture log holds and what
/// the writer builds a record from. Secret headers keep their names (and count)
/// with the value `[redacted]`, secret query values are replaced, and the API-key
/// fingerprint, the one thing the record derives from a secret, is computed first.
#[derive(Debug, Clone, PartialEq)]
pub struct RedactedCall {
    /// Everything redaction leaves as it is (redaction adds its notes).
    pub facts: CallFacts,
    /// The query with secret parameter values replaced.
    pub query: Option<String>,
    pub request_headers: HeaderMap,
    pub response_headers: HeaderMap,
    pub request_body: CapturedBody,
    pub response_body: CapturedBody,
    pub api_key_fingerprint: Option<String>,
    /// For a call whose request or response was opted out of storage
    /// (`x-llmtap-omit`): what the parsers read from both bodies before the omitted
    /// one was dropped, its omitted view already cleared. The omitted body itself
    /// never reaches the capture log (`omit_before_log`).
    pub pre_parsed: Option<Box<ParsedExchange>>,
}

/// The value every secret header is stored and logged with.
pub const REDACTED: &str = "[redacted]";

fn redact_headers(headers: &mut HeaderMap, redaction: &headers::Redaction) {
    let changed: Vec<(http::HeaderName, Vec<http::HeaderValue>)> = headers
        .keys()
        .filter_map(|name| {
            let mut any = false;
            let values = headers
                .get_all(name)
                .iter()
                .map(
                    |value| match redaction.stored_value(name.as_str(), value.as_bytes()) {
                        Some(text) => {
                            any = true;
                            http::HeaderValue::from_str(&text)
                                .unwrap_or(http::HeaderValue::from_static(REDACTED))
                        }
                        None => value.clone(),
                    },
                )
                .collect();
            any.then(|| (name.clone(), values))
        })
        .collect();
    for (name, values) in changed {
        headers.remove(&name);
        for value in values {
            headers.append(name.clone(), value);
        }
    }
}

/// A tool HTTP call's JSON body with its credential fields replaced
/// (`credentials::redact_json`); `None` when it is not JSON or holds none. LLM
/// bodies never come here: their prompts are stored exactly.
fn redact_tool_body(headers: &HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
    let encoded = headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity");
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if encoded || !matches!(first, b'{' | b'[') {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if crate::credentials::redact_json(&mut value) == 0 {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

/// Takes the secrets out of a finished call (the built-in list and `redaction`'s),
/// joins its captured bodies, and drops the bodies its client opted out of storing
/// (after reading from them what the record needs; see `omit_before_log`).
pub fn redact_with(
    call: FinishedCall,
    redaction: &headers::Redaction,
    max_decoded: u64,
) -> RedactedCall {
    let FinishedCall {
        mut facts,
        query,
        mut request_headers,
        mut response_headers,
        request_body,
        response_body,
        injected_include_usage: _,
    } = call;
    let api_key_fingerprint = headers::api_key_fingerprint(&request_headers, query.as_deref());
    redact_headers(&mut request_headers, redaction);
    redact_headers(&mut response_headers, redaction);
    let query = query.map(|q| {
        let redacted = headers::redact_query_with("", Some(&q), redaction);
        redacted.strip_prefix('?').unwrap_or(&redacted).to_string()
    });
    for (part, capture) in [("request", &request_body), ("response", &response_body)] {
        if capture.over_budget {
            facts.notes.push(format!(
                "{part} body cut: in-flight captures held capture.memory_budget_bytes; forwarding was untouched"
            ));
        }
    }
    let body = |capture: crate::capture::Capture| CapturedBody {
        bytes: capture.contiguous().into_owned(),
        total: capture.total,
        truncated: capture.truncated,
    };
    let mut request_body = body(request_body);
    let mut response_body = body(response_body);
    // Tool calls (HTTP and MCP): their JSON may carry credentials as fields.
    if !facts.kind.is_round() {
        for (headers, body) in [
            (&request_headers, &mut request_body),
            (&response_headers, &mut response_body),
        ] {
            if let Some(redacted) = redact_tool_body(headers, &body.bytes) {
                body.bytes = redacted;
            }
        }
    }
    let call = RedactedCall {
        facts,
        query,
        request_headers,
        response_headers,
        request_body,
        response_body,
        api_key_fingerprint,
        pre_parsed: None,
    };
    omit_before_log(call, max_decoded)
}

/// `redact_with` the built-in secret list and the default decode cap.
pub fn redact(call: FinishedCall) -> RedactedCall {
    redact_with(call, &headers::Redaction::default(), MAX_DECODED)
}

/// Applies `x-llmtap-omit` before anything is written: a client that asked for its
/// prompt (or answer) not to be stored must not find it in the capture log either.
/// The parsers still read both bodies first (model, usage, stop reason, errors,
/// stream timing come from them and are not content), the omitted side's parsed
/// view is cleared, and the omitted bytes are dropped; their sizes stay.
fn omit_before_log(mut call: RedactedCall, max_decoded: u64) -> RedactedCall {
    let (omit_request, omit_response) =
        (call.facts.meta.omit_request, call.facts.meta.omit_response);
    if !omit_request && !omit_response {
        return call;
    }
    if call.facts.kind.is_round() {
        let request = decode_encoded(
            &call.request_headers,
            &call.request_body.bytes,
            max_decoded,
            "request",
        );
        let response = decode_encoded(
            &call.response_headers,
            &call.response_body.bytes,
            max_decoded,
            "response",
        );
        let content_type = call
            .response_headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let mut parsed = parse::parse_exchange(&ExchangeInput {
            kind: call.facts.kind,
            provider: &call.facts.provider,
            path: &call.facts.rest_path,
            query: call.query.as_deref(),
            request_body: request
                .as_ref()
                .map_or(&call.request_body.bytes, |d| &d.bytes),
            response_status: call.facts.http_status,
            response_content_type: content_type,
            response_body: response
                .as_ref()
                .map_or(&call.response_body.bytes, |d| &d.bytes),
        });
        if omit_request {
            parsed.request = Default::default();
        }
        if omit_response {
            parsed.response = Default::default();
        }
        // The omitted side's decoding notes and cut go with it; the kept side is
        // decoded again by the writer, as for any call.
        for (omitted, decoded, body) in [
            (omit_request, request, &mut call.request_body),
            (omit_response, response, &mut call.response_body),
        ] {
            if let (true, Some(decoded)) = (omitted, decoded) {
                call.facts.notes.extend(decoded.note);
                body.truncated |= decoded.cut;
            }
        }
        call.pre_parsed = Some(Box::new(parsed));
    }
    for (omitted, body) in [
        (omit_request, &mut call.request_body),
        (omit_response, &mut call.response_body),
    ] {
        if omitted {
            body.bytes = Vec::new();
        }
    }
    call
}

/// A decoded body: the bytes to parse and store, a note when decoding was impossible
/// or partial, and whether the decoded bytes were cut at the cap.
struct Decoded {
    bytes: Vec<u8>,
    note: Option<String>,
    cut: bool,
}

/// Decodes a captured body according to `content-encoding`, at most `max` bytes.
/// When decoding is impossible the raw bytes are kept, with a note.
fn decode_body(headers: &HeaderMap, captured: Vec<u8>, max: u64, part: &str) -> Decoded {
    match decode_encoded(headers, &captured, max, part) {
        Some(decoded) => decoded,
        // Plain bodies: the joined chunks are the result (no second copy).
        None => Decoded {
            bytes: captured,
            note: None,
            cut: false,
        },
    }
}

/// `decode_body` of a borrowed body; `None` when it is not encoded (the bytes are
/// the body).
fn decode_encoded(headers: &HeaderMap, raw: &[u8], max: u64, part: &str) -> Option<Decoded> {
    let encoding = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity")?;
    // One byte past the cap tells a body that fits from one that was cut.
    let limit = max.saturating_add(1);
    let mut out = Vec::new();
    let result = match encoding.as_str() {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => {
            // "deflate" is zlib-wrapped per RFC 9110, but some servers send raw deflate.
            let zlib = flate2::read::ZlibDecoder::new(raw)
                .take(limit)
                .read_to_end(&mut out);
            if zlib.is_err() {
                out.clear();
                flate2::read::DeflateDecoder::new(raw)
                    .take(limit)
                    .read_to_end(&mut out)
            } else {
                zlib
            }
        }
        "br" => brotli_decompressor::Decompressor::new(raw, 4096)
            .take(limit)
            .read_to_end(&mut out),
        other => {
            return Some(Decoded {
                bytes: raw.to_vec(),
                note: Some(format!("content-encoding {other} not decoded")),
                cut: false,
            })
        }
    };
    let cut = out.len() as u64 > max;
    if cut {
        out.truncate(max as usize);
        out.shrink_to_fit();
    }
    Some(match result {
        Ok(_) if cut => Decoded {
            bytes: out,
            note: Some(format!(
                "{part} body decodes to more than {max} bytes ({encoding}); stored cut at {max} bytes"
            )),
            cut: true,
        },
        Ok(_) => Decoded {
            bytes: out,
            note: None,
            cut: false,
        },
        // A truncated capture still decodes to a usable prefix.
        Err(e) if !out.is_empty() => Decoded {
            bytes: out,
            note: Some(format!("{encoding} {part} body partly decoded: {e}")),
            cut,
        },
        Err(e) => Decoded {
            bytes: raw.to_vec(),
            note: Some(format!("{encoding} {part} body not decoded: {e}")),
            cut: false,
        },
    })
}

/// Builds a record with the default decode cap.
pub fn build_record(call: FinishedCall, prices: &PriceTable) -> CallRecord {
    build_record_with(call, prices, MAX_DECODED, &headers::Redaction::default())
}

/// Builds a record, decoding each compressed body to at most `max_decoded` bytes and
/// redacting the headers and query parameters `redaction` names.
pub fn build_record_with(
    call: FinishedCall,
    prices: &PriceTable,
    max_decoded: u64,
    redaction: &headers::Redaction,
) -> CallRecord {
    build_redacted_with(
        redact_with(call, redaction, max_decoded),
        prices,
        max_decoded,
        redaction,
    )
}

/// `build_redacted_with` the default decode cap and redaction.
pub fn build_redacted(call: RedactedCall, prices: &PriceTable) -> CallRecord {
    build_redacted_with(call, prices, MAX_DECODED, &headers::Redaction::default())
}

/// Builds the record of a call whose secrets are already out (from the capture log).
pub fn build_redacted_with(
    call: RedactedCall,
    prices: &PriceTable,
    max_decoded: u64,
    redaction: &headers::Redaction,
) -> CallRecord {
    let RedactedCall {
        facts:
            CallFacts {
                id,
                invocation_id,
                arrival_round,
                started_at_us,
                latency,
                first_byte,
                provider,
                price_as,
                kind,
                method,
                rest_path,
                upstream_host,
                http_status,
                outcome,
                chunk_times,
                meta,
                client_ip,
                user_agent,
                delivered_bytes,
                notes: forward_notes,
            },
        query,
        request_headers,
        response_headers,
        request_body,
        response_body,
        api_key_fingerprint,
        pre_parsed,
    } = call;

    let (request_total, response_total) = (request_body.total, response_body.total);
    let (request_truncated, response_truncated) = (request_body.truncated, response_body.truncated);
    let mut notes = forward_notes;
    // An omitted side was dropped before the log (its bytes are empty, its
    // decoding already noted): nothing to decode.
    let decode = |omitted: bool, headers: &HeaderMap, bytes: Vec<u8>, part: &str| {
        if omitted {
            Decoded {
                bytes,
                note: None,
                cut: false,
            }
        } else {
            decode_body(headers, bytes, max_decoded, part)
        }
    };
    let request_decoded = decode(
        meta.omit_request,
        &request_headers,
        request_body.bytes,
        "request",
    );
    notes.extend(request_decoded.note);
    let request_bytes = request_decoded.bytes;
    let response_decoded = decode(
        meta.omit_response,
        &response_headers,
        response_body.bytes,
        "response",
    );
    notes.extend(response_decoded.note);
    let response_bytes = response_decoded.bytes;
    let mut truncated_parts = Vec::new();
    if request_truncated || request_decoded.cut {
        truncated_parts.push("request".to_string());
    }
    if response_truncated || response_decoded.cut {
        truncated_parts.push("response".to_string());
    }

    let content_type = response_headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let parsed = kind.is_round().then(|| {
        if let Some(parsed) = pre_parsed {
            return *parsed;
        }
        parse::parse_exchange(&ExchangeInput {
            kind,
            provider: &provider,
            path: &rest_path,
            query: query.as_deref(),
            request_body: &request_bytes,
            response_status: http_status,
            response_content_type: content_type,
            response_body: &response_bytes,
        })
    });

    let mcp = (kind == ProviderKind::Mcp).then(|| {
        fn session(h: &HeaderMap) -> Option<&str> {
            h.get(crate::parse::mcp::SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
        }
        crate::parse::mcp::parse_mcp(&crate::parse::mcp::McpInput {
            transport: crate::parse::mcp::transport_of(&method),
            request_body: &request_bytes,
            response_content_type: content_type,
            response_body: &response_bytes,
            session_id: session(&response_headers).or_else(|| session(&request_headers)),
            from_server: request_headers.contains_key(crate::parse::mcp::FROM_SERVER_HEADER),
        })
    });

    let header_pairs: Vec<(&str, &str)> = response_headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let ended_at_us = started_at_us + latency.as_micros() as u64;
    let rate_limit = parse::ratelimit::parse_rate_limits(
        &header_pairs,
        started_at_us + first_byte.unwrap_or(latency).as_micros() as u64,
    );

    let mut status = match &outcome {
        Outcome::Completed => match http_status {
            Some(http) => CallStatus::from_http(http),
            // A stdio MCP exchange (`llmtap mcp`) has no HTTP status: it was answered.
            None if kind == ProviderKind::Mcp => CallStatus::Success,
            None => CallStatus::Failed,
        },
        Outcome::UpstreamError { .. } | Outcome::Unreachable { .. } => CallStatus::Failed,
        Outcome::Timeout { .. } => CallStatus::Timeout,
        Outcome::Canceled => CallStatus::Canceled,
    };
    let mut error = match &outcome {
        Outcome::Completed | Outcome::Canceled => None,
        Outcome::UpstreamError { message } => Some(ErrorInfo {
            error_type: Some("upstream_error".into()),
            message: Some(message.clone()),
        }),
        // The type the client got in llmtap's own 502.
        Outcome::Unreachable { message } => Some(ErrorInfo {
            error_type: Some("upstream_unreachable".into()),
            message: Some(message.clone()),
        }),
        Outcome::Timeout { message } => Some(ErrorInfo {
            error_type: Some("timeout".into()),
            message: Some(message.clone()),
        }),
    };
    if outcome == Outcome::Canceled {
        error = Some(ErrorInfo {
            error_type: Some("canceled".into()),
            message: Some("the client closed the connection before the response ended".into()),
        });
    }

    let first_byte_ms = first_byte.map(ms);
    let mut record = CallRecord {
        id,
        invocation_id,
        round: arrival_round,
        started_at: format_rfc3339_us(started_at_us),
        ended_at: format_rfc3339_us(ended_at_us),
        started_at_us,
        latency_ms: ms(latency),
        ttft_ms: first_byte_ms,
        first_byte_ms,
        provider: provider.clone(),
        kind: kind.as_str().to_string(),
        endpoint: None,
        method,
        path: headers::redact_query_with(&rest_path, query.as_deref(), redaction),
        upstream_host,
        http_status,
        status: None,
        stream: false,
        usage: Default::default(),
        rate_limit,
        api_key_fingerprint,
        client: ClientInfo {
            ip: client_ip,
            user_agent,
        },
        request_bytes: request_total,
        response_bytes: delivered_bytes.max(response_total),
        truncated: !truncated_parts.is_empty(),
        truncated_parts,
        request_headers: headers::redacted_map_with(&request_headers, redaction),
        response_headers: headers::redacted_map_with(&response_headers, redaction),
        metadata: meta.metadata,
        ..CallRecord::default()
    };

    if let Some(parsed) = parsed {
        if parsed.failed_in_body && status == CallStatus::Success {
            status = CallStatus::Failed;
        }
        if parsed.stream {
            // A stream's ttft is its first content token; one that produced none
            // (canceled, stalled, empty) has none, not the first byte.
            record.ttft_ms = parsed.first_content_offset.and_then(|offset| {
                chunk_times
                    .iter()
                    .find(|(received, _)| *received >= offset)
                    .map(|(_, at)| ms(*at))
            });
        }
        if error.is_none() {
            error = parsed.error.clone();
        }
        record.endpoint = Some(parsed.endpoint);
        record.stream = parsed.stream;
        record.model = parsed.model;
        record.response_model = parsed.response_model;
        record.usage = parsed.usage;
        record.raw_usage = parsed.raw_usage;
        record.stop_reason = parsed.stop_reason;
        if !meta.omit_request {
            record.request = Some(parsed.request);
        }
        if !meta.omit_response {
            record.response = Some(parsed.response);
        }
        notes.extend(parsed.parse_notes);
        if !record.usage.is_empty() {
            let cost = prices.price(
                &price_as,
                record.model.as_deref(),
                record.response_model.as_deref(),
                &record.usage,
            );
            record.cost_usd = cost.as_ref().filter(|c| c.priced).and_then(|c| c.total_usd);
            record.cost = cost;
        }
    }
    if let Some((mut exchange, mcp_notes)) = mcp {
        notes.extend(mcp_notes);
        // A tool that reports an error, or a JSON-RPC error answer, is a failed call
        // even though the HTTP exchange (or the stdio line) went through.
        if exchange.failed() && status == CallStatus::Success {
            status = CallStatus::Failed;
        }
        if error.is_none() {
            error = match &exchange.error {
                Some(e) => Some(ErrorInfo {
                    error_type: Some("jsonrpc_error".into()),
                    message: Some(format!("{} {}", e.code, e.message)),
                }),
                // The tool's own error text is content (it may echo the arguments):
                // it stays in `result_text`, out of the metadata viewers see.
                None if exchange.is_error => Some(ErrorInfo {
                    error_type: Some("tool_error".into()),
                    message: Some("the tool returned isError: true".into()),
                }),
                None => None,
            };
        }
        if meta.omit_request {
            exchange.arguments = None;
        }
        if meta.omit_response {
            exchange.result_text = None;
            exchange.structured_content = None;
            exchange.result = None;
        }
        record.mcp = Some(exchange);
    }
    // A lossy string loses bytes; keep the exact ones beside it for the store.
    if !meta.omit_request {
        match String::from_utf8(request_bytes) {
            Ok(text) => record.request_body = Some(text),
            Err(e) => {
                record.request_body = Some(String::from_utf8_lossy(e.as_bytes()).into_owned());
                record.request_body_bytes = Some(e.into_bytes());
            }
        }
    }
    if !meta.omit_response {
        match String::from_utf8(response_bytes) {
            Ok(text) => record.response_body = Some(text),
            Err(e) => {
                record.response_body = Some(String::from_utf8_lossy(e.as_bytes()).into_owned());
                record.response_body_bytes = Some(e.into_bytes());
            }
        }
    }
    record.status = Some(status);
    record.error = error;
    record.parse_notes = notes;
    record
}
