//! loadgen: open-loop HTTP/1.1 load driver for llmtap benchmarks (wrk2-style).
//!
//! Modes (first positional argument):
//!   run (default)   fixed request rate; latency measured from each request's
//!                   INTENDED send time (coordinated-omission corrected).
//!                   `--compare URL` (repeatable) interleaves requests to several
//!                   targets in one run and prints differences against `--url`.
//!   max-rate        searches for the highest rate with p99 below a limit and no
//!                   errors, for each target in turn.
//!   slow-streams    opens N concurrent streaming requests, holds them, and
//!                   samples the RSS of the given `--pid`s.
//!
//! `--cpu-pid name=PID` (run mode, repeatable) reports the CPU each process
//! used during the measured window and per request.
//!
//! Common flags: --url URL --compare URL... --names a,b,c --rate R (per target)
//!   --duration 20s --warmup 2s --connections 32 (per target) --body-size 1024
//!   --stream --threads 1 --timeout 30s --drain 5s --json --json-out FILE
//! max-rate: --start-rate 1000 --max-rate 100000 --p99-limit-ms 10 --steps 5
//! slow-streams: --streams 1000 --hold 20s --pid [name=]PID --events 2000
//!   --event-delay-ms 50 --open-batch 100

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use llmtap_bench::{die, read_rss_kb, Args, Histogram};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

#[derive(Clone)]
struct Target {
    name: String,
    url: String,
    authority: String,
    path: String,
    anthropic: bool,
    body: Bytes,
}

fn parse_target(name: String, url: &str, body_size: usize, stream: bool) -> Target {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| die(&format!("only http:// URLs are supported: {url}")));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let anthropic = path.ends_with("/v1/messages");
    Target {
        name,
        url: url.to_string(),
        authority: authority.to_string(),
        path: path.to_string(),
        anthropic,
        body: request_body(anthropic, body_size, stream),
    }
}

/// A realistic chat request padded to about `size` bytes.
fn request_body(anthropic: bool, size: usize, stream: bool) -> Bytes {
    let make = |text: &str| {
        let mut v = if anthropic {
            json!({"model": "claude-sonnet-4-20250514", "max_tokens": 1024,
                "system": "You are a helpful assistant.",
                "messages": [{"role": "user", "content": text}]})
        } else {
            json!({"model": "gpt-4o-mini", "temperature": 0.2,
                "messages": [{"role": "system", "content": "You are a helpful assistant."},
                             {"role": "user", "content": text}]})
        };
        if stream {
            v["stream"] = json!(true);
            if !anthropic {
                v["stream_options"] = json!({"include_usage": true});
            }
        }
        v.to_string()
    };
    let base = make("").len();
    let text: String = "Summarise the following benchmark paragraph, please. "
        .chars()
        .cycle()
        .take(size.saturating_sub(base))
        .collect();
    Bytes::from(make(&text))
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(authority: &str) -> Result<Sender, String> {
    let s = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn build_request(t: &Target, extra: &[(String, String)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(&t.path)
        .header("host", &t.authority)
        .header("content-type", "application/json")
        .header(
            "accept",
            if t.anthropic {
                "application/json"
            } else {
                "*/*"
            },
        )
        .header("user-agent", "llmtap-bench/0.1");
    if t.anthropic {
        b = b
            .header("x-api-key", "sk-ant-bench-000000000000")
            .header("anthropic-version", "2023-06-01");
    } else {
        b = b.header("authorization", "Bearer sk-bench-000000000000");
    }
    for (k, v) in extra {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(t.body.clone())).expect("request")
}

/// Outcome of one request; times are Instants.
struct Timing {
    sent: Instant,
    first_byte: Instant,
    done: Instant,
    bytes: usize,
    /// Transit of the first / last SSE event from the mock's write to our read,
    /// from the mock's `: sent_us=` stamps (microseconds, wall clock).
    first_transit: Option<u64>,
    last_transit: Option<u64>,
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Finds `: sent_us=DIGITS\n` stamps in `buf`.
fn stamps(buf: &[u8]) -> impl Iterator<Item = u64> + '_ {
    const PAT: &[u8] = b": sent_us=";
    let mut pos = 0;
    std::iter::from_fn(move || {
        while pos + PAT.len() <= buf.len() {
            let Some(off) = buf[pos..].windows(PAT.len()).position(|w| w == PAT) else {
                pos = buf.len();
                return None;
            };
            let start = pos + off + PAT.len();
            let len = buf[start..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            pos = start + len;
            if len > 0 && buf.get(start + len) == Some(&b'\n') {
                return std::str::from_utf8(&buf[start..start + len])
                    .ok()?
                    .parse()
                    .ok();
            }
        }
        None
    })
}

async fn one_request(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<Timing, String> {
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let sent = Instant::now();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut first_byte = None;
    let mut bytes = 0;
    let (mut first_transit, mut last_transit) = (None, None);
    let mut last_stamp = 0;
    // The tail of the previous frame, so a stamp split across frames is found.
    let mut carry: Vec<u8> = Vec::new();
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| format!("body: {e}"))?;
        if let Some(d) = f.data_ref() {
            if first_byte.is_none() && !d.is_empty() {
                first_byte = Some(Instant::now());
            }
            bytes += d.len();
            carry.extend_from_slice(d);
            {
                let now = unix_us();
                for st in stamps(&carry) {
                    if st != last_stamp {
                        last_stamp = st;
                        let transit = now.saturating_sub(st);
                        first_transit.get_or_insert(transit);
                        last_transit = Some(transit);
                    }
                }
            }
            let keep = carry.len().saturating_sub(32);
            carry.drain(..keep);
        }
    }
    let done = Instant::now();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    Ok(Timing {
        sent,
        first_byte: first_byte.unwrap_or(done),
        done,
        bytes,
        first_transit,
        last_transit,
    })
}

#[derive(Default)]
struct Stats {
    total: Histogram,    // intended send -> last byte
    ttfb: Histogram,     // intended send -> first body byte
    service: Histogram,  // actual send -> last byte
    lag: Histogram,      // intended -> actual send (load generator lateness)
    first_ev: Histogram, // mock write -> our read, first SSE event (stamped)
    last_ev: Histogram,  // mock write -> our read, last SSE event (stamped)
    ok: u64,
    ok_in_window: u64,
    bytes: u64,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, o: &Stats) {
        self.total.merge(&o.total);
        self.ttfb.merge(&o.ttfb);
        self.service.merge(&o.service);
        self.lag.merge(&o.lag);
        self.first_ev.merge(&o.first_ev);
        self.last_ev.merge(&o.last_ev);
        self.ok += o.ok;
        self.ok_in_window += o.ok_in_window;
        self.bytes += o.bytes;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[derive(Clone, Copy)]
struct RunCfg {
    rate: f64,
    duration: Duration,
    warmup: Duration,
    connections: usize,
    timeout: Duration,
    drain: Duration,
}

struct Job {
    intended: Instant,
}

/// One open-loop run against `targets` (interleaved), `rate` per target.
async fn run_once(targets: &[Target], cfg: &RunCfg) -> Vec<Stats> {
    let n = targets.len();
    let start = Instant::now() + Duration::from_millis(50);
    let window_start = start + cfg.warmup;
    let end = start + cfg.duration;
    let mut txs = Vec::new();
    let mut handles = Vec::new();
    for t in targets {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        txs.push(tx);
        let rx = Arc::new(Mutex::new(rx));
        let mut hs = Vec::new();
        for _ in 0..cfg.connections {
            let rx = rx.clone();
            let t = t.clone();
            let timeout = cfg.timeout;
            let cutoff = end + cfg.drain;
            hs.push(tokio::spawn(async move {
                let mut st = Stats::default();
                let mut sender: Option<Sender> = None;
                loop {
                    let job = { rx.lock().await.recv().await };
                    let Some(job) = job else { break };
                    let measured = job.intended >= window_start;
                    if Instant::now() > cutoff {
                        if measured {
                            *st.errors
                                .entry("not sent (drain cutoff)".into())
                                .or_default() += 1;
                        }
                        continue;
                    }
                    if sender.as_ref().is_none_or(|s| s.is_closed()) {
                        match connect(&t.authority).await {
                            Ok(s) => sender = Some(s),
                            Err(e) => {
                                if measured {
                                    *st.errors.entry(e).or_default() += 1;
                                }
                                continue;
                            }
                        }
                    }
                    let s = sender.as_mut().expect("sender");
                    let r =
                        tokio::time::timeout(timeout, one_request(s, build_request(&t, &[]))).await;
                    let r = match r {
                        Ok(r) => r,
                        Err(_) => Err("timeout".to_string()),
                    };
                    match r {
                        Ok(tm) => {
                            if measured {
                                st.ok += 1;
                                if tm.done <= end {
                                    st.ok_in_window += 1;
                                }
                                st.bytes += tm.bytes as u64;
                                st.total.record(tm.done - job.intended);
                                st.ttfb.record(tm.first_byte - job.intended);
                                st.service.record(tm.done - tm.sent);
                                st.lag
                                    .record(tm.sent.saturating_duration_since(job.intended));
                                if let (Some(a), Some(b)) = (tm.first_transit, tm.last_transit) {
                                    st.first_ev.record_us(a);
                                    st.last_ev.record_us(b);
                                }
                            }
                        }
                        Err(e) => {
                            sender = None;
                            if measured {
                                *st.errors.entry(e).or_default() += 1;
                            }
                        }
                    }
                }
                st
            }));
        }
        handles.push(hs);
    }
    // Scheduler on its own OS thread: std sleep is far more precise than the
    // 1 ms tokio timer wheel. Requests round-robin over the targets.
    let interval = Duration::from_secs_f64(1.0 / (cfg.rate * n as f64));
    let sched = std::thread::spawn(move || {
        let mut i: u64 = 0;
        loop {
            let intended = start + interval.mul_f64(i as f64);
            if intended >= end {
                break;
            }
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            let _ = txs[(i % n as u64) as usize].send(Job { intended });
            i += 1;
        }
    });
    while !sched.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = sched.join();
    let mut out = Vec::new();
    for hs in handles {
        let mut st = Stats::default();
        for h in hs {
            if let Ok(s) = h.await {
                st.merge(&s);
            }
        }
        out.push(st);
    }
    out
}

const QS: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

fn quantiles_json(h: &Histogram) -> Value {
    let mut m = serde_json::Map::new();
    for (k, q) in QS {
        m.insert(k.into(), json!(h.quantile_us(q)));
    }
    m.insert("mean".into(), json!((h.mean_us() * 10.0).round() / 10.0));
    m.insert("count".into(), json!(h.count()));
    Value::Object(m)
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn signed_ms(us: i64) -> String {
    format!("{:+.3}", us as f64 / 1000.0)
}

fn print_hist_table(
    title: &str,
    targets: &[Target],
    stats: &[Stats],
    pick: fn(&Stats) -> &Histogram,
) {
    println!("\n{title} (ms)");
    println!(
        "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "target", "p50", "p90", "p99", "p99.9", "max"
    );
    for (t, s) in targets.iter().zip(stats) {
        let h = pick(s);
        let row: Vec<String> = QS.iter().map(|(_, q)| ms(h.quantile_us(*q))).collect();
        println!(
            "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
            t.name, row[0], row[1], row[2], row[3], row[4]
        );
    }
    for (t, s) in targets.iter().zip(stats).skip(1) {
        let (h, b) = (pick(s), pick(&stats[0]));
        let row: Vec<String> = QS
            .iter()
            .map(|(_, q)| signed_ms(h.quantile_us(*q) as i64 - b.quantile_us(*q) as i64))
            .collect();
        println!(
            "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9}",
            format!("{}-{}", t.name, targets[0].name),
            row[0],
            row[1],
            row[2],
            row[3],
            row[4]
        );
    }
}

fn report(targets: &[Target], stats: &[Stats], cfg: &RunCfg, stream: bool, as_json: bool) -> Value {
    let window = (cfg.duration - cfg.warmup).as_secs_f64();
    let mut tj = Vec::new();
    for (t, s) in targets.iter().zip(stats) {
        tj.push(json!({
            "name": t.name, "url": t.url,
            "ok": s.ok, "errors": s.error_count(), "error_kinds": s.errors,
            "achieved_rate": (s.ok_in_window as f64 / window * 10.0).round() / 10.0,
            "mean_response_bytes": s.bytes.checked_div(s.ok).unwrap_or(0),
            "latency_us": quantiles_json(&s.total),
            "ttfb_us": quantiles_json(&s.ttfb),
            "service_us": quantiles_json(&s.service),
            "send_lag_us": quantiles_json(&s.lag),
            "first_event_transit_us": quantiles_json(&s.first_ev),
            "last_event_transit_us": quantiles_json(&s.last_ev),
        }));
    }
    let mut diffs = Vec::new();
    for (t, s) in targets.iter().zip(stats).skip(1) {
        let d = |a: &Histogram, b: &Histogram| {
            let mut m = serde_json::Map::new();
            for (k, q) in QS {
                m.insert(
                    k.into(),
                    json!(a.quantile_us(q) as i64 - b.quantile_us(q) as i64),
                );
            }
            Value::Object(m)
        };
        diffs.push(json!({
            "target": t.name, "baseline": targets[0].name,
            "latency_us": d(&s.total, &stats[0].total),
            "ttfb_us": d(&s.ttfb, &stats[0].ttfb),
            "first_event_transit_us": d(&s.first_ev, &stats[0].first_ev),
            "last_event_transit_us": d(&s.last_ev, &stats[0].last_ev),
        }));
    }
    let v = json!({
        "mode": "run",
        "rate_per_target": cfg.rate, "duration_s": cfg.duration.as_secs_f64(),
        "warmup_s": cfg.warmup.as_secs_f64(), "connections_per_target": cfg.connections,
        "stream": stream, "targets": tj, "diff_vs_first": diffs,
    });
    if !as_json {
        println!(
            "open-loop run: {} req/s per target, {:.1}s measured after {:.1}s warm-up, {} connections per target{}",
            cfg.rate,
            window,
            cfg.warmup.as_secs_f64(),
            cfg.connections,
            if stream { ", streaming" } else { "" }
        );
        println!(
            "  {:<14} {:>9} {:>7} {:>10} {:>8}  url",
            "target", "ok", "errors", "rate/s", "bytes"
        );
        for (t, s) in targets.iter().zip(stats) {
            println!(
                "  {:<14} {:>9} {:>7} {:>10.1} {:>8}  {}",
                t.name,
                s.ok,
                s.error_count(),
                s.ok_in_window as f64 / window,
                s.bytes.checked_div(s.ok).unwrap_or(0),
                t.url
            );
            for (k, c) in &s.errors {
                println!("      error x{c}: {k}");
            }
        }
        let last = if stream {
            "time to last byte, from intended send"
        } else {
            "latency, from intended send (CO-corrected)"
        };
        print_hist_table(last, targets, stats, |s| &s.total);
        if stream {
            print_hist_table(
                "time to first byte, from intended send",
                targets,
                stats,
                |s| &s.ttfb,
            );
        }
        print_hist_table("service time, from actual send", targets, stats, |s| {
            &s.service
        });
        print_hist_table(
            "load generator send lag (intended -> actual)",
            targets,
            stats,
            |s| &s.lag,
        );
    }
    v
}

/// One max-rate probe: run `t` alone at `rate`; true if it passes.
async fn try_rate(
    t: &Target,
    base: &RunCfg,
    rate: f64,
    limit_us: u64,
    as_json: bool,
    log: &mut Vec<Value>,
) -> bool {
    let cfg = RunCfg { rate, ..*base };
    let st = run_once(std::slice::from_ref(t), &cfg)
        .await
        .pop()
        .expect("stats");
    let p99 = st.total.quantile_us(0.99);
    let window = (cfg.duration - cfg.warmup).as_secs_f64();
    let achieved = st.ok_in_window as f64 / window;
    let pass = p99 < limit_us && st.error_count() == 0 && achieved >= 0.97 * rate;
    if !as_json {
        println!(
            "  {:<12} rate {:>8.0}  achieved {:>8.0}  p50 {:>8} p99 {:>8} max {:>8} ms  errors {:>5}  {}",
            t.name,
            rate,
            achieved,
            ms(st.total.quantile_us(0.5)),
            ms(p99),
            ms(st.total.max_us()),
            st.error_count(),
            if pass { "pass" } else { "FAIL" }
        );
    }
    log.push(
        json!({"rate": rate, "achieved": achieved.round(), "p50_us": st.total.quantile_us(0.5),
        "p99_us": p99, "errors": st.error_count(), "pass": pass}),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    pass
}

async fn max_rate(targets: &[Target], base: RunCfg, args: &Args, as_json: bool) -> Value {
    let start_rate: f64 = args.num("start-rate", None, 1000.0);
    let max_rate: f64 = args.num("max-rate", None, 100_000.0);
    let limit_us = (args.num::<f64>("p99-limit-ms", None, 10.0) * 1000.0) as u64;
    let steps: usize = args.num("steps", None, 5);
    let mut results = Vec::new();
    for t in targets {
        let mut log = Vec::new();
        let (mut lo, mut hi) = (0.0f64, None::<f64>);
        let mut r = start_rate;
        while r <= max_rate {
            if try_rate(t, &base, r, limit_us, as_json, &mut log).await {
                lo = r;
                r *= 1.5;
            } else {
                hi = Some(r);
                break;
            }
        }
        if let Some(mut h) = hi {
            for _ in 0..steps {
                let mid = ((lo + h) / 2.0 / 100.0).round() * 100.0;
                if mid <= lo || mid >= h {
                    break;
                }
                if try_rate(t, &base, mid, limit_us, as_json, &mut log).await {
                    lo = mid;
                } else {
                    h = mid;
                }
            }
        }
        if !as_json {
            println!(
                "  => {}: highest passing rate {:.0} req/s (p99 < {} ms, no errors)",
                t.name,
                lo,
                ms(limit_us)
            );
        }
        results.push(json!({"name": t.name, "url": t.url, "max_rate": lo, "steps": log}));
    }
    json!({"mode": "max-rate", "p99_limit_us": limit_us, "duration_s": base.duration.as_secs_f64(),
        "connections": base.connections, "targets": results})
}

async fn slow_streams(t: Target, args: &Args, as_json: bool) -> Value {
    let streams: usize = args.num("streams", None, 1000);
    let hold = args.duration("hold", None, Duration::from_secs(20));
    let batch: usize = args.num("open-batch", None, 100);
    let events: u64 = args.num("events", None, 2000);
    let delay: u64 = args.num("event-delay-ms", None, 50);
    let pids: Vec<(String, u32)> = args
        .all("pid")
        .iter()
        .map(|p| match p.split_once('=') {
            Some((n, p)) => (
                n.to_string(),
                p.parse().unwrap_or_else(|_| die("bad --pid")),
            ),
            None => (p.clone(), p.parse().unwrap_or_else(|_| die("bad --pid"))),
        })
        .collect();
    let before: Vec<u64> = pids
        .iter()
        .map(|(_, p)| read_rss_kb(*p).map_or(0, |r| r.0))
        .collect();
    let extra = Arc::new(vec![
        ("x-mock-events".to_string(), events.to_string()),
        ("x-mock-event-delay-ms".to_string(), delay.to_string()),
    ]);
    let started = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..streams {
        if i > 0 && i % batch == 0 {
            // Let the batch connect before opening more (avoids SYN backlog drops).
            let target = i;
            let deadline = Instant::now() + Duration::from_secs(5);
            while started.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < target
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let (t, extra, started, failed, finished) = (
            t.clone(),
            extra.clone(),
            started.clone(),
            failed.clone(),
            finished.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r: Result<(), String> = async {
                let mut s = connect(&t.authority).await?;
                s.ready().await.map_err(|e| e.to_string())?;
                let resp = s
                    .send_request(build_request(&t, &extra))
                    .await
                    .map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("status {}", resp.status()));
                }
                let mut body = resp.into_body();
                let mut first = true;
                while let Some(f) = body.frame().await {
                    f.map_err(|e| e.to_string())?;
                    if first {
                        started.fetch_add(1, Ordering::Relaxed);
                        first = false;
                    }
                }
                Ok(())
            }
            .await;
            match r {
                Ok(()) => finished.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    eprintln!("stream error: {e}");
                    failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while started.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < streams
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let open_time = t0.elapsed();
    let open = started.load(Ordering::Relaxed);
    if !as_json {
        println!(
            "slow-streams: {open}/{streams} streams receiving after {:.2}s ({} failed); holding {:.0}s",
            open_time.as_secs_f64(),
            failed.load(Ordering::Relaxed),
            hold.as_secs_f64()
        );
    }
    let mut peak = vec![0u64; pids.len()];
    let mut last = vec![0u64; pids.len()];
    let hold_start = Instant::now();
    let hold_end = hold_start + hold;
    // RSS timeline: one sample per second of hold, printed every 5 s.
    let mut timeline: Vec<Value> = Vec::new();
    let mut next_mark = 0u64;
    while Instant::now() < hold_end {
        let mut row = Vec::new();
        for (i, (_, p)) in pids.iter().enumerate() {
            if let Some((rss, _)) = read_rss_kb(*p) {
                peak[i] = peak[i].max(rss);
                last[i] = rss;
                row.push(rss);
            }
        }
        let secs = hold_start.elapsed().as_secs();
        if secs >= next_mark {
            if !as_json && secs.is_multiple_of(5) {
                let cols: Vec<String> = pids
                    .iter()
                    .zip(&row)
                    .map(|((n, _), r)| format!("{n} {:.1} MB", *r as f64 / 1024.0))
                    .collect();
                println!("  t+{secs:>3}s  {}", cols.join("  "));
            }
            timeline.push(json!({"t_s": secs, "rss_kb": row}));
            next_mark = secs + 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let still_open = open - finished.load(Ordering::Relaxed).min(open);
    let mut pj = Vec::new();
    for (i, (name, pid)) in pids.iter().enumerate() {
        let hwm = read_rss_kb(*pid).map_or(0, |r| r.1);
        let per = (peak[i].saturating_sub(before[i])) as f64 / open.max(1) as f64;
        if !as_json {
            println!(
                "  {name:<10} pid {pid:<8} RSS before {:>8.1} MB  during (peak) {:>8.1} MB  last {:>8.1} MB  VmHWM {:>8.1} MB  ~{per:.1} KiB/stream",
                before[i] as f64 / 1024.0,
                peak[i] as f64 / 1024.0,
                last[i] as f64 / 1024.0,
                hwm as f64 / 1024.0
            );
        }
        pj.push(
            json!({"name": name, "pid": pid, "rss_before_kb": before[i], "rss_peak_kb": peak[i],
            "rss_last_kb": last[i], "vmhwm_kb": hwm, "kb_per_stream": (per * 10.0).round() / 10.0}),
        );
    }
    if !as_json {
        println!("  streams still open at end of hold: {still_open}");
    }
    for t in tasks {
        t.abort();
    }
    json!({"mode": "slow-streams", "url": t.url, "streams": streams, "open": open,
        "failed": failed.load(Ordering::Relaxed), "still_open_at_end": still_open,
        "open_seconds": open_time.as_secs_f64(), "hold_s": hold.as_secs_f64(), "processes": pj,
        "event_delay_ms": delay, "timeline": timeline})
}

/// `--cpu-pid name=PID` (repeatable; PIDs with the same name are summed): CPU
/// seconds each process spends during the measured window of a run.
fn cpu_sampler(args: &Args, cfg: &RunCfg) -> Option<tokio::task::JoinHandle<Vec<(String, f64)>>> {
    let pids: Vec<(String, u32)> = args
        .all("cpu-pid")
        .iter()
        .map(|p| {
            let (n, p) = p
                .split_once('=')
                .unwrap_or_else(|| die("--cpu-pid wants name=PID"));
            (
                n.to_string(),
                p.parse().unwrap_or_else(|_| die("bad --cpu-pid")),
            )
        })
        .collect();
    if pids.is_empty() {
        return None;
    }
    // Same window as run_once: it starts 50 ms from now, plus the warm-up.
    let start = Instant::now() + Duration::from_millis(50);
    let (w0, w1) = (start + cfg.warmup, start + cfg.duration);
    Some(tokio::spawn(async move {
        let read = |pids: &[(String, u32)]| -> Vec<f64> {
            pids.iter()
                .map(|(_, p)| llmtap_bench::read_cpu_seconds(*p).unwrap_or(0.0))
                .collect()
        };
        tokio::time::sleep_until(w0.into()).await;
        let a = read(&pids);
        tokio::time::sleep_until(w1.into()).await;
        let b = read(&pids);
        let mut out: Vec<(String, f64)> = Vec::new();
        for (i, (name, _)) in pids.iter().enumerate() {
            let d = b[i] - a[i];
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 += d,
                None => out.push((name.clone(), d)),
            }
        }
        out
    }))
}

fn cpu_report(
    samples: &[(String, f64)],
    targets: &[Target],
    stats: &[Stats],
    cfg: &RunCfg,
    as_json: bool,
) -> Value {
    let window = (cfg.duration - cfg.warmup).as_secs_f64();
    let all: u64 = stats.iter().map(|s| s.ok).sum();
    let mut out = Vec::new();
    if !as_json {
        println!("\nCPU during the measured window ({window:.1}s; /proc/PID/stat, 10 ms ticks)");
    }
    for (name, secs) in samples {
        // Requests this process served: its own target's, else all of them.
        let reqs = targets
            .iter()
            .position(|t| &t.name == name)
            .map_or(all, |i| stats[i].ok)
            .max(1);
        let us = secs * 1e6 / reqs as f64;
        if !as_json {
            println!(
                "  {name:<14} {secs:>7.2} s CPU = {:>5.1} % of one core; {us:>7.1} µs CPU per request ({reqs} requests)",
                secs / window * 100.0
            );
        }
        out.push(
            json!({"name": name, "cpu_s": secs, "core_percent": secs / window * 100.0,
            "cpu_us_per_request": (us * 10.0).round() / 10.0, "requests": reqs}),
        );
    }
    Value::Array(out)
}

fn main() {
    let args = Args::parse(&["stream", "json"]);
    let mode = args
        .positional
        .first()
        .cloned()
        .unwrap_or_else(|| "run".into());
    let stream = args.flag("stream") || mode == "slow-streams";
    let as_json = args.flag("json");
    let body_size: usize = args.num("body-size", None, 1024);
    let mut urls = vec![args
        .get("url", None)
        .unwrap_or_else(|| die("--url is required"))];
    urls.extend(args.all("compare"));
    let names: Vec<String> = args
        .get("names", None)
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let targets: Vec<Target> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let name = names.get(i).cloned().unwrap_or_else(|| format!("t{i}"));
            parse_target(name, u, body_size, stream)
        })
        .collect();
    let cfg = RunCfg {
        rate: args.num("rate", None, 500.0),
        duration: args.duration("duration", None, Duration::from_secs(20)),
        warmup: args.duration("warmup", None, Duration::from_secs(2)),
        connections: args.num("connections", None, 32),
        timeout: args.duration("timeout", None, Duration::from_secs(30)),
        drain: args.duration("drain", None, Duration::from_secs(5)),
    };
    if cfg.warmup >= cfg.duration {
        die("--warmup must be shorter than --duration");
    }
    let threads: usize = args.num("threads", None, 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    let v = rt.block_on(async {
        match mode.as_str() {
            "run" => {
                let cpu = cpu_sampler(&args, &cfg);
                let stats = run_once(&targets, &cfg).await;
                let mut v = report(&targets, &stats, &cfg, stream, as_json);
                if let Some(cpu) = cpu {
                    let samples = cpu.await.unwrap_or_default();
                    v["cpu"] = cpu_report(&samples, &targets, &stats, &cfg, as_json);
                }
                v
            }
            "max-rate" => max_rate(&targets, cfg, &args, as_json).await,
            "slow-streams" => slow_streams(targets[0].clone(), &args, as_json).await,
            m => die(&format!("unknown mode {m:?} (run, max-rate, slow-streams)")),
        }
    });
    let text = serde_json::to_string_pretty(&v).expect("json");
    if as_json {
        println!("{text}");
    }
    if let Some(path) = args.get("json-out", None) {
        std::fs::write(&path, text + "\n").unwrap_or_else(|e| die(&format!("write {path}: {e}")));
    }
    rt.shutdown_timeout(Duration::from_millis(100));
}

#[cfg(test)]
mod tests {
    use super::stamps;

    #[test]
    fn finds_complete_stamps_only() {
        let buf = b"data: x\n\n: sent_us=123\n\nevent: a\n: sent_us=456\n\n: sent_us=78";
        assert_eq!(stamps(buf).collect::<Vec<_>>(), vec![123, 456]);
        assert_eq!(stamps(b"no stamps here").count(), 0);
    }
}
