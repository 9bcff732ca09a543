//! Compact summaries of calls and invocations, and the "facets" they are filtered on.
//!
//! Lists, CSV exports and the live stream read summaries, never full records, so no
//! body is decoded to show a page. A stored summary is a small binary header (the
//! facets: time, cost, latency, tokens, and tagged strings such as agent or status)
//! followed by the summary JSON; filters are checked against the header alone.
//! Pure: no sled, no I/O.

use crate::record::{CallRecord, CallStatus, InvocationRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Facet tags. Indexed tags get a secondary index (see `index.rs`).
pub mod tag {
    pub const ALL: u8 = b't';
    pub const AGENT: u8 = b'a';
    pub const PROVIDER: u8 = b'p';
    pub const MODEL: u8 = b'm';
    pub const STATUS: u8 = b's';
    pub const TENANT: u8 = b'n';
    pub const USER: u8 = b'u';
    pub const SESSION: u8 = b'e';
    pub const TRIGGER: u8 = b'r';
    pub const PROMPT: u8 = b'o';
    /// Not indexed: API-key fingerprint, call kind, `key\x1fvalue` properties.
    pub const KEY: u8 = b'k';
    pub const KIND: u8 = b'd';
    pub const PROPERTY: u8 = b'P';
    /// Not indexed: the `x-llmtap-task-id` of a call or run.
    pub const TASK: u8 = b'x';
    /// Index only (never in a header): `1` when the record has a session, else `0`,
    /// so `has_session` joins like any indexed filter.
    pub const HAS_SESSION: u8 = b'h';

    pub const INDEXED: [u8; 9] = [
        AGENT, PROVIDER, MODEL, STATUS, TENANT, USER, SESSION, TRIGGER, PROMPT,
    ];
}

/// A call as list pages read it from the store (the API answers it as
/// `api::answers::CallListItem`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    pub id: String,
    pub invocation_id: String,
    pub round: u32,
    /// Which retry of its round the call is (`CallRecord::retry`).
    #[serde(default)]
    pub retry: u32,
    pub started_at: String,
    pub started_at_us: u64,
    pub ended_at: String,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub provider: String,
    pub kind: String,
    /// The model the request asked for (the response's when the request named none).
    pub model: Option<String>,
    /// The model the provider says answered (often a dated name of `model`).
    #[serde(default)]
    pub response_model: Option<String>,
    pub status: Option<CallStatus>,
    pub http_status: Option<u16>,
    pub stream: bool,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    /// Absent in summaries stored before these fields existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub stop_reason: Option<String>,
    pub error_type: Option<String>,
    pub agent: Option<String>,
    pub trigger: Option<String>,
    pub tenant: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub prompt: Option<String>,
    pub api_key_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// For an MCP exchange: the JSON-RPC method, and the tool of a `tools/call`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// An invocation (agent run) as list pages read it from the store (the API answers it
/// as `api::answers::RunListItem`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvocationSummary {
    pub id: String,
    pub started_at: String,
    pub started_at_us: u64,
    pub ended_at: String,
    pub latency_ms: f64,
    pub agent: Option<String>,
    pub trigger: Option<String>,
    pub tenant: Option<String>,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub prompt: Option<String>,
    #[serde(default)]
    pub task_id: Option<String>,
    pub providers: Vec<String>,
    /// The models the run's requests asked for, in order of first use.
    pub models: Vec<String>,
    /// The models the provider says answered.
    #[serde(default)]
    pub response_models: Vec<String>,
    /// The first model, for tables with one model column.
    pub model: Option<String>,
    pub status: Option<CallStatus>,
    pub rounds: u32,
    /// Attempts beyond each round's first (`agent_loop::LoopState::retries`); 0 in
    /// summaries stored before retries were told apart.
    #[serde(default)]
    pub retries: u32,
    /// Tool calls captured in the run; 0 in summaries stored before they were counted.
    #[serde(default)]
    pub tool_calls: u32,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// What a filter can test without decoding JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facets {
    pub time_us: u64,
    pub cost_pusd: Option<u64>,
    pub latency_us: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub pairs: Vec<(u8, String)>,
}

impl CallSummary {
    pub fn from_record(call: &CallRecord) -> CallSummary {
        let m = &call.metadata;
        CallSummary {
            id: call.id.clone(),
            invocation_id: call.invocation_id.clone(),
            round: call.round,
            retry: call.retry,
            started_at: call.started_at.clone(),
            started_at_us: call.started_at_us,
            ended_at: call.ended_at.clone(),
            latency_ms: call.latency_ms,
            ttft_ms: call.ttft_ms,
            provider: call.provider.clone(),
            kind: call.kind.clone(),
            model: call.model.clone().or_else(|| call.response_model.clone()),
            response_model: call.response_model.clone(),
            status: call.status,
            http_status: call.http_status,
            stream: call.stream,
            input_tokens: call.usage.input_tokens,
            output_tokens: call.usage.output_tokens,
            cache_read_tokens: call.usage.cache_read_tokens,
            cache_creation_tokens: call.usage.cache_creation_tokens,
            cost_usd: call.cost_usd,
            stop_reason: call.stop_reason.clone(),
            error_type: call.error.as_ref().and_then(|e| e.error_type.clone()),
            agent: m.agent.clone(),
            trigger: m.trigger.clone(),
            tenant: m.tenant.clone(),
            user_id: m.user_id.clone(),
            session_id: m.session_id.clone(),
            task_id: m.task_id.clone(),
            prompt: m.prompt.clone(),
            api_key_fingerprint: call.api_key_fingerprint.clone(),
            properties: m.properties.clone(),
            mcp_method: call.mcp.as_ref().and_then(|x| x.method.clone()),
            tool: call.mcp.as_ref().and_then(|x| x.tool.clone()),
        }
    }

    /// Cost in picodollars when the call was priced.
    pub fn cost_pusd(&self) -> Option<u64> {
        self.cost_usd.map(|usd| (usd * 1e12).round() as u64)
    }

    pub fn facets(&self) -> Facets {
        let mut pairs = Vec::with_capacity(12);
        push(&mut pairs, tag::AGENT, &self.agent);
        pairs.push((tag::PROVIDER, self.provider.clone()));
        // Requested model first (what grouping uses), then the answering one, so a
        // model filter matches either.
        push(&mut pairs, tag::MODEL, &self.model);
        push(&mut pairs, tag::MODEL, &self.response_model);
        push(
            &mut pairs,
            tag::STATUS,
            &self.status.map(|s| s.as_str().into()),
        );
        push(&mut pairs, tag::TENANT, &self.tenant);
        push(&mut pairs, tag::USER, &self.user_id);
        push(&mut pairs, tag::SESSION, &self.session_id);
        push(&mut pairs, tag::TRIGGER, &self.trigger);
        push(&mut pairs, tag::PROMPT, &self.prompt);
        push(&mut pairs, tag::KEY, &self.api_key_fingerprint);
        push(&mut pairs, tag::TASK, &self.task_id);
        pairs.push((tag::KIND, self.kind.clone()));
        for (k, v) in &self.properties {
            pairs.push((tag::PROPERTY, format!("{k}\x1f{v}")));
        }
        Facets {
            time_us: self.started_at_us,
            cost_pusd: self.cost_pusd(),
            latency_us: (self.latency_ms * 1000.0) as u64,
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            pairs: clean(pairs),
        }
    }
}

impl InvocationSummary {
    /// `prompt` and `properties` come from the invocation's calls (the record does not keep them).
    pub fn from_record(
        inv: &InvocationRecord,
        prompt: Option<String>,
        properties: BTreeMap<String, String>,
    ) -> InvocationSummary {
        InvocationSummary {
            id: inv.id.clone(),
            started_at: inv.started_at.clone(),
            started_at_us: inv.started_at_us,
            ended_at: inv.ended_at.clone(),
            latency_ms: inv.latency_ms,
            agent: inv.agent.clone(),
            trigger: inv.trigger.clone(),
            tenant: inv.tenant.clone(),
            user_id: inv.user_id.clone(),
            session_id: inv.session_id.clone(),
            prompt,
            task_id: inv.task_id.clone(),
            providers: inv.providers.clone(),
            models: inv.models.clone(),
            response_models: inv.response_models.clone(),
            model: inv.models.first().cloned(),
            status: inv.status,
            rounds: inv.rounds,
            retries: inv.agent_loop.retries,
            tool_calls: inv.agent_loop.tool_calls,
            input_tokens: inv.usage.input_tokens,
            output_tokens: inv.usage.output_tokens,
            cost_usd: inv.cost_usd,
            properties,
        }
    }

    pub fn facets(&self) -> Facets {
        let mut pairs = Vec::with_capacity(12);
        push(&mut pairs, tag::AGENT, &self.agent);
        for p in &self.providers {
            pairs.push((tag::PROVIDER, p.clone()));
        }
        for m in self.models.iter().chain(&self.response_models) {
            pairs.push((tag::MODEL, m.clone()));
        }
        push(
            &mut pairs,
            tag::STATUS,
            &self.status.map(|s| s.as_str().into()),
        );
        push(&mut pairs, tag::TENANT, &self.tenant);
        push(&mut pairs, tag::USER, &self.user_id);
        push(&mut pairs, tag::SESSION, &self.session_id);
        push(&mut pairs, tag::TRIGGER, &self.trigger);
        push(&mut pairs, tag::PROMPT, &self.prompt);
        push(&mut pairs, tag::TASK, &self.task_id);
        for (k, v) in &self.properties {
            pairs.push((tag::PROPERTY, format!("{k}\x1f{v}")));
        }
        Facets {
            time_us: self.started_at_us,
            cost_pusd: self.cost_usd.map(|usd| (usd * 1e12).round() as u64),
            latency_us: (self.latency_ms * 1000.0) as u64,
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            pairs: clean(pairs),
        }
    }
}

fn push(pairs: &mut Vec<(u8, String)>, tag: u8, value: &Option<String>) {
    if let Some(v) = value {
        pairs.push((tag, v.clone()));
    }
}

/// NUL separates index key parts, so it cannot appear in a value; duplicates go.
fn clean(mut pairs: Vec<(u8, String)>) -> Vec<(u8, String)> {
    for (_, v) in pairs.iter_mut() {
        if v.contains('\0') {
            *v = v.replace('\0', "");
        }
    }
    let mut seen = std::collections::HashSet::new();
    pairs.retain(|p| seen.insert(p.clone()));
    pairs
}

const NO_COST: u64 = u64::MAX;

impl Facets {
    /// The binary header: time, cost, latency, tokens (u64 BE each), then
    /// (tag u8, length u16 BE, bytes) per pair.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for n in [
            self.time_us,
            self.cost_pusd.unwrap_or(NO_COST),
            self.latency_us,
            self.input_tokens,
            self.output_tokens,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        for (t, v) in &self.pairs {
            let bytes = &v.as_bytes()[..v.len().min(u16::MAX as usize)];
            out.push(*t);
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// A borrowed view of an encoded header.
#[derive(Debug, Clone, Copy)]
pub struct FacetView<'a> {
    pub time_us: u64,
    pub cost_pusd: Option<u64>,
    pub latency_us: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pairs: PairSource<'a>,
}

/// Where a view's pairs are read from: a stored header (sled keeps summaries in that
/// form), or facets built in memory (an engine that keeps them as columns).
#[derive(Debug, Clone, Copy)]
enum PairSource<'a> {
    Encoded(&'a [u8]),
    Listed(&'a [(u8, String)]),
}

impl<'a> FacetView<'a> {
    /// A view of facets built in memory, with no stored header in between.
    pub fn of(facets: &'a Facets) -> FacetView<'a> {
        FacetView {
            time_us: facets.time_us,
            cost_pusd: facets.cost_pusd,
            latency_us: facets.latency_us,
            input_tokens: facets.input_tokens,
            output_tokens: facets.output_tokens,
            pairs: PairSource::Listed(&facets.pairs),
        }
    }

    pub fn parse(bytes: &'a [u8]) -> Option<FacetView<'a>> {
        let n = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let cost = n(1)?;
        Some(FacetView {
            time_us: n(0)?,
            cost_pusd: (cost != NO_COST).then_some(cost),
            latency_us: n(2)?,
            input_tokens: n(3)?,
            output_tokens: n(4)?,
            pairs: PairSource::Encoded(bytes.get(40..)?),
        })
    }

    pub fn pairs(&self) -> PairIter<'a> {
        PairIter { source: self.pairs }
    }

    /// The first value with `tag`.
    pub fn get(&self, tag: u8) -> Option<&'a str> {
        self.pairs()
            .find(|(t, _)| *t == tag)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    pub fn has(&self, tag: u8, value: &[u8]) -> bool {
        self.pairs().any(|(t, v)| t == tag && v == value)
    }

    /// Every distinct value with `tag`, in header order.
    pub fn all(&self, tag: u8) -> impl Iterator<Item = &'a str> {
        let mut seen: Vec<&'a [u8]> = Vec::new();
        self.pairs().filter_map(move |(t, v)| {
            if t != tag || seen.contains(&v) {
                return None;
            }
            seen.push(v);
            std::str::from_utf8(v).ok()
        })
    }
}

pub struct PairIter<'a> {
    source: PairSource<'a>,
}

impl<'a> Iterator for PairIter<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            PairSource::Encoded(rest) => {
                let t = *rest.first()?;
                let len = u16::from_be_bytes(rest.get(1..3)?.try_into().ok()?) as usize;
                let value = rest.get(3..3 + len)?;
                *rest = &rest[3 + len..];
                Some((t, value))
            }
            PairSource::Listed(rest) => {
                let ((t, value), tail) = rest.split_first()?;
                *rest = tail;
                Some((*t, value.as_bytes()))
            }
        }
    }
}

/// Stored form: u32 BE header length, header, JSON.
pub fn encode_stored<T: Serialize>(
    facets: &Facets,
    summary: &T,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = vec![0u8; 4];
    facets.encode(&mut out);
    let header_len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&super::packed::pack(serde_json::to_vec(summary)?));
    Ok(out)
}

/// A stored summary that is its facet header alone: a call's, whose JSON is made
/// from the call's metadata when read (`CallSummary::from_record`), so the store
/// does not encode and keep the same fields twice.
pub fn encode_header_only(facets: &Facets) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    facets.encode(&mut out);
    let header_len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&header_len.to_be_bytes());
    out
}

/// Splits a stored summary into (header, JSON as packed by `packed.rs`; empty for
/// a call summary stored as its header alone).
pub fn split_stored(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    Some((bytes.get(4..4 + len)?, bytes.get(4 + len..)?))
}

/// A record filter. Tags are ANDed; the values of one tag are ORed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub eq: Vec<(u8, Vec<String>)>,
    pub properties: Vec<(String, String)>,
    pub has_session: Option<bool>,
    pub from_us: Option<u64>,
    pub to_us: Option<u64>,
    pub min_cost_pusd: Option<u64>,
    /// Case-insensitive text in the system prompt or last user message (lowercased).
    pub text: Option<String>,
}

impl Filter {
    /// Everything but `text`, tested on the header.
    pub fn matches(&self, view: &FacetView<'_>) -> bool {
        if self.from_us.is_some_and(|f| view.time_us < f)
            || self.to_us.is_some_and(|t| view.time_us >= t)
        {
            return false;
        }
        if let Some(min) = self.min_cost_pusd {
            if view.cost_pusd.is_none_or(|c| c < min) {
                return false;
            }
        }
        if let Some(want) = self.has_session {
            if view.get(tag::SESSION).is_some() != want {
                return false;
            }
        }
        for (t, values) in &self.eq {
            if !values.iter().any(|v| view.has(*t, v.as_bytes())) {
                return false;
            }
        }
        for (k, v) in &self.properties {
            if !view.has(tag::PROPERTY, format!("{k}\x1f{v}").as_bytes()) {
                return false;
            }
        }
        true
    }

    /// Tests owned facets (the live stream).
    pub fn matches_facets(&self, facets: &Facets) -> bool {
        let mut bytes = Vec::with_capacity(128);
        facets.encode(&mut bytes);
        FacetView::parse(&bytes).is_some_and(|v| self.matches(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_filters() {
        let s = CallSummary {
            id: "c_1".into(),
            started_at_us: 42,
            provider: "openai".into(),
            kind: "openai".into(),
            agent: Some("bot".into()),
            status: Some(CallStatus::Failed),
            cost_usd: Some(0.5),
            properties: [("env".to_string(), "prod".to_string())].into(),
            ..CallSummary::default()
        };
        let stored = encode_stored(&s.facets(), &s).unwrap();
        let (header, json) = split_stored(&stored).unwrap();
        let view = FacetView::parse(header).unwrap();
        assert_eq!(view.time_us, 42);
        assert_eq!(view.cost_pusd, Some(500_000_000_000));
        assert_eq!(view.get(tag::AGENT), Some("bot"));
        let back: CallSummary =
            serde_json::from_slice(&super::super::packed::unpack(json).unwrap()).unwrap();
        assert_eq!(back, s);
        let check = |f: Filter| f.matches(&view);
        assert!(check(Filter::default()));
        assert!(check(Filter {
            eq: vec![(tag::STATUS, vec!["success".into(), "failed".into()])],
            properties: vec![("env".into(), "prod".into())],
            has_session: Some(false),
            from_us: Some(42),
            to_us: Some(43),
            min_cost_pusd: Some(1),
            ..Filter::default()
        }));
        assert!(!check(Filter {
            to_us: Some(42),
            ..Filter::default()
        }));
        assert!(!check(Filter {
            has_session: Some(true),
            ..Filter::default()
        }));
        assert!(!check(Filter {
            eq: vec![(tag::AGENT, vec!["bo".into()])],
            ..Filter::default()
        }));
        assert!(!check(Filter {
            min_cost_pusd: Some(600_000_000_000),
            ..Filter::default()
        }));
        assert!(!check(Filter {
            properties: vec![("env".into(), "dev".into())],
            ..Filter::default()
        }));
    }
    #[test]
    fn a_view_of_facets_in_memory_reads_as_the_stored_header_does() {
        let s = CallSummary {
            id: "c_2".into(),
            started_at_us: 7,
            provider: "anthropic".into(),
            kind: "anthropic".into(),
            agent: Some("bot".into()),
            model: Some("claude".into()),
            response_model: Some("claude-1".into()),
            status: Some(CallStatus::Success),
            latency_ms: 12.5,
            input_tokens: Some(3),
            properties: [("env".to_string(), "prod".to_string())].into(),
            ..CallSummary::default()
        };
        let facets = s.facets();
        let stored = encode_header_only(&facets);
        let parsed = FacetView::parse(split_stored(&stored).unwrap().0).unwrap();
        let listed = FacetView::of(&facets);
        assert_eq!(
            listed.pairs().collect::<Vec<_>>(),
            parsed.pairs().collect::<Vec<_>>()
        );
        assert!(listed.pairs().count() >= 5);
        assert_eq!(
            listed.all(tag::MODEL).collect::<Vec<_>>(),
            vec!["claude", "claude-1"]
        );
        assert_eq!(
            (
                listed.time_us,
                listed.cost_pusd,
                listed.latency_us,
                listed.input_tokens
            ),
            (
                parsed.time_us,
                parsed.cost_pusd,
                parsed.latency_us,
                parsed.input_tokens
            )
        );
    }
}
