//! Sending a batch: enqueueing its encoded messages into librdkafka (with
//! the [`ID_HEADER`], waiting on a full queue), and the plain, at-least-once
//! delivery that waits for every report, classifies a failure and maps
//! messages refused for their own fault back to their events.
//!
//! It must never return `Ok` before every message has a successful
//! delivery report.

use std::time::Duration;

use deltaforge_core::{Event, RejectedEvent, SinkError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};

use super::delivery::{opaque, split_opaque};
use super::errors::{classify, own_fault};
use super::producer::KafkaSink;

/// Header carrying the event's idempotency key on every message (as the
/// Redis sink's `id` field and NATS's `Nats-Msg-Id` do), so consumers can
/// deduplicate whichever envelope the value uses.
pub const ID_HEADER: &str = "id";

impl KafkaSink {
    /// Enqueues every encoded message (plus an optional extra one) under a
    /// new generation; waits on a full queue instead of failing.
    pub(super) async fn enqueue_all(&self, extra: Option<(&str, &[u8], &[u8])>) -> Result<(), (KafkaError, String)> {
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

    /// Delivers a batch at least once: enqueues every message, then waits
    /// for every delivery report.
    pub(super) async fn deliver_plain(&mut self, events: &[Event]) -> Result<(), SinkError> {
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
    pub(super) fn rejected_events(&self, rejected: &[(u32, String)]) -> Vec<RejectedEvent> {
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
}
