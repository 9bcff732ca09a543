//! Incremental Server-Sent Events framing (the WHATWG `text/event-stream` rules).
//!
//! Chunks may be split anywhere, including inside a CRLF pair or a UTF-8
//! character: only complete lines are decoded, and a CR remembers that a
//! following LF belongs to it. Each byte is looked at once, so the cost is
//! linear in the body size whatever the chunking.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// Byte offset in the body just past the line break that completed the event
    /// (past the CR of a CRLF pair).
    pub end_offset: usize,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous chunk ended with a CR, so a leading LF is part of that line break.
    after_cr: bool,
    /// Bytes consumed so far.
    offset: usize,
    event: Option<String>,
    data: String,
    has_data: bool,
    comments: usize,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds the next chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                self.offset += 1;
                rest = &rest[1..];
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            self.offset += pos + 1;
            let was_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            // Dispatch before looking for the LF of a CRLF, so the reported offset
            // (just past the CR) does not depend on where the chunk was split.
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.take_line(&line) {
                out.push(event);
            }
            self.line = line;
            self.line.clear();
            if was_cr {
                match rest.first() {
                    Some(b'\n') => {
                        self.offset += 1;
                        rest = &rest[1..];
                    }
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        self.offset += rest.len();
        out
    }

    /// Ends the stream. A last event without its blank line is still reported,
    /// because a truncated capture should lose as little as possible.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.field(&line);
        }
        self.dispatch()
    }

    /// How many comment lines (`: ...`) were skipped; keep-alives, mostly.
    pub fn comment_lines(&self) -> usize {
        self.comments
    }

    fn take_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            self.dispatch()
        } else {
            self.field(line);
            None
        }
    }

    fn field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            self.comments += 1;
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // id and retry matter to reconnecting clients, not to a recorder.
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            // Per the spec an event without data is not dispatched; but a bare
            // `event: x` block still says something, so keep it.
            return event.map(|e| SseEvent {
                event: Some(e),
                data: String::new(),
                end_offset: self.offset,
            });
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            end_offset: self.offset,
        })
    }
}
