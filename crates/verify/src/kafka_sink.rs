//! The `kafka` sink's reader: the sink's topics (its `topic` template
//! rendered per verified table, see [`crate::stream_names`]) read from each
//! partition's first retained offset to the end they had when the read
//! started, as an [`EventLog`] indexed by [`IndexedSinkReader`]. A compacted
//! topic reads the same way (what is left is the latest record per key);
//! tombstones (null values) carry no row and are skipped. Records decode
//! with [`decode_record`] (native, CloudEvents, or Debezium with the `id`
//! header as the idempotency key), so a record produced twice is a
//! duplicate delivery and per-key order is checked within its partition.
//!
//! The client config is the sink's own (`brokers` + `client_conf`, through
//! [`KafkaConfig::base_client_config`]) plus consumer settings that commit
//! nothing: this module never joins the sink's consumers' groups with
//! offsets, never produces, and never prints `client_conf` values.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deltaforge_sink_kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::envelope::Delivered;
use crate::error::VerifyError;
use crate::event_index::{blocking, EventLog, IndexedSinkReader};
use crate::model::TableLayout;
use crate::record::decode_record;
use crate::sink_context::SinkContext;

/// Records per batch.
const BATCH: usize = 2_000;
/// How long the broker may stay silent before the read fails.
const STALL: Duration = Duration::from_secs(30);
/// Broker metadata and watermark requests.
const REQUEST: Duration = Duration::from_secs(15);

/// Reads a `kafka` sink.
pub type KafkaSinkReader = IndexedSinkReader<KafkaLog>;

impl KafkaSinkReader {
    /// A reader of the kafka sink of `ctx` with config `cfg`.
    pub fn new(ctx: &SinkContext, cfg: KafkaConfig) -> Result<Self, VerifyError> {
        let log = KafkaLog { ctx: ctx.clone(), cfg, consumer: None, ends: HashMap::new(), unreadable: 0 };
        IndexedSinkReader::with_log(&ctx.sink_id, log)
    }
}

/// The records of a kafka sink's topics.
pub struct KafkaLog {
    ctx: SinkContext,
    cfg: KafkaConfig,
    consumer: Option<BaseConsumer>,
    /// Per assigned partition, the offset its read ends at.
    ends: HashMap<(String, i32), i64>,
    unreadable: u64,
}

impl KafkaLog {
    fn err(&self, message: impl Into<String>) -> VerifyError {
        self.ctx.err(message)
    }

    fn open(&mut self, tables: &[TableLayout]) -> Result<(), VerifyError> {
        let topics = crate::stream_names::render(&self.cfg.topic, tables, &self.ctx.pipeline, &self.ctx.tenant)
            .map_err(|m| self.err(m))?;
        let mut conf = self.cfg.base_client_config().map_err(|p| self.err(format!("config: {p}")))?;
        conf.set("group.id", format!("deltaforge-verify-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = conf
            .create()
            .map_err(|e| self.err(format!("creating a Kafka consumer: {e} (check `brokers`, `client_conf`)")))?;
        let mut assignment = TopicPartitionList::new();
        self.ends.clear();
        for topic in &topics {
            let md = consumer.fetch_metadata(Some(topic), REQUEST).map_err(|e| {
                self.err(format!("reading metadata of topic {topic} from {}: {e}", self.cfg.brokers.joined()))
            })?;
            // A topic that does not exist has no partitions: nothing was
            // delivered for its tables.
            for p in md.topics().iter().flat_map(|t| t.partitions()) {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), REQUEST)
                    .map_err(|e| self.err(format!("reading the offsets of {topic}/{}: {e}", p.id())))?;
                if high > low {
                    assignment
                        .add_partition_offset(topic, p.id(), Offset::Offset(low))
                        .map_err(|e| self.err(e.to_string()))?;
                    self.ends.insert((topic.clone(), p.id()), high);
                }
            }
        }
        consumer.assign(&assignment).map_err(|e| self.err(format!("assigning partitions: {e}")))?;
        self.consumer = Some(consumer);
        self.unreadable = 0;
        Ok(())
    }

    /// Drops partitions whose read position reached their end (a
    /// transaction marker occupies the last offset of a transactional
    /// topic and is never delivered as a record).
    fn drop_finished(&mut self) -> Result<(), VerifyError> {
        let Some(consumer) = &self.consumer else { return Ok(()) };
        let positions = consumer.position().map_err(|e| self.ctx.err(format!("reading positions: {e}")))?;
        for e in positions.elements() {
            let key = (e.topic().to_string(), e.partition());
            if let (Some(end), Some(at)) = (self.ends.get(&key), e.offset().to_raw()) {
                if at >= *end {
                    self.ends.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn poll_batch(&mut self) -> Result<Option<Vec<Delivered>>, VerifyError> {
        let mut out = Vec::new();
        let mut quiet_since = Instant::now();
        while out.len() < BATCH && !self.ends.is_empty() {
            let Some(consumer) = &self.consumer else { break };
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    quiet_since = Instant::now();
                    let key = (m.topic().to_string(), m.partition());
                    if self.ends.get(&key).is_some_and(|end| m.offset() + 1 >= *end) {
                        self.ends.remove(&key);
                    }
                    let Some(payload) = m.payload() else { continue };
                    let id = m
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == "id"))
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok());
                    match serde_json::from_slice(payload).ok().and_then(|v| decode_record(&v, id, &self.ctx.source_id))
                    {
                        Some(d) => out.push(d),
                        None => self.unreadable += 1,
                    }
                }
                Some(Err(e)) => return Err(self.err(format!("consuming: {e}"))),
                None => {
                    self.drop_finished()?;
                    if quiet_since.elapsed() > STALL {
                        let left: Vec<String> = self.ends.keys().map(|(t, p)| format!("{t}/{p}")).collect();
                        return Err(self.err(format!(
                            "no record for {} s from partitions {} before their end; is the broker reachable?",
                            STALL.as_secs(),
                            left.join(", ")
                        )));
                    }
                }
            }
        }
        if self.ends.is_empty() {
            self.consumer = None;
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn rewind(&mut self, tables: &[TableLayout]) -> Result<(), VerifyError> {
        blocking(|| self.open(tables))
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<Delivered>>, VerifyError> {
        blocking(|| self.poll_batch())
    }

    fn unreadable(&self) -> u64 {
        self.unreadable
    }
}
