//! Exactly-once delivery: each batch is one Kafka transaction carrying the
//! batch's messages and a progress marker; the marker read at startup
//! lets a restarted instance skip what was already committed, and an
//! unfinished transaction is aborted (or a pending commit retried) before
//! the next batch.
//!
//! It must never return `Ok` before the transaction committed, and never
//! commit a batch whose messages were not all acknowledged.

use std::time::Duration;

use deltaforge_core::{Event, SinkError};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;

use super::errors::{classify, creation_error};
use super::producer::KafkaSink;
use super::transaction::{abort_blocking, blocking, commit_blocking, Fingerprint, Phase, OP_TIMEOUT};
use crate::progress::{self, Marker};

impl KafkaSink {
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

    /// A transaction call's error, worded with what was being done.
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

    /// Delivers a batch as one Kafka transaction with its progress marker,
    /// skipping what an earlier committed transaction already carried.
    pub(super) async fn deliver_eos(&mut self, events: &[Event]) -> Result<(), SinkError> {
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
