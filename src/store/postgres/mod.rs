//! The PostgreSQL engine: a shared store for several llmtap instances (issue 17).
//!
//! The connection pool with rustls TLS (`pool.rs`); the versioned schema migrations
//! applied at start-up under an advisory lock (`migrate.rs`, `migrations/*.sql`);
//! `PostgresStore` (`engine.rs`), the `Engine` implementation, over one module per
//! table group (`calls.rs`, `content.rs`, `invocations.rs`, `sessions.rs`,
//! `ratelimits.rs`, `rollups.rs`, `lists.rs`); one batch's transaction (`batch.rs`);
//! the live stream between instances (`notify.rs`); text as PostgreSQL accepts it
//! (`text.rs`); calls per day and facet (`facets.rs`). A request the engine cannot
//! express answers `StoreError::Unsupported`.

pub mod batch;
pub mod calls;
pub mod content;
pub mod engine;
pub mod facets;
pub mod invocations;
pub mod lists;
pub mod migrate;
pub mod notify;
pub mod pool;
pub mod ratelimits;
pub mod reprice;
pub mod retention;
pub mod rollups;
pub mod search;
pub mod sessions;
pub mod shred;
pub mod text;

pub use engine::{open_store, PostgresStore};
pub use migrate::{migrate, MIGRATIONS};
pub use pool::{Pool, PoolOptions, PooledClient};

/// What the PostgreSQL engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    #[error("PostgreSQL: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no PostgreSQL connection free within {waited_ms} ms (pool of {size}; raise [store] pool_size)")]
    PoolTimeout { size: usize, waited_ms: u64 },
    #[error("the database's llmtap schema is version {found}, newer than this llmtap knows (up to {known}): upgrade llmtap on this instance")]
    SchemaTooNew { found: i32, known: i32 },
    #[error("TLS setup for PostgreSQL: {0}")]
    Tls(String),
    #[error("cannot encode a record for PostgreSQL: {0}")]
    Encode(String),
    #[error("a record stored in PostgreSQL is corrupt: {0}")]
    Decode(String),
    #[error("{0} is not yet available on the PostgreSQL store")]
    Unsupported(&'static str),
    #[error("{missing} of {named} content pieces the batch builds on were freed meanwhile")]
    ContentGone { missing: u64, named: u64 },
    #[error("the PostgreSQL engine's runtime: {0}")]
    Runtime(String),
    #[error("cannot read [store] ca_file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
}

impl From<PgError> for crate::store::StoreError {
    fn from(e: PgError) -> crate::store::StoreError {
        crate::store::StoreError::Backend {
            prefix: "",
            io: e.is_transient(),
            source: Box::new(e),
        }
    }
}

impl PgError {
    /// A failure that passes: the connection is gone or was refused, the pool had
    /// none free, or the server is shutting down, starting, out of resources or
    /// read-only (a failover). The batch is written again later; other errors (SQL
    /// the server refuses for what it says) would fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::PoolTimeout { .. } | PgError::Runtime(_) => true,
            PgError::Db(e) => match e.code() {
                // No SQLSTATE: the connection failed or closed (I/O, TLS, EOF).
                None => true,
                Some(code) => {
                    let code = code.code();
                    // 08 connection exception, 53 insufficient resources, 57P
                    // operator intervention (shutdown, cannot connect now), 40
                    // transaction rollback (deadlocks that outlived the retries),
                    // 25006 read-only transaction (a standby after a failover).
                    ["08", "53", "57P", "40"]
                        .iter()
                        .any(|p| code.starts_with(p))
                        || code == "25006"
                }
            },
            _ => false,
        }
    }
}

/// This instance's name on the shared database (its capture-log position, its own
/// live-stream notices): kept in `data_dir/postgres-instance`, made at first start,
/// so it is stable across restarts and differs between data directories.
pub fn instance_name(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("postgres-instance");
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| std::io::Error::other("no randomness for the instance name"))?;
    let name: String = std::iter::once("i-".to_string())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect();
    // Written whole then renamed, so a crash never leaves half a name.
    let partial = data_dir.join("postgres-instance.partial");
    std::fs::write(&partial, &name)?;
    std::fs::rename(&partial, &path)?;
    Ok(name)
}

/// The engine's tables (storage figures list them).
pub const TABLES: &[&str] = &[
    "calls",
    "call_content",
    "chunks",
    "blobs",
    "invocations",
    "invocation_models",
    "sessions",
    "rollups",
    "ratelimits",
    "ratelimit_points",
    "audit",
    "call_facet_days",
    "call_facet_pair_days",
];

/// Day partitions made ahead of the clock at start-up (and by the storage thread).
pub const PARTITION_DAYS_AHEAD: u64 = 7;

const DAY_US: u64 = 86_400_000_000;

/// Connects, brings the schema up to date (or refuses a newer one) and makes the day
/// partitions from yesterday to `PARTITION_DAYS_AHEAD` days ahead. Returns the pool
/// and the schema version.
pub async fn prepare(config: &crate::config::PostgresConfig) -> Result<(Pool, i32), PgError> {
    let ca_pem = match &config.ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|source| PgError::CaFile {
                path: path.display().to_string(),
                source,
            })?,
        ),
        None => None,
    };
    let pool = Pool::new(&PoolOptions {
        url: config.url.expose().to_string(),
        size: config.pool_size,
        wait: std::time::Duration::from_secs(10),
        ca_pem,
    })?;
    let mut client = pool.get().await?;
    migrate(&mut client).await?;
    let now = crate::timefmt::now_unix_us();
    ensure_partitions(
        &client,
        now.saturating_sub(DAY_US),
        now + PARTITION_DAYS_AHEAD * DAY_US,
    )
    .await?;
    drop(client);
    Ok((pool, migrate::latest_version()))
}

/// Creates the missing UTC-day partitions covering `[from_us, to_us)`; returns how many.
pub async fn ensure_partitions(
    client: &tokio_postgres::Client,
    from_us: u64,
    to_us: u64,
) -> Result<i32, PgError> {
    let row = client
        .query_one(
            "SELECT llmtap_ensure_partitions($1, $2)",
            &[&(from_us as i64), &(to_us as i64)],
        )
        .await?;
    Ok(row.get(0))
}

/// Retention: drops the day partitions wholly before `cutoff_us` (and deletes older
/// rows of the default partitions); returns the partitions dropped.
pub async fn drop_partitions_before(
    client: &tokio_postgres::Client,
    cutoff_us: u64,
) -> Result<i32, PgError> {
    let row = client
        .query_one(
            "SELECT llmtap_drop_partitions_before($1)",
            &[&(cutoff_us as i64)],
        )
        .await?;
    Ok(row.get(0))
}
