//! The capture log's record format: framing (length, CRC-32, flags) and the compact
//! binary encoding of a `RedactedCall`. Pure: bytes in, values out.
//!
//! A frame is `length (u32 LE) | crc32 (u32 LE) | body`, the CRC covering the body;
//! the body is `flags (u8) | payload`, where flag bit 0 says the payload is sealed
//! with the store's keyring. A frame whose length runs past the end of what was
//! written, or whose CRC does not match, is a torn write: nothing of it is used.
//!
//! The payload (plain, or what sealing wraps) is `version (u8) | run (varint) | call`
//! (version 2: the call ends with its pre-parsed facts, present only for opted-out
//! bodies),
//! with integers as LEB128 varints, strings and byte strings as a varint length and
//! the bytes, and optional values as a presence byte then the value. Durations are
//! whole microseconds, the precision every record field uses.

use crate::capture::{CallFacts, Outcome};
use crate::headers::CallMeta;
use crate::record::ProviderKind;
use crate::recorder::{CapturedBody, RedactedCall};
use crate::store::Keyring;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// Bytes before a frame's body: length and CRC.
pub const FRAME_HEADER: usize = 8;
/// Largest body a frame may declare; a larger length is corruption. Two capped
/// bodies (32 MiB each by default, configurable) plus headers fit many times over.
pub const MAX_FRAME_BODY: usize = 1 << 30;
const FLAG_SEALED: u8 = 1;
/// Version 2 adds, after the notes, the facts parsed before an opted-out body was
/// dropped (`RedactedCall::pre_parsed`, JSON); version 1 records still read.
const VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("log record is truncated or malformed at byte {0}")]
    Malformed(usize),
    #[error("log record version {0} is not supported by this llmtap")]
    Version(u8),
    #[error("log record is sealed but no encryption key is configured")]
    KeyRequired,
    #[error("log record: {0}")]
    Crypto(#[from] crate::store::crypto::CryptoError),
    #[error("log record field {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

/// Appends one frame holding `call` to `out`. Returns the frame's length.
pub fn encode_frame(
    out: &mut Vec<u8>,
    run: u64,
    call: &RedactedCall,
    keys: Option<&Keyring>,
) -> Result<usize, FormatError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    match keys {
        None => {
            out.push(0);
            encode_payload(out, run, call)?;
        }
        Some(keys) => {
            let mut plain = Vec::with_capacity(estimated_size(call));
            encode_payload(&mut plain, run, call)?;
            out.push(FLAG_SEALED);
            out.extend_from_slice(&keys.seal(&plain)?);
        }
    }
    let body_len = out.len() - start - FRAME_HEADER;
    let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len() - start)
}

/// A rough size of the call's frame, to reserve buffers and account memory.
pub fn estimated_size(call: &RedactedCall) -> usize {
    let headers = |h: &HeaderMap| {
        h.iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
    };
    256 + call.request_body.bytes.len()
        + call.response_body.bytes.len()
        + headers(&call.request_headers)
        + headers(&call.response_headers)
        + call.facts.chunk_times.len() * 6
        + call.facts.rest_path.len()
}

/// What a frame header says, once checked against the bytes that follow it.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameCheck {
    /// A whole frame of this many bytes (header included) with a matching CRC.
    Whole(usize),
    /// Fewer bytes than the frame needs: a torn write, or the end of the data read.
    Short,
    /// The length is impossible or the CRC does not match.
    Corrupt,
}

/// Checks the frame at the start of `bytes`.
pub fn check_frame(bytes: &[u8]) -> FrameCheck {
    if bytes.len() < FRAME_HEADER {
        return FrameCheck::Short;
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if len == 0 || len > MAX_FRAME_BODY {
        return FrameCheck::Corrupt;
    }
    let Some(body) = bytes.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return FrameCheck::Short;
    };
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if crc32fast::hash(body) != crc {
        return FrameCheck::Corrupt;
    }
    FrameCheck::Whole(FRAME_HEADER + len)
}

/// Whether `bytes` may start a frame that fits in `room` bytes: a possible length
/// and a known flags byte. The cheap test before a CRC when the log looks for the
/// next whole frame after a damaged one.
pub fn plausible_start(bytes: &[u8], room: u64) -> Option<usize> {
    let need = declared_len(bytes)?;
    let flags = *bytes.get(FRAME_HEADER)?;
    (need as u64 <= room && flags & !FLAG_SEALED == 0).then_some(need)
}

/// The declared body length of the frame at the start of `bytes` (at least 8 bytes).
pub fn declared_len(bytes: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    (len > 0 && len <= MAX_FRAME_BODY).then_some(FRAME_HEADER + len)
}

/// Decodes a whole, checked frame (see `check_frame`) into its run and call.
pub fn decode_frame(
    frame: &[u8],
    keys: Option<&Keyring>,
) -> Result<(u64, RedactedCall), FormatError> {
    let body = frame.get(FRAME_HEADER..).ok_or(FormatError::Malformed(0))?;
    let (&flags, payload) = body.split_first().ok_or(FormatError::Malformed(0))?;
    if flags & FLAG_SEALED != 0 {
        let keys = keys.ok_or(FormatError::KeyRequired)?;
        let plain = keys.open(payload)?;
        decode_payload(&plain)
    } else {
        decode_payload(payload)
    }
}

fn encode_payload(out: &mut Vec<u8>, run: u64, c: &RedactedCall) -> Result<(), FormatError> {
    out.reserve(estimated_size(c));
    out.push(VERSION);
    put_varint(out, run);
    put_str(out, &c.facts.id);
    put_str(out, &c.facts.invocation_id);
    put_varint(out, u64::from(c.facts.arrival_round));
    put_varint(out, c.facts.started_at_us);
    put_duration(out, c.facts.latency);
    put_opt(out, c.facts.first_byte.as_ref(), |out, d| {
        put_duration(out, *d)
    });
    put_str(out, &c.facts.provider);
    put_str(out, &c.facts.price_as);
    put_str(out, c.facts.kind.as_str());
    put_str(out, &c.facts.method);
    put_str(out, &c.facts.rest_path);
    put_opt_str(out, c.query.as_deref());
    put_str(out, &c.facts.upstream_host);
    put_opt(out, c.facts.http_status.as_ref(), |out, s| {
        put_varint(out, u64::from(*s))
    });
    match &c.facts.outcome {
        Outcome::Completed => out.push(0),
        Outcome::UpstreamError { message } => {
            out.push(1);
            put_str(out, message);
        }
        Outcome::Timeout { message } => {
            out.push(2);
            put_str(out, message);
        }
        Outcome::Canceled => out.push(3),
        Outcome::Unreachable { message } => {
            out.push(4);
            put_str(out, message);
        }
    }
    put_headers(out, &c.request_headers);
    put_headers(out, &c.response_headers);
    put_body(out, &c.request_body);
    put_body(out, &c.response_body);
    put_varint(out, c.facts.chunk_times.len() as u64);
    for (received, at) in &c.facts.chunk_times {
        put_varint(out, *received as u64);
        put_duration(out, *at);
    }
    put_opt_str(out, c.facts.meta.invocation_id.as_deref());
    put_opt_str(out, c.facts.meta.trace_id.as_deref());
    out.push(u8::from(c.facts.meta.omit_request) | (u8::from(c.facts.meta.omit_response) << 1));
    if c.facts.meta.metadata == crate::record::Metadata::default() {
        put_bytes(out, b"");
    } else {
        let json = serde_json::to_vec(&c.facts.meta.metadata).map_err(|e| FormatError::Field {
            field: "metadata",
            reason: e.to_string(),
        })?;
        put_bytes(out, &json);
    }
    put_opt_str(out, c.facts.client_ip.as_deref());
    put_opt_str(out, c.facts.user_agent.as_deref());
    put_varint(out, c.facts.delivered_bytes);
    put_opt_str(out, c.api_key_fingerprint.as_deref());
    put_varint(out, c.facts.notes.len() as u64);
    for note in &c.facts.notes {
        put_str(out, note);
    }
    match &c.pre_parsed {
        None => out.push(0),
        Some(parsed) => {
            let json = serde_json::to_vec(parsed).map_err(|e| FormatError::Field {
                field: "pre_parsed",
                reason: e.to_string(),
            })?;
            out.push(1);
            put_bytes(out, &json);
        }
    }
    Ok(())
}

fn decode_payload(bytes: &[u8]) -> Result<(u64, RedactedCall), FormatError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.u8()?;
    if version != 1 && version != VERSION {
        return Err(FormatError::Version(version));
    }
    let run = r.varint()?;
    let id = r.string()?;
    let invocation_id = r.string()?;
    let arrival_round = u32::try_from(r.varint()?).map_err(|_| r.malformed())?;
    let started_at_us = r.varint()?;
    let latency = r.duration()?;
    let first_byte = r.opt(|r| r.duration())?;
    let provider = r.string()?;
    let price_as = r.string()?;
    let kind_text = r.string()?;
    let kind = ProviderKind::parse(&kind_text).ok_or(FormatError::Field {
        field: "kind",
        reason: format!("unknown provider kind {kind_text:?}"),
    })?;
    let method = r.string()?;
    let rest_path = r.string()?;
    let query = r.opt(|r| r.string())?;
    let upstream_host = r.string()?;
    let http_status = r.opt(|r| u16::try_from(r.varint()?).map_err(|_| r.malformed()))?;
    let outcome = match r.u8()? {
        0 => Outcome::Completed,
        1 => Outcome::UpstreamError {
            message: r.string()?,
        },
        2 => Outcome::Timeout {
            message: r.string()?,
        },
        3 => Outcome::Canceled,
        4 => Outcome::Unreachable {
            message: r.string()?,
        },
        _ => return Err(r.malformed()),
    };
    let request_headers = r.headers()?;
    let response_headers = r.headers()?;
    let request_body = r.body()?;
    let response_body = r.body()?;
    let chunks = r.count()?;
    let mut chunk_times = Vec::with_capacity(chunks.min(4096));
    for _ in 0..chunks {
        let received = usize::try_from(r.varint()?).map_err(|_| r.malformed())?;
        chunk_times.push((received, r.duration()?));
    }
    let meta_invocation = r.opt(|r| r.string())?;
    let trace_id = r.opt(|r| r.string())?;
    let omit = r.u8()?;
    let metadata_json = r.bytes()?;
    let metadata = if metadata_json.is_empty() {
        crate::record::Metadata::default()
    } else {
        serde_json::from_slice(metadata_json).map_err(|e| FormatError::Field {
            field: "metadata",
            reason: e.to_string(),
        })?
    };
    let client_ip = r.opt(|r| r.string())?;
    let user_agent = r.opt(|r| r.string())?;
    let delivered_bytes = r.varint()?;
    let api_key_fingerprint = r.opt(|r| r.string())?;
    let note_count = r.count()?;
    let mut notes = Vec::with_capacity(note_count.min(64));
    for _ in 0..note_count {
        notes.push(r.string()?);
    }
    let pre_parsed = if version >= 2 {
        r.opt(|r| {
            serde_json::from_slice(r.bytes()?).map_err(|e| FormatError::Field {
                field: "pre_parsed",
                reason: e.to_string(),
            })
        })?
    } else {
        None
    };
    Ok((
        run,
        RedactedCall {
            facts: CallFacts {
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
                meta: CallMeta {
                    invocation_id: meta_invocation,
                    trace_id,
                    omit_request: omit & 1 != 0,
                    omit_response: omit & 2 != 0,
                    metadata,
                },
                client_ip,
                user_agent,
                delivered_bytes,
                notes,
            },
            query,
            request_headers,
            response_headers,
            request_body,
            response_body,
            api_key_fingerprint,
            pre_parsed,
        },
    ))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_opt<T>(out: &mut Vec<u8>, v: Option<&T>, put: impl FnOnce(&mut Vec<u8>, &T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put(out, v);
        }
    }
}

fn put_opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_str(out, v);
        }
    }
}

fn put_duration(out: &mut Vec<u8>, d: Duration) {
    put_varint(out, u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
}

fn put_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    put_varint(out, headers.len() as u64);
    for (name, value) in headers {
        put_str(out, name.as_str());
        put_bytes(out, value.as_bytes());
    }
}

fn put_body(out: &mut Vec<u8>, body: &CapturedBody) {
    put_varint(out, body.total);
    out.push(u8::from(body.truncated));
    put_bytes(out, &body.bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn malformed(&self) -> FormatError {
        FormatError::Malformed(self.at)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        let b = *self.bytes.get(self.at).ok_or(self.malformed())?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, FormatError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.malformed())
    }

    /// A count of items still to read, each at least one byte: bounded by what is left.
    fn count(&mut self) -> Result<usize, FormatError> {
        let n = self.varint()?;
        if n > (self.bytes.len() - self.at) as u64 {
            return Err(self.malformed());
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let len = self.count()?;
        let out = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(out)
    }

    fn string(&mut self) -> Result<String, FormatError> {
        let at = self.at;
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| FormatError::Malformed(at))
    }

    fn opt<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, FormatError>,
    ) -> Result<Option<T>, FormatError> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(self.malformed()),
        }
    }

    fn duration(&mut self) -> Result<Duration, FormatError> {
        Ok(Duration::from_micros(self.varint()?))
    }

    fn headers(&mut self) -> Result<HeaderMap, FormatError> {
        let n = self.count()?;
        let mut map = HeaderMap::with_capacity(n);
        for _ in 0..n {
            let at = self.at;
            let name =
                HeaderName::from_bytes(self.bytes()?).map_err(|_| FormatError::Malformed(at))?;
            let at = self.at;
            let value =
                HeaderValue::from_bytes(self.bytes()?).map_err(|_| FormatError::Malformed(at))?;
            map.append(name, value);
        }
        Ok(map)
    }

    fn body(&mut self) -> Result<CapturedBody, FormatError> {
        let total = self.varint()?;
        let truncated = self.u8()? != 0;
        let bytes = self.bytes()?.to_vec();
        Ok(CapturedBody {
            bytes,
            total,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_call(i: usize) -> RedactedCall {
        let mut call = crate::recorder::redact(crate::dev::synthetic_finished_call(i, 1024));
        call.query = Some("alt=sse&key=[redacted]".into());
        call.facts.outcome = Outcome::Timeout {
            message: "no response".into(),
        };
        call.facts.chunk_times = vec![
            (10, Duration::from_micros(1500)),
            (20, Duration::from_millis(3)),
        ];
        call.facts.meta.trace_id = Some("abc".into());
        call.facts.meta.omit_response = true;
        call.facts
            .meta
            .metadata
            .properties
            .insert("team".into(), "growth".into());
        call.facts.meta.metadata.prompt_variables = Some(serde_json::json!({"city": "Oslo"}));
        call.request_body.truncated = true;
        call.request_body.total = 1 << 40;
        call.facts.notes = vec!["a note from the forward path".into()];
        call
    }

    #[test]
    fn a_frame_round_trips_plain_and_sealed() {
        let keys = Keyring::from_text(&"ab".repeat(32)).unwrap();
        for sealed in [false, true] {
            let call = sample_call(7);
            let mut out = vec![9u8; 3];
            let len = encode_frame(&mut out, 42, &call, sealed.then_some(&keys)).unwrap();
            assert_eq!(out.len(), 3 + len);
            let frame = &out[3..];
            assert_eq!(check_frame(frame), FrameCheck::Whole(len));
            let (run, back) = decode_frame(frame, Some(&keys)).unwrap();
            assert_eq!(run, 42);
            assert_eq!(back, call);
            // A sealed frame carries no body text in the clear.
            let marker = &call.request_body.bytes[40..80];
            let clear = frame.windows(marker.len()).any(|w| w == marker);
            assert_eq!(clear, !sealed);
        }
    }

    #[test]
    fn a_sealed_frame_needs_the_key() {
        let keys = Keyring::from_text(&"cd".repeat(32)).unwrap();
        let mut out = Vec::new();
        encode_frame(&mut out, 1, &sample_call(1), Some(&keys)).unwrap();
        assert!(matches!(
            decode_frame(&out, None),
            Err(FormatError::KeyRequired)
        ));
    }

    #[test]
    fn every_torn_or_flipped_frame_is_detected() {
        let mut out = Vec::new();
        let len = encode_frame(&mut out, 3, &sample_call(3), None).unwrap();
        for cut in 0..len {
            assert_eq!(check_frame(&out[..cut]), FrameCheck::Short, "cut at {cut}");
        }
        for at in (0..len).step_by(7) {
            let mut bad = out.clone();
            bad[at] ^= 0x40;
            assert_ne!(check_frame(&bad), FrameCheck::Whole(len), "flip at {at}");
        }
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let mut plain = Vec::new();
        encode_payload(&mut plain, 5, &sample_call(5)).unwrap();
        for cut in 0..plain.len() {
            assert!(decode_payload(&plain[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = vec![VERSION];
        put_varint(&mut huge, 1);
        put_varint(&mut huge, u64::MAX);
        assert!(decode_payload(&huge).is_err());
    }
}
