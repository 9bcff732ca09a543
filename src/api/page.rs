//! The web page on the read-API listener: `/` and `/assets/*`, embedded in the binary.
//!
//! The page is static (HTML, CSS, JavaScript modules from `web/`, compiled in with
//! `include_bytes!`) and reads everything through the public read API with the
//! user's token, so serving it needs no authentication and no store. Every answer
//! carries a strict Content-Security-Policy (scripts and styles from this origin
//! only, no inline code, no framing) and an ETag so a reload revalidates cheaply.

use super::{full, ApiBody};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use std::sync::OnceLock;

/// Scripts and styles from this origin only; nothing inline, no plugins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/", $file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/assets/app.css", "app.css", "text/css; charset=utf-8"),
    asset!("/assets/app.js", "app.js", JS),
    asset!("/assets/api.js", "api.js", JS),
    asset!("/assets/dom.js", "dom.js", JS),
    asset!("/assets/chart.js", "chart.js", JS),
    asset!("/assets/runs.js", "runs.js", JS),
    asset!("/assets/round.js", "round.js", JS),
    asset!("/assets/replay.js", "replay.js", JS),
    asset!("/assets/views.js", "views.js", JS),
    asset!("/assets/favicon.svg", "favicon.svg", "image/svg+xml"),
];

/// Strong ETags, one per asset: a hash of its bytes, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = ring::digest::digest(&ring::digest::SHA256, a.bytes);
                let hex: String = digest.as_ref()[..12]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// Whether `path` is one of the page's own paths (served without a token).
pub fn is_page_path(path: &str) -> bool {
    path == "/" || path == "/index.html" || path.starts_with("/assets/")
}

/// The page's answer for `path`, or `None` when the path is not the page's.
pub fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response<ApiBody>> {
    if !is_page_path(path) {
        return None;
    }
    let wanted = if path == "/index.html" { "/" } else { path };
    let Some(index) = ASSETS.iter().position(|a| a.path == wanted) else {
        let mut response = Response::new(full(Bytes::from_static(b"no such asset\n")));
        *response.status_mut() = StatusCode::NOT_FOUND;
        set_security_headers(response.headers_mut());
        return Some(response);
    };
    let asset = &ASSETS[index];
    if let Some(response) = from_dev_dir(asset) {
        return Some(response);
    }
    let etag = &etags()[index];
    let fresh = headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let body = if fresh || method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(asset.bytes)
    };
    let mut response = Response::new(full(body));
    if fresh {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(http::header::ETAG, v);
    }
    // Asset names carry no hash, so browsers revalidate each load (a 304 when unchanged).
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    set_security_headers(h);
    Some(response)
}

/// `LLMTAP_DEV_WEB_DIR=web`: serve the page's files from that directory, read on
/// each request, so the page can be edited without rebuilding. Only the embedded
/// asset names are looked up there, never a path from the request.
fn from_dev_dir(asset: &Asset) -> Option<Response<ApiBody>> {
    let dir = std::env::var_os("LLMTAP_DEV_WEB_DIR")?;
    let file = match asset.path {
        "/" => "index.html",
        other => other.strip_prefix("/assets/")?,
    };
    let bytes = std::fs::read(std::path::Path::new(&dir).join(file)).ok()?;
    let mut response = Response::new(full(Bytes::from(bytes)));
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    set_security_headers(h);
    Some(response)
}

fn set_security_headers(h: &mut HeaderMap) {
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        http::header::X_FRAME_OPTIONS,
        HeaderValue::from_static("DENY"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_types_etags_and_revalidate() {
        let none = HeaderMap::new();
        let index = serve(&Method::GET, "/", &none).unwrap();
        assert_eq!(index.status(), StatusCode::OK);
        let etag = index.headers()[http::header::ETAG].clone();
        assert!(index.headers()[http::header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        let mut again = HeaderMap::new();
        again.insert(http::header::IF_NONE_MATCH, etag);
        let cached = serve(&Method::GET, "/", &again).unwrap();
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        let js = serve(&Method::GET, "/assets/app.js", &none).unwrap();
        assert_eq!(js.headers()[http::header::CONTENT_TYPE], JS);
        let missing = serve(&Method::GET, "/assets/nope.js", &none).unwrap();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert!(serve(&Method::GET, "/api/v1/calls", &none).is_none());
        assert_eq!(etags().len(), ASSETS.len());
    }
}
