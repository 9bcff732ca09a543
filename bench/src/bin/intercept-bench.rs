//! intercept-bench: what llmtap as an `HTTPS_PROXY` costs (issue 37), in one run.
//!
//! Starts a TLS mock provider in this process (a certificate for `api.openai.com` and
//! `tunnel.test` from a CA made here), starts `llmtap serve` (the binary given) with
//! `[server.resolve]` pointing both names at the mock and `extra_ca_file` trusting it,
//! and sends the same ~1 KB chat completion, one at a time, four ways:
//!
//! - `direct`:    TLS straight to the mock (the baseline);
//! - `base-url`:  plain HTTP to llmtap's `/openai/v1/...` (recorded);
//! - `intercept`: CONNECT api.openai.com:443 through llmtap, TLS with llmtap's leaf (recorded);
//! - `tunnel`:    CONNECT tunnel.test:443 through llmtap, TLS end to end with the mock (not recorded).
//!
//! Warm: one keep-alive connection per target, requests interleaved round-robin so
//! the targets share the machine's noise; latency p50/p99 and the difference to
//! direct. Cold: a new connection (and CONNECT and TLS handshake) per request.
//! CPU: llmtap's user+system CPU (all threads, writer included) per request, each
//! target measured in a block of its own.
//!
//! Usage: intercept-bench --llmtap target/release/llmtap [--requests 3000]
//!        [--cold-requests 500] [--body-size 1024]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmtap_bench::{die, read_cpu_seconds, Args, Histogram};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Direct,
    BaseUrl,
    Intercept,
    Tunnel,
}

const TARGETS: [Target; 4] = [
    Target::Direct,
    Target::BaseUrl,
    Target::Intercept,
    Target::Tunnel,
];

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::BaseUrl => "base-url",
            Target::Intercept => "intercept",
            Target::Tunnel => "tunnel",
        }
    }
}

struct Setup {
    mock: SocketAddr,
    proxy: SocketAddr,
    mock_roots: Arc<rustls::ClientConfig>,
    llmtap_roots: Arc<rustls::ClientConfig>,
    body: Bytes,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.unwrap_or_else(|e| die(&format!("bad CA PEM: {e}"))))
            .unwrap_or_else(|e| die(&format!("bad CA: {e}")));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| die(&e.to_string()))
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn connect_through(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy)
        .await
        .unwrap_or_else(|e| die(&e.to_string()));
    let _ = stream.set_nodelay(true);
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap_or_else(|e| die(&e.to_string()));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .await
            .unwrap_or_else(|e| fail(&format!("CONNECT {target}: {e}")));
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        fail(&format!(
            "CONNECT {target}: {}",
            String::from_utf8_lossy(&head)
        ));
    }
    stream
}

async fn handshake<S>(io: S) -> Sender
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap_or_else(|e| fail(&format!("handshake: {e}")));
    tokio::spawn(async move {
        // Errors surface on the request; a peer closing at the end is not one.
        let _ = connection.await;
    });
    sender
}

async fn tls(
    config: &Arc<rustls::ClientConfig>,
    name: &str,
    stream: TcpStream,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from(name.to_string()).unwrap(), stream)
        .await
        .unwrap_or_else(|e| fail(&format!("TLS to {name}: {e}")))
}

async fn open(setup: &Setup, target: Target) -> Sender {
    match target {
        Target::Direct => {
            let tcp = TcpStream::connect(setup.mock).await.unwrap();
            let _ = tcp.set_nodelay(true);
            handshake(tls(&setup.mock_roots, "api.openai.com", tcp).await).await
        }
        Target::BaseUrl => {
            let tcp = TcpStream::connect(setup.proxy).await.unwrap();
            let _ = tcp.set_nodelay(true);
            handshake(tcp).await
        }
        Target::Intercept => {
            let tcp = connect_through(setup.proxy, "api.openai.com:443").await;
            handshake(tls(&setup.llmtap_roots, "api.openai.com", tcp).await).await
        }
        Target::Tunnel => {
            let tcp = connect_through(setup.proxy, "tunnel.test:443").await;
            handshake(tls(&setup.mock_roots, "tunnel.test", tcp).await).await
        }
    }
}

async fn send(setup: &Setup, sender: &mut Sender, target: Target) {
    let (path, host) = match target {
        Target::BaseUrl => ("/openai/v1/chat/completions", "127.0.0.1"),
        Target::Tunnel => ("/v1/chat/completions", "tunnel.test"),
        _ => ("/v1/chat/completions", "api.openai.com"),
    };
    let request = http::Request::post(path)
        .header("host", host)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench-0000000000000000")
        .body(Full::new(setup.body.clone()))
        .unwrap();
    sender
        .ready()
        .await
        .unwrap_or_else(|e| fail(&format!("{}: {e:?}", target.name())));
    let response = sender
        .send_request(request)
        .await
        .unwrap_or_else(|e| fail(&format!("{}: {e:?}", target.name())));
    if response.status() != 200 {
        fail(&format!("{}: status {}", target.name(), response.status()));
    }
    let _ = response.into_body().collect().await;
}

async fn mock_provider(pki: &Pki, response_bytes: usize) -> SocketAddr {
    let certs = vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let content = "x".repeat(response_bytes.saturating_sub(240));
    let body = Bytes::from(format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":250,"completion_tokens":200,"total_tokens":450}}}}"#
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let body = body.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        let mut response = http::Response::new(Full::new(body));
                        response.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// llmtap's pid, killed by `fail` so a failed run leaves no server behind.
static LLMTAP_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn fail(message: &str) -> ! {
    let pid = LLMTAP_PID.load(std::sync::atomic::Ordering::Relaxed);
    if pid != 0 {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
    die(message)
}

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "intercept-bench CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params = rcgen::CertificateParams::new(vec![
        "api.openai.com".to_string(),
        "tunnel.test".to_string(),
    ])
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn line(mode: &str, target: Target, h: &Histogram, direct: Option<&Histogram>, cpu_us: f64) {
    let (p50, p99) = (h.quantile_us(0.5), h.quantile_us(0.99));
    let diff = match direct {
        Some(d) if target != Target::Direct => format!(
            "{:+8.3} / {:+8.3}",
            (p50 as f64 - d.quantile_us(0.5) as f64) / 1000.0,
            (p99 as f64 - d.quantile_us(0.99) as f64) / 1000.0
        ),
        _ => format!("{:>19}", "-"),
    };
    println!(
        "{mode:<5} {:<10} {:>8.3} {:>8.3}   {diff}   {cpu_us:>8.0}",
        target.name(),
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
    );
}

fn main() {
    let args = Args::parse(&[]);
    let llmtap = args
        .get("llmtap", None)
        .unwrap_or_else(|| die("--llmtap PATH (the release binary) is required"));
    let requests: usize = args.num("requests", None, 3000);
    let cold_requests: usize = args.num("cold-requests", None, 500);
    let body_size: usize = args.num("body-size", None, 1024);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let pki = pki();
        let mock = mock_provider(&pki, body_size).await;
        let dir = std::env::temp_dir().join(format!("intercept-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("mock-ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let config = dir.join("llmtap.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\nextra_ca_file = \"{}\"\n[server.resolve]\n\"api.openai.com:443\" = \"{mock}\"\n\"tunnel.test:443\" = \"{mock}\"\n",
                ca_file.display()
            ),
        )
        .unwrap();
        let data = dir.join("data");
        let ca_path = std::process::Command::new(&llmtap)
            .args(["ca", "path", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap_or_else(|e| die(&format!("{llmtap}: {e}")));
        let ca_path = String::from_utf8_lossy(&ca_path.stdout).trim().to_string();
        let llmtap_ca = std::fs::read(&ca_path).unwrap_or_else(|e| die(&format!("{ca_path}: {e}")));
        let mut child = std::process::Command::new(&llmtap)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .env("LLMTAP_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("llmtap.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| die(&format!("{llmtap}: {e}")));
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let proxy: SocketAddr = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| fail(&format!("unexpected first line: {first}")));
        let pid = child.id();
        LLMTAP_PID.store(pid, std::sync::atomic::Ordering::Relaxed);
        let content = "y".repeat(body_size.saturating_sub(100));
        let setup = Setup {
            mock,
            proxy,
            mock_roots: client_config(pki.ca_pem.as_bytes()),
            llmtap_roots: client_config(&llmtap_ca),
            body: Bytes::from(format!(
                r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{content}"}}]}}"#
            )),
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        eprintln!("llmtap at {proxy}, mock at {mock}; warming up");
        println!(
            "# {} requests warm (interleaved), {} cold per target; ~{} B request and response; llmtap pid {pid}",
            requests, cold_requests, body_size
        );
        println!("mode  target      p50 ms   p99 ms   - direct p50 / p99 ms   CPU µs/req");

        // Warm latency, interleaved.
        let mut senders = Vec::new();
        for target in TARGETS {
            let mut sender = open(&setup, target).await;
            for _ in 0..50 {
                send(&setup, &mut sender, target).await;
            }
            senders.push(sender);
        }
        eprintln!("warm latency");
        let mut warm: Vec<Histogram> = TARGETS.iter().map(|_| Histogram::new()).collect();
        for _ in 0..requests {
            for (i, target) in TARGETS.iter().enumerate() {
                let start = Instant::now();
                send(&setup, &mut senders[i], *target).await;
                warm[i].record(start.elapsed());
            }
        }
        // CPU per request, warm, one target at a time.
        let mut warm_cpu = Vec::new();
        for (i, target) in TARGETS.iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = read_cpu_seconds(pid).unwrap_or(0.0);
            for _ in 0..requests {
                send(&setup, &mut senders[i], *target).await;
            }
            // Let the writer finish what these requests gave it.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = read_cpu_seconds(pid).unwrap_or(0.0);
            warm_cpu.push((after - before) * 1e6 / requests as f64);
        }
        for (i, target) in TARGETS.iter().enumerate() {
            line("warm", *target, &warm[i], Some(&warm[0]), warm_cpu[i]);
        }

        // Cold: a new connection, CONNECT and TLS handshake per request.
        let mut cold: Vec<Histogram> = TARGETS.iter().map(|_| Histogram::new()).collect();
        let mut cold_cpu = Vec::new();
        for (i, target) in TARGETS.iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = read_cpu_seconds(pid).unwrap_or(0.0);
            for _ in 0..cold_requests {
                let start = Instant::now();
                let mut sender = open(&setup, *target).await;
                send(&setup, &mut sender, *target).await;
                cold[i].record(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = read_cpu_seconds(pid).unwrap_or(0.0);
            cold_cpu.push((after - before) * 1e6 / cold_requests as f64);
        }
        for (i, target) in TARGETS.iter().enumerate() {
            line("cold", *target, &cold[i], Some(&cold[0]), cold_cpu[i]);
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    });
}
