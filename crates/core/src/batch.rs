//! Batching: turning the source's chunks into delivery batches.
//!
//! A batch closes at `max_events`, `max_bytes` or `max_ms`, whichever comes
//! first. With `respect_source_tx` a batch that hits a size limit in the
//! middle of a transaction is cut at the last transaction end inside it and
//! the open transaction moves to the next batch; only a transaction that
//! alone exceeds the limits is split, and a batch that holds no transaction
//! end carries no checkpoint position, so the checkpoint advances only at
//! the transaction's commit.
//!
//! This module is pure logic (no I/O, no clock): the coordinator drives the
//! timer. It must never reorder events.

use std::time::Duration;

use crate::event::Event;
use crate::position::Position;
use crate::source::SourceChunk;

/// Batch limits, from the pipeline spec's `batch` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Close a batch at this many events.
    pub max_events: usize,
    /// Close a batch at about this many bytes (estimated).
    pub max_bytes: usize,
    /// Close a batch this long after its first event arrived.
    pub max_wait: Duration,
    /// Never end a batch inside a transaction unless the transaction alone
    /// exceeds the limits.
    pub respect_source_tx: bool,
    /// Batches delivered concurrently (later ones are built and delivered
    /// while earlier ones wait for acks); checkpoints still commit in order.
    pub max_inflight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: 2000,
            max_bytes: 3 * 1024 * 1024,
            max_wait: Duration::from_millis(100),
            respect_source_tx: true,
            max_inflight: 1,
        }
    }
}

/// A closed batch, ready for processors and sinks.
#[derive(Debug, Default)]
pub struct Batch {
    /// Events in source order.
    pub events: Vec<Event>,
    /// Where the source may resume once this batch (and all before it) is
    /// delivered: the last transaction end inside it. `None` when the batch
    /// lies entirely inside one transaction.
    pub commit: Option<Position>,
    /// Estimated size in bytes.
    pub bytes: usize,
    /// Number of leading events that precede `commit` (all of them unless
    /// the batch ends inside a transaction).
    pub commit_index: usize,
}

/// The most events a new batch reserves room for up front.
const MAX_RESERVED_EVENTS: usize = 16_384;

/// Accumulates chunks into batches.
///
/// ```
/// use deltaforge_core::{BatchConfig, Batcher};
/// let mut b = Batcher::new(BatchConfig { max_events: 2, ..BatchConfig::default() });
/// assert!(b.is_empty());
/// ```
#[derive(Debug)]
pub struct Batcher {
    cfg: BatchConfig,
    cur: Batch,
    /// Events and bytes up to the last transaction end in `cur`.
    boundary: Option<(usize, usize)>,
}

impl Batcher {
    /// A batcher with these limits.
    pub fn new(cfg: BatchConfig) -> Self {
        let mut b = Batcher { cfg, cur: Batch::default(), boundary: None };
        b.cur = b.empty_batch();
        b
    }

    /// The limits.
    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.cur.events.is_empty() && self.cur.commit.is_none()
    }

    /// Adds a chunk; returns the batches that it closed, in order.
    ///
    /// Events are moved one by one (a chunk may close several batches).
    pub fn push(&mut self, chunk: SourceChunk) -> Vec<Batch> {
        let mut out = Vec::new();
        let mut commits = chunk.commits.into_iter().peekable();
        while let Some(c) = commits.next_if(|c| c.after == 0) {
            self.mark_commit(c.position);
        }
        for (i, event) in chunk.events.into_iter().enumerate() {
            let size = event.approx_size();
            self.cur.events.push(event);
            self.cur.bytes += size;
            while let Some(c) = commits.next_if(|c| c.after <= i + 1) {
                self.mark_commit(c.position);
            }
            if self.full() {
                self.close_full(&mut out);
            }
        }
        for c in commits {
            self.mark_commit(c.position);
        }
        out
    }

    /// Closes and returns the pending batch (timer expiry, end of input).
    pub fn flush(&mut self) -> Option<Batch> {
        if self.is_empty() {
            return None;
        }
        Some(self.take_all())
    }

    fn full(&self) -> bool {
        self.cur.events.len() >= self.cfg.max_events || self.cur.bytes >= self.cfg.max_bytes
    }

    fn mark_commit(&mut self, position: Position) {
        self.cur.commit = Some(position);
        self.boundary = Some((self.cur.events.len(), self.cur.bytes));
    }

    fn close_full(&mut self, out: &mut Vec<Batch>) {
        let in_tx = self.boundary.map(|(n, _)| n) != Some(self.cur.events.len());
        match self.boundary {
            Some((n, bytes)) if self.cfg.respect_source_tx && in_tx && n > 0 => {
                // Cut at the last transaction end; the open transaction moves on.
                let mut next = self.empty_batch();
                next.events.extend(self.cur.events.drain(n..));
                next.bytes = self.cur.bytes - bytes;
                self.cur.bytes = bytes;
                self.cur.commit_index = n;
                out.push(std::mem::replace(&mut self.cur, next));
                self.boundary = None;
                if self.full() {
                    // The open transaction alone exceeds a batch.
                    out.push(self.take_all());
                }
            }
            _ => out.push(self.take_all()),
        }
    }

    fn take_all(&mut self) -> Batch {
        self.cur.commit_index = self.boundary.map(|(n, _)| n).unwrap_or(0);
        self.boundary = None;
        let next = self.empty_batch();
        std::mem::replace(&mut self.cur, next)
    }

    /// A batch with room for a full batch of events: growing a vector of
    /// events by doubling copied each event about twice more (`perf`).
    fn empty_batch(&self) -> Batch {
        Batch { events: Vec::with_capacity(self.cfg.max_events.min(MAX_RESERVED_EVENTS)), ..Batch::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::source::Commit;
    use crate::testing::{EventBuilder, Seq};

    fn ev(seq: u64) -> Event {
        EventBuilder::new(seq).build()
    }

    /// A chunk of events `from..=to` with commits after every `tx` events.
    fn chunk(from: u64, to: u64, tx: u64) -> SourceChunk {
        let events: Vec<Event> = (from..=to).map(ev).collect();
        let commits = (from..=to)
            .filter(|s| s % tx == 0)
            .map(|s| Commit { after: (s - from + 1) as usize, position: Seq::at(s) })
            .collect();
        SourceChunk { events, commits }
    }

    fn ids(b: &Batch) -> Vec<u64> {
        b.events.iter().map(|e| e.after.as_ref().unwrap().get("id").unwrap().as_u64().unwrap()).collect()
    }

    fn cfg(max_events: usize, respect: bool) -> BatchConfig {
        BatchConfig { max_events, respect_source_tx: respect, ..BatchConfig::default() }
    }

    #[test]
    fn closes_at_max_events() {
        let mut b = Batcher::new(cfg(3, true));
        let out = b.push(chunk(1, 7, 1));
        assert_eq!(out.len(), 2);
        assert_eq!(ids(&out[0]), vec![1, 2, 3]);
        assert_eq!(out[0].commit, Some(Seq::at(3)));
        assert_eq!(ids(&out[1]), vec![4, 5, 6]);
        let rest = b.flush().unwrap();
        assert_eq!(ids(&rest), vec![7]);
        assert_eq!(rest.commit, Some(Seq::at(7)));
        assert!(b.flush().is_none());
    }

    #[test]
    fn closes_at_max_bytes() {
        let one = ev(1).approx_size();
        let mut b = Batcher::new(BatchConfig { max_bytes: one * 2, ..cfg(1000, true) });
        let out = b.push(chunk(1, 5, 1));
        assert_eq!(out.iter().map(|b| b.events.len()).collect::<Vec<_>>(), vec![2, 2]);
    }

    #[test]
    fn respects_transaction_boundaries() {
        // Transactions of 2 events; batches of 3 must cut after 2 and 4.
        let mut b = Batcher::new(cfg(3, true));
        let out = b.push(chunk(1, 6, 2));
        assert_eq!(ids(&out[0]), vec![1, 2]);
        assert_eq!(out[0].commit, Some(Seq::at(2)));
        assert_eq!(ids(&out[1]), vec![3, 4]);
        let rest = b.flush().unwrap();
        assert_eq!(ids(&rest), vec![5, 6]);
        assert_eq!(rest.commit, Some(Seq::at(6)));
    }

    #[test]
    fn splits_a_transaction_larger_than_a_batch_without_advancing_the_checkpoint() {
        let mut b = Batcher::new(cfg(3, true));
        let out = b.push(chunk(1, 8, 8));
        assert_eq!(ids(&out[0]), vec![1, 2, 3]);
        assert_eq!(out[0].commit, None, "mid-transaction batch must not carry a checkpoint");
        assert_eq!(ids(&out[1]), vec![4, 5, 6]);
        assert_eq!(out[1].commit, None);
        let rest = b.flush().unwrap();
        assert_eq!(ids(&rest), vec![7, 8]);
        assert_eq!(rest.commit, Some(Seq::at(8)));
    }

    #[test]
    fn without_respect_cuts_anywhere_but_checkpoints_only_at_commits() {
        let mut b = Batcher::new(cfg(3, false));
        let out = b.push(chunk(1, 6, 2));
        assert_eq!(ids(&out[0]), vec![1, 2, 3]);
        assert_eq!(out[0].commit, Some(Seq::at(2)));
        assert_eq!(ids(&out[1]), vec![4, 5, 6]);
        assert_eq!(out[1].commit, Some(Seq::at(6)));
    }

    #[test]
    fn transaction_spanning_chunks() {
        let mut b = Batcher::new(cfg(10, true));
        let mut first = chunk(1, 3, 100);
        first.commits.clear();
        assert!(b.push(first).is_empty());
        let second =
            SourceChunk { events: (4..=5).map(ev).collect(), commits: vec![Commit { after: 2, position: Seq::at(5) }] };
        assert!(b.push(second).is_empty());
        let out = b.flush().unwrap();
        assert_eq!(ids(&out), vec![1, 2, 3, 4, 5]);
        assert_eq!(out.commit, Some(Seq::at(5)));
    }

    #[test]
    fn commit_without_events_still_flushes_a_position() {
        let mut b = Batcher::new(cfg(10, true));
        let c = SourceChunk { events: vec![], commits: vec![Commit { after: 0, position: Seq::at(9) }] };
        assert!(b.push(c).is_empty());
        let out = b.flush().unwrap();
        assert!(out.events.is_empty());
        assert_eq!(out.commit, Some(Seq::at(9)));
    }
}
