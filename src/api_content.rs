//! Read API endpoints for stored content: a call's exact raw bodies and
//! attachment blobs. Admin-only endpoints (authorisation is applied by the API
//! router); they return bytes, not JSON.

use crate::api::{error, not_found, store_error, ApiBody, ApiState};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// `GET /api/v1/calls/{id}/raw?part=request|response`: the body byte for byte as
/// captured (after content-encoding was decoded), with its original content type.
pub fn raw(state: &ApiState, id: &str, query: &str) -> Response<ApiBody> {
    let part = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("part="))
        .unwrap_or("request");
    let response = match part {
        "request" => false,
        "response" => true,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "part must be request or response",
            )
        }
    };
    let content_type = match state.store.get_call_meta(id) {
        Ok(Some(call)) => {
            let headers = if response {
                &call.response_headers
            } else {
                &call.request_headers
            };
            headers.get("content-type").cloned()
        }
        Ok(None) => return not_found("call", id),
        Err(e) => return store_error(&e),
    };
    match state.store.get_raw(id, response) {
        Ok(Some(bytes)) => bytes_response(bytes, content_type.as_deref()),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("call {id} has no stored {part} body"),
        ),
        Err(e) => store_error(&e),
    }
}

/// `GET /api/v1/blobs/{sha256}`: an attachment's bytes with its media type.
pub fn blob(state: &ApiState, sha256: &str) -> Response<ApiBody> {
    match state.store.get_blob(sha256) {
        Ok(Some((media_type, bytes))) => bytes_response(bytes, Some(&media_type)),
        Ok(None) => not_found("blob", sha256),
        Err(e) => store_error(&e),
    }
}

fn bytes_response(bytes: Vec<u8>, content_type: Option<&str>) -> Response<ApiBody> {
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    let value = content_type
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, value);
    *response.status_mut() = StatusCode::OK;
    response
}
