//! A record's stored form that does not depend on the engine: what sled's `calls`
//! tree and PostgreSQL's `calls.record` column hold of a call besides its content.
//! One definition, so both engines answer `get_call_meta` with the same JSON.

use crate::record::CallRecord;

/// What an engine stores as a call's metadata: the record without its content (built field
/// by field so the bodies are never copied).
pub fn metadata_only(call: &CallRecord) -> CallRecord {
    let mut meta = empty_clone(call);
    meta.metadata.prompt_variables = None;
    meta.metadata.user_prompt_variables = None;
    meta
}

/// A clone of `call` whose bulky fields are left empty.
fn empty_clone(call: &CallRecord) -> CallRecord {
    CallRecord {
        id: call.id.clone(),
        invocation_id: call.invocation_id.clone(),
        round: call.round,
        retry: call.retry,
        request_digest: call.request_digest.clone(),
        grouped_by_conversation: call.grouped_by_conversation.clone(),
        started_at: call.started_at.clone(),
        ended_at: call.ended_at.clone(),
        stored_at: call.stored_at.clone(),
        started_at_us: call.started_at_us,
        latency_ms: call.latency_ms,
        ttft_ms: call.ttft_ms,
        first_byte_ms: call.first_byte_ms,
        provider: call.provider.clone(),
        kind: call.kind.clone(),
        endpoint: call.endpoint,
        method: call.method.clone(),
        path: call.path.clone(),
        upstream_host: call.upstream_host.clone(),
        http_status: call.http_status,
        status: call.status,
        stream: call.stream,
        model: call.model.clone(),
        response_model: call.response_model.clone(),
        usage: call.usage.clone(),
        raw_usage: call.raw_usage.clone(),
        cost_usd: call.cost_usd,
        cost: call.cost.clone(),
        stop_reason: call.stop_reason.clone(),
        error: call.error.clone(),
        rate_limit: call.rate_limit.clone(),
        metadata: call.metadata.clone(),
        api_key_fingerprint: call.api_key_fingerprint.clone(),
        client: call.client.clone(),
        request_bytes: call.request_bytes,
        response_bytes: call.response_bytes,
        truncated: call.truncated,
        truncated_parts: call.truncated_parts.clone(),
        request_headers: call.request_headers.clone(),
        response_headers: call.response_headers.clone(),
        parse_notes: call.parse_notes.clone(),
        attachments: call.attachments.clone(),
        mcp: call
            .mcp
            .as_ref()
            .map(crate::record::McpExchange::without_content),
        ..CallRecord::default()
    }
}

/// The picodollars a cost counts for in rollups (priced costs only).
pub fn priced_pusd(cost: &Option<crate::record::Cost>) -> u64 {
    cost.as_ref()
        .filter(|c| c.priced)
        .map_or(0, |c| c.total_pusd)
}

/// Repricing's rule, the same on every engine: a call with usage takes the cost the
/// pricer gives; one without keeps its own. When that changes the cost, the call
/// gets it (and its USD figure) and the picodollars it counted for before come
/// back; otherwise `None` and the call is untouched.
pub fn reprice_call(
    call: &mut CallRecord,
    price: &mut dyn FnMut(&CallRecord) -> Option<crate::record::Cost>,
) -> Option<u64> {
    let new = if call.usage.is_empty() {
        call.cost.clone()
    } else {
        price(call)
    };
    if new == call.cost {
        return None;
    }
    let old_pusd = priced_pusd(&call.cost);
    call.cost_usd = new.as_ref().filter(|c| c.priced).and_then(|c| c.total_usd);
    call.cost = new;
    Some(old_pusd)
}
