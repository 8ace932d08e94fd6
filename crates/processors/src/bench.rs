//! Release-mode micro benchmarks of the per-event cost of `filter` and
//! `mask` on datagen-shaped batches (the shape `bench/proc.sh` runs):
//!
//! ```text
//! cargo test --release -j 1 -p deltaforge-processors per_event -- --ignored --nocapture
//! ```
//!
//! Each test builds one batch of 8192 events exactly as the datagen source
//! does (one shared column list, shared `db`/`table` names, two tables
//! rotating, values from the same formulas in
//! `deltaforge_common::synthetic`; a test position stands in for datagen's),
//! then times, per round, cloning
//! the batch (the baseline: what the pipeline's own handling of an event
//! costs is not in here) and the processor's `process` call alone. The
//! figures are the medians over the rounds, in ns per event.

use std::sync::Arc;
use std::time::Instant;

use deltaforge_core::{Columns, Event, Op, Processor, Row, SourceMeta};
use serde_json::{json, Value};

use crate::{FilterProcessor, MaskProcessor};
use deltaforge_common::synthetic::{values_for, COLUMNS, EPOCH_MS};
use deltaforge_core::testing::Seq;

const BATCH: u64 = 8192;
const ROUNDS: usize = 41;

/// A batch of datagen events for `demo.orders` and `demo.customers`.
pub(crate) fn datagen_batch() -> Vec<Event> {
    let columns: Columns = COLUMNS.iter().map(|c| Arc::<str>::from(*c)).collect::<Vec<_>>().into();
    let tables: Vec<(Arc<str>, Arc<str>)> =
        vec![(Arc::from("demo"), Arc::from("orders")), (Arc::from("demo"), Arc::from("customers"))];
    let key: Columns = vec![Arc::<str>::from("id")].into();
    let (source_id, pipeline, tenant): (Arc<str>, Arc<str>, Arc<str>) = ("bench".into(), "bench".into(), "t".into());
    (1..=BATCH)
        .map(|id| {
            let (db, table) = &tables[(id % 2) as usize];
            Event {
                op: Op::Create,
                before: None,
                after: Some(Row::new(columns.clone(), values_for(id))),
                source: SourceMeta {
                    connector: "datagen",
                    source_id: source_id.clone(),
                    pipeline: pipeline.clone(),
                    tenant: tenant.clone(),
                    db: db.clone(),
                    table: table.clone(),
                    position: Seq::at(id),
                    ts_ms: EPOCH_MS + id as i64,
                },
                tx_id: Some(id.to_string().into()),
                tx_position: Seq::at(id),
                index: 0,
                schema_version: Some(1),
                key_columns: Some(key.clone()),
            }
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Times `p` on clones of `batch`: (clone ns/event, process ns/event, events out).
async fn measure(p: &mut dyn Processor, batch: &[Event]) -> (f64, f64, usize) {
    let n = batch.len() as f64;
    let (mut clone, mut process, mut out_len) = (Vec::new(), Vec::new(), 0);
    for round in 0..ROUNDS + 3 {
        let t = Instant::now();
        let copy = batch.to_vec();
        let c = t.elapsed().as_secs_f64() * 1e9 / n;
        let t = Instant::now();
        let out = p.process(copy).await.unwrap();
        let d = t.elapsed().as_secs_f64() * 1e9 / n;
        out_len = out.len();
        drop(out);
        if round >= 3 {
            // The first rounds warm caches (the processors' and the allocator's).
            clone.push(c);
            process.push(d);
        }
    }
    (median(clone), median(process), out_len)
}

fn config<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The filter of `bench/proc.sh`.
pub(crate) fn bench_filter() -> FilterProcessor {
    FilterProcessor::new(config(json!({
        "ops": ["c"],
        "include": ["demo.*"],
        "where": {"all": [
            {"field": "after.status", "in": ["new", "paid", "shipped", "delivered"]},
            {"field": "after.amount", "gte": 0}
        ]}
    })))
    .unwrap()
}

/// The mask of `bench/proc.sh`.
pub(crate) fn bench_mask() -> MaskProcessor {
    MaskProcessor::new(config(json!({
        "hmac_secret": "bench-secret-0123456789abcdef",
        "rules": [{"table": "demo.*", "columns": {
            "note": "hash", "customer_id": "drop", "created_at": {"truncate": 10}
        }}]
    })))
    .unwrap()
}

#[tokio::test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
async fn per_event_filter_and_mask() {
    let batch = datagen_batch();
    let (clone, filter, kept) = measure(&mut bench_filter(), &batch).await;
    assert_eq!(kept, batch.len(), "every datagen event passes the benchmark's filter");
    let (_, mask, _) = measure(&mut bench_mask(), &batch).await;
    let mask_only = |columns: Value| {
        MaskProcessor::new(config(json!({
            "hmac_secret": "bench-secret-0123456789abcdef",
            "rules": [{"table": "demo.*", "columns": columns}]
        })))
        .unwrap()
    };
    let (_, hash, _) = measure(&mut mask_only(json!({"note": "hash"})), &batch).await;
    let (_, no_hash, _) =
        measure(&mut mask_only(json!({"customer_id": "drop", "created_at": {"truncate": 10}})), &batch).await;
    eprintln!("batch of {} datagen events, medians of {ROUNDS} rounds:", batch.len());
    eprintln!("  clone only (baseline): {clone:7.1} ns/event");
    eprintln!("  filter process:        {filter:7.1} ns/event");
    eprintln!("  mask process:          {mask:7.1} ns/event");
    eprintln!("    of which (separately) note: hash {hash:.1}; customer_id: drop + created_at: truncate {no_hash:.1}");
}

/// The floor of `hash`: HMAC-SHA256 of the batch's notes alone (no events),
/// through the `hmac` crate as `mask` does, against the same construction
/// written on `sha2::compress256` (precomputed key states, one block per
/// short value), to show what the crates' buffering costs.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn per_event_hmac_floor() {
    use hmac::{Hmac, Mac};
    use sha2::digest::generic_array::GenericArray;
    use sha2::Sha256;
    const IV: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let key = b"bench-secret-0123456789abcdef";
    let notes: Vec<String> = (1..=BATCH).map(|id| format!("order {id}")).collect();
    let keyed = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    let state_after = |pad: u8| {
        let mut block = [pad; 64];
        for (b, k) in block.iter_mut().zip(key) {
            *b ^= k;
        }
        let mut st = IV;
        sha2::compress256(&mut st, &[GenericArray::clone_from_slice(&block)]);
        st
    };
    let (inner, outer) = (state_after(0x36), state_after(0x5c));
    let raw = |data: &[u8]| -> [u8; 32] {
        assert!(data.len() <= 55);
        let mut block = [0u8; 64];
        block[..data.len()].copy_from_slice(data);
        block[data.len()] = 0x80;
        block[56..].copy_from_slice(&((64 + data.len() as u64) * 8).to_be_bytes());
        let mut st = inner;
        sha2::compress256(&mut st, &[GenericArray::clone_from_slice(&block)]);
        let mut block = [0u8; 64];
        for (i, w) in st.iter().enumerate() {
            block[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        block[32] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
        let mut st = outer;
        sha2::compress256(&mut st, &[GenericArray::clone_from_slice(&block)]);
        let mut out = [0u8; 32];
        for (i, w) in st.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        out
    };
    assert_eq!(
        raw(notes[0].as_bytes())[..],
        keyed.clone().chain_update(notes[0].as_bytes()).finalize().into_bytes()[..]
    );
    let time = |f: &dyn Fn(&[u8]) -> u8| {
        let mut xs = Vec::new();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let x = notes.iter().fold(0u8, |acc, n| acc ^ f(n.as_bytes()));
            xs.push(t.elapsed().as_secs_f64() * 1e9 / notes.len() as f64);
            std::hint::black_box(x);
        }
        median(xs)
    };
    let crate_ns = time(&|d| keyed.clone().chain_update(d).finalize().into_bytes()[0]);
    let raw_ns = time(&|d| raw(d)[0]);
    eprintln!("HMAC-SHA256 of one short value: hmac crate {crate_ns:.1} ns, on compress256 {raw_ns:.1} ns");
}
