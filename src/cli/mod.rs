//! The command line, parsed with clap (derive): one definition gives every command's
//! `--help`, typo suggestions and the shell completions.
//!
//! `serve`, `prices`, `reprice` run the product; `dev` runs the developer tools
//! (`crate::devtools`); the client commands (`runs`, `calls`, `show`, `tail`,
//! `ratelimits`, `stats`, `summary`, `export`) talk to a running llmtap's read API
//! (`client.rs`) and print tables or JSON (`output.rs`).

pub mod ca;
pub mod client;
pub mod commands;
pub mod mcp;
pub mod output;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "llmtap",
    version,
    about = "A transparent reverse proxy that records every LLM API call",
    long_about = "A transparent reverse proxy that records every LLM API call.\n\n\
        `llmtap serve` runs the proxy (default 127.0.0.1:8080) and the read API \
        (127.0.0.1:8081). The client commands (runs, calls, show, tail, ratelimits, \
        stats, summary, export) read a running llmtap's read API, local or remote.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy and the read API
    Serve(ServeArgs),
    /// Price-table tools: look up a model, check a table, import LiteLLM's
    #[command(subcommand)]
    Prices(PricesCommand),
    /// Recompute stored costs with the current price table (run while llmtap is stopped)
    Reprice(RepriceArgs),
    /// OpenTelemetry: replay stored runs to the configured collector
    #[command(subcommand)]
    Otel(OtelCommand),
    /// llmtap's local CA, which HTTPS_PROXY clients trust (created on first use)
    #[command(subcommand)]
    Ca(CaCommand),
    /// Print the shell lines that send this shell's HTTPS clients through llmtap: eval "$(llmtap env)"
    Env(EnvArgs),
    /// Developer tools: synthetic data and benchmarks
    #[command(subcommand)]
    Dev(DevCommand),
    /// List agent runs (invocations), newest first
    Runs(ListArgs),
    /// List calls, newest first
    Calls(ListArgs),
    /// List sessions, newest first (--from/--to/--since, --agent, --model); with an ID,
    /// the session as a conversation: each run's user turn, replies, tool calls, status, cost
    Sessions(SessionsArgs),
    /// Show a run with its rounds, or one call; --round N prints what the model saw
    Show(ShowArgs),
    /// Print new calls and runs as they are recorded, until Ctrl-C
    Tail(TailArgs),
    /// The providers' rate-limit state per key and model
    Ratelimits(RatelimitArgs),
    /// Grouped statistics: success rate, latency, tokens, cost
    Stats(StatsArgs),
    /// Totals: runs, calls, errors in the last 24 hours, cost today
    Summary(SummaryArgs),
    /// Write every matching call or run to a file (CSV or JSON lines)
    Export(ExportArgs),
    /// Run a stdio MCP server (COMMAND ARGS...) and record its exchanges in a running llmtap
    Mcp(McpArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Debug)]
#[command(
    after_help = "stdin, stdout and stderr pass through unchanged. Each exchange is sent to \
        the read API (--api); the environment variables LLMTAP_INVOCATION_ID, \
        LLMTAP_SESSION_ID and LLMTAP_AGENT group them into a run, a session and an agent. \
        If llmtap cannot be reached the server still runs, and the wrapper says so once on \
        stderr.\n\nExample: llmtap mcp --name files -- npx -y @modelcontextprotocol/server-filesystem /tmp"
)]
pub struct McpArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The name the server is recorded under (its provider) [default: the command's file name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The server's command and its arguments, after --
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Config file (TOML); flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where records are stored [default: ./llmtap-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Price table (TOML) instead of the built-in one
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Proxy listen address [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Read-API listen address [default: 127.0.0.1:8081]
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Print the path of the CA certificate (for NODE_EXTRA_CA_CERTS), creating the CA on first use
    Path(CaArgs),
    /// Print the CA's SHA-256 fingerprint, expiry and how its key is kept
    Show(CaArgs),
    /// Write the system's trusted roots plus llmtap's CA to FILE (for SSL_CERT_FILE, which replaces the system roots)
    Bundle {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        ca: CaArgs,
    },
}

#[derive(Args, Debug)]
pub struct CaArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Args, Debug)]
pub struct EnvArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The proxy address clients use [default: server.listen, 0.0.0.0 as 127.0.0.1]
    #[arg(long, value_name = "HOST:PORT")]
    pub proxy: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PricesCommand {
    /// Convert LiteLLM's model_prices_and_context_window.json to our TOML
    ImportLitellm {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Provenance note written into the table
        #[arg(long, value_name = "NOTE")]
        source: Option<String>,
        /// Write here instead of stdout
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show which price applies to a model, and why
    Lookup {
        model: String,
        #[arg(long, value_name = "PROVIDER")]
        provider: Option<String>,
        #[arg(long, value_name = "FILE")]
        prices: Option<PathBuf>,
    },
    /// Check that a price table loads
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct RepriceArgs {
    /// Start (inclusive): YYYY-MM-DD or RFC 3339
    #[arg(long, value_name = "DATE")]
    pub from: String,
    /// End (exclusive): YYYY-MM-DD or RFC 3339
    #[arg(long, value_name = "DATE")]
    pub to: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Subcommand, Debug)]
pub enum OtelCommand {
    /// Send the stored runs of a time range as OTLP spans (to [otel] endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)
    Export {
        /// Start (inclusive): YYYY-MM-DD or RFC 3339
        #[arg(long, value_name = "DATE")]
        from: String,
        /// End (exclusive): YYYY-MM-DD or RFC 3339
        #[arg(long, value_name = "DATE")]
        to: String,
        /// Config file (TOML)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where records are stored [default: ./llmtap-data]
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Write synthetic calls into a store (load tests, benchmarks)
    Seed {
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Spread over this many days before now
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Store in PostgreSQL at this URL instead of sled in the data directory
        #[arg(long, value_name = "URL")]
        store_url: Option<String>,
    },
    /// Time read-API requests against a seeded store
    BenchApi {
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Store in PostgreSQL at this URL instead of sled in the data directory
        #[arg(long, value_name = "URL")]
        store_url: Option<String>,
    },
    /// Records per second through the capture log and the writer, and bytes on disk per call
    WriterBench {
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
        #[arg(long, default_value_t = 20_000)]
        body_bytes: usize,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Log the calls first with no writer, then apply the whole log from disk, as after a restart
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        replay: bool,
        /// Number the synthetic calls from here (instances run side by side write
        /// distinct text when their ranges do not overlap)
        #[arg(long, default_value_t = 0)]
        first_call: usize,
    },
    /// Bytes on disk per call against bytes captured, for an agent workload
    StorageBench {
        /// Store directory [default: a new one under the temp dir]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1000)]
        conversations: u32,
        #[arg(long, default_value_t = 20)]
        rounds: u32,
        #[arg(long, default_value_t = 40_000)]
        image_bytes: usize,
        #[arg(long, default_value_t = 3)]
        compression_level: i32,
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        encrypt: bool,
        /// [default: the store's default]
        #[arg(long, action = clap::ArgAction::Set)]
        sled_compression: Option<bool>,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Store in PostgreSQL at this URL instead of sled in the data directory
        #[arg(long, value_name = "URL")]
        store_url: Option<String>,
    },
}

/// How to reach the read API and how to print; on every client command.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Read-API base URL
    #[arg(long, env = "LLMTAP_API_URL", default_value = "http://127.0.0.1:8081")]
    pub api: String,
    /// Bearer token for the read API
    #[arg(long, env = "LLMTAP_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Machine output: JSON (JSON lines for tail); the default when stdout is not a terminal
    #[arg(long)]
    pub json: bool,
}

/// The read API's list filters.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Agent name (repeatable: any of them)
    #[arg(long, value_name = "NAME")]
    pub agent: Vec<String>,
    /// success, failed, timeout, rate_limited, canceled, unauthorized (repeatable)
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
    /// Provider name (repeatable)
    #[arg(long, value_name = "NAME")]
    pub provider: Vec<String>,
    /// Model, requested or answering (repeatable)
    #[arg(long, value_name = "MODEL")]
    pub model: Vec<String>,
    /// user, system, task
    #[arg(long, value_name = "TRIGGER")]
    pub trigger: Vec<String>,
    /// Tenant (a tenant-confined token sees its own only)
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Conversation session id
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// End user id
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// Prompt name and version, e.g. summarise@v3
    #[arg(long, value_name = "NAME@VERSION")]
    pub prompt: Option<String>,
    /// x-llmtap-property-KEY equals VALUE (repeatable: all of them)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_property)]
    pub property: Vec<(String, String)>,
    /// Only the last DURATION, e.g. 30m, 1h, 2d
    #[arg(long, value_name = "DURATION", conflicts_with = "from", value_parser = parse_duration_s)]
    pub since: Option<u64>,
    /// From (inclusive): YYYY-MM-DD or RFC 3339
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// To (exclusive): YYYY-MM-DD or RFC 3339
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

/// `90s`, `30m`, `1h`, `2d`, `1w` as seconds.
pub fn parse_duration_s(text: &str) -> Result<u64, String> {
    let err = || format!("{text:?} is not a duration; expected e.g. 90s, 30m, 1h, 2d, 1w");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| err())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(err()),
    };
    n.checked_mul(scale).filter(|s| *s > 0).ok_or_else(err)
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Rows per page (1-200)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub limit: u64,
    /// Continue after a previous page: the token its footer printed
    #[arg(long, value_name = "TOKEN")]
    pub next: Option<String>,
}

/// `llmtap sessions [ID]`: the list's flags; the API refuses the filters sessions do
/// not take (it takes `--from`, `--to`, `--since`, `--agent`, `--model`, `--tenant`).
#[derive(Args, Debug)]
pub struct SessionsArgs {
    /// A session id: print that session's timeline instead of the list
    pub id: Option<String>,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// A run (invocation) id or a call id
    pub id: String,
    /// Print this round's system prompt, messages, tool calls and reply
    #[arg(long, value_name = "N")]
    pub round: Option<u32>,
    /// Do not shorten long texts
    #[arg(long)]
    pub full: bool,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Which records
    #[arg(long = "type", value_enum, default_value_t = TailKind::All)]
    pub kind: TailKind,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailKind {
    All,
    Calls,
    Runs,
}

#[derive(Args, Debug)]
pub struct RatelimitArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// Redraw every SECONDS until Ctrl-C
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Agent,
    Model,
    Provider,
    /// Tool calls per tool (its `kind = "http"` provider).
    Tool,
    Prompt,
    Trigger,
    Tenant,
    Day,
    Hour,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long, value_enum, default_value_t = GroupBy::Agent)]
    pub group_by: GroupBy,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug)]
pub struct SummaryArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long, value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Time zone that defines "today": UTC, +02:00 or a name like Europe/Berlin
    #[arg(long, value_name = "TZ")]
    pub tz: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// csv: the API's calls.csv (or invocations.csv with --runs), its prompt text in
    /// `input` for an admin token only; jsonl: each LLM call's prompt log
    /// (GET /api/v1/prompt-logs, an admin token), or run summaries with --runs
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The file to write
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Export runs (invocations) instead of calls
    #[arg(long)]
    pub runs: bool,
    /// Continue an interrupted export of the same file (with its filters) without writing a row twice
    #[arg(long)]
    pub resume: bool,
    /// Rows per request
    #[arg(long, default_value_t = 200, hide = true, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub page_size: u64,
    /// Stop after this many pages as if interrupted (tests the resume path)
    #[arg(long, hide = true)]
    pub stop_after_pages: Option<u64>,
    #[command(flatten)]
    pub filter: FilterArgs,
}
