//! Configuration: the raw TOML file, command-line overrides, and the validated `Config`.
//!
//! Following ripgrep's split, `RawConfig` is exactly what the file says (every field
//! optional) and `Config` is the checked, defaulted form the rest of the program uses.
//! Validation happens once, at start-up, and names the offending value.

pub mod defaults;
pub mod intercept;
pub mod otel;

use crate::record::ProviderKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("invalid config value {field} = {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
}

fn invalid(field: &str, value: impl std::fmt::Display, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// The file as written. Unknown keys are rejected so typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub capture: RawCapture,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub prices: RawPrices,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub otel: otel::RawOtel,
    #[serde(default)]
    pub intercept: intercept::RawIntercept,
}

/// `[api]`: read-API access tokens, stored as SHA-256 hashes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    #[serde(default)]
    pub tokens: Vec<RawApiToken>,
    /// Connections the read API holds at once (default: an eighth of the open-file
    /// budget, at most 1024).
    pub max_connections: Option<usize>,
    /// Read-API connections one client address may hold (default 64).
    pub max_connections_per_ip: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiToken {
    pub name: Option<String>,
    /// Hex SHA-256 of the bearer token (`printf %s TOKEN | sha256sum`).
    pub sha256: String,
    pub role: String,
    pub tenant: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub api_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub extra_ca_file: Option<PathBuf>,
    pub connect_timeout_ms: Option<u64>,
    /// Client connections the proxy listener holds at once (default: what the
    /// open-file limit leaves, two descriptors per call).
    pub max_connections: Option<usize>,
    pub upstream_idle_timeout_ms: Option<u64>,
    pub first_byte_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub request_body_timeout_ms: Option<u64>,
    pub client_idle_timeout_ms: Option<u64>,
    pub client_send_timeout_ms: Option<u64>,
    pub tls: Option<RawTls>,
    /// `"host:port" = "ip:port"`, like curl's `--resolve`, for every upstream connection.
    #[serde(default)]
    pub resolve: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    pub max_body_bytes: Option<usize>,
    pub max_decoded_bytes: Option<u64>,
    pub decode_budget_bytes: Option<u64>,
    pub request_buffer_total_bytes: Option<usize>,
    pub memory_budget_bytes: Option<usize>,
    #[serde(default)]
    pub redact_query_params: Vec<String>,
    #[serde(default)]
    pub redact_headers: Vec<String>,
    pub group_by_traceparent: Option<bool>,
    pub inject_include_usage: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// Bytes of capture log not yet applied (an integer, or text such as "512MiB").
    pub backlog: Option<ByteSize>,
    pub on_backlog: Option<String>,
    pub flush_every_ms: Option<u64>,
    pub batch_linger_ms: Option<u64>,
    pub journal_fsync_ms: Option<u64>,
    pub cache_capacity_mb: Option<u64>,
    pub retention_days: Option<u64>,
    pub body_retention_days: Option<u64>,
    pub encryption_key_file: Option<PathBuf>,
    pub min_free_mb: Option<u64>,
    pub critical_free_mb: Option<u64>,
    pub compression_level: Option<i32>,
    pub sled_compression: Option<bool>,
    /// Length of a content key period in seconds (crypto-shredding, default 3600).
    pub key_period_secs: Option<u64>,
    /// Bytes stored between sled snapshots (an integer or "256MiB"; 0 never).
    pub snapshot_every: Option<ByteSize>,
    /// `postgres://...`: the shared PostgreSQL engine instead of sled in `data_dir`.
    pub url: Option<String>,
    /// Connections to PostgreSQL at most (default 8).
    pub pool_size: Option<usize>,
    /// Extra CA certificates (PEM) trusted for TLS to PostgreSQL.
    pub ca_file: Option<PathBuf>,
}

/// A size in the file: bytes as an integer, or a number with a unit ("64MiB", "1GB").
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

impl ByteSize {
    fn bytes(&self, field: &str) -> Result<u64, ConfigError> {
        let text = match self {
            ByteSize::Bytes(n) => return Ok(*n),
            ByteSize::Text(t) => t.trim(),
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" | "k" => 1 << 10,
            "mb" => 1000 * 1000,
            "mib" | "m" => 1 << 20,
            "gb" => 1000 * 1000 * 1000,
            "gib" | "g" => 1 << 30,
            _ => {
                return Err(invalid(
                    field,
                    text,
                    "expected bytes, or a number with B, KiB, MiB, GiB, KB, MB or GB",
                ))
            }
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_bytes))
            .ok_or_else(|| {
                invalid(
                    field,
                    text,
                    "expected bytes, or a number with B, KiB, MiB, GiB, KB, MB or GB",
                )
            })
    }
}

/// Default bound on the capture log's unapplied bytes (`store.backlog`).
pub const DEFAULT_BACKLOG_BYTES: u64 = 1 << 30;

/// Storage efficiency and safety (`[store]` keys owned by the store module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// 0 keeps calls forever.
    pub retention_days: u64,
    /// 0 keeps bodies as long as their calls.
    pub body_retention_days: u64,
    /// Read at start-up; `LLMTAP_ENCRYPTION_KEY` is used when this is unset.
    pub encryption_key_file: Option<PathBuf>,
    pub min_free_mb: u64,
    pub critical_free_mb: u64,
    /// zstd level 1-19; 0 stores content uncompressed.
    pub compression_level: i32,
    /// sled's own page compression (fixed when a store is created).
    pub sled_compression: bool,
    /// Bytes stored between sled snapshots; 0 never (`StoreOptions::snapshot_every_bytes`).
    pub snapshot_every_bytes: u64,
    /// Length of a content key period (`StoreOptions::key_period_secs`).
    pub key_period_secs: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrices {
    pub file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: Option<String>,
    pub base_url: Option<String>,
    /// Which price-table provider prices this one's calls (default: its name when the
    /// table knows it, else its wire format's provider: openai, anthropic or gemini).
    pub price_as: Option<String>,
}

/// Which engine keeps the records (`[store] url`, or `LLMTAP_STORE_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEngine {
    /// The embedded sled store in `data_dir` (the default).
    Sled,
    Postgres(PostgresConfig),
}

/// Default `[store] pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub url: StoreUrl,
    pub pool_size: usize,
    pub ca_file: Option<PathBuf>,
}

/// A database URL; its password never reaches `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The URL with its password, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `[redacted]`.
    pub fn redacted(&self) -> String {
        let text = &self.0;
        let Some(scheme_end) = text.find("://").map(|i| i + 3) else {
            return text.clone();
        };
        let authority_end = text[scheme_end..]
            .find(['/', '?'])
            .map_or(text.len(), |i| scheme_end + i);
        let authority = &text[scheme_end..authority_end];
        let (Some(at), Some(colon)) = (authority.rfind('@'), authority.find(':')) else {
            return text.clone();
        };
        if colon > at {
            return text.clone();
        }
        format!(
            "{}{}:[redacted]{}",
            &text[..scheme_end],
            &authority[..colon],
            &text[scheme_end + at..]
        )
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Command-line flags that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub api_listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub prices_file: Option<PathBuf>,
    /// `LLMTAP_API_TOKENS`: comma-separated `role:token[:tenant]` (raw tokens, hashed at load).
    pub api_tokens_env: Option<String>,
    /// `LLMTAP_STORE_URL`: overrides `[store] url`.
    pub store_url_env: Option<String>,
    /// The `OTEL_*` environment variables (`otel::env_from_process`); they override `[otel]`.
    pub otel_env: BTreeMap<String, String>,
}

/// What a read-API token may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRole {
    /// Metadata, tokens, costs, statuses, rate limits; no bodies, prompts or messages.
    Viewer,
    /// Everything, bodies included (reads of bodies are audited).
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Viewer => "viewer",
            ApiRole::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub role: ApiRole,
    /// Confines the token to one tenant's records.
    pub tenant: Option<String>,
}

/// Lowercase hex SHA-256 of a token.
pub fn token_sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn parse_role(field: &str, text: &str) -> Result<ApiRole, ConfigError> {
    match text {
        "viewer" => Ok(ApiRole::Viewer),
        "admin" => Ok(ApiRole::Admin),
        other => Err(invalid(field, other, "expected \"viewer\" or \"admin\"")),
    }
}

/// Tokens from the config file and from `LLMTAP_API_TOKENS`.
fn api_tokens(raw: &RawApi, env: Option<&str>) -> Result<Vec<ApiToken>, ConfigError> {
    let mut out = Vec::new();
    for (i, t) in raw.tokens.iter().enumerate() {
        let field = format!("api.tokens[{i}]");
        let sha256 = parse_sha256_hex(&t.sha256).ok_or_else(|| {
            invalid(
                &format!("{field}.sha256"),
                &t.sha256,
                "expected 64 hex digits (printf %s TOKEN | sha256sum)",
            )
        })?;
        out.push(ApiToken {
            name: t.name.clone().unwrap_or_else(|| t.sha256[..12].to_string()),
            sha256,
            role: parse_role(&format!("{field}.role"), &t.role)?,
            tenant: t.tenant.clone().filter(|t| !t.is_empty()),
        });
    }
    for (i, entry) in env
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let field = format!("LLMTAP_API_TOKENS[{i}]");
        let mut parts = entry.splitn(3, ':');
        let role = parts.next().unwrap_or("");
        let token = parts.next().unwrap_or("");
        if token.len() < 8 {
            return Err(invalid(
                &field,
                role,
                "expected role:token[:tenant] with a token of at least 8 characters",
            ));
        }
        let hex = token_sha256_hex(token);
        out.push(ApiToken {
            name: format!("env:{}", &hex[..12]),
            sha256: parse_sha256_hex(&hex).unwrap_or([0; 32]),
            role: parse_role(&field, role)?,
            tenant: parts.next().map(str::to_string).filter(|t| !t.is_empty()),
        });
    }
    Ok(out)
}

/// What to do with new requests while the writer is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBacklog {
    /// Answer 503 until the backlog drains: nothing goes unrecorded.
    Reject,
    /// Forward without capture: the agent is never refused, the gap is counted.
    Pass,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub base: BaseUrl,
    /// The provider name used to look up prices.
    pub price_as: String,
}

/// A provider's base URL split into the parts the forwarder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix without a trailing slash ("" or "/openai").
    pub path_prefix: String,
}

impl BaseUrl {
    pub fn parse(text: &str) -> Result<BaseUrl, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("not a URL: {e}"))?;
        let scheme = uri.scheme().cloned().ok_or("missing scheme")?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err("scheme must be http or https".into());
        }
        let authority = uri.authority().cloned().ok_or("missing host")?;
        if uri.query().is_some() {
            return Err("a base URL cannot have a query".into());
        }
        let path_prefix = uri.path().trim_end_matches('/').to_string();
        Ok(BaseUrl {
            scheme,
            authority,
            path_prefix,
        })
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub api_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: Option<TlsFiles>,
    pub extra_ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    /// An idle pooled upstream connection is closed after this.
    pub upstream_idle_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Slow clients (slowloris) lose their connection if the request head takes longer.
    pub header_read_timeout: Duration,
    /// A request body that sends nothing for this long is given up (408).
    pub request_body_timeout: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub client_idle_timeout: Duration,
    /// A client that reads nothing of its response for this long loses the connection.
    pub client_send_timeout: Duration,
    pub max_body_bytes: usize,
    /// Largest decoded size of one compressed body; a body cut here is marked truncated.
    pub max_decoded_bytes: u64,
    /// Decoded bytes the writer holds at once across a batch before it stores what it has.
    pub decode_budget_bytes: u64,
    /// Request bytes held at once, across all requests, while reading bodies to rewrite them.
    pub request_buffer_total_bytes: usize,
    /// Captured bytes all in-flight calls hold together (`capture::MemoryBudget`).
    pub capture_memory_budget: usize,
    /// Secret names beyond the built-in lists (lowercase, matched after percent-decoding).
    pub redact_query_params: Vec<String>,
    pub redact_headers: Vec<String>,
    pub group_by_traceparent: bool,
    pub inject_include_usage: bool,
    /// Bytes of capture log the store may fall behind by before `on_backlog` applies.
    pub backlog_bytes: u64,
    pub on_backlog: OnBacklog,
    pub flush_every_ms: u64,
    /// How long the writer waits to fill a batch: how late a call shows in lists.
    pub batch_linger: Duration,
    /// How often the capture log is synced to the device: what a power loss can lose.
    pub journal_fsync: Duration,
    pub cache_capacity_bytes: u64,
    pub storage: StorageConfig,
    pub engine: StoreEngine,
    pub prices_file: Option<PathBuf>,
    /// Keyed by name; built-ins merged with the file's table.
    pub providers: BTreeMap<String, Provider>,
    /// Read-API tokens; empty means no authentication, which is only allowed on loopback.
    pub api_tokens: Vec<ApiToken>,
    /// Connection caps (`server.max_connections`, `api.max_connections`,
    /// `api.max_connections_per_ip`); unset ones are derived from the open-file
    /// limit at start (`conn_limit::ConnBudget`).
    pub max_connections: Option<usize>,
    pub api_max_connections: Option<usize>,
    pub api_max_connections_per_ip: Option<usize>,
    /// OpenTelemetry export; `None` when off.
    pub otel: Option<otel::OtelConfig>,
    /// `[server.resolve]`: upstream `host:port` (lowercase) to the address to connect to.
    pub resolve: BTreeMap<String, SocketAddr>,
    /// `[intercept]`: which CONNECT targets are decrypted and recorded.
    pub intercept: intercept::InterceptConfig,
}

/// A count that must be at least 1 when set.
fn positive(key: &str, value: Option<usize>) -> Result<Option<usize>, ConfigError> {
    match value {
        Some(0) => Err(invalid(key, 0, "must be at least 1")),
        other => Ok(other),
    }
}

fn lowercase_names(names: &[String]) -> Vec<String> {
    names
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Providers that need no configuration.
pub const BUILTIN_PROVIDERS: &[(&str, ProviderKind, &str)] = &[
    ("openai", ProviderKind::Openai, "https://api.openai.com"),
    (
        "anthropic",
        ProviderKind::Anthropic,
        "https://api.anthropic.com",
    ),
    (
        "gemini",
        ProviderKind::Gemini,
        "https://generativelanguage.googleapis.com",
    ),
    ("groq", ProviderKind::Openai, "https://api.groq.com/openai"),
    ("mistral", ProviderKind::Openai, "https://api.mistral.ai"),
    (
        "openrouter",
        ProviderKind::Openai,
        "https://openrouter.ai/api",
    ),
    ("deepseek", ProviderKind::Openai, "https://api.deepseek.com"),
    ("together", ProviderKind::Openai, "https://api.together.xyz"),
    ("ollama", ProviderKind::Openai, "http://127.0.0.1:11434"),
];

/// Provider names the price table knows beyond the built-ins.
const PRICED_PROVIDER_NAMES: &[&str] = &["azure", "xai", "fireworks", "perplexity"];

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_DATA_DIR: &str = "./llmtap-data";

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        RawConfig::from_toml(&text).map_err(|message| ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies defaults and overrides, and checks every value.
    pub fn validate(self, overrides: &Overrides) -> Result<Config, ConfigError> {
        let addr = |field: &str, value: Option<&String>, default: &str| {
            let text = value.map(String::as_str).unwrap_or(default);
            text.parse::<SocketAddr>()
                .map_err(|_| invalid(field, text, "expected IP:PORT, e.g. 127.0.0.1:8080"))
        };
        let listen = addr(
            "server.listen",
            overrides.listen.as_ref().or(self.server.listen.as_ref()),
            DEFAULT_LISTEN,
        )?;
        let api_listen = addr(
            "server.api_listen",
            overrides
                .api_listen
                .as_ref()
                .or(self.server.api_listen.as_ref()),
            DEFAULT_API_LISTEN,
        )?;
        let api_tokens = api_tokens(&self.api, overrides.api_tokens_env.as_deref())?;
        if api_tokens.is_empty() && !api_listen.ip().is_loopback() {
            return Err(invalid(
                "server.api_listen",
                api_listen,
                "the read API serves every record without authentication when no tokens are configured; \
                 bind it to a loopback address or add [[api.tokens]] (or LLMTAP_API_TOKENS)",
            ));
        }
        let data_dir = overrides
            .data_dir
            .clone()
            .or(self.server.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let ms = |field: &str, value: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
            let v = value.unwrap_or(default);
            if v == 0 {
                return Err(invalid(field, v, "must be greater than 0"));
            }
            Ok(Duration::from_millis(v))
        };

        let on_backlog = match self.store.on_backlog.as_deref().unwrap_or("reject") {
            "reject" => OnBacklog::Reject,
            "pass" => OnBacklog::Pass,
            other => {
                return Err(invalid(
                    "store.on_backlog",
                    other,
                    "expected \"reject\" or \"pass\"",
                ))
            }
        };
        let backlog_bytes = match &self.store.backlog {
            Some(size) => size.bytes("store.backlog")?,
            None => DEFAULT_BACKLOG_BYTES,
        };
        if backlog_bytes == 0 {
            return Err(invalid(
                "store.backlog",
                backlog_bytes,
                "must be greater than 0",
            ));
        }
        let max_body_bytes = self.capture.max_body_bytes.unwrap_or(32 << 20);
        let max_decoded_bytes = self
            .capture
            .max_decoded_bytes
            .unwrap_or(defaults::MAX_DECODED_BYTES);
        let decode_budget_bytes = self
            .capture
            .decode_budget_bytes
            .unwrap_or(defaults::DECODE_BUDGET_BYTES);
        if max_decoded_bytes == 0 || decode_budget_bytes == 0 {
            return Err(invalid(
                "capture.max_decoded_bytes / capture.decode_budget_bytes",
                max_decoded_bytes.min(decode_budget_bytes),
                "must be greater than 0",
            ));
        }
        let storage = StorageConfig {
            retention_days: self.store.retention_days.unwrap_or(0),
            body_retention_days: self.store.body_retention_days.unwrap_or(0),
            encryption_key_file: self.store.encryption_key_file.clone(),
            min_free_mb: self.store.min_free_mb.unwrap_or(defaults::MIN_FREE_MB),
            critical_free_mb: self
                .store
                .critical_free_mb
                .unwrap_or(defaults::CRITICAL_FREE_MB),
            compression_level: self
                .store
                .compression_level
                .unwrap_or(defaults::COMPRESSION_LEVEL),
            sled_compression: self.store.sled_compression.unwrap_or(false),
            snapshot_every_bytes: match &self.store.snapshot_every {
                Some(size) => size.bytes("store.snapshot_every")?,
                None => defaults::SNAPSHOT_EVERY_BYTES,
            },
            key_period_secs: self
                .store
                .key_period_secs
                .unwrap_or(defaults::KEY_PERIOD_SECS),
        };
        if !(1..=31 * 86_400).contains(&storage.key_period_secs) {
            return Err(invalid(
                "store.key_period_secs",
                storage.key_period_secs,
                "expected 1 to 2678400 (31 days)",
            ));
        }
        if storage.critical_free_mb > storage.min_free_mb {
            return Err(invalid(
                "store.critical_free_mb",
                storage.critical_free_mb,
                "must not exceed store.min_free_mb (bodies stop first, then capture)",
            ));
        }
        if !(0..=19).contains(&storage.compression_level) {
            return Err(invalid(
                "store.compression_level",
                storage.compression_level,
                "expected 0 (off) to 19",
            ));
        }

        let engine = store_engine(&self.store, overrides.store_url_env.as_deref())?;

        let mut providers = BTreeMap::new();
        for (name, kind, url) in BUILTIN_PROVIDERS {
            let base = BaseUrl::parse(url).map_err(|r| invalid("builtin", url, &r))?;
            providers.insert(
                name.to_string(),
                Provider {
                    name: name.to_string(),
                    kind: *kind,
                    base,
                    price_as: name.to_string(),
                },
            );
        }
        for (name, raw) in self.providers {
            let field = format!("providers.{name}");
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(&field, &name, "names use a-z, 0-9, - and _"));
            }
            let builtin = providers.get(&name).cloned();
            let is_builtin = builtin.is_some();
            let kind = match raw.kind.as_deref() {
                Some(k) => ProviderKind::parse(k).ok_or_else(|| {
                    invalid(
                        &format!("{field}.kind"),
                        k,
                        "expected openai, anthropic, gemini, http or mcp",
                    )
                })?,
                None => match &builtin {
                    Some(b) => b.kind,
                    None if name == "azure" => ProviderKind::Openai,
                    None => return Err(invalid(&format!("{field}.kind"), "", "kind is required")),
                },
            };
            let base = match raw.base_url.as_deref() {
                Some(url) => BaseUrl::parse(url)
                    .map_err(|r| invalid(&format!("{field}.base_url"), url, &r))?,
                None => match builtin {
                    Some(b) => b.base,
                    None => {
                        return Err(invalid(
                            &format!("{field}.base_url"),
                            "",
                            "base_url is required",
                        ))
                    }
                },
            };
            let price_as = match raw.price_as {
                Some(p) => p,
                None if is_builtin || PRICED_PROVIDER_NAMES.contains(&name.as_str()) => {
                    name.clone()
                }
                None => kind.as_str().to_string(),
            };
            providers.insert(
                name.clone(),
                Provider {
                    name,
                    kind,
                    base,
                    price_as,
                },
            );
        }

        let shutdown_grace = ms(
            "server.shutdown_grace_ms",
            self.server.shutdown_grace_ms,
            30_000,
        )?;
        let otel = otel::OtelConfig::resolve(&self.otel, &overrides.otel_env, shutdown_grace)?;
        let mut resolve = BTreeMap::new();
        for (from, to) in &self.server.resolve {
            let field = format!("server.resolve.\"{from}\"");
            let key = from.trim().to_ascii_lowercase();
            let valid_key = key
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid_key {
                return Err(invalid(
                    &field,
                    from,
                    "keys are HOST:PORT, e.g. \"api.openai.com:443\"",
                ));
            }
            let addr = to
                .parse::<SocketAddr>()
                .map_err(|_| invalid(&field, to, "expected IP:PORT, e.g. 127.0.0.1:8443"))?;
            resolve.insert(key, addr);
        }
        let intercept = intercept::InterceptConfig::from_raw(&self.intercept)
            .map_err(|(field, value, reason)| invalid(&field, value, &reason))?;
        Ok(Config {
            listen,
            api_listen,
            data_dir,
            tls: self.server.tls.map(|t| TlsFiles {
                cert: t.cert,
                key: t.key,
            }),
            extra_ca_file: self.server.extra_ca_file,
            connect_timeout: ms(
                "server.connect_timeout_ms",
                self.server.connect_timeout_ms,
                10_000,
            )?,
            upstream_idle_timeout: ms(
                "server.upstream_idle_timeout_ms",
                self.server.upstream_idle_timeout_ms,
                90_000,
            )?,
            first_byte_timeout: ms(
                "server.first_byte_timeout_ms",
                self.server.first_byte_timeout_ms,
                600_000,
            )?,
            idle_timeout: ms(
                "server.idle_timeout_ms",
                self.server.idle_timeout_ms,
                300_000,
            )?,
            shutdown_grace,
            header_read_timeout: ms(
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
                30_000,
            )?,
            request_body_timeout: ms(
                "server.request_body_timeout_ms",
                self.server.request_body_timeout_ms,
                30_000,
            )?,
            client_idle_timeout: ms(
                "server.client_idle_timeout_ms",
                self.server.client_idle_timeout_ms,
                75_000,
            )?,
            client_send_timeout: ms(
                "server.client_send_timeout_ms",
                self.server.client_send_timeout_ms,
                60_000,
            )?,
            max_body_bytes,
            max_decoded_bytes,
            decode_budget_bytes,
            request_buffer_total_bytes: self
                .capture
                .request_buffer_total_bytes
                .unwrap_or(256 << 20),
            capture_memory_budget: self
                .capture
                .memory_budget_bytes
                .unwrap_or(defaults::CAPTURE_MEMORY_BUDGET),
            redact_query_params: lowercase_names(&self.capture.redact_query_params),
            redact_headers: lowercase_names(&self.capture.redact_headers),
            group_by_traceparent: self.capture.group_by_traceparent.unwrap_or(true),
            inject_include_usage: self.capture.inject_include_usage.unwrap_or(true),
            backlog_bytes,
            on_backlog,
            flush_every_ms: self
                .store
                .flush_every_ms
                .unwrap_or(defaults::FLUSH_EVERY_MS),
            batch_linger: self
                .store
                .batch_linger_ms
                .map_or(defaults::BATCH_LINGER, Duration::from_millis),
            journal_fsync: Duration::from_millis(self.store.journal_fsync_ms.unwrap_or(100)),
            cache_capacity_bytes: self
                .store
                .cache_capacity_mb
                .map_or(defaults::STORE_CACHE_BYTES, |mb| mb << 20),
            storage,
            engine,
            prices_file: overrides.prices_file.clone().or(self.prices.file),
            providers,
            api_tokens,
            max_connections: positive("server.max_connections", self.server.max_connections)?,
            api_max_connections: positive("api.max_connections", self.api.max_connections)?,
            api_max_connections_per_ip: positive(
                "api.max_connections_per_ip",
                self.api.max_connections_per_ip,
            )?,
            otel,
            resolve,
            intercept,
        })
    }
}

/// `[store] url` / `LLMTAP_STORE_URL` (which wins), `pool_size`, `ca_file`.
fn store_engine(raw: &RawStore, url_env: Option<&str>) -> Result<StoreEngine, ConfigError> {
    let (field, url) = match url_env.map(str::trim).filter(|u| !u.is_empty()) {
        Some(url) => ("LLMTAP_STORE_URL", url),
        None => match raw.url.as_deref().map(str::trim) {
            Some(url) => ("store.url", url),
            None => {
                if raw.pool_size.is_some() || raw.ca_file.is_some() {
                    return Err(invalid(
                        "store.pool_size / store.ca_file",
                        "",
                        "apply to the PostgreSQL engine only: set store.url too",
                    ));
                }
                return Ok(StoreEngine::Sled);
            }
        },
    };
    let shown = StoreUrl(url.to_string()).redacted();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            field,
            shown,
            "expected postgres://user@host:port/database (sled needs no URL: leave it unset)",
        ));
    }
    if let Err(e) = url.parse::<tokio_postgres::Config>() {
        return Err(invalid(field, shown, &e.to_string()));
    }
    let pool_size = raw.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
    if !(1..=1000).contains(&pool_size) {
        return Err(invalid("store.pool_size", pool_size, "expected 1 to 1000"));
    }
    Ok(StoreEngine::Postgres(PostgresConfig {
        url: StoreUrl(url.to_string()),
        pool_size,
        ca_file: raw.ca_file.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_builtin_defaults() {
        let config = RawConfig::from_toml("")
            .unwrap()
            .validate(&Overrides::default())
            .unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.api_listen.to_string(), DEFAULT_API_LISTEN);
        assert_eq!(config.providers["groq"].base.path_prefix, "/openai");
        assert_eq!(config.providers["anthropic"].kind, ProviderKind::Anthropic);
        assert!(!config.providers.contains_key("azure"));
        assert_eq!(config.on_backlog, OnBacklog::Reject);
        assert_eq!(config.backlog_bytes, DEFAULT_BACKLOG_BYTES);
        assert_eq!(config.journal_fsync, Duration::from_millis(100));
        assert_eq!(config.engine, StoreEngine::Sled);
    }

    #[test]
    fn store_url_picks_postgres_and_the_environment_wins() {
        let raw =
            "[store]\nurl = \"postgres://llmtap:hunter2@db.internal:5433/llmtap\"\npool_size = 3";
        let config = RawConfig::from_toml(raw)
            .unwrap()
            .validate(&Overrides::default())
            .unwrap();
        let StoreEngine::Postgres(pg) = &config.engine else {
            panic!("{:?}", config.engine);
        };
        assert_eq!(pg.pool_size, 3);
        assert_eq!(
            pg.url.expose(),
            "postgres://llmtap:hunter2@db.internal:5433/llmtap"
        );
        // The password never reaches Debug output (the config is logged at start-up).
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("postgres://llmtap:[redacted]@db.internal:5433/llmtap"));

        let config = RawConfig::from_toml(raw)
            .unwrap()
            .validate(&Overrides {
                store_url_env: Some("postgresql://other@127.0.0.1/x".into()),
                ..Overrides::default()
            })
            .unwrap();
        let StoreEngine::Postgres(pg) = &config.engine else {
            panic!("{:?}", config.engine);
        };
        assert_eq!(pg.url.expose(), "postgresql://other@127.0.0.1/x");
        assert_eq!(pg.pool_size, 3);
        let config = RawConfig::from_toml("[store]\nurl = \"postgres://u@h/d\"")
            .unwrap()
            .validate(&Overrides::default())
            .unwrap();
        assert_eq!(
            config.engine,
            StoreEngine::Postgres(PostgresConfig {
                url: StoreUrl("postgres://u@h/d".into()),
                pool_size: DEFAULT_POOL_SIZE,
                ca_file: None,
            })
        );
    }

    #[test]
    fn bad_store_urls_and_pool_sizes_are_refused_without_the_password() {
        for (toml, field) in [
            ("url = \"mysql://u:pw@h/d\"", "store.url"),
            ("url = \"postgres://u:pw@h:notaport/d\"", "store.url"),
            (
                "url = \"postgres://u:pw@h/d\"\npool_size = 0",
                "store.pool_size",
            ),
            ("pool_size = 4", "store.pool_size"),
        ] {
            let err = RawConfig::from_toml(&format!("[store]\n{toml}"))
                .unwrap()
                .validate(&Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{toml}: {err}");
            assert!(!err.contains(":pw@"), "{toml}: {err}");
        }
    }

    #[test]
    fn backlog_takes_bytes_or_a_size_with_a_unit() {
        for (toml, bytes) in [
            ("backlog = 4096", 4096),
            ("backlog = \"512MiB\"", 512 << 20),
            ("backlog = \"2 GB\"", 2_000_000_000),
        ] {
            let config = RawConfig::from_toml(&format!("[store]\n{toml}"))
                .unwrap()
                .validate(&Overrides::default())
                .unwrap();
            assert_eq!(config.backlog_bytes, bytes, "{toml}");
        }
        for bad in [
            "backlog = \"lots\"",
            "backlog = \"5 parsecs\"",
            "backlog = 0",
        ] {
            let err = RawConfig::from_toml(&format!("[store]\n{bad}"))
                .unwrap()
                .validate(&Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("store.backlog"), "{err}");
        }
    }

    #[test]
    fn file_adds_providers_and_flags_override() {
        let raw = RawConfig::from_toml(
            r#"
            [server]
            listen = "127.0.0.1:1"
            [providers.mock]
            kind = "anthropic"
            base_url = "http://127.0.0.1:9999/"
            [providers.azure]
            base_url = "https://x.openai.azure.com"
            "#,
        )
        .unwrap();
        let config = raw
            .validate(&Overrides {
                listen: Some("127.0.0.1:2".into()),
                ..Overrides::default()
            })
            .unwrap();
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.providers["mock"].kind, ProviderKind::Anthropic);
        assert_eq!(config.providers["mock"].base.path_prefix, "");
        assert_eq!(config.providers["azure"].kind, ProviderKind::Openai);
        assert_eq!(config.providers["azure"].price_as, "azure");
        assert_eq!(config.providers["mock"].price_as, "anthropic");
        assert_eq!(config.providers["groq"].price_as, "groq");
    }

    #[test]
    fn bad_values_are_named() {
        for (toml, field) in [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[store]\non_backlog = \"drop\"", "store.on_backlog"),
            (
                "[store]\nmin_free_mb = 10\ncritical_free_mb = 20",
                "store.critical_free_mb",
            ),
            ("[store]\ncompression_level = 30", "store.compression_level"),
            (
                "[providers.x]\nkind = \"soap\"\nbase_url = \"http://a\"",
                "providers.x.kind",
            ),
            (
                "[providers.x]\nkind = \"http\"\nbase_url = \"ftp://a\"",
                "providers.x.base_url",
            ),
            ("[providers.x]\nkind = \"http\"", "providers.x.base_url"),
        ] {
            let err = RawConfig::from_toml(toml)
                .unwrap()
                .validate(&Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{err}");
        }
        assert!(RawConfig::from_toml("[server]\nlisten_typo = 1").is_err());
    }

    #[test]
    fn api_tokens_from_file_and_environment() {
        let hash = token_sha256_hex("secret-token");
        let raw = RawConfig::from_toml(&format!(
            "[server]\napi_listen = \"0.0.0.0:9\"\n[[api.tokens]]\nname = \"ops\"\nsha256 = \"{hash}\"\nrole = \"admin\"\n"
        ))
        .unwrap();
        let config = raw
            .validate(&Overrides {
                api_tokens_env: Some("viewer:abcdefgh:acme".into()),
                ..Overrides::default()
            })
            .unwrap();
        assert_eq!(config.api_tokens.len(), 2);
        assert_eq!(config.api_tokens[0].name, "ops");
        assert_eq!(config.api_tokens[1].role, ApiRole::Viewer);
        assert_eq!(config.api_tokens[1].tenant.as_deref(), Some("acme"));
        assert_eq!(
            config.api_tokens[1].sha256.to_vec(),
            ring::digest::digest(&ring::digest::SHA256, b"abcdefgh").as_ref()
        );
    }

    #[test]
    fn api_without_tokens_must_stay_on_loopback() {
        let err = RawConfig::from_toml("[server]\napi_listen = \"0.0.0.0:8081\"")
            .unwrap()
            .validate(&Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.api_listen") && err.contains("loopback"),
            "{err}"
        );
        for bad in [
            "[[api.tokens]]\nsha256 = \"xyz\"\nrole = \"admin\"",
            "[[api.tokens]]\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\nrole = \"root\"",
        ] {
            assert!(RawConfig::from_toml(bad)
                .unwrap()
                .validate(&Overrides::default())
                .is_err());
        }
    }
}
