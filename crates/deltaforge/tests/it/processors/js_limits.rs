//! The JavaScript sandbox's stack limit in the real binary (issue 14): a
//! script that recurses without end at the largest `stack_limit_kb` fails
//! its own pipeline with a stack-limit error, in its `process` function
//! and in its top-level code, and a script nested too deep to parse is a
//! `400` from `POST /pipelines`; through all of it the process keeps
//! serving the API and another pipeline keeps delivering.

use std::path::Path;
use std::time::Duration;

use crate::support::spec::write_all;
use crate::support::{http_json, read_jsonl, wait_for, Deltaforge, Pipeline, RunArgs};
use serde_json::{json, Value};

const TOKEN: &str = "js-limits-token";

fn call(api: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    http_json(api, method, path, Some(TOKEN), body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn javascript(name: &str, script: &str) -> Pipeline {
    Pipeline::new(name)
        .source("datagen", json!({ "id": format!("dg-{name}"), "rate": 20 }))
        .processor(json!({ "type": "javascript", "config": {
            "script": script, "stack_limit_kb": 16384, "memory_limit_mb": 256, "timeout_ms": 30000 } }))
        .sink("discard", json!({ "id": "d" }))
        .batch(10, 20)
}

/// Waits until pipeline `name` reports a last error containing `needle`.
fn wait_error(df: &Deltaforge, api: &str, name: &str, needle: &str) -> Value {
    wait_for(Duration::from_secs(60), || {
        let (_, view) = call(api, "GET", &format!("/pipelines/{name}"), None);
        view["last_error"].as_str().is_some_and(|e| e.contains(needle)).then_some(view)
    })
    .unwrap_or_else(|| {
        let (_, view) = call(api, "GET", &format!("/pipelines/{name}"), None);
        panic!("{name} never reported {needle:?}: {view}\n{}", df.log_text())
    })
}

fn lines(path: &Path) -> usize {
    if path.exists() {
        read_jsonl(path).len()
    } else {
        0
    }
}

#[test]
fn unbounded_recursion_fails_its_pipeline_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("steady.jsonl");
    let steady = Pipeline::new("steady")
        .source("datagen", json!({ "id": "dg-steady", "rate": 200 }))
        .file_sink("out", &out, Value::Null)
        .batch(50, 20);
    let cfg = write_all(dir.path().join("pipelines.yaml"), &[steady]);
    let (args, api, _metrics) = RunArgs::new(&cfg, &dir.path().join("df.db")).free_ports();
    let mut df = args.start(&dir.path().join("df.log"), &[("DELTAFORGE_API_TOKEN", TOKEN)]);
    wait_for(Duration::from_secs(30), || (lines(&out) > 0).then_some(()))
        .unwrap_or_else(|| panic!("steady never delivered\n{}", df.log_text()));

    // Validation: nested too deep to compile at the largest stack limit.
    let deep = format!("var x = {}1{}; function process(e) {{ return e; }}", "[".repeat(300_000), "]".repeat(300_000));
    let (status, body) = call(&api, "POST", "/pipelines", Some(&javascript("deep-parse", &deep).text()));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("script"), "{body}");

    // Run time: in `process`, and in top-level code when the pipeline starts.
    let in_process = "function f(n) { return f(n + 1) + 1; } function process(events) { f(0); return events; }";
    let at_load = "function f(n) { return f(n + 1) + 1; } f(0); function process(events) { return events; }";
    for (name, script) in [("deep-process", in_process), ("deep-load", at_load)] {
        let (status, body) = call(&api, "POST", "/pipelines", Some(&javascript(name, script).text()));
        assert_eq!(status, 201, "{name}: {body}");
    }
    for name in ["deep-process", "deep-load"] {
        let view = wait_error(&df, &api, name, "stack limit of 16384 KB");
        assert_ne!(view["state"], "running", "{view}");
    }

    // The process lives on: the API answers and `steady` keeps delivering.
    let before = lines(&out);
    wait_for(Duration::from_secs(30), || (lines(&out) >= before + 200).then_some(()))
        .unwrap_or_else(|| panic!("steady stopped at {before} lines\n{}", df.log_text()));
    let (status, view) = call(&api, "GET", "/pipelines/steady", None);
    assert_eq!((status, view["state"].as_str()), (200, Some("running")), "{view}");
    df.terminate();
}
