//! Rate-limit headers of each provider, from their documented shapes.

use super::super::ratelimit::{parse_go_duration, parse_rate_limits};
use crate::timefmt::{format_rfc3339_us, parse_rfc3339_us};

const NOW: &str = "2025-03-15T09:39:50Z";

fn now() -> u64 {
    parse_rfc3339_us(NOW).unwrap_or(0)
}

#[test]
fn go_durations() {
    let cases = [
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("23h18m29.144s", 83909.144),
        ("0s", 0.0),
        ("7", 7.0),
        ("2m", 120.0),
    ];
    for (text, want) in cases {
        let got = parse_go_duration(text).unwrap_or(f64::NAN);
        assert!((got - want).abs() < 1e-9, "{text}: {got}");
    }
    for bad in ["", "abc", "5x", "1h-2m"] {
        assert_eq!(parse_go_duration(bad), None, "{bad}");
    }
}

#[test]
fn none_without_rate_limit_headers() {
    let headers = [("content-type", "application/json"), ("x-request-id", "r")];
    assert_eq!(parse_rate_limits(&headers, now()), None);
    assert_eq!(parse_rate_limits(&[], now()), None);
}

#[test]
fn openai_429_with_go_duration_resets() {
    let headers = [
        ("x-ratelimit-limit-requests", "500"),
        ("x-ratelimit-limit-tokens", "30000"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-remaining-tokens", "29740"),
        ("x-ratelimit-reset-requests", "6m0s"),
        ("x-ratelimit-reset-tokens", "20ms"),
        ("content-type", "application/json"),
    ];
    let rl = parse_rate_limits(&headers, now()).expect("rate limit");
    let req = rl.requests.expect("requests");
    assert_eq!(
        (req.limit, req.remaining, req.reset_s),
        (Some(500), Some(0), Some(360.0))
    );
    assert_eq!(req.reset_at.as_deref(), Some("2025-03-15T09:45:50.000000Z"));
    let tok = rl.tokens.expect("tokens");
    assert_eq!((tok.limit, tok.remaining), (Some(30000), Some(29740)));
    assert_eq!(tok.reset_s, Some(0.02));
    assert_eq!(tok.reset_at.as_deref(), Some("2025-03-15T09:39:50.020000Z"));
    assert_eq!(rl.retry_after_s, None);
    assert_eq!(rl.raw.len(), 6);
    assert!(!rl.raw.contains_key("content-type"));
}

#[test]
fn anthropic_429_with_retry_after() {
    let headers = [
        ("retry-after", "12"),
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2025-03-15T09:40:02Z"),
        ("anthropic-ratelimit-tokens-limit", "40000"),
        ("anthropic-ratelimit-tokens-remaining", "0"),
        ("anthropic-ratelimit-tokens-reset", "2025-03-15T09:40:02Z"),
        ("anthropic-ratelimit-input-tokens-limit", "20000"),
        ("anthropic-ratelimit-input-tokens-remaining", "0"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "2025-03-15T09:40:02Z",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "8000"),
        ("anthropic-ratelimit-output-tokens-remaining", "8000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "2025-03-15T09:39:50Z",
        ),
    ];
    let rl = parse_rate_limits(&headers, now()).expect("rate limit");
    assert_eq!(rl.retry_after_s, Some(12.0));
    let req = rl.requests.expect("requests");
    assert_eq!(
        (req.limit, req.remaining, req.reset_s),
        (Some(50), Some(0), Some(12.0))
    );
    assert_eq!(req.reset_at.as_deref(), Some("2025-03-15T09:40:02.000000Z"));
    assert_eq!(rl.tokens.and_then(|w| w.limit), Some(40000));
    assert_eq!(rl.input_tokens.and_then(|w| w.limit), Some(20000));
    let out = rl.output_tokens.expect("output");
    assert_eq!((out.remaining, out.reset_s), (Some(8000), Some(0.0)));
    assert_eq!(rl.raw.len(), 13);
}

#[test]
fn retry_after_forms() {
    let date = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(now() + 30_000_000),
    );
    let rl = parse_rate_limits(&[("retry-after", &date)], now()).expect("rl");
    assert_eq!(rl.retry_after_s, Some(30.0));
    // The millisecond header is the more precise one, whatever the order.
    let rl = parse_rate_limits(&[("retry-after-ms", "1500"), ("retry-after", "2")], now());
    assert_eq!(rl.and_then(|r| r.retry_after_s), Some(1.5));
    let rl = parse_rate_limits(&[("retry-after", "soon")], now()).expect("rl");
    assert_eq!(rl.retry_after_s, None);
    assert_eq!(rl.raw.get("retry-after").map(String::as_str), Some("soon"));
}

#[test]
fn azure_integer_resets_and_remaining_only() {
    let headers = [
        ("x-ratelimit-abusepenalty-active", "False"),
        ("x-ratelimit-limit-requests", "120"),
        ("x-ratelimit-remaining-requests", "119"),
        ("x-ratelimit-renewalperiod-requests", "60"),
        ("x-ratelimit-reset-requests", "500"),
        ("x-ratelimit-reset-tokens", "7"),
    ];
    let rl = parse_rate_limits(&headers, now()).expect("rl");
    let req = rl.requests.expect("requests");
    assert_eq!(
        (req.limit, req.remaining, req.reset_s),
        (Some(120), Some(119), Some(500.0))
    );
    assert_eq!(rl.tokens.and_then(|t| t.reset_s), Some(7.0));
    assert_eq!(rl.raw.len(), 6);

    let only_remaining = [
        ("x-ratelimit-remaining-requests", "119"),
        ("x-ratelimit-remaining-tokens", "119984"),
    ];
    let rl = parse_rate_limits(&only_remaining, now()).expect("rl");
    let tok = rl.tokens.expect("tokens");
    assert_eq!(
        (tok.limit, tok.remaining, tok.reset_s),
        (None, Some(119984), None)
    );
}

#[test]
fn mistral_windows_map_to_the_shortest() {
    let headers = [
        ("x-ratelimit-limit-req-10-second", "10"),
        ("x-ratelimit-remaining-req-10-second", "9"),
        ("x-ratelimit-limit-tokens-minute", "500000"),
        ("x-ratelimit-remaining-tokens-minute", "499000"),
        ("x-ratelimit-limit-tokens-month", "1000000000"),
        ("x-ratelimit-remaining-tokens-month", "999000000"),
    ];
    let rl = parse_rate_limits(&headers, now()).expect("rl");
    let req = rl.requests.expect("requests");
    assert_eq!((req.limit, req.remaining), (Some(10), Some(9)));
    let tok = rl.tokens.expect("tokens");
    assert_eq!((tok.limit, tok.remaining), (Some(500000), Some(499000)));
    assert_eq!(rl.raw.len(), 6);
}

#[test]
fn malformed_values_stay_raw() {
    let headers = [
        ("x-ratelimit-limit-requests", "lots"),
        ("x-ratelimit-reset-requests", "whenever"),
        ("anthropic-ratelimit-tokens-reset", "not a date"),
    ];
    let rl = parse_rate_limits(&headers, now()).expect("rl");
    let req = rl.requests.expect("requests");
    assert_eq!((req.limit, req.reset_s, req.reset_at), (None, None, None));
    assert_eq!(rl.raw.len(), 3);
    assert_eq!(format_rfc3339_us(now()), "2025-03-15T09:39:50.000000Z");
}

#[test]
fn recorded_headers() {
    for f in super::fixtures::load_all() {
        let headers: Vec<(&str, &str)> = f
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let rl = parse_rate_limits(&headers, now());
        let expected = headers.iter().any(|(k, _)| k.contains("ratelimit"));
        assert_eq!(rl.is_some(), expected, "{}", f.name);
        if f.name == "openllmetry__test_thinking__test_anthropic_thinking_streaming_legacy" {
            let rl = rl.clone().expect("anthropic limits");
            let input = rl.input_tokens.expect("input window");
            assert_eq!((input.limit, input.remaining), (Some(200000), Some(126000)));
            assert_eq!(
                input.reset_at.as_deref(),
                Some("2025-03-15T12:58:20.000000Z")
            );
        }
        if f.name == "llm__test_tools__test_tool_use_basic__0" {
            let req = rl.clone().and_then(|r| r.requests).expect("requests");
            assert_eq!((req.remaining, req.reset_s), (Some(29999), Some(0.002)));
        }
    }
}
