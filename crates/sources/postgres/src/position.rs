//! The one place that builds and reads PostgreSQL positions
//! ([`Position::Postgres`]), and where a run resumes ([`Resume`]).
//!
//! Every other module of this crate goes through these helpers, so that the
//! shape of a PostgreSQL position (today a variant of the core `Position`
//! enum) can change here alone. This module owns the mapping between an
//! LSN (with an optional transaction id) and a `Position`; it must never
//! decide what is durable or what is reported to the server.

use deltaforge_core::{Lsn, Position};

/// The position at `lsn`, with the transaction id when known (changes and
/// transaction checkpoints) or `None` (idle checkpoints, snapshot chunks).
pub fn position(lsn: u64, tx_id: Option<u64>) -> Position {
    Position::Postgres { lsn: Lsn(lsn), tx_id }
}

/// The LSN of a PostgreSQL position; `None` for another source's position.
pub fn lsn_of(position: &Position) -> Option<u64> {
    match position {
        Position::Postgres { lsn, .. } => Some(lsn.0),
        _ => None,
    }
}

/// Where a run resumes: the checkpoint LSN, and whether a transaction whose
/// commit LSN equals it was already delivered (true for transaction
/// checkpoints; false for idle checkpoints at the server's WAL end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The checkpoint LSN.
    pub lsn: u64,
    /// Skip a transaction whose commit LSN equals `lsn` too.
    pub inclusive: bool,
}

impl Resume {
    /// Where a run resumes from the stored checkpoint; `None` when the
    /// checkpoint is not a PostgreSQL position. Only transaction checkpoints
    /// carry a transaction id, so its presence makes the resume inclusive.
    pub fn from_checkpoint(checkpoint: &Position) -> Option<Resume> {
        match checkpoint {
            Position::Postgres { lsn, tx_id } => Some(Resume { lsn: lsn.0, inclusive: tx_id.is_some() }),
            _ => None,
        }
    }

    /// True when the transaction committing at `commit_lsn` was delivered
    /// before the checkpoint.
    pub fn covers(&self, commit_lsn: u64) -> bool {
        commit_lsn < self.lsn || (self.inclusive && commit_lsn == self.lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::Resume;

    #[test]
    fn resume_skips_only_what_the_checkpoint_covers() {
        let tx = Resume { lsn: 100, inclusive: true };
        assert!(tx.covers(99) && tx.covers(100) && !tx.covers(101));
        let idle = Resume { lsn: 100, inclusive: false };
        assert!(idle.covers(99) && !idle.covers(100) && !idle.covers(101));
    }
}
