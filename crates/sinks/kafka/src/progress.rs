//! The exactly-once progress marker: the source position of the last event
//! a Kafka transaction carried, written *inside* that transaction.
//!
//! Why: the checkpoint is written after a transaction commits. A crash
//! between the two would replay the batch, and a second transaction would
//! duplicate it for `read_committed` consumers. Each transaction therefore
//! also writes one marker message (key = transactional id) to a compacted,
//! single-partition progress topic; it commits atomically with the events.
//! After `init_transactions` (which aborts whatever a dead instance left
//! open), the sink reads the last committed marker and skips the replayed
//! events at or before it. Kafka Connect keeps source offsets in a
//! transaction for the same reason.
//!
//! Consequence for operators: the marker belongs to the transactional id,
//! not to DeltaForge's storage. Resetting a pipeline's checkpoint to
//! re-deliver everything does not re-deliver to an `exactly_once` Kafka
//! sink (the replay is recognised as committed); give the sink a new
//! `transactional_id` (or delete its progress topic) for that.
//!
//! This module owns the marker format and reading it back; it must never
//! write markers outside a transaction (a marker is only true if it commits
//! together with the events it describes).

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use deltaforge_core::{Event, Position};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

/// The last event a committed transaction carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// The event's source id.
    pub source_id: String,
    /// The event's transaction position.
    pub position: Position,
    /// The event's index within its transaction.
    pub index: u32,
    /// Its idempotency key (for operators reading the topic).
    pub event: String,
}

impl Marker {
    /// The marker describing `e` (the last event of a transaction).
    pub fn of(e: &Event) -> Marker {
        Marker {
            source_id: e.source.source_id.to_string(),
            position: e.tx_position.clone(),
            index: e.index,
            event: e.idempotency_key(),
        }
    }

    /// True when `e` is at or before this marker, i.e. a committed
    /// transaction already carried it.
    pub fn covers(&self, e: &Event) -> bool {
        if *e.source.source_id != *self.source_id {
            return false;
        }
        match e.tx_position.compare(&self.position) {
            Some(Ordering::Less) => true,
            Some(Ordering::Equal) => e.index <= self.index,
            _ => false,
        }
    }
}

/// Reads the last committed marker with `key` from partition 0 of `topic`.
///
/// Blocking (librdkafka consumer calls); run it off the async runtime.
/// Reads a window at the end of the partition and widens it backwards
/// until a marker is found or the start is reached, so that startup cost
/// does not grow with the topic's history.
pub fn read_last(base: &ClientConfig, topic: &str, key: &str, timeout: Duration) -> Result<Option<Marker>, KafkaError> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", "deltaforge-progress-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, timeout)?;
    if high <= low {
        return Ok(None);
    }
    let deadline = Instant::now() + timeout;
    let mut window = 64i64;
    loop {
        let start = (high - window).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(start))?;
        consumer.assign(&tpl)?;
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::OperationTimedOut));
            }
            match consumer.poll(left) {
                Some(Ok(m)) => {
                    if m.key() == Some(key.as_bytes()) {
                        if let Some(p) = m.payload() {
                            if let Ok(marker) = serde_json::from_slice::<Marker>(p) {
                                last = Some(marker);
                            }
                        }
                    }
                    if m.offset() >= high - 1 {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        if last.is_some() || start == low {
            return Ok(last);
        }
        window = window.saturating_mul(8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltaforge_core::testing::EventBuilder;

    fn ev(seq: u64, index: u32, source: &str) -> Event {
        EventBuilder::new(seq).after(None).table("d.x").index(index).source_id(source).build()
    }

    #[test]
    fn covers_events_up_to_and_including_the_marker() {
        let m = Marker::of(&ev(10, 2, "dg"));
        assert!(m.covers(&ev(9, 7, "dg")));
        assert!(m.covers(&ev(10, 2, "dg")));
        assert!(!m.covers(&ev(10, 3, "dg")));
        assert!(!m.covers(&ev(11, 0, "dg")));
        assert!(!m.covers(&ev(5, 0, "other")), "another source's events are never skipped");
    }

    #[test]
    fn marker_round_trips_as_json() {
        let m = Marker::of(&ev(10, 2, "dg"));
        let back: Marker = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.event, "dg:10:2");
    }
}
