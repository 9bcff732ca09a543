//! The SSE and JSON-array framers on their own.

use super::super::jsonseq::JsonArraySplitter;
use super::super::sse::{SseEvent, SseParser};
use super::fixtures::{random_pieces, XorShift};

fn run(pieces: &[&[u8]]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    for piece in pieces {
        out.extend(p.push(piece));
    }
    out.extend(p.finish());
    out
}

#[test]
fn line_endings_comments_and_multiline_data() {
    let body =
        b": keep-alive\r\nevent: a\r\ndata: one\r\ndata:two\r\n\r\ndata: x\rdata: y\r\rdata: z\n\n";
    let events = run(&[body]);
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].event.as_deref(), Some("a"));
    assert_eq!(events[0].data, "one\ntwo");
    assert_eq!(events[1].data, "x\ny");
    assert_eq!(events[1].event, None);
    assert_eq!(events[2].data, "z");
    assert_eq!(events[2].end_offset, body.len());
    // The first event ends just past the CR of its blank line.
    let first_end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 3);
    assert_eq!(Some(events[0].end_offset), first_end);
}

#[test]
fn any_split_gives_the_same_events() {
    let body = "event: e\r\ndata: {\"t\":\"héllo ✓\"}\r\n\r\n: c\r\ndata: 2\r\n\r\ndata: last\n\n"
        .as_bytes();
    let whole = run(&[body]);
    for cut in 0..=body.len() {
        assert_eq!(run(&[&body[..cut], &body[cut..]]), whole, "cut at {cut}");
    }
    for seed in 1..200 {
        let mut rng = XorShift::new(seed);
        assert_eq!(run(&random_pieces(body, &mut rng)), whole, "seed {seed}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(&bytes), whole);
    // An empty chunk between CR and LF must not turn the LF into a blank line.
    assert_eq!(run(&[b"data: a\r", b"", b"\n\r", b"", b"\n"]).len(), 1);
}

#[test]
fn unterminated_last_event_is_still_reported() {
    let events = run(&[b"data: a\n\ndata: [DONE]"]);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data, "[DONE]");
}

#[test]
fn json_array_elements_survive_any_split() {
    let body = b"[{\n  \"a\": \"x]}\\\"{\"\n}\n,\r\n{\"b\": [1, {\"c\": 2}]}\n]";
    let split = |pieces: &[&[u8]]| {
        let mut s = JsonArraySplitter::new();
        let mut out = Vec::new();
        for p in pieces {
            out.extend(s.push(p));
        }
        assert_eq!(s.finish(), None);
        out
    };
    let whole = split(&[body]);
    assert_eq!(whole.len(), 2);
    assert_eq!(whole[0].text, "{\n  \"a\": \"x]}\\\"{\"\n}");
    assert_eq!(whole[1].text, "{\"b\": [1, {\"c\": 2}]}");
    assert_eq!(&body[whole[1].end_offset - 1..whole[1].end_offset], b"}");
    for cut in 0..=body.len() {
        assert_eq!(split(&[&body[..cut], &body[cut..]]), whole, "cut at {cut}");
    }
    let mut s = JsonArraySplitter::new();
    s.push(b"[{\"a\": 1}, {\"b\":");
    assert_eq!(s.finish().as_deref(), Some("{\"b\":"));
}
