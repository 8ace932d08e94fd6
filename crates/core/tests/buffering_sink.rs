//! The coordinator with a sink that gathers events across batches
//! (`Sink::held_batches`, `Sink::flush`): batches it holds free their place
//! in flight but are acknowledged only once durable, so no checkpoint ever
//! passes an event that is only in the sink's buffer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_core::testing::{EventBuilder, Seq};
use deltaforge_core::*;
use deltaforge_storage::{MemoryBackend, StorageBackend};
use tokio_util::sync::CancellationToken;

/// Emits `count` one-event transactions (positions = seq), then, when
/// `linger`, waits for shutdown instead of ending.
struct CountingSource {
    count: u64,
    linger: bool,
}

#[async_trait]
impl Source for CountingSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<(), SourceError> {
        let mut seq = ctx.resume_from.as_ref().and_then(|p| p.get::<Seq>()).map(|s| s.0).unwrap_or(0);
        while seq < self.count && !ctx.shutdown.is_cancelled() {
            seq += 1;
            ctx.sender.push(EventBuilder::new(seq).source_id("src").build()).await?;
            ctx.sender.commit(Seq::at(seq)).await?;
        }
        ctx.sender.flush().await?;
        if self.linger {
            ctx.shutdown.cancelled().await;
        }
        Ok(())
    }
}

/// Buffers events and "commits" them `roll` at a time (also in the middle
/// of a batch, as a file rolled over by size), or every buffered one on
/// `flush` when `flush_all_when_idle` or on drain.
#[derive(Clone, Default)]
struct BufferingSink {
    roll: usize,
    flush_all_when_idle: bool,
    /// Highest seq made durable.
    durable: Arc<AtomicU64>,
    committed: Arc<Mutex<Vec<u64>>>,
    buffer: Arc<Mutex<Vec<u64>>>,
    /// Per batch still holding events: how many of its events are buffered.
    holding: Arc<Mutex<Vec<usize>>>,
}

impl BufferingSink {
    fn commit(&self, n: usize) {
        let mut buf = self.buffer.lock().unwrap();
        let taken: Vec<u64> = buf.drain(..n).collect();
        if let Some(last) = taken.last() {
            self.durable.fetch_max(*last, Ordering::SeqCst);
        }
        self.committed.lock().unwrap().extend(taken);
        // The oldest batches lose their buffered events first.
        let mut left = n;
        let mut holding = self.holding.lock().unwrap();
        while left > 0 && !holding.is_empty() {
            let take = holding[0].min(left);
            holding[0] -= take;
            left -= take;
            if holding[0] == 0 {
                holding.remove(0);
            }
        }
    }
}

#[async_trait]
impl Sink for BufferingSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.holding.lock().unwrap().push(events.len());
        for e in events {
            self.buffer.lock().unwrap().push(e.after.as_ref().unwrap().get("id").unwrap().as_u64().unwrap());
            if self.buffer.lock().unwrap().len() == self.roll {
                self.commit(self.roll);
            }
        }
        Ok(())
    }

    fn held_batches(&self) -> usize {
        self.holding.lock().unwrap().len()
    }

    async fn flush(&mut self, drain: bool) -> Result<(), SinkError> {
        if drain || self.flush_all_when_idle {
            let n = self.buffer.lock().unwrap().len();
            self.commit(n);
        }
        Ok(())
    }
}

fn pipeline(storage: Arc<dyn StorageBackend>, source: CountingSource, sink: BufferingSink) -> Pipeline {
    Pipeline {
        name: "p".into(),
        tenant: "t".into(),
        source_id: "src".into(),
        source: Box::new(source),
        processors: vec![],
        sinks: vec![SinkSlot {
            id: "files".into(),
            required: true,
            delivery: DeliveryConfig::default(),
            sink: Box::new(sink),
        }],
        batch: BatchConfig { max_events: 100, max_wait: Duration::from_millis(5), ..BatchConfig::default() },
        policy: CommitPolicy::All,
        storage,
        shutdown_grace: Duration::from_secs(5),
        status: Some(tokio::sync::watch::channel(PipelineStatus::default()).0),
        dlq: None,
    }
}

async fn stored_seq(storage: &Arc<dyn StorageBackend>) -> Option<u64> {
    let cp = CheckpointStore::new(storage.clone()).load("src").await.unwrap()?;
    cp.position.get::<Seq>().map(|s| s.0)
}

#[tokio::test]
async fn held_batches_do_not_stall_the_pipeline_and_are_checkpointed_only_when_durable() {
    let sink = BufferingSink { roll: 300, ..BufferingSink::default() };
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    // Watch every stored checkpoint while the run goes on.
    let watcher = {
        let (storage, durable) = (storage.clone(), sink.durable.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..400 {
                if let Some(seq) = stored_seq(&storage).await {
                    let durable = durable.load(Ordering::SeqCst);
                    assert!(seq <= durable, "checkpoint {seq} passes the durable events (up to {durable})");
                    seen.push(seq);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            seen
        })
    };
    // max_inflight is 1 and a file takes 3 batches: without held batches
    // freeing their place this would never finish.
    let run = pipeline(storage.clone(), CountingSource { count: 5000, linger: false }, sink.clone());
    let summary =
        tokio::time::timeout(Duration::from_secs(20), run.run(CancellationToken::new())).await.unwrap().unwrap();
    // 5000 = 16 files of 300 and a tail of 200 made durable by the drain.
    assert_eq!(summary.checkpoint, Some(Seq::at(5000)));
    assert_eq!(*sink.committed.lock().unwrap(), (1..=5000).collect::<Vec<_>>());
    assert!(sink.buffer.lock().unwrap().is_empty());
    let seen = watcher.await.unwrap();
    assert!(seen.iter().all(|s| *s <= 5000));
}

#[tokio::test]
async fn an_idle_sink_is_flushed_without_new_batches() {
    // 150 events, far below a roll of 10 000: only the idle flush makes them
    // durable, and the checkpoint follows without a shutdown.
    let sink = BufferingSink { roll: 10_000, flush_all_when_idle: false, ..BufferingSink::default() };
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let shutdown = CancellationToken::new();
    let run = pipeline(storage.clone(), CountingSource { count: 150, linger: true }, sink.clone());
    let task = tokio::spawn(run.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(stored_seq(&storage).await, None, "nothing is durable, so nothing may be checkpointed");
    assert!(sink.held_batches() > 0);
    // The sink's own rule (an age limit) now allows a flush.
    let mut aged = sink.clone();
    aged.flush_all_when_idle = true;
    aged.flush(false).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stored_seq(&storage).await != Some(150) {
        assert!(tokio::time::Instant::now() < deadline, "checkpoint did not follow the flushed events");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(150)));
}

#[tokio::test]
async fn shutdown_drains_held_batches() {
    let sink = BufferingSink { roll: 10_000, ..BufferingSink::default() };
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let shutdown = CancellationToken::new();
    let run = pipeline(storage.clone(), CountingSource { count: 420, linger: true }, sink.clone());
    let task = tokio::spawn(run.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored_seq(&storage).await, None);
    shutdown.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(420)));
    assert_eq!(*sink.committed.lock().unwrap(), (1..=420).collect::<Vec<_>>());
}
