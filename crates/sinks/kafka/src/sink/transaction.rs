//! The exactly-once transaction state machine: which phase the Kafka
//! transaction is in, which batch was committed last, the progress marker
//! read at startup, and the blocking librdkafka calls (commit, abort) that
//! move between phases.
//!
//! The state lives behind an async mutex whose owned guard travels into
//! the blocking task ([`blocking`]), so a cancelled attempt never leaves it
//! half-updated. It must never send event messages: that is the sink's
//! job.

use std::sync::Arc;
use std::time::Duration;

use deltaforge_core::{Event, SinkError};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use tokio::sync::OwnedMutexGuard;

use super::delivery::KafkaProducer;
use crate::progress::Marker;

/// Time limit of one blocking transaction call (init, commit, abort) and of
/// reading the progress marker.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// A batch's identity: the same events retried give the same fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fingerprint {
    first: String,
    last: String,
    len: usize,
}

impl Fingerprint {
    /// `None` for an empty batch.
    pub(super) fn of(events: &[Event]) -> Option<Fingerprint> {
        Some(Fingerprint {
            first: events.first()?.idempotency_key(),
            last: events.last()?.idempotency_key(),
            len: events.len(),
        })
    }
}

/// Where the current Kafka transaction stands.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Phase {
    /// No transaction open.
    Idle,
    /// A transaction is open (its batch may be incomplete): abort it first.
    Open,
    /// Commit failed with a retriable error: retry the commit first.
    CommitPending(Fingerprint),
}

/// Transaction state, behind an async mutex (see the module doc).
pub(super) struct TxnState {
    /// Whether `init_transactions` succeeded on the current producer.
    pub(super) initialized: bool,
    /// Whether the progress marker was read since startup.
    pub(super) marker_read: bool,
    /// Where the current transaction stands.
    pub(super) phase: Phase,
    /// Last committed marker read at startup; events it covers are skipped.
    pub(super) marker: Option<Marker>,
    /// The batch of the last commit (a retry of it is acknowledged at once).
    pub(super) last_committed: Option<Fingerprint>,
}

/// The exactly-once part of a sink.
pub(super) struct Eos {
    /// The producer's `transactional.id`.
    pub(super) transactional_id: String,
    /// Where the progress markers go.
    pub(super) progress_topic: String,
    /// Whether the progress topic is known to exist.
    pub(super) topic_ready: bool,
    /// The transaction state, shared with blocking tasks.
    pub(super) state: Arc<tokio::sync::Mutex<TxnState>>,
}

/// Runs `f` with the transaction state on the blocking pool; the guard
/// comes back with the result.
pub(super) async fn blocking<R: Send + 'static>(
    guard: OwnedMutexGuard<TxnState>,
    f: impl FnOnce(&mut TxnState) -> R + Send + 'static,
) -> Result<(OwnedMutexGuard<TxnState>, R), SinkError> {
    tokio::task::spawn_blocking(move || {
        let mut g = guard;
        let r = f(&mut g);
        (g, r)
    })
    .await
    .map_err(|e| SinkError::Retryable(format!("kafka: transaction task failed: {e}")))
}

/// Commits, recording the outcome in the state (so that a late success of
/// a cancelled attempt is not lost).
pub(super) fn commit_blocking(t: &mut TxnState, p: &KafkaProducer, fp: Option<Fingerprint>) -> Result<(), KafkaError> {
    match p.commit_transaction(OP_TIMEOUT) {
        Ok(()) => {
            t.phase = Phase::Idle;
            t.last_committed = fp;
            t.marker = None;
            Ok(())
        }
        Err(e) => {
            if let KafkaError::Transaction(rd) = &e {
                if rd.txn_requires_abort() {
                    t.phase = match p.abort_transaction(OP_TIMEOUT) {
                        Ok(()) => Phase::Idle,
                        Err(_) => Phase::Open,
                    };
                } else if rd.is_retriable() {
                    t.phase = match fp {
                        Some(fp) => Phase::CommitPending(fp),
                        None => Phase::Open,
                    };
                }
            }
            Err(e)
        }
    }
}

/// Aborts the open transaction; the phase becomes idle only if that worked.
pub(super) fn abort_blocking(t: &mut TxnState, p: &KafkaProducer) -> Result<(), KafkaError> {
    p.abort_transaction(OP_TIMEOUT)?;
    t.phase = Phase::Idle;
    Ok(())
}
