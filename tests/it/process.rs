//! The real binary as a process: signals, price reloads, crash recovery.

use super::util::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    pub proxy: SocketAddr,
    pub api: SocketAddr,
}

/// Starts `llmtap serve` and reads the bound addresses from its first stdout line.
pub fn spawn_llmtap(config: &Path, data_dir: &Path, extra: &[&str]) -> Proc {
    let mut command = Command::new(env!("CARGO_BIN_EXE_llmtap"));
    command
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("LLMTAP_LOG", "warn")
        .stderr(Stdio::inherit());
    spawn_command(command)
}

/// Runs a command that starts `llmtap serve` (its stderr as the caller set it) and
/// reads the bound addresses from its first stdout line.
pub fn spawn_command(mut command: Command) -> Proc {
    let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addrs: Vec<SocketAddr> = line
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("http://"))
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(addrs.len(), 2, "unexpected first line: {line}");
    Proc {
        child,
        proxy: addrs[0],
        api: addrs[1],
    }
}

impl Drop for Proc {
    /// A failed test must not leave llmtap running (it would hold the test's stderr open).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGTERM, then waits for the process to exit (graceful stop).
pub fn terminate(child: &mut Child) {
    signal(child, "TERM");
    let _ = child.wait();
}

pub fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("llmtap.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n{extra}"),
    )
    .unwrap();
    path
}

async fn call_cost(api: SocketAddr, id: &str) -> serde_json::Value {
    for _ in 0..300 {
        let got = send(api, "GET", &format!("/api/v1/calls/{id}"), &[], "").await;
        if got.status == 200 {
            return got.json();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("call {id} not recorded");
}

/// A mock answering 1M prompt tokens of `house-model`, a user price file pricing it at
/// $2/M input, and a config routing `openai` to the mock with that price file.
async fn house_model_setup(
    tag: &str,
) -> (
    MockUpstream,
    TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let mock = MockUpstream::start(|_| {
        MockResponse::json(200, r#"{"model":"house-model","choices":[],"usage":{"prompt_tokens":1000000,"completion_tokens":0,"total_tokens":1000000}}"#)
    })
    .await;
    let dir = TempDir::new(tag);
    let prices = dir.path().join("prices.toml");
    std::fs::write(
        &prices,
        "[models.openai]\n\"house-model\" = { input = \"2\", output = \"4\" }\n",
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[prices]\nfile = \"{}\"\n{}",
            prices.display(),
            provider_toml("openai", "openai", &mock.url())
        ),
    );
    (mock, dir, prices, config)
}

#[tokio::test]
async fn sighup_reloads_prices_and_keeps_the_last_good_table() {
    let (_mock, dir, prices, config) = house_model_setup("sighup").await;
    let mut proc = spawn_llmtap(&config, &dir.path().join("data"), &[]);
    let body = r#"{"model":"house-model","messages":[]}"#;
    let first = post_json(proc.proxy, "/openai/v1/chat/completions", &[], body).await;
    assert_eq!(call_cost(proc.api, &first.call_id()).await["cost_usd"], 2.0);

    std::fs::write(
        &prices,
        "[models.openai]\n\"house-model\" = { input = \"3\", output = \"4\" }\n",
    )
    .unwrap();
    signal(&proc.child, "HUP");
    let mut reloaded = false;
    for _ in 0..100 {
        let got = post_json(proc.proxy, "/openai/v1/chat/completions", &[], body).await;
        if call_cost(proc.api, &got.call_id()).await["cost_usd"] == 3.0 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "SIGHUP did not reload the price file");

    std::fs::write(&prices, "this is = not [ toml").unwrap();
    signal(&proc.child, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_bad = post_json(proc.proxy, "/openai/v1/chat/completions", &[], body).await;
    assert_eq!(
        call_cost(proc.api, &after_bad.call_id()).await["cost_usd"],
        3.0
    );

    signal(&proc.child, "TERM");
    let status = proc.child.wait().unwrap();
    assert!(status.success(), "graceful stop exited with {status}");
}

/// Waits until the API answers `/readyz` 200 (the store is open).
pub(super) async fn wait_ready(api: SocketAddr) {
    // Generous: on a loaded 2-core machine a debug build's store takes seconds to open.
    for _ in 0..6000 {
        if send(api, "GET", "/readyz", &[], "").await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("llmtap never became ready");
}

/// Restarts llmtap on `data` (which replays the capture log's unapplied tail) and
/// stops it gracefully, so the store holds everything the log held.
async fn replay_and_stop(config: &Path, data: &Path) {
    let mut proc = spawn_llmtap(config, data, &[]);
    wait_ready(proc.api).await;
    signal(&proc.child, "TERM");
    let status = proc.child.wait().unwrap();
    assert!(
        status.success(),
        "the replaying llmtap exited with {status}"
    );
}

#[tokio::test]
async fn kill_9_loses_at_most_the_calls_of_the_last_10_ms() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"ok":true}"#)).await;
    let dir = TempDir::new("crash");
    let config = write_config(dir.path(), &provider_toml("mock", "openai", &mock.url()));
    let data = dir.path().join("data");
    let mut proc = spawn_llmtap(&config, &data, &[]);
    let addr = proc.proxy;
    let start = Instant::now();
    let stop_at = start + Duration::from_millis(1500);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let client = client();
            while Instant::now() < stop_at + Duration::from_millis(500) {
                let request =
                    http::Request::post(format!("http://{addr}/mock/v1/chat/completions"))
                        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                        .unwrap();
                match client.request(request).await {
                    Ok(r) => {
                        let id = r.headers()["x-llmtap-call-id"]
                            .to_str()
                            .unwrap()
                            .to_string();
                        got.push((id, Instant::now()));
                    }
                    Err(_) => break,
                }
            }
            got
        }));
    }
    tokio::time::sleep_until(stop_at.into()).await;
    let backlog = metric(proc.api, "llmtap_backlog").await.unwrap_or(0);
    let kill_sent = Instant::now();
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert!(answered.len() > 100, "load too small: {}", answered.len());

    // The store opens without repair errors after the crash.
    drop(
        llmtap::store::Store::open(&data, 64 << 20, 100)
            .expect("store does not reopen after kill -9"),
    );
    let replay_started = Instant::now();
    replay_and_stop(&config, &data).await;
    let replayed_in = replay_started.elapsed();
    let store = llmtap::store::Store::open(&data, 64 << 20, 100).unwrap();
    let missing: Vec<&(String, Instant)> = answered
        .iter()
        .filter(|(id, _)| store.get_call(id).unwrap().is_none())
        .collect();
    // Bound: a call is in the log a moment after its answer (the log thread's group
    // commit); only answers of the last 10 ms before the kill may be missing.
    let window = Duration::from_millis(10);
    let recent = answered
        .iter()
        .filter(|(_, at)| *at + window >= kill_sent)
        .count();
    eprintln!(
        "kill -9: {} answered, {} missing, {recent} answered in the last {window:?}; writer backlog at the kill {backlog}; restart and replay {replayed_in:?}",
        answered.len(),
        missing.len(),
    );
    assert!(
        missing.len() <= recent,
        "{} missing, more than the {recent} answered in the last {window:?}",
        missing.len()
    );
    // Each answered call is stored once.
    let ids: std::collections::HashSet<&String> = answered.iter().map(|(id, _)| id).collect();
    assert_eq!(store.call_count(), store.call_ids().unwrap().len());
    assert!(store.call_count() >= ids.len() - missing.len());
}

/// A crash with records only in the capture log (the store never opened), its last
/// record torn: restarts apply everything before the torn record exactly once, with
/// the right round numbers, also when the applied position is lost.
#[tokio::test]
async fn records_only_in_the_log_survive_kill_9_and_a_torn_tail_is_skipped() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"ok":true}"#)).await;
    let dir = TempDir::new("logonly");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Holding the store keeps llmtap's open waiting (up to three seconds), as a slow
    // open would: meanwhile it forwards, and its records are in the log only.
    let holder = llmtap::store::Store::open(&data, 16 << 20, 50).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (proxy, api) = (free(), free());
    let fixed = dir.path().join("fixed.toml");
    std::fs::write(
        &fixed,
        format!(
            "[server]\nlisten = \"{proxy}\"\napi_listen = \"{api}\"\n{}",
            provider_toml("mock", "openai", &mock.url())
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_llmtap"))
        .arg("serve")
        .arg("--config")
        .arg(&fixed)
        .arg("--data-dir")
        .arg(&data)
        .env("LLMTAP_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Killed on drop if the test fails early.
    let mut first = Proc { child, proxy, api };
    let mut listening = false;
    for _ in 0..2000 {
        if tokio::net::TcpStream::connect(proxy).await.is_ok() {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(listening, "the proxy never listened");
    let inv = [("x-llmtap-invocation-id", "inv-crash")];
    let mut ids = Vec::new();
    for _ in 0..20 {
        let got = post_json(proxy, "/mock/v1/chat/completions", &inv, "{}").await;
        assert_eq!(got.status, 200);
        ids.push(got.call_id());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // llmtap waits up to three seconds for the store it cannot open, then gives up
    // (its records stay in the log either way). Normally the kill comes first.
    if first.child.try_wait().unwrap().is_none() {
        assert_eq!(
            send(api, "GET", "/readyz", &[], "").await.status,
            503,
            "the store opened before the crash"
        );
        first.child.kill().unwrap();
    } else {
        eprintln!("llmtap gave up opening the held store before the kill");
    }
    first.child.wait().unwrap();
    drop(first);
    drop(holder);

    // Tear the last record, as a crash in the middle of its write would.
    let journal = data.join("journal");
    let last = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    assert!(len > 20 * 200, "the log holds the calls: {len} B");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 9)
        .unwrap();

    let config = write_config(dir.path(), &provider_toml("mock", "openai", &mock.url()));
    let check = |expected: usize| {
        let store = llmtap::store::Store::open(&data, 16 << 20, 50).unwrap();
        for id in &ids[..19] {
            assert!(store.get_call(id).unwrap().is_some(), "{id} not replayed");
        }
        assert!(
            store.get_call(&ids[19]).unwrap().is_none(),
            "the torn record was applied"
        );
        let calls = store.invocation_calls("inv-crash").unwrap();
        let mut rounds: Vec<u32> = calls.iter().map(|c| c.round).collect();
        rounds.sort_unstable();
        assert_eq!(rounds, (1..=expected as u32).collect::<Vec<_>>());
        assert_eq!(store.call_count(), expected);
        assert_eq!(
            store.get_invocation("inv-crash").unwrap().unwrap().rounds,
            expected as u32
        );
        store
    };
    // Restart: the tail is replayed while llmtap serves; new calls number on.
    let mut proc = spawn_llmtap(&config, &data, &[]);
    wait_ready(proc.api).await;
    for _ in 0..2 {
        let got = post_json(proc.proxy, "/mock/v1/chat/completions", &inv, "{}").await;
        assert_eq!(got.status, 200);
    }
    signal(&proc.child, "TERM");
    assert!(proc.child.wait().unwrap().success());
    let store = check(21);
    // A lost applied position (the batch reached the store, its position did not):
    // the replay skips what is stored, nothing is doubled.
    store.set_journal_applied(0).unwrap();
    store.flush().unwrap();
    drop(store);
    replay_and_stop(&config, &data).await;
    check(21);
}

#[tokio::test]
async fn reprice_recomputes_stored_costs_in_a_time_range() {
    let (_mock, dir, prices, config) = house_model_setup("reprice").await;
    let data = dir.path().join("data");
    let mut proc = spawn_llmtap(&config, &data, &[]);
    let body = r#"{"model":"house-model","messages":[]}"#;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let got = post_json(
            proc.proxy,
            "/openai/v1/chat/completions",
            &[("x-llmtap-invocation-id", "to-reprice")],
            body,
        )
        .await;
        assert_eq!(call_cost(proc.api, &got.call_id()).await["cost_usd"], 2.0);
        ids.push(got.call_id());
    }
    signal(&proc.child, "TERM");
    assert!(proc.child.wait().unwrap().success());

    // The price was wrong: fix the file and reprice today's calls.
    std::fs::write(
        &prices,
        "[models.openai]\n\"house-model\" = { input = \"2.5\", output = \"4\" }\n",
    )
    .unwrap();
    let today = llmtap::timefmt::format_date(llmtap::timefmt::now_unix_us());
    let tomorrow = llmtap::timefmt::format_date(llmtap::timefmt::now_unix_us() + 86_400_000_000);
    let run = |from: &str, to: &str| {
        Command::new(env!("CARGO_BIN_EXE_llmtap"))
            .args(["reprice", "--from", from, "--to", to, "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    // A window without calls changes nothing.
    let out = run("2020-01-01", "2020-01-02");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 calls examined, 0 changed"));
    let out = run(&today, &tomorrow);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("3 calls examined, 3 changed, 1 invocations updated"),
        "{text}"
    );

    let store = llmtap::store::Store::open(&data, 16 << 20, 100).unwrap();
    for id in &ids {
        let call = store.get_call(id).unwrap().unwrap();
        assert_eq!(call.cost_usd, Some(2.5));
        assert_eq!(call.cost.unwrap().total_pusd, 2_500_000_000_000);
    }
    let inv = store.get_invocation("to-reprice").unwrap().unwrap();
    assert_eq!(inv.cost_pusd, 3 * 2_500_000_000_000);
    assert_eq!(inv.rounds, 3);
}
