//! The Kafka sink: enqueues a whole batch into librdkafka, then waits for
//! every delivery report; with `exactly_once`, wraps each batch in a Kafka
//! transaction.
//!
//! This module owns the producer, delivery tracking, error classification
//! and the transaction state machine. It must never return `Ok` before
//! every message of the batch was acknowledged by the broker (`acks=all`)
//! — or, with `exactly_once`, before the transaction committed — because
//! the checkpoint is written right after.
//!
//! Delivery tracking is hand-written on a [`ThreadedProducer`] rather than
//! rdkafka's `FutureProducer`: a per-batch counter with a generation number
//! as the delivery opaque costs no allocation per message (the future
//! producer allocates a oneshot channel per message), and reports of an
//! abandoned earlier attempt (timed out by the coordinator) are recognised
//! by their generation and ignored.
//!
//! Transactions use librdkafka's blocking calls (`init_transactions`,
//! `commit_transaction`, `abort_transaction`) on the blocking pool. The
//! transaction state lives behind an async mutex whose owned guard travels
//! into the blocking task, so that a delivery attempt cancelled by the
//! coordinator's timeout can never leave the state half-updated: the next
//! attempt waits for the guard and sees exactly what happened (an open
//! transaction is aborted; a commit that succeeded late is recognised and
//! not repeated).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deltaforge_core::{Event, RejectedEvent, Sink, SinkError};
use deltaforge_encoding::{Envelope, Template};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;
use tokio::sync::{Notify, OwnedMutexGuard};

use crate::config::{is_secret, KafkaConfig};
use crate::message::{Encoded, MessageBuilder};
use crate::progress::{self, Marker};

/// Header carrying the event's idempotency key on every message (as the
/// Redis sink's `id` field and NATS's `Nats-Msg-Id` do), so consumers can
/// deduplicate whichever envelope the value uses.
pub const ID_HEADER: &str = "id";

/// Time limit of one blocking transaction call (init, commit, abort) and of
/// reading the progress marker.
const OP_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a Kafka sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The config is invalid.
    #[error("kafka sink config: {field}: {message}")]
    Config {
        /// The field at fault.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// librdkafka refused a property (its value is never shown: it may be a secret).
    #[error("kafka sink: librdkafka rejected client property `{property}`: {reason}; fix it in client_conf")]
    Property {
        /// The property name.
        property: String,
        /// librdkafka's reason.
        reason: String,
    },
    /// The client could not be created.
    #[error("kafka sink: cannot create the Kafka client: {0}")]
    Client(String),
}

impl From<BuildError> for SinkError {
    fn from(e: BuildError) -> Self {
        SinkError::Fatal(e.to_string())
    }
}

fn creation_error(e: KafkaError) -> BuildError {
    match e {
        KafkaError::ClientConfig(_, reason, property, _value) => {
            let reason = if is_secret(&property) { "invalid value".to_string() } else { reason };
            BuildError::Property { property, reason }
        }
        other => BuildError::Client(other.to_string()),
    }
}

/// Delivery state of the batch in flight.
#[derive(Default)]
struct Tracking {
    /// Generation of the current batch; reports of other generations are stale.
    generation: usize,
    /// Messages of the current batch without a report yet.
    pending: usize,
    /// Messages of the current batch that failed for another reason than
    /// their own content.
    failed: usize,
    /// The first such failure, with its topic.
    first: Option<(KafkaError, String)>,
    /// Messages refused for their own fault: (message index, reason).
    rejected: Vec<(u32, String)>,
}

/// Outcome of a batch's delivery reports.
struct Reports {
    failed: usize,
    first: Option<(KafkaError, String)>,
    rejected: Vec<(u32, String)>,
}

/// The delivery opaque: the batch generation in the high half, the
/// message's index in the batch in the low half.
fn opaque(generation: u32, index: u32) -> usize {
    (((generation as u64) << 32) | index as u64) as usize
}

fn split_opaque(opaque: usize) -> (u32, u32) {
    (((opaque as u64) >> 32) as u32, opaque as u32)
}

/// True for errors caused by the message itself (retrying cannot help,
/// but the other messages of the batch are fine): a dead-letter queue
/// can take the event.
fn own_fault(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// Producer context: counts delivery reports and routes librdkafka's logs
/// to `tracing`.
#[derive(Default)]
pub struct Context {
    state: Mutex<Tracking>,
    done: Notify,
}

impl Context {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tracking> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a batch of `n` messages; returns its generation.
    fn start(&self, n: usize) -> u32 {
        let mut s = self.lock();
        s.generation = s.generation.wrapping_add(1) & 0xFFFF_FFFF;
        s.pending = n;
        s.failed = 0;
        s.first = None;
        s.rejected.clear();
        s.generation as u32
    }

    /// Records the outcome of message `index` of batch `generation`.
    fn report(&self, generation: u32, index: u32, result: Result<(), (&KafkaError, &str)>) {
        let mut s = self.lock();
        if s.generation != generation as usize || s.pending == 0 {
            return;
        }
        s.pending -= 1;
        match result {
            Ok(()) => {}
            Err((e, _)) if own_fault(e) => s.rejected.push((index, e.to_string())),
            Err((e, topic)) => {
                s.failed += 1;
                if s.first.is_none() {
                    s.first = Some((e.clone(), topic.to_string()));
                }
            }
        }
        if s.pending == 0 {
            self.done.notify_one();
        }
    }

    /// Waits until every message of the current batch has a report.
    async fn wait(&self) -> Reports {
        loop {
            let notified = self.done.notified();
            {
                let mut s = self.lock();
                if s.pending == 0 {
                    return Reports {
                        failed: s.failed,
                        first: s.first.take(),
                        rejected: std::mem::take(&mut s.rejected),
                    };
                }
            }
            notified.await;
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::warn!(target: "librdkafka", "{fac}: {msg}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", "{fac}: {msg}"),
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "kafka client error: {error}: {reason}");
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (generation, index) = split_opaque(opaque);
        match result {
            Ok(_) => self.report(generation, index, Ok(())),
            Err((e, msg)) => self.report(generation, index, Err((e, msg.topic()))),
        }
    }
}

type KafkaProducer = ThreadedProducer<Context>;

/// Classifies a Kafka error: what retrying cannot fix is fatal, with the fix
/// in the message; everything else (broker down, timeouts, leader moves) is
/// retryable.
pub fn classify(e: &KafkaError, topic: &str, transactional_id: Option<&str>) -> SinkError {
    use RDKafkaErrorCode as C;
    let code = e.rdkafka_error_code();
    let fatal = |m: String| SinkError::Fatal(format!("kafka: {m} ({e})"));
    match code {
        Some(C::TopicAuthorizationFailed) => {
            fatal(format!("not authorized to write to topic {topic:?}: grant WRITE on it to this client's principal"))
        }
        Some(C::ClusterAuthorizationFailed) => {
            fatal("not authorized on the cluster: the idempotent producer needs IDEMPOTENT_WRITE (or set enable.idempotence=false in client_conf)".into())
        }
        Some(C::TransactionalIdAuthorizationFailed) => fatal(format!(
            "not authorized to use transactional id {:?}: grant WRITE/DESCRIBE on it",
            transactional_id.unwrap_or("")
        )),
        Some(C::SaslAuthenticationFailed | C::Authentication) => {
            fatal("authentication failed: check the SASL/SSL settings in client_conf".into())
        }
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => fatal(format!(
            "topic {topic:?} does not exist and the broker does not create topics on demand \
             (auto.create.topics.enable=false): create the topic, or fix the `topic` template"
        )),
        Some(C::InvalidTopic) => fatal(format!("{topic:?} is not a valid topic name: fix the `topic` template")),
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize) => fatal(format!(
            "a message for topic {topic:?} is larger than allowed: raise message.max.bytes in client_conf and \
             max.message.bytes on the topic"
        )),
        Some(C::Fenced | C::ProducerFenced | C::InvalidProducerEpoch | C::TransactionCoordinatorFenced) => fatal(format!(
            "producer fenced: another producer with transactional id {:?} took over (a second instance of this \
             pipeline, or another sink with the same transactional_id); stop the other instance or give this sink \
             its own transactional_id",
            transactional_id.unwrap_or("")
        )),
        Some(
            C::PolicyViolation
            | C::InvalidRecord
            | C::UnsupportedVersion
            | C::UnsupportedForMessageFormat
            | C::InvalidRequiredAcks
            | C::InvalidConfig
            | C::InvalidTransactionTimeout
            | C::UnsupportedFeature,
        ) => fatal(format!("the broker rejected the write to {topic:?}")),
        _ => SinkError::Retryable(format!("kafka: delivery to {topic:?} failed: {e}")),
    }
}

/// A batch's identity: the same events retried give the same fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    first: String,
    last: String,
    len: usize,
}

impl Fingerprint {
    fn of(events: &[Event]) -> Option<Fingerprint> {
        Some(Fingerprint {
            first: events.first()?.idempotency_key(),
            last: events.last()?.idempotency_key(),
            len: events.len(),
        })
    }
}

/// Where the current Kafka transaction stands.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// No transaction open.
    Idle,
    /// A transaction is open (its batch may be incomplete): abort it first.
    Open,
    /// Commit failed with a retriable error: retry the commit first.
    CommitPending(Fingerprint),
}

/// Transaction state, behind an async mutex (see the module doc).
struct TxnState {
    initialized: bool,
    marker_read: bool,
    phase: Phase,
    /// Last committed marker read at startup; events it covers are skipped.
    marker: Option<Marker>,
    /// The batch of the last commit (a retry of it is acknowledged at once).
    last_committed: Option<Fingerprint>,
}

struct Eos {
    transactional_id: String,
    progress_topic: String,
    topic_ready: bool,
    state: Arc<tokio::sync::Mutex<TxnState>>,
}

/// A Kafka sink (`type: kafka`).
pub struct KafkaSink {
    builder: MessageBuilder,
    producer_config: ClientConfig,
    base_config: ClientConfig,
    producer: Arc<KafkaProducer>,
    enc: Encoded,
    eos: Option<Eos>,
}

fn create_producer(config: &ClientConfig) -> Result<KafkaProducer, BuildError> {
    config.create_with_context(Context::default()).map_err(creation_error)
}

/// Runs `f` with the transaction state on the blocking pool; the guard
/// comes back with the result.
async fn blocking<R: Send + 'static>(
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
fn commit_blocking(t: &mut TxnState, p: &KafkaProducer, fp: Option<Fingerprint>) -> Result<(), KafkaError> {
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

fn abort_blocking(t: &mut TxnState, p: &KafkaProducer) -> Result<(), KafkaError> {
    p.abort_transaction(OP_TIMEOUT)?;
    t.phase = Phase::Idle;
    Ok(())
}

impl KafkaSink {
    /// Builds the sink (creates the producer; connects in the background).
    ///
    /// `pipeline` and `sink_id` name the default transactional id.
    pub fn new(cfg: KafkaConfig, pipeline: &str, sink_id: &str) -> Result<Self, BuildError> {
        let conf_err = |(field, message): (String, String)| BuildError::Config { field, message };
        cfg.check().map_err(conf_err)?;
        let tpl = |field: &str, t: &str| {
            Template::parse(t).map_err(|e| BuildError::Config { field: field.into(), message: e.0 })
        };
        let builder = MessageBuilder {
            topic: tpl("topic", &cfg.topic)?,
            key: cfg.key.as_deref().map(|k| tpl("key", k)).transpose()?,
            envelope: cfg.envelope,
            tombstones: cfg.tombstones,
            split_key_changes: cfg.split_key_changes.unwrap_or(cfg.envelope == Envelope::Debezium),
        };
        let eos = cfg.exactly_once.then(|| {
            let transactional_id = cfg.transactional_id(pipeline, sink_id);
            Eos {
                progress_topic: cfg.progress_topic(&transactional_id),
                transactional_id,
                topic_ready: false,
                state: Arc::new(tokio::sync::Mutex::new(TxnState {
                    initialized: false,
                    marker_read: false,
                    phase: Phase::Idle,
                    marker: None,
                    last_committed: None,
                })),
            }
        });
        let producer_config =
            cfg.producer_config(eos.as_ref().map(|e| e.transactional_id.as_str())).map_err(conf_err)?;
        let base_config = cfg.base_client_config().map_err(conf_err)?;
        let producer = Arc::new(create_producer(&producer_config)?);
        Ok(KafkaSink { builder, producer_config, base_config, producer, enc: Encoded::default(), eos })
    }

    /// The transactional id (`exactly_once` only).
    pub fn transactional_id(&self) -> Option<&str> {
        self.eos.as_ref().map(|e| e.transactional_id.as_str())
    }

    /// Enqueues every encoded message (plus an optional extra one) under a
    /// new generation; waits on a full queue instead of failing.
    async fn enqueue_all(&self, extra: Option<(&str, &[u8], &[u8])>) -> Result<(), (KafkaError, String)> {
        let ctx = self.producer.context();
        let total = self.enc.messages.len() + usize::from(extra.is_some());
        let generation = ctx.start(total);
        for (i, m) in self.enc.messages.iter().enumerate() {
            let topic = self.enc.topic(m);
            let key = self.enc.key(m);
            let value = self.enc.value(m);
            self.send_one(topic, key, value, Some(self.enc.id(m)), opaque(generation, i as u32)).await?;
        }
        if let Some((topic, key, value)) = extra {
            let i = self.enc.messages.len() as u32;
            self.send_one(topic, Some(key), Some(value), None, opaque(generation, i)).await?;
        }
        Ok(())
    }

    /// Enqueues one message, with the event's idempotency key as header
    /// [`ID_HEADER`] (consumers deduplicate on it whatever the envelope). A
    /// message librdkafka refuses for its own content (too large) is
    /// reported as rejected, not as a batch failure.
    async fn send_one(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        id: Option<&[u8]>,
        opaque: usize,
    ) -> Result<(), (KafkaError, String)> {
        loop {
            let mut rec: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, opaque);
            if let Some(id) = id {
                rec =
                    rec.headers(OwnedHeaders::new_with_capacity(1).insert(Header { key: ID_HEADER, value: Some(id) }));
            }
            if let Some(k) = key {
                rec = rec.key(k);
            }
            if let Some(v) = value {
                rec = rec.payload(v);
            }
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: let the broker drain it.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) if own_fault(&e) => {
                    let (generation, index) = split_opaque(opaque);
                    self.producer.context().report(generation, index, Err((&e, topic)));
                    return Ok(());
                }
                Err((e, _)) => return Err((e, topic.to_string())),
            }
        }
    }

    /// Replaces a producer that librdkafka declared unusable (idempotent
    /// producer fatal error); the old one is dropped off the runtime.
    fn rebuild_producer(&mut self) -> Result<(), SinkError> {
        let fresh = Arc::new(create_producer(&self.producer_config)?);
        let old = std::mem::replace(&mut self.producer, fresh);
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    async fn deliver_plain(&mut self, events: &[Event]) -> Result<(), SinkError> {
        self.enc.clear();
        self.builder.encode(events, &mut self.enc);
        let failure = match self.enqueue_all(None).await {
            Err(f) => Some(f),
            Ok(()) => {
                let r = self.producer.context().wait().await;
                if r.failed == 0 && r.rejected.is_empty() {
                    return Ok(());
                }
                if r.failed == 0 {
                    return Err(SinkError::Rejected(self.rejected_events(&r.rejected)));
                }
                tracing::warn!(
                    failed = r.failed,
                    of = self.enc.messages.len(),
                    "kafka: messages of the batch were not acknowledged"
                );
                r.first
            }
        };
        let err = match &failure {
            Some((e, topic)) => classify(e, topic, None),
            None => SinkError::Retryable("kafka: delivery failed".into()),
        };
        if matches!(err, SinkError::Fatal(_)) {
            return Err(err);
        }
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(
                "kafka: the idempotent producer hit a fatal error ({code:?}: {reason}); starting a new producer"
            );
            self.rebuild_producer()?;
        }
        Err(err)
    }

    /// Maps rejected messages to the events they carry (a delete and its
    /// tombstone count once).
    fn rejected_events(&self, rejected: &[(u32, String)]) -> Vec<RejectedEvent> {
        let mut out: Vec<RejectedEvent> = Vec::new();
        for (msg, reason) in rejected {
            let Some(m) = self.enc.messages.get(*msg as usize) else { continue };
            let index = m.event as usize;
            if !out.iter().any(|r| r.index == index) {
                let reason = format!("kafka refused the message for topic {:?}: {reason}", self.enc.topic(m));
                out.push(RejectedEvent { index, reason });
            }
        }
        out.sort_by_key(|r| r.index);
        out
    }

    /// Creates the progress topic (compacted, one partition) if missing.
    async fn ensure_progress_topic(&mut self) -> Result<(), SinkError> {
        let Some(eos) = self.eos.as_mut() else { return Ok(()) };
        if eos.topic_ready {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> =
            self.base_config.create().map_err(|e| SinkError::from(creation_error(e)))?;
        let topic = NewTopic::new(&eos.progress_topic, 1, TopicReplication::Fixed(-1)).set("cleanup.policy", "compact");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin.create_topics([&topic], &opts).await.map_err(|e| {
            SinkError::Retryable(format!("kafka: creating progress topic {:?}: {e}", eos.progress_topic))
        })?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    let e = KafkaError::AdminOp(code);
                    return Err(match classify(&e, &t, Some(&eos.transactional_id)) {
                        SinkError::Fatal(m) => {
                            SinkError::Fatal(format!("{m}; the exactly-once progress topic is set by `progress_topic`"))
                        }
                        SinkError::Retryable(m) => SinkError::Retryable(format!("creating progress topic {t:?}: {m}")),
                        rejected @ SinkError::Rejected(_) => rejected,
                    });
                }
            }
        }
        eos.topic_ready = true;
        Ok(())
    }

    fn txn_error(&self, e: &KafkaError, what: &str) -> SinkError {
        let id = self.transactional_id();
        if let KafkaError::Transaction(rd) = e {
            if matches!(
                rd.code(),
                RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
            ) {
                return classify(e, "", id);
            }
            if rd.is_fatal() {
                return SinkError::Fatal(format!(
                    "kafka: {what}: fatal transactional producer error for transactional id {:?}: {e}",
                    id.unwrap_or("")
                ));
            }
        }
        match classify(e, "", id) {
            SinkError::Fatal(m) => SinkError::Fatal(format!("{what}: {m}")),
            SinkError::Retryable(_) => SinkError::Retryable(format!("kafka: {what}: {e}")),
            rejected @ SinkError::Rejected(_) => rejected,
        }
    }

    async fn deliver_eos(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let Some(fp) = Fingerprint::of(events) else { return Ok(()) };
        let (state, txn_id, progress_topic) = {
            let eos = self.eos.as_ref().expect("exactly-once state");
            (eos.state.clone(), eos.transactional_id.clone(), eos.progress_topic.clone())
        };
        let mut g = state.lock_owned().await;
        if g.last_committed.as_ref() == Some(&fp) {
            return Ok(());
        }
        if !g.initialized || !g.marker_read {
            self.ensure_progress_topic().await?;
            let p = self.producer.clone();
            let base = self.base_config.clone();
            let (topic, key) = (progress_topic.clone(), txn_id.clone());
            let (g2, r) = blocking(g, move |t| -> Result<(), KafkaError> {
                if !t.initialized {
                    // Fences any earlier producer with this id and aborts its open transaction.
                    p.init_transactions(OP_TIMEOUT)?;
                    t.initialized = true;
                    t.phase = Phase::Idle;
                }
                t.marker = progress::read_last(&base, &topic, &key, OP_TIMEOUT)?;
                t.marker_read = true;
                Ok(())
            })
            .await?;
            g = g2;
            r.map_err(|e| self.txn_error(&e, "initialising transactions"))?;
            if let Some(m) = &g.marker {
                tracing::info!(transactional_id = %txn_id, "kafka: resuming after the last committed transaction, which carried event {}", m.event);
            }
        }
        match g.phase.clone() {
            Phase::Idle => {}
            Phase::CommitPending(pending) => {
                let p = self.producer.clone();
                let again = pending.clone();
                let (g2, r) = blocking(g, move |t| commit_blocking(t, &p, Some(again))).await?;
                g = g2;
                match r {
                    Ok(()) if pending == fp => return Ok(()),
                    Ok(()) => {}
                    Err(e) => return Err(self.txn_error(&e, "retrying a transaction commit")),
                }
            }
            Phase::Open => {
                let p = self.producer.clone();
                let (g2, r) = blocking(g, move |t| abort_blocking(t, &p)).await?;
                g = g2;
                r.map_err(|e| self.txn_error(&e, "aborting an unfinished transaction"))?;
            }
        }
        // Skip what a committed transaction already carried (replay after a crash).
        let skip = match &g.marker {
            Some(m) => events.iter().take_while(|e| m.covers(e)).count(),
            None => 0,
        };
        if skip == events.len() {
            tracing::info!(events = skip, "kafka: batch already committed by an earlier transaction; skipped");
            return Ok(());
        }
        let to_send = &events[skip..];
        let marker = serde_json::to_vec(&Marker::of(to_send.last().expect("non-empty")))
            .map_err(|e| SinkError::Fatal(format!("kafka: encoding the progress marker: {e}")))?;
        self.enc.clear();
        self.builder.encode(to_send, &mut self.enc);
        self.producer.begin_transaction().map_err(|e| self.txn_error(&e, "beginning a transaction"))?;
        g.phase = Phase::Open;
        let sent = match self.enqueue_all(Some((&progress_topic, txn_id.as_bytes(), &marker))).await {
            Err(f) => Err(f),
            Ok(()) => {
                let r = self.producer.context().wait().await;
                match (r.first, r.rejected.first()) {
                    (Some(first), _) => Err(first),
                    // In a transaction a refused message fails the whole
                    // batch (it is aborted): classified as fatal below.
                    (None, Some((msg, _))) => {
                        let topic = self.enc.messages.get(*msg as usize).map(|m| self.enc.topic(m).to_string());
                        Err((
                            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                            topic.unwrap_or_default(),
                        ))
                    }
                    (None, None) => Ok(()),
                }
            }
        };
        if let Err((e, topic)) = sent {
            let err = classify(&e, &topic, Some(&txn_id));
            let p = self.producer.clone();
            let (_g, r) = blocking(g, move |t| abort_blocking(t, &p)).await?;
            if let Err(abort) = r {
                tracing::warn!(
                    "kafka: aborting the failed transaction failed too (retried before the next one): {abort}"
                );
            }
            return Err(err);
        }
        let p = self.producer.clone();
        let (_g, r) = blocking(g, move |t| commit_blocking(t, &p, Some(fp))).await?;
        r.map_err(|e| self.txn_error(&e, "committing the transaction"))
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn deliver(&mut self, events: &[Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.eos.is_some() {
            self.deliver_eos(events).await
        } else {
            self.deliver_plain(events).await
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        let p = self.producer.clone();
        match &self.eos {
            None => tokio::task::spawn_blocking(move || p.flush(Duration::from_secs(10)))
                .await
                .map_err(|e| SinkError::Retryable(format!("kafka: flush task failed: {e}")))?
                .map_err(|e| SinkError::Retryable(format!("kafka: flushing at shutdown: {e}"))),
            Some(eos) => {
                let g = eos.state.clone().lock_owned().await;
                if g.phase == Phase::Idle {
                    return Ok(());
                }
                let (_g, r) = blocking(g, move |t| abort_blocking(t, &p)).await?;
                r.map_err(|e| SinkError::Retryable(format!("kafka: aborting the open transaction at shutdown: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let e = |c| KafkaError::MessageProduction(c);
        assert!(matches!(classify(&e(RDKafkaErrorCode::MessageTimedOut), "t", None), SinkError::Retryable(_)));
        assert!(matches!(classify(&e(RDKafkaErrorCode::AllBrokersDown), "t", None), SinkError::Retryable(_)));
        assert!(matches!(classify(&e(RDKafkaErrorCode::NotEnoughReplicas), "t", None), SinkError::Retryable(_)));
        match classify(&e(RDKafkaErrorCode::UnknownTopicOrPartition), "orders", None) {
            SinkError::Fatal(m) => {
                assert!(m.contains("\"orders\" does not exist") && m.contains("auto.create.topics.enable"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match classify(&e(RDKafkaErrorCode::TopicAuthorizationFailed), "orders", None) {
            SinkError::Fatal(m) => assert!(m.contains("not authorized to write to topic \"orders\""), "{m}"),
            other => panic!("{other:?}"),
        }
        match classify(&e(RDKafkaErrorCode::ProducerFenced), "", Some("deltaforge-p-k")) {
            SinkError::Fatal(m) => assert!(m.contains("fenced") && m.contains("deltaforge-p-k"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn opaque_carries_generation_and_index() {
        assert_eq!(split_opaque(opaque(7, 12345)), (7, 12345));
        assert_eq!(split_opaque(opaque(u32::MAX, u32::MAX)), (u32::MAX, u32::MAX));
    }

    #[tokio::test]
    async fn rejected_messages_map_to_their_events_once() {
        use deltaforge_core::{Op, Position, Row, SourceMeta};
        let cfg: KafkaConfig = serde_json::from_value(serde_json::json!({
            "brokers": "127.0.0.1:1", "topic": "t.${table}", "tombstones": true
        }))
        .unwrap();
        let mut sink = KafkaSink::new(cfg, "p", "k").unwrap();
        let ev = |op, id: u64| Event {
            op,
            before: (op == Op::Delete).then(|| Row::from_pairs([("id", serde_json::json!(id))])),
            after: (op != Op::Delete).then(|| Row::from_pairs([("id", serde_json::json!(id))])),
            source: SourceMeta {
                connector: "datagen",
                source_id: "dg".into(),
                pipeline: "p".into(),
                tenant: "t".into(),
                db: "d".into(),
                table: "orders".into(),
                position: Position::Datagen { seq: id },
                ts_ms: 0,
            },
            tx_id: None,
            tx_position: Position::Datagen { seq: id },
            index: 0,
            schema_version: None,
            key_columns: Some(vec!["id".into()].into()),
        };
        let events = [ev(Op::Create, 1), ev(Op::Delete, 2), ev(Op::Create, 3)];
        sink.builder.encode(&events, &mut sink.enc);
        // Messages: 0 = insert 1, 1 = delete 2, 2 = its tombstone, 3 = insert 3.
        let r = sink.rejected_events(&[(2, "too large".into()), (1, "too large".into()), (3, "too large".into())]);
        let idx: Vec<usize> = r.iter().map(|r| r.index).collect();
        assert_eq!(idx, [1, 2]);
        assert!(r[0].reason.contains("\"t.orders\"") && r[0].reason.contains("too large"), "{}", r[0].reason);
        assert!(own_fault(&KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)));
        assert!(!own_fault(&KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)));
    }

    #[test]
    fn bad_property_names_the_property_not_the_secret() {
        let cfg: KafkaConfig = serde_json::from_value(serde_json::json!({
            "brokers": "127.0.0.1:1", "topic": "t", "client_conf": {"sasl.password": "hunter2", "no.such.property": "x"}
        }))
        .unwrap();
        let err = KafkaSink::new(cfg, "p", "k").err().expect("librdkafka rejects the unknown property").to_string();
        assert!(err.contains("no.such.property"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
