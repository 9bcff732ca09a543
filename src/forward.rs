//! The proxy service: one function from a client request to a streamed response.
//!
//! `handle_to` runs the phases in order, each a function of its own (pingora's
//! shape): `admit` (route, take llmtap's headers off, `capture_decision` against
//! the capture backlog, `upstream_uri`); `begin_capture` (the call's record);
//! `tee_request_body` or `rewrite_request_body` (OpenAI chat asks for the usage
//! chunk); `send_upstream` (first-byte timeout); `respond` (hop-by-hop headers off,
//! the body wrapped in the tee). A phase that answers itself returns the answer.
//! Every path that has admitted a call ends in exactly one `FinishedCall`,
//! including llmtap's own 502 and 504 answers.

use crate::capture::{CallFacts, CallInFlight, CallSink, FinishedCall, Outcome};
use crate::config::{Config, OnBacklog};
use crate::headers;
use crate::ids::new_id;
use crate::metrics::Metrics;
use crate::parse::include_usage;
use crate::record::ProviderKind;
use crate::route::route;
use crate::tee::{BoxError, ChunkFilter, RequestTee, ResponseTee};
use crate::timefmt::now_unix_us;
use crate::upstream::{self, UpstreamClient};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Everything a request needs, shared by all connections.
pub struct ProxyState {
    pub config: Arc<Config>,
    /// Request bytes held right now, across requests, by bodies read whole to rewrite them.
    pub request_buffered: Arc<std::sync::atomic::AtomicUsize>,
    pub client: UpstreamClient,
    pub sink: Arc<CallSink>,
    pub metrics: Arc<Metrics>,
}

/// The idle limit of an MCP server's GET event stream (a year: none in practice).
const MCP_EVENT_STREAM_IDLE: Duration = Duration::from_secs(365 * 24 * 3600);

/// A request whose upstream is the host the client named (a CONNECT llmtap
/// intercepted, or an absolute-form request), not a path prefix: `src/intercept/`.
pub struct HostTarget {
    /// The provider found from the host; `base` is the host itself, and its path
    /// prefix (if the provider has one) is taken off the path the parsers read.
    pub provider: crate::config::Provider,
    /// The client these requests go upstream with (`[server.resolve]`, public
    /// addresses only unless allowed by name).
    pub client: UpstreamClient,
}

/// A base-URL request: routed by its path prefix (`route.rs`).
pub async fn handle(
    state: Arc<ProxyState>,
    request: Request<Incoming>,
    client_addr: SocketAddr,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    handle_to(state, request, client_addr, None).await
}

/// A request to the host a proxy client named; captured exactly as a base-URL call.
pub async fn handle_for_host(
    state: Arc<ProxyState>,
    request: Request<Incoming>,
    client_addr: SocketAddr,
    target: Arc<HostTarget>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    handle_to(state, request, client_addr, Some(target)).await
}

/// The answer a phase gives instead of going on (an error of llmtap's own; boxed,
/// as the path that returns it is the cold one).
type Answer = Box<Response<ProxyBody>>;

fn refuse(
    status: StatusCode,
    kind: &str,
    message: &str,
    providers: Option<serde_json::Value>,
) -> Answer {
    Box::new(json_error(status, kind, message, providers))
}

/// What the request phase decided: where the call goes and what it carries.
struct Admitted<'a> {
    route: crate::route::Route<'a>,
    meta: headers::CallMeta,
    upstream_uri: http::Uri,
    query: Option<String>,
    capture_on: bool,
}

async fn handle_to(
    state: Arc<ProxyState>,
    request: Request<Incoming>,
    client_addr: SocketAddr,
    target: Option<Arc<HostTarget>>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    let start = Instant::now();
    let started_at_us = now_unix_us();
    let (mut parts, body) = request.into_parts();
    let admitted = match admit(&state, &mut parts, target.as_deref()) {
        Ok(admitted) => admitted,
        Err(answer) => return Ok(*answer),
    };
    let client = match &target {
        None => &state.client,
        Some(target) => &target.client,
    };
    let Admitted {
        route,
        meta,
        upstream_uri,
        query,
        capture_on,
    } = admitted;
    let provider = route.provider;
    let wants_usage_injection = capture_on
        && state.config.inject_include_usage
        && provider.kind == ProviderKind::Openai
        && route.rest_path.ends_with("/chat/completions");
    let mut call = capture_on.then(|| {
        let opened = Opened {
            client_addr,
            started_at_us,
            start,
        };
        begin_capture(&state, &parts, route, meta, query, opened)
    });
    let upstream_body = if wants_usage_injection {
        match rewrite_request_body(&state, body, &mut parts.headers, &mut call).await {
            Ok(body) => body,
            Err(answer) => return Ok(*answer),
        }
    } else {
        tee_request_body(&state, body, &mut call)
    };
    let method = parts.method.clone();
    let response = match send_upstream(&state, client, parts, upstream_uri, upstream_body).await {
        Ok(response) => response,
        Err(failure) => {
            tracing::warn!(provider = %provider.name, error = %failure.message, "upstream request failed");
            return Ok(own_answer(
                call,
                failure.status,
                failure.kind,
                &failure.message,
                failure.outcome,
            ));
        }
    };
    Ok(respond(
        &state,
        response,
        call,
        wants_usage_injection,
        provider.kind == ProviderKind::Mcp && method == http::Method::GET,
    ))
}

/// The request phase: routes the path, takes llmtap's own headers off, decides
/// whether the call is captured (the backlog) and builds the upstream URI. Nothing
/// is recorded for a request refused here.
fn admit<'a>(
    state: &'a ProxyState,
    parts: &mut http::request::Parts,
    target: Option<&'a HostTarget>,
) -> Result<Admitted<'a>, Answer> {
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let routed = match target {
        None => route(&path, query.as_deref(), &state.config.providers),
        Some(target) => crate::route::route_for_host(&path, query.as_deref(), &target.provider),
    };
    let route = match routed {
        Ok(route) => route,
        Err(crate::route::RouteError::DotSegment) => {
            Metrics::add(&state.metrics.bad_requests);
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "bad_path",
                "the path has a dot-segment (. or .., also percent-encoded); llmtap does not forward paths that could leave the provider's base path",
                None,
            ));
        }
        Err(_) => {
            Metrics::add(&state.metrics.unrouted);
            let known: Vec<&String> = state.config.providers.keys().collect();
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "unknown_provider",
                &format!(
                    "no provider for path {}; prefix the path with a provider name",
                    headers::redact_query(&path, None)
                ),
                Some(serde_json::json!(known)),
            ));
        }
    };
    let mut meta = headers::take_llmtap_headers(&mut parts.headers).map_err(|e| {
        Metrics::add(&state.metrics.bad_requests);
        refuse(
            StatusCode::BAD_REQUEST,
            "bad_llmtap_header",
            &e.to_string(),
            None,
        )
    })?;
    headers::scope_session_to_tenant(&mut meta);
    let capture_on = capture_decision(state)?;
    let upstream_uri = upstream_uri(&route)?;
    parts.headers.remove(http::header::HOST);
    Ok(Admitted {
        route,
        meta,
        upstream_uri,
        query,
        capture_on,
    })
}

/// Whether the call is captured: yes, unless the capture backlog is full, when
/// `on_backlog` says to refuse it (503) or forward it unrecorded (counted).
fn capture_decision(state: &ProxyState) -> Result<bool, Answer> {
    if !backlog_full(state) {
        return Ok(true);
    }
    match state.config.on_backlog {
        OnBacklog::Reject => {
            Metrics::add(&state.metrics.rejected_backlog);
            tracing::warn!("capture backlog full; answering 503");
            Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "capture_backlog_full",
                "llmtap cannot record more calls until its store catches up; retry shortly",
                None,
            ))
        }
        OnBacklog::Pass => {
            Metrics::add(&state.metrics.passed_uncaptured);
            Ok(false)
        }
    }
}

/// The upstream URI: the provider's scheme and authority, the routed path and query.
fn upstream_uri(route: &crate::route::Route<'_>) -> Result<http::Uri, Answer> {
    let unforwardable = || {
        refuse(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "the request path cannot be forwarded",
            None,
        )
    };
    let mut uri_parts = http::uri::Parts::default();
    uri_parts.scheme = Some(route.provider.base.scheme.clone());
    uri_parts.authority = Some(route.provider.base.authority.clone());
    uri_parts.path_and_query = Some(
        route
            .upstream_path_and_query
            .parse()
            .map_err(|_| unforwardable())?,
    );
    http::Uri::from_parts(uri_parts).map_err(|_| unforwardable())
}

/// When and from where a request came.
struct Opened {
    client_addr: SocketAddr,
    started_at_us: u64,
    start: Instant,
}

/// Opens the call's record: ids, the run it names, the request's head.
fn begin_capture(
    state: &ProxyState,
    parts: &http::request::Parts,
    route: crate::route::Route<'_>,
    meta: headers::CallMeta,
    query: Option<String>,
    opened: Opened,
) -> CallInFlight {
    let Opened {
        client_addr,
        started_at_us,
        start,
    } = opened;
    let provider = route.provider;
    let call_id = new_id("c_", started_at_us);
    let grouping = meta
        .invocation_id
        .clone()
        .or_else(|| {
            if state.config.group_by_traceparent {
                meta.trace_id.clone()
            } else {
                None
            }
        })
        // Ids come from clients: two tenants that pick the same one never share it.
        .map(|id| headers::tenant_scoped(&id, meta.metadata.tenant.as_deref()));
    // Rounds and attempts are numbered by the writer (`agent_loop`); the forward
    // path only says whether the call is an LLM call (1) or a tool's (0).
    let arrival_round = u32::from(provider.kind.is_round());
    let invocation_id = grouping.unwrap_or_else(|| new_id("i_", started_at_us));
    let user_agent = parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let finished = Box::new(FinishedCall {
        facts: CallFacts {
            id: call_id,
            invocation_id,
            arrival_round,
            started_at_us,
            latency: Duration::ZERO,
            first_byte: None,
            provider: provider.name.clone(),
            price_as: provider.price_as.clone(),
            kind: provider.kind,
            method: parts.method.to_string(),
            rest_path: route.rest_path,
            upstream_host: provider.base.authority.to_string(),
            http_status: None,
            outcome: Outcome::Canceled,
            chunk_times: Vec::new(),
            meta,
            client_ip: Some(client_addr.ip().to_string()),
            user_agent,
            delivered_bytes: 0,
            notes: Vec::new(),
        },
        query,
        request_headers: parts.headers.clone(),
        response_headers: HeaderMap::new(),
        request_body: state.sink.capture(),
        response_body: state.sink.capture(),
        injected_include_usage: false,
    });
    CallInFlight::new(
        finished,
        start,
        state.sink.clone(),
        state.config.max_body_bytes,
    )
}

/// The request body as sent, copied into the capture as it streams upstream.
fn tee_request_body(
    state: &ProxyState,
    body: Incoming,
    call: &mut Option<CallInFlight>,
) -> ProxyBody {
    match call.as_mut() {
        Some(c) => {
            let shared = Arc::new(Mutex::new(state.sink.capture()));
            c.set_request_capture(shared.clone());
            RequestTee::new(body, shared, state.config.max_body_bytes).boxed_unsync()
        }
        None => body.map_err(BoxError::from).boxed_unsync(),
    }
}

/// An OpenAI chat request read whole (within the cap and the shared buffer budget)
/// to ask for the usage chunk (`include_usage`); one too big is streamed as sent.
async fn rewrite_request_body(
    state: &ProxyState,
    body: Incoming,
    headers: &mut HeaderMap,
    call: &mut Option<CallInFlight>,
) -> Result<ProxyBody, Answer> {
    let cap = state.config.max_body_bytes;
    let budget = ByteBudget {
        held: state.request_buffered.clone(),
        limit: state.config.request_buffer_total_bytes,
        mine: 0,
    };
    let failed = |call: &mut Option<CallInFlight>, status, kind, message: &str| {
        if let Some(mut c) = call.take() {
            c.finish(Outcome::Canceled);
        }
        refuse(status, kind, message, None)
    };
    match collect_bounded(body, cap, state.config.request_body_timeout, budget).await {
        Ok(Collected::Whole(bytes)) => {
            if let Some(c) = call.as_mut() {
                c.set_request_body(&bytes);
            }
            let bytes = match include_usage::inject_include_usage(&bytes) {
                Some(rewritten) => {
                    if let Some(c) = call.as_mut() {
                        c.set_injected_include_usage();
                    }
                    headers.insert(
                        http::header::CONTENT_LENGTH,
                        HeaderValue::from(rewritten.len()),
                    );
                    Bytes::from(rewritten)
                }
                None => bytes,
            };
            Ok(Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync())
        }
        Ok(Collected::Partial(prefix, rest)) => {
            // Too big to rewrite: forward as received, keep capturing (and counting) the rest.
            let shared = Arc::new(Mutex::new(state.sink.capture()));
            if let Ok(mut capture) = shared.lock() {
                capture.push(&prefix, cap);
            }
            if let Some(c) = call.as_mut() {
                c.set_request_capture(shared.clone());
            }
            Ok(PrefixedBody {
                prefix: Some(prefix),
                rest: RequestTee::new(rest, shared, cap),
            }
            .boxed_unsync())
        }
        Err(CollectError::Body(e)) => Err(failed(
            call,
            StatusCode::BAD_REQUEST,
            "bad_request_body",
            &format!("client request body failed: {e}"),
        )),
        Err(CollectError::Idle(idle)) => {
            Metrics::add(&state.metrics.bad_requests);
            Err(failed(
                call,
                StatusCode::REQUEST_TIMEOUT,
                "request_body_timeout",
                &format!(
                    "the client sent no request body bytes for {} ms; llmtap gave up reading it",
                    idle.as_millis()
                ),
            ))
        }
    }
}

/// Why the upstream gave no response head: llmtap answers for it, and records it.
struct UpstreamFailure {
    status: StatusCode,
    kind: &'static str,
    message: String,
    outcome: Outcome,
}

/// The upstream phase: sends the request and waits at most `first_byte_timeout`
/// for the response head.
async fn send_upstream(
    state: &ProxyState,
    client: &UpstreamClient,
    parts: http::request::Parts,
    upstream_uri: http::Uri,
    body: ProxyBody,
) -> Result<Response<Incoming>, UpstreamFailure> {
    let mut builder = Request::builder()
        .method(parts.method)
        .uri(upstream_uri)
        .version(http::Version::HTTP_11);
    if let Some(h) = builder.headers_mut() {
        *h = parts.headers;
    }
    let request = builder.body(body).map_err(|e| UpstreamFailure {
        status: StatusCode::BAD_REQUEST,
        kind: "bad_request",
        message: e.to_string(),
        outcome: Outcome::Canceled,
    })?;
    let timeout = state.config.first_byte_timeout;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => {
            let message = upstream::error_chain(&e);
            Err(if upstream::is_timeout(&e) {
                UpstreamFailure {
                    status: StatusCode::GATEWAY_TIMEOUT,
                    kind: "upstream_timeout",
                    outcome: Outcome::Timeout {
                        message: message.clone(),
                    },
                    message,
                }
            } else {
                UpstreamFailure {
                    status: StatusCode::BAD_GATEWAY,
                    kind: "upstream_unreachable",
                    outcome: Outcome::Unreachable {
                        message: message.clone(),
                    },
                    message,
                }
            })
        }
        Err(_) => {
            let message = format!("no response from upstream within {timeout:?}");
            Err(UpstreamFailure {
                status: StatusCode::GATEWAY_TIMEOUT,
                kind: "upstream_timeout",
                outcome: Outcome::Timeout {
                    message: message.clone(),
                },
                message,
            })
        }
    }
}

/// The response phase: hop-by-hop headers off, llmtap's id headers on, and the
/// body wrapped in the tee that records it as it streams to the client.
fn respond(
    state: &ProxyState,
    response: Response<Incoming>,
    call: Option<CallInFlight>,
    injected_usage: bool,
    mcp_event_stream: bool,
) -> Response<ProxyBody> {
    let (mut response_parts, response_body) = response.into_parts();
    headers::remove_hop_by_hop(&mut response_parts.headers);
    let Some(mut call) = call else {
        return Response::from_parts(
            response_parts,
            response_body.map_err(BoxError::from).boxed_unsync(),
        );
    };
    call.on_response_head(response_parts.status.as_u16(), &response_parts.headers);
    let filter: Option<Box<dyn ChunkFilter>> =
        if injected_usage && response_parts.status.is_success() && call.injected_include_usage() {
            response_parts.headers.remove(http::header::CONTENT_LENGTH);
            Some(Box::new(include_usage::UsageChunkStripper::default()))
        } else {
            None
        };
    add_id_headers(&mut response_parts.headers, &call);
    // An MCP server's GET event stream carries only what the server pushes and may
    // be silent for hours; an idle cut would close the session's server-to-client
    // channel, so it ends when either side closes it.
    let idle_timeout = if mcp_event_stream {
        MCP_EVENT_STREAM_IDLE
    } else {
        state.config.idle_timeout
    };
    let body = ResponseTee::new(response_body, call, idle_timeout, filter);
    Response::from_parts(response_parts, body.boxed_unsync())
}

/// Whether the store is so far behind that a new call cannot be captured: the
/// capture log holds `store.backlog` bytes it has not applied, or the log thread
/// itself is that many calls behind (a stalled disk must not fill memory).
pub(crate) fn backlog_full(state: &ProxyState) -> bool {
    state.metrics.log_unapplied_bytes() >= state.config.backlog_bytes
        || state.metrics.log_queue.load(Ordering::Relaxed) >= crate::journal::MAX_QUEUED_CALLS
}

/// llmtap's own answer when the upstream failed; the call is recorded with it.
fn own_answer(
    call: Option<CallInFlight>,
    status: StatusCode,
    kind: &str,
    message: &str,
    outcome: Outcome,
) -> Response<ProxyBody> {
    let mut response = json_error(status, kind, message, None);
    if let Some(mut call) = call {
        add_id_headers(response.headers_mut(), &call);
        call.set_http_status(status.as_u16());
        call.finish(outcome);
    }
    response
}

fn add_id_headers(headers: &mut HeaderMap, call: &CallInFlight) {
    if let Ok(v) = HeaderValue::from_str(call.id()) {
        headers.insert("x-llmtap-call-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(call.invocation_id()) {
        headers.insert("x-llmtap-invocation-id", v);
    }
}

/// A JSON error body that names llmtap, so an agent's logs say who answered.
pub fn json_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    providers: Option<serde_json::Value>,
) -> Response<ProxyBody> {
    let mut error = serde_json::json!({
        "source": "llmtap",
        "type": kind,
        "message": message,
    });
    if let Some(p) = providers {
        error["providers"] = p;
    }
    let body = serde_json::json!({ "error": error }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

enum Collected {
    Whole(Bytes),
    /// The first frames (over the cap) and the unread remainder.
    Partial(Bytes, Incoming),
}

/// Reads a request body whole if it fits in `cap`, else returns what was read and the rest.
/// Bytes held across requests by bodies read whole; each request's share is
/// returned when its `ByteBudget` is dropped.
struct ByteBudget {
    held: Arc<std::sync::atomic::AtomicUsize>,
    limit: usize,
    mine: usize,
}

impl ByteBudget {
    /// Takes `n` more bytes unless that would pass the limit.
    fn take(&mut self, n: usize) -> bool {
        let taken = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + n <= self.limit).then_some(held + n)
            })
            .is_ok();
        if taken {
            self.mine += n;
        }
        taken
    }
}

impl Drop for ByteBudget {
    fn drop(&mut self) {
        self.held.fetch_sub(self.mine, Ordering::AcqRel);
    }
}

enum CollectError {
    Body(hyper::Error),
    /// The client sent nothing for this long.
    Idle(Duration),
}

/// Reads a request body whole (to rewrite it), at most `cap` bytes, and within the
/// shared `budget`; past either it returns what it has and the rest, to be streamed.
/// A client that sends nothing for `idle` is given up.
async fn collect_bounded(
    mut body: Incoming,
    cap: usize,
    idle: Duration,
    mut budget: ByteBudget,
) -> Result<Collected, CollectError> {
    let mut buf = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(frame)) => frame.map_err(CollectError::Body)?,
            Ok(None) => break,
            Err(_) => return Err(CollectError::Idle(idle)),
        };
        if let Ok(data) = frame.into_data() {
            let within_budget = budget.take(data.len());
            buf.extend_from_slice(&data);
            if buf.len() > cap || !within_budget {
                return Ok(Collected::Partial(buf.freeze(), body));
            }
        }
    }
    Ok(Collected::Whole(buf.freeze()))
}

/// Bytes already read from a body, followed by the rest of it.
struct PrefixedBody<B> {
    prefix: Option<Bytes>,
    rest: B,
}

impl<B> http_body::Body for PrefixedBody<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(prefix))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}
