//! The harness's shared helpers, the one place tests take them from:
//!
//! - [`spec`]: the pipeline-spec builder;
//! - [`storage`]: reading the SQLite storage file (the only SQL of the harness);
//! - [`sinks`]: reading back each sink (file, Kafka, Redis, NATS, HTTP);
//! - this module: the binary under test ([`BIN`], [`start`], [`RunArgs`]),
//!   unique names, datagen's expected keys, and — re-exported from the
//!   `deltaforge-testkit` crate — starting the servers, SQL clients,
//!   waiting, the API client and metrics parsing.

pub mod sinks;
pub mod spec;
pub mod storage;

use std::path::Path;

// Each binary uses a subset of these.
#[allow(unused_imports)]
pub use deltaforge_testkit::{
    free_port, http, http_json, mariadb_command, mariadb_sql, metric_value, pg_cleanup, pg_command, pg_lsn, pg_sql,
    pg_tls_ca, service, service_action, unique_suffix, wait_for, Deltaforge, Rng,
};
#[allow(unused_imports)]
pub use sinks::read_jsonl;
pub use spec::Pipeline;

/// The `deltaforge` binary under test (the only place naming it).
pub const BIN: &str = env!("CARGO_BIN_EXE_deltaforge");

/// Starts the binary under test with `args`, logging to `log` (appended),
/// with extra environment `envs`.
pub fn start(args: &[&str], log: &Path, envs: &[(&str, &str)]) -> Deltaforge {
    Deltaforge::start(Path::new(BIN), args, log, envs)
}

/// The arguments of a `deltaforge run`: the config, the SQLite storage
/// file and, when asked for, the API and metrics addresses.
#[derive(Clone, Debug)]
pub struct RunArgs {
    args: Vec<String>,
}

impl RunArgs {
    /// `run --config {cfg} --storage-path {db}`.
    pub fn new(cfg: &Path, db: &Path) -> Self {
        RunArgs { args: vec!["run".into(), "--config".into(), path_str(cfg), "--storage-path".into(), path_str(db)] }
    }

    /// Adds `--api-addr {api} --metrics-addr {metrics}`.
    pub fn ports(mut self, api: &str, metrics: &str) -> Self {
        self.args.extend(["--api-addr".into(), api.into(), "--metrics-addr".into(), metrics.into()]);
        self
    }

    /// Adds free API and metrics ports on 127.0.0.1; returns them too.
    pub fn free_ports(self) -> (Self, String, String) {
        let api = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        (self.ports(&api, &metrics), api, metrics)
    }

    /// Adds more arguments.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    /// The arguments as `&str`s.
    pub fn as_strs(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// Starts the binary with these arguments.
    pub fn start(&self, log: &Path, envs: &[(&str, &str)]) -> Deltaforge {
        start(&self.as_strs(), log, envs)
    }

    /// Starts the binary, waits up to `timeout` for it to exit and asserts
    /// it exited with 0 (log in the message).
    pub fn run_to_end(&self, log: &Path, envs: &[(&str, &str)], timeout: std::time::Duration) {
        let mut df = self.start(log, envs);
        let code = df.wait_exit(timeout);
        assert_eq!(code, Some(0), "deltaforge did not finish cleanly\n{}", df.log_text());
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_string()
}

/// `{prefix}-{unique_suffix()}`: a name for topics, streams, tables, slots
/// and pipelines that does not collide with other tests.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", unique_suffix())
}

/// The idempotency key `datagen` gives event `id` with 3 rows per
/// transaction and `count` events in all (0: unbounded).
pub fn datagen_key(src: &str, id: u64, count: u64) -> String {
    let tx_end = (id.div_ceil(3) * 3).min(if count == 0 { u64::MAX } else { count });
    format!("{src}:{tx_end}:{}", (id - 1) % 3)
}

/// The table `datagen` gives event `id` with `tables: [demo.orders, demo.items]`.
pub fn datagen_table(id: u64) -> &'static str {
    if id.is_multiple_of(2) {
        "orders"
    } else {
        "items"
    }
}
