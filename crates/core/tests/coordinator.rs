//! Coordinator behaviour with in-process sources, sinks and storage: commit
//! policies, failing sinks, transactions across batches, per-sink progress.
//! Every checkpoint write is checked against what the sinks acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_core::testing::{EventBuilder, Seq};
use deltaforge_core::*;
use deltaforge_storage::{CasOutcome, LogEntry, MemoryBackend, QueueItem, StorageBackend, Versioned};
use tokio_util::sync::CancellationToken;

/// Emits `count` events in transactions of `tx` events, positions = seq.
struct CountingSource {
    count: u64,
    tx: u64,
}

#[async_trait]
impl Source for CountingSource {
    async fn run(self: Box<Self>, mut ctx: SourceContext) -> Result<(), SourceError> {
        let mut seq = ctx.resume_from.as_ref().and_then(seq_of).unwrap_or(0);
        while seq < self.count && !ctx.shutdown.is_cancelled() {
            let end = (seq + self.tx).min(self.count);
            for (i, id) in (seq + 1..=end).enumerate() {
                ctx.sender.push(event(id, end, i as u32)).await?;
            }
            seq = end;
            ctx.sender.commit(Seq::at(seq)).await?;
        }
        ctx.sender.flush().await?;
        Ok(())
    }
}

fn event(id: u64, tx_end: u64, index: u32) -> Event {
    EventBuilder::new(id).source_id("src").tx(tx_end).index(index).build()
}

/// The counter of a test position.
fn seq_of(p: &Position) -> Option<u64> {
    p.get::<Seq>().map(|s| s.0)
}

/// A sink that records ids and can be told to fail.
#[derive(Clone, Default)]
struct TestSink {
    delivered: Arc<Mutex<Vec<u64>>>,
    /// Highest id delivered (for the invariant check).
    high: Arc<AtomicU64>,
    failing: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
}

#[async_trait]
impl Sink for TestSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(SinkError::Retryable("test sink is down".into()));
        }
        let mut d = self.delivered.lock().unwrap();
        for e in events {
            let id = e.after.as_ref().unwrap().get("id").unwrap().as_u64().unwrap();
            d.push(id);
            self.high.fetch_max(id, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Storage that checks every checkpoint write against a predicate.
struct CheckedStorage {
    inner: MemoryBackend,
    check: Box<dyn Fn(u64) -> Result<(), String> + Send + Sync>,
    violations: Mutex<Vec<String>>,
    writes: AtomicU64,
}

#[async_trait]
impl StorageBackend for CheckedStorage {
    fn kind(&self) -> &'static str {
        "checked"
    }
    async fn kv_get(&self, n: &str, k: &str) -> deltaforge_storage::Result<Option<String>> {
        self.inner.kv_get(n, k).await
    }
    async fn kv_put(&self, n: &str, k: &str, v: &str, ttl: Option<Duration>) -> deltaforge_storage::Result<()> {
        if n == "checkpoints" {
            let cp: Checkpoint = serde_json::from_str(v).unwrap();
            let seq = seq_of(&cp.position).expect("a test position");
            if let Err(m) = (self.check)(seq) {
                self.violations.lock().unwrap().push(m);
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
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
        self.inner.queue_peek(n, k, l).await
    }
    async fn queue_ack(&self, n: &str, k: &str, id: u64) -> deltaforge_storage::Result<bool> {
        self.inner.queue_ack(n, k, id).await
    }
    async fn queue_len(&self, n: &str, k: &str) -> deltaforge_storage::Result<u64> {
        self.inner.queue_len(n, k).await
    }
}

fn checked(check: impl Fn(u64) -> Result<(), String> + Send + Sync + 'static) -> Arc<CheckedStorage> {
    Arc::new(CheckedStorage {
        inner: MemoryBackend::new(),
        check: Box::new(check),
        violations: Mutex::new(Vec::new()),
        writes: AtomicU64::new(0),
    })
}

fn fast_delivery() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_attempts: 3,
    }
}

fn pipeline(
    storage: Arc<dyn StorageBackend>,
    count: u64,
    tx: u64,
    sinks: Vec<(&str, bool, TestSink)>,
    policy: CommitPolicy,
    max_events: usize,
) -> Pipeline {
    Pipeline {
        name: "p".into(),
        tenant: "t".into(),
        source_id: "src".into(),
        source: Box::new(CountingSource { count, tx }),
        processors: vec![],
        sinks: sinks
            .into_iter()
            .map(|(id, required, s)| SinkSlot { id: id.into(), required, delivery: fast_delivery(), sink: Box::new(s) })
            .collect(),
        batch: BatchConfig { max_events, max_wait: Duration::from_millis(5), ..BatchConfig::default() },
        policy,
        storage,
        shutdown_grace: Duration::from_secs(5),
        status: None,
        dlq: None,
    }
}

async fn stored_seq(storage: &Arc<dyn StorageBackend>) -> Option<u64> {
    match CheckpointStore::new(storage.clone()).load("src").await.unwrap() {
        Some(Checkpoint { position, .. }) => seq_of(&position),
        None => None,
    }
}

#[tokio::test]
async fn all_policy_never_checkpoints_past_a_failing_sink() {
    let a = TestSink::default();
    let b = TestSink::default();
    b.failing.store(true, Ordering::SeqCst);
    let (ha, hb) = (a.high.clone(), b.high.clone());
    let storage = checked(move |seq| {
        let min = ha.load(Ordering::SeqCst).min(hb.load(Ordering::SeqCst));
        if seq > min {
            Err(format!("checkpoint {seq} passes undelivered events (sinks delivered up to {min})"))
        } else {
            Ok(())
        }
    });
    let dyn_storage: Arc<dyn StorageBackend> = storage.clone();
    let p = pipeline(
        dyn_storage.clone(),
        5000,
        1,
        vec![("a", true, a.clone()), ("b", true, b.clone())],
        CommitPolicy::All,
        100,
    );
    let task = tokio::spawn(p.run(CancellationToken::new()));
    // While b is down, nothing may be checkpointed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.attempts.load(Ordering::SeqCst) >= 2, "the failing sink is retried");
    assert_eq!(stored_seq(&dyn_storage).await, None, "checkpoint advanced while a sink under `all` was failing");
    b.failing.store(false, Ordering::SeqCst);
    let summary = tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(5000)));
    assert!(storage.violations.lock().unwrap().is_empty(), "{:?}", storage.violations.lock().unwrap());
    assert_eq!(*b.delivered.lock().unwrap(), (1..=5000).collect::<Vec<_>>());
    assert_eq!(*a.delivered.lock().unwrap(), (1..=5000).collect::<Vec<_>>());
}

#[tokio::test]
async fn required_policy_advances_past_a_failing_optional_sink() {
    let req = TestSink::default();
    let opt = TestSink::default();
    opt.failing.store(true, Ordering::SeqCst);
    let hr = req.high.clone();
    let storage = checked(move |seq| {
        let d = hr.load(Ordering::SeqCst);
        if seq > d {
            Err(format!("checkpoint {seq} passes the required sink ({d})"))
        } else {
            Ok(())
        }
    });
    let dyn_storage: Arc<dyn StorageBackend> = storage.clone();
    let mut p = pipeline(
        dyn_storage.clone(),
        2000,
        1,
        vec![("req", true, req.clone()), ("opt", false, opt.clone())],
        CommitPolicy::Required,
        500,
    );
    let (status_tx, status) = tokio::sync::watch::channel(PipelineStatus::default());
    p.status = Some(status_tx);
    let summary =
        tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new())).await.unwrap().unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(2000)));
    assert_eq!(stored_seq(&dyn_storage).await, Some(2000));
    assert!(storage.violations.lock().unwrap().is_empty());
    assert!(opt.delivered.lock().unwrap().is_empty());
    assert!(opt.attempts.load(Ordering::SeqCst) >= 3, "the optional sink was retried before being given up");
    // The live status counts each sink's work as the metrics do.
    let counts = status.borrow().sinks.clone();
    assert_eq!(counts["req"], SinkCounts { delivered: 2000, errors: 0, dropped: 0 }, "{counts:?}");
    assert_eq!(counts["opt"].delivered, 0, "{counts:?}");
    assert_eq!(counts["opt"].errors, opt.attempts.load(Ordering::SeqCst), "every failed attempt counts once");
    assert!(counts["opt"].dropped >= 1, "the optional sink's batches were dropped: {counts:?}");
}

#[tokio::test]
async fn required_policy_blocks_on_a_failing_required_sink() {
    let req = TestSink::default();
    let opt = TestSink::default();
    req.failing.store(true, Ordering::SeqCst);
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let p = pipeline(
        storage.clone(),
        1000,
        1,
        vec![("req", true, req.clone()), ("opt", false, opt.clone())],
        CommitPolicy::Required,
        100,
    );
    let task = tokio::spawn(p.run(CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stored_seq(&storage).await, None);
    req.failing.store(false, Ordering::SeqCst);
    let summary = tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(1000)));
    assert_eq!(req.delivered.lock().unwrap().len(), 1000);
}

#[tokio::test]
async fn quorum_commits_with_enough_sinks() {
    let sinks: Vec<TestSink> = (0..3).map(|_| TestSink::default()).collect();
    sinks[2].failing.store(true, Ordering::SeqCst);
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let p = pipeline(
        storage.clone(),
        600,
        3,
        vec![("a", true, sinks[0].clone()), ("b", true, sinks[1].clone()), ("c", true, sinks[2].clone())],
        CommitPolicy::Quorum(2),
        100,
    );
    let summary =
        tokio::time::timeout(Duration::from_secs(20), p.run(CancellationToken::new())).await.unwrap().unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(600)));
    assert_eq!(sinks[0].delivered.lock().unwrap().len(), 600);
}

#[tokio::test]
async fn quorum_waits_when_too_few_sinks_ack() {
    let sinks: Vec<TestSink> = (0..3).map(|_| TestSink::default()).collect();
    sinks[1].failing.store(true, Ordering::SeqCst);
    sinks[2].failing.store(true, Ordering::SeqCst);
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let p = pipeline(
        storage.clone(),
        100,
        1,
        vec![("a", true, sinks[0].clone()), ("b", true, sinks[1].clone()), ("c", true, sinks[2].clone())],
        CommitPolicy::Quorum(2),
        10,
    );
    let task = tokio::spawn(p.run(CancellationToken::new()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stored_seq(&storage).await, None);
    sinks[1].failing.store(false, Ordering::SeqCst);
    let summary = tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(100)));
}

#[tokio::test]
async fn large_transactions_checkpoint_only_at_their_commit() {
    // Transactions of 250 events, batches of 100: a checkpoint must always
    // be a multiple of 250.
    let s = TestSink::default();
    let storage =
        checked(|seq| if seq % 250 == 0 { Ok(()) } else { Err(format!("checkpoint {seq} inside a transaction")) });
    let dyn_storage: Arc<dyn StorageBackend> = storage.clone();
    let p = pipeline(dyn_storage, 2500, 250, vec![("s", true, s.clone())], CommitPolicy::All, 100);
    let summary = p.run(CancellationToken::new()).await.unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(2500)));
    assert!(storage.writes.load(Ordering::SeqCst) >= 1);
    assert!(storage.violations.lock().unwrap().is_empty(), "{:?}", storage.violations.lock().unwrap());
    assert_eq!(s.delivered.lock().unwrap().len(), 2500);
}

#[tokio::test]
async fn resumes_after_the_checkpoint_and_skips_what_a_sink_already_has() {
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    // Pretend an earlier run checkpointed at 100, with sink `ahead` already at 200.
    let cp = Checkpoint {
        position: Seq::at(100),
        sinks: [("ahead".to_string(), Seq::at(200)), ("behind".to_string(), Seq::at(100))].into_iter().collect(),
        written_at: chrono::Utc::now(),
    };
    CheckpointStore::new(storage.clone()).save("src", &cp).await.unwrap();
    let ahead = TestSink::default();
    let behind = TestSink::default();
    let p = pipeline(
        storage.clone(),
        300,
        1,
        vec![("ahead", true, ahead.clone()), ("behind", true, behind.clone())],
        CommitPolicy::All,
        50,
    );
    let summary = p.run(CancellationToken::new()).await.unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(300)));
    assert_eq!(*behind.delivered.lock().unwrap(), (101..=300).collect::<Vec<_>>());
    assert_eq!(*ahead.delivered.lock().unwrap(), (201..=300).collect::<Vec<_>>());
    let stored = CheckpointStore::new(storage).load("src").await.unwrap().unwrap();
    assert_eq!(stored.sinks["ahead"], Seq::at(300));
}

#[tokio::test]
async fn shutdown_delivers_in_flight_events_and_checkpoints_them() {
    let s = TestSink::default();
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let p = pipeline(storage.clone(), u64::MAX, 1, vec![("s", true, s.clone())], CommitPolicy::All, 100);
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
    let delivered = s.delivered.lock().unwrap().clone();
    assert!(!delivered.is_empty());
    assert_eq!(delivered, (1..=delivered.len() as u64).collect::<Vec<_>>());
    assert_eq!(summary.checkpoint, Some(Seq::at(delivered.len() as u64)));
    assert_eq!(stored_seq(&storage).await, Some(delivered.len() as u64));
}

#[tokio::test]
async fn shutdown_with_a_dead_required_sink_abandons_and_keeps_the_checkpoint() {
    let s = TestSink::default();
    s.failing.store(true, Ordering::SeqCst);
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let mut p = pipeline(storage.clone(), 1000, 1, vec![("s", true, s.clone())], CommitPolicy::All, 100);
    p.shutdown_grace = Duration::from_millis(200);
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(stored_seq(&storage).await, None);
}

#[tokio::test]
async fn fatal_sink_error_stops_the_pipeline() {
    struct Fatal;
    #[async_trait]
    impl Sink for Fatal {
        async fn deliver(&mut self, _: &[Event]) -> Result<(), SinkError> {
            Err(SinkError::Fatal("bad credentials".into()))
        }
    }
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let mut p = pipeline(storage.clone(), u64::MAX, 1, vec![], CommitPolicy::All, 100);
    p.sinks = vec![SinkSlot { id: "f".into(), required: true, delivery: fast_delivery(), sink: Box::new(Fatal) }];
    let r = tokio::time::timeout(Duration::from_secs(10), p.run(CancellationToken::new())).await.unwrap();
    let err = r.unwrap_err();
    assert!(err.to_string().contains("bad credentials"), "{err}");
    assert_eq!(stored_seq(&storage).await, None);
}

/// Delivers every event except those whose id is a multiple of `every`,
/// which it rejects for their own fault.
#[derive(Clone, Default)]
struct PoisonSink {
    every: u64,
    inner: TestSink,
}

#[async_trait]
impl Sink for PoisonSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let id = |e: &Event| e.after.as_ref().unwrap().get("id").unwrap().as_u64().unwrap();
        let good: Vec<Event> = events.iter().filter(|e| id(e) % self.every != 0).cloned().collect();
        self.inner.deliver(&good).await?;
        let rejected: Vec<RejectedEvent> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| id(e) % self.every == 0)
            .map(|(index, e)| RejectedEvent { index, reason: format!("poison {}", id(e)) })
            .collect();
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Rejected(rejected))
        }
    }
}

async fn dlq_ids(storage: &Arc<dyn StorageBackend>) -> Vec<u64> {
    DeadLetterQueue::new(storage.clone(), "p", DlqConfig::default())
        .list(usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, l)| l.event["after"]["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn rejected_events_go_to_the_dead_letter_queue_and_the_rest_is_delivered() {
    let sink = PoisonSink { every: 100, inner: TestSink::default() };
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let mut p = pipeline(storage.clone(), 5000, 1, vec![], CommitPolicy::All, 300);
    p.sinks =
        vec![SinkSlot { id: "s".into(), required: true, delivery: fast_delivery(), sink: Box::new(sink.clone()) }];
    p.dlq = Some(DlqConfig::default());
    let summary = p.run(CancellationToken::new()).await.unwrap();
    assert_eq!(summary.checkpoint, Some(Seq::at(5000)));
    assert_eq!(dlq_ids(&storage).await, (1..=50).map(|i| i * 100).collect::<Vec<_>>());
    let delivered = sink.inner.delivered.lock().unwrap().clone();
    assert_eq!(delivered, (1..=5000).filter(|i| i % 100 != 0).collect::<Vec<_>>());
    let letter = &DeadLetterQueue::new(storage, "p", DlqConfig::default()).list(1).await.unwrap()[0].1;
    assert_eq!(letter.sink.as_deref(), Some("s"));
    assert_eq!(letter.error, "poison 100");
    assert_eq!(letter.position, Seq::at(100));
}

#[tokio::test]
async fn rejected_events_without_a_dead_letter_queue_stop_the_pipeline() {
    let sink = PoisonSink { every: 100, inner: TestSink::default() };
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let mut p = pipeline(storage.clone(), 5000, 1, vec![], CommitPolicy::All, 300);
    p.sinks = vec![SinkSlot { id: "s".into(), required: true, delivery: fast_delivery(), sink: Box::new(sink) }];
    let err = p.run(CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("no dead-letter"), "{err}");
    assert_eq!(stored_seq(&storage).await, None, "the batch with the rejected event must not be checkpointed");
}

#[tokio::test]
async fn a_full_dead_letter_queue_with_reject_stops_the_pipeline() {
    let sink = PoisonSink { every: 10, inner: TestSink::default() };
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let mut p = pipeline(storage.clone(), 1000, 1, vec![], CommitPolicy::All, 100);
    p.sinks = vec![SinkSlot { id: "s".into(), required: true, delivery: fast_delivery(), sink: Box::new(sink) }];
    p.dlq = Some(DlqConfig { capacity: 5, overflow: DlqOverflow::Reject });
    let err = p.run(CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("is full"), "{err}");
    assert_eq!(dlq_ids(&storage).await.len(), 5);
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_dead_letters() {
    let sink = PoisonSink { every: 10, inner: TestSink::default() };
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let mut p = pipeline(storage.clone(), 1000, 1, vec![], CommitPolicy::All, 100);
    p.sinks = vec![SinkSlot { id: "s".into(), required: true, delivery: fast_delivery(), sink: Box::new(sink) }];
    p.dlq = Some(DlqConfig { capacity: 5, overflow: DlqOverflow::DropOldest });
    p.run(CancellationToken::new()).await.unwrap();
    assert_eq!(dlq_ids(&storage).await, vec![960, 970, 980, 990, 1000]);
}

/// Fails on events whose id is a multiple of 7, naming the event.
struct PickyProcessor;

#[async_trait]
impl Processor for PickyProcessor {
    fn name(&self) -> &str {
        "picky"
    }
    async fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        for (i, e) in events.iter().enumerate() {
            let id = e.after.as_ref().unwrap().get("id").unwrap().as_u64().unwrap();
            if id % 7 == 0 {
                return Err(ProcessorError::event("picky", i, format!("cannot handle {id}")));
            }
        }
        Ok(events)
    }
}

#[tokio::test]
async fn processor_poison_events_are_dead_lettered() {
    let sink = TestSink::default();
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    let mut p = pipeline(storage.clone(), 100, 1, vec![("s", true, sink.clone())], CommitPolicy::All, 30);
    p.processors = vec![Box::new(PickyProcessor)];
    p.dlq = Some(DlqConfig::default());
    p.run(CancellationToken::new()).await.unwrap();
    assert_eq!(dlq_ids(&storage).await, (1..=14).map(|i| i * 7).collect::<Vec<_>>());
    assert_eq!(*sink.delivered.lock().unwrap(), (1..=100).filter(|i| i % 7 != 0).collect::<Vec<_>>());
    let letter = &DeadLetterQueue::new(storage, "p", DlqConfig::default()).list(1).await.unwrap()[0].1;
    assert_eq!(letter.processor.as_deref(), Some("picky"));
}

/// Fails the whole batch (not one event's fault) once it sees event `fail_at`.
struct FailingProcessor {
    fail_at: u64,
}

#[async_trait]
impl Processor for FailingProcessor {
    fn name(&self) -> &str {
        "failing"
    }

    async fn process(&mut self, events: Vec<Event>) -> Result<Vec<Event>, ProcessorError> {
        if events
            .iter()
            .any(|e| e.after.as_ref().and_then(|r| r.get("id")).and_then(|v| v.as_u64()) == Some(self.fail_at))
        {
            return Err(ProcessorError::batch("failing", "lookup service unavailable"));
        }
        Ok(events)
    }
}

#[tokio::test]
async fn a_processor_failing_a_batch_stops_the_pipeline_before_that_batch() {
    let sink = TestSink::default();
    let storage: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
    // One event per transaction and per batch: every batch carries its own commit.
    let mut p = pipeline(storage.clone(), 100, 1, vec![("s", true, sink.clone())], CommitPolicy::All, 1);
    p.processors = vec![Box::new(FailingProcessor { fail_at: 40 })];
    p.dlq = Some(DlqConfig::default());
    let err = p.run(CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("lookup service unavailable"), "{err}");
    let delivered = sink.delivered.lock().unwrap().clone();
    // Batches already processed when the failure arrives may or may not be
    // delivered; what reaches the sink is an in-order prefix ending before 40.
    assert_eq!(delivered, (1..=delivered.len() as u64).collect::<Vec<_>>());
    assert!(delivered.len() < 40, "nothing at or after the failing batch reaches the sink");
    let cp = stored_seq(&storage).await.unwrap_or(0);
    assert!(cp <= delivered.len() as u64, "the checkpoint ({cp}) never passes what the sink has");
    assert!(dlq_ids(&storage).await.is_empty(), "a batch-level failure is not an event's fault");
}
