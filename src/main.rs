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
