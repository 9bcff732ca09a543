//! The embedded store's own storage promises: attachment files, encryption at rest on
//! disk, crypto-shredding of files, snapshots and the disk-full path. What every
//! engine promises (exact reconstruction, deduplication, retention, deletion,
//! counters under concurrency) is in `conformance.rs`, run on each engine; its
//! fixtures and body builders are here.

use super::util::*;
use base64::Engine;
use llmtap::record::{CallRecord, Endpoint, InvocationRecord, Message, RequestView};
use llmtap::store::{Keyring, Store, StoreOptions};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "5f0c0e8d7a6b4c3d2e1f00112233445566778899aabbccddeeff001122334455";
const DAY_US: u64 = 86_400_000_000;

fn open(dir: &Path, options: StoreOptions) -> Store {
    Store::open_with(dir, options).unwrap()
}

pub(super) fn keyed() -> StoreOptions {
    StoreOptions {
        keys: Some(Arc::new(Keyring::from_text(KEY).unwrap())),
        ..StoreOptions::default()
    }
}

pub(super) fn call(
    id: &str,
    inv: &str,
    round: u32,
    at_us: u64,
    request: &str,
    response: &str,
) -> CallRecord {
    CallRecord {
        id: id.into(),
        invocation_id: inv.into(),
        round,
        started_at_us: at_us,
        provider: "anthropic".into(),
        request_body: Some(request.into()),
        response_body: Some(response.into()),
        ..CallRecord::default()
    }
}

fn inv(id: &str, at_us: u64, rounds: u32) -> InvocationRecord {
    InvocationRecord {
        id: id.into(),
        started_at_us: at_us,
        ended_at_us: at_us,
        rounds,
        ..InvocationRecord::default()
    }
}

pub(super) fn fixture_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exchanges");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// Deterministic pseudo-random bytes (an incompressible "image").
pub(super) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(super) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An Anthropic conversation: round n re-sends the system prompt, the image of
/// round 1 and the whole history.
pub(super) fn anthropic_round(system: &str, image: &[u8], task: &str, rounds: u32) -> String {
    let mut messages = vec![serde_json::json!({"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(image)}},
        {"type": "text", "text": task},
    ]})];
    for r in 1..rounds {
        messages.push(serde_json::json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": format!("toolu_{r}"), "name": "read_file", "input": {"path": format!("src/file{r}.rs")}}
        ]}));
        messages.push(serde_json::json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": format!("toolu_{r}"), "content": format!("fn f{r}() {{ /* {} */ }}", "x".repeat(300))}
        ]}));
    }
    serde_json::to_string(&serde_json::json!({
        "model": "claude-sonnet-4-5", "max_tokens": 1024, "system": system, "messages": messages,
    }))
    .unwrap()
}

/// Attachment bytes live in files beside sled, one per address: a file nothing
/// references (a crash between writing it and recording its reference) goes when
/// the store next opens.
#[test]
fn attachment_files_are_kept_outside_sled_and_orphans_are_removed() {
    let dir = TempDir::new("blob-files");
    let image = noise(21, 30_000);
    let sha = sha256_hex(&image);
    let body = anthropic_round("system", &image, "look", 2);
    let file = dir.path().join("attachments").join(&sha[..2]).join(&sha);
    let orphan_sha = sha256_hex(b"never referenced");
    let orphan = dir
        .path()
        .join("attachments")
        .join(&orphan_sha[..2])
        .join(&orphan_sha);
    {
        let store = open(dir.path(), StoreOptions::default());
        store
            .write_batch(&[call("c_01", "inv", 1, 10, &body, "{}")], &[])
            .unwrap();
        // Stored once, as itself (the codec leaves incompressible bytes alone).
        let on_disk = std::fs::read(&file).unwrap();
        assert!(on_disk.len() >= image.len() && on_disk.len() < image.len() + 64);
        std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        std::fs::write(&orphan, b"left by a crash").unwrap();
    }
    // Reopen: the orphan goes, the referenced file stays and still rebuilds the body.
    {
        let store = open(dir.path(), StoreOptions::default());
        assert!(!orphan.exists());
        assert!(file.exists());
        assert_eq!(
            store.get_raw("c_01", false).unwrap().unwrap(),
            body.as_bytes()
        );
    }
}

#[test]
fn attachments_of_every_provider_shape_are_found() {
    let dir = TempDir::new("shapes");
    let store = open(dir.path(), StoreOptions::default());
    let pdf = noise(3, 900);
    let png = noise(4, 700);
    let wav = noise(5, 500);
    let bodies = [
        // OpenAI chat: image data URL, file_data with filename, input_audio, and a URL image.
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", b64(&png))}},
            {"type": "file", "file": {"filename": "report.pdf", "file_data": format!("data:application/pdf;base64,{}", b64(&pdf))}},
            {"type": "input_audio", "input_audio": {"data": b64(&wav), "format": "wav"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]}]}),
        // Responses: input_image and input_file.
        serde_json::json!({"model": "gpt-5", "input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": format!("data:image/png;base64,{}", b64(&png))},
            {"type": "input_file", "filename": "report.pdf", "file_data": format!("data:application/pdf;base64,{}", b64(&pdf))},
        ]}]}),
        // Anthropic: document base64 source and a URL source.
        serde_json::json!({"model": "claude", "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64(&pdf)}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/dog.jpg"}},
        ]}]}),
        // Gemini: inlineData and fileData.
        serde_json::json!({"contents": [{"role": "user", "parts": [
            {"inlineData": {"mimeType": "image/png", "data": b64(&png)}},
            {"fileData": {"mimeType": "video/mp4", "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}},
        ]}], "systemInstruction": {"parts": [{"text": "be brief"}]}}),
    ];
    let expect: [&[(&str, &str)]; 4] = [
        &[
            ("mirrored", "image/png"),
            ("mirrored", "application/pdf"),
            ("mirrored", "audio/wav"),
            ("url", "https://example.com/cat.png"),
        ],
        &[("mirrored", "image/png"), ("mirrored", "application/pdf")],
        &[
            ("mirrored", "application/pdf"),
            ("url", "https://example.com/dog.jpg"),
        ],
        &[
            ("mirrored", "image/png"),
            (
                "url",
                "https://generativelanguage.googleapis.com/v1beta/files/abc",
            ),
        ],
    ];
    for (i, (body, want)) in bodies.iter().zip(expect).enumerate() {
        let text = serde_json::to_string(body).unwrap();
        let id = format!("c_{i}");
        let mut c = call(&id, "inv", 1, 1, &text, "{}");
        c.request = Some(RequestView {
            messages: vec![Message {
                role: "user".into(),
                attachments: vec![
                    serde_json::json!({"type": "image", "data": format!("data:image/png;base64,{}", b64(&png))}),
                ],
                ..Message::default()
            }],
            ..RequestView::default()
        });
        store.write_batch(&[c], &[]).unwrap();
        assert_eq!(store.get_raw(&id, false).unwrap().unwrap(), text.as_bytes());
        let meta = store.get_call_meta(&id).unwrap().unwrap();
        let got: Vec<(String, String)> = meta
            .attachments
            .iter()
            .map(|a| {
                (
                    a.source.clone(),
                    a.media_type
                        .clone()
                        .filter(|_| a.source == "mirrored")
                        .or(a.url.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want, "body {i}");
        if i == 0 {
            let pdf_att = &meta.attachments[1];
            assert_eq!(pdf_att.filename.as_deref(), Some("report.pdf"));
            assert_eq!(pdf_att.sha256.as_deref(), Some(sha256_hex(&pdf).as_str()));
        }
        // The parsed view shows a reference instead of the payload.
        let back = store.get_call(&id).unwrap().unwrap();
        let att = &back.request.unwrap().messages[0].attachments[0];
        if i == 2 {
            // No PNG in this body: the view is left as the parser wrote it.
            assert!(att["data"].is_string());
        } else {
            assert_eq!(att["data"]["$blob"], sha256_hex(&png));
            assert_eq!(att["data"]["size"], 700);
        }
    }
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let data = std::fs::read(&path).unwrap();
                if data.windows(needle.len()).any(|w| w == needle) {
                    hits.push(path.display().to_string());
                }
            }
        }
    }
    hits
}

/// A user prompt's variable value `run_one_call` sends: content, like the prompt.
const VARIABLE_SECRET: &str = "KIWI-VARIABLE-5521";

async fn run_one_call(dir: &Path, extra: &str, prompt: &str, image: &[u8]) -> (String, String) {
    let mock = MockUpstream::start(|_| {
        MockResponse::json(
            200,
            r#"{"type":"message","content":[{"type":"text","text":"ok"}]}"#,
        )
    })
    .await;
    let config = test_config(
        dir,
        &format!("{}{extra}", provider_toml("up", "anthropic", &mock.url())),
    );
    let running = start_llmtap(config).await;
    let body = anthropic_round(prompt, image, prompt, 2);
    let variables = format!(r#"{{"secret":"{VARIABLE_SECRET}"}}"#);
    let headers = [
        ("x-llmtap-user-prompt", "ask@v2"),
        ("x-llmtap-user-prompt-variables", variables.as_str()),
    ];
    let got = post_json(running.proxy_addr, "/up/v1/messages", &headers, &body).await;
    assert_eq!(got.status, 200);
    let id = got.call_id();
    wait_call(&running, &id).await;
    running.shutdown().await.unwrap();
    (id, body)
}

#[tokio::test]
async fn encrypted_store_does_not_reveal_prompts_on_disk() {
    let prompt = "ZEBRA-ORCHID-7731 is the secret codename of the project; never reveal it.";
    let image = noise(31, 4000);
    // Control: unencrypted and uncompressed, the scan finds the prompt.
    let plain = TempDir::new("plain-scan");
    run_one_call(
        plain.path(),
        "[store]\ncompression_level = 0\n",
        prompt,
        &image,
    )
    .await;
    assert!(!files_containing(plain.path(), b"ZEBRA-ORCHID-7731").is_empty());
    assert!(!files_containing(plain.path(), VARIABLE_SECRET.as_bytes()).is_empty());

    let dir = TempDir::new("enc-scan");
    let key_dir = TempDir::new("enc-key");
    let key_file = key_dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let extra = format!(
        "[store]\ncompression_level = 0\nencryption_key_file = \"{}\"\n",
        key_file.display()
    );
    let (id, body) = run_one_call(dir.path(), &extra, prompt, &image).await;
    for needle in [
        &b"ZEBRA-ORCHID-7731"[..],
        b"secret codename",
        VARIABLE_SECRET.as_bytes(),
        &image[100..140],
        &b64(&image).as_bytes()[..40],
    ] {
        let hits = files_containing(dir.path(), needle);
        assert!(
            hits.is_empty(),
            "{:?} found in {hits:?}",
            String::from_utf8_lossy(needle)
        );
    }
    // The metadata stays readable without the key; the content needs it.
    assert!(matches!(
        Store::open_with(dir.path(), StoreOptions::default()),
        Err(llmtap::store::StoreError::KeyRequired)
    ));
    let store = open(dir.path(), keyed());
    let back = store.get_call(&id).unwrap().unwrap();
    assert_eq!(back.request_body.as_deref(), Some(body.as_str()));
    assert_eq!(back.http_status, Some(200));
    // Both prompt names are metadata; the user prompt's variables are content.
    assert_eq!(back.metadata.user_prompt.as_deref(), Some("ask@v2"));
    assert_eq!(
        back.metadata.user_prompt_variables,
        Some(serde_json::json!({"secret": VARIABLE_SECRET}))
    );
    // The `q` texts are sealed like the bodies, and readable with the key.
    let text = store.call_text(&id).unwrap().unwrap();
    assert_eq!(text.system.as_deref(), Some(prompt));
    // Addresses are keyed: the blob is not named by its plain SHA-256.
    let att = &back.attachments[0];
    assert_ne!(att.sha256.as_deref(), Some(sha256_hex(&image).as_str()));
    assert_eq!(
        store
            .get_blob(att.sha256.as_deref().unwrap())
            .unwrap()
            .unwrap()
            .1,
        image
    );
}

const OTHER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn a_wrong_encryption_key_is_refused_at_open() {
    let dir = TempDir::new("wrong-key");
    {
        let store = open(dir.path(), keyed());
        let c = call("c_1", "i_1", 1, 1_000, "{\"q\":\"secret\"}", "{}");
        store.write_batch(&[c], &[inv("i_1", 1_000, 1)]).unwrap();
        store.flush().unwrap();
    }
    let other = |text: &str| StoreOptions {
        keys: Some(Arc::new(Keyring::from_text(text).unwrap())),
        ..StoreOptions::default()
    };
    let refused = Store::open_with(dir.path(), other(OTHER_KEY));
    let Err(e) = refused else {
        panic!("a store sealed with another key opened");
    };
    let message = e.to_string();
    assert!(message.contains("cannot open the content"), "{message}");
    assert!(
        !message.contains(KEY) && !message.contains(OTHER_KEY),
        "{message}"
    );
    // A rotated keyring (new key first, the old one kept) opens and reads old content.
    let store = open(dir.path(), other(&format!("{OTHER_KEY}\n{KEY}")));
    let back = store.get_call("c_1").unwrap().unwrap();
    assert_eq!(back.request_body.as_deref(), Some("{\"q\":\"secret\"}"));
    drop(store);
    // The right key still opens it.
    drop(open(dir.path(), keyed()));
}

#[tokio::test]
async fn llmtap_refuses_to_start_with_a_wrong_key() {
    let dir = TempDir::new("wrong-key-serve");
    let key_dir = TempDir::new("wrong-key-file");
    let key_file = key_dir.path().join("key");
    let extra = format!(
        "[store]\nencryption_key_file = \"{}\"\n",
        key_file.display()
    );
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    // An empty store sealed nothing yet, but it records the key it is opened with.
    let running = start_llmtap(test_config(dir.path(), &extra)).await;
    running.shutdown().await.unwrap();
    std::fs::write(&key_file, format!("{OTHER_KEY}\n")).unwrap();
    let started = llmtap::server::start(test_config(dir.path(), &extra)).await;
    let Err(e) = started else {
        panic!("llmtap started with the wrong key");
    };
    assert!(
        format!("{e:#}").contains("encryption key cannot open"),
        "{e:#}"
    );
}

#[tokio::test]
async fn blobs_and_raw_bodies_are_served_by_the_api() {
    let response_body = r#"{"type":"message","content":[{"type":"text","text":"a cat"}]}"#;
    let mock = MockUpstream::start(move |_| MockResponse::json(200, response_body)).await;
    let dir = TempDir::new("api-blob");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("up", "anthropic", &mock.url()),
    ))
    .await;
    let image = noise(41, 2500);
    let body = anthropic_round("Describe images.", &image, "what is this?", 1);
    let got = post_json(running.proxy_addr, "/up/v1/messages", &[], &body).await;
    let call = wait_call(&running, &got.call_id()).await;
    let att = &call.attachments[0];
    let sha = sha256_hex(&image);
    assert_eq!(att.sha256.as_deref(), Some(sha.as_str()));
    let blob = api_get(&running, &format!("/api/v1/blobs/{sha}")).await;
    assert_eq!(blob.status, 200);
    assert_eq!(blob.header("content-type"), Some("image/png"));
    assert_eq!(&blob.body[..], &image[..]);
    assert_eq!(
        api_get(&running, &format!("/api/v1/blobs/{}", "0".repeat(64)))
            .await
            .status,
        404
    );
    let raw = api_get(
        &running,
        &format!("/api/v1/calls/{}/raw?part=request", call.id),
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(&raw.body[..], body.as_bytes());
    let raw = api_get(
        &running,
        &format!("/api/v1/calls/{}/raw?part=response", call.id),
    )
    .await;
    assert_eq!(&raw.body[..], response_body.as_bytes());
    assert_eq!(raw.header("content-type"), Some("application/json"));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn disk_full_stops_bodies_then_capture_and_resumes() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"content":[]}"#)).await;
    let dir = TempDir::new("disk-full");
    let running = start_llmtap(test_config(
        dir.path(),
        &format!(
            "{}[store]\nmin_free_mb = 1000\ncritical_free_mb = 100\n",
            provider_toml("up", "anthropic", &mock.url())
        ),
    ))
    .await;
    let free = Arc::new(AtomicU64::new(5_000 << 20));
    let f = free.clone();
    let disk = running.store.disk();
    disk.set_probe(Arc::new(move |_| Ok(f.load(Ordering::Relaxed))));
    let body = r#"{"model":"claude","messages":[{"role":"user","content":"hello there"}]}"#;

    // Nearly full: forwarded, metadata stored, bodies not.
    free.store(500 << 20, Ordering::Relaxed);
    disk.check();
    let got = post_json(running.proxy_addr, "/up/v1/messages", &[], body).await;
    assert_eq!(got.status, 200);
    let call = wait_call(&running, &got.call_id()).await;
    assert!(call.request_body.is_none() && call.response_body.is_none());
    assert_eq!(call.http_status, Some(200));
    assert!(call.parse_notes.iter().any(|n| n.contains("disk")));
    let health = api_get(&running, "/healthz").await.json();
    assert_eq!(health["storage"]["disk"], "bodies_paused");
    assert_eq!(health["storage"]["storing_bodies"], false, "{health}");

    // Full: forwarded, nothing stored.
    free.store(50 << 20, Ordering::Relaxed);
    disk.check();
    let got = post_json(running.proxy_addr, "/up/v1/messages", &[], body).await;
    assert_eq!(got.status, 200);
    let skipped = got.call_id();
    for _ in 0..200 {
        if running.metrics.backlog.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(running.store.get_call_meta(&skipped).unwrap().is_none());
    let metrics = String::from_utf8(api_get(&running, "/metrics").await.body.to_vec()).unwrap();
    assert!(metrics.contains("llmtap_disk_level 2"), "{metrics}");
    assert!(
        metrics.contains("llmtap_calls_skipped_disk_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llmtap_bodies_skipped_disk_total 1"),
        "{metrics}"
    );

    // Space returns: everything is stored again.
    free.store(5_000 << 20, Ordering::Relaxed);
    disk.check();
    let got = post_json(running.proxy_addr, "/up/v1/messages", &[], body).await;
    let call = wait_call(&running, &got.call_id()).await;
    assert_eq!(call.request_body.as_deref(), Some(body));
    assert_eq!(
        api_get(&running, "/healthz").await.json()["storage"]["disk"],
        "ok"
    );
    running.shutdown().await.unwrap();
}

#[test]
fn a_store_created_without_page_compression_still_opens() {
    let dir = TempDir::new("sled-compat");
    let old = open(
        dir.path(),
        StoreOptions {
            sled_compression: false,
            ..StoreOptions::default()
        },
    );
    old.write_batch(&[call("c_1", "i", 1, 1, "{\"a\":1}", "ok")], &[])
        .unwrap();
    old.flush().unwrap();
    drop(old);
    let store = open(dir.path(), StoreOptions::default());
    assert_eq!(store.get_raw("c_1", true).unwrap().unwrap(), b"ok");
}

#[tokio::test]
async fn retention_takes_deleted_records_out_of_summary_and_agents_even_after_a_restart() {
    let dir = TempDir::new("retention-rollups");
    let now = llmtap::timefmt::now_unix_us();
    let extra = "[store]\nretention_days = 30\n";
    let running = start_llmtap(test_config(dir.path(), extra)).await;
    let mut calls = Vec::new();
    let mut invs = Vec::new();
    for i in 0..6u64 {
        // Four old runs (one agent only has old ones), two recent.
        let at = if i < 4 {
            now - 40 * DAY_US + i
        } else {
            now - 60_000_000 + i
        };
        let agent = if i < 2 { "old-bot" } else { "bot" };
        let mut c = call(&format!("c_{i}"), &format!("run-{i}"), 1, at, "{}", "{}");
        c.id = llmtap::ids::new_id("c_", at);
        c.metadata.agent = Some(agent.into());
        c.status = Some(llmtap::record::CallStatus::Success);
        c.latency_ms = 100.0;
        invs.push(llmtap::record::roll_up(None, &c));
        calls.push(c);
    }
    running.store.write_batch(&calls, &invs).unwrap();
    let summary = api_get(&running, "/api/v1/summary").await.json();
    assert_eq!(
        (
            summary["total_calls"].as_u64(),
            summary["total_runs"].as_u64()
        ),
        (Some(6), Some(6))
    );
    let report = running.store.sweep(now).unwrap();
    assert_eq!((report.calls_deleted, report.invocations_deleted), (4, 4));
    let check = |summary: serde_json::Value, agents: serde_json::Value| {
        assert_eq!(summary["total_calls"], 2, "{summary}");
        assert_eq!(summary["total_runs"], 2, "{summary}");
        let items = agents["items"].as_array().unwrap();
        let names: Vec<&str> = items.iter().map(|a| a["agent"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["bot"], "{agents}");
        assert_eq!(items[0]["calls"], 2);
        assert_eq!(items[0]["invocations"], 2);
    };
    check(
        api_get(&running, "/api/v1/summary").await.json(),
        api_get(&running, "/api/v1/agents").await.json(),
    );
    running.shutdown().await.unwrap();
    let running = start_llmtap(test_config(dir.path(), extra)).await;
    check(
        api_get(&running, "/api/v1/summary").await.json(),
        api_get(&running, "/api/v1/agents").await.json(),
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn attachment_sizes_are_decoded_sizes_and_small_ones_are_mirrored() {
    let mock = MockUpstream::start(|_| {
        MockResponse::json(
            200,
            r#"{"type":"message","content":[{"type":"text","text":"ok"}]}"#,
        )
    })
    .await;
    let dir = TempDir::new("att-sizes");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("up", "anthropic", &mock.url()),
    ))
    .await;
    // 70 bytes are 96 base64 characters; 10 bytes are 16, under the old 64-character floor.
    let (large, small) = (noise(51, 70), noise(52, 10));
    assert_eq!((b64(&large).len(), b64(&small).len()), (96, 16));
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5", "max_tokens": 16,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(&large)}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": b64(&small)}},
            {"type": "text", "text": "what are these?"},
        ]}],
    })
    .to_string();
    let got = post_json(running.proxy_addr, "/up/v1/messages", &[], &body).await;
    let call = wait_call(&running, &got.call_id()).await;
    let listed: Vec<u64> = call.request.as_ref().unwrap().messages[0]
        .attachments
        .iter()
        .map(|a| a["size"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, vec![70, 10]);
    let mirrored: Vec<(Option<u64>, Option<String>)> = call
        .attachments
        .iter()
        .map(|a| (a.size, a.sha256.clone()))
        .collect();
    assert_eq!(
        mirrored,
        vec![
            (Some(70), Some(sha256_hex(&large))),
            (Some(10), Some(sha256_hex(&small)))
        ]
    );
    let blob = api_get(&running, &format!("/api/v1/blobs/{}", sha256_hex(&small))).await;
    assert_eq!((blob.status, &blob.body[..]), (200, &small[..]));
    // The raw request still rebuilds byte for byte.
    assert_eq!(
        running.store.get_raw(&call.id, false).unwrap().unwrap(),
        body.as_bytes()
    );
    running.shutdown().await.unwrap();
}

/// `store.snapshot_every`: the writer's store is reopened every so many stored bytes
/// (so sled writes its snapshot and a restart replays a bounded log). Reads made
/// meanwhile wait for the reopened engine instead of failing, and what the reopen
/// carries over (the facet caches that answer three-facet totals) stays exact.
#[test]
fn snapshots_reopen_the_store_while_reads_go_on() {
    use llmtap::store::summary::{tag, Filter};
    use llmtap::store::PageRequest;
    let dir = TempDir::new("snapshots");
    let store = open(
        dir.path(),
        StoreOptions {
            snapshot_every_bytes: 64 << 10,
            ..StoreOptions::default()
        },
    );
    let three_facets = Filter {
        eq: vec![
            (tag::AGENT, vec!["snapper".into()]),
            (tag::MODEL, vec!["m-even".into()]),
            (tag::STATUS, vec!["success".into()]),
        ],
        ..Default::default()
    };
    let total = |store: &Store, filter: &Filter| {
        store
            .list_calls(
                filter,
                &PageRequest {
                    limit: 5,
                    count_total: true,
                    ..Default::default()
                },
            )
            .map(|page| (page.total, page.items.len()))
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, done, filter) = (store.clone(), done.clone(), three_facets.clone());
        std::thread::spawn(move || {
            let (mut reads, mut last_total) = (0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                let (total, _) = total(&store, &filter).expect("a read during a snapshot failed");
                assert!(
                    total >= last_total,
                    "the total went back: {total} < {last_total}"
                );
                last_total = total;
                store
                    .rollup_total(&llmtap::store::RollupScope::All)
                    .expect("a rollup read during a snapshot failed");
                reads += 1;
            }
            reads
        })
    };
    let mut even_successes = 0u64;
    for batch in 0..150u64 {
        let mut calls = Vec::new();
        let mut invs = Vec::new();
        for i in 0..4u64 {
            let n = batch * 4 + i;
            let at = 1_000_000 + n;
            let text = format!(
                "{{\"prompt\":\"{}\"}}",
                "distinct words ".repeat(20) + &n.to_string()
            );
            let mut c = call(
                &format!("c_snap{n:05}"),
                &format!("r{n}"),
                1,
                at,
                &text,
                &text,
            );
            c.metadata.agent = Some("snapper".into());
            c.model = Some(if n % 2 == 0 { "m-even" } else { "m-odd" }.into());
            let ok = n % 3 != 0;
            c.status = Some(if ok {
                llmtap::record::CallStatus::Success
            } else {
                llmtap::record::CallStatus::Failed
            });
            even_successes += u64::from(ok && n % 2 == 0);
            invs.push(llmtap::record::roll_up(None, &c));
            calls.push(c);
        }
        store.write_batch(&calls, &invs).unwrap();
        store.maintain().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    let snapshots = store.stats().snapshots.load(Ordering::Relaxed);
    assert!(
        snapshots >= 5,
        "600 calls of ~1 KB took {snapshots} snapshots at 64 KiB"
    );
    assert!(reads > 0);
    assert_eq!(total(&store, &three_facets).unwrap(), (even_successes, 5));
    assert_eq!(store.call_count(), 600);
    assert_eq!(
        store
            .rollup_total(&llmtap::store::RollupScope::All)
            .unwrap()
            .calls,
        600
    );
    let last = store
        .get_call("c_snap00599")
        .unwrap()
        .expect("the last call");
    assert!(last.request_body.unwrap().ends_with("599\"}"));
    // The facet caches the reopens carried agree with ones built from the trees.
    drop(store);
    let store = open(dir.path(), StoreOptions::default());
    assert_eq!(total(&store, &three_facets).unwrap(), (even_successes, 5));
    assert_eq!(store.call_count(), 600);
}

/// Every file under `dir` holding `needle` in plain bytes or inside any zstd frame
/// (sled's own pages and our values are zstd frames that standard zstd reads).
fn files_revealing(dir: &Path, needle: &[u8]) -> Vec<String> {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let mut hits = files_containing(dir, needle);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            for at in 0..data.len().saturating_sub(4) {
                if data[at..at + 4] != ZSTD_MAGIC {
                    continue;
                }
                let mut out = Vec::new();
                let mut decoder = match zstd::stream::read::Decoder::new(&data[at..]) {
                    Ok(d) => d,
                    Err(_) => continue,
                };
                use std::io::Read;
                let _ = (&mut decoder).take(16 << 20).read_to_end(&mut out);
                if out.windows(needle.len()).any(|w| w == needle) {
                    hits.push(format!("{} (zstd frame at {at})", path.display()));
                }
            }
        }
    }
    hits
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Issue 33, finding 2: content swept by retention is not recoverable from the data
/// directory, nor from a copy of the store's files taken before the sweep (what
/// sled's log keeps until it cleans a segment) together with the keys left after it.
#[test]
fn swept_content_is_shredded_with_its_period_key() {
    for encrypted in [false, true] {
        let dir = TempDir::new("shred");
        let options = || StoreOptions {
            retention_days: 30,
            key_period_secs: 1,
            ..if encrypted {
                keyed()
            } else {
                StoreOptions::default()
            }
        };
        let now = llmtap::timefmt::now_unix_us();
        let store = open(dir.path(), options());
        let secret = "PELICAN-QUARTZ-4412 must be forgotten";
        let kept = "HERON-BASALT-0932 stays";
        let shared = "S".repeat(3000);
        let old_image = noise(41, 3000);
        let old_body = {
            let mut v: serde_json::Value =
                serde_json::from_str(&anthropic_round(&shared, &old_image, secret, 2)).unwrap();
            v["metadata"] = serde_json::json!({ "note": secret });
            serde_json::to_string(&v).unwrap()
        };
        let new_body = anthropic_round(&shared, &noise(42, 3000), kept, 2);
        let old_at = now - 40 * DAY_US;
        // In a session, with its parsed view: a session's subject is its first user
        // message, prompt text that must expire with the call too.
        let mut expiring = call("c_0old", "inv-old", 1, old_at, &old_body, secret);
        expiring.endpoint = Some(Endpoint::Messages);
        expiring.request = Some(llmtap::parse::request_view(
            Endpoint::Messages,
            old_body.as_bytes(),
        ));
        expiring.metadata.session_id = Some("sess-old".into());
        store
            .write_batch(&[expiring], &[inv("inv-old", old_at, 1)])
            .unwrap();
        store
            .write_batch(
                &[call("c_1new", "inv-new", 1, now, &new_body, kept)],
                &[inv("inv-new", now, 1)],
            )
            .unwrap();
        store.flush().unwrap();
        assert_eq!(
            store
                .get_call("c_0old")
                .unwrap()
                .unwrap()
                .response_body
                .as_deref(),
            Some(secret)
        );
        // What the disk holds before the sweep, as sled's log keeps it afterwards.
        let before = TempDir::new("shred-before");
        copy_dir(dir.path(), before.path());
        let keys_before = std::fs::read_dir(dir.path().join("keys")).unwrap().count();
        assert!(keys_before >= 1);

        // The period the content was written in ends; the sweep deletes the old call.
        std::thread::sleep(Duration::from_millis(1_100));
        let report = store.sweep(now).unwrap();
        assert_eq!(report.calls_deleted, 1, "{report:?}");
        assert!(report.keys_shredded >= 1, "{report:?}");
        assert!(report.values_resealed >= 1, "{report:?}");
        // The kept call still reads, now and after a restart.
        assert_eq!(
            store.get_raw("c_1new", false).unwrap().unwrap(),
            new_body.as_bytes()
        );
        drop(store);
        let store = open(dir.path(), options());
        assert_eq!(
            store
                .get_call("c_1new")
                .unwrap()
                .unwrap()
                .response_body
                .as_deref(),
            Some(kept)
        );
        drop(store);
        for needle in [secret.as_bytes(), b"PELICAN-QUARTZ", &old_image[200..240]] {
            let hits = files_revealing(dir.path(), needle);
            assert!(hits.is_empty(), "encrypted={encrypted}: found in {hits:?}");
        }
        // The files from before the sweep, with today's keys: the old call's
        // content does not open. (Without shredding it would: the key was there.)
        std::fs::remove_dir_all(before.path().join("keys")).unwrap();
        copy_dir(&dir.path().join("keys"), &before.path().join("keys"));
        let residue = open(before.path(), options());
        let err = residue
            .get_call("c_0old")
            .expect_err("the old call's content opened after its key was shredded");
        assert!(
            matches!(err, llmtap::store::StoreError::Shredded { .. }),
            "{err}"
        );
    }
}
