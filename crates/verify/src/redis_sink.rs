//! The `redis` sink's reader: the sink's streams (its `stream` template
//! rendered per verified table, see [`crate::stream_names`]) read with
//! `XRANGE` in pages of [`PAGE`] entries, from the first entry to the last
//! one present when the read started, as an [`EventLog`] indexed by
//! [`IndexedSinkReader`]. Each entry's `value` field decodes with
//! [`decode_record`] and its `id` field is the idempotency key (needed by
//! the Debezium envelope). An entry trimmed by `maxlen` is gone: its row
//! shows as missing unless a later entry carries it.
//!
//! This module only runs `XRANGE`; it never writes, and shows the URI
//! with its password masked.

use std::time::Duration;

use async_trait::async_trait;
use deltaforge_common::redact_dsn;
use deltaforge_sink_redis::RedisConfig;
use redis::aio::MultiplexedConnection;

use crate::envelope::Delivered;
use crate::error::VerifyError;
use crate::event_index::{EventLog, IndexedSinkReader};
use crate::model::TableLayout;
use crate::record::decode_record;
use crate::sink_context::SinkContext;

/// Entries per `XRANGE`.
const PAGE: usize = 1_000;

/// Reads a `redis` sink.
pub type RedisSinkReader = IndexedSinkReader<RedisLog>;

impl RedisSinkReader {
    /// A reader of the redis sink of `ctx` with config `cfg`.
    pub fn new(ctx: &SinkContext, cfg: RedisConfig) -> Result<Self, VerifyError> {
        let log = RedisLog { ctx: ctx.clone(), cfg, conn: None, streams: Vec::new(), after: None, unreadable: 0 };
        IndexedSinkReader::with_log(&ctx.sink_id, log)
    }
}

/// The entries of a redis sink's streams.
pub struct RedisLog {
    ctx: SinkContext,
    cfg: RedisConfig,
    conn: Option<MultiplexedConnection>,
    /// Streams still to read, the current one last, each with the last
    /// entry id to read.
    streams: Vec<(String, String)>,
    /// The last entry id read of the current stream.
    after: Option<String>,
    unreadable: u64,
}

/// One `XRANGE` entry: its id and its field/value pairs, flat.
type Entry = (String, Vec<Vec<u8>>);

impl RedisLog {
    fn err(&self, what: &str, e: impl std::fmt::Display) -> VerifyError {
        let message = e.to_string().replace(&self.cfg.uri, &redact_dsn(&self.cfg.uri));
        self.ctx.err(format!("{what} on {}: {message}", redact_dsn(&self.cfg.uri)))
    }

    async fn conn(&mut self) -> Result<MultiplexedConnection, VerifyError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let client = redis::Client::open(self.cfg.uri.as_str()).map_err(|e| self.err("opening the URI", e))?;
        let timeout = Duration::from_millis(self.cfg.response_timeout_ms);
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout));
        let c = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.err("connecting", e))?;
        self.conn = Some(c.clone());
        Ok(c)
    }
}

#[async_trait]
impl EventLog for RedisLog {
    async fn rewind(&mut self, tables: &[TableLayout]) -> Result<(), VerifyError> {
        let names = crate::stream_names::render(&self.cfg.stream, tables, &self.ctx.pipeline, &self.ctx.tenant)
            .map_err(|m| self.ctx.err(m))?;
        let mut conn = self.conn().await?;
        self.streams.clear();
        for name in names.into_iter().rev() {
            // The last entry now: entries added while reading are left for
            // the online re-check.
            let last: Vec<Entry> = redis::cmd("XREVRANGE")
                .arg(&name)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(&format!("XREVRANGE {name}"), e))?;
            if let Some((id, _)) = last.into_iter().next() {
                self.streams.push((name, id));
            }
        }
        self.after = None;
        self.unreadable = 0;
        Ok(())
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<Delivered>>, VerifyError> {
        let mut conn = self.conn().await?;
        while let Some((name, last)) = self.streams.last().cloned() {
            let start = self.after.as_ref().map_or_else(|| "-".to_string(), |id| format!("({id}"));
            let page: Vec<Entry> = redis::cmd("XRANGE")
                .arg(&name)
                .arg(&start)
                .arg(&last)
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(&format!("XRANGE {name}"), e))?;
            if page.len() < PAGE {
                self.streams.pop();
                self.after = None;
            } else {
                self.after = page.last().map(|(id, _)| id.clone());
            }
            let mut out = Vec::with_capacity(page.len());
            for (_, fields) in &page {
                let field = |n: &str| fields.chunks(2).find(|p| p[0] == n.as_bytes()).and_then(|p| p.get(1));
                let id = field("id").and_then(|v| std::str::from_utf8(v).ok());
                let value = field("value").and_then(|v| serde_json::from_slice(v).ok());
                match value.and_then(|v| decode_record(&v, id, &self.ctx.source_id)) {
                    Some(d) => out.push(d),
                    None => self.unreadable += 1,
                }
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    fn unreadable(&self) -> u64 {
        self.unreadable
    }
}
