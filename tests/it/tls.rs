//! HTTPS both ways: upstream over rustls trusting a CA made in the test
//! (`extra_ca_file`), and llmtap serving HTTPS itself (`[server.tls]`).

use super::util::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;

fn acceptor(pki: &TestPki) -> tokio_rustls::TlsAcceptor {
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

#[tokio::test]
async fn https_upstream_and_downstream() {
    let pki = TestPki::new("llmtap test CA");
    let mock = MockUpstream::start_with_tls(
        |_| {
            MockResponse::json(
                200,
                r#"{"id":"x","model":"claude-x","usage":{"input_tokens":3,"output_tokens":2}}"#,
            )
        },
        Some(acceptor(&pki)),
    )
    .await;
    let dir = TempDir::new("tls");
    let pki_dir = TempDir::new("pki");
    let write = |name: &str, text: &str| {
        let p = pki_dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (ca, cert, key) = (
        write("ca.pem", &pki.ca_pem),
        write("cert.pem", &pki.cert_pem),
        write("key.pem", &pki.key_pem),
    );
    let toml = format!(
        "extra_ca_file = \"{ca}\"\n[server.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n{}",
        provider_toml(
            "secure",
            "anthropic",
            &format!("https://localhost:{}", mock.addr.port())
        )
    );
    let running = start_llmtap(test_config(dir.path(), &toml)).await;

    // A client that trusts the same CA, talking HTTPS to llmtap.
    let client = llmtap::upstream::build_client(
        Some(std::path::Path::new(&ca)),
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(90),
    )
    .unwrap();
    let request = http::Request::post(format!(
        "https://localhost:{}/secure/v1/messages",
        running.proxy_addr.port()
    ))
    .header("content-type", "application/json")
    .body(
        Full::new(Bytes::from_static(br#"{"model":"claude-x","messages":[]}"#))
            .map_err(|n| match n {})
            .boxed_unsync(),
    )
    .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-llmtap-call-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{\"id\":\"x\""));
    let call = wait_call(&running, &id).await;
    assert_eq!(
        call.upstream_host,
        format!("localhost:{}", mock.addr.port())
    );
    assert_eq!(call.status, Some(llmtap::record::CallStatus::Success));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_a_502() {
    let pki = TestPki::new("llmtap test CA");
    let mock =
        MockUpstream::start_with_tls(|_| MockResponse::json(200, "{}"), Some(acceptor(&pki))).await;
    let dir = TempDir::new("tls-untrusted");
    let running = start_llmtap(test_config(
        dir.path(),
        &provider_toml(
            "secure",
            "openai",
            &format!("https://localhost:{}", mock.addr.port()),
        ),
    ))
    .await;
    let got = post_json(running.proxy_addr, "/secure/v1/chat/completions", &[], "{}").await;
    assert_eq!(got.status, 502);
    let call = wait_call(&running, &got.call_id()).await;
    assert!(call
        .error
        .unwrap()
        .message
        .unwrap()
        .to_lowercase()
        .contains("certificate"));
    running.shutdown().await.unwrap();
}
