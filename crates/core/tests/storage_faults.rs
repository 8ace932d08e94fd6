//! The coordinator and the dead-letter queue when storage misbehaves or
//! fills up: a checkpoint writer whose writes keep failing stops the run
//! (retryable, visible in the status), a full `block` dead-letter queue
//! does not hold up a shutdown, and concurrent pushes into a full
//! `drop_oldest` queue drop exactly one letter each.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_core::testing::{EventBuilder, Seq};
use deltaforge_core::*;
use deltaforge_storage::{CasOutcome, LogEntry, MemoryBackend, QueueItem, StorageBackend, StorageError, Versioned};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Emits one single-event transaction every 10 ms, forever.
struct TickingSource;

#[async_trait]
impl Source for TickingSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<(), SourceError> {
        let mut seq = 0;
        while !ctx.shutdown.is_cancelled() {
            seq += 1;
            ctx.sender.push(EventBuilder::new(seq).source_id("src").tx(seq).build()).await?;
            ctx.sender.commit(Seq::at(seq)).await?;
            ctx.sender.flush().await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// Counts the events it acknowledges; rejects every event when `poison`.
#[derive(Clone, Default)]
struct CountingSink {
    delivered: Arc<AtomicU64>,
    poison: bool,
}

#[async_trait]
impl Sink for CountingSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if self.poison {
            let rejected = (0..events.len()).map(|index| RejectedEvent { index, reason: "poison".into() }).collect();
            return Err(SinkError::Rejected(rejected));
        }
        self.delivered.fetch_add(events.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

/// Memory storage whose checkpoint writes fail while `failing`, and whose
/// queue peeks yield first (so that concurrent pushers interleave).
#[derive(Default)]
struct FaultyStorage {
    inner: MemoryBackend,
    failing: AtomicBool,
    checkpoint_failures: AtomicU64,
    queue_acks: AtomicU64,
}

#[async_trait]
impl StorageBackend for FaultyStorage {
    fn kind(&self) -> &'static str {
        "faulty"
    }
    async fn kv_get(&self, n: &str, k: &str) -> deltaforge_storage::Result<Option<String>> {
        self.inner.kv_get(n, k).await
    }
    async fn kv_put(&self, n: &str, k: &str, v: &str, ttl: Option<Duration>) -> deltaforge_storage::Result<()> {
        if n == "checkpoints" && self.failing.load(Ordering::SeqCst) {
            self.checkpoint_failures.fetch_add(1, Ordering::SeqCst);
            return Err(StorageError::backend("kv_put checkpoints", std::io::Error::other("disk on fire (test)")));
        }
        self.inner.kv_put(n, k, v, ttl).await
    }
    async fn kv_delete(&self, n: &str, k: &str) -> deltaforge_storage::Result<bool> {
        self.inner.kv_delete(n, k).await
    }
    async fn kv_list(&self, n: &str, p: &str) -> deltaforge_storage::Result<Vec<(String, String)>> {
        self.inner.kv_list(n, p).await
    }
    async fn log_append(&self, n: &str, k: &str, v: &str) -> deltaforge_storage::Result<u64> {
        self.inner.log_append(n, k, v).await
    }
    async fn log_read(&self, n: &str, p: &str, a: u64) -> deltaforge_storage::Result<Vec<LogEntry>> {
        self.inner.log_read(n, p, a).await
    }
    async fn slot_get(&self, n: &str, k: &str) -> deltaforge_storage::Result<Option<Versioned>> {
        self.inner.slot_get(n, k).await
    }
    async fn slot_cas(&self, n: &str, k: &str, e: Option<u64>, v: &str) -> deltaforge_storage::Result<CasOutcome> {
        self.inner.slot_cas(n, k, e, v).await
    }
    async fn slot_delete(&self, n: &str, k: &str) -> deltaforge_storage::Result<bool> {
        self.inner.slot_delete(n, k).await
    }
    async fn queue_push(&self, n: &str, k: &str, v: &str, c: u64) -> deltaforge_storage::Result<u64> {
        self.inner.queue_push(n, k, v, c).await
    }
    async fn queue_peek(&self, n: &str, k: &str, l: usize) -> deltaforge_storage::Result<Vec<QueueItem>> {
        let items = self.inner.queue_peek(n, k, l).await;
        // Let every other pusher run between the peek and the ack.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        items
    }
    async fn queue_ack(&self, n: &str, k: &str, id: u64) -> deltaforge_storage::Result<bool> {
        self.queue_acks.fetch_add(1, Ordering::SeqCst);
        self.inner.queue_ack(n, k, id).await
    }
    async fn queue_len(&self, n: &str, k: &str) -> deltaforge_storage::Result<u64> {
        self.inner.queue_len(n, k).await
    }
}

fn pipeline(storage: Arc<dyn StorageBackend>, sink: CountingSink) -> Pipeline {
    Pipeline {
        name: "p".into(),
        tenant: "t".into(),
        source_id: "src".into(),
        source: Box::new(TickingSource),
        processors: vec![],
        sinks: vec![SinkSlot {
            id: "s".into(),
            required: true,
            delivery: DeliveryConfig {
                timeout: Duration::from_secs(5),
                initial_backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                max_attempts: 3,
            },
            sink: Box::new(sink),
        }],
        batch: BatchConfig { max_events: 10, max_wait: Duration::from_millis(5), ..BatchConfig::default() },
        policy: CommitPolicy::All,
        storage,
        shutdown_grace: Duration::from_millis(300),
        status: None,
        dlq: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_dead_checkpoint_writer_stops_the_run_with_a_retryable_error() {
    let storage = Arc::new(FaultyStorage::default());
    let sink = CountingSink::default();
    let mut p = pipeline(storage.clone(), sink.clone());
    let (status_tx, status_rx) = watch::channel(PipelineStatus::default());
    p.status = Some(status_tx);
    let run = tokio::spawn(p.run(CancellationToken::new()));
    // Let a few checkpoints through, then break the storage.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(status_rx.borrow().checkpoint.is_some(), "checkpoints are written while the storage works");
    storage.failing.store(true, Ordering::SeqCst);
    let broke_at = tokio::time::Instant::now();
    // Before the fix the writer ended silently and the run delivered on forever.
    let ended = tokio::time::timeout(Duration::from_secs(120), run).await;
    let err = ended.expect("the run must stop once the checkpoint writer gives up").unwrap().unwrap_err();
    let took = broke_at.elapsed();
    assert!(matches!(err, PipelineError::CheckpointWriter(_)), "{err:?}");
    assert!(err.is_retryable(), "a storage failure is retryable: {err}");
    assert!(err.to_string().contains("disk on fire"), "{err}");
    assert_eq!(storage.checkpoint_failures.load(Ordering::SeqCst), 8, "eight attempts, then the writer gives up");
    // The retries back off for about 9.5 s; the run stops right after.
    assert!(took < Duration::from_secs(12), "stopped {took:?} after the storage broke");
    let last_error = status_rx.borrow().last_error.clone().expect("the status shows the failure");
    assert!(last_error.contains("checkpoint writer"), "{last_error}");
    // Nothing is delivered after the run ended.
    let delivered = sink.delivered.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.delivered.load(Ordering::SeqCst), delivered);
}

#[tokio::test]
async fn shutdown_with_a_full_blocking_dead_letter_queue_completes() {
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let mut p = pipeline(storage.clone(), CountingSink { poison: true, ..CountingSink::default() });
    p.dlq = Some(DlqConfig { capacity: 2, overflow: DlqOverflow::Block });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(p.run(shutdown.clone()));
    // Wait until the queue is full and a push blocks.
    let queue = DeadLetterQueue::new(storage.clone(), "p", DlqConfig::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.count().await.unwrap() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the queue never filled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let asked = std::time::Instant::now();
    shutdown.cancel();
    // Before the fix the sink worker slept in the push forever and the run never ended.
    let ended = tokio::time::timeout(Duration::from_secs(10), run).await;
    ended.expect("shutdown must complete with a full `block` queue").unwrap().unwrap();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?} (grace 300 ms)");
    assert_eq!(queue.count().await.unwrap(), 2, "the blocked letter was not stored, nor anything dropped");
    // Its batch was not acknowledged, so the checkpoint is before it.
    let cp = CheckpointStore::new(storage).load("src").await.unwrap();
    assert!(cp.map(|c| c.position.get::<Seq>().unwrap().0 <= 2).unwrap_or(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pushes_into_a_full_drop_oldest_queue_drop_one_letter_each() {
    const CAPACITY: u64 = 5;
    const PUSHERS: u64 = 24;
    let storage = Arc::new(FaultyStorage::default());
    let queue =
        DeadLetterQueue::new(storage.clone(), "p", DlqConfig { capacity: CAPACITY, overflow: DlqOverflow::DropOldest });
    for i in 1..=CAPACITY {
        assert_eq!(queue.push(&EventBuilder::new(i).build(), "old", None, None).await.unwrap(), 0);
    }
    let mut tasks = Vec::new();
    for i in 0..PUSHERS {
        // Clones, as the sinks and the processor stage hold them.
        let q = queue.clone();
        tasks.push(tokio::spawn(async move {
            q.push(&EventBuilder::new(1000 + i).build(), "new", None, None).await.unwrap()
        }));
    }
    let mut reported = 0;
    for t in tasks {
        let dropped = t.await.unwrap();
        assert_eq!(dropped, 1, "each push into the full queue drops exactly one letter");
        reported += dropped;
    }
    assert_eq!(reported, PUSHERS);
    // Every ack issued removed a letter: no pusher acked a letter another had dropped.
    assert_eq!(storage.queue_acks.load(Ordering::SeqCst), PUSHERS);
    let left: Vec<u64> = queue
        .list(usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, l)| l.event["after"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(left.len() as u64, CAPACITY);
    assert!(left.iter().all(|id| *id >= 1000), "the old letters were dropped first: {left:?}");
    let mut unique = left.clone();
    unique.dedup();
    assert_eq!(unique, left);
}
