//! The `llmtap` binary: the command line (`cli`), the product commands (`serve`,
//! `prices`, `reprice`), the read-API client commands (`cli::commands`) and the
//! developer tools (`devtools`), which live here and not in the library.

mod alloc;
mod cli;
mod devtools;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use cli::{Cli, Command, ConfigArgs, OtelCommand, PricesCommand, RepriceArgs, ServeArgs};
use llmtap::config::{Overrides, RawConfig};

#[global_allocator]
static ALLOCATOR: alloc::SplitAllocator = alloc::SplitAllocator;

fn main() -> std::process::ExitCode {
    alloc::tune();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LLMTAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    hide_panic_messages();
    // clap prints usage errors (with suggestions for typos) and exits 2; --help exits 0.
    let cli = Cli::parse();
    let client_command = matches!(
        cli.command,
        Command::Runs(_)
            | Command::Calls(_)
            | Command::Sessions(_)
            | Command::Show(_)
            | Command::Tail(_)
            | Command::Ratelimits(_)
            | Command::Stats(_)
            | Command::Summary(_)
            | Command::Export(_)
    );
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llmtap: {e:#}");
            // Client commands: 1 is an API (or network) error; the product commands keep
            // their 2 for a configuration or start-up failure.
            std::process::ExitCode::from(if client_command { 1 } else { 2 })
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    use cli::commands;
    match command {
        Command::Serve(args) => serve(args),
        Command::Prices(sub) => prices(sub),
        Command::Reprice(args) => reprice(args),
        Command::Otel(OtelCommand::Export {
            from,
            to,
            config,
            data_dir,
        }) => otel_export(
            &from,
            &to,
            ConfigArgs {
                config,
                data_dir,
                prices: None,
            },
        ),
        Command::Ca(sub) => {
            cli::ca::run(sub, |args| load_config(args, serve_overrides(None, None)))
        }
        Command::Env(args) => {
            cli::ca::env(&args, |args| load_config(args, serve_overrides(None, None)))
        }
        Command::Dev(sub) => devtools::run(sub),
        Command::Runs(args) => commands::list(&args, true),
        Command::Calls(args) => commands::list(&args, false),
        Command::Sessions(args) => commands::sessions(&args),
        Command::Show(args) => commands::show(&args),
        Command::Tail(args) => commands::tail(&args),
        Command::Ratelimits(args) => commands::ratelimits(&args),
        Command::Stats(args) => commands::stats(&args),
        Command::Summary(args) => commands::summary(&args),
        Command::Export(args) => commands::export(&args),
        Command::Mcp(args) => {
            let code = cli::mcp::run(&args.api, args.name.as_deref(), &args.command)?;
            // The wrapper exits as the server did.
            std::process::exit(code);
        }
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "llmtap", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn load_config(
    args: &ConfigArgs,
    mut overrides: Overrides,
) -> anyhow::Result<llmtap::config::Config> {
    overrides.data_dir = args.data_dir.clone();
    overrides.prices_file = args.prices.clone();
    let raw = match &args.config {
        Some(path) => RawConfig::from_file(path)?,
        None => RawConfig::default(),
    };
    Ok(raw.validate(&overrides)?)
}

/// The overrides `serve` reads (flags and environment), so `ca` and `env` see the
/// configuration `serve` would run with.
fn serve_overrides(listen: Option<String>, api_listen: Option<String>) -> Overrides {
    Overrides {
        listen,
        api_listen,
        api_tokens_env: std::env::var("LLMTAP_API_TOKENS").ok(),
        store_url_env: std::env::var("LLMTAP_STORE_URL").ok(),
        otel_env: llmtap::otel::env_from_process(),
        ..Overrides::default()
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = serve_overrides(args.listen, args.api_listen);
    let config = load_config(&args.config, overrides)?;
    llmtap::writer::set_idle_hook(alloc::release_idle_memory);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(alloc::release_idle_memory)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Before anything serves: a SIGTERM that arrives while the store opens (or
        // the moment /readyz first answers) is then a graceful stop once started,
        // not the default action that kills the process mid-replay.
        let signals = Signals::install();
        let running = llmtap::server::start(config.clone()).await?;
        println!(
            "llmtap proxy on http://{} , read API on http://{} , data in {}",
            running.proxy_addr,
            running.api_addr,
            config.data_dir.display()
        );
        wait_for_signals(signals, &running, &config).await;
        tracing::info!("shutting down");
        running.shutdown().await
    })?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The process's SIGTERM, SIGINT and SIGHUP streams (`None` when they cannot be
/// installed).
struct Signals(
    Option<(
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
        tokio::signal::unix::Signal,
    )>,
);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Signals(Some((term, int, hup))),
            _ => Signals(None),
        }
    }
}

/// Returns on SIGTERM or SIGINT; reloads prices on SIGHUP.
async fn wait_for_signals(
    signals: Signals,
    running: &llmtap::server::Running,
    config: &llmtap::config::Config,
) {
    let Some((mut term, mut int, mut hup)) = signals.0 else {
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

fn prices(command: PricesCommand) -> anyhow::Result<()> {
    use llmtap::cost::PriceTable;
    match command {
        PricesCommand::ImportLitellm { file, source, out } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let default_note = format!(
                "LiteLLM model_prices_and_context_window.json, snapshot of {}",
                llmtap::timefmt::format_date(llmtap::timefmt::now_unix_us())
            );
            let note = source.unwrap_or(default_note);
            let toml = devtools::litellm::import_litellm(&text, &note)?;
            PriceTable::from_toml(&toml, "converted table")
                .context("the converted table does not load back")?;
            match out {
                Some(out) => std::fs::write(&out, toml)
                    .with_context(|| format!("cannot write {}", out.display()))?,
                None => write_stdout(&toml)?,
            }
        }
        PricesCommand::Lookup {
            model,
            provider,
            prices,
        } => {
            let table = PriceTable::load(prices.as_deref())?;
            match table.lookup(provider.as_deref(), &model) {
                Some(found) => write_stdout(&format!(
                    "model:       {model}\nprice key:   {}\nwhy:         {}\ntable:       {}\n{:#?}\n",
                    found.price_key,
                    found.explanation,
                    table.version(),
                    found.price
                ))?,
                None => {
                    println!("{model}: no price (calls to it are recorded as unpriced)");
                    std::process::exit(1);
                }
            }
        }
        PricesCommand::Check { file } => {
            let table = PriceTable::check_file(&file)?;
            println!(
                "{}: ok, {} models, table version {}",
                file.display(),
                table.len(),
                table.version()
            );
        }
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

/// `llmtap reprice`: recompute stored costs with the current table (run while llmtap is stopped).
fn reprice(args: RepriceArgs) -> anyhow::Result<()> {
    let (from, to) = (Some(args.from.clone()), Some(args.to.clone()));
    let time = |flag: &str, value: Option<String>| -> anyhow::Result<u64> {
        let value = value.with_context(|| format!("reprice needs --{flag} DATE"))?;
        llmtap::timefmt::parse_rfc3339_us(&value)
            .with_context(|| format!("--{flag} {value:?} is not a date (YYYY-MM-DD or RFC 3339)"))
    };
    let (from_us, to_us) = (time("from", from)?, time("to", to)?);
    if from_us >= to_us {
        anyhow::bail!("--from must be before --to");
    }
    let config = load_config(&args.config, Overrides::default())?;
    let table = llmtap::server::load_prices(&config)?;
    let store =
        llmtap::store::Store::open_with(&config.data_dir, llmtap::server::store_options(&config)?)?;
    let report = store.reprice(from_us, to_us, &mut |call: &llmtap::record::CallRecord| {
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

fn parse_date(flag: &str, value: &str) -> anyhow::Result<u64> {
    llmtap::timefmt::parse_rfc3339_us(value)
        .with_context(|| format!("--{flag} {value:?} is not a date (YYYY-MM-DD or RFC 3339)"))
}

/// `llmtap otel export`: replays stored runs of a time range into the configured
/// OpenTelemetry collector.
fn otel_export(from: &str, to: &str, args: ConfigArgs) -> anyhow::Result<()> {
    let (from_us, to_us) = (parse_date("from", from)?, parse_date("to", to)?);
    if from_us >= to_us {
        anyhow::bail!("--from must be before --to");
    }
    let overrides = Overrides {
        otel_env: llmtap::otel::env_from_process(),
        ..Overrides::default()
    };
    let config = load_config(&args, overrides)?;
    let otel = config.otel.clone().context(
        "no OpenTelemetry endpoint configured: set [otel] endpoint or OTEL_EXPORTER_OTLP_ENDPOINT",
    )?;
    let store =
        llmtap::store::Store::open_with(&config.data_dir, llmtap::server::store_options(&config)?)?;
    let client = llmtap::upstream::build_client(
        config.extra_ca_file.as_deref(),
        config.connect_timeout,
        config.upstream_idle_timeout,
    )?;
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

/// A panic's message can quote the input it failed on (prompt text, a header value),
/// and secrets never reach the logs: a panic is logged with its thread and place,
/// its message only when `LLMTAP_PANIC_DETAILS=1` (for a developer reproducing it).
fn hide_panic_messages() {
    let details = std::env::var_os("LLMTAP_PANIC_DETAILS").is_some_and(|v| v == "1");
    std::panic::set_hook(Box::new(move |info| {
        let current = std::thread::current();
        let thread = current.name().unwrap_or("unnamed");
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        if details {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(thread, place, message, "panic");
        } else {
            tracing::error!(
                thread,
                place,
                "panic (its message may quote captured text; LLMTAP_PANIC_DETAILS=1 shows it)"
            );
        }
    }));
}
