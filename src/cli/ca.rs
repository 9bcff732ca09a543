//! `llmtap ca path|show|bundle` and `llmtap env`: the local CA that `HTTPS_PROXY`
//! clients trust (`llmtap::intercept::ca`), and the shell lines that point a shell's
//! clients at llmtap.

use super::{CaArgs, CaCommand, ConfigArgs, EnvArgs};
use anyhow::Context;
use llmtap::config::Config;
use llmtap::intercept::ca::{self, LocalCa};
use std::path::{Path, PathBuf};

/// Root bundles of the common systems, first found wins (Debian/Ubuntu/Alpine,
/// Fedora/RHEL, openSUSE, macOS and the BSDs).
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/share/certs/ca-root-nss.crt",
];

/// The bundle `llmtap env` writes next to the CA (system roots + llmtap's CA).
const BUNDLE_FILE: &str = "llmtap-bundle.pem";

fn open_ca(config: &Config) -> anyhow::Result<LocalCa> {
    let keys = llmtap::server::store_options(config)?.keys;
    LocalCa::open_or_create(&config.data_dir, keys.as_deref())
        .with_context(|| format!("llmtap's CA in {}", config.data_dir.display()))
}

pub fn run(
    command: CaCommand,
    load: impl Fn(&ConfigArgs) -> anyhow::Result<Config>,
) -> anyhow::Result<()> {
    match command {
        CaCommand::Path(CaArgs { config }) => {
            let config = load(&config)?;
            open_ca(&config)?;
            println!("{}", ca::cert_path(&config.data_dir).display());
        }
        CaCommand::Show(CaArgs { config }) => {
            let config = load(&config)?;
            let local = open_ca(&config)?;
            let sealed = llmtap::server::store_options(&config)?.keys.is_some();
            println!("certificate  {}", ca::cert_path(&config.data_dir).display());
            println!("sha256       {}", local.fingerprint());
            println!(
                "expires      {}",
                local.not_after().as_deref().unwrap_or("unknown")
            );
            println!(
                "key          {}",
                if sealed {
                    "sealed with the store key (mode 0600)"
                } else {
                    "PEM, mode 0600 (turn on encryption at rest to seal it)"
                }
            );
        }
        CaCommand::Bundle {
            out,
            ca: CaArgs { config },
        } => {
            let config = load(&config)?;
            let local = open_ca(&config)?;
            let from = write_bundle(&local, &out)?;
            eprintln!(
                "wrote {} (roots from {} plus llmtap's CA)",
                out.display(),
                from.display()
            );
        }
    }
    Ok(())
}

/// Writes the system roots plus llmtap's CA to `out`; returns where the roots came from.
fn write_bundle(local: &LocalCa, out: &Path) -> anyhow::Result<PathBuf> {
    let system = SYSTEM_ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("no system root bundle found (looked in /etc/ssl/certs/ca-certificates.crt and the other usual places); use NODE_EXTRA_CA_CERTS with `llmtap ca path` instead")?;
    let mut text = std::fs::read_to_string(&system)
        .with_context(|| format!("cannot read {}", system.display()))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# llmtap local CA\n");
    text.push_str(local.cert_pem());
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(system)
}

/// Quotes a value for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// `llmtap env`: the CA made if needed, the bundle written next to it, and the lines.
pub fn env(
    args: &EnvArgs,
    load: impl Fn(&ConfigArgs) -> anyhow::Result<Config>,
) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    let local = open_ca(&config)?;
    let cert = ca::cert_path(&config.data_dir);
    let bundle = cert.with_file_name(BUNDLE_FILE);
    write_bundle(&local, &bundle)?;
    let proxy = match &args.proxy {
        Some(p) => p.clone(),
        None => {
            let mut listen = config.listen;
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            listen.to_string()
        }
    };
    let proxy_url = if config.intercept.proxy_token_sha256.is_some() {
        println!("# the proxy needs its token: export LLMTAP_PROXY_TOKEN first");
        format!("http://llmtap:${{LLMTAP_PROXY_TOKEN}}@{proxy}")
    } else {
        format!("http://{proxy}")
    };
    let cert = cert.display().to_string();
    let bundle = bundle.display().to_string();
    println!("export HTTPS_PROXY=\"{proxy_url}\"");
    println!("export https_proxy=\"$HTTPS_PROXY\"");
    println!("export NODE_EXTRA_CA_CERTS={}", shell_quote(&cert));
    // Node's built-in fetch (the OpenAI and Anthropic Node SDKs) honours HTTPS_PROXY
    // only with this set (Node 22.21 / 24.5 and later).
    println!("export NODE_USE_ENV_PROXY=1");
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
        println!("export {name}={}", shell_quote(&bundle));
    }
    Ok(())
}
