//! What the stream has handed to the pipeline and what the pipeline made
//! durable: the source of the positions reported to the server (standby
//! status updates and keepalive replies), and the idle rule that
//! checkpoints an idle slot at the server's WAL end.
//!
//! This module must never report to the server a position that did not
//! appear as durable, and never propose an idle checkpoint while anything
//! received is not yet durable.

use std::time::{Duration, Instant};

use deltaforge_core::Position;

use crate::position::lsn_of;
use crate::transport::Transport;

/// Minimum time between two idle (event-less) checkpoints.
const IDLE_ADVANCE_EVERY: Duration = Duration::from_secs(1);

/// Received and durable positions of one streaming session.
pub(crate) struct Feedback {
    /// The last commit (or idle position) handed to the pipeline.
    received: Option<u64>,
    /// The last durable position (reported to the server).
    durable: Option<u64>,
    last_idle_advance: Option<Instant>,
}

impl Feedback {
    /// Starting at the checkpoint LSN: it was both received and durable.
    pub fn new(checkpoint: Option<u64>) -> Self {
        Feedback { received: checkpoint, durable: checkpoint, last_idle_advance: None }
    }

    /// A new durable position from the pipeline: remembered, and reported
    /// to the server.
    pub fn on_durable<T: Transport>(&mut self, d: Option<Position>, wire: &T) {
        if let Some(lsn) = d.as_ref().and_then(lsn_of) {
            if self.durable.is_none_or(|cur| lsn > cur) {
                self.durable = Some(lsn);
            }
            // Only ever a durable position reaches the server.
            wire.acknowledge(lsn);
        }
    }

    /// A position committed to the pipeline at `lsn` (a transaction or a
    /// snapshot chunk).
    pub fn note_received(&mut self, lsn: u64) {
        if self.received.is_none_or(|r| lsn > r) {
            self.received = Some(lsn);
        }
    }

    /// The idle rule: with nothing in flight (`busy` false: no transaction
    /// open, nothing buffered) and everything received durable, the
    /// server's WAL end to checkpoint at, at most once per
    /// [`IDLE_ADVANCE_EVERY`]; a returned target counts as an attempt.
    pub fn take_idle_target(&mut self, wal_end: u64, busy: bool) -> Option<u64> {
        if busy {
            return None;
        }
        if let Some(r) = self.received {
            if self.durable.is_none_or(|d| d < r) {
                return None;
            }
        }
        let target = wal_end;
        if target == 0 || self.durable.is_some_and(|d| target <= d) || self.received.is_some_and(|r| target <= r) {
            return None;
        }
        if self.last_idle_advance.is_some_and(|t| t.elapsed() < IDLE_ADVANCE_EVERY) {
            return None;
        }
        self.last_idle_advance = Some(Instant::now());
        Some(target)
    }

    /// The idle checkpoint at `target` was committed and flushed.
    pub fn idle_committed(&mut self, target: u64) {
        self.received = Some(target);
    }
}
