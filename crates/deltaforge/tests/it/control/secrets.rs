//! Secrets never leave the process (issue 14): a spec holding every kind of
//! secret DeltaForge knows about is posted to the real binary, its
//! pipelines run into errors (unreachable servers, a Kafka client that
//! cannot be created, an endpoint that echoes the request headers), and
//! neither `GET /pipelines/{name}`, nor the error responses of wrong specs,
//! nor the binary's log (at debug level) contain any of them.

use std::path::Path;
use std::time::Duration;

use crate::support::http_recorder::{Answer, HttpRecorder};
use crate::support::spec::write_all;
use crate::support::{http, wait_for, Deltaforge, Pipeline, RunArgs};
use serde_json::{json, Value};

const TOKEN: &str = "api-token-for-secrets-test";

/// Every secret below contains this marker; no output may.
const MARK: &str = "SECRET";

/// Pieces of the PostgreSQL password that do not carry the marker: a
/// password with an unencoded `/`, `?` and `@` used to be cut there.
const PG_PASSWORD: &str = "pg/pa?ss@word-SECRET";

struct Instance {
    df: Deltaforge,
    api: String,
}

impl Instance {
    fn start(dir: &Path, keeper: &Pipeline) -> Instance {
        let cfg = write_all(dir.join("pipelines.yaml"), std::slice::from_ref(keeper));
        let (args, api, _metrics) = RunArgs::new(&cfg, &dir.join("df.db")).free_ports();
        // DeltaForge's own debug logs too; the libraries' at their default.
        let filter = "debug,hyper=info,hyper_util=info,h2=info,rustls=info,tokio_postgres=info,async_nats=info,\
                      redis=info,reqwest=info,tower=info,axum=info,tokio=info,runtime=info";
        let envs = [("DELTAFORGE_API_TOKEN", TOKEN), ("RUST_LOG", filter)];
        let df = args.start(&dir.join("df.log"), &envs);
        let inst = Instance { df, api };
        wait_for(Duration::from_secs(30), || inst.call("GET", "/health", None).ok().filter(|(s, _)| *s == 200))
            .unwrap_or_else(|| panic!("API did not come up\n{}", inst.df.log_text()));
        inst
    }

    /// Status and raw body text (the assertions look at the text).
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        http(&self.api, method, path, Some(TOKEN), body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.call(method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.df.log_text()))
    }
}

/// Fails if `text` (from `what`) holds any secret or piece of one.
fn assert_clean(what: &str, text: &str) {
    for needle in [MARK, "pa?ss", "pg/pa", "cHJveHkt"] {
        assert!(!text.contains(needle), "{what} leaks {needle:?}:\n{text}");
    }
}

fn datagen(name: &str) -> Pipeline {
    Pipeline::new(name).source("datagen", json!({ "id": format!("dg-{name}"), "rate": 50 })).batch(50, 20)
}

/// The pipelines holding secrets (name, spec), each one posted through the API.
fn leaky_pipelines(hook: &str) -> Vec<(&'static str, Pipeline)> {
    let hook_with_userinfo = hook.replace("http://", "http://user:userinfo-SECRET@");
    let pipelines = vec![
        datagen("leaky-http").sink(
            "http",
            json!({
                "id": "hook",
                "url": format!("{hook_with_userinfo}/cdc?token=tok-q-SECRET&key=key-q-SECRET&password=pw-q-SECRET&access_key=ak-q-SECRET&secret=s-q-SECRET"),
                "headers": {
                    "Authorization": "Bearer bearer-SECRET-0123456789",
                    "Cookie": "sid=cookie-SECRET",
                    // base64 of "proxy-SECRET"
                    "Proxy-Authorization": "Basic cHJveHktU0VDUkVU",
                    "X-Api-Key": "apikey-SECRET",
                },
                "request_timeout_ms": 2000,
            }),
        ),
        datagen("leaky-kafka").sink(
            "kafka",
            json!({
                "id": "k",
                "brokers": "127.0.0.1:1",
                "topic": "t",
                "client_conf": {
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": "PLAIN",
                    "sasl.username": "bob",
                    "sasl.password": "sasl-SECRET",
                    "ssl.keystore.password": "keystore-SECRET",
                    "ssl.key.password": "keypass-SECRET",
                    "sasl.oauthbearer.config": "principal=oauth-SECRET",
                    "ssl.key.pem": "-----BEGIN PRIVATE KEY-----\nPEMBODY-SECRET\n-----END PRIVATE KEY-----\n",
                },
            }),
        ),
        datagen("leaky-nats").sink("nats", json!({ "id": "n", "url": "nats://nats-token-SECRET@127.0.0.1:1", "subject": "s", "stream": "S" })),
        datagen("leaky-redis")
            .sink("redis", json!({ "id": "r", "uri": "redis://:redis-SECRET@127.0.0.1:1/0", "stream": "s" })),
        Pipeline::new("leaky-pg")
            .postgres_table_source("pg-leaky", &format!("postgres://cdc:{PG_PASSWORD}@127.0.0.1:1/db"), "public.t", "s")
            .sink("discard", json!({ "id": "d" })),
    ];
    ["leaky-http", "leaky-kafka", "leaky-nats", "leaky-redis", "leaky-pg"].into_iter().zip(pipelines).collect()
}

/// Specs the API must refuse, with the field their error must name; each
/// holds a secret-looking value in the wrong place.
fn wrong_specs() -> Vec<(Value, &'static str)> {
    let with_sink = |sink: Value| {
        let mut v = datagen("wrong").to_value();
        v["spec"]["sinks"] = json!([sink]);
        v
    };
    let mut bad_name = datagen("wrong").to_value();
    bad_name["metadata"]["name"] = json!("Name-SECRET");
    let mut bad_policy = datagen("wrong").sink("discard", json!({"id": "d"})).to_value();
    bad_policy["spec"]["commit_policy"] = json!("policy-SECRET");
    let mut bad_batch = datagen("wrong").sink("discard", json!({"id": "d"})).to_value();
    bad_batch["spec"]["batch"]["max_events"] = json!("batch-SECRET");
    vec![
        (
            with_sink(
                json!({"type": "http", "config": {"id": "h", "url": "http://h/", "request_timeout_ms": "wrongtype-SECRET"}}),
            ),
            "request_timeout_ms",
        ),
        (with_sink(json!({"type": "http", "config": {"id": "h", "url": "ftp://h/SECRET"}})), "url"),
        (
            with_sink(json!({"type": "http", "config": {"id": "h", "url": "http://h/", "batch_mode": "mode-SECRET"}})),
            "batch_mode",
        ),
        (with_sink(json!({"type": "type-SECRET", "config": {"id": "h"}})), "spec.sinks[0].type"),
        (
            with_sink(json!({"type": "kafka", "config": {"id": "k", "brokers": "b:1", "topic": "t",
                "client_conf": {"plugin.library.paths": "/tmp/evil-SECRET.so"}}})),
            "client_conf",
        ),
        (
            with_sink(json!({"type": "kafka", "config": {"id": "k", "brokers": "b:1", "topic": "t",
                "progress_topic": "bad topic SECRET", "exactly_once": true}})),
            "progress_topic",
        ),
        (
            Pipeline::new("wrong")
                .postgres_table_source("pg-w", "postgres://u:nodb/pw-SECRET@h/", "public.t", "s")
                .sink("discard", json!({"id": "d"}))
                .to_value(),
            "dsn",
        ),
        (bad_name, "metadata.name"),
        (bad_policy, "commit_policy"),
        (bad_batch, "max_events"),
    ]
}

#[test]
fn secrets_never_reach_the_api_errors_or_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, base) = HttpRecorder::start();
    hook.answer(Answer::EchoHeaders);
    let keeper = datagen("keeper").sink("discard", json!({ "id": "d" }));
    let mut inst = Instance::start(dir.path(), &keeper);

    for (name, p) in leaky_pipelines(&base) {
        let (status, body) = inst.ok("POST", "/pipelines", Some(&p.text()));
        assert_eq!(status, 201, "{name}: {body}");
        assert_clean("POST response", &body);
    }
    // Let every pipeline run into its errors: the echoing endpoint, the
    // Kafka client that cannot be built, the servers that refuse.
    wait_for(Duration::from_secs(60), || (!hook.received().is_empty()).then_some(()))
        .unwrap_or_else(|| panic!("the http sink never posted\n{}", inst.df.log_text()));
    wait_for(Duration::from_secs(60), || {
        let (_, text) = inst.ok("GET", "/pipelines/leaky-http", None);
        text.contains("rejected; you sent").then_some(())
    })
    .unwrap_or_else(|| panic!("the echo never reached last_error\n{}", inst.df.log_text()));
    let sent = hook.received();
    assert!(sent[0].header("X-Api-Key") == "apikey-SECRET", "the sink must still send its headers");
    for (name, _) in leaky_pipelines(&base) {
        let (status, body) = inst.ok("GET", &format!("/pipelines/{name}"), None);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("***"), "the spec shows where secrets were masked: {body}");
        assert_clean(&format!("GET /pipelines/{name}"), &body);
    }
    let (_, list) = inst.ok("GET", "/pipelines", None);
    assert_clean("GET /pipelines", &list);

    for (spec, field) in wrong_specs() {
        let (status, body) = inst.ok("POST", "/pipelines", Some(&spec.to_string()));
        assert_eq!(status, 400, "{spec}: {body}");
        assert!(body.contains(field), "the error names {field}: {body}");
        assert_clean("error response", &body);
    }

    assert_eq!(inst.ok("GET", "/health", None).0, 200);
    inst.df.terminate();
    inst.df.wait_exit(Duration::from_secs(60));
    let log = inst.df.log_text();
    assert!(log.contains("leaky-kafka") && log.contains("leaky-pg"), "the log covers the pipelines:\n{log}");
    assert_clean("the log", &log);
}
