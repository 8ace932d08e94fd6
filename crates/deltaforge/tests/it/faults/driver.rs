//! The fault sequence every case goes through (blackhole during connect,
//! a 30 s stall mid-stream, a reset mid-batch, connections stuck for good),
//! the checks after each
//! fault, and the row-by-row check at the end. A case only says how to
//! start its pipeline, how far delivery got and which ids were delivered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, FaultProxy};

use super::{MAX_COPIES, RECOVERY, WINDOW};
use crate::support::{http, http_json, wait_for, Deltaforge};

/// The length of the stall mid-stream.
const STALL: Duration = Duration::from_secs(30);

/// Stops a case's load; returns the last id that must be delivered.
pub type Finish = Box<dyn FnOnce(&mut Deltaforge) -> u64 + Send>;

/// Reads every id a case's target holds, once per copy.
pub type ReadIds = Box<dyn FnOnce() -> Vec<u64> + Send>;

/// Starts a case behind a blackholing proxy.
pub type Setup = fn() -> Case;

/// One running case: its proxy, its binary and how to observe them.
pub struct Case {
    /// The proxy between the binary and the server.
    pub proxy: FaultProxy,
    /// The running binary.
    pub df: Deltaforge,
    /// Its API address.
    pub api: String,
    /// Its metrics address.
    pub metrics: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The delivery point: the highest id `n` such that every id up to `n`
    /// is durably delivered (a checkpoint's sequence, or the rows a file
    /// holds).
    pub point: Box<dyn FnMut() -> u64 + Send>,
    /// The source's head: an upper bound on the highest id produced so
    /// far (the writer's last insert, or datagen's rate × time since the
    /// start plus one transaction). A fault's at-least-once window ends at
    /// the head when it recovered: events in flight during the fault may
    /// reach past the delivery point by a whole backlog.
    pub head: Box<dyn FnMut() -> u64 + Send>,
    /// Stops the load and returns the last id that must be delivered (the
    /// binary still runs; the driver waits for that id, then stops it).
    pub finish: Option<Finish>,
    /// Every id delivered, once per copy (read after the binary stopped).
    pub delivered: Option<ReadIds>,
    /// For a client that survives a reset by itself (it resends what was in
    /// flight on a new connection, so no delivery fails and no counter
    /// moves): the log line that shows it saw the reset.
    pub reset_in_log: Option<&'static str>,
    /// The case's folder (config, storage, log, file sink), removed with it.
    #[allow(dead_code, reason = "held only so that the folder lives as long as the case")]
    pub dir: tempfile::TempDir,
}

/// The pipeline's view in the API (`Null` when it does not answer).
fn view(c: &Case) -> serde_json::Value {
    http_json(&c.api, "GET", &format!("/pipelines/{}", c.pipeline), None, None)
        .map(|(_, v)| v)
        .unwrap_or(serde_json::Value::Null)
}

/// Faults the pipeline showed so far: restarts after retryable failures
/// (API) plus failed sink deliveries (metrics).
fn faults_seen(c: &Case) -> u64 {
    let restarts = view(c)["restarts"].as_u64().unwrap_or(0);
    let text = http(&c.metrics, "GET", "/metrics", None, None).map(|r| r.1).unwrap_or_default();
    let sink_errors: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("deltaforge_sink_errors_total{") && l.contains(&format!("pipeline=\"{}\"", c.pipeline))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    restarts + sink_errors as u64
}

/// Waits up to `timeout` for the fault count to pass `before`; returns
/// how long it took.
fn wait_fault(c: &Case, before: u64, timeout: Duration) -> Option<Duration> {
    let t = Instant::now();
    wait_for(timeout, || (faults_seen(c) > before).then(|| t.elapsed()))
}

/// Waits up to [`RECOVERY`] for the delivery point to pass `past`; returns
/// how long it took.
fn wait_progress(c: &mut Case, past: u64) -> Option<Duration> {
    let t = Instant::now();
    let deadline = t + RECOVERY;
    while Instant::now() < deadline {
        if (c.point)() > past {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Runs the fault sequence on the case `setup` starts (with its proxy
/// blackholing), panicking with the log on the first failed check; returns
/// a one-line report.
pub fn run_case(name: &str, setup: Setup) -> String {
    let started = Instant::now();
    let mut c = setup();
    assert_eq!(c.proxy.fault(), Fault::Blackhole, "{name}: the case must start behind a blackhole");
    let fail = |c: &Case, what: String| -> ! {
        panic!("{name}: {what}\nAPI view: {}\n--- log ---\n{}", view(c), tail(&c.df.log_text()))
    };
    // Each fault's at-least-once window: (delivery point when it began,
    // the source's head when delivery resumed after it).
    let mut marks: Vec<(u64, u64)> = Vec::new();
    let mut report = Vec::new();

    // 1. Blackhole during connect (the proxy was set before the start).
    let Some(seen) = wait_fault(&c, 0, Duration::from_secs(45)) else {
        fail(&c, "the blackhole during connect did not show (no restart, no sink error) within 45 s".into())
    };
    if (c.point)() != 0 {
        fail(&c, "events were delivered through a blackholed proxy".into());
    }
    report.push(format!("blackhole seen after {:.1} s", seen.as_secs_f64()));
    c.proxy.set(Fault::Pass);
    let Some(back) = wait_progress(&mut c, 0) else {
        fail(&c, format!("no delivery within {RECOVERY:?} after the blackhole ended"))
    };
    marks.push((0, (c.head)()));
    report.push(format!("recovered in {:.1} s", back.as_secs_f64()));
    let warm = (c.point)();
    if wait_progress(&mut c, warm + 20).is_none() {
        fail(&c, "delivery stalled after the blackhole without a fault".into());
    }

    // 2. A 30 s stall mid-stream.
    let before = faults_seen(&c);
    let point = (c.point)();
    c.proxy.set(Fault::Stall);
    let stall_started = Instant::now();
    let mut detected = None;
    while stall_started.elapsed() < STALL {
        if detected.is_none() && faults_seen(&c) > before {
            detected = Some(stall_started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    c.proxy.set(Fault::Pass);
    let Some(detected) = detected else {
        fail(&c, format!("the {STALL:?} stall did not show during the stall (the client hangs on the dead link)"))
    };
    let at_end = (c.point)();
    let Some(back) = wait_progress(&mut c, at_end) else {
        fail(&c, format!("no delivery within {RECOVERY:?} after the stall ended"))
    };
    marks.push((point, (c.head)()));
    report.push(format!(
        "stall seen after {:.1} s, recovered {:.1} s after it ended",
        detected.as_secs_f64(),
        back.as_secs_f64()
    ));

    // 3. A reset mid-batch: a short stall holds a batch in flight, then RST.
    // A client with nothing in flight at that instant (between two
    // requests, or one its library re-sends unseen on a new connection)
    // shows nothing, so the stall and reset are repeated, up to three
    // times, until the reset shows.
    let before = faults_seen(&c);
    let resets_logged = c.reset_in_log.map_or(0, |needle| c.df.log_text().matches(needle).count());
    let point = (c.point)();
    let shown = |c: &Case| {
        faults_seen(c) > before
            || c.reset_in_log.is_some_and(|needle| c.df.log_text().matches(needle).count() > resets_logged)
    };
    let mut seen = None;
    for attempt in 1..=3 {
        c.proxy.set(Fault::Stall);
        std::thread::sleep(Duration::from_secs(1));
        c.proxy.reset_all();
        c.proxy.set(Fault::Pass);
        let t = Instant::now();
        if let Some(after) = wait_for(Duration::from_secs(15), || shown(&c).then(|| t.elapsed())) {
            seen = Some((attempt, after));
            break;
        }
    }
    let Some((attempts, seen)) = seen else { fail(&c, "three resets mid-batch did not show within 15 s each".into()) };
    if attempts > 1 {
        report.push(format!("reset attempts: {attempts}"));
    }
    let now = (c.point)();
    let Some(back) = wait_progress(&mut c, now) else {
        fail(&c, format!("no delivery within {RECOVERY:?} after the reset"))
    };
    marks.push((point, (c.head)()));
    report.push(format!("reset seen after {:.1} s, recovered in {:.1} s", seen.as_secs_f64(), back.as_secs_f64()));

    // 4. The open connections stall for good, new ones pass: only a client
    // that gives up on a stuck connection by itself recovers.
    let before = faults_seen(&c);
    let point = (c.point)();
    c.proxy.stick_open();
    let Some(seen) = wait_fault(&c, before, RECOVERY) else {
        fail(&c, format!("connections stuck for good did not show within {RECOVERY:?}"))
    };
    let now = (c.point)();
    let Some(back) = wait_progress(&mut c, now) else {
        fail(&c, format!("no delivery within {RECOVERY:?} with the old connections stuck and new ones passing"))
    };
    marks.push((point, (c.head)()));
    report.push(format!(
        "stuck connections seen after {:.1} s, recovered in {:.1} s",
        seen.as_secs_f64(),
        back.as_secs_f64()
    ));

    // The end: everything delivered, nothing lost, duplicates only near a fault.
    let last_error = view(&c)["last_error"].as_str().unwrap_or("").to_string();
    let finish = c.finish.take().expect("finish");
    let end = finish(&mut c.df);
    if wait_for(RECOVERY, || ((c.point)() >= end).then_some(())).is_none() {
        let point = (c.point)();
        fail(&c, format!("not everything up to {end} was delivered (point {point})"));
    }
    if matches!(c.df.child.try_wait(), Ok(None)) {
        c.df.terminate();
    }
    if c.df.wait_exit(Duration::from_secs(30)) != Some(0) {
        fail(&c, "the binary did not stop cleanly".into());
    }
    let delivered = (c.delivered.take().expect("delivered"))();
    let mut copies: BTreeMap<u64, usize> = BTreeMap::new();
    for id in delivered {
        *copies.entry(id).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=end).filter(|id| !copies.contains_key(id)).collect();
    if !missing.is_empty() {
        fail(&c, format!("{} of {end} events lost, first {:?}", missing.len(), &missing[..missing.len().min(10)]));
    }
    let mut duplicates = 0;
    for (&id, &n) in copies.iter().filter(|(_, n)| **n > 1) {
        duplicates += n - 1;
        if n > MAX_COPIES {
            fail(&c, format!("event {id} delivered {n} times"));
        }
        if !marks.iter().any(|&(from, to)| id + WINDOW > from && id <= to + WINDOW) {
            fail(&c, format!("event {id} duplicated outside every fault's at-least-once window (windows {marks:?})"));
        }
    }
    report.push(format!(
        "{end} events, none lost, {duplicates} duplicates, {:.0} s in all; last error: {}",
        started.elapsed().as_secs_f64(),
        last_error.chars().take(160).collect::<String>()
    ));
    if std::env::var_os("DF_FAULT_LOGS").is_some() {
        report.push(format!("\n--- log ---\n{}", tail(&c.df.log_text())));
    }
    report.join("; ")
}

/// The last 60 lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
