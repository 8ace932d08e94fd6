//! The network-fault matrix: for each server DeltaForge talks to
//! (PostgreSQL and MariaDB sources; Kafka, Redis, NATS and HTTP sinks) the
//! real binary's connection goes through the test kit's
//! [`FaultProxy`](deltaforge_testkit::fault_proxy::FaultProxy) while rows
//! are written (or `datagen` generates events), and the proxy, never the
//! server, misbehaves:
//!
//! 1. **blackhole during connect**: the pipeline starts while every new
//!    connection is accepted and then left silent; the fault must show
//!    (restarts in the API, or `deltaforge_sink_errors_total`) and nothing
//!    may be delivered; then the proxy passes again;
//! 2. **a 30 s stall mid-stream** (no FIN, no RST, for open and new
//!    connections): the fault must show *during* the stall (so no client
//!    hangs on the half-dead connection), and delivery resumes after it;
//! 3. **a reset mid-batch**: a one-second stall holds a batch in flight,
//!    then every connection is reset (RST); the fault must show;
//! 4. **connections stuck for good**: the open connections stall for ever
//!    while new ones pass (a stuck NAT entry, a dead peer behind a proxy);
//!    the fault must show and delivery resume, which only a client that
//!    gives up on a stuck connection by itself achieves.
//!
//! After each fault the pipeline must recover by itself within
//! [`RECOVERY`] (the supervisor's restart backoff tops out at 30 s, a
//! sink's at `retry_max_ms`). At the end, row by row: every id up to the
//! end is delivered, and every duplicate lies within the at-least-once
//! window of a fault and has at most [`MAX_COPIES`] copies. A fault's window
//! runs from the delivery point when it began to the source's head when
//! delivery resumed after it, each end widened by [`WINDOW`]: while a
//! backlog drains, requests in flight reach far past the checkpoint, and a
//! client giving up on a stuck one resends all of it.
//!
//! The six cases run concurrently, one thread each, so the matrix takes a
//! little more than one case (about 2 minutes). Only the proxies
//! misbehave: the shared servers are untouched, so this lives in the `it`
//! binary. Kafka runs a broker of its own (see [`targets::kafka`]), the one
//! way to put the proxy on every broker connection. `DF_FAULT_CASES=pg,redis`
//! runs only the named cases; `DF_FAULT_LOGS=1` adds each binary's log to
//! its report.

mod driver;
mod targets;

use std::time::Duration;

/// How long a pipeline may take to deliver again once a fault ends. 120 s,
/// not 60: a MariaDB binlog dump stuck writing to a stalled connection
/// holds the replica's server id until the server's `net_write_timeout`
/// (60 s) ends it, and the new dump waits for it (seen once on CI load).
pub const RECOVERY: Duration = Duration::from_secs(120);

/// How far each end of a fault's at-least-once window is widened, in events.
pub const WINDOW: u64 = 1500;

/// The most copies any one event may have in a target.
pub const MAX_COPIES: usize = 3;

#[test]
fn network_fault_matrix() {
    let only = std::env::var("DF_FAULT_CASES").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|c| c.trim() == name);
    let started = std::time::Instant::now();
    let mut handles = Vec::new();
    for (name, setup) in targets::ALL {
        if !wanted(name) {
            continue;
        }
        let handle = std::thread::Builder::new()
            .name(format!("fault-{name}"))
            .spawn(move || driver::run_case(name, *setup))
            .expect("case thread");
        handles.push((name, handle));
    }
    let mut failures = Vec::new();
    for (name, h) in handles {
        match h.join() {
            Ok(report) => eprintln!("[{name}] {report}"),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("[{name}] {msg}"));
            }
        }
    }
    eprintln!("network fault matrix: {:.0} s wall time", started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n\n"));
}
