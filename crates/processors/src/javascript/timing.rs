//! Measurements of the `javascript` processor's per-event cost (ignored
//! tests, run with `--ignored --nocapture`; they measure, never check).

use std::time::Instant;

use deltaforge_core::Processor;
use rquickjs::{Context, Function, Runtime};
use serde_json::Value;

use super::codec;
use super::*;
use crate::testutil::{insert, sequenced};
use serde_json::json;

/// Prints the per-event time of a small transform on an 8192-event
/// batch (run with `--ignored --nocapture`; a measurement, not a check).
#[tokio::test]
#[ignore]
async fn per_event_time() {
    let mut p = JavascriptProcessor::new(JavascriptConfig {
        name: None,
        script: "function process(events) { for (const e of events) { e.after.c = Math.round(parseFloat(e.after.amount) * 100); } return events; }".into(),
        timeout_ms: 60_000,
        memory_limit_mb: 256,
        stack_limit_kb: 512,
    })
    .unwrap();
    let mk = || {
        sequenced(
            (1..=8192u64)
                .map(|i| insert("demo.orders", json!({"id": i, "customer_id": i % 1000, "amount": "12.50", "status": "paid", "note": "order x", "created_at": "2026-01-01T00:00:00.000Z"})))
                .collect(),
        )
    };
    for _ in 0..9 {
        let batch = mk();
        let t = Instant::now();
        let out = p.process(batch).await.unwrap();
        eprintln!("{} events: {:.1} µs/event", out.len(), t.elapsed().as_secs_f64() * 1e6 / out.len() as f64);
    }
}

/// The floor QuickJS itself sets for the `javascript` processor, per
/// event, on a datagen-shaped batch of 8192 (release: `cargo test
/// --release -p deltaforge-processors per_event_js_floor -- --ignored
/// --nocapture`): (a) `JSON.parse` of the batch text the processor
/// sends, (b) the benchmark's transform on the parsed objects, (c)
/// `JSON.stringify` of the result, (d) building the same objects
/// property by property through the rquickjs API (ids precomputed, as
/// (a) excludes encoding), with names as `&str` and as atoms made once.
#[test]
#[ignore = "benchmark; run in release with --ignored --nocapture"]
fn per_event_js_floor() {
    use rquickjs::{Array, Atom, Object};
    let events = crate::bench::datagen_batch();
    let n = events.len() as f64;
    let (text, ids) = codec::encode(&events).unwrap();
    let rt = Runtime::new().unwrap();
    let context = Context::full(&rt).unwrap();
    const ROUNDS: usize = 11;
    let median = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    };
    let ns = |t: Instant| t.elapsed().as_secs_f64() * 1e9 / n;
    let (mut parse, mut transform, mut stringify, mut build_str, mut build_atoms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    context.with(|ctx| {
        ctx.eval::<(), _>("globalThis.transform = function (events) { for (const e of events) { e.after.amount_cents = Math.round(parseFloat(e.after.amount) * 100); } return events; };")
            .unwrap();
    });
    for _ in 0..ROUNDS {
        context.with(|ctx| {
            let f: Function = ctx.globals().get("transform").unwrap();
            let t = Instant::now();
            let parsed = ctx.json_parse(text.as_str()).unwrap();
            parse.push(ns(t));
            let t = Instant::now();
            let ret: rquickjs::Value = f.call((parsed,)).unwrap();
            transform.push(ns(t));
            let t = Instant::now();
            let out = ctx.json_stringify(ret).unwrap().unwrap().to_string().unwrap();
            stringify.push(ns(t));
            assert!(out.len() > text.len());
        });
        rt.run_gc();
    }
    fn js_value<'js>(ctx: &rquickjs::Ctx<'js>, v: &Value) -> rquickjs::Value<'js> {
        match v {
            Value::Null => rquickjs::Value::new_null(ctx.clone()),
            Value::Bool(b) => rquickjs::Value::new_bool(ctx.clone(), *b),
            Value::Number(x) => match x.as_i64().and_then(|i| i32::try_from(i).ok()) {
                Some(i) => rquickjs::Value::new_int(ctx.clone(), i),
                None => rquickjs::Value::new_float(ctx.clone(), x.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => rquickjs::String::from_str(ctx.clone(), s).unwrap().into_value(),
            other => panic!("datagen has no {other}"),
        }
    }
    // With `&str` names: each `set` looks the name up in the atom table.
    for _ in 0..ROUNDS {
        context.with(|ctx| {
            let t = Instant::now();
            let arr = Array::new(ctx.clone()).unwrap();
            for (i, (e, id)) in events.iter().zip(&ids).enumerate() {
                let o = Object::new(ctx.clone()).unwrap();
                o.set("id", id.as_str()).unwrap();
                o.set("op", e.op.code()).unwrap();
                o.set("before", rquickjs::Value::new_null(ctx.clone())).unwrap();
                let after = Object::new(ctx.clone()).unwrap();
                for (k, v) in e.after.as_ref().unwrap().iter() {
                    after.set(k, js_value(&ctx, v)).unwrap();
                }
                o.set("after", after).unwrap();
                let source = Object::new(ctx.clone()).unwrap();
                source.set("db", &*e.source.db).unwrap();
                source.set("table", &*e.source.table).unwrap();
                source.set("ts_ms", e.source.ts_ms as f64).unwrap();
                o.set("source", source).unwrap();
                arr.set(i, o).unwrap();
            }
            build_str.push(ns(t));
        });
        rt.run_gc();
    }
    // With atoms made once per batch for the fixed names and the column list.
    for _ in 0..ROUNDS {
        context.with(|ctx| {
            let t = Instant::now();
            let atom = |s: &str| Atom::from_str(ctx.clone(), s).unwrap();
            let (a_id, a_op, a_before, a_after, a_source) =
                (atom("id"), atom("op"), atom("before"), atom("after"), atom("source"));
            let (a_db, a_table, a_ts) = (atom("db"), atom("table"), atom("ts_ms"));
            let columns: Vec<Atom<'_>> = events[0].after.as_ref().unwrap().columns().iter().map(|c| atom(c)).collect();
            let arr = Array::new(ctx.clone()).unwrap();
            for (i, (e, id)) in events.iter().zip(&ids).enumerate() {
                let o = Object::new(ctx.clone()).unwrap();
                o.set(a_id.clone(), id.as_str()).unwrap();
                o.set(a_op.clone(), e.op.code()).unwrap();
                o.set(a_before.clone(), rquickjs::Value::new_null(ctx.clone())).unwrap();
                let after = Object::new(ctx.clone()).unwrap();
                for (k, v) in columns.iter().zip(e.after.as_ref().unwrap().values()) {
                    after.set(k.clone(), js_value(&ctx, v)).unwrap();
                }
                o.set(a_after.clone(), after).unwrap();
                let source = Object::new(ctx.clone()).unwrap();
                source.set(a_db.clone(), &*e.source.db).unwrap();
                source.set(a_table.clone(), &*e.source.table).unwrap();
                source.set(a_ts.clone(), e.source.ts_ms as f64).unwrap();
                o.set(a_source.clone(), source).unwrap();
                arr.set(i, o).unwrap();
            }
            build_atoms.push(ns(t));
        });
        rt.run_gc();
    }
    let (a, b, c) = (median(parse), median(transform), median(stringify));
    eprintln!("QuickJS floor, {} datagen events, medians of {ROUNDS} rounds, ns/event:", events.len());
    eprintln!("  (a) JSON.parse of the batch text ({} bytes/event): {a:.0}", text.len() / events.len());
    eprintln!("  (b) the benchmark's transform on parsed objects:  {b:.0}");
    eprintln!("  (c) JSON.stringify of the result:                 {c:.0}");
    eprintln!("  (a)+(b)+(c):                                      {:.0}", a + b + c);
    eprintln!("  (d) building the objects via the API, &str names: {:.0}", median(build_str));
    eprintln!("  (d) the same with atoms made once:                {:.0}", median(build_atoms));
}
