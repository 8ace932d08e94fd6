//! The binary under test ([`BIN`], [`start`], [`RunArgs`]), unique names
//! and datagen's expected keys: shared by both test binaries.

use std::path::Path;

use deltaforge_testkit::{free_port, unique_suffix, Deltaforge};

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

    /// The arguments as `&str`s.
    pub fn as_strs(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// Starts the binary with these arguments.
    pub fn start(&self, log: &Path, envs: &[(&str, &str)]) -> Deltaforge {
        start(&self.as_strs(), log, envs)
    }
}

// Storage backends, ports, extra options and running to the end: the
// `disruptive` binary starts the binary with a storage path only.
#[allow(dead_code, reason = "used by the `it` binary only")]
impl RunArgs {
    /// `run --config {cfg} --storage-backend {backend}` (`memory`, or
    /// `postgres` with `DELTAFORGE_STORAGE_DSN` in the environment).
    pub fn backend(cfg: &Path, backend: &str) -> Self {
        RunArgs {
            args: vec!["run".into(), "--config".into(), path_str(cfg), "--storage-backend".into(), backend.into()],
        }
    }

    /// `run --config {cfg} --storage-backend memory`.
    pub fn memory(cfg: &Path) -> Self {
        Self::backend(cfg, "memory")
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

    /// Adds `{flag} {value}` (e.g. `--instance-id inst-a`).
    pub fn opt(self, flag: &str, value: &str) -> Self {
        self.arg(flag).arg(value)
    }

    /// A [`std::process::Command`] of the binary with these arguments, for
    /// a test that runs it to completion and reads its output itself.
    pub fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(&self.args);
        cmd
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

/// Whether a MariaDB GTID position (`0-1-42`, or several domains joined by
/// `,`) has reached `target` in every domain `target` names.
///
/// Tests share one server and run concurrently, so a checkpoint may be past
/// the server's position read after a test's own writes: compare by
/// sequence number, never by equality with the server's current position.
pub fn gtid_reached(position: &str, target: &str) -> bool {
    let seqs = |s: &str| -> Vec<(String, u64)> {
        s.split(',')
            .filter_map(|g| {
                let mut parts = g.trim().rsplitn(2, '-');
                let seq = parts.next()?.parse().ok()?;
                let domain = parts.next()?.split('-').next()?.to_string();
                Some((domain, seq))
            })
            .collect()
    };
    let have = seqs(position);
    seqs(target).iter().all(|(d, n)| have.iter().any(|(hd, hn)| hd == d && hn >= n))
}

/// The python of the venv that `scripts/services/s3.sh` installs (moto,
/// boto3 and DuckDB), for reading object storage back.
#[allow(dead_code, reason = "used by the `it` binary only")]
pub fn service_python() -> String {
    let script = deltaforge_testkit::repo_root().join("scripts/services/s3.sh");
    let out = std::process::Command::new("bash").arg(&script).arg("python").output().expect("running s3.sh python");
    assert!(out.status.success(), "s3.sh python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::gtid_reached;

    #[test]
    fn gtid_positions_compare_by_sequence_per_domain() {
        assert!(gtid_reached("0-1-10", "0-1-10"));
        assert!(gtid_reached("0-1-11", "0-1-10"));
        assert!(!gtid_reached("0-1-9", "0-1-10"));
        assert!(gtid_reached("0-1-5,1-2-7", "1-2-7"));
        assert!(!gtid_reached("0-1-50", "1-2-7"));
        assert!(!gtid_reached("", "0-1-1"));
    }
}
