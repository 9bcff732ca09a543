//! The OpenAPI 3 description of the read API, served at `/api/v1/openapi.json`.
//! Kept beside the router; an integration test checks every route is described.

use serde_json::{json, Value};

fn param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn string_param(name: &str, description: &str) -> Value {
    param(name, description, json!({"type": "string"}))
}

fn filter_params() -> Vec<Value> {
    vec![
        string_param(
            "agent",
            "agent name (x-llmtap-agent); repeatable, values ORed",
        ),
        string_param("provider", "provider name, e.g. openai"),
        string_param(
            "model",
            "model name, requested or answered (a call matches on either)",
        ),
        param(
            "status",
            "repeatable",
            json!({"type": "string", "enum": ["success", "failed", "timeout", "rate_limited", "canceled", "unauthorized"]}),
        ),
        param(
            "trigger",
            "what started the run (x-llmtap-trigger); repeatable",
            json!({"type": "string", "enum": ["user", "system", "task"]}),
        ),
        string_param(
            "tenant",
            "tenant; a tenant-confined token may only pass its own",
        ),
        string_param("user_id", "end user"),
        string_param("session_id", "conversation session"),
        string_param("prompt", "prompt name and version, e.g. summarise@v3"),
        string_param(
            "task",
            "task id (x-llmtap-task-id); repeatable, values ORed",
        ),
        json!({"name": "property.<key>", "in": "query", "required": false,
               "description": "property.KEY=VALUE matches x-llmtap-property-KEY", "schema": {"type": "string"}}),
        param(
            "has_session",
            "records with (true) or without (false) a session",
            json!({"type": "boolean"}),
        ),
        string_param("from", "inclusive; RFC 3339 or YYYY-MM-DD (UTC midnight)"),
        string_param("to", "exclusive; RFC 3339 or YYYY-MM-DD"),
        param(
            "min_cost",
            "minimum cost in USD",
            json!({"type": "number", "minimum": 0}),
        ),
        string_param(
            "q",
            "admin only: case-insensitive text in the system prompt or last user message",
        ),
    ]
}

fn page_params() -> Vec<Value> {
    vec![
        param(
            "limit",
            "page size",
            json!({"type": "integer", "minimum": 1, "maximum": 200, "default": 20}),
        ),
        string_param(
            "cursor",
            "next_cursor of the previous page (opaque; stable while records arrive)",
        ),
        param(
            "offset",
            "alternative to cursor",
            json!({"type": "integer", "minimum": 0, "maximum": 10000}),
        ),
    ]
}

fn op(summary: &str, params: Vec<Value>, schema: &str, content_type: &str) -> Value {
    json!({"get": {
        "summary": summary,
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": {content_type: {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
            "400": {"$ref": "#/components/responses/BadParameter"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "403": {"$ref": "#/components/responses/Forbidden"},
            "404": {"$ref": "#/components/responses/NotFound"},
            "503": {"$ref": "#/components/responses/StoreOpening"}
        }
    }})
}

fn id_param(what: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": format!("{what} id"), "schema": {"type": "string"}})
}

fn concat(a: Vec<Value>, b: Vec<Value>) -> Vec<Value> {
    a.into_iter().chain(b).collect()
}

pub fn document() -> Value {
    let list_params = || concat(filter_params(), page_params());
    let error = json!({"type": "object", "properties": {"error": {"type": "object", "properties": {
        "type": {"type": "string"}, "message": {"type": "string"}, "parameter": {"type": "string"}}}}});
    let page = |item: &str| {
        json!({"type": "object", "required": ["items", "count", "total", "has_more"], "properties": {
        "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
        "count": {"type": "integer"},
        "total": {"type": "integer", "description": "exact up to 10000 matches (and 20000 examined candidates), then a lower bound"},
        "total_is_lower_bound": {"type": "boolean"},
        "has_more": {"type": "boolean"},
        "next_cursor": {"type": ["string", "null"]},
        "next_offset": {"type": ["integer", "null"]}}})
    };
    let object = json!({"type": "object", "additionalProperties": true});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "llmtap read API", "version": "1",
                 "description": "Records of LLM calls captured by llmtap. Authorization: Bearer <token> when tokens are configured. Viewers never see bodies, messages, prompts or tool arguments; admin reads of them are audited."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/invocations": op("Invocations (agent runs), newest first", list_params(), "InvocationPage", "application/json"),
            "/calls": op("Calls, newest first", list_params(), "CallPage", "application/json"),
            "/invocations/{id}": op("One invocation with its rounds, tool calls joined to their results, and failure hints", vec![id_param("invocation")], "InvocationDetail", "application/json"),
            "/calls/{id}": op("One full call record (bodies for admins only) with a failure hint", vec![id_param("call")], "CallRecord", "application/json"),
            "/sessions": op("Sessions, newest first", concat(vec![string_param("tenant", "tenant")], page_params()), "SessionPage", "application/json"),
            "/sessions/{id}": op("One session's timeline: LLM calls and tool HTTP calls in order", vec![id_param("session"), param("limit", "most timeline entries", json!({"type": "integer", "maximum": 10000}))], "SessionDetail", "application/json"),
            "/summary": op("Totals, today and the last 24 hours", vec![string_param("tenant", "tenant"), string_param("tz", "UTC (default) or a fixed offset like +02:00 (multiple of 15 minutes) that defines 'today'")], "Summary", "application/json"),
            "/agents": op("Per agent: invocations, calls, cost, tokens, error rate, latency percentiles", vec![string_param("tenant", "tenant")], "Agents", "application/json"),
            "/stats": op("Grouped statistics over the filtered calls", concat(vec![param("group_by", "grouping", json!({"type": "string", "enum": ["agent", "model", "provider", "prompt", "trigger", "tenant", "day", "hour"]}))], filter_params()), "Stats", "application/json"),
            "/ratelimits": op("Latest rate-limit state per provider, key and model", vec![param("series", "include the remaining-capacity series", json!({"type": "boolean"})), string_param("provider", "provider"), string_param("from", "series start (default: 24 hours ago)"), param("points", "most series points", json!({"type": "integer", "maximum": 5000}))], "RateLimits", "application/json"),
            "/invocations.csv": op("Invocations as RFC 4180 CSV, streamed", filter_params(), "Csv", "text/csv"),
            "/calls.csv": op("Calls as RFC 4180 CSV, streamed", filter_params(), "Csv", "text/csv"),
            "/stream": op("Server-Sent Events: `call` and `invocation` summaries as they are stored", concat(vec![param("type", "which events", json!({"type": "string", "enum": ["all", "calls", "invocations"]}))], filter_params().into_iter().filter(|p| p["name"] != "q").collect()), "Sse", "text/event-stream"),
            "/audit": op("Admin reads of bodies (admin token not confined to a tenant)", vec![param("limit", "entries", json!({"type": "integer", "maximum": 1000})), string_param("before", "RFC 3339")], "Audit", "application/json"),
            "/openapi.json": op("This document", vec![], "Object", "application/json")
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "BadParameter": {"description": "a parameter is unknown or invalid; error.parameter names it", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Unauthorized": {"description": "missing or unknown token", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Forbidden": {"description": "role or tenant does not allow it (no hint whether the record exists)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "NotFound": {"description": "unknown id", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "StoreOpening": {"description": "the store is still opening after a start (error type `store_opening`, `Retry-After` header); the proxy already forwards", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            },
            "schemas": {
                "Error": error,
                "InvocationPage": page("InvocationSummary"),
                "CallPage": page("CallSummary"),
                "SessionPage": page("SessionSummary"),
                "InvocationSummary": {"type": "object", "properties": {
                    "id": {"type": "string"}, "started_at": {"type": "string"}, "ended_at": {"type": "string"},
                    "latency_ms": {"type": "number"}, "agent": {"type": ["string", "null"]}, "trigger": {"type": ["string", "null"]},
                    "tenant": {"type": ["string", "null"]}, "providers": {"type": "array", "items": {"type": "string"}},
                    "models": {"type": "array", "items": {"type": "string"}, "description": "requested models"},
                    "response_models": {"type": "array", "items": {"type": "string"}, "description": "models the provider says answered"},
                    "model": {"type": ["string", "null"]},
                    "status": {"type": ["string", "null"]}, "rounds": {"type": "integer"},
                    "input_tokens": {"type": ["integer", "null"]}, "output_tokens": {"type": ["integer", "null"]},
                    "cost_usd": {"type": ["number", "null"]}}},
                "CallSummary": {"type": "object", "properties": {
                    "id": {"type": "string"}, "invocation_id": {"type": "string"}, "round": {"type": "integer"},
                    "started_at": {"type": "string"}, "latency_ms": {"type": "number"}, "provider": {"type": "string"},
                    "model": {"type": ["string", "null"], "description": "requested model"},
                    "response_model": {"type": ["string", "null"], "description": "model the provider says answered"},
                    "status": {"type": ["string", "null"]},
                    "input_tokens": {"type": ["integer", "null"]}, "output_tokens": {"type": ["integer", "null"]},
                    "cost_usd": {"type": ["number", "null"]}, "agent": {"type": ["string", "null"]}, "trigger": {"type": ["string", "null"]}}},
                "SessionSummary": {"type": "object", "properties": {
                    "id": {"type": "string"}, "subject": {"type": ["string", "null"], "description": "admins only"},
                    "agent": {"type": ["string", "null"]}, "calls": {"type": "integer"}, "input_tokens": {"type": "integer"},
                    "output_tokens": {"type": "integer"}, "cost_usd": {"type": "number"},
                    "first_at": {"type": "string"}, "last_at": {"type": "string"}}},
                "InvocationDetail": object.clone(),
                "CallRecord": object.clone(),
                "SessionDetail": object.clone(),
                "Summary": {"type": "object", "properties": {
                    "total_runs": {"type": "integer"}, "runs_today": {"type": "integer"}, "errors_24h": {"type": "integer"},
                    "cost_today_usd": {"type": "number"}, "tokens_today": {"type": "object"}}},
                "Agents": object.clone(),
                "Stats": object.clone(),
                "RateLimits": object.clone(),
                "Audit": object.clone(),
                "Object": object,
                "Csv": {"type": "string"},
                "Sse": {"type": "string"}
            }
        }
    })
}
