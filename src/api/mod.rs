//! The read API on its own listener: routing, authentication, JSON and error responses.
//!
//! Endpoints live under `/api/v1` (see `openapi.rs`); `/healthz` and `/metrics` stay at
//! the root. Reads run on tokio's blocking pool and go to the store's summaries and
//! indexes; CSV exports and the live stream are streamed bodies. Nothing here is on
//! the proxy's forward path.

pub mod auth;
mod content;
mod export;
mod openapi;
pub mod params;
mod views;

use crate::metrics::Metrics;
use crate::store::{AuditEntry, Store};
use auth::{Auth, AuthError, Principal};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use params::{ParamError, Params};
use std::convert::Infallible;
use std::sync::Arc;

pub struct ApiState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
}

pub type ApiBody = BoxBody<Bytes, Infallible>;

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ApiError {
    fn response(&self) -> Response<ApiBody> {
        match self {
            ApiError::Param(e) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": {"type": "bad_parameter", "parameter": e.parameter, "message": e.message}}),
            ),
            ApiError::Unauthorized(e) => {
                let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", &e.to_string());
                r.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"llmtap\""),
                );
                r
            }
            ApiError::Forbidden(m) => error(StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store read failed");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    &e.to_string(),
                )
            }
        }
    }
}

pub type ApiResult = Result<Response<ApiBody>, ApiError>;

pub async fn handle<B>(
    state: Arc<ApiState>,
    request: Request<B>,
) -> Result<Response<ApiBody>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the read API accepts GET only",
        ));
    }
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(
        match dispatch(state, &path, &query, authorization.as_deref()).await {
            Ok(response) => response,
            Err(e) => e.response(),
        },
    )
}

async fn dispatch(
    state: Arc<ApiState>,
    path: &str,
    query: &str,
    authorization: Option<&str>,
) -> ApiResult {
    match path {
        "/healthz" => {
            return Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "status": "ok",
                    "backlog": state.metrics.backlog.load(std::sync::atomic::Ordering::Relaxed),
                    "storage": state.store.health(),
                }),
            ))
        }
        "/api/v1/openapi.json" => {
            return Ok(json(StatusCode::OK, &openapi::document()));
        }
        _ => {}
    }
    let principal = state.auth.authenticate(authorization)?;
    let params = Params::parse(query)?;
    // What an audit entry records: the path with its query string as sent.
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    match path {
        "/metrics" => {
            let text = state.metrics.render() + &state.store.render_metrics();
            let mut response = Response::new(full(Bytes::from(text)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return Ok(response);
        }
        "/api/v1/stream" => return export::stream(&state, &principal, &params),
        "/api/v1/calls.csv" => return export::csv(&state, &principal, &params, false, &target),
        "/api/v1/invocations.csv" => {
            return export::csv(&state, &principal, &params, true, &target)
        }
        _ => {}
    }
    let path = path.to_string();
    let result =
        tokio::task::spawn_blocking(move || route(&state, &principal, &path, &target, &params))
            .await;
    match result {
        Ok(r) => r,
        Err(e) => Ok(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("request handler failed: {e}"),
        )),
    }
}

/// `target` is the path with its query string, for audit entries.
fn route(
    state: &ApiState,
    who: &Principal,
    path: &str,
    target: &str,
    params: &Params,
) -> ApiResult {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "v1", "calls"] => views::list(state, who, params, false, target),
        ["api", "v1", "invocations"] => views::list(state, who, params, true, target),
        ["api", "v1", "calls", id] => views::call(state, who, params, id, target),
        ["api", "v1", "calls", id, "raw"] => content::raw(state, who, params, id, target),
        ["api", "v1", "blobs", sha256] => content::blob(state, who, params, sha256, target),
        ["api", "v1", "invocations", id] => views::invocation(state, who, params, id, target),
        ["api", "v1", "sessions"] => views::sessions(state, who, params),
        ["api", "v1", "sessions", id] => views::session(state, who, params, id),
        ["api", "v1", "summary"] => views::summary(state, who, params),
        ["api", "v1", "agents"] => views::agents(state, who, params),
        ["api", "v1", "stats"] => views::stats(state, who, params),
        ["api", "v1", "ratelimits"] => views::ratelimits(state, who, params),
        ["api", "v1", "audit"] => views::audit_log(state, who, params),
        _ => Err(ApiError::NotFound(
            "no such endpoint; see /api/v1/openapi.json".into(),
        )),
    }
}

/// Records an admin's read of bodies or prompts. A failure to audit refuses the read.
fn audit(state: &ApiState, who: &Principal, action: &str, path: &str) -> Result<(), ApiError> {
    let at_us = crate::timefmt::now_unix_us();
    state.store.append_audit(&AuditEntry {
        at: crate::timefmt::format_rfc3339_us(at_us),
        at_us,
        who: who.name.clone(),
        role: who.role.as_str().into(),
        tenant: who.tenant.clone(),
        action: action.into(),
        path: path.into(),
    })?;
    Ok(())
}

/// The tenant filter a principal may use: its own tenant, forced.
fn confine(who: &Principal, filter: &mut crate::store::summary::Filter) -> Result<(), ApiError> {
    use crate::store::summary::tag;
    let Some(mine) = &who.tenant else {
        return Ok(());
    };
    if let Some((_, values)) = filter.eq.iter().find(|(t, _)| *t == tag::TENANT) {
        if values.iter().any(|v| v != mine) {
            return Err(ApiError::Forbidden(
                "this token may read its own tenant only".into(),
            ));
        }
    }
    filter.eq.retain(|(t, _)| *t != tag::TENANT);
    filter.eq.push((tag::TENANT, vec![mine.clone()]));
    Ok(())
}

fn full(bytes: Bytes) -> ApiBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<ApiBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(full(Bytes::from(body)));
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

fn ok<T: serde::Serialize>(value: &T) -> ApiResult {
    Ok(json(StatusCode::OK, value))
}

/// What every API request gets while the store is still opening after a start.
pub fn store_opening() -> Response<ApiBody> {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_opening",
        "llmtap is opening its store (the proxy is already forwarding); try again shortly",
    );
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response<ApiBody> {
    let body = serde_json::json!({"error": {"type": kind, "message": message}});
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
