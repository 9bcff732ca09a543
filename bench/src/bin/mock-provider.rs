//! mock-provider: a fast HTTP/1.1 stand-in for the OpenAI and Anthropic APIs,
//! used as the upstream in llmtap benchmarks.
//!
//! POST /v1/chat/completions (OpenAI chat) and POST /v1/messages (Anthropic)
//! answer with a realistic JSON body, or an SSE stream when the request body
//! has `"stream": true`. Rate-limit headers are always sent. The bound address
//! is printed on stdout as the first line.
//!
//! Flags (env in brackets):
//!   --listen ADDR          [MOCK_LISTEN]          default 127.0.0.1:0
//!   --body-size BYTES      [MOCK_BODY_SIZE]       JSON response size, default 1024
//!   --events N             [MOCK_EVENTS]          SSE events per stream, default 200
//!   --event-delay-ms MS    [MOCK_EVENT_DELAY_MS]  pause between events, default 5
//!   --threads N            [MOCK_THREADS]         tokio worker threads, default 1
//!   --no-stamp             do not put `: sent_us=<unix µs>` SSE comments before
//!                          the first and last events of a stream
//! Per-request overrides: headers `x-mock-events`, `x-mock-event-delay-ms`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use llmtap_bench::{rfc3339, unix_now, Args};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};

#[derive(Clone, Copy, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
}

struct Config {
    events: usize,
    event_delay: Duration,
    counter: AtomicU64,
    stamp: bool,
    /// Assistant text sized so the JSON bodies come out at ~body_size bytes.
    openai_fill: String,
    anthropic_fill: String,
}

/// Response body: either a full buffer or a paced SSE stream.
enum MockBody {
    Full(Option<Bytes>),
    Stream(SseStream),
}

/// Events are generated lazily: `head`, then `middle` repeated, then `tail`,
/// so a long stream costs a few hundred bytes, not one buffer per event.
struct SseStream {
    events: SseEvents,
    next: usize,
    stamp: bool,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

struct SseEvents {
    head: Vec<Bytes>,
    middle: Bytes,
    middle_count: usize,
    tail: Vec<Bytes>,
}

impl SseEvents {
    fn len(&self) -> usize {
        self.head.len() + self.middle_count + self.tail.len()
    }

    fn get(&self, i: usize) -> Bytes {
        let h = self.head.len();
        if i < h {
            self.head[i].clone()
        } else if i < h + self.middle_count {
            self.middle.clone()
        } else {
            self.tail[i - h - self.middle_count].clone()
        }
    }

    /// Event `i`; the first and last events are preceded by an SSE comment
    /// `: sent_us=<unix µs>` (ignored by SSE clients) so the load generator can
    /// measure each hop's transit time of those events to the microsecond.
    fn get_stamped(&self, i: usize, stamp: bool) -> Bytes {
        let ev = self.get(i);
        if !stamp || (i != 0 && i + 1 != self.len()) {
            return ev;
        }
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut b = format!(": sent_us={us}\n\n").into_bytes();
        b.extend_from_slice(&ev);
        Bytes::from(b)
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            MockBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Stream(s) => {
                if s.next >= s.events.len() {
                    return Poll::Ready(None);
                }
                if s.next > 0 {
                    if let Some(sleep) = s.sleep.as_mut() {
                        if sleep.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                }
                let ev = s.events.get_stamped(s.next, s.stamp);
                s.next += 1;
                if s.next < s.events.len() && !s.delay.is_zero() {
                    // Arm the timer for the next event, counted from now.
                    let at = Instant::now() + s.delay;
                    match s.sleep.as_mut() {
                        Some(sl) => sl.as_mut().reset(at),
                        None => s.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(ev))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(b) => b.is_none(),
            MockBody::Stream(s) => s.next >= s.events.len(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Stream(_) => SizeHint::default(),
        }
    }
}

fn filler(n: usize) -> String {
    const WORDS: &str =
        "The quick brown fox jumps over the lazy dog while the model streams tokens. ";
    WORDS.chars().cycle().take(n).collect()
}

fn wants_stream(body: &[u8]) -> bool {
    // Fast path: no "stream" key at all.
    if !body.windows(8).any(|w| w == b"\"stream\"") {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("stream").and_then(|s| s.as_bool()))
        .unwrap_or(false)
}

/// Rough token estimate (~4 bytes per token) for usage objects.
fn tokens(bytes: usize) -> usize {
    (bytes / 4).max(1)
}

fn openai_headers(h: &mut HeaderMap, id: u64, sse: bool) {
    let ct = if sse {
        "text/event-stream; charset=utf-8"
    } else {
        "application/json"
    };
    h.insert("content-type", HeaderValue::from_static(ct));
    h.insert("openai-organization", HeaderValue::from_static("org-bench"));
    h.insert("openai-processing-ms", HeaderValue::from_static("312"));
    h.insert("openai-version", HeaderValue::from_static("2020-10-01"));
    h.insert(
        "x-ratelimit-limit-requests",
        HeaderValue::from_static("10000"),
    );
    h.insert(
        "x-ratelimit-limit-tokens",
        HeaderValue::from_static("30000000"),
    );
    h.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from_static("9999"),
    );
    h.insert(
        "x-ratelimit-remaining-tokens",
        HeaderValue::from_static("29999468"),
    );
    h.insert(
        "x-ratelimit-reset-requests",
        HeaderValue::from_static("6m0s"),
    );
    h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("1ms"));
    h.insert(
        "x-request-id",
        HeaderValue::from_str(&format!("req_bench{id:016x}")).unwrap(),
    );
    if sse {
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
    }
}

fn anthropic_headers(h: &mut HeaderMap, id: u64, sse: bool) {
    let ct = if sse {
        "text/event-stream; charset=utf-8"
    } else {
        "application/json"
    };
    h.insert("content-type", HeaderValue::from_static(ct));
    let reset = HeaderValue::from_str(&rfc3339(unix_now() + 1)).unwrap();
    let pairs: [(&str, &str); 12] = [
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-tokens-limit", "2000000"),
        ("anthropic-ratelimit-tokens-remaining", "1999000"),
        ("anthropic-ratelimit-input-tokens-limit", "2000000"),
        ("anthropic-ratelimit-input-tokens-remaining", "1999500"),
        ("anthropic-ratelimit-output-tokens-limit", "400000"),
        ("anthropic-ratelimit-output-tokens-remaining", "399500"),
        (
            "anthropic-organization-id",
            "00000000-0000-0000-0000-000000000000",
        ),
        ("via", "1.1 google"),
        ("cf-cache-status", "DYNAMIC"),
        ("x-robots-tag", "none"),
    ];
    for (k, v) in pairs {
        h.insert(k, HeaderValue::from_static(v));
    }
    for k in [
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-reset",
    ] {
        h.insert(k, reset.clone());
    }
    h.insert(
        "request-id",
        HeaderValue::from_str(&format!("req_bench{id:016x}")).unwrap(),
    );
    if sse {
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
    }
}

fn openai_json(id: u64, fill: &str, prompt_bytes: usize) -> Bytes {
    let skeleton = |content: &str| {
        serde_json::json!({
            "id": format!("chatcmpl-bench{id:016x}"),
            "object": "chat.completion",
            "created": unix_now(),
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": tokens(prompt_bytes),
                "completion_tokens": tokens(content.len()),
                "total_tokens": tokens(prompt_bytes) + tokens(content.len()),
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
            },
            "service_tier": "default",
            "system_fingerprint": "fp_bench0001"
        })
        .to_string()
    };
    Bytes::from(skeleton(fill))
}

fn anthropic_json(id: u64, fill: &str, prompt_bytes: usize) -> Bytes {
    let skeleton = |content: &str| {
        serde_json::json!({
            "id": format!("msg_bench{id:016x}"),
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": content}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": tokens(prompt_bytes),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": tokens(content.len()),
                "service_tier": "standard"
            }
        })
        .to_string()
    };
    Bytes::from(skeleton(fill))
}

const CHUNK_TEXT: &str = "token ";

fn openai_sse(id: u64, n: usize, prompt_bytes: usize) -> SseEvents {
    let n = n.max(4);
    let created = unix_now();
    let cid = format!("chatcmpl-bench{id:016x}");
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        let v = serde_json::json!({
            "id": cid, "object": "chat.completion.chunk", "created": created,
            "model": "gpt-4o-mini-2024-07-18", "service_tier": "default",
            "system_fingerprint": "fp_bench0001",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            "usage": null
        });
        Bytes::from(format!("data: {v}\n\n"))
    };
    let head = vec![chunk(
        serde_json::json!({"role": "assistant", "content": "", "refusal": null}),
        serde_json::Value::Null,
    )];
    let content_events = n - 4;
    let middle = chunk(
        serde_json::json!({"content": CHUNK_TEXT}),
        serde_json::Value::Null,
    );
    let mut out = vec![chunk(serde_json::json!({}), serde_json::json!("stop"))];
    let usage = serde_json::json!({
        "id": cid, "object": "chat.completion.chunk", "created": created,
        "model": "gpt-4o-mini-2024-07-18", "service_tier": "default",
        "system_fingerprint": "fp_bench0001", "choices": [],
        "usage": {"prompt_tokens": tokens(prompt_bytes), "completion_tokens": content_events,
            "total_tokens": tokens(prompt_bytes) + content_events,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    });
    out.push(Bytes::from(format!("data: {usage}\n\n")));
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    SseEvents {
        head,
        middle,
        middle_count: content_events,
        tail: out,
    }
}

fn anthropic_sse(id: u64, n: usize, prompt_bytes: usize) -> SseEvents {
    let n = n.max(7);
    let ev =
        |name: &str, v: serde_json::Value| Bytes::from(format!("event: {name}\ndata: {v}\n\n"));
    let mut head = Vec::with_capacity(3);
    head.push(ev(
        "message_start",
        serde_json::json!({"type": "message_start", "message": {
        "id": format!("msg_bench{id:016x}"), "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-20250514", "content": [], "stop_reason": null,
        "stop_sequence": null, "usage": {"input_tokens": tokens(prompt_bytes),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": 1, "service_tier": "standard"}}}),
    ));
    head.push(ev(
        "content_block_start",
        serde_json::json!({"type": "content_block_start",
        "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    head.push(ev("ping", serde_json::json!({"type": "ping"})));
    let deltas = n - 6;
    let middle = ev(
        "content_block_delta",
        serde_json::json!({"type": "content_block_delta",
        "index": 0, "delta": {"type": "text_delta", "text": CHUNK_TEXT}}),
    );
    let mut out = vec![ev(
        "content_block_stop",
        serde_json::json!({"type": "content_block_stop", "index": 0}),
    )];
    out.push(ev(
        "message_delta",
        serde_json::json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": deltas}}),
    ));
    out.push(ev(
        "message_stop",
        serde_json::json!({"type": "message_stop"}),
    ));
    SseEvents {
        head,
        middle,
        middle_count: deltas,
        tail: out,
    }
}

fn header_num(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.headers().get(name)?.to_str().ok()?.parse().ok()
}

async fn handle(
    cfg: Arc<Config>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    // An OTLP/HTTP sink for llmtap's OpenTelemetry export (figure 1 with export on):
    // the body is read and dropped; an empty body is an empty Export*ServiceResponse.
    if req.method() == Method::POST && matches!(req.uri().path(), "/v1/traces" | "/v1/metrics") {
        let _ = req.into_body().collect().await;
        let mut r = Response::new(MockBody::Full(Some(Bytes::new())));
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/x-protobuf"),
        );
        return Ok(r);
    }
    let api = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => Some(Api::OpenAi),
        (&Method::POST, "/v1/messages") => Some(Api::Anthropic),
        _ => None,
    };
    let Some(api) = api else {
        let mut r = Response::new(MockBody::Full(Some(Bytes::from_static(
            b"{\"error\":{\"message\":\"not found\",\"type\":\"invalid_request_error\"}}",
        ))));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return Ok(r);
    };
    let events = header_num(&req, "x-mock-events").map_or(cfg.events, |v| v as usize);
    let delay =
        header_num(&req, "x-mock-event-delay-ms").map_or(cfg.event_delay, Duration::from_millis);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let stream = wants_stream(&body);
    let id = cfg.counter.fetch_add(1, Ordering::Relaxed);
    let mut resp = if stream {
        let evs = match api {
            Api::OpenAi => openai_sse(id, events, body.len()),
            Api::Anthropic => anthropic_sse(id, events, body.len()),
        };
        Response::new(MockBody::Stream(SseStream {
            events: evs,
            next: 0,
            stamp: cfg.stamp,
            delay,
            sleep: None,
        }))
    } else {
        let b = match api {
            Api::OpenAi => openai_json(id, &cfg.openai_fill, body.len()),
            Api::Anthropic => anthropic_json(id, &cfg.anthropic_fill, body.len()),
        };
        Response::new(MockBody::Full(Some(b)))
    };
    match api {
        Api::OpenAi => openai_headers(resp.headers_mut(), id, stream),
        Api::Anthropic => anthropic_headers(resp.headers_mut(), id, stream),
    }
    Ok(resp)
}

fn main() {
    let args = Args::parse(&["no-stamp"]);
    let listen = args
        .get("listen", Some("MOCK_LISTEN"))
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let threads: usize = args.num("threads", Some("MOCK_THREADS"), 1);
    let body_size: usize = args.num("body-size", Some("MOCK_BODY_SIZE"), 1024);
    let fill = |base: usize| filler(body_size.saturating_sub(base));
    let cfg = Arc::new(Config {
        openai_fill: fill(openai_json(0, "", 1024).len()),
        anthropic_fill: fill(anthropic_json(0, "", 1024).len()),
        events: args.num("events", Some("MOCK_EVENTS"), 200),
        event_delay: Duration::from_millis(args.num(
            "event-delay-ms",
            Some("MOCK_EVENT_DELAY_MS"),
            5,
        )),
        counter: AtomicU64::new(0),
        stamp: !args.flag("no-stamp"),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&listen)
            .await
            .unwrap_or_else(|e| llmtap_bench::die(&format!("bind {listen}: {e}")));
        println!("{}", listener.local_addr().expect("local addr"));
        use std::io::Write;
        let _ = std::io::stdout().flush();
        loop {
            let (sock, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(cfg.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
}
