//! `type: kafka` — delivers events to Apache Kafka.
//!
//! Each event becomes one message: the topic and key come from templates
//! (`topic: cdc.${db}.${table}`, key default = the row's primary key as
//! compact JSON), the value is the chosen envelope (native, Debezium,
//! CloudEvents), and the header `id` carries the event's idempotency key
//! whatever the envelope (Debezium's has no field for it), so consumers
//! can deduplicate. The default producer is idempotent with `acks=all`; a
//! batch is acknowledged only when every message's delivery report
//! succeeded. With `exactly_once: true` each batch is one Kafka transaction,
//! committed before the checkpoint is written, and a progress marker in the
//! same transaction lets a restarted instance skip what was already
//! committed (see [`progress`]).
//!
//! Why `rdkafka` (librdkafka, bundled): it is the only Rust Kafka client
//! with the idempotent producer and transactions; `rskafka` has neither.
//!
//! This crate never writes checkpoints and never acknowledges a batch the
//! broker has not durably accepted; the coordinator owns retries.

pub mod client_conf;
pub mod config;
pub mod message;
pub mod progress;
pub mod sink;

pub use config::KafkaConfig;
pub use sink::KafkaSink;
