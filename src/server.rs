//! Listeners and lifecycle: opens the capture log, binds the proxy and API ports and
//! starts forwarding, then opens the store (records wait in the log meanwhile),
//! starts the writer (which first applies the log's unapplied tail) and the read
//! API, serves connections (HTTP/1.1 and HTTP/2, optionally over TLS), and stops
//! gracefully: stop accepting, let in-flight calls finish until the grace deadline,
//! cancel the rest (each still gets its record), close the log, drain the writer,
//! flush.

use crate::api::{self, ApiState};
use crate::capture::CallSink;
use crate::config::Config;
use crate::conn_guard::{ConnActivity, ConnLimits, GuardedIo, InFlightBody};
use crate::conn_limit::{self, Slots};
use crate::cost::PriceTable;
use crate::forward::{self, ProxyState};
use crate::intercept::{self, Intercept, ProxyConn, Upgrades};
use crate::journal::{self, Journal, JournalOptions};
use crate::metrics::Metrics;
use crate::store::{self, Store, StoreOptions};
use crate::upstream;
use crate::writer::{self, SharedPrices, WriterControl};
use anyhow::Context;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A running llmtap: its addresses, its handles, and the way to stop it.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// Free space as the capture log sees it (tests replace its probe).
    pub log_disk: Arc<store::DiskGuard>,
    pub writer_control: Arc<WriterControl>,
    pub prices: SharedPrices,
    pub store: Store,
    shutdown: watch::Sender<bool>,
    proxy_task: tokio::task::JoinHandle<()>,
    api_task: tokio::task::JoinHandle<()>,
    journal: std::thread::JoinHandle<()>,
    writer: std::thread::JoinHandle<()>,
    background: store::Background,
    otel: Option<crate::otel::Exporter>,
    /// With PostgreSQL: other instances' batches relayed into the live stream.
    _relay: Option<crate::store::postgres::notify::Relay>,
}

/// The store's options from the config; the encryption key comes from
/// `[store] encryption_key_file`, else from `LLMTAP_ENCRYPTION_KEY`.
pub fn store_options(config: &Config) -> anyhow::Result<StoreOptions> {
    let s = &config.storage;
    let keys = match (
        &s.encryption_key_file,
        std::env::var("LLMTAP_ENCRYPTION_KEY"),
    ) {
        (Some(file), _) => Some(store::Keyring::from_file(file)?),
        (None, Ok(text)) if !text.trim().is_empty() => Some(
            store::Keyring::from_text(&text).context("LLMTAP_ENCRYPTION_KEY is not a valid key")?,
        ),
        _ => None,
    };
    Ok(StoreOptions {
        cache_bytes: config.cache_capacity_bytes,
        flush_every_ms: config.flush_every_ms,
        zstd_level: s.compression_level,
        keys: keys.map(std::sync::Arc::new),
        retention_days: s.retention_days,
        body_retention_days: s.body_retention_days,
        min_free_mb: s.min_free_mb,
        critical_free_mb: s.critical_free_mb,
        sled_compression: s.sled_compression,
        snapshot_every_bytes: s.snapshot_every_bytes,
        key_period_secs: s.key_period_secs,
    })
}

/// Loads the price table the config asks for (the embedded default, layered with a user file).
pub fn load_prices(config: &Config) -> anyhow::Result<PriceTable> {
    PriceTable::load(config.prices_file.as_deref())
        .with_context(|| "cannot load the price table".to_string())
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    private_data_dir(&config.data_dir)?;
    let open_files = conn_limit::raise_open_file_limit();
    let budget = conn_limit::ConnBudget::new(
        open_files,
        config.max_connections,
        config.api_max_connections,
        config.api_max_connections_per_ip,
    );
    tracing::info!(
        open_files,
        proxy = budget.proxy,
        api = budget.api,
        api_per_address = budget.api_per_address,
        "connection limits"
    );
    let proxy_slots = conn_limit::Slots::new(budget.proxy, None);
    let api_slots = conn_limit::Slots::new(budget.api, Some(budget.api_per_address));
    let store_options = store_options(&config)?;
    let prices: SharedPrices = Arc::new(RwLock::new(Arc::new(load_prices(&config)?)));
    let metrics = Arc::new(Metrics::default());
    // Base-URL calls connect where `[server.resolve]` says (else by DNS), to any address.
    let client = upstream::build_client_with(
        upstream::tls_client_config(config.extra_ca_file.as_deref())?,
        Arc::new(upstream::DialPolicy {
            resolve: config.resolve.clone(),
            ..upstream::DialPolicy::default()
        }),
        config.connect_timeout,
        config.upstream_idle_timeout,
    );
    let tls = match &config.tls {
        Some(files) => Some(tls_acceptor(&files.cert, &files.key)?),
        None => None,
    };

    let proxy_listener =
        listen(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let api_listener = listen(config.api_listen)
        .with_context(|| format!("cannot listen on {} (API)", config.api_listen))?;
    let proxy_addr = proxy_listener.local_addr()?;
    let api_addr = api_listener.local_addr()?;

    // The proxy forwards from here on, while the store opens (sled's recovery and the
    // facet cache take about a minute per million stored calls): records wait in the
    // capture log, bounded by the backlog like any other burst.
    let mut journal_options = JournalOptions::new(
        config.data_dir.join("journal"),
        config.journal_fsync,
        store_options.keys.clone(),
    );
    journal_options.redaction = crate::headers::Redaction {
        extra_headers: config.redact_headers.clone(),
        extra_query_params: config.redact_query_params.clone(),
    };
    journal_options.max_decoded = config.max_decoded_bytes;
    let log_disk = Arc::new(store::DiskGuard::new(
        &config.data_dir,
        config.storage.min_free_mb,
        config.storage.critical_free_mb,
    ));
    journal_options.disk = Some(log_disk.clone());
    let capture_budget = crate::capture::MemoryBudget::new(config.capture_memory_budget);
    metrics.watch_capture_budget(capture_budget.clone());
    let Journal {
        sender,
        appender,
        feed,
    } = journal::open(journal_options, metrics.clone())?;
    let state = Arc::new(ProxyState {
        config: config.clone(),
        request_buffered: Arc::default(),
        client,
        sink: Arc::new(CallSink {
            sender,
            metrics: metrics.clone(),
            budget: capture_budget.clone(),
        }),
        metrics: metrics.clone(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let grace = config.shutdown_grace;
    metrics.watch_listener("proxy", proxy_slots.clone());
    metrics.watch_listener("api", api_slots.clone());
    let intercept = Arc::new(Intercept::new(
        config.clone(),
        store_options.keys.clone(),
        shutdown_rx.clone(),
    )?);
    let proxy_task = tokio::spawn(proxy_accept_loop(
        proxy_listener,
        proxy_slots,
        state.clone(),
        intercept,
        tls,
        shutdown_rx.clone(),
        grace,
    ));
    // The read API answers 503 `store_opening` until the store is open.
    let api_slot: Arc<OnceLock<Arc<ApiState>>> = Arc::default();
    let api_task = tokio::spawn(api_accept_loop(
        api_listener,
        api_slots,
        api_slot.clone(),
        shutdown_rx,
        conn_limits(&config),
        metrics.clone(),
    ));
    tracing::info!(%proxy_addr, %api_addr, "proxy listening; opening the store");

    let opening = std::time::Instant::now();
    let opened = open_store(&config, store_options).await;
    let (store, relay) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = shutdown.send(true);
            let _ = tokio::join!(proxy_task, api_task);
            drop(state);
            drop(feed);
            // What was logged meanwhile stays in the log for the next start.
            let _ = tokio::task::spawn_blocking(move || appender.join()).await;
            return Err(e);
        }
    };
    tracing::info!(seconds = opening.elapsed().as_secs_f64(), "store open");
    let background =
        store::Background::spawn(store.clone()).context("cannot start the storage thread")?;
    // Subscribes to the store before the writer starts, so it sees every batch.
    let otel = config.otel.clone().map(|otel| {
        crate::otel::Exporter::start(
            otel,
            otel_span_options(&config),
            store.clone(),
            metrics.clone(),
            state.client.clone(),
        )
    });
    let writer_control = Arc::new(WriterControl::default());
    let writer = writer::spawn(
        store.clone(),
        feed,
        prices.clone(),
        metrics.clone(),
        writer_control.clone(),
        writer::WriterLimits {
            batch_linger: config.batch_linger,
            max_decoded_bytes: config.max_decoded_bytes,
            decode_budget_bytes: config.decode_budget_bytes,
            redaction: crate::headers::Redaction {
                extra_headers: config.redact_headers.clone(),
                extra_query_params: config.redact_query_params.clone(),
            },
        },
    )
    .context("cannot start the writer thread")?;

    let api_state = Arc::new(ApiState {
        store: store.clone(),
        metrics: metrics.clone(),
        auth: api::auth::Auth::new(config.api_tokens.clone()),
        prices: prices.clone(),
        proxy: state.clone(),
    });
    let _ = api_slot.set(api_state);
    if config.api_tokens.is_empty() {
        tracing::warn!(%api_addr, "read API has no tokens configured: it is bound to loopback only and every request has admin rights; add [[api.tokens]] or LLMTAP_API_TOKENS to require bearer tokens");
    } else {
        tracing::info!(
            tokens = config.api_tokens.len(),
            "read API requires bearer tokens"
        );
    }
    tracing::info!(%proxy_addr, %api_addr, data_dir = %config.data_dir.display(), "llmtap listening");
    Ok(Running {
        proxy_addr,
        api_addr,
        metrics,
        log_disk,
        writer_control,
        prices,
        store,
        shutdown,
        proxy_task,
        api_task,
        journal: appender,
        writer,
        background,
        otel,
        _relay: relay,
    })
}

/// Creates `data_dir` readable by this user only (0700, also an existing one made
/// by an older llmtap with 0755), and makes every file this process creates from
/// now on 0600: the capture log, sled's files and attachments hold prompts.
/// sled creates its own files, so the process's umask is the one place to say it.
fn private_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make data directory {} private", dir.display()))
}

/// Opens the configured store: sled in `data_dir`, or the shared PostgreSQL (schema
/// prepared under the migration lock, this instance named by its data directory,
/// other instances' batches relayed into the live stream).
async fn open_store(
    config: &Config,
    options: StoreOptions,
) -> anyhow::Result<(Store, Option<crate::store::postgres::notify::Relay>)> {
    use crate::store::postgres;
    let data_dir = config.data_dir.clone();
    let pg = match &config.engine {
        crate::config::StoreEngine::Sled => {
            let store = tokio::task::spawn_blocking(move || Store::open_with(&data_dir, options))
                .await
                .context("the store-opening thread failed")??;
            return Ok((store, None));
        }
        crate::config::StoreEngine::Postgres(pg) => pg,
    };
    let (pool, version) = postgres::prepare(pg)
        .await
        .with_context(|| format!("PostgreSQL store {}", pg.url.redacted()))?;
    let instance = postgres::instance_name(&data_dir)
        .with_context(|| format!("cannot name this instance in {}", data_dir.display()))?;
    tracing::info!(url = %pg.url.redacted(), version, %instance, "PostgreSQL store ready");
    let context = crate::store::EngineContext::new(&data_dir, &options);
    let relay = postgres::notify::relay(pool.clone(), instance.clone(), context.events.clone())?;
    let store =
        tokio::task::spawn_blocking(move || postgres::open_store(pool, instance, context, options))
            .await
            .context("the store-opening thread failed")??;
    Ok((store, Some(relay)))
}

/// What the span builders need from the config: content opt-in and upstream ports.
pub fn otel_span_options(config: &Config) -> crate::otel::spans::SpanOptions {
    let provider_ports = config
        .providers
        .values()
        .map(|p| {
            let default = if p.base.scheme == http::uri::Scheme::HTTP {
                80
            } else {
                443
            };
            (
                p.name.clone(),
                p.base.authority.port_u16().unwrap_or(default),
            )
        })
        .collect();
    crate::otel::spans::SpanOptions {
        capture_content: config.otel.as_ref().is_some_and(|o| o.capture_content),
        provider_ports,
    }
}

impl Running {
    /// Graceful stop. Returns once every record is stored and the store is flushed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let _ = self.proxy_task.await;
        let _ = self.api_task.await;
        let background = self.background;
        tokio::task::spawn_blocking(move || background.stop())
            .await
            .context("storage thread join failed")?;
        // The proxy is gone, so is every sender: the log closes once it has
        // appended what they sent, and the writer once it has applied it all (or,
        // with a store that fails to write, once it gave up: the log keeps the rest).
        self.writer_control
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || self.journal.join())
            .await
            .context("capture log join failed")?
            .map_err(|_| anyhow::anyhow!("the capture log thread panicked"))?;
        tokio::task::spawn_blocking(move || self.writer.join())
            .await
            .context("writer join failed")?
            .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
        // Every record is stored and published now; flush what the exporter holds.
        if let Some(otel) = self.otel {
            otel.shutdown().await;
        }
        Ok(())
    }
}

/// Clients that wait in the kernel's queue while a listener holds all its
/// connections (`conn_limit`): a burst of agents waits rather than being refused.
const ACCEPT_QUEUE: u32 = 4096;

fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_QUEUE)
}

/// Accepts a connection once the listener has a slot for it (`conn_limit`): a
/// full listener leaves new clients in the kernel's accept queue.
async fn accept_within(
    listener: &TcpListener,
    slots: &Slots,
) -> std::io::Result<(
    tokio::net::TcpStream,
    std::net::SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let permit = slots.reserve().await;
    let (stream, addr) = listener.accept().await?;
    Ok((stream, addr, permit))
}

async fn proxy_accept_loop(
    listener: TcpListener,
    slots: Arc<Slots>,
    state: Arc<ProxyState>,
    intercept: Arc<Intercept>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = accept_within(&listener, &slots) => {
                let (stream, addr, permit) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and similar: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Some(slot) = slots.admit(permit, addr.ip()) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let intercept = intercept.clone();
                let tls = tls.clone();
                let shutdown = shutdown.clone();
                let limits = conn_limits(&state.config);
                connections.spawn(async move {
                    let _slot = slot;
                    let activity = Arc::new(ConnActivity::default());
                    let stream = GuardedIo::new(stream, limits, activity.clone());
                    // CONNECT tunnels outlive the request that opened them: this task
                    // waits for them too (`src/intercept/`).
                    let upgrades = Arc::new(Upgrades::default());
                    let conn = ProxyConn { client_addr: addr, activity: activity.clone(), upgrades: upgrades.clone() };
                    let service = service_fn(move |req| {
                        let in_flight = activity.begin();
                        let response = intercept::serve(state.clone(), intercept.clone(), conn.clone(), req);
                        async move {
                            let response = response.await?;
                            Ok::<_, std::convert::Infallible>(response.map(|body| {
                                InFlightBody::new(body, in_flight).boxed_unsync()
                            }))
                        }
                    });
                    match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls_stream) => serve_connection(tls_stream, service, shutdown, limits.header_read).await,
                            Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                        },
                        None => serve_connection(stream, service, shutdown, limits.header_read).await,
                    }
                    upgrades.join().await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    drop(state);
    tracing::info!(
        connections = connections.len(),
        "stopped accepting; waiting for in-flight calls"
    );
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "grace period over; canceling the remaining calls"
        );
        connections.shutdown().await;
    }
}

/// Serves one client connection (HTTP/1.1 or HTTP/2, upgrades allowed) until it
/// ends, or, once `shutdown` fires, gracefully.
pub(crate) async fn serve_connection<I, S>(
    io: I,
    service: S,
    mut shutdown: watch::Receiver<bool>,
    header_read_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<forward::ProxyBody>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            return;
        }
        _ = shutdown.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// The deadlines client connections keep (`conn_guard.rs`).
fn conn_limits(config: &Config) -> ConnLimits {
    ConnLimits {
        header_read: config.header_read_timeout,
        idle: config.client_idle_timeout,
        send: config.client_send_timeout,
    }
}

async fn api_accept_loop(
    listener: TcpListener,
    slots: Arc<Slots>,
    state: Arc<OnceLock<Arc<ApiState>>>,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = accept_within(&listener, &slots) => {
                let Ok((stream, addr, permit)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                // An address holding its share is closed at once (counted).
                let Some(slot) = slots.admit(permit, addr.ip()) else {
                    continue;
                };
                let state = state.clone();
                let metrics = metrics.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let activity = Arc::new(ConnActivity::default());
                    let stream = GuardedIo::new(stream, limits, activity.clone());
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let ready = state.get().cloned();
                        let in_flight = activity.begin();
                        let metrics = metrics.clone();
                        async move {
                            let response = match ready {
                                Some(state) => api::handle(state, req).await?,
                                // Alive (liveness) but not ready: the store is opening.
                                None => api::before_store_opens(&req, &metrics),
                            };
                            Ok::<_, std::convert::Infallible>(
                                response.map(|body| InFlightBody::new(body, in_flight).boxed()),
                            )
                        }
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_read);
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections.shutdown().await;
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid TLS certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read TLS key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(upstream::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
