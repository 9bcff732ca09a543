//! Test harness: a scriptable mock upstream, an in-process llmtap, and small HTTP helpers.
//! Everything binds 127.0.0.1:0.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use llmtap::config::{Config, Overrides, RawConfig};
use llmtap::record::{CallRecord, InvocationRecord};
use llmtap::server::Running;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One step of a scripted response body.
#[derive(Clone, Debug)]
pub enum Step {
    Data(Bytes),
    Sleep(Duration),
    /// Wait until the test sends on the mock's release channel.
    Hold,
    /// Fail the body (the connection is reset mid-response).
    Reset,
}

#[derive(Clone, Debug)]
pub struct MockResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub steps: Vec<Step>,
    /// Wait this long before sending the response head.
    pub delay_head: Duration,
}

impl MockResponse {
    pub fn json(status: u16, body: &str) -> Self {
        MockResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            steps: vec![Step::Data(Bytes::copy_from_slice(body.as_bytes()))],
            delay_head: Duration::ZERO,
        }
    }

    pub fn sse(events: &[&str], pause: Duration) -> Self {
        let mut steps = Vec::new();
        for e in events {
            steps.push(Step::Data(Bytes::copy_from_slice(e.as_bytes())));
            if !pause.is_zero() {
                steps.push(Step::Sleep(pause));
            }
        }
        MockResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            steps,
            delay_head: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What the mock saw of one request.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    #[allow(dead_code)]
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    #[allow(dead_code)]
    pub body: Bytes,
}

type Responder = dyn Fn(&SeenRequest) -> MockResponse + Send + Sync;

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    release: Arc<tokio::sync::Notify>,
}

impl MockUpstream {
    pub async fn start(
        responder: impl Fn(&SeenRequest) -> MockResponse + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_tls(responder, None).await
    }

    pub async fn start_with_tls(
        responder: impl Fn(&SeenRequest) -> MockResponse + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(tokio::sync::Notify::new());
        let responder: Arc<Responder> = Arc::new(responder);
        let (seen2, release2) = (seen.clone(), release.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, release, responder, tls) = (
                    seen2.clone(),
                    release2.clone(),
                    responder.clone(),
                    tls.clone(),
                );
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, release, responder) =
                            (seen.clone(), release.clone(), responder.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let request = SeenRequest {
                                method: parts.method.to_string(),
                                path_and_query: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: parts.headers,
                                body,
                            };
                            let script = responder(&request);
                            seen.lock().unwrap().push(request);
                            if !script.delay_head.is_zero() {
                                tokio::time::sleep(script.delay_head).await;
                            }
                            let (tx, rx) = mpsc::channel(64);
                            tokio::spawn(async move {
                                for step in script.steps {
                                    match step {
                                        Step::Data(d) => {
                                            if tx.send(Ok(d)).await.is_err() {
                                                return;
                                            }
                                        }
                                        Step::Sleep(d) => tokio::time::sleep(d).await,
                                        Step::Hold => release.notified().await,
                                        Step::Reset => {
                                            let _ =
                                                tx.send(Err(BoxError::from("mock reset"))).await;
                                            return;
                                        }
                                    }
                                }
                            });
                            let mut response = Response::new(ChannelBody { rx });
                            *response.status_mut() = StatusCode::from_u16(script.status).unwrap();
                            for (k, v) in script.headers {
                                response.headers_mut().append(
                                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    http::HeaderValue::from_str(&v).unwrap(),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(s), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        MockUpstream {
            addr,
            seen,
            release,
        }
    }

    pub fn release(&self) {
        self.release.notify_waiters();
        self.release.notify_one();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn last_seen(&self) -> SeenRequest {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("mock saw no request")
    }
}

pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "llmtap-test-{tag}-{}-{}",
            std::process::id(),
            llmtap::ids::new_id("", llmtap::timefmt::now_unix_us())
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config for tests: ephemeral ports, the given data dir, and extra TOML.
pub fn test_config(data_dir: &Path, extra_toml: &str) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 3000\n{extra_toml}"
    );
    RawConfig::from_toml(&text)
        .unwrap()
        .validate(&Overrides {
            data_dir: Some(data_dir.to_path_buf()),
            ..Overrides::default()
        })
        .unwrap()
}

/// The store engine a test runs on (see `on_both_engines!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sled,
    Postgres,
}

tokio::task_local! {
    /// The running test's engine; sled when a test sets none.
    pub static ENGINE: Engine;
}

/// Puts `config` on the running test's engine: sled in its data directory, or a
/// fresh database on the tests' PostgreSQL (`pg.rs`).
pub async fn on_test_engine(config: &mut Config, tag: &str) {
    if ENGINE.try_with(|e| *e) != Ok(Engine::Postgres) {
        return;
    }
    let db = super::pg::fresh_db(tag).await;
    let url = RawConfig::from_toml(&format!("[store]\nurl = \"{}\"", db.url()))
        .unwrap()
        .validate(&Overrides::default())
        .map(|c| match c.engine {
            llmtap::config::StoreEngine::Postgres(pg) => pg,
            llmtap::config::StoreEngine::Sled => unreachable!(),
        })
        .unwrap();
    config.engine = llmtap::config::StoreEngine::Postgres(url);
}

/// Runs each listed test of the calling module on sled (`module::on_sled::name`) and
/// on PostgreSQL (`module::on_postgres::name`): one test, both engines, the same
/// assertions. The tests start llmtap with a config passed through `on_test_engine`.
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test]
                async fn $test() {
                    $crate::it::util::ENGINE
                        .scope($crate::it::util::Engine::Sled, super::$test())
                        .await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    $crate::it::util::ENGINE
                        .scope($crate::it::util::Engine::Postgres, super::$test())
                        .await
                }
            )*
        }
    };
}
pub(crate) use on_both_engines;

pub fn provider_toml(name: &str, kind: &str, base_url: &str) -> String {
    format!("[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{base_url}\"\n")
}

pub async fn start_llmtap(config: Config) -> Running {
    llmtap::server::start(config).await.unwrap()
}

pub type TestClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> TestClient {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    #[allow(dead_code)]
    pub body: Bytes,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn call_id(&self) -> String {
        self.header("x-llmtap-call-id")
            .expect("no call id")
            .to_string()
    }
}

pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

pub async fn post_json(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(addr, "POST", path, &all, body).await
}

/// Polls the read API until the call is stored (the writer is asynchronous).
pub async fn wait_call(running: &Running, id: &str) -> CallRecord {
    for _ in 0..400 {
        if let Some(call) = running.store.get_call(id).unwrap() {
            return call;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("call {id} was never recorded");
}

pub async fn wait_records(running: &Running, count: usize) {
    for _ in 0..500 {
        if running.store.call_count() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {count} records, store has {}",
        running.store.call_count()
    );
}

pub async fn api_get(running: &Running, path: &str) -> Got {
    send(running.api_addr, "GET", path, &[], "").await
}

pub fn invocation(running: &Running, id: &str) -> Option<InvocationRecord> {
    running.store.get_invocation(id).unwrap()
}

/// Polls until the invocation has rolled up `rounds` rounds: the writer stores a
/// batch's calls before its invocations, so a stored call can be seen a moment
/// before its invocation is updated.
pub async fn wait_invocation(running: &Running, id: &str, rounds: u32) -> InvocationRecord {
    for _ in 0..400 {
        if let Some(inv) = invocation(running, id).filter(|inv| inv.rounds >= rounds) {
            return inv;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("invocation {id} never reached {rounds} rounds");
}

/// Fixture exchanges shipped in tests/fixtures/exchanges.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/exchanges")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A fixture's request URL, without the `#stream` marker some recordings carry.
pub fn fixture_url(fx: &serde_json::Value) -> http::Uri {
    fx["request"]["url"]
        .as_str()
        .unwrap()
        .replace("#stream", "")
        .parse()
        .unwrap()
}

/// A fixture's recorded response headers, without the framing ones (the mock frames
/// its answer itself).
pub fn fixture_response_headers(fx: &serde_json::Value) -> Vec<(String, String)> {
    fx["response"]["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .filter(|(k, _)| {
                    k != "connection" && k != "content-length" && k != "transfer-encoding"
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A fixture's recorded answer as the mock sends it (an SSE answer event by event),
/// its status replaced when `status` is given and `extra_headers` replacing recorded
/// headers of the same name.
pub fn fixture_reply(
    fx: &serde_json::Value,
    status: Option<u16>,
    extra_headers: &[(&str, &str)],
) -> MockResponse {
    let response = &fx["response"];
    let body = response["body"].as_str().unwrap_or_default().to_string();
    let mut headers = fixture_response_headers(fx);
    for (k, v) in extra_headers {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        headers.push((k.to_string(), v.to_string()));
    }
    let is_sse = headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.contains("event-stream"));
    let steps = if is_sse {
        sse_events(&body)
            .into_iter()
            .map(|e| Step::Data(Bytes::from(e)))
            .collect()
    } else {
        vec![Step::Data(Bytes::from(body))]
    };
    MockResponse {
        status: status.unwrap_or(response["status"].as_u64().unwrap_or(200) as u16),
        headers,
        steps,
        delay_head: Duration::from_millis(5),
    }
}

/// An 8-bit RGB PNG of `w`×`h` pixels, each painted by `rgb(x, y)`.
pub fn rgb_png(w: u32, h: u32, rgb: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    use std::io::Write;
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // no filter
        for x in 0..w {
            raw.extend_from_slice(&rgb(x, y));
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    let data = z.finish().unwrap();
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], body: &[u8]| {
        png.extend_from_slice(&(body.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(body);
        png.extend_from_slice(kind);
        png.extend_from_slice(body);
        png.extend_from_slice(&crc.finalize().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &data);
    chunk(b"IEND", &[]);
    png
}

/// Splits an SSE body into its events (each with its blank-line terminator).
pub fn sse_events(body: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut rest = body;
    loop {
        let cut = [
            rest.find("\n\n").map(|i| i + 2),
            rest.find("\r\n\r\n").map(|i| i + 4),
        ]
        .into_iter()
        .flatten()
        .min();
        match cut {
            Some(i) => {
                events.push(rest[..i].to_string());
                rest = &rest[i..];
            }
            None => {
                if !rest.is_empty() {
                    events.push(rest.to_string());
                }
                return events;
            }
        }
    }
}

/// One unlabelled value from the read API's `/metrics`, if present.
pub async fn metric(api: SocketAddr, name: &str) -> Option<u64> {
    let text =
        String::from_utf8(send(api, "GET", "/metrics", &[], "").await.body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// A CA made in the test and a server certificate it signed, for 127.0.0.1 and
/// localhost (the TLS tests' upstream, the test PostgreSQL).
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new(ca_name: &str) -> TestPki {
        TestPki::for_hosts(ca_name, &["localhost", "127.0.0.1"])
    }

    /// A CA and a server certificate for these names (the intercept tests' upstream
    /// poses as the providers' real hosts).
    pub fn for_hosts(ca_name: &str, hosts: &[&str]) -> TestPki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let params =
            rcgen::CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// `text` percent-encoded as one URL query value or path segment.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
