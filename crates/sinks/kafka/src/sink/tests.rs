//! Error classification, the delivery opaque, rejected-message mapping and
//! secret-free build errors; none needs a broker.

use deltaforge_core::SinkError;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::delivery::{opaque, split_opaque};
use super::errors::own_fault;
use super::*;
use crate::config::KafkaConfig;

#[test]
fn classification() {
    let e = |c| KafkaError::MessageProduction(c);
    assert!(matches!(classify(&e(RDKafkaErrorCode::MessageTimedOut), "t", None), SinkError::Retryable(_)));
    assert!(matches!(classify(&e(RDKafkaErrorCode::AllBrokersDown), "t", None), SinkError::Retryable(_)));
    assert!(matches!(classify(&e(RDKafkaErrorCode::NotEnoughReplicas), "t", None), SinkError::Retryable(_)));
    match classify(&e(RDKafkaErrorCode::UnknownTopicOrPartition), "orders", None) {
        SinkError::Retryable(m) => {
            assert!(m.contains("\"orders\" is unknown") && m.contains("auto.create.topics.enable"), "{m}")
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
    use deltaforge_core::testing::EventBuilder;
    use deltaforge_core::Op;
    let cfg: KafkaConfig = serde_json::from_value(serde_json::json!({
        "brokers": "127.0.0.1:1", "topic": "t.${table}", "tombstones": true
    }))
    .unwrap();
    let mut sink = KafkaSink::new(cfg, "p", "k").unwrap();
    let ev = |op, id: u64| {
        let row = serde_json::json!({"id": id});
        let e = EventBuilder::new(id).op(op).table("d.orders").key_columns(&["id"]);
        if op == Op::Delete {
            e.before(row).after(None).build()
        } else {
            e.after(row).build()
        }
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
