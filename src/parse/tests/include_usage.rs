//! Injecting `stream_options.include_usage` and stripping the chunk it adds.

use super::super::include_usage::{inject_include_usage, UsageChunkStripper};
use super::fixtures::{load_all, random_pieces, XorShift};
use serde_json::Value;

#[test]
fn injects_only_when_needed() {
    let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let out = inject_include_usage(body).expect("injected");
    assert_eq!(
        out,
        br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#
    );
    let pretty = b"{\n  \"messages\": [],\n  \"stream\": true\n}\n";
    let out = inject_include_usage(pretty).expect("injected");
    let v: Value = serde_json::from_slice(&out).expect("valid JSON");
    assert_eq!(v["stream_options"]["include_usage"], Value::Bool(true));

    let existing =
        br#"{"messages":[],"stream":true,"stream_options":{"include_obfuscation":false}}"#;
    let v: Value =
        serde_json::from_slice(&inject_include_usage(existing).expect("injected")).expect("json");
    assert_eq!(v["stream_options"]["include_usage"], Value::Bool(true));
    assert_eq!(
        v["stream_options"]["include_obfuscation"],
        Value::Bool(false)
    );

    for unchanged in [
        &br#"{"messages":[],"stream":true,"stream_options":{"include_usage":true}}"#[..],
        br#"{"messages":[],"stream":false}"#,
        br#"{"messages":[]}"#,
        br#"{"input":"x","stream":true}"#,
        b"not json",
        b"",
    ] {
        assert_eq!(inject_include_usage(unchanged), None);
    }
}

fn strip(pieces: &[&[u8]]) -> Vec<u8> {
    let mut s = UsageChunkStripper::new();
    let mut out = Vec::new();
    for p in pieces {
        out.extend(s.push(p));
    }
    out.extend(s.finish());
    out
}

const USAGE_EVENT: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}";

#[test]
fn strips_the_usage_chunk_at_every_split() {
    for eol in ["\n", "\r\n", "\r"] {
        let content = format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"h\u{e9}\"}}}}]}}{eol}{eol}\
             data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}],\"usage\":null}}{eol}{eol}"
        );
        let done = format!("data: [DONE]{eol}{eol}");
        let body = format!("{content}{USAGE_EVENT}{eol}{eol}{done}");
        let want = format!("{content}{done}");
        let body = body.as_bytes();
        assert_eq!(strip(&[body]), want.as_bytes(), "eol {eol:?}");
        for cut in 0..=body.len() {
            assert_eq!(
                strip(&[&body[..cut], &body[cut..]]),
                want.as_bytes(),
                "eol {eol:?} cut {cut}"
            );
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(strip(&bytes), want.as_bytes());
    }
}

#[test]
fn streams_without_the_chunk_pass_byte_identical() {
    for f in load_all() {
        let body = f.response_body.as_bytes();
        let out = strip(&[body]);
        if f.name == "llm__test_tools__test_tool_use_basic__0"
            || f.name == "llm__test_tools__test_tool_use_basic__1"
        {
            // These recorded streams asked for usage: the chunk goes, nothing else.
            assert_eq!(out.len(), body.len() - usage_event_len(body), "{}", f.name);
            assert!(!String::from_utf8_lossy(&out).contains("\"choices\":[],\"usage\""));
            continue;
        }
        assert_eq!(out, body, "{}", f.name);
        for seed in 1..=10 {
            let mut rng = XorShift::new(seed);
            assert_eq!(
                strip(&random_pieces(body, &mut rng)),
                body,
                "{} seed {seed}",
                f.name
            );
        }
    }
}

fn usage_event_len(body: &[u8]) -> usize {
    let text = String::from_utf8_lossy(body);
    text.split_inclusive("\n\n")
        .find(|e| e.contains("\"choices\":[],\"usage\""))
        .map(str::len)
        .unwrap_or(0)
}

#[test]
fn emits_each_event_as_soon_as_it_is_complete() {
    let mut s = UsageChunkStripper::new();
    assert_eq!(s.push(b"data: {\"choices\":[{\"delta\":{}}]}\n"), b"");
    assert_eq!(
        s.push(b"\ndata: par"),
        b"data: {\"choices\":[{\"delta\":{}}]}\n\n".to_vec()
    );
    assert_eq!(s.push(b"tial\n\n"), b"data: partial\n\n");
    assert_eq!(s.finish(), b"");
}

#[test]
fn an_event_that_never_ends_is_not_held_past_the_bound() {
    let mut stripper = UsageChunkStripper::new();
    let line = format!("data: {}\n", "x".repeat(1000));
    let mut out = Vec::new();
    let mut sent = Vec::new();
    for _ in 0..200 {
        sent.extend_from_slice(line.as_bytes());
        out.extend(stripper.push(line.as_bytes()));
    }
    assert!(stripper.gave_up());
    assert!(sent.len() - out.len() <= crate::parse::include_usage::MAX_HELD_EVENT);
    assert_eq!(out, sent[..out.len()]);
    // From then on, bytes pass at once, usage chunk included.
    let usage = b"\n\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":1}}\n\n";
    assert_eq!(stripper.push(usage), usage.to_vec());
}
