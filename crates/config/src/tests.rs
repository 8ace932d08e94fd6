//! Tests of loading, parsing and validation, with a fake catalog.

use std::time::Duration;

use deltaforge_core::{BatchConfig, CommitPolicy, DeliveryConfig};
use serde_json::json;

use crate::testing::FakeCatalog;
use crate::*;

/// A valid pipeline named `orders` whose `spec` block ends with the sinks,
/// so that `spec` keys can be appended with two-space indentation.
const BASE: &str = "\
apiVersion: deltaforge/v1
kind: Pipeline
metadata:
  name: orders
spec:
  source:
    type: datagen
    config:
      id: dg-orders
      rate: 10
  sinks:
    - type: file
      config:
        id: out
        path: ./out/orders.jsonl
";

fn env(k: &str) -> Option<String> {
    match k {
        "PG_DSN" => Some("postgres://cdc:s3cret@db:5432/shop".into()),
        "RATE" => Some("25".into()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Vec<PipelineSpec>, ConfigErrors> {
    parse_str(text, "test.yaml", &env, &FakeCatalog)
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text) {
        Ok(specs) => panic!("expected errors, got {} spec(s)", specs.len()),
        Err(e) => e.0,
    }
}

/// `BASE` with `extra` appended (spec-level keys, two-space indented).
fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

/// Asserts that exactly one error is about `field` in `pipeline`, that its
/// message contains `msg` and its fix contains `fix`, and that its display
/// names the pipeline, the field and the fix. Returns it.
#[track_caller]
fn expect(errs: &[ConfigError], pipeline: Option<&str>, field: &str, msg: &str, fix: &str) -> ConfigError {
    let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let matching: Vec<&ConfigError> = errs.iter().filter(|e| e.field == field).collect();
    assert_eq!(matching.len(), 1, "want one error at {field}, got:\n{}", all.join("\n"));
    let e = matching[0];
    assert_eq!(e.pipeline.as_deref(), pipeline, "{e}");
    assert!(e.message.contains(msg), "message of {e} lacks {msg:?}");
    assert!(e.fix.contains(fix), "fix of {e} lacks {fix:?}");
    assert!(!e.fix.is_empty());
    let shown = e.to_string();
    if let Some(p) = pipeline {
        assert!(shown.contains(&format!("pipeline {p}: ")), "{shown}");
    }
    assert!(shown.contains(&format!(": {field}: ")), "{shown}");
    assert!(shown.ends_with(&format!("— fix: {}", e.fix)), "{shown}");
    e.clone()
}

/// Like [`expect`] for a single-error text in pipeline `orders`.
#[track_caller]
fn expect_only(text: &str, field: &str, msg: &str, fix: &str) -> ConfigError {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{}", ConfigErrors(errs.clone()));
    expect(&errs, Some("orders"), field, msg, fix)
}

// ---------------------------------------------------------------- valid input

#[test]
fn base_document_is_valid_with_defaults() {
    let specs = parse(BASE).unwrap();
    assert_eq!(specs.len(), 1);
    let s = &specs[0];
    assert_eq!(s.name, "orders");
    assert_eq!(s.tenant, "default");
    assert_eq!(s.origin, "test.yaml");
    assert_eq!(s.source.kind, "datagen");
    assert_eq!(s.source.id, "dg-orders");
    assert_eq!(s.source.config.get("id"), Some(&json!("dg-orders")));
    assert!(s.processors.is_empty());
    assert_eq!(s.sinks.len(), 1);
    assert!(s.sinks[0].required);
    assert_eq!(s.sinks[0].delivery, DeliveryConfig::default());
    assert_eq!(s.batch, BatchConfig::default());
    assert_eq!(s.commit_policy, CommitPolicy::All);
}

#[test]
fn valid_multi_document_file() {
    let text = format!(
        "# two pipelines\n{}---\n{}\n---\n# trailing empty document\n---\n",
        BASE,
        "\
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: pg-orders, tenant: acme }
spec:
  source:
    type: postgres
    config: { id: pg-1, dsn: \"${PG_DSN}\", tables: [public.orders] }
  processors:
    - type: filter
      config: { expr: \"op != 'd'\" }
  sinks:
    - type: file
      config:
        id: out
        path: ./out/${db}/${table}.jsonl
        required: false
        timeout_ms: 5000
        retry_initial_ms: 50
        retry_max_ms: 2000
        max_attempts: 3
        max_bytes: 1048576
    - type: stdout
      config: { id: console, format: json }
  batch: { max_events: 500, max_bytes: 65536, max_ms: 250, respect_source_tx: false, max_inflight: 4 }
  commit_policy: { quorum: 2 }"
    );
    let specs = parse(&text).unwrap();
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].name, "orders");
    let p = &specs[1];
    assert_eq!((p.name.as_str(), p.tenant.as_str()), ("pg-orders", "acme"));
    assert_eq!(p.source.config["dsn"], json!("postgres://cdc:s3cret@db:5432/shop"));
    assert_eq!(
        p.processors,
        vec![ComponentSpec {
            kind: "filter".into(),
            config: json!({"expr": "op != 'd'"}).as_object().unwrap().clone(),
        }]
    );
    let file = &p.sinks[0];
    assert_eq!((file.kind.as_str(), file.id.as_str(), file.required), ("file", "out", false));
    assert_eq!(
        file.delivery,
        DeliveryConfig {
            timeout: Duration::from_millis(5000),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(2000),
            max_attempts: 3,
        }
    );
    // Common keys are gone; templates survived env expansion.
    assert_eq!(
        serde_json::Value::Object(file.config.clone()),
        json!({"path": "./out/${db}/${table}.jsonl", "max_bytes": 1048576})
    );
    assert!(p.sinks[1].required);
    assert_eq!(
        p.batch,
        BatchConfig {
            max_events: 500,
            max_bytes: 65536,
            max_wait: Duration::from_millis(250),
            respect_source_tx: false,
            max_inflight: 4,
        }
    );
    assert_eq!(p.commit_policy, CommitPolicy::Quorum(2));
    assert_eq!(p.document["metadata"]["tenant"], json!("acme"));
    assert_eq!(p.redacted_document()["spec"]["source"]["config"]["dsn"], json!("postgres://cdc:***@db:5432/shop"));
}

#[test]
fn commit_policy_forms() {
    for (text, want) in [
        ("all", CommitPolicy::All),
        ("required", CommitPolicy::Required),
        ("quorum(1)", CommitPolicy::Quorum(1)),
        ("\"quorum(1)\"", CommitPolicy::Quorum(1)),
        ("{ quorum: 1 }", CommitPolicy::Quorum(1)),
    ] {
        let specs = parse(&with(&format!("  commit_policy: {text}\n"))).unwrap();
        assert_eq!(specs[0].commit_policy, want, "{text}");
    }
}

#[test]
fn empty_text_and_comment_only_text_yield_no_pipelines() {
    assert!(parse("").unwrap().is_empty());
    assert!(parse("# nothing\n---\n").unwrap().is_empty());
}

#[test]
fn env_expansion_feeds_values_and_defaults() {
    let text = BASE.replace("rate: 10", "rate: ${RATE}\n      count: ${COUNT:-100}");
    let s = &parse(&text).unwrap()[0];
    assert_eq!(s.source.config["rate"], json!(25));
    assert_eq!(s.source.config["count"], json!(100));
    assert_eq!(s.document["spec"]["source"]["config"]["rate"], json!(25));
}

#[test]
fn unset_env_var_is_reported_with_origin_and_line() {
    let text = BASE.replace("rate: 10", "rate: ${NOT_SET_RATE}");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert_eq!((e.origin.as_str(), e.field.as_str()), ("test.yaml", "line 10"));
    assert!(e.message.contains("NOT_SET_RATE"));
    assert_eq!(e.fix, "export NOT_SET_RATE or use ${NOT_SET_RATE:-default}");
}

#[test]
fn yaml_syntax_error_names_origin_and_position() {
    let errs = errors("apiVersion: deltaforge/v1\nkind: [Pipeline\n");
    assert_eq!(errs.len(), 1);
    let e = &errs[0];
    assert_eq!(e.origin, "test.yaml");
    assert!(e.field.starts_with("line 2, column"), "{e}");
    assert!(e.message.starts_with("invalid YAML: "), "{e}");
    assert!(e.fix.contains("YAML syntax"));
}

#[test]
fn duplicate_yaml_keys_are_rejected() {
    let errs = errors(&BASE.replace("kind: Pipeline\n", "kind: Pipeline\nkind: Pipeline\n"));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].message.contains("duplicate mapping key"), "{}", errs[0]);
    assert!(!errs[0].message.contains("DuplicateKeyPolicy"));
    assert_eq!(errs[0].field, "line 3, column 1");
}

#[test]
fn yaml_1_1_booleans_stay_strings() {
    let text = BASE.replace("path: ./out/orders.jsonl", "path: ./out/orders.jsonl\n        required: yes");
    expect_only(&text, "spec.sinks[0].config.required", "expected true or false, found a string", "required: true");
}

// ------------------------------------------------------------ files and dirs

const SECOND: &str = "\
apiVersion: deltaforge/v1
kind: Pipeline
metadata: { name: second }
spec:
  source: { type: datagen, config: { id: dg-second } }
  sinks: [ { type: stdout, config: { id: console } } ]
";

#[test]
fn load_path_reads_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, format!("{BASE}---\n{SECOND}")).unwrap();
    let specs = load_path(&file, &env, &FakeCatalog).unwrap();
    assert_eq!(specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["orders", "second"]);
    assert_eq!(specs[0].origin, file.display().to_string());
}

#[test]
fn directory_with_two_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yaml"), BASE).unwrap();
    std::fs::write(dir.path().join("a.yml"), SECOND).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not: yaml: at all: [").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
    std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
    std::fs::write(dir.path().join("sub.yaml").join("x.yaml"), "garbage: [").unwrap();
    let specs = load_path(dir.path(), &env, &FakeCatalog).unwrap();
    assert_eq!(specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["second", "orders"]);
    assert_eq!(specs[0].origin, dir.path().join("a.yml").display().to_string());
    assert_eq!(specs[1].origin, dir.path().join("b.yaml").display().to_string());
}

#[test]
fn empty_directory_yields_no_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_path(dir.path(), &env, &FakeCatalog).unwrap().is_empty());
}

#[test]
fn missing_path_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let errs = load_path(&missing, &env, &FakeCatalog).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.0[0].origin, missing.display().to_string());
    assert!(errs.0[0].message.contains("cannot read"));
}

#[test]
fn errors_of_all_files_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), BASE.replace("rate: 10", "rate: ${UNSET_A}")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), SECOND.replace("second", "Second")).unwrap();
    std::fs::write(dir.path().join("c.yaml"), "kind: [\n").unwrap();
    let errs = load_path(dir.path(), &env, &FakeCatalog).unwrap_err();
    let origins: Vec<&str> = errs.iter().map(|e| e.origin.as_str()).collect();
    let names = ["a.yaml", "b.yaml", "c.yaml"].map(|n| dir.path().join(n).display().to_string());
    assert_eq!(origins, names.iter().map(String::as_str).collect::<Vec<_>>(), "{errs}");
}

// ------------------------------------------------------- cross-pipeline checks

#[test]
fn duplicate_pipeline_name_across_files_names_both_origins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), BASE).unwrap();
    std::fs::write(dir.path().join("b.yaml"), SECOND.replace("second", "orders")).unwrap();
    let errs = load_path(dir.path(), &env, &FakeCatalog).unwrap_err().0;
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    let e = expect(&errs, Some("orders"), "metadata.name", "duplicate pipeline name `orders`", "unique metadata.name");
    assert_eq!(e.origin, b.display().to_string());
    assert!(e.message.contains(&a.display().to_string()) && e.message.contains(&b.display().to_string()));
}

#[test]
fn duplicate_pipeline_name_in_one_file() {
    let errs = errors(&format!("{BASE}---\n{}", BASE.replace("dg-orders", "dg-other")));
    assert_eq!(errs.len(), 1);
    expect(&errs, Some("orders"), "metadata.name", "duplicate pipeline name", "unique metadata.name");
}

#[test]
fn duplicate_source_id_across_pipelines() {
    let errs = errors(&format!("{BASE}---\n{}", SECOND.replace("dg-second", "dg-orders")));
    assert_eq!(errs.len(), 1);
    let e = expect(
        &errs,
        Some("second"),
        "spec.source.config.id",
        "duplicate source id `dg-orders`: already used by pipeline `orders`",
        "unique config.id",
    );
    assert!(e.to_string().contains("checkpoint"));
}

#[test]
fn check_unique_compares_running_and_new_specs() {
    let running = parse(BASE).unwrap();
    let mut new = parse_str(&SECOND.replace("dg-second", "dg-orders"), "<api>", &env, &FakeCatalog).unwrap();
    assert!(check_unique(&running).is_ok());
    let mut all = running.clone();
    all.append(&mut new);
    let errs = check_unique(&all).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs.0[0].origin, "<api>");
    assert_eq!(errs.0[0].field, "spec.source.config.id");
    all.push(all[0].clone());
    assert_eq!(check_unique(&all).unwrap_err().len(), 3);
}

#[test]
fn duplicate_sink_ids_within_a_pipeline() {
    let text = with("    - type: stdout\n      config: { id: out }\n");
    expect_only(&text, "spec.sinks[1].config.id", "duplicate sink id `out`", "unique config.id");
}

#[test]
fn quorum_larger_than_the_number_of_sinks() {
    expect_only(&with("  commit_policy: quorum(2)\n"), "spec.commit_policy", "only 1 sink", "at most 1");
    expect_only(&with("  commit_policy: { quorum: 3 }\n"), "spec.commit_policy", "quorum(3)", "at most 1");
}

#[test]
fn required_policy_without_required_sinks() {
    let text = BASE.replace("path: ./out/orders.jsonl", "path: ./out/orders.jsonl\n        required: false")
        + "  commit_policy: required\n";
    expect_only(&text, "spec.commit_policy", "every sink says `required: false`", "required: true");
}

#[test]
fn all_errors_of_all_pipelines_are_collected() {
    let bad1 = BASE.replace("kind: Pipeline", "kind: Pipe") + "  batch: { max_events: 0, max_inflight: 65 }\n";
    let bad2 = SECOND.replace("type: stdout", "type: stdot").replace("apiVersion: deltaforge/v1", "apiVersion: v2");
    let errs = errors(&format!("{bad1}---\n{bad2}"));
    let got: Vec<(Option<&str>, &str)> = errs.iter().map(|e| (e.pipeline.as_deref(), e.field.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (Some("orders"), "kind"),
            (Some("orders"), "spec.batch.max_events"),
            (Some("orders"), "spec.batch.max_inflight"),
            (Some("second"), "apiVersion"),
            (Some("second"), "spec.sinks[0].type"),
        ]
    );
}

// --------------------------------------------------------------- document shape

#[test]
fn wrong_api_version() {
    expect_only(
        &BASE.replace("deltaforge/v1", "deltaforge/v2"),
        "apiVersion",
        "unsupported apiVersion a string; expected `deltaforge/v1`",
        "apiVersion: deltaforge/v1",
    );
}

#[test]
fn missing_api_version() {
    expect_only(&BASE.replace("apiVersion: deltaforge/v1\n", ""), "apiVersion", "missing", "apiVersion: deltaforge/v1");
}

#[test]
fn wrong_kind() {
    expect_only(&BASE.replace("kind: Pipeline", "kind: Job"), "kind", "expected `Pipeline`", "kind: Pipeline");
}

#[test]
fn document_that_is_not_a_mapping() {
    let errs = errors("- just\n- a list\n");
    assert_eq!(errs.len(), 1);
    expect(&errs, None, "document", "expected a mapping", "apiVersion: deltaforge/v1");
}

#[test]
fn missing_metadata() {
    let text = BASE.replace("metadata:\n  name: orders\n", "");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    expect(&errs, None, "metadata", "missing required key", "name: <pipeline-name>");
}

#[test]
fn missing_pipeline_name_points_at_the_document() {
    let text = format!("{SECOND}---\n{}", BASE.replace("  name: orders\n", "  tenant: acme\n"));
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    let e = expect(&errs, None, "metadata.name", "missing required key (document 2 of 2)", "name: <pipeline-name>");
    assert!(!e.to_string().contains("pipeline "), "{e}");
}

#[test]
fn invalid_pipeline_name() {
    let text = BASE.replace("name: orders", "name: Orders_CDC");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1);
    expect(&errs, None, "metadata.name", "lower-case", "name: orders-cdc");
    assert!(!errs[0].to_string().contains("Orders_CDC"), "the value is never quoted: {}", errs[0]);
}

#[test]
fn pipeline_name_too_long() {
    let long = "a".repeat(64);
    let errs = errors(&BASE.replace("name: orders", &format!("name: {long}")));
    expect(&errs, None, "metadata.name", "1-63", "name: orders-cdc");
    // The name is not quoted back (a value may be a secret).
    assert!(errs.iter().all(|e| !e.to_string().contains(&long)), "{errs:?}");
}

#[test]
fn invalid_tenant() {
    expect_only(
        &BASE.replace("  name: orders\n", "  name: orders\n  tenant: ''\n"),
        "metadata.tenant",
        "non-empty string",
        "tenant:",
    );
}

#[test]
fn missing_spec() {
    let text = BASE.split("spec:").next().unwrap().to_string();
    expect_only(&text, "spec", "missing required key", "add `spec:`");
}

#[test]
fn missing_source() {
    let text = BASE.replace("  source:\n    type: datagen\n    config:\n      id: dg-orders\n      rate: 10\n", "");
    expect_only(&text, "spec.source", "missing required key", "add `source:`");
}

#[test]
fn unknown_source_type_lists_known_types() {
    expect_only(
        &BASE.replace("type: datagen", "type: kafka"),
        "spec.source.type",
        "unknown source type; known: datagen, postgres",
        "use one of: datagen, postgres",
    );
}

#[test]
fn misspelled_source_type_gets_a_suggestion() {
    expect_only(
        &BASE.replace("type: datagen", "type: postgre"),
        "spec.source.type",
        "known: datagen, postgres",
        "did you mean `postgres`?",
    );
}

#[test]
fn source_config_must_be_a_mapping() {
    let text = BASE.replace("    config:\n      id: dg-orders\n      rate: 10\n", "    config: [dg-orders]\n");
    expect_only(&text, "spec.source.config", "expected a mapping, found a list", "id: <unique-source-id>");
}

#[test]
fn missing_source_id() {
    expect_only(
        &BASE.replace("      id: dg-orders\n", ""),
        "spec.source.config.id",
        "missing required key",
        "id: <unique-source-id>",
    );
}

#[test]
fn empty_source_id() {
    expect_only(
        &BASE.replace("id: dg-orders", "id: \"  \""),
        "spec.source.config.id",
        "must not be empty",
        "checkpoint key",
    );
}

#[test]
fn non_string_source_id() {
    expect_only(
        &BASE.replace("id: dg-orders", "id: 42"),
        "spec.source.config.id",
        "expected a string, found a number",
        "id:",
    );
}

#[test]
fn source_config_error_from_catalog() {
    expect_only(
        &BASE.replace("rate: 10", "rate: fast"),
        "spec.source.config.rate",
        "invalid type: \"fast\", expected u64",
        "correct spec.source.config.rate for source type `datagen`",
    );
}

#[test]
fn unknown_source_config_key_from_catalog() {
    expect_only(
        &BASE.replace("rate: 10", "rat: 10"),
        "spec.source.config.rat",
        "unknown field `rat`",
        "`datagen` source",
    );
}

#[test]
fn processors_must_be_a_list() {
    expect_only(&with("  processors: filter\n"), "spec.processors", "expected a list", "processors: []");
}

#[test]
fn unknown_processor_type() {
    expect_only(
        &with("  processors:\n    - type: js\n"),
        "spec.processors[0].type",
        "unknown processor type; known: filter",
        "use one of: filter",
    );
}

#[test]
fn processor_config_error_from_catalog() {
    expect_only(
        &with("  processors:\n    - type: filter\n"),
        "spec.processors[0].config.expr",
        "missing field `expr`",
        "processor type `filter`",
    );
}

#[test]
fn missing_sinks() {
    let text = BASE.split("  sinks:").next().unwrap().to_string();
    expect_only(&text, "spec.sinks", "at least one sink", "add `sinks:`");
}

#[test]
fn empty_sinks() {
    let text = BASE.split("  sinks:").next().unwrap().to_string() + "  sinks: []\n";
    expect_only(&text, "spec.sinks", "must list at least one sink", "add `sinks:`");
}

#[test]
fn unknown_sink_type() {
    expect_only(
        &BASE.replace("type: file", "type: s3"),
        "spec.sinks[0].type",
        "unknown sink type; known: file, stdout, discard",
        "use one of: file, stdout, discard",
    );
}

#[test]
fn missing_sink_config() {
    expect_only(&with("    - type: discard\n"), "spec.sinks[1].config", "missing required key", "id: <sink-id>");
}

#[test]
fn missing_sink_id() {
    expect_only(
        &BASE.replace("        id: out\n", ""),
        "spec.sinks[0].config.id",
        "missing required key",
        "id: <sink-id>",
    );
}

#[test]
fn sink_required_must_be_a_bool() {
    let text = BASE.replace("id: out", "id: out\n        required: \"true\"");
    expect_only(&text, "spec.sinks[0].config.required", "expected true or false", "required: true");
}

#[test]
fn sink_delivery_keys_must_be_positive() {
    let text = BASE.replace("id: out", "id: out\n        timeout_ms: 0\n        max_attempts: -1");
    let errs = errors(&text);
    assert_eq!(errs.len(), 2);
    expect(&errs, Some("orders"), "spec.sinks[0].config.timeout_ms", "positive integer", "default 30000");
    expect(&errs, Some("orders"), "spec.sinks[0].config.max_attempts", "positive integer", "at least 1");
}

#[test]
fn sink_retry_initial_above_max() {
    let text = BASE.replace("id: out", "id: out\n        retry_initial_ms: 5000\n        retry_max_ms: 1000");
    expect_only(&text, "spec.sinks[0].config.retry_initial_ms", "exceeds retry_max_ms", "at most retry_max_ms");
}

#[test]
fn sink_config_error_from_catalog() {
    expect_only(
        &BASE.replace("path: ./out/orders.jsonl", "paht: x"),
        "spec.sinks[0].config.paht",
        "unknown field `paht`",
        "sink type `file`",
    );
}

#[test]
fn commit_policy_unknown_string() {
    expect_only(&with("  commit_policy: majority\n"), "spec.commit_policy", "unknown commit policy", "quorum(n)");
}

#[test]
fn commit_policy_quorum_zero() {
    expect_only(&with("  commit_policy: quorum(0)\n"), "spec.commit_policy", "positive integer", "n ≥ 1");
}

#[test]
fn commit_policy_mapping_quorum_invalid() {
    expect_only(&with("  commit_policy: { quorum: two }\n"), "spec.commit_policy.quorum", "positive integer", "n ≥ 1");
}

#[test]
fn commit_policy_wrong_type() {
    expect_only(&with("  commit_policy: [all]\n"), "spec.commit_policy", "expected a string or a mapping", "`all`");
}

// ------------------------------------------------------------------- batch

#[test]
fn batch_max_events_out_of_range() {
    expect_only(
        &with("  batch: { max_events: 0 }\n"),
        "spec.batch.max_events",
        "positive integer",
        "between 1 and 1000000",
    );
    expect_only(
        &with("  batch: { max_events: 1000001 }\n"),
        "spec.batch.max_events",
        "no larger than 1000000",
        "between 1 and 1000000",
    );
}

#[test]
fn batch_max_bytes_too_small() {
    expect_only(&with("  batch: { max_bytes: 1023 }\n"), "spec.batch.max_bytes", "at least 1024", "at least 1024");
}

#[test]
fn batch_max_ms_out_of_range() {
    expect_only(
        &with("  batch: { max_ms: 3600001 }\n"),
        "spec.batch.max_ms",
        "no larger than 3600000",
        "between 1 and 3600000",
    );
    expect_only(
        &with("  batch: { max_ms: 1.5 }\n"),
        "spec.batch.max_ms",
        "found a fractional number",
        "between 1 and 3600000",
    );
}

#[test]
fn batch_respect_source_tx_not_bool() {
    expect_only(
        &with("  batch: { respect_source_tx: sometimes }\n"),
        "spec.batch.respect_source_tx",
        "expected true or false",
        "true (the default) or false",
    );
}

#[test]
fn batch_max_inflight_out_of_range() {
    expect_only(
        &with("  batch: { max_inflight: 65 }\n"),
        "spec.batch.max_inflight",
        "from 1 to 64",
        "between 1 and 64",
    );
    expect_only(&with("  batch: { max_inflight: 0 }\n"), "spec.batch.max_inflight", "from 1 to 64", "between 1 and 64");
}

#[test]
fn batch_must_be_a_mapping() {
    expect_only(&with("  batch: 100\n"), "spec.batch", "expected a mapping", "max_events");
}

// -------------------------------------------------------------- unknown keys

#[test]
fn unknown_top_level_key() {
    expect_only(
        &format!("{BASE}status: {{}}\n"),
        "status",
        "unknown key `status`; allowed: apiVersion, kind, metadata, spec",
        "remove `status`",
    );
}

#[test]
fn unknown_metadata_key() {
    expect_only(
        &BASE.replace("  name: orders\n", "  name: orders\n  tenent: acme\n"),
        "metadata.tenent",
        "unknown key `tenent`; allowed: name, tenant",
        "did you mean `tenant`?",
    );
}

#[test]
fn unknown_spec_key() {
    expect_only(
        &with("  sink: []\n"),
        "spec.sink",
        "unknown key `sink`; allowed: source, processors, sinks, batch, commit_policy",
        "did you mean `sinks`?",
    );
}

#[test]
fn unknown_source_key() {
    expect_only(
        &BASE.replace("    type: datagen\n", "    type: datagen\n    confg: {}\n"),
        "spec.source.confg",
        "unknown key `confg`; allowed: type, config",
        "did you mean `config`?",
    );
}

#[test]
fn unknown_processor_key() {
    expect_only(
        &with("  processors:\n    - type: filter\n      config: { expr: x }\n      when: always\n"),
        "spec.processors[0].when",
        "unknown key `when`; allowed: type, config",
        "remove `when`",
    );
}

#[test]
fn unknown_sink_entry_key() {
    expect_only(
        &BASE.replace("    - type: file\n", "    - type: file\n      required: true\n"),
        "spec.sinks[0].required",
        "unknown key `required`; allowed: type, config",
        "remove `required`",
    );
}

#[test]
fn unknown_batch_key_with_suggestion() {
    let e = expect_only(
        &with("  batch: { max_event: 10 }\n"),
        "spec.batch.max_event",
        "unknown key `max_event`; allowed: max_events, max_bytes, max_ms, respect_source_tx, max_inflight",
        "did you mean `max_events`?",
    );
    assert!(e.to_string().contains("pipeline orders: spec.batch.max_event: unknown key"));
}

#[test]
fn unknown_commit_policy_mapping_key() {
    expect_only(
        &with("  commit_policy: { quorum: 1, quorom: 1 }\n"),
        "spec.commit_policy.quorom",
        "allowed: quorum",
        "did you mean `quorum`?",
    );
}

#[test]
fn dlq_is_off_by_default_and_parsed_when_enabled() {
    assert_eq!(parse(BASE).unwrap()[0].dlq, None);
    let spec = &parse(&with("  dlq: { capacity: 50, overflow: drop_oldest }\n")).unwrap()[0];
    assert_eq!(
        spec.dlq,
        Some(deltaforge_core::DlqConfig { capacity: 50, overflow: deltaforge_core::DlqOverflow::DropOldest })
    );
    assert_eq!(parse(&with("  dlq: { enabled: false }\n")).unwrap()[0].dlq, None);
}

#[test]
fn dlq_bad_values_are_rejected() {
    let errs = errors(&with("  dlq: { overflow: spill }\n"));
    expect(
        &errs,
        Some("orders"),
        "spec.dlq.overflow",
        "unknown overflow policy",
        "block (default), drop_oldest, reject",
    );
    let errs = errors(&with("  dlq: { capacity: 0 }\n"));
    expect(&errs, Some("orders"), "spec.dlq.capacity", "positive integer", "spec.dlq.capacity");
    let errs = errors(&with("  dlq: { enable: true }\n"));
    expect(&errs, Some("orders"), "spec.dlq.enable", "unknown key `enable`", "enabled");
}

/// Issue 14: a secret-looking value in a wrong-typed or out-of-range field
/// gives an error that names the field and what is expected, and never
/// contains the value (errors used to quote up to 40 characters of it).
#[test]
fn errors_never_quote_a_value() {
    const SECRET: &str = "sk_live_9f8e7d6c5b4a39281706";
    let cases = [
        (with(&format!("  batch: {{ max_events: {SECRET} }}\n")), "spec.batch.max_events", "positive integer"),
        (with("  batch: { max_events: 98765432109876 }\n"), "spec.batch.max_events", "no larger than"),
        (
            with(&format!("  batch: {{ respect_source_tx: {SECRET} }}\n")),
            "spec.batch.respect_source_tx",
            "true or false",
        ),
        (with(&format!("  commit_policy: {SECRET}\n")), "spec.commit_policy", "unknown commit policy"),
        (with(&format!("  commit_policy: quorum({SECRET})\n")), "spec.commit_policy", "positive integer"),
        (BASE.replace("type: file", &format!("type: {SECRET}")), "spec.sinks[0].type", "unknown sink type"),
        (
            BASE.replace("path: ./out/orders.jsonl", &format!("path: ./o\n        required: {SECRET}")),
            "spec.sinks[0].config.required",
            "true or false",
        ),
        (BASE.replace("name: orders", &format!("name: {SECRET}")), "metadata.name", "invalid pipeline name"),
        (BASE.replace("deltaforge/v1", SECRET), "apiVersion", "unsupported apiVersion"),
    ];
    for (text, field, what) in cases {
        let errs = errors(&text);
        let shown = ConfigErrors(errs.clone()).to_string();
        assert!(errs.iter().any(|e| e.field == field && e.message.contains(what)), "{field} / {what}:\n{shown}");
        for piece in [SECRET, "9f8e7d6c", "98765432109876"] {
            assert!(!shown.contains(piece), "{piece} quoted:\n{shown}");
        }
    }
}
