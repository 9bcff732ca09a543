//! Compact encoding of the metadata JSON kept per call (`calls` values).
//!
//! A lone 2–4 KB record compresses poorly on its own: most of it is field names,
//! header names and enum values that every record repeats. zstd with a built-in
//! dictionary of typical records (`dict/meta_v1.jsonl`, recorded from the
//! fixtures) removes that repetition, so each record pays only for its own values.
//!
//! Value layout: plain JSON (first byte `{`, as every store before this wrote), or
//! `DICT_V1`, the plain length as a varint, and a zstd frame made with dictionary v1.
//! The dictionary is frozen: changing it would make stored values unreadable, so a
//! new one gets a new tag byte and the old one stays for reading.

use super::content::{get_varint, put_varint};
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::OnceLock;
use zstd::zstd_safe::{CCtx, CDict, DCtx, DDict};

const DICT_V1: u8 = 1;
static DICT_V1_BYTES: &[u8] = include_bytes!("dict/meta_v1.jsonl");
/// The level metadata is packed at: fast, and the dictionary does the heavy lifting.
const LEVEL: i32 = 3;
/// Below this a frame header costs about what it saves.
const MIN_PACK: usize = 64;
const MAX_PLAIN: usize = 64 << 20;

fn cdict() -> &'static CDict<'static> {
    static CDICT: OnceLock<CDict<'static>> = OnceLock::new();
    CDICT.get_or_init(|| zstd::zstd_safe::create_cdict(DICT_V1_BYTES, LEVEL))
}

fn ddict() -> &'static DDict<'static> {
    static DDICT: OnceLock<DDict<'static>> = OnceLock::new();
    DDICT.get_or_init(|| zstd::zstd_safe::create_ddict(DICT_V1_BYTES))
}

thread_local! {
    static CCTX: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
    static DCTX: RefCell<DCtx<'static>> = RefCell::new(DCtx::create());
}

/// Packs a JSON value; returns it unchanged when packing does not make it smaller.
pub fn pack(json: Vec<u8>) -> Vec<u8> {
    if json.len() < MIN_PACK {
        return json;
    }
    let mut out = Vec::with_capacity(json.len() / 2 + 16);
    out.push(DICT_V1);
    put_varint(&mut out, json.len() as u64);
    let header = out.len();
    let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(json.len()));
    let packed = CCTX.with(|c| {
        c.borrow_mut()
            .compress_using_cdict(&mut frame, &json, cdict())
            .is_ok()
    });
    if !packed || header + frame.len() >= json.len() {
        return json;
    }
    out.extend_from_slice(&frame);
    out
}

/// The JSON text of a stored value, packed or plain.
pub fn unpack(value: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    match value.first() {
        Some(&DICT_V1) => {
            let (len, frame) = get_varint(&value[1..]).ok_or("bad packed length")?;
            let len = usize::try_from(len)
                .ok()
                .filter(|&n| n <= MAX_PLAIN)
                .ok_or("packed length out of range")?;
            let mut plain = Vec::with_capacity(len);
            DCTX.with(|d| {
                d.borrow_mut()
                    .decompress_using_ddict(&mut plain, frame, ddict())
            })
            .map_err(|code| format!("zstd error {code}"))?;
            if plain.len() != len {
                return Err("packed length does not match".into());
            }
            Ok(Cow::Owned(plain))
        }
        _ => Ok(Cow::Borrowed(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_typical_records_small_and_round_trips() {
        for line in DICT_V1_BYTES
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            // A record like the dictionary's but with other values.
            let text = String::from_utf8_lossy(line)
                .replace("2026-11-22T00:5", "2027-03-04T11:2")
                .replace("c_01", "c_09");
            let packed = pack(text.clone().into_bytes());
            assert!(
                packed.len() * 4 < text.len(),
                "{} -> {}",
                text.len(),
                packed.len()
            );
            assert_eq!(unpack(&packed).unwrap().as_ref(), text.as_bytes());
        }
    }

    #[test]
    fn plain_json_and_small_values_pass_through() {
        let plain = br#"{"id":"c_1"}"#.to_vec();
        assert_eq!(pack(plain.clone()), plain);
        assert_eq!(unpack(&plain).unwrap().as_ref(), &plain[..]);
    }

    #[test]
    fn corrupt_packed_values_are_errors() {
        let packed = pack(br#"{"id":"c_1","model":"gpt-4o","provider":"openai","status":"success","kind":"openai"}"#.to_vec());
        assert_eq!(packed[0], DICT_V1);
        assert!(unpack(&packed[..packed.len() - 3]).is_err());
        assert!(unpack(&[DICT_V1]).is_err());
        assert!(
            unpack(&[DICT_V1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err()
        );
    }
}
