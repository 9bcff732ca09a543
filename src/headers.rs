//! Header policy: what is forwarded, what llmtap consumes, and what is secret.
//!
//! - `x-llmtap-*` headers are read into `CallMeta` and removed before forwarding.
//! - Hop-by-hop headers (RFC 9110 §7.6.1) are dropped in both directions.
//! - Secret headers and `key=` query parameters are redacted before anything is
//!   stored or logged; the record keeps a fingerprint so keys can be told apart.

use crate::record::Metadata;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;

/// Longest accepted `x-llmtap-*` value, except prompt variables.
pub const MAX_META_VALUE: usize = 256;
/// Longest accepted `x-llmtap-prompt-variables` JSON.
pub const MAX_PROMPT_VARIABLES: usize = 16 * 1024;
const MAX_PROPERTIES: usize = 32;

pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "openai-api-key",
    "x-auth-token",
    "x-access-token",
    "x-api-token",
    "api-token",
    "private-token",
    "x-amz-security-token",
    "x-csrf-token",
];

/// What may start a run (`x-llmtap-trigger`): a person, the system (a schedule, an
/// event), or another task.
pub const TRIGGERS: [&str; 3] = ["user", "system", "task"];

/// Parts of header names that mark a secret wherever they appear (`x-my-api-key`,
/// `x-service-auth-token`, `x-client-secret`).
pub const SECRET_HEADER_PARTS: &[&str] = &[
    "api-key",
    "apikey",
    "api_key",
    "auth-token",
    "access-token",
    "secret",
    "password",
    "credential",
];

/// Query parameters whose values are secrets (matched after percent-decoding the
/// name and folding case, so `%6Bey` is `key`).
pub const SECRET_QUERY_PARAMS: &[&str] = &[
    "key",
    // OAuth's authorization code.
    "code",
    "api_key",
    "api-key",
    "apikey",
    "access_token",
    "token",
    "id_token",
    "refresh_token",
    "auth",
    "auth_token",
    "client_secret",
    "secret",
    "password",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-security-token",
    "x-amz-credential",
    "x-goog-signature",
    "x-goog-credential",
];

/// Most header names fit in this many bytes; longer ones are judged afresh.
const MAX_REMEMBERED_NAME: usize = 64;
/// Distinct names a thread remembers before it starts over (a client that sends
/// endless new names costs a re-check each, never unbounded memory).
const MAX_REMEMBERED_NAMES: usize = 512;

thread_local! {
    /// Verdicts of the built-in lists by lowercase name. Why: every captured call
    /// has its request and response headers judged, the same few dozen names each
    /// time, and judging one (lists, parts, splitting into words) cost about 3,800
    /// instructions, about 7% of the whole process's CPU at 200 req/s (callgrind).
    static REMEMBERED_VERDICTS: std::cell::RefCell<std::collections::HashMap<Box<str>, bool>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Whether a lowercase header name is a secret by the built-in lists alone.
fn is_secret_builtin_header(name: &str) -> bool {
    let judge = |name: &str| {
        SECRET_HEADERS.contains(&name)
            || SECRET_HEADER_PARTS.iter().any(|part| name.contains(part))
            || crate::credentials::is_secret_name(name)
    };
    if name.len() > MAX_REMEMBERED_NAME {
        return judge(name);
    }
    REMEMBERED_VERDICTS.with(|cell| {
        let mut verdicts = cell.borrow_mut();
        if let Some(&verdict) = verdicts.get(name) {
            return verdict;
        }
        let verdict = judge(name);
        if verdicts.len() >= MAX_REMEMBERED_NAMES {
            verdicts.clear();
        }
        verdicts.insert(name.into(), verdict);
        verdict
    })
}

/// Which header and query names are secrets: the built-in lists above plus the
/// config's `[capture] redact_headers` and `redact_query_params` (lowercase).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redaction {
    pub extra_headers: Vec<String>,
    pub extra_query_params: Vec<String>,
}

impl Redaction {
    pub fn is_secret_header(&self, name: &str) -> bool {
        // `HeaderName`s are lowercase already: lowercase (allocate) only a name that is not.
        let name: std::borrow::Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.to_ascii_lowercase().into()
        } else {
            name.into()
        };
        is_secret_builtin_header(&name) || self.extra_headers.iter().any(|h| *h == *name)
    }

    /// `raw_name` as it appears in the query string (percent-encoded or not).
    pub fn is_secret_param(&self, raw_name: &str) -> bool {
        let decoded = percent_decode(raw_name);
        let name = decoded.trim();
        let lower = name.to_ascii_lowercase();
        SECRET_QUERY_PARAMS.contains(&lower.as_str())
            || crate::credentials::is_secret_name(name)
            || self.extra_query_params.contains(&lower)
    }

    /// What a header's value is kept as: `[redacted]` when the header is a secret
    /// by its name or its value's shape; its URLs' secret parameters replaced
    /// (`location: …?sig=…`); `None` when it is kept as it is.
    pub fn stored_value(&self, name: &str, value: &[u8]) -> Option<String> {
        if self.is_secret_header(name) {
            return Some(crate::recorder::REDACTED.to_string());
        }
        let text = String::from_utf8_lossy(value);
        if crate::credentials::looks_like_credential(&text) {
            return Some(crate::recorder::REDACTED.to_string());
        }
        crate::credentials::redact_urls_in(&text, |param| self.is_secret_param(param))
    }
}

/// Decodes `%XX` escapes (and `+` as a space, as form encoding does); invalid
/// escapes stay as written.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What llmtap read from the request's own headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallMeta {
    pub invocation_id: Option<String>,
    pub trace_id: Option<String>,
    pub omit_request: bool,
    pub omit_response: bool,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad header {header}: {reason}")]
pub struct HeaderError {
    pub header: String,
    pub reason: String,
}

fn bad(header: &str, reason: impl Into<String>) -> HeaderError {
    HeaderError {
        header: header.to_string(),
        reason: reason.into(),
    }
}

fn text_value(name: &str, value: &HeaderValue, max: usize) -> Result<String, HeaderError> {
    let text = value
        .to_str()
        .map_err(|_| bad(name, "must be visible ASCII"))?
        .trim();
    if text.is_empty() {
        return Err(bad(name, "must not be empty"));
    }
    if text.len() > max {
        return Err(bad(name, format!("longer than {max} bytes")));
    }
    Ok(text.to_string())
}

fn id_value(name: &str, value: &HeaderValue) -> Result<String, HeaderError> {
    let text = text_value(name, value, 128)?;
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(bad(name, "use letters, digits, '-', '_', '.' and ':' only"));
    }
    Ok(text)
}

/// Separates a client-chosen id from the tenant it is scoped to (see [`tenant_scoped`]).
pub const TENANT_SCOPE: char = '@';

/// The stored form of a client-chosen id (invocation or session): `id@tenant` for a
/// call of a tenant, the id itself otherwise. Invocation and session ids come from
/// clients, so two tenants may pick the same one; scoping keeps their records (and
/// every rollup over them) apart. Client ids cannot contain `@` (`id_value`), so the
/// scoped form never collides with a client's own id and splits at the first `@`.
pub fn tenant_scoped(id: &str, tenant: Option<&str>) -> String {
    match tenant {
        Some(t) if !id.contains(TENANT_SCOPE) => format!("{id}{TENANT_SCOPE}{t}"),
        _ => id.to_string(),
    }
}

/// Scopes the client-chosen session id of `meta` to its tenant (see [`tenant_scoped`]).
pub fn scope_session_to_tenant(meta: &mut CallMeta) {
    if let (Some(id), Some(tenant)) = (&mut meta.metadata.session_id, &meta.metadata.tenant) {
        *id = tenant_scoped(id, Some(tenant));
    }
}

/// Session headers coding agents send on every request of a session: Claude Code's
/// `x-claude-code-session-id`, and OpenAI Codex CLI's `session_id`. Read after the
/// explicit ones, and left in place.
pub const CODING_AGENT_SESSION_HEADERS: [&str; 2] = ["x-claude-code-session-id", "session_id"];

/// A prompt-variables header: a JSON object of at most `MAX_PROMPT_VARIABLES` bytes.
fn variables(key: &str, value: &HeaderValue) -> Result<serde_json::Value, HeaderError> {
    let text = text_value(key, value, MAX_PROMPT_VARIABLES)?;
    let parsed: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(key, format!("must be a JSON object: {e}")))?;
    if !parsed.is_object() {
        return Err(bad(key, "must be a JSON object"));
    }
    Ok(parsed)
}

/// Reads the `x-llmtap-*` headers and removes them (and hop-by-hop headers) from `headers`.
/// Session ids are also read from `x-session-id` and `helicone-session-id`, then from
/// coding agents' session headers (`CODING_AGENT_SESSION_HEADERS`), which all stay.
pub fn take_llmtap_headers(headers: &mut HeaderMap) -> Result<CallMeta, HeaderError> {
    let mut meta = CallMeta::default();
    let has_ours = headers.keys().any(|k| k.as_str().starts_with("x-llmtap-"));
    if has_ours {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-llmtap-"))
            .cloned()
            .collect();
        for name in names {
            let key = name.as_str();
            let Some(value) = headers.get(&name) else {
                continue;
            };
            let m = &mut meta.metadata;
            match key {
                "x-llmtap-invocation-id" => meta.invocation_id = Some(id_value(key, value)?),
                "x-llmtap-agent" => m.agent = Some(text_value(key, value, MAX_META_VALUE)?),
                "x-llmtap-trigger" => {
                    let text = text_value(key, value, MAX_META_VALUE)?;
                    if !TRIGGERS.contains(&text.as_str()) {
                        return Err(bad(
                            key,
                            format!("unknown trigger {text:?}; accepted: user, system, task"),
                        ));
                    }
                    m.trigger = Some(text);
                }
                "x-llmtap-user-id" => m.user_id = Some(text_value(key, value, MAX_META_VALUE)?),
                "x-llmtap-tenant" => m.tenant = Some(text_value(key, value, MAX_META_VALUE)?),
                "x-llmtap-session-id" => m.session_id = Some(id_value(key, value)?),
                "x-llmtap-prompt" => m.prompt = Some(text_value(key, value, MAX_META_VALUE)?),
                "x-llmtap-task-id" => m.task_id = Some(text_value(key, value, MAX_META_VALUE)?),
                "x-llmtap-user-prompt" => {
                    m.user_prompt = Some(text_value(key, value, MAX_META_VALUE)?)
                }
                "x-llmtap-prompt-variables" => m.prompt_variables = Some(variables(key, value)?),
                "x-llmtap-user-prompt-variables" => {
                    m.user_prompt_variables = Some(variables(key, value)?)
                }
                "x-llmtap-omit" => match text_value(key, value, 16)?.as_str() {
                    "request" => meta.omit_request = true,
                    "response" => meta.omit_response = true,
                    "all" => {
                        meta.omit_request = true;
                        meta.omit_response = true;
                    }
                    _ => return Err(bad(key, "expected request, response or all")),
                },
                _ => {
                    if let Some(prop) = key.strip_prefix("x-llmtap-property-") {
                        if prop.is_empty() {
                            return Err(bad(key, "property name is empty"));
                        }
                        if m.properties.len() >= MAX_PROPERTIES {
                            return Err(bad(key, format!("at most {MAX_PROPERTIES} properties")));
                        }
                        m.properties
                            .insert(prop.to_string(), text_value(key, value, MAX_META_VALUE)?);
                    } else {
                        return Err(bad(key, "unknown x-llmtap header"));
                    }
                }
            }
            headers.remove(&name);
        }
    }
    if meta.metadata.session_id.is_none() {
        for name in ["x-session-id", "helicone-session-id"] {
            if let Some(v) = headers.get(name) {
                meta.metadata.session_id = Some(id_value(name, v)?);
                break;
            }
        }
    }
    if meta.metadata.session_id.is_none() {
        // Coding agents' own session headers; a value llmtap would refuse as an id is
        // left alone here (the agent did not ask llmtap for anything).
        meta.metadata.session_id = CODING_AGENT_SESSION_HEADERS
            .iter()
            .find_map(|name| id_value(name, headers.get(*name)?).ok());
    }
    if let Some(tp) = headers.get("traceparent") {
        meta.trace_id = trace_id_of(tp.as_bytes());
    }
    remove_hop_by_hop(headers);
    Ok(meta)
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed and non-zero.
pub fn trace_id_of(traceparent: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(traceparent).ok()?.trim();
    let mut parts = text.split('-');
    let (version, trace, parent, _flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(trace.to_ascii_lowercase())
}

/// Drops hop-by-hop headers, including any named by `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// With the built-in lists only; see [`Redaction`] for the configured ones.
pub fn is_secret_header(name: &str) -> bool {
    Redaction::default().is_secret_header(name)
}

/// A short, stable fingerprint of a key: 8 hex of its SHA-256 and its last 4 characters.
pub fn fingerprint(secret: &str) -> String {
    let secret = secret.trim();
    let secret = secret
        .strip_prefix("Bearer ")
        .or_else(|| secret.strip_prefix("bearer "))
        .unwrap_or(secret)
        .trim();
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tail: String = if secret.chars().count() >= 12 {
        let chars: Vec<char> = secret.chars().collect();
        chars[chars.len() - 4..].iter().collect()
    } else {
        String::new()
    };
    if tail.is_empty() {
        format!("sha256:{hex}")
    } else {
        format!("sha256:{hex}…{tail}")
    }
}

/// The API key a request carries (header or `key=` query parameter), as a fingerprint.
pub fn api_key_fingerprint(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    for name in ["authorization", "x-api-key", "api-key", "x-goog-api-key"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            if !v.trim().is_empty() {
                return Some(fingerprint(v));
            }
        }
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("key="))
        .filter(|v| !v.is_empty())
        .map(fingerprint)
}

/// Headers as text for the record, with secrets replaced.
pub fn redacted_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    redacted_map_with(headers, &Redaction::default())
}

/// Headers as text, with the values of secret headers (`redaction`) replaced.
pub fn redacted_map_with(headers: &HeaderMap, redaction: &Redaction) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let text = redaction
            .stored_value(name.as_str(), value.as_bytes())
            .unwrap_or_else(|| String::from_utf8_lossy(value.as_bytes()).into_owned());
        out.entry(name.as_str().to_string())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&text);
            })
            .or_insert(text);
    }
    out
}

/// A path and query safe to store or log: the value of every secret parameter
/// (built-in list) is replaced.
pub fn redact_query(path: &str, query: Option<&str>) -> String {
    redact_query_with(path, query, &Redaction::default())
}

/// A path and query with the value of every secret parameter (`redaction`) replaced.
pub fn redact_query_with(path: &str, query: Option<&str>, redaction: &Redaction) -> String {
    match query {
        None => path.to_string(),
        Some(q) => {
            let parts: Vec<String> = q
                .split('&')
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if redaction.is_secret_param(name)
                        || crate::credentials::looks_like_credential(&percent_decode(value))
                    {
                        format!("{name}=[redacted]")
                    } else {
                        pair.to_string()
                    }
                })
                .collect();
            format!("{path}?{}", parts.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_and_removes_llmtap_headers() {
        let mut h = map(&[
            ("x-llmtap-invocation-id", "run-42"),
            ("x-llmtap-agent", "writer"),
            ("x-llmtap-property-team", "growth"),
            ("x-llmtap-prompt-variables", r#"{"city":"Oslo"}"#),
            ("x-llmtap-user-prompt", "question@v4"),
            ("x-llmtap-user-prompt-variables", r#"{"topic":"tides"}"#),
            ("x-llmtap-omit", "response"),
            ("helicone-session-id", "s1"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "hop"),
            ("anthropic-version", "2023-06-01"),
        ]);
        let meta = take_llmtap_headers(&mut h).unwrap();
        assert_eq!(meta.invocation_id.as_deref(), Some("run-42"));
        assert_eq!(meta.metadata.agent.as_deref(), Some("writer"));
        assert_eq!(meta.metadata.properties["team"], "growth");
        assert_eq!(meta.metadata.session_id.as_deref(), Some("s1"));
        assert_eq!(meta.metadata.user_prompt.as_deref(), Some("question@v4"));
        assert_eq!(
            meta.metadata.user_prompt_variables,
            Some(serde_json::json!({"topic": "tides"}))
        );
        assert!(meta.omit_response && !meta.omit_request);
        assert!(h.keys().all(|k| !k.as_str().starts_with("x-llmtap-")));
        assert!(h.get("x-custom").is_none() && h.get("connection").is_none());
        assert!(h.get("helicone-session-id").is_some());
        assert!(h.get("anthropic-version").is_some());
    }

    #[test]
    fn rejects_bad_values() {
        for (k, v) in [
            ("x-llmtap-invocation-id", "has space"),
            ("x-llmtap-prompt-variables", "[1,2]"),
            ("x-llmtap-user-prompt-variables", "not json"),
            ("x-llmtap-omit", "everything"),
            ("x-llmtap-bogus", "1"),
        ] {
            let err = take_llmtap_headers(&mut map(&[(k, v)])).unwrap_err();
            assert_eq!(err.header, k);
        }
        let long = "a".repeat(MAX_META_VALUE + 1);
        assert!(take_llmtap_headers(&mut map(&[("x-llmtap-agent", &long)])).is_err());
    }

    #[test]
    fn traceparent() {
        assert_eq!(
            trace_id_of(b"00-afc6e4a93195b1dfc3a21f83a353e86a-111576348bafa672-01").as_deref(),
            Some("afc6e4a93195b1dfc3a21f83a353e86a")
        );
        assert_eq!(
            trace_id_of(b"00-00000000000000000000000000000000-111576348bafa672-01"),
            None
        );
        assert_eq!(trace_id_of(b"garbage"), None);
    }

    #[test]
    fn secrets_never_appear() {
        let h = map(&[
            ("authorization", "Bearer sk-secret-123456789"),
            ("accept", "x"),
        ]);
        let red = redacted_map(&h);
        assert_eq!(red["authorization"], "[redacted]");
        let fp = api_key_fingerprint(&h, None).unwrap();
        assert!(!fp.contains("sk-secret") && fp.ends_with("6789"), "{fp}");
        assert_eq!(fp, fingerprint("sk-secret-123456789"));
        assert_eq!(
            redact_query("/v1beta/models/x", Some("alt=sse&key=AIzaSECRET")),
            "/v1beta/models/x?alt=sse&key=[redacted]"
        );
        assert!(
            api_key_fingerprint(&HeaderMap::new(), Some("alt=sse&key=AIzaSECRETSECRET")).is_some()
        );
    }

    #[test]
    fn secret_names_match_after_percent_decoding_and_case_folding() {
        let r = Redaction {
            extra_headers: vec!["x-my-credential-id".into(), "x-team-handle".into()],
            extra_query_params: vec!["sessionkey".into()],
        };
        // A configured name that no built-in rule covers, in any case.
        assert!(r.is_secret_header("X-Team-Handle") && r.is_secret_header("x-team-handle"));
        assert!(!Redaction::default().is_secret_header("X-Team-Handle"));
        assert_eq!(
            redact_query_with(
                "/x",
                Some("access_token=a&Token=b&api-key=c&%6Bey=d&%6b%45Y=e&SessionKey=f&ok=1"),
                &r
            ),
            "/x?access_token=[redacted]&Token=[redacted]&api-key=[redacted]&%6Bey=[redacted]&%6b%45Y=[redacted]&SessionKey=[redacted]&ok=1"
        );
        for h in [
            "x-auth-token",
            "openai-api-key",
            "x-service-api-key",
            "x-my-credential-id",
        ] {
            assert!(r.is_secret_header(h), "{h}");
        }
        assert!(!r.is_secret_header("x-ratelimit-remaining-tokens"));
        assert_eq!(percent_decode("%6Bey%2"), "key%2");
    }

    #[test]
    fn remembered_verdicts_match_fresh_ones_past_the_bound() {
        let r = Redaction::default();
        // Twice the bound of distinct names, so the memory starts over midway.
        for i in 0..2 * MAX_REMEMBERED_NAMES {
            assert!(r.is_secret_header(&format!("x-key-{i}")));
            assert!(!r.is_secret_header(&format!("x-trace-{i}")));
        }
        for _ in 0..2 {
            assert!(r.is_secret_header("Authorization"));
            assert!(r.is_secret_header("x-my-api-key"));
            assert!(!r.is_secret_header("content-type"));
            assert!(!r.is_secret_header("x-ratelimit-remaining-tokens"));
        }
        let long_secret = format!("x-{}-token", "a".repeat(MAX_REMEMBERED_NAME));
        assert!(r.is_secret_header(&long_secret));
    }
}
