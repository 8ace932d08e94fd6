//! The progress writer: stores each chunk's progress record only after the
//! commit at the chunk's high watermark became durable, in the order the
//! stream handed them over.
//!
//! This module owns the durability gate of snapshot progress. It must never
//! store a record whose position is not on the source's durable positions
//! (a crash would then resume past undelivered rows).

use tokio::sync::{mpsc, watch};

use crate::position::Position;
use crate::snapshot::progress::PendingProgress;
use crate::snapshot::store::{SnapshotError, SnapshotStore};

/// Stores progress records in order, each only after its position is
/// durable. Runs as its own task so the stream reader never waits on it.
pub struct ProgressWriter {
    store: SnapshotStore,
    durable: watch::Receiver<Option<Position>>,
    rx: mpsc::UnboundedReceiver<PendingProgress>,
    stored: Option<mpsc::UnboundedSender<PendingProgress>>,
}

impl ProgressWriter {
    /// A writer fed by the returned sender.
    pub fn new(
        store: SnapshotStore,
        durable: watch::Receiver<Option<Position>>,
    ) -> (Self, mpsc::UnboundedSender<PendingProgress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ProgressWriter { store, durable, rx, stored: None }, tx)
    }

    /// Also reports each record once stored (for tables-done accounting).
    pub fn notify(mut self, stored: mpsc::UnboundedSender<PendingProgress>) -> Self {
        self.stored = Some(stored);
        self
    }

    /// Runs until the sender is dropped or the pipeline goes away. A record
    /// whose position never becomes durable is never written.
    pub async fn run(mut self) -> Result<(), SnapshotError> {
        while let Some(p) = self.rx.recv().await {
            let reached =
                self.durable.wait_for(|d| d.as_ref().is_some_and(|d| p.position.is_at_or_before(d))).await.is_ok();
            if !reached {
                return Ok(());
            }
            self.store.save(&p.table, &p.progress).await?;
            if let Some(n) = &self.stored {
                let _ = n.send(p);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltaforge_storage::MemoryBackend;

    use super::*;
    use crate::snapshot::progress::{ReadKind, TableProgress};
    use crate::testing::Seq;

    #[tokio::test]
    async fn progress_is_written_only_once_durable() {
        let store = SnapshotStore::new(Arc::new(MemoryBackend::new()), "p");
        let (dtx, drx) = watch::channel(None);
        let (writer, tx) = ProgressWriter::new(store.clone(), drx);
        let task = tokio::spawn(writer.run());
        let at = |lsn| Seq::at(lsn);
        let mut p = TableProgress::start(ReadKind::Snapshot, None, None);
        p.chunk = 1;
        tx.send(PendingProgress { position: at(100), table: "t".into(), progress: p.clone() }).unwrap();
        dtx.send(Some(at(99))).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(store.load("t").await.unwrap().is_none(), "stored before its chunk was durable");
        dtx.send(Some(at(100))).unwrap();
        for _ in 0..100 {
            if store.load("t").await.unwrap().is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(store.load("t").await.unwrap(), Some(p));
        drop(tx);
        task.await.unwrap().unwrap();
    }
}
