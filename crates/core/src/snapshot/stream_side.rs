//! The stream's side of a DBLog snapshot, shared by every database source:
//! the link to the snapshot reader (its chunks and its final outcome), the
//! windows opened at low watermarks, and what happens at a high watermark
//! ([`StreamSide::close_window`]: find the chunk, judge it, tell the reader,
//! reconcile its rows with the window, hold its progress record until the
//! next commit).
//!
//! What differs between sources is behind [`SnapshotChunk`]: the chunk
//! message a reader sends, how its rows arrive, whether it can race a
//! commit (PostgreSQL's visibility check; MySQL's chunks never race) and
//! what a window records at its low watermark for that check.
//!
//! A source keeps an `Option<StreamSide<_>>` beside its stream state and:
//!
//! 1. polls [`try_reader_outcome`] each turn and waits on
//!    [`reader_outcome`] while idle, handing either answer to
//!    [`reader_finished`] (which drops the side);
//! 2. on a watermark of this run ([`StreamSide::is_ours`]): low →
//!    [`StreamSide::open_window`], high → [`StreamSide::close_window`], then
//!    emits the returned rows as `r` events at its own positions;
//! 3. on every streamed row image of a captured table:
//!    [`StreamSide::touch`] (and [`StreamSide::truncate`] on a truncate);
//! 4. after each transaction commit it hands to the pipeline:
//!    [`StreamSide::release_progress`] with that commit's position.
//!
//! This module owns those rules. It must never build events, choose
//! positions or commit anything to the pipeline (the source does, with its
//! own transaction bookkeeping), and it must never store progress itself:
//! records go to the `ProgressWriter`,
//! which waits until they are durable.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::event::Row;
use crate::position::Position;
use crate::snapshot::output::SnapshotMetrics;
use crate::snapshot::progress::{PendingProgress, TableProgress};
use crate::snapshot::window::{key_string, Watermark, Window};
use crate::source_error::SourceError;

/// One chunk as a source's snapshot reader hands it to the stream, before
/// the chunk's high watermark is written.
#[async_trait]
pub trait SnapshotChunk: Send {
    /// What a window records at its low watermark so that
    /// [`raced`](Self::raced) can judge the chunk at the high one (`()`
    /// when a chunk cannot race a commit).
    type Opened: Send;

    /// The chunk id, as in its watermarks.
    fn id(&self) -> u64;

    /// The table, as the source names it (`schema.table`, `db.table`).
    fn table(&self) -> &str;

    /// The table's progress record once this chunk is delivered.
    fn progress(&self) -> &TableProgress;

    /// Whether the chunk's select may have missed a change the stream
    /// delivered before the low watermark (e.g. a commit not yet visible
    /// to the select); such a chunk is not emitted and is read again.
    fn raced(&self, opened: &Self::Opened) -> bool {
        let _ = opened;
        false
    }

    /// Tells the reader the stream reached the chunk's high watermark:
    /// `true` accepted (the reader may read its next chunk), `false` read
    /// it again. Called exactly once per chunk that has a window.
    fn send_verdict(&mut self, accepted: bool);

    /// The chunk's rows with their [`key_string`]s, in key order, once
    /// converted. Called at most once, after an accepting verdict.
    async fn take_rows(&mut self) -> Result<Vec<(String, Row)>, SourceError>;
}

/// A window between a chunk's low and high watermark.
#[derive(Debug, Clone)]
pub struct OpenWindow<O> {
    /// The table read, as the source names it.
    pub table: String,
    /// Key column names, in key order (empty: the whole row is the key).
    pub key: Vec<String>,
    /// The keys touched since the low watermark.
    pub window: Window,
    /// What the source recorded at the low watermark (see [`SnapshotChunk::Opened`]).
    pub opened: O,
}

impl<O> OpenWindow<O> {
    /// An empty window for the chunk `wm` announces.
    pub fn new(wm: Watermark, opened: O) -> Self {
        OpenWindow { table: wm.table, key: wm.key, window: Window::new(), opened }
    }

    /// Records the key of one streamed row image; an image without every
    /// key column (a key-only image of another key) touches nothing.
    pub fn touch(&mut self, row: &Row) {
        if self.key.is_empty() {
            self.window.touch(key_string(row.values()));
            return;
        }
        let values: Option<Vec<_>> = self.key.iter().map(|k| row.get(k)).collect();
        if let Some(values) = values {
            self.window.touch(key_string(values));
        }
    }
}

/// A chunk whose window closed and whose verdict was `true`: the rows the
/// source must emit as `r` events, at or inside the high watermark's
/// transaction, before its next commit.
pub struct ClosedChunk<C> {
    /// The chunk message (its rows already taken).
    pub chunk: C,
    /// The window's key column names (empty: whole-row keys).
    pub key: Vec<String>,
    /// The chunk's rows that no streamed change touched, in key order.
    pub rows: Vec<Row>,
}

/// The stream's side of one snapshot reader run (see the module docs).
pub struct StreamSide<C: SnapshotChunk> {
    run: String,
    chunks: mpsc::Receiver<C>,
    outcome: oneshot::Receiver<Result<bool, SourceError>>,
    windows: HashMap<u64, OpenWindow<C::Opened>>,
    /// Chunks received before their high watermark was reached.
    pending: HashMap<u64, C>,
    metrics: SnapshotMetrics,
    /// Records of emitted chunks, waiting for the commit after their rows.
    to_commit: Vec<(String, TableProgress)>,
    progress: mpsc::UnboundedSender<PendingProgress>,
}

impl<C: SnapshotChunk> StreamSide<C> {
    /// The side of the reader run `run` (the id in its watermarks), fed by
    /// `chunks`, ending with `outcome` (`Ok(true)`: stop the source), and
    /// handing committed progress records to `progress` (a
    /// `ProgressWriter`).
    pub fn new(
        run: String,
        chunks: mpsc::Receiver<C>,
        outcome: oneshot::Receiver<Result<bool, SourceError>>,
        metrics: SnapshotMetrics,
        progress: mpsc::UnboundedSender<PendingProgress>,
    ) -> Self {
        StreamSide {
            run,
            chunks,
            outcome,
            windows: HashMap::new(),
            pending: HashMap::new(),
            metrics,
            to_commit: Vec::new(),
            progress,
        }
    }

    /// The reader run's watermark id.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Whether `wm` was written by this run: watermarks of an earlier run,
    /// or of another pipeline reading the same server, are ignored.
    pub fn is_ours(&self, wm: &Watermark) -> bool {
        wm.run == self.run
    }

    /// A low watermark: opens the window of its chunk.
    pub fn open_window(&mut self, wm: Watermark, opened: C::Opened) {
        self.windows.insert(wm.chunk, OpenWindow::new(wm, opened));
    }

    /// Whether any window is open (lets the caller skip naming the table
    /// of every streamed change while no chunk is being read).
    pub fn has_open_windows(&self) -> bool {
        !self.windows.is_empty()
    }

    /// A streamed row image of `table` (insert, both images of an update,
    /// delete): its key can no longer be emitted from any open chunk.
    pub fn touch(&mut self, table: &str, row: &Row) {
        for w in self.windows.values_mut().filter(|w| w.table == table) {
            w.touch(row);
        }
    }

    /// `table` was truncated: no open chunk of it may emit a row.
    pub fn truncate(&mut self, table: &str) {
        for w in self.windows.values_mut().filter(|w| w.table == table) {
            w.window.truncate();
        }
    }

    /// A high watermark of this run. Returns `Ok(None)` when there is
    /// nothing to emit: no window (its low watermark came before the
    /// position this run resumed at) or a chunk that raced a commit (the
    /// reader reads it again). Otherwise accepts the chunk, waits for its
    /// rows, reconciles them with the window, counts them, and holds the
    /// chunk's progress record for [`release_progress`](Self::release_progress).
    /// An error (a chunk never received, a failed conversion) must stop
    /// the source.
    pub async fn close_window(&mut self, chunk: u64) -> Result<Option<ClosedChunk<C>>, SourceError> {
        let Some(win) = self.windows.remove(&chunk) else {
            tracing::debug!(run = %self.run, chunk, "high watermark without its low one; ignored");
            return Ok(None);
        };
        while let Ok(c) = self.chunks.try_recv() {
            self.pending.insert(c.id(), c);
        }
        let Some(mut msg) = self.pending.remove(&chunk) else {
            return Err(SourceError::Retryable(format!(
                "snapshot: chunk {chunk} reached its high watermark but was never read"
            )));
        };
        if msg.raced(&win.opened) {
            msg.send_verdict(false);
            return Ok(None);
        }
        // Accepted before the rows are awaited, so that the reader selects
        // its next chunk while this one is converted and delivered.
        msg.send_verdict(true);
        let rows = win.window.reconcile(msg.take_rows().await?);
        self.metrics.rows(msg.table(), rows.len() as u64);
        self.to_commit.push((msg.table().to_string(), msg.progress().clone()));
        Ok(Some(ClosedChunk { chunk: msg, key: win.key, rows }))
    }

    /// A commit was handed to the pipeline at `position`: the records of
    /// chunks emitted before it go to the progress writer, which stores
    /// them once `position` is durable. A writer that has gone away is
    /// ignored here: the reader learns of it and stops the source.
    pub fn release_progress(&mut self, position: &Position) {
        for (table, progress) in self.to_commit.drain(..) {
            let _ = self.progress.send(PendingProgress { position: position.clone(), table, progress });
        }
    }
}

/// The reader's outcome if it has ended, without waiting: `None` while it
/// runs (or without a reader), `Some(None)` if it went away without one.
pub fn try_reader_outcome<C: SnapshotChunk>(
    side: &mut Option<StreamSide<C>>,
) -> Option<Option<Result<bool, SourceError>>> {
    match side.as_mut()?.outcome.try_recv() {
        Ok(r) => Some(Some(r)),
        Err(oneshot::error::TryRecvError::Closed) => Some(None),
        Err(oneshot::error::TryRecvError::Empty) => None,
    }
}

/// Waits for the reader's outcome (forever without a reader, so that it can
/// sit in a `select!` beside the stream); `None` if the reader went away
/// without one. Cancel-safe.
pub async fn reader_outcome<C: SnapshotChunk>(side: &mut Option<StreamSide<C>>) -> Option<Result<bool, SourceError>> {
    match side {
        Some(side) => (&mut side.outcome).await.ok(),
        None => std::future::pending().await,
    }
}

/// Handles the reader's end: drops the side (no window can close any more)
/// and returns `Ok(true)` when the source must stop (`initial_only` done),
/// `Ok(false)` when it streams on, or the error that must stop it (a
/// reader gone without an outcome is a retryable one).
pub fn reader_finished<C: SnapshotChunk>(
    side: &mut Option<StreamSide<C>>,
    outcome: Option<Result<bool, SourceError>>,
) -> Result<bool, SourceError> {
    *side = None;
    match outcome {
        Some(r) => r,
        None => Err(SourceError::Retryable("the snapshot reader stopped unexpectedly".into())),
    }
}

#[cfg(test)]
#[path = "stream_side_tests.rs"]
mod tests;
