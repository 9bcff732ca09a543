//! Hostile and everyday misuse (issue 12): tenants sharing client-chosen ids,
//! decompression bombs, stalled and never-reading clients, unbounded SSE, redaction
//! gaps, dot-segments, write errors and absurd usage numbers.

use super::util::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::Duration;

fn token_toml(name: &str, token: &str, role: &str, tenant: Option<&str>) -> String {
    let hash = llmtap::config::token_sha256_hex(token);
    let tenant = tenant
        .map(|t| format!("tenant = \"{t}\"\n"))
        .unwrap_or_default();
    format!("[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nrole = \"{role}\"\n{tenant}")
}

async fn get(running: &llmtap::server::Running, path: &str, token: &str) -> Got {
    let auth = format!("Bearer {token}");
    send(
        running.api_addr,
        "GET",
        path,
        &[("authorization", &auth)],
        "",
    )
    .await
}

/// A chat completion answered with the model the request named.
fn echo_model(seen: &SeenRequest) -> MockResponse {
    let request: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
    let model = request["model"].as_str().unwrap_or("unknown");
    MockResponse::json(
        200,
        &format!(
            r#"{{"id":"x","object":"chat.completion","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}}}"#
        ),
    )
}

async fn chat_as(
    running: &llmtap::server::Running,
    tenant: &str,
    model: &str,
    secret_text: &str,
) -> Got {
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"system","content":"{secret_text}"}},{{"role":"user","content":"hi"}}]}}"#
    );
    let got = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[
            ("x-llmtap-tenant", tenant),
            ("x-llmtap-invocation-id", "shared-run-1"),
            ("x-llmtap-session-id", "shared-session"),
            ("x-llmtap-agent", "bot"),
        ],
        &body,
    )
    .await;
    assert_eq!(got.status, 200);
    got
}

#[tokio::test]
async fn tenants_that_pick_the_same_invocation_and_session_ids_never_share_them() {
    let mock = MockUpstream::start(echo_model).await;
    let dir = TempDir::new("tenants");
    let toml = [
        provider_toml("mock", "openai", &mock.url()),
        token_toml("root", "admin-token", "admin", None),
        token_toml("acme-admin", "acme-token", "admin", Some("acme")),
    ]
    .concat();
    let running = start_llmtap(test_config(dir.path(), &toml)).await;

    // acme watches its live stream while both tenants call with the same ids.
    let request = http::Request::get(format!(
        "http://{}/api/v1/stream?type=invocations",
        running.api_addr
    ))
    .header("authorization", "Bearer acme-token")
    .body(http_body_util::Full::new(Bytes::new()))
    .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();

    let acme = chat_as(&running, "acme", "acme-model", "acme system prompt").await;
    wait_call(&running, &acme.call_id()).await;
    let globex = chat_as(&running, "globex", "globex-model", "globex secret prompt").await;
    wait_call(&running, &globex.call_id()).await;
    // A second acme round after globex's call: its invocation event must be acme's alone.
    let acme2 = chat_as(&running, "acme", "acme-model", "acme system prompt").await;
    wait_call(&running, &acme2.call_id()).await;
    wait_invocation(&running, "shared-run-1@acme", 2).await;
    wait_invocation(&running, "shared-run-1@globex", 1).await;
    assert_eq!(
        acme.header("x-llmtap-invocation-id"),
        Some("shared-run-1@acme")
    );

    // The acme-confined admin reads its own run under the id it chose, and nothing of globex's.
    let got = get(&running, "/api/v1/invocations/shared-run-1", "acme-token").await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    let text = String::from_utf8_lossy(&got.body).to_string();
    assert!(!text.contains("globex"), "acme reads globex's call: {text}");
    let inv = got.json();
    assert_eq!(inv["round_count"], 2);
    assert_eq!(inv["models"], serde_json::json!(["acme-model"]));
    assert_eq!(inv["calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        get(
            &running,
            "/api/v1/invocations/shared-run-1@globex",
            "acme-token"
        )
        .await
        .status,
        403
    );
    assert_eq!(
        get(
            &running,
            "/api/v1/invocations/shared-run-1?tenant=globex",
            "acme-token"
        )
        .await
        .status,
        403
    );

    // The list's models and the session totals are per tenant too.
    let list = get(&running, "/api/v1/invocations", "acme-token")
        .await
        .json();
    assert_eq!(list["count"], 1);
    assert_eq!(
        list["items"][0]["models"],
        serde_json::json!(["acme-model"])
    );
    let session = get(&running, "/api/v1/sessions/shared-session", "acme-token").await;
    assert_eq!(session.status, 200);
    let session = session.json();
    assert_eq!(session["calls"], 2);
    assert_eq!(session["input_tokens"], 10);
    assert_eq!(session["timeline"].as_array().unwrap().len(), 2);
    let calls = get(
        &running,
        "/api/v1/calls?session_id=shared-session",
        "acme-token",
    )
    .await
    .json();
    assert_eq!(calls["count"], 2);

    // An unconfined admin sees each tenant's run separately.
    let all = get(&running, "/api/v1/invocations", "admin-token")
        .await
        .json();
    let mut ids: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["shared-run-1@acme", "shared-run-1@globex"]);
    let ambiguous = get(&running, "/api/v1/invocations/shared-run-1", "admin-token").await;
    assert_eq!(ambiguous.status, 409);
    let theirs = get(
        &running,
        "/api/v1/invocations/shared-run-1?tenant=globex",
        "admin-token",
    )
    .await
    .json();
    assert_eq!(theirs["models"], serde_json::json!(["globex-model"]));
    assert_eq!(theirs["round_count"], 1);
    let theirs = get(
        &running,
        "/api/v1/sessions/shared-session@globex",
        "admin-token",
    )
    .await
    .json();
    assert_eq!(theirs["calls"], 1);

    // The live stream never carried globex's call to acme.
    let mut seen = String::new();
    while seen.matches("event: invocation").count() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), stream.frame())
            .await
            .expect("no stream event")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }
    assert!(
        !seen.contains("globex"),
        "acme's stream shows globex: {seen}"
    );
    running.shutdown().await.unwrap();
}
