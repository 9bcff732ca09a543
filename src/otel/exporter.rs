//! The live exporter and the replay: stored records → spans and metrics → OTLP/HTTP.
//!
//! Three tasks, none on the forward path or the writer thread:
//! - the *builder* receives each stored batch from the store's broadcast, reads
//!   its calls back (on the blocking pool), builds their spans and records their
//!   metrics, and keeps the open runs (trace context, the last round's tool calls);
//!   a run's `invoke_agent` span is emitted once the run has had no call for
//!   `invocation_idle`, when more than `MAX_OPEN_RUNS` are open (oldest first), or
//!   at shutdown. Its id is derived from the invocation id, so the calls exported
//!   before it already name it as their parent. A run that resumes after its span
//!   was emitted has it emitted again, with the same id and the whole extent.
//! - the *sender* takes spans from a bounded queue (`max_queue_spans`) in batches
//!   and posts them; a full queue or a failed post drops spans, counted in
//!   `llmtap_otel_dropped_total` and logged (at most every 10 s).
//! - the *metrics* task posts the cumulative client metrics every interval.
//!
//! Shutdown (after the writer has stored and published everything) drains the
//! broadcast, emits the open runs, and flushes the queue and the metrics within
//! `shutdown_timeout` (at most the grace period); what is still queued then is
//! counted as dropped and the tasks are stopped.
//!
//! Why OTLP messages built with `opentelemetry-proto` rather than the
//! OpenTelemetry SDK: the SDK's tracer makes its own ids and timestamps and keeps a
//! span open until it ends in-process, while these spans are built after the fact
//! from stored records, need ids derived from llmtap's ids (so a replay matches the
//! live export), and need a queue whose drops llmtap counts itself.

use super::metrics::ClientMetrics;
use super::spans::{self, RoundTools, SpanOptions, TraceContext};
use super::{scope, OtelConfig, SCHEMA_URL};
use crate::metrics::Metrics;
use crate::record::CallRecord;
use crate::store::summary::Filter;
use crate::store::{BatchWritten, PageRequest, Store, StoreError};
use crate::upstream::UpstreamClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Open runs kept by the builder; past this the oldest is emitted.
pub const MAX_OPEN_RUNS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the collector did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the collector answered HTTP {0}")]
    Status(u16),
    #[error("cannot reach the collector: {0}")]
    Connect(String),
    #[error("the export queue is full")]
    QueueFull,
    #[error("cannot build the export request: {0}")]
    Request(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Posts OTLP/HTTP protobuf requests.
#[derive(Clone)]
pub struct Transport {
    client: UpstreamClient,
    config: Arc<OtelConfig>,
}

impl Transport {
    pub fn new(client: UpstreamClient, config: Arc<OtelConfig>) -> Transport {
        Transport { client, config }
    }

    async fn post(&self, url: &http::Uri, body: Vec<u8>) -> Result<(), ExportError> {
        let mut builder = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(
                http::header::USER_AGENT,
                concat!("llmtap/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in &self.config.headers.0 {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body = Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = builder
            .body(body)
            .map_err(|e| ExportError::Request(e.to_string()))?;
        let timeout = self.config.timeout;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ExportError::Connect(e.to_string()))?;
            let status = response.status().as_u16();
            // The answer is small (a partial-success message); read at most 64 KiB of it.
            let _ = http_body_util::Limited::new(response.into_body(), 64 << 10)
                .collect()
                .await;
            if (200..300).contains(&status) {
                Ok(())
            } else {
                Err(ExportError::Status(status))
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ExportError::Timeout(timeout))?
    }

    pub async fn export_spans(&self, spans: Vec<Span>) -> Result<(), ExportError> {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(super::resource(&self.config)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    schema_url: SCHEMA_URL.to_string(),
                }],
                schema_url: SCHEMA_URL.to_string(),
            }],
        };
        self.post(&self.config.traces_url, request.encode_to_vec())
            .await
    }

    pub async fn export_metrics(
        &self,
        metrics: Vec<opentelemetry_proto::tonic::metrics::v1::Metric>,
    ) -> Result<(), ExportError> {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(super::resource(&self.config)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    schema_url: SCHEMA_URL.to_string(),
                }],
                schema_url: SCHEMA_URL.to_string(),
            }],
        };
        self.post(&self.config.metrics_url, request.encode_to_vec())
            .await
    }
}

/// Logs export failures at most every 10 s, with how many happened meanwhile.
struct FailureLog {
    last: Mutex<Option<Instant>>,
    since: AtomicU64,
}

impl FailureLog {
    fn new() -> FailureLog {
        FailureLog {
            last: Mutex::new(None),
            since: AtomicU64::new(0),
        }
    }

    fn note(&self, what: &str, error: &ExportError, dropped: usize) {
        let failures = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        self.since.store(0, Ordering::Relaxed);
        tracing::warn!(%error, what, dropped, failures, "OpenTelemetry export failed");
    }
}

/// A run whose calls are being exported.
struct OpenRun {
    ctx: TraceContext,
    previous: Option<RoundTools>,
    /// Tools called over MCP since the previous round (at most `MAX_MCP_TOOLS`).
    mcp_tools: Vec<String>,
    last_seen: Instant,
}

/// MCP tool calls an open run remembers between two rounds at most.
const MAX_MCP_TOOLS: usize = 256;

/// The running exporter.
pub struct Exporter {
    stop: oneshot::Sender<()>,
    builder: JoinHandle<()>,
    sender: JoinHandle<()>,
    metrics_task: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    pending: Arc<AtomicU64>,
    counters: Arc<Metrics>,
    shutdown_timeout: Duration,
}

struct Shared {
    store: Store,
    options: SpanOptions,
    counters: Arc<Metrics>,
    client_metrics: Option<Arc<Mutex<ClientMetrics>>>,
    /// Spans accepted into the queue and not yet exported or dropped.
    pending: Arc<AtomicU64>,
    failures: FailureLog,
}

impl Exporter {
    /// Subscribes to the store now (before the writer starts, so no batch is missed)
    /// and starts the tasks on the current runtime.
    pub fn start(
        config: OtelConfig,
        options: SpanOptions,
        store: Store,
        counters: Arc<Metrics>,
        client: UpstreamClient,
    ) -> Exporter {
        let events = store.subscribe();
        let config = Arc::new(config);
        let transport = Transport::new(client, config.clone());
        let (queue, queued) = mpsc::channel(config.max_queue_spans);
        let client_metrics = config.metrics.then(|| {
            Arc::new(Mutex::new(ClientMetrics::new(
                crate::timefmt::now_unix_us() * 1000,
            )))
        });
        let pending = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            store,
            options,
            counters: counters.clone(),
            client_metrics: client_metrics.clone(),
            pending: pending.clone(),
            failures: FailureLog::new(),
        });
        let (stop, stopped) = oneshot::channel();
        let builder = tokio::spawn(build_loop(
            shared.clone(),
            events,
            queue,
            stopped,
            config.invocation_idle,
        ));
        let sender = tokio::spawn(send_loop(
            shared.clone(),
            transport.clone(),
            queued,
            config.max_batch_spans,
            config.export_delay,
        ));
        let metrics_task = client_metrics.map(|m| {
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(metrics_loop(
                shared,
                transport,
                m,
                config.metrics_interval,
                stopped,
            ));
            (stop, task)
        });
        // Host and path only: a URL's user-info part could hold a credential.
        tracing::info!(
            endpoint = %format!(
                "{}://{}{}",
                config.traces_url.scheme_str().unwrap_or("http"),
                config.traces_url.host().unwrap_or_default(),
                config.traces_url.path()
            ),
            service = %config.service_name,
            content = config.capture_content,
            metrics = config.metrics,
            "OpenTelemetry export on"
        );
        Exporter {
            stop,
            builder,
            sender,
            metrics_task,
            pending,
            counters,
            shutdown_timeout: config.shutdown_timeout,
        }
    }

    /// Emits what is left and flushes, within the shutdown timeout. Call after the
    /// writer has stopped, so every stored batch has been published.
    pub async fn shutdown(self) {
        let started = Instant::now();
        let _ = self.stop.send(());
        let mut builder = self.builder;
        let mut sender = self.sender;
        let flush = async {
            let _ = (&mut builder).await;
            let _ = (&mut sender).await;
        };
        let flushed = tokio::time::timeout(self.shutdown_timeout, flush)
            .await
            .is_ok();
        if !flushed {
            builder.abort();
            sender.abort();
        }
        if let Some((stop, mut task)) = self.metrics_task {
            let _ = stop.send(());
            let left = self.shutdown_timeout.saturating_sub(started.elapsed());
            if tokio::time::timeout(left, &mut task).await.is_err() {
                task.abort();
            }
        }
        let lost = self.pending.swap(0, Ordering::Relaxed);
        if lost > 0 {
            self.counters
                .otel_dropped
                .fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(
                spans = lost,
                "OpenTelemetry spans still queued at the end of the shutdown timeout were dropped"
            );
        }
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            flushed,
            "OpenTelemetry export stopped"
        );
    }
}

fn enqueue(shared: &Shared, queue: &mpsc::Sender<Span>, spans: Vec<Span>) {
    for span in spans {
        match queue.try_send(span) {
            Ok(()) => {
                shared.pending.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                shared.counters.otel_dropped.fetch_add(1, Ordering::Relaxed);
                shared.failures.note("spans", &ExportError::QueueFull, 1);
            }
        }
    }
}

async fn build_loop(
    shared: Arc<Shared>,
    mut events: broadcast::Receiver<Arc<BatchWritten>>,
    queue: mpsc::Sender<Span>,
    mut stopped: oneshot::Receiver<()>,
    idle: Duration,
) {
    let mut runs: HashMap<String, OpenRun> = HashMap::new();
    let mut tick = tokio::time::interval(idle.min(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(batch) => on_batch(&shared, &queue, &mut runs, &batch).await,
                Err(broadcast::error::RecvError::Lagged(n)) => lagged(&shared, n),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let idle_runs: Vec<String> = runs
                    .iter()
                    .filter(|(_, r)| now.duration_since(r.last_seen) >= idle)
                    .map(|(id, _)| id.clone())
                    .collect();
                close_runs(&shared, &queue, &mut runs, idle_runs).await;
            }
            _ = &mut stopped => {
                loop {
                    match events.try_recv() {
                        Ok(batch) => on_batch(&shared, &queue, &mut runs, &batch).await,
                        Err(broadcast::error::TryRecvError::Lagged(n)) => lagged(&shared, n),
                        Err(_) => break,
                    }
                }
                break;
            }
        }
    }
    let all: Vec<String> = runs.keys().cloned().collect();
    close_runs(&shared, &queue, &mut runs, all).await;
}

fn lagged(shared: &Shared, batches: u64) {
    shared
        .counters
        .otel_lagged_batches
        .fetch_add(batches, Ordering::Relaxed);
    tracing::warn!(
        batches,
        "OpenTelemetry export fell behind the writer; skipped stored batches (replay them with llmtap otel export)"
    );
}

async fn on_batch(
    shared: &Arc<Shared>,
    queue: &mpsc::Sender<Span>,
    runs: &mut HashMap<String, OpenRun>,
    batch: &BatchWritten,
) {
    let ids: Vec<String> = batch.calls.iter().map(|c| c.id.clone()).collect();
    if ids.is_empty() {
        return;
    }
    let store = shared.store.clone();
    let read = tokio::task::spawn_blocking(move || {
        ids.iter()
            .filter_map(|id| match store.get_call(id) {
                Ok(call) => call,
                Err(e) => {
                    tracing::warn!(call = %id, error = %e, "OpenTelemetry export cannot read a stored call");
                    None
                }
            })
            .collect::<Vec<CallRecord>>()
    })
    .await;
    let Ok(mut calls) = read else {
        return;
    };
    calls.sort_by_key(|c| (c.started_at_us, c.round));
    let mut spans = Vec::with_capacity(calls.len() * 2);
    for call in &calls {
        if let Some(m) = &shared.client_metrics {
            if let Ok(mut m) = m.lock() {
                m.record(call, &shared.options);
            }
        }
        let run = runs
            .entry(call.invocation_id.clone())
            .or_insert_with(|| OpenRun {
                ctx: spans::trace_context(&call.invocation_id, Some(call)),
                previous: None,
                mcp_tools: Vec::new(),
                last_seen: Instant::now(),
            });
        run.last_seen = Instant::now();
        if let Some(tool) = spans::mcp_tool_name(call) {
            if run.mcp_tools.len() < MAX_MCP_TOOLS {
                run.mcp_tools.push(tool.to_string());
            }
        }
        if let Some(previous) = run.previous.as_ref().filter(|p| p.round < call.round) {
            spans.extend(
                spans::gaps_not_spanned(spans::tool_gaps(previous, call), &mut run.mcp_tools)
                    .iter()
                    .map(|g| spans::tool_span(g, &run.ctx, &shared.options)),
            );
        }
        spans.push(spans::call_span(call, &run.ctx, &shared.options));
        if run.previous.as_ref().is_none_or(|p| p.round <= call.round) {
            run.previous = Some(RoundTools::of(call, shared.options.capture_content));
        }
    }
    enqueue(shared, queue, spans);
    if runs.len() > MAX_OPEN_RUNS {
        let mut by_age: Vec<(Instant, String)> = runs
            .iter()
            .map(|(id, r)| (r.last_seen, id.clone()))
            .collect();
        by_age.sort();
        let oldest = by_age
            .into_iter()
            .take(runs.len() - MAX_OPEN_RUNS)
            .map(|(_, id)| id)
            .collect();
        close_runs(shared, queue, runs, oldest).await;
    }
}

/// Emits the `invoke_agent` spans of these runs, from their stored rollups.
async fn close_runs(
    shared: &Arc<Shared>,
    queue: &mpsc::Sender<Span>,
    runs: &mut HashMap<String, OpenRun>,
    ids: Vec<String>,
) {
    if ids.is_empty() {
        return;
    }
    let closing: Vec<(String, TraceContext)> = ids
        .into_iter()
        .filter_map(|id| {
            let run = runs.remove(&id)?;
            Some((id, run.ctx))
        })
        .collect();
    let store = shared.store.clone();
    let read = tokio::task::spawn_blocking(move || {
        closing
            .into_iter()
            .filter_map(|(id, ctx)| match store.get_invocation(&id) {
                Ok(Some(inv)) => Some(spans::invocation_span(&inv, &ctx)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(invocation = %id, error = %e, "OpenTelemetry export cannot read a stored invocation");
                    None
                }
            })
            .collect::<Vec<Span>>()
    })
    .await;
    if let Ok(spans) = read {
        enqueue(shared, queue, spans);
    }
}

async fn send_loop(
    shared: Arc<Shared>,
    transport: Transport,
    mut queued: mpsc::Receiver<Span>,
    max_batch: usize,
    delay: Duration,
) {
    let mut open = true;
    while open {
        let Some(first) = queued.recv().await else {
            break;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + delay;
        while batch.len() < max_batch {
            tokio::select! {
                next = queued.recv() => match next {
                    Some(span) => batch.push(span),
                    None => { open = false; break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let n = batch.len();
        let result = transport.export_spans(batch).await;
        shared.pending.fetch_sub(n as u64, Ordering::Relaxed);
        match result {
            Ok(()) => {
                shared
                    .counters
                    .otel_exported
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                shared
                    .counters
                    .otel_dropped
                    .fetch_add(n as u64, Ordering::Relaxed);
                shared
                    .counters
                    .otel_export_failures
                    .fetch_add(1, Ordering::Relaxed);
                shared.failures.note("spans", &e, n);
            }
        }
    }
}

async fn metrics_loop(
    shared: Arc<Shared>,
    transport: Transport,
    metrics: Arc<Mutex<ClientMetrics>>,
    interval: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut stopped => true,
        };
        let snapshot = match metrics.lock() {
            Ok(m) => m.snapshot(crate::timefmt::now_unix_us() * 1000),
            Err(_) => Vec::new(),
        };
        if !snapshot.is_empty() {
            if let Err(e) = transport.export_metrics(snapshot).await {
                shared
                    .counters
                    .otel_export_failures
                    .fetch_add(1, Ordering::Relaxed);
                shared.failures.note("metrics", &e, 0);
            }
        }
        if last {
            return;
        }
    }
}

/// What a replay sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub invocations: u64,
    pub calls: u64,
    pub spans: u64,
    pub requests: u64,
}

/// `llmtap otel export --from --to`: every run that started in `[from_us, to_us)`,
/// with its calls and tool gaps, built from the store and posted in batches. Stops
/// at the first failed post (what was sent before stays sent; ids are stable, so
/// running it again is safe).
pub async fn replay(
    config: OtelConfig,
    options: SpanOptions,
    store: &Store,
    client: UpstreamClient,
    from_us: u64,
    to_us: u64,
) -> Result<ReplayReport, ExportError> {
    let max_batch = config.max_batch_spans;
    let transport = Transport::new(client, Arc::new(config));
    let filter = Filter {
        from_us: Some(from_us),
        to_us: Some(to_us),
        ..Filter::default()
    };
    let mut report = ReplayReport::default();
    let mut batch: Vec<Span> = Vec::with_capacity(max_batch);
    let mut after = None;
    loop {
        let page = store.list_invocations(
            &filter,
            &PageRequest {
                limit: 200,
                after: after.clone(),
                offset: 0,
                count_total: false,
            },
        )?;
        for summary in &page.items {
            let Some(inv) = store.get_invocation(&summary.id)? else {
                continue;
            };
            let calls = store.invocation_calls(&inv.id)?;
            report.invocations += 1;
            report.calls += calls.len() as u64;
            for span in spans::invocation_spans(&inv, &calls, &options) {
                batch.push(span);
                if batch.len() >= max_batch {
                    report.spans += batch.len() as u64;
                    report.requests += 1;
                    transport.export_spans(std::mem::take(&mut batch)).await?;
                }
            }
        }
        if !page.has_more || page.next.is_none() {
            break;
        }
        after = page.next;
    }
    if !batch.is_empty() {
        report.spans += batch.len() as u64;
        report.requests += 1;
        transport.export_spans(batch).await?;
    }
    Ok(report)
}
