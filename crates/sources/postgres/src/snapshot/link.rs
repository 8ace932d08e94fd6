//! What the snapshot reader hands the streamer: the watermark prefix, the
//! chunks with their transaction snapshot and verdict channel, and the
//! reader's outcome. [`ChunkMsg`] is PostgreSQL's
//! [`SnapshotChunk`] for the core's stream side
//! ([`deltaforge_core::snapshot::StreamSide`]): a window records the xids
//! the stream delivered before its low watermark, and the chunk raced a
//! commit when one of them was invisible to its select. A leaf: both the
//! reader ([`crate::snapshot`]) and the streamer ([`crate::stream`])
//! import it, and it imports neither.
//!
//! This module owns only the contract between the two sides; it must never
//! read tables or emit events.

use std::sync::Arc;

use async_trait::async_trait;
use deltaforge_core::snapshot::{SnapshotChunk, TableProgress};
use deltaforge_core::{Row, SourceError};
use tokio::sync::{mpsc, oneshot};

/// Prefix of the logical decoding messages that carry watermarks.
pub const WATERMARK_PREFIX: &str = "deltaforge-watermark";

/// A transaction snapshot (`pg_current_snapshot()`): which transactions the
/// chunk's select could not see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XidSnapshot {
    /// Lowest transaction id still running.
    pub xmin: u64,
    /// First transaction id not yet assigned.
    pub xmax: u64,
    /// Transaction ids running at the time.
    pub xip: Vec<u64>,
}

impl XidSnapshot {
    /// Parses `xmin:xmax:xip,xip,…`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().splitn(3, ':');
        let xmin = it.next()?.parse().ok()?;
        let xmax = it.next()?.parse().ok()?;
        let xip = match it.next() {
            Some("") | None => Vec::new(),
            Some(list) => list.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?,
        };
        Some(XidSnapshot { xmin, xmax, xip })
    }

    /// True when the transaction with this (32-bit, as streamed) xid was
    /// invisible to the snapshot.
    pub fn invisible(&self, xid: u32) -> bool {
        let xmax32 = self.xmax as u32;
        // Modular comparison: xids wrap around at 2^32.
        xid.wrapping_sub(xmax32) as i32 >= 0 || self.xip.iter().any(|x| *x as u32 == xid)
    }
}

/// One chunk, handed to the streamer before its high watermark is written.
pub struct ChunkMsg {
    /// Chunk id within the run (as in its watermarks).
    pub chunk: u64,
    /// `schema.table`.
    pub table: String,
    /// Schema name.
    pub schema: Arc<str>,
    /// Table name.
    pub table_name: Arc<str>,
    /// The table's schema description as the stream would register it
    /// (see `layout::describe`), for a table the stream has no Relation
    /// message of yet.
    pub description: Arc<serde_json::Value>,
    /// Rows with their key strings ([`key_string`](deltaforge_core::snapshot::key_string)), in key order, being
    /// converted from the server's text off the reader's path (the reader
    /// selects the next chunk meanwhile).
    pub rows: tokio::task::JoinHandle<Vec<(String, Row)>>,
    /// The select's snapshot.
    pub snapshot: XidSnapshot,
    /// The table's record once this chunk is delivered.
    pub progress: TableProgress,
    /// The verdict: `true` (accepted: its rows are emitted at the high
    /// watermark) or `false` (it raced a commit: read the chunk again);
    /// taken when sent.
    pub verdict: Option<oneshot::Sender<bool>>,
}

#[async_trait]
impl SnapshotChunk for ChunkMsg {
    /// The xids of the transactions the stream delivered before the low
    /// watermark (the most recent ones).
    type Opened = Vec<u32>;

    fn id(&self) -> u64 {
        self.chunk
    }

    fn table(&self) -> &str {
        &self.table
    }

    fn progress(&self) -> &TableProgress {
        &self.progress
    }

    /// A transaction delivered before the low watermark that the select's
    /// snapshot could not see yet (PostgreSQL writes a commit record
    /// before it makes the transaction visible).
    fn raced(&self, opened: &Vec<u32>) -> bool {
        opened.iter().any(|x| self.snapshot.invisible(*x))
    }

    fn send_verdict(&mut self, accepted: bool) {
        if let Some(verdict) = self.verdict.take() {
            let _ = verdict.send(accepted);
        }
    }

    async fn take_rows(&mut self) -> Result<Vec<(String, Row)>, SourceError> {
        (&mut self.rows).await.map_err(|e| {
            SourceError::Retryable(format!("snapshot: converting chunk {} of {} failed: {e}", self.chunk, self.table))
        })
    }
}

/// What the reader hands the streamer.
pub struct SnapshotLink {
    /// Identifies this run's watermarks.
    pub run: String,
    /// Chunks, each sent before its high watermark is written.
    pub chunks: mpsc::Receiver<ChunkMsg>,
    /// The reader's outcome: `Ok(true)` when the source should stop
    /// (`initial_only`, all tables done and stored), `Ok(false)` when it
    /// has nothing more to do for now, or the error that must stop it.
    pub outcome: oneshot::Receiver<Result<bool, SourceError>>,
}

#[cfg(test)]
mod tests {
    use super::XidSnapshot;

    #[test]
    fn snapshot_parse_and_visibility() {
        let s = XidSnapshot::parse("100:105:101,103").unwrap();
        assert_eq!(s, XidSnapshot { xmin: 100, xmax: 105, xip: vec![101, 103] });
        assert!(!s.invisible(99) && !s.invisible(102) && !s.invisible(104));
        assert!(s.invisible(101) && s.invisible(103) && s.invisible(105) && s.invisible(200));
        assert_eq!(XidSnapshot::parse("7:7:").unwrap().xip, Vec::<u64>::new());
        assert!(XidSnapshot::parse("x").is_none());
        // 64-bit xids with an epoch compare by their low 32 bits.
        let e = XidSnapshot::parse(&format!("{}:{}:", (1u64 << 32) + 10, (1u64 << 32) + 12)).unwrap();
        assert!(!e.invisible(11) && e.invisible(12));
    }
}
