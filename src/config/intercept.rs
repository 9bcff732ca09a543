//! `[intercept]`: which CONNECT targets llmtap decrypts and records, validated.
//! Read by `intercept/`, which runs the proxy listener.

use serde::Deserialize;

/// `[intercept]`: llmtap as an `HTTPS_PROXY` (CONNECT), `src/intercept/`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntercept {
    /// Hosts whose TLS llmtap terminates and records (`"*"` all, `"*.example.com"`
    /// subdomains); default `DEFAULT_HOSTS`.
    pub hosts: Option<Vec<String>>,
    /// Ports CONNECT may reach (default 443 only).
    pub ports: Option<Vec<u16>>,
    /// Hosts tunnelled untouched even when `hosts` matches them (clients that pin).
    #[serde(default)]
    pub tunnel: Vec<String>,
    /// Hex SHA-256 of the token a client must send in `Proxy-Authorization` (Basic
    /// password or Bearer) to use CONNECT or absolute-form requests; required when the
    /// proxy listens on a non-loopback address.
    pub proxy_token_sha256: Option<String>,
}

/// The provider API hosts intercepted when `[intercept] hosts` is not set: the
/// built-in providers' hosts, Azure OpenAI, and `chatgpt.com`, where Codex CLI
/// sends its calls when signed in with a ChatGPT plan (Claude Code's subscription
/// calls go to `api.anthropic.com`).
pub const DEFAULT_HOSTS: &[&str] = &[
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "openrouter.ai",
    "api.groq.com",
    "api.mistral.ai",
    "api.deepseek.com",
    "api.together.xyz",
    "*.openai.azure.com",
    "chatgpt.com",
];

/// One `[intercept] hosts` or `tunnel` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `"*"`: every host.
    Any,
    /// `"*.example.com"`: subdomains of example.com (not example.com itself).
    Subdomains(String),
    Exact(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim().to_ascii_lowercase();
        if text == "*" {
            return Ok(HostPattern::Any);
        }
        let (pattern, name) = match text.strip_prefix("*.") {
            Some(suffix) => (HostPattern::Subdomains(format!(".{suffix}")), suffix),
            None => (HostPattern::Exact(text.clone()), text.as_str()),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
        if valid {
            Ok(pattern)
        } else {
            Err("expected a host name, \"*.domain\" or \"*\"".into())
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.to_ascii_lowercase().ends_with(suffix.as_str())
            }
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
        }
    }
}

/// `[intercept]`, validated.
#[derive(Debug, Clone)]
pub struct InterceptConfig {
    pub hosts: Vec<HostPattern>,
    pub ports: Vec<u16>,
    pub tunnel: Vec<HostPattern>,
    pub proxy_token_sha256: Option<[u8; 32]>,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        InterceptConfig::from_raw(&RawIntercept::default()).unwrap_or(InterceptConfig {
            hosts: Vec::new(),
            ports: vec![443],
            tunnel: Vec::new(),
            proxy_token_sha256: None,
        })
    }
}

impl InterceptConfig {
    /// Errors are (field, value, reason).
    pub fn from_raw(raw: &RawIntercept) -> Result<InterceptConfig, (String, String, String)> {
        let patterns = |field: &str, list: &[String]| {
            list.iter()
                .map(|h| HostPattern::parse(h).map_err(|r| (field.to_string(), h.clone(), r)))
                .collect::<Result<Vec<_>, _>>()
        };
        let hosts = match &raw.hosts {
            Some(list) => patterns("intercept.hosts", list)?,
            None => DEFAULT_HOSTS
                .iter()
                .map(|h| HostPattern::parse(h).map_err(|r| ("builtin".into(), h.to_string(), r)))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let tunnel = patterns("intercept.tunnel", &raw.tunnel)?;
        let ports = raw.ports.clone().unwrap_or_else(|| vec![443]);
        if ports.contains(&0) {
            return Err(("intercept.ports".into(), "0".into(), "not a port".into()));
        }
        let proxy_token_sha256 = match &raw.proxy_token_sha256 {
            None => None,
            Some(hex) => Some(parse_sha256(hex).ok_or_else(|| {
                (
                    "intercept.proxy_token_sha256".to_string(),
                    "(hidden)".to_string(),
                    "expected 64 hex digits (printf %s TOKEN | sha256sum)".to_string(),
                )
            })?),
        };
        Ok(InterceptConfig {
            hosts,
            ports,
            tunnel,
            proxy_token_sha256,
        })
    }

    /// Whether a CONNECT to this host is decrypted and recorded.
    pub fn intercepts(&self, host: &str) -> bool {
        !self.tunnel.iter().any(|p| p.matches(host)) && self.hosts.iter().any(|p| p.matches(host))
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let config = InterceptConfig::default();
        assert!(config.intercepts("api.openai.com"));
        assert!(config.intercepts("API.Anthropic.com"));
        assert!(config.intercepts("mine.openai.azure.com"));
        assert!(!config.intercepts("openai.azure.com"));
        assert!(!config.intercepts("example.com"));
        assert!(!config.intercepts("api.openai.com.evil.example"));
        assert_eq!(config.ports, vec![443]);
        let raw = RawIntercept {
            hosts: Some(vec!["*".into()]),
            tunnel: vec!["pinned.example".into()],
            ..RawIntercept::default()
        };
        let all = InterceptConfig::from_raw(&raw).unwrap();
        assert!(all.intercepts("example.com"));
        assert!(!all.intercepts("pinned.example"));
        assert!(HostPattern::parse("bad host").is_err());
    }
}
