//! Rate-limit response headers of every provider, normalised into `RateLimit`.

use crate::record::RateLimit;

/// `headers` are (lower-case name, value) pairs of the response; `now_unix_us` is when it arrived.
pub fn parse_rate_limits(headers: &[(&str, &str)], now_unix_us: u64) -> Option<RateLimit> {
    let _ = (headers, now_unix_us);
    None
}
