//! REST API over real HTTP against the real binary: every route, the
//! error cases (401, 404, 400 naming the field, 409 while stopping, 413),
//! and a checkpoint reset that makes a datagen pipeline re-deliver from its
//! first event.

use std::path::Path;
use std::time::Duration;

use crate::support::spec::write_all;
use crate::support::{free_port, http, http_json, read_jsonl, wait_for, Deltaforge, Pipeline, RunArgs};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-token";

struct Instance {
    df: Deltaforge,
    api: String,
}

impl Instance {
    fn start(dir: &Path, pipelines: &[Pipeline], envs: &[(&str, &str)]) -> Instance {
        let cfg = write_all(dir.join("pipelines.yaml"), pipelines);
        let (args, api, _metrics) = RunArgs::new(&cfg, &dir.join("df.db")).free_ports();
        let mut all_envs = vec![("DELTAFORGE_API_TOKEN", TOKEN)];
        all_envs.extend_from_slice(envs);
        let df = args.opt("--shutdown-grace-secs", "30").start(&dir.join("df.log"), &all_envs);
        let inst = Instance { df, api };
        wait_for(Duration::from_secs(30), || inst.call("GET", "/health", None).ok().filter(|(s, _)| *s == 200))
            .unwrap_or_else(|| panic!("API did not come up\n{}", inst.df.log_text()));
        inst
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, Value)> {
        http_json(&self.api, method, path, Some(TOKEN), body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        self.call(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.df.log_text()))
    }

    fn state(&self, name: &str) -> String {
        self.ok("GET", &format!("/pipelines/{name}"), None).1["state"].as_str().unwrap_or("").to_string()
    }

    fn wait_state(&self, name: &str, state: &str) {
        wait_for(Duration::from_secs(30), || (self.state(name) == state).then_some(()))
            .unwrap_or_else(|| panic!("{name} never became {state} (is {})\n{}", self.state(name), self.df.log_text()));
    }
}

/// A datagen pipeline of tenant `t1` with `source` as the source config
/// (sinks added by the caller).
fn pipeline(name: &str, source: Value) -> Pipeline {
    Pipeline::new(name).tenant("t1").source("datagen", source).batch(200, 20)
}

/// The `audit` pipeline created over the API, at `rate`.
fn audit(out: &Path, rate: Value) -> Pipeline {
    pipeline("audit", json!({ "id": "dg-audit", "rate": rate })).file_sink("a", out, Value::Null)
}

/// `audit(out, 100)` as hand-written YAML. Kept as literal text on purpose:
/// the test posts it to check that the API accepts a YAML body (the spec
/// builder renders JSON, which the JSON create below covers).
fn audit_yaml(out: &Path) -> String {
    format!(
        r#"apiVersion: deltaforge/v1
kind: Pipeline
metadata: {{ name: audit, tenant: t1 }}
spec:
  source: {{ type: datagen, config: {{ id: dg-audit, rate: 100 }} }}
  sinks: [ {{ type: file, config: {{ id: a, path: {} }} }} ]
  batch: {{ max_events: 200, max_ms: 20 }}
"#,
        out.display()
    )
}

fn discard(p: Pipeline) -> Pipeline {
    p.sink("discard", json!({ "id": "d" }))
}

#[test]
fn every_route_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("orders.jsonl");
    let orders = pipeline("orders", json!({ "id": "dg-orders", "rate": 500 })).file_sink("out", &out, Value::Null);
    let mut inst = Instance::start(dir.path(), &[orders], &[]);

    // Authentication: /health is open, everything else needs the token.
    assert_eq!(http(&inst.api, "GET", "/health", None, None).unwrap().0, 200);
    let (status, body) = http_json(&inst.api, "GET", "/pipelines", None, None).unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["error"], "authentication required");
    let (status, body) = http_json(&inst.api, "GET", "/pipelines", Some("wrong"), None).unwrap();
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid API token");

    // Readiness and listing.
    wait_for(Duration::from_secs(30), || (inst.ok("GET", "/ready", None).0 == 200).then_some(()))
        .unwrap_or_else(|| panic!("never ready\n{}", inst.df.log_text()));
    let (status, list) = inst.ok("GET", "/pipelines", None);
    assert_eq!(status, 200);
    assert_eq!(list["pipelines"][0]["name"], "orders");
    assert_eq!(list["pipelines"][0]["state"], "running");
    assert_eq!(list["pipelines"][0]["spec"]["metadata"]["name"], "orders");

    // Unknown pipeline and unknown route.
    let (status, body) = inst.ok("GET", "/pipelines/nope", None);
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
    for path in ["/pipelines/nope/checkpoint", "/pipelines/nope/schemas"] {
        assert_eq!(inst.ok("GET", path, None).0, 404, "{path}");
    }
    assert_eq!(inst.ok("POST", "/pipelines/nope/stop", None).0, 404);
    assert_eq!(inst.ok("DELETE", "/pipelines/nope/checkpoint", None).0, 404);
    let (status, body) = inst.ok("GET", "/no/such/route", None);
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("no route"), "{body}");
    assert_eq!(inst.ok("PATCH", "/pipelines", None).0, 405);

    // One pipeline with status, checkpoint and redacted spec.
    let view = wait_for(Duration::from_secs(30), || {
        let (_, v) = inst.ok("GET", "/pipelines/orders", None);
        v["checkpoint"]["position"]["seq"].as_u64().filter(|s| *s > 0).map(|_| v)
    })
    .expect("a checkpoint is reported");
    assert_eq!(view["source_id"], "dg-orders");
    assert_eq!(view["source_type"], "datagen");
    assert!(view["events_read"].as_u64().unwrap() > 0);
    let (status, cp) = inst.ok("GET", "/pipelines/orders/checkpoint", None);
    assert_eq!(status, 200);
    assert!(cp["position"]["seq"].as_u64().unwrap() > 0, "{cp}");
    assert!(cp["sinks"]["out"]["seq"].as_u64().is_some(), "{cp}");
    assert!(cp["written_at"].is_string() && cp["lag_seconds"].is_number(), "{cp}");

    // Invalid specs: 400 naming the field; malformed YAML: 400 with the parse error.
    let audit_out = dir.path().join("audit.jsonl");
    let bad = audit(&audit_out, json!(100)).batch(0, 20).text();
    let (status, body) = inst.ok("POST", "/pipelines", Some(&bad));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["detail"]["errors"][0]["field"], "spec.batch.max_events", "{body}");
    let bad_rate = audit(&audit_out, json!("fast")).text();
    let (status, body) = inst.ok("POST", "/pipelines", Some(&bad_rate));
    assert_eq!(status, 400);
    // Component configs are parsed with their field paths: the field itself is named.
    assert_eq!(body["detail"]["errors"][0]["field"], "spec.source.config.rate", "{body}");
    // What is expected is said; the value is never quoted (it may be a secret).
    let message = body["detail"]["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("expected") && !message.contains("fast"), "{body}");
    let typo = pipeline("audit", json!({ "id": "dg-audit", "rat": 5 })).file_sink("a", &audit_out, Value::Null).text();
    let (status, body) = inst.ok("POST", "/pipelines", Some(&typo));
    assert_eq!(status, 400);
    assert!(body["detail"]["errors"][0]["field"].as_str().unwrap().ends_with("rat"), "{body}");
    // Literal text on purpose: a malformed YAML body.
    let (status, body) = inst.ok("POST", "/pipelines", Some("apiVersion: [unclosed"));
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("invalid YAML"), "{body}");
    let (status, body) = inst.ok("POST", "/pipelines", Some(&"x".repeat(2 * 1024 * 1024)));
    assert_eq!(status, 413, "{body}");

    // Create (YAML), duplicate, create (JSON).
    let audit_yaml = audit_yaml(&audit_out);
    let (status, body) = inst.ok("POST", "/pipelines", Some(&audit_yaml));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "audit");
    let (status, body) = inst.ok("POST", "/pipelines", Some(&audit_yaml));
    assert_eq!(status, 400);
    assert!(body.to_string().contains("audit"), "{body}");
    // The builder renders JSON: this body is a JSON document.
    let json_spec = discard(Pipeline::new("from-json").source("datagen", json!({ "id": "dg-json", "rate": 10 })));
    let (status, body) = inst.ok("POST", "/pipelines", Some(&json_spec.text()));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["source_id"], "dg-json");
    wait_for(Duration::from_secs(20), || read_jsonl(&audit_out).len().gt(&0).then_some(()))
        .expect("the created pipeline delivers");

    // Commands.
    let (status, body) = inst.ok("POST", "/pipelines/audit/pause", None);
    assert_eq!((status, body["state"].as_str()), (200, Some("paused")), "{body}");
    let (status, body) = inst.ok("GET", "/ready", None);
    assert_eq!(status, 503);
    assert_eq!(body["detail"]["reasons"][0]["pipeline"], "audit", "{body}");
    let paused_at = read_jsonl(&audit_out).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_jsonl(&audit_out).len(), paused_at, "a paused pipeline delivers nothing");
    assert_eq!(inst.ok("POST", "/pipelines/audit/resume", None).0, 200);
    inst.wait_state("audit", "running");
    wait_for(Duration::from_secs(20), || (read_jsonl(&audit_out).len() > paused_at).then_some(()))
        .expect("resumed pipeline delivers");
    let (status, body) = inst.ok("POST", "/pipelines/audit/stop", None);
    assert_eq!((status, body["state"].as_str()), (200, Some("stopped")), "{body}");
    assert_eq!(inst.ok("POST", "/pipelines/audit/start", None).0, 200);
    inst.wait_state("audit", "running");

    // Replace: new spec, same checkpoint; name mismatch and unknown name refused.
    let replaced = audit(&audit_out, json!(50)).text();
    let (status, body) = inst.ok("PUT", "/pipelines/audit", Some(&replaced));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spec"]["spec"]["source"]["config"]["rate"], 50);
    inst.wait_state("audit", "running");
    let (status, body) = inst.ok("PUT", "/pipelines/orders", Some(&replaced));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("metadata.name"), "{body}");
    assert_eq!(inst.ok("PUT", "/pipelines/ghost", Some(&replaced)).0, 404);

    // Schemas: datagen registers demo.orders.
    let (status, body) = inst.ok("GET", "/pipelines/orders/schemas", None);
    assert_eq!(status, 200);
    let tables = body["tables"].as_array().unwrap();
    assert!(tables.iter().any(|t| t["db"] == "demo" && t["table"] == "orders"), "{body}");
    let (status, body) = inst.ok("GET", "/pipelines/orders/schemas/demo/orders/versions", None);
    assert_eq!(status, 200);
    assert_eq!(body["versions"][0]["version"], 1, "{body}");
    assert!(body["versions"][0].get("checkpoint").is_some(), "{body}");
    assert_eq!(inst.ok("GET", "/pipelines/orders/schemas/demo/nothing/versions", None).0, 404);

    // OpenAPI.
    let (status, doc) = inst.ok("GET", "/openapi.json", None);
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/pipelines/{name}/checkpoint"]["delete"].is_object());

    // Reset while running: the pipeline is stopped, then its checkpoint deleted.
    let (status, body) = inst.ok("DELETE", "/pipelines/orders/checkpoint", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true);
    assert_eq!(body["pipeline"]["state"], "stopped");
    let (_, cp) = inst.ok("GET", "/pipelines/orders/checkpoint", None);
    assert!(cp["position"].is_null(), "{cp}");

    // Delete.
    assert_eq!(inst.ok("DELETE", "/pipelines/from-json", None).0, 200);
    assert_eq!(inst.ok("GET", "/pipelines/from-json", None).0, 404);
    assert_eq!(inst.ok("DELETE", "/pipelines/from-json", None).0, 404);

    inst.df.terminate();
    assert_eq!(inst.df.wait_exit(Duration::from_secs(40)), Some(0), "{}", inst.df.log_text());
}

#[test]
fn reset_then_start_redelivers_from_the_first_event() {
    const COUNT: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let config = [
        pipeline("bounded", json!({ "id": "dg-bounded", "count": COUNT, "rows_per_tx": 3 })).file_sink(
            "out",
            &out,
            Value::Null,
        ),
        // Keeps the process running after the bounded pipeline finishes.
        discard(pipeline("idle", json!({ "id": "dg-idle", "rate": 1 }))),
    ];
    let mut inst = Instance::start(dir.path(), &config, &[]);
    inst.wait_state("bounded", "finished");
    let first: Vec<u64> = read_jsonl(&out).iter().map(|e| e["after"]["id"].as_u64().unwrap()).collect();
    assert_eq!(first, (1..=COUNT).collect::<Vec<_>>());
    let (_, cp) = inst.ok("GET", "/pipelines/bounded/checkpoint", None);
    assert_eq!(cp["position"]["seq"], COUNT, "{cp}");

    let (status, body) = inst.ok("DELETE", "/pipelines/bounded/checkpoint", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], true);
    assert!(inst.ok("GET", "/pipelines/bounded/checkpoint", None).1["position"].is_null());
    // Resetting again finds nothing to delete.
    assert_eq!(inst.ok("DELETE", "/pipelines/bounded/checkpoint", None).1["deleted"], false);

    assert_eq!(inst.ok("POST", "/pipelines/bounded/start", None).0, 200);
    wait_for(Duration::from_secs(60), || (read_jsonl(&out).len() as u64 >= 2 * COUNT).then_some(()))
        .unwrap_or_else(|| panic!("no re-delivery\n{}", inst.df.log_text()));
    inst.wait_state("bounded", "finished");
    let all: Vec<u64> = read_jsonl(&out).iter().map(|e| e["after"]["id"].as_u64().unwrap()).collect();
    assert_eq!(all.len() as u64, 2 * COUNT);
    assert_eq!(all[COUNT as usize..], first[..], "the second run re-delivers from the first event, in order");
    inst.df.terminate();
    assert_eq!(inst.df.wait_exit(Duration::from_secs(40)), Some(0), "{}", inst.df.log_text());
}

#[test]
fn reset_is_refused_while_the_pipeline_is_still_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let flag = dir.path().join("sink.down");
    let fp = format!("sink:stuck={}", flag.display());
    let config = pipeline("stuck", json!({ "id": "dg-stuck", "rate": 200 })).file_sink("stuck", &out, Value::Null);
    let mut inst = Instance::start(dir.path(), &[config], &[("DELTAFORGE_FAILPOINTS", &fp)]);
    wait_for(Duration::from_secs(30), || (!read_jsonl(&out).is_empty()).then_some(())).expect("delivers");
    std::fs::write(&flag, b"down").unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // The sink is down: stop waits for in-flight batches (grace 30 s), so
    // the API answers 202 "stopping" and a reset must be refused.
    let (status, body) = inst.ok("POST", "/pipelines/stuck/stop", None);
    assert_eq!((status, body["state"].as_str()), (202, Some("stopping")), "{body}");
    let (status, body) = inst.ok("DELETE", "/pipelines/stuck/checkpoint", None);
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("still stopping"), "{body}");
    let before = inst.ok("GET", "/pipelines/stuck/checkpoint", None).1;
    assert!(!before["position"].is_null(), "the refused reset deleted nothing");

    // Once the sink recovers the stop completes and the reset goes through.
    std::fs::remove_file(&flag).unwrap();
    inst.wait_state("stuck", "stopped");
    let (status, body) = inst.ok("DELETE", "/pipelines/stuck/checkpoint", None);
    assert_eq!((status, &body["deleted"]), (200, &Value::Bool(true)), "{body}");
    inst.df.terminate();
    assert_eq!(inst.df.wait_exit(Duration::from_secs(40)), Some(0), "{}", inst.df.log_text());
}

#[test]
fn non_loopback_api_without_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = discard(pipeline("x", json!({ "id": "dg-x", "rate": 1 }))).write(dir.path().join("p.yaml"));
    let out = RunArgs::memory(&cfg)
        .opt("--api-addr", &format!("0.0.0.0:{}", free_port()))
        .command()
        .env_remove("DELTAFORGE_API_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-token") && err.contains("--insecure-api"), "{err}");
}
