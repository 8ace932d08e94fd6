//! The source side of a pipeline: the [`Source`] trait and the channel a
//! source writes into.
//!
//! A source reads its log from the position it is given, pushes events into
//! a [`ChunkSender`], marks each transaction's end with
//! [`ChunkSender::commit`], and watches [`SourceContext::durable`] to learn
//! which positions are safe to report to its server (e.g. PostgreSQL's flush
//! LSN). A source must never report a position to its server that has not
//! appeared on `durable`: that is the second half of the checkpoint
//! invariant.
//!
//! Two optional capabilities serve the control plane, outside any run's
//! data path: [`Source::lag_probe`] measures how far the server's log is
//! ahead of the durable checkpoint (`deltaforge_checkpoint_lag_bytes`), and
//! [`Source::reset`] prepares the server for a checkpoint reset (e.g. drops
//! a PostgreSQL slot) and says where the next run starts.
//!
//! [`SourceError`] and [`PipelineClosed`] live in the leaf module
//! [`crate::source_error`] (re-exported here) so that [`crate::snapshot`],
//! which this module uses, never has to import this module back.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::position::Position;
use crate::schema::SchemaRegistry;
use crate::snapshot::store::SnapshotStore;
pub use crate::source_error::{PipelineClosed, SourceError};

/// A run of events handed from a source to the coordinator, with the
/// transaction commits that fall inside it.
#[derive(Debug, Default)]
pub struct SourceChunk {
    /// Events in source order.
    pub events: Vec<Event>,
    /// Transaction ends inside this chunk, in order: after the first
    /// `after` events, the source may resume from `position`.
    pub commits: Vec<Commit>,
}

/// A transaction end inside a [`SourceChunk`].
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// Number of events of the chunk that precede this commit.
    pub after: usize,
    /// Position from which the source resumes once everything before it is
    /// delivered (the end of the transaction).
    pub position: Position,
}

/// Buffers events into chunks and sends them over the bounded channel, so
/// that a slow sink slows the source (backpressure) while per-event cost
/// stays a push into a vector.
///
/// Sources call [`push`](Self::push) per event, [`commit`](Self::commit) at
/// each transaction end, and [`flush`](Self::flush) before they wait for
/// more input, so that a quiet source never holds events back.
pub struct ChunkSender {
    tx: mpsc::Sender<SourceChunk>,
    buf: SourceChunk,
    chunk_events: usize,
}

impl ChunkSender {
    /// Wraps a channel; chunks are sent when they reach `chunk_events`.
    pub fn new(tx: mpsc::Sender<SourceChunk>, chunk_events: usize) -> Self {
        let chunk_events = chunk_events.max(1);
        ChunkSender {
            tx,
            buf: SourceChunk { events: Vec::with_capacity(chunk_events), commits: Vec::new() },
            chunk_events,
        }
    }

    /// Adds one event; sends the chunk when it is full (waiting if the
    /// pipeline is behind).
    pub async fn push(&mut self, event: Event) -> Result<(), PipelineClosed> {
        self.buf.events.push(event);
        if self.buf.events.len() >= self.chunk_events {
            self.flush().await?;
        }
        Ok(())
    }

    /// Marks the end of a transaction: everything pushed so far may be
    /// checkpointed at `position` once delivered.
    pub async fn commit(&mut self, position: Position) -> Result<(), PipelineClosed> {
        self.buf.commits.push(Commit { after: self.buf.events.len(), position });
        if self.buf.events.len() >= self.chunk_events || self.buf.commits.len() >= self.chunk_events {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends whatever is buffered.
    pub async fn flush(&mut self) -> Result<(), PipelineClosed> {
        if self.buf.events.is_empty() && self.buf.commits.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(
            &mut self.buf,
            SourceChunk { events: Vec::with_capacity(self.chunk_events), commits: Vec::new() },
        );
        self.tx.send(chunk).await.map_err(|_| PipelineClosed)
    }

    /// Number of events buffered and not yet sent.
    pub fn buffered(&self) -> usize {
        self.buf.events.len()
    }
}

/// Everything a running source is given.
pub struct SourceContext {
    /// Pipeline name.
    pub pipeline: Arc<str>,
    /// Tenant of the pipeline.
    pub tenant: Arc<str>,
    /// The durable checkpoint to resume after (`None`: start from the beginning).
    pub resume_from: Option<Position>,
    /// Where events go.
    pub sender: ChunkSender,
    /// Positions that are durably checkpointed; the only positions the
    /// source may report to its server as safe.
    pub durable: watch::Receiver<Option<Position>>,
    /// Fires when the source must stop reading and return.
    pub shutdown: CancellationToken,
    /// Schema history of this pipeline's tenant.
    pub schemas: SchemaRegistry,
    /// Snapshot progress and backfill requests of this pipeline (see
    /// [`crate::snapshot`]).
    pub snapshots: SnapshotStore,
}

/// Measures how many bytes of its server's log a source is behind: the
/// value of `deltaforge_checkpoint_lag_bytes`.
///
/// The coordinator polls it every few seconds from its own task with the
/// current durable checkpoint, so an implementation keeps its own
/// connection (never the replication session: a busy or blocked data path
/// must not delay the measurement, and the measurement must never slow the
/// data path). On error it should drop its connection and reconnect on the
/// next call.
#[async_trait]
pub trait LagProbe: Send {
    /// The server's current log position minus `checkpoint`, in bytes
    /// (never below 0); `checkpoint` is `None` before the first durable
    /// checkpoint. `Ok(None)` when it cannot be told (yet); the gauge is
    /// then left unchanged.
    async fn lag_bytes(&mut self, checkpoint: Option<&Position>) -> Result<Option<u64>, SourceError>;
}

/// A change source. One instance runs once; the pipeline builds a new one
/// from its config for every (re)start.
#[async_trait]
pub trait Source: Send {
    /// Reads changes from `ctx.resume_from` on, until `ctx.shutdown` fires
    /// (then returns `Ok`), the source is exhausted (returns `Ok`), or an
    /// error occurs.
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;

    /// A probe of the server's log position for the checkpoint lag in
    /// bytes of pipeline `pipeline`; `None` (the default) for sources
    /// without a server log, whose lag in bytes is 0. Called before
    /// [`run`](Self::run); must not connect (the probe connects when polled).
    fn lag_probe(&self, pipeline: &str) -> Option<Box<dyn LagProbe>> {
        let _ = pipeline;
        None
    }

    /// Prepares a checkpoint reset of pipeline `pipeline`, called by the
    /// control plane while no run of the pipeline is active and *before*
    /// the checkpoint is deleted (an error leaves the checkpoint in place).
    /// Returns the position the next run must start from, which is stored
    /// as the new checkpoint, or `None` (the default) to leave no checkpoint
    /// so that the source's no-checkpoint rule applies. Must be safe to
    /// repeat after a partial failure.
    async fn reset(self: Box<Self>, pipeline: &str) -> Result<Option<Position>, SourceError> {
        let _ = pipeline;
        Ok(None)
    }

    /// Checks a backfill request on the server before the control plane
    /// queues it: each table's chunk statement, with `condition` (the
    /// request's `where`) in it as the snapshot reader would build it, is
    /// prepared — never run — in a read-only transaction. A statement the
    /// server refuses is [`SourceError::Fatal`] with the server's message
    /// (the request is refused); a server that cannot be reached is
    /// [`SourceError::Retryable`]. The default (sources without backfills)
    /// accepts everything.
    async fn check_backfill(self: Box<Self>, tables: &[String], condition: Option<&str>) -> Result<(), SourceError> {
        let _ = (tables, condition);
        Ok(())
    }
}
