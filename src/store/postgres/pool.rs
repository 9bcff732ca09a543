//! A small bounded pool of tokio-postgres connections, TLS by rustls.
//!
//! At most `size` connections exist at once (a semaphore of `size` permits; a
//! connection is made when a permit is taken and none is idle). A connection the
//! server closed is dropped on return, not reused. `get` waits at most `wait` for a
//! permit, so a database that holds every connection turns into an error, not a hang.
//!
//! Connections are made and driven on one process-wide runtime (`io_runtime`), never
//! on the caller's: a pooled connection outlives the task, engine or test runtime
//! that first asked for it (a tokio socket dies with the runtime it was made on).

use super::PgError;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

/// The runtime PostgreSQL connections and the engine's operations live on: two
/// workers, for the whole process.
pub fn io_runtime() -> Result<&'static tokio::runtime::Runtime, PgError> {
    static RUNTIME: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("llmtap-postgres")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PgError::Runtime(e.clone()))
}

/// How the pool connects.
#[derive(Clone)]
pub struct PoolOptions {
    /// `postgres://user[:password]@host[:port]/db[?sslmode=disable|prefer|require]`.
    pub url: String,
    pub size: usize,
    /// Longest wait for a free connection.
    pub wait: Duration,
    /// Extra trusted roots for TLS (PEM), besides the Mozilla roots.
    pub ca_pem: Option<String>,
}

/// A bounded set of connections to one database; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
    size: usize,
    wait: Duration,
}

/// A connection borrowed from the pool; returned on drop.
pub struct PooledClient {
    client: Option<Client>,
    inner: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    /// Checks the URL and the TLS setup; connects lazily.
    pub fn new(options: &PoolOptions) -> Result<Pool, PgError> {
        let config = tokio_postgres::Config::from_str(&options.url)
            .map_err(|e| PgError::Url(e.to_string()))?;
        let size = options.size.max(1);
        Ok(Pool {
            inner: Arc::new(Inner {
                config,
                tls: tls_connector(options.ca_pem.as_deref())?,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size)),
                size,
                wait: options.wait,
            }),
        })
    }

    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Connections open and not lent out.
    pub fn idle(&self) -> usize {
        self.inner.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// A connection outside the pool's bound (the live-stream listener), with its
    /// connection half for the caller to drive.
    pub async fn connect_dedicated(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
                    tokio_postgres::Socket,
                >>::Stream,
            >,
        ),
        PgError,
    > {
        Ok(self.inner.config.connect(self.inner.tls.clone()).await?)
    }

    /// An idle connection, or a new one while fewer than `size` exist.
    pub async fn get(&self) -> Result<PooledClient, PgError> {
        let permit =
            tokio::time::timeout(self.inner.wait, self.inner.permits.clone().acquire_owned())
                .await
                .map_err(|_| PgError::PoolTimeout {
                    size: self.inner.size,
                    waited_ms: self.inner.wait.as_millis() as u64,
                })?
                .map_err(|_| PgError::PoolTimeout {
                    size: self.inner.size,
                    waited_ms: 0,
                })?;
        let reused = loop {
            let next = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
            match next {
                Some(client) if client.is_closed() => continue,
                other => break other,
            }
        };
        let client = match reused {
            Some(client) => client,
            None => {
                let (config, tls) = (self.inner.config.clone(), self.inner.tls.clone());
                io_runtime()?
                    .spawn(async move {
                        let (client, connection) = config.connect(tls).await?;
                        tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::warn!(error = %e, "PostgreSQL connection closed");
                            }
                        });
                        Ok::<_, PgError>(client)
                    })
                    .await
                    .map_err(|e| PgError::Runtime(e.to_string()))??
            }
        };
        Ok(PooledClient {
            client: Some(client),
            inner: self.inner.clone(),
            _permit: permit,
        })
    }
}

impl std::ops::Deref for PooledClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for PooledClient {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until drop")
    }
}

impl Drop for PooledClient {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                if let Ok(mut idle) = self.inner.idle.lock() {
                    idle.push(client);
                }
            }
        }
    }
}

/// rustls with ring, the Mozilla roots and any extra CA; used when the URL's
/// `sslmode` asks for TLS (`prefer`, tokio-postgres's default, or `require`).
fn tls_connector(
    ca_pem: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| PgError::Tls(format!("CA file: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| PgError::Tls(format!("CA file: {e}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PgError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
