//! Tests of [`super::StreamSide`] with an in-memory chunk: windows,
//! verdicts, races, progress hand-over and the reader's end.

use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::snapshot::progress::ReadKind;
use crate::snapshot::window::WatermarkKind;
use crate::testing::Seq;

/// A chunk of `(id, v)` rows keyed by `id`; it races when its xid is in
/// the window's recorded set.
struct FakeChunk {
    id: u64,
    table: String,
    progress: TableProgress,
    rows: Option<Vec<(String, Row)>>,
    invisible_xid: Option<u32>,
    verdict: Option<oneshot::Sender<bool>>,
}

#[async_trait]
impl SnapshotChunk for FakeChunk {
    type Opened = Vec<u32>;

    fn id(&self) -> u64 {
        self.id
    }

    fn table(&self) -> &str {
        &self.table
    }

    fn progress(&self) -> &TableProgress {
        &self.progress
    }

    fn raced(&self, opened: &Vec<u32>) -> bool {
        self.invisible_xid.is_some_and(|x| opened.contains(&x))
    }

    fn send_verdict(&mut self, accepted: bool) {
        if let Some(v) = self.verdict.take() {
            let _ = v.send(accepted);
        }
    }

    async fn take_rows(&mut self) -> Result<Vec<(String, Row)>, SourceError> {
        self.rows.take().ok_or_else(|| SourceError::Retryable("rows taken twice".into()))
    }
}

fn row(id: i64) -> Row {
    Row::from_pairs([("id", json!(id)), ("v", json!(format!("v{id}")))])
}

fn chunk(id: u64, ids: &[i64], invisible_xid: Option<u32>) -> (FakeChunk, oneshot::Receiver<bool>) {
    let (tx, rx) = oneshot::channel();
    let mut progress = TableProgress::start(ReadKind::Snapshot, None, None);
    progress.chunk = id;
    let rows = ids.iter().map(|i| (key_string(&[json!(i)]), row(*i))).collect();
    let c = FakeChunk { id, table: "s.t".into(), progress, rows: Some(rows), invisible_xid, verdict: Some(tx) };
    (c, rx)
}

fn wm(run: &str, chunk: u64, kind: WatermarkKind) -> Watermark {
    Watermark { run: run.into(), chunk, kind, table: "s.t".into(), key: vec!["id".into()] }
}

struct Harness {
    side: StreamSide<FakeChunk>,
    chunks: mpsc::Sender<FakeChunk>,
    outcome: oneshot::Sender<Result<bool, SourceError>>,
    progress: mpsc::UnboundedReceiver<PendingProgress>,
}

fn harness() -> Harness {
    let (chunks, chunks_rx) = mpsc::channel(4);
    let (outcome, outcome_rx) = oneshot::channel();
    let (progress_tx, progress) = mpsc::unbounded_channel();
    let side = StreamSide::new("run-1".into(), chunks_rx, outcome_rx, SnapshotMetrics::new("p"), progress_tx);
    Harness { side, chunks, outcome, progress }
}

fn ids(rows: &[Row]) -> Vec<i64> {
    rows.iter().map(|r| r.get("id").and_then(|v| v.as_i64()).unwrap()).collect()
}

fn at(lsn: u64) -> Position {
    Seq::at(lsn)
}

#[tokio::test]
async fn keys_touched_in_the_window_are_dropped_and_progress_waits_for_the_commit() {
    let mut h = harness();
    assert!(h.side.is_ours(&wm("run-1", 1, WatermarkKind::Low)));
    assert!(!h.side.is_ours(&wm("run-0", 1, WatermarkKind::Low)));
    assert!(!h.side.has_open_windows());
    h.side.open_window(wm("run-1", 1, WatermarkKind::Low), vec![]);
    assert!(h.side.has_open_windows());
    h.side.touch("s.t", &row(2));
    h.side.touch("s.other", &row(3)); // another table's change touches nothing here
    let (c, verdict) = chunk(1, &[1, 2, 3], None);
    h.chunks.send(c).await.unwrap();
    let closed = h.side.close_window(1).await.unwrap().expect("accepted");
    assert!(verdict.await.unwrap(), "accepted");
    assert_eq!(ids(&closed.rows), vec![1, 3]);
    assert_eq!(closed.key, vec!["id".to_string()]);
    assert_eq!(closed.chunk.progress.chunk, 1);
    assert!(!h.side.has_open_windows());
    assert!(h.progress.try_recv().is_err(), "no record before the commit after the rows");
    h.side.release_progress(&at(42));
    let p = h.progress.try_recv().unwrap();
    assert_eq!((p.table.as_str(), p.position, p.progress.chunk), ("s.t", at(42), 1));
    h.side.release_progress(&at(43));
    assert!(h.progress.try_recv().is_err(), "each record is released once");
}

#[tokio::test]
async fn a_truncate_in_the_window_drops_the_whole_chunk() {
    let mut h = harness();
    h.side.open_window(wm("run-1", 1, WatermarkKind::Low), vec![]);
    h.side.truncate("s.t");
    let (c, _verdict) = chunk(1, &[1, 2], None);
    h.chunks.send(c).await.unwrap();
    let closed = h.side.close_window(1).await.unwrap().expect("accepted");
    assert!(closed.rows.is_empty());
}

#[tokio::test]
async fn a_chunk_that_raced_a_commit_is_read_again() {
    let mut h = harness();
    h.side.open_window(wm("run-1", 7, WatermarkKind::Low), vec![100, 101]);
    let (c, verdict) = chunk(7, &[1], Some(101));
    h.chunks.send(c).await.unwrap();
    assert!(h.side.close_window(7).await.unwrap().is_none());
    assert!(!verdict.await.unwrap(), "rejected: read again");
    h.side.release_progress(&at(1));
    assert!(h.progress.try_recv().is_err(), "a rejected chunk holds no record");
}

#[tokio::test]
async fn chunks_may_arrive_out_of_order_and_a_missing_low_watermark_is_ignored() {
    let mut h = harness();
    h.side.open_window(wm("run-1", 1, WatermarkKind::Low), vec![]);
    h.side.open_window(wm("run-1", 2, WatermarkKind::Low), vec![]);
    let (c2, _v2) = chunk(2, &[20], None);
    let (c1, _v1) = chunk(1, &[10], None);
    h.chunks.send(c2).await.unwrap();
    h.chunks.send(c1).await.unwrap();
    assert_eq!(ids(&h.side.close_window(1).await.unwrap().unwrap().rows), vec![10]);
    assert_eq!(ids(&h.side.close_window(2).await.unwrap().unwrap().rows), vec![20]);
    // A high watermark whose low one preceded this run's start.
    assert!(h.side.close_window(9).await.unwrap().is_none());
}

#[tokio::test]
async fn a_high_watermark_without_its_chunk_is_an_error() {
    let mut h = harness();
    h.side.open_window(wm("run-1", 3, WatermarkKind::Low), vec![]);
    let Err(e) = h.side.close_window(3).await else { panic!("expected an error") };
    assert!(matches!(e, SourceError::Retryable(_)));
    assert!(e.to_string().contains("chunk 3 reached its high watermark but was never read"), "{e}");
}

#[test]
fn windows_touch_by_key_columns_or_whole_row() {
    let mut keyed = OpenWindow::new(wm("r", 1, WatermarkKind::Low), ());
    keyed.touch(&row(3));
    keyed.touch(&Row::from_pairs([("v", json!("no key column"))]));
    assert_eq!(keyed.window.touched(), 1);
    assert_eq!(keyed.window.reconcile(vec![(key_string(&[json!(3)]), 1), (key_string(&[json!(4)]), 2)]), vec![2]);
    let mut whole = OpenWindow::new(Watermark { key: vec![], ..wm("r", 1, WatermarkKind::Low) }, ());
    whole.touch(&row(3));
    assert!(whole.window.reconcile(vec![(key_string(row(3).values()), 1)]).is_empty());
}

#[tokio::test]
async fn the_readers_end_is_polled_awaited_and_mapped() {
    let h = harness();
    let outcome = h.outcome;
    let mut side = Some(h.side);
    assert!(try_reader_outcome(&mut side).is_none(), "still running");
    outcome.send(Ok(true)).unwrap();
    let polled = try_reader_outcome(&mut side).expect("ended");
    assert!(matches!(reader_finished(&mut side, polled), Ok(true)));
    assert!(side.is_none(), "the side is dropped once the reader ended");
    assert!(try_reader_outcome(&mut side).is_none(), "no reader: nothing to poll");
    let waited = tokio::time::timeout(Duration::from_millis(20), reader_outcome(&mut side)).await;
    assert!(waited.is_err(), "no reader: waits forever");

    let h = harness();
    let mut side = Some(h.side);
    h.outcome.send(Err(SourceError::Fatal("bad grant".into()))).unwrap();
    let outcome = reader_outcome(&mut side).await;
    assert!(matches!(reader_finished(&mut side, outcome), Err(SourceError::Fatal(m)) if m == "bad grant"));

    let h = harness();
    let mut side = Some(h.side);
    drop(h.outcome);
    assert!(matches!(try_reader_outcome(&mut side), Some(None)));
    let e = reader_finished(&mut side, None).unwrap_err();
    assert!(matches!(e, SourceError::Retryable(ref m) if m == "the snapshot reader stopped unexpectedly"));
}
