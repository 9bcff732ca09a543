//! Recorded provider exchanges replayed through llmtap: the client gets the bytes
//! the provider sent, unchanged, and the mock gets the bytes the client sent.

use super::util::*;
use bytes::Bytes;
use std::time::Duration;

fn kind_of(provider: &str) -> &'static str {
    match provider {
        "anthropic" => "anthropic",
        "gemini" => "gemini",
        _ => "openai",
    }
}

/// Every fixture, so a new one is covered without editing this test.
fn fixture_names() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exchanges");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn fixtures_replay_byte_for_byte() {
    let names = fixture_names();
    assert!(names.len() >= 5);
    for name in names {
        let fx = fixture(&name);
        let response = &fx["response"];
        let body = response["body"].as_str().unwrap().to_string();
        let status = response["status"].as_u64().unwrap() as u16;
        let mut headers = fixture_response_headers(&fx);
        headers.sort();
        let is_sse = headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.contains("event-stream"));
        let steps: Vec<Step> = if is_sse {
            sse_events(&body)
                .into_iter()
                .flat_map(|e| {
                    [
                        Step::Data(Bytes::from(e)),
                        Step::Sleep(Duration::from_millis(1)),
                    ]
                })
                .collect()
        } else {
            vec![Step::Data(Bytes::from(body.clone()))]
        };
        let script = MockResponse {
            status,
            headers: headers.clone(),
            steps,
            delay_head: Duration::ZERO,
        };
        let mock = MockUpstream::start(move |_| script.clone()).await;
        let dir = TempDir::new("replay");
        let provider = fx["provider"].as_str().unwrap();
        let running = start_llmtap(test_config(
            dir.path(),
            &provider_toml("up", kind_of(provider), &mock.url()),
        ))
        .await;
        let url: http::Uri = fixture_url(&fx);
        let path = format!("/up{}", url.path_and_query().unwrap());
        let request_body = fx["request"]["body"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut request_headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(h) = fx["request"]["headers"].as_object() {
            for key in ["anthropic-version", "user-agent", "traceparent"] {
                if let Some(v) = h.get(key).and_then(|v| v.as_str()) {
                    request_headers.push((key, v));
                }
            }
        }
        let got = send(
            running.proxy_addr,
            "POST",
            &path,
            &request_headers,
            &request_body,
        )
        .await;
        assert_eq!(got.status, status, "{name}");
        assert_eq!(got.body, Bytes::from(body.clone()), "{name}: body differs");
        for (k, v) in &headers {
            if k == "set-cookie" || k == "date" {
                continue;
            }
            assert_eq!(got.header(k), Some(v.as_str()), "{name}: header {k}");
        }
        let seen = mock.last_seen();
        assert_eq!(
            seen.path_and_query,
            url.path_and_query().unwrap().as_str(),
            "{name}"
        );
        let call = wait_call(&running, &got.call_id()).await;
        assert_eq!(
            call.response_body.as_deref(),
            Some(body.as_str()),
            "{name}: captured copy differs"
        );
        assert_eq!(call.http_status, Some(status));
        running.shutdown().await.unwrap();
    }
}
