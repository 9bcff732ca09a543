//! Text and JSON as PostgreSQL accepts them.
//!
//! PostgreSQL refuses the NUL character in `text` and in `jsonb` strings (sled
//! stores bytes and does not care). A prompt or a model name from an agent may
//! carry one, and one such value would fail its whole batch. So every text column
//! and JSON value the engine writes goes through here: each NUL becomes U+FFFD,
//! the replacement character, which a reader sees as "something was here". Bodies
//! are not touched: they are content, stored as `bytea`, byte for byte.

use super::PgError;
use std::borrow::Cow;

/// What NUL becomes.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// The text with each NUL replaced (borrowed when there is none, the usual case).
pub fn clean(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', &NUL_REPLACEMENT.to_string()))
    } else {
        Cow::Borrowed(s)
    }
}

/// An owned text column value, cleaned.
pub fn owned(s: String) -> String {
    match clean(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(cleaned) => cleaned,
    }
}

/// An optional text column value, cleaned.
pub fn opt(s: Option<String>) -> Option<String> {
    s.map(owned)
}

/// A value as `jsonb` accepts it: encoded, with NUL replaced in every string and key.
pub fn json(value: &impl serde::Serialize) -> Result<serde_json::Value, PgError> {
    let mut v = serde_json::to_value(value).map_err(|e| PgError::Encode(e.to_string()))?;
    scrub(&mut v);
    Ok(v)
}

fn scrub(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('\0') => *s = owned(std::mem::take(s)),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                for (k, mut item) in entries {
                    scrub(&mut item);
                    map.insert(owned(k), item);
                }
            } else {
                map.values_mut().for_each(scrub);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_in_text_strings_and_keys_and_nothing_else_changes() {
        assert!(matches!(clean("plain"), Cow::Borrowed("plain")));
        assert_eq!(clean("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        let v = json(&serde_json::json!({"k\0": ["x\0y", 1, {"n": "\0"}], "ok": "fine"})).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"k\u{FFFD}": ["x\u{FFFD}y", 1, {"n": "\u{FFFD}"}], "ok": "fine"})
        );
    }
}
