//! Stored content as bytes: a call's exact raw bodies and attachment blobs.
//! Admin only, audited; tenant-confined tokens see only their tenant's calls.

use super::params::{bad, Params};
use super::views::check_access;
use super::{audit, full, ApiError, ApiResult, ApiState};
use crate::api::auth::Principal;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

/// The policy of every response that carries captured bytes: nothing may load or run.
const UNTRUSTED_BYTES_POLICY: &str = "default-src 'none'; sandbox";

fn require_admin(who: &Principal) -> Result<(), ApiError> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "bodies and attachments need an admin token".into(),
        ))
    }
}

/// `GET /api/v1/calls/{id}/raw?part=request|response`: the body byte for byte as
/// captured (after content-encoding was decoded), with its original content type.
pub(super) fn raw(
    state: &ApiState,
    who: &Principal,
    p: &Params,
    id: &str,
    path: &str,
) -> ApiResult {
    require_admin(who)?;
    let part = p.get("part").unwrap_or("request");
    let response = match part {
        "request" => false,
        "response" => true,
        _ => return Err(bad("part", "accepted: request, response").into()),
    };
    check_access(state, who, false, id)?;
    let Some(call) = state.store.get_call_meta(id)? else {
        return Err(ApiError::NotFound(format!("no call with id {id}")));
    };
    let headers = if response {
        &call.response_headers
    } else {
        &call.request_headers
    };
    let content_type = headers.get("content-type").cloned();
    // Records from before `truncated_parts` only say that some body was cut.
    let cut = call.truncated_parts.iter().any(|p| p == part)
        || (call.truncated && call.truncated_parts.is_empty());
    audit(state, who, "read raw body", path)?;
    match state.store.get_raw(id, response)? {
        Some(bytes) => {
            let mut response = bytes_response(bytes, content_type.as_deref());
            if cut {
                // A prefix cut at a cap is not the exact body: say so, never serve it as whole.
                response
                    .headers_mut()
                    .insert("x-llmtap-truncated", HeaderValue::from_static("true"));
            }
            Ok(response)
        }
        None => Err(ApiError::NotFound(format!(
            "call {id} has no stored {part} body"
        ))),
    }
}

/// `GET /api/v1/blobs/{sha256}`: an attachment's bytes with its media type.
pub(super) fn blob(
    state: &ApiState,
    who: &Principal,
    _params: &Params,
    sha256: &str,
    path: &str,
) -> ApiResult {
    require_admin(who)?;
    if who.tenant.is_some() {
        // Blobs are shared across tenants by content; a confined token cannot prove ownership.
        return Err(ApiError::Forbidden(
            "blobs need an admin token not confined to a tenant".into(),
        ));
    }
    audit(state, who, "read attachment", path)?;
    match state.store.get_blob(sha256)? {
        Some((media_type, bytes)) => Ok(bytes_response(bytes, Some(&media_type))),
        None => Err(ApiError::NotFound(format!("no blob {sha256}"))),
    }
}

/// Bytes a client sent, under the content type it claimed. They are served from the
/// page's origin, so a browser must never run them: no sniffing, and a sandboxing
/// policy that allows nothing (an `text/html` or SVG blob opened in a tab is inert).
fn bytes_response(bytes: Vec<u8>, content_type: Option<&str>) -> Response<super::ApiBody> {
    let mut response = Response::new(full(Bytes::from(bytes)));
    let value = content_type
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, value);
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(UNTRUSTED_BYTES_POLICY),
    );
    *response.status_mut() = StatusCode::OK;
    response
}
