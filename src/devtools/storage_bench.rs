//! `llmtap dev storage-bench`: replays a realistic agent conversation many times
//! through the store's write path and reports bytes on disk against bytes captured.
//!
//! Each conversation: 20 rounds (configurable) of an Anthropic Messages agent with a
//! 4 KB system prompt, ~2.5 KB of tool definitions, one image attached in round 1
//! and re-sent every round, and a history that grows by a tool call and a ~1.5 KB
//! tool result per round. Every conversation has its own task, image and tool
//! output; the system prompt and tools are the agent's, shared by all. After
//! writing, every call's request and response are rebuilt and compared.

use base64::Engine;
use llmtap::record::{CallRecord, CallStatus, InvocationRecord, ProviderKind, Usage};
use llmtap::store::{Keyring, StoreOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub struct BenchOptions {
    pub dir: PathBuf,
    pub conversations: u32,
    pub rounds: u32,
    pub image_bytes: usize,
    pub compression_level: i32,
    pub encrypt: bool,
    pub sled_compression: bool,
    /// Calls per `write_batch`: 1 is one agent at a time; the writer batches
    /// whatever is queued (up to 512) when many agents run at once.
    pub batch: usize,
    /// sled in `dir`, or PostgreSQL (bytes are then the tables' on disk).
    pub engine: llmtap::config::StoreEngine,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn words(&mut self, n: usize) -> String {
        const WORDS: &[&str] = &[
            "fn", "let", "mut", "self", "match", "Some", "None", "return", "impl", "struct",
            "config", "store", "request", "response", "error", "value", "parse", "handle", "the",
            "of", "a", "call", "record", "bytes", "index", "writer", "thread", "=>", "{", "}", "(",
            ")", ";", "::", "&", "Result", "String", "Vec", "u64", "true",
        ];
        let mut out = String::new();
        for i in 0..n {
            if i > 0 {
                out.push(if i % 12 == 0 { '\n' } else { ' ' });
            }
            out.push_str(WORDS[(self.next() % WORDS.len() as u64) as usize]);
            if self.next().is_multiple_of(7) {
                out.push_str(&(self.next() % 1000).to_string());
            }
        }
        out
    }
}

fn system_prompt() -> String {
    let mut rng = Rng(42);
    let mut s = String::from("You are a senior software engineer working in a repository. ");
    while s.len() < 4096 {
        s.push_str(&rng.words(40));
        s.push_str(".\n");
    }
    s.truncate(4096);
    s
}

fn tools() -> serde_json::Value {
    let names = ["read_file", "write_file", "run_tests", "search", "list_dir"];
    serde_json::Value::Array(
        names
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n,
                    "description": format!("{n}: {}", "Use this tool when the task needs it; it returns text. ".repeat(6)),
                    "input_schema": {"type": "object", "properties": {
                        "path": {"type": "string", "description": "A path relative to the repository root."},
                        "content": {"type": "string", "description": "Text to write, for write tools."}
                    }, "required": ["path"]}
                })
            })
            .collect(),
    )
}

struct Conversation {
    request_bodies: Vec<String>,
    response_bodies: Vec<String>,
}

fn conversation(
    n: u32,
    rounds: u32,
    image_bytes: usize,
    system: &str,
    tools: &serde_json::Value,
) -> Conversation {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((u64::from(n) + 1) * 0x1000_0001));
    let image = base64::engine::general_purpose::STANDARD.encode(rng.bytes(image_bytes));
    let task = format!("Task {n}: {}", rng.words(30));
    let mut messages = vec![serde_json::json!({"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
        {"type": "text", "text": task},
    ]})];
    let mut out = Conversation {
        request_bodies: Vec::new(),
        response_bodies: Vec::new(),
    };
    for round in 1..=rounds {
        let body = serde_json::json!({
            "model": "claude-sonnet-4-5", "max_tokens": 8192, "system": system,
            "tools": tools, "messages": messages, "stream": false,
        });
        out.request_bodies.push(body.to_string());
        let tool_id = format!("toolu_{n:04}_{round:02}{}", rng.next() % 100_000);
        let thought = rng.words(25);
        let path = format!("src/{}.rs", rng.words(1));
        let response = serde_json::json!({
            "id": format!("msg_{n}_{round}"), "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": thought},
                        {"type": "tool_use", "id": tool_id, "name": "read_file", "input": {"path": path}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3000 + round * 500, "output_tokens": 120, "cache_read_input_tokens": 2800}
        });
        out.response_bodies.push(response.to_string());
        let result = rng.words(260);
        messages.push(serde_json::json!({"role": "assistant", "content": response["content"]}));
        messages.push(serde_json::json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tool_id, "content": result}]}));
    }
    out
}

fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut apparent, mut allocated) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                apparent += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
    }
    (apparent, allocated)
}

/// Runs the benchmark; returns the report as Markdown.
pub fn run(opts: &BenchOptions) -> Result<String, Box<dyn std::error::Error>> {
    if opts.dir.exists() {
        return Err(format!("{} exists; give an empty --dir", opts.dir.display()).into());
    }
    std::fs::create_dir_all(&opts.dir)?;
    let keys = if opts.encrypt {
        Some(Arc::new(Keyring::from_text(&"7e".repeat(32))?))
    } else {
        None
    };
    let store = super::open_store(
        &opts.dir,
        StoreOptions {
            zstd_level: opts.compression_level,
            keys,
            sled_compression: opts.sled_compression,
            ..StoreOptions::default()
        },
        &opts.engine,
        1,
    )?;
    let system = system_prompt();
    let tools = tools();
    let started = Instant::now();
    let (mut raw, mut old_layout, mut calls_written) = (0u64, 0u64, 0u64);
    let mut mismatches = 0u64;
    let req_headers = headers(&[
        ("accept", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
        ("user-agent", "Anthropic/Python 0.80.0"),
        ("x-api-key", "[redacted]"),
        ("x-stainless-lang", "python"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-retry-count", "0"),
    ]);
    let mut pending: Vec<CallRecord> = Vec::new();
    let mut pending_invs: BTreeMap<String, InvocationRecord> = BTreeMap::new();
    for n in 0..opts.conversations {
        let conv = conversation(n, opts.rounds, opts.image_bytes, &system, &tools);
        let inv_id = format!("inv_bench_{n:06}");
        for r in 0..opts.rounds as usize {
            let at = 1_700_000_000_000_000 + u64::from(n) * 60_000_000 + r as u64 * 2_000_000;
            let id = llmtap::ids::new_id("c_", at);
            let request = &conv.request_bodies[r];
            let response = &conv.response_bodies[r];
            // The views are the parsers' own, as the recorder stores them.
            let parsed = llmtap::parse::parse_exchange(&llmtap::parse::ExchangeInput {
                kind: ProviderKind::Anthropic,
                provider: "anthropic",
                path: "/v1/messages",
                query: None,
                request_body: request.as_bytes(),
                response_status: Some(200),
                response_content_type: Some("application/json"),
                response_body: response.as_bytes(),
            });
            let call = CallRecord {
                id: id.clone(),
                invocation_id: inv_id.clone(),
                round: r as u32 + 1,
                started_at: llmtap::timefmt::format_rfc3339_us(at),
                ended_at: llmtap::timefmt::format_rfc3339_us(at + 1_500_000),
                started_at_us: at,
                latency_ms: 1500.0,
                provider: "anthropic".into(),
                kind: "anthropic".into(),
                method: "POST".into(),
                path: "/v1/messages".into(),
                upstream_host: "api.anthropic.com".into(),
                http_status: Some(200),
                status: Some(CallStatus::Success),
                model: Some("claude-sonnet-4-5".into()),
                response_model: Some("claude-sonnet-4-5-20250929".into()),
                usage: Usage {
                    input_tokens: Some(3000),
                    output_tokens: Some(120),
                    ..Usage::default()
                },
                cost_usd: Some(0.0108),
                stop_reason: Some("tool_use".into()),
                endpoint: Some(parsed.endpoint),
                request: Some(parsed.request),
                response: Some(parsed.response),
                request_bytes: request.len() as u64,
                response_bytes: response.len() as u64,
                request_headers: req_headers.clone(),
                response_headers: headers(&[
                    ("content-type", "application/json"),
                    ("request-id", &format!("req_{n}_{r}")),
                    (
                        "anthropic-organization-id",
                        "2b3c4d5e-0000-4000-8000-123456789abc",
                    ),
                    ("anthropic-ratelimit-requests-limit", "4000"),
                    ("anthropic-ratelimit-requests-remaining", "3999"),
                    ("anthropic-ratelimit-tokens-limit", "400000"),
                    ("anthropic-ratelimit-tokens-remaining", "396000"),
                    ("cf-ray", &format!("8f{n:06x}{r:02x}-SJC")),
                    ("server", "cloudflare"),
                ]),
                request_body: Some(request.clone()),
                response_body: Some(response.clone()),
                ..CallRecord::default()
            };
            raw += (request.len() + response.len()) as u64;
            old_layout += serde_json::to_vec(&call)?.len() as u64;
            let invocation = InvocationRecord {
                id: inv_id.clone(),
                rounds: r as u32 + 1,
                started_at_us: at,
                ended_at_us: at,
                ..InvocationRecord::default()
            };
            pending.push(call);
            pending_invs.insert(inv_id.clone(), invocation);
            if pending.len() >= opts.batch.max(1) {
                let invs: Vec<InvocationRecord> = pending_invs.values().cloned().collect();
                store.write_batch(&pending, &invs)?;
                calls_written += pending.len() as u64;
                pending.clear();
                pending_invs.clear();
            }
        }
    }
    if !pending.is_empty() {
        let invs: Vec<InvocationRecord> = pending_invs.values().cloned().collect();
        store.write_batch(&pending, &invs)?;
        calls_written += pending.len() as u64;
    }
    store.flush()?;
    let write_s = started.elapsed().as_secs_f64();
    let usage = store.content_usage()?;
    let trees = store.tree_usage()?;
    let (apparent, allocated) = match opts.engine {
        llmtap::config::StoreEngine::Sled => dir_bytes(&opts.dir),
        llmtap::config::StoreEngine::Postgres(_) => {
            let bytes = trees.iter().map(|t| t.2).sum();
            (bytes, bytes)
        }
    };
    drop(store);

    // Reopen and rebuild every body: exact reconstruction or the run fails.
    let verify_started = Instant::now();
    let keys = if opts.encrypt {
        Some(Arc::new(Keyring::from_text(&"7e".repeat(32))?))
    } else {
        None
    };
    let store = super::open_store(
        &opts.dir,
        StoreOptions {
            keys,
            sled_compression: opts.sled_compression,
            ..StoreOptions::default()
        },
        &opts.engine,
        1,
    )?;
    let ids = store.call_ids()?;
    let mut by_inv: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
    for id in &ids {
        if let Some(c) = store.get_call_meta(id)? {
            by_inv
                .entry(c.invocation_id)
                .or_default()
                .push((c.round, c.id));
        }
    }
    for (inv_id, calls) in &by_inv {
        let n: u32 = inv_id.trim_start_matches("inv_bench_").parse()?;
        let conv = conversation(n, opts.rounds, opts.image_bytes, &system, &tools);
        for (round, id) in calls {
            let r = *round as usize - 1;
            if store.get_raw(id, false)?.as_deref() != Some(conv.request_bodies[r].as_bytes())
                || store.get_raw(id, true)?.as_deref() != Some(conv.response_bodies[r].as_bytes())
            {
                mismatches += 1;
            } else if r.is_multiple_of(5) {
                // Views are rebuilt from the raw request when read: check a sample.
                let expected = llmtap::parse::request_view(
                    llmtap::record::Endpoint::Messages,
                    conv.request_bodies[r].as_bytes(),
                );
                let view = store.get_call(id)?.and_then(|c| c.request);
                if view.as_ref() != Some(&expected) {
                    mismatches += 1;
                }
            }
        }
    }
    let verify_s = verify_started.elapsed().as_secs_f64();
    let per = |b: u64| b as f64 / calls_written.max(1) as f64;
    let mut md = String::new();
    use std::fmt::Write;
    let _ = writeln!(md, "| measure | total | per call |\n| --- | ---: | ---: |");
    for (name, v) in [
        ("raw bytes captured (request + response bodies)", raw),
        (
            "previous layout: CallRecord JSON (logical, before sled)",
            old_layout,
        ),
        ("data dir on disk, apparent size", apparent),
        ("data dir on disk, allocated blocks", allocated),
        (
            "  of which calls tree (metadata JSON, logical)",
            usage.call_bytes,
        ),
        ("  of which manifests (logical)", usage.manifest_bytes),
        ("  of which content chunks (logical)", usage.chunk_bytes),
        ("  of which blobs (logical)", usage.blob_bytes),
    ] {
        let _ = writeln!(md, "| {name} | {v} | {:.0} |", per(v));
    }
    let _ = writeln!(
        md,
        "\ncalls: {calls_written} ({} conversations x {} rounds), image {} bytes, zstd level {}, sled compression {}, encryption {}, {} call(s) per write batch\n\
         chunks: {}, blobs: {}\n\
         raw / on-disk (apparent): {:.1}x; raw / allocated: {:.1}x\n\
         exact reconstruction: {} of {} calls rebuilt byte for byte ({} mismatches)\n\
         write: {write_s:.1} s ({:.0} calls/s); verify: {verify_s:.1} s",
        opts.conversations, opts.rounds, opts.image_bytes, opts.compression_level, opts.sled_compression,
        if opts.encrypt { "on" } else { "off" },
        opts.batch.max(1),
        usage.chunks, usage.blobs,
        raw as f64 / apparent.max(1) as f64, raw as f64 / allocated.max(1) as f64,
        calls_written - mismatches, calls_written, mismatches,
        calls_written as f64 / write_s.max(1e-9),
    );
    let _ = writeln!(
        md,
        "\n| sled tree | entries | logical bytes | per call |\n| --- | ---: | ---: | ---: |"
    );
    for (name, entries, bytes) in trees.iter().filter(|t| t.1 > 0) {
        let _ = writeln!(md, "| {name} | {entries} | {bytes} | {:.0} |", per(*bytes));
    }
    if mismatches > 0 {
        return Err(format!("{mismatches} calls did not rebuild exactly\n{md}").into());
    }
    Ok(md)
}
