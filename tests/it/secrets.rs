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

/// Issue 33, finding 4: credentials are recognised by the words of their names and
/// the shape of their values. Each of these real-world spellings carries its own
/// secret; none may reach a file under `data_dir`, the process's log (at debug),
/// the CSV export, or what an admin or a viewer reads from the API.
#[tokio::test]
async fn forty_real_world_credential_spellings_are_kept_nowhere() {
    let run = llmtap::ids::new_id("", llmtap::timefmt::now_unix_us()).to_lowercase();
    let secret = |n: usize| format!("sv{n:03}q{run}");
    // Request headers, by name.
    let header_names = [
        "authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "x-subscription-token",
        "ocp-apim-subscription-key",
        "x-auth-key",
        "x-functions-key",
        "x-honeycomb-team",
        "x-auth-token",
        "x-access-token",
        "private-token",
        "x-amz-security-token",
        "x-csrf-token",
        "x-client-secret",
        "x-db-password",
        "x-service-credential",
        "x-session-token",
        "x-hub-signature-256",
        "dd-api-key",
        "x-figma-token",
        "x-shopify-access-token",
        "x-vault-token",
        "x-jwt-assertion",
        "apikey",
        "x-sentry-auth",
    ];
    // Query parameters, by name.
    let params = [
        "key",
        "api_key",
        "apiKey",
        "api_token",
        "private_token",
        "subscription-key",
        "accessToken",
        "access_token",
        "code",
        "token",
        "sig",
        "signature",
        "client_secret",
        "password",
        "X-Amz-Signature",
        "x-goog-credential",
        "refresh_token",
        "session",
    ];
    // Tool call JSON fields, by name.
    let fields = [
        "api_key",
        "password",
        "token",
        "client_secret",
        "accessToken",
    ];
    let mut n = 0;
    let mut next = || {
        n += 1;
        secret(n)
    };
    let mut headers: Vec<(String, String)> = header_names
        .iter()
        .map(|h| (h.to_string(), next()))
        .collect();
    // By shape, under names that say nothing.
    headers.push(("x-custom-a".to_string(), format!("sk-proj-{}", next())));
    headers.push(("x-custom-b".to_string(), format!("Bearer {}", next())));
    headers.push(("x-custom-c".to_string(), format!("ghp_{}", next())));
    let query: Vec<(String, String)> = params.iter().map(|p| (p.to_string(), next())).collect();
    let body_fields: Vec<(String, String)> =
        fields.iter().map(|f| (f.to_string(), next())).collect();
    let answer_secrets = [next(), next(), next(), next(), next()];
    let all_secrets: Vec<String> = (1..=n).map(secret).collect();
    assert!(all_secrets.len() >= 40, "{} spellings", all_secrets.len());

    let answers = answer_secrets.clone();
    let mock = MockUpstream::start(move |req| {
        // A tool's JSON answer carries credentials; an LLM answer is stored exactly
        // (its text is the product), so it carries none here.
        let body = if req.path_and_query.contains("/weather") {
            format!(
                r#"{{"ok":true,"api_key":"{}","password":"{}"}}"#,
                answers[3], answers[4]
            )
        } else {
            r#"{"id":"x","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#.to_string()
        };
        MockResponse::json(200, &body)
        .header(
            "location",
            &format!(
                "https://files.test/x?sig={}&token={}&page=2",
                answers[0], answers[0]
            ),
        )
        .header(
            "link",
            &format!(
                "<https://api.test/p?access_token={}&cursor=9>; rel=\"next\"",
                answers[1]
            ),
        )
        .header("x-upstream-token", &answers[2])
    })
    .await;
    let dir = TempDir::new("spellings");
    let tokens = [
        ("root", "admin-token-1", "admin"),
        ("watch", "viewer-token-1", "viewer"),
    ]
    .iter()
    .map(|(name, token, role)| {
        format!(
            "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n",
            llmtap::config::token_sha256_hex(token)
        )
    })
    .collect::<String>();
    let config = super::process::write_config(
        dir.path(),
        &format!(
            "{}{}{tokens}",
            provider_toml("oa", "openai", &mock.url()),
            provider_toml("tool", "http", &mock.url())
        ),
    );
    let log_path = dir.path().join("stderr.log");
    let data_dir = dir.path().join("data");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_llmtap"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data_dir)
        .env("LLMTAP_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut proc = super::process::spawn_command(command);
    let (proxy, api) = (proc.proxy, proc.api);

    let query_string = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let tool_body = serde_json::json!({
        "city": "paris",
        "credentials": body_fields.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
    })
    .to_string();
    let got = post_json(
        proxy,
        &format!("/tool/weather?city=paris&{query_string}"),
        &header_refs,
        &tool_body,
    )
    .await;
    assert_eq!(got.status, 200);
    // The client gets the upstream's answer untouched, secrets included.
    assert!(got.header("x-upstream-token") == Some(answer_secrets[2].as_str()));
    let llm = post_json(
        proxy,
        &format!("/oa/v1/chat/completions?{query_string}"),
        &header_refs,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(llm.status, 200);
    let ids = [got.call_id(), llm.call_id()];

    let read = |path: String, token: &'static str| async move {
        send(
            api,
            "GET",
            &path,
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await
    };
    let mut seen = Vec::new();
    for id in &ids {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got = read(format!("/api/v1/calls/{id}"), "admin-token-1").await;
            if got.status == 200 {
                seen.push(String::from_utf8_lossy(&got.body).to_string());
                break;
            }
            assert!(std::time::Instant::now() < deadline, "call {id} not stored");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let viewer = read(format!("/api/v1/calls/{id}"), "viewer-token-1").await;
        assert_eq!(viewer.status, 200);
        seen.push(String::from_utf8_lossy(&viewer.body).to_string());
        for raw in ["request", "response"] {
            let got = read(
                format!("/api/v1/calls/{id}/raw?part={raw}"),
                "admin-token-1",
            )
            .await;
            seen.push(String::from_utf8_lossy(&got.body).to_string());
        }
    }
    for path in [
        "/api/v1/calls?limit=50",
        "/api/v1/calls.csv",
        "/api/v1/invocations",
    ] {
        for token in ["admin-token-1", "viewer-token-1"] {
            seen.push(
                String::from_utf8_lossy(&read(path.to_string(), token).await.body).to_string(),
            );
        }
    }
    // The record still says where a secret was.
    assert!(seen[0].contains("[redacted]"), "{}", seen[0]);
    assert!(
        seen[0].contains("city=paris"),
        "non-secret parameters stay: {}",
        seen[0]
    );
    super::process::terminate(&mut proc.child);

    let mut files = Vec::new();
    files_under(&data_dir, &mut files);
    files.push(log_path.clone());
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.len() > 100, "the debug log was written");
    for secret in &all_secrets {
        for (i, text) in seen.iter().enumerate() {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} visible in API answer {i}: {text}"
            );
        }
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {}",
                file.display()
            );
        }
    }
}

/// Issue 33, finding 2 (the capture log's part): once stored, calls leave the
/// capture log within seconds (a quiet, wholly applied segment is sealed and
/// deleted), so a prompt later deleted or expired is not kept there until a 64 MiB
/// segment fills; a restart afterwards starts cleanly and keeps every call.
#[tokio::test]
async fn stored_calls_leave_the_capture_log_within_seconds() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"usage":{}}"#)).await;
    let dir = TempDir::new("log-retire");
    let config = || test_config(dir.path(), &provider_toml("oa", "openai", &mock.url()));
    let running = start_llmtap(config()).await;
    let prompt = "prompt-that-must-leave-the-log-9d1e";
    let mut ids = Vec::new();
    for _ in 0..5 {
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{prompt}"}}]}}"#);
        ids.push(
            post_json(running.proxy_addr, "/oa/v1/chat/completions", &[], &body)
                .await
                .call_id(),
        );
    }
    for id in &ids {
        wait_call(&running, id).await;
    }
    let journal = dir.path().join("journal");
    let in_log = || {
        let mut files = Vec::new();
        files_under(&journal, &mut files);
        files.iter().any(|f| {
            let bytes = std::fs::read(f).unwrap_or_default();
            bytes.windows(prompt.len()).any(|w| w == prompt.as_bytes())
        })
    };
    assert!(in_log(), "written to the log first");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_log() {
        assert!(
            std::time::Instant::now() < deadline,
            "applied calls still in the capture log after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    running.shutdown().await.unwrap();
    let running = start_llmtap(config()).await;
    for id in &ids {
        assert!(running.store.get_call(id).unwrap().is_some());
    }
    let more = post_json(
        running.proxy_addr,
        "/oa/v1/chat/completions",
        &[],
        r#"{"model":"m"}"#,
    )
    .await;
    wait_call(&running, &more.call_id()).await;
    assert_eq!(running.store.call_ids().unwrap().len(), 6);
    running.shutdown().await.unwrap();
}
