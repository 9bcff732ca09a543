//! The upstream client: pooled HTTP/1.1 and HTTP/2 connections over rustls.
//!
//! hyper-util's legacy pooled client is used rather than reqwest because it passes
//! bodies and headers through untouched (no automatic decompression, no default
//! headers) and takes our streaming body type directly, with no extra copy.

use crate::tee::BoxError;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;
pub type UpstreamClient = Client<HttpsConnector<DialConnector>, UpstreamBody>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("cannot read CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The rustls provider used for both directions.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client the base-URL path uses: `extra_ca_file` trusted, no `[server.resolve]`.
pub fn build_client(
    extra_ca_file: Option<&Path>,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> Result<UpstreamClient, UpstreamSetupError> {
    let tls = tls_client_config(extra_ca_file)?;
    Ok(build_client_with(
        tls,
        Arc::new(DialPolicy::default()),
        connect_timeout,
        idle_timeout,
    ))
}

/// The TLS configuration of every upstream connection: the Mozilla roots plus
/// `extra_ca_file`, full verification.
pub fn tls_client_config(
    extra_ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, UpstreamSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca_file {
        let ca_error = |message: String| UpstreamSetupError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no certificates found".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
        }
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A pooled client whose connections go where `policy` says (`DialConnector`).
pub fn build_client_with(
    tls: rustls::ClientConfig,
    policy: Arc<DialPolicy>,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(DialConnector { http, policy });

    Client::builder(TokioExecutor::new())
        // Without a timer the pool drops an expired connection only when it next
        // looks at that host, so a burst's connections stayed open for good.
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(1024)
        .build(https)
}

/// Where upstream connections may go and how names resolve: `[server.resolve]`
/// (`host:port` to an address, like curl's `--resolve`), and, for connections a
/// proxy client chose (CONNECT, absolute-form), the rule that a name not allowed
/// explicitly must not resolve to a loopback, private, link-local or otherwise
/// non-public address (checked on the address actually connected to).
#[derive(Debug, Default, Clone)]
pub struct DialPolicy {
    /// `host:port` (lowercase) to the address to connect to instead.
    pub resolve: std::collections::BTreeMap<String, SocketAddr>,
    /// Refuse non-public addresses unless the name is in `allowed_names`.
    pub public_only: bool,
    /// `host:port` names allowed to reach any address (`[server.resolve]` keys,
    /// providers' base URLs, exact `[intercept] hosts`).
    pub allowed_names: std::collections::HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{host}:{port} resolves to {addr}, a loopback, private or link-local address; llmtap connects there only for a host allowed by name ([server.resolve], a provider's base_url, or an exact [intercept] hosts entry)")]
    Forbidden {
        host: String,
        port: u16,
        addr: IpAddr,
    },
    #[error("cannot resolve {host}:{port}: {message}")]
    Resolve {
        host: String,
        port: u16,
        message: String,
    },
}

impl DialPolicy {
    /// The addresses to try for `host:port`, in order; `None` to let the system
    /// resolver decide (a trusted connection with no `[server.resolve]` entry).
    pub async fn addresses(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Option<Vec<SocketAddr>>, DialError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = format!("{}:{port}", host.to_ascii_lowercase());
        if let Some(addr) = self.resolve.get(&name) {
            return Ok(Some(vec![*addr]));
        }
        if !self.public_only {
            return Ok(None);
        }
        let resolved: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| DialError::Resolve {
                    host: host.to_string(),
                    port,
                    message: e.to_string(),
                })?
                .collect(),
        };
        if self.allowed_names.contains(&name) {
            return Ok(Some(resolved));
        }
        let public: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|a| is_public(a.ip()))
            .collect();
        match (public.is_empty(), resolved.first()) {
            (false, _) => Ok(Some(public)),
            (true, Some(first)) => Err(DialError::Forbidden {
                host: host.to_string(),
                port,
                addr: first.ip(),
            }),
            (true, None) => Err(DialError::Resolve {
                host: host.to_string(),
                port,
                message: "no addresses".into(),
            }),
        }
    }

    /// A TCP connection to `host:port` under this policy (the CONNECT tunnel's dial).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<tokio::net::TcpStream, BoxError> {
        let addrs = match self.addresses(host, port).await? {
            Some(addrs) => addrs,
            None => tokio::net::lookup_host((host, port)).await?.collect(),
        };
        let mut last: Option<BoxError> = None;
        for addr in addrs {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = Some(e.into()),
                Err(_) => last = Some(format!("connect to {addr} timed out").into()),
            }
        }
        Err(last.unwrap_or_else(|| format!("no address for {host}:{port}").into()))
    }
}

/// Whether an address is on the public internet: not loopback, private (RFC 1918,
/// unique-local), link-local, CGNAT, unspecified, multicast, documentation or
/// reserved; IPv4-mapped IPv6 judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// hyper-util's connector, told where to connect by a `DialPolicy`; the TLS layer
/// above it still verifies the certificate against the URI's own host.
#[derive(Clone)]
pub struct DialConnector {
    http: HttpConnector,
    policy: Arc<DialPolicy>,
}

impl tower_service::Service<http::Uri> for DialConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut http = self.http.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("upstream URI has no host")?.to_string();
            let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let Some(addrs) = policy.addresses(&host, port).await? else {
                return http.call(uri).await.map_err(Into::into);
            };
            let mut last: Option<BoxError> = None;
            for addr in addrs {
                let scheme = if https { "https" } else { "http" };
                let target: http::Uri = format!("{scheme}://{addr}").parse()?;
                match http.call(target).await {
                    Ok(io) => return Ok(io),
                    Err(e) => last = Some(e.into()),
                }
            }
            Err(last.unwrap_or_else(|| format!("no address for {host}:{port}").into()))
        })
    }
}

/// Whether an upstream error was a timeout (504) rather than a refusal or reset (502).
pub fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if e.to_string().contains("timed out") {
            return true;
        }
        current = e.source();
    }
    false
}

/// The error and its causes on one line, for records and logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        current = e.source();
    }
    text
}
