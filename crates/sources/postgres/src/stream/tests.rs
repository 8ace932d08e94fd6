//! The streamer's side of the DBLog method, driven by captured messages:
//! which rows a chunk emits, at which position, and when its progress may
//! be stored.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deltaforge_core::snapshot::{
    key_string, OpenWindow, PendingProgress, ReadKind, SnapshotMetrics, StreamSide, TableProgress, Watermark,
    WatermarkKind,
};
use deltaforge_core::{ChunkSender, Op, Position, Row, SchemaRegistry, SnapshotStore, SourceChunk, SourceContext};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::Streamer;
use crate::config::TablePattern;
use crate::position::{lsn_of, position};
use crate::snapshot::{ChunkMsg, XidSnapshot, WATERMARK_PREFIX};
use crate::transport::{Transport, TransportError, WireEvent};

struct FakeWire(VecDeque<WireEvent>);

#[async_trait]
impl Transport for FakeWire {
    async fn query(&mut self, _: &str) -> Result<Vec<Vec<Option<String>>>, TransportError> {
        Ok(Vec::new())
    }
    async fn start(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    fn try_recv(&mut self) -> Option<Result<WireEvent, TransportError>> {
        self.0.pop_front().map(Ok)
    }
    async fn recv(&mut self) -> Result<WireEvent, TransportError> {
        match self.0.pop_front() {
            Some(e) => Ok(e),
            None => std::future::pending().await,
        }
    }
    fn acknowledge(&self, _: u64) {}
}

fn watermark(run: &str, kind: WatermarkKind, lsn: u64) -> WireEvent {
    let wm = Watermark { run: run.into(), chunk: 1, kind, table: "public.t".into(), key: vec!["id".into()] };
    WireEvent::LogicalMessage {
        transactional: false,
        lsn,
        prefix: WATERMARK_PREFIX.into(),
        content: Bytes::from(serde_json::to_vec(&wm).unwrap()),
    }
}

fn relation() -> WireEvent {
    let mut m = vec![b'R'];
    m.extend_from_slice(&1u32.to_be_bytes());
    m.extend_from_slice(b"public\0t\0d");
    m.extend_from_slice(&2i16.to_be_bytes());
    m.push(1);
    m.extend_from_slice(b"id\0");
    m.extend_from_slice(&23u32.to_be_bytes());
    m.extend_from_slice(&(-1i32).to_be_bytes());
    m.push(0);
    m.extend_from_slice(b"v\0");
    m.extend_from_slice(&25u32.to_be_bytes());
    m.extend_from_slice(&(-1i32).to_be_bytes());
    WireEvent::Data { lsn: 0, data: Bytes::from(m) }
}

fn insert(lsn: u64, id: &str, v: &str) -> WireEvent {
    let mut m = vec![b'I'];
    m.extend_from_slice(&1u32.to_be_bytes());
    m.push(b'N');
    m.extend_from_slice(&2i16.to_be_bytes());
    for s in [id, v] {
        m.push(b't');
        m.extend_from_slice(&(s.len() as i32).to_be_bytes());
        m.extend_from_slice(s.as_bytes());
    }
    WireEvent::Data { lsn, data: Bytes::from(m) }
}

fn tx(xid: u32, commit: u64, body: Vec<WireEvent>) -> Vec<WireEvent> {
    let mut v = vec![WireEvent::Begin { final_lsn: commit, xid, commit_time: 0 }];
    v.extend(body);
    v.push(WireEvent::Commit { commit_lsn: commit, end_lsn: commit + 8, commit_time: 0 });
    v
}

/// Runs the streamer over `wire` with one pending chunk of rows 1, 2, 3;
/// returns the events and commits it sent, the verdict and the progress
/// handed over.
async fn drive(
    wire: Vec<WireEvent>,
    snapshot: XidSnapshot,
    until_commit: u64,
) -> (Vec<deltaforge_core::Event>, Vec<Position>, Option<bool>, Vec<PendingProgress>) {
    let run = "run-1".to_string();
    let (chunk_tx, chunks) = mpsc::channel(4);
    let (_outcome_tx, outcome) = oneshot::channel();
    let (verdict, verdict_rx) = oneshot::channel();
    let cols: deltaforge_core::Columns = vec![Arc::<str>::from("id"), Arc::<str>::from("v")].into();
    let rows: Vec<_> = (1..=3)
        .map(|i| (key_string(&[json!(i)]), Row::new(cols.clone(), vec![json!(i), json!(format!("old{i}"))])))
        .collect();
    let rows = tokio::spawn(std::future::ready(rows));
    let mut progress = TableProgress::start(ReadKind::Snapshot, None, Some(3));
    progress.chunk = 1;
    chunk_tx
        .send(ChunkMsg {
            chunk: 1,
            table: "public.t".into(),
            schema: "public".into(),
            table_name: "t".into(),
            description: Arc::new(json!({"columns": [
                {"name": "id", "type_oid": 23, "type_name": "int4", "type_modifier": -1, "key": true},
                {"name": "v", "type_oid": 25, "type_name": "text", "type_modifier": -1, "key": false},
            ], "replica_identity": "default"})),
            rows,
            snapshot,
            progress,
            verdict: Some(verdict),
        })
        .await
        .unwrap();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let mut streamer = Streamer::new("src".into(), vec![TablePattern::parse("public.t").unwrap()], None);
    streamer.snap = Some(StreamSide::new(run, chunks, outcome, SnapshotMetrics::new("p"), ptx));
    let storage = Arc::new(deltaforge_storage::MemoryBackend::new());
    let (tx, mut rx) = mpsc::channel::<SourceChunk>(64);
    let (_dtx, durable) = watch::channel(None);
    let shutdown = CancellationToken::new();
    let ctx = SourceContext {
        pipeline: "p".into(),
        tenant: "t".into(),
        resume_from: None,
        sender: ChunkSender::new(tx, 16),
        durable,
        shutdown: shutdown.clone(),
        schemas: SchemaRegistry::load(storage.clone(), "t").await.unwrap(),
        snapshots: SnapshotStore::new(storage, "p"),
    };
    let task = tokio::spawn(async move {
        let mut wire = FakeWire(wire.into());
        streamer.run(&mut wire, ctx).await
    });
    let (mut events, mut commits) = (Vec::new(), Vec::new());
    while !commits.iter().any(|p: &Position| lsn_of(p) == Some(until_commit)) {
        let c = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("more output").unwrap();
        events.extend(c.events);
        commits.extend(c.commits.into_iter().map(|c| c.position));
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let verdict = verdict_rx.await.ok();
    let mut stored = Vec::new();
    while let Ok(p) = prx.try_recv() {
        stored.push(p);
    }
    (events, commits, verdict, stored)
}

#[tokio::test]
async fn keys_changed_in_the_window_win_and_the_rest_is_read_at_the_high_watermark() {
    let mut wire = vec![relation(), watermark("run-1", WatermarkKind::Low, 100)];
    wire.extend(tx(7, 150, vec![insert(120, "2", "new")]));
    // Another run's watermark is ignored.
    wire.push(watermark("other-run", WatermarkKind::High, 180));
    wire.push(watermark("run-1", WatermarkKind::High, 200));
    wire.extend(tx(8, 250, vec![insert(220, "9", "after")]));
    let (events, commits, verdict, stored) = drive(wire, XidSnapshot { xmin: 5, xmax: 7, xip: vec![] }, 250).await;
    let ops: Vec<(Op, i64)> =
        events.iter().map(|e| (e.op, e.after.as_ref().unwrap().get("id").unwrap().as_i64().unwrap())).collect();
    assert_eq!(ops, vec![(Op::Create, 2), (Op::Read, 1), (Op::Read, 3), (Op::Create, 9)]);
    let high = position(200, None);
    assert_eq!(events[1].tx_position, high);
    assert_eq!((events[1].index, events[2].index), (0, 1));
    assert_eq!(events[1].after.as_ref().unwrap().get("v"), Some(&json!("old1")));
    assert!(commits.contains(&high), "{commits:?}");
    assert_eq!(verdict, Some(true));
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].position, high);
    assert_eq!(stored[0].progress.chunk, 1);
}

#[tokio::test]
async fn a_commit_before_the_low_watermark_not_yet_visible_makes_the_chunk_read_again() {
    // Transaction 7 reached the stream before the low watermark, but the
    // chunk's snapshot still saw it running: its rows may be stale.
    let mut wire = vec![relation()];
    wire.extend(tx(7, 90, vec![insert(80, "2", "new")]));
    wire.push(watermark("run-1", WatermarkKind::Low, 100));
    wire.push(watermark("run-1", WatermarkKind::High, 200));
    wire.extend(tx(8, 250, vec![insert(220, "9", "after")]));
    let (events, _, verdict, stored) = drive(wire, XidSnapshot { xmin: 7, xmax: 9, xip: vec![7] }, 250).await;
    assert!(events.iter().all(|e| e.op != Op::Read), "a stale chunk was emitted");
    assert_eq!(verdict, Some(false));
    assert!(stored.is_empty());
}

#[test]
fn windows_touch_by_key_columns_or_whole_row() {
    let row = Row::from_pairs([("id", serde_json::json!(3)), ("v", serde_json::json!("x"))]);
    let wm = Watermark {
        run: "r".into(),
        chunk: 1,
        kind: WatermarkKind::Low,
        table: "public.t".into(),
        key: vec!["id".into()],
    };
    let mut w = OpenWindow::new(wm.clone(), Vec::<u32>::new());
    w.touch(&row);
    assert_eq!(
        w.window.reconcile(vec![(key_string(&[serde_json::json!(3)]), 1), (key_string(&[serde_json::json!(4)]), 2)]),
        vec![2]
    );
    let mut whole = OpenWindow::new(Watermark { key: vec![], ..wm }, Vec::<u32>::new());
    whole.touch(&row);
    assert!(whole.window.reconcile(vec![(key_string(row.values()), 1)]).is_empty());
}
