//! Time conversions: Unix microseconds to and from RFC 3339, and days in time zones.
//!
//! Parsing and zones use jiff (calendar validation, offsets, the IANA database).
//! Formatting stays hand-written: it runs for every stored call, produces UTC only,
//! and Howard Hinnant's `civil_from_days` does it in a few integer operations with a
//! fixed six-digit fraction.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
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
/// or a bare date `YYYY-MM-DD` (midnight UTC) into Unix microseconds. Dates that do
/// not exist (2026-02-31) and offsets out of range (+99:99) are refused: jiff checks
/// them, where the hand-written parser this replaced only checked digit counts.
pub fn parse_rfc3339_us(text: &str) -> Option<u64> {
    let text = text.trim();
    let timestamp = if text.len() == 10 {
        let date: jiff::civil::Date = text.parse().ok()?;
        date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp()
    } else {
        // A timestamp needs an offset (`Z` or ±HH:MM): a local time alone is ambiguous.
        text.parse::<jiff::Timestamp>().ok()?
    };
    u64::try_from(timestamp.as_microsecond()).ok()
}

/// The start of the day that `now_us` falls in, in `zone`, and the zone's offset
/// from UTC then (seconds east).
pub fn start_of_day_us(now_us: u64, zone: &jiff::tz::TimeZone) -> Option<(u64, i64)> {
    let now = jiff::Timestamp::from_microsecond(i64::try_from(now_us).ok()?).ok()?;
    let zoned = now.to_zoned(zone.clone());
    let offset_s = i64::from(zoned.offset().seconds());
    let start = zoned.start_of_day().ok()?.timestamp();
    Some((u64::try_from(start.as_microsecond()).ok()?, offset_s))
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
    fn days_start_in_their_zone() {
        let now = parse_rfc3339_us("2026-07-01T21:30:00Z").unwrap();
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        // 23:30 in Berlin (summer time, +02:00): the day began at 22:00 UTC the day before.
        assert_eq!(
            start_of_day_us(now, &berlin),
            Some((parse_rfc3339_us("2026-06-30T22:00:00Z").unwrap(), 7200))
        );
        let winter = parse_rfc3339_us("2026-01-01T21:30:00Z").unwrap();
        assert_eq!(
            start_of_day_us(winter, &berlin),
            Some((parse_rfc3339_us("2025-12-31T23:00:00Z").unwrap(), 3600))
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
            "2026-02-31",
            "2026-02-29",
            "2026-04-31T10:00:00Z",
            "2026-04-05T14:28:55+99:99",
            "2026-04-05T14:28:55+02:60",
        ] {
            assert_eq!(parse_rfc3339_us(bad), None, "{bad}");
        }
    }
}
