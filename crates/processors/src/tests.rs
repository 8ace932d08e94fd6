//! The processors on the component contract: configs read with
//! `parse_config` name the nested field at fault, checks go through
//! `ComponentConfig`, and `metered` keeps the processor's name.

use deltaforge_core::component::{check_config, parse_config, BuildError};
use deltaforge_core::ConfigProblem;
use serde_json::{json, Map, Value};

use crate::{metered, FilterConfig, FilterProcessor, FlattenConfig, FlattenProcessor, MaskConfig};

fn map(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn check_names_the_nested_field_at_fault() {
    let ConfigProblem { field, message: msg } =
        check_config::<MaskConfig>(&map(json!({"rules": [{"table": "a.b", "columns": {"x": "hsh"}}]}))).unwrap_err();
    assert_eq!(field, "rules[0].columns.x");
    // The field is named; the value is never quoted (issue 14).
    assert!(!msg.contains("hsh"), "{msg}");
    assert!(msg.contains("expected"), "{msg}");
}

#[test]
fn check_rejects_unknown_keys() {
    let ConfigProblem { field, message: msg } = check_config::<FilterConfig>(&map(json!({"opz": ["c"]}))).unwrap_err();
    assert_eq!(field, "opz", "{msg}");
}

#[test]
fn metered_keeps_the_name_and_build_errors_name_the_field() {
    let cfg = parse_config(&map(json!({"name": "only-inserts", "ops": ["c"]}))).unwrap();
    let p = metered(FilterProcessor::new(cfg).unwrap());
    assert_eq!(p.name(), "only-inserts");
    let cfg: FlattenConfig = parse_config(&map(json!({"max_depth": 0}))).unwrap();
    match FlattenProcessor::new(cfg) {
        Err(BuildError::Config(p)) => assert_eq!(p.field, "max_depth"),
        other => panic!("expected a config error, got {other:?}"),
    }
}
