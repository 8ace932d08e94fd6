//! What can go wrong, and what the coordinator should do about it:
//! The [`BuildError`] of a client that cannot be created, [`classify`] for Kafka
//! errors (fatal with a fix, retryable, or the message's own fault).
//!
//! It must never show a client property's value (it may be a secret) and
//! never act on an error: callers decide.

use deltaforge_core::{BuildError, SinkError};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::is_secret;

/// A client-creation error as a [`BuildError`], naming a rejected property but not its value.
pub(super) fn creation_error(e: KafkaError) -> BuildError {
    match e {
        KafkaError::ClientConfig(_, reason, property, value) => {
            // librdkafka quotes the value in its reason; no value is shown.
            let reason = if is_secret(&property) || value.len() < 3 {
                "invalid value".to_string()
            } else {
                reason.replace(&value, deltaforge_common::redact::MASK)
            };
            BuildError::other(format!(
                "kafka sink: librdkafka rejected client property `{property}`: {reason}; fix it in client_conf"
            ))
        }
        other => BuildError::other(format!("kafka sink: cannot create the Kafka client: {other}")),
    }
}

/// True for errors caused by the message itself (retrying cannot help,
/// but the other messages of the batch are fine): a dead-letter queue
/// can take the event.
pub(super) fn own_fault(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

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
        // Retryable, not fatal: librdkafka also fails messages as "unknown
        // topic" when it could not learn the topic's metadata for
        // `topic.metadata.propagation.max.ms` because no broker answered (a
        // network fault), and a broker that auto-creates topics may answer
        // so until the topic exists. The pipeline goes on once the topic
        // exists; the message says how to make it so.
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => SinkError::Retryable(format!(
            "kafka: topic {topic:?} is unknown to the brokers (or no broker could be reached to learn it): if the \
             broker does not create topics on demand (auto.create.topics.enable=false), create the topic or fix \
             the `topic` template; retrying ({e})"
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
