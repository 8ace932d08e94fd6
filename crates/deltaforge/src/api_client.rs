//! A thin client of the REST API of a running `deltaforge run` (see
//! `docs/api.md`), for the operator commands (`status`, `pipelines ...`).
//!
//! It owns the base URL, the bearer token and the translation of transport
//! and HTTP errors into messages that say what to do. It never shows the
//! token, and shows the API URL only through `redact_dsn`; it knows
//! nothing about tables or output formats (see `ops_cmd`).

use std::time::Duration;

use anyhow::{anyhow, bail};
use deltaforge_common::redact_dsn;
use serde_json::Value;

/// The API's default address, as `deltaforge run` binds it.
pub const DEFAULT_API: &str = "http://127.0.0.1:8080";

/// A client of one instance's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// A successful answer: the HTTP status and the JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status (2xx).
    pub status: u16,
    /// The body as JSON (`null` when empty).
    pub body: Value,
}

impl ApiClient {
    /// A client of the API at `api` (`http://host:port`, or `host:port`),
    /// sending `token` as `Authorization: Bearer` when given.
    pub fn new(api: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let base = normalize_base(api)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // Pause and stop wait up to 5 s, a checkpoint reset up to the
            // run's shutdown grace plus 5 s.
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| anyhow!("cannot set up the HTTP client: {e}"))?;
        let token = token.map(str::trim).filter(|t| !t.is_empty()).map(str::to_string);
        Ok(ApiClient { base, token, http })
    }

    /// The base URL, redacted for messages.
    pub fn shown_base(&self) -> String {
        redact_dsn(&self.base)
    }

    /// `GET {path}`; any non-2xx status is an error.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(reqwest::Method::GET, path).await?.ok()
    }

    /// `POST {path}` with no body; any non-2xx status is an error.
    pub async fn post(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(reqwest::Method::POST, path).await?.ok()
    }

    /// `DELETE {path}`; any non-2xx status is an error.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Answer> {
        self.call(reqwest::Method::DELETE, path).await?.ok()
    }

    /// `{method} {path}`: the status and body whatever the status, or an
    /// error when the API cannot be reached or answers something else
    /// than JSON.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if method != reqwest::Method::GET {
            // The API refuses mutating requests of other media types (its
            // defence against cross-site requests); the commands send no
            // body, and an empty JSON request is what the API expects.
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| {
            anyhow!("reading the answer to {method} {path} from {}: {}", self.shown_base(), e.without_url())
        })?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|_| {
                anyhow!(
                    "{} answered {method} {path} with HTTP {status} and a body that is not JSON: is it a DeltaForge API?",
                    self.shown_base()
                )
            })?
        };
        Ok(Reply { status, body, what: format!("{method} {path}"), has_token: self.token.is_some() })
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        let shown = self.shown_base();
        let addr = shown.split("://").nth(1).unwrap_or(&shown).to_string();
        let why = if e.is_timeout() { "timed out".to_string() } else { error_chain(e) };
        anyhow!(
            "cannot reach the DeltaForge API at {shown} ({why}). Is `deltaforge run` running with --api-addr {addr}? \
             Point this command at it with --api URL or DELTAFORGE_API"
        )
    }
}

/// An answer with any status, before [`Reply::ok`] turns a non-2xx one into
/// an error.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (`null` when empty).
    pub body: Value,
    what: String,
    has_token: bool,
}

impl Reply {
    /// The answer when the status is 2xx; otherwise an error with the API's
    /// own message (`error` and `detail`) and, for 401, how to pass a token.
    pub fn ok(self) -> anyhow::Result<Answer> {
        if (200..300).contains(&self.status) {
            return Ok(Answer { status: self.status, body: self.body });
        }
        bail!("{}", error_message(&self.what, self.status, &self.body, self.has_token))
    }
}

/// The message for a non-2xx answer.
pub fn error_message(what: &str, status: u16, body: &Value, has_token: bool) -> String {
    let api_msg = body.get("error").and_then(Value::as_str).unwrap_or("no error message");
    let detail = match body.get("detail") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => format!(" ({s})"),
        Some(d) => format!(" ({d})"),
    };
    let hint = match (status, has_token) {
        (401, false) => ". The API requires a token: pass --token TOKEN or set DELTAFORGE_API_TOKEN",
        (401, true) => ". The token was refused: pass the one `deltaforge run` was given (--api-token)",
        (404, _) => ". `deltaforge pipelines list` shows the pipelines",
        _ => "",
    };
    format!("{what}: HTTP {status}: {api_msg}{detail}{hint}")
}

/// `api` as a base URL without a trailing slash; `host:port` gets `http://`.
pub fn normalize_base(api: &str) -> anyhow::Result<String> {
    let api = api.trim().trim_end_matches('/');
    if api.is_empty() {
        bail!("--api is empty: give the API's URL, e.g. {DEFAULT_API}");
    }
    let base = if api.contains("://") { api.to_string() } else { format!("http://{api}") };
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--api {}: must be an http:// or https:// URL, e.g. {DEFAULT_API}", redact_dsn(api));
    }
    Ok(base)
}

/// The error and its sources in one line, without the URL.
fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut parts = vec![];
    let mut src = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_base_without_scheme_gets_http_and_loses_its_trailing_slash() {
        assert_eq!(normalize_base("127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(normalize_base("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(normalize_base("https://h").unwrap(), "https://h");
        assert!(normalize_base("ftp://h").is_err());
        assert!(normalize_base(" ").is_err());
    }

    #[test]
    fn error_messages_carry_the_api_message_and_a_hint() {
        let body = json!({"error": "missing API token", "detail": "send it"});
        let m = error_message("GET /pipelines", 401, &body, false);
        assert!(m.contains("HTTP 401: missing API token (send it)"), "{m}");
        assert!(m.contains("--token"), "{m}");
        let m = error_message("GET /pipelines/x", 404, &json!({"error": "unknown pipeline x"}), true);
        assert!(m.contains("unknown pipeline x") && m.contains("pipelines list"), "{m}");
    }

    #[test]
    fn the_shown_base_hides_credentials() {
        let c = ApiClient::new("http://user:secret@h:1", Some("tok")).unwrap();
        assert!(!c.shown_base().contains("secret"), "{}", c.shown_base());
    }
}
