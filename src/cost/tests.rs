//! Tests for pricing.
use super::*;

#[test]
fn embedded_table_loads() {
    let t = PriceTable::from_toml(EMBEDDED_TOML, EMBEDDED_LABEL).unwrap();
    assert!(t.len() > 500, "{}", t.len());
    println!("{}", t.version());
    for m in ["gpt-4o", "claude-sonnet-4-5-20250929", "gemini-2.5-pro"] {
        println!("{:?}", t.lookup(None, m).map(|m| m.explanation));
    }
}
