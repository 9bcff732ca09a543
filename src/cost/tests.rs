//! Pricing tests: golden costs against the shipped table (each checked by hand
//! against the provider's published price list), matching rules, the file
//! format and layering. The LiteLLM converter's tests live with it (devtools/litellm.rs).

use super::decimal::parse_scaled;
use super::matching::{glob_match, normalised};
use super::*;
use crate::record::Usage;

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: Some(input),
        output_tokens: Some(output),
        ..Usage::default()
    }
}

fn table() -> PriceTable {
    PriceTable::embedded()
}

/// Prices with the shipped table and returns the cost, asserting it is priced.
fn priced(provider: &str, model: &str, u: &Usage) -> Cost {
    let c = table().price(provider, Some(model), None, u).unwrap();
    assert!(
        c.priced,
        "{provider}/{model} unpriced: {:?}",
        c.unpriced_reason
    );
    assert_eq!(
        c.total_pusd,
        c.input_pusd + c.cache_read_pusd + c.cache_creation_pusd + c.output_pusd
    );
    c
}

// ---------------------------------------------------------------- decimals

#[test]
fn decimal_prices_are_exact() {
    assert_eq!(parse_usd_per_million("2.50"), Ok(2_500_000));
    assert_eq!(parse_usd_per_million("2.5"), Ok(2_500_000));
    assert_eq!(parse_usd_per_million("0.1375"), Ok(137_500));
    assert_eq!(parse_usd_per_million("0.000001"), Ok(1));
    assert_eq!(parse_usd_per_million("15"), Ok(15_000_000));
    assert_eq!(parse_usd_per_million("1_000"), Ok(1_000_000_000));
    assert_eq!(parse_usd_per_million("+0.30"), Ok(300_000));
    assert_eq!(parse_usd_per_million("0"), Ok(0));
    assert_eq!(parse_usd_per_million("1.5e1"), Ok(15_000_000));
    assert_eq!(parse_usd_per_million("0.0000010"), Ok(1));
    // Per-token text as LiteLLM writes it, scaled straight to pUSD/token.
    assert_eq!(parse_scaled("1.25e-6", 12), Ok(1_250_000));
    assert_eq!(parse_scaled("1.375e-07", 12), Ok(137_500));
    assert!(parse_usd_per_million("0.0000001")
        .unwrap_err()
        .contains("more precision"));
    assert!(parse_usd_per_million("-1").is_err());
    assert!(parse_usd_per_million("abc").is_err());
    assert!(parse_usd_per_million("").is_err());
    assert!(parse_usd_per_million("1e30")
        .unwrap_err()
        .contains("too large"));
    for v in [0, 1, 137_500, 2_500_000, 15_000_000, 1_000_000_001] {
        assert_eq!(parse_usd_per_million(&format_usd_per_million(v)), Ok(v));
    }
    assert_eq!(format_usd_per_million(137_500), "0.1375");
    assert_eq!(format_usd_per_million(2_500_000), "2.5");
}

// ---------------------------------------------------------------- golden costs

#[test]
fn golden_openai_gpt4o_with_cached_tokens() {
    // gpt-4o list price: $2.50/M input, $1.25/M cached input, $10/M output.
    // 10_000 input of which 6_000 cached, 500 output:
    //   4_000 × $2.50/M = $0.0100
    //   6_000 × $1.25/M = $0.0075
    //     500 × $10/M   = $0.0050
    //   total           = $0.0225 = 22_500_000_000 pUSD
    let u = Usage {
        cache_read_tokens: Some(6_000),
        ..usage(10_000, 500)
    };
    let c = priced("openai", "gpt-4o", &u);
    assert_eq!(c.input_pusd, 10_000_000_000);
    assert_eq!(c.cache_read_pusd, 7_500_000_000);
    assert_eq!(c.output_pusd, 5_000_000_000);
    assert_eq!(c.cache_creation_pusd, 0);
    assert_eq!(c.total_pusd, 22_500_000_000);
    assert_eq!(c.total_usd, Some(0.0225));
    assert_eq!(c.price_key.as_deref(), Some("openai/gpt-4o"));
    assert!(c.table_version.unwrap().starts_with("litellm-"));
}

#[test]
fn golden_openai_reasoning_o4_mini() {
    // o4-mini: $1.10/M input, $4.40/M output; reasoning tokens are billed as output.
    // 2_000 input, 3_000 output of which 2_500 reasoning:
    //   2_000 × $1.10/M = $0.0022
    //   3_000 × $4.40/M = $0.0132 (reasoning share 2_500 × 4.40 = $0.0110)
    //   total           = $0.0154 = 15_400_000_000 pUSD
    let u = Usage {
        reasoning_tokens: Some(2_500),
        ..usage(2_000, 3_000)
    };
    let c = priced("openai", "o4-mini", &u);
    assert_eq!(c.input_pusd, 2_200_000_000);
    assert_eq!(c.output_pusd, 13_200_000_000);
    assert_eq!(c.reasoning_pusd, 11_000_000_000);
    assert_eq!(c.total_pusd, 15_400_000_000);
}

#[test]
fn golden_distinct_reasoning_rate() {
    // Perplexity sonar-deep-research: $2/M input, $8/M output, $3/M reasoning.
    // 100 input, 1_000 output of which 600 reasoning:
    //   100 × 2 = $0.0002; 400 × 8 = $0.0032; 600 × 3 = $0.0018 → $0.0052
    let u = Usage {
        reasoning_tokens: Some(600),
        ..usage(100, 1_000)
    };
    let c = priced("perplexity", "sonar-deep-research", &u);
    assert_eq!(c.input_pusd, 200_000_000);
    assert_eq!(c.reasoning_pusd, 1_800_000_000);
    assert_eq!(c.output_pusd, 5_000_000_000);
    assert_eq!(c.total_pusd, 5_200_000_000);
}

#[test]
fn golden_anthropic_cache_write_then_read() {
    // Claude Sonnet 4.5: $3/M input, $15/M output, cache writes $3.75/M (5 min)
    // and $6/M (1 h), cache hits $0.30/M.
    // Call 1 writes the cache: 12 plain input + 10_000 written (4_000 with 1h TTL), 300 output.
    //   12 × 3              = $0.000036
    //   6_000 × 3.75        = $0.0225
    //   4_000 × 6           = $0.024
    //   300 × 15            = $0.0045
    //   total               = $0.051036 = 51_036_000_000 pUSD
    let write = Usage {
        cache_creation_tokens: Some(10_000),
        cache_creation_1h_tokens: Some(4_000),
        cache_read_tokens: Some(0),
        ..usage(10_012, 300)
    };
    let c = priced("anthropic", "claude-sonnet-4-5", &write);
    assert_eq!(c.input_pusd, 36_000_000);
    assert_eq!(c.cache_creation_pusd, 46_500_000_000);
    assert_eq!(c.output_pusd, 4_500_000_000);
    assert_eq!(c.total_pusd, 51_036_000_000);
    // Call 2 reads it: 15 plain input + 10_000 cache hits, 200 output.
    //   15 × 3 = $0.000045; 10_000 × 0.30 = $0.003; 200 × 15 = $0.003 → $0.006045
    let read = Usage {
        cache_read_tokens: Some(10_000),
        cache_creation_tokens: Some(0),
        ..usage(10_015, 200)
    };
    let c = priced("anthropic", "claude-sonnet-4-5", &read);
    assert_eq!(c.input_pusd, 45_000_000);
    assert_eq!(c.cache_read_pusd, 3_000_000_000);
    assert_eq!(c.total_pusd, 6_045_000_000);
}

#[test]
fn golden_gemini_flash_with_thoughts() {
    // Gemini 2.5 Flash: $0.30/M input, $2.50/M output including thinking tokens.
    // 1_000 input, 1_500 output of which 1_200 thoughts:
    //   1_000 × 0.30 = $0.0003; 1_500 × 2.50 = $0.00375 → $0.00405
    let u = Usage {
        reasoning_tokens: Some(1_200),
        ..usage(1_000, 1_500)
    };
    let c = table()
        .price(
            "gemini",
            Some("gemini-2.5-flash"),
            Some("models/gemini-2.5-flash"),
            &u,
        )
        .unwrap();
    assert!(c.priced);
    assert_eq!(c.price_key.as_deref(), Some("gemini/gemini-2.5-flash"));
    assert_eq!(c.input_pusd, 300_000_000);
    assert_eq!(c.output_pusd, 3_750_000_000);
    assert_eq!(c.reasoning_pusd, 3_000_000_000);
    assert_eq!(c.total_pusd, 4_050_000_000);
}

#[test]
fn golden_gemini_pro_long_context_tier() {
    // Gemini 2.5 Pro: ≤200k prompt $1.25/M in, $10/M out, $0.125/M cached;
    // >200k prompt: $2.50/M in, $15/M out, $0.25/M cached, for the whole request.
    // 250_000 input of which 50_000 cached, 2_000 output:
    //   200_000 × 2.50 = $0.50; 50_000 × 0.25 = $0.0125; 2_000 × 15 = $0.03 → $0.5425
    let u = Usage {
        cache_read_tokens: Some(50_000),
        ..usage(250_000, 2_000)
    };
    let c = priced("gemini", "gemini-2.5-pro", &u);
    assert_eq!(c.tier_above_input_tokens, Some(200_000));
    assert_eq!(c.input_pusd, 500_000_000_000);
    assert_eq!(c.cache_read_pusd, 12_500_000_000);
    assert_eq!(c.output_pusd, 30_000_000_000);
    assert_eq!(c.total_pusd, 542_500_000_000);
    // Exactly 200_000 input is not "above": 200_000 × 1.25 + 2_000 × 10 = $0.27.
    let c = priced("gemini", "gemini-2.5-pro", &usage(200_000, 2_000));
    assert_eq!(c.tier_above_input_tokens, None);
    assert_eq!(c.total_pusd, 270_000_000_000);
}

#[test]
fn golden_claude_long_context_tier_with_cache() {
    // Claude Sonnet 4.5 above 200k input: $6/M in, $22.50/M out, $0.60/M hits,
    // $7.50/M 5-minute writes, $12/M 1-hour writes.
    // 300_000 input = 100_000 plain + 150_000 hits + 50_000 written (20_000 1h), 1_000 out:
    //   100_000 × 6 = $0.60; 150_000 × 0.60 = $0.09; 30_000 × 7.5 = $0.225;
    //   20_000 × 12 = $0.24; 1_000 × 22.5 = $0.0225 → $1.1775
    let u = Usage {
        cache_read_tokens: Some(150_000),
        cache_creation_tokens: Some(50_000),
        cache_creation_1h_tokens: Some(20_000),
        ..usage(300_000, 1_000)
    };
    let c = priced("anthropic", "claude-sonnet-4-5", &u);
    assert_eq!(c.tier_above_input_tokens, Some(200_000));
    assert_eq!(c.input_pusd, 600_000_000_000);
    assert_eq!(c.cache_read_pusd, 90_000_000_000);
    assert_eq!(c.cache_creation_pusd, 465_000_000_000);
    assert_eq!(c.output_pusd, 22_500_000_000);
    assert_eq!(c.total_pusd, 1_177_500_000_000);
}

#[test]
fn golden_dated_names_match_their_base_entry() {
    // Vertex-style snapshot name → claude-sonnet-4-5 ($3/$15): 1_000 × 3 + 100 × 15 = $0.0045.
    let c = priced(
        "anthropic",
        "claude-sonnet-4-5@20250929",
        &usage(1_000, 100),
    );
    assert_eq!(c.price_key.as_deref(), Some("anthropic/claude-sonnet-4-5"));
    assert_eq!(c.total_pusd, 4_500_000_000);
    // A snapshot date the table does not list yet → the undated entry.
    let m = table()
        .lookup(Some("anthropic"), "claude-sonnet-4-6-20990101")
        .unwrap();
    assert_eq!(m.price_key, "anthropic/claude-sonnet-4-6");
    assert!(
        m.explanation.contains("stripped date suffix"),
        "{}",
        m.explanation
    );
    let m = table()
        .lookup(Some("openai"), "gpt-4o-mini-2099-12-31")
        .unwrap();
    assert_eq!(m.price_key, "openai/gpt-4o-mini");
    // A dated entry that is in the table is used as is (gpt-4o-2024-05-13 is $5/$15, not gpt-4o's).
    let c = priced("openai", "gpt-4o-2024-05-13", &usage(1_000, 1_000));
    assert_eq!(c.total_pusd, 20_000_000_000);
}

#[test]
fn golden_azure_deployment() {
    // Azure OpenAI gpt-4o (global): $2.50/M in, $1.25/M cached, $10/M out.
    // 1_000 input (200 cached), 100 output: 800 × 2.5 + 200 × 1.25 + 100 × 10 = $0.00325
    let u = Usage {
        cache_read_tokens: Some(200),
        ..usage(1_000, 100)
    };
    let c = table()
        .price("azure", Some("my-gpt4o-deployment"), Some("gpt-4o"), &u)
        .unwrap();
    assert!(c.priced);
    assert_eq!(c.price_key.as_deref(), Some("azure/gpt-4o"));
    assert_eq!(c.total_pusd, 3_250_000_000);
    // A model Azure's section lacks falls back to OpenAI's list price.
    let azure_has = |m: &str| table().providers["azure"].exact.contains_key(m);
    assert!(!azure_has("gpt-4o-search-preview"));
    let m = table()
        .lookup(Some("azure"), "gpt-4o-search-preview")
        .unwrap();
    assert_eq!(m.price_key, "openai/gpt-4o-search-preview");
    assert!(m.explanation.contains("fallback"), "{}", m.explanation);
}

#[test]
fn golden_openrouter_maker_prefix() {
    // In OpenRouter's own section: anthropic/claude-sonnet-4 at $3/$15.
    // 2_000 × 3 + 500 × 15 = $0.0135
    let c = priced(
        "openrouter",
        "anthropic/claude-sonnet-4",
        &usage(2_000, 500),
    );
    assert_eq!(
        c.price_key.as_deref(),
        Some("openrouter/anthropic/claude-sonnet-4")
    );
    assert_eq!(c.total_pusd, 13_500_000_000);
    // Not in OpenRouter's section: the maker's entry, claude-haiku-4-5 at $1/$5.
    // 2_000 × 1 + 500 × 5 = $0.0045
    let c = priced(
        "openrouter",
        "anthropic/claude-haiku-4-5",
        &usage(2_000, 500),
    );
    assert_eq!(c.price_key.as_deref(), Some("anthropic/claude-haiku-4-5"));
    assert_eq!(c.total_pusd, 4_500_000_000);
    // A maker whose provider name differs goes through [makers].
    let m = table()
        .lookup(Some("openrouter"), "google/gemini-2.5-flash-lite")
        .unwrap();
    assert_eq!(m.price_key, "gemini/gemini-2.5-flash-lite");
    assert!(m.explanation.contains("maker"), "{}", m.explanation);
}

#[test]
fn unknown_model_is_unpriced_never_zero() {
    let c = table()
        .price(
            "openai",
            Some("totally-new-model-9000"),
            None,
            &usage(1_000, 1_000),
        )
        .unwrap();
    assert!(!c.priced);
    assert_eq!(c.total_usd, None);
    assert_eq!(c.price_key, None);
    assert!(c
        .unpriced_reason
        .unwrap()
        .contains("totally-new-model-9000"));
    assert!(c.table_version.is_some());
    assert!(table().lookup(None, "totally-new-model-9000").is_none());
    // Unknown provider: unpriced even for a known model name.
    let c = table()
        .price("bedrock", Some("gpt-4o"), None, &usage(1, 1))
        .unwrap();
    assert!(!c.priced);
    // No name at all.
    let c = table().price("openai", None, None, &usage(1, 1)).unwrap();
    assert!(!c.priced);
}

#[test]
fn no_usage_is_unpriced() {
    let c = table()
        .price("openai", Some("gpt-4o"), None, &Usage::default())
        .unwrap();
    assert!(!c.priced);
    assert_eq!(c.total_usd, None);
    assert_eq!(c.price_key.as_deref(), Some("openai/gpt-4o"));
    assert_eq!(
        c.unpriced_reason.as_deref(),
        Some("no token usage reported")
    );
    // Output only (e.g. a stream cut before the usage event reported input) is still priced.
    let u = Usage {
        output_tokens: Some(10),
        ..Usage::default()
    };
    assert_eq!(priced("openai", "gpt-4o", &u).total_pusd, 100_000_000);
}

#[test]
fn inconsistent_usage_saturates() {
    let u = Usage {
        cache_read_tokens: Some(5_000),
        cache_creation_tokens: Some(5_000),
        cache_creation_1h_tokens: Some(9_999),
        reasoning_tokens: Some(50),
        ..usage(100, 10)
    };
    let c = priced("anthropic", "claude-haiku-4-5", &u);
    assert_eq!(c.input_pusd, 0);
    // 1h part capped at the cache writes: 5_000 × $2/M; reasoning capped at output.
    assert_eq!(c.cache_creation_pusd, 10_000_000_000);
    assert_eq!(c.reasoning_pusd, c.output_pusd);
    let huge = usage(u64::MAX, u64::MAX);
    let c = table()
        .price("anthropic", Some("claude-haiku-4-5"), None, &huge)
        .unwrap();
    assert!(c.priced);
    assert_eq!(c.total_pusd, u64::MAX);
}

#[test]
fn response_model_first_then_requested() {
    let u = usage(1_000_000, 0);
    // The response names the snapshot actually served.
    let c = table()
        .price("openai", Some("gpt-4o"), Some("gpt-4o-2024-05-13"), &u)
        .unwrap();
    assert_eq!(c.price_key.as_deref(), Some("openai/gpt-4o-2024-05-13"));
    // Unknown response model: the requested one is used.
    let c = table()
        .price("openai", Some("gpt-4o"), Some("weird-alias"), &u)
        .unwrap();
    assert_eq!(c.price_key.as_deref(), Some("openai/gpt-4o"));
    assert_eq!(c.total_pusd, 2_500_000_000_000);
}

#[test]
fn million_calls_sum_exactly() {
    let t = table();
    let u = Usage {
        cache_read_tokens: Some(6_000),
        ..usage(10_000, 500)
    };
    let one = t
        .price("openai", Some("gpt-4o"), None, &u)
        .unwrap()
        .total_pusd;
    let mut sum: u64 = 0;
    for _ in 0..1_000_000 {
        sum += t
            .price("openai", Some("gpt-4o"), None, &u)
            .unwrap()
            .total_pusd;
    }
    assert_eq!(one, 22_500_000_000);
    assert_eq!(sum, 1_000_000 * one);
    assert_eq!(sum, 22_500_000_000_000_000); // $22_500 exactly
}

// ---------------------------------------------------------------- matching

#[test]
fn glob_and_normaliser() {
    assert!(glob_match("gpt-4o*", "gpt-4o-mini"));
    assert!(glob_match("*-mini", "gpt-4o-mini"));
    assert!(glob_match("ft:*:org:*", "ft:gpt-4o:org:x"));
    assert!(glob_match("abc", "abc"));
    assert!(!glob_match("abc", "abcd"));
    assert!(!glob_match("a*c", "abd"));
    let names: Vec<String> = normalised("openai/gpt-4o-2024-08-06")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["gpt-4o-2024-08-06", "gpt-4o"]);
    let names: Vec<String> = normalised("claude-sonnet-4-5@20250929")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["claude-sonnet-4-5"]);
    let names: Vec<String> = normalised("claude-sonnet-4.5-20250929-latest")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "claude-sonnet-4.5-20250929",
            "claude-sonnet-4.5",
            "claude-sonnet-4-5"
        ]
    );
    assert!(normalised("gpt-4o").is_empty());
    // Not dates: model sizes and versions stay.
    assert!(normalised("llama-3-70b").is_empty());
    assert!(normalised("gpt-4-0613").is_empty());
}

const RULES_A: &str = r#"
version = "t"
[[rules]]
provider = "p"
pattern = "gpt-*"
model = "generic"
[[rules]]
provider = "p"
pattern = "gpt-4o-*"
model = "specific"
[models.p]
"generic" = { input = "1", output = "1" }
"specific" = { input = "2", output = "2" }
"#;

const RULES_B: &str = r#"
version = "t"
[[rules]]
provider = "p"
pattern = "gpt-4o-*"
model = "specific"
[[rules]]
provider = "p"
pattern = "gpt-*"
model = "generic"
[models.p]
"specific" = { input = "2", output = "2" }
"generic" = { input = "1", output = "1" }
"#;

#[test]
fn longest_rule_wins_regardless_of_file_order() {
    for text in [RULES_A, RULES_B] {
        let t = PriceTable::from_toml(text, "rules.toml").unwrap();
        let key = |m: &str| t.lookup(Some("p"), m).map(|m| m.price_key);
        assert_eq!(key("gpt-4o-mini").as_deref(), Some("p/specific"));
        assert_eq!(key("GPT-4O-MINI").as_deref(), Some("p/specific"));
        assert_eq!(key("gpt-3.5").as_deref(), Some("p/generic"));
        assert_eq!(key("claude"), None);
        // Exact beats any rule.
        assert_eq!(key("generic").as_deref(), Some("p/generic"));
        let m = t.lookup(Some("p"), "gpt-4o-x").unwrap();
        assert!(m.explanation.contains("rules.toml:"), "{}", m.explanation);
    }
}

#[test]
fn fine_tuned_openai_models_match_their_base() {
    let m = table()
        .lookup(Some("openai"), "ft:gpt-4o-mini-2024-07-18:acme::B7x1")
        .unwrap();
    assert_eq!(m.price_key, "openai/ft:gpt-4o-mini-2024-07-18");
}

#[test]
fn lookup_without_provider() {
    let t = table();
    assert_eq!(t.lookup(None, "gpt-4o").unwrap().price_key, "openai/gpt-4o");
    assert_eq!(
        t.lookup(None, "anthropic/claude-sonnet-4-5")
            .unwrap()
            .price_key,
        "anthropic/claude-sonnet-4-5"
    );
    assert_eq!(
        t.lookup(None, "claude-sonnet-4-5-20250929")
            .unwrap()
            .price_key,
        "anthropic/claude-sonnet-4-5-20250929"
    );
}

// ---------------------------------------------------------------- file format & layering

#[test]
fn embedded_table_is_valid_and_versioned() {
    let t = PriceTable::from_toml(EMBEDDED_TOML, EMBEDDED_LABEL).unwrap();
    assert!(t.len() > 500, "{}", t.len());
    assert!(
        t.version().starts_with("litellm-2026-11-21+"),
        "{}",
        t.version()
    );
    assert_eq!(t.version(), PriceTable::embedded().version());
    assert_eq!(t.version(), PriceTable::load(None).unwrap().version());
    for p in [
        "openai",
        "anthropic",
        "gemini",
        "azure",
        "groq",
        "mistral",
        "openrouter",
        "deepseek",
        "together",
        "ollama",
    ] {
        assert!(
            t.entries().iter().any(|e| e.provider == p),
            "no entries for {p}"
        );
    }
}

const USER: &str = r#"
version = "acme-2026-12"
[models.openai]
"gpt-4o" = { input = 2, output = "8.00" }
"acme-private" = { input = "0.5", output = "1.5", cache_read = "0.05" }
[[rules]]
provider = "openai"
pattern = "acme-*"
model = "acme-private"
"#;

#[test]
fn user_file_layers_over_default() {
    let t = PriceTable::layered(USER, "user.toml").unwrap();
    let base = table();
    // Overridden: 1M input × $2 = 2e12 pUSD.
    let c = t
        .price("openai", Some("GPT-4o"), None, &usage(1_000_000, 0))
        .unwrap();
    assert_eq!(c.total_pusd, 2_000_000_000_000);
    // Added, and reachable by a rule.
    assert_eq!(
        t.lookup(Some("openai"), "acme-v2").unwrap().price_key,
        "openai/acme-private"
    );
    // Kept: everything else is the default.
    assert_eq!(t.len(), base.len() + 1);
    let mini = |t: &PriceTable| t.lookup(Some("openai"), "gpt-4o-mini").unwrap().price;
    assert_eq!(mini(&t).rates, mini(&base).rates);
    let entry = t.lookup(Some("openai"), "gpt-4o").unwrap().price;
    assert_eq!(entry.file, "user.toml");
    assert_eq!(entry.rates.cache_read, None);
    // The version names both layers and differs from the default's.
    assert!(t.version().starts_with("litellm-2026-11-21+acme-2026-12+"));
    assert_ne!(t.version(), base.version());
}

#[test]
fn load_and_check_file_read_a_user_file() {
    let dir = std::env::temp_dir().join(format!("llmtap-cost-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, USER).unwrap();
    let t = PriceTable::load(Some(&good)).unwrap();
    assert!(t.lookup(Some("openai"), "acme-private").is_some());
    assert!(PriceTable::check_file(&good).is_ok());
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[models.openai]\n\"x\" = { input = \"1\" }\n").unwrap();
    let e = PriceTable::check_file(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.toml:2") && e.contains("output"), "{e}");
    let e = PriceTable::load(Some(&dir.join("missing.toml"))).unwrap_err();
    assert!(matches!(e, PriceError::Io { .. }));
    assert!(e.to_string().contains("missing.toml"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_user_files_give_clear_errors() {
    let err = |text: &str| {
        PriceTable::layered(text, "user.toml")
            .unwrap_err()
            .to_string()
    };
    let e = err("[models.openai]\n\"gpt-4o\" = { input = \"2.5\", output = \"ten\" }\n");
    assert_eq!(
        e,
        "user.toml:2: model openai/gpt-4o: output: \"ten\" is not a decimal number"
    );
    let e = err("\n\n[models.openai]\n\"gpt-4o\" = { input = 0.0000001, output = 1 }\n");
    assert!(
        e.starts_with("user.toml:4: model openai/gpt-4o: input:"),
        "{e}"
    );
    assert!(e.contains("more precision"), "{e}");
    let e = err("[models.openai]\n\"gpt-4o\" = { input = \"-1\", output = \"1\" }\n");
    assert!(e.contains("negative"), "{e}");
    let e = err("[models.openai]\n\"gpt-4o\" = { inptu = \"1\", output = \"1\" }\n");
    assert!(e.starts_with("user.toml:2:") && e.contains("inptu"), "{e}");
    let e = err("[models.openai\n");
    assert!(e.starts_with("user.toml:1: invalid price table"), "{e}");
    let e = err("[[rules]]\nprovider = \"openai\"\npattern = \"x*\"\nmodel = \"nope\"\n");
    assert!(e.starts_with("user.toml:1: rule \"x*\""), "{e}");
    assert!(e.contains("\"nope\" is not in provider openai"), "{e}");
    let e = err(
        "[models.openai]\n\"A\" = { input = 1, output = 1 }\n\"a\" = { input = 1, output = 1 }\n",
    );
    assert!(e.contains("case-insensitive"), "{e}");
    let e = err("[providers.x]\nfallback = [\"nowhere\"]\n");
    assert!(e.contains("\"nowhere\" has no models"), "{e}");
}

#[test]
fn bare_toml_numbers_are_read_exactly() {
    // 0.1 + 0.2 style values must not pick up float error.
    let t = PriceTable::from_toml(
        "[models.p]\n\"m\" = { input = 0.1, output = 0.3, cache_read = 1e-2, reasoning = 7 }\n",
        "n.toml",
    )
    .unwrap();
    let r = &t.lookup(Some("p"), "m").unwrap().price.rates;
    assert_eq!((r.input, r.output), (100_000, 300_000));
    assert_eq!((r.cache_read, r.reasoning), (Some(10_000), Some(7_000_000)));
}

#[test]
fn tiers_inherit_and_pick_highest_exceeded() {
    let t = PriceTable::from_toml(
        r#"[models.p]
"m" = { input = 1, output = 2, cache_read = "0.1", tiers = [{ above_input_tokens = 272000, input = 4 }, { above_input_tokens = 128000, input = 2, output = 4 }] }
"#,
        "t.toml",
    )
    .unwrap();
    let m = t.lookup(Some("p"), "m").unwrap().price;
    let (r, tier) = m.rates_for(128_000);
    assert_eq!((r.input, tier), (1_000_000, None));
    let (r, tier) = m.rates_for(128_001);
    assert_eq!(
        (r.input, r.output, tier),
        (2_000_000, 4_000_000, Some(128_000))
    );
    let (r, tier) = m.rates_for(300_000);
    // Output and cache_read inherited from the base entry, not the lower tier.
    assert_eq!(
        (r.input, r.output, r.cache_read, tier),
        (4_000_000, 2_000_000, Some(100_000), Some(272_000))
    );
}

#[test]
fn missing_cache_prices_bill_at_input_rate() {
    // groq llama-3.3-70b-versatile has no cache prices: $0.59/M in, $0.79/M out.
    // 1_000 input (400 "cached") + 100 out = 1_000 × 0.59 + 100 × 0.79 = $0.000669
    let u = Usage {
        cache_read_tokens: Some(400),
        ..usage(1_000, 100)
    };
    let c = priced("groq", "llama-3.3-70b-versatile", &u);
    assert_eq!(c.total_pusd, 669_000_000);
    assert_eq!(c.cache_read_pusd, 236_000_000);
}

#[test]
fn user_rule_replaces_default_rule_with_same_pattern() {
    let user = "[[rules]]\nprovider = \"OpenAI\"\npattern = \"FT:gpt-4o-mini-2024-07-18:*\"\nmodel = \"gpt-4o-mini\"\n";
    let t = PriceTable::layered(user, "user.toml").unwrap();
    let m = t
        .lookup(Some("openai"), "ft:gpt-4o-mini-2024-07-18:acme::x")
        .unwrap();
    assert_eq!(m.price_key, "openai/gpt-4o-mini");
    assert!(m.explanation.contains("user.toml:1"), "{}", m.explanation);
}

#[test]
fn derived_rates_carry_a_note() {
    let m = table()
        .lookup(Some("anthropic"), "claude-4-opus-20250514")
        .unwrap();
    assert_eq!(m.price.rates.cache_write_1h, Some(30_000_000));
    assert!(m.price.note.unwrap().contains("derived"));
}
