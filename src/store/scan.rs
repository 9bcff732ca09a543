//! A JSON byte-range scanner: finds where each value sits inside the raw text.
//!
//! Content addressing cuts a captured body into pieces (messages, the system
//! prompt, attachment payloads) and stores the gaps as literals, so the body is
//! rebuilt by concatenation, byte for byte. That needs the exact byte ranges of
//! values, which `serde_json::Value` does not keep; hence this small tokenizer.
//! It never copies or normalises anything: a misread structure can only make the
//! pieces less useful, never the reconstruction inexact, because every byte is
//! either inside a piece or in a gap. Invalid or too deeply nested input gives
//! `None`, and the caller stores the body as one piece.

/// Deeper documents are stored whole (and this keeps recursion bounded).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Object(Vec<Member>),
    Array(Vec<Node>),
    /// A string; the node's range includes the quotes.
    Str,
    /// A number, `true`, `false` or `null`.
    Scalar,
}

/// One value and its byte range `start..end` in the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// An object member: the key's raw bytes (without quotes, escapes left as written) and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key_start: usize,
    pub key_end: usize,
    pub value: Node,
}

impl Node {
    /// The raw bytes of a string's content, without the quotes.
    pub fn str_inner<'a>(&self, text: &'a [u8]) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Str => text.get(self.start + 1..self.end - 1),
            _ => None,
        }
    }

    /// The value of member `key` when this node is an object.
    pub fn get<'n>(&'n self, text: &[u8], key: &str) -> Option<&'n Node> {
        match &self.kind {
            Kind::Object(members) => members
                .iter()
                .find(|m| &text[m.key_start..m.key_end] == key.as_bytes())
                .map(|m| &m.value),
            _ => None,
        }
    }

    /// A string member's content as UTF-8, when it has no escapes.
    pub fn get_str<'a>(&self, text: &'a [u8], key: &str) -> Option<&'a str> {
        let inner = self.get(text, key)?.str_inner(text)?;
        if inner.contains(&b'\\') {
            return None;
        }
        std::str::from_utf8(inner).ok()
    }
}

/// Scans a whole document (surrounding whitespace allowed).
pub fn scan(text: &[u8]) -> Option<Node> {
    let mut scanner = Scanner { text, pos: 0 };
    scanner.skip_ws();
    let node = scanner.value(0)?;
    scanner.skip_ws();
    (scanner.pos == text.len()).then_some(node)
}

struct Scanner<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        let start = self.pos;
        let kind = match self.peek()? {
            b'{' => {
                self.pos += 1;
                let mut members = Vec::new();
                self.skip_ws();
                if self.peek()? == b'}' {
                    self.pos += 1;
                } else {
                    loop {
                        self.skip_ws();
                        let key = self.string()?;
                        self.skip_ws();
                        if self.peek()? != b':' {
                            return None;
                        }
                        self.pos += 1;
                        self.skip_ws();
                        let value = self.value(depth + 1)?;
                        members.push(Member {
                            key_start: key.0 + 1,
                            key_end: key.1 - 1,
                            value,
                        });
                        self.skip_ws();
                        match self.peek()? {
                            b',' => self.pos += 1,
                            b'}' => {
                                self.pos += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                Kind::Object(members)
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek()? == b']' {
                    self.pos += 1;
                } else {
                    loop {
                        self.skip_ws();
                        items.push(self.value(depth + 1)?);
                        self.skip_ws();
                        match self.peek()? {
                            b',' => self.pos += 1,
                            b']' => {
                                self.pos += 1;
                                break;
                            }
                            _ => return None,
                        }
                    }
                }
                Kind::Array(items)
            }
            b'"' => {
                self.string()?;
                Kind::Str
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                while let Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E') = self.peek()
                {
                    self.pos += 1;
                }
                Kind::Scalar
            }
            _ => return None,
        };
        Some(Node {
            start,
            end: self.pos,
            kind,
        })
    }

    /// A string starting at `pos`; returns its range including quotes.
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.pos;
        if self.peek()? != b'"' {
            return None;
        }
        self.pos += 1;
        loop {
            // memchr-like skip to the next quote or backslash.
            let rest = self.text.get(self.pos..)?;
            let i = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
            self.pos += i;
            if self.text[self.pos] == b'\\' {
                self.pos += 2;
            } else {
                self.pos += 1;
                return Some((start, self.pos));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_exact() {
        let text = br#" {"a" : [1, "x\"y", {"b":null}], "c":"d"} "#;
        let root = scan(text).unwrap();
        assert_eq!(&text[root.start..root.end], &text[1..text.len() - 1]);
        let a = root.get(text, "a").unwrap();
        assert_eq!(&text[a.start..a.end], br#"[1, "x\"y", {"b":null}]"#);
        let Kind::Array(items) = &a.kind else {
            panic!()
        };
        assert_eq!(&text[items[1].start..items[1].end], br#""x\"y""#);
        assert_eq!(items[1].str_inner(text).unwrap(), br#"x\"y"#);
        assert_eq!(root.get_str(text, "c"), Some("d"));
    }

    #[test]
    fn invalid_or_truncated_input_is_refused() {
        for bad in [
            &b"{\"a\":"[..],
            b"{\"a\" 1}",
            b"[1,2",
            b"\"abc",
            b"{} x",
            b"",
        ] {
            assert!(scan(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(scan(deep.as_bytes()).is_none());
    }
}
