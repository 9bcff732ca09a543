//! Prices: the price table, model-name matching, and exact cost arithmetic.
//!
//! The shipped table (`config/prices.toml`, USD per million tokens) is embedded
//! at build time and can be layered with a user file at start-up. Everything
//! except [`PriceTable::load`]/[`PriceTable::check_file`] is pure: matching and
//! arithmetic run per request on the hot path, so they only do hash lookups on
//! an index built once at load time, and all money is integer picodollars.
//!
//! Layout: `decimal` (exact $/M parsing), `table` (file format, layering,
//! index), `matching` (model name → entry), `arith` (usage → [`Cost`]). The LiteLLM
//! importer is developer tooling in the binary (`devtools/litellm.rs`).

mod arith;
mod decimal;
mod matching;
mod table;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::record::{Cost, Usage};

pub use decimal::{format_usd_per_million, parse_scaled, parse_usd_per_million};
pub use table::PriceTable;

/// The default table, compiled in so a fresh binary prices calls with no setup.
pub const EMBEDDED_TOML: &str = include_str!("../../config/prices.toml");

/// What the embedded table is called in error messages.
pub const EMBEDDED_LABEL: &str = "<embedded config/prices.toml>";

/// Why a price table (or a LiteLLM import) could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("cannot read price file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: invalid price table: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: model {model}: {field}: {message}")]
    Price {
        file: String,
        line: usize,
        /// `provider/model`.
        model: String,
        field: String,
        message: String,
    },
    #[error("{file}:{line}: rule {pattern:?} for provider {provider}: {message}")]
    Rule {
        file: String,
        line: usize,
        provider: String,
        pattern: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Table { file: String, message: String },
    #[error("LiteLLM import: invalid JSON at line {line}, column {column}: {message}")]
    ImportJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("LiteLLM import: model {model:?}: {message}")]
    Import { model: String, message: String },
}

/// Prices of one model (or one long-context tier of it), in picodollars per token.
///
/// An absent optional rate means "no special rate": that bucket is billed at the
/// base rate (cache read/write at `input`, reasoning at `output`, 1-hour cache
/// write at `cache_write`). That is how providers without a discount or surcharge
/// bill, and it keeps the file free of redundant columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rates {
    pub input: u64,
    pub output: u64,
    pub cache_read: Option<u64>,
    /// Cache write with the default (5-minute) lifetime.
    pub cache_write: Option<u64>,
    pub cache_write_1h: Option<u64>,
    pub reasoning: Option<u64>,
}

/// A long-context tier: when a request's input (cache included) exceeds
/// `above_input_tokens`, these rates apply to the whole request, as providers bill.
/// Rates the file leaves out of a tier are inherited from the base entry at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub above_input_tokens: u64,
    pub rates: Rates,
}

/// One model's entry in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub provider: String,
    /// The name as written in the file.
    pub model: String,
    pub rates: Rates,
    /// Sorted by ascending threshold.
    pub tiers: Vec<Tier>,
    /// The file's free-text note (e.g. which rates were derived and why).
    pub note: Option<String>,
    /// Where the entry was defined: file label and line.
    pub file: String,
    pub line: usize,
}

impl ModelPrice {
    /// `provider/model`, the key recorded in [`Cost::price_key`].
    pub fn key(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }

    /// The rates for a request with `input_tokens` of input: the highest tier
    /// whose threshold is exceeded, else the base rates.
    pub fn rates_for(&self, input_tokens: u64) -> (&Rates, Option<u64>) {
        match self
            .tiers
            .iter()
            .rev()
            .find(|t| input_tokens > t.above_input_tokens)
        {
            Some(t) => (&t.rates, Some(t.above_input_tokens)),
            None => (&self.rates, None),
        }
    }
}

/// The result of [`PriceTable::lookup`]: which entry a model name resolved to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceMatch {
    /// `provider/model` of the entry.
    pub price_key: String,
    pub price: ModelPrice,
    /// A one-line human explanation, e.g. "exact match in anthropic after
    /// normalising (stripped date suffix) 'claude-sonnet-4-5-20250929' → 'claude-sonnet-4-5'".
    pub explanation: String,
}

impl PriceTable {
    /// The embedded default table alone.
    ///
    /// The embedded text is checked by the test suite, so failure here means a
    /// broken build; rather than panic in a proxy we return an empty table, so
    /// every call is recorded as unpriced (never as a wrong cost).
    pub fn embedded() -> PriceTable {
        table::embedded_cached()
    }

    /// The embedded default with an optional user file layered over it:
    /// models in the user file replace the default entry of the same
    /// provider/name (case-insensitive), rules with the same provider and pattern
    /// replace the default's, everything else is kept.
    pub fn load(user_file: Option<&Path>) -> Result<PriceTable, PriceError> {
        let Some(path) = user_file else {
            return PriceTable::from_toml(EMBEDDED_TOML, EMBEDDED_LABEL);
        };
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        PriceTable::layered(&text, &path.display().to_string())
    }

    /// Validates a user price file the way [`PriceTable::load`] would use it
    /// (layered over the default, so its rules may target default entries).
    pub fn check_file(path: &Path) -> Result<PriceTable, PriceError> {
        PriceTable::load(Some(path))
    }

    /// Prices one call. `provider` is the route's provider name; `response_model`
    /// is tried first, then the requested `model`.
    ///
    /// Always returns `Some`: when the call cannot be priced (model not in the
    /// table, or no usage reported) the cost has `priced = false`,
    /// `total_usd = None`, all amounts 0 and `unpriced_reason` set, so callers
    /// must test `priced` (or `total_usd`) before summing, never the amounts alone.
    pub fn price(
        &self,
        provider: &str,
        model: Option<&str>,
        response_model: Option<&str>,
        usage: &Usage,
    ) -> Option<Cost> {
        let entry = [response_model, model]
            .into_iter()
            .flatten()
            .find_map(|name| self.resolve(Some(provider), name));
        let version = Some(self.version().to_string());
        let Some(hit) = entry else {
            let names: Vec<&str> = [response_model, model].into_iter().flatten().collect();
            return Some(Cost {
                table_version: version,
                unpriced_reason: Some(if names.is_empty() {
                    "no model name in the call".to_string()
                } else {
                    format!("no price for {} (provider {provider})", names.join(" / "))
                }),
                ..Cost::default()
            });
        };
        let entry = self.entry(hit.entry);
        let mut cost = arith::compute(entry, usage);
        cost.table_version = version;
        Some(cost)
    }

    /// Resolves a model name the way [`PriceTable::price`] does and explains the match.
    /// With no provider, a `maker/` prefix picks the provider, else the table's
    /// `provider_order` is searched.
    pub fn lookup(&self, provider: Option<&str>, model: &str) -> Option<PriceMatch> {
        let hit = self.resolve(provider, model)?;
        let price = self.entry(hit.entry).clone();
        Some(PriceMatch {
            price_key: price.key(),
            explanation: hit.explain(model, &price),
            price,
        })
    }
}
