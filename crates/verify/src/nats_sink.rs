//! The `nats` sink's reader: the JetStream stream the sink publishes into,
//! read from its first message with an ordered, ephemeral consumer (no
//! durable state left on the server) filtered to the sink's subjects (its
//! `subject` template rendered per verified table, see
//! [`crate::stream_names`]), up to the last message present when the read
//! started, as an [`EventLog`] indexed by [`IndexedSinkReader`]. Payloads
//! decode with [`decode_record`]; the `Nats-Msg-Id` header is the
//! idempotency key (needed by the Debezium envelope).
//!
//! This module never publishes, never creates or changes a stream, and
//! never shows a password, token or creds file content.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull::OrderedConfig, consumer::DeliverPolicy};
use async_trait::async_trait;
use deltaforge_sink_nats::NatsConfig;
use futures::StreamExt as _;

use crate::envelope::Delivered;
use crate::error::VerifyError;
use crate::event_index::{EventLog, IndexedSinkReader};
use crate::model::TableLayout;
use crate::record::decode_record;
use crate::sink_context::SinkContext;

/// Messages per batch.
const BATCH: usize = 2_000;
/// How long the server may stay silent before the read ends (the
/// remaining messages, if any, belong to other subjects).
const QUIET: Duration = Duration::from_secs(5);

/// Reads a `nats` sink.
pub type NatsSinkReader = IndexedSinkReader<NatsLog>;

impl NatsSinkReader {
    /// A reader of the nats sink of `ctx` with config `cfg`.
    pub fn new(ctx: &SinkContext, cfg: NatsConfig) -> Result<Self, VerifyError> {
        let log = NatsLog { ctx: ctx.clone(), cfg, js: None, messages: None, last: 0, unreadable: 0 };
        IndexedSinkReader::with_log(&ctx.sink_id, log)
    }
}

/// The messages of a nats sink's stream.
pub struct NatsLog {
    ctx: SinkContext,
    cfg: NatsConfig,
    js: Option<jetstream::Context>,
    messages: Option<jetstream::consumer::pull::Ordered>,
    /// The stream's last sequence when the read started.
    last: u64,
    unreadable: u64,
}

impl NatsLog {
    fn err(&self, message: impl Into<String>) -> VerifyError {
        self.ctx.err(message)
    }

    async fn context(&mut self) -> Result<jetstream::Context, VerifyError> {
        if let Some(js) = &self.js {
            return Ok(js.clone());
        }
        let timeout = Duration::from_millis(self.cfg.ack_timeout_ms);
        let mut opts = async_nats::ConnectOptions::new()
            .name("deltaforge-verify")
            .connection_timeout(timeout)
            .request_timeout(Some(timeout));
        if let (Some(u), Some(p)) = (&self.cfg.user, &self.cfg.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &self.cfg.token {
            opts = opts.token(t.clone());
        }
        if let Some(path) = &self.cfg.creds_file {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|e| self.err(format!("cannot use creds_file {}: {}", path.display(), e.kind())))?;
        }
        let addrs = self
            .cfg
            .url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(format!("`url` is not a NATS URL: {}", e.kind())))?;
        let client = opts.connect(addrs).await.map_err(|e| self.err(format!("connecting: {}", e.kind())))?;
        let js = jetstream::new(client);
        self.js = Some(js.clone());
        Ok(js)
    }
}

#[async_trait]
impl EventLog for NatsLog {
    async fn rewind(&mut self, tables: &[TableLayout]) -> Result<(), VerifyError> {
        self.messages = None;
        self.unreadable = 0;
        let subjects = crate::stream_names::render(&self.cfg.subject, tables, &self.ctx.pipeline, &self.ctx.tenant)
            .map_err(|m| self.err(m))?;
        let js = self.context().await?;
        let name = self.cfg.stream.clone();
        let mut stream = js.get_stream(&name).await.map_err(|e| {
            self.err(format!("JetStream stream {name:?}: {e} (nothing delivered yet, or a wrong `stream`)"))
        })?;
        let state = stream.info().await.map_err(|e| self.err(format!("stream {name:?} info: {e}")))?.state.clone();
        if state.messages == 0 {
            return Ok(());
        }
        self.last = state.last_sequence;
        let mut config = OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() };
        // One subject is filtered on the server; several (more tables)
        // are read whole, and events of other tables are not indexed.
        if let [one] = subjects.as_slice() {
            config.filter_subject = one.clone();
        }
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| self.err(format!("creating an ordered consumer on stream {name:?}: {e}")))?;
        self.messages = Some(consumer.messages().await.map_err(|e| self.err(format!("reading stream {name:?}: {e}")))?);
        Ok(())
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<Delivered>>, VerifyError> {
        let mut out = Vec::new();
        while out.len() < BATCH {
            let Some(messages) = self.messages.as_mut() else { break };
            let next = match tokio::time::timeout(QUIET, messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(self.err(format!("reading stream {:?}: {e}", self.cfg.stream))),
                Ok(None) | Err(_) => {
                    self.messages = None;
                    break;
                }
            };
            let (sequence, pending) = next.info().map(|i| (i.stream_sequence, i.pending)).unwrap_or((0, 1));
            if sequence > self.last {
                self.messages = None;
                break;
            }
            if sequence == self.last || pending == 0 {
                self.messages = None;
            }
            let id = next.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str());
            match serde_json::from_slice(&next.payload).ok().and_then(|v| decode_record(&v, id, &self.ctx.source_id)) {
                Some(d) => out.push(d),
                None => self.unreadable += 1,
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    fn unreadable(&self) -> u64 {
        self.unreadable
    }
}
