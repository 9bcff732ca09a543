//! Secrets never reach disk: a unique secret sent every way, then every file scanned.

use super::util::*;
use std::path::Path;

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn secrets_never_reach_the_data_directory() {
    let secret = format!(
        "sk-llmtap-secret-{}",
        llmtap::ids::new_id("", llmtap::timefmt::now_unix_us())
    );
    let mock = MockUpstream::start(|req| {
        if req.path_and_query.contains("fail") {
            MockResponse::json(
                401,
                r#"{"error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            )
        } else {
            MockResponse::json(
                200,
                r#"{"id":"m","model":"x","usage":{"input_tokens":1,"output_tokens":1}}"#,
            )
        }
        .header("set-cookie", "session=upstream-cookie-value")
    })
    .await;
    let dir = TempDir::new("secrets");
    let toml = [
        provider_toml("oa", "openai", &mock.url()),
        provider_toml("an", "anthropic", &mock.url()),
        provider_toml("ge", "gemini", &mock.url()),
        provider_toml("tool", "http", &mock.url()),
    ]
    .concat();
    let running = start_llmtap(test_config(dir.path(), &toml)).await;
    let bearer = format!("Bearer {secret}");
    let cookie = format!("sid={secret}");
    let header_sets: Vec<Vec<(&str, &str)>> = vec![
        vec![("authorization", bearer.as_str())],
        vec![("x-api-key", secret.as_str())],
        vec![("api-key", secret.as_str())],
        vec![("x-goog-api-key", secret.as_str())],
        vec![("proxy-authorization", bearer.as_str())],
        vec![("cookie", cookie.as_str())],
    ];
    let mut sent = 0;
    for path in [
        "/oa/v1/chat/completions",
        "/an/v1/messages",
        "/an/v1/messages/fail",
        "/ge/v1beta/models/gemini-2.0-flash:generateContent",
        "/tool/search",
    ] {
        for headers in &header_sets {
            let got = post_json(
                running.proxy_addr,
                path,
                headers,
                r#"{"model":"m","messages":[]}"#,
            )
            .await;
            assert!(got.status == 200 || got.status == 401);
            sent += 1;
        }
        let with_query = format!("{path}?alt=sse&key={secret}");
        post_json(running.proxy_addr, &with_query, &[], "{}").await;
        sent += 1;
    }
    // The upstream did get the credentials: llmtap forwards them untouched.
    assert!(mock.seen.lock().unwrap().iter().any(|r| r
        .headers
        .get("x-api-key")
        .is_some_and(|v| v == secret.as_str())));
    wait_records(&running, sent).await;
    // A fingerprint is kept instead of the key.
    let any = running.store.call_ids().unwrap();
    let call = running.store.get_call(&any[0]).unwrap().unwrap();
    let fp = call.api_key_fingerprint.expect("fingerprint kept");
    assert!(fp.starts_with("sha256:"));
    running.shutdown().await.unwrap();

    let mut files = Vec::new();
    files_under(dir.path(), &mut files);
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret found in {}",
            file.display()
        );
        assert!(!bytes.windows(21).any(|w| w == b"upstream-cookie-value"));
    }
}

/// Finding 1 of issue 33: `x-llmtap-omit` applies before the capture log, so an
/// opted-out prompt or answer is in no file under `data_dir`, while the record
/// still has what is not content (model, usage, cost, status).
#[tokio::test]
async fn opted_out_bodies_never_reach_the_capture_log() {
    // Each call's prompt names its omit value; the mock answers with a text that
    // names it too, so every body can be looked for on its own.
    let mock = MockUpstream::start(move |req| {
        let text = String::from_utf8_lossy(&req.body).to_string();
        let tag = ["all", "request", "response"]
            .into_iter()
            .find(|t| text.contains(&format!("prompt-{t}-")))
            .unwrap_or("none");
        MockResponse::json(
            200,
            &format!(
                r#"{{"id":"x","model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"answer-{tag}-51be20"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}}}"#
            ),
        )
    })
    .await;
    let dir = TempDir::new("omit-log");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml("oa", "openai", &mock.url()),
    ))
    .await;
    let omits = ["all", "request", "response"];
    let mut ids = Vec::new();
    for omit in omits {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"prompt-{omit}-7f3a9c"}}]}}"#
        );
        let got = post_json(
            running.proxy_addr,
            "/oa/v1/chat/completions",
            &[("x-llmtap-omit", omit)],
            &body,
        )
        .await;
        assert_eq!(got.status, 200);
        let answer = format!("answer-{omit}-51be20");
        assert!(String::from_utf8_lossy(&got.body).contains(&answer));
        ids.push(got.call_id());
    }
    for (id, omit) in ids.iter().zip(omits) {
        let call = wait_call(&running, id).await;
        assert_eq!(call.model.as_deref(), Some("gpt-4o-mini"), "{omit}");
        assert_eq!(call.usage.input_tokens, Some(11), "{omit}");
        assert_eq!(call.usage.output_tokens, Some(7), "{omit}");
        assert!(call.cost_usd.is_some(), "{omit}: still priced");
        assert_eq!(call.request_body.is_some(), omit == "response", "{omit}");
        assert_eq!(call.response_body.is_some(), omit == "request", "{omit}");
        assert_eq!(call.request.is_some(), omit == "response", "{omit}");
        assert_eq!(call.response.is_some(), omit == "request", "{omit}");
    }
    running.shutdown().await.unwrap();
    let mut files = Vec::new();
    files_under(dir.path(), &mut files);
    let found = |needle: &str| {
        files.iter().any(|file| {
            let bytes = std::fs::read(file).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
    };
    for (omit, prompt_kept, answer_kept) in [
        ("all", false, false),
        ("request", false, true),
        ("response", true, false),
    ] {
        let prompt = format!("prompt-{omit}-7f3a9c");
        let answer = format!("answer-{omit}-51be20");
        // A kept body is in the capture log in the clear (the scan can see it); an
        // omitted one is nowhere.
        assert_eq!(found(&prompt), prompt_kept, "{prompt}");
        assert_eq!(found(&answer), answer_kept, "{answer}");
    }
}
