//! `type: nats` — delivers events to NATS JetStream.
//!
//! Each event is published to the subject rendered from the `subject`
//! template (e.g. `cdc.${db}.${table}`) with the envelope JSON as payload
//! and the headers `Nats-Msg-Id` = the event's idempotency key (JetStream
//! drops a re-publish of the same id inside the stream's duplicate window,
//! so a replay after a crash or a retried batch does not duplicate), `op`,
//! `key` (the default message key, when the table has one) and
//! `Content-Type`. The whole batch is published first, then every PubAck
//! is awaited; the batch is acknowledged only when each event has its
//! PubAck, i.e. JetStream stored it.
//!
//! At the first delivery the sink connects and looks the configured
//! `stream` up. A missing stream is a fatal error that names the stream and
//! how to create it, unless `create_stream: true`, in which case it is
//! created bound to `subjects` (default: the `subject` template with every
//! token holding a placeholder replaced by `*`).
//!
//! This module owns the config, the connection, stream lookup/creation and
//! the mapping of NATS errors to [`SinkError::Retryable`] / [`SinkError::Fatal`].
//! It never retries by itself (the coordinator owns retries), never writes
//! checkpoints, and never shows credentials: the URL's user-info is masked
//! and `password`, `token` and the creds file's contents never reach a
//! message.
//!
//! Crate choice: `async-nats` 0.51 is the NATS maintainers' tokio client;
//! built with `default-features = false` and only `jetstream`, `ring` (TLS
//! provider) and `nkeys` (needed for `.creds` files), which keeps the
//! object store, KV and websocket code out of the binary. Its client
//! reconnects by itself after a server restart.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishError, context::PublishErrorKind, stream};
use async_nats::{ConnectErrorKind, HeaderMap, ServerAddr};
use async_trait::async_trait;
use deltaforge_common::redact_dsn;
use deltaforge_core::{BuildError, ComponentConfig, ConfigProblem, Event, Sink, SinkError};
use deltaforge_encoding::{default_key, Envelope, Template};
use serde::Deserialize;

/// Acks awaited at most at once; below async-nats' default in-flight limit
/// (5000), which would otherwise block a large batch forever.
const ACK_WINDOW: usize = 4096;

/// Configuration of the NATS JetStream sink.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222`; several separated by commas.
    pub url: String,
    /// Subject template, e.g. `cdc.${db}.${table}`.
    pub subject: String,
    /// The JetStream stream that must capture the subjects.
    pub stream: String,
    /// Create the stream when it does not exist (default false).
    #[serde(default)]
    pub create_stream: bool,
    /// Subjects to bind when creating the stream; default derived from `subject`.
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// User name (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// Password (with `user`). Never logged.
    #[serde(default)]
    pub password: Option<String>,
    /// Authentication token. Never logged.
    #[serde(default)]
    pub token: Option<String>,
    /// Path of a `.creds` file (JWT + NKey seed).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// Envelope of the payload.
    #[serde(default)]
    pub envelope: Envelope,
    /// How long to wait for each PubAck (and JetStream API replies), in
    /// milliseconds (default 5000).
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// How often the client pings the server, in milliseconds (default
    /// 10000). Two pings without a pong mark the connection dead and the
    /// client reconnects, so a stalled link (no reply, no close) is left
    /// after about two intervals instead of the client default of minutes.
    #[serde(default = "default_ping_interval_ms")]
    pub ping_interval_ms: u64,
}

fn default_ack_timeout_ms() -> u64 {
    5_000
}

fn default_ping_interval_ms() -> u64 {
    10_000
}

fn bad(field: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem::new(field, message)
}

impl ComponentConfig for NatsConfig {
    /// Offline validation (no connection, no file reads).
    fn check(&self) -> Result<(), ConfigProblem> {
        self.parts().map(|_| ())
    }
}

impl NatsConfig {
    fn parts(&self) -> Result<(Template, Vec<ServerAddr>), ConfigProblem> {
        let subject = Template::parse(&self.subject).map_err(|e| e.at("subject"))?;
        if self.subject.is_empty() {
            return Err(bad("subject", "must not be empty"));
        }
        let mut addrs = Vec::new();
        for u in self.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let addr: ServerAddr = u.parse().map_err(|e| {
                bad("url", format!("{} is not a NATS URL ({e}); expected nats://host:port", redact_dsn(u)))
            })?;
            addrs.push(addr);
        }
        if addrs.is_empty() {
            return Err(bad("url", "must name at least one server, e.g. nats://127.0.0.1:4222"));
        }
        if self.stream.is_empty() || self.stream.contains(['.', ' ', '\t', '*', '>', '/', '\\']) {
            return Err(bad(
                "stream",
                format!("{:?} is not a valid stream name (no spaces, `.`, `*`, `>`, `/`)", self.stream),
            ));
        }
        match (&self.user, &self.password) {
            (Some(_), None) => return Err(bad("password", "`user` is set but `password` is missing")),
            (None, Some(_)) => return Err(bad("user", "`password` is set but `user` is missing")),
            _ => {}
        }
        let methods = [self.user.is_some(), self.token.is_some(), self.creds_file.is_some()];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(bad("token", "choose one of `user`/`password`, `token` or `creds_file`"));
        }
        if let Some(subjects) = &self.subjects {
            if subjects.is_empty() || subjects.iter().any(|s| s.is_empty()) {
                return Err(bad("subjects", "must list at least one non-empty subject"));
            }
            if !self.create_stream {
                return Err(bad("subjects", "only used with `create_stream: true`"));
            }
        }
        if self.ack_timeout_ms == 0 {
            return Err(bad("ack_timeout_ms", "must be at least 1"));
        }
        if self.ping_interval_ms < 100 {
            return Err(bad("ping_interval_ms", "must be at least 100"));
        }
        Ok((subject, addrs))
    }

    /// Subjects the stream is created with.
    pub fn stream_subjects(&self) -> Vec<String> {
        match &self.subjects {
            Some(s) => s.clone(),
            None => vec![wildcard_subject(&self.subject)],
        }
    }
}

/// The subject template with each token that holds a placeholder replaced
/// by `*`: `cdc.${db}.${table}` → `cdc.*.*`.
pub fn wildcard_subject(template: &str) -> String {
    template.split('.').map(|t| if t.contains("${") { "*" } else { t }).collect::<Vec<_>>().join(".")
}

/// The NATS JetStream sink.
pub struct NatsSink {
    cfg: NatsConfig,
    subject: Template,
    addrs: Vec<ServerAddr>,
    shown: String,
    js: Option<jetstream::Context>,
    buf: Vec<u8>,
}

impl NatsSink {
    /// Builds the sink; the connection is opened at the first delivery.
    pub fn new(cfg: NatsConfig) -> Result<Self, BuildError> {
        let (subject, addrs) = cfg.parts()?;
        let shown = cfg.url.split(',').map(|u| redact_dsn(u.trim())).collect::<Vec<_>>().join(",");
        Ok(NatsSink { cfg, subject, addrs, shown, js: None, buf: Vec::with_capacity(1024) })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.ack_timeout_ms)
    }

    async fn context(&mut self) -> Result<jetstream::Context, SinkError> {
        if let Some(js) = &self.js {
            return Ok(js.clone());
        }
        let mut opts = async_nats::ConnectOptions::new()
            .name("deltaforge")
            .connection_timeout(self.timeout())
            .request_timeout(Some(self.timeout()))
            .ping_interval(Duration::from_millis(self.cfg.ping_interval_ms))
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("nats: connected"),
                    async_nats::Event::Disconnected => tracing::warn!("nats: disconnected; reconnecting"),
                    other => tracing::debug!("nats: {other}"),
                }
            });
        if let (Some(u), Some(p)) = (&self.cfg.user, &self.cfg.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &self.cfg.token {
            opts = opts.token(t.clone());
        }
        if let Some(path) = &self.cfg.creds_file {
            opts = opts.credentials_file(path).await.map_err(|e| {
                SinkError::Fatal(format!(
                    "nats: cannot use creds_file {}: {} — point `creds_file` at a readable .creds file",
                    path.display(),
                    e.kind()
                ))
            })?;
        }
        let client = opts.connect(self.addrs.clone()).await.map_err(|e| {
            let m = format!("nats: connecting to {}: {}", self.shown, e.kind());
            match e.kind() {
                ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                    SinkError::Fatal(format!("{m} — check `user`/`password`, `token` or `creds_file`"))
                }
                ConnectErrorKind::ServerParse => SinkError::Fatal(format!("{m} — check `url`")),
                _ => SinkError::Retryable(m),
            }
        })?;
        let mut js = jetstream::new(client);
        js.set_timeout(self.timeout());
        self.ensure_stream(&js).await?;
        self.js = Some(js.clone());
        Ok(js)
    }

    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), SinkError> {
        let name = &self.cfg.stream;
        match js.get_stream(name).await {
            Ok(_) => return Ok(()),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(err)
                    if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND => {}
                jetstream::context::GetStreamErrorKind::JetStream(err) => {
                    return Err(SinkError::Fatal(format!("nats: looking up stream {name:?} on {}: {err}", self.shown)))
                }
                _ => {
                    return Err(SinkError::Retryable(format!(
                        "nats: looking up stream {name:?} on {}: {e} (is JetStream enabled on the server, `-js`?)",
                        self.shown
                    )))
                }
            },
        }
        let subjects = self.cfg.stream_subjects();
        if !self.cfg.create_stream {
            return Err(SinkError::Fatal(format!(
                "nats: JetStream stream {name:?} does not exist on {}: create it (e.g. `nats stream add {name} \
                 --subjects '{}'`) or set `create_stream: true` on the sink",
                self.shown,
                subjects.join(",")
            )));
        }
        let config = stream::Config { name: name.clone(), subjects: subjects.clone(), ..Default::default() };
        match js.create_stream(config).await {
            Ok(_) => {
                tracing::info!(stream = %name, subjects = ?subjects, "nats: created JetStream stream");
                Ok(())
            }
            Err(e) => {
                let m = format!("nats: creating stream {name:?} with subjects {subjects:?} on {}: {e}", self.shown);
                match e.kind() {
                    jetstream::context::CreateStreamErrorKind::TimedOut
                    | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable => Err(SinkError::Retryable(m)),
                    _ => Err(SinkError::Fatal(format!("{m} — e.g. the subjects overlap another stream's"))),
                }
            }
        }
    }

    /// Maps a publish error. "No responders" (no stream captures the
    /// subject) is only fatal when JetStream itself answers: right after a
    /// server restart it can briefly have no responders while its streams
    /// load, which is retryable.
    async fn publish_error(&self, js: &jetstream::Context, subject: &str, e: PublishError) -> SinkError {
        let m = format!("nats: publishing to {subject:?} on {}: {e}", self.shown);
        match e.kind() {
            PublishErrorKind::StreamNotFound => match js.get_stream(&self.cfg.stream).await {
                Ok(_) => SinkError::Fatal(format!(
                    "{m} — stream {:?} exists but does not capture this subject: add it to the stream's subjects \
                     (e.g. `nats stream edit {} --subjects '{}'`)",
                    self.cfg.stream,
                    self.cfg.stream,
                    wildcard_subject(&self.cfg.subject)
                )),
                Err(ge) => match ge.kind() {
                    jetstream::context::GetStreamErrorKind::JetStream(err)
                        if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                    {
                        SinkError::Fatal(format!(
                            "{m} — JetStream stream {:?} no longer exists: recreate it or set `create_stream: true`",
                            self.cfg.stream
                        ))
                    }
                    _ => SinkError::Retryable(format!("{m} (JetStream not answering yet: {ge})")),
                },
            },
            PublishErrorKind::MaxPayloadExceeded => {
                SinkError::Fatal(format!("{m} — raise the server's max_payload or shrink the events"))
            }
            _ => SinkError::Retryable(m),
        }
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let js = self.context().await?;
        let content_type = self.cfg.envelope.content_type();
        let mut pending: VecDeque<(String, jetstream::context::PublishAckFuture)> = VecDeque::new();
        let mut duplicates = 0usize;
        for e in events {
            if pending.len() >= ACK_WINDOW {
                let (subject, ack) = pending.pop_front().expect("non-empty");
                match ack.await {
                    Ok(a) => duplicates += usize::from(a.duplicate),
                    Err(err) => return Err(self.publish_error(&js, &subject, err).await),
                }
            }
            let subject = self.subject.render(e);
            self.buf.clear();
            self.cfg.envelope.encode_into(e, &mut self.buf);
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", e.idempotency_key().as_str());
            headers.insert("op", e.op.code());
            if let Some(k) = default_key(e) {
                headers.insert("key", k.as_str());
            }
            headers.insert("Content-Type", content_type);
            match js.publish_with_headers(subject.clone(), headers, self.buf.clone().into()).await {
                Ok(ack) => pending.push_back((subject, ack)),
                Err(err) => return Err(self.publish_error(&js, &subject, err).await),
            }
        }
        for (subject, ack) in pending {
            match ack.await {
                Ok(a) => duplicates += usize::from(a.duplicate),
                Err(err) => return Err(self.publish_error(&js, &subject, err).await),
            }
        }
        if duplicates > 0 {
            tracing::info!(
                stream = %self.cfg.stream,
                duplicates,
                events = events.len(),
                "nats: JetStream dropped re-published events by their Nats-Msg-Id (a replay or a retried batch)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> NatsConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_derived_subjects() {
        let c = cfg(json!({"url": "nats://127.0.0.1:4222", "subject": "cdc.${db}.${table}", "stream": "CDC"}));
        assert!(c.check().is_ok());
        assert_eq!(c.envelope, Envelope::Native);
        assert!(!c.create_stream);
        assert_eq!(c.stream_subjects(), vec!["cdc.*.*"]);
        assert_eq!(wildcard_subject("orders"), "orders");
        assert_eq!((c.ack_timeout_ms, c.ping_interval_ms), (5_000, 10_000));
    }

    #[test]
    fn config_errors_name_the_field() {
        let base = json!({"url": "nats://h:4222", "subject": "s", "stream": "S"});
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            cfg(b).check().unwrap_err()
        };
        assert_eq!(with("subject", json!("a.${nope}")).field, "subject");
        assert_eq!(with("ping_interval_ms", json!(50)).field, "ping_interval_ms");
        assert_eq!(with("stream", json!("a.b")).field, "stream");
        assert_eq!(with("user", json!("u")).field, "password");
        assert_eq!(with("subjects", json!(["x.>"])).field, "subjects");
        let mut both = base.clone();
        both["token"] = json!("t");
        both["creds_file"] = json!("/x.creds");
        assert_eq!(cfg(both).check().unwrap_err().field, "token");
        assert!(serde_json::from_value::<NatsConfig>(json!({"url": "u", "subject": "s", "stream": "S", "pass": "x"}))
            .is_err());
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(redact_dsn("nats://u:secret@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redact_dsn("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_dsn("nats://h:4222"), "nats://h:4222");
    }

    #[tokio::test]
    async fn unreachable_server_is_retryable() {
        let c =
            cfg(json!({"url": "nats://u:secret@127.0.0.1:1", "subject": "s", "stream": "S", "ack_timeout_ms": 500}));
        let mut sink = NatsSink::new(c).unwrap();
        let ev = deltaforge_core::testing::EventBuilder::new(1).build();
        match sink.deliver(&[ev]).await {
            Err(SinkError::Retryable(m)) => {
                assert!(!m.contains("secret"), "{m}");
                assert!(m.contains("127.0.0.1:1"), "{m}");
            }
            other => panic!("expected a retryable error, got {other:?}"),
        }
    }
}
