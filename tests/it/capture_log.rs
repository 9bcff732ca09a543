//! The capture log holds seconds of calls, not segments of applied ones: after a
//! burst and a quiet moment it holds no record, under steady traffic it drops what
//! the store has applied while calls go on arriving, and a restart loses nothing.

use super::util::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes of the log's segment files.
fn segment_bytes(journal: &Path) -> u64 {
    std::fs::read_dir(journal)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

/// The log's end position: the newest segment's name (its first position) plus its length.
fn log_end(journal: &Path) -> u64 {
    std::fs::read_dir(journal)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let start: u64 = name.strip_suffix(".log")?.parse().ok()?;
            Some(start + entry.metadata().unwrap().len())
        })
        .max()
        .unwrap_or(0)
}

/// Whether any segment file holds `marker`.
fn in_log(journal: &Path, marker: &str) -> bool {
    std::fs::read_dir(journal)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".log"))
        .any(|path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
        })
}

fn body(marker: &str) -> String {
    format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{marker} {}"}}]}}"#,
        "filler ".repeat(100)
    )
}

#[tokio::test]
async fn after_a_burst_and_a_quiet_moment_the_log_holds_no_applied_record() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"usage":{}}"#)).await;
    let dir = TempDir::new("log-burst");
    let config = || test_config(dir.path(), &provider_toml("oa", "openai", &mock.url()));
    let running = start_llmtap(config()).await;
    let journal = dir.path().join("journal");
    let mut sends = Vec::new();
    for i in 0..200 {
        let addr = running.proxy_addr;
        sends.push(tokio::spawn(async move {
            post_json(
                addr,
                "/oa/v1/chat/completions",
                &[],
                &body(&format!("burst-{i}")),
            )
            .await
            .call_id()
        }));
    }
    let mut ids = Vec::new();
    for send in sends {
        ids.push(send.await.unwrap());
    }
    wait_records(&running, ids.len()).await;
    assert!(
        segment_bytes(&journal) > 200 * 700,
        "the burst went through the log"
    );
    // Quiet: within seconds the log holds nothing but an empty active segment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while segment_bytes(&journal) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} bytes of applied calls still in the capture log after 10 s",
            segment_bytes(&journal)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown().await.unwrap();
    let running = start_llmtap(config()).await;
    let mut stored = running.store.call_ids().unwrap();
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids, "a restart keeps every call");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn under_steady_traffic_applied_calls_leave_the_log_within_seconds() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"usage":{}}"#)).await;
    let dir = TempDir::new("log-steady");
    let config = || test_config(dir.path(), &provider_toml("oa", "openai", &mock.url()));
    let running = start_llmtap(config()).await;
    let journal = dir.path().join("journal");
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut first_gone = None;
    // A call every 50 ms: the log is never quiet long enough to be sealed as idle,
    // so only segments closed by age can take the first calls away.
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(14) {
        let marker = format!("steady-{i:04}-");
        ids.push(
            post_json(
                running.proxy_addr,
                "/oa/v1/chat/completions",
                &[],
                &body(&marker),
            )
            .await
            .call_id(),
        );
        i += 1;
        if first_gone.is_none() && !(0..10).any(|j| in_log(&journal, &format!("steady-{j:04}-"))) {
            first_gone = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_at =
        first_gone.expect("the first calls were still in the capture log after 14 s of traffic");
    assert!(
        gone_at < Duration::from_secs(10),
        "first calls left the log only after {gone_at:?}"
    );
    // The latest calls are still there, and the log holds seconds of traffic, not all of it.
    assert!(in_log(&journal, &format!("steady-{:04}-", i - 1)));
    let (held, logged) = (segment_bytes(&journal), log_end(&journal));
    assert!(held > 0);
    assert!(
        held < logged / 2,
        "the log holds {held} of the {logged} bytes logged for {} calls",
        ids.len()
    );
    wait_records(&running, ids.len()).await;
    running.shutdown().await.unwrap();
    let running = start_llmtap(config()).await;
    let mut stored = running.store.call_ids().unwrap();
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids, "a restart keeps every call");
    running.shutdown().await.unwrap();
}
