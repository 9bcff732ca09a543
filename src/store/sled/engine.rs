//! The sled engine behind the `Engine` trait: every operation forwards to the
//! `SledStore` inherent method of the same name, generated from the one list of
//! operations (`store/engine.rs`). The list's types are named here as it names them.

use super::SledStore;
use crate::record::{CallRecord, InvocationRecord};
use crate::store::engine::{engine_by_inherent_methods, engine_operations, FacetVisitor, Pricer};
use crate::store::index::{
    CallText, RateLimitPoint, RateLimitState, RollupCell, SessionFilter, SessionSummary,
};
use crate::store::summary::{CallSummary, Filter, InvocationSummary};
use crate::store::types::{
    AuditEntry, BucketRange, ContentUsage, Page, PageRequest, RateLimitKey, RepriceReport,
    RollupScope, RunWithCalls, ScanOutcome, ScopedIdSpace, SweepReport,
};
use crate::store::StoreError;

engine_operations!(engine_by_inherent_methods(SledStore));
