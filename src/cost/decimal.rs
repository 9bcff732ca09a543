//! Exact decimal prices: "USD per million tokens" text to integer picodollars per token.
//!
//! 1 $/M = 1e-6 $/token = 1e6 pUSD/token, so a $/M price is exact in integer
//! picodollars iff it has at most 6 decimals. The text is shifted as a decimal
//! string, never through a float: binary floats cannot hold 0.1 exactly, and a
//! drift of one picodollar per token adds up over billions of tokens.

/// Picodollars per token of one USD per million tokens.
pub const PUSD_PER_TOKEN_PER_USD_PER_M: u64 = 1_000_000;

/// Parses a non-negative decimal (`"2.50"`, `"0.1375"`, `"1.25e-6"`, `"2_500"`)
/// and returns `value × 10^scale` as an integer, or why it cannot.
///
/// `scale` 6 turns $/M into pUSD/token; 12 turns $/token into pUSD/token.
pub fn parse_scaled(text: &str, scale: i32) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.starts_with('-') {
        return Err("prices cannot be negative".into());
    }
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => {
            let e = t[i + 1..].replace('_', "");
            let e: i32 = e
                .parse()
                .map_err(|_| format!("{text:?} is not a decimal number"))?;
            (&t[..i], e)
        }
        None => (t, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    let mut digits = String::with_capacity(int_part.len() + frac_part.len());
    for c in int_part.chars().chain(frac_part.chars()) {
        match c {
            '0'..='9' => digits.push(c),
            // TOML allows underscores between digits.
            '_' => {}
            _ => return Err(format!("{text:?} is not a decimal number")),
        }
    }
    if digits.is_empty() {
        return Err(format!("{text:?} is not a decimal number"));
    }
    let frac_len = frac_part.chars().filter(|c| *c != '_').count() as i64;
    // value = digits × 10^(exp − frac_len); scaled = digits × 10^shift.
    let mut shift = exp as i64 - frac_len + scale as i64;
    while shift < 0 && digits.ends_with('0') {
        digits.pop();
        shift += 1;
    }
    if shift < 0 {
        return Err(format!(
            "{text:?} has more precision than one picodollar per token (at most {} decimals)",
            scale
        ));
    }
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Ok(0);
    }
    let too_big = || format!("{text:?} is too large");
    let mut value: u64 = trimmed.parse().map_err(|_| too_big())?;
    for _ in 0..shift {
        value = value.checked_mul(10).ok_or_else(too_big)?;
    }
    Ok(value)
}

/// Parses a price written in USD per million tokens into picodollars per token.
pub fn parse_usd_per_million(text: &str) -> Result<u64, String> {
    parse_scaled(text, 6)
}

/// Formats picodollars per token back as USD per million tokens, shortest exact form.
pub fn format_usd_per_million(pusd_per_token: u64) -> String {
    let whole = pusd_per_token / PUSD_PER_TOKEN_PER_USD_PER_M;
    let frac = pusd_per_token % PUSD_PER_TOKEN_PER_USD_PER_M;
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}
