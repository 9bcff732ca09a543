//! Incremental splitter for a streamed JSON array (Gemini `streamGenerateContent`
//! without `alt=sse`): `[{...}\n,\r\n{...}]`, possibly pretty-printed.
//!
//! Tracks only nesting depth and string/escape state, so each byte is seen once
//! and only the current element is buffered.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonElement {
    pub text: String,
    /// Byte offset in the body just past the element's closing bracket.
    pub end_offset: usize,
}

#[derive(Debug, Default)]
pub struct JsonArraySplitter {
    opened: bool,
    depth: usize,
    in_string: bool,
    escape: bool,
    element: Vec<u8>,
    offset: usize,
    stray: usize,
}

impl JsonArraySplitter {
    pub fn new() -> JsonArraySplitter {
        JsonArraySplitter::default()
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<JsonElement> {
        let mut out = Vec::new();
        let mut start: Option<usize> = if self.depth > 0 { Some(0) } else { None };
        for (i, &b) in chunk.iter().enumerate() {
            if self.depth == 0 {
                match b {
                    b'[' if !self.opened => self.opened = true,
                    b'{' | b'[' => {
                        self.opened = true;
                        self.depth = 1;
                        start = Some(i);
                    }
                    b' ' | b'\t' | b'\r' | b'\n' | b',' | b']' => {}
                    _ => self.stray += 1,
                }
                continue;
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let from = start.take().unwrap_or(0);
                        self.element.extend_from_slice(&chunk[from..=i]);
                        let bytes = std::mem::take(&mut self.element);
                        out.push(JsonElement {
                            text: String::from_utf8_lossy(&bytes).into_owned(),
                            end_offset: self.offset + i + 1,
                        });
                    }
                }
                _ => {}
            }
        }
        if let Some(from) = start {
            self.element.extend_from_slice(&chunk[from..]);
        }
        self.offset += chunk.len();
        out
    }

    /// The bytes of an element the body ended inside of, if any (a truncated stream).
    pub fn finish(&mut self) -> Option<String> {
        if self.element.is_empty() {
            None
        } else {
            Some(String::from_utf8_lossy(&std::mem::take(&mut self.element)).into_owned())
        }
    }

    /// Bytes outside any element that are not array punctuation.
    pub fn stray_bytes(&self) -> usize {
        self.stray
    }
}
