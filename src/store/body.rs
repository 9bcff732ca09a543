//! Cutting one captured body into content-addressed pieces, and finding its attachments.
//!
//! A request body is stored as a template over its raw bytes: the conversation
//! array (OpenAI `messages`, Responses `input`, Anthropic `messages`, Gemini
//! `contents`) becomes a chain of prefix chunks, so round n stores one small chunk
//! naming round n-1's history plus the messages it added; the system prompt
//! (`system`, `systemInstruction`, `instructions`), `tools` and any other large
//! top-level value become chunks of their own; base64 attachment payloads become
//! blob references. Everything between pieces is kept as literal bytes, so the body
//! is rebuilt exactly. Bodies that are not JSON objects are stored as one chunk.
//!
//! An MCP server's list answer (`tools/list` and its kin: JSON, SSE or stdio lines) is
//! cut around its list (`mcp_list_ranges`): a client asks again in every session,
//! and the same list is stored once, each answer a small chunk of framing naming it.

use super::content::{ContentSink, Seg};
use super::crypto::{hex, Addr};
use super::scan::{self, Kind, Node};
use super::StoreError;
use crate::record::Attachment;
use base64::Engine;
use std::ops::Range;

/// Top-level arrays that grow by appending, one element per turn.
const HISTORY_KEYS: &[&str] = &["messages", "input", "contents"];
/// Top-level values re-sent unchanged every round.
const PIECE_KEYS: &[&str] = &[
    "system",
    "systemInstruction",
    "system_instruction",
    "instructions",
    "tools",
    "functions",
    "toolConfig",
];
/// Other top-level values at least this large get a chunk of their own.
const PIECE_MIN: usize = 512;
/// The shortest base64 payload mirrored: one 4-character group. Small attachments
/// are mirrored too, so every attachment a message lists can be downloaded.
const MIN_BLOB_B64: usize = 4;
const URL_KEYS: &[&str] = &[
    "image_url",
    "file_url",
    "fileUri",
    "file_uri",
    "document_url",
];
const URL_PARENTS: &[&str] = &["image_url", "source", "file", "document", "audio_url"];

/// A base64 attachment payload found in a body.
#[derive(Debug, Clone)]
pub struct FoundBlob {
    /// The payload's byte range (inside the JSON string, base64 text only).
    pub range: Range<usize>,
    pub addr: Addr,
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub filename: Option<String>,
}

/// A body ready to be stored: its structure and attachments.
pub struct Plan<'a> {
    pub raw: &'a [u8],
    pub root: Option<Node>,
    /// Sorted by position.
    pub blobs: Vec<FoundBlob>,
    pub urls: Vec<Attachment>,
    /// Whether to split top-level members into pieces (requests) or keep one chunk.
    pub split: bool,
}

impl<'a> Plan<'a> {
    pub fn new(raw: &'a [u8], txn: &dyn ContentSink, split: bool, attachments: bool) -> Plan<'a> {
        let root = if split || attachments {
            scan::scan(raw)
        } else {
            None
        };
        let mut plan = Plan {
            raw,
            root,
            blobs: Vec::new(),
            urls: Vec::new(),
            split,
        };
        if attachments {
            if let Some(root) = plan.root.take() {
                find(&mut plan, txn, &root, None, 0);
                plan.root = Some(root);
            }
            plan.blobs.sort_by_key(|b| b.range.start);
            plan.blobs.dedup_by_key(|b| b.range.start);
        }
        plan
    }

    /// The attachments as the call record lists them.
    pub fn attachments(&self) -> Vec<Attachment> {
        let mut out: Vec<Attachment> = Vec::new();
        for b in &self.blobs {
            let sha = hex(&b.addr);
            if out
                .iter()
                .any(|a| a.sha256.as_deref() == Some(sha.as_str()))
            {
                continue;
            }
            out.push(Attachment {
                source: "mirrored".into(),
                sha256: Some(sha),
                media_type: Some(b.media_type.clone()),
                size: Some(b.bytes.len() as u64),
                filename: b.filename.clone(),
                url: None,
            });
        }
        for u in &self.urls {
            if !out.iter().any(|a| a.url == u.url) {
                out.push(u.clone());
            }
        }
        out
    }

    /// Stores the body's pieces and returns its root address. The root gains no
    /// reference here: the caller (the call manifest) takes it.
    pub fn store(&self, txn: &mut dyn ContentSink, failures: &mut u64) -> Result<Addr, StoreError> {
        let addr = txn.codec().addr(self.raw);
        if txn.has_chunk(&addr)? {
            return Ok(addr);
        }
        let mut segs = Vec::new();
        match (&self.root, self.split) {
            (
                Some(Node {
                    kind: Kind::Object(members),
                    ..
                }),
                true,
            ) => {
                let mut cursor = 0;
                for m in members {
                    let v = &m.value;
                    let key = &self.raw[m.key_start..m.key_end];
                    let is = |keys: &[&str]| keys.iter().any(|k| k.as_bytes() == key);
                    match &v.kind {
                        Kind::Array(items) if is(HISTORY_KEYS) && !items.is_empty() => {
                            let first = items[0].start;
                            let last = items[items.len() - 1].end;
                            self.leaf(txn, cursor..first, &mut segs, failures)?;
                            segs.push(Seg::Chunk(self.history(txn, items, failures)?));
                            cursor = last;
                        }
                        _ if is(HISTORY_KEYS) || is(PIECE_KEYS) || v.end - v.start >= PIECE_MIN => {
                            self.leaf(txn, cursor..v.start, &mut segs, failures)?;
                            segs.push(Seg::Chunk(self.piece(txn, v.start..v.end, failures)?));
                            cursor = v.end;
                        }
                        _ => {}
                    }
                }
                self.leaf(txn, cursor..self.raw.len(), &mut segs, failures)?;
            }
            _ => self.leaf(txn, 0..self.raw.len(), &mut segs, failures)?,
        }
        txn.add_chunk(addr, &segs)?;
        Ok(addr)
    }

    /// Literal bytes with blob holes.
    fn leaf(
        &self,
        txn: &mut dyn ContentSink,
        range: Range<usize>,
        segs: &mut Vec<Seg>,
        failures: &mut u64,
    ) -> Result<(), StoreError> {
        let mut cursor = range.start;
        let first = self.blobs.partition_point(|b| b.range.start < range.start);
        for b in &self.blobs[first..] {
            if b.range.end > range.end {
                break;
            }
            // Storing an attachment fails open: on error its text stays inline.
            if let Err(e) = txn.ensure_blob(b.addr, &b.media_type, &b.bytes) {
                *failures += 1;
                tracing::warn!(error = %e, "cannot store attachment; keeping it inline");
                continue;
            }
            push_lit(segs, &self.raw[cursor..b.range.start]);
            segs.push(Seg::Blob(b.addr));
            cursor = b.range.end;
        }
        push_lit(segs, &self.raw[cursor..range.end]);
        Ok(())
    }

    /// A chunk for one value (a message, the system prompt, ...).
    fn piece(
        &self,
        txn: &mut dyn ContentSink,
        range: Range<usize>,
        failures: &mut u64,
    ) -> Result<Addr, StoreError> {
        let addr = txn.codec().addr(&self.raw[range.clone()]);
        if !txn.has_chunk(&addr)? {
            let mut segs = Vec::new();
            self.leaf(txn, range, &mut segs, failures)?;
            txn.add_chunk(addr, &segs)?;
        }
        Ok(addr)
    }

    /// The history array's elements as a prefix chain: the chunk for elements
    /// `0..k` names the longest stored prefix and holds the elements after it.
    fn history(
        &self,
        txn: &mut dyn ContentSink,
        items: &[Node],
        failures: &mut u64,
    ) -> Result<Addr, StoreError> {
        let k = items.len();
        if k == 1 {
            return self.piece(txn, items[0].start..items[0].end, failures);
        }
        // Prefix i spans items[0].start..items[i].end; one hashing pass for all of them.
        let mut hasher = txn.codec().hasher();
        let mut prefix = Vec::with_capacity(k);
        let mut at = items[0].start;
        for item in items {
            hasher.update(&self.raw[at..item.end]);
            at = item.end;
            prefix.push(hasher.clone().finish());
        }
        let full = prefix[k - 1];
        if txn.has_chunk(&full)? {
            return Ok(full);
        }
        let mut base = None;
        for j in (0..k - 1).rev() {
            if txn.has_chunk(&prefix[j])? {
                base = Some(j);
                break;
            }
        }
        let mut segs = Vec::new();
        match base {
            // The usual round: the stored history plus what this round added, kept
            // inline (one chunk, one zstd frame, one refcount per call).
            Some(j) => {
                segs.push(Seg::Chunk(prefix[j]));
                self.leaf(txn, items[j].end..items[k - 1].end, &mut segs, failures)?;
            }
            // A first round or a rewritten history: one chunk per message, so
            // messages shared with other conversations are still stored once.
            None => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.leaf(txn, items[i - 1].end..item.start, &mut segs, failures)?;
                    }
                    segs.push(Seg::Chunk(self.piece(
                        txn,
                        item.start..item.end,
                        failures,
                    )?));
                }
            }
        }
        txn.add_chunk(full, &segs)?;
        Ok(full)
    }
}

/// The lists of an MCP answer that servers send again and again unchanged: `tools`,
/// `prompts`, `resources`, `resourceTemplates` of a JSON-RPC `result`.
const MCP_LIST_KEYS: &[&str] = &["tools", "prompts", "resources", "resourceTemplates"];

/// The byte ranges of the lists (`MCP_LIST_KEYS`) in an MCP response body: one JSON
/// message or batch, an SSE stream (each `data:` line a message), or stdio lines.
pub fn mcp_list_ranges(raw: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut documents = Vec::new();
    if scan::scan(raw).is_some() {
        documents.push(0..raw.len());
    } else {
        let mut at = 0;
        for line in raw.split_inclusive(|b| *b == b'\n') {
            let start = at;
            at += line.len();
            let mut body = start..start + line.trim_ascii_end().len();
            if let Some(data) = raw[body.clone()].strip_prefix(b"data:") {
                body.start = body.end - data.len();
                if data.first() == Some(&b' ') {
                    body.start += 1;
                }
            }
            documents.push(body);
        }
    }
    for document in documents {
        let text = &raw[document.clone()];
        let Some(root) = scan::scan(text) else {
            continue;
        };
        let messages = match &root.kind {
            Kind::Array(items) => items.iter().collect(),
            _ => vec![&root],
        };
        for message in messages {
            let Some(result) = message.get(text, "result") else {
                continue;
            };
            for key in MCP_LIST_KEYS {
                if let Some(
                    list @ Node {
                        kind: Kind::Array(_),
                        ..
                    },
                ) = result.get(text, key)
                {
                    out.push(document.start + list.start..document.start + list.end);
                }
            }
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

impl Plan<'_> {
    /// Stores the body with each of `pieces` (sorted, not overlapping) as a chunk of
    /// its own, the bytes around them literal; returns the root address (with no
    /// reference taken, as `store`).
    pub fn store_cut(
        &self,
        txn: &mut dyn ContentSink,
        pieces: &[Range<usize>],
        failures: &mut u64,
    ) -> Result<Addr, StoreError> {
        let addr = txn.codec().addr(self.raw);
        if txn.has_chunk(&addr)? {
            return Ok(addr);
        }
        let mut segs = Vec::new();
        let mut cursor = 0;
        for piece in pieces {
            if piece.start < cursor || piece.end > self.raw.len() {
                continue;
            }
            self.leaf(txn, cursor..piece.start, &mut segs, failures)?;
            segs.push(Seg::Chunk(self.piece(txn, piece.clone(), failures)?));
            cursor = piece.end;
        }
        self.leaf(txn, cursor..self.raw.len(), &mut segs, failures)?;
        txn.add_chunk(addr, &segs)?;
        Ok(addr)
    }
}

fn push_lit(segs: &mut Vec<Seg>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Some(Seg::Lit(prev)) = segs.last_mut() {
        prev.extend_from_slice(bytes);
    } else {
        segs.push(Seg::Lit(bytes.to_vec()));
    }
}

fn text<'a>(raw: &'a [u8], node: &Node) -> Option<&'a str> {
    let inner = node.str_inner(raw)?;
    if inner.contains(&b'\\') {
        return None;
    }
    std::str::from_utf8(inner).ok()
}

/// Decodes a payload only when re-encoding gives the same text, so the blob
/// reference rebuilds the original bytes exactly.
fn try_blob(
    plan: &mut Plan<'_>,
    txn: &dyn ContentSink,
    range: Range<usize>,
    media_type: &str,
    filename: Option<&str>,
) {
    let payload = &plan.raw[range.clone()];
    if payload.len() < MIN_BLOB_B64 || payload.contains(&b'\\') {
        return;
    }
    let engine = &base64::engine::general_purpose::STANDARD;
    let Ok(bytes) = engine.decode(payload) else {
        return;
    };
    if bytes.is_empty() || engine.encode(&bytes).as_bytes() != payload {
        return;
    }
    plan.blobs.push(FoundBlob {
        addr: txn.codec().addr(&bytes),
        range,
        media_type: media_type.to_string(),
        bytes,
        filename: filename.map(str::to_string),
    });
}

fn find(
    plan: &mut Plan<'_>,
    txn: &dyn ContentSink,
    node: &Node,
    parent_key: Option<&str>,
    depth: usize,
) {
    let raw = plan.raw;
    match &node.kind {
        Kind::Object(members) => {
            let filename = node
                .get_str(raw, "filename")
                .or_else(|| node.get_str(raw, "file_name"));
            let media = ["media_type", "mimeType", "mime_type"]
                .iter()
                .find_map(|k| node.get_str(raw, k))
                .map(str::to_string)
                .or_else(|| {
                    (parent_key == Some("input_audio"))
                        .then(|| node.get_str(raw, "format").map(|f| format!("audio/{f}")))
                        .flatten()
                });
            // Anthropic base64 sources, Gemini inlineData, OpenAI input_audio.
            if let (Some(data), Some(media)) = (node.get(raw, "data"), media.as_deref()) {
                if data.kind == Kind::Str {
                    try_blob(plan, txn, data.start + 1..data.end - 1, media, filename);
                }
            }
            for m in members {
                let key = std::str::from_utf8(&raw[m.key_start..m.key_end]).unwrap_or("");
                let v = &m.value;
                if let Some(s) = text(raw, v) {
                    if let Some(rest) = s.strip_prefix("data:") {
                        // data:<media type>[;param...];base64,<payload>
                        if let Some(comma) = rest.find(',') {
                            let header = &rest[..comma];
                            if header.ends_with(";base64") {
                                let media = header.split(';').next().unwrap_or("");
                                let start = v.start + 1 + "data:".len() + comma + 1;
                                let media = if media.is_empty() {
                                    "application/octet-stream"
                                } else {
                                    media
                                };
                                try_blob(plan, txn, start..v.end - 1, media, filename);
                            }
                        }
                    } else if (s.starts_with("https://") || s.starts_with("http://"))
                        && (URL_KEYS.contains(&key)
                            || (key == "url"
                                && parent_key.is_some_and(|p| URL_PARENTS.contains(&p))))
                    {
                        plan.urls.push(Attachment {
                            source: "url".into(),
                            url: Some(s.to_string()),
                            media_type: media.clone(),
                            filename: filename.map(str::to_string),
                            sha256: None,
                            size: None,
                        });
                    }
                }
                if depth < 32 {
                    find(plan, txn, v, Some(key), depth + 1);
                }
            }
        }
        Kind::Array(items) => {
            if depth < 32 {
                for item in items {
                    find(plan, txn, item, parent_key, depth + 1);
                }
            }
        }
        Kind::Str | Kind::Scalar => {}
    }
}

/// Replaces attachment payloads in a parsed view (base64 strings or data URLs the
/// parsers copied) by `{"$blob": sha256, "media_type", "size"}` references.
pub fn replace_payloads(value: &mut serde_json::Value, blobs: &[FoundBlob], raw: &[u8]) {
    use serde_json::Value;
    match value {
        Value::String(s) if s.len() >= MIN_BLOB_B64 => {
            let payload = match s.strip_prefix("data:") {
                Some(rest) => rest.split_once(',').map_or("", |(_, p)| p),
                None => s.as_str(),
            };
            if let Some(b) = blobs
                .iter()
                .find(|b| &raw[b.range.clone()] == payload.as_bytes())
            {
                *value = serde_json::json!({
                    "$blob": hex(&b.addr),
                    "media_type": b.media_type,
                    "size": b.bytes.len(),
                });
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| replace_payloads(v, blobs, raw)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| replace_payloads(v, blobs, raw)),
        _ => {}
    }
}

#[cfg(test)]
mod mcp_list_tests {
    use super::mcp_list_ranges;

    #[test]
    fn an_mcp_list_is_found_in_json_sse_and_stdio_framing() {
        let list = r#"[{"name":"a","inputSchema":{}}]"#;
        let json = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":{list}}}}}"#);
        let sse = format!("id: 0\nretry: 3000\ndata: \n\nevent: message\ndata: {json}\n\n");
        let stdio =
            format!("{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}\n{json}");
        for body in [json.clone(), sse, stdio] {
            let ranges = mcp_list_ranges(body.as_bytes());
            assert_eq!(ranges.len(), 1, "{body}");
            assert_eq!(&body[ranges[0].clone()], list);
        }
        assert!(mcp_list_ranges(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#).is_empty());
        assert!(mcp_list_ranges(b"not json").is_empty());
    }
}
