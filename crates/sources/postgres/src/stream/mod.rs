//! The [`Streamer`]: the decoding state machine of one streaming session.
//! It reads wire events, decodes pgoutput messages and turns row changes
//! into events, skips transactions the checkpoint covers, commits each
//! transaction at its commit LSN, and reports durable positions back.
//!
//! Split by concern into leaf modules the streamer composes (none of them
//! imports the streamer):
//! - `relations`: Relation/Type messages, schema versions, tuple → row;
//! - `transaction`: the open transaction's xid, commit time and index;
//! - `feedback`: received/durable positions and the idle checkpoint rule;
//! - [`snapshot_rows`]: PostgreSQL's part of the stream side of snapshots
//!   (its watermarks, the recent xids, a chunk's `r` events); the windows
//!   themselves are the core's [`StreamSide`].
//!
//! This module owns the order in which things happen on the stream. It
//! must never report a position that is not durable (only `feedback`
//! acknowledges), and never emit a change of a transaction the checkpoint
//! covers.

mod feedback;
pub(crate) mod relations;
pub mod snapshot_rows;
#[cfg(test)]
mod tests;
mod transaction;

use std::sync::Arc;

use deltaforge_core::snapshot::{reader_finished, reader_outcome, try_reader_outcome, StreamSide, WatermarkKind};
use deltaforge_core::{Event, Op, Row, SourceContext, SourceError, SourceMeta};

use self::feedback::Feedback;
use self::relations::{Relation, Relations};
pub use self::snapshot_rows::RECENT_XIDS;
use self::snapshot_rows::{emit_rows, own_watermark, RecentXids};
use self::transaction::Tx;
use crate::config::TablePattern;
use crate::pgoutput::{self, Message};
use crate::position::{position, Lsn, Resume};
use crate::snapshot::ChunkMsg;
use crate::transport::{source_error, Transport, WireEvent};

/// The decoding state machine of one streaming session, generic over the
/// transport so that it can be driven by captured messages in tests.
pub struct Streamer {
    source_id: Arc<str>,
    /// Transactions this checkpoint covers are skipped.
    checkpoint: Option<Resume>,
    relations: Relations,
    tx: Option<Tx>,
    /// What was handed to the pipeline and what is durable.
    feedback: Feedback,
    /// The stream's side of the snapshot reader: its link, the open
    /// watermark windows and the progress records awaiting a commit.
    snap: Option<StreamSide<ChunkMsg>>,
    /// Transactions delivered while a reader runs, for the chunks' race
    /// check.
    recent: RecentXids,
}

impl Streamer {
    /// A streamer resuming after `checkpoint`.
    pub fn new(source_id: Arc<str>, patterns: Vec<TablePattern>, checkpoint: Option<Resume>) -> Self {
        Streamer {
            relations: Relations::new(source_id.clone(), patterns),
            source_id,
            checkpoint,
            tx: None,
            feedback: Feedback::new(checkpoint.map(|r| r.lsn)),
            snap: None,
            recent: RecentXids::default(),
        }
    }

    /// Attaches the snapshot reader's stream side (which hands chunk
    /// progress to the progress writer once emitted).
    pub fn attach_snapshot(&mut self, side: StreamSide<ChunkMsg>) {
        self.snap = Some(side);
    }

    /// Reads until shutdown or failure.
    pub async fn run<T: Transport>(mut self, wire: &mut T, mut ctx: SourceContext) -> Result<(), SourceError> {
        loop {
            if ctx.shutdown.is_cancelled() {
                let _ = ctx.sender.flush().await;
                return Ok(());
            }
            if ctx.durable.has_changed().unwrap_or(false) {
                let d = ctx.durable.borrow_and_update().clone();
                self.feedback.on_durable(d, wire);
            }
            if let Some(outcome) = try_reader_outcome(&mut self.snap) {
                if reader_finished(&mut self.snap, outcome)? {
                    let _ = ctx.sender.flush().await;
                    return Ok(());
                }
            }
            let ev = match wire.try_recv() {
                Some(ev) => ev,
                None => {
                    // Nothing buffered: hand over what we have before waiting.
                    ctx.sender.flush().await?;
                    tokio::select! {
                        biased;
                        _ = ctx.shutdown.cancelled() => continue,
                        changed = ctx.durable.changed() => {
                            if changed.is_err() {
                                // The pipeline is gone.
                                return Ok(());
                            }
                            // `changed` marked the value seen: apply it here.
                            let d = ctx.durable.borrow_and_update().clone();
                            self.feedback.on_durable(d, wire);
                            continue;
                        }
                        outcome = reader_outcome(&mut self.snap) => {
                            if reader_finished(&mut self.snap, outcome)? {
                                let _ = ctx.sender.flush().await;
                                return Ok(());
                            }
                            continue;
                        }
                        ev = wire.recv() => ev,
                    }
                }
            };
            let ev = ev.map_err(source_error)?;
            if !self.handle(ev, &mut ctx).await? {
                let _ = ctx.sender.flush().await;
                return Ok(());
            }
        }
    }

    /// Handles one event; returns false when the stream ended cleanly.
    async fn handle(&mut self, ev: WireEvent, ctx: &mut SourceContext) -> Result<bool, SourceError> {
        match ev {
            WireEvent::KeepAlive { wal_end } => self.maybe_idle_advance(wal_end, ctx).await?,
            WireEvent::Begin { final_lsn, xid, commit_time } => self.begin(final_lsn, xid, commit_time),
            WireEvent::Commit { commit_lsn, .. } => self.commit(commit_lsn, ctx).await?,
            WireEvent::LogicalMessage { transactional, lsn, prefix, content } => {
                self.logical_message(transactional, lsn, &prefix, &content, ctx).await?;
            }
            WireEvent::Data { lsn, data } => {
                let msg = pgoutput::decode(&data).map_err(|e| SourceError::Fatal(format!("{e} at {}", Lsn(lsn))))?;
                self.message(lsn, msg, ctx).await?;
            }
            WireEvent::End => {
                if ctx.shutdown.is_cancelled() {
                    return Ok(false);
                }
                return Err(SourceError::Retryable("PostgreSQL ended the replication stream".into()));
            }
        }
        Ok(true)
    }

    fn begin(&mut self, final_lsn: u64, xid: u32, commit_time: i64) {
        let skip = self.checkpoint.is_some_and(|c| c.covers(final_lsn));
        if skip {
            tracing::debug!(source = %self.source_id, commit_lsn = %Lsn(final_lsn), xid, "skipping a transaction at or before the checkpoint");
        }
        self.tx = Some(Tx::begin(final_lsn, xid, commit_time, skip));
    }

    async fn commit(&mut self, commit_lsn: u64, ctx: &mut SourceContext) -> Result<(), SourceError> {
        let tx = self.tx.take();
        // Remembered only while a reader runs (no window opens afterwards).
        if let Some(tx) = tx.as_ref().filter(|_| self.snap.is_some()) {
            self.recent.remember(tx.xid);
        }
        match tx {
            Some(tx) if !tx.skip => {
                ctx.sender.commit(tx.commit_position(commit_lsn)).await?;
            }
            Some(_) => {}
            None => {
                return Err(SourceError::Retryable(format!(
                    "protocol error: Commit at {} without Begin",
                    Lsn(commit_lsn)
                )))
            }
        }
        self.feedback.note_received(commit_lsn);
        Ok(())
    }

    /// The idle rule: with no transaction open and everything received
    /// durable, checkpoint at the server's WAL end.
    async fn maybe_idle_advance(&mut self, wal_end: u64, ctx: &mut SourceContext) -> Result<(), SourceError> {
        let busy = self.tx.is_some() || ctx.sender.buffered() > 0;
        let Some(target) = self.feedback.take_idle_target(wal_end, busy) else { return Ok(()) };
        tracing::debug!(source = %self.source_id, lsn = %Lsn(target), "idle: advancing the checkpoint to the server's WAL end");
        ctx.sender.commit(position(target, None)).await?;
        ctx.sender.flush().await?;
        self.feedback.idle_committed(target);
        Ok(())
    }

    async fn message(&mut self, lsn: u64, msg: Message, ctx: &mut SourceContext) -> Result<(), SourceError> {
        match msg {
            Message::Begin { final_lsn, commit_time, xid } => self.begin(final_lsn, xid, commit_time),
            Message::Commit { commit_lsn, .. } => self.commit(commit_lsn, ctx).await?,
            Message::Origin { lsn: origin_lsn, name } => {
                tracing::debug!(source = %self.source_id, origin = name, origin_lsn = %Lsn(origin_lsn), "transaction origin");
            }
            Message::Type { id, namespace, name } => self.relations.on_type(id, namespace, name),
            Message::LogicalMessage { transactional, lsn, prefix, content } => {
                self.logical_message(transactional, lsn, &prefix, &content, ctx).await?;
            }
            Message::Relation { id, namespace, name, replica_identity, columns } => {
                self.relations.on_relation(id, namespace, name, replica_identity, columns);
            }
            Message::Insert { relation, new } => {
                let Some(rel) = self.row_target(relation)? else { return Ok(()) };
                let after = rel.row(new, None)?;
                self.emit(lsn, relation, Op::Create, None, Some(after), ctx).await?;
            }
            Message::Update { relation, old, new } => {
                let Some(rel) = self.row_target(relation)? else { return Ok(()) };
                let (before, old_values) = match old {
                    Some((b'O', t)) => {
                        let r = rel.row(t, None)?;
                        let vals = r.values().to_vec();
                        (Some(r), Some(vals))
                    }
                    Some((_, t)) => (Some(rel.key_row(t)?), None),
                    None => (None, None),
                };
                let after = rel.row(new, old_values.as_deref())?;
                self.emit(lsn, relation, Op::Update, before, Some(after), ctx).await?;
            }
            Message::Delete { relation, kind, old } => {
                let Some(rel) = self.row_target(relation)? else { return Ok(()) };
                let before = if kind == b'O' { rel.row(old, None)? } else { rel.key_row(old)? };
                self.emit(lsn, relation, Op::Delete, Some(before), None, ctx).await?;
            }
            Message::Truncate { relations, .. } => {
                for relation in relations {
                    if self.row_target(relation)?.is_some() {
                        self.emit(lsn, relation, Op::Truncate, None, None, ctx).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The relation of a row message, or `None` when its changes are not
    /// wanted or its transaction is skipped.
    fn row_target(&self, relation: u32) -> Result<Option<&Relation>, SourceError> {
        if self.tx.as_ref().is_some_and(|t| t.skip) {
            return Ok(None);
        }
        self.relations.wanted(relation)
    }

    async fn emit(
        &mut self,
        lsn: u64,
        relation: u32,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
        ctx: &mut SourceContext,
    ) -> Result<(), SourceError> {
        let xid = self.tx.as_ref().map(|t| u64::from(t.xid));
        self.relations.ensure_version(relation, lsn, xid, ctx).await?;
        let rel = self.relations.get(relation).expect("checked by row_target");
        if let Some(side) = self.snap.as_mut().filter(|s| s.has_open_windows()) {
            let name = format!("{}.{}", rel.schema, rel.table);
            if op == Op::Truncate {
                side.truncate(&name);
            }
            for row in [&before, &after].into_iter().flatten() {
                side.touch(&name, row);
            }
        }
        let tx = self.tx.as_mut().ok_or_else(|| {
            SourceError::Retryable(format!("protocol error: change at {} outside a transaction", Lsn(lsn)))
        })?;
        let event = Event {
            op,
            before,
            after,
            source: SourceMeta {
                connector: "postgres",
                source_id: self.source_id.clone(),
                pipeline: ctx.pipeline.clone(),
                tenant: ctx.tenant.clone(),
                db: rel.schema.clone(),
                table: rel.table.clone(),
                position: tx.change_position(lsn),
                ts_ms: tx.ts_ms,
            },
            tx_id: Some(tx.tx_id.clone()),
            tx_position: tx.position.clone(),
            index: tx.index,
            schema_version: rel.version,
            key_columns: (!rel.key_columns.is_empty()).then(|| rel.key_columns.clone()),
        };
        tx.index += 1;
        ctx.sender.push(event).await?;
        Ok(())
    }

    /// A logical decoding message: this run's watermarks open and close
    /// snapshot windows; anything else is logged and ignored.
    async fn logical_message(
        &mut self,
        transactional: bool,
        lsn: u64,
        prefix: &str,
        content: &[u8],
        ctx: &mut SourceContext,
    ) -> Result<(), SourceError> {
        let Some(wm) = own_watermark(self.snap.as_ref(), transactional, prefix, content) else {
            tracing::debug!(source = %self.source_id, transactional, lsn = %Lsn(lsn), prefix, len = content.len(), "logical decoding message (not emitted)");
            return Ok(());
        };
        if self.tx.is_some() {
            return Err(SourceError::Retryable(format!(
                "protocol error: a non-transactional message at {} inside a transaction",
                Lsn(lsn)
            )));
        }
        let side = self.snap.as_mut().expect("checked above");
        match wm.kind {
            WatermarkKind::Low => side.open_window(wm, self.recent.to_vec()),
            WatermarkKind::High => {
                // `None`: no window (its low watermark came before the
                // position this run resumed at), or read the chunk again.
                if let Some(closed) = side.close_window(wm.chunk).await? {
                    let position = emit_rows(closed, &mut self.relations, &self.source_id, lsn, ctx).await?;
                    side.release_progress(&position);
                    self.feedback.note_received(lsn);
                }
            }
        }
        Ok(())
    }
}
