//! The writer: a dedicated thread that owns all writes to the store.
//!
//! It reads the capture log (`journal::Feed`) in batches, builds their records
//! (parse, price), groups calls that named no run by their conversation, places
//! each call in its run's loop (`agent_loop`: round, attempt), rolls calls up into
//! invocations, writes each
//! batch at once, and then records the log position the store now holds. It
//! starts where the store left off, so the log's unapplied tail from before a
//! crash is applied first; a call already stored (its batch reached sled, its
//! position did not) is skipped. It exits when the log has closed (the proxy has
//! stopped) and every record is applied, after flushing the store, so a graceful
//! stop loses nothing.

use crate::cost::PriceTable;
use crate::journal::{Entry, Feed, FeedState};
use crate::metrics::Metrics;
use crate::record::{CallRecord, InvocationRecord};
use crate::recorder::build_redacted_with;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

const MAX_BATCH: usize = 512;
/// How long the writer waits for a record before it looks at the log again.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// How long the capture log must be quiet, with everything in it stored, before
/// its segment is sealed and deleted (calls leave the log within seconds).
pub const LOG_SEAL_IDLE: Duration = Duration::from_secs(2);

/// What the writer runs when it finds nothing to do (at most every `IDLE_WAIT`): the
/// binary's allocator hands this thread's free memory back (`src/alloc.rs`). Set once
/// by `set_idle_hook`; the library itself does not know which allocator it runs on.
static IDLE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what the writer runs when idle (the first call wins).
pub fn set_idle_hook(hook: fn()) {
    let _ = IDLE_HOOK.set(hook);
}

pub type SharedPrices = Arc<RwLock<Arc<PriceTable>>>;

/// What bounds the writer's memory for compressed bodies, and how long it waits to
/// fill a batch.
#[derive(Debug, Clone)]
pub struct WriterLimits {
    /// How long a batch that is not full waits for company (`[store] batch_linger_ms`):
    /// a call is stored at most this much later. The capture log already holds it, so
    /// the wait costs visibility, not durability.
    pub batch_linger: Duration,
    /// Largest decoded size of one compressed body (`[capture] max_decoded_bytes`).
    pub max_decoded_bytes: u64,
    /// Decoded body bytes a batch holds before the writer stores what it has and goes
    /// on (`[capture] decode_budget_bytes`): a batch of decompression bombs costs this,
    /// not the batch size times the cap.
    pub decode_budget_bytes: u64,
    /// Secret header and query names beyond the built-in lists.
    pub redaction: crate::headers::Redaction,
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits {
            batch_linger: crate::config::defaults::BATCH_LINGER,
            max_decoded_bytes: crate::config::defaults::MAX_DECODED_BYTES,
            decode_budget_bytes: crate::config::defaults::DECODE_BUDGET_BYTES,
            redaction: crate::headers::Redaction::default(),
        }
    }
}

/// Lets tests and benchmarks stall the writer to exercise the backlog path.
#[derive(Default)]
pub struct WriterControl {
    pub paused: std::sync::atomic::AtomicBool,
    /// Set by a graceful stop: a writer waiting for a failed store to come back gives
    /// up after a few more attempts (its calls stay in the capture log for the next
    /// start) rather than hold the stop forever.
    pub stopping: std::sync::atomic::AtomicBool,
}

/// First wait before reopening a store whose writes failed; doubled up to the max.
const REOPEN_FIRST_WAIT: Duration = Duration::from_millis(100);
const REOPEN_MAX_WAIT: Duration = Duration::from_secs(5);
/// Reopen attempts a stopping writer still makes.
const REOPEN_TRIES_WHEN_STOPPING: u32 = 3;

pub fn spawn(
    store: Store,
    mut feed: Feed,
    prices: SharedPrices,
    metrics: Arc<Metrics>,
    control: Arc<WriterControl>,
    limits: WriterLimits,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("llmtap-writer".into())
        .spawn(move || {
            match store.journal_applied() {
                Ok(applied) => feed.start_at(applied),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the applied log position; replaying the whole log (stored calls are skipped)");
                    feed.start_at(None);
                }
            }
            let replay_until = feed.run_start();
            let replay_started = Instant::now();
            let mut replaying = feed.position() < replay_until;
            let mut state = WriterState {
                store,
                metrics,
                conversations: crate::agent_loop::Conversations::default(),
                mcp_servers: McpServers::default(),
                limits,
                isolate_until: None,
            };
            let mut batch = Vec::with_capacity(MAX_BATCH);
            loop {
                while control.paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                // After a panic, the calls it may have come from are read again one at a
                // time (`isolate_until`), so only a call that panics alone is lost.
                let isolating = state.isolate_until.is_some_and(|end| feed.position() < end);
                let most = if isolating { 1 } else { MAX_BATCH };
                let mut log = feed.fill(&mut batch, most, Some(IDLE_WAIT));
                if batch.is_empty() {
                    if log == FeedState::Closed {
                        break;
                    }
                    if let Some(on_idle) = IDLE_HOOK.get() {
                        on_idle();
                    }
                    // Quiet and wholly applied: the log's segment goes now, not
                    // when 64 MiB more have been written.
                    let applied = feed.position();
                    if !replaying && feed.seal(applied, LOG_SEAL_IDLE) {
                        match state.store.flush() {
                            Ok(_) => feed.retire(applied),
                            Err(e) => {
                                Metrics::add(&state.metrics.store_errors);
                                tracing::error!(error = %e, "store flush failed; applied log segments are kept");
                            }
                        }
                    }
                    continue;
                }
                // A batch merges its counter, rollup and session updates into one
                // write per key, so at a modest rate the writer waits a moment for
                // company: a call is stored at most `batch_linger` later. One sleep,
                // not a 1 ms poll: at 500 calls/s the poll's thousand wake-ups a
                // second cost the writer's core more than they saved.
                if !isolating && batch.len() < MAX_BATCH && log == FeedState::Open {
                    std::thread::sleep(state.limits.batch_linger);
                    log = feed.fill(&mut batch, MAX_BATCH, None);
                }
                let table = match prices.read() {
                    Ok(t) => t.clone(),
                    Err(p) => p.into_inner().clone(),
                };
                let end = batch.last().map(|e| e.end);
                let fresh = batch.iter().filter(|e| e.start >= replay_until).count() as u64;
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    state.write(&mut batch, &table, replay_until)
                }));
                let Ok(written) = written else {
                    batch.clear();
                    if !state.after_panic(isolating, end, fresh, &control, &mut feed) {
                        return;
                    }
                    continue;
                };
                if let Err(e) = written {
                    // An I/O failure (a full disk): nothing after the store's applied
                    // position is lost, it is all in the capture log. Reopen the
                    // store and read the log again from where it stands.
                    batch.clear();
                    tracing::error!(error = %e, "store write failed; calls wait in the capture log while the store is reopened");
                    if !state.recover(&control, &mut feed) {
                        return;
                    }
                    continue;
                }
                if let Some(end) = end {
                    state.applied(end, &mut feed);
                }
                // Every `store.snapshot_every` bytes: reopen the engine so the next
                // start replays a bounded log (calls wait in the capture log).
                if let Err(e) = state.store.maintain() {
                    tracing::error!(error = %e, "reopening the store for a snapshot failed; reopening it as after a failed write");
                    if !state.recover(&control, &mut feed) {
                        return;
                    }
                }
                if replaying && feed.position() >= replay_until {
                    replaying = false;
                    tracing::info!(
                        seconds = replay_started.elapsed().as_secs_f64(),
                        "capture log replayed"
                    );
                }
            }
            match state.store.flush() {
                Ok(_) => {
                    feed.retire(feed.position());
                    tracing::info!("writer drained and flushed the store");
                }
                Err(e) => tracing::error!(error = %e, "final store flush failed"),
            }
        })
}

struct WriterState {
    store: Store,
    metrics: Arc<Metrics>,
    /// Recent conversations of calls that named no run (bounded).
    conversations: crate::agent_loop::Conversations,
    /// MCP servers by session, from their `initialize` answers.
    mcp_servers: McpServers,
    limits: WriterLimits,
    /// The log position up to which calls are written one at a time, after a batch
    /// that panicked (`after_panic`).
    isolate_until: Option<u64>,
}

/// The server each MCP session talks to, as its `initialize` answer named it, so the
/// session's later exchanges (which do not repeat it) carry it too. Bounded: past
/// `MAX_MCP_SESSIONS` the oldest half is forgotten (a forgotten session's calls keep
/// their provider name, without the server's own).
#[derive(Default)]
struct McpServers {
    by_session: HashMap<String, (u64, crate::record::McpServer)>,
    noted: u64,
}

const MAX_MCP_SESSIONS: usize = 10_000;

impl McpServers {
    fn note(&mut self, call: &mut crate::record::CallRecord) {
        let Some(mcp) = call.mcp.as_mut() else {
            return;
        };
        let Some(session) = mcp.session_id.clone() else {
            return;
        };
        // Sessions are the server's ids: two providers (or tenants) never share one
        // in practice, but keying by provider too costs nothing.
        let key = format!("{}\u{0}{}", call.provider, session);
        match &mcp.server {
            Some(server) => {
                self.noted += 1;
                if self.by_session.len() >= MAX_MCP_SESSIONS {
                    let mut ages: Vec<u64> = self.by_session.values().map(|v| v.0).collect();
                    ages.sort_unstable();
                    let cut = ages[ages.len() / 2];
                    self.by_session.retain(|_, v| v.0 > cut);
                }
                self.by_session.insert(key, (self.noted, server.clone()));
            }
            None => mcp.server = self.by_session.get(&key).map(|v| v.1.clone()),
        }
    }
}

impl WriterState {
    /// Stores the records of `batch` (and empties it). An I/O error of the store
    /// comes back (the batch is to be read again once the store is reopened); other
    /// failures are counted and logged here.
    fn write(
        &mut self,
        batch: &mut Vec<Entry>,
        prices: &PriceTable,
        run_start: u64,
    ) -> Result<(), StoreError> {
        // Calls of this run were counted into the backlog when they were handed over;
        // a batch read again after a failed write was not taken off it.
        let fresh = batch.iter().filter(|e| e.start >= run_start).count() as u64;
        let mut entries = std::mem::take(batch);
        // Records read back from disk may already be stored (a crash after their
        // batch reached the store and before its log position did): skip those.
        entries.retain(|entry| {
            if !entry.from_disk {
                return true;
            }
            match self.store.contains_call(&entry.call.facts.id) {
                Ok(stored) => !stored,
                Err(e) => {
                    tracing::warn!(error = %e, call = %entry.call.facts.id, "cannot check whether a replayed call is stored; storing it");
                    true
                }
            }
        });
        self.write_calls(entries, prices)?;
        self.metrics.backlog.fetch_sub(fresh, Ordering::Relaxed);
        Ok(())
    }

    /// A batch's write panicked (a bug met by some call, outside the per-call steps
    /// `contain_panic` guards): its calls were not stored. A batch of several calls
    /// is read again from the log one call at a time up to its `end`; a call that
    /// panics alone is skipped for good (counted as a capture failure, the log
    /// position moves past it, so a restart does not meet it again). The writer
    /// lives on either way: one poisoned call must not stop the capture of all.
    /// False when the writer is stopping and the store cannot be read again.
    fn after_panic(
        &mut self,
        isolating: bool,
        end: Option<u64>,
        fresh: u64,
        control: &WriterControl,
        feed: &mut Feed,
    ) -> bool {
        Metrics::add(&self.metrics.writer_panics);
        let Some(end) = end else {
            return true;
        };
        if isolating {
            self.metrics
                .capture_failures
                .fetch_add(1, Ordering::Relaxed);
            self.metrics.backlog.fetch_sub(fresh, Ordering::Relaxed);
            tracing::error!(position = end, "writing a call panicked; it is not recorded (its record stays in the capture log until the segment is retired)");
            self.applied(end, feed);
            return true;
        }
        tracing::error!("writing a batch panicked; its calls are written again one at a time");
        self.isolate_until = Some(end);
        match self.store.journal_applied() {
            Ok(applied) => {
                feed.rewind(applied);
                true
            }
            // The store cannot say where it stands: reopen it as after a failed write.
            Err(_) => self.recover(control, feed),
        }
    }

    /// Reopens the store after its writes failed, waiting with backoff until it
    /// opens, and reads the capture log again from the position the store holds.
    /// False when the writer is stopping and the store did not come back (the log
    /// keeps its calls for the next start).
    fn recover(&mut self, control: &WriterControl, feed: &mut Feed) -> bool {
        let mut wait = REOPEN_FIRST_WAIT;
        let mut tries_left = REOPEN_TRIES_WHEN_STOPPING;
        loop {
            if control.stopping.load(Ordering::Relaxed) {
                if tries_left == 0 {
                    tracing::error!("the store did not come back before the stop; the capture log keeps its calls for the next start");
                    return false;
                }
                tries_left -= 1;
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(REOPEN_MAX_WAIT);
            match self.store.reopen() {
                Ok(()) => {
                    let applied = self.store.journal_applied().unwrap_or_else(|e| {
                        tracing::error!(error = %e, "cannot read the reopened store's log position; replaying the whole log (stored calls are skipped)");
                        None
                    });
                    feed.rewind(applied);
                    return true;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot reopen the store yet")
                }
            }
        }
    }

    /// Records that the store holds the log up to `end`; deletes the segments that
    /// lie wholly before it once the store has flushed them.
    fn applied(&mut self, end: u64, feed: &mut Feed) {
        if let Err(e) = self.store.set_journal_applied(end) {
            Metrics::add(&self.metrics.store_errors);
            tracing::error!(error = %e, "cannot record the applied log position; a restart replays (and skips) these calls again");
        }
        feed.applied(end);
        if feed.retirable(end) {
            match self.store.flush() {
                Ok(_) => feed.retire(end),
                Err(e) => {
                    Metrics::add(&self.metrics.store_errors);
                    tracing::error!(error = %e, "store flush failed; applied log segments are kept");
                }
            }
        }
    }

    fn write_calls(&mut self, batch: Vec<Entry>, prices: &PriceTable) -> Result<(), StoreError> {
        let count = batch.len() as u64;
        if count == 0 {
            return Ok(());
        }
        // Measured per batch, not only by the storage thread every few seconds: a disk
        // that fills fast must pause capture before the store hits "no space left".
        self.store.disk().check();
        if self.store.capture_paused() {
            // Disk full: forwarding goes on, nothing is stored (counted, logged by the disk guard).
            drop(batch);
            self.store.count_skipped(count);
            self.metrics
                .capture_failures
                .fetch_add(count, Ordering::Relaxed);
            return Ok(());
        }
        let mut calls = Vec::with_capacity(batch.len());
        let mut decoded_held: u64 = 0;
        // The batch's runs as stored, read at once (one query, not one per run, on a
        // database engine): each is taken once; a run seen again after part of the
        // batch was stored (below) is the one that part stored.
        let mut run_ids: Vec<String> = batch
            .iter()
            .map(|e| e.call.facts.invocation_id.clone())
            .collect();
        run_ids.sort_unstable();
        run_ids.dedup();
        let mut runs = match self.store.get_invocations(&run_ids) {
            Ok(stored) => {
                let mut runs = BatchRuns::default();
                for run in stored {
                    runs.known.insert(run.id.clone(), Some(run));
                }
                for id in run_ids {
                    runs.known.entry(id).or_insert(None);
                }
                runs
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the batch's runs at once; reading them one by one");
                BatchRuns::default()
            }
        };
        for entry in batch {
            let named_run = entry.call.facts.meta.invocation_id.is_some()
                || entry.call.facts.meta.trace_id.is_some();
            let id = entry.call.facts.id.clone();
            let limits = &self.limits;
            let built = crate::capture::contain_panic(&self.metrics, "writer", &id, || {
                let mut call = build_redacted_with(
                    entry.call,
                    prices,
                    limits.max_decoded_bytes,
                    &limits.redaction,
                );
                call.request_digest = crate::agent_loop::request_digest(&call);
                call
            });
            // Replayed from the log later, it panics again and is skipped again.
            let Some(mut call) = built else {
                continue;
            };
            if !named_run && crate::agent_loop::is_llm(&call) {
                if let Some(group) = self.conversations.group(&call, call.started_at_us) {
                    call.invocation_id = group.run;
                    if call.metadata.session_id.is_none() {
                        call.metadata.session_id = Some(crate::headers::tenant_scoped(
                            &group.session,
                            call.metadata.tenant.as_deref(),
                        ));
                    }
                    call.grouped_by_conversation = Some(group.how.to_string());
                }
            } else if !named_run {
                // A tool's call (HTTP, MCP tools/call) that named no run: the run whose
                // round asked for it (`Conversations::join_tool`, the one rule).
                if let Some(join) = self.conversations.join_tool(&call) {
                    call.invocation_id = join.run;
                    if call.metadata.session_id.is_none() {
                        call.metadata.session_id = join.session;
                    }
                    call.grouped_by_conversation = Some("tool".to_string());
                }
            }
            self.conversations.note_round(&call);
            self.mcp_servers.note(&mut call);
            if call.cost.as_ref().is_some_and(|c| !c.priced) && !call.usage.is_empty() {
                Metrics::add(&self.metrics.unpriced_calls);
            }
            if !call.truncated_parts.is_empty() {
                self.metrics
                    .truncated_bodies
                    .fetch_add(call.truncated_parts.len() as u64, Ordering::Relaxed);
            }
            let status = call.status.map_or("failed", |s| s.as_str());
            self.metrics
                .observe_call(&call.provider, status, call.latency_ms / 1000.0);
            decoded_held += body_bytes(&call);
            calls.push(call);
            if decoded_held >= self.limits.decode_budget_bytes {
                // Decoded bodies are the batch's memory: store these before decoding more.
                self.store_part(&mut calls, &mut runs)?;
                decoded_held = 0;
            }
        }
        self.store_part(&mut calls, &mut runs)
    }

    /// The run of `id` as stored (or as this batch's earlier part stored it).
    fn prior_run(&self, runs: &mut BatchRuns, id: &str) -> Option<InvocationRecord> {
        if let Some(known) = runs.known.remove(id) {
            return known;
        }
        match self.store.get_invocation(id) {
            Ok(run) => run,
            Err(e) => {
                Metrics::add(&self.metrics.store_errors);
                tracing::error!(error = %e, invocation = %id, "cannot read invocation; rebuilding it from this call");
                None
            }
        }
    }

    /// Places the calls built so far in their runs (`agent_loop::fold_run`: rounds and
    /// attempts by start time; a call that started before its run's latest stored
    /// round renumbers the run's later calls, rewritten in the same batch), stores
    /// them with the runs they changed, and empties `calls`.
    fn store_part(
        &mut self,
        calls: &mut Vec<CallRecord>,
        runs: &mut BatchRuns,
    ) -> Result<(), StoreError> {
        if calls.is_empty() {
            return Ok(());
        }
        let count = calls.len() as u64;
        let stored_at = crate::timefmt::format_rfc3339_us(crate::timefmt::now_unix_us());
        let mut by_run: HashMap<String, Vec<CallRecord>> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for mut call in calls.drain(..) {
            call.stored_at = Some(stored_at.clone());
            let list = by_run.entry(call.invocation_id.clone()).or_default();
            if list.is_empty() {
                order.push(call.invocation_id.clone());
            }
            list.push(call);
        }
        let mut changed = Vec::with_capacity(order.len());
        let mut moved = Vec::new();
        for id in &order {
            let Some(mut run_calls) = by_run.remove(id) else {
                continue;
            };
            let prior = self.prior_run(runs, id);
            let stored = match crate::agent_loop::late_from(prior.as_ref(), &run_calls) {
                Some(from_us) => self.store.run_loop_calls(id, from_us)?,
                None => Vec::new(),
            };
            let (run, run_moved) = crate::agent_loop::fold_run(prior, &mut run_calls, &stored);
            moved.extend(run_moved);
            changed.push(run);
            calls.extend(run_calls);
        }
        #[cfg(test)]
        tests::panic_if_poisoned(calls);
        let result = self.store.write_batch_moving(calls, &changed, &moved);
        self.store
            .note_write_outcome(result.as_ref().err().map(ToString::to_string));
        match result {
            Ok(()) => {
                self.metrics
                    .records_written
                    .fetch_add(count, Ordering::Relaxed);
                for run in changed {
                    runs.known.insert(run.id.clone(), Some(run));
                }
            }
            Err(e) if e.is_io() => {
                Metrics::add(&self.metrics.store_errors);
                calls.clear();
                return Err(e);
            }
            Err(e) => {
                self.metrics
                    .store_errors
                    .fetch_add(count, Ordering::Relaxed);
                self.metrics
                    .capture_failures
                    .fetch_add(count, Ordering::Relaxed);
                tracing::error!(error = %e, calls = count, "store write failed; these records are lost");
            }
        }
        calls.clear();
        Ok(())
    }
}

/// The runs of the batch being written, as stored (`None`: not stored yet), read at
/// once before it and kept as each part of it stores them.
#[derive(Default)]
struct BatchRuns {
    known: HashMap<String, Option<InvocationRecord>>,
}

/// Bytes of decoded body text a record holds.
fn body_bytes(call: &CallRecord) -> u64 {
    let text = |t: &Option<String>| t.as_ref().map_or(0, |t| t.len() as u64);
    let raw = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, |b| b.len() as u64);
    text(&call.request_body)
        + text(&call.response_body)
        + raw(&call.request_body_bytes)
        + raw(&call.response_body_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{self, JournalOptions};
    use std::sync::Mutex;

    /// Ids of calls whose batch write panics (the fault a test injects).
    static POISONED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Panics, as a bug in the batch write would, when a poisoned call is in it.
    pub(super) fn panic_if_poisoned(calls: &[CallRecord]) {
        let poisoned = POISONED.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if calls.iter().any(|c| poisoned.contains(&c.id)) {
            panic!("injected: a poisoned call in the batch");
        }
    }

    #[test]
    fn a_panicking_batch_costs_only_the_call_that_panics_and_the_writer_goes_on() {
        let dir = crate::test_support::TempDir::new("writer-panic");
        let store = Store::open(&dir.join("store"), 16 << 20, 50).unwrap();
        let metrics = Arc::new(Metrics::default());
        let log = journal::open(
            JournalOptions::new(dir.join("journal"), Duration::from_millis(5), None),
            metrics.clone(),
        )
        .unwrap();
        let prices = Arc::new(RwLock::new(Arc::new(PriceTable::load(None).unwrap())));
        let control = Arc::new(WriterControl::default());
        // One batch: the writer waits for company (`batch_linger`) before writing.
        let limits = WriterLimits {
            batch_linger: Duration::from_millis(300),
            ..WriterLimits::default()
        };
        let calls: Vec<_> = (0..6)
            .map(|i| crate::dev::synthetic_finished_call(i, 200))
            .collect();
        let ids: Vec<String> = calls.iter().map(|c| c.facts.id.clone()).collect();
        POISONED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ids[2].clone());
        let writer = spawn(
            store.clone(),
            log.feed,
            prices,
            metrics.clone(),
            control,
            limits,
        )
        .unwrap();
        for call in calls {
            log.sender.send(Box::new(call)).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while metrics.records_written.load(Ordering::Relaxed) < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let stored: Vec<bool> = ids
            .iter()
            .map(|id| store.contains_call(id).unwrap())
            .collect();
        assert_eq!(stored, [true, true, false, true, true, true]);
        assert_eq!(
            metrics.writer_panics.load(Ordering::Relaxed),
            2,
            "the batch, then the call alone"
        );
        assert_eq!(metrics.capture_failures.load(Ordering::Relaxed), 1);
        // The writer lives on: a later call is stored, and the log closes cleanly.
        let later = crate::dev::synthetic_finished_call(6, 200);
        let later_id = later.facts.id.clone();
        log.sender.send(Box::new(later)).unwrap();
        drop(log.sender);
        log.appender.join().unwrap();
        writer
            .join()
            .expect("the writer thread ends without a panic");
        assert!(store.contains_call(&later_id).unwrap());
        // The poisoned call is behind the applied position: a restart does not meet it.
        let applied = store.journal_applied().unwrap().unwrap();
        assert_eq!(applied, metrics.log_end.load(Ordering::Relaxed));
    }
}
