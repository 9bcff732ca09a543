//! The GenAI client metrics, aggregated from stored calls and exported by OTLP:
//! `gen_ai.client.token.usage`, `gen_ai.client.operation.duration` and
//! `gen_ai.client.operation.time_to_first_chunk` (streams only), as cumulative
//! explicit-bucket histograms with the conventions' bucket boundaries.
//!
//! Pure. Memory is bounded: past `MAX_SERIES` attribute sets per metric, new
//! sets go to one overflow series (`otel.metric.overflow = true`), as the
//! OpenTelemetry SDKs do.

use super::spans::{error_type, operation_name, provider_name, server_address, SpanOptions};
use crate::record::CallRecord;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
};
use std::collections::BTreeMap;

/// Attribute sets per metric before new ones go to the overflow series.
pub const MAX_SERIES: usize = 2000;

const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const DURATION_BUCKETS_S: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

type Attributes = Vec<(&'static str, AttrValue)>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum AttrValue {
    Text(String),
    Int(i64),
    Bool(bool),
}

#[derive(Debug, Clone)]
struct Series {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Series {
    fn new(buckets: usize) -> Series {
        Series {
            counts: vec![0; buckets + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

#[derive(Debug)]
struct HistogramState {
    name: &'static str,
    description: &'static str,
    unit: &'static str,
    bounds: &'static [f64],
    series: BTreeMap<Attributes, Series>,
}

impl HistogramState {
    fn record(&mut self, mut attrs: Attributes, value: f64) {
        if !self.series.contains_key(&attrs) && self.series.len() >= MAX_SERIES {
            attrs = vec![("otel.metric.overflow", AttrValue::Bool(true))];
        }
        let buckets = self.bounds.len();
        let series = self
            .series
            .entry(attrs)
            .or_insert_with(|| Series::new(buckets));
        // Explicit buckets are upper-inclusive: (bound[i-1], bound[i]].
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(buckets);
        series.counts[i] += 1;
        series.count += 1;
        series.sum += value;
        series.min = series.min.min(value);
        series.max = series.max.max(value);
    }

    fn to_metric(&self, start_ns: u64, now_ns: u64) -> Option<Metric> {
        if self.series.is_empty() {
            return None;
        }
        let data_points = self
            .series
            .iter()
            .map(|(attrs, s)| HistogramDataPoint {
                attributes: attrs.iter().map(|(k, v)| key_value(k, v)).collect(),
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                count: s.count,
                sum: Some(s.sum),
                bucket_counts: s.counts.clone(),
                explicit_bounds: self.bounds.to_vec(),
                min: Some(s.min),
                max: Some(s.max),
                ..HistogramDataPoint::default()
            })
            .collect();
        Some(Metric {
            name: self.name.to_string(),
            description: self.description.to_string(),
            unit: self.unit.to_string(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Metric::default()
        })
    }
}

fn key_value(key: &str, value: &AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Text(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
    };
    KeyValue {
        key: key.to_string(),
        key_strindex: 0,
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// The three client histograms, cumulative since `start_ns`.
#[derive(Debug)]
pub struct ClientMetrics {
    start_ns: u64,
    token_usage: HistogramState,
    duration: HistogramState,
    time_to_first_chunk: HistogramState,
}

impl ClientMetrics {
    pub fn new(start_ns: u64) -> ClientMetrics {
        ClientMetrics {
            start_ns,
            token_usage: HistogramState {
                name: "gen_ai.client.token.usage",
                description: "Number of input and output tokens used.",
                unit: "{token}",
                bounds: &TOKEN_BUCKETS,
                series: BTreeMap::new(),
            },
            duration: HistogramState {
                name: "gen_ai.client.operation.duration",
                description: "GenAI operation duration.",
                unit: "s",
                bounds: &DURATION_BUCKETS_S,
                series: BTreeMap::new(),
            },
            time_to_first_chunk: HistogramState {
                name: "gen_ai.client.operation.time_to_first_chunk",
                description: "Time to receive the first chunk of a streaming response.",
                unit: "s",
                bounds: &DURATION_BUCKETS_S,
                series: BTreeMap::new(),
            },
        }
    }

    /// Adds one stored call (inference calls only).
    pub fn record(&mut self, call: &CallRecord, options: &SpanOptions) {
        let Some(operation) =
            operation_name(call.endpoint).filter(|_| crate::record::is_round_kind(&call.kind))
        else {
            return;
        };
        let mut attrs: Attributes = vec![
            ("gen_ai.operation.name", AttrValue::Text(operation.into())),
            (
                "gen_ai.provider.name",
                AttrValue::Text(provider_name(&call.provider).into()),
            ),
        ];
        if let Some(model) = &call.model {
            attrs.push(("gen_ai.request.model", AttrValue::Text(model.clone())));
        }
        if let Some(model) = &call.response_model {
            attrs.push(("gen_ai.response.model", AttrValue::Text(model.clone())));
        }
        let (address, port) = server_address(call, options);
        attrs.push(("server.address", AttrValue::Text(address)));
        if let Some(port) = port {
            attrs.push(("server.port", AttrValue::Int(i64::from(port))));
        }
        if let Some(agent) = &call.metadata.agent {
            attrs.push(("gen_ai.agent.name", AttrValue::Text(agent.clone())));
        }
        for (kind, tokens) in [
            ("input", call.usage.input_tokens),
            ("output", call.usage.output_tokens),
        ] {
            if let Some(tokens) = tokens {
                let mut a = attrs.clone();
                a.push(("gen_ai.token.type", AttrValue::Text(kind.into())));
                a.sort();
                self.token_usage.record(a, tokens as f64);
            }
        }
        if call.stream {
            if let Some(ttft) = call.ttft_ms {
                let mut a = attrs.clone();
                a.sort();
                self.time_to_first_chunk.record(a, ttft / 1000.0);
            }
        }
        if let Some(e) = error_type(call) {
            attrs.push(("error.type", AttrValue::Text(e)));
        }
        attrs.sort();
        self.duration
            .record(attrs, call.latency_ms.max(0.0) / 1000.0);
    }

    /// The metrics as of `now_ns` (empty histograms are left out).
    pub fn snapshot(&self, now_ns: u64) -> Vec<Metric> {
        [&self.token_usage, &self.duration, &self.time_to_first_chunk]
            .iter()
            .filter_map(|h| h.to_metric(self.start_ns, now_ns))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CallStatus, Endpoint, Usage};

    fn call(input: u64, latency_ms: f64, stream: bool) -> CallRecord {
        CallRecord {
            provider: "anthropic".into(),
            kind: "anthropic".into(),
            endpoint: Some(Endpoint::Messages),
            upstream_host: "api.anthropic.com".into(),
            status: Some(CallStatus::Success),
            model: Some("claude".into()),
            usage: Usage {
                input_tokens: Some(input),
                output_tokens: Some(7),
                ..Usage::default()
            },
            latency_ms,
            stream,
            ttft_ms: Some(30.0),
            ..CallRecord::default()
        }
    }

    fn histogram(m: &Metric) -> &Histogram {
        match m.data.as_ref().unwrap() {
            metric::Data::Histogram(h) => h,
            _ => panic!("not a histogram"),
        }
    }

    #[test]
    fn token_usage_splits_input_and_output_into_buckets() {
        let mut m = ClientMetrics::new(1);
        let options = SpanOptions::default();
        m.record(&call(100, 50.0, false), &options);
        m.record(&call(3000, 2000.0, true), &options);
        let metrics = m.snapshot(2);
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gen_ai.client.token.usage",
                "gen_ai.client.operation.duration",
                "gen_ai.client.operation.time_to_first_chunk"
            ]
        );
        let tokens = histogram(&metrics[0]);
        assert_eq!(tokens.data_points.len(), 2, "input and output series");
        let input = tokens
            .data_points
            .iter()
            .find(|p| {
                p.attributes.iter().any(|kv| {
                    kv.key == "gen_ai.token.type"
                        && kv.value.as_ref().unwrap().value
                            == Some(any_value::Value::StringValue("input".into()))
                })
            })
            .unwrap();
        assert_eq!(input.count, 2);
        assert_eq!(input.sum, Some(3100.0));
        // 100 falls in (64, 256], 3000 in (1024, 4096].
        assert_eq!(input.bucket_counts[4], 1);
        assert_eq!(input.bucket_counts[6], 1);
        let duration = histogram(&metrics[1]);
        assert_eq!(duration.data_points[0].count, 2);
        assert_eq!(
            histogram(&metrics[2]).data_points[0].count,
            1,
            "streams only"
        );
    }

    #[test]
    fn series_are_bounded() {
        let mut m = ClientMetrics::new(1);
        let options = SpanOptions::default();
        for i in 0..(MAX_SERIES + 50) {
            let mut c = call(1, 1.0, false);
            c.model = Some(format!("model-{i}"));
            m.record(&c, &options);
        }
        let duration = histogram(&m.snapshot(2)[1]).data_points.len();
        assert_eq!(duration, MAX_SERIES + 1);
    }
}
