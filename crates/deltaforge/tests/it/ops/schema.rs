//! The JSON Schema of a pipeline spec (`deltaforge schema`): the committed
//! `docs/pipeline.schema.json` is the command's current output, every
//! example in `examples/` is valid against it (after the same environment
//! expansion, with no variable set, and YAML parsing as the loader's), and
//! for an unknown key at every level the schema rejects what
//! `deltaforge validate` rejects, while both accept the valid specs.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{Pipeline, BIN};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `deltaforge schema`'s output.
fn printed_schema() -> String {
    let o = std::process::Command::new(BIN).arg("schema").output().unwrap_or_else(|e| panic!("running {BIN}: {e}"));
    assert!(o.status.success(), "deltaforge schema failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).expect("UTF-8")
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&printed_schema()).expect("the schema is JSON");
    jsonschema::draft7::new(&schema).expect("the schema is a valid draft-07 schema")
}

/// The schema's complaints about `doc` (empty when valid).
fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// `deltaforge validate --config {path}`: (success, output).
fn validate(path: &Path) -> (bool, String) {
    let o = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("running {BIN}: {e}"));
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// The YAML documents of a spec file as the loader reads them: `${VAR}`
/// expanded with an empty environment (so every default applies), then
/// YAML 1.2 parsing with the loader's options.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let origin = path.display().to_string();
    let expanded = deltaforge_config::expand_env(&text, &origin, &|_| None)
        .unwrap_or_else(|e| panic!("{origin}: expanding with no variable set: {e}"));
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.leading_zero_numbers_as_strings = true;
    serde_saphyr::from_multiple_with_options(&expanded, o).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

#[test]
fn committed_schema_is_current() {
    let committed = std::fs::read_to_string(repo().join("docs/pipeline.schema.json")).unwrap_or_default();
    assert!(
        committed == printed_schema(),
        "docs/pipeline.schema.json is stale (a config type, the registry or the spec vocabulary changed): \
         regenerate it with `cargo run -p deltaforge -- schema > docs/pipeline.schema.json` \
         (that is, `deltaforge schema > docs/pipeline.schema.json`) and commit it"
    );
}

#[test]
fn every_example_validates_against_the_schema() {
    let v = validator();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("example");
        let first = text.lines().next().unwrap_or_default();
        if first != "# yaml-language-server: $schema=../docs/pipeline.schema.json" {
            failures.push(format!("{}: the first line is not the $schema comment: {first:?}", f.display()));
        }
        for doc in documents(f) {
            let errors = schema_errors(&v, &doc);
            if !errors.is_empty() {
                failures.push(format!("{}:\n  {}", f.display(), errors.join("\n  ")));
            }
        }
    }
    assert!(failures.is_empty(), "examples the schema rejects:\n{}", failures.join("\n"));
}

/// Valid specs covering every level the test adds keys to: a processor, a
/// batch, a dlq, and sinks with the common keys.
fn good_specs(dir: &Path) -> Vec<Value> {
    let out = dir.join("out.jsonl");
    let datagen = Pipeline::new("schema-good-datagen")
        .tenant("acme")
        .source("datagen", json!({"id": "schema-good-datagen", "rate": 10, "count": 100}))
        .processor(json!({"type": "filter", "config": {"ops": ["c"]}}))
        .file_sink("out", &out, json!({"required": true, "timeout_ms": 5000}))
        .sink("stdout", json!({"id": "print", "required": false, "max_attempts": 3}))
        .batch(100, 50)
        .commit_policy("quorum(1)")
        .spec("dlq", json!({"enabled": true, "capacity": 100, "overflow": "drop_oldest"}));
    let postgres = Pipeline::new("schema-good-pg")
        .source(
            "postgres",
            json!({
                "id": "schema-good-pg",
                "dsn": "postgres://u:p@127.0.0.1:5432/db",
                "tables": ["public.orders"],
                "snapshot": {"mode": "never"},
            }),
        )
        .processor(json!({"type": "mask", "config": {"rules": [{"table": "public.*", "columns": {"email": "drop"}}]}}))
        .sink(
            "kafka",
            json!({"id": "k", "brokers": ["127.0.0.1:9092"], "topic": "cdc.${table}", "envelope": "debezium"}),
        )
        .batch(10, 10)
        .commit_policy("all");
    vec![datagen.to_value(), postgres.to_value()]
}

/// Both `deltaforge validate` and the schema on one document.
fn verdicts(v: &jsonschema::Validator, doc: &Value, path: &Path) -> (bool, String, Vec<String>) {
    std::fs::write(path, serde_json::to_string_pretty(doc).expect("JSON")).expect("writing the spec");
    let (ok, out) = validate(path);
    (ok, out, schema_errors(v, doc))
}

#[test]
fn unknown_keys_are_rejected_by_both_and_good_specs_accepted_by_both() {
    let v = validator();
    let dir = tempfile::tempdir().unwrap();
    let spec_file = dir.path().join("pipeline.yaml");
    // The JSON pointers of every structural level, and of each component's config.
    let levels = [
        "",
        "/metadata",
        "/spec",
        "/spec/source",
        "/spec/source/config",
        "/spec/source/config/snapshot",
        "/spec/processors/0",
        "/spec/processors/0/config",
        "/spec/sinks/0",
        "/spec/sinks/0/config",
        "/spec/sinks/1/config",
        "/spec/batch",
        "/spec/dlq",
    ];
    let mut failures = Vec::new();
    for good in good_specs(dir.path()) {
        let name = good["metadata"]["name"].as_str().unwrap().to_string();
        let (ok, out, errors) = verdicts(&v, &good, &spec_file);
        if !ok || !errors.is_empty() {
            failures.push(format!("{name}: a valid spec: validate ok={ok} ({out}); schema: {errors:?}"));
        }
        for level in levels {
            let mut doc = good.clone();
            let Some(Value::Object(target)) = doc.pointer_mut(level) else { continue };
            target.insert("unexpected_key".into(), json!(1));
            let (ok, out, errors) = verdicts(&v, &doc, &spec_file);
            if ok {
                failures.push(format!("{name}: deltaforge validate accepted an unknown key at {level:?}"));
            } else if !out.contains("unexpected_key") {
                failures.push(format!("{name}: deltaforge validate failed at {level:?} without naming the key: {out}"));
            }
            if errors.is_empty() {
                failures.push(format!("{name}: the schema accepted an unknown key at {level:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn out_of_range_values_are_rejected_by_both() {
    let v = validator();
    let dir = tempfile::tempdir().unwrap();
    let spec_file = dir.path().join("pipeline.yaml");
    let good = good_specs(dir.path()).remove(0);
    let cases = [
        ("/metadata/name", json!("Not_A_Name")),
        ("/spec/batch/max_events", json!(deltaforge_config::MAX_BATCH_EVENTS + 1)),
        ("/spec/batch", json!({"max_inflight": 0})),
        ("/spec/commit_policy", json!("most")),
        ("/spec/dlq/overflow", json!("spill")),
        ("/spec/sinks/0/config/id", json!("  ")),
        ("/spec/sinks/0/config/timeout_ms", json!(0)),
        ("/spec/source/type", json!("oracle")),
        ("/apiVersion", json!("deltaforge/v2")),
    ];
    let mut failures = Vec::new();
    for (pointer, value) in cases {
        let mut doc = good.clone();
        *doc.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer} in the good spec")) = value.clone();
        let (ok, _, errors) = verdicts(&v, &doc, &spec_file);
        if ok || errors.is_empty() {
            failures.push(format!("{pointer} = {value}: validate ok={ok}, schema errors {errors:?}"));
        }
    }
    assert!(failures.is_empty(), "values only one of them rejects:\n{}", failures.join("\n"));
}
