//! Byte-for-byte golden test of every envelope: events of every source's
//! position kind, every operation and awkward values, encoded as the sinks
//! encode them, compared with `tests/golden/envelopes.jsonl`.
//!
//! Any change to what reaches a sink (field order, number or string
//! formatting, escaping) shows here. To accept an intended change, rerun
//! with `DELTAFORGE_BLESS=1` and review the file's diff.

use std::sync::Arc;

use deltaforge_core::{Columns, Event, Op, Position, Row, SourceMeta};
use deltaforge_encoding::Envelope;
use serde_json::{json, Value};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/envelopes.jsonl");

fn row(v: Value) -> Row {
    let map = v.as_object().cloned().unwrap_or_default();
    Row::from_pairs(map.iter().map(|(k, v)| (k.as_str(), v.clone())))
}

fn event(connector: &'static str, op: Op, position: Position, tx_position: Position, index: u32) -> Event {
    let (before, after) = match op {
        Op::Create | Op::Read => (None, Some(row(sample_row()))),
        Op::Update => (Some(row(json!({"id": 7, "name": "old"}))), Some(row(sample_row()))),
        Op::Delete => (Some(row(json!({"id": 7, "name": "old"}))), None),
        Op::Truncate => (None, None),
    };
    let key: Columns = vec![Arc::<str>::from("id")].into();
    Event {
        op,
        before,
        after,
        source: SourceMeta {
            connector,
            source_id: "src-1".into(),
            pipeline: "orders \"eu\"".into(),
            tenant: "acme".into(),
            db: "shop".into(),
            table: "orders".into(),
            position,
            ts_ms: 1_767_225_600_123,
        },
        tx_id: Some("4711".into()),
        tx_position,
        index,
        schema_version: Some(3),
        key_columns: Some(key),
    }
}

fn sample_row() -> Value {
    json!({
        "id": 7,
        "big": 18_446_744_073_709_551_615u64,
        "neg": -9_223_372_036_854_775_808i64,
        "ratio": 0.1,
        "amount": "12345678901234567890.12",
        "name": "Zoë \"quoted\" \\ back\nline\ttab \u{1F600} \u{0001}",
        "flag": true,
        "none": null,
        "tags": ["a", 1, null],
        "doc": {"k": {"nested": [1.5e300, -0.0]}}
    })
}

fn events() -> Vec<Event> {
    use deltaforge_source_datagen::DatagenPosition;
    use deltaforge_source_mysql::BinlogPosition;
    use deltaforge_source_postgres::PgPosition;
    let positions: Vec<(&'static str, Position, Position)> = vec![
        ("postgres", PgPosition::at(0x1_6B37_4D48, Some(4711)), PgPosition::at(0x1_6B37_5000, Some(4711))),
        ("postgres", PgPosition::at(0x16, None), PgPosition::at(0x16, None)),
        (
            "mysql",
            BinlogPosition::at("binlog.000042".into(), 12_345, Some("0-1-99".into())),
            BinlogPosition::at("binlog.000042".into(), 12_000, Some("0-1-99".into())),
        ),
        (
            "mysql",
            BinlogPosition::at("binlog.000001".into(), 4, None),
            BinlogPosition::at("binlog.000001".into(), 4, None),
        ),
        ("datagen", DatagenPosition::at(7), DatagenPosition::at(9)),
    ];
    let mut out = Vec::new();
    for (connector, position, tx_position) in positions {
        for (i, op) in [Op::Create, Op::Update, Op::Delete, Op::Read, Op::Truncate].into_iter().enumerate() {
            out.push(event(connector, op, position.clone(), tx_position.clone(), i as u32));
        }
    }
    out
}

fn encoded() -> String {
    let mut text = String::new();
    for event in events() {
        for envelope in [Envelope::Native, Envelope::Debezium, Envelope::Cloudevents] {
            let bytes = envelope.encode(&event);
            let mut line = String::from_utf8(bytes).expect("envelopes are UTF-8");
            if envelope == Envelope::Debezium {
                line = mask_processing_time(&line);
            }
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// Debezium's top-level `ts_ms` (right after `op`) is when the event was
/// encoded: checked to be now, then replaced by `<now>`.
fn mask_processing_time(line: &str) -> String {
    let op = line.rfind(",\"op\":").expect("a Debezium envelope has op");
    let at = op + line[op..].find(",\"ts_ms\":").expect("ts_ms follows op") + ",\"ts_ms\":".len();
    let end = at + line[at..].find([',', '}']).expect("end of ts_ms");
    let ms: i64 = line[at..end].parse().expect("ts_ms is an integer");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    assert!((now - ms).abs() < 60_000, "Debezium ts_ms {ms} is not the encoding time");
    format!("{}<now>{}", &line[..at], &line[end..])
}

#[test]
fn every_envelope_is_byte_for_byte_what_it_was() {
    let ours = encoded();
    if std::env::var_os("DELTAFORGE_BLESS").is_some() {
        std::fs::write(GOLDEN, &ours).expect("writing the golden file");
        return;
    }
    let golden = std::fs::read_to_string(GOLDEN).expect("tests/golden/envelopes.jsonl (DELTAFORGE_BLESS=1 writes it)");
    for (i, (a, b)) in ours.lines().zip(golden.lines()).enumerate() {
        assert_eq!(a, b, "line {} of {GOLDEN} differs", i + 1);
    }
    assert_eq!(ours.lines().count(), golden.lines().count(), "number of encoded events");
    assert_eq!(ours.lines().count(), 75);
}
