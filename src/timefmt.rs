//! Time conversions: Unix microseconds to and from RFC 3339, without a date crate.
//!
//! Only UTC is produced; parsing accepts any offset. Civil-date arithmetic follows
//! Howard Hinnant's `days_from_civil` algorithms.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-11-21T22:03:22.123456Z`
pub fn format_rfc3339_us(unix_us: u64) -> String {
    let secs = (unix_us / 1_000_000) as i64;
    let micros = unix_us % 1_000_000;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86400));
    let sod = secs.rem_euclid(86400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// `2026-11-21`, the UTC day of a timestamp.
pub fn format_date(unix_us: u64) -> String {
    let (y, mo, d) = civil_from_days((unix_us / 86_400_000_000) as i64);
    format!("{y:04}-{mo:02}-{d:02}")
}

/// Parses RFC 3339 (`2026-04-05T14:28:55Z`, fractional seconds and offsets allowed)
/// or a bare date `YYYY-MM-DD` (midnight UTC) into Unix microseconds.
pub fn parse_rfc3339_us(text: &str) -> Option<u64> {
    let text = text.trim();
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return u64::try_from(days * 86_400_000_000).ok();
    }
    if b.len() < 19 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut padded: String = digits.chars().take(6).collect();
        while padded.len() < 6 {
            padded.push('0');
        }
        micros = padded.parse().ok()?;
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let v = h * 3600 + m * 60;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    let secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_s;
    u64::try_from(secs * 1_000_000 + micros).ok()
}

/// Parses an HTTP date (`Sun, 05 Apr 2026 14:28:55 GMT`) into Unix microseconds.
pub fn parse_http_date_us(text: &str) -> Option<u64> {
    let t = httpdate::parse_http_date(text.trim()).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339() {
        for us in [
            0u64,
            1_775_399_335_123_456,
            951_782_400_000_000,
            4_102_444_800_000_001,
        ] {
            let text = format_rfc3339_us(us);
            assert_eq!(parse_rfc3339_us(&text), Some(us), "{text}");
        }
    }

    #[test]
    fn parses_known_values() {
        assert_eq!(
            format_rfc3339_us(parse_rfc3339_us("2026-04-05T14:28:55Z").unwrap()),
            "2026-04-05T14:28:55.000000Z"
        );
        assert_eq!(
            parse_rfc3339_us("2026-04-05T16:28:55+02:00"),
            parse_rfc3339_us("2026-04-05T14:28:55Z")
        );
        assert_eq!(parse_rfc3339_us("2024-02-29"), Some(1_709_164_800_000_000));
        assert_eq!(format_date(1_709_164_800_000_000), "2024-02-29");
        assert_eq!(
            parse_http_date_us("Sun, 05 Apr 2026 14:28:55 GMT"),
            parse_rfc3339_us("2026-04-05T14:28:55Z")
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-04-05T25:00:00Z",
            "2026-04-05T14:28:55",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339_us(bad), None, "{bad}");
        }
    }
}
