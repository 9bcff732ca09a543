//! `llmtap mcp -- COMMAND ARGS...`: runs a stdio MCP server as a child and records
//! its exchanges.
//!
//! stdin, stdout and stderr pass through unchanged: every chunk is written on as soon
//! as it is read (partial lines included), and stderr is the child's own. On the side,
//! the JSON-RPC lines are paired by id (a client request with the server's answer; a
//! server request, such as `sampling/createMessage` or `roots/list`, with the
//! client's answer; notifications of either side alone) and each exchange is reported to a running llmtap's read API
//! (`POST /api/v1/ingest/mcp`, `llmtap::ingest`) by a thread of its own, through a
//! bounded queue: a slow or absent llmtap never slows the server. If llmtap cannot be
//! reached, the wrapper says so once on stderr and the server goes on unrecorded.

use super::ApiArgs;
use anyhow::Context;
use llmtap::ingest::McpReport;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variables that group the wrapped server's exchanges, and the
/// `x-llmtap-*` headers they become.
pub const GROUPING_ENV: &[(&str, &str)] = &[
    ("LLMTAP_INVOCATION_ID", "x-llmtap-invocation-id"),
    ("LLMTAP_SESSION_ID", "x-llmtap-session-id"),
    ("LLMTAP_AGENT", "x-llmtap-agent"),
];

/// Bytes of one JSON-RPC line kept for the record (the line itself always passes
/// through whole).
const MAX_LINE: usize = 4 << 20;
/// Exchanges waiting for an answer at most (per side); past it the oldest is reported
/// unanswered.
const MAX_PENDING: usize = 10_000;
/// Reports queued for the reporter thread at most; past it they are dropped (counted).
const MAX_QUEUED_REPORTS: usize = 1024;
/// After llmtap could not be reached, reports are dropped for this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Runs `command` under capture; returns the child's exit code.
pub fn run(api: &ApiArgs, name: Option<&str>, command: &[String]) -> anyhow::Result<i32> {
    let (program, args) = command
        .split_first()
        .context("give the server's command after --, e.g. llmtap mcp -- npx some-server")?;
    let server = name
        .map(str::to_string)
        .unwrap_or_else(|| server_name(program));
    let mut child = spawn(program, args)?;
    let child_stdin = child
        .stdin
        .take()
        .context("no pipe to the server's stdin")?;
    let child_stdout = child
        .stdout
        .take()
        .context("no pipe from the server's stdout")?;

    let session_id = llmtap::ids::new_id("stdio_", llmtap::timefmt::now_unix_us());
    let (reports, queue) = sync_channel::<McpReport>(MAX_QUEUED_REPORTS);
    let reporter = Reporter::new(api, grouping_headers())?;
    let reporter_thread = std::thread::spawn(move || reporter.run(queue));
    let pairing = Arc::new(Mutex::new(Pairing {
        server,
        session_id,
        pending: Waiting::default(),
        server_pending: Waiting::default(),
        early_server_answers: EarlyAnswers::default(),
        early_client_answers: EarlyAnswers::default(),
        reports: Some(reports),
        dropped: 0,
    }));

    let to_server = {
        let pairing = pairing.clone();
        std::thread::spawn(move || {
            // At the client's end of input the child's stdin is dropped (closed), which
            // tells the server the client is gone.
            pump(std::io::stdin().lock(), child_stdin, |line, at| {
                if let Ok(mut p) = pairing.lock() {
                    p.client_line(line, at);
                }
            })
        })
    };
    let from_server = pump(child_stdout, std::io::stdout().lock(), |line, at| {
        if let Ok(mut p) = pairing.lock() {
            p.server_line(line, at);
        }
    });
    let status = child.wait().context("cannot wait for the server")?;
    if let Ok(mut p) = pairing.lock() {
        p.server_exited();
        // The queue's last sender: the reporter ends once it has sent what is queued.
        p.reports = None;
    }
    // The client side may still be blocked reading our stdin; it ends with the process.
    drop(to_server);
    if let Err(e) = from_server {
        eprintln!("llmtap mcp: reading the server's output failed: {e}");
    }
    let dropped = pairing.lock().map(|p| p.dropped).unwrap_or(0);
    if dropped > 0 {
        eprintln!(
            "llmtap mcp: {dropped} exchange(s) not recorded (llmtap was slower than the server)"
        );
    }
    // Give queued reports a moment to go out; never hold the exit long.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !reporter_thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(status.code().unwrap_or(1))
}

/// The name a server is recorded under without `--name`: its program's file name.
fn server_name(program: &str) -> String {
    let base = std::path::Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() {
        llmtap::ingest::DEFAULT_STDIO_SERVER.to_string()
    } else {
        clean
    }
}

fn spawn(program: &str, args: &[String]) -> anyhow::Result<std::process::Child> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; the closure touches nothing else. The
        // server dies with the wrapper instead of outliving the client that started it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    command
        .spawn()
        .with_context(|| format!("cannot start the MCP server {program}"))
}

/// The `x-llmtap-*` headers from the grouping environment variables.
fn grouping_headers() -> Vec<(&'static str, String)> {
    GROUPING_ENV
        .iter()
        .filter_map(|(var, header)| {
            let value = std::env::var(var).ok()?;
            let value = value.trim().to_string();
            (!value.is_empty()).then_some((*header, value))
        })
        .collect()
}

/// Copies `from` to `to` chunk by chunk, flushing each, and calls `on_line` with each
/// complete line (at most `MAX_LINE` bytes of it; a longer one is not reported) and
/// the time its last byte was read.
fn pump(
    from: impl Read,
    mut to: impl Write,
    mut on_line: impl FnMut(&[u8], Instant),
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, from);
    let mut line: Vec<u8> = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        let read = chunk.len();
        // When it was read: the other side may answer before this side's callback runs.
        let at = Instant::now();
        to.write_all(chunk)?;
        to.flush()?;
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            if !too_long {
                if line.len() + piece.len() > MAX_LINE {
                    too_long = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(piece);
                }
            }
            if piece.ends_with(b"\n") {
                if !too_long {
                    on_line(&line, at);
                }
                line.clear();
                too_long = false;
            }
        }
        reader.consume(read);
    }
}

/// A request waiting for the other side's answer.
struct Pending {
    request: String,
    started_at_us: u64,
    started: Instant,
}

/// One side's requests waiting for an answer, by JSON-RPC id (the two sides number
/// their requests independently), oldest first.
#[derive(Default)]
struct Waiting {
    by_id: HashMap<String, Pending>,
    order: std::collections::VecDeque<String>,
}

impl Waiting {
    /// Adds a request; returns the oldest when the table was full.
    fn add(&mut self, id: String, pending: Pending) -> Option<Pending> {
        let evicted = if self.by_id.len() >= MAX_PENDING {
            self.order.pop_front().and_then(|o| self.by_id.remove(&o))
        } else {
            None
        };
        self.order.push_back(id.clone());
        self.by_id.insert(id, pending);
        evicted
    }

    fn answered(&mut self, id: &str) -> Option<Pending> {
        let pending = self.by_id.remove(id)?;
        self.order.retain(|o| o != id);
        Some(pending)
    }

    fn drain(&mut self) -> Vec<Pending> {
        self.order.clear();
        self.by_id.drain().map(|(_, p)| p).collect()
    }
}

/// The messages of one JSON-RPC line (a message or a batch).
fn messages_of(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// The id of the first answer among `messages` (an id, and no method: a request has
/// both).
fn answer_id(messages: &[&Value]) -> Option<String> {
    messages
        .iter()
        .find(|m| m.get("method").is_none())
        .and_then(|m| m.get("id"))
        .map(Value::to_string)
}

/// Answers that came before the request they answer was seen: the request is written
/// to the other side before it is read for the record, and a quick peer answers in
/// that moment. Kept a short while (`EARLY_ANSWER_TTL`), a few at most.
#[derive(Default)]
struct EarlyAnswers {
    answers: std::collections::VecDeque<(String, String, Instant)>,
}

const EARLY_ANSWER_TTL: Duration = Duration::from_secs(5);
const MAX_EARLY_ANSWERS: usize = 64;

impl EarlyAnswers {
    fn add(&mut self, id: String, text: String, at: Instant) {
        if self.answers.len() >= MAX_EARLY_ANSWERS {
            self.answers.pop_front();
        }
        self.answers.push_back((id, text, at));
    }

    /// The answer to request `id`, seen at `at` or just before.
    fn take(&mut self, id: &str, at: Instant) -> Option<(String, Instant)> {
        self.answers
            .retain(|(_, _, seen)| at.saturating_duration_since(*seen) < EARLY_ANSWER_TTL);
        let position = self.answers.iter().position(|(i, _, _)| i == id)?;
        self.answers
            .remove(position)
            .map(|(_, text, seen)| (text, seen))
    }
}

/// Pairs each side's requests with the other side's answers by JSON-RPC id.
struct Pairing {
    server: String,
    session_id: String,
    /// The client's requests, waiting for the server.
    pending: Waiting,
    /// The server's requests, waiting for the client.
    server_pending: Waiting,
    /// The server's answers to client requests not yet seen, and the client's to
    /// server requests not yet seen.
    early_server_answers: EarlyAnswers,
    early_client_answers: EarlyAnswers,
    reports: Option<SyncSender<McpReport>>,
    dropped: u64,
}

impl Pairing {
    fn client_line(&mut self, line: &[u8], at: Instant) {
        self.line(line, at, false);
    }

    fn server_line(&mut self, line: &[u8], at: Instant) {
        self.line(line, at, true);
    }

    /// One line of either side: requests wait for the other side's answer,
    /// notifications are reported at once, and an answer completes the other side's
    /// request it names.
    fn line(&mut self, line: &[u8], at: Instant, from_server: bool) {
        let Some(text) = json_rpc_text(line) else {
            return;
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let now_us = llmtap::timefmt::now_unix_us();
        let messages = messages_of(&value);
        if let Some(id) = answer_id(&messages) {
            let (theirs, early) = if from_server {
                (&mut self.pending, &mut self.early_server_answers)
            } else {
                (&mut self.server_pending, &mut self.early_client_answers)
            };
            match theirs.answered(&id) {
                Some(p) => {
                    let duration = at.saturating_duration_since(p.started);
                    // The answered request was the other side's.
                    self.report(
                        p.request,
                        text,
                        p.started_at_us,
                        duration,
                        false,
                        !from_server,
                    );
                }
                None => early.add(id, text, at),
            }
            return;
        }
        let requests: Vec<&Value> = messages
            .iter()
            .copied()
            .filter(|m| m.get("method").is_some())
            .collect();
        let Some(first) = requests.iter().find(|m| m.get("id").is_some()) else {
            // Notifications (no answer comes): reported at once.
            if !requests.is_empty() {
                self.report(
                    text,
                    String::new(),
                    now_us,
                    Duration::ZERO,
                    false,
                    from_server,
                );
            }
            return;
        };
        let Some(id) = first.get("id").map(Value::to_string) else {
            return;
        };
        let (ours, early) = if from_server {
            (&mut self.server_pending, &mut self.early_client_answers)
        } else {
            (&mut self.pending, &mut self.early_server_answers)
        };
        if let Some((answer, answered_at)) = early.take(&id, at) {
            let duration = answered_at.saturating_duration_since(at);
            self.report(text, answer, now_us, duration, false, from_server);
            return;
        }
        let pending = Pending {
            request: text,
            started_at_us: now_us,
            started: at,
        };
        if let Some(p) = ours.add(id, pending) {
            let duration = at.saturating_duration_since(p.started);
            self.report(
                p.request,
                String::new(),
                p.started_at_us,
                duration,
                false,
                from_server,
            );
        }
    }

    fn server_exited(&mut self) {
        let now = Instant::now();
        for (waiting, from_server) in [
            (self.pending.drain(), false),
            (self.server_pending.drain(), true),
        ] {
            for p in waiting {
                let duration = now.saturating_duration_since(p.started);
                self.report(
                    p.request,
                    String::new(),
                    p.started_at_us,
                    duration,
                    true,
                    from_server,
                );
            }
        }
    }

    fn report(
        &mut self,
        request: String,
        response: String,
        started_at_us: u64,
        duration: Duration,
        server_exited: bool,
        from_server: bool,
    ) {
        let report = McpReport {
            server: self.server.clone(),
            session_id: self.session_id.clone(),
            started_at_us,
            duration_us: duration.as_micros() as u64,
            request,
            response,
            server_exited,
            from_server,
        };
        let Some(reports) = &self.reports else {
            return;
        };
        match reports.try_send(report) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped += 1;
            }
        }
    }
}

/// A line's text without its line break, if it looks like JSON-RPC.
fn json_rpc_text(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    let trimmed = text.trim_start();
    (trimmed.starts_with('{') || trimmed.starts_with('[')).then(|| text.to_string())
}

/// Posts reports to llmtap, one at a time, off the pass-through path.
struct Reporter {
    http: reqwest::blocking::Client,
    url: String,
    token: Option<String>,
    headers: Vec<(&'static str, String)>,
}

impl Reporter {
    fn new(api: &ApiArgs, headers: Vec<(&'static str, String)>) -> anyhow::Result<Reporter> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("llmtap-mcp/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Reporter {
            http,
            url: format!("{}/api/v1/ingest/mcp", api.api.trim_end_matches('/')),
            token: api.token.clone().filter(|t| !t.is_empty()),
            headers,
        })
    }

    fn run(self, queue: Receiver<McpReport>) {
        let mut said_off = false;
        let mut paused_until: Option<Instant> = None;
        for report in queue {
            if paused_until.is_some_and(|until| Instant::now() < until) {
                continue;
            }
            paused_until = None;
            let Ok(body) = serde_json::to_vec(&report) else {
                continue;
            };
            let mut request = self
                .http
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            for (name, value) in &self.headers {
                request = request.header(*name, value);
            }
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let problem = match request.send() {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!(
                    "llmtap at {} answered {}: {}",
                    self.url,
                    response.status(),
                    response.text().unwrap_or_default()
                )),
                Err(e) => Some(format!("cannot reach llmtap at {} ({e})", self.url)),
            };
            if let Some(problem) = problem {
                paused_until = Some(Instant::now() + RETRY_AFTER);
                if !said_off {
                    said_off = true;
                    eprintln!(
                        "llmtap mcp: capture is off: {problem}; the MCP server runs unrecorded (set --api or LLMTAP_API_URL, --token or LLMTAP_API_TOKEN)"
                    );
                }
            }
        }
    }
}
