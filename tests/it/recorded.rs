//! One llmtap with recorded provider exchanges (tests/fixtures/exchanges) replayed
//! through it: the mock upstream answers each request with the recorded response of
//! the fixture the request names in `x-test-fixture`.
// A shared harness: each test uses part of it.
#![allow(dead_code)]

use super::util::*;
use llmtap::server::Running;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

// Shared by suites that may not use every field (the mock keeps serving while held).
#[allow(dead_code)]
pub struct Recorded {
    pub running: Running,
    _mock: MockUpstream,
    _dir: TempDir,
}

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

/// The recorded response of a fixture as a mock script (SSE split into events).
fn script(fx: &serde_json::Value) -> MockResponse {
    MockResponse {
        delay_head: Duration::ZERO,
        ..fixture_reply(fx, None, &[])
    }
}

fn kind_of(provider: &str) -> &'static str {
    match provider {
        "anthropic" => "anthropic",
        "gemini" => "gemini",
        _ => "openai",
    }
}

impl Recorded {
    /// llmtap with one provider per wire format (`openai`, `anthropic`, `gemini`), all
    /// pointing at a mock that replays the fixtures.
    pub async fn start(extra_toml: &str) -> Recorded {
        let extra = extra_toml.to_string();
        Recorded::start_with(move |_| extra).await
    }

    /// As `start`, with configuration that may name the mock's URL (a tool provider
    /// on the same mock).
    pub async fn start_with(extra_toml: impl FnOnce(&str) -> String) -> Recorded {
        let scripts: HashMap<String, MockResponse> = fixture_names()
            .into_iter()
            .map(|n| {
                let s = script(&fixture(&n));
                (n, s)
            })
            .collect();
        let scripts = Arc::new(scripts);
        let mock = MockUpstream::start(move |seen| {
            let name = seen
                .headers
                .get("x-test-fixture")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            scripts
                .get(name)
                .cloned()
                .unwrap_or_else(|| MockResponse::json(500, r#"{"error":"no such fixture"}"#))
        })
        .await;
        let dir = TempDir::new("recorded");
        let mut toml = String::new();
        for kind in ["openai", "anthropic", "gemini"] {
            toml.push_str(&provider_toml(kind, kind, &mock.url()));
        }
        toml.push_str(&extra_toml(&mock.url()));
        let running = start_llmtap(test_config(dir.path(), &toml)).await;
        Recorded {
            running,
            _mock: mock,
            _dir: dir,
        }
    }

    pub async fn shutdown(self) {
        self.running.shutdown().await.unwrap();
    }

    /// Sends fixture `name`'s request through the proxy with `headers` added, checks the
    /// client got the recorded status, and waits until the call is stored.
    pub async fn replay(&self, name: &str, headers: &[(&str, &str)]) -> Got {
        let fx = fixture(name);
        let provider = kind_of(fx["provider"].as_str().unwrap_or_default());
        let url = fixture_url(&fx);
        let path = format!("/{provider}{}", url.path_and_query().unwrap());
        let body = fx["request"]["body"].as_str().unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![
            ("content-type", "application/json"),
            ("x-test-fixture", name),
        ];
        if let Some(v) = fx["request"]["headers"]["anthropic-version"].as_str() {
            all.push(("anthropic-version", v));
        }
        all.extend_from_slice(headers);
        let got = send(self.running.proxy_addr, "POST", &path, &all, body).await;
        assert_eq!(
            Some(got.status as u64),
            fx["response"]["status"].as_u64(),
            "{name}"
        );
        wait_call(&self.running, &got.call_id()).await;
        got
    }

    /// A small agent history: a two-round tool run in a session, an image prompt,
    /// a streamed reply and a refused key, with agents, users and tasks set.
    pub async fn seed(&self) -> Seeded {
        let tool_run = "run-tools";
        let mut calls = Vec::new();
        for (i, name) in [
            "llm__test_tools__test_tool_use_basic__0.json",
            "llm__test_tools__test_tool_use_basic__1.json",
        ]
        .into_iter()
        .enumerate()
        {
            let got = self
                .replay(
                    name,
                    &[
                        ("x-llmtap-agent", "planner"),
                        ("x-llmtap-invocation-id", tool_run),
                        ("x-llmtap-session-id", "sess-1"),
                        ("x-llmtap-user-id", "alice"),
                        ("x-llmtap-trigger", "user"),
                        ("x-llmtap-prompt", "plan@v2"),
                    ],
                )
                .await;
            calls.push(got.call_id());
            if i == 0 {
                // Tool time between the rounds.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        wait_invocation(&self.running, tool_run, 2).await;
        let image = self
            .replay(
                "llm-anthropic__test_anthropic__test_image_prompt.json",
                &[
                    ("x-llmtap-agent", "describer"),
                    ("x-llmtap-trigger", "task"),
                ],
            )
            .await
            .call_id();
        let streamed = self
            .replay(
                "llm-anthropic__test_anthropic__test_stream_events_tool_calls.json",
                &[("x-llmtap-agent", "describer")],
            )
            .await
            .call_id();
        let refused = self
            .replay(
                "mirascope__test_authentication_error_stream__openai_gpt_4o_completions.json",
                &[
                    ("x-llmtap-agent", "planner"),
                    ("authorization", "Bearer sk-test-refused"),
                ],
            )
            .await
            .call_id();
        Seeded {
            tool_run: tool_run.to_string(),
            tool_calls: calls,
            image,
            streamed,
            refused,
        }
    }
}

/// The ids of what `Recorded::seed` stored.
#[allow(dead_code)]
pub struct Seeded {
    pub tool_run: String,
    pub tool_calls: Vec<String>,
    pub image: String,
    pub streamed: String,
    pub refused: String,
}

impl Seeded {
    #[allow(dead_code)]
    pub fn all_calls(&self) -> Vec<String> {
        let mut all = self.tool_calls.clone();
        all.extend([
            self.image.clone(),
            self.streamed.clone(),
            self.refused.clone(),
        ]);
        all
    }
}
