//! The price file format, layering of a user file over the default, and the
//! lookup index built once at load time.
//!
//! Format (TOML, prices in USD per million tokens, written as strings or bare
//! numbers; bare numbers are read from their source text, never via a float):
//!
//! ```toml
//! version = "litellm-2026-11-21"
//! source = "where the prices come from"
//! provider_order = ["openai", "anthropic"]   # search order when no provider is known
//!
//! [providers.azure]
//! fallback = ["openai"]        # providers tried when azure has no match
//! [providers.openrouter]
//! by_maker = true              # "anthropic/claude-x" → the maker's entry
//! [makers]
//! google = "gemini"            # maker prefix → provider, when they differ
//!
//! [[rules]]                    # explicit matches: `*` globs, longest pattern wins
//! provider = "openai"
//! pattern = "ft:gpt-4o-2024-08-06:*"
//! model = "ft:gpt-4o-2024-08-06"
//!
//! [models.anthropic]
//! "claude-sonnet-4-5" = { input = "3", output = "15", cache_read = "0.3", cache_write = "3.75", cache_write_1h = "6", tiers = [{ above_input_tokens = 200000, input = "6", output = "22.5" }] }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;
use toml::Spanned;

use super::decimal::parse_usd_per_million;
use super::{ModelPrice, PriceError, Rates, Tier, EMBEDDED_LABEL, EMBEDDED_TOML};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    version: Option<String>,
    source: Option<String>,
    provider_order: Option<Vec<String>>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderDoc>,
    #[serde(default)]
    makers: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<Spanned<RuleDoc>>,
    #[serde(default)]
    models: BTreeMap<String, BTreeMap<String, Spanned<ModelDoc>>>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
struct ProviderDoc {
    fallback: Option<Vec<String>>,
    by_maker: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    provider: String,
    pattern: String,
    model: String,
}

type PriceLit = Spanned<toml::Value>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelDoc {
    input: PriceLit,
    output: PriceLit,
    cache_read: Option<PriceLit>,
    cache_write: Option<PriceLit>,
    cache_write_1h: Option<PriceLit>,
    reasoning: Option<PriceLit>,
    #[serde(default)]
    tiers: Vec<TierDoc>,
    /// Free text for humans (e.g. why a rate was derived); not used by pricing.
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierDoc {
    above_input_tokens: u64,
    input: Option<PriceLit>,
    output: Option<PriceLit>,
    cache_read: Option<PriceLit>,
    cache_write: Option<PriceLit>,
    cache_write_1h: Option<PriceLit>,
    reasoning: Option<PriceLit>,
}

struct RawRule {
    provider: String,
    pattern: String,
    model: String,
    file: String,
    line: usize,
}

/// One parsed file (or several layered), before indexing.
#[derive(Default)]
struct Raw {
    versions: Vec<String>,
    source: Option<String>,
    provider_order: Vec<String>,
    providers: BTreeMap<String, ProviderDoc>,
    makers: BTreeMap<String, String>,
    /// Keyed by (provider, lowercase pattern) so layering replaces case-insensitively.
    rules: BTreeMap<(String, String), RawRule>,
    models: BTreeMap<(String, String), ModelPrice>,
}

/// The price table in force: entries plus the per-provider lookup index.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    pub(crate) entries: Vec<ModelPrice>,
    pub(crate) providers: HashMap<String, ProviderIndex>,
    pub(crate) makers: HashMap<String, String>,
    pub(crate) provider_order: Vec<String>,
    version: String,
    source: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ProviderIndex {
    /// Lowercase model name → entry.
    pub(crate) exact: HashMap<String, usize>,
    /// Sorted most specific first (most literal characters), so the first match
    /// is the longest rule whatever the file order.
    pub(crate) rules: Vec<IndexedRule>,
    pub(crate) fallback: Vec<String>,
    pub(crate) by_maker: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct IndexedRule {
    /// Lowercase glob.
    pub(crate) pattern: String,
    pub(crate) literal_len: usize,
    pub(crate) target: usize,
    pub(crate) file: String,
    pub(crate) line: usize,
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// FNV-1a: a stable content hash for the table version (std's hasher is not
/// guaranteed stable across Rust releases).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Where a price literal came from, for error messages.
struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
    provider: &'a str,
    model: &'a str,
}

impl Ctx<'_> {
    fn price(&self, field: &str, lit: &PriceLit) -> Result<u64, PriceError> {
        let span = lit.span();
        let err = |message: String| PriceError::Price {
            file: self.file.to_string(),
            line: line_of(self.text, span.start),
            model: format!("{}/{}", self.provider, self.model),
            field: field.to_string(),
            message,
        };
        let parsed = match lit.get_ref() {
            toml::Value::String(s) => parse_usd_per_million(s),
            toml::Value::Integer(i) => parse_usd_per_million(&i.to_string()),
            // The float was parsed by TOML; re-read its literal text so the value is exact.
            toml::Value::Float(_) => match self.text.get(span.clone()) {
                Some(src) => parse_usd_per_million(src),
                None => Err("cannot read the number's text".to_string()),
            },
            other => Err(format!(
                "expected a price in USD per million tokens, found a {}",
                other.type_str()
            )),
        };
        parsed.map_err(err)
    }

    fn opt(&self, field: &str, lit: &Option<PriceLit>) -> Result<Option<u64>, PriceError> {
        lit.as_ref().map(|l| self.price(field, l)).transpose()
    }
}

fn parse_file(text: &str, file: &str) -> Result<Raw, PriceError> {
    let doc: FileDoc = toml::from_str(text).map_err(|e| PriceError::Syntax {
        file: file.to_string(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e.message().to_string(),
    })?;
    let mut raw = Raw {
        versions: doc.version.into_iter().collect(),
        source: doc.source,
        provider_order: doc
            .provider_order
            .unwrap_or_default()
            .iter()
            .map(|p| p.to_ascii_lowercase())
            .collect(),
        ..Raw::default()
    };
    for (name, conf) in doc.providers {
        raw.providers.insert(name.to_ascii_lowercase(), conf);
    }
    for (maker, provider) in doc.makers {
        raw.makers
            .insert(maker.to_ascii_lowercase(), provider.to_ascii_lowercase());
    }
    for rule in doc.rules {
        let line = line_of(text, rule.span().start);
        let rule = rule.into_inner();
        let provider = rule.provider.to_ascii_lowercase();
        let key = (provider.clone(), rule.pattern.to_ascii_lowercase());
        if raw.rules.contains_key(&key) {
            return Err(PriceError::Rule {
                file: file.to_string(),
                line,
                provider,
                pattern: rule.pattern,
                message: "the same pattern is defined twice".into(),
            });
        }
        raw.rules.insert(
            key,
            RawRule {
                provider,
                pattern: rule.pattern,
                model: rule.model,
                file: file.to_string(),
                line,
            },
        );
    }
    for (provider, models) in doc.models {
        let provider = provider.to_ascii_lowercase();
        for (model, spanned) in models {
            let line = line_of(text, spanned.span().start);
            let m = spanned.into_inner();
            let ctx = Ctx {
                text,
                file,
                provider: &provider,
                model: &model,
            };
            let rates = Rates {
                input: ctx.price("input", &m.input)?,
                output: ctx.price("output", &m.output)?,
                cache_read: ctx.opt("cache_read", &m.cache_read)?,
                cache_write: ctx.opt("cache_write", &m.cache_write)?,
                cache_write_1h: ctx.opt("cache_write_1h", &m.cache_write_1h)?,
                reasoning: ctx.opt("reasoning", &m.reasoning)?,
            };
            let mut tiers = Vec::with_capacity(m.tiers.len());
            for t in &m.tiers {
                // A tier rate the file leaves out is the base entry's rate.
                let inherit = |v: Option<u64>, base: Option<u64>| v.or(base);
                let tier_rates = Rates {
                    input: ctx.opt("tiers.input", &t.input)?.unwrap_or(rates.input),
                    output: ctx.opt("tiers.output", &t.output)?.unwrap_or(rates.output),
                    cache_read: inherit(
                        ctx.opt("tiers.cache_read", &t.cache_read)?,
                        rates.cache_read,
                    ),
                    cache_write: inherit(
                        ctx.opt("tiers.cache_write", &t.cache_write)?,
                        rates.cache_write,
                    ),
                    cache_write_1h: inherit(
                        ctx.opt("tiers.cache_write_1h", &t.cache_write_1h)?,
                        rates.cache_write_1h,
                    ),
                    reasoning: inherit(ctx.opt("tiers.reasoning", &t.reasoning)?, rates.reasoning),
                };
                if tiers
                    .iter()
                    .any(|x: &Tier| x.above_input_tokens == t.above_input_tokens)
                {
                    return Err(PriceError::Price {
                        file: file.to_string(),
                        line,
                        model: format!("{provider}/{model}"),
                        field: "tiers".into(),
                        message: format!("two tiers above {} input tokens", t.above_input_tokens),
                    });
                }
                tiers.push(Tier {
                    above_input_tokens: t.above_input_tokens,
                    rates: tier_rates,
                });
            }
            tiers.sort_by_key(|t| t.above_input_tokens);
            let key = (provider.clone(), model.to_ascii_lowercase());
            if let Some(prev) = raw.models.get(&key) {
                return Err(PriceError::Price {
                    file: file.to_string(),
                    line,
                    model: format!("{provider}/{model}"),
                    field: "name".into(),
                    message: format!(
                        "same model as {:?} on line {} (names are case-insensitive)",
                        prev.model, prev.line
                    ),
                });
            }
            raw.models.insert(
                key,
                ModelPrice {
                    provider: provider.clone(),
                    model,
                    rates,
                    tiers,
                    note: m.note,
                    file: file.to_string(),
                    line,
                },
            );
        }
    }
    Ok(raw)
}

impl Raw {
    /// Layers `over` on top of `self`: single entries replaced, the rest kept.
    fn layer(mut self, over: Raw) -> Raw {
        self.versions.extend(over.versions);
        if over.source.is_some() {
            self.source = over.source;
        }
        if !over.provider_order.is_empty() {
            self.provider_order = over.provider_order;
        }
        for (name, conf) in over.providers {
            let slot = self.providers.entry(name).or_default();
            if conf.fallback.is_some() {
                slot.fallback = conf.fallback;
            }
            if conf.by_maker.is_some() {
                slot.by_maker = conf.by_maker;
            }
        }
        self.makers.extend(over.makers);
        self.rules.extend(over.rules);
        self.models.extend(over.models);
        self
    }

    fn build(self, hash: u64, file: &str) -> Result<PriceTable, PriceError> {
        let mut table = PriceTable {
            version: format!(
                "{}+{:08x}",
                if self.versions.is_empty() {
                    "unversioned".to_string()
                } else {
                    self.versions.join("+")
                },
                hash >> 32
            ),
            source: self.source,
            provider_order: self.provider_order,
            ..PriceTable::default()
        };
        for ((provider, lower), entry) in self.models {
            let idx = table.entries.len();
            table.entries.push(entry);
            table
                .providers
                .entry(provider)
                .or_default()
                .exact
                .insert(lower, idx);
        }
        for (name, conf) in &self.providers {
            let index = table.providers.entry(name.clone()).or_default();
            index.fallback = conf
                .fallback
                .iter()
                .flatten()
                .map(|p| p.to_ascii_lowercase())
                .collect();
            index.by_maker = conf.by_maker.unwrap_or(false);
        }
        let known = |p: &str| table.providers.get(p).is_some_and(|i| !i.exact.is_empty());
        for (name, conf) in &table.providers {
            for fb in &conf.fallback {
                if !known(fb) {
                    return Err(PriceError::Table {
                        file: file.to_string(),
                        message: format!("provider {name}: fallback provider {fb:?} has no models"),
                    });
                }
            }
        }
        for (maker, provider) in &self.makers {
            if !known(provider) {
                return Err(PriceError::Table {
                    file: file.to_string(),
                    message: format!(
                        "maker {maker:?} maps to provider {provider:?}, which has no models"
                    ),
                });
            }
        }
        table.makers = self.makers.into_iter().collect();
        for ((provider, pattern), rule) in self.rules {
            let err = |message: String| PriceError::Rule {
                file: rule.file.clone(),
                line: rule.line,
                provider: provider.clone(),
                pattern: rule.pattern.clone(),
                message,
            };
            let literal_len = pattern.chars().filter(|c| *c != '*').count();
            if literal_len == 0 {
                return Err(err(
                    "a pattern needs at least one character besides `*`".into()
                ));
            }
            let target = table
                .providers
                .get(&provider)
                .and_then(|i| i.exact.get(&rule.model.to_ascii_lowercase()))
                .copied()
                .ok_or_else(|| {
                    err(format!(
                        "target model {:?} is not in provider {}",
                        rule.model, rule.provider
                    ))
                })?;
            table
                .providers
                .entry(provider.clone())
                .or_default()
                .rules
                .push(IndexedRule {
                    pattern,
                    literal_len,
                    target,
                    file: rule.file.clone(),
                    line: rule.line,
                });
        }
        for index in table.providers.values_mut() {
            index.rules.sort_by(|a, b| {
                b.literal_len
                    .cmp(&a.literal_len)
                    .then_with(|| {
                        a.pattern
                            .matches('*')
                            .count()
                            .cmp(&b.pattern.matches('*').count())
                    })
                    .then_with(|| a.pattern.cmp(&b.pattern))
            });
        }
        Ok(table)
    }
}

impl PriceTable {
    /// Parses one table from TOML text; `label` names it in errors. No I/O.
    pub fn from_toml(text: &str, label: &str) -> Result<PriceTable, PriceError> {
        parse_file(text, label)?.build(fnv1a(&[text]), label)
    }

    /// The embedded default with `user_text` layered over it. No I/O.
    pub fn layered(user_text: &str, user_label: &str) -> Result<PriceTable, PriceError> {
        let base = parse_file(EMBEDDED_TOML, EMBEDDED_LABEL)?;
        let over = parse_file(user_text, user_label)?;
        base.layer(over)
            .build(fnv1a(&[EMBEDDED_TOML, user_text]), user_label)
    }

    /// The table's version: the declared version(s) plus a short content hash,
    /// recorded in every [`crate::record::Cost::table_version`].
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The `source` line of the (last layered) file.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Number of model entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, in provider/name order.
    pub fn entries(&self) -> &[ModelPrice] {
        &self.entries
    }

    pub(crate) fn entry(&self, idx: usize) -> &ModelPrice {
        &self.entries[idx]
    }
}

/// The embedded table, parsed once per process.
pub(crate) fn embedded_cached() -> PriceTable {
    static CACHE: OnceLock<PriceTable> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            PriceTable::from_toml(EMBEDDED_TOML, EMBEDDED_LABEL).unwrap_or_else(|e| {
                tracing::error!("embedded price table is invalid, all calls unpriced: {e}");
                PriceTable {
                    version: "invalid-embedded-table".into(),
                    ..PriceTable::default()
                }
            })
        })
        .clone()
}
