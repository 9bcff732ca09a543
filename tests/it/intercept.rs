//! llmtap as an `HTTPS_PROXY` (issue 37): real clients (curl, reqwest, the OpenAI and
//! Anthropic Python SDKs) trust llmtap's local CA, CONNECT through llmtap to a TLS mock
//! upstream that poses as the providers' hosts (reached through `[server.resolve]`,
//! trusted through `server.extra_ca_file`), and each call is recorded exactly as the
//! same exchange sent to the base-URL path. Hosts not intercepted are tunnelled
//! untouched; CONNECT to loopback, private addresses and other ports is refused.

use super::util::*;
use llmtap::record::CallRecord;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OPENAI_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
const OPENAI_SSE: &[&str] = &[
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n",
    "data: [DONE]\n\n",
];
const ANTHROPIC_JSON: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi there"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":3}}"#;
const ANTHROPIC_SSE: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":3}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

/// The upstream's names: the providers' real hosts, and one host llmtap does not intercept.
const UPSTREAM_HOSTS: &[&str] = &["api.openai.com", "api.anthropic.com", "upstream.test"];

fn scripted(request: &SeenRequest) -> MockResponse {
    let streamed = String::from_utf8_lossy(&request.body).contains("\"stream\":true")
        || String::from_utf8_lossy(&request.body).contains("\"stream\": true");
    let path = request.path_and_query.as_str();
    let response = if path.contains("/chat/completions") {
        if streamed {
            MockResponse::sse(OPENAI_SSE, Duration::from_millis(5))
        } else {
            MockResponse::json(200, OPENAI_JSON)
        }
    } else if path.contains("/v1/messages") {
        if streamed {
            MockResponse::sse(ANTHROPIC_SSE, Duration::from_millis(5))
        } else {
            MockResponse::json(200, ANTHROPIC_JSON)
        }
    } else {
        MockResponse::json(200, r#"{"ok":true}"#)
    };
    response
        .header("x-request-id", "req_fixed")
        .header("anthropic-ratelimit-requests-remaining", "99")
}

fn tls_acceptor(pki: &TestPki) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let certs =
        vec![rustls_pki_types::CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let mut config =
        rustls::ServerConfig::builder_with_provider(llmtap::upstream::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// llmtap with the mock upstream behind `[server.resolve]`, and the files clients need.
struct Rig {
    running: llmtap::server::Running,
    mock: MockUpstream,
    pki: TestPki,
    /// llmtap's CA certificate (what `llmtap ca path` prints).
    llmtap_ca: PathBuf,
    /// The test CA that signed the upstream's certificate.
    upstream_ca: PathBuf,
    _dirs: (TempDir, TempDir),
}

impl Rig {
    async fn start(extra_toml: &str) -> Rig {
        Rig::start_with("", extra_toml).await
    }

    /// `server_toml`: more `[server]` keys; `extra_toml`: more tables.
    async fn start_with(server_toml: &str, extra_toml: &str) -> Rig {
        let pki = TestPki::for_hosts("intercept test CA", UPSTREAM_HOSTS);
        let mock = MockUpstream::start_with_tls(scripted, Some(tls_acceptor(&pki))).await;
        let data = TempDir::new("intercept");
        let files = TempDir::new("intercept-pki");
        let upstream_ca = files.path().join("upstream-ca.pem");
        std::fs::write(&upstream_ca, &pki.ca_pem).unwrap();
        let port = mock.addr.port();
        let toml = format!(
            "extra_ca_file = \"{}\"\n{server_toml}\n[server.resolve]\n\"api.openai.com:443\" = \"127.0.0.1:{port}\"\n\"api.anthropic.com:443\" = \"127.0.0.1:{port}\"\n\"upstream.test:443\" = \"127.0.0.1:{port}\"\n{extra_toml}",
            upstream_ca.display()
        );
        let config = test_config(data.path(), &toml);
        // `llmtap ca path`: the CA exists before a client is told to trust it.
        llmtap::intercept::ca::LocalCa::open_or_create(data.path(), None).unwrap();
        let llmtap_ca = llmtap::intercept::ca::cert_path(data.path());
        let running = start_llmtap(config).await;
        Rig {
            running,
            mock,
            pki,
            llmtap_ca,
            upstream_ca,
            _dirs: (data, files),
        }
    }

    fn proxy_url(&self) -> String {
        format!("http://{}", self.running.proxy_addr)
    }
}

/// A record without what differs between any two calls (ids, times, the mock's `date`).
fn comparable(record: &CallRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(record).unwrap();
    let object = value.as_object_mut().unwrap();
    for volatile in [
        "id",
        "invocation_id",
        "started_at",
        "ended_at",
        "started_at_us",
        "latency_ms",
        "ttft_ms",
        "first_byte_ms",
        "stored_at",
    ] {
        object.remove(volatile);
    }
    if let Some(headers) = object
        .get_mut("response_headers")
        .and_then(|h| h.as_object_mut())
    {
        headers.remove("date");
    }
    // A call that names no session gets its conversation's, named after its run.
    if let Some(meta) = value["metadata"].as_object_mut() {
        if meta["session_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("conv_"))
        {
            meta.remove("session_id");
        }
    }
    value
}

fn assert_same_record(proxied: &CallRecord, base: &CallRecord, what: &str) {
    let (p, b) = (comparable(proxied), comparable(base));
    assert_eq!(
        p,
        b,
        "{what}: the proxied record differs from the base-URL one\nproxied: {}\nbase:    {}",
        serde_json::to_string_pretty(&p).unwrap(),
        serde_json::to_string_pretty(&b).unwrap()
    );
}

/// Runs curl with no proxy settings from the environment; returns the call id it saw.
fn curl(args: &[&str]) -> (String, String) {
    // llmtap runs on this test's runtime: block in place, so its tasks move on.
    let out = tokio::task::block_in_place(|| {
        Command::new("curl")
            .args(["-sS", "-i", "--max-time", "20"])
            .args(args)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-llmtap-call-id")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no x-llmtap-call-id in curl's output:\n{text}"));
    (id, text)
}

fn openai_body(stream: bool) -> String {
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Say hi"}}],"stream":{stream}}}"#
    )
}

fn anthropic_body(stream: bool) -> String {
    format!(
        r#"{{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{{"role":"user","content":"Say hi"}}],"stream":{stream}}}"#
    )
}

/// (proxied URL, base-URL path, auth header, body for `stream`, more curl arguments)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    fn(bool) -> String,
    &'static [&'static str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy_is_recorded_as_on_the_base_url_path() {
    let rig = Rig::start("").await;
    let proxy = rig.proxy_url();
    let ca = rig.llmtap_ca.display().to_string();
    let base = format!("http://{}", rig.running.proxy_addr);
    let cases: &[Case] = &[
        (
            "https://api.openai.com/v1/chat/completions",
            "/openai/v1/chat/completions",
            "authorization: Bearer sk-test-secret-1234",
            openai_body,
            &["-H", "x-llmtap-agent: curl-agent"],
        ),
        (
            "https://api.anthropic.com/v1/messages",
            "/anthropic/v1/messages",
            "x-api-key: sk-ant-test-secret-5678",
            anthropic_body,
            &["-H", "anthropic-version: 2023-06-01"],
        ),
    ];
    let mut proxied_ids = Vec::new();
    for (url, base_path, auth, body, extra) in cases {
        for stream in [false, true] {
            for http in ["--http1.1", "--http2"] {
                let body = body(stream);
                let mut common = vec![
                    "-H",
                    "content-type: application/json",
                    "-H",
                    auth,
                    "-H",
                    "user-agent: agent-under-test/1.0",
                    "-d",
                    &body,
                ];
                common.extend_from_slice(extra);
                let mut proxied_args = vec!["--proxy", &proxy, "--cacert", &ca, http, *url];
                proxied_args.extend_from_slice(&common);
                let (proxied_id, proxied_text) = curl(&proxied_args);
                // The response reached the client whole, and the grouping header was
                // not forwarded upstream.
                assert!(proxied_text.contains("Hi"), "{proxied_text}");
                let base_url = format!("{base}{base_path}");
                let mut base_args = vec!["--http1.1", base_url.as_str()];
                base_args.extend_from_slice(&common);
                let (base_id, _) = curl(&base_args);
                let proxied = wait_call(&rig.running, &proxied_id).await;
                let base_record = wait_call(&rig.running, &base_id).await;
                assert_eq!(proxied.stream, stream);
                assert!(proxied.usage.input_tokens > Some(0), "{proxied:?}");
                assert!(proxied.cost_usd.is_some(), "priced: {proxied:?}");
                assert_eq!(proxied.upstream_host, url.split('/').nth(2).unwrap());
                assert_eq!(
                    proxied.client.user_agent.as_deref(),
                    Some("agent-under-test/1.0")
                );
                assert_eq!(proxied.client.ip.as_deref(), Some("127.0.0.1"));
                assert!(
                    !proxied
                        .request_headers
                        .values()
                        .any(|v| v.contains("secret")),
                    "secrets redacted: {:?}",
                    proxied.request_headers
                );
                assert_same_record(
                    &proxied,
                    &base_record,
                    &format!("{url} {http} stream={stream}"),
                );
                proxied_ids.push(proxied_id);
            }
        }
    }
    // x-llmtap-* headers are read and removed on this path too.
    let seen = rig.mock.seen.lock().unwrap().clone();
    assert!(seen
        .iter()
        .all(|r| !r.headers.contains_key("x-llmtap-agent")));
    assert!(seen
        .iter()
        .all(|r| !r.headers.contains_key("proxy-authorization")));
    let first = wait_call(&rig.running, &proxied_ids[0]).await;
    assert_eq!(first.metadata.agent.as_deref(), Some("curl-agent"));
    assert_eq!(first.provider, "openai");
    assert_eq!(first.model.as_deref(), Some("gpt-4o-mini"));
    rig.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn reqwest_with_a_proxy_is_recorded_as_on_the_base_url_path() {
    let rig = Rig::start("").await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&rig.llmtap_ca).unwrap()).unwrap();
    let proxied_client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(rig.proxy_url()).unwrap())
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let base_client = reqwest::Client::builder().no_proxy().build().unwrap();
    for stream in [false, true] {
        let send = |client: &reqwest::Client, url: String| {
            client
                .post(url)
                .header("content-type", "application/json")
                .header("authorization", "Bearer sk-test-reqwest-0000")
                .header("x-llmtap-invocation-id", format!("run-reqwest-{stream}"))
                .body(openai_body(stream))
                .send()
        };
        let proxied = send(
            &proxied_client,
            "https://api.openai.com/v1/chat/completions".into(),
        )
        .await
        .unwrap();
        assert_eq!(proxied.status(), 200);
        let proxied_id = proxied.headers()["x-llmtap-call-id"]
            .to_str()
            .unwrap()
            .to_string();
        let text = proxied.text().await.unwrap();
        assert!(text.contains("Hi"), "{text}");
        let base = send(
            &base_client,
            format!(
                "http://{}/openai/v1/chat/completions",
                rig.running.proxy_addr
            ),
        )
        .await
        .unwrap();
        let base_id = base.headers()["x-llmtap-call-id"]
            .to_str()
            .unwrap()
            .to_string();
        let _ = base.text().await.unwrap();
        let proxied = wait_call(&rig.running, &proxied_id).await;
        let base = wait_call(&rig.running, &base_id).await;
        assert_eq!(proxied.invocation_id, format!("run-reqwest-{stream}"));
        // Rounds count on both paths alike: 1 through the proxy, 2 through the base URL.
        assert_eq!((proxied.round, base.round), (1, 2));
        let (mut p, mut b) = (proxied.clone(), base.clone());
        p.round = 0;
        b.round = 0;
        assert_same_record(&p, &b, &format!("reqwest stream={stream}"));
    }
    rig.running.shutdown().await.unwrap();
}

const PYTHON_CLIENTS: &str = r#"
import os, sys
import openai, anthropic
mode = sys.argv[1]
if mode == "proxy":
    oa = openai.OpenAI(api_key="sk-test-python-1111", max_retries=0)
    an = anthropic.Anthropic(api_key="sk-ant-test-python-2222", max_retries=0)
else:
    base = sys.argv[2]
    oa = openai.OpenAI(api_key="sk-test-python-1111", base_url=base + "/openai/v1", max_retries=0)
    an = anthropic.Anthropic(api_key="sk-ant-test-python-2222", base_url=base + "/anthropic", max_retries=0)
msgs = [{"role": "user", "content": "Say hi"}]
r = oa.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=msgs)
assert r.parse().choices[0].message.content == "Hi there"
print(r.headers["x-llmtap-call-id"])
with oa.chat.completions.with_streaming_response.create(model="gpt-4o-mini", messages=msgs, stream=True) as r:
    text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
    assert text == "Hi there", text
    print(r.headers["x-llmtap-call-id"])
r = an.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=16, messages=msgs)
assert r.parse().content[0].text == "Hi there"
print(r.headers["x-llmtap-call-id"])
with an.messages.with_streaming_response.create(model="claude-haiku-4-5", max_tokens=16, messages=msgs, stream=True) as r:
    text = "".join(e.delta.text for e in r.parse() if e.type == "content_block_delta")
    assert text == "Hi there", text
    print(r.headers["x-llmtap-call-id"])
"#;

/// The official OpenAI and Anthropic Python SDKs (httpx honours `HTTPS_PROXY` and
/// `SSL_CERT_FILE`), installed by `.ci/run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdks_through_https_proxy_are_recorded_as_on_the_base_url_path() {
    let rig = Rig::start("").await;
    let dir = TempDir::new("python-sdks");
    let script = dir.path().join("clients.py");
    std::fs::write(&script, PYTHON_CLIENTS).unwrap();
    let run = |args: Vec<String>, proxied: bool| {
        let mut command = Command::new("python3");
        command.arg(&script).args(&args);
        for name in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
            "SSL_CERT_FILE",
            "OPENAI_BASE_URL",
            "ANTHROPIC_BASE_URL",
        ] {
            command.env_remove(name);
        }
        if proxied {
            // What `llmtap env` prints for these clients (SSL_CERT_FILE replaces the
            // roots; llmtap's CA is all these calls need).
            command
                .env("HTTPS_PROXY", rig.proxy_url())
                .env("SSL_CERT_FILE", &rig.llmtap_ca);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "python clients ({args:?}) failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let proxied_ids = tokio::task::block_in_place(|| run(vec!["proxy".into()], true));
    let base_ids = tokio::task::block_in_place(|| {
        run(
            vec!["base".into(), format!("http://{}", rig.running.proxy_addr)],
            false,
        )
    });
    assert_eq!(proxied_ids.len(), 4);
    assert_eq!(base_ids.len(), 4);
    for (what, (p, b)) in ["openai", "openai stream", "anthropic", "anthropic stream"]
        .iter()
        .zip(proxied_ids.iter().zip(&base_ids))
    {
        let proxied = wait_call(&rig.running, p).await;
        let base = wait_call(&rig.running, b).await;
        assert!(proxied.usage.output_tokens > Some(0), "{what}: {proxied:?}");
        assert_same_record(&proxied, &base, what);
    }
    rig.running.shutdown().await.unwrap();
}

/// Sends `CONNECT target` and reads the answer's head; the stream is the tunnel.
async fn connect(proxy: SocketAddr, target: &str, headers: &str) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{headers}\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read_exact(&mut byte).await.is_err() {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    // Read the (small) body of a refusal so the next assertion sees what it said.
    (status, stream)
}

fn client_tls(ca_pem: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(llmtap::upstream::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn http1_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut text = String::new();
    // One small response (chunked): read until its text has arrived.
    while !text.contains("Hi there") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    text
}

#[tokio::test]
async fn other_hosts_are_tunnelled_untouched_and_not_recorded() {
    // A short client idle deadline: a tunnel must outlive it while nothing moves.
    let rig = Rig::start_with("client_idle_timeout_ms = 300", "").await;
    let (status, tunnel) = connect(rig.running.proxy_addr, "upstream.test:443", "").await;
    assert_eq!(status, 200);
    // This client trusts only the upstream's CA, not llmtap's: the handshake succeeds,
    // and the certificate it sees is the upstream's own, byte for byte.
    let connector = client_tls(&rig.upstream_ca, &[b"http/1.1"]);
    let name = rustls_pki_types::ServerName::try_from("upstream.test").unwrap();
    let mut tls = connector
        .connect(name, tunnel)
        .await
        .expect("upstream's own TLS");
    let seen = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let upstream_cert: rustls_pki_types::CertificateDer =
        rustls_pki_types::pem::PemObject::from_pem_slice(rig.pki.cert_pem.as_bytes()).unwrap();
    assert_eq!(seen, upstream_cert);
    // Silent for longer than the idle deadline (a model thinking): the tunnel stays.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let response = http1_over(
        &mut tls,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: upstream.test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
            openai_body(false).len(),
            openai_body(false)
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        !response.to_ascii_lowercase().contains("x-llmtap-call-id"),
        "{response}"
    );
    assert_eq!(rig.mock.seen.lock().unwrap().len(), 1);

    // An intercepted host, to a client that does not trust llmtap's CA (or pins the
    // provider's certificate): the handshake fails and nothing is recorded.
    let (status, tunnel) = connect(rig.running.proxy_addr, "api.openai.com:443", "").await;
    assert_eq!(status, 200);
    let name = rustls_pki_types::ServerName::try_from("api.openai.com").unwrap();
    assert!(connector.connect(name, tunnel).await.is_err());

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.running.store.call_count(), 0);
    rig.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn connect_to_loopback_private_addresses_and_other_ports_is_refused() {
    let rig = Rig::start("[intercept]\nports = [443, 22]\n").await;
    let proxy = rig.running.proxy_addr;
    // Port 25 is not in [intercept] ports.
    assert_eq!(connect(proxy, "smtp.example.com:25", "").await.0, 403);
    // Port 22 is, but 127.0.0.1 is loopback and not allowed by name.
    assert_eq!(connect(proxy, "127.0.0.1:22", "").await.0, 403);
    assert_eq!(connect(proxy, "127.0.0.1:443", "").await.0, 403);
    // A private address, and a name that resolves to loopback.
    assert_eq!(connect(proxy, "10.1.2.3:443", "").await.0, 403);
    assert_eq!(connect(proxy, "192.168.0.1:443", "").await.0, 403);
    assert_eq!(connect(proxy, "169.254.169.254:443", "").await.0, 403);
    assert_eq!(connect(proxy, "[::1]:443", "").await.0, 403);
    assert_eq!(connect(proxy, "localhost:443", "").await.0, 403);
    // Allowed by name in [server.resolve], loopback included.
    assert_eq!(connect(proxy, "upstream.test:443", "").await.0, 200);
    rig.running.shutdown().await.unwrap();

    // With every host intercepted, the same rules hold before anything is decrypted,
    // and a host no provider serves is recorded as a plain HTTP call.
    let rig = Rig::start("[intercept]\nhosts = [\"*\"]\n").await;
    let proxy = rig.running.proxy_addr;
    assert_eq!(connect(proxy, "127.0.0.1:443", "").await.0, 403);
    assert_eq!(connect(proxy, "10.1.2.3:443", "").await.0, 403);
    assert_eq!(connect(proxy, "localhost:443", "").await.0, 403);
    let (status, tunnel) = connect(proxy, "upstream.test:443", "").await;
    assert_eq!(status, 200);
    let name = rustls_pki_types::ServerName::try_from("upstream.test").unwrap();
    let mut tls = client_tls(&rig.llmtap_ca, &[b"http/1.1"])
        .connect(name, tunnel)
        .await
        .expect("llmtap's leaf for upstream.test");
    let body = openai_body(false);
    let response = http1_over(
        &mut tls,
        &format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: upstream.test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    let id = response
        .lines()
        .find_map(|l| l.strip_prefix("x-llmtap-call-id: "))
        .unwrap_or_else(|| panic!("{response}"))
        .trim()
        .to_string();
    let record = wait_call(&rig.running, &id).await;
    assert_eq!(
        (record.provider.as_str(), record.kind.as_str()),
        ("upstream.test", "http")
    );
    assert_eq!(record.upstream_host, "upstream.test");
    rig.running.shutdown().await.unwrap();

    // With the default ports, 127.0.0.1:22 is refused for its port alone.
    let rig = Rig::start("").await;
    let (status, mut stream) = connect(rig.running.proxy_addr, "127.0.0.1:22", "").await;
    assert_eq!(status, 403);
    let mut body = vec![0u8; 4096];
    let n = stream.read(&mut body).await.unwrap();
    assert!(String::from_utf8_lossy(&body[..n]).contains("connect_port_refused"));
    assert_eq!(rig.running.store.call_count(), 0);
    rig.running.shutdown().await.unwrap();
}

#[tokio::test]
async fn proxy_authorization_is_required_off_loopback() {
    let token = "proxy-token-123";
    let hash = {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    use base64::Engine;
    let right = format!(
        "Proxy-Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("llmtap:{token}"))
    );
    let wrong = "Proxy-Authorization: Basic bGxtdGFwOndyb25n\r\n"; // llmtap:wrong
                                                                   // Without a token, a listener on every interface serves no proxy requests at all;
                                                                   // with one, only those that present it.
    for (intercept_toml, with_right_token) in [
        (String::new(), 407),
        (format!("proxy_token_sha256 = \"{hash}\"\n"), 200),
    ] {
        let pki = TestPki::for_hosts("intercept test CA", UPSTREAM_HOSTS);
        let mock = MockUpstream::start_with_tls(scripted, Some(tls_acceptor(&pki))).await;
        let data = TempDir::new("intercept-auth");
        let upstream_ca = data.path().join("ca.pem");
        std::fs::write(&upstream_ca, &pki.ca_pem).unwrap();
        let text = format!(
            "[server]\nlisten = \"0.0.0.0:0\"\napi_listen = \"127.0.0.1:0\"\nextra_ca_file = \"{}\"\n[server.resolve]\n\"upstream.test:443\" = \"127.0.0.1:{}\"\n[intercept]\n{intercept_toml}",
            upstream_ca.display(),
            mock.addr.port()
        );
        let config = llmtap::config::RawConfig::from_toml(&text)
            .unwrap()
            .validate(&llmtap::config::Overrides {
                data_dir: Some(data.path().to_path_buf()),
                ..Default::default()
            })
            .unwrap();
        let running = start_llmtap(config).await;
        let proxy: SocketAddr = format!("127.0.0.1:{}", running.proxy_addr.port())
            .parse()
            .unwrap();
        assert_eq!(connect(proxy, "upstream.test:443", "").await.0, 407);
        assert_eq!(connect(proxy, "upstream.test:443", wrong).await.0, 407);
        assert_eq!(
            connect(proxy, "upstream.test:443", &right).await.0,
            with_right_token,
            "{intercept_toml}"
        );
        // The base-URL path is not a proxy request and needs no token.
        let got = post_json(proxy, "/nope/v1/x", &[], "{}").await;
        assert_eq!(got.status, 404);
        running.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn websocket_upgrades_pass_through_intercepted_connections() {
    // An upstream that answers an upgrade with 101 and then echoes bytes.
    let pki = TestPki::for_hosts("intercept test CA", UPSTREAM_HOSTS);
    let acceptor = tls_acceptor(&pki);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tls.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(head.contains("upgrade: websocket"), "{head}");
                tls.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n").await.unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let data = TempDir::new("intercept-ws");
    let upstream_ca = data.path().join("ca.pem");
    std::fs::write(&upstream_ca, &pki.ca_pem).unwrap();
    let config = test_config(
        data.path(),
        &format!(
            "extra_ca_file = \"{}\"\n[server.resolve]\n\"api.openai.com:443\" = \"{ws_addr}\"\n",
            upstream_ca.display()
        ),
    );
    llmtap::intercept::ca::LocalCa::open_or_create(data.path(), None).unwrap();
    let llmtap_ca = llmtap::intercept::ca::cert_path(data.path());
    let running = start_llmtap(config).await;

    let (status, tunnel) = connect(running.proxy_addr, "api.openai.com:443", "").await;
    assert_eq!(status, 200);
    let name = rustls_pki_types::ServerName::try_from("api.openai.com").unwrap();
    let mut tls = client_tls(&llmtap_ca, &[b"http/1.1"])
        .connect(name, tunnel)
        .await
        .expect("llmtap's leaf, trusted through its CA");
    tls.write_all(b"GET /v1/realtime?model=gpt-4o-realtime HTTP/1.1\r\nHost: api.openai.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for message in [&b"\x81\x05hello"[..], &b"\x81\x05world"[..]] {
        tls.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    drop(tls);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_plain_http_to_configured_hosts_is_recorded() {
    // A local model server (like Ollama) configured as a provider, plain HTTP.
    let local = MockUpstream::start(scripted).await;
    let rig = Rig::start(&provider_toml(
        "local",
        "openai",
        &format!("http://127.0.0.1:{}", local.addr.port()),
    ))
    .await;
    let proxy = rig.proxy_url();
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", local.addr.port());
    let body = openai_body(false);
    let (id, _) = curl(&[
        "--proxy",
        &proxy,
        &url,
        "-H",
        "content-type: application/json",
        "-d",
        &body,
    ]);
    let record = wait_call(&rig.running, &id).await;
    assert_eq!(record.provider, "local");
    assert_eq!(record.path, "/v1/chat/completions");
    assert_eq!(record.usage.output_tokens, Some(3));
    assert!(!record.request_headers.contains_key("proxy-connection"));
    // Any other host is refused, not proxied.
    let out = tokio::task::block_in_place(|| {
        Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--proxy",
                &proxy,
            ])
            .arg(format!(
                "http://127.0.0.1:{}/x",
                rig.running.api_addr.port()
            ))
            .output()
            .unwrap()
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    rig.running.shutdown().await.unwrap();
}

const BIN: &str = env!("CARGO_BIN_EXE_llmtap");

fn llmtap_cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("LLMTAP_ENCRYPTION_KEY");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().unwrap()
}

/// `llmtap ca path|show|bundle` and `llmtap env`, then a real `llmtap serve` whose log
/// names the host a pinning client refused, and which never carries the CA key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_commands_env_lines_and_a_log_without_the_key() {
    use std::io::BufRead;
    let dir = TempDir::new("intercept-cli");
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let key_text = "ab".repeat(32);
    let sealed_env = [("LLMTAP_ENCRYPTION_KEY", key_text.as_str())];

    let out = llmtap_cli(&["ca", "path", "--data-dir", &data_arg], &sealed_env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_path = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(
        Path::new(&cert_path),
        llmtap::intercept::ca::cert_path(&data)
    );
    let ca_dir = data.join("ca");
    let sealed = std::fs::read(ca_dir.join("llmtap-ca.key.sealed")).unwrap();
    assert!(!ca_dir.join("llmtap-ca.key").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ca_dir.join("llmtap-ca.key.sealed"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let out = llmtap_cli(&["ca", "show", "--data-dir", &data_arg], &sealed_env);
    let show = String::from_utf8(out.stdout).unwrap();
    assert!(
        show.contains("sha256 ") && show.contains("expires ") && show.contains("sealed"),
        "{show}"
    );
    // Without the store key the sealed CA cannot be used, and says why.
    let out = llmtap_cli(&["ca", "show", "--data-dir", &data_arg], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sealed with the store key"));

    let bundle = dir.path().join("bundle.pem");
    let out = llmtap_cli(
        &[
            "ca",
            "bundle",
            "--out",
            &bundle.display().to_string(),
            "--data-dir",
            &data_arg,
        ],
        &sealed_env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle_text = std::fs::read_to_string(&bundle).unwrap();
    let ca_pem = std::fs::read_to_string(&cert_path).unwrap();
    assert!(bundle_text.ends_with(&ca_pem));
    assert!(
        bundle_text.matches("BEGIN CERTIFICATE").count() > 10,
        "system roots included"
    );

    let out = llmtap_cli(&["env", "--data-dir", &data_arg], &sealed_env);
    let env = String::from_utf8(out.stdout).unwrap();
    for line in [
        "export HTTPS_PROXY=\"http://127.0.0.1:8080\"",
        &format!("export NODE_EXTRA_CA_CERTS='{cert_path}'"),
        "export SSL_CERT_FILE='",
        "export REQUESTS_CA_BUNDLE='",
        "export CURL_CA_BUNDLE='",
    ] {
        assert!(env.contains(line), "{line} not in:\n{env}");
    }

    // A real server, debug logging to a file.
    let config = dir.path().join("llmtap.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\n[server.resolve]\n\"api.openai.com:443\" = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let log_path = dir.path().join("serve.log");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--config",
            &config.display().to_string(),
            "--data-dir",
            &data_arg,
        ])
        .env("LLMTAP_LOG", "debug")
        .env("LLMTAP_ENCRYPTION_KEY", &key_text)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let proxy: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap()
        .parse()
        .unwrap();
    // A client that trusts only the system roots (as a pinning client trusts only the
    // provider's key) refuses llmtap's leaf.
    let (status, tunnel) = connect(proxy, "api.openai.com:443", "").await;
    assert_eq!(status, 200);
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(llmtap::upstream::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("api.openai.com").unwrap();
    assert!(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tunnel)
        .await
        .is_err());
    let mut log = String::new();
    for _ in 0..200 {
        log = std::fs::read_to_string(&log_path).unwrap();
        if log.contains("refused llmtap's certificate") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = tokio::task::block_in_place(|| child.wait());
    let log = log + &std::fs::read_to_string(&log_path).unwrap();
    let refusal = log
        .lines()
        .find(|l| l.contains("refused llmtap's certificate"))
        .unwrap_or_else(|| panic!("no pinning line in the log:\n{log}"));
    assert!(refusal.contains("api.openai.com"), "{refusal}");
    // The key never reaches a log or a command's output: neither its PEM nor its
    // sealed bytes, whole or in part.
    use base64::Engine;
    let sealed_b64 = base64::engine::general_purpose::STANDARD.encode(&sealed);
    let keys = llmtap::store::Keyring::from_text(&key_text).unwrap();
    let key_pem = String::from_utf8(keys.open(&sealed).unwrap()).unwrap();
    let key_body: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    assert!(!key_body.is_empty());
    for text in [&log, &show, &env] {
        assert!(!text.contains("PRIVATE KEY"));
        assert!(!text.contains(&sealed_b64[..24]));
        for line in &key_body {
            assert!(!text.contains(&line[..16]));
        }
    }
}

/// `TestTools` (rmcp, stateless, JSON answers) over TLS with `pki`'s certificate.
async fn serve_mcp_over_tls(pki: &TestPki) -> SocketAddr {
    use rmcp::transport::streamable_http_server::{
        session::local::LocalSessionManager, StreamableHttpService,
    };
    let service: StreamableHttpService<super::mcp_tools::TestTools, LocalSessionManager> =
        StreamableHttpService::new(
            || Ok(super::mcp_tools::TestTools::new()),
            Default::default(),
            super::mcp::json_answers().with_allowed_hosts(["mcp.test"]),
        );
    let acceptor = tls_acceptor(pki);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            });
        }
    });
    addr
}

/// An MCP server on an intercepted host (`[intercept] hosts`, the host of a
/// `kind = "mcp"` provider): a client that knows only the server's `https://` URL,
/// with llmtap as its proxy, is recorded as kind `mcp` (method, tool, arguments,
/// result, an `isError` failure) exactly as the same exchange through the provider's
/// base URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercepted_mcp_host_is_recorded_as_on_the_base_url_path() {
    let pki = TestPki::for_hosts("mcp test CA", &["mcp.test"]);
    let server = serve_mcp_over_tls(&pki).await;
    let data = TempDir::new("intercept-mcp");
    let files = TempDir::new("intercept-mcp-pki");
    let upstream_ca = files.path().join("upstream-ca.pem");
    std::fs::write(&upstream_ca, &pki.ca_pem).unwrap();
    let toml = format!(
        "extra_ca_file = \"{}\"\n[server.resolve]\n\"mcp.test:443\" = \"{server}\"\n{}[intercept]\nhosts = [\"mcp.test\"]\n",
        upstream_ca.display(),
        provider_toml("tools", "mcp", "https://mcp.test"),
    );
    llmtap::intercept::ca::LocalCa::open_or_create(data.path(), None).unwrap();
    let ca = llmtap::intercept::ca::cert_path(data.path())
        .display()
        .to_string();
    let running = start_llmtap(test_config(data.path(), &toml)).await;
    let proxy = format!("http://{}", running.proxy_addr);
    let base = format!("http://{}/tools/mcp", running.proxy_addr);
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"curl","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}"#;
    let cases = [
        (
            "tools/call",
            "add",
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"add","arguments":{{"a":2,"b":40}},{meta}}}}}"#
            ),
        ),
        (
            "tools/call",
            "fail",
            format!(
                r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"fail","arguments":{{}},{meta}}}}}"#
            ),
        ),
        (
            "tools/list",
            "",
            format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{{{meta}}}}}"#),
        ),
    ];
    for (method, name, body) in &cases {
        let mcp_method = format!("mcp-method: {method}");
        let mcp_name = format!("mcp-name: {name}");
        let mut common = vec![
            "-H",
            "content-type: application/json",
            "-H",
            "accept: application/json, text/event-stream",
            "-H",
            "mcp-protocol-version: 2026-07-28",
            "-H",
            &mcp_method,
            "-H",
            "x-llmtap-invocation-id: run-mcp-intercepted",
            "-d",
            body,
        ];
        if !name.is_empty() {
            common.extend(["-H", &mcp_name]);
        }
        let mut proxied_args = vec!["--proxy", &proxy, "--cacert", &ca, "https://mcp.test/mcp"];
        proxied_args.extend_from_slice(&common);
        let (proxied_id, proxied_text) = curl(&proxied_args);
        assert!(proxied_text.contains("HTTP/2 200"), "{proxied_text}");
        let mut base_args = vec![base.as_str()];
        base_args.extend_from_slice(&common);
        let (base_id, base_text) = curl(&base_args);
        // The client got the server's answer, the same on both paths.
        // (after the proxy's `200 Connection established`, when there is one)
        let answer = |text: &str| text.rsplit("\r\n\r\n").next().unwrap_or("").to_string();
        assert_eq!(answer(&proxied_text), answer(&base_text));
        let proxied = wait_call(&running, &proxied_id).await;
        let base_record = wait_call(&running, &base_id).await;
        assert_eq!(proxied.kind, "mcp", "{proxied:#?}");
        assert_eq!(proxied.provider, "tools");
        assert_eq!(proxied.upstream_host, "mcp.test");
        let m = proxied.mcp.as_ref().unwrap();
        assert_eq!(m.method.as_deref(), Some(*method));
        match *name {
            "add" => {
                assert_eq!(m.arguments, Some(serde_json::json!({"a": 2, "b": 40})));
                assert_eq!(m.result_text.as_deref(), Some("42"));
                assert_eq!(proxied.status, Some(llmtap::record::CallStatus::Success));
            }
            "fail" => {
                assert!(m.is_error);
                assert_eq!(proxied.status, Some(llmtap::record::CallStatus::Failed));
            }
            _ => assert!(m.tools_offered.iter().any(|t| t == "weather"), "{m:?}"),
        }
        let (mut p, mut b) = (proxied.clone(), base_record.clone());
        // The client's own headers differ: curl's host line names its target.
        p.request_headers.remove("host");
        b.request_headers.remove("host");
        assert_same_record(&p, &b, &format!("MCP {method} {name}"));
    }
    running.shutdown().await.unwrap();
}
