//! A call's content: what `write_batch` keeps out of the `calls` tree, and how
//! `get_call` puts it back.
//!
//! The `calls` tree holds the record's metadata in clear JSON (times, agent,
//! model, status, tokens, cost: what filters and indexes need). The bodies and the
//! parsed request/response views go to the content store; the record's manifest in
//! `call_content` (sealed like every other content value) names their root chunks.

use super::content::{ContentTrees, Txn};
use super::{SledStore, StoreError, StoreStats};
use crate::record::{CallRecord, Endpoint, ProviderKind, RequestView, ResponseView};
use crate::store::body::{replace_payloads, Plan};
use crate::store::crypto::{Addr, ADDR_LEN};
use crate::store::disk::DiskLevel;
use crate::store::index::CallText;
use crate::store::stored::metadata_only;
use std::sync::Arc;

/// Manifest layout: version, flags (one byte in v1, u16 LE in v2 and v3), then one
/// address per `HAS_*` flag set, in flag order; v3 then holds the inline pieces:
/// a mask (`INLINE_*` bits) and, per bit set in order, a varint length and the bytes.
const MANIFEST_V1: u8 = 1;
const MANIFEST_V2: u8 = 2;
const MANIFEST_V3: u8 = 3;
const INLINE_REQUEST: u8 = 1;
const INLINE_RESPONSE: u8 = 2;
const INLINE_SEARCH_SYSTEM: u8 = 4;
const INLINE_SEARCH_USER: u8 = 8;
/// Bodies up to this size without attachment payloads are kept in the manifest
/// itself rather than content-addressed: one zstd frame with the manifest, no
/// chunks, refcounts or hashes. What deduplication gains is in the repeated
/// system prompts, tools and histories of agent rounds, which are larger.
pub(super) const INLINE_MAX: usize = 4096;
const HAS_REQUEST: u16 = 1;
const HAS_RESPONSE: u16 = 2;
const HAS_REQUEST_VIEW: u16 = 4;
const HAS_RESPONSE_VIEW: u16 = 8;
const HAS_PROMPT_VARIABLES: u16 = 16;
/// The request view is not stored: it is rebuilt from the raw request at read time.
const REQUEST_VIEW_DERIVED: u16 = 32;
const HAS_SEARCH_SYSTEM: u16 = 64;
const HAS_SEARCH_USER: u16 = 128;
/// The response view is rebuilt from the raw request and response at read time.
const RESPONSE_VIEW_DERIVED: u16 = 256;

/// Where a call's content lives.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub request: Option<Addr>,
    pub response: Option<Addr>,
    pub request_view: Option<Addr>,
    pub response_view: Option<Addr>,
    /// `x-llmtap-prompt-variables` (JSON): prompt content, so sealed with the bodies.
    pub prompt_variables: Option<Addr>,
    /// The parsers are pure, so the request view (which repeats the whole message
    /// history) is parsed again from `request` when read rather than stored twice.
    pub request_view_derived: bool,
    /// Likewise for the response view, parsed again from both raw bodies.
    pub response_view_derived: bool,
    /// The texts `q` searches (see `CallText`): the system prompt, stored once per
    /// distinct text like any chunk, and the last user message. Prompt content, so
    /// sealed and dropped with the bodies.
    pub search_system: Option<Addr>,
    pub search_user: Option<Addr>,
    /// Pieces kept in the manifest itself (small bodies, see `INLINE_MAX`); a piece
    /// is either inline or addressed, never both.
    pub inline: Inline,
}

/// A small call's content, kept in its manifest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inline {
    pub request: Option<Vec<u8>>,
    pub response: Option<Vec<u8>>,
    pub search_system: Option<Vec<u8>>,
    pub search_user: Option<Vec<u8>>,
}

impl Inline {
    fn slots(&self) -> [(u8, &Option<Vec<u8>>); 4] {
        [
            (INLINE_REQUEST, &self.request),
            (INLINE_RESPONSE, &self.response),
            (INLINE_SEARCH_SYSTEM, &self.search_system),
            (INLINE_SEARCH_USER, &self.search_user),
        ]
    }

    fn is_empty(&self) -> bool {
        self.slots().iter().all(|(_, s)| s.is_none())
    }
}

impl Manifest {
    /// Whether the call names its `q` texts (stores before that keep them in `call_text`).
    fn has_search_text(&self) -> bool {
        self.search_system.is_some()
            || self.search_user.is_some()
            || self.inline.search_system.is_some()
            || self.inline.search_user.is_some()
    }

    /// The request or response body: inline, else rebuilt from its root chunk.
    fn body(&self, c: &ContentTrees, response: bool) -> Result<Option<Vec<u8>>, StoreError> {
        let (inline, root) = if response {
            (&self.inline.response, &self.response)
        } else {
            (&self.inline.request, &self.request)
        };
        match (inline, root) {
            (Some(bytes), _) => Ok(Some(bytes.clone())),
            (None, Some(a)) => c.expand(a).map(Some),
            (None, None) => Ok(None),
        }
    }

    pub fn roots(&self) -> impl Iterator<Item = &Addr> {
        [
            &self.request,
            &self.response,
            &self.request_view,
            &self.response_view,
            &self.prompt_variables,
            &self.search_system,
            &self.search_user,
        ]
        .into_iter()
        .flatten()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0u16;
        let version = if self.inline.is_empty() {
            MANIFEST_V2
        } else {
            MANIFEST_V3
        };
        let mut out = vec![version, 0, 0];
        for (bit, a) in [
            (HAS_REQUEST, &self.request),
            (HAS_RESPONSE, &self.response),
            (HAS_REQUEST_VIEW, &self.request_view),
            (HAS_RESPONSE_VIEW, &self.response_view),
            (HAS_PROMPT_VARIABLES, &self.prompt_variables),
            (HAS_SEARCH_SYSTEM, &self.search_system),
            (HAS_SEARCH_USER, &self.search_user),
        ] {
            if let Some(a) = a {
                flags |= bit;
                out.extend_from_slice(a);
            }
        }
        if self.request_view_derived {
            flags |= REQUEST_VIEW_DERIVED;
        }
        if self.response_view_derived {
            flags |= RESPONSE_VIEW_DERIVED;
        }
        out[1..3].copy_from_slice(&flags.to_le_bytes());
        if version == MANIFEST_V3 {
            let mask = self
                .inline
                .slots()
                .iter()
                .filter(|(_, s)| s.is_some())
                .fold(0u8, |m, (bit, _)| m | bit);
            out.push(mask);
            for (_, slot) in self.inline.slots() {
                if let Some(bytes) = slot {
                    crate::store::content::put_varint(&mut out, bytes.len() as u64);
                    out.extend_from_slice(bytes);
                }
            }
        }
        out
    }

    pub fn decode(data: &[u8]) -> Option<Manifest> {
        let (&version, rest) = data.split_first()?;
        let (flags, mut rest) = match version {
            MANIFEST_V1 => {
                let (&flags, rest) = rest.split_first()?;
                (u16::from(flags), rest)
            }
            MANIFEST_V2 | MANIFEST_V3 => {
                let (flags, rest) = rest.split_first_chunk::<2>()?;
                (u16::from_le_bytes(*flags), rest)
            }
            _ => return None,
        };
        let mut m = Manifest {
            request_view_derived: flags & REQUEST_VIEW_DERIVED != 0,
            response_view_derived: flags & RESPONSE_VIEW_DERIVED != 0,
            ..Manifest::default()
        };
        for (bit, slot) in [
            (HAS_REQUEST, &mut m.request),
            (HAS_RESPONSE, &mut m.response),
            (HAS_REQUEST_VIEW, &mut m.request_view),
            (HAS_RESPONSE_VIEW, &mut m.response_view),
            (HAS_PROMPT_VARIABLES, &mut m.prompt_variables),
            (HAS_SEARCH_SYSTEM, &mut m.search_system),
            (HAS_SEARCH_USER, &mut m.search_user),
        ] {
            if flags & bit != 0 {
                *slot = Some(rest.get(..ADDR_LEN)?.try_into().ok()?);
                rest = &rest[ADDR_LEN..];
            }
        }
        if version == MANIFEST_V3 {
            let (&mask, mut at) = rest.split_first()?;
            for (bit, slot) in [
                (INLINE_REQUEST, &mut m.inline.request),
                (INLINE_RESPONSE, &mut m.inline.response),
                (INLINE_SEARCH_SYSTEM, &mut m.inline.search_system),
                (INLINE_SEARCH_USER, &mut m.inline.search_user),
            ] {
                if mask & bit != 0 {
                    let (len, tail) = crate::store::content::get_varint(at)?;
                    let len = usize::try_from(len).ok()?;
                    *slot = Some(tail.get(..len)?.to_vec());
                    at = &tail[len..];
                }
            }
            if !at.is_empty() {
                return None;
            }
        }
        Some(m)
    }
}

/// Logical sizes in the content store (keys + stored values).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ContentUsage {
    pub calls: u64,
    pub call_bytes: u64,
    pub manifest_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub ref_entries: u64,
}

fn exact<'a>(text: &'a Option<String>, bytes: &'a Option<Vec<u8>>) -> Option<&'a [u8]> {
    bytes
        .as_deref()
        .or_else(|| text.as_deref().map(str::as_bytes))
}

/// Stores one call's content in `txn`; returns the manifest, with one reference
/// taken on each root, and fills `meta.attachments`.
pub(super) fn store_content(
    txn: &mut Txn<'_>,
    stats: &StoreStats,
    call: &CallRecord,
    meta: &mut CallRecord,
) -> Result<Manifest, StoreError> {
    let mut manifest = Manifest::default();
    let mut failures = 0u64;
    let mut blobs = Vec::new();
    let request_raw = exact(&call.request_body, &call.request_body_bytes);
    let response_raw = exact(&call.response_body, &call.response_body_bytes);
    let mut inline_request = false;
    if let Some(raw) = request_raw {
        let plan = Plan::new(raw, txn, true, true);
        meta.attachments = plan.attachments();
        if raw.len() <= INLINE_MAX && plan.blobs.is_empty() {
            manifest.inline.request = Some(raw.to_vec());
            inline_request = true;
        } else {
            manifest.request = Some(plan.store(txn, &mut failures)?);
            StoreStats::add(&stats.attachments_mirrored, plan.blobs.len() as u64);
            blobs = plan.blobs;
        }
    }
    if let Some(raw) = response_raw {
        if raw.len() <= INLINE_MAX {
            manifest.inline.response = Some(raw.to_vec());
        } else {
            let plan = Plan::new(raw, txn, false, false);
            manifest.response = Some(plan.store(txn, &mut failures)?);
        }
    }
    if let Some(view) = &call.request {
        // The parsed view shows references, not payloads; a view that held one is
        // stored as rewritten, any other is rebuilt from the raw request when read.
        let rewritten = if blobs.is_empty() {
            None
        } else {
            let plain = serde_json::to_value(view).map_err(StoreError::Encode)?;
            let mut value = plain.clone();
            replace_payloads(&mut value, &blobs, request_raw.unwrap_or_default());
            (value != plain).then_some(value)
        };
        let derivable = request_raw.is_some()
            && rewritten.is_none()
            && call.endpoint.is_some_and(|e| e != Endpoint::Other);
        if derivable {
            debug_assert_eq!(
                Some(view),
                call.endpoint
                    .zip(request_raw)
                    .map(|(e, raw)| crate::parse::request_view(e, raw))
                    .as_ref(),
                "call {}: the request view must be what the parser makes of the raw request",
                call.id
            );
            manifest.request_view_derived = true;
        } else {
            let json = match rewritten {
                Some(value) => serde_json::to_vec(&value),
                None => serde_json::to_vec(view),
            }
            .map_err(StoreError::Encode)?;
            let plan = Plan::new(&json, txn, true, false);
            manifest.request_view = Some(plan.store(txn, &mut failures)?);
        }
    }
    if let Some(view) = &call.response {
        let input = request_raw
            .zip(response_raw)
            .and_then(|(request, response)| exchange_input(call, request, response));
        if let Some(input) = input {
            debug_assert_eq!(
                view,
                &crate::parse::parse_exchange(&input).response,
                "call {}: the response view must be what the parser makes of the raw bodies",
                call.id
            );
            manifest.response_view_derived = true;
        } else {
            let json = serde_json::to_vec(view).map_err(StoreError::Encode)?;
            let plan = Plan::new(&json, txn, false, false);
            manifest.response_view = Some(plan.store(txn, &mut failures)?);
        }
    }
    if let Some(vars) = &call.metadata.prompt_variables {
        let json = serde_json::to_vec(vars).map_err(StoreError::Encode)?;
        let plan = Plan::new(&json, txn, false, false);
        manifest.prompt_variables = Some(plan.store(txn, &mut failures)?);
    }
    if let Some(text) = CallText::of(call) {
        if inline_request {
            // Beside the request in one zstd frame, the texts cost a few bytes of
            // back-references, not their length.
            manifest.inline.search_system = text.system.map(String::into_bytes);
            manifest.inline.search_user = text.last_user.map(String::into_bytes);
        } else {
            for (slot, text) in [
                (&mut manifest.search_system, text.system),
                (&mut manifest.search_user, text.last_user),
            ] {
                if let Some(text) = text {
                    let plan = Plan::new(text.as_bytes(), txn, false, false);
                    *slot = Some(plan.store(txn, &mut failures)?);
                }
            }
        }
    }
    for root in manifest.roots() {
        txn.ref_chunk(root);
    }
    if failures > 0 {
        StoreStats::add(&stats.attachment_failures, failures);
        meta.parse_notes.push(format!(
            "{failures} attachment(s) could not be mirrored and stay inline"
        ));
    }
    Ok(manifest)
}

/// The parser's input for a stored call, as the recorder gave it at capture time
/// (`None` for routes the parsers do not read).
fn exchange_input<'a>(
    call: &'a CallRecord,
    request: &'a [u8],
    response: &'a [u8],
) -> Option<crate::parse::ExchangeInput<'a>> {
    let kind = ProviderKind::parse(&call.kind).filter(|k| *k != ProviderKind::Http)?;
    Some(crate::parse::ExchangeInput {
        kind,
        provider: &call.provider,
        // The recorder keeps the path with its (redacted) query; parsers read the path.
        path: call.path.split('?').next().unwrap_or(""),
        query: None,
        request_body: request,
        response_status: call.http_status,
        response_content_type: call
            .response_headers
            .get("content-type")
            .map(String::as_str),
        response_body: response,
    })
}

/// Metadata records for the `calls` tree, and `(call id, sealed manifest)` pairs.
pub(super) type Prepared = (Vec<CallRecord>, Vec<(String, Vec<u8>)>);

impl SledStore {
    /// Splits each call into metadata (returned, for the `calls` tree) and content
    /// (staged in the content store); returns `(call id, sealed manifest)` pairs.
    /// Content failures fail open: the call keeps its metadata and a note.
    pub(super) fn prepare_calls(&self, calls: &[CallRecord]) -> Result<Prepared, StoreError> {
        let level = self.disk.level();
        let mut metas = Vec::with_capacity(calls.len());
        let mut manifests = Vec::with_capacity(calls.len());
        let mut txn = self.content.txn();
        for call in calls {
            let mut meta = metadata_only(call);
            let has_content = call.request_body.is_some()
                || call.response_body.is_some()
                || call.request.is_some()
                || call.response.is_some();
            if has_content && level != DiskLevel::Ok {
                StoreStats::add(&self.stats.bodies_skipped_disk, 1);
                meta.parse_notes
                    .push("bodies not stored: the data directory's disk is nearly full".into());
            } else if has_content || call.metadata.prompt_variables.is_some() {
                match store_content(&mut txn, &self.stats, call, &mut meta)
                    .and_then(|m| self.content.codec.seal(&m.encode()))
                {
                    Ok(sealed) => manifests.push((call.id.clone(), sealed)),
                    Err(e) => {
                        StoreStats::add(&self.stats.content_errors, 1);
                        tracing::error!(error = %e, call = %call.id, "cannot store call content; keeping metadata only");
                        meta.parse_notes.push(format!("bodies not stored: {e}"));
                    }
                }
            }
            metas.push(meta);
        }
        txn.commit()?;
        Ok((metas, manifests))
    }

    pub(super) fn manifest(&self, id: &str) -> Result<Option<Manifest>, StoreError> {
        let Some(stored) = self.call_content.get(id.as_bytes())? else {
            return Ok(None);
        };
        let plain = self.content.codec.open(id.as_bytes(), &stored)?;
        Manifest::decode(&plain)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                key: id.to_string(),
                reason: "bad manifest".into(),
            })
    }

    /// Puts a stored call's content back into its record.
    pub(super) fn hydrate(&self, call: &mut CallRecord) -> Result<(), StoreError> {
        let Some(m) = self.manifest(&call.id)? else {
            return Ok(());
        };
        let c = &self.content;
        let request = m.body(c, false)?;
        let response = m.body(c, true)?;
        if let Some(raw) = &request {
            if m.request_view_derived {
                if let Some(endpoint) = call.endpoint {
                    call.request = Some(crate::parse::request_view(endpoint, raw));
                }
            }
        }
        if m.response_view_derived {
            if let Some(input) = request
                .as_deref()
                .zip(response.as_deref())
                .and_then(|(req, resp)| exchange_input(call, req, resp))
            {
                call.response = Some(crate::parse::parse_exchange(&input).response);
            }
        }
        if let Some(raw) = request {
            call.request_body = Some(lossy(raw));
        }
        if let Some(raw) = response {
            call.response_body = Some(lossy(raw));
        }
        if let Some(a) = &m.request_view {
            call.request = Some(json::<RequestView>(c, a)?);
        }
        if let Some(a) = &m.response_view {
            call.response = Some(json::<ResponseView>(c, a)?);
        }
        if let Some(a) = &m.prompt_variables {
            call.metadata.prompt_variables = Some(json::<serde_json::Value>(c, a)?);
        }
        Ok(())
    }

    /// The texts `q` searches and the CSV export shows: system prompt and last
    /// user message. `Ok(None)` when the call has none stored.
    pub fn call_text(&self, id: &str) -> Result<Option<CallText>, StoreError> {
        if let Some(m) = self.manifest(id)?.filter(Manifest::has_search_text) {
            let text = |inline: Option<Vec<u8>>, a: Option<Addr>| match inline {
                Some(bytes) => Ok(Some(lossy(bytes))),
                None => a.map(|a| self.content.expand(&a).map(lossy)).transpose(),
            };
            return Ok(Some(CallText {
                system: text(m.inline.search_system, m.search_system)?,
                last_user: text(m.inline.search_user, m.search_user)?,
            }));
        }
        // Stores written before the texts moved into the content store.
        super::decode_opt(id, self.call_text.get(id.as_bytes())?)
    }

    /// Whether a call's system prompt or last user message contains `needle`
    /// (already lowercase). Lowercased texts are cached by address, so a system
    /// prompt shared by many calls is read and lowercased once.
    pub(super) fn text_matches(&self, call_id: &[u8], needle: &str) -> Result<bool, StoreError> {
        let id = String::from_utf8_lossy(call_id);
        let Some(m) = self.manifest(&id)?.filter(Manifest::has_search_text) else {
            return self.legacy_text_matches(call_id, needle);
        };
        for inline in [&m.inline.search_system, &m.inline.search_user]
            .into_iter()
            .flatten()
        {
            if String::from_utf8_lossy(inline)
                .to_lowercase()
                .contains(needle)
            {
                return Ok(true);
            }
        }
        for addr in [m.search_system, m.search_user].into_iter().flatten() {
            let text = match self.search_texts.get(&addr) {
                Some(t) => t,
                None => {
                    let lower: Arc<str> = lossy(self.content.expand(&addr)?).to_lowercase().into();
                    self.search_texts.put(addr, lower.clone());
                    lower
                }
            };
            if text.contains(needle) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn legacy_text_matches(&self, call_id: &[u8], needle: &str) -> Result<bool, StoreError> {
        Ok(match self.call_text.get(call_id)? {
            Some(bytes) => super::decode::<CallText>(call_id, &bytes)?.contains(needle),
            None => false,
        })
    }

    /// The exact captured (decoded) request or response body of a call.
    /// `Ok(None)` when the call or that body is not stored.
    pub fn get_raw(&self, id: &str, response: bool) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(m) = self.manifest(id)? {
            return m.body(&self.content, response);
        }
        // Records written before content addressing keep their bodies inline.
        let Some(call) = self.get_call_meta(id)? else {
            return Ok(None);
        };
        let body = if response {
            call.response_body
        } else {
            call.request_body
        };
        Ok(body.map(String::into_bytes))
    }

    /// An attachment by its address (hex): its media type and bytes.
    pub fn get_blob(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        match super::crypto::parse_addr(sha256) {
            Some(a) => self.content.blob(&a),
            None => Ok(None),
        }
    }

    /// References held on a content chunk (by address, hex); 0 when absent.
    pub fn chunk_refs(&self, addr: &str) -> Result<u64, StoreError> {
        match super::crypto::parse_addr(addr) {
            Some(a) => self.content.chunk_count(&a),
            None => Ok(0),
        }
    }

    /// References held on a blob; 0 when absent.
    pub fn blob_refs(&self, addr: &str) -> Result<u64, StoreError> {
        match super::crypto::parse_addr(addr) {
            Some(a) => self.content.blob_count(&a),
            None => Ok(0),
        }
    }

    /// The content address of `bytes` in this store (SHA-256, or the keyed hash).
    pub fn content_address(&self, bytes: &[u8]) -> String {
        super::crypto::hex(&self.content.codec.addr(bytes))
    }

    /// How much the content store holds (stored, i.e. compressed/sealed, sizes).
    pub fn content_usage(&self) -> Result<ContentUsage, StoreError> {
        let (chunks, chunk_bytes) = tree_size(&self.content.chunks)?;
        let (legacy_blobs, legacy_blob_bytes) = tree_size(&self.content.blobs)?;
        let (file_blobs, file_blob_bytes) = self.content.blob_files.usage()?;
        let (blobs, blob_bytes) = (
            legacy_blobs + file_blobs,
            legacy_blob_bytes + file_blob_bytes,
        );
        let (calls, call_bytes) = tree_size(&self.calls)?;
        let (_, manifest_bytes) = tree_size(&self.call_content)?;
        Ok(ContentUsage {
            calls,
            call_bytes,
            manifest_bytes,
            chunks,
            chunk_bytes,
            blobs,
            blob_bytes,
            ref_entries: (self.content.chunk_refs.len() + self.content.blob_refs.len()) as u64,
        })
    }

    /// Logical size (entries, key + value bytes) of every sled tree, by name.
    pub fn tree_usage(&self) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            let (entries, bytes) = tree_size(&self.db.open_tree(&name)?)?;
            out.push((String::from_utf8_lossy(&name).into_owned(), entries, bytes));
        }
        Ok(out)
    }

    /// Whether content is sealed with a key.
    pub fn encrypted(&self) -> bool {
        self.content.codec.keys.is_some()
    }
}

/// A few lowercased search texts by address: the system prompts of the agents a
/// `q` query walks through.
#[derive(Default)]
pub(super) struct SearchTexts(std::sync::Mutex<std::collections::VecDeque<(Addr, Arc<str>)>>);

const SEARCH_TEXTS_KEPT: usize = 32;

impl SearchTexts {
    fn get(&self, addr: &Addr) -> Option<Arc<str>> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().find(|(a, _)| a == addr).map(|(_, t)| t.clone())
    }

    fn put(&self, addr: Addr, text: Arc<str>) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == SEARCH_TEXTS_KEPT {
            kept.pop_back();
        }
        kept.push_front((addr, text));
    }
}

/// Entries and key + value bytes of a tree (a full scan).
fn tree_size(tree: &sled::Tree) -> Result<(u64, u64), StoreError> {
    let (mut entries, mut bytes) = (0, 0);
    for entry in tree.iter() {
        let (k, v) = entry?;
        entries += 1;
        bytes += (k.len() + v.len()) as u64;
    }
    Ok((entries, bytes))
}

fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn json<T: serde::de::DeserializeOwned>(c: &ContentTrees, a: &Addr) -> Result<T, StoreError> {
    let bytes = c.expand(a)?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
        key: super::crypto::hex(a),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips() {
        let m = Manifest {
            request: Some([1; 32]),
            response: None,
            request_view: Some([3; 32]),
            response_view: Some([4; 32]),
            prompt_variables: None,
            request_view_derived: false,
            response_view_derived: false,
            search_system: Some([5; 32]),
            search_user: None,
            inline: Inline::default(),
        };
        assert_eq!(Manifest::decode(&m.encode()), Some(m.clone()));
        let derived = Manifest {
            request_view: None,
            request_view_derived: true,
            response_view_derived: true,
            search_user: Some([6; 32]),
            ..m
        };
        assert_eq!(Manifest::decode(&derived.encode()), Some(derived.clone()));
        // v3: small bodies and their search texts inline, beside addressed pieces.
        let inline = Manifest {
            request: None,
            search_user: None,
            inline: Inline {
                request: Some(b"{\"messages\":[]}".to_vec()),
                response: Some(Vec::new()),
                search_system: None,
                search_user: Some("h\u{e9}llo".as_bytes().to_vec()),
            },
            ..derived
        };
        let encoded = inline.encode();
        assert_eq!(encoded[0], MANIFEST_V3);
        assert_eq!(Manifest::decode(&encoded), Some(inline));
        assert_eq!(Manifest::decode(&encoded[..encoded.len() - 1]), None);
        assert_eq!(Manifest::decode(&[2, 0]), None);
        // Version 1 (one flag byte), as stores written before v2 hold.
        let mut v1 = vec![1, 2];
        v1.extend_from_slice(&[7; 32]);
        assert_eq!(
            Manifest::decode(&v1),
            Some(Manifest {
                response: Some([7; 32]),
                ..Manifest::default()
            })
        );
        assert_eq!(Manifest::decode(&[1, 1, 0]), None);
    }
}
