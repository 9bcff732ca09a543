//! Record identifiers: time-ordered, unique, URL-safe.
//!
//! An id is a prefix plus 26 Crockford base32 characters encoding 48 bits of
//! milliseconds and 80 random bits (the ULID layout), so ids sort by creation time.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // RandomState is seeded from the OS once per process and perturbed per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::timefmt::now_unix_us());
    h.finish() | 1
}

fn next_random() -> u64 {
    RNG.with(|cell| {
        // xorshift64*: fast, and ids only need uniqueness, not secrecy.
        let mut x = cell.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cell.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A new id with `prefix`, for time `unix_us`.
pub fn new_id(prefix: &str, unix_us: u64) -> String {
    let millis = (unix_us / 1000) as u128 & ((1 << 48) - 1);
    let random =
        ((next_random() as u128) << 16 | (next_random() as u128 & 0xffff)) & ((1 << 80) - 1);
    let mut value = millis << 80 | random;
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    let mut id = String::with_capacity(prefix.len() + 26);
    id.push_str(prefix);
    id.extend(out.iter().map(|&b| b as char));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_time_ordered() {
        let a = new_id("c_", 1_000_000);
        let b = new_id("c_", 2_000_000);
        assert!(a < b);
        assert_eq!(a.len(), 28);
        let many: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_id("c_", 5_000_000)).collect();
        assert_eq!(many.len(), 10_000);
    }
}
