//! Turns a `FinishedCall` (raw bytes and timings) into a `CallRecord`: decodes
//! compressed copies, runs the parsers, reads rate limits, prices the call, and
//! redacts secrets. Runs on the writer thread, never on the forward path.

use crate::capture::{Capture, FinishedCall, Outcome};
use crate::cost::PriceTable;
use crate::headers;
use crate::parse::{self, ExchangeInput};
use crate::record::{CallRecord, CallStatus, ClientInfo, ErrorInfo, ProviderKind};
use crate::timefmt::format_rfc3339_us;
use http::HeaderMap;
use std::io::Read;
use std::time::Duration;

/// Largest decoded size of a compressed capture; guards against decompression bombs.
const MAX_DECODED: u64 = 64 << 20;

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Decodes a captured body according to `content-encoding`. Returns the bytes to parse
/// and a note when decoding was impossible (the raw bytes are then kept).
fn decode_body(headers: &HeaderMap, capture: &Capture) -> (Vec<u8>, Option<String>) {
    let joined = capture.contiguous();
    let raw = &joined[..];
    let encoding = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let Some(encoding) = encoding.filter(|e| !e.is_empty() && e != "identity") else {
        // Plain bodies: the joined chunks are the result (no second copy).
        return (joined.into_owned(), None);
    };
    let mut out = Vec::new();
    let result = match encoding.as_str() {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(raw)
            .take(MAX_DECODED)
            .read_to_end(&mut out),
        "deflate" => {
            // "deflate" is zlib-wrapped per RFC 9110, but some servers send raw deflate.
            let zlib = flate2::read::ZlibDecoder::new(raw)
                .take(MAX_DECODED)
                .read_to_end(&mut out);
            if zlib.is_err() {
                out.clear();
                flate2::read::DeflateDecoder::new(raw)
                    .take(MAX_DECODED)
                    .read_to_end(&mut out)
            } else {
                zlib
            }
        }
        "br" => brotli_decompressor::Decompressor::new(raw, 4096)
            .take(MAX_DECODED)
            .read_to_end(&mut out),
        other => {
            return (
                raw.to_vec(),
                Some(format!("content-encoding {other} not decoded")),
            )
        }
    };
    match result {
        Ok(_) => (out, None),
        // A truncated capture still decodes to a usable prefix.
        Err(e) if !out.is_empty() => (out, Some(format!("{encoding} body partly decoded: {e}"))),
        Err(e) => (
            raw.to_vec(),
            Some(format!("{encoding} body not decoded: {e}")),
        ),
    }
}

pub fn build_record(call: FinishedCall, prices: &PriceTable) -> CallRecord {
    let FinishedCall {
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
        query,
        upstream_host,
        http_status,
        outcome,
        request_headers,
        response_headers,
        request_body,
        response_body,
        chunk_times,
        meta,
        client_ip,
        user_agent,
        injected_include_usage: _,
        delivered_bytes,
    } = call;

    let mut notes = Vec::new();
    let (request_bytes, note) = decode_body(&request_headers, &request_body);
    notes.extend(note);
    let (response_bytes, note) = decode_body(&response_headers, &response_body);
    notes.extend(note);

    let content_type = response_headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let parsed = (kind != ProviderKind::Http).then(|| {
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
        Outcome::Completed => http_status.map_or(CallStatus::Failed, CallStatus::from_http),
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
        path: headers::redact_query(&rest_path, query.as_deref()),
        upstream_host,
        http_status,
        status: None,
        stream: false,
        usage: Default::default(),
        rate_limit,
        api_key_fingerprint: headers::api_key_fingerprint(&request_headers, query.as_deref()),
        client: ClientInfo {
            ip: client_ip,
            user_agent,
        },
        request_bytes: request_body.total,
        response_bytes: delivered_bytes.max(response_body.total),
        truncated: request_body.truncated || response_body.truncated,
        request_headers: headers::redacted_map(&request_headers),
        response_headers: headers::redacted_map(&response_headers),
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
