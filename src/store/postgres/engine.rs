//! `PostgresStore`: the PostgreSQL engine behind the `Engine` trait.
//!
//! The trait is synchronous (the writer thread and the API's blocking tasks call it);
//! each operation runs on the process-wide PostgreSQL runtime (`pool::io_runtime`,
//! where the pool's connections live) while the caller's thread waits (`run`), so it
//! can be called from any thread but that runtime's own. Dropping an engine (a
//! reopen, a test) leaves the pool's connections alive for the next one.
//!
//! Every operation of the trait is here, each over the module of its tables:
//! batches (`batch.rs`), point reads of calls with their content and of runs, the
//! lists with totals and cursors (`lists.rs`, text search `search.rs`), sessions,
//! rate limits, rollups, facet scans, the audit log, this instance's applied
//! capture-log position, repricing, retention and `delete_call` (`retention.rs`). A
//! request the engine cannot express answers `StoreError::Unsupported`, which the
//! read API turns into 501 `not_on_postgres`; none panics.

use super::{
    batch, calls, content, invocations, lists, ratelimits, rollups, search, sessions, PgError, Pool,
};
use crate::record::{CallRecord, InvocationRecord};
use crate::store::content::Codec;
use crate::store::crypto::Addr;
use crate::store::engine::{FacetVisitor, Pricer};
use crate::store::index::{
    CallText, RateLimitPoint, RateLimitState, RollupCell, SessionFilter, SessionSummary,
};
use crate::store::manifest::{hydrate, search_text, Manifest};
use crate::store::summary::{CallSummary, FacetView, Filter, InvocationSummary};
use crate::store::types::{
    AuditEntry, BucketRange, ContentUsage, Page, PageRequest, RateLimitKey, RepriceReport,
    RollupScope, RunWithCalls, ScanOutcome, ScopedIdSpace, SweepReport,
};
use crate::store::{BatchWritten, EngineContext, StoreOptions, StoreStats};
use crate::store::{Engine, StoreError};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The PostgreSQL engine of one llmtap instance.
pub struct PostgresStore {
    pool: Pool,
    /// Names this instance's capture-log position (`journal_applied` rows).
    instance: String,
    /// Seals content (and keys its addresses) as sled does with the same options.
    codec: Arc<Codec>,
    stats: Arc<StoreStats>,
    /// This instance's live stream (the handle's channel).
    events: broadcast::Sender<Arc<BatchWritten>>,
    /// `retention_days` and `body_retention_days`.
    retention: (u64, u64),
}

/// Attempts of a batch whose transaction lost a deadlock or serialization race
/// with another instance's (PostgreSQL aborts one of them; the batch is retried).
const WRITE_ATTEMPTS: u32 = 8;

fn retryable(e: &PgError) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(e, PgError::Db(db) if db.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    }))
}

/// 0-9 ms from the clock, so two instances that lost the same race retry apart.
fn rand_jitter() -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos % 10) as u8
}

/// A manifest as stored (sealed), opened.
pub(super) fn open_manifest(
    codec: &Codec,
    id: &str,
    sealed: &[u8],
) -> Result<Manifest, StoreError> {
    let plain = codec.open(id.as_bytes(), sealed)?;
    Manifest::decode(&plain).ok_or_else(|| StoreError::Corrupt {
        key: id.to_string(),
        reason: "bad manifest".into(),
    })
}

/// Puts a call's content back into its metadata record.
async fn hydrate_call(
    client: &impl tokio_postgres::GenericClient,
    codec: &Arc<Codec>,
    call: &mut CallRecord,
) -> Result<(), StoreError> {
    let Some(sealed) = calls::manifest(client, &call.id).await? else {
        return Ok(());
    };
    let m = open_manifest(codec, &call.id, &sealed)?;
    let roots: Vec<Addr> = m.roots().copied().collect();
    let loaded = content::load(client, codec.clone(), &roots).await?;
    hydrate(&m, &loaded, call)
}

/// A call's manifest and the pieces of the roots `pick` chooses.
async fn manifest_with(
    client: &impl tokio_postgres::GenericClient,
    codec: &Arc<Codec>,
    id: &str,
    pick: impl Fn(&Manifest) -> Vec<Addr>,
) -> Result<Option<(Manifest, content::Loaded)>, StoreError> {
    let Some(sealed) = calls::manifest(client, id).await? else {
        return Ok(None);
    };
    let m = open_manifest(codec, id, &sealed)?;
    let loaded = content::load(client, codec.clone(), &pick(&m)).await?;
    Ok(Some((m, loaded)))
}

/// Rows a facet scan reads per query.
const SCAN_CHUNK: usize = 5000;

/// The store handle over this engine: opened now, and again (the same way) when the
/// handle reopens it after failed writes.
pub fn open_store(
    pool: Pool,
    instance: String,
    context: EngineContext,
    options: StoreOptions,
) -> Result<crate::store::Store, StoreError> {
    let engine_options = options.clone();
    crate::store::Store::open_engine(context, options, move |context| {
        let engine = PostgresStore::new(pool.clone(), instance.clone(), context, &engine_options)?;
        Ok(Arc::new(engine) as Arc<dyn Engine>)
    })
}

impl PostgresStore {
    /// An engine over a prepared database (`super::prepare`). `instance` must be
    /// stable across restarts of one instance and differ between instances.
    pub fn new(
        pool: Pool,
        instance: String,
        context: &EngineContext,
        options: &StoreOptions,
    ) -> Result<PostgresStore, StoreError> {
        super::pool::io_runtime()?;
        let vault = super::shred::PgVault::new(pool.clone());
        Ok(PostgresStore {
            pool,
            instance,
            codec: Arc::new(Codec::for_store(options, Box::new(vault))),
            stats: context.stats.clone(),
            events: context.events.clone(),
            retention: (options.retention_days, options.body_retention_days),
        })
    }

    /// Runs `f` with a pooled connection on the PostgreSQL runtime and waits for it.
    fn run<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(super::PooledClient) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send,
    {
        let pool = self.pool.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        super::pool::io_runtime()?.spawn(async move {
            let result = match pool.get().await {
                Ok(client) => f(client).await,
                Err(e) => Err(e),
            };
            let _ = tx.send(result);
        });
        rx.recv()
            .map_err(|_| PgError::Runtime("the PostgreSQL runtime stopped".into()))
            .and_then(|r| r)
            .map_err(|e| match e {
                PgError::Unsupported(operation) => StoreError::Unsupported {
                    engine: "PostgreSQL",
                    operation,
                },
                other => StoreError::from(other),
            })
    }

    /// `run` for operations that fail with a `StoreError` (content decoding).
    fn run_read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(super::PooledClient) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        self.run(move |c| async move { Ok(f(c).await) })
            .and_then(|r| r)
    }

    fn rollup_total(&self, scope: &RollupScope) -> Result<RollupCell, StoreError> {
        let scope = scope.key();
        self.run(move |c| async move { rollups::total(&*c, &scope).await })
    }

    fn rollup_range(
        &self,
        scope: &RollupScope,
        buckets: BucketRange,
    ) -> Result<RollupCell, StoreError> {
        let scope = scope.key();
        self.run(move |c| async move { rollups::range(&*c, &scope, buckets).await })
    }

    fn rollup_agents(&self, tenant: Option<&str>) -> Result<Vec<(String, RollupCell)>, StoreError> {
        let prefix = RollupScope::agents_prefix(tenant);
        let scopes = self.run({
            let prefix = prefix.clone();
            move |c| async move { rollups::scopes(&*c, &prefix).await }
        })?;
        Ok(scopes
            .into_iter()
            .map(|(key, cell)| (RollupScope::agent_of(&prefix, &key), cell))
            .collect())
    }

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let json = super::text::json(entry)?;
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
                 ON CONFLICT (instance) DO UPDATE SET position = excluded.position",
                &[&instance, &position],
            )
            .await?;
            Ok(())
        })
    }

    /// Stores a batch in one transaction (`batch.rs`), retried when it loses a
    /// deadlock to another instance's. The writer's rolled-up runs are not used: the
    /// engine merges runs from the calls in the database, with every instance's rounds.
    fn write_batch(&self, batch: &[CallRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = batch.iter().map(|c| c.id.clone()).collect();
        let stored = self.run(move |c| async move {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            calls::stored_ids(&*c, &ids).await
        })?;
        let mut cut = 1;
        let written = loop {
            // What the cutting may build on, as the database holds it now.
            let asked = batch::probe(self.codec.clone(), batch, &stored);
            let held =
                self.run(move |c| async move { content::stored_among(&*c, &asked).await })?;
            let prepared = Arc::new(batch::prepare(
                self.codec.clone(),
                &self.stats,
                batch,
                &stored,
                held,
            ));
            if prepared.calls.is_empty() {
                return Ok(());
            }
            let instance = self.instance.clone();
            let outcome = self.run(move |mut c| async move {
                let mut attempt = 1;
                loop {
                    let tx = c.transaction().await?;
                    let result = match batch::write(&tx, &prepared, &instance).await {
                        Ok(written) => tx.commit().await.map(|()| written).map_err(PgError::from),
                        Err(e) => Err(e),
                    };
                    match result {
                        Err(e) if retryable(&e) && attempt < WRITE_ATTEMPTS => {
                            tracing::debug!(error = %e, attempt, "batch lost a race with another instance; retrying");
                            attempt += 1;
                            let backoff = 5 * u64::from(attempt) + u64::from(rand_jitter());
                            tokio::time::sleep(std::time::Duration::from_millis(backoff)).await;
                        }
                        // Cut again against what is stored now (the caller's loop).
                        Err(gone @ PgError::ContentGone { .. }) => return Ok(Err(gone)),
                        other => return other.map(Ok),
                    }
                }
            })?;
            match outcome {
                Ok(written) => break written,
                Err(gone) if cut < WRITE_ATTEMPTS => {
                    tracing::debug!(cut, error = %gone, "cutting the batch again");
                    cut += 1;
                }
                Err(gone) => return Err(gone.into()),
            }
        };
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(written));
        }
        Ok(())
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

    /// Whether content is sealed with a key.
    fn encrypted(&self) -> bool {
        self.codec.keys.is_some()
    }
}

impl Engine for PostgresStore {
    fn write_batch(
        &self,
        calls: &[CallRecord],
        _invocations: &[InvocationRecord],
    ) -> Result<(), StoreError> {
        PostgresStore::write_batch(self, calls)
    }
    /// The writer's runs and moves are not used: the batch's transaction numbers the
    /// runs' calls itself (`invocations::merge`, with `agent_loop::fold_run`).
    fn write_batch_moving(
        &self,
        calls: &[CallRecord],
        _invocations: &[InvocationRecord],
        _moved: &[crate::agent_loop::Moved],
    ) -> Result<(), StoreError> {
        PostgresStore::write_batch(self, calls)
    }
    fn run_loop_calls(
        &self,
        invocation_id: &str,
        from_us: u64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let id = invocation_id.to_string();
        self.run(move |c| async move { calls::run_loop_calls(&*c, &id, from_us).await })
    }
    fn flush(&self) -> Result<usize, StoreError> {
        PostgresStore::flush(self)
    }
    fn get_call(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let id = id.to_string();
        let codec = self.codec.clone();
        self.run_read(move |c| async move {
            let Some(mut call) = calls::meta(&*c, &id).await? else {
                return Ok(None);
            };
            hydrate_call(&*c, &codec, &mut call).await?;
            Ok(Some(call))
        })
    }
    fn get_call_meta(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |c| async move { calls::meta(&*c, &id).await })
    }
    fn get_raw(&self, id: &str, response: bool) -> Result<Option<Vec<u8>>, StoreError> {
        let id = id.to_string();
        let codec = self.codec.clone();
        self.run_read(move |c| async move {
            let pick = |m: &Manifest| {
                let root = if response { m.response } else { m.request };
                root.into_iter().collect()
            };
            match manifest_with(&*c, &codec, &id, pick).await? {
                Some((m, loaded)) => m.body(&loaded, response),
                None => Ok(None),
            }
        })
    }
    fn get_blob(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let Some(a) = crate::store::crypto::parse_addr(sha256) else {
            return Ok(None);
        };
        let codec = self.codec.clone();
        self.run_read(move |c| async move { content::blob(&*c, &codec, &a).await })
    }
    fn blob_refs(&self, addr: &str) -> Result<u64, StoreError> {
        let Some(a) = crate::store::crypto::parse_addr(addr) else {
            return Ok(0);
        };
        self.run(move |c| async move { content::refs(&*c, true, &a).await })
    }
    fn chunk_refs(&self, addr: &str) -> Result<u64, StoreError> {
        let Some(a) = crate::store::crypto::parse_addr(addr) else {
            return Ok(0);
        };
        self.run(move |c| async move { content::refs(&*c, false, &a).await })
    }
    fn call_text(&self, id: &str) -> Result<Option<CallText>, StoreError> {
        let id = id.to_string();
        let codec = self.codec.clone();
        self.run_read(move |c| async move {
            let pick = |m: &Manifest| m.search_system.into_iter().chain(m.search_user).collect();
            match manifest_with(&*c, &codec, &id, pick).await? {
                Some((m, loaded)) => search_text(&m, &loaded),
                None => Ok(None),
            }
        })
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
    fn get_invocation(&self, id: &str) -> Result<Option<InvocationRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |c| async move { invocations::get(&*c, &id).await })
    }
    fn get_invocations(&self, ids: &[String]) -> Result<Vec<InvocationRecord>, StoreError> {
        let ids = ids.to_vec();
        self.run(move |c| async move { invocations::get_many(&*c, &ids).await })
    }
    fn invocation_calls(&self, invocation_id: &str) -> Result<Vec<CallRecord>, StoreError> {
        let id = invocation_id.to_string();
        let codec = self.codec.clone();
        self.run_read(move |c| async move {
            let mut calls = calls::of_invocation(&*c, &id).await?;
            for call in &mut calls {
                hydrate_call(&*c, &codec, call).await?;
            }
            Ok(calls)
        })
    }
    fn invocation_call_ids(&self, invocation_id: &str) -> Result<Vec<String>, StoreError> {
        let id = invocation_id.to_string();
        self.run(move |c| async move { calls::invocation_ids(&*c, &id).await })
    }
    fn invocation_summary(&self, id: &str) -> Result<Option<InvocationSummary>, StoreError> {
        let id = id.to_string();
        self.run(move |c| async move { invocations::summary(&*c, &id).await })
    }
    /// The run, its summary and its calls in one read-only REPEATABLE READ
    /// transaction: one snapshot, and a batch's calls and the runs they change are
    /// one transaction (`batch.rs`), so the record counts exactly the calls read.
    fn invocation_with_calls(&self, id: &str) -> Result<Option<RunWithCalls>, StoreError> {
        let id = id.to_string();
        let codec = self.codec.clone();
        self.run_read(move |mut c| async move {
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(PgError::from)?;
            let (Some(record), Some(summary)) = (
                invocations::get(&tx, &id).await?,
                invocations::summary(&tx, &id).await?,
            ) else {
                return Ok(None);
            };
            let mut calls = calls::of_invocation(&tx, &id).await?;
            for call in &mut calls {
                hydrate_call(&tx, &codec, call).await?;
            }
            tx.commit().await.map_err(PgError::from)?;
            Ok(Some(RunWithCalls {
                record,
                summary,
                calls,
            }))
        })
    }
    fn invocations_since(&self, since_us: u64) -> Result<Vec<InvocationRecord>, StoreError> {
        self.run(move |c| async move { invocations::since(&*c, since_us).await })
    }
    fn list_calls(
        &self,
        filter: &Filter,
        request: &PageRequest,
    ) -> Result<Page<CallSummary>, StoreError> {
        let (filter, request) = (filter.clone(), request.clone());
        if filter.text.is_some() {
            let codec = self.codec.clone();
            return self.run_read(move |c| async move {
                search::page(
                    &*c,
                    &codec,
                    lists::Table::Calls,
                    &filter,
                    &request,
                    lists::call_summary,
                )
                .await
            });
        }
        self.run(move |c| async move { lists::calls(&*c, &filter, &request).await })
    }
    fn list_invocations(
        &self,
        filter: &Filter,
        request: &PageRequest,
    ) -> Result<Page<InvocationSummary>, StoreError> {
        let (filter, request) = (filter.clone(), request.clone());
        if filter.text.is_some() {
            let codec = self.codec.clone();
            return self.run_read(move |c| async move {
                let decode = |json, id: &str| lists::decode(id, json);
                search::page(
                    &*c,
                    &codec,
                    lists::Table::Invocations,
                    &filter,
                    &request,
                    decode,
                )
                .await
            });
        }
        self.run(move |c| async move { lists::invocations(&*c, &filter, &request).await })
    }
    fn record_tenant(
        &self,
        invocation: bool,
        id: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        let id = id.to_string();
        self.run(move |c| async move {
            if invocation {
                invocations::tenant(&*c, &id).await
            } else {
                calls::tenant(&*c, &id).await
            }
        })
    }
    fn tenant_scoped_ids(
        &self,
        space: ScopedIdSpace,
        id: &str,
        max: usize,
    ) -> Result<Vec<String>, StoreError> {
        let id = id.to_string();
        self.run(move |c| async move { sessions::scoped_ids(&*c, space, &id, max).await })
    }
    fn list_sessions(
        &self,
        filter: &SessionFilter,
        request: &PageRequest,
    ) -> Result<Page<SessionSummary>, StoreError> {
        let (filter, request) = (filter.clone(), request.clone());
        self.run(move |c| async move { sessions::list(&*c, &filter, &request).await })
    }
    fn session(&self, id: &str) -> Result<Option<SessionSummary>, StoreError> {
        let id = id.to_string();
        self.run(move |c| async move { sessions::get(&*c, &id).await })
    }
    fn session_calls(&self, session_id: &str, max: usize) -> Result<Vec<CallSummary>, StoreError> {
        let id = session_id.to_string();
        self.run(move |c| async move { sessions::calls(&*c, &id, max).await })
    }
    fn rollup_total(&self, scope: &RollupScope) -> Result<RollupCell, StoreError> {
        PostgresStore::rollup_total(self, scope)
    }
    fn rollup_range(
        &self,
        scope: &RollupScope,
        buckets: BucketRange,
    ) -> Result<RollupCell, StoreError> {
        PostgresStore::rollup_range(self, scope, buckets)
    }
    fn rollup_agents(&self, tenant: Option<&str>) -> Result<Vec<(String, RollupCell)>, StoreError> {
        PostgresStore::rollup_agents(self, tenant)
    }
    /// Visits the facets of what the filter matches, newest first, reading
    /// `SCAN_CHUNK` rows at a time by keyset (memory stays bounded whatever the
    /// budget); `Truncated` once `budget` records were visited and more match.
    fn scan_facets(
        &self,
        invocations: bool,
        filter: &Filter,
        budget: usize,
        visit: FacetVisitor<'_>,
    ) -> Result<ScanOutcome, StoreError> {
        let table = if invocations {
            lists::Table::Invocations
        } else {
            lists::Table::Calls
        };
        let mut after = None;
        let mut visited = 0usize;
        loop {
            // One row beyond the budget tells a complete scan from a cut one.
            let want = SCAN_CHUNK.min(budget - visited + 1);
            let (f, a) = (filter.clone(), after.take());
            let rows =
                self.run(move |c| async move { lists::facets(&*c, table, &f, a, want).await })?;
            let n = rows.len();
            for (facets, position) in rows {
                if visited == budget {
                    return Ok(ScanOutcome::Truncated);
                }
                visited += 1;
                visit(&FacetView::of(&facets));
                after = Some(position);
            }
            if n < want {
                return Ok(ScanOutcome::Complete);
            }
        }
    }
    fn ratelimit_states(&self) -> Result<Vec<(RateLimitKey, RateLimitState)>, StoreError> {
        self.run(move |c| async move { ratelimits::states(&*c).await })
    }
    fn count_429_since(&self, key: &RateLimitKey, since_us: u64) -> Result<u64, StoreError> {
        let key = key.clone();
        self.run(move |c| async move { ratelimits::count_429_since(&*c, &key, since_us).await })
    }
    fn ratelimit_series(
        &self,
        key: &RateLimitKey,
        from_us: u64,
        max: usize,
    ) -> Result<Vec<RateLimitPoint>, StoreError> {
        let key = key.clone();
        self.run(move |c| async move { ratelimits::series(&*c, &key, from_us, max).await })
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
    fn sweep(&self, now_us: u64) -> Result<SweepReport, StoreError> {
        let codec = self.codec.clone();
        let (days, body_days) = self.retention;
        let report = self.run_read(move |mut c| async move {
            super::retention::sweep(&mut c, &codec, now_us, days, body_days).await
        })?;
        let s = &self.stats;
        StoreStats::add(&s.retention_calls_deleted, report.calls_deleted);
        StoreStats::add(&s.retention_bodies_dropped, report.bodies_dropped);
        StoreStats::add(&s.retention_invocations_deleted, report.invocations_deleted);
        StoreStats::add(&s.chunks_freed, report.chunks_freed);
        StoreStats::add(&s.blobs_freed, report.blobs_freed);
        if report != SweepReport::default() {
            tracing::info!(?report, "retention sweep done");
        }
        Ok(report)
    }
    fn delete_call(&self, id: &str) -> Result<bool, StoreError> {
        let codec = self.codec.clone();
        let id = id.to_string();
        // A deletion can lose a deadlock to a batch another instance (or this one's
        // writer) commits meanwhile (both update the facet counts): it is retried,
        // as a batch is (found by `it::conformance::counters_stay_exact_…`).
        self.run_read(move |mut c| async move {
            let mut attempt = 1;
            loop {
                match super::retention::delete_call(&mut c, &codec, &id).await {
                    Err(StoreError::Backend { source, .. })
                        if attempt < WRITE_ATTEMPTS
                            && source.downcast_ref::<PgError>().is_some_and(retryable) =>
                    {
                        tracing::debug!(error = %source, attempt, "deletion lost a race with a batch; retrying");
                        attempt += 1;
                        let backoff = 5 * u64::from(attempt) + u64::from(rand_jitter());
                        tokio::time::sleep(std::time::Duration::from_millis(backoff)).await;
                    }
                    other => return other,
                }
            }
        })
    }
    fn reprice(
        &self,
        from_us: u64,
        to_us: u64,
        price: Pricer<'_>,
    ) -> Result<RepriceReport, StoreError> {
        use super::reprice;
        let mut report = RepriceReport::default();
        let mut after = (i64::MIN, String::new());
        loop {
            let position = after.clone();
            let calls = self.run(move |c| async move {
                reprice::candidates(&*c, from_us, to_us, &position).await
            })?;
            let Some(last) = calls.last() else { break };
            after = (
                i64::try_from(last.started_at_us).unwrap_or(i64::MAX),
                last.id.clone(),
            );
            let mut changed = Vec::new();
            for mut call in calls {
                report.examined += 1;
                if let Some(old_pusd) = crate::store::stored::reprice_call(&mut call, price) {
                    changed.push((call, old_pusd));
                }
            }
            if changed.is_empty() {
                continue;
            }
            report.changed += changed.len() as u64;
            report.invocations += self.run(move |mut c| async move {
                let tx = c.transaction().await?;
                let runs = reprice::apply(&tx, &changed).await?;
                tx.commit().await?;
                Ok(runs)
            })?;
        }
        Ok(report)
    }
    fn content_usage(&self) -> Result<ContentUsage, StoreError> {
        self.run(|c| async move {
            let row = c
                .query_one(
                    "SELECT (SELECT count(*) FROM calls), \
                     (SELECT coalesce(sum(pg_column_size(record) + pg_column_size(summary)), 0)::bigint FROM calls), \
                     (SELECT coalesce(sum(length(manifest)), 0)::bigint FROM call_content), \
                     (SELECT count(*) FROM chunks), \
                     (SELECT coalesce(sum(length(value)), 0)::bigint FROM chunks), \
                     (SELECT count(*) FROM blobs), \
                     (SELECT coalesce(sum(length(value)), 0)::bigint FROM blobs)",
                    &[],
                )
                .await?;
            let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
            Ok(ContentUsage {
                calls: n(0),
                call_bytes: n(1),
                manifest_bytes: n(2),
                chunks: n(3),
                chunk_bytes: n(4),
                blobs: n(5),
                blob_bytes: n(6),
                // References are a column of the content rows, not entries of their own.
                ref_entries: 0,
            })
        })
    }
    /// Each table: rows and bytes on disk (heap, TOAST and indexes; a partitioned
    /// table's partitions summed).
    fn tree_usage(&self) -> Result<Vec<(String, u64, u64)>, StoreError> {
        self.run(|c| async move {
            let mut out = Vec::new();
            for table in super::TABLES {
                let row = c
                    .query_one(
                        // A plain table is no partition tree (pg_partition_tree
                        // returns nothing for it): its own size, with indexes and TOAST.
                        &format!(
                            "SELECT (SELECT count(*) FROM {table}), \
                             (SELECT CASE WHEN c.relkind = 'p' THEN \
                                 (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) \
                                  FROM pg_partition_tree(c.oid)) \
                               ELSE pg_total_relation_size(c.oid) END::bigint \
                              FROM pg_class c WHERE c.oid = '{table}'::regclass)"
                        ),
                        &[],
                    )
                    .await?;
                let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
                out.push((table.to_string(), n(0), n(1)));
            }
            Ok(out)
        })
    }
    fn facet_cache_bytes(&self) -> (u64, u64) {
        PostgresStore::facet_cache_bytes(self)
    }
    fn encrypted(&self) -> bool {
        PostgresStore::encrypted(self)
    }
    fn content_on_local_disk(&self) -> bool {
        // Content goes to the database server (`batch::CONTENT_DISK`).
        false
    }
}
