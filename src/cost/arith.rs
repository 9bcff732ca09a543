//! Usage × rates → [`Cost`], in integer picodollars.
//!
//! Buckets (see `record::Usage`: cache reads/writes are parts of input,
//! reasoning is part of output):
//! - input: `input − cache_read − cache_creation` at the input rate,
//! - cache_read at the cache-read rate (input rate when the table has none:
//!   providers without a discount bill cached tokens as plain input),
//! - cache_creation: the 1-hour part at the 1-hour rate, the rest at the
//!   5-minute rate (each falling back to the next: 1h → 5m → input),
//! - output: `output − reasoning` at the output rate plus reasoning at the
//!   reasoning rate (output rate when the table has none).
//!
//! A long-context tier is chosen on the request's whole input (cache included)
//! and applies to every bucket. Subtractions saturate (inconsistent usage must
//! not wrap around), products are done in u128 and saturate into u64.

use super::ModelPrice;
use crate::record::{Cost, Usage};

fn mul(tokens: u64, rate: u64) -> u64 {
    u64::try_from(u128::from(tokens) * u128::from(rate)).unwrap_or(u64::MAX)
}

/// Prices `usage` with `entry`. `priced` is false when the call reported neither
/// input nor output tokens: a zero would claim the call was free.
pub(crate) fn compute(entry: &ModelPrice, usage: &Usage) -> Cost {
    let mut cost = Cost {
        price_key: Some(entry.key()),
        ..Cost::default()
    };
    if usage.input_tokens.is_none() && usage.output_tokens.is_none() {
        cost.unpriced_reason = Some("no token usage reported".to_string());
        return cost;
    }
    let input = usage.input_tokens.unwrap_or(0);
    let output = usage.output_tokens.unwrap_or(0);
    let cache_read = usage.cache_read_tokens.unwrap_or(0);
    let cache_creation = usage.cache_creation_tokens.unwrap_or(0);
    let creation_1h = usage
        .cache_creation_1h_tokens
        .unwrap_or(0)
        .min(cache_creation);
    let reasoning = usage.reasoning_tokens.unwrap_or(0).min(output);

    let (r, tier) = entry.rates_for(input);
    let read_rate = r.cache_read.unwrap_or(r.input);
    let write_rate = r.cache_write.unwrap_or(r.input);
    let write_1h_rate = r.cache_write_1h.unwrap_or(write_rate);
    let reasoning_rate = r.reasoning.unwrap_or(r.output);

    let uncached = input
        .saturating_sub(cache_read)
        .saturating_sub(cache_creation);
    cost.input_pusd = mul(uncached, r.input);
    cost.cache_read_pusd = mul(cache_read, read_rate);
    cost.cache_creation_pusd = mul(cache_creation - creation_1h, write_rate)
        .saturating_add(mul(creation_1h, write_1h_rate));
    cost.reasoning_pusd = mul(reasoning, reasoning_rate);
    cost.output_pusd = mul(output - reasoning, r.output).saturating_add(cost.reasoning_pusd);
    cost.total_pusd = cost
        .input_pusd
        .saturating_add(cost.cache_read_pusd)
        .saturating_add(cost.cache_creation_pusd)
        .saturating_add(cost.output_pusd);
    cost.tier_above_input_tokens = tier;
    cost.priced = true;
    // Display only; the integer total is the source of truth.
    cost.total_usd = Some(cost.total_pusd as f64 / 1e12);
    cost
}
