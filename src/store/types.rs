//! The engine interface's own types: what an `Engine` (`engine.rs`) takes and
//! answers besides records and summaries. They belong to neither engine: the sled and
//! PostgreSQL engines both import them from here, and neither imports the other.
//!
//! Rollup scopes and rate-limit keys are typed here; their byte encodings (the sled
//! tree keys and the PostgreSQL `scope` column) are functions of these types in
//! `index.rs`, one encoding for both engines.

use crate::record::{CallRecord, InvocationRecord};
use crate::store::index;
use crate::store::summary::InvocationSummary;
use serde::{Deserialize, Serialize};

/// `total` is exact up to this many matches, then a lower bound.
pub const COUNT_CAP: u64 = 10_000;

/// A place in newest-first order: strictly older records come after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub time_us: u64,
    pub id: String,
}

#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub after: Option<Position>,
    pub offset: usize,
    pub count_total: bool,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub total_is_lower_bound: bool,
    pub has_more: bool,
    pub next: Option<Position>,
}

/// A run and its calls read together (`Engine::invocation_with_calls`): the record,
/// its summary and its calls in round order, from one view of the store, so the API
/// answers a run without reading it again.
#[derive(Debug, Clone)]
pub struct RunWithCalls {
    pub record: InvocationRecord,
    pub summary: InvocationSummary,
    /// LLM rounds and tool calls (round 0), in round order.
    pub calls: Vec<CallRecord>,
}

impl RunWithCalls {
    /// The distinct LLM rounds among the calls read: the round count the answer
    /// shows, taken from the calls so it always agrees with the rounds it lists
    /// (an engine whose calls may be newer than the record, sled, says why in its
    /// `invocation_with_calls`).
    pub fn round_count(&self) -> u32 {
        let rounds: std::collections::BTreeSet<u32> = self
            .calls
            .iter()
            .filter(|c| crate::record::is_round_kind(&c.kind))
            .map(|c| c.round)
            .collect();
        rounds.len() as u32
    }
}

/// How a bounded scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanOutcome {
    Complete,
    /// The budget ran out; the result covers the newest part of the range only.
    Truncated,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: String,
    pub at_us: u64,
    /// Token name, or the first 12 hex digits of its SHA-256.
    pub who: String,
    pub role: String,
    pub tenant: Option<String>,
    pub action: String,
    pub path: String,
}

/// Logical sizes in the content store (keys + stored values).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ContentUsage {
    pub calls: u64,
    pub call_bytes: u64,
    pub manifest_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub ref_entries: u64,
}

/// What a reprice run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepriceReport {
    pub examined: u64,
    pub changed: u64,
    pub invocations: u64,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub calls_deleted: u64,
    pub bodies_dropped: u64,
    pub invocations_deleted: u64,
    pub chunks_freed: u64,
    pub blobs_freed: u64,
    /// Period keys destroyed (crypto-shredding, `shred.rs`).
    pub keys_shredded: u64,
    /// Live values moved out of a period before its key was destroyed.
    pub values_resealed: u64,
}

/// The ids a client chooses and a tenant scopes (`id@tenant`, see
/// `headers::tenant_scoped`): runs' and sessions'. Call ids are llmtap's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopedIdSpace {
    Runs,
    Sessions,
}

/// The counters a rollup cell is kept for: everything, one tenant, or one agent
/// (within a tenant or across tenants; the empty agent is calls without one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RollupScope {
    All,
    Tenant(String),
    Agent {
        tenant: Option<String>,
        agent: String,
    },
}

impl RollupScope {
    /// Everything, or the tenant's calls when there is one.
    pub fn all_or_tenant(tenant: Option<&str>) -> RollupScope {
        match tenant {
            Some(t) => RollupScope::Tenant(t.to_string()),
            None => RollupScope::All,
        }
    }

    /// The stored key of the scope (both engines key their rollups by it).
    pub fn key(&self) -> Vec<u8> {
        match self {
            RollupScope::All => b"*".to_vec(),
            RollupScope::Tenant(t) => index::scope_tenant(t),
            RollupScope::Agent { tenant, agent } => index::scope_agent(tenant.as_deref(), agent),
        }
    }

    /// The key prefix of every agent scope of the tenant (or across tenants).
    pub fn agents_prefix(tenant: Option<&str>) -> Vec<u8> {
        index::scope_agent(tenant, "")
    }

    /// The agent named by a stored key found under `agents_prefix(tenant)`.
    pub fn agent_of(prefix: &[u8], key: &[u8]) -> String {
        String::from_utf8_lossy(key.get(prefix.len()..).unwrap_or_default()).into_owned()
    }
}

/// The 15-minute rollup buckets that start in a time range, `[first_us, end_us)`:
/// what a rollup sum over a window adds (`Engine::rollup_range`), one rule for both
/// engines (a bucket that started before the window is left out whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketRange {
    /// The start of the first bucket in the range.
    pub first_us: u64,
    /// Buckets start before this.
    pub end_us: u64,
}

impl BucketRange {
    /// The buckets that start in `[from_us, to_us)`.
    pub fn starting_in(from_us: u64, to_us: u64) -> BucketRange {
        BucketRange {
            first_us: from_us.div_ceil(index::BUCKET_US) * index::BUCKET_US,
            end_us: to_us,
        }
    }
}

/// What rate-limit state is kept per: a provider API key (by fingerprint) and model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RateLimitKey {
    pub provider: String,
    /// Empty when the call carried no key.
    pub key_fingerprint: String,
    /// Empty when the call named no model.
    pub model: String,
}

impl RateLimitKey {
    pub fn new(provider: &str, fingerprint: Option<&str>, model: Option<&str>) -> RateLimitKey {
        RateLimitKey {
            provider: provider.to_string(),
            key_fingerprint: fingerprint.unwrap_or("").to_string(),
            model: model.unwrap_or("").to_string(),
        }
    }

    /// The key a call's limits are kept under.
    pub fn of(call: &CallRecord) -> RateLimitKey {
        let (provider, fingerprint, model) = index::ratelimit_parts(call);
        RateLimitKey::new(provider, fingerprint, model)
    }

    /// The stored key (`provider, 0, fingerprint, 0, model`): sled's tree key.
    pub fn key(&self) -> Vec<u8> {
        index::ratelimit_key(
            &self.provider,
            Some(&self.key_fingerprint),
            Some(&self.model),
        )
    }

    /// The key a stored key encodes (the inverse of `key`).
    pub fn from_key(key: &[u8]) -> RateLimitKey {
        let mut parts = key.splitn(3, |b| *b == 0);
        let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        RateLimitKey {
            provider: next(),
            key_fingerprint: next(),
            model: next(),
        }
    }
}
