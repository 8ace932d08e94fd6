//! `deltaforge status` and `deltaforge pipelines list|show|pause|resume|
//! restart|reset`: operator commands that talk to a running `deltaforge run`
//! through its REST API (`api_client`), printing readable tables or, with
//! `--json`, the API's JSON.
//!
//! It owns the arguments of these commands and their output; it never
//! reads storage or configs itself (everything comes from the API) and
//! never prints a token.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::api_client::{ApiClient, DEFAULT_API};

/// Where the API is and how to print its answers.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// URL of the REST API of a running `deltaforge run` (its --api-addr).
    #[arg(long, global = true, env = "DELTAFORGE_API", default_value = DEFAULT_API)]
    pub api: String,
    /// Bearer token, when `deltaforge run` was given --api-token.
    #[arg(long, global = true, alias = "api-token", env = "DELTAFORGE_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(&self.api, self.token.as_deref())
    }
}

/// `deltaforge pipelines ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum PipelinesAction {
    /// List the pipelines with their state, events read and lag.
    List,
    /// Show one pipeline: state, source, lag, checkpoint, last error.
    Show {
        /// Pipeline name.
        name: String,
    },
    /// Pause a pipeline (in-flight batches are delivered and checkpointed).
    Pause {
        /// Pipeline name.
        name: String,
    },
    /// Resume a paused or stopped pipeline from its checkpoint.
    Resume {
        /// Pipeline name.
        name: String,
    },
    /// Stop a pipeline (delivering what is in flight), then start it again
    /// from its checkpoint.
    Restart {
        /// Pipeline name.
        name: String,
    },
    /// Reset a pipeline's checkpoint so that its next start reads the source
    /// from the beginning (stops it; PostgreSQL: drops its slot; see
    /// docs/api.md, "Checkpoint reset").
    Reset {
        /// Pipeline name.
        name: String,
        /// Confirm the reset (it re-delivers everything the source still has).
        #[arg(long)]
        yes: bool,
    },
    /// List a pipeline's backfills with their state (pending, running,
    /// done, failed with its error, cancelled).
    Backfills {
        /// Pipeline name.
        name: String,
    },
    /// Cancel a backfill: a pending one never starts, a running one stops
    /// before its next chunk (rows already read stay delivered).
    BackfillCancel {
        /// Pipeline name.
        name: String,
        /// The backfill's id (see `deltaforge pipelines backfills NAME`).
        id: u64,
    },
}

/// `deltaforge status`: the API's health, readiness and every pipeline.
pub async fn status(args: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = args.client()?;
    let health = client.get("/health").await?.body;
    let ready = client.call(reqwest::Method::GET, "/ready").await?;
    if ready.status == 401 {
        ready.clone().ok()?;
    }
    let pipelines = client.get("/pipelines").await?.body;
    let list = pipeline_list(&pipelines);
    if args.json {
        let out = json!({
            "api": client.shown_base(),
            "health": health,
            "ready": ready.status == 200,
            "readiness": ready.body,
            "pipelines": list,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", status_text(&client.shown_base(), &health, ready.status == 200, &ready.body, list));
    Ok(ExitCode::SUCCESS)
}

/// Runs a `pipelines` action.
pub async fn pipelines(action: PipelinesAction, args: &ApiArgs) -> anyhow::Result<ExitCode> {
    let client = args.client()?;
    match action {
        PipelinesAction::List => {
            let body = client.get("/pipelines").await?.body;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                let list = pipeline_list(&body);
                if list.is_empty() {
                    println!("no pipelines");
                } else {
                    print!("{}", pipelines_table(list));
                }
            }
        }
        PipelinesAction::Show { name } => {
            let view = client.get(&pipeline_path(&name, "")).await?.body;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", pipeline_details(&view));
            }
        }
        PipelinesAction::Pause { name } => {
            let a = client.post(&pipeline_path(&name, "/pause")).await?;
            print_command(args, &name, "pause", &a.body)?;
        }
        PipelinesAction::Resume { name } => {
            client.post(&pipeline_path(&name, "/resume")).await?;
            let view = wait_started(&client, &name).await?;
            print_command(args, &name, "resume", &view)?;
        }
        PipelinesAction::Restart { name } => {
            client.post(&pipeline_path(&name, "/stop")).await?;
            wait_not_stopping(&client, &name, Duration::from_secs(120)).await?;
            client.post(&pipeline_path(&name, "/start")).await?;
            let view = wait_started(&client, &name).await?;
            print_command(args, &name, "restart", &view)?;
        }
        PipelinesAction::Reset { name, yes } => {
            if !yes {
                bail!(
                    "resetting {name:?} stops it and makes its next start read the source from the beginning \
                     (datagen: event 1; MySQL/MariaDB: the oldest binlog; PostgreSQL: drops its slot and snapshots \
                     again); add --yes to confirm"
                );
            }
            let body = client.delete(&pipeline_path(&name, "/checkpoint")).await?.body;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                let deleted = body.get("deleted").and_then(Value::as_bool).unwrap_or(false);
                println!(
                    "pipeline {name}: checkpoint {}; the pipeline is stopped. Start it again with \
                     `deltaforge pipelines resume {name}`",
                    if deleted { "reset" } else { "was already empty" }
                );
                if let Some(p) = body.get("start_position").filter(|p| !p.is_null()) {
                    println!("next start reads from {p}");
                }
            }
        }
        PipelinesAction::Backfills { name } => {
            let body = client.get(&pipeline_path(&name, "/backfill")).await?.body;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!("{}", backfills_text(&body));
            }
        }
        PipelinesAction::BackfillCancel { name, id } => {
            let body = client.delete(&pipeline_path(&name, &format!("/backfill/{id}"))).await?.body;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                println!("pipeline {name}: backfill {id} cancelled");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per backfill: id, state, tables, condition, error.
fn backfills_text(body: &Value) -> String {
    let list = body["backfills"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no backfills\n".into();
    }
    let mut out = String::new();
    for b in list {
        let tables: Vec<String> = b["tables"].as_array().map(|t| t.iter().map(text).collect()).unwrap_or_default();
        out.push_str(&format!("{:>4}  {:<9}  {}", text(&b["id"]), text(&b["state"]), tables.join(",")));
        if let Some(w) = b["where"].as_str() {
            out.push_str(&format!("  where {w}"));
        }
        if let Some(e) = b["error"].as_str() {
            out.push_str(&format!("  error: {e}"));
        }
        out.push('\n');
    }
    out
}

/// `/pipelines/{name}{suffix}` with the name percent-encoded where needed.
fn pipeline_path(name: &str, suffix: &str) -> String {
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("/pipelines/{enc}{suffix}")
}

/// Polls the pipeline until it is no longer `stopping`.
async fn wait_not_stopping(client: &ApiClient, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let view = client.get(&pipeline_path(name, "")).await?.body;
        if text(&view["state"]) != "stopping" {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("pipeline {name} is still stopping after {}s; try again later", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// After a start or resume (which the API answers before the run has
/// begun): the view once the pipeline left `paused`/`stopped`/`stopping`,
/// or as it is after 5 s.
async fn wait_started(client: &ApiClient, name: &str) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        let view = client.get(&pipeline_path(name, "")).await?.body;
        let state = text(&view["state"]);
        if !matches!(state.as_str(), "paused" | "stopped" | "stopping") || start.elapsed() > Duration::from_secs(5) {
            return Ok(view);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_command(args: &ApiArgs, name: &str, verb: &str, view: &Value) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(view)?);
    } else {
        println!("{}", command_line(name, verb, view));
    }
    Ok(())
}

/// The one-line outcome of a pause/resume/restart.
pub fn command_line(name: &str, verb: &str, view: &Value) -> String {
    let state = text(&view["state"]);
    if state == "stopping" {
        format!(
            "pipeline {name}: {verb} requested; still stopping (delivering in-flight batches), \
             `deltaforge pipelines show {name}` shows when it is done"
        )
    } else {
        format!("pipeline {name}: {state}")
    }
}

/// The `pipelines` array of a `GET /pipelines` answer.
fn pipeline_list(body: &Value) -> &[Value] {
    body.get("pipelines").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// The text of `deltaforge status`.
pub fn status_text(api: &str, health: &Value, ready: bool, readiness: &Value, list: &[Value]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for p in list {
        let s = text(&p["state"]);
        match counts.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    let by_state: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let ready_text = if ready {
        "yes".to_string()
    } else {
        format!("no: {}", readiness.get("error").and_then(Value::as_str).unwrap_or("not ready"))
    };
    let mut out = table(
        &[],
        &[
            vec!["api:".into(), api.to_string()],
            vec!["health:".into(), text(health.get("status").unwrap_or(&Value::Null))],
            vec!["ready:".into(), ready_text],
            vec![
                "pipelines:".into(),
                if list.is_empty() { "0".into() } else { format!("{} ({})", list.len(), by_state.join(", ")) },
            ],
        ],
    );
    if !list.is_empty() {
        out.push('\n');
        out.push_str(&pipelines_table(list));
    }
    out
}

/// The table of `deltaforge pipelines list` (and of `status`).
pub fn pipelines_table(list: &[Value]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                text(&p["name"]),
                text(&p["tenant"]),
                text(&p["state"]),
                format!("{}/{}", text(&p["source_type"]), text(&p["source_id"])),
                text(&p["events_read"]),
                lag(p),
                text(&p["restarts"]),
                truncate(&text(&p["last_error"]), 60),
            ]
        })
        .collect();
    table(&["NAME", "TENANT", "STATE", "SOURCE", "EVENTS", "LAG", "RESTARTS", "LAST ERROR"], &rows)
}

/// The text of `deltaforge pipelines show`.
pub fn pipeline_details(v: &Value) -> String {
    let checkpoint = match v.get("checkpoint") {
        None | Some(Value::Null) => "none".to_string(),
        Some(cp) => format!("{} written at {}", cp["position"], text(&cp["written_at"])),
    };
    let mut rows = vec![
        vec!["name:".into(), text(&v["name"])],
        vec!["tenant:".into(), text(&v["tenant"])],
        vec!["state:".into(), format!("{} since {}", text(&v["state"]), text(&v["state_since"]))],
        vec!["source:".into(), format!("{} (id {})", text(&v["source_type"]), text(&v["source_id"]))],
        vec!["events read:".into(), text(&v["events_read"])],
        vec!["lag:".into(), lag(v)],
        vec!["checkpoint:".into(), checkpoint],
        vec!["restarts:".into(), text(&v["restarts"])],
        vec!["last error:".into(), text(&v["last_error"])],
    ];
    if let Some(lease) = v.get("lease").filter(|l| !l.is_null()) {
        rows.push(vec!["lease:".into(), lease.to_string()]);
    }
    let sinks: Vec<String> = v["spec"]["spec"]["sinks"]
        .as_array()
        .map(|s| s.iter().map(|k| format!("{}/{}", text(&k["type"]), text(&k["config"]["id"]))).collect())
        .unwrap_or_default();
    rows.push(vec!["sinks:".into(), if sinks.is_empty() { "-".into() } else { sinks.join(", ") }]);
    table(&[], &rows)
}

/// `lag_seconds` (and `lag_bytes` when measured) as text.
fn lag(v: &Value) -> String {
    let secs = v["lag_seconds"].as_f64().map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into());
    match v["lag_bytes"].as_u64() {
        Some(b) => format!("{secs} / {b}B"),
        None => secs,
    }
}

/// A JSON value as cell text: strings unquoted, `null` as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// At most `max` characters, one line, with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    let one_line = s.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        format!("{}…", one_line.chars().take(max.saturating_sub(1)).collect::<String>())
    }
}

/// Left-aligned columns separated by two spaces (no trailing spaces);
/// `headers` may be empty.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut all: Vec<Vec<String>> = Vec::new();
    if !headers.is_empty() {
        all.push(headers.iter().map(|h| h.to_string()).collect());
    }
    all.extend(rows.iter().cloned());
    let cols = all.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| all.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &all {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::cli::{Cli, Command};

    fn view(name: &str, state: &str) -> Value {
        json!({
            "name": name, "tenant": "t1", "state": state, "state_since": "2026-01-01T00:00:00Z",
            "last_error": null, "restarts": 0, "source_type": "datagen", "source_id": format!("{name}-src"),
            "events_read": 1200, "lag_seconds": 0.25, "lag_bytes": null,
            "checkpoint": {"position": {"seq": 1200}, "written_at": "2026-01-01T00:00:01Z"},
            "spec": {"metadata": {"name": name}, "spec": {"sinks": [{"type": "file", "config": {"id": "out", "path": "/x"}}]}}
        })
    }

    #[test]
    fn pipelines_commands_parse_with_api_token_and_json() {
        let cli = Cli::try_parse_from([
            "deltaforge",
            "pipelines",
            "pause",
            "orders",
            "--api",
            "127.0.0.1:9",
            "--token",
            "t",
            "--json",
        ])
        .unwrap();
        let Command::Pipelines { action: PipelinesAction::Pause { name }, api } = cli.command else {
            panic!("parsed as {:?}", cli.command)
        };
        assert_eq!(
            (name.as_str(), api.api.as_str(), api.token.as_deref(), api.json),
            ("orders", "127.0.0.1:9", Some("t"), true)
        );
        let cli = Cli::try_parse_from(["deltaforge", "pipelines", "reset", "orders", "--yes"]).unwrap();
        assert!(matches!(cli.command, Command::Pipelines { action: PipelinesAction::Reset { yes: true, .. }, .. }));
        assert!(Cli::try_parse_from(["deltaforge", "pipelines", "show"]).is_err(), "show needs a name");
        assert!(Cli::try_parse_from(["deltaforge", "status", "--api-token", "t"]).is_ok(), "alias of --token");
    }

    #[test]
    fn the_pipelines_table_aligns_columns() {
        let t = pipelines_table(&[view("orders", "running"), view("a", "paused")]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("NAME    TENANT  STATE    SOURCE"), "{t}");
        assert!(lines[1].starts_with("orders  t1      running  datagen/orders-src"), "{t}");
        assert!(lines[2].starts_with("a       t1      paused   datagen/a-src"), "{t}");
        assert!(lines[1].contains("1200") && lines[1].contains("s  "), "events and lag: {t}");
        assert!(t.lines().all(|l| l == l.trim_end()), "no trailing spaces:\n{t}");
    }

    #[test]
    fn status_counts_states_and_shows_readiness() {
        let list = [view("a", "running"), view("b", "paused"), view("c", "running")];
        let s = status_text(
            "http://h:1",
            &json!({"status": "ok"}),
            false,
            &json!({"error": "1 pipeline(s) not running"}),
            &list,
        );
        assert!(s.contains("pipelines:  3 (2 running, 1 paused)"), "{s}");
        assert!(s.contains("ready:      no: 1 pipeline(s) not running"), "{s}");
        assert!(s.contains("health:     ok"), "{s}");
    }

    #[test]
    fn details_show_checkpoint_and_sinks() {
        let d = pipeline_details(&view("orders", "running"));
        assert!(d.contains("{\"seq\":1200} written at 2026-01-01T00:00:01Z"), "{d}");
        assert!(d.contains("sinks:        file/out"), "{d}");
        assert!(d.contains("last error:   -"), "{d}");
    }

    #[test]
    fn long_errors_are_cut_to_one_line() {
        let t = truncate("a\nb".repeat(50).as_str(), 10);
        assert_eq!(t.chars().count(), 10);
        assert!(!t.contains('\n') && t.ends_with('…'));
    }

    #[test]
    fn names_are_percent_encoded_in_paths() {
        assert_eq!(pipeline_path("orders-cdc", "/pause"), "/pipelines/orders-cdc/pause");
        assert_eq!(pipeline_path("a b/c", ""), "/pipelines/a%20b%2Fc");
    }

    #[test]
    fn a_stopping_pipeline_is_reported_as_pending() {
        assert_eq!(command_line("x", "pause", &json!({"state": "paused"})), "pipeline x: paused");
        assert!(command_line("x", "pause", &json!({"state": "stopping"})).contains("still stopping"));
    }
}
