//! Counters and histograms, rendered as Prometheus text on the API listener.
//!
//! Hot-path updates are single atomic increments; per-label maps are touched
//! only by the writer thread, off the forward path.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds, in seconds, of the upstream latency histogram buckets.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    pub records_written: AtomicU64,
    pub capture_failures: AtomicU64,
    pub store_errors: AtomicU64,
    /// Batch writes that panicked; the writer goes on (`writer::WriterState::after_panic`).
    pub writer_panics: AtomicU64,
    pub unpriced_calls: AtomicU64,
    pub rejected_backlog: AtomicU64,
    pub passed_uncaptured: AtomicU64,
    pub bad_requests: AtomicU64,
    pub unrouted: AtomicU64,
    pub truncated_bodies: AtomicU64,
    /// Records handed over and not yet stored.
    pub backlog: AtomicU64,
    /// Records waiting for the capture log thread.
    pub log_queue: AtomicU64,
    /// Capture log position: end of what was appended, and of what the store applied.
    pub log_end: AtomicU64,
    pub log_applied: AtomicU64,
    /// Torn or corrupt log records found (and skipped) when reading the log.
    pub log_torn: AtomicU64,
    /// Damaged stretches of the capture log stepped over while reading it (each
    /// loses the records in it, never those after it), and their bytes.
    pub log_damaged: AtomicU64,
    pub log_damaged_bytes: AtomicU64,
    /// 1 while the capture log appends nothing because its volume is nearly full.
    pub log_paused: AtomicU64,
    /// Calls forwarded but not recorded while the capture log was paused.
    pub log_paused_calls: AtomicU64,
    /// OpenTelemetry spans dropped: queue full, export failed, or still queued at shutdown.
    pub otel_dropped: AtomicU64,
    pub otel_exported: AtomicU64,
    pub otel_export_failures: AtomicU64,
    /// Stored batches the OpenTelemetry builder skipped because it fell behind.
    pub otel_lagged_batches: AtomicU64,
    requests: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// The in-flight capture budget, for its held/cuts lines.
    capture_budget: std::sync::OnceLock<std::sync::Arc<crate::capture::MemoryBudget>>,
    /// Each listener's connection slots, for the open/capacity/refused lines.
    listeners: Mutex<Vec<(&'static str, std::sync::Arc<crate::conn_limit::Slots>)>>,
    latency: Mutex<Histogram>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS_S.len() + 1],
    sum_s: f64,
    count: u64,
}

impl Metrics {
    /// Reports the in-flight capture budget in `/metrics`.
    pub fn watch_capture_budget(&self, budget: std::sync::Arc<crate::capture::MemoryBudget>) {
        let _ = self.capture_budget.set(budget);
    }

    /// Reports a listener's connections in `/metrics`.
    pub fn watch_listener(
        &self,
        name: &'static str,
        slots: std::sync::Arc<crate::conn_limit::Slots>,
    ) {
        if let Ok(mut listeners) = self.listeners.lock() {
            listeners.push((name, slots));
        }
    }

    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Called by the writer for every finished call.
    pub fn observe_call(&self, provider: &str, status: &'static str, upstream_latency_s: f64) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((provider.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut h) = self.latency.lock() {
            let i = LATENCY_BUCKETS_S
                .iter()
                .position(|b| upstream_latency_s <= *b)
                .unwrap_or(LATENCY_BUCKETS_S.len());
            h.counts[i] += 1;
            h.sum_s += upstream_latency_s;
            h.count += 1;
        }
    }

    /// Bytes of the capture log the store has not applied yet (the backlog bound).
    pub fn log_unapplied_bytes(&self) -> u64 {
        self.log_end
            .load(Ordering::Relaxed)
            .saturating_sub(self.log_applied.load(Ordering::Relaxed))
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = write_counter;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(out, "# HELP llmtap_requests_total Proxied calls by provider and status.\n# TYPE llmtap_requests_total counter");
        if let Ok(map) = self.requests.lock() {
            for ((provider, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "llmtap_requests_total{{provider=\"{provider}\",status=\"{status}\"}} {n}"
                );
            }
        }
        if let Some(budget) = self.capture_budget.get() {
            let _ = writeln!(
                out,
                "# HELP llmtap_capture_memory_bytes Captured bytes in-flight calls hold now (capture.memory_budget_bytes bounds them).\n# TYPE llmtap_capture_memory_bytes gauge\nllmtap_capture_memory_bytes {}\n# HELP llmtap_capture_memory_budget_bytes capture.memory_budget_bytes.\n# TYPE llmtap_capture_memory_budget_bytes gauge\nllmtap_capture_memory_budget_bytes {}",
                budget.held(),
                budget.limit
            );
            counter(
                &mut out,
                "llmtap_capture_budget_cuts_total",
                "Captures cut (truncated, marked) because in-flight captures held the memory budget; forwarding was untouched.",
                budget.cuts.load(Ordering::Relaxed),
            );
        }
        if let Ok(listeners) = self.listeners.lock() {
            for (head, help, kind) in [
                (
                    "llmtap_connections_open",
                    "Client connections held, by listener.",
                    "gauge",
                ),
                (
                    "llmtap_connections_capacity",
                    "Client connections a listener may hold (conn_limit).",
                    "gauge",
                ),
                (
                    "llmtap_connections_refused_total",
                    "Read-API connections closed at once because their address held its share.",
                    "counter",
                ),
            ] {
                let _ = writeln!(out, "# HELP {head} {help}\n# TYPE {head} {kind}");
                for (name, slots) in listeners.iter() {
                    let value = match kind {
                        "counter" => slots.refused.load(Ordering::Relaxed),
                        _ if head.ends_with("open") => slots.open() as u64,
                        _ => slots.capacity as u64,
                    };
                    let _ = writeln!(out, "{head}{{listener=\"{name}\"}} {value}");
                }
            }
        }
        counter(
            &mut out,
            "llmtap_records_written_total",
            "Call records stored.",
            get(&self.records_written),
        );
        counter(
            &mut out,
            "llmtap_capture_failures_total",
            "Calls whose capture failed (the call itself was forwarded).",
            get(&self.capture_failures),
        );
        counter(
            &mut out,
            "llmtap_store_errors_total",
            "Errors writing to the store.",
            get(&self.store_errors),
        );
        counter(
            &mut out,
            "llmtap_writer_panics_total",
            "Batch writes that panicked; their calls were written again one at a time.",
            get(&self.writer_panics),
        );
        counter(
            &mut out,
            "llmtap_unpriced_calls_total",
            "Calls with usage but no matching price.",
            get(&self.unpriced_calls),
        );
        counter(
            &mut out,
            "llmtap_rejected_backlog_total",
            "Requests answered 503 because the capture backlog (store.backlog) was full.",
            get(&self.rejected_backlog),
        );
        counter(
            &mut out,
            "llmtap_passed_uncaptured_total",
            "Requests forwarded without capture because the capture backlog (store.backlog) was full.",
            get(&self.passed_uncaptured),
        );
        counter(
            &mut out,
            "llmtap_bad_requests_total",
            "Requests refused for malformed x-llmtap headers.",
            get(&self.bad_requests),
        );
        counter(
            &mut out,
            "llmtap_unrouted_total",
            "Requests with no matching provider.",
            get(&self.unrouted),
        );
        counter(
            &mut out,
            "llmtap_truncated_bodies_total",
            "Captured bodies cut at the capture cap.",
            get(&self.truncated_bodies),
        );
        counter(
            &mut out,
            "llmtap_log_torn_records_total",
            "Torn or corrupt capture log records skipped (a crash in the middle of a write).",
            get(&self.log_torn),
        );
        let _ = writeln!(
            out,
            "# HELP llmtap_capture_paused 1 while the capture log records nothing because its volume is nearly full (store.critical_free_mb).\n# TYPE llmtap_capture_paused gauge\nllmtap_capture_paused {}",
            get(&self.log_paused)
        );
        counter(
            &mut out,
            "llmtap_capture_paused_calls_total",
            "Calls forwarded but not recorded while the capture log was paused for disk space.",
            get(&self.log_paused_calls),
        );
        counter(
            &mut out,
            "llmtap_log_damaged_total",
            "Damaged stretches in the middle of the capture log stepped over (their records are lost, the ones after them kept).",
            get(&self.log_damaged),
        );
        counter(
            &mut out,
            "llmtap_log_damaged_bytes_total",
            "Bytes of the capture log stepped over as damaged.",
            get(&self.log_damaged_bytes),
        );
        for (name, help, value) in [
            (
                "llmtap_otel_dropped_total",
                "OpenTelemetry spans dropped (queue full, export failed, or unsent at shutdown).",
                &self.otel_dropped,
            ),
            (
                "llmtap_otel_exported_spans_total",
                "OpenTelemetry spans the collector accepted.",
                &self.otel_exported,
            ),
            (
                "llmtap_otel_export_failures_total",
                "OTLP export requests that failed (spans or metrics).",
                &self.otel_export_failures,
            ),
            (
                "llmtap_otel_lagged_batches_total",
                "Stored batches the OpenTelemetry exporter skipped because it fell behind.",
                &self.otel_lagged_batches,
            ),
        ] {
            counter(&mut out, name, help, get(value));
        }
        let _ = writeln!(
            out,
            "# HELP llmtap_backlog Records handed over and not yet stored.\n# TYPE llmtap_backlog gauge\nllmtap_backlog {}",
            get(&self.backlog)
        );
        let _ = writeln!(
            out,
            "# HELP llmtap_log_queue Records waiting to be appended to the capture log.\n# TYPE llmtap_log_queue gauge\nllmtap_log_queue {}",
            get(&self.log_queue)
        );
        let _ = writeln!(
            out,
            "# HELP llmtap_log_unapplied_bytes Capture log bytes the store has not applied (bounded by store.backlog).\n# TYPE llmtap_log_unapplied_bytes gauge\nllmtap_log_unapplied_bytes {}",
            self.log_unapplied_bytes()
        );
        if let Ok(h) = self.latency.lock() {
            let _ = writeln!(out, "# HELP llmtap_upstream_latency_seconds Time from forwarding a request to the end of its response.\n# TYPE llmtap_upstream_latency_seconds histogram");
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
                cumulative += h.counts[i];
                let _ = writeln!(
                    out,
                    "llmtap_upstream_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += h.counts[LATENCY_BUCKETS_S.len()];
            let _ = writeln!(
                out,
                "llmtap_upstream_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(out, "llmtap_upstream_latency_seconds_sum {}", h.sum_s);
            let _ = writeln!(out, "llmtap_upstream_latency_seconds_count {}", h.count);
        }
        out
    }
}

/// One Prometheus counter with its help and type lines.
pub fn write_counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}
