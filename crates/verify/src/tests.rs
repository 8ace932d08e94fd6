//! Unit tests of the comparison and the file sink's index, with an
//! in-memory source and a file written from real events.

use std::collections::BTreeMap;
use std::io::Write as _;

use async_trait::async_trait;
use deltaforge_common::TablePattern;
use deltaforge_core::testing::{EventBuilder, Seq};
use deltaforge_core::{Event, Op, Position, Row};
use serde_json::{json, Value};

use crate::compare::{verify, Options, SinkProgress};
use crate::error::VerifyError;
use crate::file_sink::FileSinkReader;
use crate::model::{SourceChunk, TableLayout};
use crate::source::SourceReader;
use crate::transform::Transforms;

/// Table `d.t (id, v, secret)` in memory, read at a fixed position.
struct MemSource {
    rows: BTreeMap<i64, (i64, &'static str)>,
    at: u64,
}

fn layout() -> TableLayout {
    TableLayout { name: "d.t".into(), columns: vec!["id".into(), "v".into(), "secret".into()], key: vec!["id".into()] }
}

#[async_trait]
impl SourceReader for MemSource {
    async fn tables(&mut self, _only: &[TablePattern]) -> Result<(Vec<TableLayout>, Vec<String>), VerifyError> {
        Ok((vec![layout()], vec!["d.nokey".into()]))
    }

    async fn chunk(
        &mut self,
        _table: &TableLayout,
        after: Option<&[String]>,
        condition: Option<&str>,
        limit: usize,
    ) -> Result<SourceChunk, VerifyError> {
        let from: i64 = after.and_then(|a| a[0].parse().ok()).map_or(i64::MIN, |k: i64| k + 1);
        // Re-reads name their keys as `IN ('1', '2')`.
        let wanted: Option<Vec<i64>> =
            condition.map(|c| c.split(['(', ')', ',', '\'', ' ']).filter_map(|p| p.parse().ok()).collect());
        let rows: Vec<Row> = self
            .rows
            .range(from..)
            .filter(|(k, _)| wanted.as_ref().is_none_or(|w| w.contains(k)))
            .take(limit)
            .map(|(k, (v, s))| Row::from_pairs([("id", json!(k)), ("v", json!(v)), ("secret", json!(s))]))
            .collect();
        let next = (rows.len() == limit).then(|| vec![rows.last().unwrap().get("id").unwrap().to_string()]);
        Ok(SourceChunk { rows, next, position: Seq::at(self.at) })
    }

    fn key_condition(&self, _table: &TableLayout, keys: &[Vec<Value>]) -> String {
        let list: Vec<String> = keys.iter().map(|k| format!("'{}'", k[0])).collect();
        format!("(id) IN ({})", list.join(", "))
    }
}

struct Reached(u64);

#[async_trait]
impl SinkProgress for Reached {
    async fn reached(&self) -> Result<Option<Position>, VerifyError> {
        Ok(Some(Seq::at(self.0)))
    }
}

fn ev(seq: u64, op: Op, before: Value, after: Value) -> Event {
    EventBuilder::new(seq).table("d.t").op(op).before(before).after(after).build()
}

fn row(id: i64, v: i64, s: &str) -> Value {
    json!({"id": id, "v": v, "secret": s})
}

fn write(events: &[Event]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for e in events {
        writeln!(f, "{}", serde_json::to_string(&e.native()).unwrap()).unwrap();
    }
    f
}

async fn run(src: &mut MemSource, file: &std::path::Path, reached: Option<u64>, opts: &Options) -> crate::Report {
    let mut sink = FileSinkReader::new("out", file).unwrap();
    let progress = reached.map(Reached);
    verify(
        src,
        &mut sink,
        &mut Transforms::none(),
        progress.as_ref().map(|p| p as &dyn SinkProgress),
        opts,
        Box::new(|_| {}),
    )
    .await
    .unwrap()
}

fn opts() -> Options {
    let mut o = Options::new("p", "out");
    o.chunk_size = 2;
    o.stall_timeout = std::time::Duration::from_millis(300);
    o
}

#[tokio::test]
async fn replaying_the_file_per_key_matches_the_source() {
    // Inserts, an update, a delete, a key change, a TOAST placeholder and
    // a replayed (duplicate) event.
    let events = vec![
        ev(1, Op::Create, Value::Null, row(1, 0, "a")),
        ev(2, Op::Create, Value::Null, row(2, 0, "b")),
        ev(3, Op::Create, Value::Null, row(3, 0, "c")),
        ev(4, Op::Update, Value::Null, json!({"id": 1, "v": 5, "secret": {"__deltaforge_unchanged_toast": true}})),
        ev(5, Op::Delete, json!({"id": 2}), Value::Null),
        ev(6, Op::Update, json!({"id": 3}), row(4, 0, "c")),
        ev(4, Op::Update, Value::Null, json!({"id": 1, "v": 5, "secret": {"__deltaforge_unchanged_toast": true}})),
    ];
    let file = write(&events);
    let mut src = MemSource { rows: BTreeMap::from([(1, (5, "a")), (4, (0, "c"))]), at: 6 };
    let report = run(&mut src, file.path(), Some(6), &opts()).await;
    assert!(report.equal, "{}", report.to_text());
    assert_eq!(report.rows_compared, 2);
    assert_eq!(report.deliveries.events, 7);
    assert_eq!(report.deliveries.duplicate_events, 1);
    assert_eq!(report.deliveries.worst_duplicates, vec![(events[3].idempotency_key(), 2)]);
    assert!(report.warnings.iter().any(|w| w.contains("d.nokey")), "{:?}", report.warnings);
}

#[tokio::test]
async fn missing_extra_and_differing_rows_are_named_and_masked_values_redacted() {
    let file = write(&[
        ev(1, Op::Create, Value::Null, row(1, 0, "a")),
        ev(2, Op::Create, Value::Null, row(2, 9, "x")),
        ev(3, Op::Create, Value::Null, row(9, 0, "z")),
    ]);
    let mut src = MemSource { rows: BTreeMap::from([(1, (0, "a")), (2, (1, "y")), (3, (0, "c"))]), at: 3 };
    let mut o = opts();
    o.masked = vec![(TablePattern::parse("d.*").unwrap(), vec!["secret".into()])];
    let report = run(&mut src, file.path(), Some(3), &o).await;
    assert!(!report.equal);
    let keys = |l: &[crate::report::KeyRef]| l.iter().map(|k| k.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&report.missing), vec!["[3]"]);
    assert_eq!(keys(&report.extra), vec!["[9]"]);
    assert_eq!(report.differing.len(), 1);
    let d = &report.differing[0];
    assert_eq!(d.row.key, "[2]");
    assert_eq!(
        serde_json::to_value(&d.columns).unwrap(),
        json!([{"column": "v", "source": 1, "sink": 9}, {"column": "secret", "source": "***", "sink": "***"}])
    );
    assert!(!report.to_text().contains("\"y\""), "a masked value reached the report");
    assert_eq!(report.rechecked, 3);
    assert_eq!(report.resolved_on_recheck, 0);
}

#[tokio::test]
async fn a_change_after_the_source_read_is_resolved_by_the_recheck() {
    // The source was read at 10 with v = 1; the sink already has the
    // change made at 12 (v = 2): the same as the source as of 10.
    let file =
        write(&[ev(5, Op::Create, Value::Null, row(1, 1, "a")), ev(12, Op::Update, Value::Null, row(1, 2, "a"))]);
    let mut src = MemSource { rows: BTreeMap::from([(1, (1, "a"))]), at: 10 };
    let report = run(&mut src, file.path(), Some(12), &opts()).await;
    assert!(report.equal, "{}", report.to_text());
    assert_eq!((report.rechecked, report.resolved_on_recheck), (1, 1));
    assert!(report.caught_up);
}

#[tokio::test]
async fn a_sink_that_does_not_catch_up_is_compared_as_it_stands() {
    let file = write(&[ev(5, Op::Create, Value::Null, row(1, 0, "a"))]);
    let mut src = MemSource { rows: BTreeMap::from([(1, (1, "a"))]), at: 10 };
    let report = run(&mut src, file.path(), Some(5), &opts()).await;
    assert!(!report.equal);
    assert!(!report.caught_up);
    assert_eq!(report.sink_position, Some(json!({"test_seq": 5})));
    assert_eq!(report.differing.len(), 1);
}

#[tokio::test]
async fn a_missing_file_is_a_clear_error() {
    let mut src = MemSource { rows: BTreeMap::new(), at: 1 };
    let mut sink = FileSinkReader::new("out", std::path::Path::new("/nonexistent/out.jsonl")).unwrap();
    let e = verify(&mut src, &mut sink, &mut Transforms::none(), None, &opts(), Box::new(|_| {})).await.unwrap_err();
    assert!(e.to_string().contains("no file at /nonexistent/out.jsonl"), "{e}");
}
