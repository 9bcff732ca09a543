//! Rate-limit response headers of every provider, normalised into `RateLimit`.
//!
//! OpenAI and Groq: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` with
//! Go-style duration resets (`6m0s`, `20ms`). Azure: the same names with integer
//! second resets, sometimes only the `remaining` pair. Anthropic:
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
//! with RFC 3339 resets. Mistral: `x-ratelimit-{limit,remaining}-{req,tokens}-{window}`.
//! Plus `retry-after` (seconds or HTTP date) and `retry-after-ms`. Values that do not
//! parse are kept only in `raw`.

use crate::record::{LimitWindow, RateLimit};
use crate::timefmt;

#[derive(Clone, Copy)]
enum Field {
    Limit,
    Remaining,
    Reset,
}

/// Discriminants index the window array in `parse_rate_limits`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Requests = 0,
    Tokens = 1,
    Input = 2,
    Output = 3,
}

fn is_rate_header(name: &str) -> bool {
    name.contains("ratelimit")
        || name.contains("rate-limit")
        || name == "retry-after"
        || name == "retry-after-ms"
        || name == "x-retry-after"
}

/// `headers` are (lower-case name, value) pairs of the response; `now_unix_us` is when it arrived.
pub fn parse_rate_limits(headers: &[(&str, &str)], now_unix_us: u64) -> Option<RateLimit> {
    let mut rl = RateLimit::default();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if is_rate_header(&name) {
            rl.raw.insert(name, value.trim().to_owned());
        }
    }
    if rl.raw.is_empty() {
        return None;
    }
    let classified: Vec<(Which, Field, u32, &str)> = rl
        .raw
        .iter()
        .filter_map(|(name, value)| {
            classify(name).map(|(w, f, win)| (w, f, window_rank(win.as_deref()), value.as_str()))
        })
        .collect();
    let mut windows: [Option<LimitWindow>; 4] = Default::default();
    for &(which, field, rank, value) in &classified {
        // Mistral reports several windows per resource; the normalised one is the
        // shortest (it throttles first), the others stay in `raw`.
        let shortest = classified
            .iter()
            .filter(|c| c.0 == which)
            .map(|c| c.2)
            .min()
            .unwrap_or(rank);
        if rank == shortest {
            apply(&mut windows[which as usize], field, value, now_unix_us);
        }
    }
    let [requests, tokens, input_tokens, output_tokens] = windows;
    rl.requests = requests;
    rl.tokens = tokens;
    rl.input_tokens = input_tokens;
    rl.output_tokens = output_tokens;
    let retry_ms = rl
        .raw
        .get("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok());
    rl.retry_after_s = match retry_ms {
        // The millisecond form is the more precise one.
        Some(ms) if ms.is_finite() && ms >= 0.0 => Some(ms / 1000.0),
        _ => rl
            .raw
            .get("retry-after")
            .or_else(|| rl.raw.get("x-retry-after"))
            .and_then(|v| retry_after_s(v, now_unix_us)),
    };
    Some(rl)
}

/// Splits a header name into the window it describes. The third element is a
/// Mistral-style window suffix (`minute`, `10-second`, `month`), if any.
fn classify(name: &str) -> Option<(Which, Field, Option<String>)> {
    let rest = name
        .strip_prefix("anthropic-ratelimit-")
        .or_else(|| name.strip_prefix("x-ratelimit-"))
        .or_else(|| name.strip_prefix("ratelimit-"))?;
    // Anthropic: {which}-{field}
    for (prefix, which) in [
        ("requests-", Which::Requests),
        ("input-tokens-", Which::Input),
        ("output-tokens-", Which::Output),
        ("tokens-", Which::Tokens),
    ] {
        if let Some(f) = rest.strip_prefix(prefix) {
            return field_of(f).map(|f| (which, f, None));
        }
    }
    // OpenAI / Azure / Groq / Mistral: {field}-{which}[-{window}]
    let (field, tail) = if let Some(t) = rest.strip_prefix("limit-") {
        (Field::Limit, t)
    } else if let Some(t) = rest.strip_prefix("remaining-") {
        (Field::Remaining, t)
    } else if let Some(t) = rest.strip_prefix("reset-") {
        (Field::Reset, t)
    } else {
        return None;
    };
    for (prefix, which) in [
        ("requests", Which::Requests),
        ("req", Which::Requests),
        ("input-tokens", Which::Input),
        ("output-tokens", Which::Output),
        ("tokens", Which::Tokens),
    ] {
        if let Some(after) = tail.strip_prefix(prefix) {
            if after.is_empty() {
                return Some((which, field, None));
            }
            if let Some(window) = after.strip_prefix('-') {
                return Some((which, field, Some(window.to_owned())));
            }
        }
    }
    None
}

fn field_of(text: &str) -> Option<Field> {
    match text {
        "limit" => Some(Field::Limit),
        "remaining" => Some(Field::Remaining),
        "reset" => Some(Field::Reset),
        _ => None,
    }
}

fn window_rank(window: Option<&str>) -> u32 {
    match window {
        None => 0,
        Some(w) if w.contains("second") => 1,
        Some(w) if w.contains("minute") => 2,
        Some(w) if w.contains("hour") => 3,
        Some(w) if w.contains("day") => 4,
        Some(w) if w.contains("week") => 5,
        Some(w) if w.contains("month") => 6,
        Some(_) => 7,
    }
}

fn apply(slot: &mut Option<LimitWindow>, field: Field, value: &str, now_us: u64) {
    let w = slot.get_or_insert_with(LimitWindow::default);
    match field {
        Field::Limit => w.limit = parse_count(value),
        Field::Remaining => w.remaining = parse_count(value),
        Field::Reset => {
            if let Some((reset_s, reset_at)) = parse_reset(value, now_us) {
                w.reset_s = Some(reset_s);
                w.reset_at = Some(reset_at);
            }
        }
    }
}

fn parse_count(value: &str) -> Option<u64> {
    value.parse::<u64>().ok().or_else(|| {
        value
            .parse::<f64>()
            .ok()
            .filter(|f| *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// A reset as seconds from now and as an absolute time. Accepts Go durations
/// (`1m30s`), bare seconds (Azure), RFC 3339 (Anthropic) and HTTP dates.
fn parse_reset(value: &str, now_us: u64) -> Option<(f64, String)> {
    let secs = if let Some(s) = parse_go_duration(value) {
        s
    } else if let Some(at) =
        timefmt::parse_rfc3339_us(value).or_else(|| timefmt::parse_http_date_us(value))
    {
        return Some((
            at.saturating_sub(now_us) as f64 / 1e6,
            timefmt::format_rfc3339_us(at),
        ));
    } else {
        return None;
    };
    let at = now_us.saturating_add((secs * 1e6).round() as u64);
    Some((secs, timefmt::format_rfc3339_us(at)))
}

fn retry_after_s(value: &str, now_us: u64) -> Option<f64> {
    if let Ok(s) = value.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then_some(s);
    }
    let at = timefmt::parse_http_date_us(value)?;
    Some(at.saturating_sub(now_us) as f64 / 1e6)
}

/// Go's `time.Duration` text (`23h18m29.144s`, `20ms`, `1.5s`, `6m0s`) or a bare
/// number of seconds, in seconds.
pub fn parse_go_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(s) = text.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then_some(s);
    }
    let b = text.as_bytes();
    let mut i = 0;
    let mut total = 0.0;
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let num: f64 = text[start..i].parse().ok()?;
        let ustart = i;
        while i < b.len() && !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let scale = match &text[ustart..i] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += num * scale;
    }
    Some(total)
}
