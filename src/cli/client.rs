//! The read-API client behind the client commands: reqwest (rustls, blocking), the
//! bearer token, query strings from the filter flags, and API errors with their message.

use super::{ApiArgs, FilterArgs};
use serde_json::Value;
use std::time::Duration;

/// A failed client command: exit code 1 with the message.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: HTTP {status}: {message}")]
    Api {
        url: String,
        status: u16,
        message: String,
    },
    #[error("cannot reach the read API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: the answer is not what the read API sends: {detail}")]
    Malformed { url: String, detail: String },
}

pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<String>,
}

/// A query string under construction; values are percent-encoded.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>, String);

impl Query {
    /// A query string encoded earlier (by `encode`), to which more may be pushed.
    pub fn encoded(text: &str) -> Query {
        Query(Vec::new(), text.to_string())
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.0.push((name.to_string(), value.into()));
        self
    }

    pub fn opt(&mut self, name: &str, value: &Option<String>) -> &mut Self {
        if let Some(v) = value {
            self.push(name, v.clone());
        }
        self
    }

    pub fn filters(&mut self, f: &FilterArgs, now_us: u64) -> &mut Self {
        for (name, values) in [
            ("agent", &f.agent),
            ("status", &f.status),
            ("provider", &f.provider),
            ("model", &f.model),
            ("trigger", &f.trigger),
        ] {
            for v in values {
                self.push(name, v.clone());
            }
        }
        self.opt("tenant", &f.tenant)
            .opt("session_id", &f.session)
            .opt("user_id", &f.user)
            .opt("prompt", &f.prompt);
        for (k, v) in &f.property {
            self.push(&format!("property.{k}"), v.clone());
        }
        if let Some(s) = f.since {
            let from = now_us.saturating_sub(s * 1_000_000);
            self.push("from", llmtap::timefmt::format_rfc3339_us(from));
        }
        self.opt("from", &f.from).opt("to", &f.to);
        self
    }

    pub fn encode(&self) -> String {
        std::iter::once(self.1.clone())
            .filter(|s| !s.is_empty())
            .chain(
                self.0
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v))),
            )
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Client {
    pub fn new(args: &ApiArgs) -> anyhow::Result<Client> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Streams (tail, export) are read for as long as they last.
            .timeout(None)
            .user_agent(concat!("llmtap-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base: args.api.trim_end_matches('/').to_string(),
            token: args.token.clone().filter(|t| !t.is_empty()),
        })
    }

    pub fn url(&self, path: &str, query: &Query) -> String {
        let q = query.encode();
        if q.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{q}", self.base)
        }
    }

    /// GET with the token; a non-2xx answer becomes `ClientError::Api` with the API's message.
    pub fn send(
        &self,
        path: &str,
        query: &Query,
        timeout: Option<Duration>,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let url = self.url(path, query);
        let mut request = self.http.get(&url);
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().map_err(|e| unreachable_error(&url, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        Err(ClientError::Api {
            url,
            status: status.as_u16(),
            message,
        })
    }

    /// GET a whole body as bytes, with the answer's headers.
    pub fn get_bytes(
        &self,
        path: &str,
        query: &Query,
    ) -> Result<(reqwest::header::HeaderMap, bytes::Bytes), ClientError> {
        let url = self.url(path, query);
        let response = self.send(path, query, Some(Duration::from_secs(60)))?;
        let headers = response.headers().clone();
        let body = response.bytes().map_err(|e| unreachable_error(&url, &e))?;
        Ok((headers, body))
    }

    pub fn get_json(&self, path: &str, query: &Query) -> Result<Value, ClientError> {
        let url = self.url(path, query);
        let response = self.send(path, query, Some(Duration::from_secs(60)))?;
        let text = response.text().map_err(|e| unreachable_error(&url, &e))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Malformed {
            url,
            detail: e.to_string(),
        })
    }
}

/// The innermost cause says what went wrong (refused, timed out, DNS); reqwest's own
/// layers repeat the URL.
fn unreachable_error(url: &str, e: &reqwest::Error) -> ClientError {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    ClientError::Unreachable {
        url: url.to_string(),
        reason: cause.to_string(),
    }
}
