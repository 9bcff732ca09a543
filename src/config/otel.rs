//! `[otel]` and the `OTEL_*` environment: what OpenTelemetry export is configured
//! to do, validated (`OtelConfig::resolve`). Read by `otel/`, which does the export.

use super::{invalid, ConfigError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The environment variables llmtap reads (only these, so tests and the CLI can pass them in).
pub const ENV_VARS: [&str; 6] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SDK_DISABLED",
];

/// The OTEL_* variables of this process.
pub fn env_from_process() -> BTreeMap<String, String> {
    ENV_VARS
        .iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .collect()
}

/// `[otel]` as written in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtel {
    /// `false` turns export off even when the environment configures it.
    pub enabled: Option<bool>,
    /// The OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318`; `/v1/traces` and
    /// `/v1/metrics` are appended.
    pub endpoint: Option<String>,
    /// Extra request headers (collector API keys): never logged, never stored.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub service_name: Option<String>,
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Export system instructions and input/output messages (off by default).
    pub capture_content: Option<bool>,
    /// Export the GenAI client metrics too (default true).
    pub metrics: Option<bool>,
    pub metrics_interval_ms: Option<u64>,
    /// How long spans wait to fill a batch before it is sent.
    pub export_delay_ms: Option<u64>,
    pub max_queue_spans: Option<usize>,
    pub max_batch_spans: Option<usize>,
    pub timeout_ms: Option<u64>,
    /// A run with no new call for this long gets its `invoke_agent` span emitted.
    pub invocation_idle_ms: Option<u64>,
    /// How long shutdown may spend flushing what is queued (at most the grace period).
    pub shutdown_timeout_ms: Option<u64>,
}

/// Header values that never show in logs or `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretHeaders(pub Vec<(String, String)>);

impl std::fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| format!("{k}: [redacted]")))
            .finish()
    }
}

/// The validated `[otel]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelConfig {
    pub traces_url: http::Uri,
    pub metrics_url: http::Uri,
    pub headers: SecretHeaders,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    pub capture_content: bool,
    pub metrics: bool,
    pub metrics_interval: Duration,
    pub export_delay: Duration,
    pub max_queue_spans: usize,
    pub max_batch_spans: usize,
    pub timeout: Duration,
    pub invocation_idle: Duration,
    pub shutdown_timeout: Duration,
}

/// `k1=v1,k2=v2` with percent-encoded values (the OTel environment format).
fn parse_pairs(field: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(invalid(
                field,
                "(not shown)",
                "expected key=value pairs separated by commas",
            ));
        };
        out.push((percent_decode(k.trim()), percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn signal_url(base: &str, signal: &str) -> Result<http::Uri, ConfigError> {
    let field = "otel.endpoint";
    let url = format!("{}/v1/{signal}", base.trim_end_matches('/'));
    let uri: http::Uri = url.parse().map_err(|_| invalid(field, base, "not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.authority().is_some() => Ok(uri),
        _ => Err(invalid(
            field,
            base,
            "expected http://HOST:PORT or https://HOST",
        )),
    }
}

impl OtelConfig {
    /// `None` when export is off: no endpoint configured, `enabled = false`, or
    /// `OTEL_SDK_DISABLED=true`. The environment overrides the file.
    pub fn resolve(
        raw: &RawOtel,
        env: &BTreeMap<String, String>,
        shutdown_grace: Duration,
    ) -> Result<Option<OtelConfig>, ConfigError> {
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        if raw.enabled == Some(false) || get("OTEL_SDK_DISABLED") == Some("true") {
            return Ok(None);
        }
        let Some(endpoint) = get("OTEL_EXPORTER_OTLP_ENDPOINT").or(raw.endpoint.as_deref()) else {
            return Ok(None);
        };
        if let Some(protocol) = get("OTEL_EXPORTER_OTLP_PROTOCOL") {
            if protocol != "http/protobuf" {
                return Err(invalid(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    protocol,
                    "llmtap exports OTLP over HTTP with protobuf only (http/protobuf)",
                ));
            }
        }
        let mut headers: BTreeMap<String, String> = raw.headers.clone();
        if let Some(text) = get("OTEL_EXPORTER_OTLP_HEADERS") {
            headers.extend(parse_pairs("OTEL_EXPORTER_OTLP_HEADERS", text)?);
        }
        for name in headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(invalid("otel.headers", name, "not a valid header name"));
            }
        }
        for (name, value) in &headers {
            if http::HeaderValue::from_str(value).is_err() {
                return Err(invalid(
                    &format!("otel.headers.{name}"),
                    "(not shown)",
                    "not a valid header value",
                ));
            }
        }
        let mut resource: BTreeMap<String, String> = raw.resource_attributes.clone();
        if let Some(text) = get("OTEL_RESOURCE_ATTRIBUTES") {
            resource.extend(parse_pairs("OTEL_RESOURCE_ATTRIBUTES", text)?);
        }
        let service_name = get("OTEL_SERVICE_NAME")
            .map(str::to_string)
            .or_else(|| raw.service_name.clone())
            .or_else(|| resource.get("service.name").cloned())
            .unwrap_or_else(|| "llmtap".to_string());
        resource.remove("service.name");
        let ms = |field: &str, value: Option<u64>, default: u64| {
            let v = value.unwrap_or(default);
            if v == 0 {
                return Err(invalid(field, v, "must be greater than 0"));
            }
            Ok(Duration::from_millis(v))
        };
        let count =
            |field: &str, value: Option<usize>, default: usize| match value.unwrap_or(default) {
                0 => Err(invalid(field, 0, "must be greater than 0")),
                v => Ok(v),
            };
        let max_queue_spans = count("otel.max_queue_spans", raw.max_queue_spans, 4096)?;
        let max_batch_spans = count("otel.max_batch_spans", raw.max_batch_spans, 512)?;
        if max_batch_spans > max_queue_spans {
            return Err(invalid(
                "otel.max_batch_spans",
                max_batch_spans,
                "must not exceed otel.max_queue_spans",
            ));
        }
        Ok(Some(OtelConfig {
            traces_url: signal_url(endpoint, "traces")?,
            metrics_url: signal_url(endpoint, "metrics")?,
            headers: SecretHeaders(headers.into_iter().collect()),
            service_name,
            resource_attributes: resource.into_iter().collect(),
            capture_content: raw.capture_content.unwrap_or(false),
            metrics: raw.metrics.unwrap_or(true),
            metrics_interval: ms("otel.metrics_interval_ms", raw.metrics_interval_ms, 60_000)?,
            export_delay: ms("otel.export_delay_ms", raw.export_delay_ms, 1_000)?,
            max_queue_spans,
            max_batch_spans,
            timeout: ms("otel.timeout_ms", raw.timeout_ms, 10_000)?,
            invocation_idle: ms("otel.invocation_idle_ms", raw.invocation_idle_ms, 60_000)?,
            shutdown_timeout: ms("otel.shutdown_timeout_ms", raw.shutdown_timeout_ms, 5_000)?
                .min(shutdown_grace),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const GRACE: Duration = Duration::from_secs(30);

    #[test]
    fn off_unless_an_endpoint_is_configured() {
        assert!(OtelConfig::resolve(&RawOtel::default(), &env(&[]), GRACE)
            .unwrap()
            .is_none());
        let on = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]);
        let config = OtelConfig::resolve(&RawOtel::default(), &on, GRACE)
            .unwrap()
            .unwrap();
        assert_eq!(config.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(config.metrics_url, "http://127.0.0.1:4318/v1/metrics");
        assert_eq!(config.service_name, "llmtap");
        assert!(!config.capture_content);
        let disabled = RawOtel {
            enabled: Some(false),
            ..RawOtel::default()
        };
        assert!(OtelConfig::resolve(&disabled, &on, GRACE)
            .unwrap()
            .is_none());
        let mut sdk_off = on.clone();
        sdk_off.insert("OTEL_SDK_DISABLED".into(), "true".into());
        assert!(OtelConfig::resolve(&RawOtel::default(), &sdk_off, GRACE)
            .unwrap()
            .is_none());
    }

    #[test]
    fn environment_overrides_the_file() {
        let raw = RawOtel {
            endpoint: Some("http://file:4318".into()),
            service_name: Some("from-file".into()),
            headers: [("x-a".to_string(), "1".to_string())].into_iter().collect(),
            ..RawOtel::default()
        };
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env.example"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-b=two%20words, x-a=9"),
            ("OTEL_SERVICE_NAME", "agents"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=ml",
            ),
        ]);
        let config = OtelConfig::resolve(&raw, &e, GRACE).unwrap().unwrap();
        assert_eq!(config.traces_url, "https://env.example/v1/traces");
        assert_eq!(config.service_name, "agents");
        assert_eq!(
            config.headers.0,
            vec![
                ("x-a".to_string(), "9".to_string()),
                ("x-b".to_string(), "two words".to_string())
            ]
        );
        assert_eq!(config.resource_attributes.len(), 2);
        // Header values never show in Debug output (logs).
        let shown = format!("{config:?}");
        assert!(!shown.contains("two words"), "{shown}");
    }

    #[test]
    fn bad_values_are_named() {
        for (raw, e, field) in [
            (
                RawOtel {
                    endpoint: Some("ftp://x".into()),
                    ..RawOtel::default()
                },
                env(&[]),
                "otel.endpoint",
            ),
            (
                RawOtel::default(),
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ]),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                RawOtel::default(),
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
                ]),
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                RawOtel {
                    endpoint: Some("http://a:1".into()),
                    max_queue_spans: Some(0),
                    ..RawOtel::default()
                },
                env(&[]),
                "otel.max_queue_spans",
            ),
        ] {
            let err = OtelConfig::resolve(&raw, &e, GRACE)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn the_example_config_keys_parse() {
        let example = include_str!("../../config/llmtap.toml");
        let section: Vec<&str> = example
            .lines()
            .skip_while(|l| !l.starts_with("# [otel]"))
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect();
        let raw = crate::config::RawConfig::from_toml(&section.join("\n")).unwrap();
        assert!(raw.otel.endpoint.is_some() && raw.otel.shutdown_timeout_ms.is_some());
    }

    #[test]
    fn shutdown_flush_never_outlasts_the_grace_period() {
        let raw = RawOtel {
            endpoint: Some("http://a:1".into()),
            shutdown_timeout_ms: Some(60_000),
            ..RawOtel::default()
        };
        let config = OtelConfig::resolve(&raw, &env(&[]), Duration::from_secs(3))
            .unwrap()
            .unwrap();
        assert_eq!(config.shutdown_timeout, Duration::from_secs(3));
    }
}
