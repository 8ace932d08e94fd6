//! The object path ([`super::objects`]) against the JSON round trip it
//! replaced ([`super::codec`]): for each script and batch, what the engine
//! reads back must equal what `JSON.parse` → `process` →
//! `JSON.stringify` → [`codec::decode`] gives, value for value; and the
//! results only `JSON.stringify` models must take the JSON path.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use deltaforge_core::{Event, Op};
use serde_json::{json, Value};

use super::codec::{self, Output};
use super::config::JavascriptConfig;
use super::engine::{Engine, Returned};
use crate::testutil::{event, insert, sequenced};

fn engine(script: &str) -> Engine {
    let cfg = JavascriptConfig {
        name: None,
        script: script.into(),
        timeout_ms: 2000,
        memory_limit_mb: 64,
        stack_limit_kb: 512,
    };
    Engine::new(&cfg, Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false))).unwrap()
}

/// Everything of an output, comparable.
fn view(o: &Output) -> Value {
    let image = |i: &codec::Image| format!("{i:?}");
    json!([o.not_object, o.origin, o.op, image(&o.before), image(&o.after), o.db, o.table])
}

/// Runs `script` both ways; returns (took the object path, object outputs, JSON outputs).
fn both(script: &str, events: &[Event]) -> (bool, Vec<Value>, Vec<Value>) {
    let e = engine(script);
    let (text, ids) = codec::encode(events).unwrap();
    let (direct, read) = match e.call_events(events, &ids).unwrap() {
        Returned::Objects(o) => (true, o),
        Returned::Json(t) => (false, codec::decode(&t, events, &ids).unwrap()),
    };
    let reference = codec::decode(&e.call(&text).unwrap(), events, &ids).unwrap();
    (direct, read.iter().map(view).collect(), reference.iter().map(view).collect())
}

fn values() -> Vec<Event> {
    sequenced(vec![
        insert(
            "shop.orders",
            json!({
                "id": 1, "small": -7, "i32max": 2147483647, "big": 1_099_511_627_776i64, "huge": 1_152_921_504_606_846_977u64,
                "neg": -9_007_199_254_740_993i64, "f": 1.5, "tiny": 1e-300, "large": 1e300, "amount": "12.50",
                "text": "a \"quoted\" \\ line\nwith ünïcødé 🎉", "empty": "", "yes": true, "no": false, "nothing": null,
                "doc": {"k": [1, 2.5, "x", null, {"deep": [true]}], "e": {}}, "list": []
            }),
        ),
        event(Op::Update, "shop.orders", Some(json!({"id": 2, "v": "old"})), Some(json!({"id": 2, "v": "new"}))),
        event(Op::Delete, "shop.items", Some(json!({"id": 3})), None),
    ])
}

#[test]
fn unchanged_events_read_back_equal() {
    let (direct, read, reference) = both("function process(e) { return e }", &values());
    assert!(direct);
    assert_eq!(read, reference);
}

#[test]
fn computed_values_read_back_as_json_stringify_gives_them() {
    let script = r#"
        function process(events) {
          return events.map(e => {
            if (e.after) {
              Object.assign(e.after, {
                third: 0.1 * 3, nan: NaN, inf: -Infinity, negzero: -0, e21: 1e21, e20: 1e20, two64: 2 ** 64,
                two63neg: -(2 ** 63), fn: function () {}, undef: undefined, sym: Symbol("s"),
                arr: [undefined, function () {}, NaN, 1.25, [[]]], nested: { u: undefined, n: null }
              });
              delete e.after.text;
              e.after.added_first = 1;
            }
            if (e.before) e.before = undefined;
            e.op = e.op === "u" ? "c" : e.op;
            e.extra = { ignored: true };
            return e;
          });
        }"#;
    let (direct, read, reference) = both(script, &values());
    assert!(direct);
    assert_eq!(read, reference);
}

#[test]
fn splits_added_events_reordering_and_bad_elements_read_back_equal() {
    let script = r#"
        function process(events) {
          const out = [];
          for (const e of events.slice().reverse()) {
            out.push({ ...e, after: e.after && { id: e.after.id, copy: true } });
            out.push({ op: "c", after: { made: 1 }, source: { db: "x", table: undefined } });
          }
          out.push(7, null, "s", [1], true, undefined, NaN, { id: events[0].id, after: 5, before: [] });
          out.push({ id: events[1].id, source: "not an object", op: 3 });
          return out;
        }"#;
    let (direct, read, reference) = both(script, &values());
    assert!(direct);
    assert_eq!(read, reference);
}

#[test]
fn what_only_json_stringify_models_takes_the_json_path() {
    for expr in [
        "new Date(0)",
        "new Number(5)",
        "new String('x')",
        "{ toJSON() { return 'custom' } }",
        "Object.create(null)",
        "new Map([[1, 2]])",
        "new Uint8Array([1, 2])",
        "(() => { let o = {}; for (let i = 0; i < 100; i++) o = { o }; return o })()",
    ] {
        let script = format!("function process(events) {{ events[0].after.v = {expr}; return events }}");
        let (direct, read, reference) = both(&script, &values());
        assert!(!direct, "{expr} must take the JSON path");
        assert_eq!(read, reference, "{expr}");
    }
    // A BigInt fails as JSON.stringify fails on it.
    let e = engine("function process(events) { events[0].after.v = 10n; return events }");
    let events = values();
    let ids: Vec<String> = events.iter().map(Event::idempotency_key).collect();
    let failure = e.call_events(&events, &ids).err().expect("a BigInt cannot be serialized");
    assert!(failure.to_string().contains("BigInt"), "{failure}");
}
