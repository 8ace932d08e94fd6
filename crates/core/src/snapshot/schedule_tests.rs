//! Tests of [`super::Schedule`]: which tables each mode reads, when an
//! `initial_only` source stops, and backfill polling.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_storage::MemoryBackend;
use tokio::sync::mpsc;

use super::*;
use crate::testing::Seq;

/// A catalogue of fixed tables, recording the estimates asked for.
struct FakeCatalogue {
    tables: Vec<String>,
    estimated: Vec<String>,
}

#[async_trait]
impl SnapshotBackend for FakeCatalogue {
    async fn matched_tables(&mut self) -> Result<Vec<String>, SourceError> {
        Ok(self.tables.clone())
    }

    async fn estimate_rows(&mut self, table: &str) -> Result<Option<u64>, SourceError> {
        self.estimated.push(table.to_string());
        Ok(Some(7))
    }
}

/// Reads every table at once; with `report`, stores its `done` record
/// as the progress writer would.
struct FakeReader {
    read: Arc<std::sync::Mutex<Vec<SnapshotJob>>>,
    report: Option<mpsc::UnboundedSender<PendingProgress>>,
}

#[async_trait]
impl TableReader for FakeReader {
    async fn read_table(&self, job: SnapshotJob) -> Result<bool, SourceError> {
        let mut progress = job.progress.clone();
        progress.state = TableState::Done;
        self.read.lock().unwrap().push(job.clone());
        if let Some(tx) = &self.report {
            let position = Seq::at(1);
            tx.send(PendingProgress { position, table: job.table, progress }).unwrap();
        }
        Ok(true)
    }
}

struct Harness {
    store: SnapshotStore,
    read: Arc<std::sync::Mutex<Vec<SnapshotJob>>>,
    stored_tx: mpsc::UnboundedSender<PendingProgress>,
    chunks_rx: mpsc::Receiver<()>,
    task: tokio::task::JoinHandle<(Result<bool, SourceError>, Vec<String>)>,
}

/// Records: `s.done` done, `s.run` running after key 5, `s.new` none.
async fn start(mode: SnapshotMode, fresh: bool, report: bool, backfill: bool) -> Harness {
    let store = SnapshotStore::new(Arc::new(MemoryBackend::new()), "p");
    let mut done = TableProgress::start(ReadKind::Snapshot, None, None);
    done.state = TableState::Done;
    store.save("s.done", &done).await.unwrap();
    let mut running = TableProgress::start(ReadKind::Snapshot, None, None);
    running.last_key = Some(vec!["5".into()]);
    store.save("s.run", &running).await.unwrap();
    if backfill {
        store.request_backfill(vec!["s.done".into(), "s.zz".into()], Some("id > 1".into())).await.unwrap();
    }
    let (stored_tx, stored) = mpsc::unbounded_channel();
    let (chunks, chunks_rx) = mpsc::channel(1);
    let read = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = FakeReader { read: read.clone(), report: report.then(|| stored_tx.clone()) };
    let schedule = Schedule {
        cfg: SnapshotConfig { mode, chunk_size: 10, max_parallel_tables: 2 },
        source_id: "src".into(),
        pipeline: "p".into(),
        store: store.clone(),
        fresh,
        stored,
        chunks,
    };
    let task = tokio::spawn(async move {
        let mut catalogue =
            FakeCatalogue { tables: vec!["s.done".into(), "s.new".into(), "s.run".into()], estimated: vec![] };
        let r = schedule.run(&mut catalogue, reader).await;
        (r, catalogue.estimated)
    });
    Harness { store, read, stored_tx, chunks_rx, task }
}

impl Harness {
    /// Waits until `n` tables were read, then a moment for any more.
    async fn reads(&self, n: usize) -> Vec<(String, ReadKind, Option<Vec<String>>, Option<String>)> {
        for _ in 0..300 {
            if self.read.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut out: Vec<_> = self
            .read
            .lock()
            .unwrap()
            .iter()
            .map(|j| (j.table.clone(), j.progress.kind, j.progress.last_key.clone(), j.progress.condition.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Stops the stream; the schedule ends with `Ok(false)`.
    async fn stop(self) -> Vec<String> {
        drop(self.chunks_rx);
        let (r, estimated) = self.task.await.unwrap();
        assert!(matches!(r, Ok(false)), "{r:?}");
        estimated
    }
}

fn snap(t: &str, last_key: Option<&str>) -> (String, ReadKind, Option<Vec<String>>, Option<String>) {
    (t.to_string(), ReadKind::Snapshot, last_key.map(|k| vec![k.to_string()]), None)
}

#[tokio::test]
async fn schedule_picks_tables_by_mode_and_records() {
    // initial: tables not done; a running record resumes.
    let h = start(SnapshotMode::Initial, false, false, false).await;
    assert_eq!(h.reads(2).await, vec![snap("s.new", None), snap("s.run", Some("5"))]);
    let fresh_record = h.store.load("s.new").await.unwrap().unwrap();
    assert_eq!(fresh_record, TableProgress::start(ReadKind::Snapshot, None, Some(7)));
    assert_eq!(h.stop().await, vec!["s.new"]);
    // always: every table, a running record still resumes.
    let h = start(SnapshotMode::Always, false, false, false).await;
    assert_eq!(h.reads(3).await, vec![snap("s.done", None), snap("s.new", None), snap("s.run", Some("5"))]);
    assert_eq!(h.stop().await, vec!["s.done", "s.new"]);
    // never: only a running record.
    let h = start(SnapshotMode::Never, false, false, false).await;
    assert_eq!(h.reads(1).await, vec![snap("s.run", Some("5"))]);
    assert!(h.stop().await.is_empty());
    // No checkpoint: records are ignored, every table read afresh.
    let h = start(SnapshotMode::Initial, true, false, false).await;
    assert_eq!(h.reads(3).await, vec![snap("s.done", None), snap("s.new", None), snap("s.run", None)]);
    assert_eq!(h.stop().await, vec!["s.done", "s.new", "s.run"]);
}

#[tokio::test]
async fn initial_only_stops_once_every_done_record_is_stored() {
    let h = start(SnapshotMode::InitialOnly, false, true, false).await;
    let (r, _) = h.task.await.unwrap();
    assert!(matches!(r, Ok(true)), "{r:?}");
    assert_eq!(h.read.lock().unwrap().len(), 2);
    // Read to the end but not yet stored: the source keeps running.
    let mut h = start(SnapshotMode::InitialOnly, false, false, false).await;
    assert_eq!(h.reads(2).await.len(), 2);
    assert!(!h.task.is_finished());
    for t in ["s.new", "s.run"] {
        let mut progress = TableProgress::start(ReadKind::Snapshot, None, None);
        progress.state = TableState::Done;
        let position = Seq::at(1);
        h.stored_tx.send(PendingProgress { position, table: t.into(), progress }).unwrap();
    }
    let (r, _) = (&mut h.task).await.unwrap();
    assert!(matches!(r, Ok(true)), "{r:?}");
}

#[tokio::test]
async fn backfills_are_polled_and_unmatched_tables_ignored() {
    let h = start(SnapshotMode::Never, false, false, true).await;
    let reads = h.reads(2).await;
    assert_eq!(
        reads,
        vec![("s.done".to_string(), ReadKind::Backfill, None, Some("id > 1".to_string())), snap("s.run", Some("5")),]
    );
    assert!(h.store.pending_backfills().await.unwrap().is_empty());
    assert_eq!(h.stop().await, vec!["s.done"]);
}

/// Snapshot reads succeed; a backfill read fails (fatal) or, with
/// `wait_cancel`, runs until its job is cancelled.
struct BackfillReader {
    wait_cancel: bool,
}

#[async_trait]
impl TableReader for BackfillReader {
    async fn read_table(&self, job: SnapshotJob) -> Result<bool, SourceError> {
        if job.progress.kind != ReadKind::Backfill {
            return Ok(true);
        }
        if !self.wait_cancel {
            return Err(SourceError::Fatal("Subquery returns more than 1 row".into()));
        }
        job.cancel.cancelled().await;
        Ok(false)
    }
}

/// Runs a `never` schedule over `s.t` with one backfill request.
async fn backfill_run(
    wait_cancel: bool,
) -> (SnapshotStore, u64, mpsc::Receiver<()>, tokio::task::JoinHandle<Result<bool, SourceError>>) {
    let store = SnapshotStore::new(Arc::new(MemoryBackend::new()), "p");
    let req = store.request_backfill(vec!["s.t".into()], Some("x".into())).await.unwrap();
    let (_stored_tx, stored) = mpsc::unbounded_channel();
    let (chunks, chunks_rx) = mpsc::channel::<()>(1);
    let schedule = Schedule {
        cfg: SnapshotConfig { mode: SnapshotMode::Never, chunk_size: 10, max_parallel_tables: 2 },
        source_id: "src".into(),
        pipeline: "p".into(),
        store: store.clone(),
        fresh: false,
        stored,
        chunks,
    };
    let task = tokio::spawn(async move {
        let _keep = _stored_tx;
        let mut catalogue = FakeCatalogue { tables: vec!["s.t".into()], estimated: vec![] };
        schedule.run(&mut catalogue, BackfillReader { wait_cancel }).await
    });
    (store, req.id, chunks_rx, task)
}

async fn wait_backfill_state(store: &SnapshotStore, id: u64, state: BackfillState) -> crate::snapshot::BackfillStatus {
    for _ in 0..500 {
        if let Some(b) = store.backfill(id).await.unwrap().filter(|b| b.state == state) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("backfill {id} never {state:?}: {:?}", store.backfills().await.unwrap());
}

#[tokio::test]
async fn a_failing_backfill_is_marked_failed_and_the_reader_goes_on() {
    let (store, id, chunks_rx, task) = backfill_run(false).await;
    let b = wait_backfill_state(&store, id, BackfillState::Failed).await;
    assert_eq!(b.error.as_deref(), Some("Subquery returns more than 1 row"));
    let rec = store.load("s.t").await.unwrap().unwrap();
    assert_eq!((rec.state, rec.backfill, rec.error.as_deref()), (TableState::Failed, Some(id), b.error.as_deref()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished(), "the backfill's failure ended the snapshot reader (and the source)");
    drop(chunks_rx);
    assert!(matches!(task.await.unwrap(), Ok(false)));
}

#[tokio::test]
async fn a_cancelled_backfill_stops_and_is_not_resumed() {
    let (store, id, chunks_rx, task) = backfill_run(true).await;
    wait_backfill_state(&store, id, BackfillState::Running).await;
    assert!(matches!(store.cancel_backfill(id).await.unwrap(), crate::snapshot::CancelOutcome::Cancelled(_)));
    for _ in 0..500 {
        if store.load("s.t").await.unwrap().is_some_and(|r| r.state == TableState::Cancelled) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.load("s.t").await.unwrap().unwrap().state, TableState::Cancelled);
    assert!(matches!(store.cancel_backfill(id).await.unwrap(), crate::snapshot::CancelOutcome::AlreadyEnded(_)));
    assert_eq!(store.cancel_backfill(id + 100).await.unwrap(), crate::snapshot::CancelOutcome::NotFound);
    drop(chunks_rx);
    assert!(matches!(task.await.unwrap(), Ok(false)));
    // A stale `running` record (stored by the progress writer after the
    // cancel) is not resumed by the next run.
    let mut stale = store.load("s.t").await.unwrap().unwrap();
    stale.state = TableState::Running;
    store.save("s.t", &stale).await.unwrap();
    let (_tx, stored) = mpsc::unbounded_channel();
    let (chunks, _rx) = mpsc::channel::<()>(1);
    let schedule = Schedule {
        cfg: SnapshotConfig { mode: SnapshotMode::Never, chunk_size: 10, max_parallel_tables: 2 },
        source_id: "src".into(),
        pipeline: "p".into(),
        store: store.clone(),
        fresh: false,
        stored,
        chunks,
    };
    let mut catalogue = FakeCatalogue { tables: vec!["s.t".into()], estimated: vec![] };
    let queue = schedule.initial_queue(&mut catalogue, &["s.t".to_string()]).await.unwrap();
    assert!(queue.is_empty(), "a cancelled backfill was queued again");
    assert_eq!(store.load("s.t").await.unwrap().unwrap().state, TableState::Cancelled);
}

#[tokio::test]
async fn a_pending_backfill_cancelled_never_starts() {
    let store = SnapshotStore::new(Arc::new(MemoryBackend::new()), "p");
    let req = store.request_backfill(vec!["s.t".into()], None).await.unwrap();
    let crate::snapshot::CancelOutcome::Cancelled(b) = store.cancel_backfill(req.id).await.unwrap() else {
        panic!("not cancelled")
    };
    assert_eq!(b.state, BackfillState::Cancelled);
    assert!(store.pending_backfills().await.unwrap().is_empty());
    assert_eq!(store.backfills().await.unwrap(), vec![b]);
}
