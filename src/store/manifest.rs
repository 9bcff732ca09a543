//! A call's content manifest, and how a call is split into metadata and content:
//! shared by every engine. `store_content` cuts a call's bodies, views and `q`
//! texts into pieces staged in an engine's `ContentSink` and returns the manifest
//! that names them; `hydrate` puts them back from the engine's `ContentSource`.
//! The engine stores the sealed manifest beside the call (sled: `call_content`
//! tree; PostgreSQL: `call_content` table) and the pieces where it keeps content.

use super::body::{replace_payloads, Plan};
use super::content::{ContentSink, ContentSource};
use super::crypto::{Addr, ADDR_LEN};
use super::index::CallText;
use super::{StoreError, StoreStats};
use crate::record::{CallRecord, Endpoint, ProviderKind, RequestView, ResponseView};

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
pub const INLINE_MAX: usize = 4096;
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
const HAS_USER_PROMPT_VARIABLES: u16 = 512;

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
    /// `x-llmtap-user-prompt-variables` (JSON), like `prompt_variables`. Its address
    /// comes after every other one in the encoding, so older manifests read as before.
    pub user_prompt_variables: Option<Addr>,
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
    pub fn has_search_text(&self) -> bool {
        self.search_system.is_some()
            || self.search_user.is_some()
            || self.inline.search_system.is_some()
            || self.inline.search_user.is_some()
    }

    /// The request or response body: inline, else rebuilt from its root chunk.
    pub fn body(
        &self,
        c: &dyn ContentSource,
        response: bool,
    ) -> Result<Option<Vec<u8>>, StoreError> {
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
            &self.user_prompt_variables,
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
            (HAS_USER_PROMPT_VARIABLES, &self.user_prompt_variables),
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
            (HAS_USER_PROMPT_VARIABLES, &mut m.user_prompt_variables),
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

fn exact<'a>(text: &'a Option<String>, bytes: &'a Option<Vec<u8>>) -> Option<&'a [u8]> {
    bytes
        .as_deref()
        .or_else(|| text.as_deref().map(str::as_bytes))
}

/// Stores one call's content in `txn`; returns the manifest, with one reference
/// taken on each root, and fills `meta.attachments`.
pub fn store_content(
    txn: &mut dyn ContentSink,
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
    // An MCP list answer: its list is stored once however often it is asked for.
    let lists = match (&call.mcp, response_raw) {
        (Some(mcp), Some(raw)) if mcp.method.as_deref().is_some_and(is_mcp_list) => {
            super::body::mcp_list_ranges(raw)
        }
        _ => Vec::new(),
    };
    if let Some(raw) = response_raw {
        if !lists.is_empty() {
            let plan = Plan::new(raw, txn, false, false);
            manifest.response = Some(plan.store_cut(txn, &lists, &mut failures)?);
        } else if raw.len() <= INLINE_MAX {
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
    for (vars, slot) in [
        (
            &call.metadata.prompt_variables,
            &mut manifest.prompt_variables,
        ),
        (
            &call.metadata.user_prompt_variables,
            &mut manifest.user_prompt_variables,
        ),
    ] {
        if let Some(vars) = vars {
            let json = serde_json::to_vec(vars).map_err(StoreError::Encode)?;
            let plan = Plan::new(&json, txn, false, false);
            *slot = Some(plan.store(txn, &mut failures)?);
        }
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

/// The MCP methods whose answers are lists a server sends unchanged again and again.
fn is_mcp_list(method: &str) -> bool {
    matches!(
        method,
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list"
    )
}

/// The parser's input for a stored call, as the recorder gave it at capture time
/// (`None` for routes the parsers do not read).
fn exchange_input<'a>(
    call: &'a CallRecord,
    request: &'a [u8],
    response: &'a [u8],
) -> Option<crate::parse::ExchangeInput<'a>> {
    let kind = ProviderKind::parse(&call.kind).filter(|k| k.is_round())?;
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

/// Puts a stored call's content, as its manifest names it, back into its record.
pub fn hydrate(
    m: &Manifest,
    c: &dyn ContentSource,
    call: &mut CallRecord,
) -> Result<(), StoreError> {
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
    // An MCP exchange's arguments and results are content: read again from the bodies.
    if let (Some(mcp), Some(raw)) = (call.mcp.as_mut(), &request) {
        use crate::parse::mcp::{parse_mcp, transport_of, McpInput};
        let (parsed, _notes) = parse_mcp(&McpInput {
            transport: transport_of(&call.method),
            request_body: raw,
            response_content_type: call
                .response_headers
                .get("content-type")
                .map(String::as_str),
            response_body: response.as_deref().unwrap_or_default(),
            session_id: None,
            from_server: call
                .request_headers
                .contains_key(crate::parse::mcp::FROM_SERVER_HEADER),
        });
        mcp.restore_content(parsed);
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
    if let Some(a) = &m.user_prompt_variables {
        call.metadata.user_prompt_variables = Some(json::<serde_json::Value>(c, a)?);
    }
    Ok(())
}

/// The `q` texts a manifest names (`None` when it names none: older sled stores
/// keep them in their `call_text` tree).
pub fn search_text(m: &Manifest, c: &dyn ContentSource) -> Result<Option<CallText>, StoreError> {
    if !m.has_search_text() {
        return Ok(None);
    }
    let text = |inline: &Option<Vec<u8>>, a: &Option<Addr>| match inline {
        Some(bytes) => Ok(Some(lossy(bytes.clone()))),
        None => a.as_ref().map(|a| c.expand(a).map(lossy)).transpose(),
    };
    Ok(Some(CallText {
        system: text(&m.inline.search_system, &m.search_system)?,
        last_user: text(&m.inline.search_user, &m.search_user)?,
    }))
}

pub fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn json<T: serde::de::DeserializeOwned>(c: &dyn ContentSource, a: &Addr) -> Result<T, StoreError> {
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
            user_prompt_variables: None,
            inline: Inline::default(),
        };
        assert_eq!(Manifest::decode(&m.encode()), Some(m.clone()));
        // Both variable sets, the user prompt's after every older slot.
        let both = Manifest {
            prompt_variables: Some([8; 32]),
            user_prompt_variables: Some([9; 32]),
            ..m.clone()
        };
        let encoded = both.encode();
        assert_eq!(&encoded[encoded.len() - 32..], &[9; 32]);
        assert_eq!(Manifest::decode(&encoded), Some(both));
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
