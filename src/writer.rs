//! The writer: a dedicated thread that owns all writes to the store.
//!
//! It drains finished calls from an unbounded channel in batches, builds their
//! records (parse, price), numbers rounds, rolls calls up into invocations, and
//! writes each batch at once. It exits when every sender is gone (the proxy has
//! stopped) after draining the channel and flushing the store, so a graceful stop
//! loses nothing that reached it.

use crate::capture::FinishedCall;
use crate::cost::PriceTable;
use crate::metrics::Metrics;
use crate::record::{CallRecord, InvocationRecord};
use crate::recorder::build_record;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

const MAX_BATCH: usize = 512;
const BATCH_LINGER: Duration = Duration::from_millis(20);
/// How long the writer remembers an invocation's round offset without hearing of it.
const ROUND_BASE_IDLE: Duration = Duration::from_secs(3600);

pub type SharedPrices = Arc<RwLock<Arc<PriceTable>>>;

/// Lets tests and benchmarks stall the writer to exercise the backlog path.
#[derive(Default)]
pub struct WriterControl {
    pub paused: std::sync::atomic::AtomicBool,
}

pub fn spawn(
    store: Store,
    mut receiver: UnboundedReceiver<Box<FinishedCall>>,
    prices: SharedPrices,
    metrics: Arc<Metrics>,
    control: Arc<WriterControl>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("llmtap-writer".into())
        .spawn(move || {
            let mut state = WriterState {
                store,
                metrics,
                round_base: HashMap::new(),
            };
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = receiver.blocking_recv() {
                while control.paused.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                batch.push(first);
                // A batch merges its counter, rollup and session updates into one
                // write per key, so at a modest rate the writer waits a moment for
                // company: a call is stored at most BATCH_LINGER later. One sleep,
                // not a 1 ms poll: at 500 calls/s the poll's thousand wake-ups a
                // second cost the writer's core more than they saved.
                drain_into(&mut receiver, &mut batch);
                if batch.len() < MAX_BATCH {
                    std::thread::sleep(BATCH_LINGER);
                    drain_into(&mut receiver, &mut batch);
                }
                let table = match prices.read() {
                    Ok(t) => t.clone(),
                    Err(p) => p.into_inner().clone(),
                };
                state.write(batch.drain(..), &table);
            }
            match state.store.flush() {
                Ok(_) => tracing::info!("writer drained and flushed the store"),
                Err(e) => tracing::error!(error = %e, "final store flush failed"),
            }
        })
}

/// Moves what is queued now into `batch`, up to `MAX_BATCH`.
// The calls arrive boxed from the channel; keeping the boxes avoids moving a large struct.
#[allow(clippy::vec_box)]
fn drain_into(
    receiver: &mut UnboundedReceiver<Box<FinishedCall>>,
    batch: &mut Vec<Box<FinishedCall>>,
) {
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(call) => batch.push(call),
            Err(_) => break,
        }
    }
}

struct WriterState {
    store: Store,
    metrics: Arc<Metrics>,
    /// Rounds stored for an invocation before this process's numbering began.
    round_base: HashMap<String, (u32, Instant)>,
}

impl WriterState {
    fn write(&mut self, batch: std::vec::Drain<'_, Box<FinishedCall>>, prices: &PriceTable) {
        let count = batch.len() as u64;
        if self.store.capture_paused() {
            // Disk full: forwarding goes on, nothing is stored (counted, logged by the disk guard).
            drop(batch);
            self.store.count_skipped(count);
            self.metrics
                .capture_failures
                .fetch_add(count, Ordering::Relaxed);
            self.metrics.backlog.fetch_sub(count, Ordering::Relaxed);
            return;
        }
        let mut calls = Vec::with_capacity(batch.len());
        let mut invocations: HashMap<String, InvocationRecord> = HashMap::new();
        for finished in batch {
            let call = build_record(*finished, prices);
            let mut call = call;
            call.round = self.numbered_round(&call);
            if call.cost.as_ref().is_some_and(|c| !c.priced) && !call.usage.is_empty() {
                Metrics::add(&self.metrics.unpriced_calls);
            }
            let status = call.status.map_or("failed", |s| s.as_str());
            self.metrics
                .observe_call(&call.provider, status, call.latency_ms / 1000.0);
            let entry = match invocations.remove(&call.invocation_id) {
                Some(inv) => Some(inv),
                None => match self.store.get_invocation(&call.invocation_id) {
                    Ok(inv) => inv,
                    Err(e) => {
                        Metrics::add(&self.metrics.store_errors);
                        tracing::error!(error = %e, invocation = %call.invocation_id, "cannot read invocation; rebuilding it from this call");
                        None
                    }
                },
            };
            let rolled = crate::record::roll_up(entry, &call);
            invocations.insert(rolled.id.clone(), rolled);
            calls.push(call);
        }
        let invocations: Vec<InvocationRecord> = invocations.into_values().collect();
        match self.store.write_batch(&calls, &invocations) {
            Ok(()) => {
                self.metrics
                    .records_written
                    .fetch_add(count, Ordering::Relaxed);
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
        self.metrics.backlog.fetch_sub(count, Ordering::Relaxed);
    }

    /// Turns a round counted since this process started into the invocation's round,
    /// continuing after rounds stored by an earlier run.
    fn numbered_round(&mut self, call: &CallRecord) -> u32 {
        let now = Instant::now();
        if self.round_base.len() > 100_000 {
            self.round_base
                .retain(|_, (_, seen)| now.duration_since(*seen) < ROUND_BASE_IDLE);
        }
        let arrival = call.round;
        if arrival == 0 {
            // A tool HTTP call: not a round.
            return 0;
        }
        if arrival == 1 {
            // Numbering (re)starts here: rounds already stored come first.
            let stored = match self.store.get_invocation(&call.invocation_id) {
                Ok(Some(inv)) => inv.rounds,
                _ => 0,
            };
            self.round_base
                .insert(call.invocation_id.clone(), (stored, now));
            return stored + 1;
        }
        let base = match self.round_base.get_mut(&call.invocation_id) {
            Some(entry) => {
                entry.1 = now;
                entry.0
            }
            None => 0,
        };
        base + arrival
    }
}
