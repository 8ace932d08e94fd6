//! Behaviour of the `javascript` processor end to end: transforms, stable
//! keys of split events, order checks, the sandbox and its limits, and
//! error messages.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltaforge_core::{BuildError, ComponentConfig, ConfigProblem, Event, Op, Processor};
use serde_json::Value;

use super::engine::Engine;
use super::worker::derived_index;
use super::*;
use crate::testutil::{after, insert, sequenced};
use serde_json::json;

fn cfg(script: &str) -> JavascriptConfig {
    JavascriptConfig { name: None, script: script.into(), timeout_ms: 1000, memory_limit_mb: 32, stack_limit_kb: 512 }
}

/// The config problem a constructor failed with.
fn build_problem(built: Result<JavascriptProcessor, BuildError>) -> ConfigProblem {
    match built {
        Err(BuildError::Config(p)) => p,
        Err(e) => panic!("expected a config problem, got {e}"),
        Ok(_) => panic!("expected a config problem"),
    }
}

fn js(script: &str) -> JavascriptProcessor {
    JavascriptProcessor::new(cfg(script)).unwrap()
}

fn batch(n: u64) -> Vec<Event> {
    sequenced((1..=n).map(|i| insert("shop.orders", json!({"id": i, "amount": format!("{i}.50")}))).collect())
}

/// Runs `expr` (a JS expression) and returns its JSON value.
async fn eval(expr: &str) -> Value {
    let script = format!("function process(events) {{ events[0].after.r = ({expr}); return events; }}");
    let out = js(&script).process(batch(1)).await.unwrap();
    after(&out[0])["r"].clone()
}

#[tokio::test]
async fn transform_drop_and_reroute() {
    let mut p = js(r#"
        let seen = 0;
        function process(events) {
          seen += events.length;
          return events
            .filter(e => e.after.id % 2 === 1)
            .map(e => { e.after.cents = Math.round(parseFloat(e.after.amount) * 100);
                        e.after.seen = seen; e.source.table = "odd_orders"; return e; });
        }"#);
    let input = batch(4);
    let keys: Vec<String> = input.iter().map(Event::idempotency_key).collect();
    let out = p.process(input).await.unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(after(&out[0]), json!({"id": 1, "amount": "1.50", "cents": 150, "seen": 4}));
    assert_eq!(after(&out[1]), json!({"id": 3, "amount": "3.50", "cents": 350, "seen": 4}));
    assert_eq!(&*out[1].source.table, "odd_orders");
    assert_eq!(&*out[1].source.db, "shop");
    assert_eq!(out[0].idempotency_key(), keys[0], "origin metadata kept");
    assert_eq!(out[1].idempotency_key(), keys[2]);
    // State persists across batches.
    let out = p.process(batch(1)).await.unwrap();
    assert_eq!(after(&out[0])["seen"], 5);
}

#[tokio::test]
async fn unchanged_columns_keep_the_shared_list() {
    let mut p = js("function process(events) { events.forEach(e => e.after.amount = '0'); return events; }");
    let input = batch(2);
    let out = p.process(input).await.unwrap();
    assert_eq!(after(&out[0])["amount"], "0");
    assert_eq!(out[0].op, Op::Create);
    assert!(out[0].before.is_none());
}

#[tokio::test]
async fn split_and_added_events_get_distinct_stable_keys() {
    let mut p = js(r#"
        function process(events) {
          const out = [];
          for (const e of events) {
            out.push(e);
            out.push({...e, op: "u", before: e.after, after: {...e.after, copy: true}});
          }
          out.push({op: "c", after: {marker: "end"}});
          return out;
        }"#);
    let input = batch(2);
    let last_key = input[1].idempotency_key();
    let out = p.process(input.clone()).await.unwrap();
    assert_eq!(out.len(), 5);
    let keys: Vec<String> = out.iter().map(Event::idempotency_key).collect();
    let unique: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), 5, "{keys:?}");
    assert_eq!(keys[0], input[0].idempotency_key());
    assert_eq!(out[1].op, Op::Update);
    assert_eq!(after(&out[1])["copy"], true);
    assert_eq!(out[1].index, derived_index(0, 1));
    // The added event takes the last event's metadata, as its 2nd extra output.
    assert_eq!(out[4].tx_position, input[1].tx_position);
    assert_eq!(out[4].index, derived_index(0, 2));
    assert_ne!(keys[4], last_key);
    assert_eq!(after(&out[4]), json!({"marker": "end"}));
    // Same batch again: same keys (replay-stable).
    let again: Vec<String> = p.process(input).await.unwrap().iter().map(Event::idempotency_key).collect();
    assert_eq!(again, keys);
}

#[tokio::test]
async fn reordering_transactions_is_refused() {
    let mut p = js("function process(events) { return events.reverse(); }");
    let err = p.process(batch(3)).await.unwrap_err();
    assert!(err.message.contains("later transaction"), "{}", err.message);
}

#[tokio::test]
async fn infinite_loop_is_interrupted_within_the_time_limit() {
    let mut c = cfg("function process(events) { while (true) {} }");
    c.timeout_ms = 200;
    let mut p = JavascriptProcessor::new(c).unwrap();
    let start = Instant::now();
    let err = p.process(batch(3)).await.unwrap_err();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(err.processor, "javascript");
    assert!(err.message.contains("time limit of 200 ms"), "{}", err.message);
    // try/catch cannot swallow the interrupt.
    let mut c = cfg("function process(events) { for (;;) { try { while (true) {} } catch (e) {} } }");
    c.timeout_ms = 100;
    let err = JavascriptProcessor::new(c).unwrap().process(batch(1)).await.unwrap_err();
    assert!(err.message.contains("time limit"), "{}", err.message);
    // Top-level code is bounded too.
    let mut c = cfg("while (true) {} function process(e) { return e; }");
    c.timeout_ms = 100;
    let ConfigProblem { field, message: msg } = build_problem(JavascriptProcessor::new(c));
    assert_eq!(field, "script");
    assert!(msg.contains("time limit"), "{msg}");
}

#[tokio::test]
async fn the_engine_recovers_after_a_limit_breach() {
    let mut c = cfg("function process(events) { if (events[0].after.id === 1) { while (true) {} } return events; }");
    c.timeout_ms = 100;
    let mut p = JavascriptProcessor::new(c).unwrap();
    assert!(p.process(batch(1)).await.is_err());
    let ok = p.process(sequenced(vec![insert("a.b", json!({"id": 2}))])).await.unwrap();
    assert_eq!(after(&ok[0])["id"], 2);
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let mut c = cfg("function process(events) { const a = []; while (true) { a.push('x'.repeat(1024) + a.length); } }");
    c.memory_limit_mb = 16;
    c.timeout_ms = 20_000;
    let start = Instant::now();
    let err = JavascriptProcessor::new(c).unwrap().process(batch(1)).await.unwrap_err();
    assert!(err.message.contains("memory limit of 16 MB"), "{}", err.message);
    assert!(start.elapsed() < Duration::from_secs(15), "the memory limit, not the timeout, stopped it");
}

#[tokio::test]
async fn deep_recursion_hits_the_stack_limit() {
    let err = js("function f(n) { return f(n + 1) + 1; } function process(events) { f(0); return events; }")
        .process(batch(1))
        .await
        .unwrap_err();
    assert!(err.message.contains("stack limit of 512 KB"), "{}", err.message);
}

/// Issue 14: at the largest allowed stack limit, unbounded recursion —
/// in `process`, in top-level code, in `JSON.stringify` of a deep value,
/// and in the parser at validation — is an error, not a crash. Before, the
/// engine thread had the default 2 MiB stack and `check()` ran on the
/// caller's thread: this test binary died with SIGSEGV.
#[tokio::test]
async fn unbounded_recursion_at_the_largest_stack_limit_is_an_error() {
    let at_max = |script: &str| {
        let mut c = cfg(script);
        c.stack_limit_kb = config::MAX_STACK_LIMIT_KB;
        c.timeout_ms = 30_000;
        c.memory_limit_mb = 256;
        c
    };
    let recursion = "function f(n) { return f(n + 1) + 1; } function process(events) { f(0); return events; }";
    at_max(recursion).check().unwrap();
    let mut p = JavascriptProcessor::new(at_max(recursion)).unwrap();
    let err = p.process(batch(2)).await.unwrap_err();
    assert!(err.message.contains("stack limit of 16384 KB"), "{}", err.message);
    // The engine survives a stack overflow: the next batch runs again.
    let err = p.process(batch(1)).await.unwrap_err();
    assert!(err.message.contains("stack limit"), "{}", err.message);

    let deep_value = "function process(events) { let a = []; for (let i = 0; i < 500000; i++) a = [a]; \
                      events[0].after.deep = a; return events; }";
    let result = JavascriptProcessor::new(at_max(deep_value)).unwrap().process(batch(1)).await;
    assert!(result.is_err(), "a value nested 500000 deep cannot come back as an event");

    let top_level = "function f() { return f() + 1; } f(); function process(events) { return events; }";
    let ConfigProblem { field, message } = build_problem(JavascriptProcessor::new(at_max(top_level)));
    assert_eq!(field, "script");
    assert!(message.contains("stack limit"), "{message}");

    let deep_source =
        format!("var x = {}1{}; function process(e) {{ return e; }}", "(".repeat(200_000), ")".repeat(200_000));
    let ConfigProblem { field, .. } = at_max(&deep_source).check().unwrap_err();
    assert_eq!(field, "script");
    let mut too_big = cfg(recursion);
    too_big.stack_limit_kb = config::MAX_STACK_LIMIT_KB + 1;
    assert_eq!(too_big.check().unwrap_err().field, "stack_limit_kb");
}

/// Validation compiles only: a script whose top-level code would spin
/// for the whole time limit validates at once (it used to run, blocking
/// the REST API's worker), and nothing of it runs.
#[test]
fn check_compiles_without_running_the_script() {
    let mut c = cfg("while (true) {} function process(e) { return e; }");
    c.timeout_ms = 600_000;
    let start = Instant::now();
    c.check().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "check took {:?}", start.elapsed());
    let ConfigProblem { field, message } = cfg("function process(e) { return e; } }").check().unwrap_err();
    assert_eq!(field, "script");
    assert!(message.contains("SyntaxError"), "{message}");
}

#[tokio::test]
async fn no_file_network_or_process_access() {
    for name in [
        "require",
        "fetch",
        "XMLHttpRequest",
        "WebSocket",
        "process_env",
        "std",
        "os",
        "Deno",
        "module",
        "exports",
        "importScripts",
        "scriptArgs",
        "print",
        "setTimeout",
    ] {
        assert_eq!(eval(&format!("typeof globalThis[{name:?}]")).await, json!("undefined"), "{name} must not exist");
    }
    // `process` is the user's function, not Node's process object.
    assert_eq!(eval("typeof process").await, json!("function"));
    assert_eq!(eval("typeof globalThis.process.env").await, json!("undefined"));
    // No module loader: std/os cannot be imported.
    let ConfigProblem { field, message: msg } =
        build_problem(JavascriptProcessor::new(cfg("import * as os from 'os'; function process(e) { return e; }")));
    assert_eq!(field, "script");
    assert!(msg.contains("SyntaxError"), "{msg}");
    // Dynamic import is refused (no module loader), even once its
    // promise jobs run.
    let c = cfg(r#"
        var outcome = "pending";
        import("os").then(() => { outcome = "imported"; }, e => { outcome = "refused: " + e; });
        function process(e) { return e; }"#);
    let engine = Engine::new(&c, Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false))).unwrap();
    while engine.context.runtime().is_job_pending() {
        let _ = engine.context.runtime().execute_pending_job();
    }
    let outcome: String = engine.context.with(|ctx| ctx.globals().get("outcome").unwrap());
    assert!(outcome.starts_with("refused: "), "{outcome}");
    assert!(outcome.contains("os"), "{outcome}");
}

#[tokio::test]
async fn script_errors_name_the_event() {
    let mut p =
        js("function process(events) { return events.map(e => { if (e.after.id === 3) { null.x; } return e; }); }");
    let input = batch(4);
    let key = input[2].idempotency_key();
    let err = p.process(input).await.unwrap_err();
    assert_eq!(err.processor, "javascript");
    assert!(err.message.contains("event #2 of the batch"), "{}", err.message);
    assert!(err.message.contains(&key), "{}", err.message);
    assert!(err.message.contains("TypeError"), "{}", err.message);
    assert!(err.message.contains("script.js"), "stack with the script's line: {}", err.message);
    let err = js("function process(events) { throw 'nope'; }").process(batch(1)).await.unwrap_err();
    assert!(err.message.contains("uncaught \"nope\""), "{}", err.message);
}

#[tokio::test]
async fn bad_results_are_clear_errors() {
    let cases = [
        ("return 5;", "must return an array"),
        ("return [5];", "returned event #0: must be an object"),
        ("return [{op: 'x'}];", "op must be one of"),
        ("return [{after: 'text'}];", "after must be an object or null"),
        ("return [{source: {table: ''}}];", "source.table must be a non-empty string"),
        ("return Promise.resolve(events);", "returned a Promise"),
    ];
    for (body, want) in cases {
        let err = js(&format!("function process(events) {{ {body} }}")).process(batch(1)).await.unwrap_err();
        assert!(err.message.contains(want), "{body}: {}", err.message);
    }
}

#[test]
fn config_check_compiles_the_script() {
    assert!(cfg("function process(e) { return e; }").check().is_ok());
    let ConfigProblem { field, message: msg } = cfg("function process(e) { return e; ").check().unwrap_err();
    assert_eq!(field, "script");
    assert!(msg.contains("SyntaxError"), "{msg}");
    let ConfigProblem { field, message: msg } = cfg("function transform(e) { return e; }").check().unwrap_err();
    assert_eq!(field, "script");
    assert!(msg.contains("global function `process(events)`"), "{msg}");
    let mut c = cfg("function process(e) { return e; }");
    c.timeout_ms = 0;
    assert_eq!(c.check().unwrap_err().field, "timeout_ms");
    c.timeout_ms = 10;
    c.memory_limit_mb = 0;
    assert_eq!(c.check().unwrap_err().field, "memory_limit_mb");
}
