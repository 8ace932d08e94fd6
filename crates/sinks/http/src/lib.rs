//! `type: http` — delivers events to an HTTP webhook.
//!
//! - `batch_mode: batch` (default): the events of a batch are grouped by
//!   their rendered `url` (first-seen order, each group keeps the events'
//!   order) and each group is sent as one request whose body is a JSON array
//!   of envelopes. With a static URL that is one request per batch.
//! - `batch_mode: event`: one request per event, in order, body = the
//!   envelope, with an `Idempotency-Key` header = the event's idempotency key.
//!
//! A 2xx response acknowledges. 408, 429, 5xx, connection errors and
//! timeouts are [`SinkError::Retryable`]: the coordinator retries the batch
//! with backoff. `Retry-After` (seconds or an HTTP date) is honoured by
//! sleeping that long — capped at `retry_after_max_ms` (default 5 s, at
//! most 10 minutes) so an attempt stays inside the sink's `timeout_ms` —
//! before the error is returned, and the value is named in the error. A
//! `Retry-After` beyond a day (any number of digits, any date up to year
//! 9999) counts as a day: no arithmetic on it can overflow. Any other status (other
//! 4xx, and 3xx: redirects are not followed, since a redirected POST may
//! silently become a GET) is [`SinkError::Fatal`] with the start of the
//! response body in the message. When a batch is split into several
//! requests and a later one fails, the retry resends the whole batch:
//! receivers deduplicate on the envelope's `id`.
//!
//! Timeouts: the common sink key `timeout_ms` bounds one delivery attempt
//! (all requests of a batch, enforced by the coordinator);
//! `request_timeout_ms` (default 10 s) bounds each HTTP request.
//!
//! This module owns the config, the requests and the status mapping. It
//! never retries by itself, never writes checkpoints, and never logs or
//! returns header values (they often hold API keys: they are also marked
//! sensitive for the HTTP stack, and masked in a quoted response body that
//! echoes them) or the URL's credentials (URLs are shown
//! through [`deltaforge_common::redact_dsn`], which masks user-info
//! passwords and `token=`/`key=`-style query parameters).
//!
//! Crate choice: `reqwest` 0.13 (hyper underneath) with only `rustls` and
//! `json`: connection pooling, timeouts and TLS without OpenSSL.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_common::redact_dsn;
use deltaforge_core::{BuildError, ComponentConfig, ConfigProblem, Event, Sink, SinkError};
use deltaforge_encoding::{Envelope, Template};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

/// Longest part of a response body quoted in an error.
const BODY_EXCERPT: usize = 512;

/// Largest `retry_after_max_ms` accepted: 10 minutes.
pub const MAX_RETRY_AFTER_MAX_MS: u64 = 600_000;

/// Longest `Retry-After` taken at its word (a day); longer values, however
/// many digits or however far the date, count as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// One request per batch or per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchMode {
    /// One request per batch (per rendered URL), body = JSON array.
    #[default]
    Batch,
    /// One request per event, body = the envelope.
    Event,
}

/// Configuration of the HTTP sink.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// URL template, e.g. `https://hooks.example.com/cdc/${table}`.
    pub url: String,
    /// HTTP method: `POST` (default), `PUT` or `PATCH`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers; values may hold secrets and are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `batch` (default) or `event`.
    #[serde(default)]
    pub batch_mode: BatchMode,
    /// Envelope of each event.
    #[serde(default)]
    pub envelope: Envelope,
    /// Time limit of one HTTP request, in milliseconds (default 10000).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest `Retry-After` honoured by sleeping before the retryable error
    /// is returned, in milliseconds (default 5000; 0 = never sleep; at most
    /// 600000).
    #[serde(default = "default_retry_after_max_ms")]
    pub retry_after_max_ms: u64,
}

fn default_method() -> String {
    "POST".to_string()
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn default_retry_after_max_ms() -> u64 {
    5_000
}

fn bad(field: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem::new(field, message)
}

struct Parts {
    url: Template,
    method: Method,
    headers: HeaderMap,
}

impl ComponentConfig for HttpConfig {
    /// Offline validation: template, method, headers, timeouts.
    fn check(&self) -> Result<(), ConfigProblem> {
        self.parts().map(|_| ())
    }
}

impl HttpConfig {
    fn parts(&self) -> Result<Parts, ConfigProblem> {
        let url = Template::parse(&self.url).map_err(|e| e.at("url"))?;
        let lower = self.url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(bad("url", format!("{} must start with http:// or https://", redact_dsn(&self.url))));
        }
        let method = match self.method.to_ascii_uppercase().as_str() {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            other => return Err(bad("method", format!("{other:?} is not supported; use POST, PUT or PATCH"))),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("headers", format!("{name:?} is not a valid header name")))?;
            // The value is never echoed: it may be a secret.
            let mut v = HeaderValue::from_str(value)
                .map_err(|_| bad("headers", format!("the value of header {name:?} has invalid characters")))?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        if self.request_timeout_ms == 0 {
            return Err(bad("request_timeout_ms", "must be at least 1"));
        }
        if self.retry_after_max_ms > MAX_RETRY_AFTER_MAX_MS {
            return Err(bad("retry_after_max_ms", format!("must be at most {MAX_RETRY_AFTER_MAX_MS} (10 minutes)")));
        }
        Ok(Parts { url, method, headers })
    }
}

/// The HTTP webhook sink.
pub struct HttpSink {
    client: reqwest::Client,
    url: Template,
    method: Method,
    batch_mode: BatchMode,
    envelope: Envelope,
    retry_after_max: Duration,
    /// The header values, masked in quoted response bodies (an echo
    /// endpoint sends them back).
    header_values: Vec<String>,
}

impl HttpSink {
    /// Builds the sink (no request is sent).
    pub fn new(cfg: HttpConfig) -> Result<Self, BuildError> {
        let Parts { url, method, headers } = cfg.parts()?;
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(5_000)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("deltaforge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BuildError::other(format!("http: building the HTTP client: {}", e.without_url())))?;
        Ok(HttpSink {
            client,
            url,
            method,
            batch_mode: cfg.batch_mode,
            envelope: cfg.envelope,
            retry_after_max: Duration::from_millis(cfg.retry_after_max_ms),
            header_values: cfg.headers.values().filter(|v| v.len() >= 3).cloned().collect(),
        })
    }

    fn batch_content_type(&self) -> &'static str {
        match self.envelope {
            Envelope::Cloudevents => "application/cloudevents-batch+json",
            _ => "application/json",
        }
    }

    async fn send(
        &self,
        url: &str,
        body: Vec<u8>,
        content_type: &'static str,
        key: Option<&str>,
    ) -> Result<(), SinkError> {
        let shown = redact_dsn(url);
        let mut req = self.client.request(self.method.clone(), url).header(CONTENT_TYPE, content_type).body(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.map_err(|e| {
            let e = e.without_url();
            let what = if e.is_builder() {
                return SinkError::Fatal(format!("http: {shown} is not a valid URL ({e}): check the `url` template"));
            } else if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            SinkError::Retryable(format!("http {} {shown}: {what}: {}", self.method, error_chain(&e)))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let body = resp.bytes().await.map(|b| self.without_secrets(&excerpt(&b))).unwrap_or_default();
        let msg = format!("http {} {shown}: {status}: {body}", self.method);
        if is_retryable_status(status) {
            let msg = match retry_after {
                Some(d) => {
                    let wait = d.min(self.retry_after_max);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    format!("{msg} (Retry-After {}s; waited {} ms)", d.as_secs(), wait.as_millis())
                }
                None => msg,
            };
            Err(SinkError::Retryable(msg))
        } else if status.is_redirection() {
            Err(SinkError::Fatal(format!("{msg} — redirects are not followed: set `url` to the final location")))
        } else {
            Err(SinkError::Fatal(msg))
        }
    }
}

impl HttpSink {
    /// `text` with the header values and anything the one redaction
    /// ([`redact_dsn`]) recognises masked.
    fn without_secrets(&self, text: &str) -> String {
        let mut out = text.to_string();
        for v in &self.header_values {
            out = out.replace(v.as_str(), deltaforge_common::redact::MASK);
        }
        redact_dsn(&out)
    }
}

/// 408, 429 and 5xx may succeed later.
pub fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3),
/// at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    retry_after_at(v, std::time::SystemTime::now())
}

/// [`parse_retry_after`] as seen at `now`.
fn retry_after_at(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a long time".
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs())));
    }
    let when = httpdate(v)?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

/// Parses the IMF-fixdate form `Sun, 06 Nov 1994 08:49:37 GMT` (the only
/// form senders may generate); hand-written to avoid a date crate for one
/// header.
fn httpdate(v: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    // Ranges first: with them no step below can overflow.
    let day: i64 = parts[1].parse().ok().filter(|d| (1..=31).contains(d))?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == parts[2])? as i64 + 1;
    let year: i64 = parts[3].parse().ok().filter(|y| (1..=9999).contains(y))?;
    let hms: Vec<i64> = parts[4].split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if hms.len() != 3 || !(0..24).contains(&hms[0]) || !(0..60).contains(&hms[1]) || !(0..=60).contains(&hms[2]) {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs < 0 {
        std::time::UNIX_EPOCH.checked_sub(offset)
    } else {
        std::time::UNIX_EPOCH.checked_add(offset)
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    let mut end = text.len().min(BODY_EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        format!("{}… ({} bytes)", &text[..end], body.len())
    } else {
        text.to_string()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[async_trait]
impl Sink for HttpSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        match self.batch_mode {
            BatchMode::Event => {
                for e in events {
                    let url = self.url.render(e);
                    let body = self.envelope.encode(e);
                    let key = e.idempotency_key();
                    self.send(&url, body, self.envelope.content_type(), Some(&key)).await?;
                }
            }
            BatchMode::Batch => {
                // Group by rendered URL, keeping first-seen order.
                let mut groups: Vec<(String, Vec<u8>)> = Vec::new();
                for e in events {
                    let url = self.url.render(e);
                    let i = match groups.iter().position(|(u, _)| *u == url) {
                        Some(i) => i,
                        None => {
                            groups.push((url, Vec::with_capacity(events.len() * 256 + 2)));
                            groups.len() - 1
                        }
                    };
                    let body = &mut groups[i].1;
                    body.push(if body.is_empty() { b'[' } else { b',' });
                    self.envelope.encode_into(e, body);
                }
                for (url, mut body) in groups {
                    body.push(b']');
                    self.send(&url, body, self.batch_content_type(), None).await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> HttpConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults() {
        let c = cfg(json!({"url": "http://127.0.0.1:1/${table}"}));
        assert_eq!(c.method, "POST");
        assert_eq!(c.batch_mode, BatchMode::Batch);
        assert_eq!(c.envelope, Envelope::Native);
        assert!(c.check().is_ok());
    }

    #[test]
    fn config_errors_name_the_field_and_hide_header_values() {
        assert_eq!(cfg(json!({"url": "http://h/${nope}"})).check().unwrap_err().field, "url");
        assert_eq!(cfg(json!({"url": "ftp://h/"})).check().unwrap_err().field, "url");
        assert_eq!(cfg(json!({"url": "http://h/", "method": "GET"})).check().unwrap_err().field, "method");
        let e = cfg(json!({"url": "http://h/", "headers": {"Authorization": "Bearer s3cr3t\n"}})).check().unwrap_err();
        assert_eq!(e.field, "headers");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(serde_json::from_value::<HttpConfig>(json!({"url": "http://h/", "batchmode": "event"})).is_err());
        assert!(serde_json::from_value::<HttpConfig>(json!({"url": "http://h/", "batch_mode": "all"})).is_err());
    }

    #[test]
    fn status_classes() {
        for s in [408u16, 429, 500, 502, 503] {
            assert!(is_retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400u16, 401, 403, 404, 422] {
            assert!(!is_retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        let t = httpdate("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        assert_eq!(parse_retry_after("soon"), None);
    }

    /// Issue 14: huge seconds and far dates used to overflow (a panic in
    /// the sink's task) or be ignored; now they are capped at a day.
    #[test]
    fn retry_after_cannot_overflow() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let day = Some(MAX_RETRY_AFTER);
        assert_eq!(retry_after_at("18446744073709551615", now), day);
        assert_eq!(retry_after_at("184467440737095516150000", now), day);
        assert_eq!(retry_after_at("Fri, 31 Dec 9999 23:59:59 GMT", now), day);
        assert_eq!(retry_after_at("Sun, 06 Nov 99999999999999 08:49:37 GMT", now), None);
        assert_eq!(retry_after_at("Sun, 06 Nov 1994 99999999999999:49:37 GMT", now), None);
        assert_eq!(retry_after_at("Sun, 06 Nov -99999999999999 08:49:37 GMT", now), None);
        assert_eq!(retry_after_at("Mon, 01 Jan 0001 00:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after_at("Tue, 14 Nov 2023 22:14:20 GMT", now),
            Some(Duration::from_secs(1_700_000_060 - 1_700_000_000))
        );
        let c = cfg(json!({"url": "http://h/", "retry_after_max_ms": u64::MAX}));
        assert_eq!(c.check().unwrap_err().field, "retry_after_max_ms");
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt(b"  nope  "), "nope");
        let long = "é".repeat(1000);
        let e = excerpt(long.as_bytes());
        assert!(e.len() < 600 && e.ends_with("(2000 bytes)"), "{e}");
    }

    #[tokio::test]
    async fn connection_refused_is_retryable_without_secrets() {
        let c = cfg(json!({"url": "http://u:pw123@127.0.0.1:1/hook?token=tok456", "request_timeout_ms": 500,
                           "headers": {"X-Api-Key": "key789"}}));
        let mut sink = HttpSink::new(c).unwrap();
        let ev = deltaforge_core::testing::EventBuilder::new(1).build();
        match sink.deliver(&[ev]).await {
            Err(SinkError::Retryable(m)) => {
                for secret in ["pw123", "tok456", "key789"] {
                    assert!(!m.contains(secret), "{secret} leaked: {m}");
                }
                assert!(m.contains("127.0.0.1:1"), "{m}");
            }
            other => panic!("expected a retryable error, got {other:?}"),
        }
    }
}
