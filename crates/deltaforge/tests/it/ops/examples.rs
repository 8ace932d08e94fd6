//! Every file in `examples/` passes `deltaforge validate` as shipped (each
//! needs no environment variable: they all have defaults), one by one and
//! all together (so names and source ids are unique across them). A new
//! example is checked without touching this test.

use std::path::PathBuf;

use crate::support::BIN;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// `deltaforge validate --config {path}` with none of the examples'
/// variables set; returns (success, output).
fn validate(path: &std::path::Path) -> (bool, String) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["validate", "--config"]).arg(path);
    for var in
        ["PG_DSN", "MYSQL_DSN", "KAFKA_BROKERS", "REDIS_URI", "NATS_URL", "WEBHOOK_URL", "DEMO_RATE", "DEMO_COUNT"]
    {
        cmd.env_remove(var);
    }
    let o = cmd.output().unwrap_or_else(|e| panic!("running {BIN}: {e}"));
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn every_example_validates() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "expected the 15 source × sink examples, found {files:?}");
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let (ok, out) = validate(f);
            (!ok).then(|| format!("{}:\n{out}", f.display()))
        })
        .collect();
    assert!(failures.is_empty(), "examples that do not validate:\n{}", failures.join("\n"));

    let (ok, out) = validate(&examples_dir());
    assert!(ok, "examples/ as one config (unique names and source ids):\n{out}");
}

#[test]
fn every_example_is_named_in_the_readme() {
    let readme = std::fs::read_to_string(examples_dir().join("../README.md")).expect("README.md");
    for entry in std::fs::read_dir(examples_dir()).expect("examples/") {
        let name = entry.expect("dir entry").file_name().to_string_lossy().into_owned();
        assert!(
            readme.contains(&format!("examples/{name}")) || readme.contains(&name),
            "README.md does not name {name}"
        );
    }
}
