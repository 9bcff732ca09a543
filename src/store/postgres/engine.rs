//! `PostgresStore`: the PostgreSQL engine behind the `Engine` trait, in progress.
//!
//! The trait is synchronous (the writer thread and the API's blocking tasks call it);
//! the engine owns a small tokio runtime of its own for its connections, and each
//! operation runs there while the caller's thread waits (`run`), so it can be called
//! from any thread but the engine's own.
//!
//! Implemented: rollups (`rollup_total`, `rollup_range`, `rollup_scopes`), the audit
//! log, this instance's applied capture-log position, `contains_call`, `call_count`,
//! and the call rows (`write_call_rows`, `get_call_meta`, `call_ids`,
//! `invocation_call_ids`, a call's `record_tenant`; `calls.rs`).
//! Every other operation answers `StoreError::NotOnPostgres`, which the read API
//! turns into 501 `not_on_postgres`; none panics.

use super::{calls, rollups, PgError, Pool};
use crate::record::{CallRecord, InvocationRecord};
use crate::store::engine::{FacetVisitor, Pricer};
use crate::store::index::{CallText, RateLimitPoint, RateLimitState, RollupCell, SessionSummary};
use crate::store::sled::{
    AuditEntry, ContentUsage, Page, PageRequest, RepriceReport, ScanOutcome, SweepReport,
};
use crate::store::summary::{CallSummary, Filter, InvocationSummary};
use crate::store::{Engine, StoreError};
use std::future::Future;

/// The PostgreSQL engine of one llmtap instance.
pub struct PostgresStore {
    pool: Pool,
    /// Names this instance's capture-log position (`journal_applied` rows).
    instance: String,
    /// Always `Some` until drop.
    runtime: Option<tokio::runtime::Runtime>,
}

fn not_yet(operation: &'static str) -> StoreError {
    StoreError::NotOnPostgres { operation }
}

impl PostgresStore {
    /// An engine over a prepared database (`super::prepare`). `instance` must be
    /// stable across restarts of one instance and differ between instances.
    pub fn new(pool: Pool, instance: String) -> Result<PostgresStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("llmtap-postgres")
            .enable_all()
            .build()
            .map_err(|e| PgError::Runtime(e.to_string()))?;
        Ok(PostgresStore {
            pool,
            instance,
            runtime: Some(runtime),
        })
    }

    /// Runs `f` with a pooled connection on the engine's runtime and waits for it.
    fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(super::PooledClient) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send,
    {
        let pool = self.pool.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let Some(runtime) = &self.runtime else {
            return Err(PgError::Runtime("the engine's runtime stopped".into()).into());
        };
        runtime.spawn(async move {
            let result = match pool.get().await {
                Ok(client) => f(client).await,
                Err(e) => Err(e),
            };
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| PgError::Runtime("the engine's runtime stopped".into()))
            .and_then(|r| r)
            .map_err(StoreError::from)
    }

    fn rollup_total(&self, scope: &[u8]) -> Result<RollupCell, StoreError> {
        let scope = scope.to_vec();
        self.run(move |c| async move { rollups::total(&*c, &scope).await })
    }

    fn rollup_range(
        &self,
        scope: &[u8],
        from_us: u64,
        to_us: u64,
    ) -> Result<RollupCell, StoreError> {
        let scope = scope.to_vec();
        self.run(move |c| async move { rollups::range(&*c, &scope, from_us, to_us).await })
    }

    fn rollup_scopes(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, RollupCell)>, StoreError> {
        let prefix = prefix.to_vec();
        self.run(move |c| async move { rollups::scopes(&*c, &prefix).await })
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let json = serde_json::to_value(entry).map_err(StoreError::Encode)?;
        let at = i64::try_from(entry.at_us).unwrap_or(i64::MAX);
        self.run(move |c| async move {
            c.execute(
                "INSERT INTO audit (at_us, entry) VALUES ($1, $2)",
                &[&at, &json],
            )
            .await?;
            Ok(())
        })
    }

    fn audit_entries(
        &self,
        before_us: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let before = before_us.map_or(i64::MAX, |t| i64::try_from(t).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.run(move |c| async move {
            Ok(c.query(
                "SELECT entry FROM audit WHERE at_us < $1 ORDER BY at_us DESC, seq DESC LIMIT $2",
                &[&before, &limit],
            )
            .await?
            .into_iter()
            .map(|r| r.get::<_, serde_json::Value>(0))
            .collect::<Vec<_>>())
        })?;
        rows.into_iter()
            .map(|v| {
                serde_json::from_value(v).map_err(|source| StoreError::Decode {
                    key: "audit".into(),
                    source,
                })
            })
            .collect()
    }

    fn journal_applied(&self) -> Result<Option<u64>, StoreError> {
        let instance = self.instance.clone();
        self.run(move |c| async move {
            Ok(c.query_opt(
                "SELECT position FROM journal_applied WHERE instance = $1",
                &[&instance],
            )
            .await?
            .map(|r| r.get::<_, i64>(0).max(0) as u64))
        })
    }

    fn set_journal_applied(&self, position: u64) -> Result<(), StoreError> {
        let instance = self.instance.clone();
        let position = i64::try_from(position).unwrap_or(i64::MAX);
        self.run(move |c| async move {
            c.execute(
                "INSERT INTO journal_applied (instance, position) VALUES ($1, $2) \
                 ON CONFLICT (instance) DO UPDATE SET position = GREATEST(journal_applied.position, excluded.position)",
                &[&instance, &position],
            )
            .await?;
            Ok(())
        })
    }

    /// Stores the batch's call rows (metadata and list summary, not yet content or
    /// invocations: `write_batch` stays `NotOnPostgres` until it stores all of a
    /// batch); returns how many were new. Idempotent by call id across instances.
    pub fn write_call_rows(&self, batch: &[CallRecord]) -> Result<u64, StoreError> {
        let batch = batch.to_vec();
        self.run(move |c| async move { calls::insert(&*c, &batch).await })
    }

    /// Every statement is committed when it returns: nothing to flush.
    fn flush(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn contains_call(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.run(move |c| async move {
            Ok(
                c.query_one("SELECT EXISTS (SELECT 1 FROM calls WHERE id = $1)", &[&id])
                    .await?
                    .get(0),
            )
        })
    }

    /// Stored calls; 0 (logged) when the database cannot be asked.
    fn call_count(&self) -> usize {
        match self.run(|c| async move {
            Ok(c.query_one("SELECT count(*) FROM calls", &[])
                .await?
                .get::<_, i64>(0))
        }) {
            Ok(n) => n.max(0) as usize,
            Err(e) => {
                tracing::warn!(error = %e, "cannot count calls in PostgreSQL");
                0
            }
        }
    }

    /// No facet cache: PostgreSQL's indexes answer filtered counts.
    fn facet_cache_bytes(&self) -> (u64, u64) {
        (0, 0)
    }

    /// No content is stored yet, so none is sealed.
    fn encrypted(&self) -> bool {
        false
    }
}

impl Drop for PostgresStore {
    /// Without waiting: the handle may be dropped on an async task, where a blocking
    /// runtime shutdown would panic. Connections close as their tasks end.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Engine for PostgresStore {
    fn write_batch(
        &self,
        _calls: &[CallRecord],
        _invocations: &[InvocationRecord],
    ) -> Result<(), StoreError> {
        Err(not_yet("write_batch"))
    }
    fn flush(&self) -> Result<usize, StoreError> {
        PostgresStore::flush(self)
    }
    fn get_call(&self, _id: &str) -> Result<Option<CallRecord>, StoreError> {
        Err(not_yet("get_call"))
    }
    fn get_call_meta(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |c| async move { calls::meta(&*c, &id).await })
    }
    fn get_raw(&self, _id: &str, _response: bool) -> Result<Option<Vec<u8>>, StoreError> {
        Err(not_yet("get_raw"))
    }
    fn get_blob(&self, _sha256: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        Err(not_yet("get_blob"))
    }
    fn blob_refs(&self, _addr: &str) -> Result<u64, StoreError> {
        Err(not_yet("blob_refs"))
    }
    fn chunk_refs(&self, _addr: &str) -> Result<u64, StoreError> {
        Err(not_yet("chunk_refs"))
    }
    fn call_text(&self, _id: &str) -> Result<Option<CallText>, StoreError> {
        Err(not_yet("call_text"))
    }
    fn contains_call(&self, id: &str) -> Result<bool, StoreError> {
        PostgresStore::contains_call(self, id)
    }
    fn call_count(&self) -> usize {
        PostgresStore::call_count(self)
    }
    fn call_ids(&self) -> Result<Vec<String>, StoreError> {
        self.run(|c| async move { calls::ids(&*c).await })
    }
    fn get_invocation(&self, _id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        Err(not_yet("get_invocation"))
    }
    fn invocation_calls(&self, _invocation_id: &str) -> Result<Vec<CallRecord>, StoreError> {
        Err(not_yet("invocation_calls"))
    }
    fn invocation_call_ids(&self, invocation_id: &str) -> Result<Vec<String>, StoreError> {
        let id = invocation_id.to_string();
        self.run(move |c| async move { calls::invocation_ids(&*c, &id).await })
    }
    fn invocation_summary(&self, _id: &str) -> Result<Option<InvocationSummary>, StoreError> {
        Err(not_yet("invocation_summary"))
    }
    fn invocations_since(&self, _since_us: u64) -> Result<Vec<InvocationRecord>, StoreError> {
        Err(not_yet("invocations_since"))
    }
    fn list_calls(
        &self,
        _filter: &Filter,
        _request: &PageRequest,
    ) -> Result<Page<CallSummary>, StoreError> {
        Err(not_yet("list_calls"))
    }
    fn list_invocations(
        &self,
        _filter: &Filter,
        _request: &PageRequest,
    ) -> Result<Page<InvocationSummary>, StoreError> {
        Err(not_yet("list_invocations"))
    }
    fn record_tenant(
        &self,
        invocation: bool,
        id: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        if invocation {
            return Err(not_yet("record_tenant"));
        }
        let id = id.to_string();
        self.run(move |c| async move { calls::tenant(&*c, &id).await })
    }
    fn tenant_scoped_ids(
        &self,
        _invocation: bool,
        _id: &str,
        _max: usize,
    ) -> Result<Vec<String>, StoreError> {
        Err(not_yet("tenant_scoped_ids"))
    }
    fn list_sessions(
        &self,
        _tenant: Option<&str>,
        _request: &PageRequest,
    ) -> Result<Page<SessionSummary>, StoreError> {
        Err(not_yet("list_sessions"))
    }
    fn session(&self, _id: &str) -> Result<Option<SessionSummary>, StoreError> {
        Err(not_yet("session"))
    }
    fn session_calls(
        &self,
        _session_id: &str,
        _max: usize,
    ) -> Result<Vec<CallSummary>, StoreError> {
        Err(not_yet("session_calls"))
    }
    fn rollup_total(&self, scope: &[u8]) -> Result<RollupCell, StoreError> {
        PostgresStore::rollup_total(self, scope)
    }
    fn rollup_range(
        &self,
        scope: &[u8],
        from_us: u64,
        to_us: u64,
    ) -> Result<RollupCell, StoreError> {
        PostgresStore::rollup_range(self, scope, from_us, to_us)
    }
    fn rollup_scopes(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, RollupCell)>, StoreError> {
        PostgresStore::rollup_scopes(self, prefix)
    }
    fn scan_facets(
        &self,
        _invocations: bool,
        _filter: &Filter,
        _budget: usize,
        _visit: FacetVisitor<'_>,
    ) -> Result<ScanOutcome, StoreError> {
        Err(not_yet("scan_facets"))
    }
    fn ratelimit_states(&self) -> Result<Vec<(Vec<u8>, RateLimitState)>, StoreError> {
        Err(not_yet("ratelimit_states"))
    }
    fn count_429_since(&self, _key: &[u8], _since_us: u64) -> Result<u64, StoreError> {
        Err(not_yet("count_429_since"))
    }
    fn ratelimit_series(
        &self,
        _key: &[u8],
        _from_us: u64,
        _max: usize,
    ) -> Result<Vec<RateLimitPoint>, StoreError> {
        Err(not_yet("ratelimit_series"))
    }
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        PostgresStore::append_audit(self, entry)
    }
    fn audit_entries(
        &self,
        before_us: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        PostgresStore::audit_entries(self, before_us, limit)
    }
    fn journal_applied(&self) -> Result<Option<u64>, StoreError> {
        PostgresStore::journal_applied(self)
    }
    fn set_journal_applied(&self, position: u64) -> Result<(), StoreError> {
        PostgresStore::set_journal_applied(self, position)
    }
    fn sweep(&self, _now_us: u64) -> Result<SweepReport, StoreError> {
        Err(not_yet("sweep"))
    }
    fn delete_call(&self, _id: &str) -> Result<bool, StoreError> {
        Err(not_yet("delete_call"))
    }
    fn reprice(
        &self,
        _from_us: u64,
        _to_us: u64,
        _price: Pricer<'_>,
    ) -> Result<RepriceReport, StoreError> {
        Err(not_yet("reprice"))
    }
    fn content_usage(&self) -> Result<ContentUsage, StoreError> {
        Err(not_yet("content_usage"))
    }
    fn tree_usage(&self) -> Result<Vec<(String, u64, u64)>, StoreError> {
        Err(not_yet("tree_usage"))
    }
    fn facet_cache_bytes(&self) -> (u64, u64) {
        PostgresStore::facet_cache_bytes(self)
    }
    fn encrypted(&self) -> bool {
        PostgresStore::encrypted(self)
    }
}
