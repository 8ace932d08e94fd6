//! The web console: a small static front end embedded in the binary and
//! served by the control plane at `/` (same address and token as the API).
//!
//! What it is and why: plain browser JavaScript and CSS
//! (`crates/control/console/src/`, no framework and no compile step, so
//! the files a reviewer reads are the files embedded: one copy of each)
//! plus uPlot for the charts, a maintained 50 KB canvas chart library,
//! vendored from npm as its own prebuilt minified files into
//! `crates/control/console/vendor/` by `crates/control/console/vendor.sh`
//! (`npm ci` against `package-lock.json`). Server-rendered HTML
//! (askama/maud + htmx) was the other choice; a client that polls the JSON
//! API keeps one set of routes (the console is just another API client,
//! with no route of its own that could skip a check) and updates live
//! without full reloads.
//!
//! The pages load nothing from outside the binary: every asset is
//! `include_bytes!`-ed from `console/src/` and `console/vendor/`, and a strict
//! Content-Security-Policy (`default-src 'none'`, scripts, styles and
//! fetches from the same origin only, no inline script, no framing) is
//! sent with each. The assets hold no data and no secret, so they are
//! served without the token; every datum comes from the API with the
//! bearer token the operator enters once (kept in the tab's
//! `sessionStorage`, never in a cookie, which is what makes the
//! mutations CSRF-safe: a foreign page cannot make the browser attach it).
//! Mutations are sent as `application/json` (`application/yaml` for
//! specs), same-origin only.
//!
//! This module owns the asset table and its HTTP headers. It must never
//! serve a file that is not embedded, never inline data into a page, and
//! never relax the API's authentication for anything but these assets.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// The Content-Security-Policy of every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// `asset!(DIR, NAME, TYPE)`: the file `crates/control/console/DIR/NAME`.
macro_rules! asset {
    ($dir:literal, $name:literal, $type:literal) => {
        Asset { name: $name, content_type: $type, bytes: include_bytes!(concat!("../console/", $dir, "/", $name)) }
    };
}

/// Every file of the console (`/` serves `index.html`).
const ASSETS: &[Asset] = &[
    asset!("src", "index.html", "text/html; charset=utf-8"),
    asset!("src", "app.js", "text/javascript; charset=utf-8"),
    asset!("src", "core.js", "text/javascript; charset=utf-8"),
    asset!("src", "list.js", "text/javascript; charset=utf-8"),
    asset!("src", "pipeline.js", "text/javascript; charset=utf-8"),
    asset!("src", "edit.js", "text/javascript; charset=utf-8"),
    asset!("src", "app.css", "text/css; charset=utf-8"),
    asset!("vendor", "uplot.min.js", "text/javascript; charset=utf-8"),
    asset!("vendor", "uplot.min.css", "text/css; charset=utf-8"),
    asset!("vendor", "uplot.LICENSE", "text/plain; charset=utf-8"),
];

/// Total bytes embedded in the binary for the console.
pub fn embedded_bytes() -> usize {
    ASSETS.iter().map(|a| a.bytes.len()).sum()
}

/// Whether `path` is a console asset (served without the token).
pub fn is_asset(path: &str) -> bool {
    path == "/" || path.strip_prefix("/console/").is_some_and(|n| ASSETS.iter().any(|a| a.name == n))
}

/// Strong ETags of the assets, computed once.
fn etag(index: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| {
        ASSETS.iter().map(|a| format!("\"{:x}\"", Sha256::digest(a.bytes)).chars().take(34).collect()).collect()
    })[index]
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let asset = &ASSETS[index];
    let tag = etag(index);
    let fresh = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains(tag));
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.bytes.into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // Revalidate every time (cheap: 304 on the ETag) so that an upgraded
    // binary's console is never mixed with a cached older script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::ETAG, HeaderValue::from_str(tag).expect("hex etag"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// Adds the console's routes to the API router.
pub fn routes<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) })).route(
        "/console/{file}",
        get(|Path(file): Path<String>, headers: HeaderMap| async move { serve(&file, &headers) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_and_only_they_are_public() {
        assert!(embedded_bytes() > 50_000, "uPlot and the app are embedded");
        assert!(embedded_bytes() < 2_000_000);
        assert!(is_asset("/"));
        assert!(is_asset("/console/app.js"));
        assert!(!is_asset("/console/../pipelines"));
        assert!(!is_asset("/console/nope.js"));
        assert!(!is_asset("/pipelines"));
        let index = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert!(!index.contains("http://") && !index.contains("https://"), "nothing loaded from outside");
        assert!(!index.contains("<script>"), "no inline script (the CSP forbids it)");
    }

    #[test]
    fn responses_carry_type_cache_and_policy_headers_and_revalidate() {
        let resp = serve("app.css", &HeaderMap::new());
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/css; charset=utf-8");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(resp.headers()[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        let tag = resp.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(serve("app.css", &again).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(serve("secret.txt", &HeaderMap::new()).status(), StatusCode::NOT_FOUND);
    }
}
