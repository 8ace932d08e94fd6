//! Unit tests of [`crate::sink::ObjectStoreSink`] on a local directory:
//! roll-over, held batches, manifests, replays after a crash.

use std::path::Path;

use deltaforge_core::testing::EventBuilder;
use deltaforge_core::{Event, Sink};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

use crate::config::ObjectStoreConfig;
use crate::progress::{progress_key, DirProgress, EventPos};
use crate::sink::ObjectStoreSink;

fn event(seq: u64) -> Event {
    let mut e =
        EventBuilder::new(seq).table("shop.orders").after(json!({"id": seq, "name": format!("n{seq}")})).build();
    e.source.ts_ms = 1_709_214_300_000;
    e
}

fn sink(dir: &Path, extra: Value) -> ObjectStoreSink {
    let mut cfg = json!({"url": format!("file://{}", dir.display()), "path": "${table}", "max_rows": 4});
    cfg.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    ObjectStoreSink::new(serde_json::from_value::<ObjectStoreConfig>(cfg).unwrap()).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("orders"))
        .map(|d| {
            d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| !n.starts_with(".")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn parquet_ids(path: &Path) -> Vec<String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let col = batch.column_by_name("id").unwrap();
        let col = col.as_any().downcast_ref::<arrow_array::StringArray>().unwrap();
        ids.extend(col.iter().map(|v| v.unwrap().to_string()));
    }
    ids
}

#[tokio::test]
async fn files_roll_by_rows_and_batches_are_held_until_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sink(dir.path(), json!({}));
    let events: Vec<Event> = (1..=6).map(event).collect();
    s.deliver(&events[..3]).await.unwrap();
    assert_eq!(s.held_batches(), 1, "3 rows of 4: the batch is only in the buffer");
    assert!(files(dir.path()).is_empty());
    s.deliver(&events[3..6]).await.unwrap();
    // Rows 1-4 committed mid-batch; rows 5-6 are buffered: batch 2 is held.
    assert_eq!(s.held_batches(), 1);
    assert_eq!(files(dir.path()), vec!["1.0_4.0.parquet"]);
    assert_eq!(parquet_ids(&dir.path().join("orders/1.0_4.0.parquet")), ["1", "2", "3", "4"]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("_manifest/orders/1.0_4.0.parquet.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["rows"], 4);
    assert_eq!(manifest["last"]["index"], 0);
    s.flush(true).await.unwrap();
    assert_eq!(s.held_batches(), 0);
    assert_eq!(files(dir.path()), vec!["1.0_4.0.parquet", "5.0_6.0.parquet"]);
}

#[tokio::test]
async fn a_replay_after_a_crash_skips_committed_events_and_overwrites_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (1..=10).map(event).collect();
    let mut s = sink(dir.path(), json!({}));
    s.deliver(&events[..6]).await.unwrap();
    // A crash: rows 5-6 were never committed, and a data file was left
    // without its manifest.
    drop(s);
    // A data file committed without its manifest: the progress object
    // named it as pending first, as the sink does before every data file.
    let pending = DirProgress {
        last: Some(EventPos::of(&events[3])),
        pending: Some(("5.0_9.0.parquet".into(), EventPos::of(&events[8]))),
    };
    std::fs::write(dir.path().join(progress_key("orders")), pending.encode()).unwrap();
    std::fs::write(dir.path().join("orders/5.0_9.0.parquet"), b"torn").unwrap();
    // The replay starts before the committed file (the checkpoint lagged).
    let mut s = sink(dir.path(), json!({}));
    s.deliver(&events[1..]).await.unwrap();
    s.flush(true).await.unwrap();
    assert_eq!(files(dir.path()), vec!["1.0_4.0.parquet", "5.0_8.0.parquet", "9.0_10.0.parquet"]);
    assert_eq!(parquet_ids(&dir.path().join("orders/5.0_8.0.parquet")), ["5", "6", "7", "8"]);
}

#[tokio::test]
async fn jsonl_gzip_files_hold_one_envelope_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sink(dir.path(), json!({"format": "jsonl", "compression": "gzip", "max_rows": 100}));
    let events: Vec<Event> = (1..=3).map(event).collect();
    s.deliver(&events).await.unwrap();
    s.flush(true).await.unwrap();
    let name = files(dir.path()).pop().unwrap();
    assert_eq!(name, "1.0_3.0.jsonl.gz");
    let gz = std::fs::read(dir.path().join("orders").join(&name)).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    let ids: Vec<u64> =
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["after"]["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[tokio::test]
async fn age_rolls_files_on_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sink(dir.path(), json!({"max_age_ms": 1, "max_rows": 100}));
    s.deliver(&[event(1)]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    s.flush(false).await.unwrap();
    assert_eq!(s.held_batches(), 0);
    assert_eq!(files(dir.path()), vec!["1.0_1.0.parquet"]);
}

#[tokio::test]
async fn registry_types_the_columns_and_a_schema_change_starts_a_new_file() {
    use deltaforge_core::SchemaRegistry;
    let storage: std::sync::Arc<dyn deltaforge_storage::StorageBackend> =
        std::sync::Arc::new(deltaforge_storage::MemoryBackend::new());
    let reg = SchemaRegistry::load(storage, "t").await.unwrap();
    let col = |name: &str, ty: &str, typmod: i64| json!({"name": name, "type_oid": 0, "type_name": ty, "type_modifier": typmod});
    let v1 = json!({"columns": [col("id", "int8", -1), col("price", "numeric", (10 << 16) + 2 + 4)]});
    let v2 = json!({"columns": [col("id", "int8", -1), col("price", "numeric", (10 << 16) + 2 + 4), col("at", "timestamptz", -1)]});
    assert_eq!(reg.register("shop", "orders", v1, None, None).await.unwrap(), 1);
    assert_eq!(reg.register("shop", "orders", v2, None, None).await.unwrap(), 2);
    let dir = tempfile::tempdir().unwrap();
    let mut s = sink(dir.path(), json!({"max_rows": 100}));
    s.attach_schemas(reg);
    let typed = |seq: u64, version: u64, after: Value| {
        let mut e = EventBuilder::new(seq).table("shop.orders").schema_version(version).after(after).build();
        e.source.ts_ms = 1;
        e
    };
    let events = [
        typed(1, 1, json!({"id": 1, "price": "1.50"})),
        typed(2, 1, json!({"id": 2, "price": "2.25"})),
        typed(3, 2, json!({"id": 3, "price": "3.00", "at": "2026-01-01T00:00:00.000001Z"})),
    ];
    s.deliver(&events).await.unwrap();
    assert_eq!(files(dir.path()), vec!["1.0_2.0.parquet"], "the schema change committed the first file");
    s.flush(true).await.unwrap();
    assert_eq!(files(dir.path()), vec!["1.0_2.0.parquet", "3.0_3.0.parquet"]);
    let schema_of = |name: &str| {
        let f = std::fs::File::open(dir.path().join("orders").join(name)).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(f).unwrap().schema().clone()
    };
    let first = schema_of("1.0_2.0.parquet");
    assert_eq!(first.field_with_name("id").unwrap().data_type(), &arrow_schema::DataType::Int64);
    assert_eq!(first.field_with_name("price").unwrap().data_type(), &arrow_schema::DataType::Decimal128(10, 2));
    assert!(first.field_with_name("at").is_err());
    let second = schema_of("3.0_3.0.parquet");
    assert_eq!(
        second.field_with_name("at").unwrap().data_type(),
        &arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()))
    );
}

#[tokio::test]
async fn a_directory_without_a_progress_object_is_listed_once() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<Event> = (1..=10).map(event).collect();
    let mut s = sink(dir.path(), json!({}));
    s.deliver(&events[..6]).await.unwrap();
    drop(s);
    // As written by a version without progress objects, plus a data file
    // no manifest lists.
    std::fs::remove_dir_all(dir.path().join("_progress")).unwrap();
    std::fs::write(dir.path().join("orders/5.0_9.0.parquet"), b"torn").unwrap();
    let mut s = sink(dir.path(), json!({}));
    s.deliver(&events[2..]).await.unwrap();
    s.flush(true).await.unwrap();
    assert_eq!(files(dir.path()), vec!["1.0_4.0.parquet", "5.0_8.0.parquet", "9.0_10.0.parquet"]);
    let progress = std::fs::read(dir.path().join(progress_key("orders"))).unwrap();
    let progress = DirProgress::decode(&progress).unwrap();
    assert_eq!(progress.pending.map(|p| p.0).as_deref(), Some("9.0_10.0.parquet"));
}

#[tokio::test]
async fn a_value_the_column_cannot_hold_refuses_its_event_and_writes_the_rest() {
    use deltaforge_core::{SchemaRegistry, SinkError};
    let storage: std::sync::Arc<dyn deltaforge_storage::StorageBackend> =
        std::sync::Arc::new(deltaforge_storage::MemoryBackend::new());
    let reg = SchemaRegistry::load(storage, "t").await.unwrap();
    let col = |name: &str, ty: &str, typmod: i64| json!({"name": name, "type_oid": 0, "type_name": ty, "type_modifier": typmod});
    let v1 = json!({"columns": [col("id", "int8", -1), col("price", "numeric", (5 << 16) + 2 + 4), col("at", "timestamptz", -1)]});
    reg.register("shop", "orders", v1, None, None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut s = sink(dir.path(), json!({"max_rows": 100}));
    s.attach_schemas(reg);
    let typed = |seq: u64, price: Value, at: &str| {
        let after = json!({"id": seq, "price": price, "at": at});
        let mut e = EventBuilder::new(seq).table("shop.orders").schema_version(1).after(after).build();
        e.source.ts_ms = 1;
        e
    };
    let ok = "2026-01-01T00:00:00Z";
    let events = [
        typed(1, json!("NaN"), ok), // first of its file: the file must not start with it
        typed(2, json!("1.50"), ok),
        typed(3, json!("1.505"), ok),
        typed(4, json!("1000.00"), ok),
        typed(5, json!("2.00"), "infinity"),
        typed(6, json!("3.00"), ok),
    ];
    let Err(SinkError::Rejected(rejected)) = s.deliver(&events).await else { panic!("expected rejected events") };
    let indexes: Vec<usize> = rejected.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 2, 3, 4]);
    for r in &rejected[..3] {
        assert!(
            r.reason.starts_with("shop.orders column price: ") && r.reason.contains("decimal(5,2)"),
            "{}",
            r.reason
        );
        assert!(!r.reason.contains("1.505") && !r.reason.contains("1000.00"), "values are not quoted: {}", r.reason);
    }
    assert!(rejected[3].reason.starts_with("shop.orders column at: "), "{}", rejected[3].reason);
    assert_eq!(s.held_batches(), 1, "the written rows are held like any batch's");
    s.flush(true).await.unwrap();
    assert_eq!(files(dir.path()), vec!["2.0_6.0.parquet"]);
    let reader = ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(dir.path().join("orders/2.0_6.0.parquet")).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch.column_by_name("id").unwrap();
        let ids = ids.as_any().downcast_ref::<arrow_array::Int64Array>().unwrap();
        let prices = batch.column_by_name("price").unwrap();
        let prices = prices.as_any().downcast_ref::<arrow_array::Decimal128Array>().unwrap();
        rows.extend((0..batch.num_rows()).map(|i| (ids.value(i), prices.value(i))));
    }
    assert_eq!(rows, [(2, 150), (6, 300)], "no NULL, no truncated value");
}

#[tokio::test]
async fn jsonl_zstd_files_decompress_to_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sink(dir.path(), json!({"format": "jsonl", "compression": "zstd", "max_rows": 3}));
    let events: Vec<Event> = (1..=5).map(event).collect();
    s.deliver(&events).await.unwrap();
    s.flush(true).await.unwrap();
    assert_eq!(files(dir.path()), vec!["1.0_3.0.jsonl.zst", "4.0_5.0.jsonl.zst"]);
    let mut lines = Vec::new();
    for name in files(dir.path()) {
        let zst = std::fs::read(dir.path().join("orders").join(&name)).unwrap();
        let text = String::from_utf8(zstd::stream::decode_all(&zst[..]).unwrap()).unwrap();
        lines.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
    }
    let envelope = deltaforge_encoding::Envelope::Native;
    let expected: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut buf = Vec::new();
            envelope.encode_into(e, &mut buf);
            serde_json::from_slice(&buf).unwrap()
        })
        .collect();
    assert_eq!(lines, expected);
}
