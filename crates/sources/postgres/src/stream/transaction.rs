//! The transaction being assembled from the stream: its xid, commit time,
//! whether the checkpoint already covers it, and the running index of its
//! events.
//!
//! This module owns the per-transaction values every event of it carries
//! (transaction id, transaction position = commit LSN, commit time, index).
//! It must never decide whether a transaction is skipped (the caller passes
//! that) nor send anything to the pipeline.

use std::sync::Arc;

use deltaforge_core::Position;

use crate::position::position;

/// Milliseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// The transaction being read.
pub(crate) struct Tx {
    /// The transaction id, as streamed (32 bits).
    pub xid: u32,
    /// Commit time, in Unix milliseconds.
    pub ts_ms: i64,
    /// True when the checkpoint covers it: its changes are not emitted.
    pub skip: bool,
    /// Index of its next event.
    pub index: u32,
    /// `xid` as text, shared by its events.
    pub tx_id: Arc<str>,
    /// The transaction position of its events: the commit LSN.
    pub position: Position,
}

impl Tx {
    /// A Begin message: the transaction committing at `final_lsn`, at
    /// `commit_time` (microseconds since PostgreSQL's epoch).
    pub fn begin(final_lsn: u64, xid: u32, commit_time: i64, skip: bool) -> Tx {
        Tx {
            xid,
            ts_ms: commit_time.div_euclid(1000) + PG_EPOCH_MS,
            skip,
            index: 0,
            tx_id: xid.to_string().into(),
            position: position(final_lsn, Some(u64::from(xid))),
        }
    }

    /// The position of a change of this transaction at `lsn`.
    pub fn change_position(&self, lsn: u64) -> Position {
        position(lsn, Some(u64::from(self.xid)))
    }

    /// The checkpoint this transaction's Commit at `commit_lsn` makes.
    pub fn commit_position(&self, commit_lsn: u64) -> Position {
        position(commit_lsn, Some(u64::from(self.xid)))
    }
}
