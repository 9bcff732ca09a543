//! rss: print the resident set size (VmRSS) and high-water mark (VmHWM) of a
//! process from /proc/PID/status, once or sampled over time.
//!
//! Usage: rss PID [--interval 500ms --duration 10s]   (prints one line per sample,
//! then `peak_rss_kb=N`)

use std::time::{Duration, Instant};

use llmtap_bench::{die, read_rss_kb, Args};

fn main() {
    let args = Args::parse(&[]);
    let pid: u32 = args
        .positional
        .first()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| die("usage: rss PID [--interval 500ms --duration 10s]"));
    let interval = args.duration("interval", None, Duration::from_millis(500));
    let duration = args.duration("duration", None, Duration::ZERO);
    let end = Instant::now() + duration;
    let mut peak = 0;
    loop {
        let (rss, hwm) =
            read_rss_kb(pid).unwrap_or_else(|| die(&format!("cannot read /proc/{pid}/status")));
        peak = peak.max(rss);
        println!(
            "pid={pid} rss_kb={rss} hwm_kb={hwm} rss_mb={:.1}",
            rss as f64 / 1024.0
        );
        if Instant::now() + interval > end {
            break;
        }
        std::thread::sleep(interval);
    }
    println!("peak_rss_kb={peak}");
}
