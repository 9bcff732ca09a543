//! The read API on its own listener: routing, authentication, JSON and error responses,
//! and the one report route (`POST /api/v1/ingest/mcp`, `crate::ingest`).
//!
//! Every endpoint is a row of the route table in `routes.rs` (the OpenAPI document is
//! generated from it). Endpoints live under `/api/v1`; `/healthz` (liveness),
//! `/readyz` (readiness) and `/metrics` stay at the root. Reads run on tokio's blocking pool and go to the store's summaries and
//! indexes; CSV exports and the live stream are streamed bodies. Nothing here is on
//! the proxy's forward path.

mod answers;
pub mod auth;
pub mod columns;
mod content;
mod export;
mod history;
pub mod openapi;
pub mod page;
pub mod params;
mod prompt_logs;
pub mod routes;
mod views;

use crate::metrics::Metrics;
use crate::store::{AuditEntry, Store};
use auth::{Auth, AuthError, Principal};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use params::{ParamError, Params};
use routes::{Access, Handler, PathArgs, Route};

pub use export::{neutralise_formula, NEXT_CURSOR_HEADER, TOTAL_HEADER};
use std::convert::Infallible;
use std::sync::Arc;

pub struct ApiState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    /// The price table in use, to show a call the entry that priced it.
    pub prices: crate::writer::SharedPrices,
    /// The proxy's state: reported exchanges (`POST /api/v1/ingest/mcp`) join its
    /// capture path.
    pub proxy: Arc<crate::forward::ProxyState>,
}

pub type ApiBody = BoxBody<Bytes, Infallible>;

/// A failed API request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Param(#[from] ParamError),
    /// A POST body that is not what the route takes.
    #[error("{0}")]
    BadBody(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// An id that names records of several tenants; the message lists them.
    #[error("{0}")]
    Ambiguous(String),
    /// The store takes no writes (a full disk, an unreachable database): not ready.
    #[error("{0}")]
    WritesFailing(String),
    /// The capture log records nothing: its volume is nearly full (not ready).
    #[error("{0}")]
    CapturePaused(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ApiError {
    fn response(&self) -> Response<ApiBody> {
        match self {
            ApiError::Param(e) => json(
                StatusCode::BAD_REQUEST,
                &answers::ErrorBody {
                    error: answers::ErrorDetail {
                        kind: "bad_parameter",
                        message: &e.message,
                        parameter: Some(&e.parameter),
                    },
                },
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
            ApiError::BadBody(m) => error(StatusCode::BAD_REQUEST, "bad_body", m),
            ApiError::TooLarge(_) => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &self.to_string(),
            ),
            ApiError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Ambiguous(m) => error(StatusCode::CONFLICT, "ambiguous_id", m),
            ApiError::WritesFailing(m) => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "store_writes_failing", m);
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
                r
            }
            ApiError::CapturePaused(m) => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "capture_paused", m);
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
                r
            }
            ApiError::Store(crate::store::StoreError::Closed) => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_reopening",
                    "llmtap is reopening its store after failed writes (the proxy is forwarding, calls wait in the capture log); try again shortly",
                );
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Store(e @ crate::store::StoreError::Unsupported { .. }) => error(
                StatusCode::NOT_IMPLEMENTED,
                "not_on_postgres",
                &format!(
                    "{e}: this endpoint is answered by the embedded store only, for now (issue 17)"
                ),
            ),
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
) -> Result<Response<ApiBody>, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(response) = page::serve(request.method(), request.uri().path(), request.headers()) {
        return Ok(response);
    }
    let authorization = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (route, mut args) = match routes::find(request.method(), request.uri().path()) {
        Ok(found) => found,
        Err(true) => {
            return Ok(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed here; see /api/v1/openapi.json",
            ))
        }
        Err(false) => {
            return Ok(
                ApiError::NotFound("no such endpoint; see /api/v1/openapi.json".into()).response(),
            )
        }
    };
    args.query = request.uri().query().unwrap_or("").to_string();
    if let Handler::Ingest(handler, _) = route.handler {
        return Ok(
            match ingest(state, handler, request, authorization.as_deref()).await {
                Ok(response) => response,
                Err(e) => e.response(),
            },
        );
    }
    Ok(
        match dispatch(state, route, args, authorization.as_deref()).await {
            Ok(response) => response,
            Err(e) => e.response(),
        },
    )
}

/// Runs `route`: authentication and role, then its parameters, then its handler.
async fn dispatch(
    state: Arc<ApiState>,
    route: &'static Route,
    args: PathArgs,
    authorization: Option<&str>,
) -> ApiResult {
    if let Handler::Public(handler) = route.handler {
        let params = Params::parse(&args.query)?;
        params.only(route.params)?;
        return handler(&state, &params, &args);
    }
    let principal = state.auth.authenticate(authorization)?;
    if route.access == Access::Admin && !principal.is_admin() {
        return Err(ApiError::Forbidden(format!(
            "{} needs an admin token",
            route.path
        )));
    }
    let params = Params::parse(&args.query)?;
    params.only(route.params)?;
    match route.handler {
        Handler::Public(_) | Handler::Ingest(..) => unreachable!("answered above"),
        Handler::Stream(handler) => handler(&state, &principal, &params, &args),
        Handler::Read(handler) => {
            let result =
                tokio::task::spawn_blocking(move || handler(&state, &principal, &params, &args))
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
    }
}

/// Runs an ingest route: authentication (any token, as reads), then its body read
/// whole up to `ingest::MAX_REPORT_BYTES`, then its handler. It needs no store, only
/// the capture path.
async fn ingest<B>(
    state: Arc<ApiState>,
    handler: routes::IngestHandler,
    request: Request<B>,
    authorization: Option<&str>,
) -> ApiResult
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let principal = state.auth.authenticate(authorization)?;
    let (parts, body) = request.into_parts();
    let limit = crate::ingest::MAX_REPORT_BYTES;
    let body = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::TooLarge(limit))
        }
        Err(e) => return Err(ApiError::BadBody(format!("cannot read the body: {e}"))),
    };
    handler(&state, &principal, &parts.headers, &body)
}

/// `GET /metrics`: the process's and the store's metrics in Prometheus text.
fn metrics_text(state: &ApiState) -> Response<ApiBody> {
    let text = state.metrics.render() + &state.store.render_metrics();
    let mut response = Response::new(full(Bytes::from(text)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
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

/// A 200 JSON answer. Only a type that derives its schema may be one (the answer
/// types of `answers.rs`; stored types derive none), so no handler answers the stored
/// form as is.
fn ok<T: serde::Serialize + schemars::JsonSchema>(value: &T) -> ApiResult {
    Ok(json(StatusCode::OK, value))
}

/// The answer to a request that arrives while the store is still opening: the
/// process is alive (`/healthz` 200, the proxy forwards and the capture log
/// records) but not ready (`/readyz` and every read 503 `store_opening`); the
/// page itself is served, and shows the 503s it gets.
pub fn before_store_opens<B>(request: &Request<B>, metrics: &Metrics) -> Response<ApiBody> {
    if request.uri().path() == "/healthz" {
        return json(
            StatusCode::OK,
            &answers::Health::while_the_store_opens(metrics),
        );
    }
    page::serve(request.method(), request.uri().path(), request.headers())
        .unwrap_or_else(store_opening)
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
    let body = answers::ErrorBody {
        error: answers::ErrorDetail {
            kind,
            message,
            parameter: None,
        },
    };
    // Strings only: serializing it cannot fail.
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_the_postgres_engine_lacks_is_a_clear_501() {
        let e = ApiError::Store(crate::store::StoreError::Unsupported {
            engine: "PostgreSQL",
            operation: "list_calls",
        });
        let response = e.response();
        assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    }
}
