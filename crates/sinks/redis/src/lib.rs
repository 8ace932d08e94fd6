//! `type: redis` — delivers events to Redis Streams.
//!
//! Each event becomes one `XADD` to the stream named by the `stream`
//! template (e.g. `cdc.${db}.${table}`), with the fields
//!
//! | field   | value |
//! |---------|-------|
//! | `id`    | the event's idempotency key (consumers deduplicate on it) |
//! | `op`    | `c`, `u`, `d`, `r` or `t` |
//! | `key`   | the default message key (`{"id":42}`); omitted when the table has no known key |
//! | `value` | the envelope JSON (`envelope: native \| debezium \| cloudevents`) |
//!
//! and, with `maxlen: N`, approximate trimming (`XADD … MAXLEN ~ N *`).
//! All the `XADD`s of a batch go in one pipeline (one round trip); the batch
//! is acknowledged only when every reply is a stream entry id. Redis keeps
//! what it acknowledged in memory: how durable that is depends on the
//! server's persistence settings (`appendonly yes`, `appendfsync always`
//! for no loss on a server crash), which this sink cannot change.
//!
//! This module owns the config, the connection and the mapping of Redis
//! errors to [`SinkError::Retryable`] / [`SinkError::Fatal`]. It never
//! retries by itself (the coordinator owns retries and backoff), never
//! writes checkpoints, and never puts the URI's password into a log line or
//! an error (URIs are shown through [`deltaforge_common::redact_dsn`]).
//!
//! Crate choice: `redis` 1.x (`tokio-comp`, `connection-manager`) is the
//! maintained Rust client; its `ConnectionManager` reconnects by itself
//! after a server restart, so an outage costs failed attempts, not a
//! rebuilt sink. The connection is opened lazily on the first delivery, so
//! building a sink (and `deltaforge validate`) never touches the network
//! and a server that is down at start-up is a retryable condition.
//! Connecting and every round trip are bounded by `response_timeout_ms`;
//! after a failed attempt the connection is dropped and the next attempt
//! opens a new one, so a stalled link (no reply, no close) costs one
//! timeout, not every attempt until the link unsticks.

use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_common::redact_dsn;
use deltaforge_core::{BuildError, ComponentConfig, ConfigProblem, Event, Sink, SinkError};
use deltaforge_encoding::{default_key, Envelope, Template};
use futures::stream::{FuturesOrdered, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use serde::Deserialize;

/// `XADD`s per sub-pipeline: large enough that a round trip carries many
/// commands, small enough that Redis starts on a batch while the rest of
/// it is still being encoded.
const SUB_PIPELINE: usize = 256;

/// Configuration of the Redis Streams sink.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Server URI, e.g. `redis://127.0.0.1:6379/0` or
    /// `redis://:password@host:6379` (`rediss://` needs a TLS build of the
    /// client and is refused).
    pub uri: String,
    /// Stream name template, e.g. `cdc.${db}.${table}`.
    pub stream: String,
    /// Approximate maximum stream length (`XADD … MAXLEN ~ N`); unbounded when absent.
    #[serde(default)]
    pub maxlen: Option<u64>,
    /// Envelope of the `value` field.
    #[serde(default)]
    pub envelope: Envelope,
    /// Time limit of one round trip, in milliseconds (default 10000).
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
}

fn default_response_timeout_ms() -> u64 {
    10_000
}

impl ComponentConfig for RedisConfig {
    /// Offline validation: the template parses, the URI is a Redis URI,
    /// values are in range. Opens no connection.
    fn check(&self) -> Result<(), ConfigProblem> {
        self.parts().map(|_| ())
    }
}

/// A `uri` problem; the URI is shown with its password masked.
fn bad_uri(uri: &str, reason: &str) -> ConfigProblem {
    ConfigProblem::new(
        "uri",
        format!(
            "{} is not a valid Redis URI ({reason}); expected redis://[:password@]host[:port][/db]",
            redact_dsn(uri)
        ),
    )
}

impl RedisConfig {
    fn parts(&self) -> Result<(Template, redis::Client), ConfigProblem> {
        let stream = Template::parse(&self.stream).map_err(|e| e.at("stream"))?;
        if self.stream.is_empty() {
            return Err(ConfigProblem::new("stream", "must not be empty"));
        }
        if self.uri.starts_with("rediss://") {
            return Err(bad_uri(&self.uri, "TLS (rediss://) is not built into this binary"));
        }
        let client = redis::Client::open(self.uri.as_str())
            .map_err(|e| bad_uri(&self.uri, &scrub(&e.to_string(), &self.uri)))?;
        if self.maxlen == Some(0) {
            return Err(ConfigProblem::new("maxlen", "must be at least 1 (omit it for no trimming)"));
        }
        if self.response_timeout_ms == 0 {
            return Err(ConfigProblem::new("response_timeout_ms", "must be at least 1"));
        }
        Ok((stream, client))
    }
}

/// Replaces any occurrence of the raw URI in a message by its redacted form.
fn scrub(message: &str, uri: &str) -> String {
    if uri.is_empty() {
        message.to_string()
    } else {
        message.replace(uri, &redact_dsn(uri))
    }
}

/// The Redis Streams sink.
pub struct RedisSink {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    stream: Template,
    maxlen: Option<u64>,
    envelope: Envelope,
    response_timeout: Duration,
    /// The URI with its password masked, for messages.
    shown_uri: String,
    raw_uri: String,
    buf: Vec<u8>,
}

impl RedisSink {
    /// Builds the sink; no connection is opened until the first delivery.
    pub fn new(cfg: RedisConfig) -> Result<Self, BuildError> {
        let (stream, client) = cfg.parts()?;
        Ok(RedisSink {
            client,
            conn: None,
            stream,
            maxlen: cfg.maxlen,
            envelope: cfg.envelope,
            response_timeout: Duration::from_millis(cfg.response_timeout_ms),
            shown_uri: redact_dsn(&cfg.uri),
            raw_uri: cfg.uri,
            buf: Vec::with_capacity(1024),
        })
    }

    async fn connection(&mut self) -> Result<ConnectionManager, SinkError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.response_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| self.classify(&e, "connecting to"))?;
        tracing::info!(uri = %self.shown_uri, "connected to Redis");
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Maps a Redis error to retryable or fatal, with a message that names
    /// the server (password masked) and what to do.
    fn classify(&self, e: &RedisError, doing: &str) -> SinkError {
        let text = scrub(&e.to_string(), &self.raw_uri);
        let code = e.code().unwrap_or("");
        let fatal_hint = match (e.kind(), code) {
            (ErrorKind::AuthenticationFailed, _) | (_, "NOAUTH" | "WRONGPASS") => {
                Some("authentication failed: check the user and password in `uri`")
            }
            (ErrorKind::Server(ServerErrorKind::NoPerm), _) | (_, "NOPERM") => {
                Some("the Redis user lacks permission for XADD on this stream: grant it with ACL SETUSER")
            }
            (_, "WRONGTYPE") => Some("the stream key already holds a value of another type: rename the `stream` template or delete the key"),
            (ErrorKind::InvalidClientConfig, _) => Some("invalid client configuration: check `uri`"),
            (ErrorKind::Server(ServerErrorKind::ResponseError), _)
                if text.contains("unknown command") || text.contains("syntax error") =>
            {
                Some("the server does not support XADD with these arguments (Redis 5+ is needed; `maxlen` needs Redis 6.2+ for `~` with trimming)")
            }
            _ => None,
        };
        match fatal_hint {
            Some(hint) => SinkError::Fatal(format!("redis {doing} {}: {text} — {hint}", self.shown_uri)),
            None => SinkError::Retryable(format!("redis {doing} {}: {text}", self.shown_uri)),
        }
    }

    /// Builds the pipeline of `XADD`s for a batch.
    fn pipeline(&mut self, events: &[Event]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for e in events {
            let stream = self.stream.render(e);
            self.buf.clear();
            self.envelope.encode_into(e, &mut self.buf);
            let cmd = pipe.cmd("XADD").arg(stream);
            if let Some(n) = self.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            cmd.arg("*").arg("id").arg(e.idempotency_key()).arg("op").arg(e.op.code());
            if let Some(k) = default_key(e) {
                cmd.arg("key").arg(k);
            }
            cmd.arg("value").arg(&self.buf[..]);
        }
        pipe
    }
}

#[async_trait]
impl Sink for RedisSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let conn = self.connection().await?;
        let result = self.deliver_on(conn, events).await;
        if matches!(result, Err(SinkError::Retryable(_))) {
            // A timed-out or broken connection is not reused: the client keeps a
            // connection whose replies stopped coming (a stalled link that
            // neither delivers nor closes) and would time out on it for as long
            // as the link stays stuck. The next attempt connects afresh.
            self.conn = None;
        }
        result
    }
}

impl RedisSink {
    /// Sends the batch's `XADD`s on `conn` and checks every reply.
    async fn deliver_on(&mut self, conn: ConnectionManager, events: &[Event]) -> Result<(), SinkError> {
        // Sub-pipelines on the one multiplexed connection, each written as
        // soon as it is encoded: Redis executes one while the next is
        // encoded, instead of waiting for the whole batch's encoding. They
        // are sent in order on one connection, so the stream order is the
        // event order.
        let mut in_flight = FuturesOrdered::new();
        let mut replies: Vec<Result<Vec<redis::Value>, RedisError>> = Vec::new();
        for chunk in events.chunks(SUB_PIPELINE) {
            let pipe = self.pipeline(chunk);
            let mut c = conn.clone();
            in_flight.push_back(async move { pipe.query_async::<Vec<redis::Value>>(&mut c).await });
            while let Poll::Ready(Some(r)) = futures::poll!(in_flight.next()) {
                replies.push(r);
            }
            // Let the connection's driver task write the sub-pipeline now: woken
            // from this task, it would otherwise wait in this worker's LIFO slot
            // until the whole batch is encoded.
            tokio::task::yield_now().await;
        }
        while let Some(r) = in_flight.next().await {
            replies.push(r);
        }
        let mut acknowledged = 0usize;
        for r in replies {
            for v in r.map_err(|e| self.classify(&e, "XADD on"))? {
                match v {
                    redis::Value::BulkString(_) | redis::Value::SimpleString(_) => acknowledged += 1,
                    redis::Value::ServerError(e) => return Err(self.classify(&e.into(), "XADD on")),
                    other => {
                        return Err(SinkError::Retryable(format!(
                            "redis XADD on {}: unexpected reply {other:?} instead of an entry id",
                            self.shown_uri
                        )))
                    }
                }
            }
        }
        if acknowledged != events.len() {
            return Err(SinkError::Retryable(format!(
                "redis XADD on {}: {acknowledged} entry ids for {} events",
                self.shown_uri,
                events.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> Result<RedisConfig, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let c = cfg(json!({"uri": "redis://127.0.0.1:6379", "stream": "cdc.${table}"})).unwrap();
        assert_eq!(c.envelope, Envelope::Native);
        assert_eq!(c.maxlen, None);
        assert!(c.check().is_ok());
        let e = cfg(json!({"uri": "redis://h", "stream": "s", "max_len": 5})).unwrap_err();
        assert!(e.to_string().contains("max_len"), "{e}");
    }

    #[test]
    fn unknown_placeholder_names_the_field() {
        let c = cfg(json!({"uri": "redis://h", "stream": "cdc.${schema}"})).unwrap();
        let e = c.check().unwrap_err();
        assert_eq!(e.field, "stream");
        assert!(e.to_string().contains("${schema}"), "{e}");
    }

    #[test]
    fn bad_uri_is_named_without_its_password() {
        let c = cfg(json!({"uri": "http://:hunter2@h:1", "stream": "s"})).unwrap();
        let e = c.check().unwrap_err();
        assert_eq!(e.field, "uri");
        let m = e.to_string();
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.contains("redis://"), "{m}");
        let c = cfg(json!({"uri": "rediss://h", "stream": "s"})).unwrap();
        assert!(c.check().unwrap_err().to_string().contains("TLS"));
        let c = cfg(json!({"uri": "redis://h", "stream": "s", "maxlen": 0})).unwrap();
        assert_eq!(c.check().unwrap_err().field, "maxlen");
    }

    #[tokio::test]
    async fn unreachable_server_is_retryable_and_hides_the_password() {
        // Port 1 on loopback refuses connections.
        let c = cfg(json!({"uri": "redis://:hunter2@127.0.0.1:1", "stream": "s", "response_timeout_ms": 500})).unwrap();
        let mut sink = RedisSink::new(c).unwrap();
        let ev = deltaforge_core::testing::EventBuilder::new(1).build();
        match sink.deliver(&[ev]).await {
            Err(SinkError::Retryable(m)) => {
                assert!(!m.contains("hunter2"), "{m}");
                assert!(m.contains("127.0.0.1:1"), "{m}");
            }
            other => panic!("expected a retryable error, got {other:?}"),
        }
    }
}
