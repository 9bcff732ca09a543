//! What a credential looks like, so it can be taken out before anything is stored,
//! logged or exported: names by their words (a header, query parameter or JSON
//! field called `x-subscription-token`, `accessToken` or `api_key`), values by their
//! shape (`Bearer …`, `sk-…`, `ghp_…`, a JWT), and URLs inside header values
//! (`location: …?sig=…`). Pure: text in, decisions out.
//!
//! Names are split into words (at `-`, `_`, `.`, spaces and camelCase), so
//! `x-ratelimit-remaining-tokens` (the word `tokens`) is not a secret while
//! `x-upstream-token` is. A name ending in `session-id` is an identifier that
//! groups calls (Claude Code's `x-claude-code-session-id`, MCP's `mcp-session-id`),
//! not a credential.

/// Words that make a name a secret wherever they appear in it.
const SECRET_WORDS: &[&str] = &[
    "key",
    "apikey",
    "token",
    "secret",
    "auth",
    "authorization",
    "signature",
    "sig",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "credential",
    "credentials",
    "session",
    "cookie",
    "bearer",
    "jwt",
    "privatekey",
    "accesskey",
    "secretkey",
];

/// Whole names that carry a secret without any of those words: vendor spellings,
/// and OAuth's authorization `code` (a query parameter).
const SECRET_NAMES: &[&str] = &[
    "x-honeycomb-team",
    "code",
    "x-sentry-auth",
    "dd-application",
];

/// Value prefixes of well-known credentials (API keys, personal access tokens,
/// OAuth access tokens), each followed by at least `MIN_TAIL` token characters.
const CREDENTIAL_PREFIXES: &[&str] = &[
    "sk-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "sess-",
    "AIza",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxs-",
    "xapp-",
    "AKIA",
    "ASIA",
    "hf_",
    "r8_",
    "gsk_",
    "pplx-",
    "nvapi-",
    "shpat_",
    "shpss_",
    "SG.",
    "npm_",
    "pypi-",
    "dop_v1_",
    "lin_api_",
    "ya29.",
    "pk-lf-",
    "sk-lf-",
    "xai-",
    "csk-",
    "fw_",
];
const MIN_TAIL: usize = 16;

/// Whether a header, query parameter or JSON field called `name` holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.trim().to_ascii_lowercase();
    if SECRET_NAMES.contains(&lower.as_str()) {
        return true;
    }
    let words = words(name);
    words.iter().enumerate().any(|(i, word)| {
        SECRET_WORDS.contains(&word.as_str())
            // `…-session-id` names a session to group by, not a credential.
            && !(word == "session" && words.get(i + 1).is_some_and(|next| next == "id"))
    })
}

/// The lowercase words of a name: split at `-`, `_`, `.`, spaces, and where a
/// lowercase letter or digit is followed by an uppercase one (`accessToken`).
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.' | ' ' | '[' | ']') {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        word.push(c.to_ascii_lowercase());
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/' | '=' | '~')
}

/// Whether a value carries a credential by its shape: an `Authorization` scheme
/// with a value, a well-known key prefix, or a JSON Web Token, anywhere in it.
pub fn looks_like_credential(value: &str) -> bool {
    let trimmed = value.trim_start();
    for scheme in ["bearer ", "basic ", "token ", "apikey "] {
        // Compared as bytes: the text may have a multi-byte character where the
        // scheme would end, and a string slice there panics.
        if trimmed.len() > scheme.len() + 8
            && trimmed.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            return true;
        }
    }
    value
        .split(|c: char| !is_token_char(c))
        .filter(|token| token.len() >= SHORTEST_CREDENTIAL_TOKEN)
        .any(|token| has_credential_prefix(token) || is_jwt(token))
}

/// No shorter token has a credential prefix and its tail, nor is a JWT: skipping
/// the short words of a header value saves comparing each with every prefix.
const SHORTEST_CREDENTIAL_TOKEN: usize = shortest(CREDENTIAL_PREFIXES) + MIN_TAIL;

const fn shortest(words: &[&str]) -> usize {
    let mut shortest = usize::MAX;
    let mut i = 0;
    while i < words.len() {
        if words[i].len() < shortest {
            shortest = words[i].len();
        }
        i += 1;
    }
    shortest
}

fn has_credential_prefix(token: &str) -> bool {
    CREDENTIAL_PREFIXES.iter().any(|prefix| {
        token
            .strip_prefix(prefix)
            .is_some_and(|tail| tail.len() >= MIN_TAIL && tail.chars().any(|c| c.is_ascii_digit()))
    })
}

fn is_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    header.starts_with("eyJ")
        && header.len() >= 10
        && payload.len() >= 10
        && signature.len() >= 16
        && [header, payload, signature].iter().all(|p| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// `text` with the value of every secret query parameter of every URL in it
/// replaced (`is_secret_param` decides by name; a value shaped like a credential is
/// replaced whatever its name), or `None` when nothing changed. For header values
/// that carry URLs: `location`, `link`, `content-location`, `refresh`.
pub fn redact_urls_in(text: &str, is_secret_param: impl Fn(&str) -> bool) -> Option<String> {
    if !text.contains('?') {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(q) = rest.find('?') {
        out.push_str(&rest[..=q]);
        let after = &rest[q + 1..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '>' | '"' | '\'' | ';' | ',' | '#'))
            .unwrap_or(after.len());
        let query = &after[..end];
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                if !value.is_empty() && (is_secret_param(name) || looks_like_credential(value)) {
                    changed = true;
                    format!("{name}={}", crate::recorder::REDACTED)
                } else {
                    pair.to_string()
                }
            })
            .collect();
        out.push_str(&pairs.join("&"));
        rest = &after[end..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Replaces, in a JSON value, every string under a secret field name and every
/// string shaped like a credential; returns how many were replaced. For tool HTTP
/// calls' bodies: an LLM request's prompts are the product and are never touched.
pub fn redact_json(value: &mut serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Object(map) => map
            .iter_mut()
            .map(|(name, field)| match field {
                // Credentials are strings; a number under such a name is a count.
                Value::String(_) if is_secret_name(name) => {
                    *field = Value::String(crate::recorder::REDACTED.to_string());
                    1
                }
                _ => redact_json(field),
            })
            .sum(),
        Value::Array(items) => items.iter_mut().map(redact_json).sum(),
        Value::String(text) if looks_like_credential(text) => {
            *text = crate::recorder::REDACTED.to_string();
            1
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_secret_by_their_words() {
        for name in [
            "authorization",
            "x-api-key",
            "x-subscription-token",
            "ocp-apim-subscription-key",
            "x-auth-key",
            "x-functions-key",
            "x-honeycomb-team",
            "x-upstream-token",
            "api_token",
            "private_token",
            "subscription-key",
            "accessToken",
            "APIKey",
            "client_secret",
            "X-Amz-Signature",
            "sig",
            "set-cookie",
            "session",
            "x-session-token",
            "password",
            "db.password",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-input-tokens-limit",
            "content-type",
            "x-claude-code-session-id",
            "mcp-session-id",
            "keep-alive",
            "x-request-id",
            "max_tokens",
            "keyword",
            "user-agent",
            "www-authenticate",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn values_are_credentials_by_their_shape() {
        for value in [
            "Bearer abcdefghijklmnop",
            "sk-proj-abcdefghij0123456789",
            "token is ghp_abcdefghij0123456789xyz here",
            "AKIAABCDEFGH12345678",
            // The shortest credential token: a 3-byte prefix and a 16-byte tail.
            "hf_abcdefghijklmno1",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ] {
            assert!(looks_like_credential(value), "{value}");
        }
        for value in [
            "application/json",
            "OpenAI/Python 1.54.0",
            "req_0123456789abcdef0123456789",
            "sk-short",
            "hf_abcdefghijklmn1",
            "the model said: skip the first step",
            // A multi-byte character where a scheme would end (it once panicked).
            "Keys › Rotation: create a second key, then revoke the first",
            "Bear€r abcdefghijklmnop",
        ] {
            assert!(!looks_like_credential(value), "{value}");
        }
    }

    #[test]
    fn urls_in_header_values_lose_their_secret_parameters() {
        let secret = |n: &str| is_secret_name(n);
        assert_eq!(
            redact_urls_in("https://x.test/f?sig=abc&token=def&page=2", secret).as_deref(),
            Some("https://x.test/f?sig=[redacted]&token=[redacted]&page=2")
        );
        assert_eq!(
            redact_urls_in(
                "<https://api.test/p?access_token=zzz&cursor=9>; rel=\"next\"",
                secret
            )
            .as_deref(),
            Some("<https://api.test/p?access_token=[redacted]&cursor=9>; rel=\"next\"")
        );
        assert_eq!(redact_urls_in("https://x.test/f?page=2", secret), None);
    }

    #[test]
    fn json_fields_named_or_shaped_like_credentials_are_replaced() {
        let mut v = serde_json::json!({
            "city": "paris",
            "api_key": "k-123",
            "auth": {"password": "hunter2", "user": "ann"},
            "items": [{"note": "Bearer abcdefghijklmnopq"}],
            "max_tokens": 5,
            "error": {"code": -32602, "token_count": 3}
        });
        assert_eq!(redact_json(&mut v), 3);
        assert_eq!(v["city"], "paris");
        assert_eq!(v["api_key"], "[redacted]");
        assert_eq!(v["auth"]["password"], "[redacted]");
        assert_eq!(v["auth"]["user"], "ann");
        assert_eq!(v["items"][0]["note"], "[redacted]");
        assert_eq!(v["max_tokens"], 5);
        assert_eq!(v["error"]["code"], -32602);
        assert_eq!(v["error"]["token_count"], 3);
    }
}
