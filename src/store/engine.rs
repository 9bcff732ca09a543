//! The storage boundary: what the writer and the read API ask of an engine.
//!
//! One list (`engine_operations!` below) defines every operation once and generates
//! from it: the `Engine` trait each engine implements, the `Store` handle's methods
//! (which ask the open engine, see `mod.rs`), and `Closed`, the stand-in the handle
//! holds while it reopens a failed engine, which answers every read with
//! `StoreError::Closed`. The sled engine's operations are its inherent methods; its
//! `Engine` impl, generated from the same list in `sled/engine.rs`, forwards to them.
//!
//! The interface is in engine-independent types (`types.rs`, `index.rs`,
//! `summary.rs`, records) and its errors name no engine, so this room imports
//! neither engine (checked by `tests/it/architecture.rs`). It is synchronous: the
//! writer is a thread of its own and the API calls it from blocking tasks; sled is
//! synchronous, and the PostgreSQL engine waits on its own runtime (`postgres/engine.rs`).

use super::index::{
    CallText, RateLimitPoint, RateLimitState, RollupCell, SessionFilter, SessionSummary,
};
use super::summary::{CallSummary, FacetView, Filter, InvocationSummary};
use super::types::{
    AuditEntry, BucketRange, ContentUsage, Page, PageRequest, RateLimitKey, RepriceReport,
    RollupScope, RunWithCalls, ScanOutcome, ScopedIdSpace, SweepReport,
};
use super::{EngineContext, Store, StoreError};
use crate::record::{CallRecord, Cost, InvocationRecord};
use std::sync::Arc;

/// What an operation answers while no engine is open (the handle is reopening one).
pub trait WhileClosed {
    fn while_closed() -> Self;
}

impl<T> WhileClosed for Result<T, StoreError> {
    fn while_closed() -> Self {
        Err(StoreError::Closed)
    }
}

impl WhileClosed for usize {
    fn while_closed() -> Self {
        0
    }
}

impl WhileClosed for bool {
    fn while_closed() -> Self {
        false
    }
}

impl WhileClosed for String {
    fn while_closed() -> Self {
        String::new()
    }
}

impl WhileClosed for (u64, u64) {
    fn while_closed() -> Self {
        (0, 0)
    }
}

/// The engine a closed handle holds: every answer is `WhileClosed`.
pub struct Closed;

/// Opens an engine again once the handle has dropped the old one (`Engine::snapshot_due`).
pub type Reopen = Box<dyn FnOnce(&EngineContext) -> Result<Arc<dyn Engine>, StoreError> + Send>;

/// Called with each matching record's facets (see `Engine::scan_facets`).
pub type FacetVisitor<'a> = &'a mut dyn FnMut(&FacetView<'_>);

/// A cost for a stored call: `None` leaves it as it is (see `Engine::reprice`).
pub type Pricer<'a> = &'a mut dyn FnMut(&CallRecord) -> Option<Cost>;

/// Implements `Engine` for an engine whose inherent methods are the operations (the
/// sled engine's, see `sled/engine.rs`): expanded there, by `engine_operations!`,
/// so this room names no engine.
macro_rules! engine_by_inherent_methods {
    (($engine:ty) $( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl $crate::store::engine::Engine for $engine {
            $( fn $name(&self $(, $arg: $ty)*) -> $ret { <$engine>::$name(self $(, $arg)*) } )*

            fn snapshot_due(&self) -> Option<$crate::store::engine::Reopen> {
                <$engine>::snapshot_due(self)
            }
        }
    };
}
pub(crate) use engine_by_inherent_methods;

macro_rules! engine_api {
    (() $( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        /// A storage engine: the embedded sled store, or (later) a shared database.
        pub trait Engine: Send + Sync {
            $( $(#[$doc])* fn $name(&self $(, $arg: $ty)*) -> $ret; )*

            /// When the engine wants to be closed and opened again (sled: to write its
            /// snapshot), what opens it again, carrying its in-memory state; `None` for
            /// engines that never need it. Asked by `Store::maintain`.
            fn snapshot_due(&self) -> Option<Reopen> {
                None
            }
        }

        impl Engine for Closed {
            $( fn $name(&self $(, _: $ty)*) -> $ret { <$ret as WhileClosed>::while_closed() } )*
        }

        impl Store {
            $( $(#[$doc])* pub fn $name(&self $(, $arg: $ty)*) -> $ret { self.engine().$name($($arg),*) } )*
        }
    };
}

/// The one list of operations: `engine_operations!(callback (args))` hands it to a
/// macro that generates code from it (`engine_api` here, `engine_by_inherent_methods`
/// in an engine's folder).
macro_rules! engine_operations {
    ($callback:ident ($($args:tt)*)) => {
        $callback! { ($($args)*)
    /// Stores a batch of calls and the invocations they changed.
    fn write_batch(&self, calls: &[CallRecord], invocations: &[InvocationRecord]) -> Result<(), StoreError>;
    /// `write_batch`, rewriting in the same batch the places of stored calls that its
    /// late calls moved (`agent_loop::fold_run`). An engine that merges runs in its
    /// own transaction (PostgreSQL) numbers them there, with the same function.
    fn write_batch_moving(&self, calls: &[CallRecord], invocations: &[InvocationRecord], moved: &[crate::agent_loop::Moved]) -> Result<(), StoreError>;
    /// A run's stored LLM calls (metadata) that started at or after `from_us`, and
    /// the latest one that started before (`agent_loop::late_from`).
    fn run_loop_calls(&self, invocation_id: &str, from_us: u64) -> Result<Vec<CallRecord>, StoreError>;
    /// Makes what was written durable; returns the bytes flushed.
    fn flush(&self) -> Result<usize, StoreError>;
    /// A call with its bodies and views.
    fn get_call(&self, id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// A call's metadata only (no bodies).
    fn get_call_meta(&self, id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// A call's raw request (or response) body as captured.
    fn get_raw(&self, id: &str, response: bool) -> Result<Option<Vec<u8>>, StoreError>;
    /// A mirrored attachment: media type and bytes.
    fn get_blob(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>, StoreError>;
    /// References held on an attachment (tests and storage checks).
    fn blob_refs(&self, addr: &str) -> Result<u64, StoreError>;
    /// References held on a content chunk (tests and storage checks).
    fn chunk_refs(&self, addr: &str) -> Result<u64, StoreError>;
    /// The system prompt and last user message of a call (for `q`).
    fn call_text(&self, id: &str) -> Result<Option<CallText>, StoreError>;
    /// Whether a call with this id is stored (replaying the capture log skips it).
    fn contains_call(&self, id: &str) -> Result<bool, StoreError>;
    /// Stored calls.
    fn call_count(&self) -> usize;
    /// Every stored call id, oldest first.
    fn call_ids(&self) -> Result<Vec<String>, StoreError>;
    fn get_invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StoreError>;
    /// The stored runs among these ids, in one read (the writer's batch needs each
    /// run's rounds so far).
    fn get_invocations(&self, ids: &[String]) -> Result<Vec<InvocationRecord>, StoreError>;
    /// The calls of an invocation in round order.
    fn invocation_calls(&self, invocation_id: &str) -> Result<Vec<CallRecord>, StoreError>;
    fn invocation_call_ids(&self, invocation_id: &str) -> Result<Vec<String>, StoreError>;
    fn invocation_summary(&self, id: &str) -> Result<Option<InvocationSummary>, StoreError>;
    /// A run, its summary and its calls (bodies included), read once and consistently:
    /// the calls hold every round the record counts (the read API answers a run with
    /// it; each engine says how in its implementation).
    fn invocation_with_calls(&self, id: &str) -> Result<Option<RunWithCalls>, StoreError>;
    /// Invocations that started at or after the time (round counters at start-up).
    fn invocations_since(&self, since_us: u64) -> Result<Vec<InvocationRecord>, StoreError>;
    /// A filtered, newest-first page of call summaries.
    fn list_calls(&self, filter: &Filter, request: &PageRequest) -> Result<Page<CallSummary>, StoreError>;
    /// A filtered, newest-first page of invocation summaries.
    fn list_invocations(&self, filter: &Filter, request: &PageRequest) -> Result<Page<InvocationSummary>, StoreError>;
    /// The tenant of a stored record: `None` when there is no such record.
    fn record_tenant(&self, invocation: bool, id: &str) -> Result<Option<Option<String>>, StoreError>;
    /// The tenant-scoped ids (`id@tenant`) stored for a plain id.
    fn tenant_scoped_ids(&self, space: ScopedIdSpace, id: &str, max: usize) -> Result<Vec<String>, StoreError>;
    /// Sessions newest first (by first call) that `filter` matches.
    fn list_sessions(&self, filter: &SessionFilter, request: &PageRequest) -> Result<Page<SessionSummary>, StoreError>;
    fn session(&self, id: &str) -> Result<Option<SessionSummary>, StoreError>;
    /// Every call of a session, chronological, at most `max`.
    fn session_calls(&self, session_id: &str, max: usize) -> Result<Vec<CallSummary>, StoreError>;
    /// All-time counters of a rollup scope.
    fn rollup_total(&self, scope: &RollupScope) -> Result<RollupCell, StoreError>;
    /// Counters of a rollup scope summed over 15-minute buckets.
    fn rollup_range(&self, scope: &RollupScope, buckets: BucketRange) -> Result<RollupCell, StoreError>;
    /// All-time counters of every agent of the tenant (every tenant's when `None`),
    /// by agent name ("" for calls without one), in name order.
    fn rollup_agents(&self, tenant: Option<&str>) -> Result<Vec<(String, RollupCell)>, StoreError>;
    /// Visits the facets of every record the filter matches, newest first, within a budget.
    fn scan_facets(&self, invocations: bool, filter: &Filter, budget: usize, visit: FacetVisitor<'_>) -> Result<ScanOutcome, StoreError>;
    /// The latest rate-limit state of every key and model.
    fn ratelimit_states(&self) -> Result<Vec<(RateLimitKey, RateLimitState)>, StoreError>;
    /// 429 answers of a rate-limit key since the time.
    fn count_429_since(&self, key: &RateLimitKey, since_us: u64) -> Result<u64, StoreError>;
    /// A rate-limit key's history from the time, at most `max` points.
    fn ratelimit_series(&self, key: &RateLimitKey, from_us: u64, max: usize) -> Result<Vec<RateLimitPoint>, StoreError>;
    /// Appends an entry to the audit log (API handlers write it).
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Audit entries newest first, before the time.
    fn audit_entries(&self, before_us: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// The capture-log position up to which the store holds every record.
    fn journal_applied(&self) -> Result<Option<u64>, StoreError>;
    /// Keeps `position` as given, also below the one held: a replaced log starts again.
    fn set_journal_applied(&self, position: u64) -> Result<(), StoreError>;
    /// One retention pass at the time given.
    fn sweep(&self, now_us: u64) -> Result<SweepReport, StoreError>;
    /// Deletes a call and everything keyed by it.
    fn delete_call(&self, id: &str) -> Result<bool, StoreError>;
    /// Recomputes stored costs in the time range with the pricer.
    fn reprice(&self, from_us: u64, to_us: u64, price: Pricer<'_>) -> Result<RepriceReport, StoreError>;
    /// What the content store holds.
    fn content_usage(&self) -> Result<ContentUsage, StoreError>;
    /// Per tree (or table): name, entries, bytes.
    fn tree_usage(&self) -> Result<Vec<(String, u64, u64)>, StoreError>;
    /// Memory of the facet caches (calls, invocations).
    fn facet_cache_bytes(&self) -> (u64, u64);
    /// Whether content is sealed with a key.
    fn encrypted(&self) -> bool;
    /// Whether bodies are skipped while the data directory's disk is nearly full
    /// (`plan::split_content`): true where content lives on that disk (sled), false
    /// where it goes to a server (PostgreSQL).
    fn content_on_local_disk(&self) -> bool;
        }
    };
}
pub(crate) use engine_operations;

engine_operations!(engine_api());
