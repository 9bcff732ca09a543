//! OpenTelemetry export: stored calls become GenAI spans and client metrics, sent
//! by OTLP/HTTP (protobuf) to a collector.
//!
//! Follows the GenAI semantic conventions of OpenTelemetry semantic conventions
//! v1.40.0 (status: development); `SCHEMA_URL` names it on every export.
//!
//! Export reads stored records only: the exporter subscribes to the store's live
//! broadcast (published by `write_batch`), reads each call back, and builds its
//! spans on its own task (`exporter.rs`), so it never touches the forward path and
//! never slows the writer. The same builders (`spans.rs`, pure) serve `llmtap otel
//! export --from --to`, which replays a time range into a collector added later;
//! span and trace ids are derived from llmtap's ids, so both give the same ids.
//!
//! Configuration: `[otel]` in the config file, or the standard environment
//! variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), which override the file. Off
//! unless an endpoint is configured.

pub mod exporter;
pub mod metrics;
pub mod spans;

pub use exporter::{replay, Exporter, ReplayReport};

pub use crate::config::otel::{env_from_process, OtelConfig, RawOtel, SecretHeaders, ENV_VARS};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The semantic-conventions version the exported telemetry follows.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.40.0";

/// The resource every export names: service name, llmtap's version, the user's attributes.
pub fn resource(config: &OtelConfig) -> Resource {
    let mut attributes = vec![
        text_kv("service.name", &config.service_name),
        text_kv("telemetry.sdk.name", "llmtap"),
        text_kv("telemetry.sdk.language", "rust"),
        text_kv("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
    ];
    attributes.extend(
        config
            .resource_attributes
            .iter()
            .map(|(k, v)| text_kv(k, v)),
    );
    Resource {
        attributes,
        ..Resource::default()
    }
}

pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "llmtap".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..InstrumentationScope::default()
    }
}

fn text_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
    }
}
