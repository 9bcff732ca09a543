//! llmtap as an `HTTPS_PROXY`: the proxy listener's CONNECT and absolute-form
//! requests (issue 37), so an agent is recorded without changing its base URL.
//!
//! - CONNECT to a host in `[intercept] hosts` (and not in `[intercept] tunnel`): llmtap
//!   answers 200, terminates the client's TLS with a leaf its local CA (`ca.rs`) mints
//!   for the host, and serves the decrypted requests (HTTP/1.1 or HTTP/2, by ALPN)
//!   through the same forward path as base-URL calls (`forward::handle_for_host`),
//!   the provider found from the host. WebSocket upgrades are passed through.
//! - CONNECT to any other host: a byte-for-byte TCP tunnel; nothing is decrypted or
//!   recorded.
//! - `GET http://host/...` (absolute form) to a configured host: forwarded and recorded.
//!
//! Safe by default: CONNECT reaches only `[intercept] ports` (443), and never a
//! loopback, private or link-local address unless the name is allowed
//! (`upstream::DialPolicy`, which checks the address it connects to); on a
//! non-loopback listener every proxy request needs `Proxy-Authorization`.

pub mod ca;

use crate::config::intercept::HostPattern;
use crate::config::{Config, Provider};
use crate::conn_guard::{ConnActivity, InFlightBody};
use crate::forward::{self, HostTarget, ProxyBody, ProxyState};
use crate::record::ProviderKind;
use crate::store::Keyring;
use crate::tee::BoxError;
use crate::upstream::{self, DialError, DialPolicy, UpstreamClient};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Hosts that are not a provider's base URL but whose wire format is known.
const KNOWN_HOSTS: &[(&str, &str, ProviderKind, &str)] = &[
    // (pattern, provider name, kind, price_as)
    ("*.openai.azure.com", "azure", ProviderKind::Openai, "azure"),
    ("chatgpt.com", "chatgpt", ProviderKind::Openai, "openai"),
];

/// What the proxy listener needs for CONNECT and absolute-form requests.
pub struct Intercept {
    config: Arc<Config>,
    keys: Option<Arc<Keyring>>,
    ca: tokio::sync::OnceCell<Arc<ca::LocalCa>>,
    /// Upstream client of intercepted calls: `[server.resolve]`, public addresses
    /// only unless allowed by name.
    client: UpstreamClient,
    policy: Arc<DialPolicy>,
    /// For WebSocket upgrades, which go upstream on their own connection.
    tls: Arc<rustls::ClientConfig>,
    shutdown: watch::Receiver<bool>,
}

impl Intercept {
    pub fn new(
        config: Arc<Config>,
        keys: Option<Arc<Keyring>>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Intercept, upstream::UpstreamSetupError> {
        let tls = upstream::tls_client_config(config.extra_ca_file.as_deref())?;
        let policy = Arc::new(DialPolicy {
            resolve: config.resolve.clone(),
            public_only: true,
            allowed_names: allowed_names(&config),
        });
        let client = upstream::build_client_with(
            tls.clone(),
            policy.clone(),
            config.connect_timeout,
            config.upstream_idle_timeout,
        );
        let mut ws_tls = tls;
        ws_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Intercept {
            config,
            keys,
            ca: tokio::sync::OnceCell::new(),
            client,
            policy,
            tls: Arc::new(ws_tls),
            shutdown,
        })
    }

    /// The local CA, created on first use.
    async fn ca(&self) -> Result<Arc<ca::LocalCa>, String> {
        self.ca
            .get_or_try_init(|| async {
                let data_dir = self.config.data_dir.clone();
                let keys = self.keys.clone();
                tokio::task::spawn_blocking(move || {
                    ca::LocalCa::open_or_create(&data_dir, keys.as_deref()).map(Arc::new)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
            })
            .await
            .cloned()
    }

    /// Whether a proxy request may use CONNECT or absolute form: with
    /// `proxy_token_sha256` set, it must present the token; without, only on a
    /// loopback listener.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        match &self.config.intercept.proxy_token_sha256 {
            Some(expected) => presented_token(headers).is_some_and(|token| {
                // Comparing digests, not tokens: timing reveals nothing about the token.
                let got = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
                got.as_ref() == expected.as_slice()
            }),
            None => self.config.listen.ip().is_loopback(),
        }
    }
}

/// `host:port` names allowed to reach any address: `[server.resolve]` keys, providers'
/// base URLs, and exact `[intercept] hosts` entries on the allowed ports.
fn allowed_names(config: &Config) -> HashSet<String> {
    let mut names: HashSet<String> = config.resolve.keys().cloned().collect();
    for provider in config.providers.values() {
        let https = provider.base.scheme == http::uri::Scheme::HTTPS;
        let port = provider
            .base
            .authority
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        names.insert(format!(
            "{}:{port}",
            bare_host(provider.base.authority.host()).to_ascii_lowercase()
        ));
    }
    for pattern in &config.intercept.hosts {
        if let HostPattern::Exact(host) = pattern {
            for port in &config.intercept.ports {
                names.insert(format!("{host}:{port}"));
            }
        }
    }
    names
}

fn bare_host(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The token of `Proxy-Authorization: Basic base64(user:token)` or `Bearer token`.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let value = headers
        .get(http::header::PROXY_AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_string())
}

/// The tasks a connection's CONNECT or WebSocket upgrade started: the connection's
/// own task waits for them (so a graceful stop drains tunnels like requests), and
/// aborts them if it is itself canceled.
#[derive(Default)]
pub struct Upgrades(Mutex<Vec<JoinHandle<()>>>);

impl Upgrades {
    fn push(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.0.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
    }

    /// Waits for every task started so far.
    pub async fn join(&self) {
        loop {
            let next = self.0.lock().ok().and_then(|mut tasks| tasks.pop());
            match next {
                Some(task) => {
                    let _ = task.await;
                }
                None => return,
            }
        }
    }
}

impl Drop for Upgrades {
    fn drop(&mut self) {
        if let Ok(tasks) = self.0.lock() {
            for task in tasks.iter() {
                task.abort();
            }
        }
    }
}

/// One accepted proxy-listener connection, as the intercept needs it.
#[derive(Clone)]
pub struct ProxyConn {
    pub client_addr: SocketAddr,
    pub activity: Arc<ConnActivity>,
    pub upgrades: Arc<Upgrades>,
}

/// The proxy listener's service: CONNECT and absolute-form requests here, every other
/// request to the base-URL path (`forward::handle`).
pub async fn serve(
    state: Arc<ProxyState>,
    intercept: Arc<Intercept>,
    conn: ProxyConn,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    if request.method() == Method::CONNECT {
        return Ok(connect(state, intercept, conn, request).await);
    }
    // HTTP/2 requests always carry a scheme; only HTTP/1 absolute form is a proxy request.
    if request.uri().scheme().is_some() && request.version() <= http::Version::HTTP_11 {
        return Ok(absolute_form(state, intercept, conn, request).await);
    }
    forward::handle(state, request, conn.client_addr).await
}

fn refuse(status: StatusCode, kind: &str, message: &str) -> Response<ProxyBody> {
    forward::json_error(status, kind, message, None)
}

fn proxy_auth_required() -> Response<ProxyBody> {
    let mut response = refuse(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "proxy_auth_required",
        "this llmtap proxy needs Proxy-Authorization (the token of [intercept] proxy_token_sha256); without a token it serves proxy requests on a loopback listener only",
    );
    response.headers_mut().insert(
        http::header::PROXY_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"llmtap\""),
    );
    response
}

async fn connect(
    state: Arc<ProxyState>,
    intercept: Arc<Intercept>,
    conn: ProxyConn,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    if !intercept.authorized(request.headers()) {
        tracing::warn!(client = %conn.client_addr, "CONNECT without valid Proxy-Authorization refused");
        return proxy_auth_required();
    }
    let Some(authority) = request.uri().authority().cloned() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_connect",
            "CONNECT needs host:port",
        );
    };
    let host = bare_host(authority.host()).to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(443);
    if !intercept.config.intercept.ports.contains(&port) {
        tracing::warn!(%host, port, client = %conn.client_addr, "CONNECT to a port not in [intercept] ports refused");
        return refuse(
            StatusCode::FORBIDDEN,
            "connect_port_refused",
            &format!(
                "llmtap tunnels only to ports {:?} ([intercept] ports)",
                intercept.config.intercept.ports
            ),
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut request);
    let timeout = intercept.config.connect_timeout;
    if intercept.config.intercept.intercepts(&host) {
        // The destination is checked now, so a refused address is a 403 to the CONNECT
        // rather than a tunnel whose every request fails.
        if let Err(e) = intercept.policy.addresses(&host, port).await {
            return dial_refusal(&host, port, &conn, &e.into());
        }
        let ca = match intercept.ca().await {
            Ok(ca) => ca,
            Err(e) => {
                tracing::error!(error = %e, "cannot open llmtap's local CA; CONNECT refused");
                return refuse(
                    StatusCode::BAD_GATEWAY,
                    "ca_unavailable",
                    "llmtap's local CA cannot be opened; see its log",
                );
            }
        };
        let tls = match ca.server_config(&host) {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(%host, error = %e, "cannot mint a certificate");
                return refuse(
                    StatusCode::BAD_GATEWAY,
                    "ca_unavailable",
                    "llmtap cannot mint a certificate for this host",
                );
            }
        };
        let target = Arc::new(HostTarget {
            provider: provider_for_host(&intercept.config, http::uri::Scheme::HTTPS, &host, port),
            client: intercept.client.clone(),
        });
        tracing::debug!(%host, port, client = %conn.client_addr, "intercepting");
        let task_conn = conn.clone();
        conn.upgrades.push(tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    serve_intercepted(
                        state, intercept, task_conn, upgraded, tls, host, port, target,
                    )
                    .await
                }
                Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
            }
        }));
    } else {
        let upstream = match intercept.policy.connect(&host, port, timeout).await {
            Ok(stream) => stream,
            Err(e) => return dial_refusal(&host, port, &conn, &e),
        };
        tracing::debug!(%host, port, client = %conn.client_addr, "tunnelling");
        // A tunnel counts as a request in flight for its whole life: the connection's
        // idle deadline must not cut a provider that is silent while it thinks.
        let in_flight = conn.activity.begin();
        conn.upgrades.push(tokio::spawn(async move {
            let _in_flight = in_flight;
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut client = TokioIo::new(upgraded);
            let mut upstream = upstream;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }));
    }
    Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync())
}

fn dial_refusal(host: &str, port: u16, conn: &ProxyConn, error: &BoxError) -> Response<ProxyBody> {
    if let Some(dial @ DialError::Forbidden { .. }) = error.downcast_ref::<DialError>() {
        tracing::warn!(%host, port, client = %conn.client_addr, error = %dial, "CONNECT refused");
        return refuse(
            StatusCode::FORBIDDEN,
            "connect_address_refused",
            &dial.to_string(),
        );
    }
    let message = upstream::error_chain(error.as_ref());
    tracing::warn!(%host, port, error = %message, "CONNECT target unreachable");
    refuse(StatusCode::BAD_GATEWAY, "upstream_unreachable", &message)
}

/// The provider a host's calls are recorded under: a configured provider whose base
/// URL is this host, else a known host's (Azure OpenAI, ChatGPT), else the host
/// itself, recorded as plain HTTP (no LLM parsing).
pub fn provider_for_host(
    config: &Config,
    scheme: http::uri::Scheme,
    host: &str,
    port: u16,
) -> Provider {
    let default_port = if scheme == http::uri::Scheme::HTTPS {
        443
    } else {
        80
    };
    let configured = config.providers.values().find(|p| {
        p.base.scheme == scheme
            && bare_host(p.base.authority.host()).eq_ignore_ascii_case(host)
            && p.base.authority.port_u16().unwrap_or(default_port) == port
    });
    if let Some(provider) = configured {
        return provider.clone();
    }
    let authority_text = match (host.contains(':'), port == default_port) {
        (true, true) => format!("[{host}]"),
        (true, false) => format!("[{host}]:{port}"),
        (false, true) => host.to_string(),
        (false, false) => format!("{host}:{port}"),
    };
    let authority = authority_text
        .parse()
        .unwrap_or_else(|_| http::uri::Authority::from_static("invalid.host"));
    let (name, kind, price_as) = KNOWN_HOSTS
        .iter()
        .find(|(pattern, ..)| HostPattern::parse(pattern).is_ok_and(|p| p.matches(host)))
        .map(|(_, name, kind, price_as)| (name.to_string(), *kind, price_as.to_string()))
        .unwrap_or_else(|| (host.to_string(), ProviderKind::Http, "http".to_string()));
    Provider {
        name,
        kind,
        base: crate::config::BaseUrl {
            scheme,
            authority,
            path_prefix: String::new(),
        },
        price_as,
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_intercepted(
    state: Arc<ProxyState>,
    intercept: Arc<Intercept>,
    conn: ProxyConn,
    upgraded: hyper::upgrade::Upgraded,
    tls: Arc<rustls::ServerConfig>,
    host: String,
    port: u16,
    target: Arc<HostTarget>,
) {
    let stream = match tokio_rustls::TlsAcceptor::from(tls)
        .accept(TokioIo::new(upgraded))
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(
                %host,
                client = %conn.client_addr,
                error = %e,
                "the client refused llmtap's certificate for this host (it does not trust llmtap's CA, see `llmtap env`, or it pins certificates); add the host to [intercept] tunnel to pass it through untouched"
            );
            return;
        }
    };
    let shutdown = intercept.shutdown.clone();
    let header_read = intercept.config.header_read_timeout;
    let service_conn = conn.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_flight = service_conn.activity.begin();
        let (state, intercept, conn, target, host) = (
            state.clone(),
            intercept.clone(),
            service_conn.clone(),
            target.clone(),
            host.clone(),
        );
        async move {
            let response = if is_websocket(&request) {
                websocket(&intercept, &conn, &host, port, request).await
            } else {
                forward::handle_for_host(state, request, conn.client_addr, target).await?
            };
            Ok::<_, std::convert::Infallible>(
                response.map(|body| InFlightBody::new(body, in_flight).boxed_unsync()),
            )
        }
    });
    crate::server::serve_connection(stream, service, shutdown, header_read).await;
}

fn is_websocket(request: &Request<Incoming>) -> bool {
    request.version() <= http::Version::HTTP_11
        && request
            .headers()
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A WebSocket upgrade on an intercepted connection: sent upstream on a connection
/// of its own; on 101 both sides are joined byte for byte (not recorded).
async fn websocket(
    intercept: &Intercept,
    conn: &ProxyConn,
    host: &str,
    port: u16,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let client_upgrade = hyper::upgrade::on(&mut request);
    let upstream = async {
        let tcp = intercept
            .policy
            .connect(host, port, intercept.config.connect_timeout)
            .await?;
        let name = rustls_pki_types::ServerName::try_from(host.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(intercept.tls.clone())
            .connect(name, tcp)
            .await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        conn.upgrades.push(tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        }));
        let (parts, _) = request.into_parts();
        let upstream_request = Request::from_parts(parts, Empty::<Bytes>::new());
        let response = sender.send_request(upstream_request).await?;
        Ok::<_, BoxError>(response)
    };
    let mut response = match upstream.await {
        Ok(response) => response,
        Err(e) => {
            let message = upstream::error_chain(e.as_ref());
            tracing::warn!(%host, error = %message, "WebSocket upgrade upstream failed");
            return refuse(StatusCode::BAD_GATEWAY, "upstream_unreachable", &message);
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let in_flight = conn.activity.begin();
        conn.upgrades.push(tokio::spawn(async move {
            let _in_flight = in_flight;
            let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade) else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(
                &mut TokioIo::new(client),
                &mut TokioIo::new(upstream),
            )
            .await;
        }));
    }
    response.map(|body| body.map_err(BoxError::from).boxed_unsync())
}

async fn absolute_form(
    state: Arc<ProxyState>,
    intercept: Arc<Intercept>,
    conn: ProxyConn,
    request: Request<Incoming>,
) -> Response<ProxyBody> {
    if !intercept.authorized(request.headers()) {
        tracing::warn!(client = %conn.client_addr, "proxy request without valid Proxy-Authorization refused");
        return proxy_auth_required();
    }
    let uri = request.uri();
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_proxy_request",
            "llmtap proxies https through CONNECT only",
        );
    }
    let Some(authority) = uri.authority() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_proxy_request",
            "the request URI has no host",
        );
    };
    let host = bare_host(authority.host()).to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(80);
    let provider = provider_for_host(&intercept.config, http::uri::Scheme::HTTP, &host, port);
    let configured = intercept.config.providers.contains_key(&provider.name)
        && intercept.config.providers[&provider.name] == provider;
    let intercepted = intercept.config.intercept.intercepts(&host)
        && (port == 80 || intercept.config.intercept.ports.contains(&port));
    if !configured && !intercepted {
        tracing::warn!(%host, port, client = %conn.client_addr, "plain-HTTP proxy request to a host that is neither a provider's base URL nor in [intercept] hosts refused");
        return refuse(
            StatusCode::FORBIDDEN,
            "proxy_host_refused",
            "llmtap forwards plain-HTTP proxy requests only to a provider's base URL or a host in [intercept] hosts",
        );
    }
    let target = Arc::new(HostTarget {
        provider,
        client: intercept.client.clone(),
    });
    match forward::handle_for_host(state, request, conn.client_addr, target).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_tokens_from_basic_and_bearer() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::PROXY_AUTHORIZATION,
            "Basic dXNlcjpzZWNyZXQ=".parse().unwrap(),
        );
        assert_eq!(presented_token(&headers).as_deref(), Some("secret"));
        headers.insert(
            http::header::PROXY_AUTHORIZATION,
            "Bearer tok".parse().unwrap(),
        );
        assert_eq!(presented_token(&headers).as_deref(), Some("tok"));
    }
}
