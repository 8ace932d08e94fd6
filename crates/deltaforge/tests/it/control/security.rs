//! The control plane's defences against the operator's own browser and
//! against whoever can reach the API, on the real binary (docs/security.md):
//!
//! - cross-site requests (a `text/plain` or form POST, a foreign `Origin`)
//!   and DNS rebinding (a foreign `Host`) are refused and create nothing,
//!   while JSON/YAML requests of the CLI, curl and the API's own origin work;
//! - a spec sent through the API reads no environment variable unless the
//!   operator allowed it by name (`--api-env-allow`), and errors never show
//!   a value; config files still expand every variable;
//! - an unreadable checkpoint is reported as such, with the fix, not as
//!   "storage unavailable";
//! - `/metrics` on a non-loopback address needs the API token.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::spec::write_all;
use crate::support::storage::put_checkpoint;
use crate::support::{free_port, http, http_json, http_raw, read_jsonl, wait_for, Deltaforge, Pipeline, RunArgs, BIN};
use serde_json::{json, Value};

/// A pipeline that keeps running (and the process with it).
fn keepalive(name: &str) -> Pipeline {
    Pipeline::new(name)
        .source("datagen", json!({ "id": format!("dg-{name}"), "rate": 5 }))
        .sink("discard", json!({ "id": "d" }))
}

/// Starts `run` on memory storage with `pipelines`, extra `args` and
/// `envs`, without an API token; waits for the API.
fn start(dir: &Path, pipelines: &[Pipeline], args: &[&str], envs: &[(&str, &str)]) -> (Deltaforge, String) {
    let cfg = write_all(dir.join("p.yaml"), pipelines);
    let (mut run, api, _metrics) = RunArgs::memory(&cfg).free_ports();
    for a in args {
        run = run.arg(a);
    }
    let df = run.start(&dir.join("df.log"), envs);
    wait_for(Duration::from_secs(30), || http(&api, "GET", "/health", None, None).ok().filter(|(s, _)| *s == 200))
        .unwrap_or_else(|| panic!("API did not come up\n{}", df.log_text()));
    (df, api)
}

/// `(status, JSON body)` of a request with exactly `headers`.
fn raw(api: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, Value) {
    let (status, text) = http_raw(api, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn names(api: &str) -> Vec<String> {
    let (status, body) = http_json(api, "GET", "/pipelines", None, None).unwrap();
    assert_eq!(status, 200, "{body}");
    body["pipelines"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
}

fn state(api: &str, name: &str) -> String {
    http_json(api, "GET", &format!("/pipelines/{name}"), None, None).unwrap().1["state"].as_str().unwrap_or("").into()
}

fn wait_state(api: &str, name: &str, want: &str) {
    wait_for(Duration::from_secs(30), || (state(api, name) == want).then_some(()))
        .unwrap_or_else(|| panic!("{name} never became {want} (is {})", state(api, name)));
}

fn stop(mut df: Deltaforge) {
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
}

#[test]
fn cross_site_requests_are_refused_and_json_or_yaml_clients_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let (df, api) = start(dir.path(), &[keepalive("keep")], &[], &[]);
    let port = api.rsplit(':').next().unwrap().to_string();
    let spec = keepalive("web").text();
    let evil = "http://evil.example";

    // What a web page can send without a CORS preflight: text/plain and
    // form bodies, with the page's Origin, or without one (older clients).
    let (status, body) =
        raw(&api, "POST", "/pipelines", &[("Content-Type", "text/plain;charset=UTF-8"), ("Origin", evil)], Some(&spec));
    assert_eq!(status, 403, "cross-site text/plain POST: {body}");
    assert!(body["error"].as_str().unwrap().contains("cross-origin request from \"http://evil.example\""), "{body}");
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let (status, body) = raw(&api, "POST", "/pipelines", &[("Content-Type", ct)], Some(&spec));
        assert_eq!(status, 415, "{ct}: {body}");
        assert!(body["error"].as_str().unwrap().contains("is not accepted: send JSON or YAML"), "{ct}: {body}");
        assert!(body["detail"]["fix"].as_str().unwrap().contains("application/json"), "{body}");
    }
    let (status, body) = raw(&api, "POST", "/pipelines", &[], Some(&spec));
    assert_eq!(status, 415, "a body without Content-Type: {body}");
    let (status, body) = raw(&api, "PUT", "/pipelines/keep", &[("Content-Type", "text/plain")], Some(&spec));
    assert_eq!(status, 415, "PUT: {body}");
    // A body-less command from a foreign page (fetch with mode no-cors) is
    // refused by its Origin; so is a form posting nothing.
    let (status, body) = raw(&api, "POST", "/pipelines/keep/stop", &[("Origin", evil)], None);
    assert_eq!(status, 403, "{body}");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(raw(&api, "DELETE", "/pipelines/keep", &form, None).0, 415);
    // A page of another local port is another origin; `null` too.
    let other = format!("http://127.0.0.1:{}", free_port());
    let json_ct = ("Content-Type", "application/json");
    assert_eq!(raw(&api, "POST", "/pipelines", &[json_ct, ("Origin", other.as_str())], Some(&spec)).0, 403);
    assert_eq!(raw(&api, "POST", "/pipelines", &[json_ct, ("Origin", "null")], Some(&spec)).0, 403);
    // DNS rebinding: the attacker's name resolved to 127.0.0.1, so the
    // browser sees a same-origin request, but its Host is the attacker's.
    let rebound = format!("rebind.attacker.example:{port}");
    let (status, body) = raw(&api, "GET", "/pipelines", &[("Host", rebound.as_str())], None);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("rebind.attacker.example"), "{body}");
    let same_as_rebound = format!("http://{rebound}");
    let (status, _) = raw(
        &api,
        "POST",
        "/pipelines",
        &[("Host", rebound.as_str()), json_ct, ("Origin", same_as_rebound.as_str())],
        Some(&spec),
    );
    assert_eq!(status, 403);
    assert_eq!(names(&api), ["keep"], "no refused request created a pipeline");
    assert_eq!(state(&api, "keep"), "running", "no refused request stopped one");

    // What is allowed: the API's own origin (the web console), curl with
    // a YAML body, localhost by name, and the CLI.
    let own = format!("http://{api}");
    let (status, body) = raw(&api, "POST", "/pipelines", &[json_ct, ("Origin", own.as_str())], Some(&spec));
    assert_eq!(status, 201, "same-origin JSON POST: {body}");
    let yaml = "apiVersion: deltaforge/v1\nkind: Pipeline\nmetadata: { name: curl }\nspec:\n  source: { type: datagen, config: { id: dg-curl, rate: 5 } }\n  sinks: [ { type: discard, config: { id: d } } ]\n";
    let (status, body) = raw(&api, "POST", "/pipelines", &[("Content-Type", "application/yaml")], Some(yaml));
    assert_eq!(status, 201, "curl-like YAML POST: {body}");
    wait_state(&api, "curl", "running");
    wait_state(&api, "web", "running");
    let local = format!("localhost:{port}");
    let local_origin = format!("http://{local}");
    let (status, body) = raw(
        &api,
        "POST",
        "/pipelines/curl/pause",
        &[("Host", local.as_str()), ("Origin", local_origin.as_str())],
        None,
    );
    assert_eq!((status, body["state"].as_str()), (200, Some("paused")), "{body}");
    let out = Command::new(BIN)
        .args(["pipelines", "pause", "web", "--api", &own])
        .env_remove("DELTAFORGE_API_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "CLI pause: {}", String::from_utf8_lossy(&out.stderr));
    wait_state(&api, "web", "paused");
    let out = Command::new(BIN)
        .args(["pipelines", "resume", "web", "--api", &own])
        .env_remove("DELTAFORGE_API_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "CLI resume: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(names(&api), ["curl", "keep", "web"]);
    stop(df);
}

#[test]
fn api_specs_read_only_the_environment_variables_the_operator_allowed() {
    const SECRET: &str = "s3cr3t-value-6f1d";
    let dir = tempfile::tempdir().unwrap();
    let envs = [("DF_TEST_SECRET", SECRET), ("DF_TEST_ALLOWED", "allowed-part"), ("DF_TEST_FILE_PART", "from-file")];
    // The operator's config file reads every variable, as before.
    let from_file = Pipeline::new("filed").source("datagen", json!({ "id": "dg-filed", "count": 9 })).file_sink(
        "f",
        &dir.path().join("${DF_TEST_FILE_PART}.jsonl"),
        Value::Null,
    );
    let (df, api) = start(dir.path(), &[from_file, keepalive("keep")], &[], &envs);
    wait_for(Duration::from_secs(30), || (read_jsonl(&dir.path().join("from-file.jsonl")).len() == 9).then_some(()))
        .unwrap_or_else(|| panic!("the config file's ${{DF_TEST_FILE_PART}} was not expanded\n{}", df.log_text()));

    // Through the API, without --api-env-allow: nothing is read.
    let leak = |name: &str, placeholder: &str| {
        Pipeline::new(name)
            .source("datagen", json!({ "id": format!("dg-{name}"), "rate": 1 }))
            .file_sink("f", &dir.path().join(format!("{placeholder}.jsonl")), Value::Null)
            .text()
    };
    let (status, body) =
        http_json(&api, "POST", "/pipelines", None, Some(&leak("leak", "${HOME}-${DF_TEST_SECRET}"))).unwrap();
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    assert!(text.contains("HOME may not be read") && text.contains("DF_TEST_SECRET may not be read"), "{body}");
    assert!(text.contains("--api-env-allow"), "the fix is named: {body}");
    assert!(!text.contains(SECRET), "the value is never shown: {body}");
    let home = std::env::var("HOME").unwrap_or_default();
    assert!(home.len() < 2 || !text.contains(&format!("{home}-")), "HOME was expanded: {body}");
    // A default is taken as if the variable were unset.
    let (status, body) =
        http_json(&api, "POST", "/pipelines", None, Some(&leak("defaulted", "${DF_TEST_SECRET:-fallback}"))).unwrap();
    assert_eq!(status, 201, "{body}");
    let path = body["spec"]["spec"]["sinks"][0]["config"]["path"].as_str().unwrap().to_string();
    assert!(path.ends_with("/fallback.jsonl") && !path.contains(SECRET), "{path}");
    assert_eq!(names(&api), ["defaulted", "filed", "keep"]);
    stop(df);

    // With --api-env-allow DF_TEST_ALLOWED: that name only.
    let dir2 = tempfile::tempdir().unwrap();
    let (df, api) = start(dir2.path(), &[keepalive("keep")], &["--api-env-allow", "DF_TEST_ALLOWED"], &envs);
    let (status, body) =
        http_json(&api, "POST", "/pipelines", None, Some(&leak("allowed", "${DF_TEST_ALLOWED}"))).unwrap();
    assert_eq!(status, 201, "{body}");
    let path = body["spec"]["spec"]["sinks"][0]["config"]["path"].as_str().unwrap();
    assert!(path.ends_with("/allowed-part.jsonl"), "{path}");
    let (status, body) = http_json(&api, "POST", "/pipelines", None, Some(&leak("leak", "${DF_TEST_SECRET}"))).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("DF_TEST_SECRET may not be read") && !body.to_string().contains(SECRET),
        "{body}"
    );
    assert_eq!(names(&api), ["allowed", "keep"]);
    stop(df);
}

#[test]
fn an_unreadable_checkpoint_is_reported_with_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("df.db");
    let out = dir.path().join("out.jsonl");
    let broken = Pipeline::new("broken").source("datagen", json!({ "id": "dg-broken", "count": 30 })).file_sink(
        "out",
        &out,
        Value::Null,
    );
    let cfg = write_all(dir.path().join("first.yaml"), std::slice::from_ref(&broken));
    RunArgs::new(&cfg, &db).free_ports().0.run_to_end(&dir.path().join("df.log"), &[], Duration::from_secs(60));
    assert_eq!(read_jsonl(&out).len(), 30);
    // Damage the stored record (a bad restore, a hand edit, a newer format).
    put_checkpoint(&db, "dg-broken", &json!("garbage"));

    let cfg = write_all(dir.path().join("second.yaml"), &[broken, keepalive("keep")]);
    let (args, api, _metrics) = RunArgs::new(&cfg, &db).free_ports();
    let df = args.start(&dir.path().join("df.log"), &[]);
    let (status, body) = wait_for(Duration::from_secs(30), || {
        http_json(&api, "GET", "/pipelines/broken/checkpoint", None, None).ok().filter(|(s, _)| *s != 404)
    })
    .unwrap_or_else(|| panic!("API did not come up\n{}", df.log_text()));
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("the checkpoint of pipeline \"broken\" is unreadable: "), "{body}");
    assert!(!error.contains("storage is unavailable"), "{body}");
    assert_eq!(body["detail"]["source_id"], "dg-broken", "{body}");
    let fix = body["detail"]["fix"].as_str().unwrap();
    assert!(fix.contains("DELETE /pipelines/broken/checkpoint") && fix.contains("restore"), "{fix}");
    // The pipeline's own view still answers, saying the same.
    let (status, view) = http_json(&api, "GET", "/pipelines/broken", None, None).unwrap();
    assert_eq!(status, 200, "{view}");
    assert!(view["checkpoint"].is_null(), "{view}");
    assert!(view["checkpoint_error"].as_str().unwrap().contains("is unreadable"), "{view}");

    // The fix it names works: reset, then start re-reads from event 1.
    let (status, body) = http_json(&api, "DELETE", "/pipelines/broken/checkpoint", None, None).unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_json(&api, "GET", "/pipelines/broken/checkpoint", None, None).unwrap();
    assert_eq!((status, &body["position"]), (200, &Value::Null), "{body}");
    assert_eq!(http_json(&api, "POST", "/pipelines/broken/start", None, None).unwrap().0, 200);
    wait_for(Duration::from_secs(60), || (read_jsonl(&out).len() == 60).then_some(()))
        .unwrap_or_else(|| panic!("no re-delivery after the reset\n{}", df.log_text()));
    stop(df);
}

#[test]
fn metrics_on_a_non_loopback_address_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_all(dir.path().join("p.yaml"), &[keepalive("keep")]);
    let public = |port: u16| format!("0.0.0.0:{port}");
    let api = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("refused.log");
    let mut child = RunArgs::memory(&cfg)
        .ports(&api, &public(free_port()))
        .command()
        .env_remove("DELTAFORGE_API_TOKEN")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Polled rather than waited for: before the fix it runs forever.
    let status = wait_for(Duration::from_secs(20), || child.try_wait().unwrap());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "metrics on 0.0.0.0 without a token must not start\n{err}");
    assert!(err.contains("refusing to serve metrics on non-loopback address"), "{err}");
    assert!(err.contains("--api-token") && err.contains("--insecure-metrics"), "{err}");

    // With the token, /metrics requires it.
    let port = free_port();
    let args = RunArgs::memory(&cfg).ports(&format!("127.0.0.1:{}", free_port()), &public(port));
    let df = args.start(&dir.path().join("df.log"), &[("DELTAFORGE_API_TOKEN", "metrics-token")]);
    let local = format!("127.0.0.1:{port}");
    let (status, text) = wait_for(Duration::from_secs(30), || http(&local, "GET", "/metrics", None, None).ok())
        .unwrap_or_else(|| panic!("no metrics endpoint\n{}", df.log_text()));
    assert_eq!(status, 401, "{text}");
    wait_for(Duration::from_secs(30), || {
        let (status, text) = http(&local, "GET", "/metrics", Some("metrics-token"), None).ok()?;
        (status == 200 && text.contains("deltaforge_events_read_total")).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no metrics with the token
{}",
            df.log_text()
        )
    });
    assert_eq!(http(&local, "GET", "/metrics", Some("wrong"), None).unwrap().0, 401);
    stop(df);
}
