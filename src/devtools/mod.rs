//! Developer tooling, compiled into the `llmtap` binary only (the library the proxy
//! links holds the product): synthetic data (`dev seed`), the read-API, writer and
//! storage benchmarks, and the LiteLLM price importer (`prices import-litellm`).

pub mod litellm;
pub mod storage_bench;
pub mod synthetic;

use crate::cli::DevCommand;
use anyhow::{bail, Context};
use llmtap::config::{Overrides, RawConfig};
use std::path::PathBuf;

pub fn run(command: DevCommand) -> anyhow::Result<()> {
    match command {
        DevCommand::Seed {
            calls,
            data_dir,
            days,
            store_url,
        } => seed(&data_dir, calls, days, store_url.as_deref()),
        DevCommand::BenchApi {
            data_dir,
            requests,
            store_url,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(bench_api(data_dir, requests, store_url))
        }
        DevCommand::WriterBench {
            data_dir,
            calls,
            body_bytes,
            config,
            replay,
            first_call,
        } => {
            let raw = match &config {
                Some(path) => RawConfig::from_file(path)?,
                None => RawConfig::default(),
            };
            writer_bench(
                raw,
                &data_dir,
                first_call..first_call + calls,
                body_bytes,
                replay,
            )
        }
        DevCommand::StorageBench {
            dir,
            conversations,
            rounds,
            image_bytes,
            compression_level,
            encrypt,
            sled_compression,
            batch,
            store_url,
        } => {
            let opts = storage_bench::BenchOptions {
                engine: engine_from_url(store_url.as_deref())?,
                dir: dir.unwrap_or_else(|| {
                    std::env::temp_dir()
                        .join(format!("llmtap-storage-bench-{}", std::process::id()))
                }),
                conversations,
                rounds,
                image_bytes,
                compression_level,
                encrypt,
                sled_compression: sled_compression
                    .unwrap_or(llmtap::store::StoreOptions::default().sled_compression),
                batch,
            };
            let report = storage_bench::run(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{report}");
            println!("data left in {}", opts.dir.display());
            Ok(())
        }
    }
}

/// The engine a `--store-url` names: PostgreSQL, or sled in the data directory.
pub fn engine_from_url(url: Option<&str>) -> anyhow::Result<llmtap::config::StoreEngine> {
    let Some(url) = url else {
        return Ok(llmtap::config::StoreEngine::Sled);
    };
    let raw = RawConfig::from_toml(&format!("[store]\nurl = \"{url}\""))
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(raw.validate(&Overrides::default())?.engine)
}

/// The store a dev command works on: sled in `data_dir`, or PostgreSQL (schema
/// prepared, day partitions made for the last `days_back` days, so seeded history
/// lands in partitions as live traffic does).
pub fn open_store(
    data_dir: &std::path::Path,
    options: llmtap::store::StoreOptions,
    engine: &llmtap::config::StoreEngine,
    days_back: u64,
) -> anyhow::Result<llmtap::store::Store> {
    use llmtap::store::postgres;
    let llmtap::config::StoreEngine::Postgres(pg) = engine else {
        return Ok(llmtap::store::Store::open_with(data_dir, options)?);
    };
    const DAY: u64 = 86_400_000_000;
    let pool = postgres::pool::io_runtime()?.block_on(async {
        let (pool, _) = postgres::prepare(pg).await?;
        let now = llmtap::timefmt::now_unix_us();
        postgres::ensure_partitions(
            &*pool.get().await?,
            now.saturating_sub((days_back + 1) * DAY),
            now + DAY,
        )
        .await?;
        Ok::<_, postgres::PgError>(pool)
    })?;
    let instance = postgres::instance_name(data_dir)?;
    let context = llmtap::store::EngineContext::new(data_dir, &options);
    Ok(postgres::open_store(pool, instance, context, options)?)
}

fn seed(
    data_dir: &std::path::Path,
    calls: usize,
    days: u64,
    store_url: Option<&str>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let options = llmtap::store::StoreOptions {
        cache_bytes: 512 << 20,
        ..llmtap::store::StoreOptions::default()
    };
    let store = open_store(data_dir, options, &engine_from_url(store_url)?, days)?;
    let started = std::time::Instant::now();
    let now = llmtap::timefmt::now_unix_us();
    let mut last_report = 0;
    let written = synthetic::seed(&store, calls, days, now, |n| {
        if n - last_report >= 100_000 || n == calls {
            last_report = n;
            eprintln!(
                "seeded {n} calls in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
    })?;
    store.flush()?;
    println!(
        "seeded {written} calls over {days} days into {} in {:.1}s",
        data_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn bench_api(
    data_dir: PathBuf,
    requests: usize,
    store_url: Option<String>,
) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let store = store_url
        .map(|url| format!("[store]\nurl = \"{url}\"\n"))
        .unwrap_or_default();
    let raw = RawConfig::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n{store}"
    ))
    .map_err(|e| anyhow::anyhow!(e))?;
    let config = raw.validate(&Overrides {
        data_dir: Some(data_dir.clone()),
        ..Overrides::default()
    })?;
    let opening = std::time::Instant::now();
    let running = llmtap::server::start(config).await?;
    // Includes any one-time index backfill of an older store.
    println!("store opened in {:.1}s", opening.elapsed().as_secs_f64());
    let addr = running.api_addr;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let get = |path: String| {
        let client = client.clone();
        async move {
            let started = std::time::Instant::now();
            let request = http::Request::get(format!("http://{addr}{path}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())?;
            let response = client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            if status != 200 {
                bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            let value: serde_json::Value = serde_json::from_slice(&body)?;
            Ok::<_, anyhow::Error>((started.elapsed().as_secs_f64() * 1000.0, value))
        }
    };
    let calls = running.store.call_count();
    println!("store: {calls} calls in {}", data_dir.display());
    let (call_cache, inv_cache) = running.store.facet_cache_bytes();
    println!("facet cache: {call_cache} bytes (calls), {inv_cache} bytes (invocations)");
    let now = llmtap::timefmt::now_unix_us();
    let day = 86_400_000_000u64;
    let from = llmtap::timefmt::format_rfc3339_us(now - 3 * day);
    let to = llmtap::timefmt::format_rfc3339_us(now - 2 * day);
    let scenarios: Vec<(&str, String)> = vec![
        (
            "invocations, first page, no filter",
            "/api/v1/invocations?limit=20".into(),
        ),
        (
            "calls, first page, agent filter",
            "/api/v1/calls?agent=agent-03&limit=20".into(),
        ),
        (
            "calls, agent + status=failed",
            "/api/v1/calls?agent=agent-03&status=failed&limit=20".into(),
        ),
        (
            "invocations, tenant + model, limit 50",
            "/api/v1/invocations?tenant=tenant-2&model=gpt-4o&limit=50".into(),
        ),
        (
            "calls, model + one-day window",
            format!("/api/v1/calls?model=gpt-4o&from={from}&to={to}&limit=20"),
        ),
        (
            "calls, agent + has_session",
            "/api/v1/calls?agent=agent-05&has_session=true&limit=20".into(),
        ),
        (
            "calls, agent + status=failed, `from` before all data",
            format!(
                "/api/v1/calls?agent=agent-03&status=failed&from={}&limit=20",
                llmtap::timefmt::format_rfc3339_us(now - 31 * day)
            ),
        ),
        (
            "calls, agent + model + tenant (facet cache)",
            "/api/v1/calls?agent=agent-03&model=gpt-4o&tenant=tenant-4&limit=20".into(),
        ),
        (
            "calls, agent + model + tenant, 7-day window",
            format!(
                "/api/v1/calls?agent=agent-03&model=gpt-4o&tenant=tenant-4&from={}&to={to}&limit=20",
                llmtap::timefmt::format_rfc3339_us(now - 9 * day)
            ),
        ),
        (
            "invocations, agent + tenant + two models",
            "/api/v1/invocations?agent=agent-07&tenant=tenant-1&model=gpt-4o&model=claude-sonnet-4&limit=20".into(),
        ),
        (
            "calls, agent + model + tenant + status=failed",
            "/api/v1/calls?agent=agent-03&model=gpt-4o&tenant=tenant-4&status=failed&limit=20".into(),
        ),
        ("summary", "/api/v1/summary".into()),
        (
            "summary, tenant, tz",
            "/api/v1/summary?tenant=tenant-3&tz=%2B02:00".into(),
        ),
        ("agents", "/api/v1/agents".into()),
    ];
    println!("| request | p50 ms | p99 ms | total |");
    println!("| --- | --- | --- | --- |");
    for (name, path) in &scenarios {
        let mut times = Vec::with_capacity(requests);
        let mut total = String::new();
        for _ in 0..requests {
            let (ms, value) = get(path.clone()).await?;
            times.push(ms);
            // `≥` marks a lower bound (`total_is_lower_bound`).
            let bound = if value["total_is_lower_bound"] == true {
                "≥"
            } else {
                ""
            };
            total = format!("{bound}{}", value["total"]);
        }
        let (p50, p99) = percentiles(&mut times);
        println!("| {name} | {p50:.2} | {p99:.2} | {total} |");
    }
    // Deep cursor pages: walk 300 pages of 50 (15,000 records deep), then time them.
    let base = "/api/v1/calls?agent=agent-03&limit=50";
    let mut cursors = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..300 {
        let path = match &cursor {
            Some(c) => format!("{base}&cursor={c}"),
            None => base.to_string(),
        };
        let (_, value) = get(path).await?;
        match value["next_cursor"].as_str() {
            Some(c) => {
                cursors.push(c.to_string());
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    let mut times = Vec::new();
    for i in 0..requests {
        let c = &cursors[cursors.len() / 2 + i % (cursors.len() / 2).max(1)];
        let (ms, _) = get(format!("{base}&cursor={c}")).await?;
        times.push(ms);
    }
    let (p50, p99) = percentiles(&mut times);
    println!(
        "| calls, agent filter, deep cursor page (pages {}-{} of 50) | {p50:.2} | {p99:.2} | |",
        cursors.len() / 2,
        cursors.len()
    );
    running.shutdown().await
}

fn percentiles(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    (at(0.5), at(0.99))
}

/// `llmtap dev writer-bench`: figure 4, records per second through the capture log
/// and the writer (redact, log, parse, price, store) and bytes on disk per call.
/// With `--replay true` the calls are logged first with no writer, and the writer
/// then applies the whole log from disk, as after a restart.
fn writer_bench(
    raw: RawConfig,
    data_dir: &std::path::Path,
    numbers: std::ops::Range<usize>,
    body_bytes: usize,
    replay: bool,
) -> anyhow::Result<()> {
    use llmtap::journal::{self, JournalOptions};
    let calls = numbers.len();
    use std::sync::Arc;
    use std::time::Instant;
    std::fs::create_dir_all(data_dir)?;
    let config = raw.validate(&Overrides {
        data_dir: Some(data_dir.to_path_buf()),
        ..Overrides::default()
    })?;
    let store_options = llmtap::server::store_options(&config)?;
    let log_options = JournalOptions::new(
        data_dir.join("journal"),
        config.journal_fsync,
        store_options.keys.clone(),
    );
    let store = open_store(data_dir, store_options, &config.engine, 1)?;
    let prices = Arc::new(std::sync::RwLock::new(Arc::new(
        llmtap::server::load_prices(&config)?,
    )));
    let finished: Vec<_> = numbers
        .map(|i| Box::new(synthetic::synthetic_finished_call(i, body_bytes)))
        .collect();
    let raw_bytes: u64 = finished
        .iter()
        .map(|c| c.request_body.total + c.response_body.total)
        .sum();
    let control = Arc::new(llmtap::writer::WriterControl::default());
    let writer_limits = llmtap::writer::WriterLimits {
        batch_linger: config.batch_linger,
        ..llmtap::writer::WriterLimits::default()
    };
    let metrics = Arc::new(llmtap::metrics::Metrics::default());
    let log = journal::open(log_options.clone(), metrics.clone())?;
    let sink = llmtap::capture::CallSink {
        sender: log.sender,
        metrics: metrics.clone(),
        budget: llmtap::capture::MemoryBudget::new(llmtap::config::defaults::CAPTURE_MEMORY_BUDGET),
    };
    let started = Instant::now();
    let (writer, feed) = if replay {
        (None, Some(log.feed))
    } else {
        let writer = llmtap::writer::spawn(
            store.clone(),
            log.feed,
            prices.clone(),
            metrics.clone(),
            control.clone(),
            writer_limits.clone(),
        )?;
        (Some(writer), None)
    };
    for call in finished {
        sink.send(call);
    }
    drop(sink);
    log.appender
        .join()
        .map_err(|_| anyhow::anyhow!("the capture log thread panicked"))?;
    let logged = started.elapsed().as_secs_f64();
    let mut report = format!(
        "capture log: {calls} calls appended in {logged:.2}s = {:.0} calls/s, {:.0} B/call in the log\n",
        calls as f64 / logged,
        metrics.log_end.load(std::sync::atomic::Ordering::Relaxed) as f64 / calls as f64,
    );
    let (elapsed, written, what) = match writer {
        Some(writer) => {
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
            (
                started.elapsed().as_secs_f64(),
                metrics
                    .records_written
                    .load(std::sync::atomic::Ordering::Relaxed),
                "log and writer together (handed over in memory)",
            )
        }
        None => {
            drop(feed);
            // A restart: a new run of the log, the writer reads it all from disk.
            let metrics = Arc::new(llmtap::metrics::Metrics::default());
            let log = journal::open(log_options, metrics.clone())?;
            drop(log.sender);
            let started = Instant::now();
            let writer = llmtap::writer::spawn(
                store.clone(),
                log.feed,
                prices,
                metrics.clone(),
                control,
                writer_limits,
            )?;
            log.appender
                .join()
                .map_err(|_| anyhow::anyhow!("the capture log thread panicked"))?;
            writer
                .join()
                .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
            (
                started.elapsed().as_secs_f64(),
                metrics
                    .records_written
                    .load(std::sync::atomic::Ordering::Relaxed),
                "replay: the writer applying the log from disk",
            )
        }
    };
    // Logical bytes per call by sled tree: what the writer stores, before sled's log.
    let mut trees = String::new();
    for (name, entries, bytes) in store.tree_usage()?.into_iter().filter(|t| t.1 > 0) {
        trees.push_str(&format!(
            "  {name}: {entries} entries, {:.0} B/call\n",
            bytes as f64 / calls.max(1) as f64
        ));
    }
    // On PostgreSQL, the tables' bytes; on sled, the data directory but the log.
    let on_disk = match config.engine {
        llmtap::config::StoreEngine::Postgres(_) => {
            store.tree_usage()?.iter().map(|t| t.2).sum::<u64>()
        }
        llmtap::config::StoreEngine::Sled => {
            dir_size(data_dir) - dir_size(&data_dir.join("journal"))
        }
    };
    drop(store);
    report.push_str(&format!(
        "{what}: {written} calls of ~{body_bytes} B requests in {elapsed:.2}s = {:.0} calls/s; \
         raw {:.0} B/call, store on disk {:.0} B/call ({:.1}x smaller)\n",
        written as f64 / elapsed,
        raw_bytes as f64 / calls as f64,
        on_disk as f64 / calls as f64,
        raw_bytes as f64 / on_disk.max(1) as f64,
    ));
    report.push_str("bytes by sled tree (keys + values) or PostgreSQL table (on disk):\n");
    report.push_str(&trees);
    crate::write_stdout(&report)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
