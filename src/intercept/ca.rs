//! llmtap's local certificate authority: the CA an `HTTPS_PROXY` client trusts so
//! llmtap can terminate TLS for the hosts it records, and the leaf certificates it
//! mints for them.
//!
//! Files, in `data_dir/ca/` (mode 0700): `llmtap-ca.pem`, the CA certificate (public,
//! what clients trust), and its private key: `llmtap-ca.key` (PEM, mode 0600) or, when
//! encryption at rest is on, `llmtap-ca.key.sealed` (the PEM sealed with the store key,
//! mode 0600; a plain key found when encryption is on is sealed and the plain file
//! removed). The key never leaves this module: no endpoint, log or export carries it.
//!
//! The CA's name ends with the first bytes of its public key's SHA-256, so two
//! installations never issue under one name, and the issuer can be rebuilt from the
//! key alone (rcgen signs with the issuer's name, key identifier and key).
//!
//! Leaves: one ECDSA P-256 key per process (held in memory only), a certificate per
//! host (SAN = the host), valid from yesterday to two days ahead, minted on first use
//! and cached (at most `LEAF_CACHE` hosts, replaced after `LEAF_REFRESH`), each with a
//! random serial.

use crate::store::Keyring;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CA_DIR: &str = "ca";
const CERT_FILE: &str = "llmtap-ca.pem";
const KEY_FILE: &str = "llmtap-ca.key";
const SEALED_KEY_FILE: &str = "llmtap-ca.key.sealed";
const CA_NAME: &str = "llmtap local CA";
/// Hosts whose leaf is kept; past this the oldest is replaced.
const LEAF_CACHE: usize = 1024;
/// A cached leaf older than this is minted again (it is valid for at least a day more).
const LEAF_REFRESH: Duration = Duration::from_secs(12 * 3600);
const CA_VALID_YEARS: i16 = 10;

/// A UTC date as rcgen's certificate time (midnight).
macro_rules! ymd {
    ($date:expr) => {{
        let date: jiff::civil::Date = $date;
        rcgen::date_time_ymd(
            i32::from(date.year()),
            date.month().unsigned_abs(),
            date.day().unsigned_abs(),
        )
    }};
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the CA key {path} is sealed with the store key; configure [store] encryption_key_file or LLMTAP_ENCRYPTION_KEY")]
    SealedWithoutKey { path: String },
    #[error("cannot open the sealed CA key {path}: {source}")]
    Unseal {
        path: String,
        source: crate::store::crypto::CryptoError,
    },
    #[error("cannot seal the CA key: {0}")]
    Seal(crate::store::crypto::CryptoError),
    #[error("the CA files in {dir} are inconsistent: {reason}")]
    Inconsistent { dir: String, reason: String },
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where the CA certificate lives (whether or not it exists yet).
pub fn cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CA_DIR).join(CERT_FILE)
}

/// The CA: its certificate, its key (in memory), and the leaves it minted.
pub struct LocalCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: rcgen::Certificate,
    key: rcgen::KeyPair,
    leaf_key: rcgen::KeyPair,
    rng: SystemRandom,
    leaves: Mutex<HashMap<String, (Instant, Arc<rustls::ServerConfig>)>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("LocalCa")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl LocalCa {
    /// Loads the CA from `data_dir/ca/`, creating it on first use. Holds an exclusive
    /// lock on `ca/lock` meanwhile, so `llmtap ca path` and a starting `serve` never
    /// make two.
    pub fn open_or_create(data_dir: &Path, keys: Option<&Keyring>) -> Result<LocalCa, CaError> {
        let dir = data_dir.join(CA_DIR);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(&dir))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        // SAFETY: flock on a file descriptor we own; released when `lock` closes.
        if unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0
        {
            return Err(io_error(&lock_path)(std::io::Error::last_os_error()));
        }

        let cert_file = dir.join(CERT_FILE);
        let plain_key = dir.join(KEY_FILE);
        let sealed_key = dir.join(SEALED_KEY_FILE);
        let key_pem = if sealed_key.exists() {
            let sealed = std::fs::read(&sealed_key).map_err(io_error(&sealed_key))?;
            let keys = keys.ok_or_else(|| CaError::SealedWithoutKey {
                path: sealed_key.display().to_string(),
            })?;
            let plain = keys.open(&sealed).map_err(|source| CaError::Unseal {
                path: sealed_key.display().to_string(),
                source,
            })?;
            Some(String::from_utf8(plain).map_err(|_| CaError::Inconsistent {
                dir: dir.display().to_string(),
                reason: "the sealed key is not PEM".into(),
            })?)
        } else if plain_key.exists() {
            let pem = std::fs::read_to_string(&plain_key).map_err(io_error(&plain_key))?;
            if let Some(keys) = keys {
                // Encryption was turned on after the CA was made: seal the key now.
                write_private(
                    &sealed_key,
                    &keys.seal(pem.as_bytes()).map_err(CaError::Seal)?,
                )?;
                std::fs::remove_file(&plain_key).map_err(io_error(&plain_key))?;
            }
            Some(pem)
        } else {
            None
        };

        let (key, cert_pem) = match key_pem {
            Some(pem) => {
                let key = rcgen::KeyPair::from_pem(&pem)?;
                let cert_pem = std::fs::read_to_string(&cert_file).map_err(io_error(&cert_file))?;
                (key, cert_pem)
            }
            None => {
                let key = rcgen::KeyPair::generate()?;
                let cert = ca_params(&key)?.self_signed(&key)?;
                let pem = key.serialize_pem();
                match keys {
                    Some(keys) => write_private(
                        &sealed_key,
                        &keys.seal(pem.as_bytes()).map_err(CaError::Seal)?,
                    )?,
                    None => write_private(&plain_key, pem.as_bytes())?,
                }
                write_atomic(&cert_file, cert.pem().as_bytes(), 0o644)?;
                tracing::info!(path = %cert_file.display(), "created llmtap's local CA");
                (key, cert.pem())
            }
        };
        let cert_der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CaError::Inconsistent {
                dir: dir.display().to_string(),
                reason: format!("{CERT_FILE}: {e}"),
            })?;
        // The issuer as rcgen needs it: the same name and key, so the same subject
        // and key identifier as the stored certificate.
        let issuer = ca_params(&key)?.self_signed(&key)?;
        if !der_has_public_key(&cert_der, &key) {
            return Err(CaError::Inconsistent {
                dir: dir.display().to_string(),
                reason: format!("{CERT_FILE} does not hold the key's public key"),
            });
        }
        Ok(LocalCa {
            cert_pem,
            cert_der,
            issuer,
            key,
            leaf_key: rcgen::KeyPair::generate()?,
            rng: SystemRandom::new(),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 of the certificate's DER, as `AB:CD:...` (what `openssl x509
    /// -fingerprint -sha256` prints).
    pub fn fingerprint(&self) -> String {
        let d = digest::digest(&digest::SHA256, self.cert_der.as_ref());
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The certificate's notAfter, as written in it (`YYYY-MM-DDTHH:MM:SSZ`).
    pub fn not_after(&self) -> Option<String> {
        der::not_after(self.cert_der.as_ref())
    }

    /// The TLS server config for one host: a leaf for it (minted now, or cached), ALPN
    /// h2 and http/1.1.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let host = host.to_ascii_lowercase();
        if let Ok(leaves) = self.leaves.lock() {
            if let Some((minted, config)) = leaves.get(&host) {
                if minted.elapsed() < LEAF_REFRESH {
                    return Ok(config.clone());
                }
            }
        }
        let config = Arc::new(self.mint(&host)?);
        let mut leaves = match self.leaves.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if leaves.len() >= LEAF_CACHE && !leaves.contains_key(&host) {
            let oldest = leaves
                .iter()
                .min_by_key(|(_, (minted, _))| *minted)
                .map(|(h, _)| h.clone());
            if let Some(oldest) = oldest {
                leaves.remove(&oldest);
            }
        }
        leaves.insert(host, (Instant::now(), config.clone()));
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<rustls::ServerConfig, CaError> {
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, host);
        let today = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        params.not_before = ymd!(today.yesterday().unwrap_or(today));
        params.not_after = ymd!(today.saturating_add(jiff::Span::new().days(2)));
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let mut serial = [0u8; 16];
        self.rng
            .fill(&mut serial)
            .map_err(|_| rcgen::Error::RingUnspecified)?;
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let leaf = params.signed_by(&self.leaf_key, &self.issuer, &self.key)?;
        let chain = vec![leaf.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config =
            rustls::ServerConfig::builder_with_provider(crate::upstream::crypto_provider())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn ca_params(key: &rcgen::KeyPair) -> Result<rcgen::CertificateParams, CaError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    let id = digest::digest(&digest::SHA256, &key.public_key_der());
    let suffix: String = id.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{CA_NAME} {suffix}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "llmtap");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    params.not_before = ymd!(today.yesterday().unwrap_or(today));
    params.not_after = ymd!(today.saturating_add(jiff::Span::new().years(CA_VALID_YEARS)));
    Ok(params)
}

/// Whether the certificate's DER carries the key's public key (the files belong together).
fn der_has_public_key(cert: &CertificateDer<'_>, key: &rcgen::KeyPair) -> bool {
    let public = key.public_key_raw();
    cert.as_ref()
        .windows(public.len())
        .any(|window| window == public)
}

/// Writes a file only its owner can read, atomically (a temporary file, then rename).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    write_atomic(path, bytes, 0o600)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    // The mode given at creation is masked by the umask; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// The little DER reading `ca show` needs: a certificate's notAfter.
mod der {
    /// One TLV: (tag, contents, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    pub fn not_after(cert: &[u8]) -> Option<String> {
        let (_, certificate, _) = tlv(cert)?;
        let (_, tbs, _) = tlv(certificate)?;
        let mut rest = tbs;
        // [0] version (optional), serial, signature algorithm, issuer, then validity.
        let (tag, _, after) = tlv(rest)?;
        if tag == 0xa0 {
            rest = after;
        }
        for _ in 0..3 {
            rest = tlv(rest)?.2;
        }
        let (_, validity, _) = tlv(rest)?;
        let (_, _, after_not_before) = tlv(validity)?;
        let (tag, time, _) = tlv(after_not_before)?;
        let text = std::str::from_utf8(time).ok()?;
        // UTCTime YYMMDDHHMMSSZ (years 1950-2049) or GeneralizedTime YYYYMMDDHHMMSSZ.
        let full = match tag {
            0x17 => {
                let yy: u32 = text.get(0..2)?.parse().ok()?;
                format!("{}{text}", if yy >= 50 { "19" } else { "20" })
            }
            0x18 => text.to_string(),
            _ => return None,
        };
        let d = full.as_bytes();
        if d.len() != 15 || d[14] != b'Z' || !d[..14].iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(format!(
            "{}-{}-{}T{}:{}:{}Z",
            &full[0..4],
            &full[4..6],
            &full[6..8],
            &full[8..10],
            &full[10..12],
            &full[12..14]
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;

    #[test]
    fn created_once_then_loaded_with_a_private_key_file() {
        let dir = TempDir::new("ca-plain");
        let first = LocalCa::open_or_create(&dir, None).unwrap();
        let again = LocalCa::open_or_create(&dir, None).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        let key = dir.join(CA_DIR).join(KEY_FILE);
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(dir.join(CA_DIR))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert!(std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY"));
        let expiry = first.not_after().unwrap();
        let year: i32 = expiry[..4].parse().unwrap();
        let now = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .year();
        assert_eq!(year, i32::from(now) + i32::from(CA_VALID_YEARS), "{expiry}");
        // Leaves are cached by host and differ between hosts.
        let a = first.server_config("api.openai.com").unwrap();
        let b = first.server_config("API.openai.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = first.server_config("api.anthropic.com").unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn sealed_when_encryption_is_on_and_unreadable_without_the_key() {
        let dir = TempDir::new("ca-sealed");
        let keys = Keyring::from_text(&"ab".repeat(32)).unwrap();
        // Made in the clear first, then sealed when encryption is turned on.
        let plain = LocalCa::open_or_create(&dir, None).unwrap();
        let sealed = LocalCa::open_or_create(&dir, Some(&keys)).unwrap();
        assert_eq!(plain.fingerprint(), sealed.fingerprint());
        let ca_dir = dir.join(CA_DIR);
        assert!(!ca_dir.join(KEY_FILE).exists());
        let bytes = std::fs::read(ca_dir.join(SEALED_KEY_FILE)).unwrap();
        assert!(!bytes.windows(11).any(|w| w == b"PRIVATE KEY"));
        let mode = std::fs::metadata(ca_dir.join(SEALED_KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            LocalCa::open_or_create(&dir, None),
            Err(CaError::SealedWithoutKey { .. })
        ));
        let other = Keyring::from_text(&"cd".repeat(32)).unwrap();
        assert!(LocalCa::open_or_create(&dir, Some(&other)).is_err());
        // A fresh CA made with encryption on is sealed from the start.
        let fresh = TempDir::new("ca-fresh");
        LocalCa::open_or_create(&fresh, Some(&keys)).unwrap();
        assert!(fresh.join(CA_DIR).join(SEALED_KEY_FILE).exists());
        assert!(!fresh.join(CA_DIR).join(KEY_FILE).exists());
        let debug = format!("{sealed:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
    }
}
