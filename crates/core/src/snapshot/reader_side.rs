//! The reader's side of the hand-off between a source's snapshot reader and
//! its stream: waiting for the stream's verdict on a chunk
//! ([`await_verdict`]) and learning which progress records were stored
//! ([`on_stored`]).
//!
//! This module owns the waiting rules (when to log, when the progress
//! writer's end is a shutdown and when a failure). It must never hold a
//! chunk or touch a window: that is `snapshot::stream_side`'s.

use std::collections::HashSet;

use tokio::sync::mpsc;

use crate::snapshot::progress::{PendingProgress, TableState};
use crate::source_error::SourceError;

/// How often a snapshot reader says it is still waiting for the stream.
const STREAM_WAIT_LOG: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for the stream reader's answer about a chunk, logging every 10 s
/// while it has not come: the answer comes when the stream reaches the
/// chunk's high watermark, and a stream far behind (a slot or binlog
/// position that fell behind while the pipeline was stopped) would
/// otherwise look like a hung snapshot.
pub async fn await_verdict<T>(
    mut rx: tokio::sync::oneshot::Receiver<T>,
    source_id: &str,
    table: &str,
) -> Result<T, tokio::sync::oneshot::error::RecvError> {
    let started = std::time::Instant::now();
    loop {
        match tokio::time::timeout(STREAM_WAIT_LOG, &mut rx).await {
            Ok(answer) => return answer,
            Err(_) => tracing::info!(
                source = source_id,
                table,
                waited_s = started.elapsed().as_secs(),
                "snapshot: waiting for the stream to reach the chunk's high watermark (it is still reading older changes)"
            ),
        }
    }
}

/// How long a reader waits for the stream to stop after the progress writer
/// ended, before calling the writer's end a failure.
const WRITER_GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Handles one message of the progress writer in a source's snapshot
/// reader: a stored `done` record adds its table to `stored_done`. When the
/// writer has ended (`None`), returns `Ok(true)` if the stream stopped too
/// (a shutdown: the writer ends with the pipeline, a moment before the
/// stream closes `chunks`), else an error; `Ok(false)` means go on.
pub async fn on_stored<T>(
    stored: Option<PendingProgress>,
    chunks: &mpsc::Sender<T>,
    source_id: &str,
    stored_done: &mut HashSet<String>,
) -> Result<bool, SourceError> {
    match stored {
        Some(p) if p.progress.state == TableState::Done => {
            tracing::info!(source = source_id, table = %p.table, rows = p.progress.rows_done,
                kind = ?p.progress.kind, "snapshot of table done and delivered");
            stored_done.insert(p.table);
            Ok(false)
        }
        Some(_) => Ok(false),
        None if tokio::time::timeout(WRITER_GONE_GRACE, chunks.closed()).await.is_ok() => Ok(true),
        None => Err(SourceError::Retryable(
            "snapshot: the progress writer stopped while the stream runs (storage failure?)".into(),
        )),
    }
}
