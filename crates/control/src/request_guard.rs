//! What a request must look like before any route of the REST API sees
//! it: the defence against other web sites an operator's browser visits.
//!
//! * **Host** (DNS rebinding): a page on `attacker.example` whose name is
//!   made to resolve to 127.0.0.1 reaches the API as a same-origin request,
//!   but its `Host` header still says `attacker.example`. A request's host
//!   must be an IP literal (`127.0.0.1`, `[::1]`, `10.0.0.5`: a browser only
//!   sends one when the page itself came from that address), `localhost`,
//!   or a name the operator listed (`--api-allowed-hosts`; `*` turns the
//!   check off, e.g. behind a proxy that rewrites nothing). Ports are not
//!   compared: rebinding is about names, and a proxy may forward from
//!   another port. `/health` is exempt (it says only "ok", and liveness
//!   probes often use a service name).
//! * **Origin** (cross-site requests): a browser names the page that sent
//!   a request in `Origin` (on every POST/PUT/PATCH/DELETE, and on
//!   cross-origin GETs). It must be the API's own origin (scheme `http` or
//!   `https`, host and port equal to the request's `Host`), or one the
//!   operator listed (`--api-allowed-origins`). Requests without `Origin`
//!   (curl, the CLI, Prometheus, scripts) are not browsers' cross-site
//!   requests and pass; `Origin: null` (sandboxed frames, `file://`) does not.
//! * **Content-Type** of mutating requests: a cross-site form or a
//!   `fetch` without a CORS preflight can only send `text/plain`,
//!   `application/x-www-form-urlencoded` or `multipart/form-data`. Every
//!   POST/PUT/PATCH/DELETE must therefore carry `application/json`,
//!   `application/yaml`, `application/x-yaml` or `text/yaml` (none of which a
//!   browser sends cross-site without asking the API first, which answers
//!   no preflight), or have no Content-Type and an empty body (`POST
//!   /pipelines/{name}/pause` from curl). Anything else is 415.
//!
//! Refusals are 403 (host, origin) or 415 (content type) with the API's
//! JSON error shape, each saying what was refused and what to send
//! instead. This module owns only these checks (authentication is the
//! API's bearer token, see [`crate::api`]); it must never read a body or
//! look at what a route does.
//!
//! The header values are parsed by the `http` crate (`Authority`, `Uri`)
//! and the `mime` crate (the one axum uses), not by hand.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The media types a mutating request may carry.
pub const ACCEPTED_CONTENT_TYPES: [&str; 4] =
    ["application/json", "application/yaml", "application/x-yaml", "text/yaml"];

/// A host name the operator allows, with its port when one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    name: String,
    port: Option<u16>,
}

/// The Host and Origin rules of one API listener. The default allows IP
/// literals and `localhost` as hosts and only the API's own origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestGuard {
    any_host: bool,
    hosts: Vec<AllowedHost>,
    /// `scheme://host[:port]`, lower-case.
    origins: Vec<String>,
}

/// An entry of `--api-allowed-hosts` or `--api-allowed-origins` that is
/// not a host or an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GuardConfigError(String);

impl RequestGuard {
    /// Rules allowing, besides IP literals and `localhost`, the host names
    /// `hosts` (`name` or `name:port`; `*` allows every host) and the
    /// origins `origins` (`https://console.example.com[:port]`).
    ///
    /// # Errors
    /// When an entry is not a host name or not an `http(s)://host[:port]` origin.
    pub fn new(hosts: &[String], origins: &[String]) -> Result<Self, GuardConfigError> {
        let mut guard = RequestGuard::default();
        for h in hosts.iter().map(|h| h.trim()).filter(|h| !h.is_empty()) {
            if h == "*" {
                guard.any_host = true;
                continue;
            }
            let a: Authority = h.parse().map_err(|_| {
                GuardConfigError(format!("--api-allowed-hosts: {h:?} is not a host name (e.g. deltaforge.internal or deltaforge.internal:8080)"))
            })?;
            if a.as_str().contains('@') {
                return Err(GuardConfigError(format!("--api-allowed-hosts: {h:?} must not hold user information")));
            }
            guard.hosts.push(AllowedHost { name: normalize_host(a.host()), port: a.port_u16() });
        }
        for o in origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            let parsed = parse_origin(o).ok_or_else(|| {
                GuardConfigError(format!(
                    "--api-allowed-origins: {o:?} is not an origin; write scheme://host[:port], e.g. https://console.example.com"
                ))
            })?;
            guard.origins.push(parsed);
        }
        Ok(guard)
    }

    /// Whether a request may reach `host` (the request's Host).
    fn host_allowed(&self, host: &Authority) -> bool {
        let name = normalize_host(host.host());
        if self.any_host
            || name == "localhost"
            || name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok()
        {
            return true;
        }
        self.hosts.iter().any(|h| h.name == name && h.port.is_none_or(|p| host.port_u16() == Some(p)))
    }

    /// Whether a request from page `origin` may reach `host`.
    fn origin_allowed(&self, origin: &str, host: &Authority) -> bool {
        let Some(origin) = parse_origin(origin) else {
            return false;
        };
        if self.origins.contains(&origin) {
            return true;
        }
        let Ok(uri) = origin.parse::<Uri>() else {
            return false;
        };
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        normalize_host(authority.host()) == normalize_host(host.host())
            && authority.port_u16().unwrap_or(default_port) == host.port_u16().unwrap_or(default_port)
    }
}

/// A host name as compared: lower-case, without the trailing dot of a
/// fully qualified name.
fn normalize_host(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// `scheme://authority` of an `Origin` value or allow-list entry
/// (lower-case), when it is an http(s) origin without user information or
/// a path.
fn parse_origin(s: &str) -> Option<String> {
    let uri: Uri = s.trim().trim_end_matches('/').parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if !(scheme == "http" || scheme == "https") || authority.as_str().contains('@') || !path_ok {
        return None;
    }
    Some(format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()))
}

fn refuse(status: StatusCode, error: String, detail: Value) -> Response {
    (status, Json(json!({ "error": error, "detail": detail }))).into_response()
}

/// The request's host: the `Host` header (HTTP/1.1), else the URI's
/// authority (HTTP/2, absolute-form requests).
fn request_host(headers: &HeaderMap, uri: &Uri) -> Option<Authority> {
    match headers.get(header::HOST) {
        Some(v) => v.to_str().ok()?.parse().ok(),
        None => uri.authority().cloned(),
    }
}

/// Why a mutating request's Content-Type is refused, if it is.
fn content_type_problem(req: &Request) -> Option<String> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        let empty = req.body().size_hint().exact() == Some(0);
        return (!empty).then(|| "the request has a body but no Content-Type".to_string());
    };
    let text = value.to_str().unwrap_or("");
    match text.parse::<mime::Mime>() {
        Ok(m) if ACCEPTED_CONTENT_TYPES.contains(&m.essence_str()) => None,
        Ok(m) => Some(format!("Content-Type {} is not accepted", m.essence_str())),
        Err(_) => Some(format!("Content-Type {text:?} is not a media type")),
    }
}

/// The middleware: checks Host, Origin and (for POST, PUT, PATCH and
/// DELETE) Content-Type before the request reaches authentication or a route.
pub async fn check(State(guard): State<Arc<RequestGuard>>, req: Request, next: Next) -> Response {
    let Some(host) = request_host(req.headers(), req.uri()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the request has no valid Host header".into(),
            json!("send the address you connect to as `Host: HOST:PORT` (HTTP/1.1 clients do)"),
        );
    };
    // `/health` answers nothing worth rebinding for, and liveness probes
    // often address the instance by a service name nobody listed.
    if req.uri().path() != "/health" && !guard.host_allowed(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("requests for host {:?} are refused", host.host()),
            json!({
                "reason": "only IP addresses, localhost and the names given to --api-allowed-hosts may be used to reach the API (protection against DNS rebinding)",
                "fix": "use the server's IP address or localhost, or start deltaforge with --api-allowed-hosts NAME",
            }),
        );
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !guard.origin_allowed(origin, &host) {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("cross-origin request from {origin:?} refused"),
                json!({
                    "reason": "browsers may call the API only from its own origin (protection against cross-site requests)",
                    "fix": "open the page from the API's own address, or start deltaforge with --api-allowed-origins ORIGIN",
                }),
            );
        }
    }
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        if let Some(problem) = content_type_problem(&req) {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{problem}: send JSON or YAML"),
                json!({
                    "accepted": ACCEPTED_CONTENT_TYPES,
                    "fix": "send `Content-Type: application/json` (or application/yaml); curl: -H 'Content-Type: application/yaml' --data-binary @spec.yaml",
                }),
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(s: &str) -> Authority {
        s.parse().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ip_literals_and_localhost_are_allowed_hosts_names_only_when_listed() {
        let g = RequestGuard::default();
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "10.1.2.3:80", "localhost.:1"] {
            assert!(g.host_allowed(&auth(ok)), "{ok}");
        }
        for bad in ["attacker.example:8080", "127.0.0.1.nip.io:8080", "2130706433:8080", "localhost.attacker.example"] {
            assert!(!g.host_allowed(&auth(bad)), "{bad}");
        }
        let g = RequestGuard::new(&strings(&["df.internal", "proxy.example:443"]), &[]).unwrap();
        assert!(g.host_allowed(&auth("DF.internal:8080")));
        assert!(g.host_allowed(&auth("proxy.example:443")));
        assert!(!g.host_allowed(&auth("proxy.example:8443")), "a listed port must match");
        assert!(RequestGuard::new(&strings(&["*"]), &[]).unwrap().host_allowed(&auth("anything.example")));
    }

    #[test]
    fn only_the_apis_own_origin_or_a_listed_one_is_allowed() {
        let g = RequestGuard::default();
        let host = auth("127.0.0.1:8080");
        assert!(g.origin_allowed("http://127.0.0.1:8080", &host));
        assert!(g.origin_allowed("https://127.0.0.1:8080", &host), "behind a TLS proxy");
        for bad in ["http://127.0.0.1:3000", "http://localhost:8080", "http://evil.example", "null", "", "file://x"] {
            assert!(!g.origin_allowed(bad, &host), "{bad:?}");
        }
        assert!(g.origin_allowed("https://df.example.com", &auth("df.example.com")), "default ports");
        assert!(!g.origin_allowed("http://df.example.com:8443", &auth("df.example.com")));
        let g = RequestGuard::new(&[], &strings(&["https://Console.example.com/"])).unwrap();
        assert!(g.origin_allowed("https://console.example.com", &host));
        assert!(!g.origin_allowed("http://console.example.com", &host), "the scheme is part of an origin");
    }

    /// `(status, error text)` of `method /x` with `headers` and `body`
    /// through the middleware in front of a route that answers 200.
    async fn through(method: &str, headers: &[(&str, &str)], body: &'static str) -> (u16, String) {
        use axum::body::Body;
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/x", axum::routing::any(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(Arc::new(RequestGuard::default()), check));
        let mut req = axum::http::Request::builder().method(method).uri("/x");
        if !headers.iter().any(|(k, _)| *k == "host") {
            req = req.header("host", "127.0.0.1:8080");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app.oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn mutating_requests_need_a_json_or_yaml_content_type_or_no_body() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/YAML",
            "application/x-yaml",
            "text/yaml",
        ] {
            assert_eq!(through("POST", &[("content-type", ct)], "{}").await.0, 200, "{ct}");
        }
        assert_eq!(through("POST", &[], "").await.0, 200, "no body, no type: a bare command");
        assert_eq!(through("DELETE", &[], "").await.0, 200);
        for ct in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=b",
            "nonsense",
        ] {
            let (status, text) = through("POST", &[("content-type", ct)], "").await;
            assert_eq!(status, 415, "{ct}: {text}");
            assert!(text.contains("application/json"), "the fix names the accepted types: {text}");
        }
        let (status, text) = through("PUT", &[], "apiVersion: x").await;
        assert_eq!(status, 415, "{text}");
        assert!(text.contains("body but no Content-Type"), "{text}");
        // Reads carry no body worth checking.
        assert_eq!(through("GET", &[("content-type", "text/plain")], "").await.0, 200);
    }

    #[tokio::test]
    async fn foreign_origins_and_hosts_are_refused_before_the_route() {
        assert_eq!(through("POST", &[("origin", "http://127.0.0.1:8080")], "").await.0, 200);
        let (status, text) = through("POST", &[("origin", "https://evil.example")], "").await;
        assert_eq!(status, 403);
        assert!(text.contains("cross-origin request from") && text.contains("--api-allowed-origins"), "{text}");
        let (status, text) = through("GET", &[("host", "evil.example:8080")], "").await;
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("--api-allowed-hosts"), "{text}");
        assert_eq!(through("GET", &[("host", "localhost:8080")], "").await.0, 200);
        let health = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(Arc::new(RequestGuard::default()), check));
        let req = axum::http::Request::builder().uri("/health").header("host", "deltaforge:8080");
        let resp = tower::ServiceExt::oneshot(health, req.body(axum::body::Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200, "a probe by service name reaches /health");
    }

    #[test]
    fn bad_allow_list_entries_are_refused_with_the_option_named() {
        let e = RequestGuard::new(&strings(&["not a host"]), &[]).unwrap_err();
        assert!(e.to_string().contains("--api-allowed-hosts"), "{e}");
        for bad in ["console.example.com", "https://u:p@x.example", "https://x.example/path", "ftp://x.example"] {
            let e = RequestGuard::new(&[], &strings(&[bad])).unwrap_err();
            assert!(e.to_string().contains("--api-allowed-origins"), "{bad}: {e}");
        }
    }
}
