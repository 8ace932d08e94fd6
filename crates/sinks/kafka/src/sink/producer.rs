//! The [`KafkaSink`] itself: producer setup from the [`KafkaConfig`]
//! (templates, envelope, client and producer properties, the exactly-once
//! state) and replacing a producer librdkafka declared unusable.
//!
//! It must never deliver or acknowledge a batch: `send` and `exactly_once`
//! do, only after the broker accepted it.

use std::sync::Arc;

use deltaforge_core::SinkError;
use deltaforge_encoding::{Envelope, Template};
use rdkafka::ClientConfig;

use super::delivery::{create_producer, KafkaProducer};
use super::transaction::{Eos, Phase, TxnState};
use crate::config::KafkaConfig;
use crate::message::{Encoded, MessageBuilder};
use deltaforge_core::{BuildError, ComponentConfig};

/// A Kafka sink (`type: kafka`).
pub struct KafkaSink {
    /// Topic, key and value of each event's messages.
    pub(super) builder: MessageBuilder,
    /// To rebuild the producer after a fatal error.
    pub(super) producer_config: ClientConfig,
    /// For the admin client and the progress-marker reader.
    pub(super) base_config: ClientConfig,
    /// Shared with blocking transaction calls.
    pub(super) producer: Arc<KafkaProducer>,
    /// The current batch's encoded messages (buffers reused across batches).
    pub(super) enc: Encoded,
    /// Present with `exactly_once: true`.
    pub(super) eos: Option<Eos>,
}

impl KafkaSink {
    /// Builds the sink (creates the producer; connects in the background).
    ///
    /// `pipeline` and `sink_id` name the default transactional id.
    pub fn new(cfg: KafkaConfig, pipeline: &str, sink_id: &str) -> Result<Self, BuildError> {
        ComponentConfig::check(&cfg)?;
        let tpl = |field: &str, t: &str| Template::parse(t).map_err(|e| e.at(field));
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
        let producer_config = cfg.producer_config(eos.as_ref().map(|e| e.transactional_id.as_str()))?;
        let base_config = cfg.base_client_config()?;
        let producer = Arc::new(create_producer(&producer_config)?);
        Ok(KafkaSink { builder, producer_config, base_config, producer, enc: Encoded::default(), eos })
    }

    /// The transactional id (`exactly_once` only).
    pub fn transactional_id(&self) -> Option<&str> {
        self.eos.as_ref().map(|e| e.transactional_id.as_str())
    }

    /// Replaces a producer that librdkafka declared unusable (idempotent
    /// producer fatal error); the old one is dropped off the runtime.
    pub(super) fn rebuild_producer(&mut self) -> Result<(), SinkError> {
        let fresh = Arc::new(create_producer(&self.producer_config)?);
        let old = std::mem::replace(&mut self.producer, fresh);
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }
}
