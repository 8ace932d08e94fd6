//! The monitoring files of `deploy/` against the real binary and a real
//! Prometheus (`scripts/services/prometheus.sh`, which also installs
//! `promtool`):
//!
//! - `deploy/prometheus/alerts.yml` passes `promtool check rules` and its
//!   unit tests `alerts_test.yml` pass (`promtool test rules`);
//! - every metric name and label that `deploy/grafana/deltaforge.json` and
//!   `alerts.yml` query exists in `/metrics` of a running binary whose
//!   pipelines exercise every family (a processor, a sink failing through
//!   the failpoint hook, an optional sink dropping batches, a dead-letter
//!   queue that overflows, a PostgreSQL snapshot), and every dashboard query
//!   is valid PromQL for the real Prometheus;
//! - the real Prometheus scrapes the binary (a file_sd target file of this
//!   test) and raises the checkpoint-lag alert while a sink is down, and the
//!   failed-pipeline alert for a pipeline that failed; the lag alert clears
//!   once the sink is back.
//!
//! Fast alerts: `alerts.yml` is loaded unchanged, so the lag alert goes
//! `pending` within seconds (datagen's synthetic timestamps put its lag far
//! above 300 s) but would fire only after its `for: 5m`. The test also
//! drops a copy in the server's `rules.d/` with every alert renamed
//! `Fast…` and every `for:` set to 3 s, and waits for that one to fire.
//!
//! PromQL is tokenised by hand (identifiers outside strings; labels in
//! `{…}` matchers, in `by/on/without/ignoring (…)` lists and in
//! `{{label}}` legends): enough for the expressions of these files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use deltaforge_testkit::repo_root;
use serde_json::{json, Value};

use crate::support::spec::write_all;
use crate::support::{http, http_json, pg_cleanup, pg_sql, service, unique, wait_for, Pipeline, RunArgs};

/// Labels Prometheus adds to every scraped series.
const SCRAPE_LABELS: &[&str] = &["job", "instance"];

fn promtool(args: &[&str]) -> String {
    service("prometheus"); // installs the Debian package (prometheus + promtool) when missing
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running promtool: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let check = promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    assert!(check.contains("SUCCESS"), "{check}");
    let tests = promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
    assert!(tests.contains("SUCCESS"), "{tests}");
}

// ------------------------------------------------------------ PromQL scan

/// What one PromQL expression names.
#[derive(Debug, Default)]
struct Uses {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

const GROUPING: &[&str] = &["by", "on", "without", "ignoring", "group_left", "group_right"];

/// The metric names (`deltaforge_…`) and the labels an expression uses.
fn scan(expr: &str) -> Uses {
    let mut uses = Uses::default();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut in_braces, mut in_group, mut group_next) = (0, false, false, false);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            '{' => in_braces = true,
            '}' => in_braces = false,
            '(' if group_next => (in_group, group_next) = (true, false),
            ')' => in_group = false,
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i + 1 < chars.len() && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '_') {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let prev = start.checked_sub(1).map(|p| chars[p]);
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if prev == Some('$') {
                    // a Grafana variable
                } else if in_group || (in_braces && matches!(next, Some('=' | '!'))) {
                    uses.labels.insert(word);
                } else if GROUPING.contains(&word.as_str()) {
                    group_next = true;
                } else if word.starts_with("deltaforge_") {
                    uses.metrics.insert(word);
                }
            }
            c if c.is_ascii_digit() => {
                while i + 1 < chars.len() && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '.') {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    uses
}

/// `{{label}}` names of a Grafana legend.
fn legend_labels(legend: &str) -> Vec<String> {
    legend.split("{{").skip(1).filter_map(|s| s.split_once("}}")).map(|(l, _)| l.trim().to_string()).collect()
}

/// The sample names of a `/metrics` text, each with every label name seen on it.
fn exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            // k="v",k2="v2"} value — values may hold commas but no unescaped quotes.
            let mut rest = &line[end + 1..];
            while let Some((key, after)) = rest.split_once("=\"") {
                labels.insert(key.trim_start_matches(',').to_string());
                let mut j = 0;
                let bytes = after.as_bytes();
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                rest = &after[(j + 1).min(after.len())..];
                if rest.starts_with('}') {
                    break;
                }
            }
        }
    }
    out
}

/// The problems of one expression against the exposition (empty when fine).
fn problems(
    origin: &str,
    expr: &str,
    extra_labels: &[String],
    exposed: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let uses = scan(expr);
    let mut out = Vec::new();
    for m in &uses.metrics {
        if !exposed.contains_key(m) {
            out.push(format!("{origin}: metric {m} is not in /metrics ({expr})"));
        }
    }
    let on_metrics: BTreeSet<&String> = uses.metrics.iter().filter_map(|m| exposed.get(m)).flatten().collect();
    for l in uses.labels.iter().chain(extra_labels) {
        if !SCRAPE_LABELS.contains(&l.as_str()) && !on_metrics.contains(l) {
            out.push(format!("{origin}: label {l} is on none of {:?} ({expr})", uses.metrics));
        }
    }
    out
}

/// Every `(origin, expr, legend labels)` of the dashboard.
fn dashboard_queries(dash: &Value) -> Vec<(String, String, Vec<String>)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String, Vec<String>)>) {
        for p in panels {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("panel {title:?}: target without expr"));
                let legend = legend_labels(t["legendFormat"].as_str().unwrap_or(""));
                out.push((format!("panel {title:?}"), expr.to_string(), legend));
            }
            walk(p["panels"].as_array().map(Vec::as_slice).unwrap_or_default(), out);
        }
    }
    let mut out = Vec::new();
    walk(dash["panels"].as_array().expect("panels"), &mut out);
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(metric, label)
            let inner = q.trim().strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).expect("label_values");
            let (metric, label) = inner.split_once(',').expect("label_values(metric, label)");
            out.push((format!("variable {}", v["name"]), metric.trim().to_string(), vec![label.trim().to_string()]));
        }
    }
    out
}

/// Every `expr:` of a rules file (one line, or a `>-` block).
fn rule_exprs(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else { continue };
        let rest = rest.trim();
        if rest.starts_with('>') || rest.starts_with('|') {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join(" "));
        } else {
            out.push(rest.trim_matches('\'').to_string());
        }
    }
    out
}

#[test]
fn promql_scan_finds_names_and_labels() {
    let u = scan(
        r#"histogram_quantile(0.99, sum by (pipeline, le) (rate(deltaforge_x_bucket{sink=~"a|b", pipeline="$p"}[$__rate_interval]))) unless on (job) up"#,
    );
    assert_eq!(u.metrics.into_iter().collect::<Vec<_>>(), ["deltaforge_x_bucket"]);
    assert_eq!(u.labels.into_iter().collect::<Vec<_>>(), ["job", "le", "pipeline", "sink"]);
    assert_eq!(legend_labels("{{pipeline}} → {{ sink }}"), ["pipeline", "sink"]);
    let exp = exposition("# HELP a b\na_total{pipeline=\"p,q\",sink=\"s\\\"\"} 1\nb 2\n");
    assert_eq!(exp["a_total"].iter().collect::<Vec<_>>(), ["pipeline", "sink"]);
    assert!(exp["b"].is_empty());
    assert_eq!(
        rule_exprs("  - alert: A\n    expr: >-\n      a\n      and b\n    for: 1m\n  - alert: B\n    expr: c > 1\n"),
        ["a and b", "c > 1"]
    );
}

// ------------------------------------------------------ the real binary

fn scrape(addr: &str) -> Option<String> {
    http(addr, "GET", "/metrics", None, None).ok().filter(|(s, _)| *s == 200).map(|(_, b)| b)
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn prom_addr(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// The families the dashboard and the alerts need, which appear only once
/// something happened (dead letters, drops, snapshot rows, processors).
const NEEDED: &[&str] = &[
    "deltaforge_dlq_events_total",
    "deltaforge_dlq_dropped_total",
    "deltaforge_sink_batches_dropped_total",
    "deltaforge_processor_seconds", // a summary: {quantile="…"}
    "deltaforge_snapshot_rows_total",
    "deltaforge_snapshot_tables_remaining",
    "deltaforge_sink_delivery_seconds_bucket",
];

#[test]
fn dashboard_and_alerts_use_only_exported_metrics_and_labels() {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/deltaforge.json")).expect("dashboard file"),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dash["schemaVersion"].as_u64().map(|v| v >= 36), Some(true), "schemaVersion");
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).expect("alerts.yml");

    let dir = tempfile::tempdir().unwrap();
    let pg = service("postgres");
    let table = unique("obs_snap").replace('-', "_");
    pg_sql(&pg, &format!("CREATE TABLE {table} (id int PRIMARY KEY, v text); INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 50) g;"));
    let (down, poison) = (dir.path().join("opt.down"), dir.path().join("out.poison"));
    std::fs::write(&down, b"down").unwrap();
    std::fs::write(&poison, b"on").unwrap();
    let busy = Pipeline::new("obs-busy")
        .source("datagen", json!({ "id": "obs-busy", "rate": 500 }))
        .processor(json!({ "type": "filter", "config": { "ops": ["c"] } }))
        .file_sink("out", &dir.path().join("out.jsonl"), Value::Null)
        .file_sink(
            "opt",
            &dir.path().join("opt.jsonl"),
            json!({ "required": false, "max_attempts": 1, "retry_initial_ms": 10, "retry_max_ms": 20 }),
        )
        .commit_policy("required")
        .batch(50, 20)
        .spec("dlq", json!({ "capacity": 3, "overflow": "drop_oldest" }));
    let snap = Pipeline::new("obs-snap")
        .source(
            "postgres",
            json!({ "id": table.replace('_', "-"), "dsn": pg, "tables": [format!("public.{table}")], "slot": table,
                    "publication": table, "snapshot": { "mode": "initial", "chunk_size": 10 } }),
        )
        .sink("discard", json!({ "id": "d" }));
    let cfg = write_all(dir.path().join("p.yaml"), &[busy, snap]);
    let (args, _api, metrics) = RunArgs::memory(&cfg).free_ports();
    let fp = format!("sink:opt={},poison:out={}@7", down.display(), poison.display());
    let mut df = args.start(&dir.path().join("df.log"), &[("DELTAFORGE_FAILPOINTS", &fp)]);

    let text = wait_for(Duration::from_secs(60), || {
        let t = scrape(&metrics)?;
        NEEDED.iter().all(|n| t.contains(&format!("\n{n}{{"))).then_some(t)
    });
    let text = text.unwrap_or_else(|| {
        let missing: Vec<_> =
            NEEDED.iter().filter(|n| !scrape(&metrics).unwrap_or_default().contains(&format!("\n{n}{{"))).collect();
        panic!("never exported {missing:?}\n{}", df.log_text())
    });
    df.terminate();
    assert_eq!(df.wait_exit(Duration::from_secs(30)), Some(0), "{}", df.log_text());
    pg_cleanup(&pg, &table);

    let exposed = exposition(&text);
    let mut bad = Vec::new();
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 15, "{} queries", queries.len());
    for (origin, expr, legend) in &queries {
        bad.extend(problems(origin, expr, legend, &exposed));
    }
    let exprs = rule_exprs(&rules);
    assert_eq!(exprs.len(), rules.matches("- alert:").count(), "one expr per alert");
    for expr in &exprs {
        bad.extend(problems("alerts.yml", expr, &[], &exposed));
    }
    let names: BTreeSet<String> = queries.iter().flat_map(|(_, e, _)| scan(e).metrics).collect();
    for family in ["deltaforge_pipeline_status", "deltaforge_checkpoint_lag_seconds", "deltaforge_checkpoint_lag_bytes"]
    {
        assert!(names.contains(family), "the dashboard does not show {family}");
    }

    // Every dashboard query is valid PromQL for the real server.
    let prom = prom_addr(&service("prometheus"));
    for (origin, expr, _) in &queries {
        let q = expr.replace("$__rate_interval", "1m").replace("$pipeline", ".*");
        let (status, body) = http_json(&prom, "GET", &format!("/api/v1/query?query={}", encode(&q)), None, None)
            .unwrap_or_else(|e| panic!("querying Prometheus: {e}"));
        if status != 200 || body["status"] != "success" {
            bad.push(format!("{origin}: Prometheus rejects {q}: {body}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ------------------------------------------------- the real Prometheus

/// This test's files in the Prometheus service folder (a file_sd target
/// file and a rules file), removed again (and the server reloaded) on drop.
struct PromFiles {
    prom: String,
    files: Vec<PathBuf>,
}

impl PromFiles {
    fn reload(&self) {
        let (status, body) = http(&self.prom, "POST", "/-/reload", None, None).expect("POST /-/reload");
        assert_eq!(status, 200, "reload: {body}");
    }
}

impl Drop for PromFiles {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        let _ = http(&self.prom, "POST", "/-/reload", None, None);
    }
}

fn services_dir() -> PathBuf {
    std::env::var_os("DELTAFORGE_SERVICES_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".services"))
}

/// `alerts.yml` with every alert renamed `Fast{name}` and every `for:` set to 3 s.
fn fast_copy(rules: &str) -> String {
    rules
        .lines()
        .map(|l| {
            let indent = &l[..l.len() - l.trim_start().len()];
            let t = l.trim_start();
            if let Some(name) = t.strip_prefix("- alert: ") {
                format!("{indent}- alert: Fast{name}")
            } else if t.starts_with("for: ") {
                format!("{indent}for: 3s")
            } else if let Some(name) = t.strip_prefix("- name: ") {
                format!("{indent}- name: fast-{name}")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

/// The state (`pending`, `firing`) of alert `name` for `pipeline`, if active.
fn alert_state(prom: &str, name: &str, pipeline: &str) -> Option<String> {
    let (_, body) = http_json(prom, "GET", "/api/v1/alerts", None, None).ok()?;
    body["data"]["alerts"].as_array()?.iter().find_map(|a| {
        (a["labels"]["alertname"] == name && a["labels"]["pipeline"] == pipeline)
            .then(|| a["state"].as_str().unwrap_or_default().to_string())
    })
}

#[test]
fn real_prometheus_raises_lag_and_failed_alerts_from_the_binary() {
    let prom = prom_addr(&service("prometheus"));
    let base = services_dir().join("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let (lagging, failing) = (unique("prom-lag"), unique("prom-fail"));
    let (down, poison) = (dir.path().join("out.down"), dir.path().join("bad.poison"));
    std::fs::write(&down, b"down").unwrap();
    std::fs::write(&poison, b"on").unwrap();
    let lag = Pipeline::new(&lagging)
        .source("datagen", json!({ "id": lagging, "rate": 100 }))
        .file_sink("out", &dir.path().join("out.jsonl"), json!({ "retry_initial_ms": 50, "retry_max_ms": 200 }))
        .batch(20, 20);
    // A poison event without a dead-letter queue stops the pipeline: failed.
    let fail = Pipeline::new(&failing)
        .source("datagen", json!({ "id": failing, "rate": 100 }))
        .file_sink("bad", &dir.path().join("bad.jsonl"), Value::Null)
        .batch(20, 20);
    let cfg = write_all(dir.path().join("p.yaml"), &[lag, fail]);
    let (args, _api, metrics) = RunArgs::memory(&cfg).free_ports();
    let fp = format!("sink:out={},poison:bad={}@5", down.display(), poison.display());
    let mut df = args.start(&dir.path().join("df.log"), &[("DELTAFORGE_FAILPOINTS", &fp)]);
    wait_for(Duration::from_secs(30), || scrape(&metrics)).unwrap_or_else(|| panic!("no /metrics\n{}", df.log_text()));

    let tag = unique("it");
    let files = PromFiles {
        prom: prom.clone(),
        files: vec![base.join(format!("targets/{tag}.json")), base.join(format!("rules.d/{tag}.yml"))],
    };
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).unwrap();
    std::fs::write(&files.files[1], fast_copy(&rules)).unwrap();
    files.reload();
    let target = json!([{ "targets": [metrics], "labels": { "df_test": tag } }]);
    std::fs::write(&files.files[0], target.to_string()).unwrap();

    // Scraped: the series of our pipelines reach Prometheus.
    let q = format!("/api/v1/query?query={}", encode(&format!("deltaforge_pipeline_status{{df_test=\"{tag}\"}}")));
    wait_for(Duration::from_secs(30), || {
        let (_, body) = http_json(&prom, "GET", &q, None, None).ok()?;
        (!body["data"]["result"].as_array()?.is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("Prometheus never scraped {metrics}"));

    let wait_state = |name: &str, pipeline: &str, states: &[&str]| {
        wait_for(Duration::from_secs(45), || {
            let s = alert_state(&prom, name, pipeline)?;
            states.contains(&s.as_str()).then_some(s)
        })
        .unwrap_or_else(|| {
            let (_, alerts) = http(&prom, "GET", "/api/v1/alerts", None, None).unwrap_or_default();
            panic!("{name} for {pipeline} never {states:?}\nalerts: {alerts}\n{}", df.log_text())
        })
    };
    // alerts.yml as shipped: pending (its `for: 5m` has not passed).
    let s = wait_state("DeltaForgeCheckpointLagHigh", &lagging, &["pending", "firing"]);
    eprintln!("DeltaForgeCheckpointLagHigh for {lagging}: {s}");
    wait_state("DeltaForgePipelineFailed", &failing, &["firing"]);
    // The copy with `for: 3s`: firing.
    wait_state("FastDeltaForgeCheckpointLagHigh", &lagging, &["firing"]);
    assert_eq!(alert_state(&prom, "DeltaForgePipelineFailed", &lagging), None, "the lagging pipeline did not fail");
    assert_eq!(alert_state(&prom, "DeltaForgeCheckpointLagHigh", &failing), None);

    // The sink is back: the lag returns to 0 and the alert clears.
    std::fs::remove_file(&down).unwrap();
    wait_for(Duration::from_secs(45), || {
        (alert_state(&prom, "FastDeltaForgeCheckpointLagHigh", &lagging).is_none()
            && alert_state(&prom, "DeltaForgeCheckpointLagHigh", &lagging).is_none())
        .then_some(())
    })
    .unwrap_or_else(|| panic!("the lag alert did not clear\n{}", df.log_text()));

    // One pipeline failed, so the binary exits non-zero: only check that it stops.
    df.terminate();
    assert!(df.wait_exit(Duration::from_secs(30)).is_some(), "{}", df.log_text());
    drop(files);
}
