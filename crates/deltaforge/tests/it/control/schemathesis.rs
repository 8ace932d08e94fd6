//! Property-based API fuzzing: schemathesis (installed with pip when
//! missing) generates requests from `/openapi.json` against the real binary
//! and must find no 5xx response and no crash.
//!
//! Equivalent command, for a running instance:
//! `schemathesis run http://127.0.0.1:8080/openapi.json --checks not_a_server_error
//!  -H 'Authorization: Bearer TOKEN' --max-examples 25 --generation-deterministic`

use std::process::Command;
use std::time::Duration;

use crate::support::{http_json, wait_for, Pipeline, RunArgs};
use serde_json::json;

const TOKEN: &str = "fuzz-token";

fn schemathesis() -> String {
    let works = |cmd: &str| Command::new(cmd).arg("--version").output().is_ok_and(|o| o.status.success());
    if works("schemathesis") {
        return "schemathesis".into();
    }
    let out = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "schemathesis"])
        .output()
        .expect("running pip to install schemathesis");
    assert!(out.status.success(), "pip install schemathesis failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(works("schemathesis"), "schemathesis is not on PATH after pip install");
    "schemathesis".into()
}

#[test]
fn schemathesis_finds_no_server_errors() {
    let st = schemathesis();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Pipeline::new("fuzzed")
        .source("datagen", json!({ "id": "dg-fuzz", "rate": 50 }))
        .sink("discard", json!({ "id": "d" }))
        .write(dir.path().join("p.yaml"));
    let (args, api, _metrics) = RunArgs::memory(&cfg).free_ports();
    let mut df = args.start(&dir.path().join("df.log"), &[("DELTAFORGE_API_TOKEN", TOKEN)]);
    wait_for(Duration::from_secs(30), || {
        http_json(&api, "GET", "/ready", Some(TOKEN), None).ok().filter(|(s, _)| *s == 200)
    })
    .unwrap_or_else(|| panic!("not ready\n{}", df.log_text()));

    let out = Command::new(&st)
        .args(["run", &format!("http://{api}/openapi.json")])
        .args(["--checks", "not_a_server_error"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", "25", "--generation-deterministic", "--workers", "2"])
        // `/ready` answers 503 by design when a pipeline is not running
        // (the fuzzer may pause or stop one); every other 5xx is a bug.
        .args(["--exclude-path", "/ready"])
        .env("NO_COLOR", "1")
        .output()
        .expect("running schemathesis");
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{report}\n--- deltaforge log ---\n{}", df.log_text());
    assert!(df.child.try_wait().unwrap().is_none(), "deltaforge crashed\n{}", df.log_text());
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
}
