//! Delivery tracking: the producer [`Context`] counts the delivery reports
//! of the batch in flight (under a generation number, so reports of an
//! abandoned attempt are ignored), sets aside messages refused for their
//! own fault, and routes librdkafka's logs to `tracing`.
//!
//! It only records outcomes: it must never decide whether a batch is
//! acknowledged (the caller does, from [`Reports`]) and never log message
//! contents.

use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;
use tokio::sync::Notify;

use deltaforge_core::BuildError;

use super::errors::{creation_error, own_fault};

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
pub(super) struct Reports {
    /// Messages that failed for another reason than their own content.
    pub(super) failed: usize,
    /// The first such failure, with its topic.
    pub(super) first: Option<(KafkaError, String)>,
    /// Messages refused for their own fault: (message index, reason).
    pub(super) rejected: Vec<(u32, String)>,
}

/// The delivery opaque: the batch generation in the high half, the
/// message's index in the batch in the low half.
pub(super) fn opaque(generation: u32, index: u32) -> usize {
    (((generation as u64) << 32) | index as u64) as usize
}

/// The generation and index packed by [`opaque`].
pub(super) fn split_opaque(opaque: usize) -> (u32, u32) {
    (((opaque as u64) >> 32) as u32, opaque as u32)
}

/// Producer context: counts delivery reports and routes librdkafka's logs
/// to `tracing`.
#[derive(Default)]
pub struct Context {
    /// Guarded by a std mutex: librdkafka's delivery callback is synchronous.
    state: Mutex<Tracking>,
    /// Woken when the last report of a batch arrives.
    done: Notify,
}

impl Context {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tracking> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a batch of `n` messages; returns its generation.
    pub(super) fn start(&self, n: usize) -> u32 {
        let mut s = self.lock();
        s.generation = s.generation.wrapping_add(1) & 0xFFFF_FFFF;
        s.pending = n;
        s.failed = 0;
        s.first = None;
        s.rejected.clear();
        s.generation as u32
    }

    /// Records the outcome of message `index` of batch `generation`.
    pub(super) fn report(&self, generation: u32, index: u32, result: Result<(), (&KafkaError, &str)>) {
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
    pub(super) async fn wait(&self) -> Reports {
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

/// The producer type of every Kafka sink.
pub(super) type KafkaProducer = ThreadedProducer<Context>;

/// A producer with a fresh [`Context`].
pub(super) fn create_producer(config: &ClientConfig) -> Result<KafkaProducer, BuildError> {
    config.create_with_context(Context::default()).map_err(creation_error)
}
