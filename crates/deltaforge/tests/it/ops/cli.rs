//! The operator commands against a real `deltaforge run` (datagen → file,
//! API on a free port with a token): `pipelines list`, `pause`, `status`
//! showing the pause, `resume`, their `--json` form and their errors
//! (no token, API unreachable); plus `completions bash`, `man` and
//! `--version`, which need no running instance.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::support::{free_port, http_json, unique, wait_for, Deltaforge, Pipeline, RunArgs, BIN};
use serde_json::{json, Value};

const TOKEN: &str = "cli-token";

/// Runs the binary to completion with `args`, without the API
/// environment variables of the test's own environment.
fn df(args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(args)
        .env_remove("DELTAFORGE_API")
        .env_remove("DELTAFORGE_API_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("running {BIN} {args:?}: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs an API command against `api` with the token; asserts exit 0 and
/// returns its standard output.
fn api_ok(api: &str, args: &[&str], instance: &Deltaforge) -> String {
    let url = format!("http://{api}");
    let mut all = args.to_vec();
    all.extend(["--api", &url, "--token", TOKEN]);
    let o = df(&all);
    assert!(o.status.success(), "{all:?} failed: {}{}\n{}", stdout(&o), stderr(&o), instance.log_text());
    stdout(&o)
}

fn start_instance(dir: &Path, name: &str) -> (Deltaforge, String) {
    let cfg = Pipeline::new(name)
        .source("datagen", json!({ "id": format!("{name}-src"), "rate": 200 }))
        .file_sink("out", &dir.join("out.jsonl"), Value::Null)
        .batch(100, 20)
        .write(dir.join("pipelines.yaml"));
    let (args, api, _metrics) = RunArgs::new(&cfg, &dir.join("df.db")).free_ports();
    let instance = args.start(&dir.join("df.log"), &[("DELTAFORGE_API_TOKEN", TOKEN)]);
    wait_for(Duration::from_secs(30), || http_json(&api, "GET", "/health", None, None).ok().filter(|(s, _)| *s == 200))
        .unwrap_or_else(|| panic!("API did not come up\n{}", instance.log_text()));
    (instance, api)
}

#[test]
fn pipelines_list_pause_status_resume_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique("cli");
    let (instance, api) = start_instance(dir.path(), &name);

    let list = api_ok(&api, &["pipelines", "list"], &instance);
    let header = list.lines().next().unwrap_or_default();
    assert!(header.starts_with("NAME") && header.contains("STATE"), "{list}");
    let row = list.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{name} not listed:\n{list}"));
    assert!(row.contains("running") && row.contains(&format!("datagen/{name}-src")), "{list}");

    let json_list: Value = serde_json::from_str(&api_ok(&api, &["pipelines", "list", "--json"], &instance)).unwrap();
    assert_eq!(json_list["pipelines"][0]["name"], json!(name), "{json_list}");

    let paused = api_ok(&api, &["pipelines", "pause", &name], &instance);
    assert_eq!(paused.trim(), format!("pipeline {name}: paused"));

    let status = api_ok(&api, &["status"], &instance);
    assert!(status.contains("health:     ok"), "{status}");
    assert!(status.contains("ready:      no"), "a paused pipeline is not ready:\n{status}");
    assert!(status.contains("pipelines:  1 (1 paused)"), "{status}");
    assert!(status.lines().any(|l| l.starts_with(&name) && l.contains("paused")), "{status}");
    let status_json: Value = serde_json::from_str(&api_ok(&api, &["status", "--json"], &instance)).unwrap();
    assert_eq!(status_json["pipelines"][0]["state"], json!("paused"), "{status_json}");
    assert_eq!(status_json["ready"], json!(false), "{status_json}");

    let shown = api_ok(&api, &["pipelines", "show", &name], &instance);
    assert!(shown.contains("state:        paused") && shown.contains("sinks:        file/out"), "{shown}");

    let resumed = api_ok(&api, &["pipelines", "resume", &name], &instance);
    assert_eq!(resumed.trim(), format!("pipeline {name}: running"));
    let status = api_ok(&api, &["status"], &instance);
    assert!(status.contains("ready:      yes") && status.contains("1 running"), "{status}");

    // Errors: no token, an unknown pipeline, reset without --yes.
    let url = format!("http://{api}");
    let o = df(&["pipelines", "list", "--api", &url]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("HTTP 401") && stderr(&o).contains("DELTAFORGE_API_TOKEN"), "{}", stderr(&o));
    let o = df(&["pipelines", "show", "no-such-pipeline", "--api", &url, "--token", TOKEN]);
    assert!(!o.status.success() && stderr(&o).contains("HTTP 404"), "{}", stderr(&o));
    let o = df(&["pipelines", "reset", &name, "--api", &url, "--token", TOKEN]);
    assert!(!o.status.success() && stderr(&o).contains("--yes"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(TOKEN), "the token never reaches a message");
}

#[test]
fn an_unreachable_api_says_what_to_check() {
    let addr = format!("127.0.0.1:{}", free_port());
    let o = df(&["status", "--api", &addr]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("cannot reach the DeltaForge API") && err.contains(&format!("--api-addr {addr}")), "{err}");
}

#[test]
fn completions_man_page_and_version() {
    let o = df(&["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = stdout(&o);
    assert!(!script.is_empty() && script.contains("pipelines") && script.contains("complete"), "{script}");
    for shell in ["zsh", "fish"] {
        let o = df(&["completions", shell]);
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}: {}", stderr(&o));
    }

    let o = df(&["man"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.lines().any(|l| l.starts_with(".TH deltaforge 1")), "no roff title header:\n{page}");
    assert!(page.contains(".SH NAME") && page.contains("pipelines"), "{page}");

    let o = df(&["--version"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = stdout(&o);
    let commit = v.trim().strip_suffix(')').and_then(|s| s.rsplit_once("(commit ")).map(|(_, c)| c.to_string());
    let commit = commit.unwrap_or_else(|| panic!("no commit in {v:?}"));
    assert!(commit == "unknown" || (commit.len() >= 4 && commit.chars().all(|c| c.is_ascii_hexdigit())), "{v:?}");
    assert!(v.starts_with(&format!("deltaforge {}", env!("CARGO_PKG_VERSION"))), "{v:?}");
}
