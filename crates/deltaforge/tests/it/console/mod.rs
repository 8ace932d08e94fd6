//! The web console in a real headless Chromium against the real binary,
//! with a datagen pipeline (whose sink rejects poison events into the
//! dead-letter queue) and a PostgreSQL pipeline fed by a writer: the
//! console and the API refuse everything without the token or with a
//! wrong one (a tokenless pause pauses nothing); with it, the console shows
//! both pipelines with non-zero events/s, loads in under 300 ms (best of five
//! reloads, Navigation Timing; median under 1 s), pauses one (and the API agrees, as it
//! does on the paused sink's delivered/errors/dropped counts), draws the
//! lag chart with data points (and its lines' pixels on the canvas), runs a
//! backfill whose progress bar reaches 100 %, redrives a dead letter that
//! then leaves the list (and reaches the sink), verifies the PostgreSQL
//! pipeline's file sink against its table (the page shows `equal`, as the
//! API's job does; paused with its writer going on, `different` with the
//! report's counts and first missing key; a datagen pipeline's verify
//! shows the job's error), and shows a spec's
//! validation error at its field and a YAML syntax error at its line.
//! With `DELTAFORGE_UPDATE_SCREENSHOTS=1` it writes the README's
//! screenshots to `docs/screenshots/`.

mod browser;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::spec::write_all;
use crate::support::{
    http_json, pg_cleanup, pg_sql, read_jsonl, service, unique_suffix, wait_for, Deltaforge, Pipeline, RunArgs,
};
use browser::{eventually, Browser};

const TOKEN: &str = "console-token-7f3a";
const DG: &str = "console-dg";
const PG: &str = "console-pg";
/// The navigation's load time in ms (request start to the load event's end).
const LOAD_MS: &str = "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;";

/// How many pixels of the lag chart's canvas are (nearly) the colour of
/// one of its two series.
const LAG_PIXELS: &str = "const c = document.querySelector('#lag-chart canvas'); \
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
    const near = (i, r, g, b) => Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 60 && d[i + 3] > 128; \
    for (let i = 0; i < d.length; i += 4) if (near(i, 180, 83, 9) || near(i, 124, 58, 237)) n++; \
    return n;";

struct Setup {
    df: Deltaforge,
    api: String,
    url: String,
    table: String,
    flag: std::path::PathBuf,
    out: std::path::PathBuf,
    stop_writer: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let url = service("postgres");
        let table = format!("console_{}", unique_suffix());
        pg_cleanup(&url, &table);
        pg_sql(&url, &format!("CREATE TABLE {table} (id bigserial PRIMARY KEY, v int NOT NULL); INSERT INTO {table} (v) SELECT g FROM generate_series(1, 3000) g"));
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("poison.flag");
        std::fs::write(&flag, b"on").unwrap();
        let out = dir.path().join("dg.jsonl");
        let dg = Pipeline::new(DG)
            .source("datagen", json!({ "id": DG, "rate": 300 }))
            .file_sink("out", &out, Value::Null)
            .batch(100, 20)
            .spec("dlq", json!({ "capacity": 10000, "overflow": "block" }));
        let pg = Pipeline::new(PG)
            .postgres_table_source(PG, &url, &table, &table)
            .file_sink("pg-out", &dir.path().join("pg.jsonl"), Value::Null)
            .batch(100, 20);
        let cfg = write_all(dir.path().join("pipelines.yaml"), &[dg, pg]);
        let (args, api, _metrics) = RunArgs::new(&cfg, &dir.path().join("df.db")).free_ports();
        let fp = format!("poison:out={}@500", flag.display());
        let df = args
            .opt("--history-resolution-secs", "1")
            .start(&dir.path().join("df.log"), &[("DELTAFORGE_API_TOKEN", TOKEN), ("DELTAFORGE_FAILPOINTS", &fp)]);
        wait_for(Duration::from_secs(30), || {
            http_json(&api, "GET", "/health", None, None).ok().filter(|(s, _)| *s == 200)
        })
        .unwrap_or_else(|| panic!("API did not come up\n{}", df.log_text()));
        // A writer keeps the PostgreSQL pipeline busy.
        let stop_writer = Arc::new(AtomicBool::new(false));
        let writer = {
            let (url, table, stop) = (url.clone(), table.clone(), stop_writer.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    pg_sql(&url, &format!("INSERT INTO {table} (v) SELECT g FROM generate_series(1, 50) g"));
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        Setup { df, api, url, table, flag, out, stop_writer, writer: Some(writer), _dir: dir }
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = http_json(&self.api, "GET", path, Some(TOKEN), None).unwrap();
        assert_eq!(status, 200, "GET {path}: {body}\n{}", self.df.log_text());
        body
    }

    fn console(&self) -> String {
        format!("http://{}/", self.api)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop_writer.store(true, Ordering::SeqCst);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.df.terminate();
        let _ = self.df.wait_exit(Duration::from_secs(30));
        pg_cleanup(&self.url, &self.table);
    }
}

async fn number(b: &Browser, script: &str) -> f64 {
    b.js(script).await.as_f64().unwrap_or(f64::NAN)
}

/// The events/s of `name`'s row: the smaller of the value the row holds
/// and the number it shows (both must be non-zero for the row to count).
async fn row_rate(b: &Browser, name: &str) -> f64 {
    number(
        b,
        &format!(
            "const c = document.querySelector('tr[data-pipeline=\"{name}\"] td.rate'); \
        if (!c) return null; const shown = Number(c.querySelector('.rate-value').textContent.replace(/,/g, '')); \
        return Math.min(Number(c.dataset.value), shown);"
        ),
    )
    .await
}

async fn login(b: &Browser, s: &Setup) {
    b.goto(&s.console()).await;
    // Without the token the API refuses, and the console shows nothing but the token form.
    let msg = eventually(b, "the refusal", Duration::from_secs(10), || async {
        b.text("#login-message").await.filter(|t| t.contains("authentication required"))
    })
    .await;
    assert!(msg.contains("refused"), "{msg}");
    let no_data = "return document.querySelector('#pipelines') === null && !document.querySelector('#login').hidden";
    assert_eq!(b.js(no_data).await, json!(true), "no data without the token");
    assert_eq!(http_json(&s.api, "GET", "/pipelines", None, None).unwrap().0, 401);
    // A mutation without the token is refused too, and changes nothing.
    let (status, body) = http_json(&s.api, "POST", &format!("/pipelines/{DG}/pause"), None, Some("{}")).unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(s.get(&format!("/pipelines/{DG}"))["state"], "running", "a refused pause paused nothing");
    // A wrong token is refused as well: the console asks again and shows nothing.
    b.fill("#token-input", "not-the-token").await;
    b.click("#login-form button[type=submit]").await;
    eventually(b, "the wrong token refused", Duration::from_secs(10), || async {
        b.text("#login-message").await.filter(|t| t.contains("invalid API token"))
    })
    .await;
    assert_eq!(b.js(no_data).await, json!(true), "no data with a wrong token");
    b.fill("#token-input", TOKEN).await;
    b.click("#login-form button[type=submit]").await;
}

/// Five Navigation Timing load times (ms) of the console page, each a
/// reload in the same browser (files revalidated, 304), sorted.
async fn page_loads_ms(b: &Browser, s: &Setup) -> Vec<f64> {
    let mut loads = Vec::new();
    for _ in 0..5 {
        b.goto(&s.console()).await;
        b.wait_for_css("tr[data-pipeline] td.rate").await;
        let ms = number(b, LOAD_MS).await;
        assert!(ms > 0.0, "no navigation timing: {ms}");
        loads.push(ms);
    }
    loads.sort_by(f64::total_cmp);
    loads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_and_operates_both_pipelines_in_chromium() {
    let s = Setup::start();
    let b = Browser::open(1280, 900).await;
    let started = Instant::now();
    login(&b, &s).await;

    // Pipelines page: both pipelines, non-zero events/s from the history sampler.
    for name in [DG, PG] {
        let what = format!("{name} with non-zero events/s");
        eventually(&b, &what, Duration::from_secs(60), || async { (row_rate(&b, name).await > 0.0).then_some(()) })
            .await;
    }
    let first_ms = number(&b, LOAD_MS).await;
    // Then as an operator's next visits: the browser is up, files revalidate (304).
    let loads = page_loads_ms(&b, &s).await;
    let (best_ms, median_ms) = (loads[0], loads[2]);
    eprintln!(
        "console page load on loopback: best {best_ms:.0} ms, median {median_ms:.0} ms of {loads:.0?} \
         ({first_ms:.0} ms the first time in a fresh browser; both pipelines live {:?} after opening)",
        started.elapsed()
    );
    // The budget on the best of five (a busy CI machine only adds
    // time: 80-95 ms on a quiet one, 190-260 ms with a load average of 14),
    // and a generous bound on the median.
    assert!(best_ms < 300.0, "the console page never loaded in under 300 ms: {loads:?}");
    assert!(median_ms < 1000.0, "the console page took {median_ms} ms (median of {loads:?}) to load");
    if std::env::var("DELTAFORGE_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        // Some minutes of sparkline for the picture.
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    b.screenshot("pipelines").await;

    // Pause the datagen pipeline from its page; the page and the API agree.
    b.goto(&format!("{}#/pipelines/{DG}", s.console())).await;
    b.click_confirmed("button[data-action=pause]").await;
    eventually(&b, "the paused badge", Duration::from_secs(30), || async {
        b.text("h1 .state").await.filter(|t| t == "paused")
    })
    .await;
    assert_eq!(s.get(&format!("/pipelines/{DG}"))["state"], "paused");
    // Its sink's counts beside its position: events delivered, and the
    // same numbers as the API (stable now that the run is paused).
    let counts = s.get(&format!("/pipelines/{DG}"))["sink_counts"]["out"].clone();
    let delivered = counts["delivered"].as_u64().unwrap_or_else(|| panic!("no sink_counts.out: {counts}"));
    assert!(delivered > 0, "the datagen sink delivered nothing: {counts}");
    let shown = eventually(&b, "the sink's counts as the API reports them", Duration::from_secs(10), || async {
        let js = "const r = document.querySelector('tr[data-sink=\"out\"]'); if (!r) return null; \
                  const o = {}; for (const c of r.querySelectorAll('td[data-count]')) o[c.dataset.count] = Number(c.dataset.value); return o;";
        let shown = b.js(js).await;
        (shown == json!({ "delivered": delivered, "errors": counts["errors"], "dropped": counts["dropped"] })).then_some(shown)
    })
    .await;
    let text = b.text("tr[data-sink=\"out\"] td[data-count=delivered]").await.unwrap_or_default();
    assert_eq!(text.replace(',', "").parse::<u64>().ok(), Some(delivered), "the delivered cell reads {text:?}");
    eprintln!("datagen sink counts on the page: {shown} (API: {counts})");
    b.goto(&s.console()).await;
    eventually(&b, "the paused row", Duration::from_secs(10), || async {
        b.js(&format!("const r = document.querySelector('tr[data-pipeline=\"{DG}\"]'); return r && r.dataset.state;"))
            .await
            .as_str()
            .filter(|st| *st == "paused")
            .map(|_| ())
    })
    .await;

    // The PostgreSQL pipeline's page: the lag chart drawn with data points.
    b.goto(&format!("{}#/pipelines/{PG}", s.console())).await;
    let drawn = eventually(&b, "the lag chart with data points", Duration::from_secs(30), || async {
        let n = number(&b, "return Number(document.querySelector('#lag-chart').dataset.drawnPoints || 0);").await;
        (n >= 3.0).then_some(n)
    })
    .await;
    let history = s.get(&format!("/pipelines/{PG}/history"));
    let samples = history["samples"].as_array().unwrap();
    assert!(samples.len() as f64 >= drawn, "{history}");
    // `?since=T`: only the samples after T (the page asks for these on each
    // poll after its first), and the page's chart keeps growing with them.
    let since = samples[0]["t"].as_u64().unwrap();
    let newer = s.get(&format!("/pipelines/{PG}/history?since={since}"));
    let newer = newer["samples"].as_array().unwrap();
    assert!(!newer.is_empty() && newer.iter().all(|x| x["t"].as_u64().unwrap() > since), "{newer:?} after {since}");
    // Samples may arrive between the two requests: count only those both saw.
    let last = samples.last().and_then(|x| x["t"].as_u64()).unwrap();
    let seen_before = newer.iter().filter(|x| x["t"].as_u64().unwrap() <= last).count();
    assert!(seen_before < samples.len(), "?since= returned the whole history");
    eventually(&b, "the lag chart growing poll after poll", Duration::from_secs(30), || async {
        let n = number(&b, "return Number(document.querySelector('#lag-chart').dataset.drawnPoints || 0);").await;
        (n >= drawn + 3.0).then_some(())
    })
    .await;
    assert_eq!(b.js("return document.querySelectorAll('#lag-chart canvas').length").await, json!(1));
    // And the lines are on the canvas: pixels in the lag series' colours
    // (#b45309 seconds, #7c3aed bytes; a lag of 0 still draws along the axis).
    let painted = number(&b, LAG_PIXELS).await;
    assert!(painted >= 20.0, "the lag chart's canvas holds {painted} pixels of its series' colours");
    eprintln!("lag chart: {drawn} data points, {painted} pixels of its lines");

    // A backfill with a condition: its progress bar reaches 100 %.
    let qualified = format!("public.{}", s.table);
    b.fill("#backfill-tables", &qualified).await;
    b.fill("#backfill-where", "id % 2 = 0").await;
    b.click_confirmed("#backfill-form button[type=submit]").await;
    let row = format!(".progress-row[data-table=\"{qualified}\"]");
    eventually(&b, "the backfill's progress bar at 100 %", Duration::from_secs(90), || async {
        let label = b.text(&format!("{row} label")).await?;
        let value =
            number(&b, &format!("return document.querySelector('{} progress').value;", row.replace('\'', "\\'"))).await;
        (label.contains("backfill") && value == 100.0).then_some(())
    })
    .await;
    let snap = s.get(&format!("/pipelines/{PG}/snapshot"));
    assert_eq!(snap["tables"][0]["progress"]["kind"], "backfill", "{snap}");
    assert_eq!(snap["tables"][0]["progress"]["state"], "done", "{snap}");
    assert!(
        b.text("#checkpoint-value").await.unwrap_or_default().contains("lsn"),
        "the stored checkpoint row is shown"
    );
    verify_shows_equal(&b, &s).await;
    b.screenshot("pipeline").await;
    verify_of_paused_pipeline_shows_missing_rows(&b, &s).await;

    // Dead letters: fix the sink, redrive the first one; it leaves the list and reaches the sink.
    b.goto(&format!("{}#/pipelines/{DG}", s.console())).await;
    verify_of_datagen_shows_its_error(&b, &s).await;
    let first: u64 = eventually(&b, "a dead letter in the list", Duration::from_secs(30), || async {
        b.click("#dlq-section form button[type=submit]").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.js("const r = document.querySelector('#dlq-table tr[data-queue-id]'); return r ? Number(r.dataset.queueId) : null;")
            .await
            .as_u64()
    })
    .await;
    let letters = s.get(&format!("/pipelines/{DG}/dlq"));
    let letter = letters["letters"].as_array().unwrap().iter().find(|l| l["queue_id"] == first).unwrap().clone();
    let poison_id = letter["letter"]["event"]["after"]["id"].as_u64().unwrap();
    let redrive = format!("#dlq-table tr[data-queue-id=\"{first}\"] button[data-action=redrive]");
    // While the sink still rejects it, a redrive fails, says why, and the letter stays.
    b.click_confirmed(&redrive).await;
    let toast = eventually(&b, "the failed redrive reported", Duration::from_secs(30), || async {
        b.text("#toast.error").await.filter(|t| t.starts_with("Redrive failed"))
    })
    .await;
    assert!(toast.contains("stays queued"), "{toast}");
    assert_eq!(s.get(&format!("/pipelines/{DG}/dlq"))["letters"][0]["queue_id"], first, "the letter is still first");
    std::fs::remove_file(&s.flag).unwrap();
    b.click_confirmed(&redrive).await;
    eventually(&b, "the redriven letter gone from the list", Duration::from_secs(30), || async {
        (b.js(&format!("return document.querySelector('#dlq-table tr[data-queue-id=\"{first}\"]') === null")).await
            == json!(true))
        .then_some(())
    })
    .await;
    let after = s.get(&format!("/pipelines/{DG}/dlq"));
    assert!(after["letters"].as_array().unwrap().iter().all(|l| l["queue_id"] != first), "{after}");
    assert_eq!(after["total"].as_u64().unwrap() + 1, letters["total"].as_u64().unwrap(), "exactly one letter removed");
    let delivered = read_jsonl(&s.out).iter().filter(|e| e["after"]["id"].as_u64() == Some(poison_id)).count();
    assert_eq!(delivered, 1, "the redriven event {poison_id} reached the sink once");

    // Filters, then acknowledging (discarding) the next letter.
    if let Some(next) = after["letters"][0]["queue_id"].as_u64() {
        b.fill("#dlq-sink", "no-such-sink").await;
        b.click("#dlq-section form button[type=submit]").await;
        eventually(&b, "an empty filtered list", Duration::from_secs(10), || async {
            let shown = b.js("return document.querySelectorAll('#dlq-table tr[data-queue-id]').length").await;
            (b.text("#dlq-total").await.is_some() && shown == json!(0)).then_some(())
        })
        .await;
        b.fill("#dlq-sink", "out").await;
        b.click("#dlq-section form button[type=submit]").await;
        let ack = format!("#dlq-table tr[data-queue-id=\"{next}\"] button[data-action=acknowledge]");
        b.click_confirmed(&ack).await;
        eventually(&b, "the acknowledged letter gone", Duration::from_secs(10), || async {
            (b.js(&format!("return document.querySelector('#dlq-table tr[data-queue-id=\"{next}\"]') === null")).await
                == json!(true))
            .then_some(())
        })
        .await;
        let left = s.get(&format!("/pipelines/{DG}/dlq"));
        assert_eq!(left["total"].as_u64().unwrap() + 1, after["total"].as_u64().unwrap(), "{left}");
    }

    // Readable on a phone: at 390 px the page itself does not scroll sideways.
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(&s.console()).await;
    b.wait_for_css("tr[data-pipeline] td.rate").await;
    let overflow = b.js("return document.documentElement.scrollWidth - window.innerWidth").await;
    assert!(overflow.as_i64().unwrap() <= 0, "the pipelines page is wider than a phone by {overflow} px");
    b.client.set_window_size(1280, 900).await.unwrap();

    invalid_spec_error_shown_at_its_field(&b, &s).await;
    b.close().await;
}

/// On the PostgreSQL pipeline's page (its writer still inserting), Verify
/// compares its file sink with the table: the page shows the job's result
/// `equal` with the rows compared, and the API's GET of that job agrees.
async fn verify_shows_equal(b: &Browser, s: &Setup) {
    b.click_confirmed("button[data-action=verify]").await;
    let done = "const r = document.querySelector('#verify-result'); \
                return r && r.dataset.state && r.dataset.state !== 'running' ? [r.dataset.state, Number(r.dataset.job)] : null;";
    let (state, id) = eventually(b, "the verification's result", Duration::from_secs(240), || async {
        let v = b.js(done).await;
        Some((v[0].as_str()?.to_string(), v[1].as_u64()?))
    })
    .await;
    let text = b.text("#verify-result").await.unwrap_or_default();
    let job = s.get(&format!("/pipelines/{PG}/verify/{id}"));
    assert_eq!(state, "equal", "the page shows {text:?}; the API: {job}");
    assert_eq!(job["state"], "equal", "{job}");
    assert_eq!(job["report"]["equal"], true, "{job}");
    let compared = job["report"]["rows_compared"].as_u64().unwrap_or(0);
    assert!(compared >= 3000, "only {compared} rows compared: {job}");
    assert!(
        text.contains("equal") && text.replace(',', "").contains(&format!("{compared} rows compared")),
        "the page's result {text:?} is not the API's {job}"
    );
    eprintln!("verify on the page: {text:?}");
}

/// With the PostgreSQL pipeline paused and its writer still inserting,
/// the rows inserted since are missing in the sink: the page shows
/// `different` with the API report's counts and its first missing key.
async fn verify_of_paused_pipeline_shows_missing_rows(b: &Browser, s: &Setup) {
    let before = b.js("return Number(document.querySelector('#verify-result').dataset.job);").await;
    b.click_confirmed("button[data-action=pause]").await;
    eventually(b, "the paused badge", Duration::from_secs(30), || async {
        b.text("h1 .state").await.filter(|t| t == "paused")
    })
    .await;
    b.click_confirmed("button[data-action=verify]").await;
    let done = format!(
        "const r = document.querySelector('#verify-result'); \
         return r && Number(r.dataset.job) !== {before} && r.dataset.state !== 'running' ? [r.dataset.state, Number(r.dataset.job)] : null;"
    );
    let (state, id) = eventually(b, "the second verification's result", Duration::from_secs(240), || async {
        let v = b.js(&done).await;
        Some((v[0].as_str()?.to_string(), v[1].as_u64()?))
    })
    .await;
    let text = b.text("#verify-result").await.unwrap_or_default();
    let job = s.get(&format!("/pipelines/{PG}/verify/{id}"));
    assert_eq!(state, "different", "the page shows {text:?}; the API: {job}");
    assert_eq!(job["state"], "different", "{job}");
    let sum = |field: &str| -> u64 {
        job["report"]["tables"].as_array().unwrap().iter().map(|t| t[field].as_u64().unwrap_or(0)).sum()
    };
    let (missing, extra, differing) = (sum("missing"), sum("extra"), sum("differing"));
    assert!(missing > 0, "no row missing after the pause: {job}");
    assert!(text.contains(&format!("{missing} missing, {extra} extra, {differing} differing")), "{text:?} vs {job}");
    let first = &job["report"]["missing"][0];
    let key = format!("{} {}", first["table"].as_str().unwrap(), first["key"].as_str().unwrap());
    assert!(text.contains(&format!("missing in sink: {key}")), "{text:?} does not list {key}");
    eprintln!("verify of the paused pipeline on the page: {text:?}");
}

/// A datagen source has no tables to compare: the job fails, and the page
/// shows `failed` with the engine's error, as the API's job has it.
async fn verify_of_datagen_shows_its_error(b: &Browser, s: &Setup) {
    b.click_confirmed("button[data-action=verify]").await;
    let id = eventually(b, "the failed verification", Duration::from_secs(30), || async {
        b.js("const r = document.querySelector('#verify-result'); \
              return r && r.dataset.state === 'failed' ? Number(r.dataset.job) : null;")
            .await
            .as_u64()
    })
    .await;
    let job = s.get(&format!("/pipelines/{DG}/verify/{id}"));
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("no tables to read back"), "{job}");
    let shown = b.text("#verify-result .error-text").await.unwrap_or_default();
    assert_eq!(shown, error, "the page shows the API's error");
}

/// A spec whose `rate` is not a number: the API's field path puts the
/// error right below the `rate:` line; then YAML that does not parse: the
/// error sits below the line the parser names. Nothing is created.
async fn invalid_spec_error_shown_at_its_field(b: &Browser, s: &Setup) {
    b.goto(&format!("{}#/new", s.console())).await;
    let yaml = "apiVersion: deltaforge/v1\nkind: Pipeline\nmetadata:\n  name: console-bad\nspec:\n  source:\n    type: datagen\n    config:\n      id: console-bad\n      rate: fast\n  sinks:\n    - type: discard\n      config:\n        id: d\n";
    let area = b.wait_for_css("#spec-yaml").await;
    b.client
        .execute("arguments[0].value = arguments[1];", vec![serde_json::to_value(&area).unwrap(), json!(yaml)])
        .await
        .unwrap();
    b.click("#spec-form button[type=submit]").await;
    let css = "#spec-errors .field-error[data-field=\"spec.source.config.rate\"]";
    let text =
        eventually(b, "the error at spec.source.config.rate", Duration::from_secs(10), || async { b.text(css).await })
            .await;
    assert!(text.starts_with("spec.source.config.rate: ") && text.len() > 30, "{text}");
    let line_above = b
        .js(&format!(
            "return document.querySelector('{}').closest('li').previousElementSibling.textContent;",
            css.replace('\'', "\\'")
        ))
        .await;
    assert_eq!(line_above, json!("      rate: fast"), "the error sits right below its field's line");
    assert_eq!(http_json(&s.api, "GET", "/pipelines/console-bad", Some(TOKEN), None).unwrap().0, 404);

    // YAML that does not parse: the parser's line and column, below that line.
    let broken = yaml.replace("    config:\n      id: console-bad\n", "   config: [\n      id: console-bad\n");
    assert_ne!(broken, yaml, "the spec was broken");
    b.client
        .execute("arguments[0].value = arguments[1];", vec![serde_json::to_value(&area).unwrap(), json!(broken)])
        .await
        .unwrap();
    b.click("#spec-form button[type=submit]").await;
    let css = "#spec-errors .field-error[data-field^=\"line 8,\"]";
    let text =
        eventually(b, "the syntax error at line 8", Duration::from_secs(10), || async { b.text(css).await }).await;
    assert!(text.contains("invalid YAML"), "{text}");
    let line_above = b
        .js(&format!(
            "return document.querySelector('{}').closest('li').previousElementSibling.textContent;",
            css.replace('\'', "\\'")
        ))
        .await;
    assert_eq!(line_above, json!("   config: ["), "the syntax error sits right below its line");
    assert_eq!(http_json(&s.api, "GET", "/pipelines/console-bad", Some(TOKEN), None).unwrap().0, 404);
}
