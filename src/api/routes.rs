//! The read API's one route table: method, path pattern, handler, role, summary,
//! parameters and response of every endpoint.
//!
//! The dispatcher (`api::dispatch`) finds the route here, checks its role and its
//! parameters, and calls its handler; `openapi.rs` writes the OpenAPI document from the
//! same table and from the response types' schemas; the integration test walks it. An
//! endpoint therefore cannot exist without being documented, nor be documented without
//! answering. To add one, add a row to `ROUTES`.

use super::answers;
use super::auth::Principal;
use super::params::{ParamKind, ParamSpec, Params, FILTER_PARAMS, PAGE_PARAMS};
use super::{content, export, prompt_logs, views, ApiError, ApiResult, ApiState};
use http::Method;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use std::sync::Arc;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (liveness, the API description, the web page).
    Public,
    /// Any configured token (viewer or admin); handlers redact for viewers.
    Viewer,
    /// An admin token; the dispatcher refuses viewers before the handler runs.
    Admin,
}

/// The segments of the request path that matched `{name}` parts, plus the request's
/// own path and query (for audit entries).
#[derive(Debug, Clone, Default)]
pub struct PathArgs {
    pub path: String,
    pub query: String,
    values: Vec<(&'static str, String)>,
}

impl PathArgs {
    /// The path with its query string as sent: what an audit entry records.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The value of the `{name}` segment; empty when the route has none of that name.
    pub fn get(&self, name: &str) -> &str {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

pub type ReadHandler = fn(&ApiState, &Principal, &Params, &PathArgs) -> ApiResult;
pub type StreamHandler = fn(&Arc<ApiState>, &Principal, &Params, &PathArgs) -> ApiResult;
pub type PublicHandler = fn(&ApiState, &Params, &PathArgs) -> ApiResult;
/// A report's request headers and its body (read whole, at most
/// `ingest::MAX_REPORT_BYTES`).
pub type IngestHandler = fn(&ApiState, &Principal, &http::HeaderMap, &[u8]) -> ApiResult;

/// How a route's handler runs.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Cheap and unauthenticated; answered inline.
    Public(PublicHandler),
    /// Reads the store: runs on tokio's blocking pool.
    Read(ReadHandler),
    /// Answers at once with a streamed body that a task of its own feeds.
    Stream(StreamHandler),
    /// Takes a report (a POST body, described by the schema) into the capture path.
    Ingest(IngestHandler, fn(&mut SchemaGenerator) -> Schema),
}

/// What a successful answer carries.
#[derive(Clone, Copy)]
pub enum Payload {
    /// JSON described by a type's schema.
    Json(fn(&mut SchemaGenerator) -> Schema),
    /// Text in the route's content type (CSV, SSE, Prometheus exposition).
    Text,
    /// Bytes in the media type they were stored with.
    Binary,
}

#[derive(Clone, Copy)]
pub struct Reply {
    pub content_type: &'static str,
    pub payload: Payload,
    pub description: &'static str,
}

pub struct Route {
    pub method: Method,
    /// Literal segments and `{name}` placeholders that match one segment each.
    pub path: &'static str,
    pub handler: Handler,
    pub access: Access,
    pub summary: &'static str,
    /// Accepted query parameters, in groups; anything else is a 400.
    pub params: &'static [&'static [ParamSpec]],
    pub reply: Reply,
}

impl Route {
    /// Matches `path` against the pattern, returning the placeholder values.
    pub fn matches(&self, path: &str) -> Option<Vec<(&'static str, String)>> {
        let mut values = Vec::new();
        let mut want = self.path.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return Some(values),
                (Some(w), Some(g)) => {
                    if let Some(name) = w.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                        if g.is_empty() {
                            return None;
                        }
                        values.push((name, g.to_string()));
                    } else if w != g {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }

    /// The names of the `{name}` placeholders, in order.
    pub fn path_params(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|n| n.strip_suffix('}')))
    }
}

/// The route for `path`, and whether some route has that path with another method.
pub fn find(method: &Method, path: &str) -> Result<(&'static Route, PathArgs), bool> {
    let mut other_method = false;
    for route in ROUTES {
        if let Some(values) = route.matches(path) {
            let method_ok =
                route.method == *method || (*method == Method::HEAD && route.method == Method::GET);
            if method_ok {
                let args = PathArgs {
                    path: path.to_string(),
                    query: String::new(),
                    values,
                };
                return Ok((route, args));
            }
            other_method = true;
        }
    }
    Err(other_method)
}

pub fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

const fn json(payload: fn(&mut SchemaGenerator) -> Schema, description: &'static str) -> Reply {
    Reply {
        content_type: "application/json",
        payload: Payload::Json(payload),
        description,
    }
}

const TENANT: &[ParamSpec] = &[ParamSpec::text(
    "tenant",
    "tenant; a tenant-confined token may only pass its own",
)];
/// For a client-chosen id of an invocation or session: which tenant's record is meant.
const SCOPED_ID_TENANT: &[ParamSpec] = &[ParamSpec::text(
    "tenant",
    "the tenant whose record of this client-chosen id is meant (a tenant's ids are stored as id@tenant; 409 ambiguous_id when several tenants used it)",
)];
const INVOCATION: &[ParamSpec] = &[ParamSpec::query(
    "calls",
    "include the full call records (default true); false answers the rounds only",
    ParamKind::Boolean,
)];
const SUMMARY: &[ParamSpec] = &[ParamSpec::text(
    "tz",
    "the time zone that defines today: UTC (default), a fixed offset like +02:00 (a multiple of 15 minutes; an unencoded + is accepted) or an IANA name like Europe/Berlin",
)];
/// The session list's filters (`SessionFilter`, store/index.rs).
const SESSION_FILTERS: &[ParamSpec] = &[
    ParamSpec::text(
        "tenant",
        "tenant; a tenant-confined token may only pass its own",
    ),
    ParamSpec::text(
        "from",
        "sessions active at or after this time (their last call started then or later); RFC 3339 or YYYY-MM-DD (UTC midnight)",
    ),
    ParamSpec::text(
        "to",
        "sessions active before this time (their first call started earlier), exclusive; RFC 3339 or YYYY-MM-DD",
    ),
    ParamSpec::text("agent", "the session's agent (its first call's x-llmtap-agent)"),
    ParamSpec::text(
        "model",
        "a model one of the session's LLM calls asked for or was answered by",
    ),
];
const SESSION: &[ParamSpec] = &[
    ParamSpec::query(
        "limit",
        "most timeline entries",
        ParamKind::Integer {
            min: 1,
            max: 10_000,
            default: Some(2000),
        },
    ),
    ParamSpec::query(
        "conversation",
        "also read the session as a conversation (`conversation`: user turns, replies, tool calls with arguments and results, tool HTTP and MCP calls, failures; texts for admins only), from at most the newest 500 calls",
        ParamKind::Boolean,
    ),
];
const STATS: &[ParamSpec] = &[ParamSpec::query(
    "group_by",
    "grouping (default agent)",
    ParamKind::OneOf(&[
        "agent", "model", "provider", "tool", "prompt", "trigger", "tenant", "day", "hour",
    ]),
)];
const RATELIMITS: &[ParamSpec] = &[
    ParamSpec::query(
        "series",
        "include the remaining-capacity series",
        ParamKind::Boolean,
    ),
    ParamSpec::text("provider", "provider"),
    ParamSpec::text("from", "series start (default: 24 hours ago)"),
    ParamSpec::query(
        "points",
        "most series points",
        ParamKind::Integer {
            min: 1,
            max: 5000,
            default: Some(200),
        },
    ),
];
/// Paging of the CSV exports: either parameter asks for one page instead of the stream.
const CSV_PAGE: &[ParamSpec] = &[
    ParamSpec::query(
        "limit",
        "rows of one page (default 20 with cursor); without limit and cursor every row is streamed",
        ParamKind::Integer {
            min: 1,
            max: super::params::MAX_LIMIT as u64,
            default: None,
        },
    ),
    ParamSpec::text(
        "cursor",
        "the previous page's x-llmtap-next-cursor header (opaque)",
    ),
];
const STREAM: &[ParamSpec] = &[ParamSpec::query(
    "type",
    "which events (q is refused here: no text search on the live stream)",
    ParamKind::OneOf(&["all", "calls", "invocations"]),
)];
const AUDIT: &[ParamSpec] = &[
    ParamSpec::query(
        "limit",
        "entries",
        ParamKind::Integer {
            min: 1,
            max: 1000,
            default: Some(100),
        },
    ),
    ParamSpec::text("before", "RFC 3339"),
];
const RAW: &[ParamSpec] = &[ParamSpec::query(
    "part",
    "which body (default request)",
    ParamKind::OneOf(&["request", "response"]),
)];

fn calls(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    views::list(s, w, p, false, &a.target())
}
fn ingest_mcp(s: &ApiState, w: &Principal, headers: &http::HeaderMap, body: &[u8]) -> ApiResult {
    let report: crate::ingest::McpReport = serde_json::from_slice(body)
        .map_err(|e| super::ApiError::BadBody(format!("not an MCP exchange report: {e}")))?;
    match crate::ingest::mcp_exchange(&s.proxy, report, headers.clone(), w.tenant.as_deref(), None)
    {
        Ok(call_id) => super::ok(&answers::Ingested { call_id }),
        Err(crate::ingest::IngestError::Invalid(m)) => Err(super::ApiError::BadBody(m)),
        Err(e @ crate::ingest::IngestError::BacklogFull) => {
            Err(super::ApiError::WritesFailing(e.to_string()))
        }
    }
}
fn prompt_logs(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    prompt_logs::prompt_logs(s, w, p, &a.target())
}
fn invocations(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    views::list(s, w, p, true, &a.target())
}
fn call(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    views::call(s, w, p, a.get("id"), &a.target())
}
fn call_raw(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    content::raw(s, w, p, a.get("id"), &a.target())
}
fn blob(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    content::blob(s, w, p, a.get("sha256"), &a.target())
}
fn invocation(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    views::invocation(s, w, p, a.get("id"), &a.target())
}
fn sessions(s: &ApiState, w: &Principal, p: &Params, _: &PathArgs) -> ApiResult {
    views::sessions(s, w, p)
}
fn session(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    views::session(s, w, p, a.get("id"))
}
fn summary(s: &ApiState, w: &Principal, p: &Params, _: &PathArgs) -> ApiResult {
    views::summary(s, w, p)
}
fn agents(s: &ApiState, w: &Principal, p: &Params, _: &PathArgs) -> ApiResult {
    views::agents(s, w, p)
}
fn stats(s: &ApiState, w: &Principal, p: &Params, _: &PathArgs) -> ApiResult {
    views::stats(s, w, p)
}
fn ratelimits(s: &ApiState, w: &Principal, p: &Params, _: &PathArgs) -> ApiResult {
    views::ratelimits(s, w, p)
}
fn audit_log(s: &ApiState, w: &Principal, p: &Params, _: &PathArgs) -> ApiResult {
    views::audit_log(s, w, p)
}
fn whoami(s: &ApiState, w: &Principal, _: &Params, _: &PathArgs) -> ApiResult {
    views::whoami(s, w)
}
fn access(s: &ApiState, _: &Params, _: &PathArgs) -> ApiResult {
    super::ok(&answers::AccessInfo {
        tokens_required: s.auth.enabled(),
    })
}
fn metrics(s: &ApiState, w: &Principal, _: &Params, _: &PathArgs) -> ApiResult {
    // Request counts per provider and status are every tenant's traffic.
    if w.tenant.is_some() {
        return Err(ApiError::Forbidden(
            "metrics count every tenant's calls; they need an admin token that is not confined to a tenant".into(),
        ));
    }
    Ok(super::metrics_text(s))
}
fn calls_csv(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    export::csv(s, w, p, false, &a.target())
}
fn invocations_csv(s: &ApiState, w: &Principal, p: &Params, a: &PathArgs) -> ApiResult {
    export::csv(s, w, p, true, &a.target())
}
fn stream(s: &Arc<ApiState>, w: &Principal, p: &Params, _: &PathArgs) -> ApiResult {
    export::stream(s, w, p)
}
fn healthz(s: &ApiState, _: &Params, _: &PathArgs) -> ApiResult {
    super::ok(&answers::Health::of(s))
}
fn readyz(s: &ApiState, _: &Params, _: &PathArgs) -> ApiResult {
    if !s.store.is_open() {
        return Err(ApiError::Store(crate::store::StoreError::Closed));
    }
    if s.metrics
        .log_paused
        .load(std::sync::atomic::Ordering::Relaxed)
        != 0
    {
        return Err(ApiError::CapturePaused(format!(
            "the capture log's volume is nearly full (below store.critical_free_mb): calls are forwarded but not recorded ({} so far); recording resumes by itself when space is back",
            s.metrics.log_paused_calls.load(std::sync::atomic::Ordering::Relaxed)
        )));
    }
    if let Some((why, at_us)) = s.store.last_write_error() {
        return Err(ApiError::WritesFailing(format!(
            "the store's writes fail since {} ({why}); the proxy forwards and calls wait in \
             the capture log ({} bytes unapplied)",
            crate::timefmt::format_rfc3339_us(at_us),
            s.metrics.log_unapplied_bytes()
        )));
    }
    super::ok(&answers::Ready {
        status: "ready",
        store: "open",
    })
}
fn openapi(_: &ApiState, _: &Params, _: &PathArgs) -> ApiResult {
    super::ok(&super::openapi::document())
}

const LIST: &[&[ParamSpec]] = &[FILTER_PARAMS, PAGE_PARAMS];

/// Every endpoint of the read API listener. The web page (`/`, `/assets/*`, see
/// `page.rs`) is served ahead of this table: static files, not API endpoints.
pub static ROUTES: &[Route] = &[
    Route {
        method: Method::POST,
        path: "/api/v1/ingest/mcp",
        handler: Handler::Ingest(ingest_mcp, schema_of::<crate::ingest::McpReport>),
        access: Access::Viewer,
        summary: "Report one stdio MCP exchange (what `llmtap mcp` sends): recorded like a forwarded call; grouping from the x-llmtap-* headers, the tenant of a tenant token forced",
        params: &[],
        reply: json(
            schema_of::<answers::Ingested>,
            "the id the exchange is recorded under (empty when capture is paused by `on_backlog = \"pass\"`)",
        ),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/invocations",
        handler: Handler::Read(invocations),
        access: Access::Viewer,
        summary: "Invocations (agent runs), newest first",
        params: LIST,
        reply: json(
            schema_of::<views::PageOf<answers::RunListItem>>,
            "a page of invocation summaries",
        ),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/calls",
        handler: Handler::Read(calls),
        access: Access::Viewer,
        summary: "Calls, newest first",
        params: LIST,
        reply: json(
            schema_of::<views::PageOf<answers::CallListItem>>,
            "a page of call summaries",
        ),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/invocations/{id}",
        handler: Handler::Read(invocation),
        access: Access::Viewer,
        summary: "One invocation with its rounds, tool calls joined to their results, and failure hints",
        params: &[SCOPED_ID_TENANT, INVOCATION],
        reply: json(
            schema_of::<answers::InvocationDetail>,
            "the invocation, its rounds and its calls (bodies for admins only)",
        ),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/calls/{id}",
        handler: Handler::Read(call),
        access: Access::Viewer,
        summary: "One full call record (bodies for admins only) with a failure hint and the price-table entry that priced it",
        params: &[],
        reply: json(schema_of::<answers::CallDetail>, "the call record"),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/calls/{id}/raw",
        handler: Handler::Read(call_raw),
        access: Access::Admin,
        summary: "A call's request or response body byte for byte as captured (after content-encoding was decoded); audited",
        params: &[RAW],
        reply: Reply {
            content_type: "application/octet-stream",
            payload: Payload::Binary,
            description: "the body, with the content type it was sent with",
        },
    },
    Route {
        method: Method::GET,
        path: "/api/v1/blobs/{sha256}",
        handler: Handler::Read(blob),
        access: Access::Admin,
        summary: "An attachment's bytes by SHA-256 (admin token not confined to a tenant); audited",
        params: &[],
        reply: Reply {
            content_type: "application/octet-stream",
            payload: Payload::Binary,
            description: "the attachment, with its media type",
        },
    },
    Route {
        method: Method::GET,
        path: "/api/v1/prompt-logs",
        handler: Handler::Read(prompt_logs),
        access: Access::Admin,
        summary: "An audit read of prompts: LLM calls' system prompt, history, assembled prompt, answer and tools, newest first; with no run, session or time filter the last 7 days (applied_time_window_days); tenant-confined tokens see their tenant's; audited",
        params: &[prompt_logs::PARAMS, FILTER_PARAMS],
        reply: json(
            schema_of::<prompt_logs::PromptLogs>,
            "a page of prompt logs",
        ),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/sessions",
        handler: Handler::Read(sessions),
        access: Access::Viewer,
        summary: "Sessions, newest first (by first call), filtered by activity dates, agent and model",
        params: &[SESSION_FILTERS, PAGE_PARAMS],
        reply: json(
            schema_of::<views::PageOf<answers::SessionListItem>>,
            "a page of sessions (subjects for admins only)",
        ),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/sessions/{id}",
        handler: Handler::Read(session),
        access: Access::Viewer,
        summary: "One session's timeline: LLM calls and tool HTTP calls in order",
        params: &[SESSION, SCOPED_ID_TENANT],
        reply: json(schema_of::<answers::SessionDetail>, "the session and its timeline"),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/summary",
        handler: Handler::Read(summary),
        access: Access::Viewer,
        summary: "Totals, today and the last 24 hours",
        params: &[TENANT, SUMMARY],
        reply: json(schema_of::<answers::Summary>, "the totals"),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/agents",
        handler: Handler::Read(agents),
        access: Access::Viewer,
        summary: "Per agent: invocations, calls, cost, tokens, error rate, latency percentiles",
        params: &[TENANT],
        reply: json(schema_of::<answers::Agents>, "one row per agent"),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/stats",
        handler: Handler::Read(stats),
        access: Access::Viewer,
        summary: "Grouped statistics over the filtered calls",
        params: &[FILTER_PARAMS, STATS],
        reply: json(schema_of::<answers::Stats>, "one row per group"),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/ratelimits",
        handler: Handler::Read(ratelimits),
        access: Access::Viewer,
        summary: "Latest rate-limit state per provider, key and model (token not confined to a tenant)",
        params: &[RATELIMITS],
        reply: json(schema_of::<answers::RateLimits>, "one row per provider, key and model"),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/invocations.csv",
        handler: Handler::Read(invocations_csv),
        access: Access::Viewer,
        summary: "Invocations as RFC 4180 CSV: all streamed, or one page with limit or cursor",
        params: &[FILTER_PARAMS, CSV_PAGE],
        reply: Reply {
            content_type: "text/csv",
            payload: Payload::Text,
            description: "a header row, then one row per invocation (`input`, the prompt text, for admins only); cells that a spreadsheet would run as formulas are neutralised. A page's answer carries the next page's cursor in `x-llmtap-next-cursor` (absent on the last page) and, without cursor, the match count in `x-llmtap-total`",
        },
    },
    Route {
        method: Method::GET,
        path: "/api/v1/calls.csv",
        handler: Handler::Read(calls_csv),
        access: Access::Viewer,
        summary: "Calls as RFC 4180 CSV: all streamed, or one page with limit or cursor",
        params: &[FILTER_PARAMS, CSV_PAGE],
        reply: Reply {
            content_type: "text/csv",
            payload: Payload::Text,
            description: "a header row, then one row per call (`input`, the prompt text, for admins only); cells that a spreadsheet would run as formulas are neutralised. A page's answer carries the next page's cursor in `x-llmtap-next-cursor` (absent on the last page) and, without cursor, the match count in `x-llmtap-total`",
        },
    },
    Route {
        method: Method::GET,
        path: "/api/v1/stream",
        handler: Handler::Stream(stream),
        access: Access::Viewer,
        summary: "Server-Sent Events: `call` and `invocation` summaries as they are stored",
        params: &[FILTER_PARAMS, STREAM],
        reply: Reply {
            content_type: "text/event-stream",
            payload: Payload::Text,
            description: "`event: call` / `event: invocation` with a `CallListItem` / `RunListItem` JSON as data (the lists' items); comments as keepalives",
        },
    },
    Route {
        method: Method::GET,
        path: "/api/v1/audit",
        handler: Handler::Read(audit_log),
        access: Access::Admin,
        summary: "Admin reads of bodies (admin token not confined to a tenant)",
        params: &[AUDIT],
        reply: json(schema_of::<answers::AuditLog>, "the newest entries first"),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/whoami",
        handler: Handler::Read(whoami),
        access: Access::Viewer,
        summary: "The caller's token name, role, tenant, and whether tokens are required (the web page asks first)",
        params: &[],
        reply: json(schema_of::<answers::WhoAmI>, "who the token is"),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/access",
        handler: Handler::Public(access),
        access: Access::Public,
        summary: "Whether reads need a token, answered without one (the web page asks this first, so a visit before sign-in makes no failed request)",
        params: &[],
        reply: json(schema_of::<answers::AccessInfo>, "whether tokens are required"),
    },
    Route {
        method: Method::GET,
        path: "/api/v1/openapi.json",
        handler: Handler::Public(openapi),
        access: Access::Public,
        summary: "This document",
        params: &[],
        reply: json(schema_of::<serde_json::Value>, "OpenAPI 3.1"),
    },
    Route {
        method: Method::GET,
        path: "/healthz",
        handler: Handler::Public(healthz),
        access: Access::Public,
        summary: "Liveness and storage state (200 also while the store opens)",
        params: &[],
        reply: json(schema_of::<answers::Health>, "the process serves"),
    },
    Route {
        method: Method::GET,
        path: "/readyz",
        handler: Handler::Public(readyz),
        access: Access::Public,
        summary: "Readiness: the store is open (503 store_opening before, store_reopening while it reopens after failed writes)",
        params: &[],
        reply: json(schema_of::<answers::Ready>, "the store is open"),
    },
    Route {
        method: Method::GET,
        path: "/metrics",
        handler: Handler::Read(metrics),
        access: Access::Admin,
        summary: "Prometheus metrics (an admin token not confined to a tenant)",
        params: &[],
        reply: Reply {
            content_type: "text/plain; version=0.0.4",
            payload: Payload::Text,
            description: "Prometheus text exposition",
        },
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        let (route, args) = find(&Method::GET, "/api/v1/calls/c_1/raw").ok().unwrap();
        assert_eq!(route.path, "/api/v1/calls/{id}/raw");
        assert_eq!(args.get("id"), "c_1");
        assert_eq!(
            find(&Method::GET, "/api/v1/calls/c_1").ok().unwrap().0.path,
            "/api/v1/calls/{id}"
        );
        assert!(find(&Method::GET, "/api/v1/calls//raw").is_err());
        assert!(find(&Method::GET, "/api/v1/nothing").is_err());
        assert_eq!(find(&Method::POST, "/api/v1/calls").err(), Some(true));
        assert!(find(&Method::HEAD, "/healthz").is_ok());
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(a.path != b.path || a.method != b.method, "{} twice", a.path);
            }
        }
    }
}
