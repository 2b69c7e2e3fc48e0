//! The embedded dashboard: every file under `web/` is compiled into the
//! binary, so the one executable is the whole deployment.
//!
//! Routing contract: `/api/*` never reaches this module (an unknown API
//! path is a JSON 404); any other GET is a file of `web/` when one has
//! that path, and otherwise the app's `index.html`, so a deep link such
//! as `/agents/PC-001?range=7d` survives a reload. Files are served with
//! an ETag and `Cache-Control: no-cache`: the browser revalidates each
//! load and a new binary's assets are picked up at once.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// `(path relative to web/, contents)`, sorted by path (see `build.rs`).
static WEB: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// One embedded file.
#[derive(Clone, Copy)]
struct File {
    path: &'static str,
    contents: &'static [u8],
}

fn lookup(relative: &str) -> Option<File> {
    WEB.binary_search_by(|(p, _)| (*p).cmp(relative))
        .ok()
        .map(|i| File {
            path: WEB[i].0,
            contents: WEB[i].1,
        })
}

/// The router's fallback: JSON 404 under `/api`, the dashboard elsewhere.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    if path == "/api" || path.starts_with("/api/") {
        return ApiError::NotFound(path.to_string()).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed(format!("{method} {path}")).into_response();
    }
    let file = match asset(path) {
        Some(file) => file,
        // A missing asset (a path with an extension) is a real 404; any
        // other path is a client-side route of the app.
        None if looks_like_asset(path) => {
            return (StatusCode::NOT_FOUND, format!("no such file: {path}\n")).into_response()
        }
        None => index(),
    };
    respond(file, &headers, method == Method::HEAD)
}

fn asset(path: &str) -> Option<File> {
    lookup(path.trim_start_matches('/'))
}

fn index() -> File {
    lookup("index.html").expect("web/index.html is embedded at build time")
}

/// Paths the app never routes: its asset folders and top-level files
/// (`/app.css`). App routes may contain dots (`/agents/pc.corp`).
fn looks_like_asset(path: &str) -> bool {
    let relative = path.trim_start_matches('/');
    match relative.split_once('/') {
        Some((dir, _)) => matches!(dir, "js" | "vendor"),
        None => relative.contains('.'),
    }
}

fn respond(file: File, headers: &HeaderMap, head_only: bool) -> Response {
    let etag = format!(
        "\"{:016x}\"",
        kanade_storage::stable_hash(file.contents.iter().copied())
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if head_only {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(file.contents))
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type(file));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}

fn content_type(file: File) -> HeaderValue {
    let ext = file.path.rsplit_once('.').map_or("", |(_, ext)| ext);
    HeaderValue::from_static(match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "text/plain; charset=utf-8",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_routes_fall_back_to_index_and_assets_resolve() {
        assert!(asset("/index.html").is_some());
        assert!(asset("/js/app.js").is_some());
        assert!(asset("/vendor/uplot/LICENSE").is_some());
        assert!(asset("/").is_none());
        assert!(asset("/agents/PC-001").is_none());
        assert!(asset("/../Cargo.toml").is_none());
        assert!(WEB.windows(2).all(|w| w[0].0 < w[1].0), "sorted for lookup");
        assert!(looks_like_asset("/js/nope.js"));
        assert!(looks_like_asset("/favicon.ico"));
        assert!(!looks_like_asset("/agents/PC-001"));
        assert!(!looks_like_asset("/agents/pc.corp"));
        assert!(!looks_like_asset("/results"));
    }
}
