//! The `llmtap` command line: `serve` and the price-table tools.

use anyhow::{bail, Context};
use llmtap::config::{Overrides, RawConfig};
use std::path::PathBuf;

const USAGE: &str = "\
llmtap: a transparent reverse proxy that records every LLM API call

USAGE:
  llmtap serve [--config FILE] [--listen ADDR] [--api-listen ADDR] [--data-dir DIR] [--prices FILE]
  llmtap help

Defaults: proxy on 127.0.0.1:8080, read API on 127.0.0.1:8081, data in ./llmtap-data.
Flags override the config file. See README.md for the config reference.
";

fn main() -> std::process::ExitCode {
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
