//! Every recorded exchange in tests/fixtures/exchanges against its hand-checked
//! snapshot in tests/fixtures/expected, plus the split-anywhere property.
//!
//! `LLMTAP_WRITE_EXPECTED=1 cargo test --lib parse` writes snapshots for fixtures
//! that have none, marked `"checked": "TODO"`; the test keeps failing until a
//! person has compared each against the recorded body and replaced that note.

use super::super::{parse_exchange, request_view, ExchangeInput, StreamParser};
use crate::record::{ParsedExchange, ProviderKind};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub struct Fixture {
    pub name: String,
    pub provider: String,
    pub path: String,
    pub query: Option<String>,
    pub request_body: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub response_body: String,
    pub headers: Vec<(String, String)>,
}

impl Fixture {
    pub fn input(&self) -> ExchangeInput<'_> {
        let kind = match self.provider.as_str() {
            "anthropic" => ProviderKind::Anthropic,
            "gemini" => ProviderKind::Gemini,
            _ => ProviderKind::Openai,
        };
        ExchangeInput {
            kind,
            provider: &self.provider,
            path: &self.path,
            query: self.query.as_deref(),
            request_body: self.request_body.as_bytes(),
            response_status: Some(self.status),
            response_content_type: self.content_type.as_deref(),
            response_body: self.response_body.as_bytes(),
        }
    }
}

fn dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
}

pub fn load_all() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir("exchanges"))
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

fn load(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let v: Value = serde_json::from_str(&text).expect("fixture JSON");
    let url = v["request"]["url"].as_str().unwrap_or("");
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path_and_query = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("/");
    let path_and_query = path_and_query.split('#').next().unwrap_or("");
    let (p, q) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path_and_query.to_owned(), None),
    };
    let headers: Vec<(String, String)> = v["response"]["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Fixture {
        name: path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_owned(),
        provider: v["provider"].as_str().unwrap_or("").to_owned(),
        path: p,
        query: q,
        request_body: v["request"]["body"].as_str().unwrap_or("").to_owned(),
        status: v["response"]["status"].as_u64().unwrap_or(0) as u16,
        content_type: headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone()),
        response_body: v["response"]["body"].as_str().unwrap_or("").to_owned(),
        headers,
    }
}

/// The fields a snapshot pins.
fn summary(p: &ParsedExchange) -> Value {
    let u = &p.usage;
    let prefix: Option<String> = p
        .response
        .text
        .as_ref()
        .map(|t| t.chars().take(40).collect());
    json!({
        "model": p.model,
        "response_model": p.response_model,
        "usage": {
            "input": u.input_tokens,
            "output": u.output_tokens,
            "cache_read": u.cache_read_tokens,
            "cache_creation": u.cache_creation_tokens,
            "reasoning": u.reasoning_tokens,
            "total": u.total_tokens,
        },
        "stop_reason": p.stop_reason,
        "text_prefix": prefix,
        "tool_calls": p.response.tool_calls.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
    })
}

#[test]
fn every_fixture_matches_its_checked_snapshot() {
    let fixtures = load_all();
    assert!(fixtures.len() >= 41, "fixtures missing: {}", fixtures.len());
    let write = std::env::var_os("LLMTAP_WRITE_EXPECTED").is_some();
    let mut failures = Vec::new();
    for f in &fixtures {
        let parsed = parse_exchange(&f.input());
        let got = summary(&parsed);
        let path = dir("expected").join(format!("{}.json", f.name));
        let expected: Value = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).expect("expected JSON"),
            Err(_) => {
                if write {
                    let mut snap = got.clone();
                    snap["checked"] = json!("TODO");
                    let text = serde_json::to_string_pretty(&snap).expect("serialise");
                    std::fs::create_dir_all(dir("expected")).expect("mkdir");
                    std::fs::write(&path, text + "\n").expect("write snapshot");
                }
                failures.push(format!("{}: no expected file", f.name));
                continue;
            }
        };
        match expected.get("checked").and_then(Value::as_str) {
            Some("TODO") | None => failures.push(format!("{}: snapshot not checked", f.name)),
            Some(_) => {}
        }
        let mut pinned = expected.clone();
        if let Some(obj) = pinned.as_object_mut() {
            obj.remove("checked");
        }
        if pinned != got {
            failures.push(format!(
                "{}:\n  expected {}\n  got      {}",
                f.name, pinned, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The store keeps raw requests only and rebuilds the view with `request_view`:
/// it must be the view `parse_exchange` made at capture time.
#[test]
fn request_view_alone_equals_the_exchange_view() {
    for f in load_all() {
        let parsed = parse_exchange(&f.input());
        let alone = request_view(parsed.endpoint, f.request_body.as_bytes());
        assert_eq!(alone, parsed.request, "{}", f.name);
    }
}

#[test]
fn no_fixture_leaves_parse_notes() {
    for f in load_all() {
        let parsed = parse_exchange(&f.input());
        assert!(
            parsed.parse_notes.is_empty(),
            "{}: {:?}",
            f.name,
            parsed.parse_notes
        );
    }
}

/// Deterministic xorshift64*, so failures reproduce without a dependency.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Random cut points, biased towards small pieces so CRLF pairs and UTF-8
/// sequences get split often.
pub fn random_pieces<'a>(body: &'a [u8], rng: &mut XorShift) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let max = if rng.below(4) == 0 { 200 } else { 8 };
        let len = 1 + rng.below(max);
        let end = (at + len).min(body.len());
        pieces.push(&body[at..end]);
        at = end;
    }
    pieces
}

#[test]
fn split_streams_parse_like_whole_ones() {
    for f in load_all() {
        let input = f.input();
        let whole = parse_exchange(&input);
        let body = input.response_body;
        for seed in 1..=40u64 {
            let mut rng = XorShift::new(seed);
            let mut parser = StreamParser::new(&input);
            for piece in random_pieces(body, &mut rng) {
                parser.push(piece);
            }
            let split = parser.finish();
            assert_eq!(split, whole, "{} seed {seed}", f.name);
        }
        // The extreme: one byte at a time.
        let mut parser = StreamParser::new(&input);
        for b in body.chunks(1) {
            parser.push(b);
        }
        assert_eq!(parser.finish(), whole, "{} byte by byte", f.name);
    }
}

#[test]
#[ignore]
fn dump_fixtures() {
    for f in load_all() {
        let parsed = parse_exchange(&f.input());
        println!(
            "=== {}\n{}",
            f.name,
            serde_json::to_string_pretty(&parsed).unwrap_or_default()
        );
    }
}
