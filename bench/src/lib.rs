//! Shared helpers for the llmtap benchmark binaries: a tiny command-line
//! parser, duration parsing, a log-linear latency histogram with microsecond
//! resolution, /proc RSS reading and RFC 3339 time formatting.

use std::collections::HashMap;
use std::time::Duration;

/// Minimal `--flag value` / `--flag=value` / `--switch` parser.
pub struct Args {
    values: HashMap<String, Vec<String>>,
    switches: Vec<String>,
    /// Arguments that do not start with `--` (e.g. a subcommand).
    pub positional: Vec<String>,
}

impl Args {
    /// Parse `std::env::args()`. `switch_names` lists flags that take no value.
    pub fn parse(switch_names: &[&str]) -> Args {
        Self::parse_from(std::env::args().skip(1), switch_names)
    }

    pub fn parse_from(it: impl IntoIterator<Item = String>, switch_names: &[&str]) -> Args {
        let mut values: HashMap<String, Vec<String>> = HashMap::new();
        let mut switches = Vec::new();
        let mut positional = Vec::new();
        let mut it = it.into_iter();
        while let Some(a) = it.next() {
            if let Some(flag) = a.strip_prefix("--") {
                if let Some((k, v)) = flag.split_once('=') {
                    values.entry(k.to_string()).or_default().push(v.to_string());
                } else if switch_names.contains(&flag) {
                    switches.push(flag.to_string());
                } else {
                    let v = it
                        .next()
                        .unwrap_or_else(|| die(&format!("--{flag} needs a value")));
                    values.entry(flag.to_string()).or_default().push(v);
                }
            } else {
                positional.push(a);
            }
        }
        Args {
            values,
            switches,
            positional,
        }
    }

    /// Last value of `--name`, else the environment variable `env`, if any.
    pub fn get(&self, name: &str, env: Option<&str>) -> Option<String> {
        if let Some(v) = self.values.get(name).and_then(|v| v.last()) {
            return Some(v.clone());
        }
        env.and_then(|e| std::env::var(e).ok())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }

    pub fn flag(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    pub fn num<T: std::str::FromStr>(&self, name: &str, env: Option<&str>, default: T) -> T {
        match self.get(name, env) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("--{name}: cannot parse {v:?}"))),
            None => default,
        }
    }

    pub fn duration(&self, name: &str, env: Option<&str>, default: Duration) -> Duration {
        match self.get(name, env) {
            Some(v) => {
                parse_duration(&v).unwrap_or_else(|| die(&format!("--{name}: bad duration {v:?}")))
            }
            None => default,
        }
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

/// Parse `20s`, `500ms`, `2m`, `1.5s`, `250us`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Log-linear histogram of microsecond values: exact below 256 µs, then 128
/// sub-buckets per power of two (relative error < 0.4 %). Mergeable.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
    min: u64,
}

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS; // 128

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; (SUB as usize) * 60],
            total: 0,
            sum: 0,
            max: 0,
            min: u64::MAX,
        }
    }

    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            v as usize
        } else {
            let e = 63 - v.leading_zeros() - SUB_BITS; // >= 1
            (e as u64 * SUB + (v >> e)) as usize
        }
    }

    /// Midpoint of the value range a bucket covers.
    fn value_of(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < 2 * SUB {
            idx
        } else {
            let e = idx / SUB - 1;
            let m = idx - e * SUB;
            (m << e) + ((1u64 << e) >> 1)
        }
    }

    pub fn record_us(&mut self, v: u64) {
        let i = Self::index(v).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.sum += v as u128;
        self.max = self.max.max(v);
        self.min = self.min.min(v);
    }

    pub fn record(&mut self, d: Duration) {
        self.record_us(d.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
        self.min = self.min.min(o.min);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_us(&self) -> u64 {
        self.max
    }

    pub fn mean_us(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// Value at quantile `q` (0..=1), in microseconds.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value_of(i).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// Resident set size and its high-water mark of `pid`, in KiB, from
/// /proc/PID/status (VmRSS, VmHWM).
pub fn read_rss_kb(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// CPU time (user + system, all threads) consumed so far by `pid`, in seconds,
/// from /proc/PID/stat (clock ticks of 1/100 s, the Linux USER_HZ).
pub fn read_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Format Unix seconds as RFC 3339 UTC (`2026-11-21T22:06:27Z`).
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record_us(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile_us(q) as f64;
            assert!((got - want).abs() / want < 0.005, "q={q} got={got}");
        }
        assert_eq!(h.quantile_us(1.0), 100_000);
        let mut small = Histogram::new();
        small.record_us(137);
        assert_eq!(small.quantile_us(0.5), 137);
    }

    #[test]
    fn index_roundtrip_is_monotonic() {
        let mut last = 0;
        for v in 0..1_000_000u64 {
            let i = Histogram::index(v);
            assert!(i >= last);
            last = i;
            let back = Histogram::value_of(i);
            assert!(back as f64 >= v as f64 * 0.99 - 1.0 && back as f64 <= v as f64 * 1.01 + 1.0);
        }
    }

    #[test]
    fn rfc3339_known_date() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn cpu_of_self_is_readable() {
        assert!(read_cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
    }
}
