//! The read API on its own listener: health, metrics, and records by id.
//!
//! Reads go straight to the store (sled serves them from its cache); nothing here
//! is on the proxy's forward path.

use crate::metrics::Metrics;
use crate::store::Store;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;

pub struct ApiState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
}

pub type ApiBody = Full<Bytes>;

pub async fn handle<B>(
    state: Arc<ApiState>,
    request: Request<B>,
) -> Result<Response<ApiBody>, std::convert::Infallible> {
    let path = request.uri().path().to_string();
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the read API accepts GET only",
        ));
    }
    let state2 = state.clone();
    let result = tokio::task::spawn_blocking(move || route(&state2, &path)).await;
    Ok(match result {
        Ok(response) => response,
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("request handler failed: {e}"),
        ),
    })
}

fn route(state: &ApiState, path: &str) -> Response<ApiBody> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => json(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "backlog": state.metrics.backlog.load(std::sync::atomic::Ordering::Relaxed),
            }),
        ),
        ["metrics"] => {
            let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        ["api", "v1", "calls", id] => match state.store.get_call(id) {
            Ok(Some(call)) => json(StatusCode::OK, &call),
            Ok(None) => not_found("call", id),
            Err(e) => store_error(&e),
        },
        ["api", "v1", "invocations", id] => match state.store.get_invocation(id) {
            Ok(Some(inv)) => match state.store.invocation_calls(id) {
                Ok(calls) => {
                    let mut value = serde_json::to_value(&inv).unwrap_or_default();
                    value["calls"] = serde_json::to_value(&calls).unwrap_or_default();
                    json(StatusCode::OK, &value)
                }
                Err(e) => store_error(&e),
            },
            Ok(None) => not_found("invocation", id),
            Err(e) => store_error(&e),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see /api/v1/calls/{id}, /api/v1/invocations/{id}, /healthz, /metrics",
        ),
    }
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<ApiBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("cannot encode response: {e}"),
        ),
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response<ApiBody> {
    json(
        status,
        &serde_json::json!({"error": {"type": kind, "message": message}}),
    )
}

fn not_found(what: &str, id: &str) -> Response<ApiBody> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no {what} with id {id}"),
    )
}

fn store_error(e: &crate::store::StoreError) -> Response<ApiBody> {
    tracing::error!(error = %e, "store read failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        &e.to_string(),
    )
}
