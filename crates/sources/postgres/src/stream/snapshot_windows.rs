//! The stream's side of the DBLog snapshot (see
//! [`deltaforge_core::snapshot`]): this run's watermarks open and close
//! windows, changes streamed inside a window mark their keys, and at the
//! high watermark the chunk the reader handed over is reconciled with its
//! window and its remaining rows are emitted as op `r` events, committed at
//! the watermark's LSN.
//!
//! Kept apart from the rest of the streamer because it is nearly the same
//! in the MySQL source and is meant to be replaced by one shared core
//! implementation; the PostgreSQL-specific parts are the xid visibility
//! check ([`crate::snapshot::XidSnapshot`]), the LSN positions and the
//! relation lookup for the schema version.
//!
//! This module must never store snapshot progress itself: it hands each
//! chunk's record, with the position it depends on, to the progress writer,
//! which stores it once that position is durable. It must never emit a
//! chunk whose snapshot missed a transaction delivered before its low
//! watermark.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use deltaforge_core::snapshot::{key_string, PendingProgress, SnapshotMetrics, Watermark, Window};
use deltaforge_core::{Columns, Event, Op, Row, SourceContext, SourceError, SourceMeta};
use serde_json::Value;
use tokio::sync::mpsc;

use super::relations::Relations;
use crate::position::position;
use crate::snapshot::{ChunkMsg, SnapshotLink, WATERMARK_PREFIX};

/// Transactions remembered for the commit-visibility race check; a commit
/// becomes visible within milliseconds of its record, far fewer than this.
pub const RECENT_XIDS: usize = 4096;

/// The streamer's side: open windows and the recent transactions needed to
/// judge a chunk.
pub struct StreamSide {
    /// The link to the reader.
    pub link: SnapshotLink,
    /// Windows by chunk id.
    pub windows: HashMap<u64, OpenWindow>,
    /// Chunks received before their high watermark was reached.
    pub pending: HashMap<u64, ChunkMsg>,
    /// Xids of the most recent transactions the stream delivered.
    pub recent: VecDeque<u32>,
    /// Metrics.
    pub metrics: SnapshotMetrics,
}

impl StreamSide {
    /// The stream's side of the reader behind `link`, with no window open.
    pub fn new(link: SnapshotLink, metrics: SnapshotMetrics) -> Self {
        StreamSide {
            link,
            windows: HashMap::new(),
            pending: HashMap::new(),
            recent: VecDeque::with_capacity(RECENT_XIDS),
            metrics,
        }
    }

    /// Remembers a transaction the stream delivered (the last
    /// [`RECENT_XIDS`]), for the visibility check of later chunks.
    pub fn remember_commit(&mut self, xid: u32) {
        if self.recent.len() >= RECENT_XIDS {
            self.recent.pop_front();
        }
        self.recent.push_back(xid);
    }

    /// Marks, in every open window of `table` (`schema.table`), the keys of
    /// a streamed change's row images; a truncate empties the windows.
    pub fn touch(&mut self, table: &str, op: Op, images: [&Option<Row>; 2]) {
        for w in self.windows.values_mut().filter(|w| w.table == table) {
            if op == Op::Truncate {
                w.window.truncate();
            }
            for row in images.into_iter().flatten() {
                w.touch(row);
            }
        }
    }

    /// A low watermark: opens the chunk's window, remembering the
    /// transactions delivered before it.
    pub fn open_window(&mut self, wm: Watermark) {
        self.windows.insert(
            wm.chunk,
            OpenWindow {
                table: wm.table,
                key: wm.key,
                window: Default::default(),
                before_low: self.recent.iter().copied().collect(),
            },
        );
    }
}

/// A window between a chunk's watermarks.
pub struct OpenWindow {
    /// `schema.table`.
    pub table: String,
    /// Key column names (empty: whole row).
    pub key: Vec<String>,
    /// The keys touched.
    pub window: Window,
    /// Transactions delivered before the low watermark.
    pub before_low: Vec<u32>,
}

impl OpenWindow {
    /// Records the keys of one streamed row image.
    pub fn touch(&mut self, row: &Row) {
        if self.key.is_empty() {
            self.window.touch(key_string(row.values()));
            return;
        }
        let vals: Option<Vec<&Value>> = self.key.iter().map(|k| row.get(k)).collect();
        if let Some(vals) = vals {
            self.window.touch(key_string(vals));
        }
    }
}

/// This run's watermark in a logical decoding message, if it is one: only
/// non-transactional messages with [`WATERMARK_PREFIX`] and this run's id.
pub(crate) fn own_watermark(
    side: Option<&StreamSide>,
    transactional: bool,
    prefix: &str,
    content: &[u8],
) -> Option<Watermark> {
    let ours = prefix == WATERMARK_PREFIX && !transactional;
    match (ours, side) {
        (true, Some(side)) => match serde_json::from_slice::<Watermark>(content) {
            Ok(wm) if wm.run == side.link.run => Some(wm),
            _ => None,
        },
        _ => None,
    }
}

/// Waits for the snapshot reader's end (forever when there is no reader).
pub(crate) async fn reader_outcome(snap: &mut Option<StreamSide>) -> Option<Result<bool, SourceError>> {
    match snap {
        Some(side) => (&mut side.link.outcome).await.ok(),
        None => std::future::pending().await,
    }
}

/// Handles the snapshot reader's end (`None`: it vanished): drops the
/// stream side; true when the source must stop (`initial_only` done); an
/// error stops the source.
pub(crate) fn reader_finished(
    snap: &mut Option<StreamSide>,
    outcome: Option<Result<bool, SourceError>>,
) -> Result<bool, SourceError> {
    *snap = None;
    match outcome {
        Some(Ok(stop)) => Ok(stop),
        Some(Err(e)) => Err(e),
        None => Err(SourceError::Retryable("the snapshot reader stopped unexpectedly".into())),
    }
}

/// The high watermark at `lsn`: reconcile the chunk with its window and
/// emit what remains as `r` events committed at this position, then hand
/// the chunk's progress to `progress`. Returns true when it committed a
/// position at `lsn` (false: no window, or the chunk is to be read again).
pub(crate) async fn close_window(
    side: &mut StreamSide,
    relations: &mut Relations,
    progress: Option<&mpsc::UnboundedSender<PendingProgress>>,
    source_id: &Arc<str>,
    lsn: u64,
    wm: Watermark,
    ctx: &mut SourceContext,
) -> Result<bool, SourceError> {
    let Some(win) = side.windows.remove(&wm.chunk) else {
        // Its low watermark came before the position this run resumed at.
        tracing::debug!(source = %source_id, chunk = wm.chunk, "high watermark without its low one; ignored");
        return Ok(false);
    };
    while let Ok(c) = side.link.chunks.try_recv() {
        side.pending.insert(c.chunk, c);
    }
    let msg = side.pending.remove(&wm.chunk).ok_or_else(|| {
        SourceError::Retryable(format!("snapshot: chunk {} reached its high watermark but was never read", wm.chunk))
    })?;
    if win.before_low.iter().any(|x| msg.snapshot.invisible(*x)) {
        let _ = msg.verdict.send(false);
        return Ok(false);
    }
    // The reader may read the next chunk while this one is delivered.
    let _ = msg.verdict.send(true);
    let converted = msg.rows.await.map_err(|e| {
        SourceError::Retryable(format!("snapshot: converting chunk {} of {} failed: {e}", wm.chunk, msg.table))
    })?;
    let rows = win.window.reconcile(converted);
    let emitted = rows.len() as u64;
    let metrics = side.metrics.clone();
    let relation = relations.find_wanted(&msg.schema, &msg.table_name);
    if let Some(id) = relation {
        // No transaction is open at a watermark: the schema's position has
        // no transaction id.
        relations.ensure_version(id, lsn, None, ctx).await?;
    }
    let schema_version = relation.and_then(|id| relations.get(id)).and_then(|r| r.version);
    let key_columns: Option<Columns> =
        (!win.key.is_empty()).then(|| win.key.iter().map(|k| Arc::<str>::from(k.as_str())).collect::<Vec<_>>().into());
    let position = position(lsn, None);
    let ts_ms = chrono_now_ms();
    for (index, row) in rows.into_iter().enumerate() {
        ctx.sender
            .push(Event {
                op: Op::Read,
                before: None,
                after: Some(row),
                source: SourceMeta {
                    connector: "postgres",
                    source_id: source_id.clone(),
                    pipeline: ctx.pipeline.clone(),
                    tenant: ctx.tenant.clone(),
                    db: msg.schema.clone(),
                    table: msg.table_name.clone(),
                    position: position.clone(),
                    ts_ms,
                },
                tx_id: None,
                tx_position: position.clone(),
                index: index as u32,
                schema_version,
                key_columns: key_columns.clone(),
            })
            .await?;
    }
    ctx.sender.commit(position.clone()).await?;
    metrics.rows(&msg.table, emitted);
    if let Some(p) = progress {
        let _ = p.send(PendingProgress { position, table: msg.table.clone(), progress: msg.progress });
    }
    Ok(true)
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use deltaforge_core::snapshot::key_string;
    use deltaforge_core::Row;

    use super::OpenWindow;

    #[test]
    fn windows_touch_by_key_columns_or_whole_row() {
        let row = Row::from_pairs([("id", serde_json::json!(3)), ("v", serde_json::json!("x"))]);
        let mut w = OpenWindow {
            table: "public.t".into(),
            key: vec!["id".into()],
            window: Default::default(),
            before_low: vec![],
        };
        w.touch(&row);
        assert_eq!(
            w.window
                .reconcile(vec![(key_string(&[serde_json::json!(3)]), 1), (key_string(&[serde_json::json!(4)]), 2)]),
            vec![2]
        );
        let mut whole =
            OpenWindow { table: "public.t".into(), key: vec![], window: Default::default(), before_low: vec![] };
        whole.touch(&row);
        assert!(whole.window.reconcile(vec![(key_string(row.values()), 1)]).is_empty());
    }
}
