//! The `llmtap` command line: `serve` and the price-table tools.

use anyhow::{bail, Context};
use llmtap::config::{Overrides, RawConfig};
use std::path::PathBuf;

const USAGE: &str = "\
llmtap: a transparent reverse proxy that records every LLM API call

USAGE:
  llmtap serve [--config FILE] [--listen ADDR] [--api-listen ADDR] [--data-dir DIR] [--prices FILE]
  llmtap prices import-litellm FILE [--source NOTE] [--out FILE]
  llmtap prices lookup MODEL [--provider P] [--prices FILE]
  llmtap prices check FILE
  llmtap reprice --from DATE --to DATE [--config FILE] [--data-dir DIR] [--prices FILE]
  llmtap otel export --from DATE --to DATE [--config FILE] [--data-dir DIR]
  llmtap dev seed --calls N --data-dir DIR [--days D]
  llmtap dev bench-api --data-dir DIR [--requests N]
  llmtap dev writer-bench --data-dir DIR [--calls N] [--body-bytes N] [--config FILE] [--replay true]
  llmtap dev storage-bench [--dir DIR] [--conversations N] [--rounds N] [--image-bytes N] [--compression-level N] [--encrypt true] [--sled-compression true] [--batch N]
  llmtap help

Defaults: proxy on 127.0.0.1:8080, read API on 127.0.0.1:8081, data in ./llmtap-data.
Flags override the config file. See README.md for the config reference.
";

/// glibc keeps freed memory of large blocks in its heaps once its adaptive mmap
/// threshold has grown, so one 100 MB response would leave the process 100 MB larger
/// for good. A fixed threshold sends every block over 1 MiB (capture buffers, big
/// bodies) to mmap, which returns it to the system when freed; fewer arenas keep the
/// small-block heaps of the runtime's threads from multiplying.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_ARENA_MAX: i32 = -8;
    // SAFETY: mallopt only adjusts allocator parameters; called once before any thread starts.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
        mallopt(M_ARENA_MAX, 4);
    }
    // Freed small blocks stay mapped inside glibc's heaps after a burst (thousands of
    // streams); a periodic trim hands whole free pages back. It runs every few
    // seconds and takes well under a millisecond on an idle heap.
    let _ = std::thread::Builder::new()
        .name("llmtap-trim".into())
        .spawn(|| loop {
            extern "C" {
                fn malloc_trim(pad: usize) -> i32;
            }
            std::thread::sleep(std::time::Duration::from_secs(5));
            // SAFETY: malloc_trim is thread-safe and only releases free memory.
            unsafe {
                malloc_trim(0);
            }
        });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> std::process::ExitCode {
    tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LLMTAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmtap: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("prices") => prices(&args[1..]),
        Some("reprice") => reprice(&args[1..]),
        Some("otel") if args.get(1).map(String::as_str) == Some("export") => {
            otel_export(&args[2..])
        }
        Some("dev") if args.get(1).map(String::as_str) == Some("storage-bench") => {
            storage_bench(&args[2..])
        }
        Some("dev") => dev(&args[1..]),
        Some("help") | Some("--help") | Some("-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// Flags of the form `--name VALUE` or `--name=VALUE`.
struct Flags<'a> {
    args: &'a [String],
    known: &'a [&'a str],
    index: usize,
}

impl<'a> Flags<'a> {
    fn new(args: &'a [String], known: &'a [&'a str]) -> Self {
        Flags {
            args,
            known,
            index: 0,
        }
    }

    /// The next (flag, value) pair; positional arguments come back with flag "".
    fn next(&mut self) -> anyhow::Result<Option<(String, String)>> {
        let Some(arg) = self.args.get(self.index) else {
            return Ok(None);
        };
        self.index += 1;
        let Some(flag) = arg.strip_prefix("--") else {
            return Ok(Some((String::new(), arg.clone())));
        };
        let name = flag.split_once('=').map_or(flag, |(name, _)| name);
        if !self.known.contains(&name) {
            bail!("unknown flag --{name}\n\n{USAGE}");
        }
        if let Some((name, value)) = flag.split_once('=') {
            return Ok(Some((name.to_string(), value.to_string())));
        }
        let value = self
            .args
            .get(self.index)
            .with_context(|| format!("--{flag} needs a value"))?
            .clone();
        self.index += 1;
        Ok(Some((flag.to_string(), value)))
    }
}

fn serve(args: &[String]) -> anyhow::Result<()> {
    let mut config_file: Option<PathBuf> = None;
    let mut overrides = Overrides::default();
    let mut flags = Flags::new(
        args,
        &["config", "listen", "api-listen", "data-dir", "prices"],
    );
    while let Some((name, value)) = flags.next()? {
        match name.as_str() {
            "config" => config_file = Some(PathBuf::from(value)),
            "listen" => overrides.listen = Some(value),
            "api-listen" => overrides.api_listen = Some(value),
            "data-dir" => overrides.data_dir = Some(PathBuf::from(value)),
            "prices" => overrides.prices_file = Some(PathBuf::from(value)),
            "" => bail!("unexpected argument {value:?}\n\n{USAGE}"),
            other => bail!("unknown flag --{other}\n\n{USAGE}"),
        }
    }
    let raw = match &config_file {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    overrides.api_tokens_env = std::env::var("LLMTAP_API_TOKENS").ok();
    overrides.otel_env = llmtap::otel::env_from_process();
    let config = raw.validate(&overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = llmtap::server::start(config.clone()).await?;
        println!(
            "llmtap proxy on http://{} , read API on http://{} , data in {}",
            running.proxy_addr,
            running.api_addr,
            config.data_dir.display()
        );
        wait_for_signals(&running, &config).await;
        tracing::info!("shutting down");
        running.shutdown().await
    })?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// `llmtap dev storage-bench`: bytes on disk per call against raw bytes (BENCHMARKS.md).
fn storage_bench(args: &[String]) -> anyhow::Result<()> {
    let mut opts = llmtap::store::bench::BenchOptions {
        dir: std::env::temp_dir().join(format!("llmtap-storage-bench-{}", std::process::id())),
        conversations: 1000,
        rounds: 20,
        image_bytes: 40_000,
        compression_level: 3,
        encrypt: false,
        sled_compression: llmtap::store::StoreOptions::default().sled_compression,
        batch: 1,
    };
    let mut flags = Flags::new(
        args,
        &[
            "dir",
            "conversations",
            "rounds",
            "image-bytes",
            "compression-level",
            "encrypt",
            "sled-compression",
            "batch",
        ],
    );
    while let Some((name, value)) = flags.next()? {
        match name.as_str() {
            "dir" => opts.dir = PathBuf::from(value),
            "conversations" => opts.conversations = value.parse().context("--conversations")?,
            "rounds" => opts.rounds = value.parse().context("--rounds")?,
            "image-bytes" => opts.image_bytes = value.parse().context("--image-bytes")?,
            "compression-level" => {
                opts.compression_level = value.parse().context("--compression-level")?
            }
            "batch" => opts.batch = value.parse().context("--batch")?,
            "encrypt" => opts.encrypt = value.parse().context("--encrypt true|false")?,
            "sled-compression" => {
                opts.sled_compression = value.parse().context("--sled-compression true|false")?
            }
            other => bail!("unexpected argument {other:?} {value:?}\n\n{USAGE}"),
        }
    }
    let report = llmtap::store::bench::run(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{report}");
    println!("data left in {}", opts.dir.display());
    Ok(())
}

/// Returns on SIGTERM or SIGINT; reloads prices on SIGHUP.
async fn wait_for_signals(running: &llmtap::server::Running, config: &llmtap::config::Config) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with kill -9 only");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => match llmtap::server::load_prices(config) {
                Ok(table) => {
                    if let Ok(mut slot) = running.prices.write() {
                        *slot = std::sync::Arc::new(table);
                    }
                    tracing::info!("price table reloaded");
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "price reload rejected; the previous table stays in force"),
            },
        }
    }
}

fn prices(args: &[String]) -> anyhow::Result<()> {
    use llmtap::cost::{import_litellm, PriceTable};
    let (sub, rest) = args
        .split_first()
        .with_context(|| format!("prices needs a subcommand\n\n{USAGE}"))?;
    let mut positional = Vec::new();
    let mut named = std::collections::BTreeMap::new();
    let known: &[&str] = match sub.as_str() {
        "import-litellm" => &["source", "out"],
        "lookup" => &["provider", "prices"],
        "check" => &[],
        other => bail!("unknown prices subcommand {other:?}\n\n{USAGE}"),
    };
    let mut flags = Flags::new(rest, known);
    while let Some((name, value)) = flags.next()? {
        if name.is_empty() {
            positional.push(value);
        } else {
            named.insert(name, value);
        }
    }
    let [target] = positional.as_slice() else {
        bail!("prices {sub} takes exactly one argument\n\n{USAGE}");
    };
    match sub.as_str() {
        "import-litellm" => {
            let text =
                std::fs::read_to_string(target).with_context(|| format!("cannot read {target}"))?;
            let default_note = format!(
                "LiteLLM model_prices_and_context_window.json, snapshot of {}",
                llmtap::timefmt::format_date(llmtap::timefmt::now_unix_us())
            );
            let note = named.get("source").cloned().unwrap_or(default_note);
            let toml = import_litellm(&text, &note)?;
            PriceTable::from_toml(&toml, "converted table")
                .context("the converted table does not load back")?;
            match named.get("out") {
                Some(out) => {
                    std::fs::write(out, toml).with_context(|| format!("cannot write {out}"))?
                }
                None => write_stdout(&toml)?,
            }
        }
        "lookup" => {
            let table = PriceTable::load(named.get("prices").map(std::path::Path::new))?;
            match table.lookup(named.get("provider").map(String::as_str), target) {
                Some(found) => write_stdout(&format!(
                    "model:       {target}\nprice key:   {}\nwhy:         {}\ntable:       {}\n{:#?}\n",
                    found.price_key,
                    found.explanation,
                    table.version(),
                    found.price
                ))?,
                None => {
                    println!("{target}: no price (calls to it are recorded as unpriced)");
                    std::process::exit(1);
                }
            }
        }
        "check" => {
            let table = PriceTable::check_file(std::path::Path::new(target))?;
            println!(
                "{target}: ok, {} models, table version {}",
                table.len(),
                table.version()
            );
        }
        _ => unreachable!("subcommands are checked above"),
    }
    Ok(())
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `llmtap dev seed` and `llmtap dev bench-api`: synthetic data and read-API timings.
fn dev(args: &[String]) -> anyhow::Result<()> {
    let sub = args.first().map(String::as_str).unwrap_or("");
    let mut flags = Flags::new(
        args.get(1..).unwrap_or(&[]),
        &[
            "calls",
            "data-dir",
            "days",
            "requests",
            "body-bytes",
            "config",
            "replay",
        ],
    );
    let mut replay = false;
    let mut config_file: Option<PathBuf> = None;
    let mut body_bytes = 20_000usize;
    let mut calls = 100_000usize;
    let mut days = 30u64;
    let mut requests = 200usize;
    let mut data_dir: Option<PathBuf> = None;
    while let Some((name, value)) = flags.next()? {
        match name.as_str() {
            "calls" => calls = value.parse().context("--calls needs a number")?,
            "days" => days = value.parse().context("--days needs a number")?,
            "requests" => requests = value.parse().context("--requests needs a number")?,
            "body-bytes" => body_bytes = value.parse().context("--body-bytes needs a number")?,
            "config" => config_file = Some(PathBuf::from(value)),
            "data-dir" => data_dir = Some(PathBuf::from(value)),
            "replay" => replay = value.parse().context("--replay needs true or false")?,
            other => bail!("unexpected argument {other:?}\n\n{USAGE}"),
        }
    }
    let data_dir = data_dir.context("--data-dir is required")?;
    match sub {
        "seed" => {
            std::fs::create_dir_all(&data_dir)?;
            let store = llmtap::store::Store::open(&data_dir, 512 << 20, 1000)?;
            let started = std::time::Instant::now();
            let now = llmtap::timefmt::now_unix_us();
            let mut last_report = 0;
            let written = llmtap::dev::seed(&store, calls, days, now, |n| {
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
        "bench-api" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(bench_api(data_dir, requests))
        }
        "writer-bench" => {
            let raw = match &config_file {
                Some(path) => RawConfig::from_file(path)?,
                None => RawConfig::default(),
            };
            writer_bench(raw, &data_dir, calls, body_bytes, replay)
        }
        _ => bail!("unknown dev command {sub:?}\n\n{USAGE}"),
    }
}

async fn bench_api(data_dir: PathBuf, requests: usize) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let raw =
        RawConfig::from_toml("[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"")
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

/// `llmtap reprice`: recompute stored costs with the current table (run while llmtap is stopped).
fn reprice(args: &[String]) -> anyhow::Result<()> {
    let mut config_file: Option<PathBuf> = None;
    let mut overrides = Overrides::default();
    let (mut from, mut to) = (None, None);
    let mut flags = Flags::new(args, &["from", "to", "config", "data-dir", "prices"]);
    while let Some((name, value)) = flags.next()? {
        match name.as_str() {
            "from" => from = Some(value),
            "to" => to = Some(value),
            "config" => config_file = Some(PathBuf::from(value)),
            "data-dir" => overrides.data_dir = Some(PathBuf::from(value)),
            "prices" => overrides.prices_file = Some(PathBuf::from(value)),
            _ => bail!("unexpected argument {value:?}\n\n{USAGE}"),
        }
    }
    let time = |flag: &str, value: Option<String>| -> anyhow::Result<u64> {
        let value = value.with_context(|| format!("reprice needs --{flag} DATE"))?;
        llmtap::timefmt::parse_rfc3339_us(&value)
            .with_context(|| format!("--{flag} {value:?} is not a date (YYYY-MM-DD or RFC 3339)"))
    };
    let (from_us, to_us) = (time("from", from)?, time("to", to)?);
    if from_us >= to_us {
        bail!("--from must be before --to");
    }
    let raw = match &config_file {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    let config = raw.validate(&overrides)?;
    let table = llmtap::server::load_prices(&config)?;
    let store =
        llmtap::store::Store::open_with(&config.data_dir, llmtap::server::store_options(&config)?)?;
    let report = store.reprice(from_us, to_us, |call| {
        let price_as = config
            .providers
            .get(&call.provider)
            .map_or(call.provider.as_str(), |p| p.price_as.as_str());
        table.price(
            price_as,
            call.model.as_deref(),
            call.response_model.as_deref(),
            &call.usage,
        )
    })?;
    write_stdout(&format!(
        "repriced with table {}: {} calls examined, {} changed, {} invocations updated\n",
        table.version(),
        report.examined,
        report.changed,
        report.invocations
    ))
}

/// `llmtap dev writer-bench`: figure 4, records per second through the capture log
/// and the writer (redact, log, parse, price, store) and bytes on disk per call.
/// With `--replay true` the calls are logged first with no writer, and the writer
/// then applies the whole log from disk, as after a restart.
fn writer_bench(
    raw: RawConfig,
    data_dir: &std::path::Path,
    calls: usize,
    body_bytes: usize,
    replay: bool,
) -> anyhow::Result<()> {
    use llmtap::journal::{self, JournalOptions};
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
    let store = llmtap::store::Store::open_with(data_dir, store_options)?;
    let prices = Arc::new(std::sync::RwLock::new(Arc::new(
        llmtap::server::load_prices(&config)?,
    )));
    let finished: Vec<_> = (0..calls)
        .map(|i| Box::new(llmtap::dev::synthetic_finished_call(i, body_bytes)))
        .collect();
    let raw_bytes: u64 = finished
        .iter()
        .map(|c| c.request_body.total + c.response_body.total)
        .sum();
    let control = Arc::new(llmtap::writer::WriterControl::default());
    let metrics = Arc::new(llmtap::metrics::Metrics::default());
    let log = journal::open(log_options.clone(), metrics.clone())?;
    let sink = llmtap::capture::CallSink {
        sender: log.sender,
        metrics: metrics.clone(),
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
            llmtap::writer::WriterLimits::default(),
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
                llmtap::writer::WriterLimits::default(),
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
    drop(store);
    let on_disk = dir_size(data_dir) - dir_size(&data_dir.join("journal"));
    report.push_str(&format!(
        "{what}: {written} calls of ~{body_bytes} B requests in {elapsed:.2}s = {:.0} calls/s; \
         raw {:.0} B/call, store on disk {:.0} B/call ({:.1}x smaller)\n",
        written as f64 / elapsed,
        raw_bytes as f64 / calls as f64,
        on_disk as f64 / calls as f64,
        raw_bytes as f64 / on_disk.max(1) as f64,
    ));
    write_stdout(&report)
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

/// `llmtap otel export`: replays stored runs of a time range into the configured
/// OTLP collector (the store must not be in use by a running llmtap).
fn otel_export(args: &[String]) -> anyhow::Result<()> {
    let mut config_file: Option<PathBuf> = None;
    let mut overrides = Overrides::default();
    let (mut from, mut to) = (None, None);
    let mut flags = Flags::new(args, &["from", "to", "config", "data-dir"]);
    while let Some((name, value)) = flags.next()? {
        match name.as_str() {
            "from" => from = Some(value),
            "to" => to = Some(value),
            "config" => config_file = Some(PathBuf::from(value)),
            "data-dir" => overrides.data_dir = Some(PathBuf::from(value)),
            _ => bail!("unexpected argument {value:?}\n\n{USAGE}"),
        }
    }
    let time = |flag: &str, value: Option<String>| -> anyhow::Result<u64> {
        let value = value.with_context(|| format!("otel export needs --{flag} DATE"))?;
        llmtap::timefmt::parse_rfc3339_us(&value)
            .with_context(|| format!("--{flag} {value:?} is not a date (YYYY-MM-DD or RFC 3339)"))
    };
    let (from_us, to_us) = (time("from", from)?, time("to", to)?);
    if from_us >= to_us {
        bail!("--from must be before --to");
    }
    let raw = match &config_file {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    overrides.otel_env = llmtap::otel::env_from_process();
    let config = raw.validate(&overrides)?;
    let otel = config.otel.clone().context(
        "no OpenTelemetry endpoint configured: set [otel] endpoint or OTEL_EXPORTER_OTLP_ENDPOINT",
    )?;
    let store =
        llmtap::store::Store::open_with(&config.data_dir, llmtap::server::store_options(&config)?)?;
    let client =
        llmtap::upstream::build_client(config.extra_ca_file.as_deref(), config.connect_timeout)?;
    let options = llmtap::server::otel_span_options(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(llmtap::otel::replay(
        otel, options, &store, client, from_us, to_us,
    ))?;
    println!(
        "exported {} runs, {} calls, {} spans in {} requests",
        report.invocations, report.calls, report.spans, report.requests
    );
    Ok(())
}
